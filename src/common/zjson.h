/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zjson.h — small JSON documents (and binary blobs) stored zstd-compressed with the frame checksum on (statistics
 * file, journal): written atomically (temporary file, fsync, rename, fsync of the directory),
 * read back with every layer checked, so a damaged file is an error, never a wrong value.
 */
#ifndef PCBM_ZJSON_H
#define PCBM_ZJSON_H

#include "common.h"

#include <jansson.h>

/* Write root to path atomically. `what` names the file in messages ("statistics file"). */
pcbm_status pcbm_zjson_write(const char *path, json_t *root, const char *what, pcbm_error *err);
/* Read path into *root (caller json_decref). Damage → PCBM_ERR_STATS naming path and `what`. */
pcbm_status pcbm_zjson_read(const char *path, json_t **root, const char *what, pcbm_error *err);
/* The same for binary data: the concatenation of parts; read back as one malloc'ed buffer. */
pcbm_status pcbm_zblob_write(const char *path, const void *const *parts, const size_t *sizes,
                             unsigned nparts, const char *what, pcbm_error *err);
pcbm_status pcbm_zblob_read(const char *path, void **buf, size_t *len, const char *what,
                            pcbm_error *err);

#endif /* PCBM_ZJSON_H */

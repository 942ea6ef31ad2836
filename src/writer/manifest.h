/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manifest.h — OUT/pcbmerge.manifest.json: the xxh3-128 of every file of a merged model, with the
 * method, parameters, inputs' identity and tool version; and its verification.
 */
#ifndef PCBM_MANIFEST_H
#define PCBM_MANIFEST_H

#include "../common/common.h"

#include <jansson.h>

#define PCBM_MANIFEST_NAME "pcbmerge.manifest.json"

/* Hash the files names[0..n) of dir that exist (plain files; names already in `files` skipped),
 * in name order, and append {name, size, xxh3_128} entries: the manifest lists only what the
 * merge wrote, never a file someone else put beside it. */
pcbm_status pcbm_manifest_add_small_files(const char *dir, const char *const *names, size_t n,
                                          json_t *files, pcbm_error *err);

/* Add files names[0..n) of the published model dir to its manifest (hashed now), rewriting the
 * manifest atomically: what a caller writes beside a merged model after publication (the search
 * log and summary) is vouched for like the rest. */
pcbm_status pcbm_manifest_append(const char *dir, const char *const *names, size_t n,
                                 pcbm_error *err);

#endif /* PCBM_MANIFEST_H */

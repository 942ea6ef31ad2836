/*
 * manifest.h — OUT/pcbmerge.manifest.json: the xxh3-128 of every file of a merged model, with the
 * method, parameters, inputs' identity and tool version; and its verification.
 */
#ifndef PCBM_MANIFEST_H
#define PCBM_MANIFEST_H

#include "../common/common.h"

#include <jansson.h>

#define PCBM_MANIFEST_NAME "pcbmerge.manifest.json"

/* Hash the regular files of dir not yet in `files` (and not the manifest), in name order, and
 * append {name, size, xxh3_128} entries. */
pcbm_status pcbm_manifest_add_small_files(const char *dir, json_t *files, pcbm_error *err);

#endif /* PCBM_MANIFEST_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * st_internal.h — helpers shared by the format layer's own files only: JSON type names for
 * messages and the open-addressing name → index map used for models and indexes.
 */
#ifndef PCBM_ST_INTERNAL_H
#define PCBM_ST_INTERNAL_H

#include "safetensors.h"

#include <jansson.h>

/* Where model argument `spec` points (hub.c): a path as it is, a cache repository folder's
 * snapshot at refs/main, or a hub id ORG/NAME[@REVISION] found in the local Hugging Face cache.
 * *out is allocated. */
pcbm_status pcbm_model_resolve(const char *spec, char **out, pcbm_error *err);

/* "an object", "a string", ... for messages. */
const char *pcbm_st_json_kind(const json_t *v);

/* Name map: slots hold index + 1 (0 = empty), cap is a power of two >= 2 n. Names are fetched
 * through `at` so the same code serves tensors and index entries. */
typedef const char *(*pcbm_name_at_fn)(const void *ctx, size_t i);

typedef struct pcbm_namemap {
    uint32_t *slots;
    size_t cap;
    pcbm_name_at_fn at;
    const void *ctx;
} pcbm_namemap;

/* Allocate for n names (n < UINT32_MAX); returns false when out of memory. */
bool pcbm_namemap_init(pcbm_namemap *m, size_t n, pcbm_name_at_fn at, const void *ctx);
/* Rehash into cap slots (a power of two > 2 x the names inserted); false when out of memory. */
bool pcbm_namemap_grow(pcbm_namemap *m, size_t cap);
/* Insert name i; returns -1 when inserted, else the index already holding that name. */
long pcbm_namemap_insert(pcbm_namemap *m, size_t i);
/* Index of `name`, or -1. */
long pcbm_namemap_find(const pcbm_namemap *m, const char *name);
void pcbm_namemap_free(pcbm_namemap *m);

#endif /* PCBM_ST_INTERNAL_H */

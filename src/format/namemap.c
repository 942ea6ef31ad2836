/* SPDX-License-Identifier: Apache-2.0 */
/*
 * namemap.c — an open-addressing hash map from a name to its index in some array (tensors of a
 * model, entries of an index), hashed with XXH3 and probed linearly.
 */
#include "st_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

bool pcbm_namemap_init(pcbm_namemap *m, size_t n, pcbm_name_at_fn at, const void *ctx)
{
    memset(m, 0, sizeof *m);
    if (n >= UINT32_MAX)
        return false;
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->slots = pcbm_calloc(cap, sizeof *m->slots);
    if (!m->slots)
        return false;
    m->cap = cap;
    m->at = at;
    m->ctx = ctx;
    return true;
}

static size_t slot_of(const pcbm_namemap *m, const char *name);

bool pcbm_namemap_grow(pcbm_namemap *m, size_t cap)
{
    uint32_t *s = pcbm_calloc(cap, sizeof *s), *old = m->slots;
    if (!s)
        return false;
    size_t ocap = m->cap;
    m->slots = s;
    m->cap = cap;
    for (size_t k = 0; k < ocap; k++) {
        if (!old[k])
            continue;
        size_t j = slot_of(m, m->at(m->ctx, old[k] - 1));
        while (s[j])
            j = (j + 1) & (cap - 1);
        s[j] = old[k];
    }
    free(old);
    return true;
}

static size_t slot_of(const pcbm_namemap *m, const char *name)
{
    return (size_t)XXH3_64bits(name, strlen(name)) & (m->cap - 1);
}

long pcbm_namemap_insert(pcbm_namemap *m, size_t i)
{
    const char *name = m->at(m->ctx, i);
    for (size_t s = slot_of(m, name);; s = (s + 1) & (m->cap - 1)) {
        if (m->slots[s] == 0) {
            m->slots[s] = (uint32_t)(i + 1);
            return -1;
        }
        size_t j = m->slots[s] - 1;
        if (strcmp(m->at(m->ctx, j), name) == 0)
            return (long)j;
    }
}

long pcbm_namemap_find(const pcbm_namemap *m, const char *name)
{
    if (!m->slots || !name)
        return -1;
    for (size_t s = slot_of(m, name);; s = (s + 1) & (m->cap - 1)) {
        if (m->slots[s] == 0)
            return -1;
        size_t j = m->slots[s] - 1;
        if (strcmp(m->at(m->ctx, j), name) == 0)
            return (long)j;
    }
}

void pcbm_namemap_free(pcbm_namemap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

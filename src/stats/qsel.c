/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qsel.c — radix selection over coarse/fine key histograms, and the per-thread histogram sets.
 */
#include "qsel.h"

#include "../common/common.h"

#include <stdlib.h>

void pcbm_sel_coarse(pcbm_sel *s, const uint64_t *coarse)
{
    uint64_t acc = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++) {
        if (acc + coarse[b] > s->rank) {
            s->prefix = b;
            s->below = acc;
            s->stage = 1;
            return;
        }
        acc += coarse[b];
    }
    /* rank beyond the data: clamp to the largest key seen */
    for (uint32_t b = PCBM_QBINS; b-- > 0;) {
        if (coarse[b]) {
            s->prefix = b;
            s->below = acc - coarse[b];
            s->rank = acc - 1;
            s->stage = 1;
            return;
        }
    }
    s->prefix = 0;
    s->stage = 1;
}

void pcbm_sel_fine(pcbm_sel *s, const uint64_t *fine)
{
    uint64_t acc = s->below;
    uint32_t last = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++) {
        if (fine[b])
            last = b;
        if (acc + fine[b] > s->rank) {
            s->key = (s->prefix << PCBM_QBITS) | b;
            s->stage = 2;
            return;
        }
        acc += fine[b];
    }
    s->key = (s->prefix << PCBM_QBITS) | last;
    s->stage = 2;
}

uint64_t pcbm_count_above(const uint64_t *coarse, const uint64_t *fine, uint32_t key)
{
    uint32_t hi = key >> PCBM_QBITS, lo = key & (PCBM_QBINS - 1);
    uint64_t n = 0;
    for (uint32_t b = hi + 1; b < PCBM_QBINS; b++)
        n += coarse[b];
    for (uint32_t b = lo + 1; b < PCBM_QBINS; b++)
        n += fine[b];
    return n;
}

uint64_t pcbm_hset_bytes(unsigned threads, unsigned streams)
{
    return ((uint64_t)threads + 1) * streams * PCBM_QBINS * sizeof(uint64_t);
}

int pcbm_hset_init(pcbm_hset *h, unsigned threads, unsigned streams)
{
    h->threads = threads;
    h->streams = streams;
    h->per_thread = calloc((size_t)threads * streams * PCBM_QBINS, sizeof(uint64_t));
    h->total = calloc((size_t)streams * PCBM_QBINS, sizeof(uint64_t));
    if (!h->per_thread || !h->total) {
        pcbm_hset_free(h);
        return -1;
    }
    return 0;
}

void pcbm_hset_clear(pcbm_hset *h)
{
    memset(h->per_thread, 0, (size_t)h->threads * h->streams * PCBM_QBINS * sizeof(uint64_t));
    memset(h->total, 0, (size_t)h->streams * PCBM_QBINS * sizeof(uint64_t));
}

void pcbm_hset_reduce(pcbm_hset *h)
{
    for (unsigned s = 0; s < h->streams; s++) {
        uint64_t *dst = h->total + (uint64_t)s * PCBM_QBINS;
        for (unsigned t = 0; t < h->threads; t++) {
            const uint64_t *src = pcbm_hset_local(h, t, s);
            for (uint32_t b = 0; b < PCBM_QBINS; b++)
                dst[b] += src[b];
        }
    }
}

void pcbm_hset_free(pcbm_hset *h)
{
    free(h->per_thread);
    free(h->total);
    h->per_thread = h->total = NULL;
}

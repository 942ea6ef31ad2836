/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qsel.h — deterministic, exactly mergeable quantile statistics over float32 streams.
 * Floats map to 32-bit keys whose unsigned order is the float order. A coarse histogram counts
 * the top 16 bits of every key; a fine histogram counts the low 16 bits of the keys that share
 * one chosen top half. Two passes therefore find the element of any rank exactly (radix select),
 * and histograms from threads or machines merge by adding counts, in any order.
 */
#ifndef PCBM_QSEL_H
#define PCBM_QSEL_H

#include <stdint.h>
#include <string.h>

#define PCBM_QBITS 16u
#define PCBM_QBINS (1u << PCBM_QBITS)

static inline uint32_t pcbm_fkey(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float pcbm_fkey_value(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Exact selection of the element of 0-based rank `rank` (ascending) of one stream. */
typedef struct pcbm_sel {
    uint64_t rank;
    int stage;          /* 0: needs the coarse histogram, 1: needs the fine one, 2: resolved */
    uint32_t prefix;    /* top 16 bits of the answer (stage >= 1) */
    uint64_t below;     /* elements whose top bits are < prefix */
    uint32_t key;       /* the answer (stage 2) */
} pcbm_sel;

static inline void pcbm_sel_init(pcbm_sel *s, uint64_t rank)
{
    memset(s, 0, sizeof *s);
    s->rank = rank;
}

/* Consume the coarse histogram (sum over all threads); total must exceed rank. */
void pcbm_sel_coarse(pcbm_sel *s, const uint64_t *coarse);
/* Consume the fine histogram of the keys whose top bits equal s->prefix. */
void pcbm_sel_fine(pcbm_sel *s, const uint64_t *fine);

/* Count of keys strictly greater than key, given the coarse histogram and the fine histogram
 * of key's top half. */
uint64_t pcbm_count_above(const uint64_t *coarse, const uint64_t *fine, uint32_t key);

/* A set of histograms, one array of PCBM_QBINS counters per (thread, stream), reduced by
 * addition into totals. */
typedef struct pcbm_hset {
    unsigned threads, streams;
    uint64_t *per_thread;   /* [threads][streams][PCBM_QBINS] */
    uint64_t *total;        /* [streams][PCBM_QBINS] */
} pcbm_hset;

uint64_t pcbm_hset_bytes(unsigned threads, unsigned streams);
int pcbm_hset_init(pcbm_hset *h, unsigned threads, unsigned streams);
void pcbm_hset_clear(pcbm_hset *h);
static inline uint64_t *pcbm_hset_local(pcbm_hset *h, unsigned thread, unsigned stream)
{
    return h->per_thread + ((uint64_t)thread * h->streams + stream) * PCBM_QBINS;
}
static inline const uint64_t *pcbm_hset_total(const pcbm_hset *h, unsigned stream)
{
    return h->total + (uint64_t)stream * PCBM_QBINS;
}
/* The totals as a split merge's accumulator (summed over units). */
/* Add every thread's counts into the totals (integer adds: order does not matter). */
void pcbm_hset_reduce(pcbm_hset *h);
void pcbm_hset_free(pcbm_hset *h);

#endif /* PCBM_QSEL_H */

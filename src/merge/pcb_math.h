/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcb_math.h — what PCB's exact rounds (pcb.c) and streaming rounds (pcb_stream.c) share: the
 * state the rounds decide into, the index of every round in PCB's table (the streaming rounds
 * jump to the exact ones when a sampled bracket misses), and PCB's rank rule. pcb.c holds the
 * method; pcb_stream.c only exports its rounds and never calls back into pcb.c.
 */
#ifndef PCBM_PCB_MATH_H
#define PCBM_PCB_MATH_H

#include "method.h"

/* PCB's rounds, in its table's order. */
enum {
    PCB_R_MAG_COARSE = 0,   /* exact: |tau| coarse histogram (checks the inputs) */
    PCB_R_MAG_FINE,         /* exact: lo, hi */
    PCB_R_SCORE_COARSE,     /* exact: score coarse histogram and maximum m */
    PCB_R_SCORE_FINE,       /* exact: t */
    PCB_R_S1,               /* streaming: sample of |tau| -> lo/hi brackets */
    PCB_R_S2,               /* streaming: sample of scores -> threshold window */
    PCB_R_S3,               /* streaming: sample of window pairs -> atoms */
    PCB_R_FULL,             /* streaming: the full pass -> lo, hi, t, m (or a fallback) */
    PCB_R_MAG_COARSE_FB,    /* exact fallback after streaming: |tau| coarse, inputs not checked */
    PCB_NROUNDS
};
#define PCB_STREAM_ROUNDS 4u

typedef struct pcb_stream pcb_stream;

typedef struct pcb_state {
    pcbm_hset h;                       /* 2N streams */
    pcbm_sel lo[PCBM_MAX_TASKS], hi[PCBM_MAX_TASKS], thr[PCBM_MAX_TASKS];
    float lo_v[PCBM_MAX_TASKS], hi_v[PCBM_MAX_TASKS], t_v[PCBM_MAX_TASKS], m_v[PCBM_MAX_TASKS];
    float *max_local;                  /* [threads][N] */
    uint64_t d;                        /* elements of the current range */
    uint64_t di[PCBM_MAX_TASKS];       /* of them, those each task has (a task lacking a tensor
                                          takes no part in it) */
    char how[160];                     /* how the statistics were obtained (for the report) */
    pcb_stream *ss;                    /* streaming rounds' state (pcb_stream.c), or NULL */
} pcb_state;

static inline uint64_t pcbm_pcb_rank(double x)
{
    /* the official code's int(): truncation toward zero of a double */
    return x <= 0.0 ? 0 : (uint64_t)x;
}

/* Streaming statistics (pcb_stream.c; global scope): whether they run for this merge, their
 * bytes, their rounds (PCB_R_S1 .. PCB_R_FULL) and the release of their state. */
bool pcbm_pcb_stream_will_run(const pcbm_merge_opts *o, const pcbm_layout *p);
uint64_t pcbm_pcb_stream_bytes(unsigned ntasks, unsigned threads);
extern const pcbm_round pcbm_pcb_stream_rounds[PCB_STREAM_ROUNDS];
void pcbm_pcb_stream_free(pcb_state *ps);

#endif /* PCBM_PCB_MATH_H */

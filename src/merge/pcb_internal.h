/*
 * pcb_internal.h — what the exact (pcb.c) and streaming (pcb_stream.c) statistics of PCB share:
 * the state, the score kernel every path uses bit for bit, and the exact radix passes.
 */
#ifndef PCBM_PCB_INTERNAL_H
#define PCBM_PCB_INTERNAL_H

#include "merge.h"
#include "../stats/qsel.h"

typedef struct pcb_state {
    pcbm_hset h;                       /* 2N streams */
    pcbm_sel lo[PCBM_MAX_TASKS], hi[PCBM_MAX_TASKS], thr[PCBM_MAX_TASKS];
    float lo_v[PCBM_MAX_TASKS], hi_v[PCBM_MAX_TASKS], t_v[PCBM_MAX_TASKS], m_v[PCBM_MAX_TASKS];
    float *max_local;                  /* [threads][N] */
    uint64_t d;                        /* elements of the current range */
    char how[160];                     /* how the statistics were obtained (for the report) */
} pcb_state;

/* Scores of a tile at the bounds ps->lo_v/hi_v, into tl->theta[i]. */
void pcbm_pcb_scores(const pcbm_mctx *mc, const pcb_state *ps, const pcbm_tile *tl);
void pcbm_pcb_tile_mag_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg);
void pcbm_pcb_tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg);
uint64_t pcbm_pcb_rank(double x);
pcbm_status pcbm_pcb_exact_bounds(pcbm_mctx *mc, pcb_state *ps, size_t t0, size_t t1,
                                  pcbm_error *err);
pcbm_status pcbm_pcb_exact_scores(pcbm_mctx *mc, pcb_state *ps, size_t t0, size_t t1,
                                  pcbm_error *err);

/* Streaming statistics (global scope): a sample and one full pass. */
bool pcbm_pcb_stream_will_run(const pcbm_merge_opts *o, const pcbm_plan *p);
pcbm_status pcbm_pcb_stream_stats(pcbm_mctx *mc, pcb_state *ps, pcbm_error *err);
uint64_t pcbm_pcb_stream_bytes(unsigned ntasks, unsigned threads);

#endif /* PCBM_PCB_INTERNAL_H */

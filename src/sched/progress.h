/* SPDX-License-Identifier: Apache-2.0 */
/*
 * progress.h — progress events of a call (pcbm_merge, a split-merge phase): the scheduler says
 * when a pass begins, how many input bytes it read, and when the pass ends; this module turns
 * that into pcbm_progress_event values for the caller's on_progress — this pass and the whole
 * call (pass k of n, bytes, one ETA) — at most four a second while a pass runs. The library
 * prints nothing: with no callback, nothing happens.
 */
#ifndef PCBM_PROGRESS_H
#define PCBM_PROGRESS_H

#include "../common/common.h"

/* One call's progress (owned by the call, shared by its passes). */
typedef struct pcbm_progress_ctx {
    pcbm_progress_fn fn;       /* the caller's on_progress, or NULL */
    void *user;
    double t0;                 /* the call's start (pcbm_now) */
    unsigned passes;           /* passes begun */
    unsigned expected;         /* passes the call expects in all (grows when one more runs) */
    uint64_t bytes_done;       /* bytes of the passes ended */
    uint64_t pass_estimate;    /* bytes a pass not begun yet is expected to move */
} pcbm_progress_ctx;

/* Set up ctx for a call started at t0 that expects `expected` passes of about `pass_estimate`
 * bytes each (fn may be NULL: then every function here does nothing). */
void pcbm_progress_init(pcbm_progress_ctx *ctx, pcbm_progress_fn fn, void *user, double t0,
                        unsigned expected, uint64_t pass_estimate);

/* One pass as the scheduler reports it. */
typedef struct pcbm_progress_line {
    pcbm_progress_ctx *ctx;    /* NULL: nothing is reported */
    const char *pass;          /* the pass's name */
    double start, last;
    uint64_t total, done;      /* input bytes of the pass, and read so far */
} pcbm_progress_line;

void pcbm_progress_begin(pcbm_progress_line *pg, pcbm_progress_ctx *ctx, const char *pass,
                         uint64_t total, double t0);
static inline void pcbm_progress_add(pcbm_progress_line *pg, uint64_t bytes) { pg->done += bytes; }
/* A PASS event when one is due (at most every 0.25 s). */
void pcbm_progress_tick(pcbm_progress_line *pg);
/* End of the pass: a PASS_END event when it succeeded. */
void pcbm_progress_end(pcbm_progress_line *pg, bool ok);
/* The call ended with status st: the DONE event. */
void pcbm_progress_done(pcbm_progress_ctx *ctx, pcbm_status st);

#endif /* PCBM_PROGRESS_H */

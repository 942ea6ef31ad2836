/* SPDX-License-Identifier: Apache-2.0 */
/*
 * merge.h — merge methods on top of the engine: the merge context, decoded tiles, per-task
 * results, and the two entry points run.c and split.c call. A method (method.h) declares its
 * statistics rounds and apply tile function; the rounds driver (rounds.c) runs them through the
 * tile passes of merge_common.c.
 */
#ifndef PCBM_MERGE_H
#define PCBM_MERGE_H

#include "../sched/engine.h"
#include "../stats/statfile.h"

#define PCBM_TILE 1024u   /* elements per kernel tile: fits L1 for the base and a few tasks */

typedef struct pcbm_task_stats {
    double lo, hi;          /* PCB clamp bounds of |tau| (global scope) */
    double threshold;       /* PCB score threshold t / TIES magnitude threshold */
    double max;             /* PCB score maximum m */
    uint64_t kept;          /* elements with non-zero weight (PCB) / kept by the trim (TIES, DARE) */
} pcbm_task_stats;

typedef struct pcbm_mctx pcbm_mctx;
typedef struct pcbm_split pcbm_split;

/* One tile of a merged tensor, decoded. */
typedef struct pcbm_tile {
    const pcbm_blockview *bv;
    uint64_t start;         /* element index (within the tensor) of the tile's first element */
    unsigned n;
    const float *base;      /* n values */
    float *const *theta;    /* theta[i]: task i's values (n each; filled for needs_theta methods) */
    float *const *tau;      /* tau[i] = theta[i] - base */
    float *tmp;             /* 4 * PCBM_TILE scratch floats for the kernel */
    uint64_t absent;        /* bit i: task i lacks the tensor (τ_i = 0, θ_i = base): it takes
                               no part (pcbm_tlayout.absent) */
} pcbm_tile;

/* Task i takes part in the tile (has the tensor). */
static inline bool pcbm_tile_has(const pcbm_tile *tl, unsigned i)
{
    return !(tl->absent >> i & 1u);
}

typedef void (*pcbm_tile_fn)(pcbm_mctx *mc, unsigned worker, const pcbm_tile *tl, void *arg);

struct pcbm_mctx {
    /* what methods read */
    const pcbm_merge_opts *o;
    pcbm_layout *layout;
    const pcbm_vocab_plan *vocab;   /* the output's vocabulary (report), or NULL */
    unsigned ntasks, threads;
    float lam[PCBM_MAX_TASKS];
    int per_task_lambdas;
    pcbm_task_stats task[PCBM_MAX_TASKS];
    unsigned nlayers;       /* the base's layers (recipes' t; params.c) */
    uint64_t params_gen;    /* this merge's generation of the workers' parameter caches */
    /* the tile passes' (merge_common.c) */
    pcbm_engine *eng;
    uint64_t *kept_local;   /* [threads][ntasks] counters of the apply pass */
    float *scratch;         /* per worker: tile_floats, then 2 * qcap floats per model */
    size_t scratch_floats;
    size_t tile_floats;     /* (1 + 2N + 4) * PCBM_TILE: base, theta, tau, kernel scratch */
    uint64_t qcap;          /* block scales one block of an FP8 source needs at most (0: none) */
    size_t lora_off[PCBM_MAX_MODELS]; /* LoRA adapter m: its factor cache in a worker's scratch */
    size_t lora_raw_off;    /* LoRA adapters: the worker's read buffer (lora_delta.c) */
    size_t *lora_cached;    /* [threads][nmodels]: tensor index + 1 whose factors the cache holds */
    int check_finite;       /* the current pass refuses NaN/Inf inputs */
    int need_theta;         /* the current method's tiles read theta */
    unsigned pass_no;       /* passes run so far (for names) */
    unsigned passes_planned;
    char pass_name[32];
    /* the rounds driver's (rounds.c), set up by run.c / split.c; methods never read these */
    char stats_how[192];    /* how the statistics were obtained, for the report */
    pcbm_statset *stats_out;/* records of every range's statistics (saved in OUT) */
    const pcbm_statset *stats_in; /* --stats: replayed instead of statistics rounds */
    pcbm_status (*stats_done)(void *arg, pcbm_error *err); /* global statistics are known */
    void *stats_done_arg;
    size_t replay_pos;
    pcbm_split *split;      /* one part (or the reduce) of a split merge, or NULL */
};

/* How a run of the method ended (PCBM_OK): everything this context does is done, or a split
 * merge's statistics phase stopped at a round boundary. */
typedef enum pcbm_rounds_end {
    PCBM_ROUNDS_DONE = 0,
    PCBM_ROUNDS_PART_SAVED,  /* split part: its part of the first round not reduced is saved */
    PCBM_ROUNDS_PENDING      /* split reduce: the next round has not run on the parts yet */
} pcbm_rounds_end;

/* Run the method of mc->o in the context mc describes (rounds.c): statistics rounds (or their
 * replay), then the apply pass where this context writes output. end may be NULL (one machine). */
pcbm_status pcbm_method_run(pcbm_mctx *mc, pcbm_rounds_end *end, pcbm_error *err);
/* The report's per-task statistics (mc->task) from a global scope record. */
pcbm_status pcbm_method_report_record(pcbm_mctx *mc, const pcbm_statrec *rec, pcbm_error *err);
/* Stats bytes the method needs beyond the engine's buffers (histograms etc.). */
uint64_t pcbm_method_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p);
/* Before the engine cuts the layout into blocks: the row lengths of the merged tensors when the
 * method's tiles read whole rows (pcbm_tlayout.row_units). */
void pcbm_method_prepare_layout(const pcbm_merge_opts *o, pcbm_layout *p);
/* Statistics rounds the method needs at most in a split merge (0: none). */
unsigned pcbm_method_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p);

/* The tile API (merge_common.c): per-worker kept counters of the apply pass. */
static inline uint64_t *pcbm_kept_local(pcbm_mctx *mc, unsigned worker)
{
    return mc->kept_local + (uint64_t)worker * mc->ntasks;
}

/* ---- for the driver (merge_common.c) ---- */

/* Run a pass over [t0,t1): stats passes call fn on MERGE tiles; apply passes call fn on MERGE
 * tiles with tmp[0..n) to be filled with the merged float32 result, and copy/convert others. */
pcbm_status pcbm_tiles_pass(pcbm_mctx *mc, pcbm_pass_kind kind, size_t t0, size_t t1,
                            uint32_t sample_stride, pcbm_tile_fn fn, void *arg, pcbm_error *err);
/* Add the per-worker kept counters into mc->task[i].kept and clear them. */
void pcbm_collect_kept(pcbm_mctx *mc);
/* For tensor scope: the next range [t0, t1) that holds exactly one MERGE tensor (last in it),
 * or the copy-only tail. Returns false at the end. */
bool pcbm_next_range(const pcbm_layout *p, size_t *t0, size_t *t1);
/* Merged elements of [t0, t1). */
uint64_t pcbm_range_elems(const pcbm_layout *p, size_t t0, size_t t1);
/* The merged elements of [t0,t1) that task `task` (0-based) lacks (pcbm_tlayout.absent): the
 * range's d less these is the task's share (pcbm_range_task_d). */
uint64_t pcbm_range_task_absent(const pcbm_layout *p, size_t t0, size_t t1, unsigned task);

#endif /* PCBM_MERGE_H */

/*
 * merge.h — merge methods on top of the engine. A method runs its statistics passes and its
 * apply pass through pcbm_engine_run; its element-wise kernel works on decoded float32 tiles.
 * This header holds what every method shares: the merge context, tiles, per-task results.
 */
#ifndef PCBM_MERGE_H
#define PCBM_MERGE_H

#include "../sched/engine.h"
#include "../stats/statfile.h"
#include "split.h"

#define PCBM_TILE 1024u   /* elements per kernel tile: fits L1 for the base and a few tasks */

typedef struct pcbm_task_stats {
    double lo, hi;          /* PCB clamp bounds of |tau| (global scope) */
    double threshold;       /* PCB score threshold t / TIES magnitude threshold */
    double max;             /* PCB score maximum m */
    uint64_t kept;          /* elements with non-zero weight (PCB) / kept by the trim (TIES, DARE) */
} pcbm_task_stats;

typedef struct pcbm_mctx pcbm_mctx;

/* One tile of a merged tensor, decoded. */
typedef struct pcbm_tile {
    const pcbm_blockview *bv;
    uint64_t start;         /* element index (within the tensor) of the tile's first element */
    unsigned n;
    const float *base;      /* n values */
    float *const *theta;    /* theta[i]: task i's values (n each) */
    float *const *tau;      /* tau[i] = theta[i] - base */
    float *tmp;             /* 4 * PCBM_TILE scratch floats for the kernel */
} pcbm_tile;

typedef void (*pcbm_tile_fn)(pcbm_mctx *mc, unsigned worker, const pcbm_tile *tl, void *arg);

struct pcbm_mctx {
    const pcbm_merge_opts *o;
    pcbm_plan *plan;
    pcbm_engine *eng;
    unsigned ntasks, threads;
    float lam[PCBM_MAX_TASKS];
    int per_task_lambdas;
    pcbm_task_stats task[PCBM_MAX_TASKS];
    uint64_t *kept_local;   /* [threads][ntasks] counters of the apply pass */
    float *scratch;         /* per worker: (1 + 2N + 4) * PCBM_TILE floats */
    size_t scratch_floats;
    int check_finite;       /* the current pass refuses NaN/Inf inputs */
    unsigned pass_no;       /* passes run so far (for names) */
    unsigned passes_planned;
    char pass_name[32];
    char stats_how[192];    /* how the statistics were obtained, for the report */
    pcbm_statset *stats_out;/* records of every range's statistics (saved in OUT) */
    const pcbm_statset *stats_in; /* --stats: replayed instead of statistics passes */
    pcbm_status (*stats_done)(void *arg, pcbm_error *err); /* global statistics are known */
    void *stats_done_arg;
    size_t replay_pos;
    void *method;           /* method-private state */
    pcbm_split *split;      /* one unit (or the reduce) of a split merge, or NULL */
};

/* Stats bytes a method needs beyond the engine's buffers (histograms etc.) for d merged elements. */
uint64_t pcbm_method_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_plan *p);

/* Run the whole method (statistics + apply). */
pcbm_status pcbm_method_run(pcbm_mctx *mc, pcbm_error *err);

/* ---- shared helpers (merge_common.c) ---- */

/* Run a pass over [t0,t1): stats passes call fn on MERGE tiles; apply passes call fn on MERGE
 * tiles with tmp[0..n) to be filled with the merged float32 result, and copy/convert others. */
pcbm_status pcbm_run_tiles(pcbm_mctx *mc, pcbm_pass_kind kind, size_t t0, size_t t1,
                           uint32_t sample_stride, pcbm_tile_fn fn, void *arg, pcbm_error *err);
/* Add the per-worker kept counters into mc->task[i].kept and clear them. */
void pcbm_collect_kept(pcbm_mctx *mc);
static inline uint64_t *pcbm_kept_local(pcbm_mctx *mc, unsigned worker)
{
    return mc->kept_local + (uint64_t)worker * mc->ntasks;
}

/* Statistics of the next range: from --stats (returns the record, NULL when none is left or
 * its size does not match) or a fresh record to fill. */
const pcbm_statrec *pcbm_replay_next(pcbm_mctx *mc, uint64_t d, pcbm_error *err);
pcbm_statrec *pcbm_record_next(pcbm_mctx *mc, uint64_t d);

/* After a statistics pass and its threads' reduce: the accumulators of the whole merge (a split
 * merge exchanges them between units; see split.h). PCBM_OK when they are complete. */
static inline pcbm_status pcbm_exchange(pcbm_mctx *mc, const pcbm_acc *acc, unsigned nacc,
                                        pcbm_error *err)
{
    return mc->split ? pcbm_split_exchange(mc->split, acc, nacc, err) : PCBM_OK;
}
/* Tensor scope, split merge: whether this unit computes the statistics of the range whose merged
 * tensor is t (true outside split merges); when not, a replay skips the range's record. */
bool pcbm_split_owns_range(pcbm_mctx *mc, size_t t, uint64_t d);
/* Whether any tensor of [t0, t1) is written by this unit (true outside split merges). */
bool pcbm_split_touches(const pcbm_mctx *mc, size_t t0, size_t t1);

/* Methods. */
pcbm_status pcbm_run_pcb(pcbm_mctx *mc, pcbm_error *err);
pcbm_status pcbm_run_ties(pcbm_mctx *mc, pcbm_error *err);     /* ties and dare_ties */
pcbm_status pcbm_run_simple(pcbm_mctx *mc, pcbm_error *err);   /* task_arithmetic, linear, dare_linear */
uint64_t pcbm_pcb_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_plan *p);
uint64_t pcbm_ties_stats_bytes(unsigned ntasks, unsigned threads);

/* For tensor scope: the next range [t0, t1) that holds exactly one MERGE tensor (last in it),
 * or the copy-only tail. Returns false at the end. */
bool pcbm_next_range(const pcbm_plan *p, size_t *t0, size_t *t1);

#endif /* PCBM_MERGE_H */

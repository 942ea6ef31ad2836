/* SPDX-License-Identifier: Apache-2.0 */
/*
 * method.h — what a merge method declares, and all it may use: its parameters, its statistics
 * rounds and its apply tile function, as one pcbm_method_def (one entry of the table in
 * methods.c). A round is one statistics pass over a range of tensors: a tile function that fills
 * per-thread accumulators, the layout of those accumulators (pcbm_acc regions that combine by sum,
 * max or set union), and finish(), which reads the combined accumulators and says which round
 * comes next (the next one, another one — PCB streaming's exact fallback — or done). The driver
 * (rounds.c) runs the rounds on one machine, in a split merge's units and reduce, and replays
 * them from --stats; a method knows none of these contexts.
 */
#ifndef PCBM_METHOD_H
#define PCBM_METHOD_H

#include "acc.h"
#include "merge.h"
#include "../stats/qsel.h"

#define PCBM_MAX_REGIONS 4u           /* accumulator regions of one round */

/* A range of tensors whose statistics are computed together: [0, nt) in global scope, one
 * merged tensor (the last of the range) in tensor scope. */
typedef struct pcbm_range {
    size_t t0, t1;
    uint64_t d;                     /* merged elements of the range */
} pcbm_range;

/* The elements of the range that task `task` (0-based) has: d less the tensors it lacks (a task
 * lacking a tensor takes no part in it; its per-task statistics count its own elements). */
static inline uint64_t pcbm_range_task_d(const pcbm_layout *p, const pcbm_range *rg, unsigned task)
{
    return p && p->npartial ? rg->d - pcbm_range_task_absent(p, rg->t0, rg->t1, task) : rg->d;
}

/* finish(): the next round is the next entry of the method's table, none (the statistics are
 * known), or any other index (a data-dependent jump, e.g. an exact fallback). */
#define PCBM_ROUND_NEXT (-1)
#define PCBM_ROUND_DONE (-2)

typedef struct pcbm_round {
    const char *name;
    pcbm_tile_fn tile;
    /* Sample stride of the pass (NULL: every element). */
    uint32_t (*stride)(const void *state);
    bool check_finite;              /* the pass refuses non-finite inputs (unless allowed) */
    /* Before the pass: clear the accumulators (and allocate what the round needs). */
    pcbm_status (*begin)(void *state, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err);
    /* The accumulator layout (at most PCBM_MAX_REGIONS regions); 0 regions: nothing to combine. */
    unsigned (*regions)(void *state, const pcbm_mctx *mc, pcbm_acc *region);
    /* After the regions are combined: the next round (PCBM_ROUND_NEXT, PCBM_ROUND_DONE or an
     * index into the method's rounds). */
    int (*finish)(void *state, const pcbm_mctx *mc, const pcbm_range *rg);
} pcbm_round;

/* Options a method reads (its parameters; test_rounds checks them against the option checks). */
enum {
    PCBM_USES_LAMBDA = 1u << 0,     /* --lambda */
    PCBM_USES_LAMBDAS = 1u << 1,    /* --lambdas (one per task) */
    PCBM_USES_WEIGHTS = 1u << 2,    /* --weights */
    PCBM_USES_DENSITY = 1u << 3,    /* --density */
    PCBM_USES_SEED = 1u << 4,       /* --seed (DARE) */
    PCBM_USES_CLAMP = 1u << 5,      /* --clamp-ratio */
    PCBM_USES_SCOPE = 1u << 6,      /* --scope tensor */
    PCBM_USES_STREAMING = 1u << 7,  /* --exact / --streaming */
    PCBM_USES_DENSITIES = 1u << 8,  /* --densities (one per task) */
    PCBM_USES_NORMALIZE = 1u << 9,  /* --normalize / --no-normalize */
    PCBM_USES_RESCALE = 1u << 10,   /* --rescale / --no-rescale (DARE) */
    PCBM_USES_T = 1u << 11,         /* --t (slerp; nuslerp with one task model) */
    PCBM_USES_SELECT_TOPK = 1u << 12, /* --select-topk (sce) */
    PCBM_USES_NUSLERP = 1u << 13,   /* --nuslerp-no-flatten / --nuslerp-row-wise */
    PCBM_USES_FILTER_WISE = 1u << 14, /* --filter-wise (model_stock) */
    PCBM_USES_GAMMA = 1u << 15,     /* --gamma (breadcrumbs) */
    PCBM_USES_EPSILON = 1u << 16,   /* --epsilon (della) */
};

typedef struct pcbm_method_def {
    pcbm_method id;
    const char *name;
    unsigned uses;                  /* PCBM_USES_* */
    bool normalizes, rescales;      /* what `normalize` / `rescale` default to (mergekit's) */
    bool needs_theta;               /* tiles read the decoded task values, not only tau */
    bool apply_checks_finite;       /* no statistics pass checked the inputs before the apply */
    bool per_tensor;                /* statistics per tensor by definition (slerp, nuslerp,
                                       model_stock, sce): scope global is refused */
    bool scope_tensor;              /* the method's own scope is tensor (mergekit's sparsifying
                                       methods), global on request */
    bool partial;                   /* a task lacking a tensor takes no part in it (the tiles
                                       skip it: pcbm_tile.absent, pcbm_range_task_d); a
                                       method without it copies such a tensor from the base */
    bool whole_rows;                /* tiles read whole rows from their block (DELLA's ranks):
                                       blocks are cut at row boundaries */
    /* Bytes of statistics beyond the engine's buffers (NULL: none). */
    uint64_t (*stats_bytes)(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p);
    /* Private state (NULL init: none; the state pointer is then NULL). */
    pcbm_status (*init)(const pcbm_mctx *mc, void **state, pcbm_error *err);
    void (*free)(void *state);
    /* Statistics: rounds[first_round(...)] (NULL: 0) starts every range; nrounds 0: none. */
    const pcbm_round *const *rounds;
    unsigned nrounds;
    unsigned passes_planned;        /* passes of the usual path (for pass names) */
    unsigned (*max_rounds)(const pcbm_merge_opts *o, const pcbm_layout *p); /* global scope */
    int (*first_round)(void *state, const pcbm_mctx *mc, const pcbm_range *rg);
    /* The statistics of one range as a record (--stats, the split plan's merge_stats). */
    void (*save)(const void *state, unsigned ntasks, pcbm_statrec *rec);
    void (*load)(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *rec);
    /* The record holds no statistics, only the mark that they are too large for one (NULL:
     * never): a replay (--stats, --resume, a split part's apply) runs the range's rounds again
     * instead of loading it (nuslerp's and model_stock's per-row forms). */
    bool (*recompute)(const pcbm_statrec *rec);
    const char *(*how)(const void *state, const pcbm_merge_opts *o); /* for the report */
    void (*report)(const void *state, pcbm_mctx *mc);                /* global scope */
    pcbm_tile_fn apply;
} pcbm_method_def;

/* A histogram set (qsel.h) as an accumulator region: the threads' counts summed into the totals
 * (which the round's begin clears with pcbm_hset_clear). */
static inline pcbm_acc pcbm_hset_region(pcbm_hset *h)
{
    size_t bytes = (size_t)h->streams * PCBM_QBINS * sizeof(uint64_t);
    return (pcbm_acc){h->total, bytes, pcbm_acc_sum_u64, h->per_thread, bytes};
}

/* The table (methods.c); NULL for an unknown method. */
const pcbm_method_def *pcbm_method_find(pcbm_method m);
/* The definition a merge with these options runs: mergekit's forms of ties, dare_ties and
 * dare_linear (gta.c) when o->semantics is MERGEKIT, else the table's. */
const pcbm_method_def *pcbm_method_for(const pcbm_merge_opts *o);

/* The per-task parameters as the methods read them: task i's density (`densities`, else
 * `density`) and weight (`weights` as float32, else 1); whether this merge normalizes by the
 * summed weights and rescales DARE's survivors (the switch, else the method's default). */
static inline double pcbm_task_density(const pcbm_merge_opts *o, unsigned i)
{
    return o->densities ? o->densities[i] : o->density;
}
static inline double pcbm_task_gamma(const pcbm_merge_opts *o, unsigned i)
{
    return o->gammas ? o->gammas[i] : o->gamma;
}
static inline double pcbm_task_epsilon(const pcbm_merge_opts *o, unsigned i)
{
    return o->epsilons ? o->epsilons[i] : o->epsilon;
}
static inline float pcbm_task_weight(const pcbm_merge_opts *o, unsigned i)
{
    return o->weights ? (float)o->weights[i] : 1.0f;
}
bool pcbm_method_normalizes(const pcbm_merge_opts *o);
bool pcbm_method_rescales(const pcbm_merge_opts *o);

/* ---- parameters per tensor (params.c) ----
 * mergekit's parameters by its names: per model (weight, density, gamma, epsilon) or for the
 * whole merge (the rest), each possibly different per tensor in a recipe (gradients over the
 * layers, filters on tensor names; o->params). Switches read as 0 or 1. */
typedef enum pcbm_param_id {
    PCBM_P_WEIGHT = 0,      /* per model */
    PCBM_P_DENSITY,
    PCBM_P_GAMMA,
    PCBM_P_EPSILON,
    PCBM_P_LAMBDA,          /* whole merge */
    PCBM_P_T,
    PCBM_P_SELECT_TOPK,
    PCBM_P_NORMALIZE,
    PCBM_P_RESCALE,
    PCBM_P_NUSLERP_FLATTEN,
    PCBM_P_NUSLERP_ROW_WISE,
    PCBM_P_FILTER_WISE,
    PCBM_P_COUNT
} pcbm_param_id;

/* mergekit's name of a parameter ("weight", "density", ...). */
const char *pcbm_param_name(pcbm_param_id p);
/* Parameter p of task `task` (0-based; ignored for whole-merge parameters) for layout tensor
 * `tensor` (an index into mc->layout->t). Cheap enough to call once per tile. */
double pcbm_tparam(const pcbm_mctx *mc, size_t tensor, unsigned task, pcbm_param_id p);
/* The id of mergekit's name (PCBM_P_COUNT if unknown); whether it is a per-model parameter. */
pcbm_param_id pcbm_param_parse(const char *name);
bool pcbm_param_per_task(pcbm_param_id p);
/* Before a merge's passes (pcbm_run_setup_ctx): the base's layers for t, a new cache generation,
 * and the check of the required parameters over every merged tensor (PCBM_ERR_USAGE). */
pcbm_status pcbm_params_bind(pcbm_mctx *mc, pcbm_error *err);
/* The required parameters resolve for every merged tensor of every task (PCBM_ERR_USAGE naming
 * the model, parameter and tensor otherwise): bind does it; the split plan too. */
pcbm_status pcbm_params_check(const pcbm_merge_opts *o, const pcbm_layout *p, pcbm_error *err);
/* Some setting of p is a gradient or has a filter (it varies per tensor). */
bool pcbm_params_varies(const pcbm_params *pp, pcbm_param_id p);
/* Task `task` (or PCBM_PARAMS_ALL) has a setting of p, at its level or the whole merge's. */
bool pcbm_params_has(const pcbm_params *pp, int task, pcbm_param_id p);
/* The settings as JSON (canonical: the split plan, the journal's parameters, the report), and
 * back. */
struct json_t;
struct json_t *pcbm_params_json(const pcbm_params *pp, unsigned ntasks);
pcbm_status pcbm_params_from_json(struct json_t *j, pcbm_params **out, pcbm_error *err);

/* The driver's loop over one range's rounds (rounds.c), with the pass given: pcbm_method_run
 * gives the engine's; tests give tiles of their own. state comes from m->init. */
typedef pcbm_status (*pcbm_round_pass_fn)(pcbm_mctx *mc, const pcbm_round *r, void *state,
                                          const pcbm_range *rg, pcbm_error *err);
pcbm_status pcbm_rounds_range(pcbm_mctx *mc, const pcbm_method_def *m, void *state,
                              const pcbm_range *rg, pcbm_round_pass_fn pass,
                              pcbm_rounds_end *end, pcbm_error *err);

#endif /* PCBM_METHOD_H */

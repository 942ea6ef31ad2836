/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ties.c — TIES-Merging as the official code defines it (global top-k trim by magnitude per task
 * with ties at the threshold kept, sign election by mass with zero sums taking the majority sign
 * of the elected vector, disjoint mean), and dare_ties (DARE's random drop and rescale in place of
 * the trim, then the same election and disjoint mean). Thresholds are exact (radix select).
 * mergekit's per-model parameters: a density per task (its own top-k fraction or drop rate), a
 * weight per task multiplying its trimmed vector before the election, and the disjoint mean as
 * the sum of the agreeing weighted values divided by the sum of their weights (`normalize`, on
 * by default for ties) or not divided (off).
 * Rounds: ties — |tau| coarse, |tau| fine (the trim thresholds), votes (the majority sign);
 * dare_ties — votes only. Two table entries share the tiles and the record.
 */
#include "method.h"
#include "../kernels/mkern.h"
#include "../kernels/rng.h"
#include "../stats/qsel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ties_state {
    pcbm_hset h;                         /* N streams */
    pcbm_sel sel[PCBM_MAX_TASKS];
    float thr[PCBM_MAX_TASKS];
    uint64_t d[PCBM_MAX_TASKS];          /* the range's elements each task has */
    int64_t *votes;                      /* [threads][2]: positions with positive/negative sum */
    int64_t pn[2];                       /* the votes combined */
    float majority;                      /* sign used where the elected sum is exactly zero */
    int dare;
    bool keep_all;                       /* the trim keeps every element (no threshold) */
} ties_state;

static uint64_t ties_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    return pcbm_hset_bytes(threads, o->ntasks) + (uint64_t)threads * 2 * sizeof(int64_t);
}

/* The weighted task vectors: v[k] = w · v[k] (mergekit weights the sparsified deltas). */
static void weigh(float *v, float w, size_t n)
{
    for (size_t k = 0; k < n; k++)
        v[k] = w * v[k];
}

/* Trimmed (or DARE-dropped) task vectors of a tile, times their weights, into tl->theta[i];
 * counts what each task keeps into kept[] when kept is not NULL. */
static void trimmed(pcbm_mctx *mc, const ties_state *ts, const pcbm_tile *tl, uint64_t *kept)
{
    const pcbm_merge_opts *o = mc->o;
    unsigned N = mc->ntasks;
    uint64_t key = ts->dare ? pcbm_name_key(tl->bv->t->name) : 0;
    bool rescale = ts->dare && pcbm_method_rescales(o);
    for (unsigned i = 0; i < N; i++) {
        uint64_t k;
        if (!pcbm_tile_has(tl, i)) { /* lacks the tensor: no part in the election or the mean */
            memset(tl->theta[i], 0, tl->n * sizeof(float));
            continue;
        }
        if (ts->dare) {
            uint8_t keep[PCBM_TILE];
            double d = pcbm_task_density(o, i);
            k = pcbm_dare_mask(o->seed, i, key, tl->start, tl->n, d, keep);
            pcbm_k_dare_scale(tl->tau[i], keep, rescale ? (float)d : 1.0f, tl->theta[i], tl->n);
        } else {
            k = pcbm_k_trim(tl->tau[i], ts->thr[i], tl->theta[i], tl->n);
        }
        if (o->weights)
            weigh(tl->theta[i], pcbm_task_weight(o, i), tl->n);
        if (kept)
            kept[i] += k;
    }
}

/* The disjoint mean with weights (mergekit): s = Σ v_i, the elected sign as in
 * pcbm_k_ties_apply; over the tasks in order, the values on its side add into acc and their
 * weights into wsum; out[k] = base[k] + λ·(normalize ? acc / (wsum == 0 ? 1 : wsum) : acc).
 * With every weight 1 and normalize, the bits of pcbm_k_ties_apply. */
static void ties_apply_weighted(const pcbm_mctx *mc, const ties_state *ts, const pcbm_tile *tl)
{
    const pcbm_merge_opts *o = mc->o;
    unsigned N = mc->ntasks;
    float w[PCBM_MAX_TASKS], lam = mc->lam[0];
    for (unsigned i = 0; i < N; i++)
        w[i] = pcbm_task_weight(o, i);
    bool norm = pcbm_method_normalizes(o);
    const float *const *v = (const float *const *)tl->theta;
    for (unsigned k = 0; k < tl->n; k++) {
        float s = 0.0f;
        for (unsigned i = 0; i < N; i++)
            s += v[i][k];
        float sign = s > 0.0f ? 1.0f : (s < 0.0f ? -1.0f : ts->majority);
        float acc = 0.0f, wsum = 0.0f;
        for (unsigned i = 0; i < N; i++) {
            float x = v[i][k];
            if (sign > 0.0f ? x > 0.0f : x < 0.0f) {
                acc += x;
                wsum += w[i];
            }
        }
        if (norm)
            acc = acc / (wsum == 0.0f ? 1.0f : wsum);
        tl->tmp[k] = tl->base[k] + lam * acc;
    }
}

static void tile_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (pcbm_tile_has(tl, i))
            pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&ts->h, w, i));
}

static void tile_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (pcbm_tile_has(tl, i))
            pcbm_k_hist_fine(tl->tau[i], tl->n, true, ts->sel[i].prefix,
                             pcbm_hset_local(&ts->h, w, i));
}

static void tile_votes(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    trimmed(mc, ts, tl, NULL);
    int64_t *v = ts->votes + 2 * (size_t)w;
    pcbm_k_sign_votes((const float *const *)tl->theta, mc->ntasks, tl->n, &v[0], &v[1]);
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    trimmed(mc, ts, tl, pcbm_kept_local(mc, w));
    if (mc->o->weights || !pcbm_method_normalizes(mc->o)) {
        ties_apply_weighted(mc, ts, tl);
        return;
    }
    pcbm_k_ties_apply((const float *const *)tl->theta, mc->ntasks, tl->base, ts->majority,
                      mc->lam[0], tl->tmp, tl->n);
}

/* ---- rounds ---- */

enum { TIES_R_COARSE, TIES_R_FINE, TIES_R_VOTES, TIES_NROUNDS };

/* K_i = ⌊d_i · r_i⌋: task i's top-k over the d_i elements it has; K_i ≥ d_i keeps every element
 * (threshold 0). */
static uint64_t keep_count(const pcbm_mctx *mc, unsigned i, uint64_t d)
{
    return d == 0 ? 0 : (uint64_t)((double)d * pcbm_task_density(mc->o, i));
}

static bool keeps_all(const pcbm_mctx *mc, unsigned i, uint64_t d)
{
    return keep_count(mc, i, d) >= d;
}

static pcbm_status begin_hist(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    ties_state *ts = st;
    pcbm_hset_clear(&ts->h);
    ts->keep_all = true;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        ts->d[i] = pcbm_range_task_d(mc->layout, rg, i);
        ts->keep_all = ts->keep_all && keeps_all(mc, i, ts->d[i]);
    }
    return PCBM_OK;
}

/* Nothing to combine when the trim keeps everything (the pass only checked the inputs). */
static unsigned regions_hist(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    ties_state *ts = st;
    if (ts->keep_all)
        return 0;
    region[0] = pcbm_hset_region(&ts->h);
    return 1;
}

static int finish_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    ties_state *ts = st;
    if (ts->keep_all) {
        for (unsigned i = 0; i < mc->ntasks; i++)
            ts->thr[i] = 0.0f;
        return TIES_R_VOTES;
    }
    for (unsigned i = 0; i < mc->ntasks; i++) { /* a task that keeps all: any rank, unused */
        bool all = keeps_all(mc, i, ts->d[i]);
        pcbm_sel_init(&ts->sel[i], all ? 0 : ts->d[i] - keep_count(mc, i, ts->d[i]) - 1);
        pcbm_sel_coarse(&ts->sel[i], pcbm_hset_total(&ts->h, i));
    }
    return PCBM_ROUND_NEXT;
}

static int finish_fine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    ties_state *ts = st;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_sel_fine(&ts->sel[i], pcbm_hset_total(&ts->h, i));
        ts->thr[i] = keeps_all(mc, i, ts->d[i]) ? 0.0f : pcbm_fkey_value(ts->sel[i].key);
    }
    return PCBM_ROUND_NEXT;
}

static pcbm_status begin_votes(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                               pcbm_error *err)
{
    ties_state *ts = st;
    memset(ts->votes, 0, (size_t)mc->threads * 2 * sizeof(int64_t));
    ts->pn[0] = ts->pn[1] = 0;
    return PCBM_OK;
}

static unsigned regions_votes(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    ties_state *ts = st;
    region[0] = (pcbm_acc){ts->pn, sizeof ts->pn, pcbm_acc_sum_i64, ts->votes, sizeof ts->pn};
    return 1;
}

static int finish_votes(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    ties_state *ts = st;
    int64_t pos = ts->pn[0], neg = ts->pn[1];
    ts->majority = pos > neg ? 1.0f : (pos < neg ? -1.0f : 0.0f);
    return PCBM_ROUND_DONE;
}

static const pcbm_round coarse = {"ties |tau| coarse", tile_coarse, NULL, true, begin_hist,
                                  regions_hist, finish_coarse};
static const pcbm_round fine = {"ties |tau| fine", tile_fine, NULL, false, begin_hist, regions_hist,
                                finish_fine};
static const pcbm_round votes = {"ties votes", tile_votes, NULL, false, begin_votes, regions_votes,
                                 finish_votes};
/* dare_ties: the votes are the first pass, so they check the inputs */
static const pcbm_round dare_votes = {"dare_ties votes", tile_votes, NULL, true, begin_votes,
                                      regions_votes, finish_votes};

static const pcbm_round *const ties_rounds[TIES_NROUNDS] = {
    [TIES_R_COARSE] = &coarse, [TIES_R_FINE] = &fine, [TIES_R_VOTES] = &votes};
static const pcbm_round *const dare_ties_rounds[] = {&dare_votes};

/* ---- the methods ---- */

static pcbm_status ties_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    ties_state *ts = pcbm_calloc(1, sizeof *ts);
    if (!ts || pcbm_hset_init(&ts->h, mc->threads, mc->ntasks) != 0 ||
        !(ts->votes = pcbm_calloc((size_t)mc->threads * 2, sizeof(int64_t)))) {
        if (ts)
            pcbm_hset_free(&ts->h);
        free(ts);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for TIES statistics");
    }
    ts->dare = mc->o->method == PCBM_METHOD_DARE_TIES;
    *state = ts;
    return PCBM_OK;
}

static void ties_free(void *state)
{
    ties_state *ts = state;
    pcbm_hset_free(&ts->h);
    free(ts->votes);
    free(ts);
}

static unsigned ties_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p) { return 3; }
static unsigned dare_ties_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p) { return 1; }

static void ties_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const ties_state *ts = state;
    for (unsigned i = 0; i < ntasks; i++)
        r->v[i][0] = ts->thr[i];
    r->majority = ts->majority;
}

static void ties_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    ties_state *ts = state;
    for (unsigned i = 0; i < ntasks; i++)
        ts->thr[i] = r->v[i][0];
    ts->majority = r->majority;
}

static const char *ties_how(const void *state, const pcbm_merge_opts *o)
{
    return "exact: radix select (2 passes) and one pass for the majority sign";
}

static const char *dare_ties_how(const void *state, const pcbm_merge_opts *o)
{
    return "one pass for the majority sign";
}

static void ties_report(const void *state, pcbm_mctx *mc)
{
    const ties_state *ts = state;
    for (unsigned i = 0; i < mc->ntasks; i++)
        mc->task[i].threshold = ts->thr[i];
}

const pcbm_method_def pcbm_method_ties = {
    .id = PCBM_METHOD_TIES,
    .name = "ties",
    .partial = true,
    .uses = PCBM_USES_LAMBDA | PCBM_USES_DENSITY | PCBM_USES_SCOPE | PCBM_USES_WEIGHTS |
            PCBM_USES_DENSITIES | PCBM_USES_NORMALIZE,
    .normalizes = true,
    .stats_bytes = ties_stats_bytes,
    .init = ties_init,
    .free = ties_free,
    .rounds = ties_rounds,
    .nrounds = TIES_NROUNDS,
    .passes_planned = 3,
    .max_rounds = ties_max_rounds,
    .save = ties_save,
    .load = ties_load,
    .how = ties_how,
    .report = ties_report,
    .apply = tile_apply,
};

const pcbm_method_def pcbm_method_dare_ties = {
    .id = PCBM_METHOD_DARE_TIES,
    .name = "dare_ties",
    .partial = true,
    .uses = PCBM_USES_LAMBDA | PCBM_USES_DENSITY | PCBM_USES_SEED | PCBM_USES_SCOPE |
            PCBM_USES_WEIGHTS | PCBM_USES_DENSITIES | PCBM_USES_NORMALIZE | PCBM_USES_RESCALE,
    .normalizes = true, /* the disjoint mean, as ties (mergekit's dare_ties does not normalize) */
    .rescales = true,
    .stats_bytes = ties_stats_bytes,
    .init = ties_init,
    .free = ties_free,
    .rounds = dare_ties_rounds,
    .nrounds = 1,
    .passes_planned = 1,
    .max_rounds = dare_ties_max_rounds,
    .save = ties_save,
    .load = ties_load,
    .how = dare_ties_how,
    .apply = tile_apply,
};

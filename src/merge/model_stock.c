/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model_stock.c — mergekit's model_stock, per tensor: the task vectors' pairwise cosines (exact
 * norms and dot products: one xsum per task and per pair, per tile a double partial in element
 * order), their mean c, t = N·c / (1 + (N−1)·c), and the apply writes
 * t·mean(θ_i) + (1−t)·base in float32 (the mean: the task models summed in order, divided by N).
 * Norm products are clamped at 1e-6 and cosines to [-1, 1] (mergekit). filter_wise: the same per
 * row along the last dimension (a 1-D tensor is one row, mergekit's unsqueeze(0)), one t per
 * row: exact per-row sums (rowsum.h: a maximum round, then int128 fixed-point sums). Such a
 * tensor's record holds no t (one per row): it is marked per-row and a replay (--stats,
 * --resume, a split part's apply) runs its rounds again. A task lacking the tensor takes no part
 * (mergekit has only the others' tensors): N counts the tasks that have it, and the pairs are
 * theirs; fewer than two is refused (mergekit's "requires at least 3 models").
 */
#include "method.h"
#include "rowsum.h"
#include "../stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct stock_state {
    unsigned nsums;                     /* N norms, then the N(N−1)/2 pairs in (i, j > i) order */
    pcbm_xsum *loc;                     /* [threads][nsums] */
    pcbm_xsum *tot;                     /* [nsums] */
    float t;                            /* the tensor's t (float32) */
    /* filter_wise */
    bool per_row;                       /* the current tensor's form */
    bool rows_ready;                    /* rs and vt are allocated */
    pcbm_rowsum rs;
    float *vt;                          /* [rs.cap] t per row */
} stock_state;

/* The tasks that have tensor t (bit i: task i). */
static uint64_t present(const pcbm_mctx *mc, size_t t)
{
    uint64_t all = mc->ntasks >= 64 ? ~0ull : (1ull << mc->ntasks) - 1;
    return all & ~mc->layout->t[t].absent;
}

static unsigned nsums_of(unsigned n) { return n + n * (n - 1) / 2; }

/* The sums of the tasks in `has` (N norms², then their pairs in (i, j > i) order) out of every
 * task's (NT norms², then every pair): stock_t on the tasks that have the tensor. */
static unsigned present_sums(uint64_t has, unsigned NT, const double *all, double *out)
{
    unsigned n = 0, k = NT;
    for (unsigned i = 0; i < NT; i++)
        if (has >> i & 1u)
            out[n++] = all[i];
    unsigned o = n;
    for (unsigned i = 0; i < NT; i++)
        for (unsigned j = i + 1; j < NT; j++, k++)
            if ((has >> i & 1u) && (has >> j & 1u))
                out[o++] = all[k];
    return n;
}

/* model_stock needs the base and two task models' tensors (mergekit refuses fewer). */
static pcbm_status check_present(const pcbm_mctx *mc, size_t t, pcbm_error *err)
{
    const pcbm_tlayout *tt = &mc->layout->t[t];
    if (__builtin_popcountll(present(mc, t)) >= 2)
        return PCBM_OK;
    return pcbm_fail(err, PCBM_ERR_USAGE, "model_stock: tensor %s is missing from task model %u "
                     "(%s): model_stock needs the base and at least two task models' tensors "
                     "(mergekit refuses too); exclude it (`exclude`) to copy it from the base",
                     tt->name, tt->why_task, mc->o->tasks[tt->why_task - 1]);
}

/* Some tensor of this merge may be merged filter-wise (the buffers are needed). */
static bool may_per_row(const pcbm_merge_opts *o)
{
    return o->filter_wise == PCBM_ON ||
           (o->params && pcbm_params_has(o->params, PCBM_PARAMS_ALL, PCBM_P_FILTER_WISE));
}

static uint64_t stock_stats_bytes(const pcbm_merge_opts *o, unsigned threads,
                                  const pcbm_layout *p)
{
    uint64_t b = ((uint64_t)threads + 1) * nsums_of(o->ntasks) * sizeof(pcbm_xsum);
    if (may_per_row(o)) {
        uint64_t v = pcbm_rowsum_max_vectors(p);
        b += pcbm_rowsum_bytes(v, pcbm_rowsum_max_cols(p), nsums_of(o->ntasks), threads) + v * sizeof(float);
    }
    return b;
}

static void tile_sums(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    stock_state *s = arg;
    unsigned N = mc->ntasks, k = N;
    pcbm_xsum *x = s->loc + (size_t)w * s->nsums;
    for (unsigned i = 0; i < N; i++)
        pcbm_xsum_add(&x[i], pcbm_xsum_dot_f32(tl->tau[i], tl->tau[i], tl->n));
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = i + 1; j < N; j++)
            pcbm_xsum_add(&x[k++], pcbm_xsum_dot_f32(tl->tau[i], tl->tau[j], tl->n));
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const stock_state *s = arg;
    unsigned N = 0;
    const float *th[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (pcbm_tile_has(tl, i))
            th[N++] = tl->theta[i];
    float t = s->t, u = 1.0f - s->t, fn = (float)N;
    for (unsigned k = 0; k < tl->n; k++) {
        if (s->per_row) {
            t = s->vt[pcbm_rowsum_vec(&s->rs, tl->start + k)];
            u = 1.0f - t;
        }
        float sum = th[0][k];
        for (unsigned i = 1; i < N; i++)
            sum += th[i][k];
        tl->tmp[k] = t * (sum / fn) + u * tl->base[k];
    }
}

static pcbm_status begin_sums(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    stock_state *s = st;
    size_t t = rg->t1 - 1;
    if (pcbm_tparam(mc, t, 0, PCBM_P_FILTER_WISE) != 0.0)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "model_stock: tensor %s is merged filter-wise "
                         "but no per-row statistics were set up", mc->layout->t[t].name);
    pcbm_status cst = check_present(mc, t, err);
    if (cst != PCBM_OK)
        return cst;
    for (unsigned k = 0; k < s->nsums; k++)
        pcbm_xsum_clear(&s->tot[k]);
    for (size_t k = 0; k < (size_t)mc->threads * s->nsums; k++)
        pcbm_xsum_clear(&s->loc[k]);
    return PCBM_OK;
}

static unsigned regions_sums(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    stock_state *s = st;
    size_t bytes = s->nsums * sizeof(pcbm_xsum);
    region[0] = (pcbm_acc){s->tot, bytes, pcbm_xsum_combine, s->loc, bytes};
    return 1;
}

/* Double arithmetic on the exact sums (N norms² then the pairs' dots); t rounded to float32
 * once. */
static float stock_t(unsigned N, const double *sum)
{
    unsigned k = N, pairs = 0;
    double norm[PCBM_MAX_TASKS], csum = 0.0;
    for (unsigned i = 0; i < N; i++)
        norm[i] = sqrt(sum[i]);
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = i + 1; j < N; j++, pairs++) {
            double c = sum[k++] / fmax(norm[i] * norm[j], 1e-6);
            csum += fmin(fmax(c, -1.0), 1.0);
        }
    double c = csum / pairs;
    return (float)((N * c) / (1.0 + (N - 1) * c));
}

static int finish_sums(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    stock_state *s = st;
    double sum[PCBM_MAX_TASKS + PCBM_MAX_TASKS * (PCBM_MAX_TASKS - 1) / 2], ps[sizeof sum / sizeof sum[0]];
    for (unsigned k = 0; k < s->nsums; k++)
        sum[k] = pcbm_xsum_value(&s->tot[k]);
    unsigned n = present_sums(present(mc, rg->t1 - 1), mc->ntasks, sum, ps);
    s->t = stock_t(n, ps);
    return PCBM_ROUND_DONE;
}

/* ---- filter_wise: the maximum, then the sums of every row ---- */

static int first_round(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    stock_state *s = st;
    size_t t = rg->t1 - 1;
    s->per_row = s->rows_ready && pcbm_tparam(mc, t, 0, PCBM_P_FILTER_WISE) != 0.0;
    if (!s->per_row)
        return 0;
    pcbm_rowsum_shape(&s->rs, mc->layout, t, false);
    return 1;
}

static void tile_max(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    stock_state *s = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_rowsum_max_add(&s->rs, w, tl->tau[i], tl->n);
}

static pcbm_status begin_max(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                             pcbm_error *err)
{
    pcbm_status cst = check_present(mc, rg->t1 - 1, err);
    if (cst != PCBM_OK)
        return cst;
    pcbm_rowsum_max_clear(&((stock_state *)st)->rs);
    return PCBM_OK;
}

static unsigned regions_max(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_rowsum_max_region(&((stock_state *)st)->rs);
    return 1;
}

static int finish_max(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcbm_rowsum_set_scale(&((stock_state *)st)->rs);
    return PCBM_ROUND_NEXT;
}

static void tile_rows(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    stock_state *s = arg;
    unsigned N = mc->ntasks, k = N;
    for (unsigned i = 0; i < N; i++)
        pcbm_rowsum_dot(&s->rs, w, i, tl->start, tl->tau[i], tl->tau[i], tl->n);
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = i + 1; j < N; j++)
            pcbm_rowsum_dot(&s->rs, w, k++, tl->start, tl->tau[i], tl->tau[j], tl->n);
}

static pcbm_status begin_rows(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    pcbm_rowsum_clear(&((stock_state *)st)->rs);
    return PCBM_OK;
}

static unsigned regions_rows(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_rowsum_region(&((stock_state *)st)->rs);
    return 1;
}

static int finish_rows(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    stock_state *s = st;
    double sum[PCBM_MAX_TASKS + PCBM_MAX_TASKS * (PCBM_MAX_TASKS - 1) / 2], ps[sizeof sum / sizeof sum[0]];
    uint64_t has = present(mc, rg->t1 - 1);
    for (uint64_t v = 0; v < s->rs.nvec; v++) {
        for (unsigned k = 0; k < s->nsums; k++)
            sum[k] = pcbm_rowsum_value(&s->rs, v, k);
        unsigned n = present_sums(has, mc->ntasks, sum, ps);
        s->vt[v] = stock_t(n, ps);
    }
    s->t = 0.0f;
    return PCBM_ROUND_DONE;
}

static const pcbm_round sums = {"model_stock norms and dots", tile_sums, NULL, true, begin_sums,
                                regions_sums, finish_sums};
static const pcbm_round rowmax = {"model_stock per-row maximum", tile_max, NULL, true, begin_max,
                                  regions_max, finish_max};
static const pcbm_round rowsums = {"model_stock per-row norms and dots", tile_rows, NULL, true,
                                   begin_rows, regions_rows, finish_rows};
static const pcbm_round *const stock_rounds[] = {&sums, &rowmax, &rowsums};

static pcbm_status stock_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    stock_state *s = pcbm_calloc(1, sizeof *s);
    if (s) {
        s->nsums = nsums_of(mc->ntasks);
        s->loc = pcbm_calloc((size_t)mc->threads * s->nsums, sizeof(pcbm_xsum));
        s->tot = pcbm_calloc(s->nsums, sizeof(pcbm_xsum));
    }
    if (!s || !s->loc || !s->tot) {
        if (s) {
            free(s->loc);
            free(s->tot);
        }
        free(s);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for model_stock statistics");
    }
    if (may_per_row(mc->o)) {
        uint64_t v = pcbm_rowsum_max_vectors(mc->layout);
        pcbm_status st = pcbm_rowsum_init(&s->rs, v, pcbm_rowsum_max_cols(mc->layout), s->nsums,
                                            mc->threads, "model_stock", err);
        if (st == PCBM_OK && !(s->vt = pcbm_calloc(v, sizeof *s->vt))) {
            pcbm_rowsum_free(&s->rs);
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for model_stock per-row t");
        }
        if (st != PCBM_OK) {
            free(s->loc);
            free(s->tot);
            free(s);
            return st;
        }
        s->rows_ready = true;
    }
    *state = s;
    return PCBM_OK;
}

static void stock_free(void *state)
{
    stock_state *s = state;
    if (s->rows_ready)
        pcbm_rowsum_free(&s->rs);
    free(s->vt);
    free(s->loc);
    free(s->tot);
    free(s);
}

static void stock_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const stock_state *s = state;
    r->v[0][0] = s->t;
    r->x[0][0] = s->per_row ? 1.0f : 0.0f;
}

static void stock_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    stock_state *s = state;
    s->t = r->v[0][0];
    s->per_row = false;
}

/* A filter-wise record holds no t: the replay runs the tensor's rounds again. */
static bool stock_recompute(const pcbm_statrec *r)
{
    return r->x[0][0] != 0.0f;
}

static const char *stock_how(const void *state, const pcbm_merge_opts *o)
{
    if (may_per_row(o))
        return "exact norms and pairwise dot products per tensor (one pass), per row where "
               "filter_wise is on (two passes)";
    return "exact norms and pairwise dot products per tensor (one pass)";
}

const pcbm_method_def pcbm_method_model_stock = {
    .id = PCBM_METHOD_MODEL_STOCK,
    .name = "model_stock",
    .uses = PCBM_USES_FILTER_WISE | PCBM_USES_SCOPE,
    .needs_theta = true,
    .per_tensor = true,
    .partial = true,
    .stats_bytes = stock_stats_bytes,
    .init = stock_init,
    .free = stock_free,
    .rounds = stock_rounds,
    .nrounds = 3,
    .first_round = first_round,
    .recompute = stock_recompute,
    .passes_planned = 1,
    .save = stock_save,
    .load = stock_load,
    .how = stock_how,
    .apply = tile_apply,
};

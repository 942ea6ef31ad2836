/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model_stock.c — mergekit's model_stock, per tensor: the task vectors' pairwise cosines (exact
 * norms and dot products: one xsum per task and per pair, per tile a double partial in element
 * order), their mean c, t = N·c / (1 + (N−1)·c), and the apply writes
 * t·mean(θ_i) + (1−t)·base in float32 (the mean: the task models summed in order, divided by N).
 * Norm products are clamped at 1e-6 and cosines to [-1, 1] (mergekit). filter_wise (one t per
 * row) is refused for now. A task lacking the tensor takes no part (mergekit has only the
 * others' tensors): N counts the tasks that have it, and the pairs are theirs; fewer than two
 * is refused (mergekit's "requires at least 3 models").
 */
#include "method.h"
#include "../stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct stock_state {
    unsigned nsums;                     /* N norms, then the N(N−1)/2 pairs in (i, j > i) order */
    pcbm_xsum *loc;                     /* [threads][nsums] */
    pcbm_xsum *tot;                     /* [nsums] */
    float t;                            /* the tensor's t (float32) */
} stock_state;

/* The tasks that have tensor t (bit i: task i). */
static uint64_t present(const pcbm_mctx *mc, size_t t)
{
    uint64_t all = mc->ntasks >= 64 ? ~0ull : (1ull << mc->ntasks) - 1;
    return all & ~mc->layout->t[t].absent;
}

static unsigned nsums_of(unsigned n) { return n + n * (n - 1) / 2; }

static uint64_t stock_stats_bytes(const pcbm_merge_opts *o, unsigned threads,
                                  const pcbm_layout *p)
{
    return ((uint64_t)threads + 1) * nsums_of(o->ntasks) * sizeof(pcbm_xsum);
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
        return pcbm_fail(err, PCBM_ERR_USAGE, "model_stock: tensor %s: filter_wise (one t per "
                         "row) is not supported yet; merge it with filter_wise false (the "
                         "default)", mc->layout->t[t].name);
    const pcbm_tlayout *tt = &mc->layout->t[t];
    if (__builtin_popcountll(present(mc, t)) < 2)
        return pcbm_fail(err, PCBM_ERR_USAGE, "model_stock: tensor %s is missing from task model "
                         "%u (%s): model_stock needs the base and at least two task models' "
                         "tensors (mergekit refuses too); exclude it (`exclude`) to copy it from "
                         "the base", tt->name, tt->why_task, mc->o->tasks[tt->why_task - 1]);
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

/* Double arithmetic on the exact sums; t rounded to float32 once. */
static int finish_sums(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    stock_state *s = st;
    unsigned NT = mc->ntasks, k = NT, pairs = 0;
    uint64_t has = present(mc, rg->t1 - 1);
    unsigned N = (unsigned)__builtin_popcountll(has);
    double norm[PCBM_MAX_TASKS], csum = 0.0;
    for (unsigned i = 0; i < NT; i++)
        norm[i] = sqrt(pcbm_xsum_value(&s->tot[i]));
    for (unsigned i = 0; i < NT; i++)
        for (unsigned j = i + 1; j < NT; j++, k++) {
            if (!(has >> i & 1u) || !(has >> j & 1u))
                continue; /* a task lacking the tensor takes no part */
            double c = pcbm_xsum_value(&s->tot[k]) / fmax(norm[i] * norm[j], 1e-6);
            csum += fmin(fmax(c, -1.0), 1.0);
            pairs++;
        }
    double c = csum / pairs;
    s->t = (float)((N * c) / (1.0 + (N - 1) * c));
    return PCBM_ROUND_DONE;
}

static const pcbm_round sums = {"model_stock norms and dots", tile_sums, NULL, true, begin_sums,
                                regions_sums, finish_sums};
static const pcbm_round *const stock_rounds[] = {&sums};

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
    *state = s;
    return PCBM_OK;
}

static void stock_free(void *state)
{
    stock_state *s = state;
    free(s->loc);
    free(s->tot);
    free(s);
}

static void stock_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    r->v[0][0] = ((const stock_state *)state)->t;
}

static void stock_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    ((stock_state *)state)->t = r->v[0][0];
}

static const char *stock_how(const void *state, const pcbm_merge_opts *o)
{
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
    .nrounds = 1,
    .passes_planned = 1,
    .save = stock_save,
    .load = stock_load,
    .how = stock_how,
    .apply = tile_apply,
};

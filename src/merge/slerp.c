/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slerp.c — mergekit's slerp and nuslerp, per tensor: spherical interpolation between two
 * vectors a and b (the whole tensor flattened). One statistics round per tensor sums |a|², |b|²
 * and a·b exactly (xsum: per tile a double partial in element order, then one exact addition),
 * so the coefficients are the same numbers for any threads, --mem or split; finish() turns them
 * into float32 coefficients c0, c1, div and the apply writes (c0·a + c1·b) / div (plus the base
 * for nuslerp on task vectors).
 *   slerp    a = base, b = the one task model; t per tensor (mergekit's `t`); |cos| > 0.9995:
 *            lerp; norms ≤ 1e-8 leave a vector unnormalized (mergekit's `normalize`).
 *   nuslerp  two task models: a, b = their task vectors, t = w_1/(w_0 + w_1) (|Σw| < 1e-6: 0.5),
 *            result base + nuslerp(a, b); one task model: mergekit's form without base_model,
 *            a = base, b = the task model, t from `t`; two task models the first of which is
 *            the base (a recipe without base_model: its layout is the first model): mergekit's
 *            form without base_model too, a, b = the two models, t = w_1/(w_0 + w_1), no base
 *            added. Norms clamped at 1e-7, cos clamped to [-1, 1], |sin θ| < 1e-8: lerp.
 * nuslerp_flatten false: one interpolation per vector along the last dimension (the rows of the
 * [units / last, last] view), or, with nuslerp_row_wise, along the first (the columns of the
 * [first, units / first] view: mergekit's dim 0). Their norms and dots are exact per vector
 * (rowsum.h: a maximum round, then int128 fixed-point sums), the coefficients float32 per
 * vector. Such a tensor's record holds no coefficients (they are rows × 3 floats): it is marked
 * per-row and a replay (--stats, --resume, a split part's apply) runs its rounds again.
 * A task model lacking a tensor: slerp has one task model, so the tensor is copied from the base
 * (mergekit's slerp returns the base's tensor when it is the only one); nuslerp with two task
 * models refuses it (mergekit raises: it interpolates exactly two models).
 */
#include "method.h"
#include "rowsum.h"
#include "../stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { S_AA, S_BB, S_AB, S_NSUMS };

typedef struct slerp_coef {
    float c0, c1, div;                  /* the result is (c0·a + c1·b) / div */
    float lerp;                         /* 1 when the lerp branch was taken (report) */
} slerp_coef;

typedef struct slerp_state {
    pcbm_xsum *loc;                     /* [threads][S_NSUMS] */
    pcbm_xsum tot[S_NSUMS];
    slerp_coef k;                       /* the tensor's coefficients */
    bool nuslerp;
    bool two_models;                    /* nuslerp of the two models themselves (no base) */
    /* nuslerp_flatten false */
    bool per_row;                       /* the current tensor's form */
    bool rows_ready;                    /* rs and vk are allocated */
    pcbm_rowsum rs;
    slerp_coef *vk;                     /* [rs.cap] per vector */
} slerp_state;

/* Some tensor of this merge may be interpolated per row (the buffers are needed). */
static bool may_per_row(const pcbm_merge_opts *o)
{
    return o->method == PCBM_METHOD_NUSLERP &&
           (o->nuslerp_flatten == PCBM_OFF ||
            (o->params && pcbm_params_has(o->params, PCBM_PARAMS_ALL, PCBM_P_NUSLERP_FLATTEN)));
}

static uint64_t slerp_stats_bytes(const pcbm_merge_opts *o, unsigned threads,
                                  const pcbm_layout *p)
{
    uint64_t b = ((uint64_t)threads + 1) * S_NSUMS * sizeof(pcbm_xsum);
    if (may_per_row(o)) {
        uint64_t v = pcbm_rowsum_max_vectors(p);
        b += pcbm_rowsum_bytes(v, pcbm_rowsum_max_cols(p), S_NSUMS, threads) + v * sizeof(slerp_coef);
    }
    return b;
}

/* nuslerp on the task vectors (two task models besides the base), or on the models
 * themselves. */
static bool on_tasks(const pcbm_mctx *mc, const slerp_state *s)
{
    return s->nuslerp && mc->ntasks == 2 && !s->two_models;
}

/* nuslerp's t from the two task models' weights. */
static bool t_from_weights(const pcbm_mctx *mc, const slerp_state *s)
{
    return s->nuslerp && mc->ntasks == 2;
}

/* The two vectors of a tile. */
static void vectors(const pcbm_mctx *mc, const slerp_state *s, const pcbm_tile *tl,
                    const float **a, const float **b)
{
    if (on_tasks(mc, s)) {
        *a = tl->tau[0];
        *b = tl->tau[1];
    } else if (s->two_models) {
        *a = tl->theta[0];
        *b = tl->theta[1];
    } else {
        *a = tl->base;
        *b = tl->theta[0];
    }
}

static void tile_sums(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    slerp_state *s = arg;
    const float *a, *b;
    vectors(mc, s, tl, &a, &b);
    pcbm_xsum *x = s->loc + (size_t)w * S_NSUMS;
    pcbm_xsum_add(&x[S_AA], pcbm_xsum_dot_f32(a, a, tl->n));
    pcbm_xsum_add(&x[S_BB], pcbm_xsum_dot_f32(b, b, tl->n));
    pcbm_xsum_add(&x[S_AB], pcbm_xsum_dot_f32(a, b, tl->n));
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const slerp_state *s = arg;
    const float *a, *b;
    vectors(mc, s, tl, &a, &b);
    if (s->per_row) {
        bool tasks = on_tasks(mc, s);
        for (unsigned k = 0; k < tl->n; k++) {
            const slerp_coef *c = &s->vk[pcbm_rowsum_vec(&s->rs, tl->start + k)];
            float r = (c->c0 * a[k] + c->c1 * b[k]) / c->div;
            tl->tmp[k] = tasks ? tl->base[k] + r : r;
        }
        return;
    }
    float c0 = s->k.c0, c1 = s->k.c1, div = s->k.div;
    if (on_tasks(mc, s)) {
        for (unsigned k = 0; k < tl->n; k++)
            tl->tmp[k] = tl->base[k] + (c0 * a[k] + c1 * b[k]) / div;
    } else {
        for (unsigned k = 0; k < tl->n; k++)
            tl->tmp[k] = (c0 * a[k] + c1 * b[k]) / div;
    }
}

/* ---- the round ---- */

/* The parameters of tensor t: a finite t where it is read. */
static pcbm_status check_t(const slerp_state *s, const pcbm_mctx *mc, size_t t, pcbm_error *err)
{
    if (!t_from_weights(mc, s) && !isfinite(pcbm_tparam(mc, t, 0, PCBM_P_T)))
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: tensor %s has no finite `t` (got %g): give t "
                         "for every tensor", pcbm_method_name(mc->o->method), mc->layout->t[t].name,
                         pcbm_tparam(mc, t, 0, PCBM_P_T));
    const pcbm_tlayout *tt = &mc->layout->t[t];
    if (tt->absent)
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: tensor %s is missing from task model %u (%s): "
                         "the interpolation needs both task models' tensors (mergekit refuses "
                         "too); exclude it (`exclude`) to copy it from the base",
                         pcbm_method_name(mc->o->method), tt->name, tt->why_task,
                         mc->o->tasks[tt->why_task - 1]);
    return PCBM_OK;
}

static pcbm_status begin_sums(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    slerp_state *s = st;
    pcbm_status rc = check_t(s, mc, rg->t1 - 1, err);
    if (rc != PCBM_OK)
        return rc;
    if (s->nuslerp && pcbm_tparam(mc, rg->t1 - 1, 0, PCBM_P_NUSLERP_FLATTEN) == 0.0)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "nuslerp: tensor %s is interpolated per row "
                         "but no per-row statistics were set up", mc->layout->t[rg->t1 - 1].name);
    for (unsigned k = 0; k < S_NSUMS; k++)
        pcbm_xsum_clear(&s->tot[k]);
    for (size_t k = 0; k < (size_t)mc->threads * S_NSUMS; k++)
        pcbm_xsum_clear(&s->loc[k]);
    return PCBM_OK;
}

static unsigned regions_sums(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    slerp_state *s = st;
    region[0] = (pcbm_acc){s->tot, sizeof s->tot, pcbm_xsum_combine, s->loc, sizeof s->tot};
    return 1;
}

/* The coefficients: double arithmetic on the exact sums, rounded to float32 once each. */
static void slerp_coefs(slerp_coef *s, double t, double aa, double bb, double ab)
{
    double n0 = sqrt(aa), n1 = sqrt(bb);
    double d0 = n0 > 1e-8 ? n0 : 1.0, d1 = n1 > 1e-8 ? n1 : 1.0;
    double dot = ab / (d0 * d1);
    s->div = 1.0f;
    if (fabs(dot) > 0.9995) {
        s->c0 = (float)(1.0 - t);
        s->c1 = (float)t;
        s->lerp = 1.0f;
        return;
    }
    double th0 = acos(dot), sin0 = sin(th0), tht = th0 * t;
    s->c0 = (float)(sin(th0 - tht) / sin0);
    s->c1 = (float)(sin(tht) / sin0);
    s->lerp = 0.0f;
}

static void nuslerp_coefs(slerp_coef *s, double t, double aa, double bb, double ab)
{
    double d0 = fmax(sqrt(aa), 1e-7), d1 = fmax(sqrt(bb), 1e-7);
    double cs = fmin(fmax(ab / (d0 * d1), -1.0), 1.0);
    double th = acos(cs), sn = sin(th);
    if (fabs(sn) < 1e-8) {
        s->c0 = (float)(1.0 - t);
        s->c1 = (float)t;
        s->div = 1.0f;
        s->lerp = 1.0f;
        return;
    }
    s->c0 = (float)sin((1.0 - t) * th);
    s->c1 = (float)sin(t * th);
    s->div = (float)sn;
    s->lerp = 0.0f;
}

/* nuslerp's t: w_1 / (w_0 + w_1) (mergekit), or `t` for the form without a base. */
static double interp_t(const pcbm_mctx *mc, const slerp_state *s, size_t tensor)
{
    if (!t_from_weights(mc, s))
        return pcbm_tparam(mc, tensor, 0, PCBM_P_T);
    double w0 = pcbm_tparam(mc, tensor, 0, PCBM_P_WEIGHT);
    double w1 = pcbm_tparam(mc, tensor, 1, PCBM_P_WEIGHT);
    return fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
}

static int finish_sums(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    slerp_state *s = st;
    double aa = pcbm_xsum_value(&s->tot[S_AA]), bb = pcbm_xsum_value(&s->tot[S_BB]);
    double ab = pcbm_xsum_value(&s->tot[S_AB]);
    double t = interp_t(mc, s, rg->t1 - 1);
    if (s->nuslerp)
        nuslerp_coefs(&s->k, t, aa, bb, ab);
    else
        slerp_coefs(&s->k, t, aa, bb, ab);
    return PCBM_ROUND_DONE;
}

/* ---- per row (nuslerp_flatten false): the maximum, then the sums of every vector ---- */

static int first_round(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    slerp_state *s = st;
    size_t t = rg->t1 - 1;
    s->per_row = s->nuslerp && s->rows_ready && pcbm_tparam(mc, t, 0, PCBM_P_NUSLERP_FLATTEN) == 0.0;
    if (!s->per_row)
        return 0;
    pcbm_rowsum_shape(&s->rs, mc->layout, t, pcbm_tparam(mc, t, 0, PCBM_P_NUSLERP_ROW_WISE) != 0.0);
    return 1;
}

static void tile_max(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    slerp_state *s = arg;
    const float *a, *b;
    vectors(mc, s, tl, &a, &b);
    pcbm_rowsum_max_add(&s->rs, w, a, tl->n);
    pcbm_rowsum_max_add(&s->rs, w, b, tl->n);
}

static pcbm_status begin_max(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                             pcbm_error *err)
{
    slerp_state *s = st;
    pcbm_status rc = check_t(s, mc, rg->t1 - 1, err);
    if (rc == PCBM_OK)
        pcbm_rowsum_max_clear(&s->rs);
    return rc;
}

static unsigned regions_max(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_rowsum_max_region(&((slerp_state *)st)->rs);
    return 1;
}

static int finish_max(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcbm_rowsum_set_scale(&((slerp_state *)st)->rs);
    return PCBM_ROUND_NEXT;
}

static void tile_rows(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    slerp_state *s = arg;
    const float *a, *b;
    vectors(mc, s, tl, &a, &b);
    pcbm_rowsum_dot(&s->rs, w, S_AA, tl->start, a, a, tl->n);
    pcbm_rowsum_dot(&s->rs, w, S_BB, tl->start, b, b, tl->n);
    pcbm_rowsum_dot(&s->rs, w, S_AB, tl->start, a, b, tl->n);
}

static pcbm_status begin_rows(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    pcbm_rowsum_clear(&((slerp_state *)st)->rs);
    return PCBM_OK;
}

static unsigned regions_rows(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_rowsum_region(&((slerp_state *)st)->rs);
    return 1;
}

static int finish_rows(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    slerp_state *s = st;
    double t = interp_t(mc, s, rg->t1 - 1);
    float lerps = 0.0f;
    for (uint64_t v = 0; v < s->rs.nvec; v++) {
        nuslerp_coefs(&s->vk[v], t, pcbm_rowsum_value(&s->rs, v, S_AA),
                      pcbm_rowsum_value(&s->rs, v, S_BB), pcbm_rowsum_value(&s->rs, v, S_AB));
        lerps += s->vk[v].lerp;
    }
    s->k = (slerp_coef){0.0f, 0.0f, 1.0f, lerps};
    return PCBM_ROUND_DONE;
}

static const pcbm_round sums = {"slerp norms and dot", tile_sums, NULL, true, begin_sums,
                                regions_sums, finish_sums};
static const pcbm_round nusums = {"nuslerp norms and dot", tile_sums, NULL, true, begin_sums,
                                  regions_sums, finish_sums};
static const pcbm_round *const slerp_rounds[] = {&sums};
static const pcbm_round rowmax = {"nuslerp per-row maximum", tile_max, NULL, true, begin_max,
                                  regions_max, finish_max};
static const pcbm_round rowsums = {"nuslerp per-row norms and dots", tile_rows, NULL, true,
                                   begin_rows, regions_rows, finish_rows};
static const pcbm_round *const nuslerp_rounds[] = {&nusums, &rowmax, &rowsums};

/* ---- the methods ---- */

static pcbm_status slerp_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    slerp_state *s = pcbm_calloc(1, sizeof *s);
    if (!s || !(s->loc = pcbm_calloc((size_t)mc->threads * S_NSUMS, sizeof(pcbm_xsum)))) {
        free(s);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for %s statistics",
                         pcbm_method_name(mc->o->method));
    }
    s->nuslerp = mc->o->method == PCBM_METHOD_NUSLERP;
    s->two_models = s->nuslerp && mc->ntasks == 2 && !strcmp(mc->o->base, mc->o->tasks[0]);
    if (may_per_row(mc->o)) {
        uint64_t v = pcbm_rowsum_max_vectors(mc->layout);
        pcbm_status st = pcbm_rowsum_init(&s->rs, v, pcbm_rowsum_max_cols(mc->layout), S_NSUMS,
                                            mc->threads, "nuslerp", err);
        if (st == PCBM_OK && !(s->vk = pcbm_calloc(v, sizeof *s->vk))) {
            pcbm_rowsum_free(&s->rs);
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for nuslerp per-row coefficients");
        }
        if (st != PCBM_OK) {
            free(s->loc);
            free(s);
            return st;
        }
        s->rows_ready = true;
    }
    *state = s;
    return PCBM_OK;
}

static void slerp_free(void *state)
{
    slerp_state *s = state;
    if (s->rows_ready)
        pcbm_rowsum_free(&s->rs);
    free(s->vk);
    free(s->loc);
    free(s);
}

static void slerp_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const slerp_state *s = state;
    r->v[0][0] = s->k.c0;
    r->v[0][1] = s->k.c1;
    r->v[0][2] = s->k.div;
    r->v[0][3] = s->k.lerp;     /* per row: the vectors interpolated linearly */
    r->x[0][0] = s->per_row ? 1.0f : 0.0f;
}

static void slerp_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    slerp_state *s = state;
    s->k = (slerp_coef){r->v[0][0], r->v[0][1], r->v[0][2], r->v[0][3]};
    s->per_row = false;
}

/* A per-row record holds no coefficients: the replay runs the tensor's rounds again. */
static bool slerp_recompute(const pcbm_statrec *r)
{
    return r->x[0][0] != 0.0f;
}

static const char *slerp_how(const void *state, const pcbm_merge_opts *o)
{
    if (may_per_row(o))
        return "exact norms and dot products per tensor (one pass), per row or column where "
               "nuslerp_flatten is false (two passes)";
    return "exact norms and dot product per tensor (one pass)";
}

const pcbm_method_def pcbm_method_slerp = {
    .id = PCBM_METHOD_SLERP,
    .name = "slerp",
    .uses = PCBM_USES_T | PCBM_USES_SCOPE,
    .needs_theta = true,
    .per_tensor = true,
    .partial = true,
    .stats_bytes = slerp_stats_bytes,
    .init = slerp_init,
    .free = slerp_free,
    .rounds = slerp_rounds,
    .nrounds = 1,
    .passes_planned = 1,
    .save = slerp_save,
    .load = slerp_load,
    .how = slerp_how,
    .apply = tile_apply,
};

const pcbm_method_def pcbm_method_nuslerp = {
    .id = PCBM_METHOD_NUSLERP,
    .name = "nuslerp",
    .uses = PCBM_USES_T | PCBM_USES_WEIGHTS | PCBM_USES_NUSLERP | PCBM_USES_SCOPE,
    .needs_theta = true,
    .per_tensor = true,
    .partial = true,
    .stats_bytes = slerp_stats_bytes,
    .init = slerp_init,
    .free = slerp_free,
    .rounds = nuslerp_rounds,
    .nrounds = 3,
    .first_round = first_round,
    .recompute = slerp_recompute,
    .passes_planned = 1,
    .save = slerp_save,
    .load = slerp_load,
    .how = slerp_how,
    .apply = tile_apply,
};

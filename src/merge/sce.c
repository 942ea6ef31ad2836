/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sce.c — mergekit's sce (select, calculate, erase), per tensor:
 *   select     with 0 < select_topk < 1, keep the k = ⌊float32(nonzero) · float32(select_topk)⌋
 *              elements of largest variance across the task vectors (mergekit: torch.topk of
 *              |var|); var per element in double: mean m = Σ τ_i / N, Σ (τ_i − m)² / N, rounded
 *              to float32 once (0 exactly when every τ_i is equal). Ties at the cut: elements above
 *              it, then equal ones in index order until exactly k (a stable sort's choice).
 *   calculate  w_i = mean(τ'_i²) / Σ_j mean(τ'_j²) over the masked task vectors τ'_i (exact sums;
 *              Σ < 1e-6: 1/N each), rounded to float32.
 *   erase      per element the sign of Σ τ'_i (≥ 0: +1), the tasks whose sign agrees keep their
 *              weight; result base + Σ τ'_i·w_i / max(Σ w_i, 1e-6) over those, in task order.
 * A task lacking the tensor takes no part (mergekit has only the others' tensors): the variance,
 * the weights (1/N: N the tasks that have it) and the erase run over the tasks that have it.
 * Rounds per tensor: variance coarse and fine (exact radix select of the cut, with the count of
 * non-zero variances), index coarse and fine (only when the cut splits equal values: the last
 * index kept among them), weights (N exact sums of squares).
 */
#include "method.h"
#include "../kernels/mkern.h"
#include "../stats/qsel.h"
#include "../stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SCE_R_VCOARSE, SCE_R_VFINE, SCE_R_ICOARSE, SCE_R_IFINE, SCE_R_WEIGHTS, SCE_NROUNDS };
enum { MASK_ALL, MASK_NONE, MASK_CUT };

typedef struct sce_state {
    pcbm_hset h;                        /* 1 stream: variance keys, then index keys */
    int64_t *nz_loc;                    /* [threads]: non-zero variances */
    int64_t nz;
    pcbm_xsum *loc;                     /* [threads][N]: Σ τ'_i² */
    pcbm_xsum *tot;                     /* [N] */
    pcbm_sel sel;
    uint64_t k;                         /* elements kept */
    /* the statistics apply reads (the record) */
    int mask;
    float thr;                          /* MASK_CUT: var > thr kept, var == thr kept ... */
    uint64_t cut;                       /* ... up to this index (UINT64_MAX: all of them) */
    float w[PCBM_MAX_TASKS];
} sce_state;

static uint64_t sce_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    return pcbm_hset_bytes(threads, 1) + (uint64_t)threads * sizeof(int64_t) +
           ((uint64_t)threads + 1) * o->ntasks * sizeof(pcbm_xsum);
}

/* The variance of element k across the task vectors of the tasks that have the tensor (see the
 * file's comment). */
static float variance(const pcbm_tile *tl, unsigned N, unsigned k)
{
    float x0 = 0.0f;
    bool same = true, first = true;
    double m = 0.0;
    unsigned np = 0;
    for (unsigned i = 0; i < N; i++) {
        if (!pcbm_tile_has(tl, i))
            continue;
        if (first)
            x0 = tl->tau[i][k], first = false;
        m += (double)tl->tau[i][k];
        same = same && tl->tau[i][k] == x0;
        np++;
    }
    if (same)
        return 0.0f;
    m /= np;
    double v = 0.0;
    for (unsigned i = 0; i < N; i++) {
        if (!pcbm_tile_has(tl, i))
            continue;
        double d = (double)tl->tau[i][k] - m;
        v += d * d;
    }
    return (float)(v / np);
}

static void variances(const pcbm_mctx *mc, const pcbm_tile *tl, float *var)
{
    for (unsigned k = 0; k < tl->n; k++)
        var[k] = variance(tl, mc->ntasks, k);
}

/* Whether element k (of tile tl, variance v) survives the selection. */
static bool kept(const sce_state *s, const pcbm_tile *tl, unsigned k, float v)
{
    switch (s->mask) {
    case MASK_ALL: return true;
    case MASK_NONE: return false;
    default: return v > s->thr || (v == s->thr && tl->start + k <= s->cut);
    }
}

/* The masked task vectors τ'_i of a tile into tl->theta[i]. */
static void masked(const pcbm_mctx *mc, const sce_state *s, const pcbm_tile *tl)
{
    unsigned N = mc->ntasks;
    for (unsigned k = 0; k < tl->n; k++) {
        bool keep = s->mask == MASK_ALL ||
                    (s->mask == MASK_CUT && kept(s, tl, k, variance(tl, N, k)));
        for (unsigned i = 0; i < N; i++)
            tl->theta[i][k] = keep ? tl->tau[i][k] : tl->tau[i][k] * 0.0f;
    }
}

static void tile_vcoarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sce_state *s = arg;
    variances(mc, tl, tl->tmp);
    int64_t nz = 0;
    for (unsigned k = 0; k < tl->n; k++)
        nz += tl->tmp[k] != 0.0f;
    s->nz_loc[w] += nz;
    pcbm_k_hist_coarse(tl->tmp, tl->n, false, 1, pcbm_hset_local(&s->h, w, 0));
}

static void tile_vfine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sce_state *s = arg;
    variances(mc, tl, tl->tmp);
    pcbm_k_hist_fine(tl->tmp, tl->n, false, s->sel.prefix, pcbm_hset_local(&s->h, w, 0));
}

/* Index keys of the elements equal to the cut: top halves, or low halves under sel.prefix. */
static void tile_index(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg, bool fine)
{
    sce_state *s = arg;
    uint64_t *h = pcbm_hset_local(&s->h, w, 0);
    variances(mc, tl, tl->tmp);
    for (unsigned k = 0; k < tl->n; k++) {
        if (tl->tmp[k] != s->thr)
            continue;
        uint32_t idx = (uint32_t)(tl->start + k);
        if (!fine)
            h[idx >> PCBM_QBITS]++;
        else if ((idx >> PCBM_QBITS) == s->sel.prefix)
            h[idx & (PCBM_QBINS - 1)]++;
    }
}

static void tile_icoarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    tile_index(mc, w, tl, arg, false);
}

static void tile_ifine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    tile_index(mc, w, tl, arg, true);
}

static void tile_weights(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sce_state *s = arg;
    masked(mc, s, tl);
    pcbm_xsum *x = s->loc + (size_t)w * mc->ntasks;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_xsum_add(&x[i], pcbm_xsum_dot_f32(tl->theta[i], tl->theta[i], tl->n));
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const sce_state *s = arg;
    unsigned N = mc->ntasks;
    masked(mc, s, tl);
    const float *const *v = (const float *const *)tl->theta;
    for (unsigned k = 0; k < tl->n; k++) {
        float sum = 0.0f;
        for (unsigned i = 0; i < N; i++)
            sum += v[i][k];
        float maj = sum >= 0.0f ? 1.0f : -1.0f;
        float acc = 0.0f, den = 0.0f;
        for (unsigned i = 0; i < N; i++) {
            float x = v[i][k];
            float sg = x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
            float ew = sg == maj ? s->w[i] : 0.0f;
            acc += x * ew;
            den += ew;
        }
        tl->tmp[k] = tl->base[k] + acc / fmaxf(den, 1e-6f);
    }
}

/* ---- rounds ---- */

static int sce_first_round(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    double topk = pcbm_tparam(mc, rg->t1 - 1, 0, PCBM_P_SELECT_TOPK);
    s->thr = 0.0f;
    s->cut = UINT64_MAX;
    if (topk >= 1.0 || topk <= 0.0) {
        s->mask = topk >= 1.0 ? MASK_ALL : MASK_NONE;
        return SCE_R_WEIGHTS;
    }
    s->mask = MASK_CUT;
    return SCE_R_VCOARSE;
}

static pcbm_status begin_hist(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    sce_state *s = st;
    pcbm_hset_clear(&s->h);
    memset(s->nz_loc, 0, (size_t)mc->threads * sizeof(int64_t));
    s->nz = 0;
    return PCBM_OK;
}

static pcbm_status begin_index(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                               pcbm_error *err)
{
    if (rg->d > (uint64_t)UINT32_MAX + 1)
        return pcbm_fail(err, PCBM_ERR_USAGE, "sce: tensor %s has %llu elements: a cut among "
                         "equal variances is resolved by element index for at most 2^32 "
                         "elements; use select_topk 1 for this tensor",
                         mc->layout->t[rg->t1 - 1].name, (unsigned long long)rg->d);
    return begin_hist(st, mc, rg, err);
}

static unsigned regions_hist(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    sce_state *s = st;
    region[0] = pcbm_hset_region(&s->h);
    region[1] = (pcbm_acc){&s->nz, sizeof s->nz, pcbm_acc_sum_i64, s->nz_loc, sizeof(int64_t)};
    return 2;
}

static int finish_vcoarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    float topk = (float)pcbm_tparam(mc, rg->t1 - 1, 0, PCBM_P_SELECT_TOPK);
    s->k = (uint64_t)((float)s->nz * topk); /* mergekit: int(count_nonzero(var) * select_topk) */
    if (s->k == 0) {
        s->mask = MASK_NONE;
        return SCE_R_WEIGHTS;
    }
    pcbm_sel_init(&s->sel, rg->d - s->k);
    pcbm_sel_coarse(&s->sel, pcbm_hset_total(&s->h, 0));
    return PCBM_ROUND_NEXT;
}

static int finish_vfine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    const uint64_t *fine = pcbm_hset_total(&s->h, 0);
    pcbm_sel_fine(&s->sel, fine);
    s->thr = pcbm_fkey_value(s->sel.key);
    uint32_t lo = s->sel.key & (PCBM_QBINS - 1);
    uint64_t below = s->sel.below;
    for (uint32_t b = 0; b < lo; b++)
        below += fine[b];
    uint64_t eq = fine[lo], above = rg->d - below - eq, need = s->k - above;
    if (need >= eq)
        return SCE_R_WEIGHTS; /* every element equal to the cut is kept */
    pcbm_sel_init(&s->sel, need - 1);
    return PCBM_ROUND_NEXT;
}

static int finish_icoarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    pcbm_sel_coarse(&s->sel, pcbm_hset_total(&s->h, 0));
    return PCBM_ROUND_NEXT;
}

static int finish_ifine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    pcbm_sel_fine(&s->sel, pcbm_hset_total(&s->h, 0));
    s->cut = s->sel.key;
    return PCBM_ROUND_NEXT;
}

static pcbm_status begin_weights(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                                 pcbm_error *err)
{
    sce_state *s = st;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_xsum_clear(&s->tot[i]);
    for (size_t k = 0; k < (size_t)mc->threads * mc->ntasks; k++)
        pcbm_xsum_clear(&s->loc[k]);
    return PCBM_OK;
}

static unsigned regions_weights(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    sce_state *s = st;
    size_t bytes = mc->ntasks * sizeof(pcbm_xsum);
    region[0] = (pcbm_acc){s->tot, bytes, pcbm_xsum_combine, s->loc, bytes};
    return 1;
}

static int finish_weights(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sce_state *s = st;
    unsigned N = mc->ntasks, np = 0;
    uint64_t absent = mc->layout->t[rg->t1 - 1].absent;
    double ms[PCBM_MAX_TASKS], sum = 0.0;
    for (unsigned i = 0; i < N; i++) {
        ms[i] = pcbm_xsum_value(&s->tot[i]) / (double)rg->d;
        if (!(absent >> i & 1u)) { /* a task lacking the tensor takes no part: weight 0 */
            sum += ms[i];
            np++;
        }
    }
    for (unsigned i = 0; i < N; i++)
        s->w[i] = absent >> i & 1u ? 0.0f : (float)(fabs(sum) < 1e-6 ? 1.0 / np : ms[i] / sum);
    return PCBM_ROUND_DONE;
}

static const pcbm_round vcoarse = {"sce variance coarse", tile_vcoarse, NULL, true, begin_hist,
                                   regions_hist, finish_vcoarse};
static const pcbm_round vfine = {"sce variance fine", tile_vfine, NULL, false, begin_hist,
                                 regions_hist, finish_vfine};
static const pcbm_round icoarse = {"sce cut index coarse", tile_icoarse, NULL, false, begin_index,
                                   regions_hist, finish_icoarse};
static const pcbm_round ifine = {"sce cut index fine", tile_ifine, NULL, false, begin_index,
                                 regions_hist, finish_ifine};
/* the first pass when nothing is selected: it checks the inputs */
static const pcbm_round weights = {"sce weights", tile_weights, NULL, true, begin_weights,
                                   regions_weights, finish_weights};

static const pcbm_round *const sce_rounds[SCE_NROUNDS] = {
    [SCE_R_VCOARSE] = &vcoarse, [SCE_R_VFINE] = &vfine, [SCE_R_ICOARSE] = &icoarse,
    [SCE_R_IFINE] = &ifine, [SCE_R_WEIGHTS] = &weights};

/* ---- the method ---- */

static void sce_free(void *state)
{
    sce_state *s = state;
    pcbm_hset_free(&s->h);
    free(s->nz_loc);
    free(s->loc);
    free(s->tot);
    free(s);
}

static pcbm_status sce_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    sce_state *s = pcbm_calloc(1, sizeof *s);
    if (!s)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for sce statistics");
    if (pcbm_hset_init(&s->h, mc->threads, 1) != 0 ||
        !(s->nz_loc = pcbm_calloc(mc->threads, sizeof(int64_t))) ||
        !(s->loc = pcbm_calloc((size_t)mc->threads * mc->ntasks, sizeof(pcbm_xsum))) ||
        !(s->tot = pcbm_calloc(mc->ntasks, sizeof(pcbm_xsum)))) {
        sce_free(s);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for sce statistics");
    }
    *state = s;
    return PCBM_OK;
}

static void sce_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const sce_state *s = state;
    uint32_t c32 = (uint32_t)s->cut;
    float cut;
    memcpy(&cut, &c32, sizeof cut); /* statistics files keep float bit patterns exactly */
    r->v[0][0] = (float)s->mask;
    r->v[0][1] = s->thr;
    r->v[0][2] = cut;
    r->majority = s->cut != UINT64_MAX; /* a cut among equal values */
    for (unsigned i = 0; i < ntasks; i++)
        r->v[i][3] = s->w[i];
}

static void sce_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    sce_state *s = state;
    s->mask = (int)r->v[0][0];
    s->thr = r->v[0][1];
    uint32_t c32;
    memcpy(&c32, &r->v[0][2], sizeof c32);
    s->cut = r->majority != 0.0f ? c32 : UINT64_MAX;
    for (unsigned i = 0; i < ntasks; i++)
        s->w[i] = r->v[i][3];
}

static const char *sce_how(const void *state, const pcbm_merge_opts *o)
{
    return "exact per tensor: radix select of the variance cut (2 passes, 2 more where equal "
           "values straddle it) and exact sums of squares (1 pass)";
}

const pcbm_method_def pcbm_method_sce = {
    .id = PCBM_METHOD_SCE,
    .name = "sce",
    .uses = PCBM_USES_SELECT_TOPK | PCBM_USES_SCOPE,
    .per_tensor = true,
    .partial = true,
    .stats_bytes = sce_stats_bytes,
    .init = sce_init,
    .free = sce_free,
    .rounds = sce_rounds,
    .nrounds = SCE_NROUNDS,
    .passes_planned = 3,
    .first_round = sce_first_round,
    .save = sce_save,
    .load = sce_load,
    .how = sce_how,
    .apply = tile_apply,
};

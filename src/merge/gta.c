/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gta.c — mergekit's generalized task arithmetic, per tensor (or over the model), streamed: ties, dare_ties and
 * dare_linear as mergekit computes them (`semantics` MERGEKIT), breadcrumbs, breadcrumbs_ties,
 * della and della_linear (always mergekit's). Per tensor and task: τ_i = θ_i − base, sparsified
 * (magnitude: the k = ⌊density·n⌋ largest |τ|; random: DARE's counter-based Bernoulli(density)
 * mask; magnitude outliers: the ranks [n_bot, n − n_top) of |τ| ascending; DELLA: a draw per
 * element against a probability that grows with the rank of |τ| within its row, the rows read
 * whole from blocks the layout cuts at row boundaries), rescaled to the L1 norm of τ_i when
 * `rescale` is on (masked · Σ|τ| / Σ|masked|, unless a sum is below 1e-7), times its weight;
 * then the sign consensus ("sum": the majority sign is that of Σ_i w_i·τ'_i, ≥ 0 giving +1; a
 * task takes part where its weighted value has that sign) or none, the sum of the taking-part
 * values divided by their weights (`normalize`), times λ, plus the base.
 * Ties of |τ| at a cut are broken by element index (a stable sort): magnitude keeps the equal
 * elements with the smallest indices, outliers drop the smallest-indexed equal ones at the lower
 * cut and keep them at the upper one. Every cut is exact: radix select of the |τ| key (two passes),
 * and, where equal values straddle the cut, radix select of the element index among them (two
 * more). The L1 sums are exact (stats/xsum.h), so the result does not depend on the cut of the
 * tensor into blocks, threads or machines.
 * Rounds per tensor: |tau| coarse (+ Σ|τ|), |tau| fine, index coarse, index fine, L1 (Σ|masked|);
 * the random methods and DELLA: L1 only (Σ|τ| and Σ|masked| together), when they rescale.
 * Global scope (`scope` GLOBAL; the default is tensor): the same statistics over the whole model
 * as one range, the element index being its index in the global flattening (64-bit: one more
 * index round per 16 bits beyond 2^32); DELLA ranks |τ| among the model's elements, interpolated
 * inside the bins of one round's coarse histogram, which its record keeps (docs/semantics.md).
 */
#include "method.h"
#include "../kernels/convert.h"
#include "../kernels/mkern.h"
#include "../kernels/rng.h"
#include "../stats/qsel.h"
#include "../stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum gta_sparsify { SP_MAGNITUDE, SP_RANDOM, SP_OUTLIERS, SP_DELLA } gta_sparsify;

/* What one task does to its τ on the current tensor. */
enum { MODE_ALL = 0, MODE_NONE, MODE_MAGNITUDE, MODE_OUTLIERS, MODE_RANDOM, MODE_DELLA };

#define NO_INDEX UINT64_MAX     /* an index cut that keeps every equal element */
#define L1_EPS 1e-7             /* mergekit's rescaled_masked_tensor eps */
#define DELLA_SALT 0x44454C4C41000000ull /* "DELLA": its stream is never DARE's */

typedef struct gta_state {
    const pcbm_mctx *mc;
    gta_sparsify sp;
    bool consensus;
    bool global;                          /* global scope: one range, indices over the model */
    pcbm_hset h;                          /* 2N streams: cut 2i (lower / magnitude), 2i+1 (upper) */
    pcbm_sel sel[2 * PCBM_MAX_TASKS];     /* the |τ| key at the cut's rank */
    uint64_t iprefix[2 * PCBM_MAX_TASKS]; /* the index among the equal keys: digits found */
    uint64_t irank[2 * PCBM_MAX_TASKS];   /* its rank among the equal elements left */
    unsigned ishift;                      /* the 16-bit digit the index round counts */
    uint64_t rank[2 * PCBM_MAX_TASKS];    /* ascending rank of the cut */
    bool cut[2 * PCBM_MAX_TASKS];         /* the cut is needed */
    bool icut[2 * PCBM_MAX_TASKS];        /* its index select is needed */
    pcbm_xsum *xs_local;                  /* [threads][2N]: Σ|τ_i| (i), Σ|masked τ_i| (N + i) */
    pcbm_xsum xs[2 * PCBM_MAX_TASKS];
    /* the statistics (the record) */
    int mode[PCBM_MAX_TASKS];
    uint32_t key[2 * PCBM_MAX_TASKS];
    uint64_t idx[2 * PCBM_MAX_TASKS];
    float scale[PCBM_MAX_TASKS];
    /* DELLA: per worker, the ranks of one row per task (the row its last tile was in) */
    uint64_t row_cap;                     /* the longest row */
    float *row_base, *row_tau;            /* [threads][row_cap] */
    uint64_t *row_pairs;                  /* [threads][2 · row_cap]: |τ| key << 32 | column, and
                                             the sort's scratch */
    uint32_t *row_rank;                   /* [threads][N][row_cap] */
    size_t *row_tensor;                   /* [threads][N]: tensor index + 1 of the ranks held */
    uint64_t *row_id;                     /* [threads][N]: their row */
    /* DELLA in global scope: per task, the model's coarse |τ| histogram as cumulative counts
     * (cum[b] elements below coarse bin b, cum[b + 1] − cum[b] in it) */
    uint64_t *cum;                        /* [N][PCBM_QBINS + 1] */
    /* a task lacking a tensor takes no part in it: the range's elements each task has, and the
     * model's (global scope's DELLA ranks) */
    uint64_t d[PCBM_MAX_TASKS];
    uint64_t dmodel[PCBM_MAX_TASKS];
} gta_state;

static bool random_like(const gta_state *gs)
{
    return gs->sp == SP_RANDOM || gs->sp == SP_DELLA;
}

/* ---- parameters ---- */

static double tparam(const pcbm_mctx *mc, size_t t, unsigned i, pcbm_param_id p)
{
    return pcbm_tparam(mc, t, i, p);
}

static bool rescales(const pcbm_mctx *mc, size_t t)
{
    return tparam(mc, t, 0, PCBM_P_RESCALE) != 0.0;
}

/* Task i's mode on tensor t of d elements, and (cut methods) the ranks of its cuts:
 * magnitude: C at ascending rank d − k (the smallest kept); outliers: lower at n_bot (the first
 * kept), upper at d − n_top (the first dropped). */
static int task_mode(gta_state *gs, size_t t, unsigned i, uint64_t d)
{
    const pcbm_mctx *mc = gs->mc;
    double dens = tparam(mc, t, i, PCBM_P_DENSITY);
    uint64_t *r = &gs->rank[2 * i];
    gs->cut[2 * i] = gs->cut[2 * i + 1] = false;
    if (!(dens < 1.0))
        return MODE_ALL; /* mergekit returns τ unchanged, not rescaled */
    if (gs->sp == SP_RANDOM)
        return MODE_RANDOM;
    if (gs->sp == SP_DELLA)
        return MODE_DELLA;
    uint64_t keep = (uint64_t)(dens * (double)d);
    if (gs->sp == SP_MAGNITUDE) {
        if (keep == 0)
            return MODE_NONE;
        if (keep >= d)
            return MODE_ALL;
        r[0] = d - keep;
        gs->cut[2 * i] = true;
        return MODE_MAGNITUDE;
    }
    double gamma = tparam(mc, t, i, PCBM_P_GAMMA);
    int64_t n_top = (int64_t)(gamma * (double)d);
    int64_t n_bot = (int64_t)d - (int64_t)keep - n_top;
    if (n_bot < 0) {
        n_top += n_bot;
        n_bot = 0;
    }
    if (n_top < 0)
        n_top = 0;
    if ((uint64_t)(n_bot + n_top) >= d)
        return MODE_NONE;
    r[0] = (uint64_t)n_bot;
    r[1] = d - (uint64_t)n_top;
    gs->cut[2 * i] = n_bot > 0;
    gs->cut[2 * i + 1] = n_top > 0;
    return MODE_OUTLIERS;
}

/* ---- the sparsified, rescaled task vector of a tile ---- */

/* The index of a tile's first element that the cuts compare: in the tensor (tensor scope), in
 * the global flattening of the merged tensors (global scope). */
static inline uint64_t tile_index0(const gta_state *gs, const pcbm_tile *tl)
{
    return (gs->global ? tl->bv->t->elem0 : 0) + tl->start;
}

/* Whether element (key kk, index j) of task i survives its cuts. */
static inline bool cut_keep(const gta_state *gs, unsigned i, uint32_t kk, uint64_t j)
{
    uint32_t lk = gs->key[2 * i], uk = gs->key[2 * i + 1];
    uint64_t lj = gs->idx[2 * i], uj = gs->idx[2 * i + 1];
    if (gs->mode[i] == MODE_MAGNITUDE)
        return kk > lk || (kk == lk && j < lj);
    return (kk > lk || (kk == lk && j >= lj)) && (kk < uk || (kk == uk && j < uj));
}

/* ---- DELLA: keep probabilities from the ranks of |τ| within rows ---- */

/* Row length of layout tensor t (dimension 0 indexes rows; a 1-D tensor is one row); 0 when
 * the tensor has 3 dimensions or more (mergekit ranks along dimension 1 there: refused). */
static uint64_t row_cols(const pcbm_layout *p, size_t t)
{
    const pcbm_out_tensor *ot = &p->out_tensors[t];
    if (ot->ndim > 2)
        return 0;
    uint64_t cols = 1;
    for (unsigned k = ot->ndim == 2 ? 1 : 0; k < ot->ndim; k++)
        cols *= ot->shape[k];
    return cols;
}

static uint64_t longest_row(const pcbm_layout *p)
{
    uint64_t m = 1;
    for (size_t t = 0; t < p->nt; t++)
        if (p->t[t].kind == PCBM_T_MERGE)
            m = PCBM_MAX(m, row_cols(p, t));
    return m;
}

/* Sort v[0..n) (|τ| key << 32 | column, columns ascending) by key, stably, so equal keys stay in
 * column order: LSD radix sort over the key's 4 bytes, through tmp. */
static void sort_row(uint64_t *v, uint64_t *tmp, uint64_t n)
{
    for (unsigned sh = 32; sh < 64; sh += 8) {
        uint64_t cnt[256] = {0};
        for (uint64_t k = 0; k < n; k++)
            cnt[(v[k] >> sh) & 255]++;
        if (cnt[(v[0] >> sh) & 255] == n)
            continue; /* one bucket: the order stays */
        uint64_t pos = 0;
        for (unsigned b = 0; b < 256; b++) {
            uint64_t c = cnt[b];
            cnt[b] = pos;
            pos += c;
        }
        for (uint64_t k = 0; k < n; k++)
            tmp[cnt[(v[k] >> sh) & 255]++] = v[k];
        memcpy(v, tmp, n * sizeof *v);
    }
}

/* The ranks (0-based, |τ| ascending, equal values by column) of task i's row `row` of the
 * tile's tensor, decoded from the tile's block, which holds whole rows. */
static const uint32_t *della_ranks(const pcbm_mctx *mc, gta_state *gs, unsigned w,
                                   const pcbm_tile *tl, unsigned i, uint64_t row, uint64_t cols)
{
    size_t slot = (size_t)w * mc->ntasks + i;
    uint32_t *rank = gs->row_rank + slot * gs->row_cap;
    if (gs->row_tensor[slot] == tl->bv->tensor + 1 && gs->row_id[slot] == row)
        return rank;
    const pcbm_blockview *bv = tl->bv;
    const pcbm_tlayout *t = bv->t;
    uint64_t off = row * cols - bv->start;
    float *base = gs->row_base + (size_t)w * gs->row_cap, *tau = gs->row_tau + (size_t)w * gs->row_cap;
    uint64_t *pr = gs->row_pairs + (size_t)w * 2 * gs->row_cap;
    pcbm_decode_f32(t->src[0].dt, (const uint8_t *)bv->in[0] + off * t->in_unit[0], base, cols);
    pcbm_k_tau(t->src[i + 1].dt, (const uint8_t *)bv->in[i + 1] + off * t->in_unit[i + 1], base,
               NULL, tau, cols);
    for (uint64_t c = 0; c < cols; c++)
        pr[c] = (uint64_t)pcbm_fkey(fabsf(tau[c])) << 32 | c;
    sort_row(pr, pr + gs->row_cap, cols);
    for (uint64_t q = 0; q < cols; q++)
        rank[(uint32_t)pr[q]] = (uint32_t)q;
    gs->row_tensor[slot] = tl->bv->tensor + 1;
    gs->row_id[slot] = row;
    return rank;
}

/* Global scope: the rank of |τ| (key kk) among the model's d elements of task i, interpolated
 * in its coarse bin b: q = cum[b] + ⌊count(b) · (kk mod 2^16) / 2^16⌋ (docs/semantics.md). */
static inline uint64_t della_global_rank(const gta_state *gs, unsigned i, uint32_t kk)
{
    const uint64_t *cum = gs->cum + (size_t)i * (PCBM_QBINS + 1);
    uint32_t b = kk >> PCBM_QBITS, lo = kk & (PCBM_QBINS - 1);
    uint64_t cnt = cum[b + 1] - cum[b];
    return cum[b] + (uint64_t)(((unsigned __int128)cnt * lo) >> PCBM_QBITS);
}

/* DELLA's mask of task i on a tile: p = (r − ε) + (q / (c − 1)) · 2 · ε (float64; c = 1: q/(c−1)
 * is 0) for the element's rank q in its row of c columns (global scope: its interpolated rank
 * in the model, c = d), kept iff u < p, u from the element's counter-based draw on the stream
 * dare_stream(task, tensor) xor DELLA_SALT. */
static uint64_t della_mask(const pcbm_mctx *mc, gta_state *gs, unsigned w, const pcbm_tile *tl,
                           unsigned i, uint8_t *keep)
{
    size_t t = tl->bv->tensor;
    uint64_t cols = row_cols(mc->layout, t), kept = 0;
    double d = tparam(mc, t, i, PCBM_P_DENSITY), eps = tparam(mc, t, i, PCBM_P_EPSILON);
    uint64_t stream = pcbm_dare_stream(i, pcbm_name_key(tl->bv->t->name)) ^ DELLA_SALT;
    const uint32_t *rank = NULL;
    uint64_t row = UINT64_MAX;
    if (gs->global) {
        uint64_t d1 = gs->dmodel[i] ? gs->dmodel[i] - 1 : 0;
        for (unsigned k = 0; k < tl->n; k++) {
            uint64_t q = della_global_rank(gs, i, pcbm_fkey(fabsf(tl->tau[i][k])));
            double rn = d1 > 0 ? (double)q / (double)d1 : 0.0;
            double p = (d - eps) + rn * 2.0 * eps;
            double u = (double)(pcbm_rng_u64(mc->o->seed, stream, tl->start + k) >> 11) * 0x1p-53;
            keep[k] = u < p;
            kept += keep[k];
        }
        return kept;
    }
    for (unsigned k = 0; k < tl->n; k++) {
        uint64_t j = tl->start + k;
        if (j / cols != row) {
            row = j / cols;
            rank = della_ranks(mc, gs, w, tl, i, row, cols);
        }
        double rn = cols > 1 ? (double)rank[j - row * cols] / (double)(cols - 1) : 0.0;
        double p = (d - eps) + rn * 2.0 * eps;
        double u = (double)(pcbm_rng_u64(mc->o->seed, stream, j) >> 11) * 0x1p-53;
        keep[k] = u < p;
        kept += keep[k];
    }
    return kept;
}

/* out = task i's masked τ (not rescaled); returns the elements kept. */
static uint64_t masked(const pcbm_mctx *mc, gta_state *gs, unsigned w, const pcbm_tile *tl,
                       unsigned i, float *out)
{
    const float *tau = tl->tau[i];
    unsigned n = tl->n;
    uint64_t kept = 0;
    if (!pcbm_tile_has(tl, i)) { /* lacks the tensor: no part in it */
        memset(out, 0, n * sizeof *out);
        return 0;
    }
    switch (gs->mode[i]) {
    case MODE_ALL:
        memcpy(out, tau, n * sizeof *out);
        return n;
    case MODE_NONE:
        memset(out, 0, n * sizeof *out);
        return 0;
    case MODE_DELLA: {
        uint8_t keep[PCBM_TILE];
        kept = della_mask(mc, gs, w, tl, i, keep);
        for (unsigned k = 0; k < n; k++)
            out[k] = keep[k] ? tau[k] : 0.0f;
        return kept;
    }
    case MODE_RANDOM: {
        uint8_t keep[PCBM_TILE];
        double d = tparam(mc, tl->bv->tensor, i, PCBM_P_DENSITY);
        kept = pcbm_dare_mask(mc->o->seed, i, pcbm_name_key(tl->bv->t->name), tl->start, n, d,
                              keep);
        for (unsigned k = 0; k < n; k++)
            out[k] = keep[k] ? tau[k] : 0.0f;
        return kept;
    }
    default: {
        uint64_t j0 = tile_index0(gs, tl);
        for (unsigned k = 0; k < n; k++) {
            bool keep = cut_keep(gs, i, pcbm_fkey(fabsf(tau[k])), j0 + k);
            out[k] = keep ? tau[k] : 0.0f;
            kept += keep;
        }
        return kept;
    }
    }
}

/* ---- the mix: mergekit's weighted sum, with or without the sign consensus ---- */

/* Tasks lacking the tensor take no part (mergekit has only the others' tensors): their v is 0
 * and their weight is not in W.
 * v[i] (the sparsified τ_i, rescaled) times w_i; then per element, in task order:
 *   consensus: s = Σ v_i·w_i, m = s ≥ 0 ? +1 : −1; a task takes part where sign(w_i v_i) = m
 *              (zeros never); mixed = Σ of those, W = Σ of their w_i (0 → 1);
 *   none:      mixed = Σ w_i v_i, W = Σ w_i (|W| < 1e-8 → 1);
 * mixed / W with `normalize`, · λ, + base. */
static void mix(const pcbm_mctx *mc, const gta_state *gs, const pcbm_tile *tl)
{
    unsigned N = mc->ntasks;
    size_t t = tl->bv->tensor;
    float w[PCBM_MAX_TASKS], wall = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        w[i] = (float)tparam(mc, t, i, PCBM_P_WEIGHT);
        if (pcbm_tile_has(tl, i))
            wall += w[i];
    }
    if (fabsf(wall) < 1e-8f)
        wall = 1.0f;
    bool norm = tparam(mc, t, 0, PCBM_P_NORMALIZE) != 0.0;
    float lam = (float)tparam(mc, t, 0, PCBM_P_LAMBDA);
    float *const *v = tl->theta;
    for (unsigned i = 0; i < N; i++)
        for (unsigned k = 0; k < tl->n; k++)
            v[i][k] = v[i][k] * w[i];
    for (unsigned k = 0; k < tl->n; k++) {
        float acc = 0.0f, div = wall;
        if (gs->consensus) {
            float s = 0.0f;
            for (unsigned i = 0; i < N; i++)
                s += v[i][k];
            bool pos = s >= 0.0f;
            div = 0.0f;
            for (unsigned i = 0; i < N; i++) {
                float x = v[i][k];
                if (pos ? x > 0.0f : x < 0.0f) {
                    acc += x;
                    div += w[i];
                }
            }
            if (div == 0.0f)
                div = 1.0f;
        } else {
            for (unsigned i = 0; i < N; i++)
                acc += v[i][k];
        }
        if (norm)
            acc = acc / div;
        if (lam != 1.0f)
            acc = acc * lam;
        tl->tmp[k] = tl->base[k] + acc;
    }
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    gta_state *gs = arg;
    uint64_t *kept = pcbm_kept_local(mc, w);
    for (unsigned i = 0; i < mc->ntasks; i++) {
        float *v = tl->theta[i];
        kept[i] += masked(mc, gs, w, tl, i, v);
        float s = gs->scale[i];
        if (gs->mode[i] != MODE_ALL && s != 1.0f)
            for (unsigned k = 0; k < tl->n; k++)
                v[k] = v[k] * s;
    }
    mix(mc, gs, tl);
}

/* ---- statistics tiles ---- */

static pcbm_xsum *xs_local(gta_state *gs, unsigned w)
{
    return gs->xs_local + (size_t)w * 2 * gs->mc->ntasks;
}

static void tile_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    gta_state *gs = arg;
    bool l1 = rescales(mc, tl->bv->tensor);
    pcbm_xsum *xs = xs_local(gs, w);
    for (unsigned i = 0; i < mc->ntasks; i++) {
        if ((gs->mode[i] != MODE_MAGNITUDE && gs->mode[i] != MODE_OUTLIERS) || !pcbm_tile_has(tl, i))
            continue;
        /* both cuts of a task read the same coarse histogram (stream 2i) */
        pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&gs->h, w, 2 * i));
        if (l1)
            pcbm_xsum_add(&xs[i], pcbm_xsum_abs_f32(tl->tau[i], tl->n));
    }
}

static void tile_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    gta_state *gs = arg;
    for (unsigned c = 0; c < 2 * mc->ntasks; c++)
        if (gs->cut[c] && pcbm_tile_has(tl, c / 2))
            pcbm_k_hist_fine(tl->tau[c / 2], tl->n, true, gs->sel[c].prefix,
                             pcbm_hset_local(&gs->h, w, c));
}

/* Histogram of one 16-bit digit (bits ishift..ishift+15) of the indices of the elements whose
 * |τ| key is the cut's and whose higher digits are those found so far (radix select of an
 * index, most significant digit first). */
static void index_hist(gta_state *gs, unsigned w, const pcbm_tile *tl)
{
    unsigned sh = gs->ishift;
    uint64_t j0 = tile_index0(gs, tl);
    for (unsigned c = 0; c < 2 * gs->mc->ntasks; c++) {
        if (!gs->icut[c] || !pcbm_tile_has(tl, c / 2))
            continue;
        const float *tau = tl->tau[c / 2];
        uint32_t key = gs->key[c];
        uint64_t high = sh + PCBM_QBITS < 64 ? gs->iprefix[c] >> (sh + PCBM_QBITS) : 0;
        uint64_t *h = pcbm_hset_local(&gs->h, w, c);
        for (unsigned k = 0; k < tl->n; k++) {
            if (pcbm_fkey(fabsf(tau[k])) != key)
                continue;
            uint64_t j = j0 + k;
            if (sh + PCBM_QBITS < 64 && (j >> (sh + PCBM_QBITS)) != high)
                continue;
            h[(j >> sh) & (PCBM_QBINS - 1)]++;
        }
    }
}

static void tile_index(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    index_hist(arg, w, tl);
}

/* DELLA in global scope: the coarse histogram of each sparsified task's |τ| keys (stream i). */
static void tile_dhist(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    gta_state *gs = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (gs->mode[i] == MODE_DELLA && pcbm_tile_has(tl, i))
            pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&gs->h, w, i));
}

/* The cumulative counts of task i from its histogram h (PCBM_QBINS counts). */
static void della_cum(gta_state *gs, unsigned i, const uint64_t *h)
{
    uint64_t *cum = gs->cum + (size_t)i * (PCBM_QBINS + 1), s = 0;
    for (unsigned b = 0; b < PCBM_QBINS; b++) {
        cum[b] = s;
        s += h[b];
    }
    cum[PCBM_QBINS] = s;
}

/* Σ|masked τ_i| (and, for the random methods, Σ|τ_i|, which no earlier round summed). */
static void tile_l1(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    gta_state *gs = arg;
    unsigned N = mc->ntasks;
    pcbm_xsum *xs = xs_local(gs, w);
    float *v = tl->tmp;
    for (unsigned i = 0; i < N; i++) {
        if (gs->mode[i] == MODE_ALL || gs->mode[i] == MODE_NONE || !pcbm_tile_has(tl, i))
            continue;
        masked(mc, gs, w, tl, i, v);
        pcbm_xsum_add(&xs[N + i], pcbm_xsum_abs_f32(v, tl->n));
        if (random_like(gs))
            pcbm_xsum_add(&xs[i], pcbm_xsum_abs_f32(tl->tau[i], tl->n));
    }
}

/* ---- rounds ---- */

enum { R_COARSE, R_FINE, R_ICOARSE, R_IFINE, R_DHIST, R_L1, GTA_NROUNDS };

/* The most significant 16-bit digit of the indices of a range of d elements (at least the
 * second: two index rounds at least, as in tensor scope). */
static unsigned index_top_shift(uint64_t d)
{
    unsigned sh = PCBM_QBITS;
    while (sh + PCBM_QBITS < 64 && ((d - 1) >> (sh + PCBM_QBITS)) != 0)
        sh += PCBM_QBITS;
    return sh;
}

static bool any(const bool *b, unsigned n)
{
    for (unsigned k = 0; k < n; k++)
        if (b[k])
            return true;
    return false;
}

/* The L1 round when this tensor rescales a sparsified task, else done. */
static int after_cuts(gta_state *gs, const pcbm_range *rg)
{
    if (!rescales(gs->mc, rg->t1 - 1))
        return PCBM_ROUND_DONE;
    for (unsigned i = 0; i < gs->mc->ntasks; i++)
        if (gs->mode[i] != MODE_ALL && gs->mode[i] != MODE_NONE)
            return R_L1;
    return PCBM_ROUND_DONE;
}

/* The modes, the neutral cuts and scales; then the first round this tensor needs. */
static int first_round(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        gs->d[i] = pcbm_range_task_d(mc->layout, rg, i);
        gs->mode[i] = task_mode(gs, rg->t1 - 1, i, gs->d[i]);
        gs->key[2 * i] = 0;
        gs->idx[2 * i] = gs->mode[i] == MODE_MAGNITUDE ? NO_INDEX : 0;
        gs->key[2 * i + 1] = 0xffffffffu;
        gs->idx[2 * i + 1] = NO_INDEX;
        gs->scale[i] = 1.0f;
        gs->icut[2 * i] = gs->icut[2 * i + 1] = false;
    }
    memset(gs->xs, 0, sizeof gs->xs);
    for (unsigned c = 0; c < 2 * mc->ntasks; c++)
        pcbm_xsum_clear(&gs->xs[c]);
    if (any(gs->cut, 2 * mc->ntasks))
        return R_COARSE;
    for (unsigned i = 0; gs->cum && i < mc->ntasks; i++)
        if (gs->mode[i] == MODE_DELLA)
            return R_DHIST;
    return after_cuts(gs, rg);
}

static void clear_xs_local(gta_state *gs, unsigned from, unsigned count)
{
    unsigned N = gs->mc->ntasks;
    for (unsigned w = 0; w < gs->mc->threads; w++)
        for (unsigned c = from; c < from + count; c++)
            pcbm_xsum_clear(&gs->xs_local[(size_t)w * 2 * N + c]);
}

static pcbm_status begin_hist(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                              pcbm_error *err)
{
    gta_state *gs = st;
    pcbm_hset_clear(&gs->h);
    return PCBM_OK;
}

static pcbm_status begin_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                                pcbm_error *err)
{
    gta_state *gs = st;
    clear_xs_local(gs, 0, mc->ntasks);
    return begin_hist(st, mc, rg, err);
}

static unsigned regions_hist(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    gta_state *gs = st;
    region[0] = pcbm_hset_region(&gs->h);
    return 1;
}

static unsigned regions_coarse(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    gta_state *gs = st;
    size_t bytes = mc->ntasks * sizeof(pcbm_xsum);
    region[0] = pcbm_hset_region(&gs->h);
    region[1] = (pcbm_acc){gs->xs, bytes, pcbm_xsum_combine, gs->xs_local,
                           2 * bytes};
    return 2;
}

static int finish_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    for (unsigned c = 0; c < 2 * mc->ntasks; c++) {
        if (!gs->cut[c])
            continue;
        pcbm_sel_init(&gs->sel[c], gs->rank[c]);
        pcbm_sel_coarse(&gs->sel[c], pcbm_hset_total(&gs->h, 2 * (c / 2)));
    }
    return PCBM_ROUND_NEXT;
}

/* The key at each cut, and how many of the elements equal to it fall on the kept side: all or
 * none (no index needed), or some (the index select of rank m among them). */
static int finish_fine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    bool more = false;
    for (unsigned c = 0; c < 2 * mc->ntasks; c++) {
        if (!gs->cut[c])
            continue;
        const uint64_t *fine = pcbm_hset_total(&gs->h, c);
        pcbm_sel_fine(&gs->sel[c], fine);
        uint32_t key = gs->sel[c].key, lo = key & (PCBM_QBINS - 1);
        uint64_t below = gs->sel[c].below, eq = fine[lo];
        for (uint32_t b = 0; b < lo; b++)
            below += fine[b];
        gs->key[c] = key;
        /* m: equal elements before the cut in index order (magnitude: kept; outliers: lower cut
         * dropped, upper cut kept) */
        uint64_t m;
        if (gs->mode[c / 2] == MODE_MAGNITUDE) {
            uint64_t di = gs->d[c / 2], above = di - below - eq, k = di - gs->rank[c];
            m = k - above;
            gs->idx[c] = m >= eq ? NO_INDEX : 0;
        } else {
            m = gs->rank[c] - below;
            gs->idx[c] = 0;
        }
        if (m > 0 && m < eq) {
            gs->icut[c] = true;
            gs->iprefix[c] = 0;
            gs->irank[c] = m;
            more = true;
        }
    }
    gs->ishift = index_top_shift(rg->d);
    return more ? R_ICOARSE : after_cuts(gs, rg);
}

/* One digit of the index of the equal element of rank m (the first one past the cut): the
 * next digit's round, or, after the last digit, the index. */
static int finish_index(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    unsigned sh = gs->ishift;
    for (unsigned c = 0; c < 2 * mc->ntasks; c++) {
        if (!gs->icut[c])
            continue;
        const uint64_t *h = pcbm_hset_total(&gs->h, c);
        uint64_t below = 0;
        unsigned b = 0;
        while (b < PCBM_QBINS - 1 && below + h[b] <= gs->irank[c])
            below += h[b++];
        gs->iprefix[c] |= (uint64_t)b << sh;
        gs->irank[c] -= below;
        if (sh == 0)
            gs->idx[c] = gs->iprefix[c];
    }
    if (sh == 0)
        return after_cuts(gs, rg);
    gs->ishift = sh - PCBM_QBITS;
    return R_IFINE;
}

static pcbm_status begin_l1(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    gta_state *gs = st;
    unsigned N = mc->ntasks;
    if (random_like(gs)) {
        clear_xs_local(gs, 0, 2 * N);
        for (unsigned c = 0; c < N; c++)
            pcbm_xsum_clear(&gs->xs[c]);
    } else {
        clear_xs_local(gs, N, N);
    }
    for (unsigned c = N; c < 2 * N; c++)
        pcbm_xsum_clear(&gs->xs[c]);
    return PCBM_OK;
}

static unsigned regions_l1(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    gta_state *gs = st;
    unsigned N = mc->ntasks, from = random_like(gs) ? 0 : N;
    size_t bytes = (2 * N - from) * sizeof(pcbm_xsum);
    region[0] = (pcbm_acc){gs->xs + from, bytes, pcbm_xsum_combine, gs->xs_local + from,
                           2 * N * sizeof(pcbm_xsum)};
    return 1;
}

/* mergekit's L1 rescale: masked · (Σ|τ| / Σ|masked|), unless either sum is below 1e-7. The
 * exact sums, rounded once to double; their quotient rounded to float32. */
static int finish_l1(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    unsigned N = mc->ntasks;
    for (unsigned i = 0; i < N; i++) {
        gs->scale[i] = 1.0f;
        if (gs->mode[i] == MODE_ALL || gs->mode[i] == MODE_NONE)
            continue;
        double before = pcbm_xsum_value(&gs->xs[i]), after = pcbm_xsum_value(&gs->xs[N + i]);
        if (before >= L1_EPS && after >= L1_EPS)
            gs->scale[i] = (float)(before / after);
    }
    return PCBM_ROUND_DONE;
}

static const pcbm_round r_coarse = {"gta |tau| coarse", tile_coarse, NULL, true, begin_coarse,
                                    regions_coarse, finish_coarse};
static const pcbm_round r_fine = {"gta |tau| fine", tile_fine, NULL, false, begin_hist,
                                  regions_hist, finish_fine};
static const pcbm_round r_icoarse = {"gta index coarse", tile_index, NULL, false, begin_hist,
                                     regions_hist, finish_index};
static const pcbm_round r_ifine = {"gta index fine", tile_index, NULL, false, begin_hist,
                                   regions_hist, finish_index};
static const pcbm_round r_l1 = {"gta L1 norms", tile_l1, NULL, true, begin_l1, regions_l1,
                                finish_l1};

static int finish_dhist(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    gta_state *gs = st;
    for (unsigned i = 0; i < mc->ntasks; i++)
        della_cum(gs, i, pcbm_hset_total(&gs->h, i));
    return after_cuts(gs, rg);
}

static const pcbm_round r_dhist = {"della |tau| histogram", tile_dhist, NULL, true, begin_hist,
                                   regions_hist, finish_dhist};

static const pcbm_round *const gta_rounds[GTA_NROUNDS] = {
    [R_COARSE] = &r_coarse, [R_FINE] = &r_fine, [R_ICOARSE] = &r_icoarse, [R_IFINE] = &r_ifine,
    [R_L1] = &r_l1, [R_DHIST] = &r_dhist};

/* ---- the methods ---- */

static bool is_della(pcbm_method m)
{
    return m == PCBM_METHOD_DELLA || m == PCBM_METHOD_DELLA_LINEAR;
}

/* DELLA's row buffers: base, τ, sort pairs and N rank arrays of the longest row per thread;
 * in global scope the cumulative counts and the record's histograms instead. */
static uint64_t row_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    if (!is_della(o->method))
        return 0;
    if (o->scope == PCBM_SCOPE_GLOBAL)
        return (uint64_t)o->ntasks * (2 * PCBM_QBINS + 1) * sizeof(uint64_t);
    uint64_t per = 2 * sizeof(float) + 2 * sizeof(uint64_t) + o->ntasks * sizeof(uint32_t);
    return (uint64_t)threads * (longest_row(p) * per +
                                o->ntasks * (sizeof(size_t) + sizeof(uint64_t)));
}

static uint64_t gta_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    return pcbm_hset_bytes(threads, 2 * o->ntasks) +
           (uint64_t)threads * 2 * o->ntasks * sizeof(pcbm_xsum) + sizeof(gta_state) +
           row_bytes(o, threads, p);
}

/* DELLA: every merged tensor is one or two dimensional, a plain F32/F16/BF16 tensor in every
 * model, its rows fit the blocks, and density ± epsilon lies in (0, 1) where it sparsifies. */
static pcbm_status della_check(const pcbm_mctx *mc, pcbm_error *err)
{
    const pcbm_layout *p = mc->layout;
    const char *mname = pcbm_method_name(mc->o->method);
    bool global = mc->o->scope == PCBM_SCOPE_GLOBAL; /* ranks over the model, no rows */
    for (size_t t = 0; t < p->nt; t++) {
        const pcbm_tlayout *tl = &p->t[t];
        if (tl->kind != PCBM_T_MERGE)
            continue;
        uint64_t cols = row_cols(p, t);
        if (global)
            ; /* no row conditions */
        else if (cols == 0)
            return pcbm_fail(err, PCBM_ERR_USAGE, "%s: tensor %s has %u dimensions; mergekit "
                             "ranks along dimension 1 of such tensors, which pcbmerge does not "
                             "do: exclude it (`exclude`)", mname, tl->name,
                             p->out_tensors[t].ndim);
        else if (tl->q || tl->lora || tl->aligned)
            return pcbm_fail(err, PCBM_ERR_USAGE, "%s: tensor %s is dequantized, a LoRA "
                             "adapter's or has appended rows in a task; %s ranks whole rows of "
                             "plain F32/F16/BF16 tensors only: exclude it (`exclude`)", mname,
                             tl->name, mname);
        bool fits = global || (cols >= tl->units ? tl->units <= tl->block_units
                                                 : tl->block_units % cols == 0);
        if (!fits)
            return pcbm_fail(err, PCBM_ERR_USAGE, "%s: a block cannot hold whole rows of tensor "
                             "%s (%llu columns, %llu-element blocks): give more memory (`mem`) "
                             "or a larger block size", mname, tl->name,
                             (unsigned long long)cols, (unsigned long long)tl->block_units);
        for (unsigned i = 0; i < mc->ntasks; i++) {
            double d = tparam(mc, t, i, PCBM_P_DENSITY), e = tparam(mc, t, i, PCBM_P_EPSILON);
            if (d < 1.0 && !(d + e < 1.0 && d - e > 0.0))
                return pcbm_fail(err, PCBM_ERR_USAGE, "%s: task %u (%s) on tensor %s has "
                                 "density %g and epsilon %g: density ± epsilon must lie in "
                                 "(0, 1)", mname, i + 1, mc->o->tasks[i], tl->name, d, e);
        }
    }
    return PCBM_OK;
}

/* breadcrumbs: gamma in [0, 1) on every merged tensor (a recipe's gradient or filter gives it per
 * tensor; the options' values are checked before). */
static pcbm_status gamma_check(const pcbm_mctx *mc, pcbm_error *err)
{
    const pcbm_layout *p = mc->layout;
    for (size_t t = 0; mc->o->params && t < p->nt; t++) {
        if (p->t[t].kind != PCBM_T_MERGE)
            continue;
        for (unsigned i = 0; i < mc->ntasks; i++) {
            double g = tparam(mc, t, i, PCBM_P_GAMMA);
            if (!(g >= 0.0 && g < 1.0))
                return pcbm_fail(err, PCBM_ERR_USAGE, "%s: task %u (%s) on tensor %s has gamma "
                                 "%g: gamma must lie in [0, 1)", pcbm_method_name(mc->o->method),
                                 i + 1, mc->o->tasks[i], p->t[t].name, g);
        }
    }
    return PCBM_OK;
}

static pcbm_status della_alloc(const pcbm_mctx *mc, gta_state *gs, pcbm_error *err)
{
    size_t T = mc->threads, N = mc->ntasks;
    gs->row_cap = longest_row(mc->layout);
    gs->row_base = pcbm_malloc(T * gs->row_cap * sizeof(float));
    gs->row_tau = pcbm_malloc(T * gs->row_cap * sizeof(float));
    gs->row_pairs = pcbm_malloc(T * 2 * gs->row_cap * sizeof(uint64_t));
    gs->row_rank = pcbm_malloc(T * N * gs->row_cap * sizeof(uint32_t));
    gs->row_tensor = pcbm_calloc(T * N, sizeof(size_t));
    gs->row_id = pcbm_calloc(T * N, sizeof(uint64_t));
    if (!gs->row_base || !gs->row_tau || !gs->row_pairs || !gs->row_rank || !gs->row_tensor ||
        !gs->row_id)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for %s's rows",
                         pcbm_method_name(mc->o->method));
    return PCBM_OK;
}

static void gta_free(void *state);

static pcbm_status gta_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    gta_state *gs = pcbm_calloc(1, sizeof *gs);
    if (!gs || pcbm_hset_init(&gs->h, mc->threads, 2 * mc->ntasks) != 0 ||
        !(gs->xs_local = pcbm_calloc((size_t)mc->threads * 2 * mc->ntasks, sizeof(pcbm_xsum)))) {
        if (gs)
            pcbm_hset_free(&gs->h);
        free(gs);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for %s statistics",
                         pcbm_method_name(mc->o->method));
    }
    gs->mc = mc;
    gs->global = mc->o->scope == PCBM_SCOPE_GLOBAL;
    for (unsigned i = 0; i < mc->ntasks; i++)
        gs->dmodel[i] = mc->layout->d - pcbm_range_task_absent(mc->layout, 0, mc->layout->nt, i);
    switch (mc->o->method) {
    case PCBM_METHOD_TIES: gs->sp = SP_MAGNITUDE, gs->consensus = true; break;
    case PCBM_METHOD_DARE_TIES: gs->sp = SP_RANDOM, gs->consensus = true; break;
    case PCBM_METHOD_DARE_LINEAR: gs->sp = SP_RANDOM, gs->consensus = false; break;
    case PCBM_METHOD_BREADCRUMBS: gs->sp = SP_OUTLIERS, gs->consensus = false; break;
    case PCBM_METHOD_DELLA: gs->sp = SP_DELLA, gs->consensus = true; break;
    case PCBM_METHOD_DELLA_LINEAR: gs->sp = SP_DELLA, gs->consensus = false; break;
    default: gs->sp = SP_OUTLIERS, gs->consensus = true; break; /* breadcrumbs_ties */
    }
    if (gs->sp == SP_OUTLIERS) {
        pcbm_status st = gamma_check(mc, err);
        if (st != PCBM_OK) {
            gta_free(gs);
            return st;
        }
    }
    if (gs->sp == SP_DELLA) {
        pcbm_status st = della_check(mc, err);
        if (st == PCBM_OK && gs->global &&
            !(gs->cum = pcbm_calloc((size_t)mc->ntasks * (PCBM_QBINS + 1), sizeof *gs->cum)))
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for %s's histograms",
                           pcbm_method_name(mc->o->method));
        if (st == PCBM_OK && !gs->global)
            st = della_alloc(mc, gs, err);
        if (st != PCBM_OK) {
            gta_free(gs);
            return st;
        }
    }
    *state = gs;
    return PCBM_OK;
}

static void gta_free(void *state)
{
    gta_state *gs = state;
    pcbm_hset_free(&gs->h);
    free(gs->xs_local);
    free(gs->row_base);
    free(gs->row_tau);
    free(gs->row_pairs);
    free(gs->row_rank);
    free(gs->row_tensor);
    free(gs->row_id);
    free(gs->cum);
    free(gs);
}

/* The record: per task, the lower (magnitude) cut's key and index, the upper cut's key and
 * index (v), the L1 scale and the mode (x). */
static void gta_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const gta_state *gs = state;
    for (unsigned i = 0; i < ntasks; i++) {
        r->v[i][0] = pcbm_u2f(gs->key[2 * i]);
        r->v[i][1] = pcbm_u2f((uint32_t)gs->idx[2 * i]);
        r->v[i][2] = pcbm_u2f(gs->key[2 * i + 1]);
        r->v[i][3] = pcbm_u2f((uint32_t)gs->idx[2 * i + 1]);
        r->x[i][0] = gs->scale[i];
        r->x[i][1] = (float)gs->mode[i];
        r->x[i][2] = pcbm_u2f((uint32_t)(gs->idx[2 * i] >> 32));
        r->x[i][3] = pcbm_u2f((uint32_t)(gs->idx[2 * i + 1] >> 32));
    }
    if (!gs->cum)
        return;
    /* DELLA in global scope: the histograms (blob), from the cumulative counts */
    size_t n = (size_t)ntasks * PCBM_QBINS;
    if (!(r->blob = pcbm_malloc(n * sizeof *r->blob))) {
        r->d = 0; /* out of memory: a record that no merge replays (this one has its state) */
        return;
    }
    r->nblob = n;
    for (unsigned i = 0; i < ntasks; i++) {
        const uint64_t *cum = gs->cum + (size_t)i * (PCBM_QBINS + 1);
        for (unsigned b = 0; b < PCBM_QBINS; b++)
            r->blob[(size_t)i * PCBM_QBINS + b] = cum[b + 1] - cum[b];
    }
}

static void gta_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    gta_state *gs = state;
    for (unsigned i = 0; i < ntasks; i++) {
        gs->key[2 * i] = pcbm_f2u(r->v[i][0]);
        gs->idx[2 * i] = (uint64_t)pcbm_f2u(r->x[i][2]) << 32 | pcbm_f2u(r->v[i][1]);
        gs->key[2 * i + 1] = pcbm_f2u(r->v[i][2]);
        gs->idx[2 * i + 1] = (uint64_t)pcbm_f2u(r->x[i][3]) << 32 | pcbm_f2u(r->v[i][3]);
        gs->scale[i] = r->x[i][0];
        gs->mode[i] = (int)r->x[i][1];
    }
    if (gs->cum && r->nblob == (size_t)ntasks * PCBM_QBINS)
        for (unsigned i = 0; i < ntasks; i++)
            della_cum(gs, i, r->blob + (size_t)i * PCBM_QBINS);
}

static const char *gta_how(const void *state, const pcbm_merge_opts *o)
{
    if (o->scope == PCBM_SCOPE_GLOBAL && is_della(o->method))
        return "over the whole model: ranks of |tau| interpolated in 16-bit histogram bins, "
               "exact L1 sums";
    if (o->scope == PCBM_SCOPE_GLOBAL)
        return "exact, over the whole model: radix select of the cuts (|tau|, then global index "
               "among equal values) and exact L1 sums";
    return "exact, per tensor: radix select of the cuts (|tau|, then index among equal values) "
           "and exact L1 sums";
}

/* Global scope: |τ| coarse and fine, one index round per 16-bit digit of the model's indices,
 * the L1 sums. */
static unsigned gta_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p)
{
    return 3 + index_top_shift(p->d) / PCBM_QBITS + 1;
}

#define GTA_DEF(ID, NAME, USES, NORM, RESC, ROWS)                                                    \
    {                                                                                             \
        .id = ID, .name = NAME, .uses = (USES) | PCBM_USES_LAMBDA | PCBM_USES_WEIGHTS | PCBM_USES_SCOPE | \
                                         PCBM_USES_DENSITY | PCBM_USES_DENSITIES |                \
                                         PCBM_USES_NORMALIZE | PCBM_USES_RESCALE,                 \
        .normalizes = NORM, .rescales = RESC, .apply_checks_finite = true,                        \
        .stats_bytes = gta_stats_bytes, .init = gta_init, .free = gta_free, .rounds = gta_rounds, \
        .nrounds = GTA_NROUNDS, .passes_planned = 5, .max_rounds = gta_max_rounds,                \
        .first_round = first_round, .save = gta_save, .load = gta_load, .how = gta_how,           \
        .apply = tile_apply, .scope_tensor = true, .whole_rows = ROWS, .partial = true,           \
    }

/* mergekit's registry: ties normalizes, the others do not; the random ones (and DELLA) rescale. */
const pcbm_method_def pcbm_method_ties_mk =
    GTA_DEF(PCBM_METHOD_TIES, "ties", 0, true, false, false);
const pcbm_method_def pcbm_method_dare_ties_mk =
    GTA_DEF(PCBM_METHOD_DARE_TIES, "dare_ties", PCBM_USES_SEED, false, true, false);
const pcbm_method_def pcbm_method_dare_linear_mk =
    GTA_DEF(PCBM_METHOD_DARE_LINEAR, "dare_linear", PCBM_USES_SEED, false, true, false);
const pcbm_method_def pcbm_method_breadcrumbs =
    GTA_DEF(PCBM_METHOD_BREADCRUMBS, "breadcrumbs", PCBM_USES_GAMMA, false, false, false);
const pcbm_method_def pcbm_method_breadcrumbs_ties =
    GTA_DEF(PCBM_METHOD_BREADCRUMBS_TIES, "breadcrumbs_ties", PCBM_USES_GAMMA, false, false, false);
const pcbm_method_def pcbm_method_della =
    GTA_DEF(PCBM_METHOD_DELLA, "della", PCBM_USES_EPSILON | PCBM_USES_SEED, true, true, true);
const pcbm_method_def pcbm_method_della_linear =
    GTA_DEF(PCBM_METHOD_DELLA_LINEAR, "della_linear", PCBM_USES_EPSILON | PCBM_USES_SEED, false,
            true, true);

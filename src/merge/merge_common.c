/* SPDX-License-Identifier: Apache-2.0 */
/*
 * merge_common.c — the tile passes under every method: decoding a block into float32 tiles
 * (base, task values, task vectors), the refusal of non-finite weights, copying and converting
 * the tensors that are not merged, encoding merged tiles, kept counters, and tensor-scope
 * ranges. It knows no method: the driver (rounds.c) says what a pass checks and decodes.
 */
#include "merge.h"

#include "dequant.h"
#include "lora_delta.h"

#include "../kernels/convert.h"
#include "../kernels/mkern.h"
#include "../sched/ident.h"

#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

/* Blocks are whole identity leaves, so tiles sit on a fixed grid of PCBM_TILE elements from each
 * tensor's start whatever the budget: a per-tile partial (stats/xsum.h) is a function of the data. */
_Static_assert(PCBM_IDENT_LEAF % PCBM_TILE == 0, "tiles must not straddle blocks");

typedef struct tile_pass {
    pcbm_mctx *mc;
    pcbm_pass_kind kind;
    pcbm_tile_fn fn;
    void *arg;
} tile_pass;

static long first_nonfinite(const float *x, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &x[k], 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return (long)k;
    }
    return -1;
}

static pcbm_status refuse_nonfinite(const pcbm_mctx *mc, const pcbm_tlayout *t, unsigned m,
                                    uint64_t elem, const float *v, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_NONFINITE,
                     "tensor %s of %s has a non-finite value (%s) at element %llu: the checkpoint "
                     "is damaged or its training diverged; set `allow_nonfinite` to merge it "
                     "anyway", t->name, pcbm_model_path(mc->layout->models[m]),
                     *v != *v ? "NaN" : "Inf", (unsigned long long)elem);
}

/* The first merged value that the output dtype cannot hold: NaN or Inf, or a finite float32 that
 * rounds to Inf in F16 (|x| >= 65520) or BF16 (|x| > the largest BF16 rounding boundary). -1 when
 * every value fits. */
static long first_overflow(const float *x, unsigned n, pcbm_dtype dt)
{
    uint32_t lim = dt == PCBM_DT_F16 ? 0x477ff000u    /* 65520: rounds to F16 Inf */
                   : dt == PCBM_DT_BF16 ? 0x7f7f8000u /* halfway to BF16's Inf */
                   : 0x7f800000u;                    /* F32: Inf and NaN */
    for (unsigned k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &x[k], 4);
        if ((u & 0x7fffffffu) >= lim)
            return (long)k;
    }
    return -1;
}

static pcbm_status refuse_overflow(const pcbm_tlayout *t, uint64_t elem, float v, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_NONFINITE,
                     "the merged value of tensor %s at element %llu is %s%s: the coefficients "
                     "(`lambda`, `lambdas`, `weights`) make it overflow; lower them, or set "
                     "`allow_nonfinite` to write it anyway", t->name, (unsigned long long)elem,
                     v != v ? "NaN" : isinf(v) ? "Inf" : "too large for ",
                     v != v || isinf(v) ? "" : pcbm_dtype_name(t->out_dt));
}

static float *worker_scratch(pcbm_mctx *mc, unsigned worker)
{
    return mc->scratch + (size_t)worker * mc->scratch_floats;
}

/* FP8 sources: worker `worker`'s scale buffer for model m (2 * qcap floats, after the tiles). */
static float *scale_buf(pcbm_mctx *mc, unsigned worker, unsigned m)
{
    return worker_scratch(mc, worker) + mc->tile_floats + (size_t)m * 2 * mc->qcap;
}

/* The block scales of every FP8 source among the first nsrc models of the block. */
typedef struct block_scales {
    const float *v[PCBM_MAX_MODELS];
    uint64_t row0[PCBM_MAX_MODELS];
} block_scales;

static pcbm_status load_scales(pcbm_mctx *mc, unsigned worker, const pcbm_blockview *bv,
                               unsigned nsrc, block_scales *bs, pcbm_error *err)
{
    const pcbm_tlayout *t = bv->t;
    for (unsigned m = 0; t->q && m < nsrc; m++) {
        if (!t->q[m].on)
            continue;
        float *buf = scale_buf(mc, worker, m);
        pcbm_status st = pcbm_dequant_load(mc->layout, t, m, bv->start, bv->n, buf, mc->qcap,
                                           &bs->row0[m], err);
        if (st != PCBM_OK)
            return st;
        bs->v[m] = buf;
    }
    return PCBM_OK;
}

/* Decode n values of model m's source at element `start` (FP8: with its block scales). */
static void decode_src(const pcbm_tlayout *t, unsigned m, const block_scales *bs, const void *src,
                       uint64_t start, float *dst, unsigned n)
{
    pcbm_decode_f32(t->src[m].dt, src, dst, n);
    if (t->q && t->q[m].on)
        pcbm_dequant_apply(&t->q[m], bs->v[m], bs->row0[m], start, dst, n);
}

/* Task i of tensor t is a LoRA adapter's: no bytes, its τ is formed from the factors. */
static bool lora_task(const pcbm_tlayout *t, unsigned i)
{
    return t->lora && t->src[i + 1].file == PCBM_SRC_NONE;
}

/* The factor caches of the block's adapter tasks: worker `worker`'s cache of each adapter holds
 * the factors of the tensor it last read; read them when the block is of another tensor. */
static pcbm_status load_factors(pcbm_mctx *mc, unsigned worker, const pcbm_blockview *bv,
                                const float **cache, pcbm_error *err)
{
    const pcbm_tlayout *t = bv->t;
    unsigned nm = mc->layout->nmodels;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        if (!lora_task(t, i) || !t->lora[i + 1].r)
            continue;
        float *c = worker_scratch(mc, worker) + mc->lora_off[i + 1];
        size_t *key = &mc->lora_cached[(size_t)worker * nm + i + 1];
        if (*key != bv->tensor + 1) {
            *key = 0;
            uint64_t bytes;
            pcbm_status st = pcbm_lora_load(mc->layout, t, i + 1, c,
                                            worker_scratch(mc, worker) + mc->lora_raw_off, &bytes,
                                            err);
            if (st != PCBM_OK)
                return st;
            pcbm_engine_count_read(mc->eng, bytes);
            *key = bv->tensor + 1;
        }
        cache[i] = c;
    }
    return PCBM_OK;
}

/* Task i's data of the tile at k0 of a block. */
static const void *task_src(const pcbm_blockview *bv, unsigned i, uint32_t k0)
{
    return (const uint8_t *)bv->in[i + 1] + (uint64_t)k0 * bv->t->in_unit[i + 1];
}

/* Decode a block tile by tile into base, task values and task vectors, refuse non-finite weights
 * (when the pass checks them) and run the method's kernel; apply passes encode its result. Only
 * methods that need them (linear) get the decoded task values (theta): the others use theta as
 * scratch, so it is not filled for them. */
static pcbm_status merge_block(tile_pass *tp, unsigned worker, const pcbm_blockview *bv,
                               pcbm_error *err)
{
    pcbm_mctx *mc = tp->mc;
    bool need_theta = mc->need_theta;
    const pcbm_tlayout *t = bv->t;
    unsigned N = mc->ntasks;
    float *sc = worker_scratch(mc, worker);
    float *base = sc;
    float *theta[PCBM_MAX_TASKS], *tau[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < N; i++) {
        theta[i] = sc + (1 + i) * PCBM_TILE;
        tau[i] = sc + (1 + N + i) * PCBM_TILE;
    }
    float *tmp = sc + (1 + 2 * N) * PCBM_TILE;
    block_scales bs;
    pcbm_status st = load_scales(mc, worker, bv, N + 1, &bs, err);
    const float *lcache[PCBM_MAX_TASKS] = {0};
    if (st == PCBM_OK && t->lora)
        st = load_factors(mc, worker, bv, lcache, err);
    if (st != PCBM_OK)
        return st;
    for (uint32_t k0 = 0; k0 < bv->n; k0 += PCBM_TILE) {
        unsigned n = (unsigned)PCBM_MIN(PCBM_TILE, bv->n - k0);
        uint64_t e0 = bv->start + k0;
        decode_src(t, 0, &bs, (const uint8_t *)bv->in[0] + (uint64_t)k0 * t->in_unit[0], e0,
                   base, n);
        bool bad_any = mc->check_finite && pcbm_k_nonfinite(base, n);
        for (unsigned i = 0; i < N; i++) {
            if (t->absent >> i & 1u) { /* lacks the tensor: τ = 0, θ = base, no part in it */
                memset(tau[i], 0, n * sizeof(float));
                if (need_theta)
                    memcpy(theta[i], base, n * sizeof(float));
            } else if (lora_task(t, i)) { /* the materialized fine-tune in float32: θ = base + ΔW */
                pcbm_lora_delta(&t->lora[i + 1], lcache[i], e0, tmp, n);
                for (unsigned k = 0; k < n; k++)
                    tmp[k] = base[k] + tmp[k];
                bad_any |= pcbm_k_tau(PCBM_DT_F32, tmp, base, need_theta ? theta[i] : NULL,
                                      tau[i], n);
            } else if (t->q && t->q[i + 1].on) { /* dequantized into tmp (free until the kernel) */
                decode_src(t, i + 1, &bs, task_src(bv, i, k0), e0, tmp, n);
                bad_any |= pcbm_k_tau(PCBM_DT_F32, tmp, base, need_theta ? theta[i] : NULL,
                                      tau[i], n);
            } else {
                bad_any |= pcbm_k_tau(t->src[i + 1].dt, task_src(bv, i, k0), base,
                                      need_theta ? theta[i] : NULL, tau[i], n);
            }
        }
        if (mc->check_finite && bad_any) {
            for (unsigned i = 0; i < N && !need_theta; i++) {
                if (t->absent >> i & 1u) {
                    memcpy(theta[i], base, n * sizeof(float));
                    continue;
                }
                if (lora_task(t, i)) {
                    pcbm_lora_delta(&t->lora[i + 1], lcache[i], e0, theta[i], n);
                    for (unsigned k = 0; k < n; k++)
                        theta[i][k] = base[k] + theta[i][k];
                    continue;
                }
                decode_src(t, i + 1, &bs, task_src(bv, i, k0), e0, theta[i], n);
            }
            long bad = first_nonfinite(base, n);
            if (bad >= 0)
                return refuse_nonfinite(mc, t, 0, bv->start + k0 + (uint64_t)bad, &base[bad], err);
            for (unsigned i = 0; i < N; i++)
                if ((bad = first_nonfinite(theta[i], n)) >= 0)
                    return refuse_nonfinite(mc, t, i + 1, bv->start + k0 + (uint64_t)bad,
                                            &theta[i][bad], err);
        }
        pcbm_tile tl = {.bv = bv, .start = bv->start + k0, .n = n, .base = base,
                        .theta = theta, .tau = tau, .tmp = tmp, .absent = t->absent};
        tp->fn(mc, worker, &tl, tp->arg);
        if (tp->kind != PCBM_PASS_APPLY)
            continue;
        long over = mc->o->allow_nonfinite ? -1 : first_overflow(tmp, n, t->out_dt);
        if (over >= 0) { /* an input was not finite (not checked: --stats), or the merge overflows */
            uint64_t at = bv->start + k0 + (uint64_t)over;
            if (!isfinite(base[over]))
                return refuse_nonfinite(mc, t, 0, at, &base[over], err);
            for (unsigned i = 0; i < N; i++)
                if (!isfinite(tau[i][over]))
                    return refuse_nonfinite(mc, t, i + 1, at, &tau[i][over], err);
            return refuse_overflow(t, at, tmp[over], err);
        }
        pcbm_encode_f32(t->out_dt, tmp, (uint8_t *)bv->out + (uint64_t)k0 * t->out_unit, n);
    }
    return PCBM_OK;
}

static pcbm_status convert_block(pcbm_mctx *mc, unsigned worker, const pcbm_blockview *bv,
                                 pcbm_error *err)
{
    const pcbm_tlayout *t = bv->t;
    float *tmp = worker_scratch(mc, worker);
    block_scales bs;
    pcbm_status st = load_scales(mc, worker, bv, 1, &bs, err);
    for (uint32_t k0 = 0; k0 < bv->n && st == PCBM_OK; k0 += PCBM_TILE) {
        unsigned n = (unsigned)PCBM_MIN(PCBM_TILE, bv->n - k0);
        decode_src(t, 0, &bs, (const uint8_t *)bv->in[0] + (uint64_t)k0 * t->in_unit[0],
                   bv->start + k0, tmp, n);
        pcbm_encode_f32(t->out_dt, tmp, (uint8_t *)bv->out + (uint64_t)k0 * t->out_unit, n);
    }
    return st;
}

static pcbm_status block_cb(void *arg, unsigned worker, const pcbm_blockview *bv, pcbm_error *err)
{
    tile_pass *tp = arg;
    switch (bv->t->kind) {
    case PCBM_T_RAW:
        memcpy(bv->out, bv->in[0], bv->n);
        return PCBM_OK;
    case PCBM_T_CONVERT:
        return convert_block(tp->mc, worker, bv, err);
    case PCBM_T_MERGE:
        return merge_block(tp, worker, bv, err);
    }
    return pcbm_fail(err, PCBM_ERR_INTERNAL, "unknown tensor kind");
}

pcbm_status pcbm_tiles_pass(pcbm_mctx *mc, pcbm_pass_kind kind, size_t t0, size_t t1,
                            uint32_t sample_stride, pcbm_tile_fn fn, void *arg, pcbm_error *err)
{
    tile_pass tp = {mc, kind, fn, arg};
    if (kind == PCBM_PASS_APPLY)
        snprintf(mc->pass_name, sizeof mc->pass_name, "apply");
    else
        snprintf(mc->pass_name, sizeof mc->pass_name, "stats %u/%u", mc->pass_no,
                 mc->passes_planned ? mc->passes_planned : mc->pass_no);
    pcbm_pass ps = {.name = mc->pass_name, .kind = kind, .t0 = t0, .t1 = t1,
                    .sample_stride = sample_stride, .fn = block_cb, .arg = &tp};
    return pcbm_engine_run(mc->eng, &ps, err);
}

void pcbm_collect_kept(pcbm_mctx *mc)
{
    for (unsigned w = 0; w < mc->threads; w++) {
        uint64_t *k = pcbm_kept_local(mc, w);
        for (unsigned i = 0; i < mc->ntasks; i++) {
            mc->task[i].kept += k[i];
            k[i] = 0;
        }
    }
}

bool pcbm_next_range(const pcbm_layout *p, size_t *t0, size_t *t1)
{
    *t0 = *t1;
    if (*t0 >= p->nt)
        return false;
    size_t i = *t0;
    while (i < p->nt && p->t[i].kind != PCBM_T_MERGE)
        i++;
    *t1 = i < p->nt ? i + 1 : p->nt;
    return true;
}

uint64_t pcbm_range_elems(const pcbm_layout *p, size_t t0, size_t t1)
{
    uint64_t d = 0;
    for (size_t i = t0; i < t1; i++)
        if (p->t[i].kind == PCBM_T_MERGE)
            d += p->t[i].units;
    return d;
}

uint64_t pcbm_range_task_absent(const pcbm_layout *p, size_t t0, size_t t1, unsigned task)
{
    uint64_t d = 0;
    for (size_t i = t0; i < t1; i++)
        if (p->t[i].kind == PCBM_T_MERGE && (p->t[i].absent >> task & 1u))
            d += p->t[i].units;
    return d;
}

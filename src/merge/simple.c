/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simple.c — the methods without statistics, one apply pass each: task arithmetic
 * (θ_pre + λ·Σ w_i·τ_i, divided by Σ w_i with `normalize`, or Σ λ_i·τ_i with per-task
 * coefficients), linear (Σ α_i θ_i / Σ α_i, or not divided) and dare_linear (task arithmetic over DARE-dropped
 * task vectors, rescaled by 1/d_i unless `rescale` is off). No statistics rounds: three table
 * entries with an apply tile each (the apply pass checks the inputs).
 */
#include "method.h"
#include "../kernels/mkern.h"
#include "../kernels/rng.h"

#include <math.h>

/* mergekit's weighted sum: acc = ((0 + w_1·τ_1) + w_2·τ_2) + …, acc / W with `normalize`
 * (W = ((0 + w_1) + w_2) + …: non-zero on the command line, where the option checks refuse 0;
 * with mergekit's semantics |W| < 1e-8 divides by 1, as mergekit does), tmp[k] = base + λ·acc.
 * Weights, λ and `normalize` are the tensor's (pcbm_tparam: a recipe's gradients and filters).
 * A task lacking the tensor takes no part: its τ is 0 and its weight is not in W (mergekit sums
 * the weights of the models that have the tensor). */
static void weighted_sum(const pcbm_mctx *mc, const pcbm_tile *tl)
{
    unsigned N = mc->ntasks;
    size_t tn = tl->bv->tensor;
    float w[PCBM_MAX_TASKS], wsum = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        w[i] = pcbm_tile_has(tl, i) ? (float)pcbm_tparam(mc, tn, i, PCBM_P_WEIGHT) : 0.0f;
        if (pcbm_tile_has(tl, i))
            wsum += w[i];
    }
    float lam = mc->o->params ? (float)pcbm_tparam(mc, tn, 0, PCBM_P_LAMBDA) : mc->lam[0];
    bool norm = pcbm_tparam(mc, tn, 0, PCBM_P_NORMALIZE) != 0.0;
    if (norm && mc->o->semantics == PCBM_SEMANTICS_MERGEKIT && fabsf(wsum) < 1e-8f)
        wsum = 1.0f;
    for (unsigned k = 0; k < tl->n; k++) {
        float acc = 0.0f;
        for (unsigned i = 0; i < N; i++)
            acc += w[i] * tl->tau[i][k];
        if (norm)
            acc = acc / wsum;
        tl->tmp[k] = tl->base[k] + lam * acc;
    }
}

/* tmp[k] = base + λ·Σ τ_i (one λ), base + Σ λ_i·τ_i (per-task λ), or the weighted sum (weights,
 * `normalize`, or a recipe: mergekit's arithmetic). */
static void task_sum(const pcbm_mctx *mc, const pcbm_tile *tl)
{
    if (mc->o->weights || pcbm_method_normalizes(mc->o) || mc->o->params ||
        mc->o->semantics == PCBM_SEMANTICS_MERGEKIT) {
        weighted_sum(mc, tl);
        return;
    }
    pcbm_k_task_sum((const float *const *)tl->tau, mc->ntasks,
                    mc->per_task_lambdas ? mc->lam : NULL, mc->lam[0], tl->base, tl->tmp, tl->n);
}

static void tile_task_arithmetic(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    uint64_t *kept = pcbm_kept_local(mc, w);
    for (unsigned i = 0; i < mc->ntasks; i++)
        kept[i] += pcbm_tile_has(tl, i) ? tl->n : 0;
    task_sum(mc, tl);
}

static void tile_dare_linear(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const pcbm_merge_opts *o = mc->o;
    unsigned N = mc->ntasks;
    uint64_t key = pcbm_name_key(tl->bv->t->name);
    uint64_t *kept = pcbm_kept_local(mc, w);
    uint8_t keep[PCBM_TILE];
    bool rescale = pcbm_method_rescales(o);
    for (unsigned i = 0; i < N; i++) {
        if (!pcbm_tile_has(tl, i)) /* τ = 0: nothing to drop, no part in the sum */
            continue;
        double d = pcbm_task_density(o, i);
        kept[i] += pcbm_dare_mask(o->seed, i, key, tl->start, tl->n, d, keep);
        pcbm_k_dare_scale(tl->tau[i], keep, rescale ? (float)d : 1.0f, tl->tau[i], tl->n);
    }
    task_sum(mc, tl);
}

/* Σ α_i θ_i / Σ α_i with the weights (equal weights without them); Σ α_i θ_i with
 * `normalize` off (a division by 1, exact). A recipe's weights and `normalize` are the
 * tensor's (pcbm_tparam); mergekit's linear.py divides by Σ α_i as it is. Tasks lacking the
 * tensor take no part: the sums run over the others (mergekit's, which has only their tensors). */
static void tile_linear(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    unsigned N = mc->ntasks, np = 0;
    size_t tn = tl->bv->tensor;
    uint64_t *kept = pcbm_kept_local(mc, w);
    const float *th[PCBM_MAX_TASKS];
    float wf[PCBM_MAX_TASKS], wsum = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        if (!pcbm_tile_has(tl, i))
            continue;
        kept[i] += tl->n;
        th[np] = tl->theta[i];
        wf[np] = (float)pcbm_tparam(mc, tn, i, PCBM_P_WEIGHT);
        wsum += wf[np++];
    }
    if (pcbm_tparam(mc, tn, 0, PCBM_P_NORMALIZE) == 0.0)
        wsum = 1.0f;
    pcbm_k_linear(th, np, wf, wsum, tl->tmp, tl->n);
}

const pcbm_method_def pcbm_method_task_arithmetic = {
    .id = PCBM_METHOD_TASK_ARITHMETIC,
    .name = "task_arithmetic",
    .partial = true,
    .uses = PCBM_USES_LAMBDA | PCBM_USES_LAMBDAS | PCBM_USES_WEIGHTS | PCBM_USES_NORMALIZE,
    .apply_checks_finite = true,
    .apply = tile_task_arithmetic,
};

const pcbm_method_def pcbm_method_linear = {
    .id = PCBM_METHOD_LINEAR,
    .name = "linear",
    .partial = true,
    .uses = PCBM_USES_WEIGHTS | PCBM_USES_NORMALIZE,
    .normalizes = true,
    .needs_theta = true,
    .apply_checks_finite = true,
    .apply = tile_linear,
};

const pcbm_method_def pcbm_method_dare_linear = {
    .id = PCBM_METHOD_DARE_LINEAR,
    .name = "dare_linear",
    .partial = true,
    .uses = PCBM_USES_LAMBDA | PCBM_USES_LAMBDAS | PCBM_USES_WEIGHTS | PCBM_USES_DENSITY |
            PCBM_USES_DENSITIES | PCBM_USES_SEED | PCBM_USES_NORMALIZE | PCBM_USES_RESCALE,
    .rescales = true,
    .apply_checks_finite = true,
    .apply = tile_dare_linear,
};

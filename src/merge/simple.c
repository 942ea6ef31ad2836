/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simple.c — the methods without statistics, one apply pass each: task arithmetic
 * (θ_pre + λ·Σ τ_i, or Σ λ_i·τ_i with per-task coefficients), linear (Σ α_i θ_i / Σ α_i) and
 * dare_linear (task arithmetic over DARE-dropped, rescaled task vectors). No statistics
 * rounds: three table entries with an apply tile each (the apply pass checks the inputs).
 */
#include "method.h"
#include "../kernels/mkern.h"
#include "../kernels/rng.h"

/* tmp[k] = base + λ·Σ τ_i (one λ) or base + Σ λ_i·τ_i (per-task λ). */
static void task_sum(const pcbm_mctx *mc, const pcbm_tile *tl)
{
    pcbm_k_task_sum((const float *const *)tl->tau, mc->ntasks,
                    mc->per_task_lambdas ? mc->lam : NULL, mc->lam[0], tl->base, tl->tmp, tl->n);
}

static void tile_task_arithmetic(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    uint64_t *kept = pcbm_kept_local(mc, w);
    for (unsigned i = 0; i < mc->ntasks; i++)
        kept[i] += tl->n;
    task_sum(mc, tl);
}

static void tile_dare_linear(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    unsigned N = mc->ntasks;
    uint64_t key = pcbm_name_key(tl->bv->t->name);
    uint64_t *kept = pcbm_kept_local(mc, w);
    uint8_t keep[PCBM_TILE];
    float dens = (float)mc->o->density;
    for (unsigned i = 0; i < N; i++) {
        kept[i] += pcbm_dare_mask(mc->o->seed, i, key, tl->start, tl->n, mc->o->density, keep);
        pcbm_k_dare_scale(tl->tau[i], keep, dens, tl->tau[i], tl->n);
    }
    task_sum(mc, tl);
}

/* Σ α_i θ_i / Σ α_i with the --weights (equal weights without them). */
static void tile_linear(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const double *wts = mc->o->weights;
    unsigned N = mc->ntasks;
    uint64_t *kept = pcbm_kept_local(mc, w);
    for (unsigned i = 0; i < N; i++)
        kept[i] += tl->n;
    float wf[PCBM_MAX_TASKS], wsum = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        wf[i] = wts ? (float)wts[i] : 1.0f;
        wsum += wf[i];
    }
    pcbm_k_linear((const float *const *)tl->theta, N, wf, wsum, tl->tmp, tl->n);
}

const pcbm_method_def pcbm_method_task_arithmetic = {
    .id = PCBM_METHOD_TASK_ARITHMETIC,
    .name = "task_arithmetic",
    .uses = PCBM_USES_LAMBDA | PCBM_USES_LAMBDAS,
    .apply_checks_finite = true,
    .apply = tile_task_arithmetic,
};

const pcbm_method_def pcbm_method_linear = {
    .id = PCBM_METHOD_LINEAR,
    .name = "linear",
    .uses = PCBM_USES_WEIGHTS,
    .needs_theta = true,
    .apply_checks_finite = true,
    .apply = tile_linear,
};

const pcbm_method_def pcbm_method_dare_linear = {
    .id = PCBM_METHOD_DARE_LINEAR,
    .name = "dare_linear",
    .uses = PCBM_USES_LAMBDA | PCBM_USES_LAMBDAS | PCBM_USES_DENSITY | PCBM_USES_SEED,
    .apply_checks_finite = true,
    .apply = tile_dare_linear,
};

/*
 * simple.c — the methods without statistics, one apply pass each: task arithmetic
 * (θ_pre + λ·Σ τ_i, or Σ λ_i·τ_i with per-task coefficients), linear (Σ α_i θ_i / Σ α_i) and
 * dare_linear (task arithmetic over DARE-dropped, rescaled task vectors).
 */
#include "merge.h"
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

static void tile_linear(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const double *wts = arg;
    unsigned N = mc->ntasks;
    uint64_t *kept = pcbm_kept_local(mc, w);
    for (unsigned i = 0; i < N; i++)
        kept[i] += tl->n;
    float wf[PCBM_MAX_TASKS], wsum = 0.0f;
    for (unsigned i = 0; i < N; i++) {
        wf[i] = (float)wts[i];
        wsum += wf[i];
    }
    pcbm_k_linear((const float *const *)tl->theta, N, wf, wsum, tl->tmp, tl->n);
}

pcbm_status pcbm_run_simple(pcbm_mctx *mc, pcbm_error *err)
{
    const pcbm_plan *p = mc->plan;
    double equal[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < mc->ntasks; i++)
        equal[i] = 1.0;
    pcbm_tile_fn fn = tile_task_arithmetic;
    void *arg = NULL;
    if (mc->o->method == PCBM_METHOD_LINEAR) {
        fn = tile_linear;
        arg = mc->o->weights ? (void *)mc->o->weights : (void *)equal;
    } else if (mc->o->method == PCBM_METHOD_DARE_LINEAR) {
        fn = tile_dare_linear;
    }
    mc->check_finite = !mc->o->allow_nonfinite;
    pcbm_status st = pcbm_run_tiles(mc, PCBM_PASS_APPLY, 0, p->nt, 1, fn, arg, err);
    mc->check_finite = 0;
    pcbm_collect_kept(mc);
    return st;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcb.c — PCB-Merging (Parameter Competition Balancing) as the official code defines it
 * (../shared/docs/pcb-spec.md): clamp bounds lo/hi of |tau| per task, intra-balancing
 * exp(N*norm^2), inter-balancing tanh(tau_i * sum_j tau_j), score threshold t at rank
 * floor(d*(1-r)) and maximum m, weights (s-t)/(m-t), weighted average of the clamped task vectors.
 * Statistics rounds: exact (two radix-select passes for lo/hi, two for t and m) or, for large
 * global merges, the streaming rounds of pcb_stream.c with these exact rounds as their fallback.
 * This file is the method's table entry: its rounds, record, report and apply tile.
 * A task lacking a tensor takes no part in it: PCB runs on the sub-stack of the tasks that have
 * it (N their count, Σ_j over them), and each task's statistics over the elements it has.
 */
#include "pcb_math.h"

#include "../kernels/mkern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t pcb_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    uint64_t b = pcbm_hset_bytes(threads, 2 * o->ntasks) + (uint64_t)threads * o->ntasks * sizeof(float);
    if (pcbm_pcb_stream_will_run(o, p))
        b += pcbm_pcb_stream_bytes(o->ntasks, threads);
    return b;
}

/* The tasks that take part in the tile: N in PCB's formulas. */
static unsigned tile_tasks(const pcbm_mctx *mc, const pcbm_tile *tl)
{
    return mc->ntasks - (unsigned)__builtin_popcountll(tl->absent);
}

/* Scores s[i][k] of a tile (written into tl->theta[i], which PCB no longer needs); a task
 * lacking the tensor gets none. */
static void pcb_scores(const pcbm_mctx *mc, const pcb_state *ps, const pcbm_tile *tl)
{
    unsigned N = mc->ntasks, n = tl->n;
    float *sum = tl->tmp, nf = (float)tile_tasks(mc, tl);
    pcbm_k_sum((const float *const *)tl->tau, N, sum, n); /* absent τ are 0 */
    for (unsigned i = 0; i < N; i++)
        if (pcbm_tile_has(tl, i))
            pcbm_k_pcb_score(tl->tau[i], sum, ps->lo_v[i], ps->hi_v[i], nf, tl->theta[i], n);
}

static void tile_mag_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (pcbm_tile_has(tl, i))
            pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&ps->h, w, i));
}

static void tile_mag_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        if (!pcbm_tile_has(tl, i))
            continue;
        pcbm_k_hist_fine(tl->tau[i], tl->n, true, ps->lo[i].prefix,
                         pcbm_hset_local(&ps->h, w, 2 * i));
        pcbm_k_hist_fine(tl->tau[i], tl->n, true, ps->hi[i].prefix,
                         pcbm_hset_local(&ps->h, w, 2 * i + 1));
    }
}

static void tile_score_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    pcb_scores(mc, ps, tl);
    float *mx = ps->max_local + (size_t)w * mc->ntasks;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        if (!pcbm_tile_has(tl, i))
            continue;
        pcbm_k_hist_coarse(tl->theta[i], tl->n, false, 1, pcbm_hset_local(&ps->h, w, i));
        mx[i] = pcbm_k_max(tl->theta[i], tl->n, mx[i]);
    }
}

static void tile_score_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    pcb_scores(mc, ps, tl);
    for (unsigned i = 0; i < mc->ntasks; i++)
        if (pcbm_tile_has(tl, i))
            pcbm_k_hist_fine(tl->theta[i], tl->n, false, ps->thr[i].prefix,
                             pcbm_hset_local(&ps->h, w, i));
}

/* Scores, weights and the weighted average, one task at a time over the tile (the sums over
 * tasks keep their order element by element). */
static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    unsigned N = mc->ntasks, n = tl->n, np = tile_tasks(mc, tl);
    uint64_t *kept = pcbm_kept_local(mc, w);
    float *sum = tl->tmp, *num = tl->tmp + PCBM_TILE, *den = tl->tmp + 2 * PCBM_TILE;
    pcbm_k_sum((const float *const *)tl->tau, N, sum, n);
    if (np == 0) {
        memset(num, 0, n * sizeof *num);
        memset(den, 0, n * sizeof *den);
    }
    bool first = true;
    for (unsigned i = 0; i < N; i++) {
        if (!pcbm_tile_has(tl, i)) /* lacks the tensor: no part in it */
            continue;
        kept[i] += pcbm_k_pcb_apply_task(tl->tau[i], sum, ps->lo_v[i], ps->hi_v[i], (float)np,
                                         ps->t_v[i], ps->m_v[i], mc->lam[i], first, num, den, n);
        first = false;
    }
    pcbm_k_pcb_apply_finish(tl->base, num, den, tl->tmp, n); /* the result replaces sum */
}

/* ---- exact rounds: radix select of lo/hi over |tau|, then of t over scores (with m) ---- */

static pcbm_status begin_hist(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    pcbm_hset_clear(&((pcb_state *)st)->h);
    return PCBM_OK;
}

static unsigned regions_hist(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_hset_region(&((pcb_state *)st)->h);
    return 1;
}

static int finish_mag_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    double c = mc->o->clamp_ratio;
    uint64_t dall = 0;
    for (unsigned i = 0; i < mc->ntasks; i++) { /* the elements each task has */
        uint64_t d = 0;
        for (uint32_t b = 0; b < PCBM_QBINS; b++)
            d += pcbm_hset_total(&ps->h, i)[b];
        ps->di[i] = d;
        dall = d > dall ? d : dall;
    }
    ps->d = dall;
    if (dall == 0)
        return PCBM_ROUND_DONE;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        uint64_t d = ps->di[i];
        pcbm_sel_init(&ps->lo[i], pcbm_pcb_rank((double)d * c));
        pcbm_sel_init(&ps->hi[i], pcbm_pcb_rank((double)d * (1.0 - c) - 1.0));
        pcbm_sel_coarse(&ps->lo[i], pcbm_hset_total(&ps->h, i));
        pcbm_sel_coarse(&ps->hi[i], pcbm_hset_total(&ps->h, i));
    }
    return PCB_R_MAG_FINE;
}

static int finish_mag_fine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_sel_fine(&ps->lo[i], pcbm_hset_total(&ps->h, 2 * i));
        pcbm_sel_fine(&ps->hi[i], pcbm_hset_total(&ps->h, 2 * i + 1));
        ps->lo_v[i] = pcbm_fkey_value(ps->lo[i].key);
        ps->hi_v[i] = pcbm_fkey_value(ps->hi[i].key);
    }
    return PCB_R_SCORE_COARSE;
}

static pcbm_status begin_score_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg,
                                      pcbm_error *err)
{
    pcb_state *ps = st;
    pcbm_hset_clear(&ps->h);
    for (size_t k = 0; k < (size_t)mc->threads * mc->ntasks; k++)
        ps->max_local[k] = -INFINITY;
    for (unsigned i = 0; i < mc->ntasks; i++)
        ps->m_v[i] = -INFINITY;
    return PCBM_OK;
}

static unsigned regions_score_coarse(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    pcb_state *ps = st;
    size_t bytes = mc->ntasks * sizeof(float);
    region[0] = pcbm_hset_region(&ps->h);
    region[1] = (pcbm_acc){ps->m_v, bytes, pcbm_acc_max_f32, ps->max_local, bytes};
    return 2;
}

static int finish_score_coarse(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_sel_init(&ps->thr[i], pcbm_pcb_rank((double)ps->di[i] * (1.0 - mc->o->density)));
        pcbm_sel_coarse(&ps->thr[i], pcbm_hset_total(&ps->h, i));
    }
    return PCB_R_SCORE_FINE;
}

static int finish_score_fine(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_sel_fine(&ps->thr[i], pcbm_hset_total(&ps->h, i));
        ps->t_v[i] = pcbm_fkey_value(ps->thr[i].key);
    }
    return PCBM_ROUND_DONE;
}

static const pcbm_round mag_coarse = {"pcb |tau| coarse", tile_mag_coarse, NULL, true,
                                      begin_hist, regions_hist, finish_mag_coarse};
static const pcbm_round mag_coarse_fb = {"pcb |tau| coarse (fallback)", tile_mag_coarse, NULL,
                                         false, begin_hist, regions_hist, finish_mag_coarse};
static const pcbm_round mag_fine = {"pcb |tau| fine", tile_mag_fine, NULL, false, begin_hist,
                                    regions_hist, finish_mag_fine};
static const pcbm_round score_coarse = {"pcb score coarse", tile_score_coarse, NULL, false,
                                        begin_score_coarse, regions_score_coarse,
                                        finish_score_coarse};
static const pcbm_round score_fine = {"pcb score fine", tile_score_fine, NULL, false, begin_hist,
                                      regions_hist, finish_score_fine};

static const pcbm_round *const pcb_rounds[PCB_NROUNDS] = {
    [PCB_R_MAG_COARSE] = &mag_coarse,
    [PCB_R_MAG_FINE] = &mag_fine,
    [PCB_R_SCORE_COARSE] = &score_coarse,
    [PCB_R_SCORE_FINE] = &score_fine,
    [PCB_R_S1] = &pcbm_pcb_stream_rounds[0],
    [PCB_R_S2] = &pcbm_pcb_stream_rounds[1],
    [PCB_R_S3] = &pcbm_pcb_stream_rounds[2],
    [PCB_R_FULL] = &pcbm_pcb_stream_rounds[3],
    [PCB_R_MAG_COARSE_FB] = &mag_coarse_fb,
};

/* ---- the method ---- */

static pcbm_status pcb_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    pcb_state *ps = pcbm_calloc(1, sizeof *ps);
    if (!ps || pcbm_hset_init(&ps->h, mc->threads, 2 * mc->ntasks) != 0 ||
        !(ps->max_local = pcbm_calloc((size_t)mc->threads * mc->ntasks, sizeof(float)))) {
        if (ps)
            pcbm_hset_free(&ps->h);
        free(ps);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for PCB statistics");
    }
    *state = ps;
    return PCBM_OK;
}

static void pcb_free(void *state)
{
    pcb_state *ps = state;
    pcbm_pcb_stream_free(ps);
    pcbm_hset_free(&ps->h);
    free(ps->max_local);
    free(ps);
}

static unsigned pcb_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p)
{
    return pcbm_pcb_stream_will_run(o, p) ? 8 : 4;
}

static int pcb_first_round(void *state, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = state;
    if (mc->layout->npartial && mc->o->scope == PCBM_SCOPE_GLOBAL &&
        mc->o->stats_mode == PCBM_STATS_STREAMING)
        snprintf(ps->how, sizeof ps->how, "exact: radix select, 4 statistics passes (streaming "
                 "was asked for, but some task model lacks a merged tensor)");
    return pcbm_pcb_stream_will_run(mc->o, mc->layout) ? PCB_R_S1 : PCB_R_MAG_COARSE;
}

static void pcb_save(const void *state, unsigned ntasks, pcbm_statrec *r)
{
    const pcb_state *ps = state;
    for (unsigned i = 0; i < ntasks; i++) {
        r->v[i][0] = ps->lo_v[i];
        r->v[i][1] = ps->hi_v[i];
        r->v[i][2] = ps->t_v[i];
        r->v[i][3] = ps->m_v[i];
    }
}

static void pcb_load(void *state, unsigned ntasks, const pcbm_range *rg, const pcbm_statrec *r)
{
    pcb_state *ps = state;
    for (unsigned i = 0; i < ntasks; i++) {
        ps->lo_v[i] = r->v[i][0];
        ps->hi_v[i] = r->v[i][1];
        ps->t_v[i] = r->v[i][2];
        ps->m_v[i] = r->v[i][3];
    }
    ps->d = rg->d;
}

static const char *pcb_how(const void *state, const pcbm_merge_opts *o)
{
    const pcb_state *ps = state;
    if (o->scope != PCBM_SCOPE_GLOBAL)
        return "exact, per tensor: radix select, 4 statistics passes over each tensor";
    return ps->how[0] ? ps->how : "exact: radix select, 4 statistics passes";
}

static void pcb_report(const void *state, pcbm_mctx *mc)
{
    const pcb_state *ps = state;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        mc->task[i].lo = ps->lo_v[i];
        mc->task[i].hi = ps->hi_v[i];
        mc->task[i].threshold = ps->t_v[i];
        mc->task[i].max = ps->m_v[i];
    }
}

const pcbm_method_def pcbm_method_pcb = {
    .id = PCBM_METHOD_PCB,
    .name = "pcb",
    .partial = true,
    .uses = PCBM_USES_LAMBDA | PCBM_USES_LAMBDAS | PCBM_USES_DENSITY | PCBM_USES_CLAMP | PCBM_USES_SCOPE |
            PCBM_USES_STREAMING,
    .stats_bytes = pcb_stats_bytes,
    .init = pcb_init,
    .free = pcb_free,
    .rounds = pcb_rounds,
    .nrounds = PCB_NROUNDS,
    .passes_planned = 4,
    .max_rounds = pcb_max_rounds,
    .first_round = pcb_first_round,
    .save = pcb_save,
    .load = pcb_load,
    .how = pcb_how,
    .report = pcb_report,
    .apply = tile_apply,
};

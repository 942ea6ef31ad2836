/*
 * pcb.c — PCB-Merging (Parameter Competition Balancing) as the official code defines it
 * (../shared/docs/pcb-spec.md): clamp bounds lo/hi of |tau| per task, intra-balancing
 * exp(N*norm^2), inter-balancing tanh(tau_i * sum_j tau_j), score threshold t at rank
 * floor(d*(1-r)) and maximum m, weights (s-t)/(m-t), weighted average of the clamped task vectors.
 * Statistics are exact: two radix-select passes for lo/hi, two for t (plus m), then the apply pass.
 */
#include "pcb_internal.h"

#include "../kernels/mkern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t pcbm_pcb_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_plan *p)
{
    uint64_t b = pcbm_hset_bytes(threads, 2 * o->ntasks) + (uint64_t)threads * o->ntasks * sizeof(float);
    if (pcbm_pcb_stream_will_run(o, p))
        b += pcbm_pcb_stream_bytes(o->ntasks, threads);
    return b;
}

/* Scores s[i][k] of a tile (written into tl->theta[i], which PCB no longer needs). */
void pcbm_pcb_scores(const pcbm_mctx *mc, const pcb_state *ps, const pcbm_tile *tl)
{
    unsigned N = mc->ntasks, n = tl->n;
    float *sum = tl->tmp;
    pcbm_k_sum((const float *const *)tl->tau, N, sum, n);
    for (unsigned i = 0; i < N; i++)
        pcbm_k_pcb_score(tl->tau[i], sum, ps->lo_v[i], ps->hi_v[i], (float)N, tl->theta[i], n);
}

void pcbm_pcb_tile_mag_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&ps->h, w, i));
}

static void tile_mag_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_k_hist_fine(tl->tau[i], tl->n, true, ps->lo[i].prefix,
                         pcbm_hset_local(&ps->h, w, 2 * i));
        pcbm_k_hist_fine(tl->tau[i], tl->n, true, ps->hi[i].prefix,
                         pcbm_hset_local(&ps->h, w, 2 * i + 1));
    }
}

static void tile_score_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    pcbm_pcb_scores(mc, ps, tl);
    float *mx = ps->max_local + (size_t)w * mc->ntasks;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        pcbm_k_hist_coarse(tl->theta[i], tl->n, false, 1, pcbm_hset_local(&ps->h, w, i));
        mx[i] = pcbm_k_max(tl->theta[i], tl->n, mx[i]);
    }
}

static void tile_score_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    pcbm_pcb_scores(mc, ps, tl);
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_k_hist_fine(tl->theta[i], tl->n, false, ps->thr[i].prefix,
                         pcbm_hset_local(&ps->h, w, i));
}

/* Scores, weights and the weighted average, one task at a time over the tile (the sums over
 * tasks keep their order element by element). */
void pcbm_pcb_tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    pcb_state *ps = arg;
    unsigned N = mc->ntasks, n = tl->n;
    uint64_t *kept = pcbm_kept_local(mc, w);
    float *sum = tl->tmp, *num = tl->tmp + PCBM_TILE, *den = tl->tmp + 2 * PCBM_TILE;
    pcbm_k_sum((const float *const *)tl->tau, N, sum, n);
    if (N == 0) {
        memset(num, 0, n * sizeof *num);
        memset(den, 0, n * sizeof *den);
    }
    for (unsigned i = 0; i < N; i++)
        kept[i] += pcbm_k_pcb_apply_task(tl->tau[i], sum, ps->lo_v[i], ps->hi_v[i], (float)N,
                                         ps->t_v[i], ps->m_v[i], mc->lam[i], i == 0, num, den, n);
    pcbm_k_pcb_apply_finish(tl->base, num, den, tl->tmp, n); /* the result replaces sum */
}

uint64_t pcbm_pcb_rank(double x)
{
    /* the official code's int(): truncation toward zero of a double */
    return x <= 0.0 ? 0 : (uint64_t)x;
}

/* Exact lo/hi of one range: a coarse and a fine radix pass over |tau|. Sets ps->d. */
pcbm_status pcbm_pcb_exact_bounds(pcbm_mctx *mc, pcb_state *ps, size_t t0, size_t t1,
                                  pcbm_error *err)
{
    unsigned N = mc->ntasks;
    double c = mc->o->clamp_ratio;
    pcbm_status st;
    pcbm_hset_clear(&ps->h);
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, pcbm_pcb_tile_mag_coarse, ps, err)) != PCBM_OK)
        return st;
    mc->check_finite = 0;
    pcbm_hset_reduce(&ps->h);
    if ((st = pcbm_exchange(mc, &pcbm_hset_acc(&ps->h), 1, err)) != PCBM_OK)
        return st;
    uint64_t d = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++)
        d += pcbm_hset_total(&ps->h, 0)[b];
    ps->d = d;
    if (d == 0)
        return PCBM_OK;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_init(&ps->lo[i], pcbm_pcb_rank((double)d * c));
        pcbm_sel_init(&ps->hi[i], pcbm_pcb_rank((double)d * (1.0 - c) - 1.0));
        pcbm_sel_coarse(&ps->lo[i], pcbm_hset_total(&ps->h, i));
        pcbm_sel_coarse(&ps->hi[i], pcbm_hset_total(&ps->h, i));
    }
    pcbm_hset_clear(&ps->h);
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_mag_fine, ps, err)) != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ps->h);
    if ((st = pcbm_exchange(mc, &pcbm_hset_acc(&ps->h), 1, err)) != PCBM_OK)
        return st;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_fine(&ps->lo[i], pcbm_hset_total(&ps->h, 2 * i));
        pcbm_sel_fine(&ps->hi[i], pcbm_hset_total(&ps->h, 2 * i + 1));
        ps->lo_v[i] = pcbm_fkey_value(ps->lo[i].key);
        ps->hi_v[i] = pcbm_fkey_value(ps->hi[i].key);
    }
    return PCBM_OK;
}

/* Exact t and m of one range at the bounds in ps: a coarse and a fine radix pass over scores. */
pcbm_status pcbm_pcb_exact_scores(pcbm_mctx *mc, pcb_state *ps, size_t t0, size_t t1,
                                  pcbm_error *err)
{
    unsigned N = mc->ntasks;
    pcbm_status st;
    pcbm_hset_clear(&ps->h);
    for (size_t k = 0; k < (size_t)mc->threads * N; k++)
        ps->max_local[k] = -INFINITY;
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_score_coarse, ps, err)) != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ps->h);
    for (unsigned i = 0; i < N; i++) {
        float m = -INFINITY;
        for (unsigned w = 0; w < mc->threads; w++)
            m = pcbm_k_max1(m, ps->max_local[(size_t)w * N + i]);
        ps->m_v[i] = m;
    }
    pcbm_acc acc[2] = {pcbm_hset_acc(&ps->h), {ps->m_v, N * sizeof(float), pcbm_acc_max_f32}};
    if ((st = pcbm_exchange(mc, acc, 2, err)) != PCBM_OK)
        return st;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_init(&ps->thr[i], pcbm_pcb_rank((double)ps->d * (1.0 - mc->o->density)));
        pcbm_sel_coarse(&ps->thr[i], pcbm_hset_total(&ps->h, i));
    }
    pcbm_hset_clear(&ps->h);
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_score_fine, ps, err)) != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ps->h);
    if ((st = pcbm_exchange(mc, &pcbm_hset_acc(&ps->h), 1, err)) != PCBM_OK)
        return st;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_fine(&ps->thr[i], pcbm_hset_total(&ps->h, i));
        ps->t_v[i] = pcbm_fkey_value(ps->thr[i].key);
    }
    return PCBM_OK;
}

/* Statistics of a range from --stats, or recorded for the statistics file after computing. */
static pcbm_status replay_range(pcbm_mctx *mc, pcb_state *ps, uint64_t d, pcbm_error *err)
{
    const pcbm_statrec *r = pcbm_replay_next(mc, d, err);
    if (!r)
        return PCBM_ERR_STATS;
    for (unsigned i = 0; i < mc->ntasks; i++) {
        ps->lo_v[i] = r->v[i][0];
        ps->hi_v[i] = r->v[i][1];
        ps->t_v[i] = r->v[i][2];
        ps->m_v[i] = r->v[i][3];
    }
    ps->d = d;
    return PCBM_OK;
}

static pcbm_status record_range(pcbm_mctx *mc, const pcb_state *ps, uint64_t d, pcbm_error *err)
{
    pcbm_statrec *r = pcbm_record_next(mc, d);
    if (!r)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory recording statistics");
    for (unsigned i = 0; i < mc->ntasks; i++) {
        r->v[i][0] = ps->lo_v[i];
        r->v[i][1] = ps->hi_v[i];
        r->v[i][2] = ps->t_v[i];
        r->v[i][3] = ps->m_v[i];
    }
    return PCBM_OK;
}

static uint64_t merged_elems(const pcbm_plan *p, size_t t0, size_t t1)
{
    uint64_t d = 0;
    for (size_t i = t0; i < t1; i++)
        if (p->t[i].kind == PCBM_T_MERGE)
            d += p->t[i].units;
    return d;
}

/* Statistics of one range (the whole model, or one tensor), every quantile exact. */
static pcbm_status pcb_stats_exact(pcbm_mctx *mc, pcb_state *ps, size_t t0, size_t t1,
                                   pcbm_error *err)
{
    mc->pass_no = 0;
    mc->passes_planned = 4;
    mc->check_finite = !mc->o->allow_nonfinite;
    pcbm_status st = pcbm_pcb_exact_bounds(mc, ps, t0, t1, err);
    if (st != PCBM_OK || ps->d == 0)
        return st;
    return pcbm_pcb_exact_scores(mc, ps, t0, t1, err);
}

static void report_global(pcbm_mctx *mc, const pcb_state *ps)
{
    for (unsigned i = 0; i < mc->ntasks; i++) {
        mc->task[i].lo = ps->lo_v[i];
        mc->task[i].hi = ps->hi_v[i];
        mc->task[i].threshold = ps->t_v[i];
        mc->task[i].max = ps->m_v[i];
    }
}

pcbm_status pcbm_run_pcb(pcbm_mctx *mc, pcbm_error *err)
{
    pcb_state *ps = pcbm_calloc(1, sizeof *ps);
    if (!ps || pcbm_hset_init(&ps->h, mc->threads, 2 * mc->ntasks) != 0 ||
        !(ps->max_local = pcbm_calloc((size_t)mc->threads * mc->ntasks, sizeof(float)))) {
        if (ps)
            pcbm_hset_free(&ps->h);
        free(ps);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for PCB statistics");
    }
    pcbm_status st = PCBM_OK;
    const pcbm_plan *p = mc->plan;
    if (mc->o->scope == PCBM_SCOPE_GLOBAL) {
        if (p->d > 0 && mc->stats_in)
            st = replay_range(mc, ps, p->d, err);
        else if (p->d > 0 && !pcbm_pcb_stream_will_run(mc->o, p))
            st = pcb_stats_exact(mc, ps, 0, p->nt, err);
        else if (p->d > 0)
            st = pcbm_pcb_stream_stats(mc, ps, err);
        if (st == PCBM_OK && p->d > 0)
            st = record_range(mc, ps, p->d, err);
        if (st == PCBM_OK)
            snprintf(mc->stats_how, sizeof mc->stats_how, "%s",
                     mc->stats_in ? "replayed from --stats"
                                  : ps->how[0] ? ps->how : "exact: radix select, 4 statistics passes");
        if (st == PCBM_OK && p->d > 0 && mc->stats_done)
            st = mc->stats_done(mc->stats_done_arg, err);
        if (st == PCBM_OK) {
            report_global(mc, ps);
            st = pcbm_run_tiles(mc, PCBM_PASS_APPLY, 0, p->nt, 1, pcbm_pcb_tile_apply, ps, err);
        }
    } else {
        snprintf(mc->stats_how, sizeof mc->stats_how, "%s", mc->stats_in ? "replayed from --stats"
                 : "exact, per tensor: radix select, 4 statistics passes over each tensor");
        size_t t0 = 0, t1 = 0;
        while (st == PCBM_OK && pcbm_next_range(p, &t0, &t1)) {
            uint64_t d = merged_elems(p, t0, t1);
            if (!pcbm_split_owns_range(mc, t1 - 1, d)) { /* another unit's tensor */
                if (pcbm_split_touches(mc, t0, t1))
                    st = pcbm_run_tiles(mc, PCBM_PASS_APPLY, t0, t1, 1, pcbm_pcb_tile_apply, ps, err);
                continue;
            }
            if (d > 0 && mc->stats_in)
                st = replay_range(mc, ps, d, err);
            else if (d > 0)
                st = pcb_stats_exact(mc, ps, t1 - 1, t1, err);
            if (st == PCBM_OK && d > 0)
                st = record_range(mc, ps, d, err);
            if (st == PCBM_OK)
                st = pcbm_run_tiles(mc, PCBM_PASS_APPLY, t0, t1, 1, pcbm_pcb_tile_apply, ps, err);
        }
    }
    pcbm_collect_kept(mc);
    pcbm_hset_free(&ps->h);
    free(ps->max_local);
    free(ps);
    return st;
}

/*
 * ties.c — TIES-Merging as the official code defines it (global top-k trim by magnitude per task
 * with ties at the threshold kept, sign election by mass with zero sums taking the majority sign
 * of the elected vector, disjoint mean), and dare_ties (DARE's random drop and rescale in place of
 * the trim, then the same election and disjoint mean). Thresholds are exact (radix select).
 */
#include "merge.h"
#include "../kernels/mkern.h"
#include "../kernels/rng.h"
#include "../stats/qsel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ties_state {
    pcbm_hset h;                         /* N streams */
    pcbm_sel sel[PCBM_MAX_TASKS];
    float thr[PCBM_MAX_TASKS];
    int64_t *votes;                      /* [threads][2]: positions with positive/negative sum */
    float majority;                      /* sign used where the elected sum is exactly zero */
    int dare;
    bool global;                         /* one range: statistics saved once known */
    float dare_scale;                    /* 1 / density as float, applied by division */
} ties_state;

uint64_t pcbm_ties_stats_bytes(unsigned ntasks, unsigned threads)
{
    return pcbm_hset_bytes(threads, ntasks) + (uint64_t)threads * 2 * sizeof(int64_t);
}

/* Trimmed (or DARE-dropped) task vectors of a tile into tl->theta[i]; counts what each task
 * keeps into kept[] when kept is not NULL. */
static void trimmed(pcbm_mctx *mc, const ties_state *ts, const pcbm_tile *tl, uint64_t *kept)
{
    unsigned N = mc->ntasks;
    if (ts->dare) {
        uint64_t key = pcbm_name_key(tl->bv->t->name);
        uint8_t keep[PCBM_TILE];
        float dens = (float)mc->o->density;
        for (unsigned i = 0; i < N; i++) {
            uint64_t k = pcbm_dare_mask(mc->o->seed, i, key, tl->start, tl->n, mc->o->density,
                                        keep);
            pcbm_k_dare_scale(tl->tau[i], keep, dens, tl->theta[i], tl->n);
            if (kept)
                kept[i] += k;
        }
        return;
    }
    for (unsigned i = 0; i < N; i++) {
        uint64_t k = pcbm_k_trim(tl->tau[i], ts->thr[i], tl->theta[i], tl->n);
        if (kept)
            kept[i] += k;
    }
}

static void tile_coarse(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_k_hist_coarse(tl->tau[i], tl->n, true, 1, pcbm_hset_local(&ts->h, w, i));
}

static void tile_fine(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_k_hist_fine(tl->tau[i], tl->n, true, ts->sel[i].prefix,
                         pcbm_hset_local(&ts->h, w, i));
}

static void tile_votes(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    trimmed(mc, ts, tl, NULL);
    int64_t *v = ts->votes + 2 * (size_t)w;
    pcbm_k_sign_votes((const float *const *)tl->theta, mc->ntasks, tl->n, &v[0], &v[1]);
}

static void tile_apply(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    ties_state *ts = arg;
    trimmed(mc, ts, tl, pcbm_kept_local(mc, w));
    pcbm_k_ties_apply((const float *const *)tl->theta, mc->ntasks, tl->base, ts->majority,
                      mc->lam[0], tl->tmp, tl->n);
}

static uint64_t range_elems(const pcbm_plan *p, size_t t0, size_t t1)
{
    uint64_t d = 0;
    for (size_t i = t0; i < t1; i++)
        if (p->t[i].kind == PCBM_T_MERGE)
            d += p->t[i].units;
    return d;
}

static pcbm_status trim_thresholds(pcbm_mctx *mc, ties_state *ts, size_t t0, size_t t1,
                                   pcbm_error *err)
{
    unsigned N = mc->ntasks;
    uint64_t d = range_elems(mc->plan, t0, t1);
    uint64_t keep = d == 0 ? 0 : (uint64_t)((double)d * mc->o->density);
    pcbm_status st;
    pcbm_hset_clear(&ts->h);
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_coarse, ts, err)) != PCBM_OK)
        return st;
    mc->check_finite = 0;
    if (keep >= d) { /* keep everything */
        for (unsigned i = 0; i < N; i++)
            ts->thr[i] = 0.0f;
        return PCBM_OK;
    }
    pcbm_hset_reduce(&ts->h);
    if ((st = pcbm_exchange(mc, &pcbm_hset_acc(&ts->h), 1, err)) != PCBM_OK)
        return st;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_init(&ts->sel[i], d - keep - 1);
        pcbm_sel_coarse(&ts->sel[i], pcbm_hset_total(&ts->h, i));
    }
    pcbm_hset_clear(&ts->h);
    if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_fine, ts, err)) != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ts->h);
    if ((st = pcbm_exchange(mc, &pcbm_hset_acc(&ts->h), 1, err)) != PCBM_OK)
        return st;
    for (unsigned i = 0; i < N; i++) {
        pcbm_sel_fine(&ts->sel[i], pcbm_hset_total(&ts->h, i));
        ts->thr[i] = pcbm_fkey_value(ts->sel[i].key);
    }
    return PCBM_OK;
}

static pcbm_status ties_range(pcbm_mctx *mc, ties_state *ts, size_t t0, size_t t1, bool stats,
                              pcbm_error *err)
{
    pcbm_status st = PCBM_OK;
    mc->pass_no = 0;
    if (!ts->global && stats && !pcbm_split_owns_range(mc, t1 - 1, range_elems(mc->plan, t0, t1))) {
        /* another unit's tensor (split merge): only this unit's tensors of the range are written */
        if (!pcbm_split_touches(mc, t0, t1))
            return PCBM_OK;
        return pcbm_run_tiles(mc, PCBM_PASS_APPLY, t0, t1, 1, tile_apply, ts, err);
    }
    if (stats && mc->stats_in) {
        const pcbm_statrec *r = pcbm_replay_next(mc, range_elems(mc->plan, t0, t1), err);
        if (!r)
            return PCBM_ERR_STATS;
        for (unsigned i = 0; i < mc->ntasks; i++)
            ts->thr[i] = r->v[i][0];
        ts->majority = r->majority;
    } else if (stats) {
        mc->check_finite = !mc->o->allow_nonfinite;
        if (!ts->dare && (st = trim_thresholds(mc, ts, t0, t1, err)) != PCBM_OK)
            return st;
        memset(ts->votes, 0, (size_t)mc->threads * 2 * sizeof(int64_t));
        if ((st = pcbm_run_tiles(mc, PCBM_PASS_STATS, t0, t1, 1, tile_votes, ts, err)) != PCBM_OK)
            return st;
        mc->check_finite = 0;
        int64_t pn[2] = {0, 0};
        for (unsigned w = 0; w < mc->threads; w++) {
            pn[0] += ts->votes[2 * w];
            pn[1] += ts->votes[2 * w + 1];
        }
        pcbm_acc acc = {pn, sizeof pn, pcbm_acc_sum_i64};
        if ((st = pcbm_exchange(mc, &acc, 1, err)) != PCBM_OK)
            return st;
        int64_t pos = pn[0], neg = pn[1];
        ts->majority = pos > neg ? 1.0f : (pos < neg ? -1.0f : 0.0f);
    }
    if (stats) {
        pcbm_statrec *r = pcbm_record_next(mc, range_elems(mc->plan, t0, t1));
        if (!r)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory recording statistics");
        for (unsigned i = 0; i < mc->ntasks; i++)
            r->v[i][0] = ts->thr[i];
        r->majority = ts->majority;
        if (ts->global && mc->stats_done) {
            pcbm_status sst = mc->stats_done(mc->stats_done_arg, err);
            if (sst != PCBM_OK)
                return sst;
        }
    }
    return pcbm_run_tiles(mc, PCBM_PASS_APPLY, t0, t1, 1, tile_apply, ts, err);
}

pcbm_status pcbm_run_ties(pcbm_mctx *mc, pcbm_error *err)
{
    ties_state *ts = pcbm_calloc(1, sizeof *ts);
    if (!ts || pcbm_hset_init(&ts->h, mc->threads, mc->ntasks) != 0 ||
        !(ts->votes = pcbm_calloc((size_t)mc->threads * 2, sizeof(int64_t)))) {
        if (ts)
            pcbm_hset_free(&ts->h);
        free(ts);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for TIES statistics");
    }
    ts->dare = mc->o->method == PCBM_METHOD_DARE_TIES;
    const pcbm_plan *p = mc->plan;
    pcbm_status st = PCBM_OK;
    mc->passes_planned = ts->dare ? 1 : 3;
    snprintf(mc->stats_how, sizeof mc->stats_how, "%s",
             mc->stats_in ? "replayed from --stats"
             : ts->dare ? "one pass for the majority sign"
                      : "exact: radix select (2 passes) and one pass for the majority sign");
    if (mc->o->scope == PCBM_SCOPE_GLOBAL) {
        ts->global = true;
        st = ties_range(mc, ts, 0, p->nt, p->d > 0, err);
        for (unsigned i = 0; i < mc->ntasks && !ts->dare; i++)
            mc->task[i].threshold = ts->thr[i];
    } else {
        size_t t0 = 0, t1 = 0;
        while (st == PCBM_OK && pcbm_next_range(p, &t0, &t1))
            st = ties_range(mc, ts, t0, t1,
                            p->t[t1 - 1].kind == PCBM_T_MERGE && p->t[t1 - 1].units > 0, err);
    }
    pcbm_collect_kept(mc);
    pcbm_hset_free(&ts->h);
    free(ts->votes);
    free(ts);
    return st;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rounds.c — the rounds driver: runs a method's statistics rounds (method.h) and its apply pass
 * in every context, so no method knows these contexts:
 *   one machine      pass -> reduce the threads' regions -> finish -> ... -> apply
 *   split part       the first round not reduced yet: pass -> threads' regions -> save, stop
 *                    (reduced rounds are loaded instead of run); tensor scope: its own tensors
 *   split reduce     no pass: load the parts' regions -> combine -> finish -> ...; stops where
 *                    the parts have not run the next round yet
 *   replay           --stats (or a split part's apply): the records instead of the rounds (a
 *                    record the method marks for recomputation: the rounds again)
 * The records of every range go to mc->stats_out; global statistics are announced through
 * mc->stats_done (saved by run.c for --resume, by split.c as the split's merge_stats).
 */
#include "method.h"
#include "split.h"

#include <stdio.h>
#include <string.h>

#define MAX_ROUNDS_RUN 64u  /* rounds of one range, jumps included (a loop is a bug) */

typedef struct drive {
    pcbm_mctx *mc;
    const pcbm_method_def *m;
    void *state;
    pcbm_round_pass_fn pass;    /* a round's pass: the engine's (tests give their own) */
    pcbm_rounds_end end;
} drive;

/* ---- the context ---- */

/* Whether this context writes output: one machine, or a split part's apply. */
static bool writes_output(const pcbm_mctx *mc)
{
    return !mc->split || mc->split->mode == PCBM_SPLIT_APPLY;
}

/* Tensor scope of a split merge: whether this part computes the statistics of tensor t. */
static bool part_owns_tensor(const pcbm_mctx *mc, size_t t)
{
    const pcbm_split *sp = mc->split;
    if (!sp || !sp->local)
        return true;
    unsigned f = mc->layout->t[t].out_file;
    return f >= sp->file_lo && f < sp->file_hi;
}

/* Whether any tensor of [t0, t1) is written by this part (true outside split merges). */
static bool part_touches(const pcbm_mctx *mc, size_t t0, size_t t1)
{
    const pcbm_split *sp = mc->split;
    if (!sp)
        return true;
    for (size_t t = t0; t < t1; t++) {
        unsigned f = mc->layout->t[t].out_file;
        if (f >= sp->file_lo && f < sp->file_hi)
            return true;
    }
    return false;
}

/* ---- one round ---- */

static pcbm_status engine_pass(pcbm_mctx *mc, const pcbm_round *r, void *state,
                               const pcbm_range *rg, pcbm_error *err)
{
    return pcbm_tiles_pass(mc, PCBM_PASS_STATS, rg->t0, rg->t1, r->stride ? r->stride(state) : 1,
                           r->tile, state, err);
}

/* The round's pass, unless a split merge loads the round instead (reduced already, this part's
 * region saved, or the reduce, which reads no model). */
static pcbm_status round_pass(drive *dv, const pcbm_round *r, const pcbm_range *rg,
                              pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    pcbm_status st = PCBM_OK;
    mc->pass_no++;
    if (r->check_finite)
        mc->check_finite = !mc->o->allow_nonfinite;
    if (!mc->split || !pcbm_split_skip_stats_pass(mc->split))
        st = dv->pass(mc, r, dv->state, rg, err);
    mc->check_finite = 0;
    return st;
}

/* A split merge's exchange of a round's regions (split_rounds.c): a reduced round is loaded; a
 * part saves its region and stops; the reduce sums the parts' regions, or stops where no part has
 * run the round yet. */
static pcbm_status split_exchange(drive *dv, const pcbm_acc *region, unsigned n, bool *stop,
                                  pcbm_error *err)
{
    pcbm_exchange_got got;
    pcbm_status st = pcbm_split_exchange(dv->mc->split, region, n, &got, err);
    if (st == PCBM_OK && got != PCBM_EXCHANGE_TOTAL) {
        dv->end = got == PCBM_EXCHANGE_SAVED ? PCBM_ROUNDS_PART_SAVED : PCBM_ROUNDS_PENDING;
        *stop = true;
    }
    return st;
}

/* The round's regions: the threads' combined, then (split merge) the parts'. *stop when this
 * context ends here. */
static pcbm_status round_combine(drive *dv, const pcbm_round *r, bool *stop, pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    pcbm_acc region[PCBM_MAX_REGIONS];
    memset(region, 0, sizeof region);
    unsigned n = r->regions ? r->regions(dv->state, mc, region) : 0;
    if (n == 0)
        return PCBM_OK;
    for (unsigned k = 0; k < n; k++)
        pcbm_acc_reduce_threads(&region[k], mc->threads);
    return mc->split ? split_exchange(dv, region, n, stop, err) : PCBM_OK;
}

/* The rounds of one range, from the method's first round to a finish that says done. */
static pcbm_status range_rounds(drive *dv, const pcbm_range *rg, bool *stop, pcbm_error *err)
{
    const pcbm_method_def *m = dv->m;
    pcbm_mctx *mc = dv->mc;
    mc->pass_no = 0;
    mc->passes_planned = m->passes_planned;
    int k = m->first_round ? m->first_round(dv->state, mc, rg) : 0;
    for (unsigned run = 0; k != PCBM_ROUND_DONE; run++) {
        if (k < 0 || (unsigned)k >= m->nrounds)
            return pcbm_fail(err, PCBM_ERR_INTERNAL, "%s: statistics round %d does not exist",
                             m->name, k);
        if (run >= MAX_ROUNDS_RUN)
            return pcbm_fail(err, PCBM_ERR_INTERNAL, "%s: more than %u statistics rounds",
                             m->name, MAX_ROUNDS_RUN);
        const pcbm_round *r = m->rounds[k];
        pcbm_status st = r->begin ? r->begin(dv->state, mc, rg, err) : PCBM_OK;
        if (st == PCBM_OK)
            st = round_pass(dv, r, rg, err);
        if (st == PCBM_OK)
            st = round_combine(dv, r, stop, err);
        if (st != PCBM_OK || *stop)
            return st;
        int next = r->finish(dv->state, mc, rg);
        if (next == PCBM_ROUND_NEXT)
            next = k + 1;
        else if (next >= 0 && next <= k)
            mc->passes_planned = 0; /* a fallback: the planned count no longer holds */
        k = next;
    }
    return PCBM_OK;
}

pcbm_status pcbm_rounds_range(pcbm_mctx *mc, const pcbm_method_def *m, void *state,
                              const pcbm_range *rg, pcbm_round_pass_fn pass,
                              pcbm_rounds_end *end, pcbm_error *err)
{
    drive dv = {mc, m, state, pass, PCBM_ROUNDS_DONE};
    bool stop = false;
    pcbm_status st = range_rounds(&dv, rg, &stop, err);
    *end = dv.end;
    return st;
}

/* ---- statistics of a range: rounds or replay, then the record ---- */

static pcbm_status replay_range(drive *dv, const pcbm_range *rg, bool *stop, pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    const pcbm_statset *in = mc->stats_in;
    if (mc->replay_pos >= in->nrec || in->rec[mc->replay_pos].d != rg->d)
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s does not fit this merge (record "
                         "%zu: %s); recompute them without `stats_in`", mc->o->stats_in,
                         mc->replay_pos, mc->replay_pos >= in->nrec ? "missing"
                                                                    : "different element count");
    const pcbm_statrec *rec = &in->rec[mc->replay_pos++];
    if (dv->m->recompute && dv->m->recompute(rec))
        return range_rounds(dv, rg, stop, err); /* per-row statistics are not recorded */
    dv->m->load(dv->state, mc->ntasks, rg, rec);
    return PCBM_OK;
}

static void set_how(drive *dv)
{
    pcbm_mctx *mc = dv->mc;
    if (dv->m->how)
        snprintf(mc->stats_how, sizeof mc->stats_how, "%s", mc->stats_in
                 ? "replayed from --stats" : dv->m->how(dv->state, mc->o));
}

static pcbm_status range_stats(drive *dv, const pcbm_range *rg, bool global, bool *stop,
                               pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    pcbm_status st = mc->stats_in ? replay_range(dv, rg, stop, err)
                                  : range_rounds(dv, rg, stop, err);
    if (st != PCBM_OK || *stop)
        return st;
    pcbm_statrec *rec = pcbm_statset_add(mc->stats_out);
    if (!rec)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory recording statistics");
    rec->d = rg->d;
    dv->m->save(dv->state, mc->ntasks, rec);
    set_how(dv);
    if (global && mc->stats_done)
        st = mc->stats_done(mc->stats_done_arg, err);
    return st;
}

/* ---- apply ---- */

static pcbm_status apply_range(drive *dv, const pcbm_range *rg, pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    if (!writes_output(mc))
        return PCBM_OK;
    mc->pass_no++;
    /* inputs are refused here when no statistics pass read them in this run (methods without
     * statistics, --stats, a resume or a split part's apply that loads the statistics) */
    mc->check_finite = (dv->m->apply_checks_finite || mc->stats_in) && !mc->o->allow_nonfinite;
    pcbm_status st = pcbm_tiles_pass(mc, PCBM_PASS_APPLY, rg->t0, rg->t1, 1, dv->m->apply,
                                     dv->state, err);
    mc->check_finite = 0;
    return st;
}

/* ---- scopes ---- */

/* One range over the whole model (global scope, and every method without statistics). */
static pcbm_status run_global(drive *dv, pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    pcbm_range rg = {0, mc->layout->nt, mc->layout->d};
    bool stop = false;
    if (dv->m->nrounds > 0 && rg.d > 0) {
        pcbm_status st = range_stats(dv, &rg, true, &stop, err);
        if (st != PCBM_OK || stop)
            return st;
    }
    if (dv->m->report)
        dv->m->report(dv->state, mc);
    return apply_range(dv, &rg, err);
}

/* Tensor scope: statistics and apply tensor by tensor; a split part computes the statistics of
 * its own tensors, and its apply skips the records of the others. */
static pcbm_status run_tensors(drive *dv, pcbm_error *err)
{
    pcbm_mctx *mc = dv->mc;
    pcbm_status st = PCBM_OK;
    size_t t0 = 0, t1 = 0;
    while (st == PCBM_OK && pcbm_next_range(mc->layout, &t0, &t1)) {
        pcbm_range rg = {t0, t1, pcbm_range_elems(mc->layout, t0, t1)};
        bool stop = false;
        if (rg.d > 0 && !part_owns_tensor(mc, t1 - 1)) {
            if (mc->stats_in)
                mc->replay_pos++; /* another part's record */
        } else if (rg.d > 0) {
            st = range_stats(dv, &rg, false, &stop, err);
            if (st != PCBM_OK || stop)
                return st;
        }
        if (part_touches(mc, t0, t1))
            st = apply_range(dv, &rg, err);
    }
    return st;
}

pcbm_status pcbm_method_run(pcbm_mctx *mc, pcbm_rounds_end *end, pcbm_error *err)
{
    drive dv = {mc, pcbm_method_for(mc->o), NULL, engine_pass, PCBM_ROUNDS_DONE};
    if (end)
        *end = PCBM_ROUNDS_DONE;
    if (!dv.m)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown merge method");
    pcbm_status st = dv.m->init ? dv.m->init(mc, &dv.state, err) : PCBM_OK;
    if (st != PCBM_OK)
        return st;
    mc->need_theta = dv.m->needs_theta;
    set_how(&dv);
    if (dv.m->nrounds == 0 || (mc->o->scope == PCBM_SCOPE_GLOBAL && !dv.m->per_tensor))
        st = run_global(&dv, err);
    else
        st = run_tensors(&dv, err);
    pcbm_collect_kept(mc);
    if (dv.m->free)
        dv.m->free(dv.state);
    if (end)
        *end = dv.end;
    return st;
}

pcbm_status pcbm_method_report_record(pcbm_mctx *mc, const pcbm_statrec *rec, pcbm_error *err)
{
    const pcbm_method_def *m = pcbm_method_for(mc->o);
    void *state = NULL;
    if (!m || m->nrounds == 0 || !m->report)
        return PCBM_OK;
    pcbm_status st = m->init ? m->init(mc, &state, err) : PCBM_OK;
    if (st != PCBM_OK)
        return st;
    pcbm_range rg = {0, mc->layout->nt, rec->d};
    m->load(state, mc->ntasks, &rg, rec);
    m->report(state, mc);
    if (m->free)
        m->free(state);
    return PCBM_OK;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cursor.c — the walk of a pass over the layout: which tensors it visits, the blocks of each (every
 * block, or for sample passes only those inside sampled units of PCBM_SAMPLE_UNIT elements), the
 * sample rule itself (pcbm_sample_count), and the blocks an apply pass skips after a resume.
 */
#include "cursor.h"

bool pcbm_walk_visits(const pcbm_walk *w, const pcbm_tlayout *t)
{
    if (t->out_file < w->file_lo || t->out_file >= w->file_hi)
        return false; /* another unit's tensor */
    return w->ps->kind == PCBM_PASS_APPLY || t->kind == PCBM_T_MERGE;
}

/* Sample units of tensor `ti` are PCBM_SAMPLE_UNIT elements; with stride s, a tensor of more
 * than s units contributes the units u with (u + ti) % s == 0, a smaller tensor its first unit.
 * The rule depends only on the layout and the stride, never on the block size or --mem. */
static bool unit_sampled(size_t ti, uint64_t nunits, uint64_t u, uint32_t stride)
{
    if (nunits <= stride)
        return u == 0;
    return (u + ti) % stride == 0;
}

uint64_t pcbm_sample_count(const pcbm_tlayout *t, size_t ti, uint32_t stride)
{
    if (stride <= 1)
        return t->units;
    uint64_t nunits = (t->units + PCBM_SAMPLE_UNIT - 1) / PCBM_SAMPLE_UNIT, n = 0;
    for (uint64_t u = 0; u < nunits; u++)
        if (unit_sampled(ti, nunits, u, stride))
            n += PCBM_MIN(PCBM_SAMPLE_UNIT, t->units - u * PCBM_SAMPLE_UNIT);
    return n;
}

/* The block after `from` (units) inside tensor c->t: every block, or for sample passes only the
 * blocks inside sampled units. */
static bool next_in_tensor(const pcbm_pass *ps, const pcbm_tlayout *t, pcbm_cursor *c, uint64_t from)
{
    uint32_t stride = ps->sample_stride > 1 ? ps->sample_stride : 1;
    if (stride == 1) {
        if (from >= t->units)
            return false;
        c->start = from;
        c->n = PCBM_MIN(t->block_units, t->units - from);
        return true;
    }
    uint64_t nunits = (t->units + PCBM_SAMPLE_UNIT - 1) / PCBM_SAMPLE_UNIT;
    for (uint64_t u = from / PCBM_SAMPLE_UNIT; u < nunits; u++) {
        if (!unit_sampled(c->t, nunits, u, stride))
            continue;
        uint64_t lo = PCBM_MAX(from, u * PCBM_SAMPLE_UNIT);
        uint64_t hi = PCBM_MIN((u + 1) * PCBM_SAMPLE_UNIT, t->units);
        if (lo >= hi)
            continue;
        c->start = lo;
        c->n = PCBM_MIN(t->block_units, hi - lo);
        return true;
    }
    return false;
}

/* Whether tensor t's output up to unit `end` lies before the resume point (kept). */
static bool kept(const pcbm_walk *w, const pcbm_tlayout *t, uint64_t end)
{
    return w->kept && w->kept(w->kept_arg, t->out_file, t->out_off + end * t->out_unit);
}

/* Advance to the next block the pass visits, from unit `from` of tensor c->t on. */
static bool advance(const pcbm_walk *w, pcbm_cursor *c, uint64_t from)
{
    const pcbm_pass *ps = w->ps;
    for (;;) {
        if (c->t >= ps->t1)
            return false;
        const pcbm_tlayout *t = &w->layout->t[c->t];
        if (pcbm_walk_visits(w, t) && next_in_tensor(ps, t, c, from)) {
            if (!(ps->kind == PCBM_PASS_APPLY && kept(w, t, c->start + c->n)))
                return true;
            from = c->start + c->n; /* output kept from the earlier run: not recomputed */
            continue;
        }
        c->t++;
        from = 0;
    }
}

bool pcbm_cursor_first(const pcbm_walk *w, pcbm_cursor *c)
{
    c->t = w->ps->t0;
    return advance(w, c, 0);
}

bool pcbm_cursor_next(const pcbm_walk *w, pcbm_cursor *c) { return advance(w, c, c->start + c->n); }

uint64_t pcbm_walk_total_bytes(const pcbm_walk *w)
{
    const pcbm_pass *ps = w->ps;
    uint64_t total = 0;
    for (size_t i = ps->t0; i < ps->t1; i++) {
        const pcbm_tlayout *t = &w->layout->t[i];
        if (!pcbm_walk_visits(w, t))
            continue;
        unsigned nin = t->kind == PCBM_T_MERGE ? w->layout->nmodels : 1;
        uint64_t n = pcbm_sample_count(t, i, ps->sample_stride);
        for (unsigned m = 0; m < nin; m++)
            total += n * t->in_unit[m];
    }
    return total;
}

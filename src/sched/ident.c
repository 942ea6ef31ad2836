/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident.c — the input identity table (ident.h): per-leaf xxh3 hashes summed into granules with
 * atomic adds, a countdown of leaves per granule, record-or-compare when a granule completes.
 * Passes never overlap (the engine joins its workers between passes), so a granule's countdown
 * and sums are reset by the worker that completes it, ready for the next pass.
 */
#include "ident.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pcbm_ident {
    const pcbm_layout *layout;
    unsigned nmodels;
    uint64_t ngran;
    uint64_t *g0;                 /* [nt]: first granule of each merged tensor */
    uint64_t *ref;                /* [nmodels * ngran] recorded values, 0 = none */
    _Atomic uint64_t *cur;        /* [nmodels * ngran] this pass's sums */
    _Atomic uint32_t *left;       /* [ngran] leaves this pass has not hashed yet */
    char origin[512];             /* who recorded ref (messages) */
};

static uint64_t tensor_granules(const pcbm_tlayout *t)
{
    return (t->units + PCBM_IDENT_GRANULE - 1) / PCBM_IDENT_GRANULE;
}

uint64_t pcbm_ident_granules(const pcbm_layout *p)
{
    uint64_t n = 0;
    for (size_t i = 0; i < p->nt; i++)
        if (p->t[i].kind == PCBM_T_MERGE)
            n += tensor_granules(&p->t[i]);
    return n;
}

uint64_t pcbm_ident_bytes(const pcbm_layout *p)
{
    /* reference and current sums, the copy a statistics file is read into and the one it is
     * written from, the countdowns, each tensor's first granule */
    return pcbm_ident_granules(p) * (p->nmodels * 4 * sizeof(uint64_t) + sizeof(uint32_t)) +
           p->nt * sizeof(uint64_t);
}

/* Leaves of granule g of tensor t (granule index relative to the tensor). */
static uint32_t granule_leaves(const pcbm_tlayout *t, uint64_t g)
{
    uint64_t a = g * PCBM_IDENT_GRANULE, b = PCBM_MIN(a + PCBM_IDENT_GRANULE, t->units);
    return (uint32_t)((b - a + PCBM_IDENT_LEAF - 1) / PCBM_IDENT_LEAF);
}

pcbm_status pcbm_ident_create(const pcbm_layout *p, pcbm_ident **out, pcbm_error *err)
{
    *out = NULL;
    pcbm_ident *id = pcbm_calloc(1, sizeof *id);
    if (!id)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    id->layout = p;
    id->nmodels = p->nmodels;
    id->ngran = pcbm_ident_granules(p);
    size_t nv = (size_t)(id->nmodels * id->ngran);
    id->g0 = pcbm_calloc(p->nt ? p->nt : 1, sizeof *id->g0);
    id->ref = pcbm_calloc(nv ? nv : 1, sizeof *id->ref);
    id->cur = pcbm_calloc(nv ? nv : 1, sizeof *id->cur);
    id->left = pcbm_calloc(id->ngran ? id->ngran : 1, sizeof *id->left);
    if (!id->g0 || !id->ref || !id->cur || !id->left) {
        pcbm_ident_free(id);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for the input identity table");
    }
    uint64_t g = 0;
    for (size_t i = 0; i < p->nt; i++) {
        const pcbm_tlayout *t = &p->t[i];
        if (t->kind != PCBM_T_MERGE)
            continue;
        id->g0[i] = g;
        for (uint64_t k = 0; k < tensor_granules(t); k++)
            atomic_init(&id->left[g + k], granule_leaves(t, k));
        g += tensor_granules(t);
    }
    snprintf(id->origin, sizeof id->origin, "the statistics pass of this merge read it");
    *out = id;
    return PCBM_OK;
}

void pcbm_ident_free(pcbm_ident *id)
{
    if (!id)
        return;
    free(id->g0);
    free(id->ref);
    free((void *)id->cur);
    free((void *)id->left);
    free(id);
}

static pcbm_status changed(const pcbm_ident *id, const pcbm_tlayout *t, unsigned m, uint64_t gt,
                           pcbm_error *err)
{
    const pcbm_model *md = id->layout->models[m];
    const pcbm_tsrc *src = &t->src[m];
    uint64_t e0 = gt * PCBM_IDENT_GRANULE, e1 = PCBM_MIN(e0 + PCBM_IDENT_GRANULE, t->units);
    uint64_t b0 = src->off + e0 * t->in_unit[m], b1 = src->off + e1 * t->in_unit[m];
    char who[32];
    if (m)
        snprintf(who, sizeof who, "task model %u", m);
    else
        snprintf(who, sizeof who, "the base");
    return pcbm_fail(err, PCBM_ERR_STATS,
                     "%s %s changed: bytes %llu-%llu of %s (tensor %s, elements %llu-%llu) are "
                     "not what %s; the merge stops so that its output is not a mix of two "
                     "versions of the file: once the inputs are final, run the merge again from "
                     "the start (with `force`, without `resume` or saved statistics `stats_in`)",
                     who, pcbm_model_path(md), (unsigned long long)b0, (unsigned long long)b1,
                     md->files[src->file].path, t->name, (unsigned long long)e0,
                     (unsigned long long)e1, id->origin);
}

/* Granule g (gt inside tensor t) has all its leaves: record or compare, then reset it. */
static pcbm_status complete(pcbm_ident *id, const pcbm_tlayout *t, uint64_t g, uint64_t gt,
                            pcbm_error *err)
{
    pcbm_status st = PCBM_OK;
    for (unsigned m = 0; m < id->nmodels; m++) {
        uint64_t v = atomic_exchange_explicit(&id->cur[m * id->ngran + g], 0,
                                              memory_order_relaxed);
        uint64_t *r = &id->ref[m * id->ngran + g];
        if (*r == 0)
            *r = v;
        else if (*r != v && st == PCBM_OK)
            st = changed(id, t, m, gt, err);
    }
    atomic_store_explicit(&id->left[g], granule_leaves(t, gt), memory_order_relaxed);
    return st;
}

pcbm_status pcbm_ident_block(pcbm_ident *id, const pcbm_blockview *bv, pcbm_error *err)
{
    const pcbm_tlayout *t = bv->t;
    uint64_t end = bv->start + bv->n;
    if (bv->start % PCBM_IDENT_LEAF || (bv->n % PCBM_IDENT_LEAF && end != t->units))
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "block %llu+%u of tensor %s is not cut at "
                         "%u-element leaves", (unsigned long long)bv->start, bv->n, t->name,
                         PCBM_IDENT_LEAF);
    pcbm_status st = PCBM_OK;
    for (uint64_t a = bv->start; a < end;) {
        uint64_t gt = a / PCBM_IDENT_GRANULE;
        uint64_t b = PCBM_MIN(end, (gt + 1) * PCBM_IDENT_GRANULE);
        uint64_t g = id->g0[bv->tensor] + gt;
        for (unsigned m = 0; m < id->nmodels; m++) {
            const uint8_t *base = (const uint8_t *)bv->in[m];
            unsigned u = t->in_unit[m];
            if (!base || !u) /* a source without bytes (an adapter's ΔW, PCBM_SRC_NONE) */
                continue;
            uint64_t sum = 0;
            for (uint64_t e = a; e < b; e += PCBM_IDENT_LEAF) {
                uint64_t n = PCBM_MIN(PCBM_IDENT_LEAF, b - e);
                sum += XXH3_64bits_withSeed(base + (e - bv->start) * u, (size_t)(n * u),
                                            e / PCBM_IDENT_LEAF);
            }
            atomic_fetch_add_explicit(&id->cur[m * id->ngran + g], sum, memory_order_relaxed);
        }
        uint32_t leaves = (uint32_t)((b - a + PCBM_IDENT_LEAF - 1) / PCBM_IDENT_LEAF);
        if (atomic_fetch_sub_explicit(&id->left[g], leaves, memory_order_acq_rel) == leaves) {
            pcbm_status cst = complete(id, t, g, gt, err);
            if (st == PCBM_OK)
                st = cst;
        }
        a = b;
    }
    return st;
}

pcbm_status pcbm_ident_load(pcbm_ident *id, const uint64_t *ref, unsigned nmodels, uint64_t ngran,
                            const char *origin, pcbm_error *err)
{
    if (nmodels != id->nmodels || ngran != id->ngran)
        return pcbm_fail(err, PCBM_ERR_STATS, "%s: the input identity table has %llu granules "
                         "of %u models, this merge %llu of %u: compute the statistics again",
                         origin, (unsigned long long)ngran, nmodels,
                         (unsigned long long)id->ngran, id->nmodels);
    for (uint64_t k = 0; k < (uint64_t)nmodels * ngran; k++)
        if (ref[k])
            id->ref[k] = ref[k];
    snprintf(id->origin, sizeof id->origin, "%s", origin);
    return PCBM_OK;
}

const uint64_t *pcbm_ident_ref(const pcbm_ident *id, uint64_t *ngran)
{
    *ngran = id ? id->ngran : 0;
    return id ? id->ref : NULL;
}

bool pcbm_ident_any(const pcbm_ident *id)
{
    for (uint64_t k = 0; id && k < (uint64_t)id->nmodels * id->ngran; k++)
        if (id->ref[k])
            return true;
    return false;
}

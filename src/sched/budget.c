/* SPDX-License-Identifier: Apache-2.0 */
/*
 * budget.c — buffer sizing from --mem: blocks of about TARGET_BLOCK_BYTES per model, halved until
 * a block set per worker thread plus two fit beside the output staging and what the methods
 * reserved (statistics, scratch); pcbm_engine_min_mem is the smallest budget that works.
 */
#include "budget.h"
#include "ident.h"
#include "../writer/stream.h"

#include <string.h>

#define TARGET_BLOCK_BYTES (4u << 20)  /* per model per block, when memory allows */
#define MIN_BLOCK_ELEMS 4096u          /* below this, per-block overhead dominates */

static uint64_t max_out_unit(const pcbm_layout *p)
{
    uint64_t u = p->max_in_unit;
    for (size_t i = 0; i < p->nt; i++)
        if (p->t[i].kind != PCBM_T_RAW && p->t[i].out_unit > u)
            u = p->t[i].out_unit;
    return u;
}

static uint64_t slot_bytes(const pcbm_layout *p, uint64_t elems, uint64_t *cap_in, uint64_t *cap_out)
{
    uint64_t ci = elems * p->max_in_unit + 2 * PCBM_ALIGN;
    uint64_t co = pcbm_align_up(elems * max_out_unit(p), PCBM_ALIGN);
    if (cap_in)
        *cap_in = ci;
    if (cap_out)
        *cap_out = co;
    return ci * pcbm_layout_reading_models(p) + co; /* adapters' task tensors read nothing */
}

static uint64_t stage_bytes(uint64_t chunk_size) { return chunk_size * PCBM_OSTREAM_CHUNKS; }

static uint64_t chunk_for(const pcbm_layout *p, uint64_t elems)
{
    return pcbm_ostream_chunk_size(elems * max_out_unit(p));
}

/* Memory for nslots block sets of `elems` elements plus the output staging and `reserved`. */
static uint64_t need_for(const pcbm_layout *p, uint64_t elems, unsigned nslots, uint64_t reserved)
{
    return reserved + stage_bytes(chunk_for(p, elems)) +
           (uint64_t)nslots * slot_bytes(p, elems, NULL, NULL);
}

uint64_t pcbm_engine_min_mem(const pcbm_layout *layout, unsigned threads, uint64_t reserved)
{
    return need_for(layout, MIN_BLOCK_ELEMS, threads + 2, reserved);
}

static pcbm_status too_small(const pcbm_layout *p, const pcbm_engine_cfg *cfg, uint64_t elems,
                             pcbm_error *err)
{
    char have[32], need[32];
    /* a fixed --block-size needs two block sets of that size; otherwise the smallest blocks and a
     * block set per thread plus two */
    uint64_t min = cfg->block_bytes ? need_for(p, elems, 2, cfg->reserved_bytes)
                                    : pcbm_engine_min_mem(p, cfg->threads, cfg->reserved_bytes);
    return pcbm_fail(err, PCBM_ERR_NOMEM,
                     "`mem_bytes` %s is too small for %u models with %u threads: at least %s "
                     "is needed (%s of it for statistics, tensor tables and working buffers); raise "
                     "`mem_bytes` or lower "
                     "`threads`",
                     pcbm_fmt_bytes(cfg->mem_bytes, have, sizeof have), p->nmodels, cfg->threads,
                     pcbm_fmt_bytes(min, need, sizeof need),
                     pcbm_fmt_bytes(cfg->reserved_bytes, (char[32]){0}, 32));
}

uint64_t pcbm_budget_max_block_elems(const pcbm_layout *p, uint64_t block_bytes)
{
    uint64_t elems = (block_bytes ? block_bytes : TARGET_BLOCK_BYTES) / p->max_in_unit;
    /* whole leaves of the input identity table (sched/ident.h); the automatic size is a power of
     * two, halved below, so it stays a multiple */
    return PCBM_MAX(elems / PCBM_IDENT_LEAF * PCBM_IDENT_LEAF, MIN_BLOCK_ELEMS);
}

pcbm_status pcbm_budget_size(const pcbm_layout *p, const pcbm_engine_cfg *cfg, pcbm_budget *b,
                             pcbm_error *err)
{
    memset(b, 0, sizeof *b);
    unsigned want_min = cfg->threads + 2;
    uint64_t elems = pcbm_budget_max_block_elems(p, cfg->block_bytes);
    uint64_t avail = cfg->mem_bytes > cfg->reserved_bytes ? cfg->mem_bytes - cfg->reserved_bytes
                                                          : 0;
    for (;;) {
        uint64_t csize = chunk_for(p, elems);
        uint64_t sb = slot_bytes(p, elems, &b->cap_in, &b->cap_out);
        uint64_t rest = avail > stage_bytes(csize) ? avail - stage_bytes(csize) : 0;
        uint64_t n = rest / sb;
        if (n >= want_min || (cfg->block_bytes && n >= 2)) {
            b->nslots = (unsigned)PCBM_MIN(n, PCBM_MAX_SLOTS);
            b->chunk_bytes = csize;
            break;
        }
        if (elems / 2 < MIN_BLOCK_ELEMS || cfg->block_bytes)
            return too_small(p, cfg, elems, err);
        elems /= 2;
    }
    b->block_elems = elems;
    b->buffer_bytes = (uint64_t)b->nslots * slot_bytes(p, elems, NULL, NULL) +
                      stage_bytes(b->chunk_bytes);
    return PCBM_OK;
}

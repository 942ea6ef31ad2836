/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident.h — the input identity table: what every full pass read of every merged tensor, so that a
 * later pass (the apply pass, a resumed run, a split part, a replay of saved statistics) notices
 * an input that changed in between. A tensor is cut into granules of PCBM_IDENT_GRANULE elements
 * (tensor-relative, the last one shorter), a granule into leaves of PCBM_IDENT_LEAF elements; a
 * leaf is hashed with xxh3-64 seeded by its index and a granule's value is the sum (mod 2^64) of
 * its leaves' hashes: independent of the block cut, the thread count and the completion order.
 * The first full pass that completes a granule records it; every later one compares. 0 means
 * "not recorded" (a sum that is 0 by chance is simply not checked).
 */
#ifndef PCBM_IDENT_H
#define PCBM_IDENT_H

#include "engine.h"

#define PCBM_IDENT_LEAF 4096u           /* elements per hashed leaf (blocks are multiples of it) */
#define PCBM_IDENT_GRANULE (1u << 20)   /* elements per compared granule */

typedef struct pcbm_ident pcbm_ident;

/* Granules of one model for this layout (every merged tensor's). */
uint64_t pcbm_ident_granules(const pcbm_layout *p);
/* Bytes the table and its copies in statistics files take (counted against --mem). */
uint64_t pcbm_ident_bytes(const pcbm_layout *p);

pcbm_status pcbm_ident_create(const pcbm_layout *p, pcbm_ident **out, pcbm_error *err);
void pcbm_ident_free(pcbm_ident *id);

/* Worker hook of a full pass over a merged tensor's block: hash its leaves of every model and
 * record or compare each granule it completes. A mismatch fails with PCBM_ERR_STATS naming the
 * model, file, byte range and tensor. */
pcbm_status pcbm_ident_block(pcbm_ident *id, const pcbm_blockview *bv, pcbm_error *err);

/* Reference values saved elsewhere (statistics file, a split part's table): nmodels * ngran
 * values, model after model; zeros are not loaded. `origin` says in messages where they were
 * computed ("the statistics in FILE"). Fails when the table does not fit this layout. */
pcbm_status pcbm_ident_load(pcbm_ident *id, const uint64_t *ref, unsigned nmodels, uint64_t ngran,
                            const char *origin, pcbm_error *err);
/* The recorded values (nmodels * ngran, model after model; 0 = not recorded), or NULL. */
const uint64_t *pcbm_ident_ref(const pcbm_ident *id, uint64_t *ngran);
/* Whether any value is recorded. */
bool pcbm_ident_any(const pcbm_ident *id);

#endif /* PCBM_IDENT_H */

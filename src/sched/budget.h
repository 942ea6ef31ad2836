/* SPDX-License-Identifier: Apache-2.0 */
/*
 * budget.h — sizing the engine's buffers from --mem: the block size, the number of block sets in
 * flight (slots) and the output staging buffers. Nothing the engine allocates later grows with
 * the model; a budget too small is refused with the minimum that would do.
 */
#ifndef PCBM_BUDGET_H
#define PCBM_BUDGET_H

#include "engine.h"

#define PCBM_MAX_SLOTS 128u            /* block sets in flight (reading, computing, writing) */

typedef struct pcbm_budget {
    uint64_t block_elems;      /* elements per block (RAW tensors: that many max_in_unit bytes) */
    unsigned nslots;           /* block sets in flight */
    uint64_t cap_in, cap_out;  /* bytes of a slot's read buffer (each model) and output buffer */
    uint64_t chunk_bytes;      /* bytes of each output staging buffer */
    uint64_t buffer_bytes;     /* slot + staging buffers */
} pcbm_budget;

/* Size the buffers for layout p under cfg (mem_bytes, reserved_bytes, threads >= 1, block_bytes).
 * Fails with PCBM_ERR_NOMEM naming the minimum --mem when the budget is too small. */
pcbm_status pcbm_budget_size(const pcbm_layout *p, const pcbm_engine_cfg *cfg, pcbm_budget *b,
                             pcbm_error *err);

/* The most elements a block of layout p can have with this --block-size (0: automatic), before
 * the budget is known: what buffers sized per block must allow for. */
uint64_t pcbm_budget_max_block_elems(const pcbm_layout *p, uint64_t block_bytes);

#endif /* PCBM_BUDGET_H */

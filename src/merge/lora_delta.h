/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lora_delta.h — LoRA adapter tasks in the tile passes (lora_delta.c): a tensor's factors read
 * into a worker's cache, and ΔW = scale · P · Q formed for a tile.
 */
#ifndef PCBM_LORA_DELTA_H
#define PCBM_LORA_DELTA_H

#include "../sched/layout.h"

#define PCBM_LORA_CHUNK 16384u /* factor elements read and decoded at a time */
/* Floats of a worker's read buffer (raw bytes, then decoded values). */
#define PCBM_LORA_RAW_FLOATS (2u * PCBM_LORA_CHUNK)

/* Floats of the cache of factors L: P [rows, r] then Q [r, cols]. */
static inline uint64_t pcbm_lora_cache_floats(const pcbm_tlora *L)
{
    return (uint64_t)L->r * (L->rows + L->cols);
}
/* Read adapter m's factors of tensor t into cache (decoded to float32, transposed where needed),
 * through raw (PCBM_LORA_RAW_FLOATS floats); *bytes: what was read from the file. */
pcbm_status pcbm_lora_load(const pcbm_layout *p, const pcbm_tlayout *t, unsigned m, float *cache,
                           float *raw, uint64_t *bytes, pcbm_error *err);
/* tau[k] = ΔW at element start + k (the tile pass adds θ_pre and subtracts it again: a task's
 * τ is its materialized float32 fine-tune's), for n elements: scale · Σ_{j=0..r-1} P[row][j] · Q[j][col],
 * summed in float32 in that order (0 when L->r == 0). */
void pcbm_lora_delta(const pcbm_tlora *L, const float *cache, uint64_t start, float *tau,
                     unsigned n);

#endif /* PCBM_LORA_DELTA_H */

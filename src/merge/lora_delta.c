/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lora_delta.c — a LoRA adapter's task vector inside the tile passes. The factors of the tensor a
 * block belongs to are read with pread on the worker thread into the worker's cache (counted in
 * the scratch that `mem_bytes` covers; kept while the worker stays on that tensor), decoded to
 * float32 as P [rows, r] and Q [r, cols]; ΔW is formed per tile with a fixed summation order
 * (j = 0 .. r-1, float32, no contraction), so every element's bits are the same for any block
 * cut, thread count, backend or CPU. ΔW is never written to disk.
 */
#include "lora_delta.h"

#include "../kernels/convert.h"
#include "../kernels/mkern.h"

#include <string.h>

static unsigned elem_size(pcbm_dtype dt) { return pcbm_dtype_bits(dt) / 8; }

static pcbm_status read_all(const pcbm_layout *p, unsigned m, const char *name, void *buf,
                            uint64_t len, uint64_t off, pcbm_error *err)
{
    uint64_t done;
    int rc = pcbm_pread_full(p->lfd[m], buf, len, off, &done);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "%s: reading the LoRA factors of %s at byte %llu "
                         "failed: %s; check the file", p->models[m]->files[0].path, name,
                         (unsigned long long)(off + done),
                         rc > 0 ? strerror(rc) : "the file is shorter than its header says");
    return PCBM_OK;
}

/* A factor stored [d0, d1] (row-major, dtype dt, at off) into dst as float32: as it is, or
 * transposed into [d1, d0]. */
static pcbm_status load_factor(const pcbm_layout *p, const pcbm_tlayout *t, unsigned m,
                               pcbm_dtype dt, uint64_t off, uint64_t d0, uint64_t d1,
                               bool transpose, float *dst, float *raw, pcbm_error *err)
{
    uint64_t total = d0 * d1;
    unsigned es = elem_size(dt);
    float *dec = raw + PCBM_LORA_CHUNK;
    for (uint64_t done = 0; done < total; done += PCBM_LORA_CHUNK) {
        uint64_t cnt = PCBM_MIN((uint64_t)PCBM_LORA_CHUNK, total - done);
        pcbm_status st = read_all(p, m, t->name, raw, cnt * es, off + done * es, err);
        if (st != PCBM_OK)
            return st;
        if (!transpose) {
            pcbm_decode_f32(dt, raw, dst + done, cnt);
            continue;
        }
        pcbm_decode_f32(dt, raw, dec, cnt);
        for (uint64_t k = 0; k < cnt; k++) {
            uint64_t e = done + k;
            dst[(e % d1) * d0 + e / d1] = dec[k];
        }
    }
    return PCBM_OK;
}

pcbm_status pcbm_lora_load(const pcbm_layout *p, const pcbm_tlayout *t, unsigned m, float *cache,
                           float *raw, uint64_t *bytes, pcbm_error *err)
{
    const pcbm_tlora *L = &t->lora[m];
    float *P = cache, *Q = cache + L->rows * L->r;
    pcbm_status st;
    if (!L->transposed) { /* P = B [rows, r], Q = A [r, cols] */
        st = load_factor(p, t, m, L->b_dt, L->b_off, L->rows, L->r, false, P, raw, err);
        if (st == PCBM_OK)
            st = load_factor(p, t, m, L->a_dt, L->a_off, L->r, L->cols, false, Q, raw, err);
    } else { /* A [r, rows] -> P = Aᵀ; B [cols, r] -> Q = Bᵀ */
        st = load_factor(p, t, m, L->a_dt, L->a_off, L->r, L->rows, true, P, raw, err);
        if (st == PCBM_OK)
            st = load_factor(p, t, m, L->b_dt, L->b_off, L->cols, L->r, true, Q, raw, err);
    }
    /* both factors, whichever way they are stored: r * (rows + cols) elements */
    unsigned pe = elem_size(L->transposed ? L->a_dt : L->b_dt),
             qe = elem_size(L->transposed ? L->b_dt : L->a_dt);
    *bytes = st == PCBM_OK ? L->r * (L->rows * pe + L->cols * qe) : 0;
    return st;
}

void pcbm_lora_delta(const pcbm_tlora *L, const float *cache, uint64_t start, float *tau,
                     unsigned n)
{
    if (L->r == 0) {
        memset(tau, 0, (size_t)n * sizeof *tau);
        return;
    }
    const uint32_t r = L->r;
    const float *P = cache, *Q = cache + L->rows * r;
    uint64_t row = start / L->cols, c = start % L->cols;
    for (unsigned k = 0; k < n; row++, c = 0) {
        unsigned run = (unsigned)PCBM_MIN((uint64_t)(n - k), L->cols - c);
        float *acc = tau + k;
        const float *prow = P + row * r;
        for (unsigned j = 0; j < run; j++)
            acc[j] = 0.0f;
        /* element by element the sum runs j = 0 .. r-1; vectorizing across columns keeps it */
        for (uint32_t q = 0; q < r; q++) /* element-wise: the same bits for any vector width */
            pcbm_k_axpy(acc, prow[q], Q + (uint64_t)q * L->cols + c, run);
        for (unsigned j = 0; j < run; j++)
            acc[j] *= L->scale;
        k += run;
    }
}

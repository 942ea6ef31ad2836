/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dequant.c — FP8 sources inside the tile passes: the block scales a block needs, read from the
 * model's scale tensor (sched/quant.c describes it) into the worker's scratch, and their
 * application to decoded values: x = fp8(w) · scale[row / br][col / bc], in float32. The scales
 * of a block are a few hundred bytes, read with pread on the worker thread (the page cache
 * keeps them after the first pass); the same bytes for every block cut, thread and backend.
 */
#include "dequant.h"

#include "../kernels/convert.h"

#include <string.h>

pcbm_status pcbm_dequant_load(const pcbm_layout *p, const pcbm_tlayout *t, unsigned m,
                              uint64_t start, uint64_t n, float *buf, uint64_t cap,
                              uint64_t *srow0, pcbm_error *err)
{
    const pcbm_tquant *q = &t->q[m];
    uint64_t s0 = start / q->cols / q->br, s1 = (start + n - 1) / q->cols / q->br;
    uint64_t cnt = (s1 - s0 + 1) * q->scols;
    if (cnt > cap)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "tensor %s: %llu block scales for one block, "
                         "room for %llu", t->name, (unsigned long long)cnt, (unsigned long long)cap);
    unsigned es = pcbm_dtype_bits(q->scale_dt) / 8;
    /* raw bytes after the cnt floats (the scratch holds 2 * cap floats), then decoded in front */
    unsigned char *raw = (unsigned char *)(buf + cap);
    uint64_t off = q->scale_off + s0 * q->scols * es, len = cnt * es, done;
    int rc = pcbm_pread_full(p->qfd[m][q->scale_file], raw, len, off, &done);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "%s: reading the block scales of %s at byte %llu "
                         "failed: %s; check the file", p->models[m]->files[q->scale_file].path,
                         t->name, (unsigned long long)(off + done),
                         rc > 0 ? strerror(rc) : "the file is shorter than its header says");
    pcbm_decode_f32(q->scale_dt, raw, buf, cnt);
    *srow0 = s0;
    return PCBM_OK;
}

void pcbm_dequant_apply(const pcbm_tquant *q, const float *scales, uint64_t srow0, uint64_t start,
                        float *x, unsigned n)
{
    uint64_t r = start / q->cols, c = start % q->cols;
    for (unsigned k = 0; k < n; r++, c = 0) {
        const float *srow = scales + (r / q->br - srow0) * q->scols;
        unsigned run = (unsigned)PCBM_MIN((uint64_t)(n - k), q->cols - c);
        for (unsigned j = 0; j < run; j++)
            x[k + j] = x[k + j] * srow[(c + j) / q->bc];
        k += run;
    }
}

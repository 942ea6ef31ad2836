/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dequant.h — FP8 sources in the tile passes (dequant.c): loading a block's scales and applying
 * them to decoded values.
 */
#ifndef PCBM_DEQUANT_H
#define PCBM_DEQUANT_H

#include "../sched/layout.h"

/* Read the scale rows that elements [start, start + n) of tensor t need for model m into buf
 * (which holds 2 * cap floats); *srow0 is the first scale row read. */
pcbm_status pcbm_dequant_load(const pcbm_layout *p, const pcbm_tlayout *t, unsigned m,
                              uint64_t start, uint64_t n, float *buf, uint64_t cap,
                              uint64_t *srow0, pcbm_error *err);
/* x[k] *= the scale of element start + k, for n decoded values. */
void pcbm_dequant_apply(const pcbm_tquant *q, const float *scales, uint64_t srow0, uint64_t start,
                        float *x, unsigned n);

#endif /* PCBM_DEQUANT_H */

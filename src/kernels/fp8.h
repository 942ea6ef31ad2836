/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fp8.h — 8-bit float (F8_E4M3, F8_E5M2) decoding to float32 (exact). Block scales are applied
 * by the merge's dequantization (merge/dequant.c), not here.
 */
#ifndef PCBM_FP8_H
#define PCBM_FP8_H

#include "../common/common.h"

/* Decode n F8_E4M3 or F8_E5M2 bytes into float32. */
void pcbm_fp8_decode(pcbm_dtype dt, const void *src, float *dst, size_t n);

#endif /* PCBM_FP8_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * convert.h — decoding stored elements (BF16, F16, F32) to float32 exactly and encoding float32
 * back with round-to-nearest-even (NaN stays NaN). Array forms are used by the merge kernels;
 * every code path (scalar, AVX2, AVX-512) gives bit-identical results.
 */
#ifndef PCBM_CONVERT_H
#define PCBM_CONVERT_H

#include "../common/common.h"

/* Decode n elements of dtype dt (F32/F16/BF16 exactly; F64 rounded to nearest; F8_E4M3/F8_E5M2
 * exactly, without their block scales) from src (any alignment) into dst. */
void pcbm_decode_f32(pcbm_dtype dt, const void *src, float *dst, size_t n);
/* Encode n float32 values into dtype dt (F32/F16/BF16 rounded to nearest even; F64 exactly) at
 * dst (any alignment). */
void pcbm_encode_f32(pcbm_dtype dt, const float *src, void *dst, size_t n);

#endif /* PCBM_CONVERT_H */

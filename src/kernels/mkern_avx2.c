/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mkern_avx2.c — the merge kernels (mkern_body.inc) compiled for AVX2 + FMA + F16C. No FMA is
 * ever emitted for a float expression: the build uses -ffp-contract=off and the kernels spell
 * every multiply and add as its own intrinsic.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,popcnt")
#endif
#define PCBM_SIMD_AVX2 1
#include "simd_x86.h"
#define KFN(name) name##_avx2
#define KTABLE pcbm_kern_avx2
#include "mkern_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int pcbm_mkern_avx2_unused;
#endif

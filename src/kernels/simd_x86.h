/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simd_x86.h — the small vector vocabulary the merge kernels (mkern_body.inc) are written in,
 * for one instruction set per translation unit: define PCBM_SIMD_AVX2 or PCBM_SIMD_AVX512 before
 * including it (mkern_avx2.c, mkern_avx512.c). Every operation has the exact meaning of the C
 * expression named next to it, lane by lane, so a kernel written with them gives the bits of the
 * scalar definition (mkern.c): IEEE single operations without contraction, comparisons that are
 * false on NaN like C's, and min/max with the operand order of x86's minps/maxps (a < b ? a : b),
 * from which glibc's fminf/fmaxf are built where a NaN may occur.
 */
#ifndef PCBM_SIMD_X86_H
#define PCBM_SIMD_X86_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "dmath_simd.h"

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(PCBM_SIMD_AVX512)
/* ---------------------------------------------------------------------------------------------
 * AVX-512 (F, BW, DQ, VL): 16 lanes, masks in k registers
 * ------------------------------------------------------------------------------------------- */
#define VW 16
#define VINL static inline __attribute__((always_inline))
typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vm;

VINL vf vload(const float *p) { return _mm512_loadu_ps(p); }
VINL void vstore(float *p, vf v) { _mm512_storeu_ps(p, v); }
VINL vf vset1(float x) { return _mm512_set1_ps(x); }
VINL vf vzero(void) { return _mm512_setzero_ps(); }
VINL vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
VINL vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
VINL vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
VINL vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
VINL vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }   /* a < b ? a : b */
VINL vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }   /* a > b ? a : b */
VINL vi vbits(vf a) { return _mm512_castps_si512(a); }
VINL vf vfloat(vi a) { return _mm512_castsi512_ps(a); }
VINL vf vabs(vf a) { return vfloat(_mm512_and_si512(vbits(a), _mm512_set1_epi32(0x7fffffff))); }
VINL vf vneg(vf a) { return vfloat(_mm512_xor_si512(vbits(a), _mm512_set1_epi32((int)0x80000000u))); }
VINL vm vgt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
VINL vm vlt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
VINL vm vge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
VINL vm vle(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
VINL vm visnan(vf a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
VINL vm vm_and(vm a, vm b) { return (vm)(a & b); }
VINL vm vm_or(vm a, vm b) { return (vm)(a | b); }
VINL vm vm_andnot(vm a, vm b) { return (vm)(~a & b); }   /* !a && b */
VINL vm vm_none(void) { return 0; }
VINL unsigned vm_bits(vm m) { return (unsigned)m; }
VINL vf vsel(vm m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }   /* m ? t : f */
VINL bool vm_full(vm m) { return m == 0xffff; }
VINL vf vexp(vf x) { return expf16_avx512(x); }
VINL vf vexp_inrange(vf x) { return expf16_avx512_inrange(x); }
VINL vf vexp_nonneg(vf x) { return expf16_avx512_nonneg(x); }
VINL vf vtanh(vf x) { return tanhf16_avx512(x); }
VINL vf vtanh_small(vf x) { return tanhf16_avx512_small(x); }
/* pcbm_fkey: (u & sign) ? ~u : u | sign */
VINL vi vkey(vf x)
{
    vi u = vbits(x);
    return _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31),
                                               _mm512_set1_epi32((int)0x80000000u)));
}
VINL void vstore_u32(uint32_t *p, vi v) { _mm512_storeu_si512((void *)p, v); }
VINL vi vld_u32(const uint32_t *p) { return _mm512_loadu_si512((const void *)p); }
VINL vi vkey_top(vi key) { return _mm512_srli_epi32(key, 16); }          /* key >> 16 */
VINL vi vsignbit(vf x) { return _mm512_srli_epi32(vbits(x), 31); }
VINL vm vi_eq(vi a, uint32_t b) { return _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32((int)b)); }
VINL vm vi_lt(vi a, uint32_t b) { return _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32((int)b)); }
VINL vm vi_le(vi a, uint32_t b) { return _mm512_cmple_epu32_mask(a, _mm512_set1_epi32((int)b)); }
/* lane counters: acc + 1 in the lanes of m; the sum of the lanes */
VINL vi vi_count(vi acc, vm m) { return _mm512_mask_sub_epi32(acc, m, acc, _mm512_set1_epi32(-1)); }
VINL uint64_t vi_hsum(vi a) { return (uint32_t)_mm512_reduce_add_epi32(a); }
VINL vi vi_zero(void) { return _mm512_setzero_si512(); }
VINL vi vi_or1(vi a, uint32_t b) { return _mm512_or_si512(a, _mm512_set1_epi32((int)b)); }
/* exponent all ones: Inf or NaN */
VINL vm vnonfinite(vf x)
{
    vi e = _mm512_and_si512(vbits(x), _mm512_set1_epi32(0x7f800000));
    return _mm512_cmpeq_epi32_mask(e, _mm512_set1_epi32(0x7f800000));
}
/* Decoding (exact) and encoding (round to nearest even) as convert.c does it. */
VINL vf vload_bf16(const void *p)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return vfloat(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
VINL vf vload_f16(const void *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
VINL vf vload_f32(const void *p) { return _mm512_loadu_ps(p); }
/* store the lanes of v selected by m, in order, at dst (which has room for 16); returns how many */
VINL unsigned vcompress_u32(uint32_t *dst, vm m, vi v)
{
    _mm512_storeu_si512((void *)dst, _mm512_maskz_compress_epi32(m, v));
    return (unsigned)__builtin_popcount((unsigned)m);
}
/* the first popcount(m) floats of src, in order, at the set lanes of m; 0 elsewhere (src: room
 * for 16) */
VINL vf vexpand(vm m, const float *src) { return _mm512_maskz_expand_ps(m, _mm512_loadu_ps(src)); }
/* Gates (mkern_impl.h): 32 levels, one two-table permute. */
#define VGATE_LEVELS 32u
VINL vi vgate_level(vf a, vf scale)
{
    return _mm512_min_epu32(_mm512_cvttps_epi32(vmul(a, scale)), _mm512_set1_epi32(VGATE_LEVELS - 1));
}
VINL vf vgate_lut(vf t0, vf t1, vi level) { return _mm512_permutex2var_ps(t0, level, t1); }
VINL vi vi_iota(uint32_t k)
{
    return _mm512_add_epi32(_mm512_set1_epi32((int)k),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}
/* (a - b) >> sh, unsigned */
VINL vi vi_sub_srl(vi a, uint32_t b, unsigned sh)
{
    return _mm512_srl_epi32(_mm512_sub_epi32(a, _mm512_set1_epi32((int)b)), _mm_cvtsi32_si128((int)sh));
}
/* lanes whose byte p[j] is not 0 */
VINL vm vnonzero_u8(const uint8_t *p)
{
    __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm512_test_epi32_mask(b, b);
}

#elif defined(PCBM_SIMD_AVX2)
/* ---------------------------------------------------------------------------------------------
 * AVX2 + F16C: 8 lanes, masks as all-ones / all-zeros lanes
 * ------------------------------------------------------------------------------------------- */
#define VW 8
#define VINL static inline __attribute__((always_inline))
typedef __m256 vf;
typedef __m256i vi;
typedef __m256 vm;

VINL vf vload(const float *p) { return _mm256_loadu_ps(p); }
VINL void vstore(float *p, vf v) { _mm256_storeu_ps(p, v); }
VINL vf vset1(float x) { return _mm256_set1_ps(x); }
VINL vf vzero(void) { return _mm256_setzero_ps(); }
VINL vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
VINL vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
VINL vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
VINL vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
VINL vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
VINL vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
VINL vi vbits(vf a) { return _mm256_castps_si256(a); }
VINL vf vfloat(vi a) { return _mm256_castsi256_ps(a); }
VINL vf vabs(vf a) { return vfloat(_mm256_and_si256(vbits(a), _mm256_set1_epi32(0x7fffffff))); }
VINL vf vneg(vf a) { return vfloat(_mm256_xor_si256(vbits(a), _mm256_set1_epi32((int)0x80000000u))); }
VINL vm vgt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
VINL vm vlt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
VINL vm vge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
VINL vm vle(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
VINL vm visnan(vf a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
VINL vm vm_and(vm a, vm b) { return _mm256_and_ps(a, b); }
VINL vm vm_or(vm a, vm b) { return _mm256_or_ps(a, b); }
VINL vm vm_andnot(vm a, vm b) { return _mm256_andnot_ps(a, b); }
VINL vm vm_none(void) { return _mm256_setzero_ps(); }
VINL unsigned vm_bits(vm m) { return (unsigned)_mm256_movemask_ps(m); }
VINL vf vsel(vm m, vf t, vf f) { return _mm256_blendv_ps(f, t, m); }
VINL bool vm_full(vm m) { return _mm256_movemask_ps(m) == 0xff; }
VINL vf vexp(vf x) { return expf8_avx2(x); }
VINL vf vexp_inrange(vf x) { return expf8_avx2_inrange(x); }
VINL vf vexp_nonneg(vf x) { return expf8_avx2_nonneg(x); }
VINL vf vtanh(vf x) { return tanhf8_avx2(x); }
VINL vf vtanh_small(vf x) { return tanhf8_avx2_small(x); }
VINL vi vkey(vf x)
{
    vi u = vbits(x);
    return _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31),
                                               _mm256_set1_epi32((int)0x80000000u)));
}
VINL void vstore_u32(uint32_t *p, vi v) { _mm256_storeu_si256((__m256i *)p, v); }
VINL vi vld_u32(const uint32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
VINL vi vkey_top(vi key) { return _mm256_srli_epi32(key, 16); }
VINL vi vsignbit(vf x) { return _mm256_srli_epi32(vbits(x), 31); }
VINL vm vi_eq(vi a, uint32_t b)
{
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32((int)b)));
}
/* unsigned a < b: flip the sign bits and compare signed */
VINL vm vi_lt(vi a, uint32_t b)
{
    const __m256i f = _mm256_set1_epi32((int)0x80000000u);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(b ^ 0x80000000u)),
                                                  _mm256_xor_si256(a, f)));
}
VINL vm vi_le(vi a, uint32_t b)
{
    const __m256i f = _mm256_set1_epi32((int)0x80000000u);
    __m256i gt = _mm256_cmpgt_epi32(_mm256_xor_si256(a, f), _mm256_set1_epi32((int)(b ^ 0x80000000u)));
    return _mm256_castsi256_ps(_mm256_xor_si256(gt, _mm256_set1_epi32(-1)));
}
VINL vi vi_count(vi acc, vm m) { return _mm256_sub_epi32(acc, _mm256_castps_si256(m)); }
VINL uint64_t vi_hsum(vi a)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(s);
}
VINL vi vi_zero(void) { return _mm256_setzero_si256(); }
VINL vi vi_or1(vi a, uint32_t b) { return _mm256_or_si256(a, _mm256_set1_epi32((int)b)); }
VINL vm vnonfinite(vf x)
{
    vi e = _mm256_and_si256(vbits(x), _mm256_set1_epi32(0x7f800000));
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, _mm256_set1_epi32(0x7f800000)));
}
VINL vf vload_bf16(const void *p)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return vfloat(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
VINL vf vload_f16(const void *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
VINL vf vload_f32(const void *p) { return _mm256_loadu_ps((const float *)p); }
/* lane indices of the set bits of an 8-bit mask, in order, one byte each */
static const uint64_t pcbm_compress8_lut[256] = {
    0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000000001ull, 0x0000000000000100ull,
    0x0000000000000002ull, 0x0000000000000200ull, 0x0000000000000201ull, 0x0000000000020100ull,
    0x0000000000000003ull, 0x0000000000000300ull, 0x0000000000000301ull, 0x0000000000030100ull,
    0x0000000000000302ull, 0x0000000000030200ull, 0x0000000000030201ull, 0x0000000003020100ull,
    0x0000000000000004ull, 0x0000000000000400ull, 0x0000000000000401ull, 0x0000000000040100ull,
    0x0000000000000402ull, 0x0000000000040200ull, 0x0000000000040201ull, 0x0000000004020100ull,
    0x0000000000000403ull, 0x0000000000040300ull, 0x0000000000040301ull, 0x0000000004030100ull,
    0x0000000000040302ull, 0x0000000004030200ull, 0x0000000004030201ull, 0x0000000403020100ull,
    0x0000000000000005ull, 0x0000000000000500ull, 0x0000000000000501ull, 0x0000000000050100ull,
    0x0000000000000502ull, 0x0000000000050200ull, 0x0000000000050201ull, 0x0000000005020100ull,
    0x0000000000000503ull, 0x0000000000050300ull, 0x0000000000050301ull, 0x0000000005030100ull,
    0x0000000000050302ull, 0x0000000005030200ull, 0x0000000005030201ull, 0x0000000503020100ull,
    0x0000000000000504ull, 0x0000000000050400ull, 0x0000000000050401ull, 0x0000000005040100ull,
    0x0000000000050402ull, 0x0000000005040200ull, 0x0000000005040201ull, 0x0000000504020100ull,
    0x0000000000050403ull, 0x0000000005040300ull, 0x0000000005040301ull, 0x0000000504030100ull,
    0x0000000005040302ull, 0x0000000504030200ull, 0x0000000504030201ull, 0x0000050403020100ull,
    0x0000000000000006ull, 0x0000000000000600ull, 0x0000000000000601ull, 0x0000000000060100ull,
    0x0000000000000602ull, 0x0000000000060200ull, 0x0000000000060201ull, 0x0000000006020100ull,
    0x0000000000000603ull, 0x0000000000060300ull, 0x0000000000060301ull, 0x0000000006030100ull,
    0x0000000000060302ull, 0x0000000006030200ull, 0x0000000006030201ull, 0x0000000603020100ull,
    0x0000000000000604ull, 0x0000000000060400ull, 0x0000000000060401ull, 0x0000000006040100ull,
    0x0000000000060402ull, 0x0000000006040200ull, 0x0000000006040201ull, 0x0000000604020100ull,
    0x0000000000060403ull, 0x0000000006040300ull, 0x0000000006040301ull, 0x0000000604030100ull,
    0x0000000006040302ull, 0x0000000604030200ull, 0x0000000604030201ull, 0x0000060403020100ull,
    0x0000000000000605ull, 0x0000000000060500ull, 0x0000000000060501ull, 0x0000000006050100ull,
    0x0000000000060502ull, 0x0000000006050200ull, 0x0000000006050201ull, 0x0000000605020100ull,
    0x0000000000060503ull, 0x0000000006050300ull, 0x0000000006050301ull, 0x0000000605030100ull,
    0x0000000006050302ull, 0x0000000605030200ull, 0x0000000605030201ull, 0x0000060503020100ull,
    0x0000000000060504ull, 0x0000000006050400ull, 0x0000000006050401ull, 0x0000000605040100ull,
    0x0000000006050402ull, 0x0000000605040200ull, 0x0000000605040201ull, 0x0000060504020100ull,
    0x0000000006050403ull, 0x0000000605040300ull, 0x0000000605040301ull, 0x0000060504030100ull,
    0x0000000605040302ull, 0x0000060504030200ull, 0x0000060504030201ull, 0x0006050403020100ull,
    0x0000000000000007ull, 0x0000000000000700ull, 0x0000000000000701ull, 0x0000000000070100ull,
    0x0000000000000702ull, 0x0000000000070200ull, 0x0000000000070201ull, 0x0000000007020100ull,
    0x0000000000000703ull, 0x0000000000070300ull, 0x0000000000070301ull, 0x0000000007030100ull,
    0x0000000000070302ull, 0x0000000007030200ull, 0x0000000007030201ull, 0x0000000703020100ull,
    0x0000000000000704ull, 0x0000000000070400ull, 0x0000000000070401ull, 0x0000000007040100ull,
    0x0000000000070402ull, 0x0000000007040200ull, 0x0000000007040201ull, 0x0000000704020100ull,
    0x0000000000070403ull, 0x0000000007040300ull, 0x0000000007040301ull, 0x0000000704030100ull,
    0x0000000007040302ull, 0x0000000704030200ull, 0x0000000704030201ull, 0x0000070403020100ull,
    0x0000000000000705ull, 0x0000000000070500ull, 0x0000000000070501ull, 0x0000000007050100ull,
    0x0000000000070502ull, 0x0000000007050200ull, 0x0000000007050201ull, 0x0000000705020100ull,
    0x0000000000070503ull, 0x0000000007050300ull, 0x0000000007050301ull, 0x0000000705030100ull,
    0x0000000007050302ull, 0x0000000705030200ull, 0x0000000705030201ull, 0x0000070503020100ull,
    0x0000000000070504ull, 0x0000000007050400ull, 0x0000000007050401ull, 0x0000000705040100ull,
    0x0000000007050402ull, 0x0000000705040200ull, 0x0000000705040201ull, 0x0000070504020100ull,
    0x0000000007050403ull, 0x0000000705040300ull, 0x0000000705040301ull, 0x0000070504030100ull,
    0x0000000705040302ull, 0x0000070504030200ull, 0x0000070504030201ull, 0x0007050403020100ull,
    0x0000000000000706ull, 0x0000000000070600ull, 0x0000000000070601ull, 0x0000000007060100ull,
    0x0000000000070602ull, 0x0000000007060200ull, 0x0000000007060201ull, 0x0000000706020100ull,
    0x0000000000070603ull, 0x0000000007060300ull, 0x0000000007060301ull, 0x0000000706030100ull,
    0x0000000007060302ull, 0x0000000706030200ull, 0x0000000706030201ull, 0x0000070603020100ull,
    0x0000000000070604ull, 0x0000000007060400ull, 0x0000000007060401ull, 0x0000000706040100ull,
    0x0000000007060402ull, 0x0000000706040200ull, 0x0000000706040201ull, 0x0000070604020100ull,
    0x0000000007060403ull, 0x0000000706040300ull, 0x0000000706040301ull, 0x0000070604030100ull,
    0x0000000706040302ull, 0x0000070604030200ull, 0x0000070604030201ull, 0x0007060403020100ull,
    0x0000000000070605ull, 0x0000000007060500ull, 0x0000000007060501ull, 0x0000000706050100ull,
    0x0000000007060502ull, 0x0000000706050200ull, 0x0000000706050201ull, 0x0000070605020100ull,
    0x0000000007060503ull, 0x0000000706050300ull, 0x0000000706050301ull, 0x0000070605030100ull,
    0x0000000706050302ull, 0x0000070605030200ull, 0x0000070605030201ull, 0x0007060503020100ull,
    0x0000000007060504ull, 0x0000000706050400ull, 0x0000000706050401ull, 0x0000070605040100ull,
    0x0000000706050402ull, 0x0000070605040200ull, 0x0000070605040201ull, 0x0007060504020100ull,
    0x0000000706050403ull, 0x0000070605040300ull, 0x0000070605040301ull, 0x0007060504030100ull,
    0x0000070605040302ull, 0x0007060504030200ull, 0x0007060504030201ull, 0x0706050403020100ull,
};
/* store the lanes of v selected by m, in order, at dst (which has room for 8); returns how many */
VINL unsigned vcompress_u32(uint32_t *dst, vm m, vi v)
{
    unsigned bits = vm_bits(m);
    __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)pcbm_compress8_lut[bits]));
    _mm256_storeu_si256((__m256i *)dst, _mm256_permutevar8x32_epi32(v, perm));
    return (unsigned)__builtin_popcount(bits);
}
/* for each 8-bit mask, the source lane of each set lane (its rank among the set lanes), one byte
 * each: the inverse of pcbm_compress8_lut */
static const uint64_t pcbm_expand8_lut[256] = {
    0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000000100ull,
    0x0000000000000000ull, 0x0000000000010000ull, 0x0000000000010000ull, 0x0000000000020100ull,
    0x0000000000000000ull, 0x0000000001000000ull, 0x0000000001000000ull, 0x0000000002000100ull,
    0x0000000001000000ull, 0x0000000002010000ull, 0x0000000002010000ull, 0x0000000003020100ull,
    0x0000000000000000ull, 0x0000000100000000ull, 0x0000000100000000ull, 0x0000000200000100ull,
    0x0000000100000000ull, 0x0000000200010000ull, 0x0000000200010000ull, 0x0000000300020100ull,
    0x0000000100000000ull, 0x0000000201000000ull, 0x0000000201000000ull, 0x0000000302000100ull,
    0x0000000201000000ull, 0x0000000302010000ull, 0x0000000302010000ull, 0x0000000403020100ull,
    0x0000000000000000ull, 0x0000010000000000ull, 0x0000010000000000ull, 0x0000020000000100ull,
    0x0000010000000000ull, 0x0000020000010000ull, 0x0000020000010000ull, 0x0000030000020100ull,
    0x0000010000000000ull, 0x0000020001000000ull, 0x0000020001000000ull, 0x0000030002000100ull,
    0x0000020001000000ull, 0x0000030002010000ull, 0x0000030002010000ull, 0x0000040003020100ull,
    0x0000010000000000ull, 0x0000020100000000ull, 0x0000020100000000ull, 0x0000030200000100ull,
    0x0000020100000000ull, 0x0000030200010000ull, 0x0000030200010000ull, 0x0000040300020100ull,
    0x0000020100000000ull, 0x0000030201000000ull, 0x0000030201000000ull, 0x0000040302000100ull,
    0x0000030201000000ull, 0x0000040302010000ull, 0x0000040302010000ull, 0x0000050403020100ull,
    0x0000000000000000ull, 0x0001000000000000ull, 0x0001000000000000ull, 0x0002000000000100ull,
    0x0001000000000000ull, 0x0002000000010000ull, 0x0002000000010000ull, 0x0003000000020100ull,
    0x0001000000000000ull, 0x0002000001000000ull, 0x0002000001000000ull, 0x0003000002000100ull,
    0x0002000001000000ull, 0x0003000002010000ull, 0x0003000002010000ull, 0x0004000003020100ull,
    0x0001000000000000ull, 0x0002000100000000ull, 0x0002000100000000ull, 0x0003000200000100ull,
    0x0002000100000000ull, 0x0003000200010000ull, 0x0003000200010000ull, 0x0004000300020100ull,
    0x0002000100000000ull, 0x0003000201000000ull, 0x0003000201000000ull, 0x0004000302000100ull,
    0x0003000201000000ull, 0x0004000302010000ull, 0x0004000302010000ull, 0x0005000403020100ull,
    0x0001000000000000ull, 0x0002010000000000ull, 0x0002010000000000ull, 0x0003020000000100ull,
    0x0002010000000000ull, 0x0003020000010000ull, 0x0003020000010000ull, 0x0004030000020100ull,
    0x0002010000000000ull, 0x0003020001000000ull, 0x0003020001000000ull, 0x0004030002000100ull,
    0x0003020001000000ull, 0x0004030002010000ull, 0x0004030002010000ull, 0x0005040003020100ull,
    0x0002010000000000ull, 0x0003020100000000ull, 0x0003020100000000ull, 0x0004030200000100ull,
    0x0003020100000000ull, 0x0004030200010000ull, 0x0004030200010000ull, 0x0005040300020100ull,
    0x0003020100000000ull, 0x0004030201000000ull, 0x0004030201000000ull, 0x0005040302000100ull,
    0x0004030201000000ull, 0x0005040302010000ull, 0x0005040302010000ull, 0x0006050403020100ull,
    0x0000000000000000ull, 0x0100000000000000ull, 0x0100000000000000ull, 0x0200000000000100ull,
    0x0100000000000000ull, 0x0200000000010000ull, 0x0200000000010000ull, 0x0300000000020100ull,
    0x0100000000000000ull, 0x0200000001000000ull, 0x0200000001000000ull, 0x0300000002000100ull,
    0x0200000001000000ull, 0x0300000002010000ull, 0x0300000002010000ull, 0x0400000003020100ull,
    0x0100000000000000ull, 0x0200000100000000ull, 0x0200000100000000ull, 0x0300000200000100ull,
    0x0200000100000000ull, 0x0300000200010000ull, 0x0300000200010000ull, 0x0400000300020100ull,
    0x0200000100000000ull, 0x0300000201000000ull, 0x0300000201000000ull, 0x0400000302000100ull,
    0x0300000201000000ull, 0x0400000302010000ull, 0x0400000302010000ull, 0x0500000403020100ull,
    0x0100000000000000ull, 0x0200010000000000ull, 0x0200010000000000ull, 0x0300020000000100ull,
    0x0200010000000000ull, 0x0300020000010000ull, 0x0300020000010000ull, 0x0400030000020100ull,
    0x0200010000000000ull, 0x0300020001000000ull, 0x0300020001000000ull, 0x0400030002000100ull,
    0x0300020001000000ull, 0x0400030002010000ull, 0x0400030002010000ull, 0x0500040003020100ull,
    0x0200010000000000ull, 0x0300020100000000ull, 0x0300020100000000ull, 0x0400030200000100ull,
    0x0300020100000000ull, 0x0400030200010000ull, 0x0400030200010000ull, 0x0500040300020100ull,
    0x0300020100000000ull, 0x0400030201000000ull, 0x0400030201000000ull, 0x0500040302000100ull,
    0x0400030201000000ull, 0x0500040302010000ull, 0x0500040302010000ull, 0x0600050403020100ull,
    0x0100000000000000ull, 0x0201000000000000ull, 0x0201000000000000ull, 0x0302000000000100ull,
    0x0201000000000000ull, 0x0302000000010000ull, 0x0302000000010000ull, 0x0403000000020100ull,
    0x0201000000000000ull, 0x0302000001000000ull, 0x0302000001000000ull, 0x0403000002000100ull,
    0x0302000001000000ull, 0x0403000002010000ull, 0x0403000002010000ull, 0x0504000003020100ull,
    0x0201000000000000ull, 0x0302000100000000ull, 0x0302000100000000ull, 0x0403000200000100ull,
    0x0302000100000000ull, 0x0403000200010000ull, 0x0403000200010000ull, 0x0504000300020100ull,
    0x0302000100000000ull, 0x0403000201000000ull, 0x0403000201000000ull, 0x0504000302000100ull,
    0x0403000201000000ull, 0x0504000302010000ull, 0x0504000302010000ull, 0x0605000403020100ull,
    0x0201000000000000ull, 0x0302010000000000ull, 0x0302010000000000ull, 0x0403020000000100ull,
    0x0302010000000000ull, 0x0403020000010000ull, 0x0403020000010000ull, 0x0504030000020100ull,
    0x0302010000000000ull, 0x0403020001000000ull, 0x0403020001000000ull, 0x0504030002000100ull,
    0x0403020001000000ull, 0x0504030002010000ull, 0x0504030002010000ull, 0x0605040003020100ull,
    0x0302010000000000ull, 0x0403020100000000ull, 0x0403020100000000ull, 0x0504030200000100ull,
    0x0403020100000000ull, 0x0504030200010000ull, 0x0504030200010000ull, 0x0605040300020100ull,
    0x0403020100000000ull, 0x0504030201000000ull, 0x0504030201000000ull, 0x0605040302000100ull,
    0x0504030201000000ull, 0x0605040302010000ull, 0x0605040302010000ull, 0x0706050403020100ull,
};
/* the first popcount(m) floats of src, in order, at the set lanes of m; 0 elsewhere (src: room
 * for 8) */
VINL vf vexpand(vm m, const float *src)
{
    __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)pcbm_expand8_lut[vm_bits(m)]));
    return _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(src), perm), m);
}
/* Gates (mkern_impl.h): 8 levels, one permute. */
#define VGATE_LEVELS 8u
VINL vi vgate_level(vf a, vf scale)
{
    return _mm256_min_epu32(_mm256_cvttps_epi32(vmul(a, scale)), _mm256_set1_epi32(VGATE_LEVELS - 1));
}
VINL vf vgate_lut(vf t0, vf t1, vi level)
{
    (void)t1;
    return _mm256_permutevar8x32_ps(t0, level);
}
VINL vi vi_iota(uint32_t k) { return _mm256_add_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
VINL vi vi_sub_srl(vi a, uint32_t b, unsigned sh)
{
    return _mm256_srl_epi32(_mm256_sub_epi32(a, _mm256_set1_epi32((int)b)), _mm_cvtsi32_si128((int)sh));
}
VINL vm vnonzero_u8(const uint8_t *p)
{
    __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    __m256i z = _mm256_cmpeq_epi32(b, _mm256_setzero_si256());
    return _mm256_castsi256_ps(_mm256_xor_si256(z, _mm256_set1_epi32(-1)));
}

#else
#error "define PCBM_SIMD_AVX2 or PCBM_SIMD_AVX512 before including simd_x86.h"
#endif

/* glibc's fminf / fmaxf (what the scalar code calls): minps / maxps unless b is NaN, then a. */
VINL vf vfminf(vf a, vf b) { return vsel(visnan(b), a, vmin(a, b)); }
VINL vf vfmaxf(vf a, vf b) { return vsel(visnan(b), a, vmax(a, b)); }
VINL vm vm_all(void) { return vgt(vset1(1.0f), vzero()); }
/* pcbm_tanhf, cheaper where every lane allows it: below 2^-13 tanh(x) is x itself (the scalar
 * definition returns x there, and the polynomial gives exactly x: dmath.c), below TANH_POLY the
 * polynomial branch alone. Products of task-vector elements are almost always that small. */
VINL vf vtanh_fast(vf x)
{
    vf a = vabs(x);
    if (vm_full(vlt(a, vset1(0x1p-13f))))
        return x;
    return vm_full(vlt(a, vset1(TANH_POLY))) ? vtanh_small(x) : vtanh(x);
}

#endif /* PCBM_SIMD_X86_H */

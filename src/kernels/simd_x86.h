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
VINL vf vexp(vf x) { return expf16_avx512(x); }
VINL vf vtanh(vf x) { return tanhf16_avx512(x); }
/* pcbm_fkey: (u & sign) ? ~u : u | sign */
VINL vi vkey(vf x)
{
    vi u = vbits(x);
    return _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31),
                                               _mm512_set1_epi32((int)0x80000000u)));
}
VINL void vstore_u32(uint32_t *p, vi v) { _mm512_storeu_si512((void *)p, v); }
VINL vi vkey_top(vi key) { return _mm512_srli_epi32(key, 16); }          /* key >> 16 */
VINL vm vi_eq(vi a, uint32_t b) { return _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32((int)b)); }
VINL vm vi_lt(vi a, uint32_t b) { return _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32((int)b)); }
VINL vm vi_le(vi a, uint32_t b) { return _mm512_cmple_epu32_mask(a, _mm512_set1_epi32((int)b)); }
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
VINL vf vexp(vf x) { return expf8_avx2(x); }
VINL vf vtanh(vf x) { return tanhf8_avx2(x); }
VINL vi vkey(vf x)
{
    vi u = vbits(x);
    return _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31),
                                               _mm256_set1_epi32((int)0x80000000u)));
}
VINL void vstore_u32(uint32_t *p, vi v) { _mm256_storeu_si256((__m256i *)p, v); }
VINL vi vkey_top(vi key) { return _mm256_srli_epi32(key, 16); }
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

#endif /* PCBM_SIMD_X86_H */

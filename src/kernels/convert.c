/* SPDX-License-Identifier: Apache-2.0 */
/*
 * convert.c — float32 <-> bf16/f16 conversions: the public scalar functions of pcbmerge.h and the
 * array forms of convert.h, with a scalar, an AVX2+F16C and an AVX-512 path chosen at run time
 * (kernels/cpu.h) that give bit-identical results for every input.
 *
 * Semantics (all paths):
 *  - bf16 -> f32 is exact and a pure bit shift (a signaling NaN stays signaling).
 *  - f16 -> f32 is exact; a NaN keeps its sign and payload and gets the quiet bit set (what F16C's
 *    vcvtph2ps and C's _Float16 -> float conversion do).
 *  - f32 -> bf16/f16 round to nearest, ties to even, subnormal results included; values that round
 *    past the largest finite value become +-Inf; +-0 is kept; a NaN becomes a quiet NaN with the same
 *    sign and the top bits of its payload (never Inf). For f16 this is exactly F16C's vcvtps2ph with
 *    imm8 = 0; for bf16 it is (u + 0x7fff + ((u >> 16) & 1)) >> 16, NaN: (u >> 16) | 0x40.
 *  - Unaligned src/dst are fine. Decoding needs src and dst not to overlap; encoding may be done in
 *    place (dst == src) because it walks forward and never writes past what it has read.
 */
#include "convert.h"

#include "cpu.h"
#include "fp8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PCBM_X86 1
#endif


/* ------------------------------------------------------------------------------------------------
 * Scalar reference implementations (the definition every vector path must match)
 * ---------------------------------------------------------------------------------------------- */
static inline uint32_t bf16_to_bits(uint16_t h) { return (uint32_t)h << 16; }

static inline uint16_t bits_to_bf16(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet it, keep sign and top payload bits */
        return (uint16_t)((u >> 16) | 0x40u);
    /* Round to nearest even; carries into the exponent give the next binade or Inf. */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline uint32_t f16_to_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1f) /* Inf, or NaN made quiet with its payload kept */
        return sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u);
    if (e == 0) {
        if (m == 0)
            return sign;
        /* Subnormal: m * 2^-24; normalise so the leading 1 lands on bit 10. */
        int sh = __builtin_clz(m) - 21; /* 1..10 */
        return sign | ((uint32_t)(113 - sh) << 23) | (((m << sh) & 0x3ffu) << 13);
    }
    return sign | ((e + 112u) << 23) | (m << 13);
}

static inline uint16_t bits_to_f16(uint32_t u)
{
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, sign kept, top 10 payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 = halfway between 65504 and 2^16 (odd side): Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* >= 2^-14: normal f16; rebias the exponent by 127-15 */
        uint32_t r = a - 0x38000000u;
        r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13; /* a carry may give the next binade */
        return (uint16_t)(sign | r);
    }
    /* Subnormal f16 (or zero): result = round(|x| * 2^24) in units of 2^-24. */
    uint32_t e = a >> 23;
    if (e < 102) /* |x| < 2^-25: rounds to zero */
        return sign;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t sh = 126 - e; /* 14..24 */
    uint32_t q = m >> sh;
    uint32_t rem = m & ((1u << sh) - 1u);
    uint32_t half = 1u << (sh - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++; /* q == 0x400 is the smallest normal, correctly encoded */
    return (uint16_t)(sign | q);
}

float pcbm_bf16_to_f32(uint16_t h) { return pcbm_u2f(bf16_to_bits(h)); }
uint16_t pcbm_f32_to_bf16(float f) { return bits_to_bf16(pcbm_f2u(f)); }
float pcbm_f16_to_f32(uint16_t h) { return pcbm_u2f(f16_to_bits(h)); }
uint16_t pcbm_f32_to_f16(float f) { return bits_to_f16(pcbm_f2u(f)); }

static inline uint16_t ld16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline void st16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }

/* dst is written through memcpy: it may be a float pointer that is not 4-byte aligned */
static void dec_bf16_scalar(const unsigned char *s, float *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = bf16_to_bits(ld16(s + 2 * i));
        memcpy((unsigned char *)d + 4 * i, &v, 4);
    }
}
static void dec_f16_scalar(const unsigned char *s, float *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = f16_to_bits(ld16(s + 2 * i));
        memcpy((unsigned char *)d + 4 * i, &v, 4);
    }
}
static void enc_bf16_scalar(const float *s, unsigned char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, (const unsigned char *)s + 4 * i, 4); /* may alias d when in place */
        st16(d + 2 * i, bits_to_bf16(pcbm_f2u(f)));
    }
}
static void enc_f16_scalar(const float *s, unsigned char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, (const unsigned char *)s + 4 * i, 4);
        st16(d + 2 * i, bits_to_f16(pcbm_f2u(f)));
    }
}

/* ------------------------------------------------------------------------------------------------
 * AVX2 + F16C
 * ---------------------------------------------------------------------------------------------- */
#ifdef PCBM_X86
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static void dec_bf16_avx2(const unsigned char *s, float *d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_si256((__m256i *)(void *)((unsigned char *)d + 4 * i), w);
    }
    dec_bf16_scalar(s + 2 * i, (float *)(void *)((unsigned char *)d + 4 * i), n - i);
}

T_AVX2 static void dec_f16_avx2(const unsigned char *s, float *d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i));
        _mm256_storeu_ps((float *)(void *)((unsigned char *)d + 4 * i), _mm256_cvtph_ps(h));
    }
    dec_f16_scalar(s + 2 * i, (float *)(void *)((unsigned char *)d + 4 * i), n - i);
}

T_AVX2 static inline __m128i bf16_pack8_avx2(__m256i u)
{
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf); /* both >= 0 */
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
    r = _mm256_srli_epi32(r, 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, q, isnan);
    /* every lane is <= 0xffff, so the unsigned saturating pack is a plain narrowing */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

T_AVX2 static void enc_bf16_avx2(const float *s, unsigned char *d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(const void *)((const unsigned char *)s + 4 * i));
        _mm_storeu_si128((__m128i *)(void *)(d + 2 * i), bf16_pack8_avx2(u));
    }
    enc_bf16_scalar((const float *)(const void *)((const unsigned char *)s + 4 * i), d + 2 * i, n - i);
}

T_AVX2 static void enc_f16_avx2(const float *s, unsigned char *d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps((const float *)(const void *)((const unsigned char *)s + 4 * i));
        _mm_storeu_si128((__m128i *)(void *)(d + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    enc_f16_scalar((const float *)(const void *)((const unsigned char *)s + 4 * i), d + 2 * i, n - i);
}

/* ------------------------------------------------------------------------------------------------
 * AVX-512 (F + BW + DQ + VL required by the level; these use F only)
 * ---------------------------------------------------------------------------------------------- */
#define T_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))

T_AVX512 static void dec_bf16_avx512(const unsigned char *s, float *d, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s + 2 * i));
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_storeu_si512((void *)((unsigned char *)d + 4 * i), w);
    }
    dec_bf16_scalar(s + 2 * i, (float *)(void *)((unsigned char *)d + 4 * i), n - i);
}

T_AVX512 static void dec_f16_avx512(const unsigned char *s, float *d, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s + 2 * i));
        _mm512_storeu_ps((float *)(void *)((unsigned char *)d + 4 * i), _mm512_cvtph_ps(h));
    }
    dec_f16_scalar(s + 2 * i, (float *)(void *)((unsigned char *)d + 4 * i), n - i);
}

T_AVX512 static void enc_bf16_avx512(const float *s, unsigned char *d, size_t n)
{
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i bias = _mm512_set1_epi32(0x7fff);
    const __m512i qbit = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512((const void *)((const unsigned char *)s + 4 * i));
        __mmask16 isnan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one));
        r = _mm512_srli_epi32(r, 16);
        r = _mm512_mask_blend_epi32(isnan, r, _mm512_or_si512(hi, qbit));
        _mm256_storeu_si256((__m256i *)(void *)(d + 2 * i), _mm512_cvtepi32_epi16(r));
    }
    enc_bf16_scalar((const float *)(const void *)((const unsigned char *)s + 4 * i), d + 2 * i, n - i);
}

T_AVX512 static void enc_f16_avx512(const float *s, unsigned char *d, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps((const void *)((const unsigned char *)s + 4 * i));
        _mm256_storeu_si256((__m256i *)(void *)(d + 2 * i),
                            _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    enc_f16_scalar((const float *)(const void *)((const unsigned char *)s + 4 * i), d + 2 * i, n - i);
}
#endif /* PCBM_X86 */

/* ------------------------------------------------------------------------------------------------
 * Dispatch
 * ---------------------------------------------------------------------------------------------- */
static void bad_dtype(const char *what, pcbm_dtype dt)
{
    /* A caller bug: only mergeable dtypes (and FP8 sources being dequantized) reach the kernels. */
    fprintf(stderr, "pcbmerge: internal error: %s called with dtype %d (not a float dtype)\n", what,
            (int)dt);
    abort();
}

void pcbm_decode_f32(pcbm_dtype dt, const void *src, float *dst, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    if (n == 0)
        return;
    if (dt == PCBM_DT_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    if (dt == PCBM_DT_F64) { /* round to nearest float32 (C's conversion, default rounding) */
        for (size_t k = 0; k < n; k++) {
            double v;
            memcpy(&v, s + 8 * k, 8);
            dst[k] = (float)v;
        }
        return;
    }
    if (dt == PCBM_DT_F8_E4M3 || dt == PCBM_DT_F8_E5M2) {
        pcbm_fp8_decode(dt, src, dst, n);
        return;
    }
    if (dt != PCBM_DT_BF16 && dt != PCBM_DT_F16)
        bad_dtype("pcbm_decode_f32", dt);
#ifdef PCBM_X86
    switch (pcbm_cpu_level_get()) {
    case PCBM_CPU_AVX512:
        (dt == PCBM_DT_BF16 ? dec_bf16_avx512 : dec_f16_avx512)(s, dst, n);
        return;
    case PCBM_CPU_AVX2:
        (dt == PCBM_DT_BF16 ? dec_bf16_avx2 : dec_f16_avx2)(s, dst, n);
        return;
    default:
        break;
    }
#endif
    (dt == PCBM_DT_BF16 ? dec_bf16_scalar : dec_f16_scalar)(s, dst, n);
}

void pcbm_encode_f32(pcbm_dtype dt, const float *src, void *dst, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    if (n == 0)
        return;
    if (dt == PCBM_DT_F32) {
        memmove(dst, src, n * 4); /* dst == src allowed */
        return;
    }
    if (dt == PCBM_DT_F64) { /* exact; backwards, so that dst == src works */
        for (size_t k = n; k-- > 0;) {
            double v = (double)src[k];
            memcpy(d + 8 * k, &v, 8);
        }
        return;
    }
    if (dt != PCBM_DT_BF16 && dt != PCBM_DT_F16)
        bad_dtype("pcbm_encode_f32", dt);
#ifdef PCBM_X86
    switch (pcbm_cpu_level_get()) {
    case PCBM_CPU_AVX512:
        (dt == PCBM_DT_BF16 ? enc_bf16_avx512 : enc_f16_avx512)(src, d, n);
        return;
    case PCBM_CPU_AVX2:
        (dt == PCBM_DT_BF16 ? enc_bf16_avx2 : enc_f16_avx2)(src, d, n);
        return;
    default:
        break;
    }
#endif
    (dt == PCBM_DT_BF16 ? enc_bf16_scalar : enc_f16_scalar)(src, d, n);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmath_simd.h — the vector forms of pcbm_expf and pcbm_tanhf (dmath.c) as inline functions, so
 * merge kernels can call them on registers without a round trip through memory. dmath.c's array
 * forms use these same functions: there is one implementation per vector width, and each one
 * performs the scalar definition's float operations in the same order (no FMA, no reassociation).
 * The _inrange / _nonneg / _small forms are the same functions for lanes known to need none of
 * the range fix-ups (exp of [EXP_LO, EXP_HI] or of [0, 87], tanh of |x| < TANH_POLY, no NaN):
 * the same bits, cheaper.
 * Callers are compiled with -ffp-contract=off (the Makefile's flags) and a target that includes
 * the functions' own (PCBM_T_DM_AVX2 / PCBM_T_DM_AVX512), so GCC inlines them.
 */
#ifndef PCBM_DMATH_SIMD_H
#define PCBM_DMATH_SIMD_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define LOG2E 1.44269504088896341f
#define MAGIC 12582912.0f /* 1.5 * 2^23: t + MAGIC rounds t to an integer (ties to even) */
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define EP0 1.9875691500e-4f
#define EP1 1.3981999507e-3f
#define EP2 8.3334519073e-3f
#define EP3 4.1665795894e-2f
#define EP4 1.6666665459e-1f
#define EP5 5.0000001201e-1f
#define EXP_HI 0x1.62e42ep6f  /* 88.72283172607421875: largest x with finite exp(x) */
#define EXP_LO -104.0f        /* below: +0 (exp(-104) < 2^-150 already) */
#define TQ0 -5.70498872745e-3f
#define TQ1 2.06390887954e-2f
#define TQ2 -5.37397155531e-2f
#define TQ3 1.33314422036e-1f
#define TQ4 -3.33332819422e-1f
#define TANH_POLY 0.625f /* a < this: polynomial */
#define TANH_SAT 10.0f   /* a clamped here: the result is exactly 1 from about 9.01 on */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* ------------------------------------------------------------------------------------------------
 * AVX2 (no FMA in the target list on purpose: nothing may be fused)
 * ---------------------------------------------------------------------------------------------- */
#define PCBM_T_DM_AVX2 __attribute__((target("avx2")))
#define T_AVX2 PCBM_T_DM_AVX2

T_AVX2 static inline __m256 pow2i_avx2(__m256i k)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

T_AVX2 static inline __m256 exp_reduce_avx2(__m256 x, __m256i *k)
{
    const __m256 magic = _mm256_set1_ps(MAGIC);
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(LOG2E));
    __m256 kf = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    *k = _mm256_cvttps_epi32(kf);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(kf, _mm256_set1_ps(LN2_HI)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(kf, _mm256_set1_ps(LN2_LO)));
    __m256 z = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(EP0);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EP1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EP2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EP3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EP4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EP5));
    return _mm256_add_ps(_mm256_mul_ps(p, z), r);
}

/* exp of lanes in [EXP_LO, 89]: e^r scaled by 2^k in two steps. */
T_AVX2 static inline __m256 expf8_avx2_core(__m256 xc)
{
    __m256i k;
    __m256 y = _mm256_add_ps(exp_reduce_avx2(xc, &k), _mm256_set1_ps(1.0f));
    __m256i k1 = _mm256_srai_epi32(k, 1);
    __m256i k2 = _mm256_sub_epi32(k, k1);
    y = _mm256_mul_ps(y, pow2i_avx2(k1));
    y = _mm256_mul_ps(y, pow2i_avx2(k2));
    return y;
}

/* expf8_avx2 for lanes known to lie in [EXP_LO, EXP_HI] (no NaN): there the clamps and the
 * fix-ups below change nothing, so the result is the same bits. */
T_AVX2 static inline __m256 expf8_avx2_inrange(__m256 x) { return expf8_avx2_core(x); }

/* expf8_avx2 for lanes known to lie in [0, 87]: k is in [0, 126], so scaling by 2^k at once is
 * exact like the two steps (the result is a normal float): the same bits. */
T_AVX2 static inline __m256 expf8_avx2_nonneg(__m256 x)
{
    __m256i k;
    __m256 y = _mm256_add_ps(exp_reduce_avx2(x, &k), _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(y, pow2i_avx2(k));
}

T_AVX2 static inline __m256 expf8_avx2(__m256 x)
{
    /* Clamping keeps every lane's arithmetic tame; lanes outside are replaced below. A NaN lane
     * becomes EXP_LO here (max returns its second operand on NaN) and x + x at the end. */
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(89.0f));
    __m256 y = expf8_avx2_core(xc);
    __m256 hi = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
    __m256 lo = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    y = _mm256_blendv_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000)), hi);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), lo);
    y = _mm256_blendv_ps(y, _mm256_add_ps(x, x), nan);
    return y;
}

/* tanh's polynomial branch at a = |x| */
T_AVX2 static inline __m256 tanhf8_avx2_poly(__m256 a)
{
    __m256 s = _mm256_mul_ps(a, a);
    __m256 q = _mm256_set1_ps(TQ0);
    q = _mm256_add_ps(_mm256_mul_ps(q, s), _mm256_set1_ps(TQ1));
    q = _mm256_add_ps(_mm256_mul_ps(q, s), _mm256_set1_ps(TQ2));
    q = _mm256_add_ps(_mm256_mul_ps(q, s), _mm256_set1_ps(TQ3));
    q = _mm256_add_ps(_mm256_mul_ps(q, s), _mm256_set1_ps(TQ4));
    return _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(q, s), a), a);
}

/* tanhf8_avx2 for lanes known to satisfy |x| < TANH_POLY (no NaN): the blends below would pick
 * the polynomial branch, so this is the same bits. */
T_AVX2 static inline __m256 tanhf8_avx2_small(__m256 x)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    return _mm256_or_ps(tanhf8_avx2_poly(_mm256_and_ps(x, absm)), _mm256_andnot_ps(absm, x));
}

T_AVX2 static inline __m256 tanhf8_avx2(__m256 x)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 sign = _mm256_andnot_ps(absm, x);
    __m256 a = _mm256_and_ps(x, absm);
    __m256 tp = tanhf8_avx2_poly(a);
    /* expm1 branch (a NaN lane becomes TANH_SAT: min returns its second operand on NaN) */
    __m256 ac = _mm256_min_ps(a, _mm256_set1_ps(TANH_SAT));
    __m256i k;
    __m256 em = exp_reduce_avx2(_mm256_add_ps(ac, ac), &k);
    __m256 tk = pow2i_avx2(k);
    __m256 d = _mm256_add_ps(_mm256_mul_ps(em, tk), _mm256_add_ps(tk, _mm256_set1_ps(1.0f)));
    __m256 te = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), d));
    __m256 t = _mm256_blendv_ps(te, tp, _mm256_cmp_ps(a, _mm256_set1_ps(TANH_POLY), _CMP_LT_OQ));
    t = _mm256_or_ps(t, sign);
    return _mm256_blendv_ps(t, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* ------------------------------------------------------------------------------------------------
 * AVX-512 (implies FMA in GCC's target set; the fp-contract pragma above keeps mul+add separate,
 * and the tests compare every path with the scalar one bit for bit)
 * ---------------------------------------------------------------------------------------------- */
#define PCBM_T_DM_AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512dq,avx512vl")))
#define T_AVX512 PCBM_T_DM_AVX512

T_AVX512 static inline __m512 pow2i_avx512(__m512i k)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k, _mm512_set1_epi32(127)), 23));
}

T_AVX512 static inline __m512 exp_reduce_avx512(__m512 x, __m512i *k)
{
    const __m512 magic = _mm512_set1_ps(MAGIC);
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(LOG2E));
    __m512 kf = _mm512_sub_ps(_mm512_add_ps(t, magic), magic);
    *k = _mm512_cvttps_epi32(kf);
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(kf, _mm512_set1_ps(LN2_HI)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(kf, _mm512_set1_ps(LN2_LO)));
    __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(EP0);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(EP1));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(EP2));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(EP3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(EP4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(EP5));
    return _mm512_add_ps(_mm512_mul_ps(p, z), r);
}

T_AVX512 static inline __m512 expf16_avx512_core(__m512 xc)
{
    __m512i k;
    __m512 y = _mm512_add_ps(exp_reduce_avx512(xc, &k), _mm512_set1_ps(1.0f));
    __m512i k1 = _mm512_srai_epi32(k, 1);
    __m512i k2 = _mm512_sub_epi32(k, k1);
    y = _mm512_mul_ps(y, pow2i_avx512(k1));
    y = _mm512_mul_ps(y, pow2i_avx512(k2));
    return y;
}

/* expf16_avx512 for lanes known to lie in [EXP_LO, EXP_HI] (no NaN): the same bits. */
T_AVX512 static inline __m512 expf16_avx512_inrange(__m512 x) { return expf16_avx512_core(x); }

/* expf16_avx512 for lanes known to lie in [0, 87]: one exact scaling by 2^k, the same bits. */
T_AVX512 static inline __m512 expf16_avx512_nonneg(__m512 x)
{
    __m512i k;
    __m512 y = _mm512_add_ps(exp_reduce_avx512(x, &k), _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(y, pow2i_avx512(k));
}

T_AVX512 static inline __m512 expf16_avx512(__m512 x)
{
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(89.0f));
    __m512 y = expf16_avx512_core(xc);
    __mmask16 hi = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    __mmask16 lo = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_LT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    y = _mm512_mask_blend_ps(hi, y, _mm512_castsi512_ps(_mm512_set1_epi32(0x7f800000)));
    y = _mm512_mask_blend_ps(lo, y, _mm512_setzero_ps());
    y = _mm512_mask_blend_ps(nan, y, _mm512_add_ps(x, x));
    return y;
}

T_AVX512 static inline __m512 tanhf16_avx512_poly(__m512 a)
{
    __m512 s = _mm512_mul_ps(a, a);
    __m512 q = _mm512_set1_ps(TQ0);
    q = _mm512_add_ps(_mm512_mul_ps(q, s), _mm512_set1_ps(TQ1));
    q = _mm512_add_ps(_mm512_mul_ps(q, s), _mm512_set1_ps(TQ2));
    q = _mm512_add_ps(_mm512_mul_ps(q, s), _mm512_set1_ps(TQ3));
    q = _mm512_add_ps(_mm512_mul_ps(q, s), _mm512_set1_ps(TQ4));
    return _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(q, s), a), a);
}

/* tanhf16_avx512 for lanes known to satisfy |x| < TANH_POLY (no NaN): the same bits. */
T_AVX512 static inline __m512 tanhf16_avx512_small(__m512 x)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512i xi = _mm512_castps_si512(x);
    __m512 a = _mm512_castsi512_ps(_mm512_and_si512(xi, absm));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(tanhf16_avx512_poly(a)),
                                               _mm512_andnot_si512(absm, xi)));
}

T_AVX512 static inline __m512 tanhf16_avx512(__m512 x)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512i xi = _mm512_castps_si512(x);
    __m512i sign = _mm512_andnot_si512(absm, xi);
    __m512 a = _mm512_castsi512_ps(_mm512_and_si512(xi, absm));
    __m512 tp = tanhf16_avx512_poly(a);
    __m512 ac = _mm512_min_ps(a, _mm512_set1_ps(TANH_SAT));
    __m512i k;
    __m512 em = exp_reduce_avx512(_mm512_add_ps(ac, ac), &k);
    __m512 tk = pow2i_avx512(k);
    __m512 d = _mm512_add_ps(_mm512_mul_ps(em, tk), _mm512_add_ps(tk, _mm512_set1_ps(1.0f)));
    __m512 te = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), d));
    __m512 t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(TANH_POLY), _CMP_LT_OQ), te, tp);
    t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), t, _mm512_add_ps(x, x));
}

#undef T_AVX2
#undef T_AVX512
#endif /* x86-64 */
#endif /* PCBM_DMATH_SIMD_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmath.c — the one deterministic implementation of expf and tanhf used by every merge, with a
 * scalar path and AVX2 / AVX-512 array paths that perform exactly the same float operations in the
 * same order (no FMA anywhere, no libm), so results are bit-identical on every CPU and path.
 *
 * Measured accuracy (tools/ulp-check, exhaustive over every float32 input of the range, against
 * the correctly rounded result; reproduce with `make build/tools/ulp-check && build/tools/ulp-check`,
 * about 100 CPU-seconds):
 *   pcbm_expf   all 2,239,889,410 x in [-104, 89]: max error 0.9903 ulp (x = 70.4030991),
 *               18,092,448 results (0.81%) differ from correct rounding, all by 1 ulp;
 *   pcbm_tanhf  all 4,278,190,080 finite x:        max error 1.2066 ulp (x = -0.625588119),
 *               7,345,470 results (0.17%) differ from correct rounding, all by 1 ulp;
 * both are monotonic (non-decreasing) over those inputs, and the scalar, AVX2 and AVX-512 paths
 * agree bit for bit on all of them.
 *
 * pcbm_expf(x):
 *   NaN -> NaN (x + x: quiet, sign and payload kept); x > 88.72283172607421875 (largest float whose
 *   exp is finite) -> +Inf; x < -104 -> +0. Otherwise Cephes-style:
 *     k = round_to_nearest_even(x * log2(e))   [computed as (t + 1.5*2^23) - 1.5*2^23]
 *     r = (x - k*C1) - k*C2                     [C1 + C2 = ln 2, C1 has 9 significant bits]
 *     e^r ~ 1 + r + r^2 * P(r)                  [degree-5 P, Horner, left to right]
 *     result = ((e^r * 2^(k>>1)) * 2^(k - (k>>1)))
 *   The first scaling is exact, the second rounds once, so subnormal results (x in about
 *   [-103.97, -87.34]) are computed, not flushed: they are correctly rounded but for the < 1 ulp
 *   error of e^r. exp(x) <= 2^-150 rounds to +0 as correct rounding does.
 * pcbm_tanhf(x): computed on a = |x| and given the sign of x (so tanh(-0) = -0, tanh is odd):
 *   NaN -> NaN (x + x);
 *   a < 0.625    : a + ((Q(a^2) * a^2) * a)    [degree-4 Q, Cephes tanhf coefficients]; for tiny a
 *                  the correction underflows and the result is a exactly;
 *   a >= 0.625   : with a' = min(a, 10) and the reduction of exp for 2a' = k ln2 + r,
 *                  d = e^(2a') + 1 = (r + r^2 P(r)) * 2^k + (2^k + 1)   [one rounding: the product
 *                  and 2^k + 1 are exact], result 1 - 2 / d (exactly 1 from a = 9.01... on).
 *                  (expm1(2a) / (expm1(2a) + 2) is a little more accurate just above 0.625 but not
 *                  monotonic there; this form is monotonic over all floats, checked exhaustively.)
 * The scalar code returns early where the full computation is known to give a constant bit
 * pattern (exp: |x| < 2^-26 -> 1; tanh: a < 2^-13 -> a, a >= 10 -> 1), which avoids slow subnormal
 * arithmetic; the vector paths compute those lanes the long way and get the same bits (ulp-check
 * and tests/unit/test_dmath.c verify it). Under the default round-to-nearest mode only (MXCSR is
 * never changed by libpcbmerge).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
/* Belt and braces: even if someone builds with -ffp-contract=fast, never fuse mul+add here. */
#pragma GCC optimize("fp-contract=off")
#endif

#include "dmath.h"

#include "../common/common.h"

#include "cpu.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PCBM_X86 1
#endif

#include "dmath_simd.h"

static inline float pow2i(int32_t n) { return pcbm_u2f((uint32_t)(n + 127) << 23); } /* -126..127 */

/* ------------------------------------------------------------------------------------------------
 * Scalar: the definition. Each vector path below repeats these operations in this order.
 * ---------------------------------------------------------------------------------------------- */

/* For x in [-104, 89]: returns e^r - 1 (as r + r^2 P(r)) and k with x ~ k ln2 + r. */
static inline float exp_reduce(float x, int32_t *k)
{
    float t = x * LOG2E;
    float kf = (t + MAGIC) - MAGIC;
    *k = (int32_t)kf;
    float r = x - kf * LN2_HI;
    r = r - kf * LN2_LO;
    float z = r * r;
    float p = EP0;
    p = p * r + EP1;
    p = p * r + EP2;
    p = p * r + EP3;
    p = p * r + EP4;
    p = p * r + EP5;
    return p * z + r;
}

float pcbm_expf(float x)
{
    if (x != x)
        return x + x;
    if (x > EXP_HI)
        return pcbm_u2f(0x7f800000u);
    if (x < EXP_LO)
        return 0.0f;
    if (pcbm_u2f(pcbm_f2u(x) & 0x7fffffffu) < 0x1p-26f)
        return 1.0f; /* shortcut: the steps below give exactly 1 here (slowly, on subnormals) */
    int32_t k;
    float y = exp_reduce(x, &k) + 1.0f;
    int32_t k1 = k >> 1; /* arithmetic shift (GCC/Clang define it) */
    int32_t k2 = k - k1;
    y = y * pow2i(k1);
    y = y * pow2i(k2);
    return y;
}

float pcbm_tanhf(float x)
{
    if (x != x)
        return x + x;
    uint32_t sign = pcbm_f2u(x) & 0x80000000u;
    float a = pcbm_u2f(pcbm_f2u(x) & 0x7fffffffu);
    float t;
    if (a < 0x1p-13f) {
        t = a; /* shortcut: the polynomial gives exactly a here (slowly, on subnormals) */
    } else if (a < TANH_POLY) {
        float s = a * a;
        float q = TQ0;
        q = q * s + TQ1;
        q = q * s + TQ2;
        q = q * s + TQ3;
        q = q * s + TQ4;
        t = ((q * s) * a) + a;
    } else if (a >= TANH_SAT) {
        t = 1.0f; /* shortcut: the steps below give exactly 1 from a = 9.01... on */
    } else {
        int32_t k;
        float em = exp_reduce(a + a, &k);
        float tk = pow2i(k);
        float d = em * tk + (tk + 1.0f);
        t = 1.0f - 2.0f / d;
    }
    return pcbm_u2f(pcbm_f2u(t) | sign);
}

static void expf_scalar(const float *x, float *y, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        y[i] = pcbm_expf(x[i]);
}
static void tanhf_scalar(const float *x, float *y, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        y[i] = pcbm_tanhf(x[i]);
}

#ifdef PCBM_X86
/* ------------------------------------------------------------------------------------------------
 * AVX2 (no FMA in the target list on purpose: nothing may be fused)
 * ---------------------------------------------------------------------------------------------- */
#define T_AVX2 __attribute__((target("avx2")))


T_AVX2 static void expf_avx2(const float *x, float *y, unsigned long n)
{
    unsigned long i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, expf8_avx2(_mm256_loadu_ps(x + i)));
    expf_scalar(x + i, y + i, n - i);
}

T_AVX2 static void tanhf_avx2(const float *x, float *y, unsigned long n)
{
    unsigned long i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, tanhf8_avx2(_mm256_loadu_ps(x + i)));
    tanhf_scalar(x + i, y + i, n - i);
}

/* ------------------------------------------------------------------------------------------------
 * AVX-512 (implies FMA in GCC's target set; the fp-contract pragma above keeps mul+add separate,
 * and the tests compare every path with the scalar one bit for bit)
 * ---------------------------------------------------------------------------------------------- */
#define T_AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512dq,avx512vl")))


T_AVX512 static void expf_avx512(const float *x, float *y, unsigned long n)
{
    unsigned long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, expf16_avx512(_mm512_loadu_ps(x + i)));
    expf_scalar(x + i, y + i, n - i);
}

T_AVX512 static void tanhf_avx512(const float *x, float *y, unsigned long n)
{
    unsigned long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, tanhf16_avx512(_mm512_loadu_ps(x + i)));
    tanhf_scalar(x + i, y + i, n - i);
}
#endif /* PCBM_X86 */

/* x and y may be the same array (element i is read before y[i] is written, blocks go forward). */
void pcbm_expf_n(const float *x, float *y, unsigned long n)
{
#ifdef PCBM_X86
    switch (pcbm_cpu_level_get()) {
    case PCBM_CPU_AVX512:
        expf_avx512(x, y, n);
        return;
    case PCBM_CPU_AVX2:
        expf_avx2(x, y, n);
        return;
    default:
        break;
    }
#endif
    expf_scalar(x, y, n);
}

void pcbm_tanhf_n(const float *x, float *y, unsigned long n)
{
#ifdef PCBM_X86
    switch (pcbm_cpu_level_get()) {
    case PCBM_CPU_AVX512:
        tanhf_avx512(x, y, n);
        return;
    case PCBM_CPU_AVX2:
        tanhf_avx2(x, y, n);
        return;
    default:
        break;
    }
#endif
    tanhf_scalar(x, y, n);
}

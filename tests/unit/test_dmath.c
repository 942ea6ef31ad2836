/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_dmath.c — cmocka tests of the deterministic expf/tanhf (kernels/dmath.c): special values,
 * range edges, oddness, monotonicity around every branch point, ulp error on samples against
 * expl/tanhl, and bit identity of every dispatch path with the scalar functions.
 * (tools/ulp-check does the exhaustive version of the accuracy and identity checks.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "kernels/cpu.h"
#include "kernels/dmath.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Measured maxima (exhaustive, tools/ulp-check): exp 0.9903 ulp, tanh 1.2066 ulp. */
#define EXP_MAX_ULP 1.0
#define TANH_MAX_ULP 1.25


#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#include "test_rng.h"
static float rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(rnd() >> 40) * 0x1p-24);
}

/* Error of y in ulps of the exact value ref: ulp = 2^(floor(log2|ref|) - 23), >= 2^-149. */
static double ulp_err(float y, long double ref)
{
    if (isinf(y) || isnan(y))
        return (isinf(y) && isinf((float)ref) && (y > 0) == (ref > 0)) ? 0 : INFINITY;
    long double a = fabsl(ref);
    int e;
    frexpl(a, &e);
    long double ulp = a < 0x1p-126L ? 0x1p-149L : ldexpl(1.0L, e - 24);
    return (double)(fabsl((long double)y - ref) / ulp);
}

static void test_exp_specials(void **state)
{
    (void)state;
    assert_true(isnan(pcbm_expf(NAN)));
    float nn = pcbm_expf(pcbm_u2f(0xffa00001u)); /* negative signaling NaN: quiet, sign and payload */
    assert_int_equal(pcbm_f2u(nn), 0xffe00001u);
    assert_int_equal(pcbm_f2u(pcbm_expf(INFINITY)), 0x7f800000u);
    assert_int_equal(pcbm_f2u(pcbm_expf(-INFINITY)), 0x00000000u);
    assert_int_equal(pcbm_f2u(pcbm_expf(0.0f)), pcbm_f2u(1.0f));
    assert_int_equal(pcbm_f2u(pcbm_expf(-0.0f)), pcbm_f2u(1.0f));
    assert_int_equal(pcbm_f2u(pcbm_expf(pcbm_u2f(1))), pcbm_f2u(1.0f)); /* subnormal inputs */
    assert_int_equal(pcbm_f2u(pcbm_expf(pcbm_u2f(0x80000001u))), pcbm_f2u(1.0f));
    /* overflow edge: 0x42b17217 is the largest float with a finite exp */
    float top = pcbm_expf(pcbm_u2f(0x42b17217u));
    assert_true(isfinite(top) && top > 3.4e38f);
    assert_true(ulp_err(top, expl((long double)pcbm_u2f(0x42b17217u))) <= EXP_MAX_ULP);
    assert_int_equal(pcbm_f2u(pcbm_expf(pcbm_u2f(0x42b17218u))), 0x7f800000u);
    assert_int_equal(pcbm_f2u(pcbm_expf(89.0f)), 0x7f800000u);
    assert_int_equal(pcbm_f2u(pcbm_expf(FLT_MAX)), 0x7f800000u);
    /* underflow edge: +0 below, never -0 */
    assert_int_equal(pcbm_f2u(pcbm_expf(-104.0f)), 0u);
    assert_int_equal(pcbm_f2u(pcbm_expf(-1000.0f)), 0u);
    assert_int_equal(pcbm_f2u(pcbm_expf(-FLT_MAX)), 0u);
    /* exp(-150 ln 2) = 2^-150 exactly halfway to 2^-149: the largest float below gives 0, the
     * smallest float above gives 2^-149 (the correctly rounded results) */
    float x150 = (float)(-150.0L * 0.693147180559945309417232121458176568L);
    for (int d = -3; d <= 3; d++) {
        float x = pcbm_u2f((uint32_t)((int32_t)pcbm_f2u(x150) + d));
        long double ref = expl((long double)x);
        float want = (float)ref;
        assert_int_equal(pcbm_f2u(pcbm_expf(x)), pcbm_f2u(want));
    }
    /* simple values */
    assert_true(ulp_err(pcbm_expf(1.0f), expl(1.0L)) <= EXP_MAX_ULP);
    assert_true(ulp_err(pcbm_expf(-1.0f), expl(-1.0L)) <= EXP_MAX_ULP);
    assert_true(ulp_err(pcbm_expf(64.0f), expl(64.0L)) <= EXP_MAX_ULP);
    assert_int_equal(pcbm_f2u(pcbm_expf(pcbm_u2f(0x3f317218u))), pcbm_f2u(2.0f)); /* ln 2 rounded: 2 */
}

static void test_exp_subnormal_results(void **state)
{
    (void)state;
    /* results below 2^-126 are computed (not flushed): within 1 ulp of 2^-149 of exact */
    int n = 0;
    for (float x = -103.97f; x < -87.0f; x += 0.0137f, n++) {
        float y = pcbm_expf(x);
        long double ref = expl((long double)x);
        double err = ulp_err(y, ref);
        if (err > EXP_MAX_ULP)
            fail_msg("expf(%.9g) = %a, exact %La: %.3f ulp", (double)x, (double)y, ref, err);
        assert_true(y >= 0);
    }
    assert_true(n > 1000);
    assert_true(pcbm_expf(-100.0f) > 0 && pcbm_expf(-100.0f) < FLT_MIN);
}

static void test_tanh_specials(void **state)
{
    (void)state;
    assert_int_equal(pcbm_f2u(pcbm_tanhf(0.0f)), 0x00000000u);
    assert_int_equal(pcbm_f2u(pcbm_tanhf(-0.0f)), 0x80000000u);
    assert_int_equal(pcbm_f2u(pcbm_tanhf(INFINITY)), pcbm_f2u(1.0f));
    assert_int_equal(pcbm_f2u(pcbm_tanhf(-INFINITY)), pcbm_f2u(-1.0f));
    assert_true(isnan(pcbm_tanhf(NAN)));
    assert_int_equal(pcbm_f2u(pcbm_tanhf(pcbm_u2f(0x7f800001u))), 0x7fc00001u);
    assert_int_equal(pcbm_f2u(pcbm_tanhf(pcbm_u2f(0xffc01234u))), 0xffc01234u);
    /* tiny: tanh(x) rounds to x */
    static const uint32_t tiny[] = {0x00000001u, 0x80000001u, 0x007fffffu, 0x00800000u,
                                    0x0d000000u, 0x38d1b717u, 0x39000000u, 0xb9000000u};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        assert_int_equal(pcbm_f2u(pcbm_tanhf(pcbm_u2f(tiny[i]))), tiny[i]);
    /* saturation */
    static const float big[] = {9.02f, 9.5f, 10.0f, 20.0f, 1e10f, FLT_MAX};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        assert_int_equal(pcbm_f2u(pcbm_tanhf(big[i])), pcbm_f2u(1.0f));
        assert_int_equal(pcbm_f2u(pcbm_tanhf(-big[i])), pcbm_f2u(-1.0f));
    }
    /* just below saturation the result is the correctly rounded 1 - 2^-24 */
    assert_int_equal(pcbm_f2u(pcbm_tanhf(9.0f)), 0x3f7fffffu);
    /* values around each branch point are accurate */
    static const float pts[] = {0x1p-13f, 0.5f, 0.625f, 1.0f, 2.0f, 5.0f, 8.5f};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++)
        for (int d = -2; d <= 2; d++) {
            float x = pcbm_u2f((uint32_t)((int32_t)pcbm_f2u(pts[i]) + d));
            double err = ulp_err(pcbm_tanhf(x), tanhl((long double)x));
            if (err > TANH_MAX_ULP)
                fail_msg("tanhf(%.9g): %.3f ulp", (double)x, err);
        }
}

static void test_tanh_odd(void **state)
{
    (void)state;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)rnd() & 0x7fffffffu;
        if (u > 0x7f800000u)
            continue;
        assert_int_equal(pcbm_f2u(pcbm_tanhf(pcbm_u2f(u | 0x80000000u))), pcbm_f2u(pcbm_tanhf(pcbm_u2f(u))) | 0x80000000u);
    }
}

/* f increasing over consecutive floats [from, from + count) (bit order of non-negative values,
 * or of negative ones, where values decrease as the bits grow). */
static void check_run(float (*f)(float), const char *name, uint32_t from, uint32_t count)
{
    float prev = f(pcbm_u2f(from));
    int neg = (from & 0x80000000u) != 0;
    for (uint32_t k = 1; k < count; k++) {
        uint32_t u = from + k;
        float y = f(pcbm_u2f(u));
        if (neg ? y > prev : y < prev)
            fail_msg("%s not monotonic at 0x%08x (%.9g): %a after %a", name, u, (double)pcbm_u2f(u),
                     (double)y, (double)prev);
        prev = y;
    }
}

static void test_monotonic(void **state)
{
    (void)state;
    const uint32_t R = 20000; /* consecutive floats each side of a branch point */
    /* exp: zero, the 2^-26 shortcut, several reduction steps k ln2 +- ln2/2, both ends */
    static const float exp_pts[] = {0x1p-26f, 0.3465736f, 1.0397208f, 10.0f, 44.0f, 88.7228317f,
                                    87.33654f, 63.9f, 1.0f};
    for (size_t i = 0; i < sizeof exp_pts / sizeof exp_pts[0]; i++) {
        check_run(pcbm_expf, "expf", pcbm_f2u(exp_pts[i]) - R, 2 * R);
        check_run(pcbm_expf, "expf", pcbm_f2u(-exp_pts[i]) - R, 2 * R);
    }
    check_run(pcbm_expf, "expf", 0x00000000u, R);
    check_run(pcbm_expf, "expf", 0x80000000u, R);
    check_run(pcbm_expf, "expf", pcbm_f2u(-103.97f) - R, 2 * R);
    check_run(pcbm_expf, "expf", pcbm_f2u(-87.3365f) - R, 2 * R);
    /* tanh: 2^-13 shortcut, 0.625 polynomial / exp switch, 9.01 saturation, 10 shortcut */
    static const float tanh_pts[] = {0x1p-13f, 0.625f, 0.3f, 1.5f, 4.0f, 9.0109f, 10.0f};
    for (size_t i = 0; i < sizeof tanh_pts / sizeof tanh_pts[0]; i++) {
        check_run(pcbm_tanhf, "tanhf", pcbm_f2u(tanh_pts[i]) - R, 2 * R);
        check_run(pcbm_tanhf, "tanhf", pcbm_f2u(-tanh_pts[i]) - R, 2 * R);
    }
    /* coarse sweeps over the whole ranges (every 997th float) */
    float prev = pcbm_expf(-104.0f);
    for (uint32_t u = pcbm_f2u(-104.0f); u > 0x80000000u + 997u; u -= 997) {
        float y = pcbm_expf(pcbm_u2f(u));
        assert_true(y >= prev);
        prev = y;
    }
    for (uint32_t u = 0; u < pcbm_f2u(89.0f); u += 997) {
        float y = pcbm_expf(pcbm_u2f(u));
        assert_true(y >= prev);
        prev = y;
    }
    prev = 0;
    for (uint32_t u = 0; u < 0x7f800000u; u += 997) {
        float y = pcbm_tanhf(pcbm_u2f(u));
        assert_true(y >= prev);
        prev = y;
    }
}

static void test_ulp_sample(void **state)
{
    (void)state;
    double emax = 0, tmax = 0;
    for (int i = 0; i < 2000000; i++) {
        /* exp: half uniform in value over [-104, 89] (PCB uses [0, 64]), half random bits */
        float x = (i & 1) ? rnd_uniform(-104.0f, 89.0f) : pcbm_u2f((uint32_t)rnd());
        if (!(x >= -104.0f && x <= 89.0f))
            x = rnd_uniform(0.0f, 64.0f);
        double e = ulp_err(pcbm_expf(x), expl((long double)x));
        if (e > emax)
            emax = e;
        if (e > EXP_MAX_ULP)
            fail_msg("expf(%.9g = 0x%08x): %.4f ulp", (double)x, pcbm_f2u(x), e);
        /* tanh: uniform over [-12, 12] and random finite bit patterns */
        float t = (i & 1) ? rnd_uniform(-12.0f, 12.0f) : pcbm_u2f((uint32_t)rnd());
        if (!isfinite(t))
            continue;
        e = ulp_err(pcbm_tanhf(t), tanhl((long double)t));
        if (e > tmax)
            tmax = e;
        if (e > TANH_MAX_ULP)
            fail_msg("tanhf(%.9g = 0x%08x): %.4f ulp", (double)t, pcbm_f2u(t), e);
    }
    print_message("sample max error: expf %.4f ulp, tanhf %.4f ulp\n", emax, tmax);
}

/* Every path against the scalar functions, bit for bit: random bits (NaNs, Infs, subnormals
 * included), values spread over the used ranges, every length 0..67 at every float offset 0..15,
 * and in place. */
static void test_paths_identical(void **state)
{
    (void)state;
    enum { N = 1 << 21 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *ref = malloc(N * sizeof *ref);
    assert_non_null(x && y && ref);
    for (int fn = 0; fn < 2; fn++) {
        float (*f)(float) = fn ? pcbm_tanhf : pcbm_expf;
        void (*fn_n)(const float *, float *, unsigned long) = fn ? pcbm_tanhf_n : pcbm_expf_n;
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < N; i++) {
                if (round == 0)
                    x[i] = pcbm_u2f((uint32_t)rnd());
                else
                    x[i] = fn ? rnd_uniform(-11.0f, 11.0f) : rnd_uniform(-105.0f, 90.0f);
                ref[i] = f(x[i]);
            }
            for (int lv = 0; lv <= (int)pcbm_cpu_detect(); lv++) {
                pcbm_cpu_level_set((pcbm_cpu_level)lv);
                memset(y, 0, N * sizeof *y);
                fn_n(x, y, N);
                for (size_t i = 0; i < N; i++)
                    if (pcbm_f2u(y[i]) != pcbm_f2u(ref[i]))
                        fail_msg("%s path %s at 0x%08x: 0x%08x, scalar 0x%08x", fn ? "tanhf" : "expf",
                                 pcbm_cpu_level_name((pcbm_cpu_level)lv), pcbm_f2u(x[i]), pcbm_f2u(y[i]),
                                 pcbm_f2u(ref[i]));
            }
        }
        for (int lv = 0; lv <= (int)pcbm_cpu_detect(); lv++) {
            pcbm_cpu_level_set((pcbm_cpu_level)lv);
            for (unsigned long n = 0; n <= 67; n++)
                for (int off = 0; off < 16; off++) {
                    for (int i = 0; i < 100; i++)
                        y[i] = -7.0f;
                    fn_n(x + off, y + 16 - off, n);
                    for (unsigned long i = 0; i < n; i++)
                        assert_int_equal(pcbm_f2u(y[16 - off + i]), pcbm_f2u(ref[off + i]));
                    assert_int_equal(pcbm_f2u(y[16 - off + n]), pcbm_f2u(-7.0f)); /* no overrun */
                    if (off > 0)
                        assert_int_equal(pcbm_f2u(y[16 - off - 1]), pcbm_f2u(-7.0f));
                }
            memcpy(y, x, 4096 * sizeof *y);
            fn_n(y, y, 4096); /* in place */
            assert_memory_equal(y, ref, 4096 * sizeof *y);
        }
    }
    pcbm_cpu_level_set(pcbm_cpu_detect());
    free(x);
    free(y);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_specials),
        cmocka_unit_test(test_exp_subnormal_results),
        cmocka_unit_test(test_tanh_specials),
        cmocka_unit_test(test_tanh_odd),
        cmocka_unit_test(test_monotonic),
        cmocka_unit_test(test_ulp_sample),
        cmocka_unit_test(test_paths_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

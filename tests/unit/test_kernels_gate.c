/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_kernels_gate.c — cmocka tests of the gates of the PCB kernels (kernels/mkern_impl.h): the
 * thresholds are sound (every |tau| of a level and every y at or below its threshold scores at
 * most the bound; the factor table is a lower bound) and as high as they can be, and the kernels
 * that use them (pcb_apply_task, stream_full) give the scalar definition's bits on inputs built
 * to sit on the gates' edges: |tau| at the ends of every level, tau * sum within a few ulps of
 * every threshold, scores around the window's ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/cpu.h"
#include "kernels/dmath.h"
#include "kernels/mkern.h"
#include "kernels/mkern_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#include "test_rng.h"
static double rnd01(void) { return (double)(rnd() >> 11) * 0x1p-53; }

/* (lo, hi, nf, bound, hi2): a real merge's values, lo > 0, nf = 0, a large nf, bound 0, a
 * bound above every score, hi2 = hi, no hi2 */
static const float gates[][5] = {
    {0.0f, 0.0302734f, 3.0f, 1.91331e-06f, 0.0332f}, {0.001f, 0.02f, 5.0f, 3e-4f, 0.021f},
    {0.0f, 0.03f, 0.0f, 1e-6f, 0.04f},               {0.0f, 0.5f, 40.0f, 1e-3f, 0.6f},
    {0.0f, 0.03f, 3.0f, 0.0f, 0.031f},               {0.0f, 0.03f, 3.0f, 100.0f, 0.031f},
    {0.002f, 0.03f, 2.0f, 2e-6f, 0.03f},             {0.0f, 0.03f, 3.0f, 2e-6f, NAN},
};
#define NGATES (sizeof gates / sizeof gates[0])

static float x_of(float a, float lo, float hi)
{
    float den = hi - lo, c = fminf(fmaxf(a, lo), hi);
    return den > 0.0f ? (c - lo) / den : 0.0f;
}
static float factor(float a, float lo, float hi, float nf)
{
    float x = x_of(a, lo, hi);
    return pcbm_expf(nf * (x * x));
}
/* the level as the vector forms compute it */
static unsigned level(float a, float scale, unsigned L)
{
    float v = a * scale;
    uint32_t i = (v > -2147483648.0f && v < 2147483648.0f) ? (uint32_t)(int32_t)v : 0x80000000u;
    return i < L - 1 ? (unsigned)i : L - 1;
}
/* the smallest |tau| of level j (0 for level 0) */
static float level_start(unsigned j, float scale, unsigned L)
{
    if (j == 0)
        return 0.0f;
    float a = (float)j / scale;
    while (level(a, scale, L) < j)
        a = nextafterf(a, INFINITY);
    while (a > 0.0f && level(nextafterf(a, 0.0f), scale, L) >= j)
        a = nextafterf(a, 0.0f);
    return a;
}

static void check_levels(const float *g, unsigned L, float scale, const float *y, const float *e)
{
    float lo = g[0], hi = g[1], nf = g[2], bound = g[3], hi2 = g[4];
    for (unsigned j = 0; j < L; j++) {
        if (j > 0)
            assert_true(y[j] <= y[j - 1]);
        float a0 = level_start(j, scale, L);
        float a1 = j + 1 < L ? level_start(j + 1, scale, L) : INFINITY;
        float in[6] = {a0, nextafterf(a0, INFINITY), j + 1 < L ? nextafterf(a1, 0.0f) : hi,
                       j + 1 < L ? a0 + (a1 - a0) * 0.5f : 1e30f, INFINITY, 0.0f};
        for (int q = 0; q < 6; q++) {
            float a = in[q];
            if (level(a, scale, L) != j)
                continue;
            float ys[5] = {y[j], nextafterf(y[j], 0.0f), y[j] * 0.5f, 0.0f, -y[j]};
            for (int r = 0; r < 5; r++) {
                if (isinf(ys[r]) && r > 0)
                    continue;
                float s = factor(a, lo, hi, nf) * pcbm_tanhf(ys[r]);
                if (!(s <= bound))
                    fail_msg("gate (%g %g %g %g) L %u level %u |tau| %a y %a: score %a > bound",
                             lo, hi, nf, bound, L, j, a, ys[r], s);
            }
            if (hi2 == hi2)
                assert_true(factor(a, lo, hi2, nf) >= e[j]);
        }
        /* as high as it can be: just above y, the level's largest factor passes the bound */
        float top = j + 1 < L ? factor(a1, lo, hi, nf) : factor(hi, lo, hi, nf);
        if (!isinf(y[j]))
            assert_true(top * pcbm_tanhf(nextafterf(y[j], INFINITY)) > bound);
    }
}

static void test_gate_bounds(void **s)
{
    (void)s;
    for (size_t p = 0; p < NGATES; p++) {
        const float *g = gates[p];
        const pcbm_k_gate *gt = pcbm_k_gate_get(g[0], g[1], g[2], g[3], g[4]);
        assert_non_null(gt);
        assert_ptr_equal(gt, pcbm_k_gate_get(g[0], g[1], g[2], g[3], g[4])); /* memoized */
        check_levels(g, PCBM_GATE_L16, gt->scale32, gt->y32, gt->e32);
        check_levels(g, PCBM_GATE_L8, gt->scale8, gt->y8, gt->e8);
    }
    /* no gate: NaN or infinite bounds, hi <= 0, nf out of range, negative bound */
    assert_null(pcbm_k_gate_get(NAN, 0.03f, 3.0f, 1e-6f, NAN));
    assert_null(pcbm_k_gate_get(0.0f, INFINITY, 3.0f, 1e-6f, NAN));
    assert_null(pcbm_k_gate_get(0.0f, 0.0f, 3.0f, 1e-6f, NAN));
    assert_null(pcbm_k_gate_get(0.0f, 0.03f, 88.0f, 1e-6f, NAN));
    assert_null(pcbm_k_gate_get(0.0f, 0.03f, 3.0f, -1e-6f, NAN));
    assert_null(pcbm_k_gate_get(0.0f, 0.03f, 3.0f, 1e-6f, INFINITY));
}

/* ---- the kernels on the gates' edges ------------------------------------------------------ */

#define CAP 2100
static float tau[CAP], sum[CAP];

/* Elements whose |tau| sits at the ends of the levels of (lo, hi) and whose tau * sum lies
 * within a few ulps of the level's threshold for bound (or of a score near target, scaled by the
 * factor at hi2), with random signs, zeros and, when special, Inf and NaN. */
static void fill_edges(float lo, float hi, float nf, float bound, float hi2, bool special)
{
    const pcbm_k_gate *g = pcbm_k_gate_get(lo, hi, nf, bound, hi2);
    for (size_t k = 0; k < CAP; k++) {
        bool wide = (rnd() & 1) != 0;
        unsigned L = wide ? PCBM_GATE_L16 : PCBM_GATE_L8;
        float scale = g ? (wide ? g->scale32 : g->scale8) : (float)L / hi;
        unsigned j = (unsigned)(rnd() % L);
        float a0 = level_start(j, scale, L), a1 = j + 1 < L ? level_start(j + 1, scale, L) : hi;
        float a = (rnd() & 1) ? a0 : (rnd() & 1) ? nextafterf(a1, 0.0f) : a0 + (a1 - a0) * (float)rnd01();
        float y = g ? (wide ? g->y32[j] : g->y8[j]) : bound;
        if (isinf(y) || (rnd() & 3) == 0) /* a score around the bound or the window's top */
            y = (float)(bound * (0.5 + rnd01())) / factor(a, lo, (rnd() & 1) ? hi : hi2, nf);
        for (int u = (int)(rnd() % 7) - 3; u != 0; u += u > 0 ? -1 : 1)
            y = nextafterf(y, u > 0 ? INFINITY : 0.0f);
        float t = (rnd() & 1) ? a : -a;
        tau[k] = t;
        sum[k] = t != 0.0f ? y / t : (float)rnd01();
        unsigned r = (unsigned)(rnd() % 64);
        if (r == 0)
            tau[k] = -0.0f;
        else if (r == 1)
            sum[k] = 0.0f;
        else if (special && r == 2)
            tau[k] = (rnd() & 1) ? INFINITY : -INFINITY;
        else if (special && r == 3)
            sum[k] = NAN;
        else if (special && r == 4)
            tau[k] = NAN;
    }
}

static void at(int lv) { pcbm_cpu_level_set_thread((pcbm_cpu_level)lv); }

static void same_bits(const float *a, const float *b, size_t n, const char *what, int lv)
{
    for (size_t k = 0; k < n; k++)
        if (pcbm_f2u(a[k]) != pcbm_f2u(b[k]) && !(a[k] != a[k] && b[k] != b[k]))
            fail_msg("%s, path %s, element %zu: 0x%08x, scalar 0x%08x", what,
                     pcbm_cpu_level_name((pcbm_cpu_level)lv), k, pcbm_f2u(b[k]), pcbm_f2u(a[k]));
}

static void test_apply_edges(void **s)
{
    (void)s;
    static float num[2][CAP], den[2][CAP];
    for (size_t p = 0; p < NGATES; p++)
        for (int special = 0; special < 2; special++) {
            const float *g = gates[p];
            float lo = g[0], hi = g[1], nf = g[2], t = g[3], m = 3.0f;
            fill_edges(lo, hi, nf, t, g[4], special);
            for (int lv = 1; lv <= (int)pcbm_cpu_detect(); lv++)
                for (int first = 0; first < 2; first++)
                    for (size_t off = 0; off < 4; off += 3) {
                        size_t n = CAP - off;
                        uint64_t kept[2];
                        for (int q = 0; q < 2; q++) {
                            for (size_t k = 0; k < n; k++) {
                                num[q][k] = (float)(k % 5) * 1e-3f;
                                den[q][k] = (float)(k % 3);
                            }
                            at(q ? lv : PCBM_CPU_SCALAR);
                            kept[q] = pcbm_k_pcb_apply_task(tau + off, sum + off, lo, hi, nf, t, m,
                                                            1.25f, first, num[q], den[q], n);
                        }
                        same_bits(num[0], num[1], n, "pcb_apply_task num", lv);
                        same_bits(den[0], den[1], n, "pcb_apply_task den", lv);
                        assert_int_equal(kept[0], kept[1]);
                    }
        }
    pcbm_cpu_level_set_thread(PCBM_CPU_LEVEL_COUNT);
}

static void test_stream_full_edges(void **s)
{
    (void)s;
    static float out[2][3][CAP];
    static uint32_t idx[2][CAP + 16];
    for (size_t p = 0; p < NGATES; p++)
        for (int special = 0; special < 2; special++) {
            const float *g = gates[p];
            float lo = g[0], ha = g[1], nf = g[2], wl = g[3] > 0.0f ? g[3] : 1e-6f;
            float hb = g[4] == g[4] ? g[4] : ha;
            /* windows: narrow, wide, one above every score; track below wl (no gate) and above */
            const float win[][2] = {{wl, wl * 1.001f}, {wl, wl * 3.0f}, {wl, wl}};
            const float track[] = {wl * 0.5f, wl, 2.0f};
            fill_edges(lo, ha, nf, nextafterf(wl, 0.0f), hb, special);
            for (int lv = 1; lv <= (int)pcbm_cpu_detect(); lv++)
                for (size_t w = 0; w < 3; w++)
                    for (size_t r = 0; r < 3; r++) {
                        size_t n = CAP - 3, m[2];
                        uint64_t below[2] = {7, 7};
                        for (int q = 0; q < 2; q++) {
                            at(q ? lv : PCBM_CPU_SCALAR);
                            m[q] = pcbm_k_stream_full(tau + 3, sum + 3, lo, ha, hb, nf, win[w][0],
                                                      win[w][1], track[r], n, out[q][0], out[q][1],
                                                      out[q][2], idx[q], &below[q]);
                        }
                        assert_int_equal(m[0], m[1]);
                        assert_memory_equal(idx[0], idx[1], m[0] * sizeof idx[0][0]);
                        assert_int_equal(below[0], below[1]);
                        for (size_t j = 0; j < m[0]; j++)
                            for (int q = 0; q < 3; q++)
                                same_bits(&out[0][q][idx[0][j]], &out[1][q][idx[0][j]], 1,
                                          "stream_full", lv);
                    }
        }
    pcbm_cpu_level_set_thread(PCBM_CPU_LEVEL_COUNT);
}

int main(void)
{
    if (pcbm_cpu_detect() == PCBM_CPU_SCALAR)
        printf("note: this CPU has no vector path; the kernel tests compare scalar with itself\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_bounds),
        cmocka_unit_test(test_apply_edges),
        cmocka_unit_test(test_stream_full_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

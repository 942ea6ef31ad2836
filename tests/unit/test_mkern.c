/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_mkern.c — cmocka tests of the merge kernels (kernels/mkern.h): every AVX2 / AVX-512 form
 * against the scalar definition, bit for bit, on random task vectors with exact zeros, ties,
 * signed zeros, subnormals, Inf and NaN, for every length from 0 to 70 and a full tile, at odd
 * offsets, with parameters that include the degenerate ones (hi = lo, m = t, NaN bounds).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/mkern.h"
#include "stats/qsel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAP 1100
#define NT 5

#define TEST_RNG_SEED 0x9e3779b97f4a7c15ull
#include "test_rng.h"


/* A task-vector-like value: mostly small bf16-rounded numbers (ties), some zeros of both signs,
 * and (when special) Inf, NaN, subnormals and large values. */
static float value(bool special)
{
    unsigned r = (unsigned)(rnd() % 100);
    if (r < 8)
        return (rnd() & 1) ? 0.0f : -0.0f;
    if (special && r < 14) {
        static const uint32_t sp[] = {0x7fc00000u, 0xffc00000u, 0x7f800000u, 0xff800000u,
                                      0x00000001u, 0x80400000u, 0x7e000000u, 0x3f800000u};
        return pcbm_u2f(sp[rnd() % 8]);
    }
    float x = (float)((double)(rnd() >> 11) * 0x1p-53 - 0.5) * 0.08f;
    if (r < 60)
        x = pcbm_bf16_to_f32(pcbm_f32_to_bf16(x));
    return x;
}

static float tau[NT][CAP], theta[NT][CAP], base[CAP], sum[CAP];
static float a_out[5][CAP], b_out[5][CAP];
static uint8_t keep[CAP];

/* round 0: small task vectors as in real checkpoints (products of two below 2^-13, the
 * shortcut of tanh); rounds 1 and 2: larger ones, with special values */
static void fill(int round)
{
    bool special = round > 0;
    float scale = round == 0 ? 0.02f : 1.0f;
    for (size_t k = 0; k < CAP; k++) {
        base[k] = value(special) * 10.0f;
        keep[k] = (rnd() & 3) != 0;
        float s = 0.0f;
        for (int i = 0; i < NT; i++) {
            tau[i][k] = value(special) * scale;
            theta[i][k] = base[k] + tau[i][k];
            s += tau[i][k];
        }
        sum[k] = s;
    }
}

/* Bit identity; two NaNs count as equal: which NaN an operation on two NaNs returns depends on
 * the operand order the compiler picks (x86 returns the first), and C lets it commute a * b. */
static void same_bits(const float *a, const float *b, size_t n, const char *what, int lv)
{
    for (size_t k = 0; k < n; k++)
        if (pcbm_f2u(a[k]) != pcbm_f2u(b[k]) && !(a[k] != a[k] && b[k] != b[k]))
            fail_msg("%s, path %s, n %zu, element %zu: 0x%08x, scalar 0x%08x", what,
                     pcbm_cpu_level_name((pcbm_cpu_level)lv), n, k, pcbm_f2u(b[k]), pcbm_f2u(a[k]));
}

static const size_t lens[] = {0, 1, 7, 8, 15, 16, 17, 31, 33, 64, 70, 1024, 1090};
#define NLENS (sizeof lens / sizeof lens[0])

/* Run fn at every level above scalar and at every length and offset 0/3; fn(level, n, off)
 * compares with the scalar result itself. */
typedef void (*case_fn)(int lv, size_t n, size_t off);
static void every_path(case_fn fn)
{
    for (int round = 0; round < 3; round++) {
        fill(round);
        for (size_t li = 0; li < NLENS; li++)
            for (size_t off = 0; off < 4; off += 3) {
                if (lens[li] + off > CAP)
                    continue;
                for (int lv = 1; lv <= (int)pcbm_cpu_detect(); lv++)
                    fn(lv, lens[li], off);
            }
    }
    pcbm_cpu_level_set_thread(PCBM_CPU_LEVEL_COUNT);
}

static void at(int lv) { pcbm_cpu_level_set_thread((pcbm_cpu_level)lv); }

/* ---- cases ----------------------------------------------------------------------------- */

static void c_tau(int lv, size_t n, size_t off)
{
    static const pcbm_dtype dts[] = {PCBM_DT_BF16, PCBM_DT_F16, PCBM_DT_F32};
    uint8_t raw[4 * CAP + 4];
    for (int d = 0; d < 3; d++) {
        for (size_t k = 0; k < n; k++) {
            float v = theta[d][k + off];
            uint32_t u = pcbm_f2u(v);
            uint16_t h = dts[d] == PCBM_DT_BF16 ? (uint16_t)(u >> 16) : pcbm_f32_to_f16(v);
            if (dts[d] == PCBM_DT_F32)
                memcpy(raw + 1 + 4 * k, &u, 4);
            else
                memcpy(raw + 1 + 2 * k, &h, 2);
        }
        at(PCBM_CPU_SCALAR);
        bool fa = pcbm_k_tau(dts[d], raw + 1, base + off, a_out[0], a_out[1], n);
        at(lv);
        bool fb = pcbm_k_tau(dts[d], raw + 1, base + off, b_out[0], b_out[1], n);
        same_bits(a_out[0], b_out[0], n, "tau: theta", lv);
        same_bits(a_out[1], b_out[1], n, "tau: tau", lv);
        assert_int_equal(fa, fb);
        bool fc = pcbm_k_tau(dts[d], raw + 1, base + off, NULL, b_out[2], n); /* no theta */
        same_bits(a_out[1], b_out[2], n, "tau without theta", lv);
        assert_int_equal(fa, fc);
        at(PCBM_CPU_SCALAR);
        fc = pcbm_k_tau(dts[d], raw + 1, base + off, NULL, b_out[2], n);
        same_bits(a_out[1], b_out[2], n, "tau without theta, scalar", lv);
        assert_int_equal(fa, fc);
        at(PCBM_CPU_SCALAR);
        fa = pcbm_k_nonfinite(a_out[0], n);
        at(lv);
        assert_int_equal(fa, pcbm_k_nonfinite(a_out[0], n));
    }
}

static const float *rows(float (*m)[CAP], size_t off, const float **p, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = m[i] + off;
    return p[0];
}

static void c_sums(int lv, size_t n, size_t off)
{
    const float *p[NT];
    rows(tau, off, p, NT);
    float lam[NT] = {0.5f, 1.25f, -0.3f, 2.0f, 0.7f};
    for (int N = 1; N <= NT; N++) {
        at(PCBM_CPU_SCALAR);
        pcbm_k_sum(p, (unsigned)N, a_out[0], n);
        pcbm_k_task_sum(p, (unsigned)N, NULL, 0.7f, base + off, a_out[1], n);
        pcbm_k_task_sum(p, (unsigned)N, lam, 0.0f, base + off, a_out[2], n);
        pcbm_k_linear(p, (unsigned)N, lam, 3.3f, a_out[3], n);
        at(lv);
        pcbm_k_sum(p, (unsigned)N, b_out[0], n);
        pcbm_k_task_sum(p, (unsigned)N, NULL, 0.7f, base + off, b_out[1], n);
        pcbm_k_task_sum(p, (unsigned)N, lam, 0.0f, base + off, b_out[2], n);
        pcbm_k_linear(p, (unsigned)N, lam, 3.3f, b_out[3], n);
        same_bits(a_out[0], b_out[0], n, "sum", lv);
        same_bits(a_out[1], b_out[1], n, "task_sum", lv);
        same_bits(a_out[2], b_out[2], n, "task_sum lambdas", lv);
        same_bits(a_out[3], b_out[3], n, "linear", lv);
    }
    /* axpy (LoRA's ΔW rows): several updates in turn, as the rank loop does */
    at(PCBM_CPU_SCALAR);
    memcpy(a_out[4], base + off, n * sizeof(float));
    for (int i = 0; i < NT; i++)
        pcbm_k_axpy(a_out[4], lam[i], p[i], n);
    at(lv);
    memcpy(b_out[4], base + off, n * sizeof(float));
    for (int i = 0; i < NT; i++)
        pcbm_k_axpy(b_out[4], lam[i], p[i], n);
    same_bits(a_out[4], b_out[4], n, "axpy", lv);
    for (size_t k = 0; k < n; k++) { /* one rounding per product and per sum, no FMA */
        float want = base[off + k];
        for (int i = 0; i < NT; i++) {
            volatile float prod = lam[i] * p[i][k];
            want = want + prod;
        }
        if (want != want) /* which NaN comes out depends on the compiler's operand order */
            assert_true(a_out[4][k] != a_out[4][k]);
        else
            assert_memory_equal(&want, &a_out[4][k], sizeof want);
    }
}

static void c_max_hist(int lv, size_t n, size_t off)
{
    static uint64_t ha[PCBM_QBINS], hb[PCBM_QBINS];
    static const float starts[] = {-INFINITY, 0.0f, -0.0f, 0.001f, NAN};
    float zeros[CAP];
    for (size_t k = 0; k < n; k++)
        zeros[k] = (k * 7 + off) % 3 == 0 ? -0.0f : ((k % 5) == 0 ? 0.0f : -1.0f);
    for (int s = 0; s < 5; s++) {
        at(PCBM_CPU_SCALAR);
        float ma = pcbm_k_max(tau[1] + off, n, starts[s]), za = pcbm_k_max(zeros, n, starts[s]);
        at(lv);
        float mb = pcbm_k_max(tau[1] + off, n, starts[s]), zb = pcbm_k_max(zeros, n, starts[s]);
        assert_int_equal(pcbm_f2u(ma), pcbm_f2u(mb));
        assert_int_equal(pcbm_f2u(za), pcbm_f2u(zb));
    }
    for (int absval = 0; absval < 2; absval++) {
        memset(ha, 0, sizeof ha);
        memset(hb, 0, sizeof hb);
        at(PCBM_CPU_SCALAR);
        pcbm_k_hist_coarse(tau[2] + off, n, absval, 3, ha);
        at(lv);
        pcbm_k_hist_coarse(tau[2] + off, n, absval, 3, hb);
        assert_memory_equal(ha, hb, sizeof ha);
        uint32_t prefix = n ? pcbm_fkey(absval ? fabsf(tau[2][off]) : tau[2][off]) >> 16 : 0;
        at(PCBM_CPU_SCALAR);
        pcbm_k_hist_fine(tau[2] + off, n, absval, prefix, ha);
        at(lv);
        pcbm_k_hist_fine(tau[2] + off, n, absval, prefix, hb);
        assert_memory_equal(ha, hb, sizeof ha);
    }
}

static void c_win(int lv, size_t n, size_t off)
{
    static uint64_t wa[2][1 << 16], wb[2][1 << 16];
    uint64_t ba[2] = {0, 0}, bb[2] = {0, 0};
    memset(wa, 0, sizeof wa);
    memset(wb, 0, sizeof wb);
    uint32_t k0 = pcbm_fkey(0.0f) >> 16, k1 = pcbm_fkey(0.01f) >> 16;
    pcbm_k_win a1 = {k0, k0 + 1, 1, wa[0], &ba[0]}, a2 = {k1 - 3, k1 + 40, 6, wa[1], &ba[1]};
    pcbm_k_win b1 = {k0, k0 + 1, 1, wb[0], &bb[0]}, b2 = {k1 - 3, k1 + 40, 6, wb[1], &bb[1]};
    at(PCBM_CPU_SCALAR);
    pcbm_k_win_count(tau[3] + off, n, &a1, &a2);
    at(lv);
    pcbm_k_win_count(tau[3] + off, n, &b1, &b2);
    assert_memory_equal(wa, wb, sizeof wa);
    assert_memory_equal(ba, bb, sizeof ba);
}

/* (lo, hi, t, m) sets: usual, hi = lo, m = t, m < t, NaN and Inf bounds */
static const float params[][4] = {
    {0.0f, 0.03f, 2e-6f, 17.0f}, {0.001f, 0.02f, -0.5f, 0.9f}, {0.01f, 0.01f, 0.0f, 1.0f},
    {0.0f, 0.03f, 0.5f, 0.5f},   {0.0f, 0.03f, 1.0f, 0.5f},    {NAN, 0.03f, 0.0f, 1.0f},
    {0.0f, NAN, 0.0f, 1.0f},     {0.0f, INFINITY, 0.0f, INFINITY}, {0.0f, 0.03f, NAN, 1.0f},
};
#define NPARAMS (sizeof params / sizeof params[0])

static void c_pcb(int lv, size_t n, size_t off)
{
    for (size_t p = 0; p < NPARAMS; p++) {
        float lo = params[p][0], hi = params[p][1], t = params[p][2], m = params[p][3];
        for (int first = 0; first < 2; first++) {
            uint64_t ka, kb;
            for (size_t k = 0; k < n; k++) {
                a_out[2][k] = b_out[2][k] = value(true);
                a_out[3][k] = b_out[3][k] = fabsf(value(false));
            }
            at(PCBM_CPU_SCALAR);
            pcbm_k_pcb_score(tau[0] + off, sum + off, lo, hi, 5.0f, a_out[0], n);
            ka = pcbm_k_pcb_apply_task(tau[1] + off, sum + off, lo, hi, 3.0f, t, m, 1.5f, first,
                                       a_out[2], a_out[3], n);
            pcbm_k_pcb_apply_finish(base + off, a_out[2], a_out[3], a_out[1], n);
            at(lv);
            pcbm_k_pcb_score(tau[0] + off, sum + off, lo, hi, 5.0f, b_out[0], n);
            kb = pcbm_k_pcb_apply_task(tau[1] + off, sum + off, lo, hi, 3.0f, t, m, 1.5f, first,
                                       b_out[2], b_out[3], n);
            pcbm_k_pcb_apply_finish(base + off, b_out[2], b_out[3], b_out[1], n);
            same_bits(a_out[0], b_out[0], n, "pcb_score", lv);
            same_bits(a_out[2], b_out[2], n, "pcb_apply_task num", lv);
            same_bits(a_out[3], b_out[3], n, "pcb_apply_task den", lv);
            same_bits(a_out[1], b_out[1], n, "pcb_apply_finish", lv);
            assert_int_equal(ka, kb);
        }
    }
}

static void c_stream(int lv, size_t n, size_t off)
{
    for (size_t p = 0; p < NPARAMS; p++) {
        float lo = params[p][0], ha = params[p][1], hb = ha * 1.1f;
        at(PCBM_CPU_SCALAR);
        pcbm_k_stream_scores(tau[4] + off, sum + off, lo, ha, hb, 5.0f, a_out[0], a_out[1],
                             a_out[2], n);
        pcbm_k_scores_at(tau[3] + off, a_out[2], lo, hb, 5.0f, a_out[3], n);
        at(lv);
        pcbm_k_stream_scores(tau[4] + off, sum + off, lo, ha, hb, 5.0f, b_out[0], b_out[1],
                             b_out[2], n);
        pcbm_k_scores_at(tau[3] + off, a_out[2], lo, hb, 5.0f, b_out[3], n);
        same_bits(a_out[0], b_out[0], n, "stream_scores sa", lv);
        same_bits(a_out[1], b_out[1], n, "stream_scores sb", lv);
        same_bits(a_out[2], b_out[2], n, "stream_scores z", lv);
        same_bits(a_out[3], b_out[3], n, "scores_at", lv);
        float his[CAP];
        for (size_t k = 0; k < n; k++)
            his[k] = k % 7 == 6 ? params[(p + k) % NPARAMS][1] : ha * (1.0f + 0.01f * (float)(k % 9));
        at(PCBM_CPU_SCALAR);
        pcbm_k_scores_at_hi(tau[3] + off, a_out[2], lo, his, 5.0f, a_out[3], n);
        at(lv);
        pcbm_k_scores_at_hi(tau[3] + off, a_out[2], lo, his, 5.0f, b_out[3], n);
        same_bits(a_out[3], b_out[3], n, "scores_at_hi", lv);
        static const float win[][3] = {{-0.1f, 0.2f, 0.5f}, {0.0f, 0.0f, -INFINITY},
                                       {-1.0f, 1.0f, 2.0f}, {0.01f, 0.3f, 0.1f}};
        for (int w = 0; w < 4; w++) {
            uint32_t ia[CAP + 16], ib[CAP + 16];
            uint64_t bla = 5, blb = 5;
            at(PCBM_CPU_SCALAR);
            size_t na = pcbm_k_stream_select(a_out[0], a_out[1], win[w][0], win[w][1], win[w][2],
                                             n, ia, &bla);
            at(lv);
            size_t nb = pcbm_k_stream_select(a_out[0], a_out[1], win[w][0], win[w][1], win[w][2],
                                             n, ib, &blb);
            assert_int_equal(na, nb);
            assert_memory_equal(ia, ib, na * sizeof ia[0]);
            assert_int_equal(bla, blb);
        }
    }
}

static void c_stream_full(int lv, size_t n, size_t off)
{
    static const float b[][3] = {{0.0f, 0.03f, 0.033f}, {0.001f, 0.02f, 0.025f},
                                 {0.0f, 0.01f, 0.01f},  {0.0f, 0.03f, 0.02f},
                                 {0.01f, 0.01f, 0.02f}, {NAN, 0.03f, 0.04f}};
    static const float win[][3] = {{1e-3f, 2e-3f, 0.05f}, {1e-4f, 0.05f, 0.3f},
                                   {1e-5f, 1e-3f, 0.0f},  {-0.1f, 0.2f, 0.5f},
                                   {1e-3f, 2e-3f, -INFINITY}, {0.002f, 0.001f, 10.0f}};
    for (size_t p = 0; p < sizeof b / sizeof b[0]; p++)
        for (size_t w = 0; w < sizeof win / sizeof win[0]; w++) {
            uint32_t ia[CAP + 16], ib[CAP + 16];
            uint64_t bla = 3, blb = 3;
            at(PCBM_CPU_SCALAR);
            size_t na = pcbm_k_stream_full(tau[2] + off, sum + off, b[p][0], b[p][1], b[p][2],
                                           5.0f, win[w][0], win[w][1], win[w][2], n, a_out[0],
                                           a_out[1], a_out[2], ia, &bla);
            at(lv);
            size_t nb = pcbm_k_stream_full(tau[2] + off, sum + off, b[p][0], b[p][1], b[p][2],
                                           5.0f, win[w][0], win[w][1], win[w][2], n, b_out[0],
                                           b_out[1], b_out[2], ib, &blb);
            assert_int_equal(na, nb);
            assert_memory_equal(ia, ib, na * sizeof ia[0]);
            assert_int_equal(bla, blb);
            for (size_t j = 0; j < na; j++)
                for (int q = 0; q < 3; q++)
                    same_bits(&a_out[q][ia[j]], &b_out[q][ia[j]], 1, "stream_full", lv);
        }
}

static void c_ties(int lv, size_t n, size_t off)
{
    static const float thr[] = {0.0f, 0.01f, 0.03f, NAN, INFINITY};
    static const float maj[] = {1.0f, -1.0f, 0.0f};
    const float *p[NT];
    for (int s = 0; s < 5; s++) {
        at(PCBM_CPU_SCALAR);
        uint64_t ka = pcbm_k_trim(tau[0] + off, thr[s], a_out[0], n);
        pcbm_k_dare_scale(tau[1] + off, keep + off, 0.3f, a_out[1], n);
        at(lv);
        uint64_t kb = pcbm_k_trim(tau[0] + off, thr[s], b_out[0], n);
        pcbm_k_dare_scale(tau[1] + off, keep + off, 0.3f, b_out[1], n);
        assert_int_equal(ka, kb);
        same_bits(a_out[0], b_out[0], n, "trim", lv);
        same_bits(a_out[1], b_out[1], n, "dare_scale", lv);
    }
    rows(tau, off, p, NT);
    for (int N = 1; N <= NT; N++)
        for (int j = 0; j < 3; j++) {
            int64_t pa = 0, na = 0, pb = 0, nb = 0;
            at(PCBM_CPU_SCALAR);
            pcbm_k_sign_votes(p, (unsigned)N, n, &pa, &na);
            pcbm_k_ties_apply(p, (unsigned)N, base + off, maj[j], 0.8f, a_out[2], n);
            at(lv);
            pcbm_k_sign_votes(p, (unsigned)N, n, &pb, &nb);
            pcbm_k_ties_apply(p, (unsigned)N, base + off, maj[j], 0.8f, b_out[2], n);
            assert_int_equal(pa, pb);
            assert_int_equal(na, nb);
            same_bits(a_out[2], b_out[2], n, "ties_apply", lv);
        }
}

/* The cheaper vector forms of exp and tanh (kernels/dmath_simd.h) against the scalar definitions:
 * exp on [0, 87] (every 61st float; tools/ulp-check style exhaustive run: 0 differences), tanh
 * below TANH_POLY and below 2^-13 (where it is the identity). */
#if defined(__x86_64__) && defined(__GNUC__)
#include "kernels/dmath.h"
#include "kernels/dmath_simd.h"
__attribute__((target("avx2,avx512f,avx512bw,avx512dq,avx512vl"))) static void
exp_forms_avx512(uint32_t lo, uint32_t hi, uint32_t step)
{
    for (uint32_t u = lo; u <= hi; u += 16 * step) {
        float x[16], y[16], t[16];
        for (int j = 0; j < 16; j++)
            x[j] = pcbm_u2f(u + (uint32_t)j * step > hi ? hi : u + (uint32_t)j * step);
        _mm512_storeu_ps(y, expf16_avx512_nonneg(_mm512_loadu_ps(x)));
        _mm512_storeu_ps(t, tanhf16_avx512_small(_mm512_loadu_ps(x)));
        for (int j = 0; j < 16; j++) {
            assert_int_equal(pcbm_f2u(y[j]), pcbm_f2u(pcbm_expf(x[j])));
            if (x[j] < 0.625f)
                assert_int_equal(pcbm_f2u(t[j]), pcbm_f2u(pcbm_tanhf(x[j])));
            if (x[j] < 0x1p-13f)
                assert_int_equal(pcbm_f2u(x[j]), pcbm_f2u(pcbm_tanhf(x[j])));
        }
    }
}
__attribute__((target("avx2"))) static void exp_forms_avx2(uint32_t lo, uint32_t hi, uint32_t step)
{
    for (uint32_t u = lo; u <= hi; u += 8 * step) {
        float x[8], y[8], t[8];
        for (int j = 0; j < 8; j++)
            x[j] = pcbm_u2f(u + (uint32_t)j * step > hi ? hi : u + (uint32_t)j * step);
        _mm256_storeu_ps(y, expf8_avx2_nonneg(_mm256_loadu_ps(x)));
        _mm256_storeu_ps(t, tanhf8_avx2_small(_mm256_loadu_ps(x)));
        for (int j = 0; j < 8; j++) {
            assert_int_equal(pcbm_f2u(y[j]), pcbm_f2u(pcbm_expf(x[j])));
            if (x[j] < 0.625f)
                assert_int_equal(pcbm_f2u(t[j]), pcbm_f2u(pcbm_tanhf(x[j])));
        }
    }
}
#endif

static void test_exp_forms(void **s)
{
    (void)s;
#if defined(__x86_64__) && defined(__GNUC__)
    uint32_t hi = pcbm_f2u(87.0f);
    if (pcbm_cpu_detect() >= PCBM_CPU_AVX512)
        exp_forms_avx512(0, hi, 61);
    if (pcbm_cpu_detect() >= PCBM_CPU_AVX2)
        exp_forms_avx2(0, hi, 61);
#endif
}

static void test_tau(void **s) { (void)s; every_path(c_tau); }
static void test_sums(void **s) { (void)s; every_path(c_sums); }
static void test_max_hist(void **s) { (void)s; every_path(c_max_hist); }
static void test_win(void **s) { (void)s; every_path(c_win); }
static void test_pcb(void **s) { (void)s; every_path(c_pcb); }
static void test_stream(void **s) { (void)s; every_path(c_stream); }
static void test_ties(void **s) { (void)s; every_path(c_ties); }
static void test_stream_full(void **s) { (void)s; every_path(c_stream_full); }

int main(void)
{
    if (pcbm_cpu_detect() == PCBM_CPU_SCALAR)
        printf("note: this CPU has no vector path; the tests compare scalar with itself\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tau),     cmocka_unit_test(test_sums),
        cmocka_unit_test(test_max_hist), cmocka_unit_test(test_win),
        cmocka_unit_test(test_pcb),     cmocka_unit_test(test_stream),
        cmocka_unit_test(test_ties),    cmocka_unit_test(test_stream_full),
        cmocka_unit_test(test_exp_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

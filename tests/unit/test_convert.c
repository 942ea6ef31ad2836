/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_convert.c — cmocka tests of the bf16/f16 <-> f32 conversions (kernels/convert.c) and of the
 * run-time path selection (kernels/cpu.c): exhaustive decoding, special values, an independent
 * double/rint reference encoder, and bit identity of every path on every length and alignment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/seams.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define TEST_RNG_SEED 0x9e3779b97f4a7c15ull
#include "test_rng.h"

/* ------------------------------------------------------------------------------------------------
 * Independent references, written differently from convert.c: values through double, ldexp, rint.
 * ---------------------------------------------------------------------------------------------- */
static double ref_bf16_value(uint16_t h) /* finite patterns only */
{
    int e = (h >> 7) & 0xff, m = h & 0x7f;
    double v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return (h & 0x8000) ? -v : v;
}
static double ref_f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Encode x (float, as double) with `mant` stored mantissa bits, exponent bias `bias`, max biased
 * exponent `emax` (all ones = Inf/NaN): rint() in double does the round-to-nearest-even. */
static uint16_t ref_encode(float f, int mant, int bias, int ebits)
{
    uint32_t u = pcbm_f2u(f);
    uint16_t sign = (uint16_t)((u >> 31) << (mant + ebits));
    uint16_t inf = (uint16_t)(((1u << ebits) - 1) << mant);
    if (isnan(f)) /* quiet NaN, sign kept, top payload bits kept */
        return (uint16_t)(sign | inf | (1u << (mant - 1)) | ((u & 0x7fffff) >> (23 - mant)));
    double a = fabs((double)f);
    if (isinf(f))
        return sign | inf;
    int emin = 1 - bias; /* exponent of the smallest normal */
    int e;
    frexp(a, &e);
    e -= 1; /* a = 1.x * 2^e */
    if (a == 0)
        return sign;
    if (e < emin) { /* subnormal range: units of 2^(emin - mant) */
        double q = rint(ldexp(a, mant - emin));
        return (uint16_t)(sign | (uint16_t)q); /* q == 2^mant becomes the smallest normal */
    }
    double q = rint(ldexp(a, mant - e)); /* in [2^mant, 2^(mant+1)] */
    if (q == ldexp(1, mant + 1)) {
        q = ldexp(1, mant);
        e++;
    }
    int be = e + bias;
    if (be >= (1 << ebits) - 1)
        return sign | inf;
    return (uint16_t)(sign | (be << mant) | ((uint32_t)q - (1u << mant)));
}
static const char *dt_name(pcbm_dtype dt)
{
    return dt == PCBM_DT_F32 ? "F32" : dt == PCBM_DT_F16 ? "F16" : "BF16";
}

static uint16_t ref_bf16(float f) { return ref_encode(f, 7, 127, 8); }
static uint16_t ref_f16(float f) { return ref_encode(f, 10, 15, 5); }

/* ------------------------------------------------------------------------------------------------ */

static void test_cpu_levels(void **state)
{
    (void)state;
    pcbm_cpu_level best = pcbm_cpu_detect();
    /* main() set PCBM_CPU=scalar before anything read the level: the override must hold */
    assert_int_equal(pcbm_cpu_level_get(), PCBM_CPU_SCALAR);
    assert_int_equal(pcbm_cpu_level_set(PCBM_CPU_AVX512), best); /* clamped to the CPU */
    assert_int_equal(pcbm_cpu_level_get(), best);
    assert_int_equal(pcbm_cpu_level_set(PCBM_CPU_SCALAR), PCBM_CPU_SCALAR);
    /* per-thread override wins over the process level and can be removed */
    assert_int_equal(pcbm_cpu_level_set_thread(PCBM_CPU_AVX2), best < PCBM_CPU_AVX2 ? best : PCBM_CPU_AVX2);
    assert_int_equal(pcbm_cpu_level_get(), best < PCBM_CPU_AVX2 ? best : PCBM_CPU_AVX2);
    assert_int_equal(pcbm_cpu_level_set_thread(PCBM_CPU_LEVEL_COUNT), PCBM_CPU_SCALAR);
    pcbm_cpu_level l;
    assert_int_equal(pcbm_cpu_level_parse("avx2", &l), 0);
    assert_int_equal(l, PCBM_CPU_AVX2);
    assert_int_equal(pcbm_cpu_level_parse("avx512", &l), 0);
    assert_int_equal(l, PCBM_CPU_AVX512);
    assert_int_equal(pcbm_cpu_level_parse("scalar", &l), 0);
    assert_int_equal(l, PCBM_CPU_SCALAR);
    assert_int_equal(pcbm_cpu_level_parse("auto", &l), 0);
    assert_int_equal(l, best);
    assert_int_equal(pcbm_cpu_level_parse("sse9", &l), -1);
    assert_string_equal(pcbm_cpu_level_name(PCBM_CPU_AVX2), "avx2");
    print_message("cpu: best path here is %s\n", pcbm_cpu_level_name(best));
    pcbm_cpu_level_set(best);
}

static void test_bf16_decode_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pcbm_bf16_to_f32((uint16_t)h);
        uint32_t e = (h >> 7) & 0xff;
        if (e == 0xff) {
            /* bf16 decoding is the exact bit pattern, NaNs included */
            assert_int_equal(pcbm_f2u(f), h << 16);
            assert_true((h & 0x7f) ? isnan(f) : isinf(f));
            continue;
        }
        assert_true((double)f == ref_bf16_value((uint16_t)h));
        assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0); /* -0 stays -0 */
    }
}

static void test_f16_decode_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pcbm_f16_to_f32((uint16_t)h);
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        if (e == 0x1f) {
            if (m == 0) {
                assert_true(isinf(f));
                assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
            } else { /* quiet NaN, sign and payload kept */
                assert_true(isnan(f));
                assert_int_equal(pcbm_f2u(f), ((h & 0x8000u) << 16) | 0x7fc00000u | (m << 13));
            }
            continue;
        }
        assert_true((double)f == ref_f16_value((uint16_t)h));
        assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
    }
}

static void test_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t b = pcbm_f32_to_bf16(pcbm_bf16_to_f32((uint16_t)h));
        uint16_t g = pcbm_f32_to_f16(pcbm_f16_to_f32((uint16_t)h));
        if (((h >> 7) & 0xff) == 0xff && (h & 0x7f))
            assert_int_equal(b, h | 0x40); /* NaN: stays NaN, made quiet */
        else
            assert_int_equal(b, h);
        if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff))
            assert_int_equal(g, h | 0x200);
        else
            assert_int_equal(g, h);
    }
}

typedef struct special {
    uint32_t f;
    uint16_t bf16, f16;
    const char *what;
} special;

static const special specials[] = {
    {0x00000000u, 0x0000, 0x0000, "+0"},
    {0x80000000u, 0x8000, 0x8000, "-0"},
    {0x7f800000u, 0x7f80, 0x7c00, "+Inf"},
    {0xff800000u, 0xff80, 0xfc00, "-Inf"},
    {0x7fc00000u, 0x7fc0, 0x7e00, "quiet NaN"},
    {0xffc00000u, 0xffc0, 0xfe00, "negative quiet NaN"},
    {0x7f800001u, 0x7fc0, 0x7e00, "signaling NaN, payload only in low bits: never Inf"},
    {0xff800001u, 0xffc0, 0xfe00, "negative signaling NaN, low payload"},
    {0x7fa00000u, 0x7fe0, 0x7f00, "signaling NaN with a high payload bit"},
    {0x7f812345u, 0x7fc1, 0x7e09, "NaN payload kept as far as it fits"},
    {0x7fffffffu, 0x7fff, 0x7fff, "all-ones NaN"},
    {0x7f7fffffu, 0x7f80, 0x7c00, "FLT_MAX rounds to Inf in both"},
    {0xff7fffffu, 0xff80, 0xfc00, "-FLT_MAX"},
    {0x00000001u, 0x0000, 0x0000, "smallest f32 subnormal"},
    {0x80000001u, 0x8000, 0x8000, "-smallest f32 subnormal"},
    {0x007fffffu, 0x0080, 0x0000, "largest f32 subnormal: bf16 rounds up to its smallest normal"},
    {0x00008000u, 0x0000, 0x0000, "bf16 halfway 0 / 1st subnormal: even (0)"},
    {0x00018000u, 0x0002, 0x0000, "bf16 halfway 1st / 2nd subnormal: even (2)"},
    {0x00008001u, 0x0001, 0x0000, "just above bf16 halfway"},
    /* bf16 ties around 1.0 */
    {0x3f808000u, 0x3f80, 0x3c04, "1 + 2^-8: bf16 tie to even (down)"},
    {0x3f818000u, 0x3f82, 0x3c0c, "1 + 3*2^-8: bf16 tie to even (up)"},
    {0x3f808001u, 0x3f81, 0x3c04, "just above a bf16 tie"},
    {0x3f807fffu, 0x3f80, 0x3c04, "just below a bf16 tie"},
    {0xbf818000u, 0xbf82, 0xbc0c, "negative bf16 tie"},
    /* f16 ties around 1.0 */
    {0x3f801000u, 0x3f80, 0x3c00, "1 + 2^-11: f16 tie to even (down)"},
    {0x3f803000u, 0x3f80, 0x3c02, "1 + 3*2^-11: f16 tie to even (up)"},
    {0x3f801001u, 0x3f80, 0x3c01, "just above an f16 tie"},
    {0x3f800fffu, 0x3f80, 0x3c00, "just below an f16 tie"},
    /* bf16 overflow */
    {0x7f7f0000u, 0x7f7f, 0x7c00, "bf16 max finite"},
    {0x7f7f7fffu, 0x7f7f, 0x7c00, "just below the bf16 overflow tie"},
    {0x7f7f8000u, 0x7f80, 0x7c00, "bf16 overflow tie rounds to Inf (odd max)"},
    /* f16 overflow */
    {0x477fe000u, 0x4780, 0x7bff, "65504 = f16 max"},
    {0x477fefffu, 0x4780, 0x7bff, "just below 65520"},
    {0x477ff000u, 0x4780, 0x7c00, "65520: f16 tie to Inf"},
    {0xc77ff000u, 0xc780, 0xfc00, "-65520"},
    {0x47800000u, 0x4780, 0x7c00, "65536"},
    /* f16 subnormal boundaries */
    {0x33800000u, 0x3380, 0x0001, "2^-24: smallest f16 subnormal"},
    {0x33000000u, 0x3300, 0x0000, "2^-25: tie to even (0)"},
    {0x33000001u, 0x3300, 0x0001, "just above 2^-25"},
    {0xb3000001u, 0xb300, 0x8001, "-(just above 2^-25)"},
    {0x32ffffffu, 0x3300, 0x0000, "just below 2^-25"},
    {0x33c00000u, 0x33c0, 0x0002, "3*2^-25: tie to even (2)"},
    {0x34200000u, 0x3420, 0x0002, "5*2^-25: tie to even (2)"},
    {0x387fc000u, 0x3880, 0x03ff, "largest f16 subnormal"},
    {0x387fe000u, 0x3880, 0x0400, "tie between largest subnormal and smallest normal: even (0x400)"},
    {0x387fdfffu, 0x3880, 0x03ff, "just below that tie"},
    {0x38800000u, 0x3880, 0x0400, "2^-14: smallest f16 normal"},
    {0x3f800000u, 0x3f80, 0x3c00, "1"},
    {0xc0490fdbu, 0xc049, 0xc248, "-pi"},
};

static void test_specials(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        const special *s = &specials[i];
        uint16_t b = pcbm_f32_to_bf16(pcbm_u2f(s->f)), h = pcbm_f32_to_f16(pcbm_u2f(s->f));
        if (b != s->bf16 || h != s->f16)
            fail_msg("%s (0x%08x): bf16 0x%04x want 0x%04x, f16 0x%04x want 0x%04x", s->what, s->f, b,
                     s->bf16, h, s->f16);
        /* the independent reference agrees on every special value */
        assert_int_equal(ref_bf16(pcbm_u2f(s->f)), s->bf16);
        assert_int_equal(ref_f16(pcbm_u2f(s->f)), s->f16);
        /* and every path of the array forms too */
        for (int lv = 0; lv <= (int)pcbm_cpu_detect(); lv++) {
            pcbm_cpu_level_set((pcbm_cpu_level)lv);
            float in[17];
            uint16_t ob[17], oh[17];
            for (int k = 0; k < 17; k++)
                in[k] = pcbm_u2f(s->f);
            pcbm_encode_f32(PCBM_DT_BF16, in, ob, 17);
            pcbm_encode_f32(PCBM_DT_F16, in, oh, 17);
            for (int k = 0; k < 17; k++) {
                assert_int_equal(ob[k], s->bf16);
                assert_int_equal(oh[k], s->f16);
            }
        }
        pcbm_cpu_level_set(pcbm_cpu_detect());
    }
}

static void check_against_ref(uint32_t u)
{
    float f = pcbm_u2f(u);
    uint16_t b = pcbm_f32_to_bf16(f), rb = ref_bf16(f);
    uint16_t h = pcbm_f32_to_f16(f), rh = ref_f16(f);
    if (b != rb || h != rh)
        fail_msg("0x%08x: bf16 0x%04x ref 0x%04x, f16 0x%04x ref 0x%04x", u, b, rb, h, rh);
}

/* FP8 bytes decode to the values of their formats (e4m3fn: bias 7, no infinities, S.1111.111 is
 * NaN; e5m2: bias 15, IEEE specials); F64 decodes rounded to nearest and encodes exactly. */
static void test_fp8_f64(void **state)
{
    (void)state;
    static const struct { pcbm_dtype dt; uint8_t b; float v; } cases[] = {
        {PCBM_DT_F8_E4M3, 0x38, 1.0f},        {PCBM_DT_F8_E4M3, 0x7e, 448.0f},
        {PCBM_DT_F8_E4M3, 0x01, 0x1p-9f},     {PCBM_DT_F8_E4M3, 0x08, 0x1p-6f},
        {PCBM_DT_F8_E4M3, 0xb9, -1.125f},     {PCBM_DT_F8_E4M3, 0x80, -0.0f},
        {PCBM_DT_F8_E5M2, 0x3c, 1.0f},        {PCBM_DT_F8_E5M2, 0x7b, 57344.0f},
        {PCBM_DT_F8_E5M2, 0x01, 0x1p-16f},    {PCBM_DT_F8_E5M2, 0xfc, -INFINITY},
        {PCBM_DT_F8_E5M2, 0x3d, 1.25f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float v;
        pcbm_decode_f32(cases[i].dt, &cases[i].b, &v, 1);
        assert_memory_equal(&v, &cases[i].v, 4);
    }
    uint8_t nan_bytes[] = {0x7f, 0xff};
    float nans[2];
    pcbm_decode_f32(PCBM_DT_F8_E4M3, nan_bytes, nans, 2);
    assert_true(isnan(nans[0]) && isnan(nans[1]));
    /* every e4m3 byte but the NaNs is finite, and decoding is monotonic on the positive half */
    for (unsigned b = 1; b < 0x7f; b++) {
        uint8_t x[2] = {(uint8_t)(b - 1), (uint8_t)b};
        float y[2];
        pcbm_decode_f32(PCBM_DT_F8_E4M3, x, y, 2);
        assert_true(isfinite(y[1]) && y[1] > y[0]);
    }
    double d[3] = {1.0 + 0x1p-30, -3.0e38, 0.1}, back[3];
    float f[3];
    pcbm_decode_f32(PCBM_DT_F64, d, f, 3);
    assert_true(f[0] == 1.0f && f[1] == -3.0e38f && f[2] == 0.1f);
    pcbm_encode_f32(PCBM_DT_F64, f, back, 3);
    for (int i = 0; i < 3; i++)
        assert_true(back[i] == (double)f[i]);
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    /* uniformly random bit patterns */
    for (int i = 0; i < 4000000; i++)
        check_against_ref((uint32_t)rnd());
    /* every sign and exponent, random mantissas whose low bits sit on or next to a rounding tie */
    static const uint32_t bf_low[] = {0x0000, 0x0001, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xffff};
    static const uint32_t h_low[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff};
    for (uint32_t se = 0; se < 512; se++)
        for (int k = 0; k < 512; k++) {
            uint32_t m = (uint32_t)rnd() & 0x7fffffu;
            if (k == 0)
                m = 0x7fffffu; /* all-ones mantissas carry into the exponent */
            for (size_t j = 0; j < sizeof bf_low / sizeof bf_low[0]; j++)
                check_against_ref((se << 23) | (m & 0x7f0000u) | bf_low[j]);
            for (size_t j = 0; j < sizeof h_low / sizeof h_low[0]; j++)
                check_against_ref((se << 23) | (m & 0x7fe000u) | h_low[j]);
        }
    /* every float in the f16 subnormal and low-normal range, and around the f16 overflow */
    for (uint32_t u = 0x32800000u; u <= 0x38900000u; u++)
        check_against_ref(u);
    for (uint32_t u = 0x477f0000u; u <= 0x47810000u; u++)
        check_against_ref(u | 0x80000000u);
}

/* Every path, every length 0..67, every src/dst misalignment 0..3, against the scalar functions;
 * guard bytes around the destination must stay untouched. */
static void test_paths_lengths_alignment(void **state)
{
    (void)state;
    enum { MAXN = 67, PAD = 16 };
    unsigned char srcbuf[MAXN * 4 + 2 * PAD], dstbuf[MAXN * 4 + 2 * PAD];
    static const pcbm_dtype dts[3] = {PCBM_DT_F32, PCBM_DT_F16, PCBM_DT_BF16};
    for (int lv = 0; lv <= (int)pcbm_cpu_detect(); lv++) {
        assert_int_equal(pcbm_cpu_level_set((pcbm_cpu_level)lv), lv);
        for (int d = 0; d < 3; d++) {
            size_t es = d == 0 ? 4 : 2;
            for (size_t n = 0; n <= MAXN; n++)
                for (int so = 0; so < 4; so++)
                    for (int dofs = 0; dofs < 4; dofs++) {
                        /* decode: random element bits in, floats out */
                        for (size_t i = 0; i < sizeof srcbuf; i++)
                            srcbuf[i] = (unsigned char)rnd();
                        memset(dstbuf, 0xa5, sizeof dstbuf);
                        unsigned char *s = srcbuf + PAD + so, *o = dstbuf + PAD + dofs;
                        pcbm_decode_f32(dts[d], s, (float *)(void *)o, n);
                        for (size_t i = 0; i < n; i++) {
                            uint32_t got, want;
                            memcpy(&got, o + 4 * i, 4);
                            if (d == 0) {
                                memcpy(&want, s + 4 * i, 4);
                            } else {
                                uint16_t h;
                                memcpy(&h, s + 2 * i, 2);
                                want = pcbm_f2u(d == 1 ? pcbm_f16_to_f32(h) : pcbm_bf16_to_f32(h));
                            }
                            if (got != want)
                                fail_msg("decode %s n=%zu i=%zu path %s: 0x%08x want 0x%08x",
                                         dt_name(dts[d]), n, i,
                                         pcbm_cpu_level_name((pcbm_cpu_level)lv), got, want);
                        }
                        for (size_t i = 0; i < sizeof dstbuf; i++)
                            if (i < PAD + (size_t)dofs || i >= PAD + dofs + 4 * n)
                                assert_int_equal(dstbuf[i], 0xa5);
                        /* encode: random float bits in (with specials), elements out */
                        for (size_t i = 0; i < MAXN; i++) {
                            uint32_t u = (uint32_t)rnd();
                            if (rnd() % 4 == 0)
                                u = specials[rnd() % (sizeof specials / sizeof specials[0])].f;
                            memcpy(srcbuf + PAD + so + 4 * i, &u, 4);
                        }
                        memset(dstbuf, 0xa5, sizeof dstbuf);
                        pcbm_encode_f32(dts[d], (const float *)(const void *)s, o, n);
                        for (size_t i = 0; i < n; i++) {
                            float f;
                            memcpy(&f, s + 4 * i, 4);
                            if (d == 0) {
                                assert_memory_equal(o + 4 * i, s + 4 * i, 4);
                            } else {
                                uint16_t got;
                                memcpy(&got, o + 2 * i, 2);
                                uint16_t want = d == 1 ? pcbm_f32_to_f16(f) : pcbm_f32_to_bf16(f);
                                if (got != want)
                                    fail_msg("encode %s n=%zu i=%zu path %s: in 0x%08x got 0x%04x "
                                             "want 0x%04x",
                                             dt_name(dts[d]), n, i,
                                             pcbm_cpu_level_name((pcbm_cpu_level)lv), pcbm_f2u(f), got, want);
                            }
                        }
                        for (size_t i = 0; i < sizeof dstbuf; i++)
                            if (i < PAD + (size_t)dofs || i >= PAD + dofs + es * n)
                                assert_int_equal(dstbuf[i], 0xa5);
                    }
        }
    }
    pcbm_cpu_level_set(pcbm_cpu_detect());
}

/* Large arrays of random bits: all paths agree, and encoding in place (dst == src) works. */
static void test_paths_bulk_and_in_place(void **state)
{
    (void)state;
    enum { N = 1 << 20 };
    float *src = malloc(N * 4), *work = malloc(N * 4);
    uint16_t *ref = malloc(N * 2), *out = malloc(N * 2);
    float *dref = malloc(N * 4), *dout = malloc(N * 4);
    assert_non_null(src && work && ref && out && dref && dout);
    for (size_t i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rnd();
        memcpy(&src[i], &u, 4);
    }
    static const pcbm_dtype dts[2] = {PCBM_DT_F16, PCBM_DT_BF16};
    for (int d = 0; d < 2; d++) {
        pcbm_cpu_level_set(PCBM_CPU_SCALAR);
        pcbm_encode_f32(dts[d], src, ref, N);
        pcbm_decode_f32(dts[d], ref, dref, N);
        for (int lv = 0; lv <= (int)pcbm_cpu_detect(); lv++) {
            pcbm_cpu_level_set((pcbm_cpu_level)lv);
            pcbm_encode_f32(dts[d], src, out, N);
            assert_memory_equal(out, ref, N * 2);
            pcbm_decode_f32(dts[d], out, dout, N);
            assert_memory_equal(dout, dref, N * 4);
            memcpy(work, src, N * 4);
            pcbm_encode_f32(dts[d], work, work, N); /* in place */
            assert_memory_equal(work, ref, N * 2);
        }
    }
    pcbm_cpu_level_set(pcbm_cpu_detect());
    free(src);
    free(work);
    free(ref);
    free(out);
    free(dref);
    free(dout);
}

int main(void)
{
    /* Before anything reads the level: the environment override is honoured (test_cpu_levels). */
    setenv("PCBM_CPU", "scalar", 1); pcbm_seams_reload();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_levels),
        cmocka_unit_test(test_bf16_decode_all),
        cmocka_unit_test(test_f16_decode_all),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_specials),
        cmocka_unit_test(test_fp8_f64),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_paths_lengths_alignment),
        cmocka_unit_test(test_paths_bulk_and_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

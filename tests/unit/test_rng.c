/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_rng.c — cmocka tests of the DARE random numbers (kernels/rng.c): known answers computed by
 * the Python reference written in rng.c's comment, determinism, independence of the batch form
 * from start/length, keep fractions, stream separation and density edge cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From the Python reference in rng.c (run with /usr/bin/python3, xxh3 via libxxhash ctypes). */
static const struct {
    uint64_t seed, stream, counter, want;
} known[] = {
    {0x0ull, 0x0ull, 0x0ull, 0x65ae880813f6f3dbull},
    {0x0ull, 0x0ull, 0x1ull, 0x46e49a57f05333ceull},
    {0x1ull, 0x2ull, 0x3ull, 0x818d3aa5f9a306dcull},
    {0xdeadbeefull, 0x123456789abcdef0ull, 0x10000000000ull, 0xbfee336116b04a80ull},
    {0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffffffffffull, 0x680ad7e6bf35b2a6ull},
};
static const struct {
    const char *name;
    uint64_t key;
} known_keys[] = {
    {"", 0x2d06800538d394c2ull},
    {"model.layers.0.weight", 0xddc612212de32d21ull},
    {"lm_head.weight", 0x931a18defd8d5ca4ull},
};
/* dare_keep(42, task, key("model.layers.0.weight"), i, 0.3) for task 0..1, i 0..63 */
static const char known_mask[] =
    "0010000000000110000010010001001001100000001001100011001010011000"
    "1000010100010101101010000101000000101010100000100001110100100101";

static void test_known_answers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        assert_int_equal(pcbm_rng_u64(known[i].seed, known[i].stream, known[i].counter), known[i].want);
    for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++)
        assert_int_equal(pcbm_name_key(known_keys[i].name), known_keys[i].key);
    uint64_t key = pcbm_name_key("model.layers.0.weight");
    uint8_t m[64];
    for (unsigned t = 0; t < 2; t++) {
        pcbm_dare_mask(42, t, key, 0, 64, 0.3, m);
        for (int i = 0; i < 64; i++) {
            assert_int_equal(pcbm_dare_keep(42, t, key, (uint64_t)i, 0.3), known_mask[t * 64 + i] - '0');
            assert_int_equal(m[i], known_mask[t * 64 + i] - '0');
        }
    }
}

static void test_deterministic(void **state)
{
    (void)state;
    for (uint64_t c = 0; c < 100000; c++) {
        uint64_t a = pcbm_rng_u64(7, 11, c), b = pcbm_rng_u64(7, 11, c);
        assert_int_equal(a, b);
    }
    /* the stream of (task, key) is a documented formula */
    assert_int_equal(pcbm_dare_stream(0, 5), 5 + 0xD1B54A32D192ED03ull);
    assert_int_equal(pcbm_dare_stream(2, 5), 5 + 3 * 0xD1B54A32D192ED03ull);
    /* keep == (u < density) with u the top 53 bits scaled by 2^-53 */
    for (uint64_t i = 0; i < 10000; i++) {
        uint64_t r = pcbm_rng_u64(3, pcbm_dare_stream(1, 99), i);
        double u = (double)(r >> 11) * 0x1p-53;
        assert_int_equal(pcbm_dare_keep(3, 1, 99, i, 0.37), u < 0.37);
        assert_int_equal(pcbm_dare_keep(3, 1, 99, i, u), 0);             /* u < u is false */
        assert_int_equal(pcbm_dare_keep(3, 1, 99, i, nextafter(u, 2)), 1); /* just above */
    }
}

/* The batch form equals the per-index form and does not depend on how [0, N) is cut. */
static void test_batch_independent_of_chunking(void **state)
{
    (void)state;
    enum { N = 200003 };
    uint8_t *whole = malloc(N), *parts = malloc(N);
    assert_non_null(whole && parts);
    static const double dens[] = {0.1, 0.5, 0.9, 1e-3, 0.999999, 0x1p-53, 1 - 0x1p-53};
    uint64_t key = pcbm_name_key("encoder.block.3.attn.q.weight");
    for (size_t d = 0; d < sizeof dens / sizeof dens[0]; d++) {
        uint64_t kept = pcbm_dare_mask(1234, 3, key, 0, N, dens[d], whole);
        uint64_t count = 0;
        for (size_t i = 0; i < N; i++) {
            count += whole[i];
            if (i % 7 == 0)
                assert_int_equal(whole[i], pcbm_dare_keep(1234, 3, key, i, dens[d]));
        }
        assert_int_equal(kept, count);
        /* random cuts, including empty pieces */
        uint64_t s = 0x1234567 + d, start = 0;
        memset(parts, 0xee, N);
        while (start < N) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t len = (size_t)((s >> 33) % 5000);
            if (len > N - start)
                len = N - start;
            pcbm_dare_mask(1234, 3, key, start, len, dens[d], parts + start);
            start += len;
        }
        assert_memory_equal(whole, parts, N);
    }
    /* far-away starts: the mask at index 2^40 + i is the same whether asked alone or in a batch */
    uint8_t m[100];
    pcbm_dare_mask(9, 0, key, (1ull << 40) - 50, 100, 0.5, m);
    for (int i = 0; i < 100; i++)
        assert_int_equal(m[i], pcbm_dare_keep(9, 0, key, (1ull << 40) - 50 + (uint64_t)i, 0.5));
    free(whole);
    free(parts);
}

static void test_keep_fraction(void **state)
{
    (void)state;
    enum { N = 1000000 };
    uint8_t *m = malloc(N);
    assert_non_null(m);
    static const double dens[] = {0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99};
    for (size_t d = 0; d < sizeof dens / sizeof dens[0]; d++)
        for (unsigned task = 0; task < 3; task++) {
            uint64_t kept = pcbm_dare_mask(2024 + d, task, pcbm_name_key("w"), 0, N, dens[d], m);
            double frac = (double)kept / N, sigma = sqrt(dens[d] * (1 - dens[d]) / N);
            if (fabs(frac - dens[d]) > 5 * sigma)
                fail_msg("density %.2f task %u: kept %.6f (%.1f sigma)", dens[d], task, frac,
                         (frac - dens[d]) / sigma);
            /* neighbours are independent: P(keep i and keep i+1) ~ density^2 */
            uint64_t pairs = 0;
            for (size_t i = 0; i + 1 < N; i++)
                pairs += m[i] & m[i + 1];
            double pf = (double)pairs / (N - 1), p2 = dens[d] * dens[d];
            assert_true(fabs(pf - p2) < 6 * sqrt(p2 * (1 - p2) / N) + 1e-6);
        }
    free(m);
}

static void test_streams_differ(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint8_t *a = malloc(N), *b = malloc(N);
    assert_non_null(a && b);
    uint64_t k1 = pcbm_name_key("layers.0.mlp.up_proj.weight");
    uint64_t k2 = pcbm_name_key("layers.0.mlp.down_proj.weight");
    assert_true(k1 != k2);
    /* (seed, task, key) each change the mask; agreement ~ d^2 + (1-d)^2 = 0.5 at d = 0.5 */
    const struct {
        uint64_t seed;
        unsigned task;
        uint64_t key;
    } v[] = {{1, 0, k1}, {2, 0, k1}, {1, 1, k1}, {1, 0, k2}, {1, 2, k2}};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++) {
            pcbm_dare_mask(v[i].seed, v[i].task, v[i].key, 0, N, 0.5, a);
            pcbm_dare_mask(v[j].seed, v[j].task, v[j].key, 0, N, 0.5, b);
            size_t same = 0;
            for (size_t k = 0; k < N; k++)
                same += a[k] == b[k];
            double f = (double)same / N;
            if (fabs(f - 0.5) > 0.01)
                fail_msg("masks %zu and %zu agree on %.4f of elements", i, j, f);
        }
    /* raw outputs: all 64 bits balanced over a stream */
    uint64_t ones[64] = {0};
    for (uint64_t c = 0; c < N; c++) {
        uint64_t r = pcbm_rng_u64(5, 6, c);
        for (int bit = 0; bit < 64; bit++)
            ones[bit] += (r >> bit) & 1;
    }
    for (int bit = 0; bit < 64; bit++)
        assert_true(fabs((double)ones[bit] / N - 0.5) < 0.01);
    free(a);
    free(b);
}

static void test_density_edges(void **state)
{
    (void)state;
    enum { N = 10000 };
    uint8_t m[N];
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, 0.0, m), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(m[i], 0);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, -0.5, m), 0);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, NAN, m), 0);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, 1.0, m), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(m[i], 1);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, 1.5, m), N);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, INFINITY, m), N);
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, N, 1e-300, m), 0); /* P = 2^-53 */
    assert_int_equal(pcbm_dare_mask(1, 0, 2, 0, 0, 0.5, m), 0);     /* empty */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pcbm_dare_keep(1, 0, 2, (uint64_t)i, 0.0), 0);
        assert_int_equal(pcbm_dare_keep(1, 0, 2, (uint64_t)i, 1.0), 1);
        assert_int_equal(pcbm_dare_keep(1, 0, 2, (uint64_t)i, NAN), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_batch_independent_of_chunking),
        cmocka_unit_test(test_keep_fraction),
        cmocka_unit_test(test_streams_differ),
        cmocka_unit_test(test_density_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

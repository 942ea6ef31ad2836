/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_rowsum.c — cmocka tests of the per-vector exact sums (merge/rowsum.c): the rows and
 * columns of 1-D to 3-D tensors, sums that are the same bits whatever the tiles' grouping into
 * threads and their order, values within the stated truncation of the exact sums (xsum), zero
 * vectors, and the buffers' bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "merge/rowsum.h"
#include "stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 1024u

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

/* Values over many scales (the truncation matters for the small ones), some rows zero. */
static void fill(float *a, float *b, uint64_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (uint64_t k = 0; k < n; k++) {
        double u = (double)(lcg(&s) % 2000001) / 1e6 - 1.0;
        int e = (int)(lcg(&s) % 24) - 12;
        a[k] = (float)ldexp(u, e);
        b[k] = (float)ldexp((double)(lcg(&s) % 2001) / 1000.0 - 1.0, (int)(lcg(&s) % 8) - 4);
    }
}

typedef struct one_tensor {
    pcbm_layout p;
    pcbm_tlayout t;
    pcbm_out_tensor ot;
    uint64_t shape[4];
} one_tensor;

static void make(one_tensor *x, unsigned ndim, const uint64_t *shape)
{
    memset(x, 0, sizeof *x);
    memcpy(x->shape, shape, ndim * sizeof *shape);
    x->ot.ndim = ndim;
    x->ot.shape = x->shape;
    x->t.kind = PCBM_T_MERGE;
    x->p.t = &x->t;
    x->p.out_tensors = &x->ot;
    x->p.nt = 1;
}

/* Both rounds over tiles of TILE elements, tile k by worker owner(k), in the order given. */
static void run(pcbm_rowsum *r, const float *a, const float *b, uint64_t n, unsigned threads,
                const uint64_t *order, uint64_t ntiles)
{
    pcbm_rowsum_max_clear(r);
    for (uint64_t q = 0; q < ntiles; q++) {
        uint64_t k = order[q], s = k * TILE;
        unsigned m = (unsigned)(n - s < TILE ? n - s : TILE);
        pcbm_rowsum_max_add(r, (unsigned)(k % threads), a + s, m);
        pcbm_rowsum_max_add(r, (unsigned)(k % threads), b + s, m);
    }
    pcbm_acc acc = pcbm_rowsum_max_region(r);
    pcbm_acc_reduce_threads(&acc, threads);
    pcbm_rowsum_set_scale(r);
    pcbm_rowsum_clear(r);
    for (uint64_t q = 0; q < ntiles; q++) {
        uint64_t k = order[q], s = k * TILE;
        unsigned m = (unsigned)(n - s < TILE ? n - s : TILE), w = (unsigned)(k % threads);
        pcbm_rowsum_dot(r, w, 0, s, a + s, a + s, m);
        pcbm_rowsum_dot(r, w, 1, s, a + s, b + s, m);
    }
    acc = pcbm_rowsum_region(r);
    pcbm_acc_reduce_threads(&acc, threads);
}

static void check_shape(unsigned ndim, const uint64_t *shape, bool by_col)
{
    one_tensor x;
    make(&x, ndim, shape);
    uint64_t n = 1;
    for (unsigned k = 0; k < ndim; k++)
        n *= shape[k];
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    fill(a, b, n, n * 31 + ndim + by_col);
    uint64_t ntiles = (n + TILE - 1) / TILE, *fwd = malloc(ntiles * 8), *rev = malloc(ntiles * 8);
    for (uint64_t k = 0; k < ntiles; k++)
        fwd[k] = k, rev[k] = ntiles - 1 - k;
    pcbm_rowsum r1, r3;
    pcbm_error err;
    uint64_t maxv = pcbm_rowsum_max_vectors(&x.p), maxc = pcbm_rowsum_max_cols(&x.p);
    assert_int_equal(pcbm_rowsum_init(&r1, maxv, maxc, 2, 1, "test", &err), PCBM_OK);
    assert_int_equal(pcbm_rowsum_init(&r3, maxv, maxc, 2, 3, "test", &err), PCBM_OK);
    pcbm_rowsum_shape(&r1, &x.p, 0, by_col);
    pcbm_rowsum_shape(&r3, &x.p, 0, by_col);
    for (uint64_t k = 0; k < n; k++) /* the first vector of a is zero (a zero norm) */
        if (pcbm_rowsum_vec(&r1, k) == 0)
            a[k] = 0.0f;
    assert_true(r1.nvec <= maxv);
    assert_int_equal(r1.nvec * r1.len, n);
    run(&r1, a, b, n, 1, fwd, ntiles);
    run(&r3, a, b, n, 3, rev, ntiles);
    assert_int_equal(r1.s, r3.s);
    assert_memory_equal(r1.tot, r3.tot, r1.nvec * 2 * sizeof(pcbm_i128));
    /* against the exact sums: within len·2^-s (the truncation) plus the final rounding */
    for (uint64_t v = 0; v < r1.nvec; v++) {
        pcbm_xsum aa, ab;
        pcbm_xsum_clear(&aa);
        pcbm_xsum_clear(&ab);
        for (uint64_t k = 0; k < n; k++)
            if (pcbm_rowsum_vec(&r1, k) == v) {
                pcbm_xsum_add(&aa, (double)a[k] * a[k]);
                pcbm_xsum_add(&ab, (double)a[k] * b[k]);
            }
        double eaa = pcbm_xsum_value(&aa), eab = pcbm_xsum_value(&ab);
        double tol = ldexp((double)r1.len, -r1.s);
        double gaa = pcbm_rowsum_value(&r1, v, 0), gab = pcbm_rowsum_value(&r1, v, 1);
        assert_true(fabs(gaa - eaa) <= tol + fabs(eaa) * 0x1p-52);
        assert_true(fabs(gab - eab) <= tol + fabs(eab) * 0x1p-52);
        if (v == 0)
            assert_true(gaa == 0.0 && gab == 0.0);
        else
            assert_true(fabs(gaa - eaa) <= fabs(eaa) * 1e-12);
    }
    pcbm_rowsum_free(&r1);
    pcbm_rowsum_free(&r3);
    free(a);
    free(b);
    free(fwd);
    free(rev);
}

static void test_rows_2d(void **st)
{
    (void)st;
    check_shape(2, (const uint64_t[]){37, 3000}, false); /* rows longer than a tile */
    check_shape(2, (const uint64_t[]){500, 7}, false);   /* many rows per tile */
}

static void test_cols_2d(void **st)
{
    (void)st;
    check_shape(2, (const uint64_t[]){37, 3000}, true);
    check_shape(2, (const uint64_t[]){500, 7}, true);
}

static void test_nd(void **st)
{
    (void)st;
    check_shape(3, (const uint64_t[]){5, 7, 300}, false);
    check_shape(3, (const uint64_t[]){5, 7, 300}, true);
    check_shape(1, (const uint64_t[]){5000}, false);
    check_shape(1, (const uint64_t[]){5000}, true);
}

static void test_bytes(void **st)
{
    (void)st;
    one_tensor x;
    make(&x, 2, (const uint64_t[]){10, 4000});
    assert_int_equal(pcbm_rowsum_max_vectors(&x.p), 4000); /* columns outnumber rows */
    assert_int_equal(pcbm_rowsum_max_cols(&x.p), 4000);
    assert_int_equal(pcbm_rowsum_bytes(4000, 4000, 3, 2), 3ull * 4000 * 3 * 16 + 2 * 4);
    make(&x, 2, (const uint64_t[]){131072, 64}); /* a vocabulary's rows: one shared copy */
    assert_int_equal(pcbm_rowsum_max_vectors(&x.p), 131072);
    assert_int_equal(pcbm_rowsum_max_cols(&x.p), 64);
    assert_int_equal(pcbm_rowsum_bytes(131072, 64, 3, 2), (131072ull + 2 * 64) * 3 * 16 + 2 * 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_2d),
        cmocka_unit_test(test_cols_2d),
        cmocka_unit_test(test_nd),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

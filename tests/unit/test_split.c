/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_split.c — statistics rounds of split merges (src/merge/split_rounds.c): a part saves its
 * part and stops; the reduce sums the parts' parts whatever order the parts ran in, names the
 * parts that are missing, says a round is pending only after reducing one; a reduced round is
 * loaded by later runs; files of another plan, another round layout or damaged are refused.
 */
#include "merge/split.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_tmpdir.h"

#define PARTS 3
#define N 64

static char dir[256];

static int setup(void **state)
{
    (void)state;
    return test_tmpdir_make(dir, sizeof dir, "split");
}

static int teardown(void **state)
{
    (void)state;
    return test_tmpdir_remove(dir);
}

static pcbm_split mk(pcbm_split_mode mode, unsigned part, uint64_t plan_id)
{
    pcbm_split s;
    memset(&s, 0, sizeof s);
    s.mode = mode;
    snprintf(s.ctl, sizeof s.ctl, "%s", dir);
    s.part = part;
    s.parts = PARTS;
    s.plan_id = plan_id;
    return s;
}

/* What part u contributes to round r: counts and a maximum. */
static void part(unsigned u, unsigned r, uint64_t *h, float *mx)
{
    for (unsigned k = 0; k < N; k++)
        h[k] = (uint64_t)(u + 1) * (k + r + 1);
    mx[0] = (float)(10 * u) - (float)r;
    mx[1] = -(float)u;
}

/* Part u runs round r: every earlier round is loaded, round r is saved. */
static void part_runs(unsigned u, unsigned r)
{
    pcbm_split s = mk(PCBM_SPLIT_STATS, u, 42);
    pcbm_error err;
    for (unsigned k = 0; k <= r; k++) {
        uint64_t h[N];
        float mx[2];
        part(u, k, h, mx);
        pcbm_acc acc[2] = {{.data = h, .bytes = sizeof h, .combine = pcbm_acc_sum_u64},
                           {.data = mx, .bytes = sizeof mx, .combine = pcbm_acc_max_f32}};
        assert_int_equal(pcbm_split_skip_stats_pass(&s), k < r);
        pcbm_exchange_got got;
        assert_int_equal(pcbm_split_exchange(&s, acc, 2, &got, &err), PCBM_OK);
        assert_int_equal(got, k < r ? PCBM_EXCHANGE_TOTAL : PCBM_EXCHANGE_SAVED);
    }
}

static void test_rounds(void **state)
{
    (void)state;
    pcbm_error err;
    uint64_t h[N];
    float mx[2];
    pcbm_acc acc[2] = {{.data = h, .bytes = sizeof h, .combine = pcbm_acc_sum_u64},
                       {.data = mx, .bytes = sizeof mx, .combine = pcbm_acc_max_f32}};
    pcbm_exchange_got got;

    /* round 0: nobody has run it: the reduce names every part */
    pcbm_split red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_ERR_STATS);
    assert_non_null(strstr(err.msg, "parts 0, 1, 2 of 3"));

    /* parts in reverse order, one missing */
    part_runs(2, 0);
    part_runs(0, 0);
    red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_ERR_STATS);
    assert_non_null(strstr(err.msg, "part 1 of 3"));

    part_runs(1, 0);
    red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    memset(h, 0xff, sizeof h); /* whatever the reduce starts from, the sums replace it */
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_OK);
    assert_int_equal(got, PCBM_EXCHANGE_TOTAL);
    for (unsigned k = 0; k < N; k++)
        assert_int_equal(h[k], (uint64_t)(1 + 2 + 3) * (k + 1));
    assert_true(mx[0] == 20.0f && mx[1] == 0.0f);
    /* the next round has not run: it is pending */
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_OK);
    assert_int_equal(got, PCBM_EXCHANGE_PENDING);

    /* round 1: parts see round 0 reduced (loaded, not recomputed) and save their part */
    for (unsigned u = 0; u < PARTS; u++)
        part_runs(u, 1);
    red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_OK); /* round 0: loaded */
    assert_int_equal(red.reduced, 0u);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_OK); /* round 1: reduced */
    assert_int_equal(red.reduced, 1u);
    for (unsigned k = 0; k < N; k++)
        assert_int_equal(h[k], (uint64_t)6 * (k + 2));
    assert_true(mx[0] == 19.0f);

    /* a part that saved its part already skips the pass and does not overwrite it */
    pcbm_split s = mk(PCBM_SPLIT_STATS, 1, 42);
    s.round = 2;
    part_runs(1, 2);
    assert_true(pcbm_split_skip_stats_pass(&s));
    assert_true(pcbm_split_part_saved(&s, 2, 1));
    assert_false(pcbm_split_part_saved(&s, 2, 0));
}

static void test_refusals(void **state)
{
    (void)state;
    pcbm_error err;
    uint64_t h[N];
    float mx[2];
    for (unsigned u = 0; u < PARTS; u++)
        part_runs(u, 0);
    /* another plan's reduce refuses the files */
    pcbm_acc acc[2] = {{.data = h, .bytes = sizeof h, .combine = pcbm_acc_sum_u64},
                       {.data = mx, .bytes = sizeof mx, .combine = pcbm_acc_max_f32}};
    pcbm_exchange_got got;
    pcbm_split red = mk(PCBM_SPLIT_REDUCE, 0, 7);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_ERR_STATS);
    assert_non_null(strstr(err.msg, "another plan"));
    /* another layout of the accumulators (another method or version) */
    red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    assert_int_equal(pcbm_split_exchange(&red, acc, 1, &got, &err), PCBM_ERR_STATS);
    assert_non_null(strstr(err.msg, "does not fit round 0"));
    /* a damaged file */
    char p[512];
    snprintf(p, sizeof p, "%s/round-0.part-1.zst", dir);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, 20, SEEK_SET);
    fputc('X', f);
    fclose(f);
    red = mk(PCBM_SPLIT_REDUCE, 0, 42);
    assert_int_equal(pcbm_split_exchange(&red, acc, 2, &got, &err), PCBM_ERR_STATS);
    assert_non_null(strstr(err.msg, "round-0.part-1.zst"));
}

static void test_combines(void **state)
{
    (void)state;
    /* max: -0 < +0 canonically, a NaN part never wins (a part's maximum itself never is NaN:
     * it starts at -inf and skips NaN), either order gives the same bits */
    float a[3] = {-0.0f, 1.0f, -INFINITY}, b[3] = {0.0f, NAN, -5.0f};
    float c[3] = {0.0f, -1.0f, -5.0f}, d[3] = {-0.0f, 1.0f, -INFINITY};
    pcbm_acc_max_f32(a, b, sizeof a);
    pcbm_acc_max_f32(c, d, sizeof c);
    const float want[3] = {0.0f, 1.0f, -5.0f};
    assert_memory_equal(a, want, sizeof a);
    assert_memory_equal(c, want, sizeof c);
    int64_t x[2] = {5, -3}, y[2] = {-7, 3};
    pcbm_acc_sum_i64(x, y, sizeof x);
    assert_true(x[0] == -2 && x[1] == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test(test_combines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_search.c — pcbm_search() driven in process: a tiny generated family (one F32 tensor, two
 * task models moving disjoint halves of it) merged by task arithmetic, scored by a callback that
 * reads the candidate's weights (minus their squared distance to the merge at λ* = (1.5, 2.0)).
 * The search improves on λ = init and approaches λ*; a search stopped by its callback or by
 * pcbm_request_stop() resumes to the uninterrupted search's result without evaluating the
 * logged candidates again; options without a valid struct_size are refused.
 */
#include "pcbmerge.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define N 8

static char dir[256];
static const double target[2] = {1.5, 2.0};

/* One safetensors file holding w: F32[N]. */
static void write_model(const char *path, const float *w)
{
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr,
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[0,%zu]}}", N,
                     N * sizeof(float));
    while (n % 8)
        hdr[n++] = ' ';
    uint64_t len = (uint64_t)n;
    mkdir(path, 0755);
    char file[512];
    snprintf(file, sizeof file, "%s/model.safetensors", path);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(&len, 8, 1, f), 1);
    assert_int_equal(fwrite(hdr, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fwrite(w, sizeof(float), N, f), N);
    assert_int_equal(fclose(f), 0);
}

static char base[300], task1[300], task2[300];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/pcbm-test-search.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    float b[N], t1[N], t2[N];
    for (int i = 0; i < N; i++) {
        b[i] = 0.25f * (float)i - 1.0f;
        t1[i] = b[i] + (i < N / 2 ? 0.5f + 0.125f * (float)i : 0.0f);
        t2[i] = b[i] + (i >= N / 2 ? -0.75f + 0.0625f * (float)i : 0.0f);
    }
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(task1, sizeof task1, "%s/task1", dir);
    snprintf(task2, sizeof task2, "%s/task2", dir);
    write_model(base, b);
    write_model(task1, t1);
    write_model(task2, t2);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* The weights of a model directory written by the merge (F32, as the base). */
static void read_w(const char *model_dir, float *w)
{
    pcbm_model *m = NULL;
    pcbm_error err;
    assert_int_equal(pcbm_model_open(model_dir, &m, &err), PCBM_OK);
    pcbm_tensor_info ti;
    assert_int_equal(pcbm_model_tensor(m, (size_t)pcbm_model_find(m, "w"), &ti), PCBM_OK);
    assert_int_equal(ti.dtype, PCBM_DT_F32);
    FILE *f = fopen(ti.file, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)ti.offset, SEEK_SET), 0);
    assert_int_equal(fread(w, sizeof(float), N, f), N);
    fclose(f);
    pcbm_model_close(m);
}

typedef struct scorer {
    unsigned calls;          /* evaluations run */
    unsigned stop_at;        /* return PCBM_ERR_INTERRUPTED at this evaluation (0: never) */
    unsigned request_at;     /* call pcbm_request_stop() after scoring this one (0: never) */
    float want[N];           /* the merge at the target λ */
} scorer;

static pcbm_status score_fn(void *user, const char *model_dir, unsigned index, double *score,
                            pcbm_error *err)
{
    scorer *sc = user;
    if (sc->stop_at && index == sc->stop_at) {
        err->status = PCBM_ERR_INTERRUPTED;
        snprintf(err->msg, sizeof err->msg, "stopped by the test");
        return PCBM_ERR_INTERRUPTED;
    }
    sc->calls++;
    float w[N];
    read_w(model_dir, w);
    double d = 0;
    for (int i = 0; i < N; i++)
        d += ((double)w[i] - sc->want[i]) * ((double)w[i] - sc->want[i]);
    *score = -d;
    if (sc->request_at && index == sc->request_at)
        pcbm_request_stop();
    return PCBM_OK;
}

static void init_scorer(scorer *sc)
{
    memset(sc, 0, sizeof *sc);
    float b[N], t1[N], t2[N];
    read_w(base, b);
    read_w(task1, t1);
    read_w(task2, t2);
    for (int i = 0; i < N; i++)
        sc->want[i] = (float)(b[i] + target[0] * (t1[i] - b[i]) + target[1] * (t2[i] - b[i]));
}

static const char *const tasks[2] = {task1, task2};

/* A task-arithmetic search into dir/name. */
static pcbm_status run(const char *name, scorer *sc, int resume, pcbm_search_result *res)
{
    static char out[400];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    pcbm_merge_opts mo;
    pcbm_merge_opts_init(&mo);
    mo.base = base;
    mo.tasks = tasks;
    mo.ntasks = 2;
    mo.out = out;
    mo.method = PCBM_METHOD_TASK_ARITHMETIC;
    mo.threads = 1;
    mo.io = PCBM_IO_PREAD; /* the search is under test, not the I/O backend (valgrind-friendly) */
    pcbm_search_opts so;
    pcbm_search_opts_init(&so);
    so.merge = &mo;
    so.evaluate = score_fn;
    so.user = sc;
    so.eval_id = "in-process test";
    so.budget = 19;
    so.popsize = 6;
    so.seed = 7;
    so.resume = resume;
    pcbm_error err;
    pcbm_status st = pcbm_search(&so, res, &err);
    if (st != PCBM_OK && st != PCBM_ERR_INTERRUPTED)
        fail_msg("pcbm_search: %s", err.msg);
    return st;
}

static void file_bytes(const char *name, const char *file, char **buf, long *len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s/%s", dir, name, file);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)*len + 1);
    assert_int_equal(fread(*buf, 1, (size_t)*len, f), (size_t)*len);
    fclose(f);
}

static void test_improves(void **state)
{
    (void)state;
    scorer sc;
    init_scorer(&sc);
    pcbm_search_result r;
    assert_int_equal(run("ref", &sc, 0, &r), PCBM_OK);
    assert_int_equal(r.evaluations, 19);
    assert_int_equal(sc.calls, 19);
    assert_true(r.have_init);
    assert_true(r.best_score > r.init_score);
    assert_true(fabs(r.best_lambdas[0] - target[0]) < fabs(1.0 - target[0]));
    assert_true(fabs(r.best_lambdas[1] - target[1]) < fabs(1.0 - target[1]));
    /* OUT is the merge at the best λ: it scores the best score again */
    char out[400];
    snprintf(out, sizeof out, "%s/ref", dir);
    double again;
    pcbm_error err;
    assert_int_equal(score_fn(&sc, out, 99, &again, &err), PCBM_OK);
    assert_true(again == r.best_score);
    struct stat sb;
    char p[500];
    snprintf(p, sizeof p, "%s/ref/search_summary.json", dir);
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/ref.search", dir);
    assert_int_not_equal(stat(p, &sb), 0);
}

/* Stopped at evaluation `at` (by the callback or by pcbm_request_stop), then resumed. */
static void stop_and_resume(const char *name, unsigned stop_at, unsigned request_at)
{
    scorer sc;
    init_scorer(&sc);
    sc.stop_at = stop_at;
    sc.request_at = request_at;
    pcbm_search_result r, ref;
    assert_int_equal(run(name, &sc, 0, &r), PCBM_ERR_INTERRUPTED);
    unsigned logged = stop_at ? stop_at - 1 : request_at;
    assert_int_equal(r.evaluations, logged);
    init_scorer(&sc);
    assert_int_equal(run(name, &sc, 1, &r), PCBM_OK);
    assert_int_equal(sc.calls, 19 - logged); /* the logged evaluations are replayed */
    init_scorer(&sc);
    assert_int_equal(run("ref2", &sc, 0, &ref), PCBM_OK); /* the uninterrupted search (again) */
    assert_int_equal(r.best_evaluation, ref.best_evaluation);
    assert_true(r.best_score == ref.best_score);
    assert_memory_equal(r.best_lambdas, ref.best_lambdas, 2 * sizeof(double));
    char *a, *b;
    long la, lb;
    file_bytes(name, "model.safetensors", &a, &la);
    file_bytes("ref2", "model.safetensors", &b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, (size_t)la);
    free(a);
    free(b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/ref2'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_resume_after_callback_stop(void **state)
{
    (void)state;
    stop_and_resume("cb", 9, 0);
}

static void test_resume_after_request_stop(void **state)
{
    (void)state;
    stop_and_resume("rq", 0, 5);
}

static void test_struct_size(void **state)
{
    (void)state;
    scorer sc;
    init_scorer(&sc);
    pcbm_merge_opts mo;
    pcbm_merge_opts_init(&mo);
    mo.base = base;
    mo.tasks = tasks;
    mo.ntasks = 2;
    mo.out = "/nonexistent/never";
    pcbm_search_opts so;
    pcbm_search_opts_init(&so);
    assert_int_equal(so.struct_size, sizeof so);
    so.merge = &mo;
    so.evaluate = score_fn;
    so.user = &sc;
    so.struct_size = 0;
    pcbm_error err;
    assert_int_equal(pcbm_search(&so, NULL, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "struct_size"));
    so.struct_size = (uint32_t)offsetof(pcbm_search_opts, on_event);
    assert_int_equal(pcbm_search(&so, NULL, &err), PCBM_ERR_USAGE);
    so.struct_size = sizeof so;
    so.evaluate = NULL;
    assert_int_equal(pcbm_search(&so, NULL, &err), PCBM_ERR_USAGE);
    so.evaluate = score_fn;
    mo.method = PCBM_METHOD_TIES;
    assert_int_equal(pcbm_search(&so, NULL, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "cannot be searched"));
    assert_int_equal(sc.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_improves),
        cmocka_unit_test(test_resume_after_callback_stop),
        cmocka_unit_test(test_resume_after_request_stop),
        cmocka_unit_test(test_struct_size),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

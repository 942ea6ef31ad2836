/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_library.c — libpcbmerge as a program embeds it: pcbm_merge() with default options writes
 * nothing to stdout or stderr; with callbacks the caller gets the messages (the run summary
 * included) and the progress events (every pass, a last event per pass, a completion event);
 * should_stop stops one merge only; options not set up by pcbm_merge_opts_init are refused;
 * concurrent merges on two threads keep their messages apart.
 * Needs pcbm-gen ($PCBM_TOOLS, else build/tools) to make a small family.
 */
#include "pcbmerge.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[256];
static char base[320], task1[320], task2[320];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/pcbm-test-library.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    const char *tools = getenv("PCBM_TOOLS");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/pcbm-gen' --quiet --out '%s/fam' --tasks 2 --preset tiny --seed 7",
             tools ? tools : "build/tools", dir);
    if (system(cmd) != 0)
        return -1;
    snprintf(base, sizeof base, "%s/fam/base", dir);
    snprintf(task1, sizeof task1, "%s/fam/task1", dir);
    snprintf(task2, sizeof task2, "%s/fam/task2", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static const char *tasks[2];

static void opts_for(pcbm_merge_opts *o, const char *out)
{
    pcbm_merge_opts_init(o);
    tasks[0] = task1;
    tasks[1] = task2;
    o->base = base;
    o->tasks = tasks;
    o->ntasks = 2;
    o->out = out;
    o->mem_bytes = 64ull << 20;
    o->threads = 2;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Default options: the merge succeeds and nothing reaches file descriptors 1 and 2. */
static void silent_by_default(void **state)
{
    (void)state;
    char out[320], cap[320];
    snprintf(out, sizeof out, "%s/silent", dir);
    snprintf(cap, sizeof cap, "%s/captured", dir);
    pcbm_merge_opts o;
    opts_for(&o, out);
    fflush(stdout);
    fflush(stderr);
    int saved1 = dup(1), saved2 = dup(2);
    int fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0 && saved1 >= 0 && saved2 >= 0);
    dup2(fd, 1);
    dup2(fd, 2);
    pcbm_error err;
    pcbm_status st = pcbm_merge(&o, &err);
    fflush(stdout);
    fflush(stderr);
    dup2(saved1, 1);
    dup2(saved2, 2);
    close(fd);
    close(saved1);
    close(saved2);
    assert_int_equal(st, PCBM_OK);
    assert_int_equal(file_size(cap), 0);
}

typedef struct seen {
    unsigned warnings, notes;
    int summary, wrote;            /* the run summary's lines arrived */
    unsigned pass_events, pass_ends, done_events;
    int after_done;                /* an event arrived after DONE */
    int bytes_beyond_total;        /* a pass event with bytes > total */
    int index_went_back;
    unsigned last_index;
    pcbm_status done_status;
    int stop_after;                /* should_stop: stop once this many PASS events arrived */
    char first_note[256];
} seen;

static void on_message(void *user, pcbm_level level, const char *text)
{
    seen *s = user;
    if (level == PCBM_LEVEL_WARNING)
        s->warnings++;
    else
        s->notes++;
    if (s->notes == 1 && !s->first_note[0])
        snprintf(s->first_note, sizeof s->first_note, "%s", text);
    if (strstr(text, "peak memory"))
        s->summary = 1;
    if (strncmp(text, "wrote ", 6) == 0)
        s->wrote = 1;
}

static void on_progress(void *user, const pcbm_progress_event *ev)
{
    seen *s = user;
    if (s->done_events)
        s->after_done = 1;
    switch (ev->kind) {
    case PCBM_PROGRESS_PASS:
        s->pass_events++;
        break;
    case PCBM_PROGRESS_PASS_END:
        s->pass_ends++;
        break;
    case PCBM_PROGRESS_DONE:
        s->done_events++;
        s->done_status = ev->status;
        return;
    }
    if (ev->pass_bytes > ev->pass_total || ev->bytes > ev->total)
        s->bytes_beyond_total = 1;
    if (ev->pass_index < s->last_index)
        s->index_went_back = 1;
    s->last_index = ev->pass_index;
}

static int should_stop(void *user)
{
    seen *s = user;
    return s->stop_after && (int)(s->pass_events + s->pass_ends) >= s->stop_after;
}

static void callbacks_get_everything(void **state)
{
    (void)state;
    char out[320];
    snprintf(out, sizeof out, "%s/loud", dir);
    pcbm_merge_opts o;
    opts_for(&o, out);
    seen s;
    memset(&s, 0, sizeof s);
    o.on_message = on_message;
    o.on_progress = on_progress;
    o.user = &s;
    pcbm_error err;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_OK);
    assert_true(s.summary);
    assert_true(s.wrote);
    assert_true(s.pass_ends >= 2);       /* pcb: statistics passes and the apply pass */
    assert_int_equal(s.done_events, 1);
    assert_int_equal(s.done_status, PCBM_OK);
    assert_false(s.after_done);
    assert_false(s.bytes_beyond_total);
    assert_false(s.index_went_back);
}

static void should_stop_stops_this_merge(void **state)
{
    (void)state;
    char out[320], out2[320];
    snprintf(out, sizeof out, "%s/stopped", dir);
    snprintf(out2, sizeof out2, "%s/after-stop", dir);
    pcbm_merge_opts o;
    opts_for(&o, out);
    o.block_bytes = 4096; /* many blocks: the stop lands inside a pass */
    seen s;
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    o.on_progress = on_progress;
    o.should_stop = should_stop;
    o.user = &s;
    pcbm_error err;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_INTERRUPTED);
    assert_int_equal(s.done_status, PCBM_ERR_INTERRUPTED);
    assert_int_equal(file_size(out), -1); /* nothing published */
    /* the next merge in this process is not stopped */
    opts_for(&o, out2);
    assert_int_equal(pcbm_merge(&o, &err), PCBM_OK);
}

static void unknown_struct_size_refused(void **state)
{
    (void)state;
    char out[320];
    snprintf(out, sizeof out, "%s/never", dir);
    pcbm_merge_opts o;
    opts_for(&o, out);
    o.struct_size = 0;
    pcbm_error err;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "pcbm_merge_opts_init"));
    o.struct_size = 12;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_int_equal(file_size(out), -1);
}

/* Coefficients the float32 kernels cannot use are refused by the library itself (the CLI's
 * parser refuses some of them earlier). */
static void nonfinite_coefficients_refused(void **state)
{
    (void)state;
    char out[320];
    snprintf(out, sizeof out, "%s/nonfinite", dir);
    pcbm_merge_opts o;
    pcbm_error err;
    double bad[][2] = {{1, NAN}, {1, INFINITY}, {1, 1e39}};
    for (int k = 0; k < 3; k++) {
        opts_for(&o, out);
        o.lambdas = bad[k];
        assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
        assert_non_null(strstr(err.msg, "`lambdas` value 2"));
    }
    opts_for(&o, out);
    o.lambda = 1e39;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    double w[2] = {3e38, 3e38};
    opts_for(&o, out);
    o.method = PCBM_METHOD_LINEAR;
    o.weights = w;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_int_equal(file_size(out), -1);
}

/* gammas / epsilons (the last fields): refused by a method that does not read them and out of
 * range; a caller built before them (a struct_size that ends before `gammas`) gets NULL — one
 * value for every task — whatever lies beyond its struct. */
static void per_task_gamma_epsilon(void **state)
{
    (void)state;
    char out[320];
    snprintf(out, sizeof out, "%s/gammas", dir);
    pcbm_merge_opts o;
    pcbm_error err;
    double g[2] = {0.02, 0.1}, bad[2] = {0.02, 1.0};
    opts_for(&o, out);
    o.method = PCBM_METHOD_TIES;
    o.gammas = g;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "`gammas` does not apply to the ties method"));
    opts_for(&o, out);
    o.method = PCBM_METHOD_BREADCRUMBS;
    o.epsilons = g;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "`epsilons` does not apply to the breadcrumbs method"));
    opts_for(&o, out);
    o.method = PCBM_METHOD_BREADCRUMBS;
    o.gammas = bad;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "`gammas` value 2 is 1"));
    opts_for(&o, out);
    o.method = PCBM_METHOD_DELLA;
    o.density = 0.5;
    o.epsilons = bad;
    assert_int_equal(pcbm_merge(&o, &err), PCBM_ERR_USAGE);
    assert_int_equal(file_size(out), -1);
    /* an older caller: the bytes past its struct_size are not read */
    opts_for(&o, out);
    o.method = PCBM_METHOD_TIES;
    o.gammas = bad;
    o.epsilons = bad;
    o.struct_size = (uint32_t)offsetof(pcbm_merge_opts, gammas);
    assert_int_equal(pcbm_merge(&o, &err), PCBM_OK);
    assert_true(file_size(out) != -1);
}

typedef struct thread_job {
    char out[320];
    seen s;
    pcbm_status st;
} thread_job;

static void *merge_thread(void *arg)
{
    thread_job *j = arg;
    pcbm_merge_opts o;
    opts_for(&o, j->out);
    o.threads = 1;
    o.on_message = on_message;
    o.user = &j->s;
    pcbm_error err;
    j->st = pcbm_merge(&o, &err);
    return NULL;
}

/* Two merges at once: each gets its own messages, naming its own output. */
static void concurrent_merges_keep_messages_apart(void **state)
{
    (void)state;
    thread_job *j = calloc(2, sizeof *j);
    assert_non_null(j);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        snprintf(j[i].out, sizeof j[i].out, "%s/thread%d", dir, i);
        assert_int_equal(pthread_create(&t[i], NULL, merge_thread, &j[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(j[i].st, PCBM_OK);
        assert_true(j[i].s.wrote);
        assert_true(j[i].s.summary);
    }
    /* the same number of notes each: no message went to the other merge's sink */
    assert_int_equal(j[0].s.notes, j[1].s.notes);
    free(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(silent_by_default),
        cmocka_unit_test(callbacks_get_everything),
        cmocka_unit_test(should_stop_stops_this_merge),
        cmocka_unit_test(unknown_struct_size_refused),
        cmocka_unit_test(nonfinite_coefficients_refused),
        cmocka_unit_test(per_task_gamma_epsilon),
        cmocka_unit_test(concurrent_merges_keep_messages_apart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

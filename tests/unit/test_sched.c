/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_sched.c — the scheduler (src/sched): sizing from a budget (what fits stays inside --mem;
 * below the minimum it is refused and the minimum is named), sample cursors (a pass of stride s
 * visits exactly pcbm_sample_count elements of each tensor, never a block across a sample unit),
 * and whole passes of the engine over a small plan of real files: every block is visited once
 * with the right input bytes, and apply passes emit the blocks in order into the output files.
 */
#include "sched/budget.h"
#include "sched/cursor.h"
#include "sched/engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* ---- sizing ------------------------------------------------------------------------------ */

/* A plan with only what sizing and cursors read: nt tensors of `units` elements. */
static void fake_plan(pcbm_layout *p, pcbm_tlayout *t, size_t nt, const uint64_t *units,
                      unsigned nmodels, unsigned unit)
{
    memset(p, 0, sizeof *p);
    memset(t, 0, nt * sizeof *t);
    p->nmodels = nmodels;
    p->max_in_unit = unit;
    p->t = t;
    p->nt = nt;
    static unsigned unit_pool[64 * PCBM_MAX_MODELS]; /* the plan's pool (nt <= 64 here) */
    static pcbm_tsrc src_pool[64 * PCBM_MAX_MODELS];
    assert_true(nt <= 64);
    for (size_t i = 0; i < nt; i++) {
        t[i].kind = PCBM_T_MERGE;
        t[i].units = units[i];
        t[i].out_unit = unit;
        t[i].in_unit = unit_pool + i * nmodels;
        t[i].src = src_pool + i * nmodels;
        for (unsigned m = 0; m < nmodels; m++)
            t[i].in_unit[m] = unit;
    }
}

static void test_budget(void **state)
{
    (void)state;
    pcbm_layout p;
    pcbm_tlayout t[1];
    uint64_t units[1] = {1u << 20};
    fake_plan(&p, t, 1, units, 4, 2);
    for (unsigned threads = 1; threads <= 8; threads *= 2) {
        uint64_t reserved = 3u << 20;
        uint64_t min = pcbm_engine_min_mem(&p, threads, reserved);
        pcbm_engine_cfg cfg = {.mem_bytes = min, .reserved_bytes = reserved, .threads = threads};
        pcbm_budget b;
        pcbm_error err;
        /* the minimum works: a block set per thread plus two, inside the budget */
        assert_int_equal(pcbm_budget_size(&p, &cfg, &b, &err), PCBM_OK);
        assert_true(b.nslots >= threads + 2);
        assert_true(b.buffer_bytes + reserved <= min);
        /* one byte less is refused, naming the minimum */
        cfg.mem_bytes = min - 1;
        assert_int_equal(pcbm_budget_size(&p, &cfg, &b, &err), PCBM_ERR_NOMEM);
        char want[32];
        pcbm_fmt_bytes(min, want, sizeof want);
        assert_non_null(strstr(err.msg, "too small"));
        assert_non_null(strstr(err.msg, want));
        /* whatever fits stays inside the budget, with blocks no smaller than the minimum's */
        for (uint64_t mem = min; mem < min + (256u << 20); mem += (7u << 20) + 12345) {
            cfg.mem_bytes = mem;
            assert_int_equal(pcbm_budget_size(&p, &cfg, &b, &err), PCBM_OK);
            assert_true(b.buffer_bytes + reserved <= mem);
            assert_true(b.nslots >= threads + 2 && b.nslots <= PCBM_MAX_SLOTS);
            assert_true(b.block_elems >= 4096);
            assert_true(b.cap_in >= b.block_elems * p.max_in_unit);
        }
    }
    /* a fixed block size needs two block sets of that size */
    pcbm_engine_cfg cfg = {.mem_bytes = 1u << 20, .threads = 4, .block_bytes = 4u << 20};
    pcbm_budget b;
    pcbm_error err;
    assert_int_equal(pcbm_budget_size(&p, &cfg, &b, &err), PCBM_ERR_NOMEM);
    cfg.mem_bytes = 64u << 20;
    assert_int_equal(pcbm_budget_size(&p, &cfg, &b, &err), PCBM_OK);
    assert_int_equal(b.block_elems, (4u << 20) / 2);
    assert_true(b.nslots >= 2);
}

/* ---- cursors ----------------------------------------------------------------------------- */

static void test_sample_cursors(void **state)
{
    (void)state;
    /* tensors smaller than a sample unit, of a few units, of many, and empty */
    const uint64_t units[] = {100, PCBM_SAMPLE_UNIT, 3 * PCBM_SAMPLE_UNIT + 7, 0,
                              41 * PCBM_SAMPLE_UNIT - 1, 200 * PCBM_SAMPLE_UNIT + 5, 12345};
    enum { NT = sizeof units / sizeof units[0] };
    const uint64_t blocks[] = {4096, 5000, PCBM_SAMPLE_UNIT, 3 * PCBM_SAMPLE_UNIT};
    const uint32_t strides[] = {0, 1, 2, 3, 7, 64, 1000};
    pcbm_layout p;
    pcbm_tlayout t[NT];
    fake_plan(&p, t, NT, units, 2, 2);
    t[6].kind = PCBM_T_RAW; /* not visited by statistics passes */
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        pcbm_layout_set_block(&p, blocks[bi]);
        for (size_t si = 0; si < sizeof strides / sizeof strides[0]; si++) {
            uint32_t stride = strides[si];
            pcbm_pass ps = {.name = "stats", .kind = PCBM_PASS_STATS, .t0 = 0, .t1 = NT,
                            .sample_stride = stride};
            pcbm_walk w = {.layout = &p, .ps = &ps, .file_lo = 0, .file_hi = 1};
            uint64_t seen[NT] = {0}, next[NT] = {0}, total = 0;
            pcbm_cursor c;
            size_t last_t = 0;
            for (bool more = pcbm_cursor_first(&w, &c); more; more = pcbm_cursor_next(&w, &c)) {
                assert_true(c.t < NT && c.t >= last_t); /* tensors in order */
                assert_true(c.n > 0 && c.n <= t[c.t].block_units);
                assert_true(c.start >= next[c.t]);      /* blocks in order, never twice */
                assert_true(c.start + c.n <= t[c.t].units);
                if (stride > 1) /* a block never crosses a sample unit */
                    assert_int_equal(c.start / PCBM_SAMPLE_UNIT,
                                     (c.start + c.n - 1) / PCBM_SAMPLE_UNIT);
                seen[c.t] += c.n;
                next[c.t] = c.start + c.n;
                last_t = c.t;
            }
            for (size_t i = 0; i < NT; i++) {
                uint64_t want = t[i].kind == PCBM_T_MERGE ? pcbm_sample_count(&t[i], i, stride) : 0;
                if (seen[i] != want)
                    fail_msg("block %llu stride %u tensor %zu: %llu visited, %llu sampled",
                             (unsigned long long)blocks[bi], stride, i,
                             (unsigned long long)seen[i], (unsigned long long)want);
                total += want * 2 * 2;
            }
            assert_int_equal(pcbm_walk_total_bytes(&w), total);
        }
    }
    /* the rule: all of a tensor for stride <= 1; one unit in `stride` otherwise */
    assert_int_equal(pcbm_sample_count(&t[5], 5, 1), units[5]);
    assert_int_equal(pcbm_sample_count(&t[0], 0, 64), 100);
    assert_int_equal(pcbm_sample_count(&t[4], 4, 2), 21 * PCBM_SAMPLE_UNIT - 1);
    assert_int_equal(pcbm_sample_count(&t[4], 3, 2), 20 * PCBM_SAMPLE_UNIT);
}

/* ---- whole passes over real files -------------------------------------------------------- */

#define NMODELS 3
#define NTEN 5
static char g_dir[256];
static const char *tnames[NTEN] = {"a.weight", "b.weight", "c.bias", "d.index", "e.weight"};
static const char *tdtypes[NTEN] = {"F32", "F32", "F32", "I32", "BF16"};
static const uint64_t tnumel[NTEN] = {20000, 64 * 700, 37, 1000, 9001};

static uint8_t in_byte(unsigned m, size_t t, uint64_t i)
{
    return (uint8_t)(i * 2654435761u + t * 131u + m * 17u + (i >> 11));
}

static const char *path_in(const char *name)
{
    static char buf[4][512];
    static unsigned k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

/* Write model m as one safetensors file. */
static void write_model(unsigned m, const char *path)
{
    char hdr[2048];
    size_t h = 0;
    uint64_t off = 0;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{");
    for (size_t t = 0; t < NTEN; t++) {
        uint64_t nb = tnumel[t] * (tdtypes[t][0] == 'B' ? 2 : 4);
        h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                              "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],"
                              "\"data_offsets\":[%llu,%llu]}",
                              t ? "," : "", tnames[t], tdtypes[t], (unsigned long long)tnumel[t],
                              (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
    while (h % 8)
        hdr[h++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)h >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hdr, 1, h, f);
    for (size_t t = 0; t < NTEN; t++) {
        uint64_t nb = tnumel[t] * (tdtypes[t][0] == 'B' ? 2 : 4);
        for (uint64_t i = 0; i < nb; i++)
            fputc(in_byte(m, t, i), f);
    }
    fclose(f);
}

static pcbm_model *models[NMODELS];
static pcbm_layout plan;

static int setup_files(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/pcbm-test-sched.XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    pcbm_error err;
    for (unsigned m = 0; m < NMODELS; m++) {
        char name[32];
        snprintf(name, sizeof name, "m%u.safetensors", m);
        write_model(m, path_in(name));
        if (pcbm_model_open(path_in(name), &models[m], &err) != PCBM_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return -1;
        }
    }
    pcbm_layout_opts po = {.out_dtype = PCBM_DTYPE_BASE, .shard_bytes = 60000};
    if (pcbm_layout_build(models, NMODELS, &po, &plan, &err) != PCBM_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return plan.out.nfiles >= 2 && plan.nmerge == 4 ? 0 : -1;
}

static int teardown_files(void **state)
{
    (void)state;
    pcbm_layout_free(&plan);
    for (unsigned m = 0; m < NMODELS; m++)
        pcbm_model_close(models[m]);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd);
}

/* Visits recorded by the pass callback (worker threads). */
typedef struct visits {
    pthread_mutex_t mu;
    uint8_t *count[NTEN];     /* per unit of plan tensor ti: times visited */
    unsigned bad_input;       /* blocks whose input bytes were not the model's */
    uint32_t stride;
} visits;

/* Index of plan tensor ti among the written tensors (the plan keeps the base's order). */
static size_t tidx(size_t ti)
{
    for (size_t t = 0; t < NTEN; t++)
        if (strcmp(plan.t[ti].name, tnames[t]) == 0)
            return t;
    fail_msg("tensor %s not written", plan.t[ti].name);
    return 0;
}

static pcbm_status visit(void *arg, unsigned worker, const pcbm_blockview *bv, pcbm_error *err)
{
    (void)worker;
    (void)err;
    visits *v = arg;
    size_t t = tidx(bv->tensor);
    unsigned nin = bv->t->kind == PCBM_T_MERGE ? NMODELS : 1;
    bool ok = true;
    for (unsigned m = 0; m < nin; m++) {
        const uint8_t *in = bv->in[m];
        unsigned u = bv->t->in_unit[m];
        for (uint64_t i = 0; i < (uint64_t)bv->n * u; i++)
            ok &= in[i] == in_byte(m, t, bv->start * u + i);
    }
    if (bv->out) /* apply: the output of tensor t is the input of model t % NMODELS (or base) */
        memcpy(bv->out, bv->in[bv->t->kind == PCBM_T_MERGE ? t % NMODELS : 0],
               (size_t)bv->n * bv->t->out_unit);
    pthread_mutex_lock(&v->mu);
    for (uint64_t i = 0; i < bv->n; i++)
        v->count[bv->tensor][bv->start + i]++;
    v->bad_input += !ok;
    pthread_mutex_unlock(&v->mu);
    return PCBM_OK;
}

static void check_output(const pcbm_engine *e, const char *out)
{
    for (unsigned f = 0; f < plan.out.nfiles; f++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", out, plan.out.files[f].name);
        int fd = open(p, O_RDONLY);
        assert_true(fd >= 0);
        struct stat sb;
        assert_int_equal(fstat(fd, &sb), 0);
        assert_int_equal((uint64_t)sb.st_size, plan.out.files[f].size);
        uint8_t *b = malloc((size_t)sb.st_size);
        assert_int_equal(pread(fd, b, (size_t)sb.st_size, 0), sb.st_size);
        close(fd);
        assert_memory_equal(b, plan.out.files[f].header, plan.out.files[f].data_start);
        for (size_t ti = 0; ti < plan.nt; ti++) {
            const pcbm_tlayout *tp = &plan.t[ti];
            if (tp->out_file != f)
                continue;
            size_t t = tidx(ti);
            unsigned m = tp->kind == PCBM_T_MERGE ? (unsigned)(t % NMODELS) : 0;
            for (uint64_t i = 0; i < tp->units * tp->out_unit; i++)
                if (b[tp->out_off + i] != in_byte(m, t, i))
                    fail_msg("%s: output byte %llu of %s differs", p, (unsigned long long)i,
                             tp->name);
        }
        assert_true(XXH128_isEqual(XXH3_128bits(b, (size_t)sb.st_size),
                                   pcbm_engine_file_hash(e, f)));
        free(b);
    }
}

/* Run a statistics pass (stride), then an apply pass, with this backend, and check the visits. */
static void run_passes(pcbm_io_kind io, uint32_t stride, const char *out)
{
    assert_int_equal(mkdir(out, 0755), 0);
    pcbm_engine_cfg cfg = {.mem_bytes = 64u << 20, .threads = 3, .io = io, .block_bytes = 16384,
                           .out_dir = out};
    pcbm_engine *e = NULL;
    pcbm_error err;
    assert_int_equal(pcbm_engine_create(&plan, &cfg, &e, &err), PCBM_OK);
    assert_int_equal(plan.block_elems, 4096);
    visits v = {.mu = PTHREAD_MUTEX_INITIALIZER, .stride = stride};
    assert_int_equal(plan.nt, NTEN);
    for (size_t ti = 0; ti < NTEN; ti++)
        v.count[ti] = calloc(plan.t[ti].units, 1);

    pcbm_pass st = {.name = "stats", .kind = PCBM_PASS_STATS, .t0 = 0, .t1 = plan.nt,
                    .sample_stride = stride, .fn = visit, .arg = &v};
    assert_int_equal(pcbm_engine_run(e, &st, &err), PCBM_OK);
    for (size_t ti = 0; ti < NTEN; ti++) {
        const pcbm_tlayout *tp = &plan.t[ti];
        uint64_t n = 0;
        for (uint64_t i = 0; i < tp->units; i++) {
            assert_true(v.count[ti][i] <= 1);
            n += v.count[ti][i];
        }
        assert_int_equal(n, tp->kind == PCBM_T_MERGE ? pcbm_sample_count(tp, ti, stride) : 0);
        memset(v.count[ti], 0, tp->units);
    }

    pcbm_pass ap = {.name = "apply", .kind = PCBM_PASS_APPLY, .t0 = 0, .t1 = plan.nt,
                    .fn = visit, .arg = &v};
    assert_int_equal(pcbm_engine_run(e, &ap, &err), PCBM_OK);
    assert_int_equal(pcbm_engine_finish_output(e, &err), PCBM_OK);
    for (size_t ti = 0; ti < NTEN; ti++) {
        for (uint64_t i = 0; i < plan.t[ti].units; i++)
            if (v.count[ti][i] != 1)
                fail_msg("%s unit %llu visited %u times", plan.t[ti].name, (unsigned long long)i,
                         v.count[ti][i]);
        free(v.count[ti]);
    }
    assert_int_equal(v.bad_input, 0);
    check_output(e, out);
    const pcbm_engine_report *r = pcbm_engine_get_report(e);
    assert_int_equal(r->npasses, 2);
    assert_true(r->bytes_written >= plan.out.total_file_bytes);
    pcbm_engine_destroy(e);
}

static void test_passes_pread(void **state)
{
    (void)state;
    run_passes(PCBM_IO_PREAD, 1, path_in("out-pread"));
    run_passes(PCBM_IO_PREAD, 3, path_in("out-pread-s3"));
}

static void test_passes_mmap(void **state)
{
    (void)state;
    run_passes(PCBM_IO_MMAP, 1, path_in("out-mmap"));
    run_passes(PCBM_IO_AUTO, 2, path_in("out-auto-s2"));
}

/* The engine itself refuses a budget under its minimum and names it. */
static void test_engine_min_mem(void **state)
{
    (void)state;
    uint64_t min = pcbm_engine_min_mem(&plan, 2, 1u << 20);
    pcbm_engine_cfg cfg = {.mem_bytes = min - 1, .reserved_bytes = 1u << 20, .threads = 2,
                           .io = PCBM_IO_PREAD, .out_dir = g_dir};
    pcbm_engine *e = NULL;
    pcbm_error err;
    assert_int_equal(pcbm_engine_create(&plan, &cfg, &e, &err), PCBM_ERR_NOMEM);
    assert_null(e);
    char want[32];
    assert_non_null(strstr(err.msg, pcbm_fmt_bytes(min, want, sizeof want)));
    cfg.mem_bytes = min;
    assert_int_equal(pcbm_engine_create(&plan, &cfg, &e, &err), PCBM_OK);
    assert_true(pcbm_engine_get_report(e)->buffer_bytes + (1u << 20) <= min);
    pcbm_engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_sample_cursors),
        cmocka_unit_test(test_passes_pread),
        cmocka_unit_test(test_passes_mmap),
        cmocka_unit_test(test_engine_min_mem),
    };
    return cmocka_run_group_tests(tests, setup_files, teardown_files);
}

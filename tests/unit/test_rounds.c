/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_rounds.c — the rounds driver (src/merge/rounds.c) and the methods' rounds (method.h):
 * one machine (any thread count), the parts of a split merge (any order) and the split reduce
 * reach the same statistics, bit for bit, for PCB and TIES over tiles made here; the table holds
 * every method under its own index and name; a finish that asks for a fallback round gets it, in
 * every context; accumulators combine in any order; and each method's finish() decides the right
 * thing from small hand-made accumulators.
 */
#include "merge/pcb_math.h"
#include "merge/run_internal.h"
#include "merge/split.h"
#include "stats/xsum.h"

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

#define NT 3            /* tasks */
#define D 40000u        /* merged elements */

static char dir[256];
static float tau_data[NT][D];

static int setup(void **state)
{
    (void)state;
    return test_tmpdir_make(dir, sizeof dir, "rounds");
}

static int teardown(void **state)
{
    (void)state;
    return test_tmpdir_remove(dir);
}

/* Task vectors with many exact ties (values on a coarse grid) and a few outliers. */
static void make_data(uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (unsigned i = 0; i < NT; i++)
        for (unsigned k = 0; k < D; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            int v = (int)((x >> 33) % 2001) - 1000;
            float f = (float)v * 1e-4f * (float)(i + 1);
            if ((x >> 20) % 997 == 0)
                f *= 40.0f;
            tau_data[i][k] = f;
        }
}

static pcbm_merge_opts mk_opts(pcbm_method m)
{
    pcbm_merge_opts o;
    pcbm_merge_opts_init(&o);
    o.method = m;
    o.ntasks = NT;
    o.stats_mode = PCBM_STATS_EXACT;
    o.density = m == PCBM_METHOD_TIES ? 0.2 : 0.1;
    o.clamp_ratio = 0.01;
    o.scope = pcbm_method_default_scope(&o); /* what pcbm_merge resolves AUTO into */
    return o;
}

static pcbm_tlayout one_tensor = {.kind = PCBM_T_MERGE, .units = D};
static pcbm_layout plan = {.t = &one_tensor, .nt = 1, .nmerge = 1, .d = D};

static pcbm_mctx mk_ctx(const pcbm_merge_opts *o, unsigned threads)
{
    pcbm_mctx mc;
    memset(&mc, 0, sizeof mc);
    mc.o = o;
    mc.layout = &plan;
    mc.ntasks = o->ntasks;
    mc.threads = threads;
    for (unsigned i = 0; i < o->ntasks; i++)
        mc.lam[i] = 1.0f;
    return mc;
}

/* The pass: this context's elements (a split part: its share), cut among the threads, in tiles. */
static pcbm_status fake_pass(pcbm_mctx *mc, const pcbm_round *r, void *state,
                             const pcbm_range *rg, pcbm_error *err)
{
    (void)rg, (void)err;
    static float tau[NT][PCBM_TILE], theta[NT][PCBM_TILE], base[PCBM_TILE], tmp[4 * PCBM_TILE];
    size_t lo = 0, hi = D;
    if (mc->split) {
        lo = (size_t)D * mc->split->part / mc->split->parts;
        hi = (size_t)D * (mc->split->part + 1) / mc->split->parts;
    }
    float *tp[NT], *th[NT];
    for (unsigned i = 0; i < NT; i++)
        tp[i] = tau[i], th[i] = theta[i];
    for (unsigned w = 0; w < mc->threads; w++) {
        size_t a = lo + (hi - lo) * w / mc->threads, b = lo + (hi - lo) * (w + 1) / mc->threads;
        for (size_t k = a; k < b; k += PCBM_TILE) {
            unsigned n = (unsigned)(b - k < PCBM_TILE ? b - k : PCBM_TILE);
            for (unsigned i = 0; i < mc->ntasks; i++)
                memcpy(tau[i], &tau_data[i][k], n * sizeof(float));
            pcbm_tile tl = {.start = k, .n = n, .base = base, .theta = th, .tau = tp, .tmp = tmp};
            r->tile(mc, w, &tl, state);
        }
    }
    return PCBM_OK;
}

/* ---- the table ---- */

/* Every method has its entry, under its own index and name, with what the driver calls. */
static void test_table(void **state)
{
    (void)state;
    unsigned with_rounds = 0;
    for (unsigned k = 0; k < PCBM_METHOD_COUNT; k++) {
        const pcbm_method_def *m = pcbm_method_find((pcbm_method)k);
        assert_non_null(m);
        assert_int_equal(m->id, k);
        assert_int_equal(pcbm_method_parse(m->name), k);
        assert_string_equal(pcbm_method_name((pcbm_method)k), m->name);
        assert_non_null(m->apply);
        assert_true(m->nrounds == 0 || (m->init && m->free && m->save && m->load && m->how));
        for (unsigned r = 0; r < m->nrounds; r++)
            assert_true(m->rounds[r] && m->rounds[r]->tile && m->rounds[r]->finish);
        /* mergekit's per-tensor methods may skip every round of a tensor: their apply checks */
        assert_true(m->nrounds == 0 || m->per_tensor || m->scope_tensor ||
                    !m->apply_checks_finite);
        /* per-tensor methods: the inputs are checked (by the apply when a tensor may skip its
         * rounds), and every range starts at the method's first round */
        assert_true(!(m->per_tensor || m->scope_tensor) ||
                    ((m->apply_checks_finite || m->rounds[0]->check_finite) &&
                                       (m->first_round || m->nrounds > 0)));
        with_rounds += m->nrounds > 0;
    }
    /* pcb, ties, dare_ties, slerp, nuslerp, model_stock, sce, breadcrumbs(_ties), della(_linear) */
    assert_int_equal(with_rounds, 11);
    for (unsigned k = 0; k < PCBM_METHOD_COUNT; k++) { /* per-tensor methods: tensor scope */
        const pcbm_method_def *m = pcbm_method_find((pcbm_method)k);
        pcbm_merge_opts o = mk_opts((pcbm_method)k);
        assert_int_equal(pcbm_method_per_tensor(&o), m->per_tensor);
        assert_true(!m->per_tensor || (m->nrounds > 0 && (m->uses & PCBM_USES_SCOPE)));
    }
    pcbm_merge_opts so = mk_opts(PCBM_METHOD_SLERP), to = mk_opts(PCBM_METHOD_TIES);
    assert_true(pcbm_method_per_tensor(&so));
    assert_false(pcbm_method_per_tensor(&to));
    to.semantics = PCBM_SEMANTICS_MERGEKIT; /* mergekit's ties: tensor scope by default only */
    assert_false(pcbm_method_per_tensor(&to));
    assert_int_equal(pcbm_method_default_scope(&to), PCBM_SCOPE_TENSOR);
    /* --mergekit: ties, dare_ties and dare_linear under their own names, per tensor, with
     * mergekit's defaults (ties normalizes, dare_* do not; the random ones rescale) */
    static const struct {
        pcbm_method m;
        bool normalizes, rescales;
    } mk[] = {{PCBM_METHOD_TIES, true, false},
              {PCBM_METHOD_DARE_TIES, false, true},
              {PCBM_METHOD_DARE_LINEAR, false, true}};
    for (unsigned k = 0; k < sizeof mk / sizeof *mk; k++) {
        pcbm_merge_opts o = mk_opts(mk[k].m);
        const pcbm_method_def *off = pcbm_method_for(&o);
        assert_ptr_equal(off, pcbm_method_find(mk[k].m));
        o.semantics = PCBM_SEMANTICS_MERGEKIT;
        const pcbm_method_def *m = pcbm_method_for(&o);
        assert_ptr_not_equal(m, off);
        assert_int_equal(m->id, mk[k].m);
        assert_string_equal(m->name, off->name);
        assert_true(!m->per_tensor && m->scope_tensor && m->nrounds > 0 && m->first_round &&
                    m->save && m->load);
        assert_int_equal(pcbm_method_normalizes(&o), mk[k].normalizes);
        assert_int_equal(pcbm_method_rescales(&o), mk[k].rescales);
    }
    /* the other methods are the same under either semantics (recipes set MERGEKIT for all) */
    for (unsigned k = 0; k < PCBM_METHOD_COUNT; k++) {
        if (k == PCBM_METHOD_TIES || k == PCBM_METHOD_DARE_TIES || k == PCBM_METHOD_DARE_LINEAR)
            continue;
        pcbm_merge_opts o = mk_opts((pcbm_method)k);
        o.semantics = PCBM_SEMANTICS_MERGEKIT;
        assert_ptr_equal(pcbm_method_for(&o), pcbm_method_find((pcbm_method)k));
    }
}

/* DELLA's blocks: whole rows and whole identity leaves (lcm of the row and 4096 elements). */
static void test_row_blocks(void **state)
{
    (void)state;
    pcbm_tlayout t = {.kind = PCBM_T_MERGE, .units = 688ull * 4096, .row_units = 688};
    assert_int_equal(pcbm_layout_row_block(&t), 176128); /* 688 = 43 · 16 */
    t.row_units = 1024;
    assert_int_equal(pcbm_layout_row_block(&t), 4096);
    t.row_units = 12288;
    assert_int_equal(pcbm_layout_row_block(&t), 12288);
    t.row_units = 0;
    assert_int_equal(pcbm_layout_row_block(&t), 0);
    t.row_units = t.units; /* one row: the whole tensor in a block, checked by the method */
    assert_int_equal(pcbm_layout_row_block(&t), 0);
    t.row_units = 688;
    pcbm_layout p = {.nt = 1, .t = &t, .max_in_unit = 4};
    pcbm_layout_set_block(&p, 400000);
    assert_int_equal(t.block_units, 2 * 176128);
    pcbm_layout_set_block(&p, 100000); /* no whole rows fit: left as is (della refuses it) */
    assert_int_equal(t.block_units, 100000);
    t.row_units = 0;
    pcbm_layout_set_block(&p, 400000);
    assert_int_equal(t.block_units, 400000);
}

/* The parameters a method declares are the ones the option checks let through to it. */
static void test_uses(void **state)
{
    (void)state;
    static const char *tasks[NT] = {"a", "b", "c"};
    double per_task[NT] = {0.5, 1.0, 1.5};
    pcbm_error err;
    for (unsigned ks = 0; ks < 2 * PCBM_METHOD_COUNT; ks++) { /* official, then --mergekit */
        unsigned k = ks % PCBM_METHOD_COUNT;
        pcbm_merge_opts o = mk_opts((pcbm_method)k);
        o.semantics = ks < PCBM_METHOD_COUNT ? PCBM_SEMANTICS_OFFICIAL : PCBM_SEMANTICS_MERGEKIT;
        const pcbm_method_def *m = pcbm_method_for(&o);
        o.base = "base";
        o.out = "out";
        o.tasks = tasks;
        o.stats_mode = PCBM_STATS_AUTO;
        bool slerp = k == PCBM_METHOD_SLERP, nuslerp = k == PCBM_METHOD_NUSLERP;
        if (m->per_tensor || m->scope_tensor)
            o.scope = PCBM_SCOPE_TENSOR;
        if (slerp) {
            o.ntasks = 1;
            o.t = 0.5;
        }
        if (nuslerp)
            o.ntasks = 2;
        if (m->uses & PCBM_USES_EPSILON) { /* della: density ± epsilon must lie in (0, 1) */
            assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_ERR_USAGE);
            assert_non_null(strstr(err.msg, "epsilon"));
            o.epsilon = 0.05;
        }
        assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_OK);
        if (!slerp && !nuslerp) { /* (nuslerp takes t with one task model only) */
            o.t = 0.5;
            assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                             (m->uses & PCBM_USES_T) != 0);
            o.t = NAN;
        }
        o.select_topk = 0.5;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_SELECT_TOPK) != 0);
        o.select_topk = 1.0;
        o.nuslerp_row_wise = PCBM_ON;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_NUSLERP) != 0);
        o.nuslerp_row_wise = PCBM_DEFAULT;
        o.filter_wise = PCBM_OFF;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_FILTER_WISE) != 0);
        o.filter_wise = PCBM_DEFAULT;
        if (m->per_tensor) { /* global scope is refused */
            o.scope = PCBM_SCOPE_GLOBAL;
            assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_ERR_USAGE);
            assert_non_null(strstr(err.msg, "per tensor"));
            o.scope = PCBM_SCOPE_TENSOR;
        }
        o.lambdas = per_task;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_LAMBDAS) != 0);
        o.lambdas = NULL;
        o.weights = per_task;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_WEIGHTS) != 0);
        o.weights = NULL;
        double dens[NT] = {0.1, 0.5, 1.0};
        o.densities = dens;
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                         (m->uses & PCBM_USES_DENSITIES) != 0);
        o.densities = NULL;
        for (int v = PCBM_ON; v <= PCBM_OFF; v++) {
            o.normalize = v;
            assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                             (m->uses & PCBM_USES_NORMALIZE) != 0);
            o.normalize = PCBM_DEFAULT;
            o.rescale = v;
            assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK,
                             (m->uses & PCBM_USES_RESCALE) != 0);
            o.rescale = PCBM_DEFAULT;
        }
        /* a method that takes densities reads them, and a density of 0 is refused */
        assert_true(!(m->uses & PCBM_USES_DENSITIES) || (m->uses & PCBM_USES_DENSITY));
        if (m->uses & PCBM_USES_DENSITIES) {
            dens[1] = 0.0;
            o.densities = dens;
            assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_ERR_USAGE);
            assert_non_null(strstr(err.msg, "`densities` value 2"));
            o.densities = NULL;
        }
        o.stats_in = "stats";
        assert_int_equal(pcbm_run_check_opts(&o, &err) == PCBM_OK, m->nrounds > 0);
    }
    assert_null(pcbm_method_find(PCBM_METHOD_COUNT));
    assert_int_equal(pcbm_method_parse("nope"), PCBM_METHOD_COUNT);
}

/* ---- contexts: one machine, split parts, split reduce ---- */

static void run_local(const pcbm_method_def *m, const pcbm_merge_opts *o, unsigned threads,
                      pcbm_statrec *rec)
{
    pcbm_mctx mc = mk_ctx(o, threads);
    pcbm_error err;
    void *st = NULL;
    pcbm_rounds_end end;
    pcbm_range rg = {0, 1, D};
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(pcbm_rounds_range(&mc, m, st, &rg, fake_pass, &end, &err), PCBM_OK);
    assert_int_equal(end, PCBM_ROUNDS_DONE);
    memset(rec, 0, sizeof *rec);
    m->save(st, NT, rec);
    m->free(st);
}

static pcbm_split mk_split(pcbm_split_mode mode, unsigned part, unsigned parts)
{
    pcbm_split x;
    memset(&x, 0, sizeof x);
    x.mode = mode;
    snprintf(x.ctl, sizeof x.ctl, "%s", dir);
    x.part = part;
    x.parts = parts;
    x.plan_id = 77;
    return x;
}

/* One process of a split merge (a part's stats phase or the reduce): fresh state, as a process
 * starts; returns how the rounds ended, the record when they are done. */
static pcbm_rounds_end run_split_phase(const pcbm_method_def *m, const pcbm_merge_opts *o,
                                       pcbm_split *x, unsigned threads, pcbm_statrec *rec)
{
    pcbm_mctx mc = mk_ctx(o, threads);
    pcbm_error err;
    void *st = NULL;
    pcbm_rounds_end end;
    pcbm_range rg = {0, 1, D};
    mc.split = x;
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(pcbm_rounds_range(&mc, m, st, &rg, fake_pass, &end, &err), PCBM_OK);
    if (end == PCBM_ROUNDS_DONE) {
        memset(rec, 0, sizeof *rec);
        m->save(st, NT, rec);
    }
    m->free(st);
    return end;
}

/* The whole statistics phase of a split merge of K parts: every part, then the reduce, until
 * the reduce is done. Returns the number of rounds. */
static unsigned run_split(const pcbm_method_def *m, const pcbm_merge_opts *o, unsigned K,
                          bool reverse, unsigned threads, pcbm_statrec *rec)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -f '%s'/round-*", dir);
    assert_int_equal(system(cmd), 0);
    for (unsigned round = 1; round <= 16; round++) {
        for (unsigned j = 0; j < K; j++) {
            pcbm_split x = mk_split(PCBM_SPLIT_STATS, reverse ? K - 1 - j : j, K);
            assert_int_equal(run_split_phase(m, o, &x, threads, rec), PCBM_ROUNDS_PART_SAVED);
            assert_int_equal(x.round, round - 1); /* the earlier rounds were loaded */
        }
        pcbm_split x = mk_split(PCBM_SPLIT_REDUCE, 0, K);
        pcbm_rounds_end end = run_split_phase(m, o, &x, threads, rec);
        if (end == PCBM_ROUNDS_DONE)
            return round;
        assert_int_equal(end, PCBM_ROUNDS_PENDING);
    }
    fail_msg("the split merge never finished its rounds");
    return 0;
}

static void contexts_agree_opts(const pcbm_merge_opts *op, unsigned rounds)
{
    make_data(11);
    pcbm_merge_opts o = *op;
    pcbm_method meth = o.method;
    const pcbm_method_def *m = pcbm_method_find(meth);
    assert_non_null(m);
    pcbm_statrec one, two, split3, split2;
    run_local(m, &o, 1, &one);
    run_local(m, &o, 2, &two);
    assert_memory_equal(&one, &two, sizeof one);
    assert_int_equal(run_split(m, &o, 3, false, 2, &split3), rounds);
    assert_memory_equal(&one, &split3, sizeof one);
    assert_int_equal(run_split(m, &o, 2, true, 3, &split2), rounds);
    assert_memory_equal(&one, &split2, sizeof one);
    /* and the statistics are not trivial */
    for (unsigned i = 0; i < NT; i++)
        assert_true(one.v[i][0] != 0.0f);
}

static void contexts_agree(pcbm_method meth, unsigned rounds)
{
    pcbm_merge_opts o = mk_opts(meth);
    contexts_agree_opts(&o, rounds);
}

static void test_pcb_contexts(void **state)
{
    (void)state;
    contexts_agree(PCBM_METHOD_PCB, 4);
}

static void test_ties_contexts(void **state)
{
    (void)state;
    contexts_agree(PCBM_METHOD_TIES, 3);
}

/* Per-task densities and weights (the weights scale the values the signs are elected on). */
static void test_ties_weighted_contexts(void **state)
{
    (void)state;
    static const double w[PCBM_MAX_TASKS] = {0.5, 2.0, -0.75, 1.0, 3.0, 0.25};
    static const double d[PCBM_MAX_TASKS] = {0.05, 0.3, 0.2, 0.5, 0.1, 0.15};
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TIES);
    o.weights = w;
    o.densities = d;
    contexts_agree_opts(&o, 3);
}

/* ---- a method with a data-dependent fallback ---- */

typedef struct fb_state {
    uint64_t *local;            /* [threads][2]: positive, negative elements */
    uint64_t total[2];
    unsigned trace[8], ntrace;  /* the rounds finished, in order */
} fb_state;

static void fb_tile(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    fb_state *fs = arg;
    for (unsigned k = 0; k < tl->n; k++)
        fs->local[2 * w + (tl->tau[0][k] < 0)]++;
}

static pcbm_status fb_begin(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    fb_state *fs = st;
    memset(fs->local, 0, mc->threads * 2 * sizeof(uint64_t));
    fs->total[0] = fs->total[1] = 0;
    return PCBM_OK;
}

static unsigned fb_regions(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    fb_state *fs = st;
    region[0] = (pcbm_acc){fs->total, sizeof fs->total, pcbm_acc_sum_u64, fs->local,
                         sizeof fs->total};
    return 1;
}

/* Round 0: mostly positive data go on with round 1, otherwise the fallback (round 2). */
static int fb_finish0(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    fb_state *fs = st;
    fs->trace[fs->ntrace++] = 0;
    assert_int_equal(fs->total[0] + fs->total[1], D);
    return fs->total[0] > fs->total[1] ? PCBM_ROUND_NEXT : 2;
}

static int fb_finish1(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    fb_state *fs = st;
    fs->trace[fs->ntrace++] = 1;
    return PCBM_ROUND_DONE;
}

static int fb_finish2(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    fb_state *fs = st;
    fs->trace[fs->ntrace++] = 2;
    return PCBM_ROUND_DONE;
}

static const pcbm_round fb_r0 = {"count", fb_tile, NULL, true, fb_begin, fb_regions, fb_finish0};
static const pcbm_round fb_r1 = {"usual", fb_tile, NULL, false, fb_begin, fb_regions, fb_finish1};
static const pcbm_round fb_r2 = {"fallback", fb_tile, NULL, false, fb_begin, fb_regions,
                                 fb_finish2};
static const pcbm_round *const fb_rounds[] = {&fb_r0, &fb_r1, &fb_r2};

static pcbm_status fb_init(const pcbm_mctx *mc, void **state, pcbm_error *err)
{
    fb_state *fs = calloc(1, sizeof *fs);
    fs->local = calloc((size_t)mc->threads * 2, sizeof(uint64_t));
    *state = fs;
    return PCBM_OK;
}

static void fb_free(void *state)
{
    fb_state *fs = state;
    free(fs->local);
    free(fs);
}

/* The record: the trace of rounds. */
static void fb_save(const void *state, unsigned ntasks, pcbm_statrec *rec)
{
    const fb_state *fs = state;
    rec->majority = (float)fs->ntrace;
    for (unsigned k = 0; k < fs->ntrace; k++)
        rec->v[k][0] = (float)fs->trace[k];
}

static const pcbm_method_def fb_method = {
    .name = "fallback-test", .init = fb_init, .free = fb_free, .rounds = fb_rounds,
    .nrounds = 3, .passes_planned = 2, .save = fb_save};

static void fb_data(int positive)
{
    for (unsigned k = 0; k < D; k++)
        tau_data[0][k] = (k % 4 == 0) == !positive ? 1.0f : -1.0f;
}

static void test_fallback(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TASK_ARITHMETIC);
    o.ntasks = 1;
    pcbm_statrec a, b;
    for (int positive = 0; positive <= 1; positive++) {
        fb_data(positive);
        run_local(&fb_method, &o, 2, &a);
        assert_true(a.majority == 2.0f);
        assert_true(a.v[0][0] == 0.0f);
        assert_true(a.v[1][0] == (positive ? 1.0f : 2.0f)); /* the fallback when negative */
        assert_int_equal(run_split(&fb_method, &o, 3, positive, 2, &b), 2);
        assert_memory_equal(&a, &b, sizeof a);
    }
}

/* A finish that names a round the method does not have is refused, not run past the table; a
 * finish that never says done is stopped. */
static int bad_finish(void *st, const pcbm_mctx *mc, const pcbm_range *rg) { return 7; }
static int loop_finish(void *st, const pcbm_mctx *mc, const pcbm_range *rg) { return 0; }
static const pcbm_round bad_r0 = {"bad", fb_tile, NULL, false, fb_begin, fb_regions, bad_finish};
static const pcbm_round loop_r0 = {"loop", fb_tile, NULL, false, fb_begin, fb_regions, loop_finish};
static const pcbm_round *const bad_rounds[] = {&bad_r0};
static const pcbm_round *const loop_rounds[] = {&loop_r0};

static void test_bad_jump(void **state)
{
    (void)state;
    pcbm_method_def bad = fb_method;
    bad.rounds = bad_rounds;
    bad.nrounds = 1;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TASK_ARITHMETIC);
    o.ntasks = 1;
    pcbm_mctx mc = mk_ctx(&o, 1);
    pcbm_error err;
    void *st = NULL;
    pcbm_rounds_end end;
    pcbm_range rg = {0, 1, D};
    fb_data(1);
    assert_int_equal(bad.init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(pcbm_rounds_range(&mc, &bad, st, &rg, fake_pass, &end, &err),
                     PCBM_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "round 7"));
    bad.rounds = loop_rounds;
    assert_int_equal(pcbm_rounds_range(&mc, &bad, st, &rg, fake_pass, &end, &err),
                     PCBM_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "more than"));
    bad.free(st);
}

/* ---- combines ---- */

static void test_combine_order(void **state)
{
    (void)state;
    /* the threads' regions into a separate total, or into thread 0's region: same sums and maxima
     * whatever the order of the threads */
    uint64_t h[3][4] = {{1, 2, 3, 4}, {10, 0, 5, 7}, {0, 9, 1, 1}}, hr[3][4], t1[4], t2[4];
    for (unsigned w = 0; w < 3; w++)
        memcpy(hr[w], h[2 - w], sizeof h[0]);
    memset(t1, 0, sizeof t1);
    memset(t2, 0, sizeof t2);
    pcbm_acc a = {t1, sizeof t1, pcbm_acc_sum_u64, h, sizeof h[0]};
    pcbm_acc b = {t2, sizeof t2, pcbm_acc_sum_u64, hr, sizeof hr[0]};
    pcbm_acc_reduce_threads(&a, 3);
    pcbm_acc_reduce_threads(&b, 3);
    const uint64_t want[4] = {11, 11, 9, 12};
    assert_memory_equal(t1, want, sizeof want);
    assert_memory_equal(t2, want, sizeof want);
    pcbm_acc c = {hr, sizeof hr[0], pcbm_acc_sum_u64, hr, sizeof hr[0]}; /* in place */
    pcbm_acc_reduce_threads(&c, 3);
    assert_memory_equal(hr[0], want, sizeof want);

    float m[3][2] = {{-0.0f, 1.0f}, {0.0f, NAN}, {-INFINITY, 3.0f}}, mr[3][2], t3[2], t4[2];
    for (unsigned w = 0; w < 3; w++)
        memcpy(mr[w], m[2 - w], sizeof m[0]);
    t3[0] = t3[1] = t4[0] = t4[1] = -INFINITY;
    pcbm_acc e = {t3, sizeof t3, pcbm_acc_max_f32, m, sizeof m[0]};
    pcbm_acc f = {t4, sizeof t4, pcbm_acc_max_f32, mr, sizeof mr[0]};
    pcbm_acc_reduce_threads(&e, 3);
    pcbm_acc_reduce_threads(&f, 3);
    const float wantm[2] = {0.0f, 3.0f};
    assert_memory_equal(t3, wantm, sizeof wantm);
    assert_memory_equal(t4, wantm, sizeof wantm);
}

/* ---- each method's finish() on hand-made accumulators ---- */

static uint32_t coarse_bin(float x) { return pcbm_fkey(x) >> PCBM_QBITS; }
static uint32_t fine_bin(float x) { return pcbm_fkey(x) & (PCBM_QBINS - 1); }

/* Runs round k's begin and returns its regions (the accumulators to fill by hand). */
static unsigned begin_regions(const pcbm_method_def *m, unsigned k, void *st, pcbm_mctx *mc,
                            const pcbm_range *rg, pcbm_acc *region)
{
    pcbm_error err;
    const pcbm_round *r = m->rounds[k];
    if (r->begin)
        assert_int_equal(r->begin(st, mc, rg, &err), PCBM_OK);
    memset(region, 0, PCBM_MAX_REGIONS * sizeof *region);
    return r->regions ? r->regions(st, mc, region) : 0;
}

static void test_ties_finish(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TIES);
    o.ntasks = 1;
    o.density = 0.2;
    pcbm_mctx mc = mk_ctx(&o, 1);
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_TIES);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_statrec rec;
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    /* 100 elements: 80 with |tau| 0.01, 20 with 0.5; keep 20 -> threshold at rank 79: 0.01 */
    pcbm_range rg = {0, 1, 100};
    assert_int_equal(begin_regions(m, 0, st, &mc, &rg, region), 1);
    uint64_t *h = region[0].data;
    h[coarse_bin(0.01f)] = 80;
    h[coarse_bin(0.5f)] = 20;
    assert_int_equal(m->rounds[0]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    assert_int_equal(begin_regions(m, 1, st, &mc, &rg, region), 1);
    h = region[0].data;
    h[fine_bin(0.01f)] = 80; /* the fine histogram of the selected coarse bin */
    assert_int_equal(m->rounds[1]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    /* votes: more negative positions -> majority -1; a tie -> 0 */
    assert_int_equal(begin_regions(m, 2, st, &mc, &rg, region), 1);
    ((int64_t *)region[0].data)[0] = 3;
    ((int64_t *)region[0].data)[1] = 5;
    assert_int_equal(m->rounds[2]->finish(st, &mc, &rg), PCBM_ROUND_DONE);
    m->save(st, 1, &rec);
    assert_true(rec.v[0][0] == 0.01f);
    assert_true(rec.majority == -1.0f);
    begin_regions(m, 2, st, &mc, &rg, region);
    ((int64_t *)region[0].data)[0] = ((int64_t *)region[0].data)[1] = 4;
    m->rounds[2]->finish(st, &mc, &rg);
    m->save(st, 1, &rec);
    assert_true(rec.majority == 0.0f);
    /* density 1 keeps everything: no accumulators, threshold 0, straight to the votes */
    o.density = 1.0;
    assert_int_equal(begin_regions(m, 0, st, &mc, &rg, region), 0);
    assert_int_equal(m->rounds[0]->finish(st, &mc, &rg), 2);
    m->save(st, 1, &rec);
    assert_true(rec.v[0][0] == 0.0f);
    m->free(st);
}

/* Each task's own top-k: a task at density 1 keeps everything (threshold 0) while the others
 * still get their thresholds from the histograms. */
static void test_ties_densities_finish(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TIES);
    double dens[2] = {1.0, 0.2};
    o.ntasks = 2;
    o.densities = dens;
    pcbm_mctx mc = mk_ctx(&o, 1);
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_TIES);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_statrec rec;
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    pcbm_range rg = {0, 1, 100};
    assert_int_equal(begin_regions(m, 0, st, &mc, &rg, region), 1);
    uint64_t *h = region[0].data; /* stream 0, then stream 1 */
    h[coarse_bin(0.25f)] = 100;
    h[PCBM_QBINS + coarse_bin(0.01f)] = 80;
    h[PCBM_QBINS + coarse_bin(0.5f)] = 20;
    assert_int_equal(m->rounds[0]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    assert_int_equal(begin_regions(m, 1, st, &mc, &rg, region), 1);
    h = region[0].data;
    h[fine_bin(0.25f)] = 100;
    h[PCBM_QBINS + fine_bin(0.01f)] = 80;
    assert_int_equal(m->rounds[1]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    assert_int_equal(begin_regions(m, 2, st, &mc, &rg, region), 1);
    assert_int_equal(m->rounds[2]->finish(st, &mc, &rg), PCBM_ROUND_DONE);
    m->save(st, 2, &rec);
    assert_true(rec.v[0][0] == 0.0f);
    assert_true(rec.v[1][0] == 0.01f);
    m->free(st);
}

/* A task lacking a tensor takes no part in it: its share of a range is d less that tensor
 * (pcbm_range_task_d), and TIES's top-k counts its own elements: task 2 lacks the 100-element
 * tensor, so of its 30 it keeps ⌊30 · 0.2⌋ = 6 (threshold at rank 23: 0.01), not ⌊130 · 0.2⌋. */
static void test_partial_task_d(void **state)
{
    (void)state;
    pcbm_tlayout t[3] = {{.kind = PCBM_T_MERGE, .units = 100, .absent = 2},
                         {.kind = PCBM_T_CONVERT, .units = 50},
                         {.kind = PCBM_T_MERGE, .units = 30}};
    pcbm_layout p = {.t = t, .nt = 3, .nmerge = 2, .npartial = 1, .d = 130};
    pcbm_range all = {0, 3, 130}, last = {2, 3, 30};
    assert_int_equal(pcbm_range_task_d(&p, &all, 0), 130);
    assert_int_equal(pcbm_range_task_d(&p, &all, 1), 30);
    assert_int_equal(pcbm_range_task_d(&p, &last, 1), 30);
    assert_int_equal(pcbm_range_task_absent(&p, 0, 1, 1), 100);

    pcbm_merge_opts o = mk_opts(PCBM_METHOD_TIES);
    o.ntasks = 2;
    o.density = 0.2;
    pcbm_mctx mc = mk_ctx(&o, 1);
    mc.layout = &p;
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_TIES);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_statrec rec;
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(begin_regions(m, 0, st, &mc, &all, region), 1);
    uint64_t *h = region[0].data; /* stream 0, then stream 1 */
    h[coarse_bin(0.01f)] = 104;
    h[coarse_bin(0.5f)] = 26;
    h[PCBM_QBINS + coarse_bin(0.01f)] = 24;
    h[PCBM_QBINS + coarse_bin(0.5f)] = 6;
    assert_int_equal(m->rounds[0]->finish(st, &mc, &all), PCBM_ROUND_NEXT);
    assert_int_equal(begin_regions(m, 1, st, &mc, &all, region), 1);
    h = region[0].data;
    h[fine_bin(0.01f)] = 104;
    h[PCBM_QBINS + fine_bin(0.01f)] = 24;
    assert_int_equal(m->rounds[1]->finish(st, &mc, &all), PCBM_ROUND_NEXT);
    assert_int_equal(begin_regions(m, 2, st, &mc, &all, region), 1);
    assert_int_equal(m->rounds[2]->finish(st, &mc, &all), PCBM_ROUND_DONE);
    m->save(st, 2, &rec);
    assert_true(rec.v[0][0] == 0.01f);
    assert_true(rec.v[1][0] == 0.01f);
    m->free(st);
}

/* sce: the cut falls among equal variances; the index rounds find the last index kept (ties
 * in index order), the record carries it; then the weights from the exact sums of squares. */
static void test_sce_finish(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_SCE);
    o.ntasks = 2;
    o.scope = PCBM_SCOPE_TENSOR;
    o.select_topk = 0.3;
    pcbm_mctx mc = mk_ctx(&o, 1);
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_SCE);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_statrec rec;
    memset(&rec, 0, sizeof rec);
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    /* 100 elements, every variance non-zero: 50 at 0.1 (indices 0..49), 50 at 0.5 (50..99);
     * k = 30 -> the cut at 0.5 keeps indices 50..79 */
    pcbm_range rg = {0, 1, 100};
    int r = m->first_round(st, &mc, &rg);
    assert_int_equal(r, 0);
    assert_int_equal(begin_regions(m, 0, st, &mc, &rg, region), 2);
    uint64_t *h = region[0].data;
    h[coarse_bin(0.1f)] += 50;
    h[coarse_bin(0.5f)] += 50;
    *(int64_t *)region[1].data = 100;
    assert_int_equal(m->rounds[0]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    begin_regions(m, 1, st, &mc, &rg, region);
    h = region[0].data;
    h[fine_bin(0.5f)] = 50;
    assert_int_equal(m->rounds[1]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    begin_regions(m, 2, st, &mc, &rg, region);
    h = region[0].data;
    h[0] = 50;                                  /* indices 50..99: top half 0 */
    assert_int_equal(m->rounds[2]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    begin_regions(m, 3, st, &mc, &rg, region);
    h = region[0].data;
    for (unsigned i = 50; i < 100; i++)
        h[i] = 1;
    assert_int_equal(m->rounds[3]->finish(st, &mc, &rg), PCBM_ROUND_NEXT);
    /* weights: mean squares 0.03 and 0.01 -> 0.75, 0.25 */
    assert_int_equal(begin_regions(m, 4, st, &mc, &rg, region), 1);
    pcbm_xsum *x = region[0].data;
    pcbm_xsum_add(&x[0], 3.0);
    pcbm_xsum_add(&x[1], 1.0);
    assert_int_equal(m->rounds[4]->finish(st, &mc, &rg), PCBM_ROUND_DONE);
    m->save(st, 2, &rec);
    uint32_t cut;
    memcpy(&cut, &rec.v[0][2], sizeof cut);
    assert_true(rec.v[0][1] == 0.5f);
    assert_int_equal(cut, 79);
    assert_true(rec.majority == 1.0f);
    assert_true(rec.v[0][3] == 0.75f && rec.v[1][3] == 0.25f);
    /* every equal value kept: no index rounds, no cut */
    o.select_topk = 0.5;
    assert_int_equal(m->first_round(st, &mc, &rg), 0);
    begin_regions(m, 0, st, &mc, &rg, region);
    h = region[0].data;
    h[coarse_bin(0.1f)] += 50;
    h[coarse_bin(0.5f)] += 50;
    *(int64_t *)region[1].data = 100;
    m->rounds[0]->finish(st, &mc, &rg);
    begin_regions(m, 1, st, &mc, &rg, region);
    ((uint64_t *)region[0].data)[fine_bin(0.5f)] = 50;
    assert_int_equal(m->rounds[1]->finish(st, &mc, &rg), 4);
    /* select_topk 1 and 0: straight to the weights */
    o.select_topk = 1.0;
    assert_int_equal(m->first_round(st, &mc, &rg), 4);
    o.select_topk = 0.0;
    assert_int_equal(m->first_round(st, &mc, &rg), 4);
    m->free(st);
}

static void test_pcb_finish(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_PCB);
    o.ntasks = 1;
    o.clamp_ratio = 0.1;
    o.density = 0.5;
    pcbm_mctx mc = mk_ctx(&o, 2);
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_PCB);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_statrec rec;
    pcbm_range rg = {0, 1, 1000};
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(m->first_round(st, &mc, &rg), PCB_R_MAG_COARSE); /* --exact */
    /* |tau|: 500 at 0.001, 500 at 0.25: lo (rank 100) = 0.001, hi (rank 899) = 0.25 */
    begin_regions(m, PCB_R_MAG_COARSE, st, &mc, &rg, region);
    uint64_t *h = region[0].data;
    h[coarse_bin(0.001f)] = 500;
    h[coarse_bin(0.25f)] = 500;
    assert_int_equal(m->rounds[PCB_R_MAG_COARSE]->finish(st, &mc, &rg), PCB_R_MAG_FINE);
    begin_regions(m, PCB_R_MAG_FINE, st, &mc, &rg, region);
    h = region[0].data;
    h[fine_bin(0.001f)] = 500;              /* stream 0: lo's coarse bin */
    h[PCBM_QBINS + fine_bin(0.25f)] = 500;  /* stream 1: hi's coarse bin */
    assert_int_equal(m->rounds[PCB_R_MAG_FINE]->finish(st, &mc, &rg), PCB_R_SCORE_COARSE);
    /* scores: 600 at -1, 400 at 2; t at rank 500 = -1; m = 2 */
    assert_int_equal(begin_regions(m, PCB_R_SCORE_COARSE, st, &mc, &rg, region), 2);
    h = region[0].data;
    h[coarse_bin(-1.0f)] = 600;
    h[coarse_bin(2.0f)] = 400;
    assert_true(((float *)region[1].data)[0] == -INFINITY); /* the maximum starts empty */
    ((float *)region[1].data)[0] = 2.0f;
    assert_int_equal(m->rounds[PCB_R_SCORE_COARSE]->finish(st, &mc, &rg), PCB_R_SCORE_FINE);
    begin_regions(m, PCB_R_SCORE_FINE, st, &mc, &rg, region);
    ((uint64_t *)region[0].data)[fine_bin(-1.0f)] = 600;
    assert_int_equal(m->rounds[PCB_R_SCORE_FINE]->finish(st, &mc, &rg), PCBM_ROUND_DONE);
    m->save(st, 1, &rec);
    assert_true(rec.v[0][0] == 0.001f && rec.v[0][1] == 0.25f);
    assert_true(rec.v[0][2] == -1.0f && rec.v[0][3] == 2.0f);
    m->free(st);
}

/* The options a merge runs with (pcbm_run_call's import), for test_scope. */
static pcbm_status keep_opts(const pcbm_merge_opts *o, void *arg, pcbm_error *err)
{
    (void)err;
    *(pcbm_merge_opts *)arg = *o;
    return PCBM_OK;
}

/* --scope: AUTO (the default) resolves to the method's own scope before the merge; the methods
 * per tensor by definition refuse GLOBAL, mergekit's sparsifying methods take it, but not with a
 * density, gamma, epsilon or rescale that varies per tensor. */
static void test_scope(void **state)
{
    (void)state;
    pcbm_error err;
    pcbm_merge_opts d;
    pcbm_merge_opts_init(&d);
    assert_int_equal(d.scope, PCBM_SCOPE_AUTO);
    assert_int_equal(PCBM_SCOPE_GLOBAL, 0); /* ABI */
    assert_int_equal(PCBM_SCOPE_TENSOR, 1);
    static const char *tasks[NT] = {"a", "b", "c"};
    for (unsigned ks = 0; ks < 2 * PCBM_METHOD_COUNT; ks++) {
        pcbm_merge_opts o, got;
        pcbm_merge_opts_init(&o);
        o.method = (pcbm_method)(ks % PCBM_METHOD_COUNT);
        o.semantics = ks < PCBM_METHOD_COUNT ? PCBM_SEMANTICS_OFFICIAL : PCBM_SEMANTICS_MERGEKIT;
        const pcbm_method_def *m = pcbm_method_for(&o);
        if (!m)
            continue;
        bool paper = o.semantics == PCBM_SEMANTICS_OFFICIAL &&
                     (o.method == PCBM_METHOD_PCB || o.method == PCBM_METHOD_TIES ||
                      o.method == PCBM_METHOD_DARE_TIES);
        bool mk = m->per_tensor || m->scope_tensor;
        if (paper) /* the papers' methods: global */
            assert_false(mk);
        assert_int_equal(pcbm_method_default_scope(&o),
                         mk ? PCBM_SCOPE_TENSOR : PCBM_SCOPE_GLOBAL);
        assert_int_equal(pcbm_run_call(&o, false, keep_opts, &got, &err), PCBM_OK);
        assert_int_equal(got.scope, pcbm_method_default_scope(&o));
        o.scope = PCBM_SCOPE_GLOBAL; /* an explicit scope is kept */
        assert_int_equal(pcbm_run_call(&o, false, keep_opts, &got, &err), PCBM_OK);
        assert_int_equal(got.scope, PCBM_SCOPE_GLOBAL);
        o.scope = PCBM_SCOPE_TENSOR;
        assert_int_equal(pcbm_run_call(&o, false, keep_opts, &got, &err), PCBM_OK);
        assert_int_equal(got.scope, PCBM_SCOPE_TENSOR);
        o.scope = (pcbm_scope)7;
        assert_int_equal(pcbm_run_call(&o, false, keep_opts, &got, &err), PCBM_ERR_USAGE);
    }
    /* the checks: GLOBAL refused by the methods per tensor by definition and by DELLA */
    static const struct {
        pcbm_method m;
        bool mergekit, global_ok;
    } cases[] = {{PCBM_METHOD_SLERP, false, false},       {PCBM_METHOD_NUSLERP, false, false},
                 {PCBM_METHOD_MODEL_STOCK, false, false}, {PCBM_METHOD_SCE, false, false},
                 {PCBM_METHOD_DELLA, false, true},        {PCBM_METHOD_DELLA_LINEAR, false, true},
                 {PCBM_METHOD_BREADCRUMBS, false, true},  {PCBM_METHOD_BREADCRUMBS_TIES, false, true},
                 {PCBM_METHOD_TIES, true, true},          {PCBM_METHOD_DARE_TIES, true, true},
                 {PCBM_METHOD_DARE_LINEAR, true, true},   {PCBM_METHOD_PCB, false, true}};
    for (unsigned k = 0; k < sizeof cases / sizeof *cases; k++) {
        pcbm_merge_opts o = mk_opts(cases[k].m);
        o.semantics = cases[k].mergekit ? PCBM_SEMANTICS_MERGEKIT : PCBM_SEMANTICS_OFFICIAL;
        o.base = "base";
        o.out = "out";
        o.tasks = tasks;
        o.stats_mode = PCBM_STATS_AUTO;
        o.epsilon = 0.05;
        if (cases[k].m == PCBM_METHOD_SLERP || cases[k].m == PCBM_METHOD_NUSLERP) {
            o.ntasks = 1;
            o.t = 0.5;
        }
        o.scope = PCBM_SCOPE_TENSOR;
        assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_OK);
        o.scope = PCBM_SCOPE_GLOBAL;
        assert_int_equal(pcbm_run_check_opts(&o, &err),
                         cases[k].global_ok ? PCBM_OK : PCBM_ERR_USAGE);
        if (!cases[k].global_ok)
            assert_non_null(strstr(err.msg, "per tensor"));
    }
    /* a recipe's density (gamma, epsilon, rescale) gradient cannot shape a global cut; a weight
     * gradient can (the weights apply per tensor) */
    static const char *const recipes[2] = {
        "merge_method: breadcrumbs\nbase_model: B\nmodels:\n"
        "  - model: T1\n    parameters: {weight: [0.5, 1], density: 0.5}\n"
        "  - model: T2\n    parameters: {weight: 1, density: 0.7}\n",
        "merge_method: breadcrumbs\nbase_model: B\nmodels:\n"
        "  - model: T1\n    parameters: {weight: 1, density: [0.5, 0.9]}\n"
        "  - model: T2\n    parameters: {weight: 1, density: 0.7}\n"};
    for (unsigned k = 0; k < 2; k++) {
        pcbm_recipe *r = NULL;
        pcbm_merge_opts o;
        pcbm_merge_opts_init(&o);
        assert_int_equal(pcbm_recipe_parse(recipes[k], strlen(recipes[k]), "r.yml", &r, &err),
                         PCBM_OK);
        assert_int_equal(pcbm_recipe_merge_opts(r, &o, &err), PCBM_OK);
        o.out = "out";
        assert_int_equal(o.scope, PCBM_SCOPE_TENSOR);
        assert_int_equal(pcbm_run_check_opts(&o, &err), PCBM_OK);
        o.scope = PCBM_SCOPE_GLOBAL;
        assert_int_equal(pcbm_run_check_opts(&o, &err), k == 0 ? PCBM_OK : PCBM_ERR_USAGE);
        if (k == 1)
            assert_non_null(strstr(err.msg, "`density` cannot be a gradient"));
        pcbm_recipe_free(r);
    }
}

/* Streaming PCB: a sample too small to bracket the bounds falls back to the exact rounds. */
static void test_pcb_stream_fallback(void **state)
{
    (void)state;
    pcbm_merge_opts o = mk_opts(PCBM_METHOD_PCB);
    o.ntasks = 1;
    o.stats_mode = PCBM_STATS_AUTO;
    o.stats_mode = PCBM_STATS_STREAMING;
    pcbm_mctx mc = mk_ctx(&o, 1);
    const pcbm_method_def *m = pcbm_method_find(PCBM_METHOD_PCB);
    pcbm_error err;
    void *st = NULL;
    pcbm_acc region[PCBM_MAX_REGIONS];
    pcbm_range rg = {0, 1, D};
    assert_int_equal(m->init(&mc, &st, &err), PCBM_OK);
    assert_int_equal(m->first_round(st, &mc, &rg), PCB_R_S1);
    assert_int_equal(begin_regions(m, PCB_R_S1, st, &mc, &rg, region), 1); /* an empty sample */
    assert_int_equal(m->rounds[PCB_R_S1]->finish(st, &mc, &rg), PCB_R_MAG_COARSE_FB);
    assert_false(m->rounds[PCB_R_MAG_COARSE_FB]->check_finite);
    assert_non_null(strstr(m->how(st, &o), "streaming estimate missed"));
    m->free(st);
}

int main(void)
{
    /* the reduces' and the fallback's notes go nowhere: no message sink is installed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_row_blocks),
        cmocka_unit_test(test_uses),
        cmocka_unit_test_setup_teardown(test_pcb_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_weighted_contexts, setup, teardown),
        cmocka_unit_test(test_ties_densities_finish),
        cmocka_unit_test_setup_teardown(test_fallback, setup, teardown),
        cmocka_unit_test(test_bad_jump),
        cmocka_unit_test(test_combine_order),
        cmocka_unit_test(test_ties_finish),
        cmocka_unit_test(test_partial_task_d),
        cmocka_unit_test(test_pcb_finish),
        cmocka_unit_test(test_sce_finish),
        cmocka_unit_test(test_pcb_stream_fallback),
        cmocka_unit_test(test_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

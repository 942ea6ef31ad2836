/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search.c — pcbm_search(): the paper's coefficient search as a library call. The statistics
 * pass runs once; then CMA-ES (cmaes.c) proposes per-task coefficients λ_1..λ_N, the apply pass
 * alone merges each candidate into one scratch directory (replaced every time), the caller's
 * evaluate callback scores it, and at the end OUT holds the merge at the best λ with the log of
 * every evaluation and a summary (files: search_log.c). A search that stops or fails keeps its
 * log and statistics in OUT.search/; with resume it continues: CMA-ES is deterministic for a
 * seed, so the logged evaluations are replayed (each candidate checked bit for bit against the
 * log, its score reused) and only new ones are evaluated. Nothing is printed: evaluations and
 * notes go to the caller's callbacks.
 */
#include "search_internal.h"
#include "../writer/manifest.h"

#include "cmaes.h"
#include "../sched/engine.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* The first published layout of pcbm_search_opts ends with on_note. */
#define SEARCH_OPTS_V1_SIZE (offsetof(pcbm_search_opts, on_note) + sizeof(pcbm_search_note_fn))

void pcbm_search_opts_init(pcbm_search_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = (uint32_t)sizeof *o;
    o->budget = 60;
    o->lo = 0.5;
    o->hi = 3.0;
    o->init = 1.0;
}

int pcbm_search_has_stats(pcbm_method m) { return m == PCBM_METHOD_PCB; }

void pcbm_search_note(const pcbm_search_state *s, const char *fmt, ...)
{
    if (!s->o.on_note)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->o.on_note(s->o.user, msg);
}

void pcbm_search_fmt_lambdas(const double *l, unsigned n, char *b, size_t len)
{
    size_t u = 0;
    b[0] = 0;
    for (unsigned i = 0; i < n && u < len; i++)
        u += (size_t)snprintf(b + u, len - u, "%s%.4f", i ? " " : "", l[i]);
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Options the search cannot run with: PCBM_ERR_USAGE (PCBM_ERR_EXISTS for OUT) with the reason. */
static pcbm_status validate(const pcbm_search_opts *o, pcbm_error *err)
{
    const pcbm_merge_opts *mo = o->merge;
    if (!mo || !o->evaluate)
        return pcbm_fail(err, PCBM_ERR_USAGE, "pcbm_search needs merge options and an evaluate "
                         "callback");
    if (!mo->base || !mo->out)
        return pcbm_fail(err, PCBM_ERR_USAGE, "search needs `base` and `out`");
    if (mo->ntasks == 0 || !mo->tasks)
        return pcbm_fail(err, PCBM_ERR_USAGE, "search needs at least one task model after the "
                         "options");
    if (mo->ntasks > PCBM_MAX_TASKS)
        return pcbm_fail(err, PCBM_ERR_USAGE, "search takes at most %d task models", PCBM_MAX_TASKS);
    pcbm_method m = mo->method;
    if (o->recipe && !pcbm_recipe_has_weights(o->recipe))
        return pcbm_fail(err, PCBM_ERR_USAGE, "merge_method %s cannot be searched: a search over a "
                         "recipe multiplies each model's weight by its coefficient, and %s; merge "
                         "the recipe as it is (pcbmerge merge --config), or search a recipe whose "
                         "method takes per-model weights (linear, task_arithmetic, ties, dare_ties, "
                         "dare_linear, breadcrumbs, della, nuslerp, pcb, ...)", pcbm_method_name(m),
                         m == PCBM_METHOD_SLERP ? "slerp has none: it interpolates two models with t"
                         : m == PCBM_METHOD_MODEL_STOCK ? "model_stock has none: it computes its "
                                                          "coefficients from the models' angles"
                         : "it takes none per model (mergekit's)");
    if (o->recipe) {
        /* the recipe gives the merge's parameters; the checks below are the CLI form's */
    } else if (m != PCBM_METHOD_PCB && m != PCBM_METHOD_TASK_ARITHMETIC && m != PCBM_METHOD_DARE_LINEAR)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`method` %s cannot be searched: search tunes one λ "
                         "per task, which only pcb, task_arithmetic and dare_linear take (%s)",
                         pcbm_method_name(m), m == PCBM_METHOD_LINEAR
                             ? "linear takes `weights`" : "ties and dare_ties take one global `lambda`");
    else if (mo->weights || mo->densities || mo->normalize != PCBM_DEFAULT ||
             mo->rescale != PCBM_DEFAULT)
        return pcbm_fail(err, PCBM_ERR_USAGE, "search takes none of mergekit's `%s`: it tunes "
                         "one λ per task itself", mo->weights ? "weights" : mo->densities
                         ? "densities" : mo->normalize != PCBM_DEFAULT ? "normalize" : "rescale");
    if (mo->stats_in && !pcbm_search_has_stats(m))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`stats_in` applies to pcb; %s", o->recipe
                         ? "over a recipe, the other methods' statistics are computed for every "
                           "candidate (the TIES family's depend on the weights the search "
                           "changes)" : "the method computes no statistics the search could reuse");
    if (o->budget < 1)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`budget` needs at least one evaluation");
    if (!isfinite(o->lo) || !isfinite(o->hi) || !(o->lo < o->hi))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`bounds` needs LO,HI with LO < HI, got %g,%g",
                         o->lo, o->hi);
    if (!(o->init >= o->lo && o->init <= o->hi))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`init` %g is outside `bounds` %g,%g", o->init,
                         o->lo, o->hi);
    if (!(o->sigma >= 0) || !isfinite(o->sigma) || o->popsize == 1)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`sigma` needs a positive number and `popsize` at "
                         "least 2");
    char partial[PATH_MAX + 16];
    snprintf(partial, sizeof partial, "%s.partial", mo->out);
    if (exists(mo->out))
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s exists; search writes a new directory: choose "
                         "another `out` or remove it", mo->out);
    if (exists(partial) && !mo->force && !o->resume)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s holds an unfinished merge into %s; set `force` "
                         "to discard it", partial, mo->out);
    return PCBM_OK;
}

/* A score known for evaluation k: the initial and the best ones. */
static void tally(pcbm_search_state *s, unsigned k, unsigned gen, const double *lam, double score)
{
    pcbm_search_result *r = s->res;
    if (k == 1) {
        r->init_score = score;
        r->have_init = 1;
    }
    if (!s->have_best || score > r->best_score) {
        s->have_best = 1;
        r->best_score = score;
        r->best_evaluation = k;
        r->best_generation = gen;
        memcpy(r->best_lambdas, lam, s->n * sizeof(double));
    }
}

static void emit(const pcbm_search_state *s, pcbm_search_event *ev)
{
    ev->budget = s->o.budget;
    ev->ntasks = s->n;
    ev->best_score = s->have_best ? s->res->best_score : NAN;
    ev->log_path = s->log_path;
    if (s->o.on_event)
        s->o.on_event(s->o.user, ev);
}

/* resume: evaluation k is in the log; it must be this very candidate. */
static pcbm_status replayed(pcbm_search_state *s, unsigned k, const double *lam, unsigned gen,
                            double *score, pcbm_error *err)
{
    const pcbm_logged *L = &s->replay[k - 1];
    char want[64 * 12], got[64 * 12];
    if (memcmp(L->lam, lam, s->n * sizeof(double)) != 0 || L->gen != gen) {
        pcbm_search_fmt_lambdas(L->lam, s->n, got, sizeof got);
        pcbm_search_fmt_lambdas(lam, s->n, want, sizeof want);
        return pcbm_fail(err, PCBM_ERR_STATS, "cannot resume: evaluation %u of the log (λ %s) is "
                         "not the candidate this search proposes (λ %s): the log comes from "
                         "another version or other parameters; start over with `force`", k, got,
                         want);
    }
    *score = L->score;
    if (isnan(L->score))
        s->res->failed++;
    else
        tally(s, k, gen, lam, L->score);
    pcbm_search_event ev = {.index = k, .generation = gen, .lambdas = lam, .ok = !isnan(L->score),
                            .replayed = 1, .score = L->score,
                            .error = isnan(L->score) ? "failed (logged)" : NULL};
    emit(s, &ev);
    return PCBM_OK;
}

/* The merge options of candidate λ into o (a copy of s->mo): with a recipe, the merge of the
 * recipe with each model's weight multiplied by λ_i (*cand and *text: the scaled recipe, kept
 * until the merge is done); otherwise λ as pcbmerge's per-task coefficients. */
static pcbm_status candidate_opts(const pcbm_search_state *s, const double *lam,
                                  pcbm_merge_opts *o, pcbm_recipe **cand, char **text,
                                  pcbm_error *err)
{
    *cand = NULL;
    *text = NULL;
    *o = s->mo;
    if (!s->o.recipe) {
        o->lambdas = lam;
        return PCBM_OK;
    }
    pcbm_status st = pcbm_recipe_scaled(s->o.recipe, lam, s->n, text, err);
    if (st == PCBM_OK)
        st = pcbm_recipe_parse(*text, strlen(*text), PCBM_SEARCH_RECIPE_NAME, cand, err);
    if (st == PCBM_OK)
        st = pcbm_recipe_merge_opts(*cand, o, err);
    if (st == PCBM_OK && o->out_dtype == PCBM_DTYPE_BASE)
        o->out_dtype = s->mo.out_dtype; /* the caller's, where the recipe gives none */
    return st;
}

/* Merge λ into the scratch directory: apply pass only once statistics are known (the first
 * merge runs the statistics pass and keeps them). Candidates after the first are quiet. */
static pcbm_status merge_candidate(pcbm_search_state *s, unsigned k, const double *lam,
                                   pcbm_error *err)
{
    int first = s->merged == 0 && !s->stats_in;
    int rc = pcbm_remove_tree(s->scratch);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot remove the scratch model %s: %s", s->scratch,
                         strerror(-rc));
    if (first && pcbm_search_has_stats(s->mo.method))
        pcbm_search_note(s, "statistics pass (once) and the merge at λ = %g", s->o.init);
    pcbm_merge_opts o;
    pcbm_recipe *cand;
    char *text;
    pcbm_status st = candidate_opts(s, lam, &o, &cand, &text, err);
    o.out = s->scratch;
    o.stats_in = s->stats_in;
    if (!first) { /* candidates after the first are silent */
        o.on_message = NULL;
        o.on_progress = NULL;
        o.force = 1;
    }
    pcbm_error merr;
    pcbm_error_clear(&merr);
    if (st == PCBM_OK)
        st = pcbm_merge(&o, &merr);
    else
        merr = *err;
    pcbm_recipe_free(cand);
    free(text);
    if (st != PCBM_OK) {
        if (merr.status == PCBM_ERR_INTERRUPTED)
            return pcbm_fail(err, PCBM_ERR_INTERRUPTED, "%s", merr.msg);
        return pcbm_fail(err, merr.status, "evaluation %u: the merge failed: %s", k,
                         merr.msg[0] ? merr.msg : pcbm_status_name(merr.status));
    }
    if (first && pcbm_search_has_stats(s->mo.method)) {
        /* Keep the statistics for every later candidate (apply pass only). */
        char from[PATH_MAX + 128];
        snprintf(from, sizeof from, "%s/%s", s->scratch, PCBM_SEARCH_STATS_NAME);
        if (rename(from, s->stats) != 0)
            return pcbm_fail(err, PCBM_ERR_IO, "cannot keep the statistics file %s: %s", from,
                             strerror(errno));
        s->stats_in = s->stats;
    }
    s->merged++;
    return PCBM_OK;
}

/* The caller scores the candidate in the scratch directory; a non-finite score is a failure. */
static pcbm_status call_evaluate(pcbm_search_state *s, unsigned k, double *score, pcbm_error *eerr)
{
    pcbm_error_clear(eerr);
    *score = NAN;
    pcbm_status est = s->o.evaluate(s->o.user, s->scratch, k, score, eerr);
    if (est == PCBM_OK && !isfinite(*score))
        est = pcbm_fail(eerr, PCBM_ERR_USAGE, "the evaluation gave no finite score (%g)", *score);
    if (est != PCBM_OK && !eerr->msg[0])
        pcbm_fail(eerr, est, "the evaluation failed (%s)", pcbm_status_name(est));
    if (est != PCBM_OK)
        eerr->status = est;
    return est;
}

/* Evaluate one candidate: merge, score, log. PCBM_OK when scored or skipped; otherwise the
 * search stops (PCBM_ERR_INTERRUPTED: nothing of this candidate is logged). *score is NaN when
 * the evaluation failed. */
static pcbm_status evaluate(pcbm_search_state *s, const double *lam, unsigned gen, double *score,
                            pcbm_error *err)
{
    pcbm_search_result *r = s->res;
    unsigned k = ++r->evaluations;
    *score = NAN;
    if (k <= s->nreplay)
        return replayed(s, k, lam, gen, score, err);
    double t0 = pcbm_now();
    pcbm_status st = merge_candidate(s, k, lam, err);
    if (st != PCBM_OK) {
        if (st == PCBM_ERR_INTERRUPTED)
            r->evaluations--;
        return st;
    }
    double t1 = pcbm_now(), sc;
    pcbm_error eerr;
    pcbm_status est = call_evaluate(s, k, &sc, &eerr);
    double t2 = pcbm_now();
    if (est == PCBM_ERR_INTERRUPTED) { /* stopped with the evaluation: not a result */
        r->evaluations--;
        return pcbm_fail(err, PCBM_ERR_INTERRUPTED, "%s", eerr.msg);
    }
    r->merge_seconds += t1 - t0;
    r->eval_seconds += t2 - t1;
    st = pcbm_search_log_eval(s, k, gen, lam, sc, est == PCBM_OK ? NULL : eerr.msg, t2 - t0,
                              t1 - t0, t2 - t1, err);
    if (st != PCBM_OK)
        return st;
    if (est == PCBM_OK) {
        *score = sc;
        tally(s, k, gen, lam, sc);
    } else {
        r->failed++;
    }
    pcbm_search_event ev = {.index = k, .generation = gen, .lambdas = lam, .ok = est == PCBM_OK,
                            .stops = est != PCBM_OK && !s->o.skip_errors, .score = *score,
                            .seconds = t2 - t0, .merge_seconds = t1 - t0, .eval_seconds = t2 - t1,
                            .error = est == PCBM_OK ? NULL : eerr.msg};
    emit(s, &ev);
    if (est != PCBM_OK && !s->o.skip_errors) {
        char ls[64 * 12];
        pcbm_search_fmt_lambdas(lam, s->n, ls, sizeof ls);
        return pcbm_fail(err, est, "evaluation %u (λ %s) failed: %s; the search stops (skip_errors "
                         "ranks failed candidates last and goes on); evaluations so far: %s", k,
                         ls, eerr.msg, s->log_path);
    }
    return PCBM_OK;
}

/* The CMA-ES options of this search, x0 = λ = init everywhere. */
static void cmaes_setup(const pcbm_search_state *s, pcbm_cmaes_opts *co, double *x0, double *lo,
                        double *hi)
{
    for (unsigned i = 0; i < s->n; i++) {
        x0[i] = s->o.init;
        lo[i] = s->o.lo;
        hi[i] = s->o.hi;
    }
    pcbm_cmaes_opts_init(co);
    co->n = s->n;
    co->x0 = x0;
    co->sigma0 = s->o.sigma > 0 ? s->o.sigma : (s->o.hi - s->o.lo) / 5.0;
    co->lo = lo;
    co->hi = hi;
    co->popsize = s->o.popsize;
    co->seed = s->o.seed;
    co->tol_x = 1e-9 * (s->o.hi - s->o.lo);
}

/* Evaluation 1 at λ = init, then generations of CMA-ES until the budget is spent or it stops. */
static pcbm_status run_generations(pcbm_search_state *s, pcbm_error *err)
{
    pcbm_search_result *r = s->res;
    double x0[PCBM_MAX_TASKS], lo[PCBM_MAX_TASKS], hi[PCBM_MAX_TASKS], score;
    pcbm_cmaes_opts co;
    cmaes_setup(s, &co, x0, lo, hi);
    pcbm_status st = evaluate(s, x0, 0, &score, err);
    if (st != PCBM_OK)
        return st;
    pcbm_cmaes *es = NULL;
    if ((st = pcbm_cmaes_create(&co, &es, err)) != PCBM_OK)
        return st;
    unsigned lamsz = pcbm_cmaes_popsize(es);
    double *X = malloc(sizeof(double) * lamsz * s->n), *F = malloc(sizeof(double) * lamsz);
    snprintf(r->stopped, sizeof r->stopped, "budget spent");
    if (!X || !F)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    while (st == PCBM_OK && r->evaluations < s->o.budget) {
        if (pcbm_cmaes_stopped(es) != PCBM_CMAES_RUNNING) {
            snprintf(r->stopped, sizeof r->stopped, "%s",
                     pcbm_cmaes_stop_name(pcbm_cmaes_stopped(es)));
            break;
        }
        pcbm_cmaes_ask(es, X);
        unsigned gen = pcbm_cmaes_generation(es) + 1;
        unsigned take = PCBM_MIN(lamsz, s->o.budget - r->evaluations);
        for (unsigned k = 0; st == PCBM_OK && k < take; k++) {
            st = evaluate(s, X + (size_t)k * s->n, gen, &score, err);
            F[k] = -score; /* CMA-ES minimizes; NaN (failed, skipped) ranks last */
        }
        if (st == PCBM_OK && take == lamsz)
            st = pcbm_cmaes_tell(es, F, err);
    }
    r->generations = pcbm_cmaes_generation(es);
    r->popsize = lamsz;
    r->sigma0 = co.sigma0;
    pcbm_cmaes_free(es);
    free(X);
    free(F);
    return st;
}

/* OUT: the merge at the best λ (apply pass only), then the log and the summary. */
static pcbm_status finish(pcbm_search_state *s, double t_start, pcbm_error *err)
{
    pcbm_search_result *r = s->res;
    fclose(s->log);
    s->log = NULL;
    if (!s->have_best)
        return pcbm_fail(err, PCBM_ERR_USAGE, "every evaluation failed; nothing to merge (see %s)",
                         s->log_path);
    int rc = pcbm_remove_tree(s->scratch);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot remove the scratch model %s: %s", s->scratch,
                         strerror(-rc));
    pcbm_search_note(s, "merging the best λ (evaluation %u) into %s", r->best_evaluation,
                     s->mo.out);
    pcbm_merge_opts o;
    pcbm_recipe *cand;
    char *text;
    pcbm_status st = candidate_opts(s, r->best_lambdas, &o, &cand, &text, err);
    o.stats_in = s->stats_in;
    o.resume = s->o.resume; /* a final merge that was interrupted continues */
    pcbm_error merr;
    pcbm_error_clear(&merr);
    if (st == PCBM_OK && pcbm_merge(&o, &merr) != PCBM_OK) {
        st = merr.status == PCBM_ERR_INTERRUPTED
                 ? pcbm_fail(err, PCBM_ERR_INTERRUPTED, "%s", merr.msg)
                 : pcbm_fail(err, merr.status, "the final merge into %s failed: %s", s->mo.out,
                             merr.msg[0] ? merr.msg : pcbm_status_name(merr.status));
    }
    char rpath[PATH_MAX + 32];
    snprintf(rpath, sizeof rpath, "%s/%s", s->mo.out, PCBM_SEARCH_RECIPE_NAME);
    if (st == PCBM_OK && text && pcbm_search_write_text(rpath, text) != 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "cannot write %s: %s", rpath, strerror(errno));
    pcbm_recipe_free(cand);
    free(text);
    if (st != PCBM_OK)
        return st;
    char dst[PATH_MAX + 32];
    snprintf(dst, sizeof dst, "%s/%s", s->mo.out, PCBM_SEARCH_LOG_NAME);
    if (rename(s->log_path, dst) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot move %s to %s: %s", s->log_path, dst,
                         strerror(errno));
    r->seconds = pcbm_now() - t_start;
    st = pcbm_search_write_summary(s, err);
    const char *const mine[] = {PCBM_SEARCH_LOG_NAME, PCBM_SEARCH_SUMMARY_NAME,
                                PCBM_SEARCH_RECIPE_NAME};
    if (st == PCBM_OK) /* verify vouches for the search's files too */
        st = pcbm_manifest_append(s->mo.out, mine, s->o.recipe ? 3 : 2, err);
    return st;
}

/* The caller's options, with defaults for the fields of a layout newer than the caller's. */
static void take_opts(pcbm_search_opts *dst, const pcbm_search_opts *o)
{
    pcbm_search_opts_init(dst);
    memcpy(dst, o, PCBM_MIN((size_t)o->struct_size, sizeof *dst));
    dst->struct_size = (uint32_t)sizeof *dst;
}

pcbm_status pcbm_search(const pcbm_search_opts *o, pcbm_search_result *res, pcbm_error *err)
{
    pcbm_search_result own;
    pcbm_search_state *s = NULL;
    pcbm_error_clear(err);
    res = res ? res : &own;
    memset(res, 0, sizeof *res);
    if (!o || o->struct_size < SEARCH_OPTS_V1_SIZE)
        return pcbm_fail(err, PCBM_ERR_USAGE, "pcbm_search_opts.struct_size is %u, smaller than "
                         "the first published layout (%zu bytes): fill the options with "
                         "pcbm_search_opts_init()", o ? o->struct_size : 0, SEARCH_OPTS_V1_SIZE);
    pcbm_search_opts so;
    take_opts(&so, o);
    pcbm_merge_opts rmo; /* with a recipe: the caller's options with the recipe's parameters */
    pcbm_status st = PCBM_OK;
    if (so.recipe && so.merge) {
        rmo = *so.merge;
        st = pcbm_recipe_merge_opts(so.recipe, &rmo, err);
        if (rmo.out_dtype == PCBM_DTYPE_BASE)
            rmo.out_dtype = so.merge->out_dtype;
        so.merge = &rmo;
    }
    if (st == PCBM_OK)
        st = validate(&so, err);
    if (st == PCBM_OK && !(s = pcbm_calloc(1, sizeof *s)))
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    if (st != PCBM_OK)
        return st;
    double t_start = pcbm_now();
    s->o = so;
    s->mo = *so.merge;
    s->mo.resume = 0; /* candidates start afresh; the final merge continues with so.resume */
    s->n = s->mo.ntasks;
    s->lock_fd = -1;
    s->res = res;
    s->stats_in = s->mo.stats_in;
    if (so.recipe) {
        const char *rt = pcbm_recipe_text(so.recipe);
        s->recipe_hash = XXH3_64bits(rt, strlen(rt));
    }
    st = pcbm_search_make_work(s, err);
    if (st == PCBM_OK && !s->stats_in && pcbm_search_has_stats(s->mo.method) && exists(s->stats))
        s->stats_in = s->stats; /* resume: computed by the earlier run */
    if (st == PCBM_OK)
        st = run_generations(s, err);
    if (st == PCBM_OK)
        st = finish(s, t_start, err);
    if (s->log)
        fclose(s->log);
    if (st == PCBM_OK) {
        pcbm_remove_tree(s->work);
    } else if (s->work[0]) {
        /* Keep the log of the evaluations so far and the statistics (resume reuses both);
         * drop the scratch model. */
        char p[PATH_MAX + 128];
        snprintf(p, sizeof p, "%s.partial", s->scratch);
        pcbm_remove_tree(s->scratch);
        pcbm_remove_tree(p);
    }
    res->seconds = pcbm_now() - t_start;
    if (st == PCBM_ERR_INTERRUPTED) {
        pcbm_engine_clear_stop();
        pcbm_fail(err, st, "the search stopped after %u evaluation(s); run it again with resume "
                  "(`resume`) to continue (%s keeps the log)", res->evaluations, s->work);
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->replay);
    free(s);
    return st;
}

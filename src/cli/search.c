/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search.c — `pcbmerge search`, the command-line front-end of pcbm_search(): the options come
 * from the shared table (opts.c), each candidate is scored by the user's command (evalcmd.c),
 * every evaluation, a failing command's output and the summary are printed here, and the outcome
 * becomes the exit status (75: stopped by a signal; --resume continues).
 */
#include "print.h"
#include "search.h"

#include "evalcmd.h"
#include "opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cli_search {
    const cli_args *a;
    char *cmd;            /* the last command run */
    pcbm_cli_eval last;   /* and what it did (shown when it failed) */
    int reported;         /* a failure that stops the search was printed */
} cli_search;

static pcbm_status set_err(pcbm_error *err, pcbm_status st, const char *msg)
{
    err->status = st;
    snprintf(err->msg, sizeof err->msg, "%s", msg);
    return st;
}

/* The evaluate callback: run the command on the candidate; its last line of stdout is the score. */
static pcbm_status eval_cmd(void *user, const char *model, unsigned index, double *score,
                            pcbm_error *err)
{
    cli_search *cs = user;
    pcbm_cli_eval_free(&cs->last);
    free(cs->cmd);
    cs->cmd = NULL;
    memset(&cs->last, 0, sizeof cs->last);
    if (atomic_load(&pcbm_cli_stop))
        return set_err(err, PCBM_ERR_INTERRUPTED, "stopped by a signal");
    if (!(cs->cmd = pcbm_cli_expand_cmd(cs->a->eval_cmd, model)))
        return set_err(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_cli_run_eval(cs->cmd, model, index, &cs->last);
    if (atomic_load(&pcbm_cli_stop)) /* the command was stopped with us: not a result */
        return set_err(err, PCBM_ERR_INTERRUPTED, "stopped by a signal");
    if (!cs->last.ok)
        return set_err(err, PCBM_ERR_IO, cs->last.why);
    *score = cs->last.score;
    return PCBM_OK;
}

static void fmt_lambdas(const double *l, unsigned n, char *b, size_t len)
{
    size_t u = 0;
    b[0] = 0;
    for (unsigned i = 0; i < n && u < len; i++)
        u += (size_t)snprintf(b + u, len - u, "%s%.4f", i ? " " : "", l[i]);
}

static void on_event(void *user, const pcbm_search_event *ev)
{
    cli_search *cs = user;
    int quiet = cs->a->quiet;
    char ls[64 * 12];
    if (ev->replayed) {
        if (!quiet)
            fprintf(stderr, "pcbmerge: search: %u/%u gen %u  (logged)  score %.6g  best %.6g\n",
                    ev->index, ev->budget, ev->generation, ev->score, ev->best_score);
        return;
    }
    fmt_lambdas(ev->lambdas, ev->ntasks, ls, sizeof ls);
    if (ev->ok) {
        if (!quiet)
            fprintf(stderr, "pcbmerge: search: %u/%u gen %u  λ %s  score %.6g  best %.6g  (%.2f s)\n",
                    ev->index, ev->budget, ev->generation, ls, ev->score, ev->best_score,
                    ev->seconds);
        return;
    }
    char why[2048];
    pcbm_cli_flagify(ev->error, why, sizeof why);
    fprintf(stderr, "pcbmerge: %s: evaluation %u (λ %s) failed: %s\n",
            ev->stops ? "error" : "warning", ev->index, ls, why);
    fprintf(stderr, "  command: %s\n", cs->cmd ? cs->cmd : "");
    pcbm_cli_print_tail("its stderr", &cs->last.err, 12);
    if (strstr(ev->error, "no score"))
        pcbm_cli_print_tail("its stdout", &cs->last.out, 5);
    if (ev->stops) {
        fprintf(stderr, "  the search stops (--on-eval-error skip ranks failed candidates last "
                "and goes on); evaluations so far: %s\n", ev->log_path);
        cs->reported = 1;
    }
}

static void on_note(void *user, const char *msg)
{
    const cli_search *cs = user;
    char line[2048];
    pcbm_cli_flagify(msg, line, sizeof line);
    if (!cs->a->quiet)
        fprintf(stderr, "pcbmerge: search: %s\n", line);
}

static void print_summary(const cli_args *a, const pcbm_search_result *r)
{
    const pcbm_search_opts *so = &a->so;
    unsigned n = a->o.ntasks;
    char ls[64 * 12];
    fmt_lambdas(r->best_lambdas, n, ls, sizeof ls);
    printf("search: %u evaluations (%s, %u tasks, CMA-ES seed %llu) in %.1f s: %s\n",
           r->evaluations, pcbm_method_name(a->o.method), n, (unsigned long long)so->seed,
           r->seconds, r->stopped);
    if (r->have_init)
        printf("  score at λ = %g (init):   %.6g\n", so->init, r->init_score);
    else
        printf("  score at λ = %g (init):   (the evaluation failed)\n", so->init);
    printf("  best score (evaluation %u): %.6g", r->best_evaluation, r->best_score);
    if (r->have_init)
        printf("  (%+.6g over init)", r->best_score - r->init_score);
    printf("\n  best λ: %s\n", ls);
    unsigned at_lo = 0, at_hi = 0;
    for (unsigned i = 0; i < n; i++) {
        at_lo += r->best_lambdas[i] <= so->lo;
        at_hi += r->best_lambdas[i] >= so->hi;
    }
    if (at_lo || at_hi)
        printf("  note: %u of %u λ on the bounds [%g, %g] (%u low, %u high): the best may lie "
               "outside; --bounds widens the box\n", at_lo + at_hi, n, so->lo, so->hi, at_lo, at_hi);
    if (r->failed)
        printf("  failed evaluations: %u (skipped)\n", r->failed);
    printf("  merged into %s with the best λ; log %s/search_log.jsonl, summary "
           "%s/search_summary.json\n", a->o.out, a->o.out, a->o.out);
    if (a->so.recipe)
        printf("  the recipe with each model's weight times the best λ: %s/search_recipe.yml "
               "(pcbmerge merge --config merges it into the same weights)\n", a->o.out);
}

/* The checks of the command line itself; the library checks the rest. */
static int check_args(const cli_args *a)
{
    if (!a->o.base || !a->o.out)
        return cli_usage_error(CMD_SEARCH, "search needs --base DIR and --out DIR");
    if (!a->eval_cmd)
        return cli_usage_error(CMD_SEARCH, "search needs --eval-cmd 'COMMAND {model}' (the last "
                               "line of its stdout is the score, higher is better)");
    if (!strstr(a->eval_cmd, "{model}") && !strstr(a->eval_cmd, "PCBM_MODEL"))
        return cli_usage_error(CMD_SEARCH, "--eval-cmd must contain {model}, replaced by the "
                               "directory of each candidate model (or read $PCBM_MODEL): %s",
                               a->eval_cmd);
    return 0;
}

/* The outcome of pcbm_search as printed messages and an exit status. */
static int report(const cli_search *cs, pcbm_status st, const pcbm_search_result *r,
                  const pcbm_error *err)
{
    switch (st) {
    case PCBM_OK:
        print_summary(cs->a, r);
        return 0;
    case PCBM_ERR_INTERRUPTED:
        fprintf(stderr, "pcbmerge: search stopped by a signal after %u evaluation(s); run the "
                "same command with --resume to continue (%s keeps the log)\n", r->evaluations,
                r->work_dir);
        return EXIT_TEMPFAIL;
    case PCBM_ERR_USAGE:
    {
        char msg[sizeof err->msg + 256];
        pcbm_cli_flagify(err->msg, msg, sizeof msg);
        return cli_usage_error(CMD_SEARCH, "%s", msg);
    }
    default:
        if (!cs->reported) { /* a failed evaluation that stopped the search is printed already */
            char msg[sizeof err->msg + 256];
            pcbm_cli_flagify(err->msg[0] ? err->msg : pcbm_status_name(st), msg, sizeof msg);
            fprintf(stderr, "pcbmerge: error: %s\n", msg);
        }
        return 1;
    }
}

int pcbm_cli_search(int argc, char **argv)
{
    cli_args *a = calloc(1, sizeof *a);
    if (!a) {
        fputs("pcbmerge: error: out of memory\n", stderr);
        return 1;
    }
    cli_args_init(a);
    pcbm_recipe *recipe = NULL;
    int first, rc = cli_parse(CMD_SEARCH, argc, argv, a, &first);
    if (rc == 0 && a->help) {
        cli_help_cmd(stdout, CMD_SEARCH);
    } else if (rc == 0 && a->config) {
        /* the coefficients multiply the recipe's weights (pcbm_search_opts.recipe) */
        rc = cli_recipe_opts(CMD_SEARCH, a, argc - first, &recipe);
        if (rc == 0)
            rc = check_args(a);
        a->so.recipe = recipe;
    } else if (rc == 0) {
        a->o.tasks = (const char *const *)&argv[first];
        a->o.ntasks = (unsigned)(argc - first);
        rc = check_args(a);
    }
    if (rc == 0 && !a->help) {
        cli_search cs = {.a = a};
        a->so.evaluate = eval_cmd;
        a->so.user = &cs;
        a->so.eval_id = a->eval_cmd;
        a->so.on_event = on_event;
        a->so.on_note = on_note;
        pcbm_cli_attach_printers(&a->o, a->progress, a->quiet);
        pcbm_search_result *r = calloc(1, sizeof *r);
        pcbm_error err = {PCBM_OK, ""};
        pcbm_status st = r ? pcbm_search(&a->so, r, &err) : PCBM_ERR_NOMEM;
        rc = r ? report(&cs, st, r, &err) : 1;
        pcbm_cli_eval_free(&cs.last);
        free(cs.cmd);
        free(r);
    }
    pcbm_recipe_free(recipe);
    free(a);
    return rc;
}

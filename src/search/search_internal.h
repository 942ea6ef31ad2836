/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search_internal.h — the state of one coefficient search (pcbm_search), shared by the search
 * loop (search.c) and its files (search_log.c: work directory, parameters, log, summary).
 * Internal to libpcbmerge.
 */
#ifndef PCBM_SEARCH_INTERNAL_H
#define PCBM_SEARCH_INTERNAL_H

#include "../common/common.h"

#include <limits.h>
#include <stdio.h>

#define PCBM_SEARCH_STATS_NAME "merge_stats.json.zst"
#define PCBM_SEARCH_LOG_NAME "search_log.jsonl"
#define PCBM_SEARCH_SUMMARY_NAME "search_summary.json"
#define PCBM_SEARCH_PARAMS_NAME "search_params.json"
#define PCBM_SEARCH_RECIPE_NAME "search_recipe.yml"

/* An evaluation of the log of an earlier run (resume). */
typedef struct pcbm_logged {
    double lam[PCBM_MAX_TASKS];
    double score;               /* NaN: the evaluation failed */
    unsigned gen;
} pcbm_logged;

typedef struct pcbm_search_state {
    pcbm_search_opts o;         /* the caller's options, defaults for fields it did not know */
    pcbm_merge_opts mo;         /* the merge parameters */
    pcbm_search_result *res;    /* tallies: counts, init and best */
    unsigned n;                 /* tasks */
    pcbm_logged *replay;        /* resume: the evaluations already logged */
    unsigned nreplay, merged;   /* merges run by this call */
    char work[PATH_MAX], scratch[PATH_MAX + 64], stats[PATH_MAX + 64], log_path[PATH_MAX + 64];
    const char *stats_in;       /* statistics for the apply-only merges, or NULL */
    FILE *log;
    int lock_fd;
    int have_best;
    uint64_t recipe_hash;       /* a recipe search: XXH3-64 of the recipe's text */
} pcbm_search_state;

int pcbm_search_has_stats(pcbm_method m);
/* A note through the caller's on_note. */
void pcbm_search_note(const pcbm_search_state *s, const char *fmt, ...) PCBM_PRINTF(2, 3);
/* "1.0000 2.5000 ..." */
void pcbm_search_fmt_lambdas(const double *l, unsigned n, char *b, size_t len);

/* Create OUT.search, or with resume take over an earlier one (parameters compared, log loaded),
 * locked for this run; opens the log for appending. */
pcbm_status pcbm_search_make_work(pcbm_search_state *s, pcbm_error *err);
/* Append one evaluation to the log (why: NULL when scored). */
pcbm_status pcbm_search_log_eval(pcbm_search_state *s, unsigned k, unsigned gen, const double *lam,
                                 double score, const char *why, double secs, double merge_s,
                                 double eval_s, pcbm_error *err);
/* Write text to path atomically (tmp, fsync, rename); -1 with errno on failure. */
int pcbm_search_write_text(const char *path, const char *text);
/* Write OUT/search_summary.json. */
pcbm_status pcbm_search_write_summary(const pcbm_search_state *s, pcbm_error *err);

#endif /* PCBM_SEARCH_INTERNAL_H */

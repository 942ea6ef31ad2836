/* SPDX-License-Identifier: Apache-2.0 */
/*
 * opts.h — the command line's one option table and parser (src/cli/opts.c): every option of
 * merge, plan, search and the split-merge phases, which commands take it, how its value is
 * checked and its help text; the help of every command is generated from the same table.
 */
#ifndef PCBM_CLI_OPTS_H
#define PCBM_CLI_OPTS_H

#include "pcbmerge.h"
#include "print.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_USAGE 2
#define EXIT_TEMPFAIL 75

typedef enum cli_cmd {
    CMD_MERGE = 0, CMD_PLAN, CMD_SEARCH, CMD_STATS, CMD_REDUCE, CMD_APPLY, CMD_FINALIZE,
    CMD_STATUS, CMD_INSPECT, CMD_VERIFY, CMD_COUNT
} cli_cmd;

#define CLI_MAX_EXCLUDE 256

/* What the options of any command set. */
typedef struct cli_args {
    pcbm_merge_opts o;                 /* merge parameters and run-time settings */
    double lambdas[PCBM_MAX_TASKS], weights[PCBM_MAX_TASKS], densities[PCBM_MAX_TASKS];
    double gammas[PCBM_MAX_TASKS], epsilons[PCBM_MAX_TASKS];
    int nlambdas, nweights, ndensities, ngammas, nepsilons;
    bool density_given;                /* --density (excludes --densities) */
    bool gamma_given, epsilon_given;   /* --gamma, --epsilon (the library cannot tell them from
                                          the defaults: a method that does not read them
                                          refuses them here) */
    bool scope_given;                  /* --scope (per-tensor methods default to tensor) */
    const char *exclude[CLI_MAX_EXCLUDE];
    unsigned parts;                    /* plan: --parts K */
    const char *plan, *part, *get;     /* phases: --plan DIR, --part I, status --get KEY */
    bool json;                         /* status --json */
    pcbm_search_opts so;               /* search: budget, bounds, init, sigma, popsize, seed... */
    const char *eval_cmd;              /* search: --eval-cmd */
    bool help;                         /* --help was given */
    cli_progress progress;             /* --progress */
    bool quiet;                        /* --quiet */
    const char *config;                /* --config RECIPE.yml (a mergekit recipe) */
    const char *chat_template;         /* --chat-template: auto, a template file, or its text */
    uint64_t given[2];                 /* bit id: option id was given (opts.c's table) */
} cli_args;

/* Option id `id` (opts.c's table) was given. */
static inline bool cli_given(const cli_args *a, int id)
{
    return (a->given[id / 64] >> (id % 64)) & 1u;
}

/* The options a recipe sets (--config excludes them), as names joined by ", " into buf;
 * returns the number given. */
int cli_recipe_conflicts(const cli_args *a, bool recipe_has_dtype, char *buf, size_t len);
/* --config RECIPE of merge, plan and search: the merge's parameters from the recipe into a->o
 * (*out keeps what they point to); options the recipe sets and task operands are usage errors.
 * 0, or the exit status of the error printed. */
int cli_recipe_opts(cli_cmd c, cli_args *a, int operands, pcbm_recipe **out);

/* The command named `name`, or CMD_COUNT. */
cli_cmd cli_cmd_parse(const char *name);
const char *cli_cmd_name(cli_cmd c);

/* Defaults for every option of command c (a->o.exclude points into a). */
void cli_args_init(cli_args *a);

/* Parse argv[1..] of command c (argv[0] is the command) into a. Returns 0, or the exit status
 * of a usage error (printed). *first_arg receives the index of the first operand (getopt moves
 * the operands after the options). */
int cli_parse(cli_cmd c, int argc, char **argv, cli_args *a, int *first_arg);

/* "pcbmerge CMD: <message>" and the hint to --help on stderr; returns EXIT_USAGE. `c` may be
 * CMD_COUNT (no command). */
int cli_usage_error(cli_cmd c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* `pcbmerge --help` (every command and option), `pcbmerge CMD --help`, and the list of
 * commands (the no-argument message). */
void cli_help_all(FILE *f);
void cli_help_cmd(FILE *f, cli_cmd c);
void cli_list_cmds(FILE *f);

#endif /* PCBM_CLI_OPTS_H */

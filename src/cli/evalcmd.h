/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evalcmd.h — running the evaluation command of `pcbmerge search` (src/cli/evalcmd.c).
 */
#ifndef PCBM_CLI_EVALCMD_H
#define PCBM_CLI_EVALCMD_H

#include <stddef.h>

typedef struct pcbm_cli_buf {
    char *p;
    size_t n, cap, limit; /* keeps the last `limit` bytes */
    int cut;              /* bytes were dropped from the front */
} pcbm_cli_buf;

typedef struct pcbm_cli_eval {
    int ok;
    double score;
    char why[512];            /* when !ok: what went wrong */
    pcbm_cli_buf out, err;    /* the tails of stdout and stderr */
} pcbm_cli_eval;

/* cmd with every "{model}" replaced by the shell-quoted model path (malloc'ed; NULL: no memory). */
char *pcbm_cli_expand_cmd(const char *cmd, const char *model);
/* Run cmd with /bin/sh -c, capturing stdout and stderr; the score is the last line of stdout. */
void pcbm_cli_run_eval(const char *cmd, const char *model, unsigned index, pcbm_cli_eval *r);
void pcbm_cli_eval_free(pcbm_cli_eval *r);
/* The last `max` lines of a captured stream, indented, on stderr. */
void pcbm_cli_print_tail(const char *label, const pcbm_cli_buf *b, int max);

#endif /* PCBM_CLI_EVALCMD_H */

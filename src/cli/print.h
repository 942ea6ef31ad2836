/* SPDX-License-Identifier: Apache-2.0 */
/*
 * print.h — how the command line shows what the library reports. The library never prints: the
 * CLI installs these printers in the options of every call it makes.
 *   messages: "pcbmerge: ..." and "pcbmerge: warning: ..." on stderr; none with --quiet.
 *   progress: auto = one self-updating line on a terminal (nothing when stderr is not one);
 *             json = JSON lines on stderr (at most one a second per pass, a last one per pass,
 *             and a completion record); none = nothing. --quiet implies none.
 */
#ifndef PCBM_CLI_PRINT_H
#define PCBM_CLI_PRINT_H

#include "pcbmerge.h"

#include <stdbool.h>

/* Library messages name options by their field in pcbm_merge_opts, in backquotes (`resume`);
 * the CLI shows its flags instead (--resume). Control bytes other than newlines (an escape
 * sequence in a tensor name) are shown as \xNN. Copies in to out (always terminated). */
void pcbm_cli_flagify(const char *in, char *out, size_t len);

/* The command that reproduces the merge o, for the model card: "pcbmerge merge" with every
 * parameter that shapes the output (defaults left out), "--out OUT" and the inputs, shell-quoted
 * where needed. Run-time settings (threads, memory, I/O) are left out, so the card is the same
 * bytes whatever they were. Allocated; NULL when out of memory. */
char *pcbm_cli_command_line(const pcbm_merge_opts *o);

/* --progress: a line on a terminal (auto), JSON lines, or nothing. */
typedef enum cli_progress { CLI_PROGRESS_AUTO = 0, CLI_PROGRESS_JSON, CLI_PROGRESS_NONE } cli_progress;

/* Install the printers into o: messages unless quiet, progress as `mode` says (none if quiet). */
void pcbm_cli_attach_printers(pcbm_merge_opts *o, cli_progress mode, bool quiet);

#endif /* PCBM_CLI_PRINT_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search.h — `pcbmerge search`: the command-line front-end of pcbm_search(), scored by a
 * user's evaluation command (src/cli/search.c), and the stop flag of the CLI's signal thread.
 */
#ifndef PCBM_CLI_SEARCH_H
#define PCBM_CLI_SEARCH_H

#include "pcbmerge.h"

#include <stdatomic.h>

/* argv[0] is "search"; returns the process exit status (0, 1, 2 usage, 75 stopped by a signal:
 * --resume continues). */
int pcbm_cli_search(int argc, char **argv);

/* Set by the CLI's signal thread on the first SIGTERM/SIGINT/SIGHUP (main.c). */
extern atomic_int pcbm_cli_stop;

#endif /* PCBM_CLI_SEARCH_H */

/*
 * print.h — how the command line shows what the library reports: warnings and notes on stderr
 * ("pcbmerge: ...", "pcbmerge: warning: ..."), nothing but errors with --quiet. The library itself
 * never prints; the CLI installs these printers in the options of every call it makes.
 */
#ifndef PCBM_CLI_PRINT_H
#define PCBM_CLI_PRINT_H

#include "pcbmerge.h"

/* Install the terminal printers into o according to o->quiet (and o->progress). */
void pcbm_cli_attach_printers(pcbm_merge_opts *o);

#endif /* PCBM_CLI_PRINT_H */

/*
 * print.c — the CLI's printers for the library's messages (and, later, progress events).
 */
#include "print.h"

#include <stdio.h>

static void print_message(void *user, pcbm_level level, const char *text)
{
    (void)user;
    fprintf(stderr, "pcbmerge: %s%s\n", level == PCBM_LEVEL_WARNING ? "warning: " : "", text);
}

void pcbm_cli_attach_printers(pcbm_merge_opts *o)
{
    o->on_message = o->quiet ? NULL : print_message;
}

/*
 * progress.c — the progress display of a pass: on a terminal one line rewritten at most four
 * times a second (bytes, rate, ETA), with --progress json one JSON object a second on stderr.
 * Nothing is shown with --quiet, --progress none, or (auto) when stderr is not a terminal.
 */
#include "progress.h"

#include <stdio.h>
#include <unistd.h>

void pcbm_progress_begin(pcbm_progress_line *pg, pcbm_progress mode, int quiet, const char *pass,
                         uint64_t total, double t0)
{
    bool show = !quiet && mode != PCBM_PROGRESS_NONE;
    *pg = (pcbm_progress_line){.pass = pass, .start = t0, .last = t0, .total = total,
                               .json = show && mode == PCBM_PROGRESS_JSON,
                               .tty = show && mode == PCBM_PROGRESS_AUTO && isatty(2)};
}

static void progress_show(pcbm_progress_line *pg, bool final)
{
    double now = pcbm_now();
    if (!pg->tty && !pg->json)
        return;
    if (!final && now - pg->last < (pg->json ? 1.0 : 0.25))
        return;
    pg->last = now;
    double el = now - pg->start;
    double rate = el > 0 ? (double)pg->done / el : 0;
    double eta = rate > 0 && pg->total > pg->done ? (double)(pg->total - pg->done) / rate : 0;
    if (pg->json) {
        fprintf(stderr, "{\"pass\":\"%s\",\"bytes\":%llu,\"total\":%llu,\"rate\":%.0f,\"eta\":%.1f}\n",
                pg->pass, (unsigned long long)pg->done, (unsigned long long)pg->total, rate, eta);
    } else {
        char a[32], b[32];
        fprintf(stderr, "\r%-10s %s / %s  %.2f GB/s  ETA %d:%02d   %s", pg->pass,
                pcbm_fmt_bytes(pg->done, a, sizeof a), pcbm_fmt_bytes(pg->total, b, sizeof b),
                rate / 1e9, (int)(eta / 60), (int)eta % 60, final ? "\n" : "");
    }
    fflush(stderr);
}

void pcbm_progress_tick(pcbm_progress_line *pg) { progress_show(pg, false); }

void pcbm_progress_end(pcbm_progress_line *pg, bool ok)
{
    if (ok)
        progress_show(pg, true);
    else if (pg->tty)
        fputc('\n', stderr);
}

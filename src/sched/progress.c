/* SPDX-License-Identifier: Apache-2.0 */
/*
 * progress.c — progress events (see progress.h): per pass, bytes read against the pass's total,
 * its rate and ETA; for the whole call, the passes ended plus this one against the passes still
 * expected, with one ETA from the call's average rate.
 */
#include "progress.h"

void pcbm_progress_init(pcbm_progress_ctx *ctx, pcbm_progress_fn fn, void *user, double t0,
                        unsigned expected, uint64_t pass_estimate)
{
    *ctx = (pcbm_progress_ctx){.fn = fn, .user = user, .t0 = t0, .expected = expected,
                               .pass_estimate = pass_estimate};
}

void pcbm_progress_begin(pcbm_progress_line *pg, pcbm_progress_ctx *ctx, const char *pass,
                         uint64_t total, double t0)
{
    *pg = (pcbm_progress_line){.ctx = ctx && ctx->fn ? ctx : NULL, .pass = pass, .start = t0,
                               .last = t0, .total = total};
    if (ctx) {
        ctx->passes++;
        if (ctx->expected < ctx->passes)
            ctx->expected = ctx->passes;
    }
}

static void send(pcbm_progress_line *pg, pcbm_progress_kind kind, double now)
{
    const pcbm_progress_ctx *c = pg->ctx;
    double el = now - pg->start, call_el = now - c->t0;
    double rate = el > 0 ? (double)pg->done / el : 0;
    uint64_t later = (uint64_t)(c->expected - c->passes) * c->pass_estimate;
    uint64_t bytes = c->bytes_done + pg->done, total = c->bytes_done + pg->total + later;
    double call_rate = call_el > 0 ? (double)bytes / call_el : 0;
    pcbm_progress_event ev = {
        .kind = kind, .pass = pg->pass, .pass_index = c->passes, .pass_count = c->expected,
        .pass_bytes = pg->done, .pass_total = pg->total, .pass_rate = rate,
        .pass_eta = rate > 0 && pg->total > pg->done ? (double)(pg->total - pg->done) / rate : 0,
        .bytes = bytes, .total = total, .elapsed = call_el,
        .eta = call_rate > 0 && total > bytes ? (double)(total - bytes) / call_rate : 0,
        .status = PCBM_OK};
    c->fn(c->user, &ev);
}

void pcbm_progress_tick(pcbm_progress_line *pg)
{
    if (!pg->ctx)
        return;
    double now = pcbm_now();
    if (now - pg->last < 0.25)
        return;
    pg->last = now;
    send(pg, PCBM_PROGRESS_PASS, now);
}

void pcbm_progress_end(pcbm_progress_line *pg, bool ok)
{
    if (pg->ctx && ok) {
        if (pg->done > pg->total) /* the total is the visit's; never report beyond it */
            pg->done = pg->total;
        send(pg, PCBM_PROGRESS_PASS_END, pcbm_now());
    }
    if (pg->ctx)
        pg->ctx->bytes_done += pg->done;
}

void pcbm_progress_done(pcbm_progress_ctx *ctx, pcbm_status st)
{
    if (!ctx || !ctx->fn)
        return;
    double el = pcbm_now() - ctx->t0;
    pcbm_progress_event ev = {.kind = PCBM_PROGRESS_DONE, .pass_index = ctx->passes,
                              .pass_count = ctx->passes, .bytes = ctx->bytes_done,
                              .total = ctx->bytes_done, .elapsed = el, .status = st};
    ctx->fn(ctx->user, &ev);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * print.c — the CLI's printers for the library's messages and progress events (see print.h).
 */
#include "print.h"

#include <math.h>
#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* pcbm_merge_opts fields and the flags that set them. */
static const struct {
    const char *field, *flag;
} flags[] = {
    {"base", "--base"},           {"out", "--out"},
    {"method", "--method"},       {"density", "--density"},
    {"lambda", "--lambda"},       {"lambdas", "--lambdas"},
    {"weights", "--weights"},     {"clamp_ratio", "--clamp-ratio"},
    {"scope", "--scope"},         {"exact", "--exact"},
    {"streaming", "--streaming"}, {"seed", "--seed"},
    {"mem_bytes", "--mem"},       {"threads", "--threads"},
    {"io", "--io"},               {"block_bytes", "--block-size"},
    {"shard_bytes", "--shard-size"}, {"out_dtype", "--dtype"},
    {"exclude", "--exclude"},     {"allow_extra", "--allow-extra"},
    {"allow_nonfinite", "--allow-nonfinite"}, {"force", "--force"},
    {"resume", "--resume"},       {"stats_in", "--stats"},
    {"budget", "--budget"},       {"bounds", "--bounds"},
    {"init", "--init"},           {"sigma", "--sigma"},
    {"popsize", "--popsize"},     {"stats_mode", "--exact/--streaming"},
    {"dry_run", "--dry-run"},     {"require_all", "--require-all"},
    {"take_nonfloat_base", "--take-nonfloat base"},
    {"densities", "--densities"}, {"normalize", "--normalize/--no-normalize"},
    {"rescale", "--rescale/--no-rescale"},
    {"t", "--t"},                 {"select_topk", "--select-topk"},
    {"filter_wise", "--filter-wise"},
    {"gamma", "--gamma"},         {"epsilon", "--epsilon"},
    {"gammas", "--gammas"},       {"epsilons", "--epsilons"},
    {"nuslerp_flatten/nuslerp_row_wise", "--nuslerp-no-flatten/--nuslerp-row-wise"},
};

void pcbm_cli_flagify(const char *in, char *out, size_t len)
{
    size_t o = 0;
    while (*in && o + 1 < len) {
        const char *end = *in == '`' ? strchr(in + 1, '`') : NULL;
        const char *flag = NULL;
        for (size_t k = 0; end && !flag && k < sizeof flags / sizeof *flags; k++)
            if (strlen(flags[k].field) == (size_t)(end - in - 1) &&
                !strncmp(in + 1, flags[k].field, (size_t)(end - in - 1)))
                flag = flags[k].flag;
        unsigned char c = (unsigned char)*in;
        if (!flag && (c < 0x20 || c == 0x7f) && c != '\n') {
            /* a control byte (from a tensor name, say) is shown, never sent to the terminal */
            if (o + 5 >= len)
                break;
            o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
            in++;
            continue;
        }
        if (!flag) {
            out[o++] = *in++;
            continue;
        }
        for (const char *f = flag; *f && o + 1 < len; f++)
            out[o++] = *f;
        in = end + 1;
    }
    out[o] = '\0';
}

typedef struct cmdbuf {
    char *s;
    size_t n, cap;
} cmdbuf;

static void put(cmdbuf *c, const char *a, bool quote)
{
    size_t need = c->n + 4 * strlen(a) + 4;
    if (need > c->cap) {
        char *s = realloc(c->s, need * 2);
        if (!s)
            return;
        c->s = s;
        c->cap = need * 2;
    }
    bool plain = !quote || (*a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=,:@+%") == strlen(a));
    c->s[c->n++] = ' ';
    if (plain) {
        c->n += (size_t)sprintf(c->s + c->n, "%s", a);
        return;
    }
    c->s[c->n++] = '\'';
    for (; *a; a++)
        c->n += (size_t)(*a == '\'' ? sprintf(c->s + c->n, "'\\''") : sprintf(c->s + c->n, "%c", *a));
    c->s[c->n++] = '\'';
    c->s[c->n] = '\0';
}

/* The shortest decimal that reads back as v (0.3, not 0.29999999999999999). */
static void fmt_real(double v, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void put_opt(cmdbuf *c, const char *flag, double v)
{
    char val[64];
    fmt_real(v, val, sizeof val);
    put(c, flag, false);
    put(c, val, false);
}

static void put_list(cmdbuf *c, const char *flag, const double *v, unsigned n)
{
    char val[2048];
    size_t at = 0;
    for (unsigned i = 0; i < n && at < sizeof val - 40; i++) {
        if (i)
            val[at++] = ',';
        fmt_real(v[i], val + at, sizeof val - at);
        at += strlen(val + at);
    }
    put(c, flag, false);
    put(c, val, false);
}

char *pcbm_cli_command_line(const pcbm_merge_opts *o)
{
    pcbm_merge_opts d;
    pcbm_merge_opts_init(&d);
    cmdbuf c = {0};
    c.cap = 256;
    c.s = malloc(c.cap);
    if (!c.s)
        return NULL;
    c.n = (size_t)sprintf(c.s, "pcbmerge merge");
    put(&c, "--method", false);
    put(&c, pcbm_method_name(o->method), false);
    if (o->density != d.density)
        put_opt(&c, "--density", o->density);
    if (o->lambdas)
        put_list(&c, "--lambdas", o->lambdas, o->ntasks);
    else if (o->lambda != d.lambda)
        put_opt(&c, "--lambda", o->lambda);
    if (o->weights)
        put_list(&c, "--weights", o->weights, o->ntasks);
    if (o->densities)
        put_list(&c, "--densities", o->densities, o->ntasks);
    if (o->gammas)
        put_list(&c, "--gammas", o->gammas, o->ntasks);
    else if (o->gamma != d.gamma)
        put_opt(&c, "--gamma", o->gamma);
    if (o->epsilons)
        put_list(&c, "--epsilons", o->epsilons, o->ntasks);
    else if (o->epsilon != d.epsilon)
        put_opt(&c, "--epsilon", o->epsilon);
    if (o->normalize != PCBM_DEFAULT)
        put(&c, o->normalize == PCBM_ON ? "--normalize" : "--no-normalize", false);
    if (o->rescale != PCBM_DEFAULT)
        put(&c, o->rescale == PCBM_ON ? "--rescale" : "--no-rescale", false);
    if (o->clamp_ratio != d.clamp_ratio)
        put_opt(&c, "--clamp-ratio", o->clamp_ratio);
    if (!isnan(o->t))
        put_opt(&c, "--t", o->t);
    if (o->select_topk != d.select_topk)
        put_opt(&c, "--select-topk", o->select_topk);
    if (o->nuslerp_flatten == PCBM_OFF)
        put(&c, "--nuslerp-no-flatten", false);
    if (o->nuslerp_row_wise == PCBM_ON)
        put(&c, "--nuslerp-row-wise", false);
    if (o->filter_wise == PCBM_ON)
        put(&c, "--filter-wise", false);
    if (o->semantics == PCBM_SEMANTICS_MERGEKIT)
        put(&c, "--mergekit", false);
    if (o->chat_template) {
        put(&c, "--chat-template", false);
        put(&c, o->chat_template, true);
    }
    if (o->tokenizer_source && strcmp(o->tokenizer_source, "base")) {
        put(&c, "--tokenizer-source", false);
        put(&c, o->tokenizer_source, true);
    }
    if (o->scope != PCBM_SCOPE_AUTO && o->scope != pcbm_method_default_scope(o))
        put(&c, o->scope == PCBM_SCOPE_TENSOR ? "--scope tensor" : "--scope global", false);
    if (o->stats_mode == PCBM_STATS_EXACT)
        put(&c, "--exact", false);
    if (o->stats_mode == PCBM_STATS_STREAMING)
        put(&c, "--streaming", false);
    char num[32];
    if (o->seed != d.seed) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)o->seed);
        put(&c, "--seed", false);
        put(&c, num, false);
    }
    if (o->out_dtype != PCBM_DTYPE_BASE) {
        put(&c, "--dtype", false);
        put(&c, o->out_dtype == PCBM_DT_F32 ? "f32" : o->out_dtype == PCBM_DT_F16 ? "f16" : "bf16", false);
    }
    if (o->shard_bytes != d.shard_bytes) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)o->shard_bytes);
        put(&c, "--shard-size", false);
        put(&c, num, false);
    }
    for (unsigned i = 0; i < o->nexclude; i++) {
        put(&c, "--exclude", false);
        put(&c, o->exclude[i], true);
    }
    if (o->allow_extra)
        put(&c, "--allow-extra", false);
    if (o->allow_nonfinite)
        put(&c, "--allow-nonfinite", false);
    put(&c, "--base", false);
    put(&c, o->base, true);
    put(&c, "--out OUT", false);
    for (unsigned i = 0; i < o->ntasks; i++)
        put(&c, o->tasks[i], true);
    return c.s;
}

static void print_message(void *user, pcbm_level level, const char *text)
{
    (void)user;
    char line[4096];
    pcbm_cli_flagify(text, line, sizeof line);
    fprintf(stderr, "pcbmerge: %s%s\n", level == PCBM_LEVEL_WARNING ? "warning: " : "", line);
}

static void fmt_time(double s, char *buf, size_t len)
{
    unsigned long t = s > 0 ? (unsigned long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

/* One line on a terminal, rewritten in place: this pass, then the whole merge. */
static void progress_tty(void *user, const pcbm_progress_event *ev)
{
    (void)user;
    if (ev->kind == PCBM_PROGRESS_DONE)
        return;
    char a[32], b[32], eta[32], meta[32];
    pcbm_format_size(ev->pass_bytes, a, sizeof a);
    pcbm_format_size(ev->pass_total, b, sizeof b);
    fmt_time(ev->pass_eta, eta, sizeof eta);
    fmt_time(ev->eta, meta, sizeof meta);
    double pct = ev->total ? 100.0 * (double)ev->bytes / (double)ev->total : 0;
    fprintf(stderr, "\r%-10s %s / %s  %.2f GB/s  ETA %s  | pass %u of %u, merge %3.0f%%  ETA %s   %s",
            ev->pass, a, b, ev->pass_rate / 1e9, eta, ev->pass_index, ev->pass_count, pct, meta,
            ev->kind == PCBM_PROGRESS_PASS_END ? "\n" : "");
    fflush(stderr);
}

typedef struct json_state {
    double last;   /* elapsed time of the last PASS line written */
} json_state;

static void progress_json(void *user, const pcbm_progress_event *ev)
{
    json_state *js = user;
    if (ev->kind == PCBM_PROGRESS_DONE) {
        fprintf(stderr, "{\"done\":true,\"status\":\"%s\",\"passes\":%u,\"bytes\":%llu,"
                "\"seconds\":%.2f}\n", ev->status == PCBM_OK ? "ok" : pcbm_status_name(ev->status),
                ev->pass_index, (unsigned long long)ev->bytes, ev->elapsed);
        fflush(stderr);
        return;
    }
    if (ev->kind == PCBM_PROGRESS_PASS && ev->elapsed - js->last < 1.0)
        return;
    js->last = ev->elapsed;
    fprintf(stderr, "{\"pass\":\"%s\",\"bytes\":%llu,\"total\":%llu,\"rate\":%.0f,\"eta\":%.1f,"
            "\"pass_index\":%u,\"pass_count\":%u,\"merge_bytes\":%llu,\"merge_total\":%llu,"
            "\"merge_eta\":%.1f%s}\n", ev->pass, (unsigned long long)ev->pass_bytes,
            (unsigned long long)ev->pass_total, ev->pass_rate, ev->pass_eta, ev->pass_index,
            ev->pass_count, (unsigned long long)ev->bytes, (unsigned long long)ev->total, ev->eta,
            ev->kind == PCBM_PROGRESS_PASS_END ? ",\"end\":true" : "");
    fflush(stderr);
}

void pcbm_cli_attach_printers(pcbm_merge_opts *o, cli_progress mode, bool quiet)
{
    static json_state js; /* one CLI call at a time */
    o->on_message = quiet ? NULL : print_message;
    o->on_progress = NULL;
    o->user = NULL;
    if (quiet || mode == CLI_PROGRESS_NONE)
        return;
    if (mode == CLI_PROGRESS_JSON) {
        js.last = -1e9;
        o->on_progress = progress_json;
        o->user = &js;
    } else if (isatty(2)) {
        o->on_progress = progress_tty;
    }
}

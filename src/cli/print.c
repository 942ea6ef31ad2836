/*
 * print.c — the CLI's printers for the library's messages and progress events (see print.h).
 */
#include "print.h"

#include <stdio.h>
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

static void print_message(void *user, pcbm_level level, const char *text)
{
    (void)user;
    char line[4096];
    pcbm_cli_flagify(text, line, sizeof line);
    fprintf(stderr, "pcbmerge: %s%s\n", level == PCBM_LEVEL_WARNING ? "warning: " : "", line);
}

static void fmt_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof *units) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.2f %s", v, units[u]);
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
    fmt_bytes(ev->pass_bytes, a, sizeof a);
    fmt_bytes(ev->pass_total, b, sizeof b);
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

void pcbm_cli_attach_printers(pcbm_merge_opts *o)
{
    static json_state js; /* one CLI call at a time */
    o->on_message = o->quiet ? NULL : print_message;
    o->on_progress = NULL;
    o->user = NULL;
    if (o->quiet || o->progress == PCBM_PROGRESS_NONE)
        return;
    if (o->progress == PCBM_PROGRESS_JSON) {
        js.last = -1e9;
        o->on_progress = progress_json;
        o->user = &js;
    } else if (isatty(2)) {
        o->on_progress = progress_tty;
    }
}

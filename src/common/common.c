/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.c — error values, logging, checked and aligned allocation, time and byte formatting.
 */
#include "common.h"
#include "seams.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>
#include <signal.h>
#include <stdatomic.h>

const char *pcbm_version(void) { return PCBM_VERSION_STRING; }

const char *pcbm_status_name(pcbm_status s)
{
    static const char *const names[PCBM_STATUS_COUNT] = {
        [PCBM_OK] = "ok",
        [PCBM_ERR_USAGE] = "usage error",
        [PCBM_ERR_IO] = "I/O error",
        [PCBM_ERR_FORMAT] = "format error",
        [PCBM_ERR_MISMATCH] = "model mismatch",
        [PCBM_ERR_NONFINITE] = "non-finite weight",
        [PCBM_ERR_NOMEM] = "out of memory",
        [PCBM_ERR_NOSPACE] = "no space left",
        [PCBM_ERR_STATS] = "statistics mismatch",
        [PCBM_ERR_EXISTS] = "output exists",
        [PCBM_ERR_INTERRUPTED] = "interrupted",
        [PCBM_ERR_UNSUPPORTED] = "unsupported",
        [PCBM_ERR_INTERNAL] = "internal error",
    };
    if ((unsigned)s >= PCBM_STATUS_COUNT || !names[s])
        return "unknown status";
    return names[s];
}

pcbm_status pcbm_fail(pcbm_error *err, pcbm_status st, const char *fmt, ...)
{
    if (err) {
        err->status = st;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void pcbm_error_clear(pcbm_error *err)
{
    if (err) {
        err->status = PCBM_OK;
        err->msg[0] = '\0';
    }
}

static _Thread_local pcbm_log_sink *log_sink;

pcbm_log_sink *pcbm_log_enter(pcbm_log_sink *sink)
{
    pcbm_log_sink *prev = log_sink;
    log_sink = sink;
    return prev;
}

void pcbm_log_leave(pcbm_log_sink *sink, pcbm_log_sink *prev)
{
    for (unsigned i = 0; sink && i < sink->nwarnings; i++)
        free(sink->warnings[i]);
    if (sink) {
        free(sink->warnings);
        sink->warnings = NULL;
        sink->nwarnings = sink->dropped = 0;
    }
    log_sink = prev;
}

const pcbm_log_sink *pcbm_log_current(void) { return log_sink; }

static void keep_warning(pcbm_log_sink *s, const char *line)
{
    char *copy = s->nwarnings < PCBM_LOG_KEEP ? strdup(line) : NULL;
    if (copy && !s->warnings && !(s->warnings = calloc(PCBM_LOG_KEEP, sizeof(char *)))) {
        free(copy);
        copy = NULL;
    }
    if (copy)
        s->warnings[s->nwarnings++] = copy;
    else
        s->dropped++;
}

static void vlog(pcbm_level level, const char *fmt, va_list ap)
{
    pcbm_log_sink *s = log_sink;
    if (!s)
        return;
    char line[2048];
    vsnprintf(line, sizeof line, fmt, ap);
    if (level == PCBM_LEVEL_WARNING)
        keep_warning(s, line);
    if (s->fn)
        s->fn(s->user, level, line);
}

void pcbm_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(PCBM_LEVEL_WARNING, fmt, ap);
    va_end(ap);
}

void pcbm_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(PCBM_LEVEL_NOTE, fmt, ap);
    va_end(ap);
}

void *pcbm_malloc(size_t n) { return malloc(n ? n : 1); }
void *pcbm_calloc(size_t n, size_t size) { return calloc(n ? n : 1, size ? size : 1); }
void *pcbm_realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }

char *pcbm_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void *pcbm_alloc_aligned(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, PCBM_ALIGN, pcbm_align_up(n ? n : 1, PCBM_ALIGN)) != 0)
        return NULL;
    return p;
}

void pcbm_free_aligned(void *p) { free(p); }

double pcbm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

char *pcbm_format_size(uint64_t n, char *buf, size_t len) { return pcbm_fmt_bytes(n, buf, len); }

char *pcbm_fmt_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.2f %s", v, units[u]);
    return buf;
}

/* Whether spec ("POINT[:N]") names point and this is its N-th hit (counted in *hits). */
static bool test_point_hit(const char *spec, const char *point, atomic_ulong *hits)
{
    if (!spec)
        return false;
    size_t n = strlen(point);
    if (strncmp(spec, point, n) != 0 || (spec[n] != ':' && spec[n] != '\0'))
        return false;
    unsigned long want = spec[n] == ':' ? strtoul(spec + n + 1, NULL, 10) : 1;
    return atomic_fetch_add(hits, 1) + 1 == want;
}

void pcbm_test_point(const char *point)
{
    static atomic_ulong kills, pauses;
    const pcbm_seams *sm = pcbm_seams_get();
    if (test_point_hit(sm->test_kill, point, &kills))
        raise(SIGKILL);
    if (test_point_hit(sm->test_pause, point, &pauses))
        raise(SIGSTOP);
}

bool pcbm_grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? 2 * *cap : 16;
    void *p = realloc(*arr, ncap * size);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}

int pcbm_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -ENOSPC;
        done += (size_t)w;
    }
    return 0;
}

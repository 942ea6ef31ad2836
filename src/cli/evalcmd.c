/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evalcmd.c — the evaluation command of `pcbmerge search`: {model} replaced by the shell-quoted
 * candidate directory, run with /bin/sh -c (PCBM_MODEL and PCBM_SEARCH_EVALUATION in its
 * environment), stdout and stderr captured (their tails kept), the score read from the last line
 * of stdout; and the tails shown when it fails.
 */
#include "evalcmd.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Shell-quote `s` when it holds characters the shell would interpret. */
static char *shell_quote(const char *s)
{
    int plain = *s != 0;
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./+-:@%,=", *p))
            plain = 0;
    if (plain)
        return strdup(s);
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *q = malloc(n), *w = q;
    if (!q)
        return NULL;
    *w++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(w, "'\\''", 4);
            w += 4;
        } else {
            *w++ = *p;
        }
    }
    *w++ = '\'';
    *w = 0;
    return q;
}

/* cmd with every "{model}" replaced by the quoted model path. */
char *pcbm_cli_expand_cmd(const char *cmd, const char *model)
{
    char *q = shell_quote(model);
    if (!q)
        return NULL;
    size_t ql = strlen(q), n = strlen(cmd) + 1;
    for (const char *p = strstr(cmd, "{model}"); p; p = strstr(p + 7, "{model}"))
        n += ql;
    char *out = malloc(n), *w = out;
    if (out) {
        const char *p = cmd, *m;
        while ((m = strstr(p, "{model}")) != NULL) {
            memcpy(w, p, (size_t)(m - p));
            w += m - p;
            memcpy(w, q, ql);
            w += ql;
            p = m + 7;
        }
        strcpy(w, p);
    }
    free(q);
    return out;
}

static void buf_add(pcbm_cli_buf *b, const char *d, size_t n)
{
    if (n >= b->limit) {
        d += n - b->limit;
        n = b->limit;
        b->n = 0;
        b->cut = 1;
    } else if (b->n + n > b->limit) {
        size_t drop = b->n + n - b->limit;
        memmove(b->p, b->p + drop, b->n - drop);
        b->n -= drop;
        b->cut = 1;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* The last non-empty line of text, trimmed, into line. */
static void last_line(const char *text, size_t n, char *line, size_t len)
{
    size_t e = n;
    while (e > 0 && (text[e - 1] == '\n' || text[e - 1] == '\r' || text[e - 1] == ' ' || text[e - 1] == '\t'))
        e--;
    size_t s = e;
    while (s > 0 && text[s - 1] != '\n')
        s--;
    while (s < e && (text[s] == ' ' || text[s] == '\t' || text[s] == '\r'))
        s++;
    size_t k = (e - s < len - 1 ? e - s : len - 1);
    memcpy(line, text + s, k);
    line[k] = 0;
}

/* Run `cmd` with /bin/sh -c, capturing stdout and stderr; the score is the last line of stdout. */
void pcbm_cli_run_eval(const char *cmd, const char *model, unsigned index, pcbm_cli_eval *r)
{
    memset(r, 0, sizeof *r);
    r->out.limit = 1 << 20;
    r->err.limit = 16384;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0)
        po[0] = po[1] = -1;
    if (po[0] < 0 || pipe2(pe, O_CLOEXEC) != 0) {
        snprintf(r->why, sizeof r->why, "cannot create pipes: %s", strerror(errno));
        if (po[0] >= 0)
            close(po[0]), close(po[1]);
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(r->why, sizeof r->why, "cannot start the command: %s", strerror(errno));
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        char idx[32];
        snprintf(idx, sizeof idx, "%u", index);
        setenv("PCBM_MODEL", model, 1);
        setenv("PCBM_SEARCH_EVALUATION", idx, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        dprintf(2, "cannot run /bin/sh: %s\n", strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    char chunk[8192];
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(fds[i].fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            buf_add(i == 0 ? &r->out : &r->err, chunk, (size_t)n);
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(st)) {
        snprintf(r->why, sizeof r->why, "the command was killed by signal %d (%s)", WTERMSIG(st),
                 strsignal(WTERMSIG(st)));
        return;
    }
    if (WEXITSTATUS(st) != 0) {
        snprintf(r->why, sizeof r->why, "the command exited with status %d", WEXITSTATUS(st));
        return;
    }
    char line[256];
    last_line(r->out.p ? r->out.p : "", r->out.n, line, sizeof line);
    if (!line[0]) {
        snprintf(r->why, sizeof r->why, "the command printed no score: its stdout is empty (the "
                 "last line of stdout must be a number, higher is better)");
        return;
    }
    char *end;
    errno = 0;
    double v = strtod(line, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == line || *end || errno || !isfinite(v)) {
        snprintf(r->why, sizeof r->why, "the command printed no score: the last line of its "
                 "stdout is \"%.200s\", not a number (higher is better)", line);
        return;
    }
    r->ok = 1;
    r->score = v;
}

void pcbm_cli_eval_free(pcbm_cli_eval *r)
{
    free(r->out.p);
    free(r->err.p);
    r->out.p = r->err.p = NULL;
}

/* The last `max` lines of text, indented, on stderr. */
void pcbm_cli_print_tail(const char *label, const pcbm_cli_buf *b, int max)
{
    if (!b->p || !b->n) {
        fprintf(stderr, "  %s: (empty)\n", label);
        return;
    }
    size_t e = b->n;
    while (e > 0 && (b->p[e - 1] == '\n' || b->p[e - 1] == '\r'))
        e--;
    size_t s = e;
    int lines = 0;
    while (s > 0 && lines < max) {
        s--;
        if (b->p[s] == '\n' && ++lines == max) {
            s++;
            break;
        }
    }
    fprintf(stderr, "  %s%s:\n", label, (s > 0 || b->cut) ? " (last lines)" : "");
    const char *p = b->p + s, *end = b->p + e;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fprintf(stderr, "    | %.*s\n", (int)len, p);
        p += len + (nl ? 1 : 0);
    }
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * peak-rss — run a command and report its peak resident set size (the memory figure of the tests
 * and of the benchmark).
 *
 *   peak-rss [--limit SIZE] [--json] [--output FILE] -- CMD [ARGS...]
 *
 * Runs CMD (fork + execvp), waits for it with wait4() and reports ru_maxrss * 1024 of the child:
 *   peak_rss_bytes N                                  (default, one line on stderr)
 *   {"peak_rss_bytes":N,"limit_bytes":L,...}           (--json, one line on stderr)
 * --output FILE writes the line to FILE instead of stderr (so the child's own stderr stays clean).
 * SIZE is a pcbmerge size: 112M, 1G, 4096, 1.5GiB (K/M/G/T = powers of 1024; KB/MB/GB = 1000).
 *
 * Exit status: the child's exit status; 128 + N when a signal N killed it (as a shell reports);
 * 3 when --limit is given and the peak exceeded it (a message says by how much; this wins over
 * the child's status, which the message then also names); 126/127 when CMD cannot be executed
 * (127: not found); 2 for usage errors.
 *
 * The figure is the kernel's high-water mark of the child (and of any descendants it waited for):
 * it includes the few hundred KiB the forked copy of peak-rss itself held before exec.
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to peak-rss are passed on to the child.
 */
#include "pcbmerge.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_child = 0;

static void forward(int sig)
{
    if (g_child > 0)
        kill((pid_t)g_child, sig);
}

static void usage(FILE *f)
{
    fputs("usage: peak-rss [--limit SIZE] [--json] [--output FILE] -- CMD [ARGS...]\n"
          "Runs CMD, waits for it (wait4) and prints its peak resident set size\n"
          "(ru_maxrss * 1024) as \"peak_rss_bytes N\" on stderr, or as one JSON line with --json.\n"
          "  --limit SIZE   exit 3 when the peak exceeds SIZE (512M, 1G, 4096, ...)\n"
          "  --json         print {\"peak_rss_bytes\":N,...} instead\n"
          "  --output FILE  write the report line to FILE instead of stderr\n"
          "Exit status: the child's (128+N if signal N killed it), 3 over the limit,\n"
          "126/127 if CMD cannot run, 2 on usage errors.\n",
          f);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double tv_sec(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6; }

static void fmt_mib(uint64_t b, char *buf, size_t len)
{
    snprintf(buf, len, "%.2f MiB", (double)b / (1024.0 * 1024.0));
}

int main(int argc, char **argv)
{
    uint64_t limit = 0;
    int have_limit = 0, json = 0;
    const char *output = NULL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--limit") || !strncmp(a, "--limit=", 8)) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || pcbm_parse_size(v, &limit) != 0) {
                fprintf(stderr, "peak-rss: --limit needs a size such as 112M or 1G, got %s\n",
                        v ? v : "nothing");
                return 2;
            }
            have_limit = 1;
        } else if (!strcmp(a, "--output") || !strcmp(a, "-o") || !strncmp(a, "--output=", 9)) {
            output = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!output || !*output) {
                fprintf(stderr, "peak-rss: --output needs a file name\n");
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "peak-rss: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else {
            break; /* the command, without a "--" */
        }
    }
    if (i >= argc) {
        fprintf(stderr, "peak-rss: no command given\n");
        usage(stderr);
        return 2;
    }
    char **cmd = &argv[i];

    /* exec failures come back through a close-on-exec pipe */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        fprintf(stderr, "peak-rss: pipe: %s\n", strerror(errno));
        return 126;
    }
    /* pass termination signals on to the child; ignore none of them for the child itself */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    const int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    double t0 = mono_now();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "peak-rss: fork: %s\n", strerror(errno));
        return 126;
    }
    if (pid == 0) {
        close(pfd[0]);
        execvp(cmd[0], cmd);
        int e = errno;
        ssize_t w = write(pfd[1], &e, sizeof e);
        (void)w;
        _exit(e == ENOENT ? 127 : 126);
    }
    g_child = pid;
    for (size_t k = 0; k < sizeof fwd / sizeof fwd[0]; k++)
        sigaction(fwd[k], &sa, NULL);
    close(pfd[1]);
    int exec_errno = 0;
    ssize_t r;
    do
        r = read(pfd[0], &exec_errno, sizeof exec_errno);
    while (r < 0 && errno == EINTR);
    close(pfd[0]);
    if (r != (ssize_t)sizeof exec_errno)
        exec_errno = 0;

    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    pid_t w;
    do
        w = wait4(pid, &status, 0, &ru);
    while (w < 0 && errno == EINTR);
    double wall = mono_now() - t0;
    if (w < 0) {
        fprintf(stderr, "peak-rss: wait4: %s\n", strerror(errno));
        return 126;
    }
    if (exec_errno) {
        fprintf(stderr, "peak-rss: cannot run %s: %s\n", cmd[0], strerror(exec_errno));
        return exec_errno == ENOENT ? 127 : 126;
    }

    int rc, sig = 0;
    if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
        rc = 128 + sig;
    } else {
        rc = 126;
    }
    uint64_t peak = (uint64_t)ru.ru_maxrss * 1024u;
    int over = have_limit && peak > limit;

    FILE *out = stderr;
    if (output && !(out = fopen(output, "w"))) {
        fprintf(stderr, "peak-rss: cannot write %s: %s\n", output, strerror(errno));
        out = stderr;
    }
    if (json) {
        char lim[32] = "null";
        if (have_limit)
            snprintf(lim, sizeof lim, "%llu", (unsigned long long)limit);
        fprintf(out,
                "{\"peak_rss_bytes\":%llu,\"limit_bytes\":%s,\"over_limit\":%s,"
                "\"exit_status\":%d,\"signal\":%d,\"wall_seconds\":%.3f,\"user_seconds\":%.3f,"
                "\"sys_seconds\":%.3f}\n",
                (unsigned long long)peak, lim, over ? "true" : "false",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1, sig, wall, tv_sec(ru.ru_utime),
                tv_sec(ru.ru_stime));
    } else {
        fprintf(out, "peak_rss_bytes %llu\n", (unsigned long long)peak);
    }
    if (out != stderr)
        fclose(out);
    if (sig)
        fprintf(stderr, "peak-rss: %s was killed by signal %d (%s)\n", cmd[0], sig, strsignal(sig));
    if (over) {
        char p[32], l[32], d[32];
        fmt_mib(peak, p, sizeof p);
        fmt_mib(limit, l, sizeof l);
        fmt_mib(peak - limit, d, sizeof d);
        fprintf(stderr,
                "peak-rss: %s used %llu bytes (%s) at its peak, over the limit of %llu bytes (%s) "
                "by %llu bytes (%s)",
                cmd[0], (unsigned long long)peak, p, (unsigned long long)limit, l,
                (unsigned long long)(peak - limit), d);
        if (rc != 0)
            fprintf(stderr, "; it also exited with status %d", rc);
        fputc('\n', stderr);
        return 3;
    }
    return rc;
}

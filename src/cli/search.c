/*
 * search.c — `pcbmerge search`: the paper's coefficient search. The statistics pass runs once;
 * then CMA-ES (src/search/cmaes.c) proposes per-task coefficients λ_1..λ_N, the apply pass alone
 * merges each candidate into one scratch directory (replaced every time), a user's command
 * scores it (the last line of its stdout, higher is better), and at the end OUT holds the merge
 * at the best λ with the log of every evaluation and a summary.
 *
 * Work files live in OUT.search/ (locked while a search runs): the statistics file, the scratch
 * model, the search's parameters and the log. A search that stops (a signal: exit 75) or fails
 * keeps the log and the statistics; `--resume` continues it: CMA-ES is deterministic for a seed,
 * so the search replays the logged evaluations (each candidate checked bit for bit against the
 * log, its score reused) and evaluates only what is new. --force discards an old OUT.search/.
 */
#include "print.h"
#include "search.h"

#include "pcbmerge.h"
#include "../search/cmaes.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define STATS_NAME "merge_stats.json.zst"
#define LOG_NAME "search_log.jsonl"
#define SUMMARY_NAME "search_summary.json"
#define PARAMS_NAME "search_params.json"
#define EXIT_STOPPED 75

static const char search_usage[] =
    "usage: pcbmerge search --base DIR --out DIR --eval-cmd 'COMMAND {model}' [options]\n"
    "                       [merge options] TASK_DIR...\n"
    "\n"
    "Searches the per-task coefficients λ_1..λ_N with CMA-ES to maximize a validation score.\n"
    "The statistics pass runs once; every candidate is merged by the apply pass alone into a\n"
    "scratch directory, COMMAND runs with {model} replaced by that directory (also in the\n"
    "environment as PCBM_MODEL), and the last line of its stdout is the score (higher is\n"
    "better). OUT receives the merge at the best λ, search_log.jsonl (every evaluation: λs,\n"
    "score, seconds) and search_summary.json.\n"
    "\n"
    "search options:\n"
    "  --eval-cmd CMD      the evaluation command, run with /bin/sh -c (required)\n"
    "  --budget N          evaluations, the one at λ = init included (default 60)\n"
    "  --bounds LO,HI      box of every λ_i (default 0.5,3.0)\n"
    "  --init L            starting λ for every task, evaluated first (default 1.0)\n"
    "  --sigma S           initial CMA-ES step size (default (HI-LO)/5)\n"
    "  --popsize P         candidates per generation (default 4 + 3 ln N)\n"
    "  --seed S            CMA-ES random seed (default 0); same seed and scores, same search\n"
    "  --on-eval-error E   stop (default): a failing command stops the search;\n"
    "                      skip: log it, rank the candidate last and go on\n"
    "  --resume            continue a search that was stopped (SIGTERM/SIGINT: exit 75) or failed,\n"
    "                      from OUT.search/: logged evaluations are replayed, not re-run (the same\n"
    "                      parameters are required; --budget may change)\n"
    "\n"
    "merge options (as for merge): --method pcb|task_arithmetic|dare_linear (default pcb),\n"
    "  --density, --clamp-ratio, --scope, --exact, --streaming, --dtype, --exclude REGEX,\n"
    "  --allow-extra, --allow-nonfinite, --mem, --threads, --io, --block-size, --shard-size,\n"
    "  --stats FILE (statistics of an earlier merge with these inputs and parameters),\n"
    "  --dare-seed S (dare_linear's mask seed), --force, --progress, --quiet\n"
    "ties, dare_ties and linear take no per-task λ and cannot be searched.\n";

/* ---- options ------------------------------------------------------------------------------ */

enum {
    S_BASE = 256, S_OUT, S_METHOD, S_DENSITY, S_CLAMP, S_SCOPE, S_EXACT, S_STREAMING, S_DTYPE,
    S_EXCLUDE, S_ALLOW_EXTRA, S_ALLOW_NONFINITE, S_MEM, S_THREADS, S_IO, S_BLOCK, S_SHARD, S_FORCE,
    S_PROGRESS, S_QUIET, S_STATS, S_DARE_SEED, S_HELP, S_EVAL, S_BUDGET, S_BOUNDS, S_INIT, S_SIGMA,
    S_POPSIZE, S_SEED, S_ON_ERROR, S_REFUSED, S_RESUME
};

static const struct option search_opts[] = {
    {"base", required_argument, 0, S_BASE},         {"out", required_argument, 0, S_OUT},
    {"method", required_argument, 0, S_METHOD},     {"density", required_argument, 0, S_DENSITY},
    {"clamp-ratio", required_argument, 0, S_CLAMP}, {"scope", required_argument, 0, S_SCOPE},
    {"exact", no_argument, 0, S_EXACT},             {"streaming", no_argument, 0, S_STREAMING},
    {"dtype", required_argument, 0, S_DTYPE},       {"exclude", required_argument, 0, S_EXCLUDE},
    {"allow-extra", no_argument, 0, S_ALLOW_EXTRA},
    {"allow-nonfinite", no_argument, 0, S_ALLOW_NONFINITE},
    {"mem", required_argument, 0, S_MEM},           {"threads", required_argument, 0, S_THREADS},
    {"io", required_argument, 0, S_IO},             {"block-size", required_argument, 0, S_BLOCK},
    {"shard-size", required_argument, 0, S_SHARD},  {"force", no_argument, 0, S_FORCE},
    {"progress", required_argument, 0, S_PROGRESS}, {"quiet", no_argument, 0, S_QUIET},
    {"stats", required_argument, 0, S_STATS},       {"dare-seed", required_argument, 0, S_DARE_SEED},
    {"help", no_argument, 0, S_HELP},               {"eval-cmd", required_argument, 0, S_EVAL},
    {"budget", required_argument, 0, S_BUDGET},     {"bounds", required_argument, 0, S_BOUNDS},
    {"init", required_argument, 0, S_INIT},         {"sigma", required_argument, 0, S_SIGMA},
    {"popsize", required_argument, 0, S_POPSIZE},   {"seed", required_argument, 0, S_SEED},
    {"on-eval-error", required_argument, 0, S_ON_ERROR},
    {"lambda", required_argument, 0, S_REFUSED},    {"lambdas", required_argument, 0, S_REFUSED},
    {"weights", required_argument, 0, S_REFUSED},   {"resume", no_argument, 0, S_RESUME},
    {0, 0, 0, 0}};

typedef struct search_args {
    pcbm_merge_opts o;
    const char *exclude[256];
    const char *eval_cmd;
    unsigned budget;
    double lo, hi, init, sigma;
    unsigned popsize;
    uint64_t seed;
    int skip_errors;
    int resume;
    const char *stats_user;
} search_args;

static int usage_err(const char *fmt, ...) PCBM_PRINTF(1, 2);
static int usage_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pcbmerge search: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nrun 'pcbmerge search --help' for the options\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int errorf(const char *fmt, ...) PCBM_PRINTF(1, 2);
static int errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pcbmerge: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int num(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && errno == 0 && isfinite(*out);
}

static int uint_arg(const char *s, double lo, double hi, uint64_t *out)
{
    double x;
    if (!num(s, &x) || x < lo || x > hi || x != floor(x))
        return 0;
    *out = (uint64_t)x;
    return 1;
}

static int set_opt(search_args *a, int c, const char *v, const char *opt)
{
    pcbm_merge_opts *o = &a->o;
    uint64_t u;
    switch (c) {
    case S_BASE: o->base = v; break;
    case S_OUT: o->out = v; break;
    case S_METHOD:
        if ((o->method = pcbm_method_parse(v)) == PCBM_METHOD_COUNT)
            return usage_err("unknown --method %s (pcb, task_arithmetic or dare_linear)", v);
        break;
    case S_DENSITY:
        if (!num(v, &o->density)) return usage_err("--density needs a number, got %s", v);
        break;
    case S_CLAMP:
        if (!num(v, &o->clamp_ratio)) return usage_err("--clamp-ratio needs a number, got %s", v);
        break;
    case S_SCOPE:
        if (!strcmp(v, "global")) o->scope = PCBM_SCOPE_GLOBAL;
        else if (!strcmp(v, "tensor")) o->scope = PCBM_SCOPE_TENSOR;
        else return usage_err("--scope is global or tensor, got %s", v);
        break;
    case S_EXACT: o->exact = 1; break;
    case S_STREAMING: o->streaming = 1; break;
    case S_DTYPE:
        if (!strcmp(v, "base")) o->out_dtype = PCBM_DTYPE_BASE;
        else if (!strcmp(v, "bf16")) o->out_dtype = PCBM_DT_BF16;
        else if (!strcmp(v, "f16")) o->out_dtype = PCBM_DT_F16;
        else if (!strcmp(v, "f32")) o->out_dtype = PCBM_DT_F32;
        else return usage_err("--dtype is bf16, f16, f32 or base, got %s", v);
        break;
    case S_EXCLUDE:
        if (o->nexclude >= 256) return usage_err("too many --exclude patterns (max 256)");
        a->exclude[o->nexclude++] = v;
        break;
    case S_ALLOW_EXTRA: o->allow_extra = 1; break;
    case S_ALLOW_NONFINITE: o->allow_nonfinite = 1; break;
    case S_MEM:
        if (pcbm_parse_size(v, &o->mem_bytes)) return usage_err("--mem needs a size such as 512M, got %s", v);
        break;
    case S_THREADS:
        if (!uint_arg(v, 1, 256, &u)) return usage_err("--threads needs an integer from 1 to 256, got %s", v);
        o->threads = (unsigned)u;
        break;
    case S_IO:
        if (!strcmp(v, "auto")) o->io = PCBM_IO_AUTO;
        else if (!strcmp(v, "uring")) o->io = PCBM_IO_URING;
        else if (!strcmp(v, "pread")) o->io = PCBM_IO_PREAD;
        else if (!strcmp(v, "mmap")) o->io = PCBM_IO_MMAP;
        else return usage_err("--io is auto, uring, pread or mmap, got %s", v);
        break;
    case S_BLOCK:
        if (pcbm_parse_size(v, &o->block_bytes)) return usage_err("--block-size needs a size such as 1M, got %s", v);
        break;
    case S_SHARD:
        if (pcbm_parse_size(v, &o->shard_bytes)) return usage_err("--shard-size needs a size such as 5GB, got %s", v);
        break;
    case S_FORCE: o->force = 1; break;
    case S_PROGRESS:
        if (!strcmp(v, "auto")) o->progress = PCBM_PROGRESS_AUTO;
        else if (!strcmp(v, "json")) o->progress = PCBM_PROGRESS_JSON;
        else if (!strcmp(v, "none")) o->progress = PCBM_PROGRESS_NONE;
        else return usage_err("--progress is auto, json or none, got %s", v);
        break;
    case S_QUIET: o->quiet = 1; break;
    case S_STATS: a->stats_user = v; break;
    case S_DARE_SEED:
        if (!uint_arg(v, 0, 1.8e19, &o->seed)) return usage_err("--dare-seed needs a non-negative integer, got %s", v);
        break;
    case S_EVAL:
        if (!*v) return usage_err("--eval-cmd is empty");
        a->eval_cmd = v;
        break;
    case S_BUDGET:
        if (!uint_arg(v, 1, 1e7, &u)) return usage_err("--budget needs a number of evaluations from 1 to 10000000, got %s", v);
        a->budget = (unsigned)u;
        break;
    case S_BOUNDS: {
        char lo[64], hi[64];
        const char *comma = strchr(v, ',');
        if (!comma || (size_t)(comma - v) >= sizeof lo || strlen(comma + 1) >= sizeof hi)
            return usage_err("--bounds needs LO,HI such as 0.5,3.0, got %s", v);
        memcpy(lo, v, (size_t)(comma - v));
        lo[comma - v] = 0;
        snprintf(hi, sizeof hi, "%s", comma + 1);
        if (!num(lo, &a->lo) || !num(hi, &a->hi) || !(a->lo < a->hi))
            return usage_err("--bounds needs LO,HI with LO < HI, got %s", v);
        break;
    }
    case S_INIT:
        if (!num(v, &a->init)) return usage_err("--init needs a number, got %s", v);
        break;
    case S_SIGMA:
        if (!num(v, &a->sigma) || !(a->sigma > 0)) return usage_err("--sigma needs a positive number, got %s", v);
        break;
    case S_POPSIZE:
        if (!uint_arg(v, 2, 100000, &u)) return usage_err("--popsize needs an integer from 2 to 100000, got %s", v);
        a->popsize = (unsigned)u;
        break;
    case S_SEED:
        if (!uint_arg(v, 0, 1.8e19, &a->seed)) return usage_err("--seed needs a non-negative integer, got %s", v);
        break;
    case S_ON_ERROR:
        if (!strcmp(v, "stop")) a->skip_errors = 0;
        else if (!strcmp(v, "skip")) a->skip_errors = 1;
        else return usage_err("--on-eval-error is stop or skip, got %s", v);
        break;
    case S_RESUME: a->resume = 1; break;
    case S_REFUSED:
        return usage_err("%s does not apply to search: it chooses the per-task λ itself (see "
                         "--init and --bounds)", opt);
    default: return usage_err("unknown option %s", opt);
    }
    return 0;
}

/* ---- files -------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        return -1;
    return 0;
}

/* Remove a file or directory tree; 0 when it is gone. */
static int rm_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Write `text` to path atomically (tmp + fsync + rename). */
static int write_text_file(const char *path, const char *text)
{
    char tmp[PATH_MAX + 256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- the evaluation command --------------------------------------------------------------- */

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
static char *expand_cmd(const char *cmd, const char *model)
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

typedef struct buf {
    char *p;
    size_t n, cap, limit; /* keeps the last `limit` bytes */
    int cut;              /* bytes were dropped from the front */
} buf;

static void buf_add(buf *b, const char *d, size_t n)
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

typedef struct eval_result {
    int ok;
    double score;
    char why[512];   /* when !ok: what went wrong */
    buf out, err;    /* the tails of stdout and stderr */
} eval_result;

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
    size_t k = PCBM_MIN(e - s, len - 1);
    memcpy(line, text + s, k);
    line[k] = 0;
}

/* Run `cmd` with /bin/sh -c, capturing stdout and stderr; the score is the last line of stdout. */
static void run_eval(const char *cmd, const char *model, unsigned index, eval_result *r)
{
    memset(r, 0, sizeof *r);
    r->out.limit = 1 << 20;
    r->err.limit = 16384;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
        snprintf(r->why, sizeof r->why, "cannot create pipes: %s", strerror(errno));
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

static void eval_free(eval_result *r)
{
    free(r->out.p);
    free(r->err.p);
    r->out.p = r->err.p = NULL;
}

/* The last `max` lines of text, indented, on stderr. */
static void print_tail(const char *label, const buf *b, int max)
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

/* ---- the search --------------------------------------------------------------------------- */

/* An evaluation of the log of an earlier run (--resume). */
typedef struct logged {
    double lam[PCBM_MAX_TASKS];
    double score;               /* NaN: the evaluation failed */
    unsigned gen;
} logged;

typedef struct search {
    search_args *a;
    unsigned n;                 /* tasks */
    logged *replay;             /* --resume: the evaluations already logged */
    unsigned nreplay, merged;   /* merges run by this process */
    char work[PATH_MAX], scratch[PATH_MAX + 64], stats[PATH_MAX + 64], log_path[PATH_MAX + 64];
    const char *stats_in;       /* statistics for the apply-only merges, or NULL */
    FILE *log;
    int lock_fd;
    unsigned evals, failed;
    double best_score, init_score;
    int have_best, have_init;
    unsigned best_eval, best_gen;
    double best_l[PCBM_MAX_TASKS];
    double merge_s, eval_s;
} search;

static int has_stats(pcbm_method m)
{
    return m == PCBM_METHOD_PCB;
}

/* Everything that shapes the sequence of candidates and their merges (not --budget, not the
 * run-time settings), as canonical JSON: a resumed search must have the same. */
static char *search_params(const search_args *a)
{
    const pcbm_merge_opts *o = &a->o;
    json_t *j = json_object(), *tasks = json_array(), *ex = json_array();
    for (unsigned i = 0; i < o->ntasks; i++)
        json_array_append_new(tasks, json_string(o->tasks[i]));
    for (unsigned i = 0; i < o->nexclude; i++)
        json_array_append_new(ex, json_string(o->exclude[i]));
    char seed[32], dseed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->seed);
    snprintf(dseed, sizeof dseed, "%llu", (unsigned long long)o->seed);
    json_object_set_new(j, "base", json_string(o->base));
    json_object_set_new(j, "tasks", tasks);
    json_object_set_new(j, "method", json_string(pcbm_method_name(o->method)));
    json_object_set_new(j, "density", json_real(o->density));
    json_object_set_new(j, "clamp_ratio", json_real(o->clamp_ratio));
    json_object_set_new(j, "scope", json_string(o->scope == PCBM_SCOPE_TENSOR ? "tensor" : "global"));
    json_object_set_new(j, "exact", json_boolean(o->exact));
    json_object_set_new(j, "streaming", json_boolean(o->streaming));
    json_object_set_new(j, "dtype", json_integer(o->out_dtype));
    json_object_set_new(j, "exclude", ex);
    json_object_set_new(j, "allow_extra", json_boolean(o->allow_extra));
    json_object_set_new(j, "allow_nonfinite", json_boolean(o->allow_nonfinite));
    json_object_set_new(j, "shard_bytes", json_integer((json_int_t)o->shard_bytes));
    json_object_set_new(j, "dare_seed", json_string(dseed));
    json_object_set_new(j, "stats", a->stats_user ? json_string(a->stats_user) : json_null());
    json_object_set_new(j, "eval_cmd", json_string(a->eval_cmd));
    json_object_set_new(j, "bounds", json_pack("[f,f]", a->lo, a->hi));
    json_object_set_new(j, "init", json_real(a->init));
    json_object_set_new(j, "sigma", json_real(a->sigma));
    json_object_set_new(j, "popsize", json_integer(a->popsize));
    json_object_set_new(j, "seed", json_string(seed));
    json_object_set_new(j, "on_eval_error", json_string(a->skip_errors ? "skip" : "stop"));
    char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    return txt;
}

/* The first parameter that differs between two search_params texts, or NULL. */
static const char *params_differ(const char *a, const char *b, char *out, size_t len)
{
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    const char *key, *found = NULL;
    json_t *va;
    if (!ja || !jb) {
        snprintf(out, len, "unreadable parameters");
        found = out;
    }
    json_object_foreach(ja, key, va) {
        if (found)
            break;
        if (!json_equal(va, json_object_get(jb, key))) {
            snprintf(out, len, "%s", key);
            found = out;
        }
    }
    json_decref(ja);
    json_decref(jb);
    return found;
}

/* Read the log of an earlier run: every complete, well-formed line in order (a line cut by a
 * kill is dropped); with --on-eval-error stop, a failed last evaluation is dropped too (it stopped
 * that search and is evaluated again). The log is rewritten with what is kept. */
static int load_log(search *s)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f)
        return errno == ENOENT ? 0 : errorf("cannot read %s: %s", s->log_path, strerror(errno));
    char *line = NULL, *kept = NULL;
    size_t cap = 0, klen = 0;
    FILE *k = open_memstream(&kept, &klen);
    ssize_t n;
    unsigned cnt = 0, cap_r = 0;
    int rc = k ? 0 : errorf("out of memory");
    long last_start = -1;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n')
            break;
        json_t *e = json_loads(line, 0, NULL), *l = json_object_get(e, "lambdas");
        json_t *sc = json_object_get(e, "score");
        if (!e || json_integer_value(json_object_get(e, "evaluation")) != cnt + 1 ||
            !json_is_array(l) || json_array_size(l) != s->n || (!json_is_number(sc) && !json_is_null(sc))) {
            json_decref(e);
            break;
        }
        if (cnt == cap_r) {
            cap_r = cap_r ? 2 * cap_r : 64;
            logged *nr = realloc(s->replay, cap_r * sizeof *nr);
            if (!nr) {
                json_decref(e);
                rc = errorf("out of memory");
                break;
            }
            s->replay = nr;
        }
        logged *L = &s->replay[cnt++];
        for (unsigned i = 0; i < s->n; i++)
            L->lam[i] = json_number_value(json_array_get(l, i));
        L->score = json_is_number(sc) ? json_number_value(sc) : NAN;
        L->gen = (unsigned)json_integer_value(json_object_get(e, "generation"));
        json_decref(e);
        fflush(k);
        last_start = (long)klen;
        fputs(line, k);
    }
    free(line);
    fclose(f);
    if (k)
        fclose(k);
    if (rc == 0 && cnt > 0 && !s->a->skip_errors && isnan(s->replay[cnt - 1].score)) {
        cnt--; /* the failure that stopped the earlier search: evaluated again */
        klen = (size_t)last_start;
    }
    s->nreplay = cnt;
    if (rc == 0) {
        char *txt = kept ? strndup(kept, klen) : strdup("");
        rc = txt && write_text_file(s->log_path, txt) == 0
                 ? 0 : errorf("cannot rewrite %s: %s", s->log_path, strerror(errno));
        free(txt);
    }
    free(kept);
    return rc;
}

/* Create OUT.search, or with --resume take over an earlier one, locked for this run. */
static int make_work(search *s)
{
    const char *out = s->a->o.out;
    char dir[PATH_MAX];
    bool resumed = false;
    snprintf(dir, sizeof dir, "%s.search", out);
    char *params = search_params(s->a);
    if (!params)
        return errorf("out of memory");
    for (int attempt = 0; attempt < 2 && !resumed; attempt++) {
        if (mkdir(dir, 0755) == 0)
            break;
        if (errno != EEXIST || attempt == 1) {
            free(params);
            return errorf("cannot create the search directory %s: %s", dir, strerror(errno));
        }
        char lock[PATH_MAX + 8];
        snprintf(lock, sizeof lock, "%s/.lock", dir);
        int fd = open(lock, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
            close(fd);
            free(params);
            return errorf("another search is running into %s (its work directory %s is locked)",
                          out, dir);
        }
        if (fd >= 0)
            close(fd);
        char logp[PATH_MAX + 32];
        snprintf(logp, sizeof logp, "%s/%s", dir, LOG_NAME);
        bool has_log = false; /* a scored evaluation: worth resuming rather than discarding */
        FILE *lf = fopen(logp, "r");
        char ln[4096];
        while (lf && !has_log && fgets(ln, sizeof ln, lf))
            has_log = strstr(ln, "\"score\":") && !strstr(ln, "\"score\":null");
        if (lf)
            fclose(lf);
        if (s->a->resume && !s->a->o.force) {
            resumed = true;
        } else if (has_log && !s->a->o.force) {
            free(params);
            return errorf("%s holds an earlier search that did not finish: pass --resume to "
                          "continue it, or --force to discard it and start over", dir);
        } else {
            if (!s->a->o.quiet)
                fprintf(stderr, "pcbmerge: search: removing %s, left by an earlier search\n", dir);
            if (rm_tree(dir) != 0) {
                free(params);
                return errorf("cannot remove the stale search directory %s: %s", dir,
                              strerror(errno));
            }
        }
    }
    if (!realpath(dir, s->work)) {
        free(params);
        return errorf("cannot resolve %s: %s", dir, strerror(errno));
    }
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/.lock", s->work);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        free(params);
        return errorf("cannot lock %s: %s", lock, strerror(errno));
    }
    snprintf(s->scratch, sizeof s->scratch, "%s/model", s->work);
    snprintf(s->stats, sizeof s->stats, "%s/%s", s->work, STATS_NAME);
    snprintf(s->log_path, sizeof s->log_path, "%s/%s", s->work, LOG_NAME);
    char ppath[PATH_MAX + 64];
    snprintf(ppath, sizeof ppath, "%s/%s", s->work, PARAMS_NAME);
    int rc = 0;
    if (resumed) {
        FILE *pf = fopen(ppath, "r");
        char old[65536];
        size_t n = pf ? fread(old, 1, sizeof old - 1, pf) : 0;
        if (pf)
            fclose(pf);
        old[n] = '\0';
        char key[128];
        if (!pf)
            rc = errorf("%s has no %s: it cannot be resumed; start over with --force", dir,
                        PARAMS_NAME);
        else if (params_differ(old, params, key, sizeof key) || strcmp(old, params) != 0)
            rc = errorf("cannot resume the search in %s: its parameters differ (%s); run with the "
                        "same parameters (only --budget and run-time settings may change), or "
                        "with --force to start over", dir,
                        params_differ(old, params, key, sizeof key) ? key : "format");
        if (rc == 0)
            rc = load_log(s);
        if (rc == 0 && !s->a->o.quiet)
            fprintf(stderr, "pcbmerge: search: resuming from %s: %u evaluation(s) logged are "
                    "replayed, not re-run\n", dir, s->nreplay);
    } else {
        rc = write_text_file(ppath, params) == 0
                 ? 0 : errorf("cannot write %s: %s", ppath, strerror(errno));
    }
    free(params);
    if (rc)
        return rc;
    s->log = fopen(s->log_path, resumed ? "a" : "w");
    if (!s->log)
        return errorf("cannot create %s: %s", s->log_path, strerror(errno));
    return 0;
}

/* Merge λ into dir: apply pass only when statistics are known; `full` runs the statistics pass
 * (the first merge). Candidates are quiet. */
static int merge_into(search *s, const double *lam, const char *dir, int candidate, pcbm_error *err)
{
    pcbm_merge_opts o = s->a->o;
    o.out = dir;
    o.lambdas = lam;
    o.stats_in = s->stats_in;
    if (candidate) {
        o.quiet = 1;
        o.progress = PCBM_PROGRESS_NONE;
        o.force = 1;
    }
    pcbm_cli_attach_printers(&o);
    return pcbm_merge(&o, err) == PCBM_OK ? 0 : -1;
}

static void fmt_lambdas(const double *l, unsigned n, char *b, size_t len)
{
    size_t u = 0;
    b[0] = 0;
    for (unsigned i = 0; i < n && u < len; i++)
        u += (size_t)snprintf(b + u, len - u, "%s%.4f", i ? " " : "", l[i]);
}

/* ---- JSON text: shortest round-trip numbers (a λ read back gives the same double) ------------ */

static void put_real(FILE *f, double v)
{
    char b[40];
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(b, sizeof b, "%.*g", p, v);
        if (strtod(b, NULL) == v)
            break;
    }
    fputs(b, f);
}

static void put_fixed(FILE *f, double v, int decimals)
{
    fprintf(f, "%.*f", decimals, v);
}

static void put_str(FILE *f, const char *s)
{
    json_t *j = json_string(s ? s : "");
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(t ? t : "\"\"", f);
    free(t);
    json_decref(j);
}

static void put_lambdas(FILE *f, const double *l, unsigned n)
{
    fputc('[', f);
    for (unsigned i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        put_real(f, l[i]);
    }
    fputc(']', f);
}

/* Evaluate one candidate: merge, run the command, log. Returns 0 (scored or skipped) or 1 (the
 * search must stop; the error is printed). *score is NaN when the evaluation failed. */
/* A score known for evaluation k: the initial and the best ones. */
static void tally(search *s, unsigned k, unsigned gen, const double *lam, double score)
{
    if (k == 1) {
        s->init_score = score;
        s->have_init = 1;
    }
    if (!s->have_best || score > s->best_score) {
        s->have_best = 1;
        s->best_score = score;
        s->best_eval = k;
        s->best_gen = gen;
        memcpy(s->best_l, lam, s->n * sizeof(double));
    }
}

/* --resume: evaluation k is in the log; it must be this very candidate. */
static int replayed(search *s, unsigned k, const double *lam, unsigned gen, double *score)
{
    const logged *L = &s->replay[k - 1];
    char want[64 * 12], got[64 * 12];
    if (memcmp(L->lam, lam, s->n * sizeof(double)) != 0 || L->gen != gen) {
        fmt_lambdas(L->lam, s->n, got, sizeof got);
        fmt_lambdas(lam, s->n, want, sizeof want);
        return errorf("cannot resume: evaluation %u of the log (λ %s) is not the candidate this "
                      "search proposes (λ %s): the log comes from another version or other "
                      "parameters; start over with --force", k, got, want);
    }
    *score = L->score;
    if (isnan(L->score))
        s->failed++;
    else
        tally(s, k, gen, lam, L->score);
    if (!s->a->o.quiet)
        fprintf(stderr, "pcbmerge: search: %u/%u gen %u  (logged)  score %.6g  best %.6g\n", k,
                s->a->budget, gen, L->score, s->best_score);
    return 0;
}

/* Evaluate one candidate: merge, run the command, log. Returns 0 (scored or skipped), 1 (the
 * search must stop; the error is printed) or 2 (stopped by a signal: nothing logged). *score is
 * NaN when the evaluation failed. */
static int evaluate(search *s, const double *lam, unsigned gen, double *score)
{
    search_args *a = s->a;
    unsigned k = ++s->evals;
    *score = NAN;
    if (k <= s->nreplay)
        return replayed(s, k, lam, gen, score);
    if (atomic_load(&pcbm_cli_stop)) {
        s->evals--;
        return 2;
    }
    double t0 = pcbm_now();
    pcbm_error err;
    int first = s->merged == 0 && !s->stats_in;
    if (rm_tree(s->scratch) != 0)
        return errorf("cannot remove the scratch model %s: %s", s->scratch, strerror(errno));
    if (first && has_stats(a->o.method) && !a->o.quiet)
        fprintf(stderr, "pcbmerge: search: statistics pass (once) and the merge at λ = %g\n", a->init);
    if (merge_into(s, lam, s->scratch, !first, &err) != 0) {
        if (err.status == PCBM_ERR_INTERRUPTED) {
            s->evals--;
            return 2;
        }
        return errorf("evaluation %u: the merge failed: %s", k,
                      err.msg[0] ? err.msg : pcbm_status_name(err.status));
    }
    if (first && has_stats(a->o.method)) {
        /* Keep the statistics for every later candidate (apply pass only). */
        char from[PATH_MAX + 128];
        snprintf(from, sizeof from, "%s/%s", s->scratch, STATS_NAME);
        if (rename(from, s->stats) != 0)
            return errorf("cannot keep the statistics file %s: %s", from, strerror(errno));
        s->stats_in = s->stats;
    }
    s->merged++;
    double t1 = pcbm_now();
    char *cmd = expand_cmd(a->eval_cmd, s->scratch);
    if (!cmd)
        return errorf("out of memory");
    eval_result r;
    run_eval(cmd, s->scratch, k, &r);
    double t2 = pcbm_now();
    if (atomic_load(&pcbm_cli_stop)) { /* the command was stopped with us: not a result */
        eval_free(&r);
        free(cmd);
        s->evals--;
        return 2;
    }
    s->merge_s += t1 - t0;
    s->eval_s += t2 - t1;

    FILE *f = s->log;
    fprintf(f, "{\"evaluation\":%u,\"generation\":%u,\"lambdas\":", k, gen);
    put_lambdas(f, lam, s->n);
    fputs(",\"score\":", f);
    if (r.ok)
        put_real(f, r.score);
    else
        fputs("null", f);
    fputs(",\"seconds\":", f);
    put_fixed(f, t2 - t0, 4);
    fputs(",\"merge_seconds\":", f);
    put_fixed(f, t1 - t0, 4);
    fputs(",\"eval_seconds\":", f);
    put_fixed(f, t2 - t1, 4);
    if (!r.ok) {
        fputs(",\"error\":", f);
        put_str(f, r.why);
    }
    fputs("}\n", f);
    fflush(f);

    char ls[64 * 12];
    fmt_lambdas(lam, s->n, ls, sizeof ls);
    int rc = 0;
    if (r.ok) {
        *score = r.score;
        tally(s, k, gen, lam, r.score);
        if (!a->o.quiet)
            fprintf(stderr, "pcbmerge: search: %u/%u gen %u  λ %s  score %.6g  best %.6g  (%.2f s)\n",
                    k, a->budget, gen, ls, r.score, s->best_score, t2 - t0);
    } else {
        s->failed++;
        fprintf(stderr, "pcbmerge: %s: evaluation %u (λ %s) failed: %s\n",
                a->skip_errors ? "warning" : "error", k, ls, r.why);
        fprintf(stderr, "  command: %s\n", cmd);
        print_tail("its stderr", &r.err, 12);
        if (strstr(r.why, "no score"))
            print_tail("its stdout", &r.out, 5);
        if (!a->skip_errors) {
            fprintf(stderr, "  the search stops (--on-eval-error skip ranks failed candidates last "
                    "and goes on); evaluations so far: %s\n", s->log_path);
            rc = 1;
        }
    }
    eval_free(&r);
    free(cmd);
    return rc;
}

static void print_summary(const search *s, const char *stopped, double secs)
{
    const search_args *a = s->a;
    char ls[64 * 12];
    fmt_lambdas(s->best_l, s->n, ls, sizeof ls);
    printf("search: %u evaluations (%s, %u tasks, CMA-ES seed %llu) in %.1f s: %s\n", s->evals,
           pcbm_method_name(a->o.method), s->n, (unsigned long long)a->seed, secs, stopped);
    if (s->have_init)
        printf("  score at λ = %g (init):   %.6g\n", a->init, s->init_score);
    else
        printf("  score at λ = %g (init):   (the evaluation failed)\n", a->init);
    printf("  best score (evaluation %u): %.6g", s->best_eval, s->best_score);
    if (s->have_init)
        printf("  (%+.6g over init)", s->best_score - s->init_score);
    printf("\n  best λ: %s\n", ls);
    unsigned at_lo = 0, at_hi = 0;
    for (unsigned i = 0; i < s->n; i++) {
        at_lo += s->best_l[i] <= a->lo;
        at_hi += s->best_l[i] >= a->hi;
    }
    if (at_lo || at_hi)
        printf("  note: %u of %u λ on the bounds [%g, %g] (%u low, %u high): the best may lie "
               "outside; --bounds widens the box\n", at_lo + at_hi, s->n, a->lo, a->hi, at_lo, at_hi);
    if (s->failed)
        printf("  failed evaluations: %u (skipped)\n", s->failed);
    printf("  merged into %s with the best λ; log %s/%s, summary %s/%s\n", a->o.out, a->o.out,
           LOG_NAME, a->o.out, SUMMARY_NAME);
}

static int write_summary(const search *s, unsigned popsize, double sigma0, unsigned gens,
                         const char *stopped, double secs)
{
    const search_args *a = s->a;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return errorf("out of memory");
    fputs("{\n  \"method\": ", f);
    put_str(f, pcbm_method_name(a->o.method));
    fputs(",\n  \"base\": ", f);
    put_str(f, a->o.base);
    fputs(",\n  \"tasks\": [", f);
    for (unsigned i = 0; i < s->n; i++) {
        fputs(i ? ", " : "", f);
        put_str(f, a->o.tasks[i]);
    }
    fputs("],\n  \"eval_cmd\": ", f);
    put_str(f, a->eval_cmd);
    fprintf(f, ",\n  \"budget\": %u,\n  \"evaluations\": %u,\n  \"failed_evaluations\": %u,\n"
               "  \"generations\": %u,\n  \"stopped\": ", a->budget, s->evals, s->failed, gens);
    put_str(f, stopped);
    fputs(",\n  \"bounds\": [", f);
    put_real(f, a->lo);
    fputs(", ", f);
    put_real(f, a->hi);
    fputs("],\n  \"init\": ", f);
    put_real(f, a->init);
    fputs(",\n  \"sigma0\": ", f);
    put_real(f, sigma0);
    fprintf(f, ",\n  \"popsize\": %u,\n  \"seed\": %llu,\n  \"init_score\": ", popsize,
            (unsigned long long)a->seed);
    if (s->have_init)
        put_real(f, s->init_score);
    else
        fputs("null", f);
    fprintf(f, ",\n  \"best\": {\"evaluation\": %u, \"generation\": %u, \"score\": ", s->best_eval,
            s->best_gen);
    put_real(f, s->best_score);
    fputs(", \"lambdas\": ", f);
    put_lambdas(f, s->best_l, s->n);
    fputs("},\n  \"gain\": ", f);
    if (s->have_init)
        put_real(f, s->best_score - s->init_score);
    else
        fputs("null", f);
    fputs(",\n  \"statistics\": ", f);
    put_str(f, !has_stats(a->o.method) ? "none (the method has no statistics pass)"
               : a->stats_user         ? "from --stats"
                                       : "computed once, at the first evaluation");
    fputs(",\n  \"seconds\": ", f);
    put_fixed(f, secs, 3);
    fputs(",\n  \"merge_seconds\": ", f);
    put_fixed(f, s->merge_s, 3);
    fputs(",\n  \"eval_seconds\": ", f);
    put_fixed(f, s->eval_s, 3);
    fputs("\n}\n", f);
    if (fclose(f) != 0 || !text) {
        free(text);
        return errorf("out of memory");
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", a->o.out, SUMMARY_NAME);
    int rc = write_text_file(path, text);
    free(text);
    if (rc != 0)
        return errorf("cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int run_search(search *s)
{
    search_args *a = s->a;
    double t_start = pcbm_now();
    double lam[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < s->n; i++)
        lam[i] = a->init;
    if (a->stats_user)
        s->stats_in = a->stats_user;
    else if (exists(s->stats))
        s->stats_in = s->stats; /* --resume: computed by the earlier run */

    /* Evaluation 1: λ = init (with the statistics pass when they are not known yet). */
    double score;
    int erc = evaluate(s, lam, 0, &score);
    if (erc)
        return erc;

    pcbm_cmaes_opts co;
    pcbm_cmaes_opts_init(&co);
    double lo[PCBM_MAX_TASKS], hi[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < s->n; i++) {
        lo[i] = a->lo;
        hi[i] = a->hi;
    }
    co.n = s->n;
    co.x0 = lam;
    co.sigma0 = a->sigma > 0 ? a->sigma : (a->hi - a->lo) / 5.0;
    co.lo = lo;
    co.hi = hi;
    co.popsize = a->popsize;
    co.seed = a->seed;
    co.tol_x = 1e-9 * (a->hi - a->lo);
    pcbm_cmaes *es = NULL;
    pcbm_error err;
    if (pcbm_cmaes_create(&co, &es, &err) != PCBM_OK)
        return errorf("%s", err.msg);
    unsigned lamsz = pcbm_cmaes_popsize(es);
    double *X = malloc(sizeof(double) * lamsz * s->n), *F = malloc(sizeof(double) * lamsz);
    const char *stopped = "budget spent";
    int rc = (!X || !F) ? errorf("out of memory") : 0;
    while (rc == 0 && s->evals < a->budget) {
        if (pcbm_cmaes_stopped(es) != PCBM_CMAES_RUNNING) {
            stopped = pcbm_cmaes_stop_name(pcbm_cmaes_stopped(es));
            break;
        }
        pcbm_cmaes_ask(es, X);
        unsigned gen = pcbm_cmaes_generation(es) + 1;
        unsigned take = PCBM_MIN(lamsz, a->budget - s->evals);
        for (unsigned k = 0; rc == 0 && k < take; k++) {
            rc = evaluate(s, X + (size_t)k * s->n, gen, &score);
            F[k] = -score; /* CMA-ES minimizes; NaN (failed, skipped) ranks last */
        }
        if (rc == 0 && take == lamsz && pcbm_cmaes_tell(es, F, &err) != PCBM_OK)
            rc = errorf("%s", err.msg);
    }
    unsigned gens = pcbm_cmaes_generation(es);
    double sigma0 = co.sigma0;
    pcbm_cmaes_free(es);
    free(X);
    free(F);
    if (rc)
        return rc;
    fclose(s->log);
    s->log = NULL;
    if (!s->have_best)
        return errorf("every evaluation failed; nothing to merge (see %s)", s->log_path);

    /* OUT: the merge at the best λ (apply pass only), then the log and the summary. */
    if (rm_tree(s->scratch) != 0)
        return errorf("cannot remove the scratch model %s: %s", s->scratch, strerror(errno));
    if (!a->o.quiet)
        fprintf(stderr, "pcbmerge: search: merging the best λ (evaluation %u) into %s\n",
                s->best_eval, a->o.out);
    pcbm_merge_opts o = a->o;
    o.lambdas = s->best_l;
    o.stats_in = s->stats_in;
    o.resume = a->resume; /* a final merge that was interrupted continues */
    pcbm_cli_attach_printers(&o);
    if (pcbm_merge(&o, &err) != PCBM_OK) {
        if (err.status == PCBM_ERR_INTERRUPTED)
            return 2;
        return errorf("the final merge into %s failed: %s", a->o.out,
                      err.msg[0] ? err.msg : pcbm_status_name(err.status));
    }
    char dst[PATH_MAX + 32];
    snprintf(dst, sizeof dst, "%s/%s", a->o.out, LOG_NAME);
    if (rename(s->log_path, dst) != 0)
        return errorf("cannot move %s to %s: %s", s->log_path, dst, strerror(errno));
    double secs = pcbm_now() - t_start;
    if (write_summary(s, lamsz, sigma0, gens, stopped, secs))
        return 1;
    print_summary(s, stopped, secs);
    return 0;
}

int pcbm_cli_search(int argc, char **argv)
{
    search_args *a = calloc(1, sizeof *a);
    search s;
    memset(&s, 0, sizeof s);
    s.lock_fd = -1;
    if (!a)
        return errorf("out of memory");
    pcbm_merge_opts_init(&a->o);
    a->o.exclude = a->exclude;
    a->budget = 60;
    a->lo = 0.5;
    a->hi = 3.0;
    a->init = 1.0;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", search_opts, NULL)) != -1) {
        if (c == S_HELP) {
            fputs(search_usage, stdout);
            free(a);
            return 0;
        }
        if (c == '?')
            rc = usage_err("unknown or incomplete option %s", argv[optind - 1]);
        else
            rc = set_opt(a, c, optarg, argv[optind - 1 - (optarg && optarg == argv[optind - 1])]);
    }
    if (rc == 0) {
        a->o.tasks = (const char *const *)&argv[optind];
        a->o.ntasks = (unsigned)(argc - optind);
        s.n = a->o.ntasks;
        pcbm_method m = a->o.method;
        if (!a->o.base || !a->o.out)
            rc = usage_err("search needs --base DIR and --out DIR");
        else if (!a->eval_cmd)
            rc = usage_err("search needs --eval-cmd 'COMMAND {model}' (the last line of its "
                           "stdout is the score, higher is better)");
        else if (!strstr(a->eval_cmd, "{model}") && !strstr(a->eval_cmd, "PCBM_MODEL"))
            rc = usage_err("--eval-cmd must contain {model}, replaced by the directory of each "
                           "candidate model (or read $PCBM_MODEL): %s", a->eval_cmd);
        else if (a->o.ntasks == 0)
            rc = usage_err("search needs at least one task model after the options");
        else if (a->o.ntasks > PCBM_MAX_TASKS)
            rc = usage_err("search takes at most %d task models", PCBM_MAX_TASKS);
        else if (m != PCBM_METHOD_PCB && m != PCBM_METHOD_TASK_ARITHMETIC &&
                 m != PCBM_METHOD_DARE_LINEAR)
            rc = usage_err("--method %s cannot be searched: search tunes one λ per task, which "
                           "only pcb, task_arithmetic and dare_linear take (%s)",
                           pcbm_method_name(m),
                           m == PCBM_METHOD_LINEAR ? "linear takes --weights"
                                                   : "ties and dare_ties take one global --lambda");
        else if (a->stats_user && !has_stats(m))
            rc = usage_err("--stats applies to pcb; %s computes no statistics", pcbm_method_name(m));
        else if (!(a->init >= a->lo && a->init <= a->hi))
            rc = usage_err("--init %g is outside --bounds %g,%g", a->init, a->lo, a->hi);
    }
    if (rc == 0) {
        char partial[PATH_MAX + 16];
        snprintf(partial, sizeof partial, "%s.partial", a->o.out);
        if (exists(a->o.out))
            rc = errorf("%s exists; search writes a new directory: choose another --out or remove "
                        "it", a->o.out);
        else if (exists(partial) && !a->o.force && !a->resume)
            rc = errorf("%s holds an unfinished merge into %s; pass --force to discard it",
                        partial, a->o.out);
    }
    if (rc == 0) {
        s.a = a;
        rc = make_work(&s);
        if (rc == 0)
            rc = run_search(&s);
        if (s.log)
            fclose(s.log);
        if (rc == 0) {
            rm_tree(s.work);
        } else if (s.work[0]) {
            /* Keep the log of the evaluations so far and the statistics (--resume reuses both);
             * drop the scratch model. */
            rm_tree(s.scratch);
            char p[PATH_MAX + 128];
            snprintf(p, sizeof p, "%s.partial", s.scratch);
            rm_tree(p);
        }
        if (rc == 2) {
            fprintf(stderr, "pcbmerge: search stopped by a signal after %u evaluation(s); run the "
                    "same command with --resume to continue (%s keeps the log)\n", s.evals,
                    s.work);
            rc = EXIT_STOPPED;
        }
        if (s.lock_fd >= 0)
            close(s.lock_fd);
    }
    free(s.replay);
    free(a);
    return rc;
}

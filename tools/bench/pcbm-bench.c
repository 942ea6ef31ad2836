/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcbm-bench — the measurements behind `make bench` (tools/bench/bench.sh) that the pcbmerge CLI cannot
 * make itself:
 *
 *   pcbm-bench read [--depth Q] [--block SIZE] FILE...   raw sequential O_DIRECT read of FILEs
 *   pcbm-bench write [--depth Q] [--block SIZE] FILE SIZE raw O_DIRECT write of SIZE bytes + fsync
 *   pcbm-bench drop-caches                                 sync and drop the page cache (root)
 *   pcbm-bench kernels [--tasks N] [--tiles T] [--level L] [--only NAME] [--reps R]
 *                                                          merge kernels, every CPU path
 *
 * read/write print one JSON object {"bytes":B,"seconds":S,"gbps":G,...} on stdout: the disk's
 * floor, what an out-of-core merge can at best approach. They keep Q requests of SIZE (default
 * 32 x 4 MiB) in flight with io_uring, taken from the files in turn (every file in flight at
 * once, as a merge reads its models).
 * kernels prints, per kernel and CPU path, elements per second on one thread (one tile of
 * PCBM_TILE task-vector elements per call, data in L1/L2) — for finding the hot loop, not a
 * promise about whole merges.
 * Exit status: 0, 1 on errors (with a message), 2 on usage errors, 77 for drop-caches when not
 * root.
 */
#include "kernels/cpu.h"
#include "kernels/mkern.h"
#include "merge/merge.h"
#include "stats/qsel.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void)
{
    fputs("usage: pcbm-bench read [--depth Q] [--block SIZE] FILE...\n"
          "       pcbm-bench write [--depth Q] [--block SIZE] FILE SIZE\n"
          "       pcbm-bench drop-caches\n"
          "       pcbm-bench kernels [--tasks N] [--tiles T] [--level L] [--only NAME] [--reps R]\n",
          stderr);
    return 2;
}

/* ---- raw I/O ------------------------------------------------------------------------------ */

typedef struct rawio {
    unsigned depth;
    uint64_t block;
} rawio;

static int parse_io_opts(int argc, char **argv, int *i, rawio *o)
{
    for (; *i < argc && argv[*i][0] == '-'; (*i)++) {
        if (!strcmp(argv[*i], "--depth") && *i + 1 < argc) {
            o->depth = (unsigned)atoi(argv[++*i]);
        } else if (!strcmp(argv[*i], "--block") && *i + 1 < argc) {
            if (pcbm_parse_size(argv[++*i], &o->block) != 0)
                return -1;
        } else if (!strcmp(argv[*i], "--")) {
            (*i)++;
            break;
        } else {
            return -1;
        }
    }
    if (o->depth < 1 || o->depth > 256 || o->block < 4096 || o->block % 4096)
        return -1;
    return 0;
}

/* One file of a raw transfer. */
typedef struct xfile {
    int fd;
    uint64_t size, next;
    const char *path;
} xfile;

/* Stream every file [0, size) through depth buffers of block bytes, requests taken from the
 * files in turn (all files in flight at once, as a merge reads its models): reads, or writes of
 * a fixed pattern. */
static int stream_files(struct io_uring *ring, xfile *f, unsigned nf, bool write, const rawio *o,
                        void **bufs)
{
    uint64_t total = 0, done = 0;
    for (unsigned i = 0; i < nf; i++)
        total += f[i].size;
    unsigned inflight = 0, turn = 0;
    bool *busy = calloc(o->depth, sizeof *busy);
    if (!busy)
        return -ENOMEM;
    int rc = 0;
    while (done < total && rc == 0) {
        while (inflight < o->depth) {
            unsigned i = 0;
            for (; i < nf && f[(turn + i) % nf].next >= f[(turn + i) % nf].size; i++)
                ;
            if (i == nf)
                break;
            xfile *x = &f[(turn + i) % nf];
            turn = (turn + i + 1) % nf;
            unsigned b = 0;
            while (busy[b])
                b++;
            uint64_t len = x->size - x->next < o->block ? x->size - x->next : o->block;
            uint64_t alen = (len + 4095) / 4096 * 4096;
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (write)
                io_uring_prep_write(sqe, x->fd, bufs[b], (unsigned)alen, x->next);
            else
                io_uring_prep_read(sqe, x->fd, bufs[b], (unsigned)alen, x->next);
            io_uring_sqe_set_data64(sqe, ((uint64_t)b << 48) | ((uint64_t)(x - f) << 40) | len);
            busy[b] = true;
            inflight++;
            x->next += len;
        }
        io_uring_submit(ring);
        struct io_uring_cqe *cqe;
        if ((rc = io_uring_wait_cqe(ring, &cqe)) < 0)
            break;
        uint64_t data = io_uring_cqe_get_data64(cqe);
        uint64_t want = data & ((1ull << 40) - 1);
        if (cqe->res < 0 || (uint64_t)cqe->res < want) {
            fprintf(stderr, "pcbm-bench: %s of %s failed: %s\n", write ? "write" : "read",
                    f[(data >> 40) & 0xff].path,
                    cqe->res < 0 ? strerror(-cqe->res) : "short transfer");
            rc = cqe->res < 0 ? cqe->res : -EIO;
        }
        busy[data >> 48] = false;
        inflight--;
        done += want;
        io_uring_cqe_seen(ring, cqe);
    }
    while (inflight > 0) { /* after an error: reap what is left */
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(ring, &cqe) < 0)
            break;
        io_uring_cqe_seen(ring, cqe);
        inflight--;
    }
    free(busy);
    return rc;
}

static int cmd_rawio(int argc, char **argv, bool write)
{
    rawio o = {32, 4u << 20};
    int i = 2;
    if (parse_io_opts(argc, argv, &i, &o) != 0 || i >= argc || (write && i + 2 != argc) ||
        argc - i > 255)
        return usage();
    struct io_uring ring;
    int rc = io_uring_queue_init(o.depth * 2, &ring, 0);
    if (rc < 0) {
        fprintf(stderr, "pcbm-bench: io_uring_queue_init: %s\n", strerror(-rc));
        return 1;
    }
    void **bufs = calloc(o.depth, sizeof *bufs);
    for (unsigned b = 0; b < o.depth; b++) {
        if (!bufs || posix_memalign(&bufs[b], 4096, o.block) != 0) {
            fprintf(stderr, "pcbm-bench: out of memory\n");
            return 1;
        }
        memset(bufs[b], 0x5a, o.block);
    }
    xfile f[256];
    unsigned nf = 0;
    uint64_t total = 0;
    if (write) {
        uint64_t size;
        if (pcbm_parse_size(argv[i + 1], &size) != 0)
            return usage();
        int fd = open(argv[i], O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
        if (fd < 0) {
            fprintf(stderr, "pcbm-bench: cannot create %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        f[nf++] = (xfile){fd, size, 0, argv[i]};
    } else {
        for (; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY | O_DIRECT);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) {
                fprintf(stderr, "pcbm-bench: cannot open %s: %s\n", argv[i], strerror(errno));
                return 1;
            }
            f[nf++] = (xfile){fd, (uint64_t)st.st_size, 0, argv[i]};
        }
    }
    for (unsigned j = 0; j < nf; j++)
        total += f[j].size;
    double t0 = now();
    rc = stream_files(&ring, f, nf, write, &o, bufs);
    if (rc == 0 && write && (ftruncate(f[0].fd, (off_t)f[0].size) != 0 || fsync(f[0].fd) != 0)) {
        fprintf(stderr, "pcbm-bench: cannot finish %s: %s\n", f[0].path, strerror(errno));
        rc = -EIO;
    }
    double secs = now() - t0;
    for (unsigned j = 0; j < nf; j++)
        close(f[j].fd);
    io_uring_queue_exit(&ring);
    for (unsigned b = 0; b < o.depth; b++)
        free(bufs[b]);
    free(bufs);
    if (rc != 0)
        return 1;
    printf("{\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.4f,\"depth\":%u,\"block\":%llu}\n",
           (unsigned long long)total, secs, secs > 0 ? (double)total / secs / 1e9 : 0.0, o.depth,
           (unsigned long long)o.block);
    return 0;
}

static int cmd_drop_caches(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "pcbm-bench: dropping the page cache needs root\n");
        return 77;
    }
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (!f || fputs("3\n", f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "pcbm-bench: cannot write /proc/sys/vm/drop_caches: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- kernels ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double rnd01(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) * 0x1p-53;
}

/* A bf16-looking task vector element: normal-ish, scale 1e-3, 4% exact zeros. */
static float tv(void)
{
    if (rnd01() < 0.04)
        return 0.0f;
    double u = rnd01() + rnd01() + rnd01() - 1.5;
    return pcbm_bf16_to_f32(pcbm_f32_to_bf16((float)(u * 2e-3)));
}

typedef struct kb {
    unsigned N, tiles;
    float *base, *theta[PCBM_MAX_TASKS], *tau[PCBM_MAX_TASKS];
    uint16_t *raw[PCBM_MAX_TASKS];
    float sum[PCBM_TILE], a[PCBM_TILE], b[PCBM_TILE], c[PCBM_TILE], out[PCBM_TILE];
    uint64_t *hist;
    uint32_t idx[PCBM_TILE + 16];
    float wl, wh;   /* a score window around the 0.9 quantile (+-0.05%) */
} kb;

typedef void (*kfn)(kb *k, size_t off);

static void k_tau(kb *k, size_t off)
{
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_tau(PCBM_DT_BF16, k->raw[i] + off, k->base + off, k->theta[i] + off,
                   k->tau[i] + off, PCBM_TILE);
}
static void k_sum(kb *k, size_t off)
{
    const float *t[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < k->N; i++)
        t[i] = k->tau[i] + off;
    pcbm_k_sum(t, k->N, k->sum, PCBM_TILE);
}
static void k_score(kb *k, size_t off)
{
    k_sum(k, off);
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_pcb_score(k->tau[i] + off, k->sum, 0.0f, 0.006f, (float)k->N, k->a, PCBM_TILE);
}
static void k_apply(kb *k, size_t off)
{
    k_sum(k, off);
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_pcb_apply_task(k->tau[i] + off, k->sum, 0.0f, 0.006f, (float)k->N, 1e-6f, 20.0f,
                              1.0f, i == 0, k->a, k->b, PCBM_TILE);
    pcbm_k_pcb_apply_finish(k->base + off, k->a, k->b, k->out, PCBM_TILE);
}
static void k_stream(kb *k, size_t off)
{
    k_sum(k, off);
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_stream_scores(k->tau[i] + off, k->sum, 0.0f, 0.0055f, 0.0065f, (float)k->N, k->a,
                             k->b, k->c, PCBM_TILE);
}
/* A window of whole coarse bins around [a, b] with at most 16384 fine bins. */
static pcbm_k_win window(float a, float b, uint64_t *h, uint64_t *below)
{
    pcbm_k_win w = {pcbm_fkey(a) >> 16, pcbm_fkey(b) >> 16, 0, h, below};
    while (((uint64_t)(w.p1 - w.p0 + 1) << 16 >> w.shift) > 16384)
        w.shift++;
    return w;
}

static void k_winsel(kb *k, size_t off)
{
    uint64_t below[2] = {0, 0}, ball = 0;
    pcbm_k_win lo = window(0.0f, 2e-5f, k->hist, &below[0]);
    pcbm_k_win hi = window(0.0055f, 0.0065f, k->hist + 16384, &below[1]);
    for (unsigned i = 0; i < k->N; i++) {
        pcbm_k_win_count(k->tau[i] + off, PCBM_TILE, &lo, &hi);
        pcbm_k_stream_select(k->tau[i] + off, k->tau[(i + 1) % k->N] + off, 1e-3f, 2e-3f, 0.5f,
                             PCBM_TILE, k->idx, &ball);
    }
}
static void k_full(kb *k, size_t off)
{
    uint64_t below[2] = {0, 0}, ball = 0;
    pcbm_k_win lo = window(0.0f, 2e-5f, k->hist, &below[0]);
    pcbm_k_win hi = window(0.0055f, 0.0065f, k->hist + 16384, &below[1]);
    k_sum(k, off);
    for (unsigned i = 0; i < k->N; i++) {
        pcbm_k_win_count(k->tau[i] + off, PCBM_TILE, &lo, &hi);
        pcbm_k_stream_full(k->tau[i] + off, k->sum, 0.0f, 0.0055f, 0.0065f, (float)k->N, k->wl,
                           k->wh, 30.0f, PCBM_TILE, k->a, k->b, k->c, k->idx, &ball);
    }
}
static void k_fullonly(kb *k, size_t off)
{
    uint64_t ball = 0;
    k_sum(k, off);
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_stream_full(k->tau[i] + off, k->sum, 0.0f, 0.0055f, 0.0065f, (float)k->N, k->wl,
                           k->wh, 30.0f, PCBM_TILE, k->a, k->b, k->c, k->idx, &ball);
}
static void k_win(kb *k, size_t off)
{
    uint64_t below[2] = {0, 0};
    pcbm_k_win lo = window(0.0f, 2e-5f, k->hist, &below[0]);
    pcbm_k_win hi = window(0.0055f, 0.0065f, k->hist + 16384, &below[1]);
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_win_count(k->tau[i] + off, PCBM_TILE, &lo, &hi);
}
static void k_hist(kb *k, size_t off)
{
    for (unsigned i = 0; i < k->N; i++)
        pcbm_k_hist_coarse(k->tau[i] + off, PCBM_TILE, true, 1, k->hist + (size_t)i * 65536);
}
static void k_ties(kb *k, size_t off)
{
    float *tr[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < k->N; i++) {
        tr[i] = k->theta[i] + off;
        pcbm_k_trim(k->tau[i] + off, 2e-3f, tr[i], PCBM_TILE);
    }
    pcbm_k_ties_apply((const float *const *)tr, k->N, k->base + off, 1.0f, 1.0f, k->out, PCBM_TILE);
}
static void k_ta(kb *k, size_t off)
{
    const float *t[PCBM_MAX_TASKS];
    for (unsigned i = 0; i < k->N; i++)
        t[i] = k->tau[i] + off;
    pcbm_k_task_sum(t, k->N, NULL, 1.0f, k->base + off, k->out, PCBM_TILE);
}

static int cmd_kernels(int argc, char **argv)
{
    kb k = {.N = 3, .tiles = 64};
    int lv0 = 0, lv1 = (int)pcbm_cpu_detect();
    const char *only = NULL;
    int reps = 5;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--level") && i + 1 < argc) {
            pcbm_cpu_level l;
            if (pcbm_cpu_level_parse(argv[++i], &l) != 0)
                return usage();
            lv0 = lv1 = (int)l > lv1 ? lv1 : (int)l;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            k.N = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tiles") && i + 1 < argc)
            k.tiles = (unsigned)atoi(argv[++i]);
        else
            return usage();
    }
    if (k.N < 1 || k.N > PCBM_MAX_TASKS || k.tiles < 1)
        return usage();
    size_t n = (size_t)k.tiles * PCBM_TILE;
    k.base = malloc(n * sizeof(float));
    k.hist = calloc((size_t)PCBM_MAX_TASKS * 65536, sizeof(uint64_t));
    for (size_t e = 0; e < n; e++)
        k.base[e] = pcbm_bf16_to_f32(pcbm_f32_to_bf16((float)(rnd01() - 0.5) * 0.1f));
    for (unsigned i = 0; i < k.N; i++) {
        k.theta[i] = malloc(n * sizeof(float));
        k.tau[i] = malloc(n * sizeof(float));
        k.raw[i] = malloc(n * sizeof(uint16_t));
        for (size_t e = 0; e < n; e++)
            k.raw[i][e] = pcbm_f32_to_bf16(k.base[e] + tv());
    }
    for (unsigned i = 0; i < k.N; i++)
        pcbm_k_tau(PCBM_DT_BF16, k.raw[i], k.base, k.theta[i], k.tau[i], n);
    {   /* the 0.9 quantile of task 0's scores in the first tile, +-0.05% */
        k_score(&k, 0);
        float s[PCBM_TILE];
        memcpy(s, k.a, sizeof s);
        for (unsigned a = 1; a < PCBM_TILE; a++)
            for (unsigned b = a; b > 0 && s[b] < s[b - 1]; b--) {
                float t = s[b];
                s[b] = s[b - 1];
                s[b - 1] = t;
            }
        k.wl = s[PCBM_TILE * 9 / 10] * 0.9995f;
        k.wh = s[PCBM_TILE * 9 / 10] * 1.0005f;
    }
    static const struct { const char *name; kfn fn; } ks[] = {
        {"decode+tau", k_tau}, {"sum", k_sum}, {"pcb scores", k_score},
        {"pcb apply", k_apply}, {"stream scores", k_stream}, {"window+select", k_winsel},
        {"stream full pass", k_full}, {"  stream_full", k_fullonly}, {"  win_count", k_win},
        {"histogram", k_hist}, {"ties trim+apply", k_ties}, {"task arithmetic", k_ta},
    };
    printf("kernel, %u tasks  ", k.N);
    for (int lv = lv0; lv <= lv1; lv++)
        printf(" %14s", pcbm_cpu_level_name((pcbm_cpu_level)lv));
    printf("   (million positions/s, 1 thread)\n");
    for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
        if (only && !strstr(ks[j].name, only))
            continue;
        printf("%-18s", ks[j].name);
        for (int lv = lv0; lv <= lv1; lv++) {
            pcbm_cpu_level_set((pcbm_cpu_level)lv);
            double best = INFINITY;
            for (int rep = 0; rep < reps; rep++) {
                double t0 = now();
                for (unsigned t = 0; t < k.tiles; t++)
                    ks[j].fn(&k, (size_t)t * PCBM_TILE);
                double dt = now() - t0;
                best = dt < best ? dt : best;
            }
            printf(" %14.1f", (double)n / best / 1e6);
        }
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (!strcmp(argv[1], "read"))
        return cmd_rawio(argc, argv, false);
    if (!strcmp(argv[1], "write"))
        return cmd_rawio(argc, argv, true);
    if (!strcmp(argv[1], "drop-caches"))
        return cmd_drop_caches();
    if (!strcmp(argv[1], "kernels"))
        return cmd_kernels(argc, argv);
    return usage();
}

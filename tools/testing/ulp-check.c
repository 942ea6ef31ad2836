/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ulp-check — measures the accuracy of pcbm_expf / pcbm_tanhf against a correctly rounded reference
 * over every float32 of their ranges, on every dispatch path this CPU has, checks that all paths
 * give the same bits (also for the bf16/f16 encoders and decoders), and prints a table.
 *
 * Usage: ulp-check [--stride N] [--threads N] [--func exp|tanh|all] [--no-convert]
 *   --stride N   test every N-th bit pattern of each range (default 1: exhaustive)
 *   --threads N  worker threads (default: online CPUs)
 *   --func F     only exp or only tanh
 *   --no-convert skip the exhaustive bf16/f16 path-identity sweep
 * Exit status 0 when every path is bit-identical to the scalar one, max error <= 2 ulp for exp and
 * <= 3 ulp for tanh and both are monotonic; 1 otherwise; 2 on a usage error.
 *
 * Reference: exp()/tanh() in double (error ~ 2^-52 relative, i.e. < 2^-28 ulp of float); whenever
 * the double lies within 2^-45 (relative) of a float rounding boundary, the value is recomputed with
 * expl()/tanhl() in long double and rounded from there. The error of a result y is
 * |y - ref| / ulp(ref), where ulp(ref) = 2^(floor(log2|ref|) - 23), at least 2^-149 (subnormals).
 * "!=CR" counts results different from the correctly rounded float, "max |d|" is the largest
 * distance in representable floats between the result and the correctly rounded one, "non-mono"
 * counts neighbouring inputs (at the stride) whose results go against the function's direction
 * (both functions are increasing; any such pair fails the check).
 */
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/dmath.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define CHUNK (1u << 20) /* bit patterns per work item */

enum { F_EXP = 0, F_TANH = 1, F_CONV = 2, F_COUNT };

typedef struct range {
    uint32_t lo, hi; /* inclusive bit patterns */
} range;

typedef struct stats {
    double max_err;
    uint32_t worst; /* input bits of max_err */
    uint64_t not_cr;
    uint64_t max_dist;
    uint64_t mismatch;       /* results whose bits differ from the scalar path */
    uint32_t first_mismatch; /* input bits */
    uint64_t count;
    uint64_t nonmono; /* consecutive inputs (in the stride) whose results go the wrong way */
} stats;

static unsigned npaths;
static pcbm_cpu_level paths[PCBM_CPU_LEVEL_COUNT];
static uint32_t stride = 1;

/* Work items: (function, range index, chunk start index). */
typedef struct item {
    int func;
    uint32_t lo, hi;
    int first; /* the first chunk of its range: no predecessor for the monotonicity check */
} item;
static item *items;
static size_t nitems;
static atomic_size_t next_item;

typedef struct worker {
    pthread_t th;
    stats st[F_COUNT][PCBM_CPU_LEVEL_COUNT];
} worker;

static inline int64_t ordered(uint32_t u)
{
    return (u & 0x80000000u) ? -(int64_t)(u & 0x7fffffffu) : (int64_t)u;
}

static inline uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static inline double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Correctly rounded float of f(x); *ref gets the reference value (double is plenty for the error). */
static float reference(int func, float x, double *ref)
{
    double d = func == F_EXP ? exp((double)x) : tanh((double)x);
    *ref = d;
    uint64_t b = d2u(d);
    int e = (int)((b >> 52) & 0x7ff) - 1023;
    if (e >= -126 && e <= 127) {
        /* float-normal result: the 29 bits below float precision decide the rounding; near the
         * midpoint (within 2^-45 relative) ask the long double function */
        int64_t low = (int64_t)(b & ((1ull << 29) - 1));
        if (llabs(low - (1ll << 28)) > 256)
            return (float)d;
    } else if (e > 127 || d == 0.0) {
        return (float)d;
    }
    /* near a rounding boundary, or a subnormal result: round from long double */
    long double l = func == F_EXP ? expl((long double)x) : tanhl((long double)x);
    return (float)l;
}

/* ulp of the reference: 2^(floor(log2|ref|) - 23), at least 2^-149, at most 2^104. */
static inline double ulp_of(double ref)
{
    int e = (int)((d2u(ref) >> 52) & 0x7ff) - 1023;
    if (e < -126)
        e = -126;
    if (e > 127)
        e = 127;
    return u2d((uint64_t)(e - 23 + 1023) << 52);
}

static inline double err_of(float v, float cr, double ref)
{
    if (isinf(v) && isinf(cr) && (v > 0) == (cr > 0))
        return 0;
    if (isinf(v) || isnan(v))
        return INFINITY;
    return fabs((double)v - ref) / ulp_of(ref);
}

static inline void note(stats *s, float v, float cr, double err, uint32_t xb)
{
    if (err > s->max_err) {
        s->max_err = err;
        s->worst = xb;
    }
    if (pcbm_f2u(v) != pcbm_f2u(cr)) {
        s->not_cr++;
        uint64_t dist = (isnan(v) || isnan(cr)) ? UINT64_MAX
                                                : (uint64_t)llabs(ordered(pcbm_f2u(v)) - ordered(pcbm_f2u(cr)));
        if (dist > s->max_dist)
            s->max_dist = dist;
    }
}

/* prev[p]: the result of path p for the previous input (NaN: none); negative inputs run from
 * -0 downwards, so there the results must not increase. */
static void check_block(int func, const float *x, size_t n, worker *w, float *prev)
{
    static _Thread_local float y[PCBM_CPU_LEVEL_COUNT][BLOCK];
    for (unsigned p = 0; p < npaths; p++) {
        pcbm_cpu_level_set_thread(paths[p]);
        if (func == F_EXP)
            pcbm_expf_n(x, y[p], n);
        else
            pcbm_tanhf_n(x, y[p], n);
    }
    for (size_t i = 0; i < n; i++) {
        double ref;
        float cr = reference(func, x[i], &ref);
        float v0 = y[0][i];
        double err0 = err_of(v0, cr, ref);
        uint32_t xb = pcbm_f2u(x[i]);
        note(&w->st[func][0], v0, cr, err0, xb);
        for (unsigned p = 1; p < npaths; p++) {
            stats *s = &w->st[func][p];
            float v = y[p][i];
            if (pcbm_f2u(v) == pcbm_f2u(v0)) {
                note(s, v, cr, err0, xb);
            } else {
                if (s->mismatch++ == 0)
                    s->first_mismatch = xb;
                note(s, v, cr, err_of(v, cr, ref), xb);
            }
        }
    }
    for (unsigned p = 0; p < npaths; p++) {
        stats *s = &w->st[func][p];
        s->count += n;
        float pv = prev[p];
        for (size_t i = 0; i < n; i++) {
            float v = y[p][i];
            if (pv == pv && (signbit(x[i]) ? v > pv : v < pv))
                s->nonmono++;
            pv = v;
        }
        prev[p] = pv;
    }
}

/* Path identity of the encoders (bf16, f16) on these float bit patterns: every path against the
 * scalar path (which is the code of pcbm_f32_to_bf16 / pcbm_f32_to_f16). */
static void check_convert(const float *x, size_t n, worker *w)
{
    static const pcbm_dtype dts[2] = {PCBM_DT_BF16, PCBM_DT_F16};
    static _Thread_local uint16_t h[PCBM_CPU_LEVEL_COUNT][BLOCK];
    for (int k = 0; k < 2; k++) {
        for (unsigned p = 0; p < npaths; p++) {
            pcbm_cpu_level_set_thread(paths[p]);
            pcbm_encode_f32(dts[k], x, h[p], n);
        }
        for (unsigned p = 0; p < npaths; p++) {
            stats *s = &w->st[F_CONV][p];
            s->count += n;
            if (p == 0 || memcmp(h[p], h[0], n * 2) == 0)
                continue;
            for (size_t i = 0; i < n; i++)
                if (h[p][i] != h[0][i] && s->mismatch++ == 0)
                    s->first_mismatch = pcbm_f2u(x[i]);
        }
    }
}

static void *work(void *arg)
{
    worker *w = arg;
    float x[BLOCK];
    for (;;) {
        size_t it = atomic_fetch_add(&next_item, 1);
        if (it >= nitems)
            break;
        item *I = &items[it];
        uint64_t u = I->lo;
        float prev[PCBM_CPU_LEVEL_COUNT];
        for (unsigned p = 0; p < npaths; p++) {
            prev[p] = NAN;
            if (I->func != F_CONV && !I->first) {
                float xp = pcbm_u2f(I->lo - stride), yp;
                pcbm_cpu_level_set_thread(paths[p]);
                if (I->func == F_EXP)
                    pcbm_expf_n(&xp, &yp, 1);
                else
                    pcbm_tanhf_n(&xp, &yp, 1);
                prev[p] = yp;
            }
        }
        while (u <= I->hi) {
            size_t n = 0;
            for (; n < BLOCK && u <= I->hi; n++, u += stride)
                x[n] = pcbm_u2f((uint32_t)u);
            if (I->func == F_CONV)
                check_convert(x, n, w);
            else
                check_block(I->func, x, n, w, prev);
        }
    }
    pcbm_cpu_level_set_thread(PCBM_CPU_LEVEL_COUNT);
    return NULL;
}

static void add_range(int func, range r)
{
    /* split into chunks whose starts stay on the stride grid of the range */
    uint64_t span = (uint64_t)CHUNK * stride;
    for (uint64_t lo = r.lo; lo <= r.hi; lo += span) {
        uint64_t hi = lo + span - 1;
        if (hi > r.hi)
            hi = r.hi;
        items = realloc(items, (nitems + 1) * sizeof *items);
        if (!items) {
            perror("ulp-check");
            exit(2);
        }
        items[nitems++] = (item){func, (uint32_t)lo, (uint32_t)hi, lo == r.lo};
    }
}

static void merge_stats(stats *into, const stats *s)
{
    if (s->max_err > into->max_err) {
        into->max_err = s->max_err;
        into->worst = s->worst;
    }
    into->not_cr += s->not_cr;
    if (s->max_dist > into->max_dist)
        into->max_dist = s->max_dist;
    if (s->mismatch && !into->mismatch)
        into->first_mismatch = s->first_mismatch;
    into->mismatch += s->mismatch;
    into->count += s->count;
    into->nonmono += s->nonmono;
}

static void usage(void)
{
    fprintf(stderr, "usage: ulp-check [--stride N] [--threads N] [--func exp|tanh|all] [--no-convert]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    int want[F_COUNT] = {1, 1, 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stride") && i + 1 < argc) {
            long s = strtol(argv[++i], NULL, 10);
            if (s < 1)
                usage();
            stride = (uint32_t)s;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = strtol(argv[++i], NULL, 10);
            if (threads < 1)
                usage();
        } else if (!strcmp(argv[i], "--func") && i + 1 < argc) {
            const char *f = argv[++i];
            if (!strcmp(f, "exp"))
                want[F_TANH] = 0;
            else if (!strcmp(f, "tanh"))
                want[F_EXP] = 0;
            else if (strcmp(f, "all"))
                usage();
        } else if (!strcmp(argv[i], "--no-convert")) {
            want[F_CONV] = 0;
        } else {
            usage();
        }
    }
    if (threads < 1)
        threads = 1;

    pcbm_cpu_level best = pcbm_cpu_detect();
    for (int l = 0; l <= (int)best; l++)
        paths[npaths++] = (pcbm_cpu_level)l;

    /* exp: every float in [-104, 89]; tanh: every finite float; convert: all 2^32 patterns */
    if (want[F_EXP]) {
        add_range(F_EXP, (range){0x00000000u, pcbm_f2u(89.0f)});
        add_range(F_EXP, (range){0x80000000u, pcbm_f2u(-104.0f)});
    }
    if (want[F_TANH]) {
        add_range(F_TANH, (range){0x00000000u, 0x7f7fffffu});
        add_range(F_TANH, (range){0x80000000u, 0xff7fffffu});
    }
    if (want[F_CONV])
        add_range(F_CONV, (range){0x00000000u, 0xffffffffu});

    printf("ulp-check: %s (stride %u), %ld thread(s), paths:", stride == 1 ? "exhaustive" : "sampled",
           stride, threads);
    for (unsigned p = 0; p < npaths; p++)
        printf(" %s", pcbm_cpu_level_name(paths[p]));
    printf("\n");
    fflush(stdout);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws) {
        perror("ulp-check");
        return 2;
    }
    for (long t = 0; t < threads; t++)
        if (pthread_create(&ws[t].th, NULL, work, &ws[t]) != 0) {
            perror("ulp-check: pthread_create");
            return 2;
        }
    for (long t = 0; t < threads; t++)
        pthread_join(ws[t].th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    /* Decoders: all 2^16 patterns, every path against the scalar functions. */
    uint64_t dec_mismatch[PCBM_CPU_LEVEL_COUNT] = {0};
    {
        static uint16_t h[65536];
        static float f[65536];
        for (uint32_t i = 0; i < 65536; i++)
            h[i] = (uint16_t)i;
        for (unsigned p = 0; p < npaths; p++) {
            pcbm_cpu_level_set(paths[p]);
            for (int k = 0; k < 2; k++) {
                pcbm_decode_f32(k ? PCBM_DT_F16 : PCBM_DT_BF16, h, f, 65536);
                for (uint32_t i = 0; i < 65536; i++) {
                    float want_f = k ? pcbm_f16_to_f32(h[i]) : pcbm_bf16_to_f32(h[i]);
                    dec_mismatch[p] += pcbm_f2u(f[i]) != pcbm_f2u(want_f);
                }
            }
        }
        pcbm_cpu_level_set(best);
    }

    static const char *const fname[F_COUNT] = {"expf", "tanhf", "encode"};
    static const char *const frange[F_COUNT] = {"[-104, 89]", "all finite", "bf16/f16, 2^32"};
    static const double bound[F_COUNT] = {2.0, 3.0, 0.0};
    int ok = 1;
    printf("%-6s %-14s %-6s %11s %8s  %-29s %10s %7s %8s %8s\n", "func", "inputs", "path", "count",
           "max ulp", "worst input", "!=CR", "max |d|", "non-mono", "!=scalar");
    for (int fn = 0; fn < F_COUNT; fn++) {
        if (!want[fn])
            continue;
        for (unsigned p = 0; p < npaths; p++) {
            stats s = {0};
            for (long t = 0; t < threads; t++)
                merge_stats(&s, &ws[t].st[fn][p]);
            if (fn == F_CONV) {
                s.mismatch += dec_mismatch[p];
                printf("%-6s %-14s %-6s %11llu %8s  %-29s %10s %7s %8s %8llu\n", fname[fn], frange[fn],
                       pcbm_cpu_level_name(paths[p]), (unsigned long long)s.count, "-",
                       "(+ all 2^16 bf16/f16 decodes)", "-", "-", "-", (unsigned long long)s.mismatch);
            } else {
                char worst[64];
                snprintf(worst, sizeof worst, "%.9g (0x%08x)", (double)pcbm_u2f(s.worst), s.worst);
                printf("%-6s %-14s %-6s %11llu %8.4f  %-29s %10llu %7llu %8llu %8llu\n", fname[fn],
                       frange[fn], pcbm_cpu_level_name(paths[p]), (unsigned long long)s.count,
                       s.max_err, worst, (unsigned long long)s.not_cr,
                       (unsigned long long)s.max_dist, (unsigned long long)s.nonmono,
                       (unsigned long long)s.mismatch);
                if (s.max_err > bound[fn] || s.nonmono)
                    ok = 0;
            }
            if (s.mismatch) {
                ok = 0;
                printf("        first mismatch with the scalar path at input 0x%08x\n",
                       s.first_mismatch);
            }
        }
    }
    printf("time %.1f s; %s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9,
           ok ? "OK: within bounds (exp <= 2 ulp, tanh <= 3 ulp), monotonic, all paths bit-identical"
              : "FAILED");
    free(ws);
    free(items);
    return ok ? 0 : 1;
}

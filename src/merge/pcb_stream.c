/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcb_stream.c — PCB's global statistics in about two reads of the inputs (the default).
 *
 * The score threshold t depends on the clamp bound hi, which is only known exactly after a full
 * pass. So: (S1) a small sample of |tau| brackets lo and hi; (S2) a smaller sample of scores at
 * the two ends of the hi bracket places a narrow window around t; (F) one full pass then counts
 * |tau| exactly inside the lo/hi brackets (exact lo, hi) and, for NCAND candidate values of hi
 * spread over the bracket, histograms the scores that fall in the window and tracks each
 * candidate's maximum. At the end, t and m are interpolated (in count space) between the two
 * candidates around the exact hi. Every statistic is an integer count or a max, so the result
 * does not depend on threads, block size or machine. Whenever a bracket misses (the exact value
 * falls outside it), the exact radix passes run instead: slower, never wrong.
 *
 * Sample sizing rule: stride S1 = clamp(d*c / TAIL_TARGET, 24, 64) for d >= 1e8 (4 below): about
 * TAIL_TARGET sampled elements beyond the clamp quantile; S2 = 64; S3 = the larger of 1e-5*d/12
 * (every atom larger than the kept-count tolerance seen ~12 times) and the stride that fits the
 * window's pairs in PAIR_CAP. Reads: 2 + 1.125*(1/S1 + 1/64 + 1/S3) (16K-element units read with
 * their aligned pages): 110M parameters 2.09 (measured), 1B 2.07, 7B and 70B 2.04. Below
 * STREAM_MIN_D elements the exact statistics are used (5 reads of a small model).
 *
 * As rounds (method.h): PCB_R_S1, S2 and S3 (samples), PCB_R_FULL (the full pass); a miss jumps
 * to PCB's exact rounds (pcb_math.h). This file exports the rounds and knows nothing of pcb.c.
 */
#include "pcb_math.h"

#include "../kernels/dmath.h"
#include "../kernels/mkern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MIN_D (64ull << 20)  /* elements; smaller merges use the exact passes */
#define TAIL_TARGET 4096.0          /* sampled elements wanted beyond the clamp quantile */
#define S1_STRIDE_MIN_SMALL 4u      /* d < 1e8: the read budget allows a 1/4 sample */
#define S1_STRIDE_MIN 24u           /* d >= 1e8: at most a 1/24 sample (2.1 reads in all) */
#define S1_STRIDE_MAX 64u
#define S2_STRIDE 64u
#define NCAND 9u                    /* candidate values of hi */
#define SBINS 2048u                 /* score-window bins per candidate */
#define MBINS 16384u                /* |tau|-window bins */
#define Z_BOUND 5.0                 /* standard deviations of rank covered by the lo/hi brackets */
#define Z_THR 5.0                   /* ... by the threshold window */
#define HEAVY_MAX 128u              /* tie clusters (atoms) tracked exactly per task */
#define HEAVY_MIN_SAMPLES 4u        /* sampled occurrences that make a pair an atom */
#define PAIR_CAP (1u << 17)         /* sampled window pairs kept per task (more: no atoms) */
#define ATOM_EXPECT 12.0            /* expected sampled occurrences of an atom as large as the
                                       kept-count tolerance 1e-5*d (P(missed) ~ 0.2%) */
#define CLUSTER_MARGIN 0.0          /* extra bracket, as a fraction of the sampled tail */

typedef struct kwin {               /* whole coarse bins [p0, p1] of a key stream, fine bins */
    uint32_t p0, p1;
    unsigned shift;                 /* fine bin = (key - (p0 << 16)) >> shift */
} kwin;

/* What a score bin remembers beyond its count: the distinct (|tau|, z) input pairs that produced
 * its scores, with their counts, while there are at most SB_PAIRS of them. Ties are common in
 * bf16 task vectors (thousands of elements with the same |tau| and the same sum); when the
 * threshold falls in such a bin, the pairs are scored again at the exact bounds and the rank is
 * resolved exactly inside the bin. Sets of pairs merge exactly across threads. */
#define SB_PAIRS 3
typedef struct sbin {
    float mag[SB_PAIRS], z[SB_PAIRS];
    uint32_t cnt[SB_PAIRS];         /* a count that would overflow marks the bin mixed */
    uint8_t npairs, mixed;
} sbin;

static inline bool same_pair(float m1, float z1, float m2, float z2)
{
    return pcbm_fkey(m1) == pcbm_fkey(m2) && pcbm_fkey(z1) == pcbm_fkey(z2);
}

/* A canonical order on (|tau|, z) pairs, so choices among equal scores never depend on order. */
static inline bool rep_less(float m1, float z1, float m2, float z2)
{
    uint32_t a = pcbm_fkey(m1), b = pcbm_fkey(m2);
    return a < b || (a == b && pcbm_fkey(z1) < pcbm_fkey(z2));
}

static void sbin_add_n(sbin *b, float mag, float z, uint64_t n)
{
    if (b->mixed)
        return;
    for (unsigned j = 0; j < b->npairs; j++) {
        if (same_pair(b->mag[j], b->z[j], mag, z)) {
            if (n > UINT32_MAX - b->cnt[j])
                b->mixed = 1;
            else
                b->cnt[j] += (uint32_t)n;
            return;
        }
    }
    if (b->npairs == SB_PAIRS || n > UINT32_MAX) {
        b->mixed = 1;
        return;
    }
    b->mag[b->npairs] = mag;
    b->z[b->npairs] = z;
    b->cnt[b->npairs++] = (uint32_t)n;
}

static void sbin_merge(sbin *dst, const sbin *src)
{
    if (src->mixed)
        dst->mixed = 1;
    for (unsigned j = 0; j < src->npairs && !dst->mixed; j++)
        sbin_add_n(dst, src->mag[j], src->z[j], src->cnt[j]);
}

/* Per-thread counters of the full pass; thread 0's copy receives the sums. */
typedef struct fcount {
    uint64_t mwin[2][MBINS];        /* |tau| windows: [0] lo, [1] hi */
    uint64_t mbelow[2];
    uint64_t shist[NCAND][SBINS];
    sbin sb[NCAND][SBINS];          /* value range and representative of each bin */
    uint64_t sbelow[NCAND];
    uint64_t sbelow_all;
    float smax[NCAND];
    float amag[NCAND], az[NCAND];   /* the (|tau|, z) of each candidate's maximum */
    float smax_min;                 /* min over candidates of smax */
    uint64_t hcnt[HEAVY_MAX];       /* elements of each atom */
} fcount;

/* Atoms: (|tau|, z) pairs that many elements share near the threshold (ties in bf16 task
 * vectors), found in a sample and then counted exactly; sorted by key for lookup. */
typedef struct atoms {
    unsigned n;
    float mag[HEAVY_MAX], z[HEAVY_MAX];
} atoms;

/* Pairs a sample pass collects per (thread, task). */
typedef struct pairbuf {
    uint32_t n;
    bool overflow;
    float mag[PAIR_CAP], z[PAIR_CAP];
} pairbuf;

/* Per-thread scratch of the full pass: the elements of a tile it visits one by one. */
typedef struct fscratch {
    uint32_t idx[PCBM_TILE + 16];   /* the elements of a tile visited one by one */
    int atom[PCBM_TILE];            /* their atom (or -1) */
    uint32_t scored[PCBM_TILE];     /* for each, where its scores start in sc (or ~0) */
    float mag[NCAND * PCBM_TILE], z[NCAND * PCBM_TILE], hi[NCAND * PCBM_TILE];
    float sc[NCAND * PCBM_TILE];    /* [element][candidate] */
} fscratch;

typedef struct pcb_stream sstate;
struct pcb_stream {
    pcb_state *ps;
    unsigned s1;                    /* stride of sample pass 1 */
    unsigned N, threads;
    float lo_c[PCBM_MAX_TASKS];
    float cand[PCBM_MAX_TASKS][NCAND];
    kwin wlo[PCBM_MAX_TASKS], whi[PCBM_MAX_TASKS];
    float wl[PCBM_MAX_TASKS], wh[PCBM_MAX_TASKS], wscale[PCBM_MAX_TASKS];
    fcount *fc;                     /* [threads][N] */
    uint64_t *w1, *w2;              /* per tensor: weight of a sampled element (2^16 fixed point) */
    uint64_t n1, n2;                /* elements visited by sample passes 1 and 2 */
    pairbuf *pb;                    /* [threads][N], sample pass 3 */
    fscratch *fx;                   /* [threads] */
    unsigned s3;                    /* stride of sample pass 3 */
    atoms at[PCBM_MAX_TASKS];
};

#define WEIGHT_ONE 65536.0

/* Stratified sample: each tensor's sampled elements stand for all of its elements. Integer
 * weights keep the sample histograms exact and mergeable in any order. */
static uint64_t *sample_weights(const pcbm_layout *p, uint32_t stride, uint64_t *visited)
{
    uint64_t *w = pcbm_calloc(p->nt, sizeof *w);
    *visited = 0;
    for (size_t t = 0; w && t < p->nt; t++) {
        if (p->t[t].kind != PCBM_T_MERGE)
            continue;
        uint64_t n = pcbm_sample_count(&p->t[t], t, stride);
        *visited += n;
        w[t] = n ? (uint64_t)llround(WEIGHT_ONE * (double)p->t[t].units / (double)n) : 0;
    }
    return w;
}

static void tile_sample_mag(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    const sstate *ss = ((const pcb_state *)arg)->ss;
    uint64_t wt = ss->w1[tl->bv->tensor];
    for (unsigned i = 0; i < mc->ntasks; i++)
        pcbm_k_hist_coarse(tl->tau[i], tl->n, true, wt, pcbm_hset_local(&ss->ps->h, w, i));
}

uint64_t pcbm_pcb_stream_bytes(unsigned ntasks, unsigned threads)
{
    return (uint64_t)threads * (ntasks * (sizeof(fcount) + sizeof(pairbuf)) + sizeof(fscratch));
}

/* Streaming is the default for large merges written in 16-bit floats. An f32 output resolves
 * one region in 2^24: the interpolated threshold (relative error ~1e-6) and a clamp bound read at
 * fine-bin resolution would move most weighted averages by more than one ulp (measured on a 70M
 * f32 family: 4.9e-3 of elements), so f32 outputs get the exact passes unless --streaming. */
bool pcbm_pcb_stream_will_run(const pcbm_merge_opts *o, const pcbm_layout *p)
{
    if (o->scope != PCBM_SCOPE_GLOBAL || o->stats_mode == PCBM_STATS_EXACT || p->d == 0)
        return false;
    if (p->npartial) /* some task lacks a merged tensor: the samples assume every task has every
                        element; the exact rounds count each task's own elements */
        return false;
    if (o->stats_mode == PCBM_STATS_STREAMING)
        return true;
    if (p->d < STREAM_MIN_D)
        return false;
    for (size_t i = 0; i < p->nt; i++)
        if (p->t[i].kind == PCBM_T_MERGE &&
            (p->t[i].out_dt == PCBM_DT_F32 || p->t[i].out_dt == PCBM_DT_F64))
            return false;
    return true;
}

static unsigned s1_stride(uint64_t d, double c)
{
    double s = (double)d * c / TAIL_TARGET;
    unsigned smin = d < 100000000ull ? S1_STRIDE_MIN_SMALL : S1_STRIDE_MIN;
    if (s < smin)
        return smin;
    if (s > S1_STRIDE_MAX)
        return S1_STRIDE_MAX;
    return (unsigned)s;
}

/* x at clamp bounds (lo, hi), as pcbm_pcb_scores computes it. */
static inline float norm_mag(float tau, float lo, float hi)
{
    float den = hi - lo;
    float c = fminf(fmaxf(fabsf(tau), lo), hi);
    return den > 0.0f ? (c - lo) / den : 0.0f;
}

/* ---- sample pass 2: scores at both ends of the hi bracket ------------------------------- */

/* z and the scores at both ends of the hi bracket of task i, into sa, sb, z (tile scratch). */
static void bracket_scores(const sstate *ss, unsigned i, const pcbm_tile *tl, const float *sum,
                           float *sa, float *sb, float *z)
{
    pcbm_k_stream_scores(tl->tau[i], sum, ss->lo_c[i], ss->cand[i][0], ss->cand[i][NCAND - 1],
                         (float)ss->N, sa, sb, z, tl->n);
}

static void tile_sample_scores(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sstate *ss = ((pcb_state *)arg)->ss;
    float *sum = tl->tmp, *z = tl->tmp + PCBM_TILE, *sa = tl->tmp + 2 * PCBM_TILE,
          *sb = tl->tmp + 3 * PCBM_TILE;
    pcbm_k_sum((const float *const *)tl->tau, ss->N, sum, tl->n);
    uint64_t wt = ss->w2[tl->bv->tensor];
    for (unsigned i = 0; i < ss->N; i++) {
        bracket_scores(ss, i, tl, sum, sa, sb, z);
        pcbm_k_hist_coarse(sa, tl->n, false, wt, pcbm_hset_local(&ss->ps->h, w, 2 * i));
        pcbm_k_hist_coarse(sb, tl->n, false, wt, pcbm_hset_local(&ss->ps->h, w, 2 * i + 1));
    }
}

/* ---- sample pass 3: pairs in the threshold window -> atoms ---------------------------- */

static inline int pair_cmp(float m1, float z1, float m2, float z2)
{
    uint32_t a = pcbm_fkey(m1), b = pcbm_fkey(m2);
    if (a != b)
        return a < b ? -1 : 1;
    a = pcbm_fkey(z1);
    b = pcbm_fkey(z2);
    return a < b ? -1 : (a > b);
}

static int atom_find(const atoms *at, float mag, float z)
{
    int lo = 0, hi = (int)at->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = pair_cmp(at->mag[mid], at->z[mid], mag, z);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static void tile_sample_pairs(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sstate *ss = ((pcb_state *)arg)->ss;
    float *sum = tl->tmp, *z = tl->tmp + PCBM_TILE, *sa = tl->tmp + 2 * PCBM_TILE,
          *sb = tl->tmp + 3 * PCBM_TILE;
    uint32_t *idx = ss->fx[w].idx;
    pcbm_k_sum((const float *const *)tl->tau, ss->N, sum, tl->n);
    for (unsigned i = 0; i < ss->N; i++) {
        const float *tau = tl->tau[i];
        bracket_scores(ss, i, tl, sum, sa, sb, z);
        pairbuf *pb = &ss->pb[(size_t)w * ss->N + i];
        uint64_t below = 0;
        /* candidates: the elements in the window (and any NaN), in order */
        size_t m = pcbm_k_stream_select(sa, sb, ss->wl[i], ss->wh[i], INFINITY, tl->n, idx, &below);
        for (size_t j = 0; j < m; j++) {
            unsigned k = idx[j];
            if (fmaxf(sa[k], sb[k]) < ss->wl[i] || fminf(sa[k], sb[k]) > ss->wh[i])
                continue;
            if (pb->n == PAIR_CAP) {
                pb->overflow = true;
                continue;
            }
            pb->mag[pb->n] = fabsf(tau[k]);
            pb->z[pb->n++] = z[k];
        }
    }
}

typedef struct pairrun {
    float mag, z;
    uint64_t count;
} pairrun;

static int cmp_run_key(const void *a, const void *b)
{
    const pairrun *x = a, *y = b;
    return pair_cmp(x->mag, x->z, y->mag, y->z);
}

static int cmp_run_count(const void *a, const void *b)
{
    const pairrun *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return pair_cmp(x->mag, x->z, y->mag, y->z);
}

/* Atoms of task i: pairs sampled at least HEAVY_MIN_SAMPLES times, the HEAVY_MAX most frequent,
 * the same whatever the threads: pb[i] holds the pairs of every region once the round's
 * regions are combined, and they are sorted. */
static bool find_atoms(sstate *ss, unsigned i)
{
    const pairbuf *pb = &ss->pb[i];
    if (pb->overflow || pb->n > PAIR_CAP)
        return false;
    pairrun *r = pcbm_malloc((pb->n ? pb->n : 1) * sizeof *r);
    if (!r)
        return false;
    uint64_t n = 0;
    for (uint32_t k = 0; k < pb->n; k++)
        r[n++] = (pairrun){pb->mag[k], pb->z[k], 1};
    qsort(r, n, sizeof *r, cmp_run_key);
    uint64_t runs = 0;
    for (uint64_t k = 0; k < n; k++) {
        if (runs && cmp_run_key(&r[runs - 1], &r[k]) == 0)
            r[runs - 1].count++;
        else
            r[runs++] = r[k];
    }
    qsort(r, runs, sizeof *r, cmp_run_count);
    atoms *at = &ss->at[i];
    at->n = 0;
    for (uint64_t k = 0; k < runs && at->n < HEAVY_MAX && r[k].count >= HEAVY_MIN_SAMPLES; k++) {
        at->mag[at->n] = r[k].mag;
        at->z[at->n++] = r[k].z;
    }
    qsort(r, at->n, sizeof *r, cmp_run_key); /* r[0..at->n) are the atoms: sort them by key */
    for (unsigned k = 0; k < at->n; k++) {
        at->mag[k] = r[k].mag;
        at->z[k] = r[k].z;
    }
    free(r);
    return true;
}

/* ---- the full pass ---------------------------------------------------------------------- */

/* One element of the full pass that may fall in the score window or beat a candidate's
 * maximum: h is its atom (or -1), sc[c] its scores at the NCAND candidates of hi (computed
 * whenever this function reads them). */
static void element_full(const sstate *ss, unsigned i, fcount *fc, float sa, float sb, float tau,
                         float z, int h, const float *sc)
{
    float wl = ss->wl[i], wh = ss->wh[i];
    float smin = fminf(sa, sb), smax = fmaxf(sa, sb);
    bool in_window = !(smax < wl) && !(smin > wh);
    bool track_max = smax > fc->smax_min;
    const atoms *at = &ss->at[i];
    if (in_window && at->n && h >= 0) {
        fc->hcnt[h]++;
        in_window = false; /* counted exactly, kept out of the bins */
    }
    if (in_window || track_max) {
        for (unsigned c = 0; c < NCAND; c++) {
            float s = sc[c];
            if (track_max && (s > fc->smax[c] ||
                              (s == fc->smax[c] && rep_less(fabsf(tau), z, fc->amag[c], fc->az[c])))) {
                fc->smax[c] = s;
                fc->amag[c] = fabsf(tau);
                fc->az[c] = z;
            }
            if (!in_window)
                continue;
            if (s < wl) {
                fc->sbelow[c]++;
            } else if (s <= wh) {
                unsigned b = (unsigned)((s - wl) * ss->wscale[i]);
                b = b < SBINS ? b : SBINS - 1;
                sbin_add_n(&fc->sb[c][b], fabsf(tau), z, 1);
                fc->shist[c][b]++;
            }
        }
        if (track_max) {
            float mn = fc->smax[0];
            for (unsigned c = 1; c < NCAND; c++)
                mn = fminf(mn, fc->smax[c]);
            fc->smax_min = mn;
        }
    }
    if (smax < wl)
        fc->sbelow_all++;
}

/* The full pass, per task: exact |tau| counts in the lo/hi windows; the scores at both ends of
 * the hi bracket tell which elements can matter to the score windows or maxima (most cannot:
 * they only count below the window, and pcbm_k_stream_full finds most of those without scoring
 * them fully). Those are visited in order; the ones that need their scores at every candidate
 * (in the window and not an atom, or possibly above a candidate's maximum: the maxima only grow
 * during a tile, so the test at its start covers every later one) are scored first, all
 * (element, candidate) pairs in one vector sweep. */
static void tile_full(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sstate *ss = ((pcb_state *)arg)->ss;
    unsigned n = tl->n;
    float *sum = tl->tmp, *z = tl->tmp + PCBM_TILE, *sa = tl->tmp + 2 * PCBM_TILE,
          *sb = tl->tmp + 3 * PCBM_TILE;
    fscratch *fx = &ss->fx[w];
    pcbm_k_sum((const float *const *)tl->tau, ss->N, sum, n);
    for (unsigned i = 0; i < ss->N; i++) {
        fcount *fc = &ss->fc[(size_t)w * ss->N + i];
        const float *tau = tl->tau[i];
        pcbm_k_win wlo = {ss->wlo[i].p0, ss->wlo[i].p1, ss->wlo[i].shift, fc->mwin[0], &fc->mbelow[0]};
        pcbm_k_win whi = {ss->whi[i].p0, ss->whi[i].p1, ss->whi[i].shift, fc->mwin[1], &fc->mbelow[1]};
        pcbm_k_win_count(tau, n, &wlo, &whi);
        size_t m = pcbm_k_stream_full(tau, sum, ss->lo_c[i], ss->cand[i][0],
                                      ss->cand[i][NCAND - 1], (float)ss->N, ss->wl[i], ss->wh[i],
                                      fc->smax_min, n, sa, sb, z, fx->idx, &fc->sbelow_all);
        if (m == 0)
            continue;
        const atoms *at = &ss->at[i];
        float wl = ss->wl[i], wh = ss->wh[i], track = fc->smax_min;
        size_t np = 0;
        for (size_t j = 0; j < m; j++) {
            unsigned k = fx->idx[j];
            float smin = fminf(sa[k], sb[k]), smax = fmaxf(sa[k], sb[k]);
            bool in_window = !(smax < wl) && !(smin > wh);
            int h = in_window && at->n ? atom_find(at, fabsf(tau[k]), z[k]) : -1;
            fx->atom[j] = h;
            fx->scored[j] = ~0u;
            if ((in_window && h < 0) || smax > track) {
                fx->scored[j] = (uint32_t)np;
                for (unsigned c = 0; c < NCAND; c++, np++) {
                    fx->mag[np] = fabsf(tau[k]);
                    fx->z[np] = z[k];
                    fx->hi[np] = ss->cand[i][c];
                }
            }
        }
        pcbm_k_scores_at_hi(fx->mag, fx->z, ss->lo_c[i], fx->hi, (float)ss->N, fx->sc, np);
        for (size_t j = 0; j < m; j++) {
            unsigned k = fx->idx[j];
            const float *sc = fx->scored[j] == ~0u ? NULL : fx->sc + fx->scored[j];
            element_full(ss, i, fc, sa[k], sb[k], tau[k], z[k], fx->atom[j], sc);
        }
    }
}

/* ---- resolving the statistics ----------------------------------------------------------- */

static uint32_t bin_of_rank(const uint64_t *h, uint64_t rank)
{
    uint64_t acc = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++) {
        acc += h[b];
        if (acc > rank)
            return b;
    }
    return PCBM_QBINS - 1;
}

/* Bracket of the value at fraction q of a weighted sample of `visited` elements: whole coarse
 * bins covering z standard deviations of the rank, plus a margin for clustered samples. */
static bool bracket(const uint64_t *h, uint64_t visited, double q, double z, uint32_t *b0,
                    uint32_t *b1, uint32_t *bmid)
{
    uint64_t n = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++)
        n += h[b];
    if (visited < 64 || n == 0)
        return false;
    double scale = (double)n / (double)visited, nv = (double)visited;
    double tail = fmin(q, 1.0 - q) * nv;
    double r = q * (double)n;
    double delta = scale * (z * sqrt(nv * q * (1.0 - q)) + CLUSTER_MARGIN * tail + 4.0);
    double rl = r - delta, rh = r + delta;
    *b0 = bin_of_rank(h, rl < 0 ? 0 : (uint64_t)rl);
    *b1 = bin_of_rank(h, rh >= (double)(n - 1) ? n - 1 : (uint64_t)rh);
    *bmid = bin_of_rank(h, (uint64_t)r < n ? (uint64_t)r : n - 1);
    return true;
}

static kwin make_kwin(uint32_t b0, uint32_t b1)
{
    kwin k = {b0, b1, 0};
    uint64_t keys = ((uint64_t)(b1 - b0) + 1) << PCBM_QBITS;
    while ((keys >> k.shift) > MBINS)
        k.shift++;
    return k;
}

static float bin_lo_value(uint32_t b) { return pcbm_fkey_value(b << PCBM_QBITS); }
static float bin_hi_value(uint32_t b) { return pcbm_fkey_value((b << PCBM_QBITS) | 0xffffu); }

static bool plan_bounds(sstate *ss, const pcbm_mctx *mc)
{
    double c = mc->o->clamp_ratio, d = (double)mc->layout->d;
    double qlo = (double)pcbm_pcb_rank(d * c) / d, qhi = (double)pcbm_pcb_rank(d * (1.0 - c) - 1.0) / d;
    for (unsigned i = 0; i < ss->N; i++) {
        const uint64_t *h = pcbm_hset_total(&ss->ps->h, i);
        uint32_t a0, a1, am, b0, b1, bm;
        if (!bracket(h, ss->n1, qlo, Z_BOUND, &a0, &a1, &am) ||
            !bracket(h, ss->n1, qhi, Z_BOUND, &b0, &b1, &bm))
            return false;
        ss->wlo[i] = make_kwin(a0, a1);
        ss->whi[i] = make_kwin(b0, b1);
        ss->lo_c[i] = bin_lo_value(am);
        double hmin = bin_lo_value(b0), hmax = bin_hi_value(b1);
        if (!(hmax > ss->lo_c[i]))
            return false;
        for (unsigned k = 0; k < NCAND; k++)
            ss->cand[i][k] = (float)(hmin + (hmax - hmin) * k / (NCAND - 1));
    }
    return true;
}

static bool plan_windows(sstate *ss, const pcbm_mctx *mc)
{
    double d = (double)mc->layout->d, win_frac = 0.0;
    double q = (double)pcbm_pcb_rank(d * (1.0 - mc->o->density)) / d;
    for (unsigned i = 0; i < ss->N; i++) {
        float lo = INFINITY, hi = -INFINITY;
        for (unsigned e = 0; e < 2; e++) {
            uint32_t b0, b1, bm;
            if (!bracket(pcbm_hset_total(&ss->ps->h, 2 * i + e), ss->n2, q, Z_THR, &b0, &b1, &bm))
                return false;
            lo = fminf(lo, bin_lo_value(b0));
            hi = fmaxf(hi, bin_hi_value(b1));
        }
        if (!(hi > lo) || !isfinite(hi - lo))
            return false;
        ss->wl[i] = lo;
        ss->wh[i] = hi;
        ss->wscale[i] = (float)SBINS / (hi - lo);
        /* sampled mass that falls in the window at either end of the hi bracket */
        for (unsigned e = 0; e < 2; e++) {
            const uint64_t *h = pcbm_hset_total(&ss->ps->h, 2 * i + e);
            uint64_t in = 0, all = 0;
            for (uint32_t b = 0; b < PCBM_QBINS; b++) {
                all += h[b];
                if (bin_hi_value(b) >= lo && bin_lo_value(b) <= hi)
                    in += h[b];
            }
            if (all && (double)in / (double)all > win_frac)
                win_frac = (double)in / (double)all;
        }
    }
    /* pass 3 samples pairs in the window: often enough to see every atom larger than the
     * kept-count tolerance about ATOM_EXPECT times, rarely enough to fit PAIR_CAP pairs */
    double need = 1e-5 * d / ATOM_EXPECT, fit = win_frac * d / (0.5 * PAIR_CAP);
    double st3 = fmax(1.0, fmax(floor(need), ceil(fit)));
    ss->s3 = st3 > 1e9 ? 1000000000u : (unsigned)st3;
    return true;
}

/* dst += src: counts add, maxima keep the canonical representative, bins' pair sets unite. */
static void fcount_merge(fcount *dst, const fcount *src)
{
    for (unsigned j = 0; j < 2; j++) {
        dst->mbelow[j] += src->mbelow[j];
        for (unsigned b = 0; b < MBINS; b++)
            dst->mwin[j][b] += src->mwin[j][b];
    }
    for (unsigned c = 0; c < NCAND; c++) {
        dst->sbelow[c] += src->sbelow[c];
        if (src->smax[c] > dst->smax[c] ||
            (src->smax[c] == dst->smax[c] &&
             rep_less(src->amag[c], src->az[c], dst->amag[c], dst->az[c]))) {
            dst->smax[c] = src->smax[c];
            dst->amag[c] = src->amag[c];
            dst->az[c] = src->az[c];
        }
        for (unsigned b = 0; b < SBINS; b++) {
            sbin_merge(&dst->sb[c][b], &src->sb[c][b]);
            dst->shist[c][b] += src->shist[c][b];
        }
    }
    dst->sbelow_all += src->sbelow_all;
    for (unsigned h = 0; h < HEAVY_MAX; h++)
        dst->hcnt[h] += src->hcnt[h];
}

/* The counters of the N tasks: the full pass's accumulator region. */
static void fcounts_combine(void *dst, const void *src, size_t bytes)
{
    for (size_t k = 0; k < bytes / sizeof(fcount); k++)
        fcount_merge((fcount *)dst + k, (const fcount *)src + k);
}

/* dst gets src's pairs; more than PAIR_CAP in all marks it overflowing (no atoms then, as when
 * one machine's threads together sample more than PAIR_CAP). */
static void pairbuf_merge(pairbuf *dst, const pairbuf *src)
{
    if (src->overflow || (uint64_t)dst->n + src->n > PAIR_CAP) {
        dst->overflow = true;
        return;
    }
    memcpy(dst->mag + dst->n, src->mag, src->n * sizeof(float));
    memcpy(dst->z + dst->n, src->z, src->n * sizeof(float));
    dst->n += src->n;
}

static void pairbufs_combine(void *dst, const void *src, size_t bytes)
{
    for (size_t k = 0; k < bytes / sizeof(pairbuf); k++)
        pairbuf_merge((pairbuf *)dst + k, (const pairbuf *)src + k);
}

/* Exact value of rank `rank` inside a |tau| window (lower edge of its fine bin). */
static bool window_value(const uint64_t *win, uint64_t below, const kwin *kw, uint64_t rank,
                         float *out)
{
    if (rank < below)
        return false;
    uint64_t acc = below;
    uint32_t nb = (uint32_t)((((uint64_t)(kw->p1 - kw->p0) + 1) << PCBM_QBITS) >> kw->shift);
    for (uint32_t b = 0; b < nb; b++) {
        acc += win[b];
        if (acc > rank) {
            *out = pcbm_fkey_value((kw->p0 << PCBM_QBITS) + (b << kw->shift));
            return true;
        }
    }
    return false;
}

/* The score of one element at the exact bounds, computed as pcbm_pcb_scores does. */
static float exact_score(const sstate *ss, const pcb_state *ps, unsigned i, float mag, float z)
{
    float x = norm_mag(mag, ps->lo_v[i], ps->hi_v[i]);
    return pcbm_expf((float)ss->N * (x * x)) * z;
}

/* The threshold inside a bin of known composition: its pairs in the order of their exact scores,
 * the rank placed after `before` elements (interpolated) below the bin. */
static float pair_threshold(const sstate *ss, const pcb_state *ps, unsigned i, const sbin *sb,
                            double before, double target)
{
    float sc[SB_PAIRS];
    unsigned ord[SB_PAIRS];
    for (unsigned j = 0; j < sb->npairs; j++) {
        sc[j] = exact_score(ss, ps, i, sb->mag[j], sb->z[j]);
        ord[j] = j;
    }
    for (unsigned a = 1; a < sb->npairs; a++)
        for (unsigned b = a; b > 0 && sc[ord[b]] < sc[ord[b - 1]]; b--) {
            unsigned t = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = t;
        }
    double acc = before;
    for (unsigned j = 0; j < sb->npairs; j++) {
        acc += (double)sb->cnt[ord[j]];
        if (acc >= target)
            return sc[ord[j]];
    }
    return sc[ord[sb->npairs - 1]];
}

/* t and m at the exact bounds, interpolated between the candidates around hi. */
/* Lagrange weights of the three candidates j0..j0+2 at x (quadratic interpolation). */
static void lagrange3(const float *cand, unsigned j0, double x, double L[3])
{
    double x0 = cand[j0], x1 = cand[j0 + 1], x2 = cand[j0 + 2];
    L[0] = (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2));
    L[1] = (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2));
    L[2] = (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1));
}

/* The maximum at the exact bounds: the best of the candidates' maxima, rescored exactly. */
static float exact_max(const sstate *ss, const pcb_state *ps, unsigned i, const fcount *fc)
{
    float m = -INFINITY;
    for (unsigned c = 0; c < NCAND; c++)
        if (fc->smax[c] > -INFINITY)
            m = fmaxf(m, exact_score(ss, ps, i, fc->amag[c], fc->az[c]));
    return m;
}

typedef struct atom_at {
    float score;                    /* at the exact bounds */
    uint64_t count;
} atom_at;

static int cmp_atom_score(const void *a, const void *b)
{
    float x = ((const atom_at *)a)->score, y = ((const atom_at *)b)->score;
    return x < y ? -1 : (x > y);
}

/* t at the exact bounds. The counts of the scores that are not atoms are interpolated
 * (quadratically, in count space) between the three candidates of hi around the exact hi; atoms
 * are point masses at their exact scores. Sweeping up the value axis, t is the first atom whose
 * mass covers the target rank, or else a point inside the bin where the continuous mass does
 * (a bin of known composition is then resolved exactly). m: the candidates' maxima rescored. */
static bool resolve_scores(const sstate *ss, unsigned i, const fcount *fc, uint64_t d, double r,
                           pcb_state *ps)
{
    double hi_eq = (double)ps->hi_v[i] - ps->lo_v[i] + ss->lo_c[i];
    const float *cand = ss->cand[i];
    if (hi_eq < cand[0] || hi_eq > cand[NCAND - 1] || !(cand[NCAND - 1] > cand[0]))
        return false;
    unsigned near = 0;
    for (unsigned c = 1; c < NCAND; c++)
        if (fabs(cand[c] - hi_eq) < fabs(cand[near] - hi_eq))
            near = c;
    unsigned j0 = near == 0 ? 0 : (near == NCAND - 1 ? NCAND - 3 : near - 1);
    double L[3];
    lagrange3(cand, j0, hi_eq, L);
    ps->m_v[i] = exact_max(ss, ps, i, fc);

    const atoms *at = &ss->at[i];
    atom_at am[HEAVY_MAX];
    for (unsigned h = 0; h < at->n; h++)
        am[h] = (atom_at){exact_score(ss, ps, i, at->mag[h], at->z[h]), fc->hcnt[h]};
    qsort(am, at->n, sizeof am[0], cmp_atom_score);

    double target = (double)pcbm_pcb_rank((double)d * (1.0 - r)) + 0.5;
    double acc = (double)fc->sbelow_all;
    for (unsigned j = 0; j < 3; j++)
        acc += L[j] * (double)fc->sbelow[j0 + j];
    if (acc > target)
        return false;
    double width = ((double)ss->wh[i] - ss->wl[i]) / SBINS;
    unsigned h = 0;
    for (unsigned b = 0; b <= SBINS; b++) {
        double edge = ss->wl[i] + b * width;
        /* atoms below this bin's lower edge (or, after the last bin, all the rest) */
        while (h < at->n && (b == SBINS || am[h].score < edge)) {
            if (acc + (double)am[h].count >= target) {
                ps->t_v[i] = am[h].score;
                return true;
            }
            acc += (double)am[h].count;
            h++;
        }
        if (b == SBINS)
            break;
        double mb = 0;
        for (unsigned j = 0; j < 3; j++)
            mb += L[j] * (double)fc->shist[j0 + j][b];
        double atoms_in = 0;
        for (unsigned k = h; k < at->n && am[k].score < edge + width; k++)
            atoms_in += (double)am[k].count;
        if (acc + fmax(mb, 0.0) + atoms_in < target) {
            acc += mb;
            continue;
        }
        /* the target is reached inside this bin: by an atom of the bin, or by its continuum,
         * taken as spread evenly over the bin (interpolated masses can be slightly negative) */
        double cont = fmax(mb, 0.0);
        for (unsigned k = h; k < at->n && am[k].score < edge + width; k++) {
            double f = (am[k].score - edge) / width;
            if (acc + cont * f >= target)
                break;
            if (acc + cont * f + (double)am[k].count >= target) {
                ps->t_v[i] = am[k].score;
                return true;
            }
            acc += (double)am[k].count;
        }
        double frac = cont > 0 ? fmin(fmax((target - acc) / cont, 0.0), 1.0) : 1.0;
        ps->t_v[i] = (float)(edge + frac * width);
        const sbin *sb = &fc->sb[near][b];
        if (fc->shist[near][b] > 0 && !sb->mixed)
            ps->t_v[i] = pair_threshold(ss, ps, i, sb, acc, target);
        return true;
    }
    return false;
}

/* ---- the rounds ------------------------------------------------------------------------- */

void pcbm_pcb_stream_free(pcb_state *ps)
{
    sstate *ss = ps->ss;
    if (!ss)
        return;
    free(ss->fc);
    free(ss->w1);
    free(ss->w2);
    free(ss->pb);
    free(ss->fx);
    free(ss);
    ps->ss = NULL;
}

/* A bracket missed: the exact rounds decide, from the start or, when the full pass found the
 * exact bounds, from the scores. */
static int fallback(pcb_state *ps, bool bounds_known, const char *why)
{
    snprintf(ps->how, sizeof ps->how, "exact passes after the streaming estimate missed: %s", why);
    pcbm_info("statistics: %s; running the exact passes", why);
    pcbm_pcb_stream_free(ps);
    return bounds_known ? PCB_R_SCORE_COARSE : PCB_R_MAG_COARSE_FB;
}

static pcbm_status stream_alloc(pcb_state *ps, const pcbm_mctx *mc, pcbm_error *err)
{
    sstate *ss = ps->ss = pcbm_calloc(1, sizeof *ss);
    size_t tn = (size_t)mc->threads * mc->ntasks;
    if (ss) {
        *ss = (sstate){.ps = ps, .N = mc->ntasks, .threads = mc->threads};
        ss->s1 = s1_stride(mc->layout->d, mc->o->clamp_ratio);
        ss->fc = pcbm_calloc(tn, sizeof(fcount));
        ss->w1 = sample_weights(mc->layout, ss->s1, &ss->n1);
        ss->w2 = sample_weights(mc->layout, S2_STRIDE, &ss->n2);
        ss->pb = pcbm_calloc(tn, sizeof(pairbuf));
        ss->fx = pcbm_malloc((size_t)mc->threads * sizeof(fscratch));
    }
    if (!ss || !ss->fc || !ss->w1 || !ss->w2 || !ss->pb || !ss->fx) {
        pcbm_pcb_stream_free(ps);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for PCB statistics");
    }
    for (size_t j = 0; j < tn; j++) {
        for (unsigned c = 0; c < NCAND; c++)
            ss->fc[j].smax[c] = -INFINITY;
        ss->fc[j].smax_min = -INFINITY;
    }
    return PCBM_OK;
}

static pcbm_status begin_s1(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    pcb_state *ps = st;
    pcbm_status s = ps->ss ? PCBM_OK : stream_alloc(ps, mc, err);
    ps->d = mc->layout->d;
    pcbm_hset_clear(&ps->h);
    return s;
}

static pcbm_status begin_s2(void *st, const pcbm_mctx *mc, const pcbm_range *rg, pcbm_error *err)
{
    pcbm_hset_clear(&((pcb_state *)st)->h);
    return PCBM_OK;
}

static uint32_t stride_s1(const void *st) { return ((const pcb_state *)st)->ss->s1; }
static uint32_t stride_s2(const void *st) { return S2_STRIDE; }
static uint32_t stride_s3(const void *st) { return ((const pcb_state *)st)->ss->s3; }

static unsigned regions_hist(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    region[0] = pcbm_hset_region(&((pcb_state *)st)->h);
    return 1;
}

static unsigned regions_pairs(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    sstate *ss = ((pcb_state *)st)->ss;
    size_t bytes = ss->N * sizeof(pairbuf);
    region[0] = (pcbm_acc){ss->pb, bytes, pairbufs_combine, ss->pb, bytes};
    return 1;
}

static unsigned regions_full(void *st, const pcbm_mctx *mc, pcbm_acc *region)
{
    sstate *ss = ((pcb_state *)st)->ss;
    size_t bytes = ss->N * sizeof(fcount);
    region[0] = (pcbm_acc){ss->fc, bytes, fcounts_combine, ss->fc, bytes};
    return 1;
}

static int finish_s1(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    if (!plan_bounds(ps->ss, mc))
        return fallback(ps, false, "the sample is too small to bracket the statistics");
    return PCBM_ROUND_NEXT;
}

static int finish_s2(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    if (!plan_windows(ps->ss, mc))
        return fallback(ps, false, "the sample is too small to bracket the statistics");
    return PCBM_ROUND_NEXT;
}

static int finish_s3(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    sstate *ss = ((pcb_state *)st)->ss;
    for (unsigned i = 0; i < ss->N; i++)
        if (!find_atoms(ss, i))
            ss->at[i].n = 0; /* too many pairs in the window to tell atoms: interpolation only */
    return PCBM_ROUND_NEXT;
}

/* Exact lo and hi from the |tau| windows, then t and m resolved at them. */
static int finish_full(void *st, const pcbm_mctx *mc, const pcbm_range *rg)
{
    pcb_state *ps = st;
    sstate *ss = ps->ss;
    double c = mc->o->clamp_ratio, dd = (double)ps->d;
    for (unsigned i = 0; i < ss->N; i++) {
        const fcount *fc = &ss->fc[i];
        if (!window_value(fc->mwin[0], fc->mbelow[0], &ss->wlo[i], pcbm_pcb_rank(dd * c),
                          &ps->lo_v[i]) ||
            !window_value(fc->mwin[1], fc->mbelow[1], &ss->whi[i],
                          pcbm_pcb_rank(dd * (1.0 - c) - 1.0), &ps->hi_v[i]))
            return fallback(ps, false, "a clamp bound fell outside its sampled bracket");
    }
    for (unsigned i = 0; i < ss->N; i++)
        if (!resolve_scores(ss, i, &ss->fc[i], ps->d, mc->o->density, ps))
            return fallback(ps, true, "the score threshold fell outside its sampled window");
    unsigned natoms = 0;
    for (unsigned i = 0; i < ss->N; i++)
        natoms += ss->at[i].n;
    snprintf(ps->how, sizeof ps->how, "streaming: samples 1/%u, 1/%u and 1/%u, one full pass, %u "
             "candidates of hi, %u atoms", ss->s1, S2_STRIDE, ss->s3, NCAND, natoms);
    pcbm_pcb_stream_free(ps);
    return PCBM_ROUND_DONE;
}

const pcbm_round pcbm_pcb_stream_rounds[PCB_STREAM_ROUNDS] = {
    {"pcb sample |tau|", tile_sample_mag, stride_s1, false, begin_s1, regions_hist, finish_s1},
    {"pcb sample scores", tile_sample_scores, stride_s2, false, begin_s2, regions_hist, finish_s2},
    {"pcb sample pairs", tile_sample_pairs, stride_s3, false, NULL, regions_pairs, finish_s3},
    {"pcb full pass", tile_full, NULL, true, NULL, regions_full, finish_full},
};

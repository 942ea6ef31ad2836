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
 * Sample sizing rule: stride S1 = clamp(d*c / TAIL_TARGET, 32, 64), i.e. a fraction between 1/64
 * and 1/32 chosen to put about TAIL_TARGET sampled elements beyond the clamp quantile; S2 = 1/64.
 * Reads: 2 + 1/S1 + 1/64 of the inputs (1B params: 2.06; 7B and 70B: 2.03). Below STREAM_MIN_D
 * elements the exact statistics are used (5 reads of a small model).
 */
#include "pcb_internal.h"

#include "../kernels/dmath.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MIN_D (64ull << 20)  /* elements; smaller merges use the exact passes */
#define TAIL_TARGET 4096.0          /* sampled elements wanted beyond the clamp quantile */
#define S1_STRIDE_MIN 32u
#define S1_STRIDE_MAX 64u
#define S2_STRIDE 64u
#define NCAND 9u                    /* candidate values of hi */
#define SBINS 4096u                 /* score-window bins per candidate */
#define MBINS 16384u                /* |tau|-window bins */
#define Z_BOUND 5.0                 /* standard deviations of rank covered by the lo/hi brackets */
#define Z_THR 5.0                   /* ... by the threshold window */

typedef struct kwin {               /* whole coarse bins [p0, p1] of a key stream, fine bins */
    uint32_t p0, p1;
    unsigned shift;                 /* fine bin = (key - (p0 << 16)) >> shift */
} kwin;

/* What a score bin remembers beyond its count: the range of its values and, as a canonical
 * representative (least (tau, z) key pair, whatever the visiting order), the inputs of one of
 * its elements, so that a bin holding a single repeated value (ties are common in bf16 task
 * vectors) can have that value recomputed exactly at the exact bounds. */
typedef struct sbin {
    float min, max;
    float rep_tau, rep_z;
} sbin;

static inline bool rep_less(float t1, float z1, float t2, float z2)
{
    uint32_t a = pcbm_fkey(t1), b = pcbm_fkey(t2);
    return a < b || (a == b && pcbm_fkey(z1) < pcbm_fkey(z2));
}

static inline void sbin_add(sbin *b, uint64_t count_before, float s, float tau, float z)
{
    if (count_before == 0) {
        *b = (sbin){s, s, tau, z};
        return;
    }
    b->min = fminf(b->min, s);
    b->max = fmaxf(b->max, s);
    if (rep_less(tau, z, b->rep_tau, b->rep_z)) {
        b->rep_tau = tau;
        b->rep_z = z;
    }
}

static void sbin_merge(sbin *dst, uint64_t dcount, const sbin *src, uint64_t scount)
{
    if (scount == 0)
        return;
    if (dcount == 0) {
        *dst = *src;
        return;
    }
    dst->min = fminf(dst->min, src->min);
    dst->max = fmaxf(dst->max, src->max);
    if (rep_less(src->rep_tau, src->rep_z, dst->rep_tau, dst->rep_z)) {
        dst->rep_tau = src->rep_tau;
        dst->rep_z = src->rep_z;
    }
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
    float smax_min;                 /* min over candidates of smax */
} fcount;

typedef struct sstate {
    pcb_state *ps;
    unsigned N, threads;
    float lo_c[PCBM_MAX_TASKS];
    float cand[PCBM_MAX_TASKS][NCAND];
    kwin wlo[PCBM_MAX_TASKS], whi[PCBM_MAX_TASKS];
    float wl[PCBM_MAX_TASKS], wh[PCBM_MAX_TASKS], wscale[PCBM_MAX_TASKS];
    fcount *fc;                     /* [threads][N] */
} sstate;

uint64_t pcbm_pcb_stream_bytes(unsigned ntasks, unsigned threads)
{
    return (uint64_t)threads * ntasks * sizeof(fcount);
}

bool pcbm_pcb_stream_applies(const pcbm_mctx *mc)
{
    return mc->o->scope == PCBM_SCOPE_GLOBAL && !mc->o->exact &&
           (mc->plan->d >= STREAM_MIN_D || mc->o->streaming);
}

static unsigned s1_stride(uint64_t d, double c)
{
    double s = (double)d * c / TAIL_TARGET;
    if (s < S1_STRIDE_MIN)
        return S1_STRIDE_MIN;
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

static void tile_sample_scores(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sstate *ss = arg;
    unsigned n = tl->n;
    float *sum = tl->tmp, *z = tl->tmp + PCBM_TILE, *ea = tl->tmp + 2 * PCBM_TILE,
          *eb = tl->tmp + 3 * PCBM_TILE;
    const float nf = (float)ss->N;
    for (unsigned k = 0; k < n; k++) {
        float acc = 0.0f;
        for (unsigned i = 0; i < ss->N; i++)
            acc += tl->tau[i][k];
        sum[k] = acc;
    }
    for (unsigned i = 0; i < ss->N; i++) {
        const float *tau = tl->tau[i];
        float lo = ss->lo_c[i], ha = ss->cand[i][0], hb = ss->cand[i][NCAND - 1];
        for (unsigned k = 0; k < n; k++) {
            float xa = norm_mag(tau[k], lo, ha), xb = norm_mag(tau[k], lo, hb);
            ea[k] = nf * (xa * xa);
            eb[k] = nf * (xb * xb);
            z[k] = tau[k] * sum[k];
        }
        pcbm_expf_n(ea, ea, n);
        pcbm_expf_n(eb, eb, n);
        pcbm_tanhf_n(z, z, n);
        uint64_t *ha_h = pcbm_hset_local(&ss->ps->h, w, 2 * i);
        uint64_t *hb_h = pcbm_hset_local(&ss->ps->h, w, 2 * i + 1);
        for (unsigned k = 0; k < n; k++) {
            ha_h[pcbm_fkey(ea[k] * z[k]) >> PCBM_QBITS]++;
            hb_h[pcbm_fkey(eb[k] * z[k]) >> PCBM_QBITS]++;
        }
    }
}

/* ---- the full pass ---------------------------------------------------------------------- */

static inline void win_count(uint64_t *win, uint64_t *below, const kwin *kw, uint32_t key)
{
    uint32_t p = key >> PCBM_QBITS;
    if (p < kw->p0)
        (*below)++;
    else if (p <= kw->p1)
        win[(key - (kw->p0 << PCBM_QBITS)) >> kw->shift]++;
}

static void all_candidates(const sstate *ss, unsigned i, float tau, float z, fcount *fc,
                           bool track_max, bool histogram)
{
    const float nf = (float)ss->N;
    float lo = ss->lo_c[i], wl = ss->wl[i], wh = ss->wh[i];
    for (unsigned c = 0; c < NCAND; c++) {
        float x = norm_mag(tau, lo, ss->cand[i][c]);
        float s = pcbm_expf(nf * (x * x)) * z;
        if (track_max && s > fc->smax[c])
            fc->smax[c] = s;
        if (!histogram)
            continue;
        if (s < wl) {
            fc->sbelow[c]++;
        } else if (s <= wh) {
            unsigned b = (unsigned)((s - wl) * ss->wscale[i]);
            b = b < SBINS ? b : SBINS - 1;
            sbin_add(&fc->sb[c][b], fc->shist[c][b], s, tau, z);
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

static void tile_full(pcbm_mctx *mc, unsigned w, const pcbm_tile *tl, void *arg)
{
    sstate *ss = arg;
    unsigned n = tl->n;
    float *sum = tl->tmp, *z = tl->tmp + PCBM_TILE, *ea = tl->tmp + 2 * PCBM_TILE,
          *eb = tl->tmp + 3 * PCBM_TILE;
    const float nf = (float)ss->N;
    for (unsigned k = 0; k < n; k++) {
        float acc = 0.0f;
        for (unsigned i = 0; i < ss->N; i++)
            acc += tl->tau[i][k];
        sum[k] = acc;
    }
    for (unsigned i = 0; i < ss->N; i++) {
        fcount *fc = &ss->fc[(size_t)w * ss->N + i];
        const float *tau = tl->tau[i];
        float lo = ss->lo_c[i], ha = ss->cand[i][0], hb = ss->cand[i][NCAND - 1];
        for (unsigned k = 0; k < n; k++) {
            float xa = norm_mag(tau[k], lo, ha), xb = norm_mag(tau[k], lo, hb);
            ea[k] = nf * (xa * xa);
            eb[k] = nf * (xb * xb);
            z[k] = tau[k] * sum[k];
            uint32_t key = pcbm_fkey(fabsf(tau[k]));
            win_count(fc->mwin[0], &fc->mbelow[0], &ss->wlo[i], key);
            win_count(fc->mwin[1], &fc->mbelow[1], &ss->whi[i], key);
        }
        pcbm_expf_n(ea, ea, n);
        pcbm_expf_n(eb, eb, n);
        pcbm_tanhf_n(z, z, n);
        float wl = ss->wl[i], wh = ss->wh[i];
        for (unsigned k = 0; k < n; k++) {
            float sa = ea[k] * z[k], sb = eb[k] * z[k];
            float smin = fminf(sa, sb), smax = fmaxf(sa, sb);
            bool in_window = !(smax < wl) && !(smin > wh);
            bool track_max = smax > fc->smax_min;
            if (in_window || track_max)
                all_candidates(ss, i, tau[k], z[k], fc, track_max, in_window);
            if (smax < wl)
                fc->sbelow_all++;
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

/* Bracket of the value at fraction q of a sampled stream: whole coarse bins. */
static bool bracket(const uint64_t *h, double q, double z, uint32_t *b0, uint32_t *b1,
                    uint32_t *bmid)
{
    uint64_t n = 0;
    for (uint32_t b = 0; b < PCBM_QBINS; b++)
        n += h[b];
    if (n < 64)
        return false;
    double r = q * (double)n, delta = z * sqrt((double)n * q * (1.0 - q)) + 4.0;
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
    double c = mc->o->clamp_ratio, d = (double)mc->plan->d;
    double qlo = (double)pcbm_pcb_rank(d * c) / d, qhi = (double)pcbm_pcb_rank(d * (1.0 - c) - 1.0) / d;
    for (unsigned i = 0; i < ss->N; i++) {
        const uint64_t *h = pcbm_hset_total(&ss->ps->h, i);
        uint32_t a0, a1, am, b0, b1, bm;
        if (!bracket(h, qlo, Z_BOUND, &a0, &a1, &am) || !bracket(h, qhi, Z_BOUND, &b0, &b1, &bm))
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
    double d = (double)mc->plan->d;
    double q = (double)pcbm_pcb_rank(d * (1.0 - mc->o->density)) / d;
    for (unsigned i = 0; i < ss->N; i++) {
        float lo = INFINITY, hi = -INFINITY;
        for (unsigned e = 0; e < 2; e++) {
            uint32_t b0, b1, bm;
            if (!bracket(pcbm_hset_total(&ss->ps->h, 2 * i + e), q, Z_THR, &b0, &b1, &bm))
                return false;
            lo = fminf(lo, bin_lo_value(b0));
            hi = fmaxf(hi, bin_hi_value(b1));
        }
        if (!(hi > lo) || !isfinite(hi - lo))
            return false;
        ss->wl[i] = lo;
        ss->wh[i] = hi;
        ss->wscale[i] = (float)SBINS / (hi - lo);
    }
    return true;
}

static void reduce_counts(sstate *ss)
{
    for (unsigned i = 0; i < ss->N; i++) {
        fcount *dst = &ss->fc[i];
        for (unsigned w = 1; w < ss->threads; w++) {
            const fcount *src = &ss->fc[(size_t)w * ss->N + i];
            for (unsigned j = 0; j < 2; j++) {
                dst->mbelow[j] += src->mbelow[j];
                for (unsigned b = 0; b < MBINS; b++)
                    dst->mwin[j][b] += src->mwin[j][b];
            }
            for (unsigned c = 0; c < NCAND; c++) {
                dst->sbelow[c] += src->sbelow[c];
                dst->smax[c] = fmaxf(dst->smax[c], src->smax[c]);
                for (unsigned b = 0; b < SBINS; b++) {
                    sbin_merge(&dst->sb[c][b], dst->shist[c][b], &src->sb[c][b], src->shist[c][b]);
                    dst->shist[c][b] += src->shist[c][b];
                }
            }
            dst->sbelow_all += src->sbelow_all;
        }
    }
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
static float exact_score(const sstate *ss, const pcb_state *ps, unsigned i, float tau, float z)
{
    float x = norm_mag(tau, ps->lo_v[i], ps->hi_v[i]);
    return pcbm_expf((float)ss->N * (x * x)) * z;
}

/* t and m at the exact bounds, interpolated between the candidates around hi. */
static bool resolve_scores(const sstate *ss, unsigned i, const fcount *fc, uint64_t d, double r,
                           pcb_state *ps)
{
    double hi_eq = (double)ps->hi_v[i] - ps->lo_v[i] + ss->lo_c[i];
    const float *cand = ss->cand[i];
    if (hi_eq < cand[0] || hi_eq > cand[NCAND - 1])
        return false;
    unsigned k = 0;
    while (k + 2 < NCAND && hi_eq > cand[k + 1])
        k++;
    double span = (double)cand[k + 1] - cand[k];
    double a = span > 0 ? (hi_eq - cand[k]) / span : 0.0;
    double target = (double)pcbm_pcb_rank((double)d * (1.0 - r)) + 0.5;
    double prev = (1 - a) * (double)(fc->sbelow_all + fc->sbelow[k]) +
                  a * (double)(fc->sbelow_all + fc->sbelow[k + 1]);
    if (prev > target)
        return false;
    double width = ((double)ss->wh[i] - ss->wl[i]) / SBINS;
    for (unsigned b = 0; b < SBINS; b++) {
        double cur = prev + (1 - a) * (double)fc->shist[k][b] + a * (double)fc->shist[k + 1][b];
        if (cur >= target) {
            double frac = cur > prev ? (target - prev) / (cur - prev) : 0.5;
            ps->t_v[i] = (float)(ss->wl[i] + (b + frac) * width);
            ps->m_v[i] = (float)((1 - a) * fc->smax[k] + a * fc->smax[k + 1]);
            /* a bin of one repeated value at the nearer candidate: the threshold is that value,
             * recomputed at the exact bounds */
            unsigned near = a < 0.5 ? k : k + 1;
            const sbin *sb = &fc->sb[near][b];
            if (fc->shist[near][b] > 0 && sb->min == sb->max)
                ps->t_v[i] = exact_score(ss, ps, i, sb->rep_tau, sb->rep_z);
            return true;
        }
        prev = cur;
    }
    return false;
}

static pcbm_status fallback(pcbm_mctx *mc, pcb_state *ps, bool bounds_known, const char *why,
                            pcbm_error *err)
{
    snprintf(ps->how, sizeof ps->how, "exact passes after the streaming estimate missed: %s", why);
    pcbm_info("statistics: %s; running the exact passes", why);
    pcbm_status st = PCBM_OK;
    mc->passes_planned = 0;
    if (!bounds_known)
        st = pcbm_pcb_exact_bounds(mc, ps, 0, mc->plan->nt, err);
    if (st == PCBM_OK)
        st = pcbm_pcb_exact_scores(mc, ps, 0, mc->plan->nt, err);
    return st;
}

static pcbm_status sample_passes(pcbm_mctx *mc, sstate *ss, bool *ok, pcbm_error *err)
{
    pcb_state *ps = ss->ps;
    unsigned st1 = s1_stride(mc->plan->d, mc->o->clamp_ratio);
    pcbm_hset_clear(&ps->h);
    pcbm_status st = pcbm_run_tiles(mc, PCBM_PASS_STATS, 0, mc->plan->nt, st1,
                                    pcbm_pcb_tile_mag_coarse, ps, err);
    if (st != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ps->h);
    if (!(*ok = plan_bounds(ss, mc)))
        return PCBM_OK;
    pcbm_hset_clear(&ps->h);
    st = pcbm_run_tiles(mc, PCBM_PASS_STATS, 0, mc->plan->nt, S2_STRIDE, tile_sample_scores, ss, err);
    if (st != PCBM_OK)
        return st;
    pcbm_hset_reduce(&ps->h);
    *ok = plan_windows(ss, mc);
    return PCBM_OK;
}

pcbm_status pcbm_pcb_stream_stats(pcbm_mctx *mc, pcb_state *ps, pcbm_error *err)
{
    sstate ss = {.ps = ps, .N = mc->ntasks, .threads = mc->threads};
    ss.fc = pcbm_calloc((size_t)mc->threads * mc->ntasks, sizeof(fcount));
    if (!ss.fc)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for PCB statistics");
    for (size_t j = 0; j < (size_t)mc->threads * mc->ntasks; j++) {
        for (unsigned c = 0; c < NCAND; c++)
            ss.fc[j].smax[c] = -INFINITY;
        ss.fc[j].smax_min = -INFINITY;
    }
    mc->pass_no = 0;
    mc->passes_planned = 3;
    bool ok = false;
    ps->d = mc->plan->d;
    pcbm_status st = sample_passes(mc, &ss, &ok, err);
    if (st == PCBM_OK && !ok) {
        free(ss.fc);
        return fallback(mc, ps, false, "the sample is too small to bracket the statistics", err);
    }
    if (st == PCBM_OK) {
        mc->check_finite = !mc->o->allow_nonfinite;
        st = pcbm_run_tiles(mc, PCBM_PASS_STATS, 0, mc->plan->nt, 1, tile_full, &ss, err);
        mc->check_finite = 0;
    }
    if (st != PCBM_OK) {
        free(ss.fc);
        return st;
    }
    reduce_counts(&ss);
    double c = mc->o->clamp_ratio, dd = (double)ps->d;
    bool bounds_ok = true, scores_ok = true;
    for (unsigned i = 0; i < ss.N && bounds_ok; i++) {
        const fcount *fc = &ss.fc[i];
        bounds_ok = window_value(fc->mwin[0], fc->mbelow[0], &ss.wlo[i], pcbm_pcb_rank(dd * c),
                                 &ps->lo_v[i]) &&
                    window_value(fc->mwin[1], fc->mbelow[1], &ss.whi[i],
                                 pcbm_pcb_rank(dd * (1.0 - c) - 1.0), &ps->hi_v[i]);
    }
    for (unsigned i = 0; i < ss.N && bounds_ok && scores_ok; i++)
        scores_ok = resolve_scores(&ss, i, &ss.fc[i], ps->d, mc->o->density, ps);
    free(ss.fc);
    if (!bounds_ok)
        return fallback(mc, ps, false, "a clamp bound fell outside its sampled bracket", err);
    if (!scores_ok)
        return fallback(mc, ps, true, "the score threshold fell outside its sampled window", err);
    snprintf(ps->how, sizeof ps->how, "streaming: samples 1/%u and 1/%u, one full pass, %u "
             "candidates of hi", s1_stride(mc->plan->d, c), S2_STRIDE, NCAND);
    return PCBM_OK;
}

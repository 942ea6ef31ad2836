/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mkern.c — the scalar definitions of the merge kernels (mkern.h) and the run-time dispatch to
 * the AVX2 / AVX-512 forms (mkern_body.inc). The scalar code below is the meaning of every
 * kernel: the vector forms repeat its float operations in its order, lane by lane, and use these
 * functions for the elements that do not fill a vector.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "mkern_impl.h"

#include "../stats/qsel.h"
#include "convert.h"
#include "cpu.h"
#include "dmath.h"

#include <math.h>
#include <string.h>

/* ---- decoding ---------------------------------------------------------------------------- */

bool pcbm_ks_nonfinite(const float *x, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &x[k], 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return true;
    }
    return false;
}

bool pcbm_ks_tau(pcbm_dtype dt, const void *src, const float *base, float *theta, float *tau,
                 size_t n)
{
    if (!theta) { /* decode into tau, then subtract in place */
        pcbm_decode_f32(dt, src, tau, n);
        bool bad = pcbm_ks_nonfinite(tau, n);
        for (size_t k = 0; k < n; k++)
            tau[k] = tau[k] - base[k];
        return bad;
    }
    pcbm_decode_f32(dt, src, theta, n);
    for (size_t k = 0; k < n; k++)
        tau[k] = theta[k] - base[k];
    return pcbm_ks_nonfinite(theta, n);
}

/* ---- shared ------------------------------------------------------------------------------ */

void pcbm_ks_sum(const float *const *x, unsigned N, float *sum, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float acc = 0.0f;
        for (unsigned i = 0; i < N; i++)
            acc += x[i][k];
        sum[k] = acc;
    }
}

float pcbm_ks_max(const float *x, size_t n, float m)
{
    for (size_t k = 0; k < n; k++)
        m = pcbm_k_max1(m, x[k]);
    return m;
}

static inline uint32_t key_of(float x, bool absval) { return pcbm_fkey(absval ? fabsf(x) : x); }

void pcbm_ks_hist_coarse(const float *x, size_t n, bool absval, uint64_t w, uint64_t *h)
{
    for (size_t k = 0; k < n; k++)
        h[key_of(x[k], absval) >> PCBM_QBITS] += w;
}

void pcbm_ks_hist_fine(const float *x, size_t n, bool absval, uint32_t prefix, uint64_t *h)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t key = key_of(x[k], absval);
        if ((key >> PCBM_QBITS) == prefix)
            h[key & (PCBM_QBINS - 1)]++;
    }
}

static inline void win_one(const pcbm_k_win *w, uint32_t key)
{
    uint32_t p = key >> PCBM_QBITS;
    if (p < w->p0)
        (*w->below)++;
    else if (p <= w->p1)
        w->win[(key - (w->p0 << PCBM_QBITS)) >> w->shift]++;
}

void pcbm_ks_win_count(const float *tau, size_t n, const pcbm_k_win *a, const pcbm_k_win *b)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t key = pcbm_fkey(fabsf(tau[k]));
        win_one(a, key);
        win_one(b, key);
    }
}

/* ---- PCB --------------------------------------------------------------------------------- */

/* x at clamp bounds (lo, hi) */
static inline float norm_mag(float tau, float lo, float hi)
{
    float den = hi - lo;
    float c = fminf(fmaxf(fabsf(tau), lo), hi);
    return den > 0.0f ? (c - lo) / den : 0.0f;
}

/* ---- gates (mkern_impl.h) ---------------------------------------------------------------- */

/* The level of |tau| = a as the vector forms compute it: cvttps2dq of a * scale (out of range and
 * NaN: 0x80000000), then an unsigned min with L - 1. */
static unsigned gate_level(float a, float scale, unsigned L)
{
    float v = a * scale;
    uint32_t i = (v > -2147483648.0f && v < 2147483648.0f) ? (uint32_t)(int32_t)v : 0x80000000u;
    return i < L - 1 ? (unsigned)i : L - 1;
}

/* The largest y >= 0 with fl(e * tanhf(y)) <= bound (bound >= 0, so y = 0 qualifies): a
 * bisection over the bits of the non-negative floats, +Inf included (tanhf is monotonic). */
static float gate_y(float e, float bound)
{
    uint32_t ok = 0, bad = 0x7f800000u;
    if (e * pcbm_tanhf(INFINITY) <= bound)
        return INFINITY;
    while (bad - ok > 1) {
        uint32_t mid = ok + (bad - ok) / 2;
        if (e * pcbm_tanhf(pcbm_u2f(mid)) <= bound)
            ok = mid;
        else
            bad = mid;
    }
    return pcbm_u2f(ok);
}

static float gate_factor(float a, float lo, float hi, float nf)
{
    float x = norm_mag(a, lo, hi);
    return pcbm_expf(nf * (x * x));
}

static void gate_levels(float lo, float hi, float nf, float bound, float hi2,
                        unsigned L, float *scale, float *y, float *e)
{
    *scale = (float)L / hi;
    float a0 = 0.0f; /* the smallest |tau| of level j */
    for (unsigned j = 0; j < L; j++) {
        float a1 = hi; /* the last level: every |tau| clamps to at most hi */
        if (j + 1 < L) { /* the smallest |tau| of level j + 1 bounds level j from above */
            a1 = (float)(j + 1) / *scale;
            while (gate_level(a1, *scale, L) < j + 1)
                a1 = nextafterf(a1, INFINITY);
            while (a1 > 0.0f && gate_level(nextafterf(a1, 0.0f), *scale, L) >= j + 1)
                a1 = nextafterf(a1, 0.0f);
        }
        y[j] = gate_y(gate_factor(a1, lo, hi, nf), bound);
        e[j] = hi2 == hi2 ? gate_factor(a0, lo, hi2, nf) : 0.0f;
        a0 = a1;
    }
}

#define GATE_MEMO 128u
static _Thread_local pcbm_k_gate gate_memo[GATE_MEMO];
static _Thread_local unsigned gate_used, gate_last, gate_next;

const pcbm_k_gate *pcbm_k_gate_get(float lo, float hi, float nf, float bound, float hi2)
{
    uint32_t key[5] = {pcbm_f2u(lo), pcbm_f2u(hi), pcbm_f2u(nf), pcbm_f2u(bound), pcbm_f2u(hi2)};
    for (unsigned r = 0; r < gate_used; r++) { /* tasks come in turn: start after the last hit */
        unsigned j = (gate_last + 1 + r) % gate_used;
        pcbm_k_gate *g = &gate_memo[j];
        if (!memcmp(g->key, key, sizeof key)) {
            gate_last = j;
            return g->ok ? g : NULL;
        }
    }
    if (gate_next == GATE_MEMO) /* full: start over (a merge needs 2 per task) */
        gate_next = 0;
    unsigned j = gate_next++;
    gate_used = gate_used > j ? gate_used : j + 1;
    pcbm_k_gate *g = &gate_memo[j];
    memcpy(g->key, key, sizeof key);
    g->ok = isfinite(lo) && isfinite(hi) && isfinite(hi - lo) && hi > 0.0f && nf >= 0.0f &&
            nf <= 87.0f && bound >= 0.0f && isfinite(bound) &&
            isfinite((float)PCBM_GATE_L16 / hi) &&
            (hi2 != hi2 || (isfinite(hi2) && isfinite(hi2 - lo)));
    if (g->ok) {
        gate_levels(lo, hi, nf, bound, hi2, PCBM_GATE_L16, &g->scale32, g->y32, g->e32);
        gate_levels(lo, hi, nf, bound, hi2, PCBM_GATE_L8, &g->scale8, g->y8, g->e8);
    }
    gate_last = j;
    return g->ok ? g : NULL;
}

void pcbm_ks_pcb_score(const float *tau, const float *sum, float lo, float hi, float nf, float *s,
                       size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float x = norm_mag(tau[k], lo, hi);
        s[k] = pcbm_expf(nf * (x * x)) * pcbm_tanhf(tau[k] * sum[k]);
    }
}

uint64_t pcbm_ks_pcb_apply_task(const float *tau, const float *sum, float lo, float hi, float nf,
                                float t, float m, float lam, bool first, float *num, float *den,
                                size_t n)
{
    uint64_t kept = 0;
    for (size_t k = 0; k < n; k++) {
        float x = norm_mag(tau[k], lo, hi);
        float s = pcbm_expf(nf * (x * x)) * pcbm_tanhf(tau[k] * sum[k]);
        float wgt = (s > t && m > t) ? (s - t) / (m - t) : 0.0f;
        kept += wgt > 0.0f;
        float c = fminf(fmaxf(fabsf(tau[k]), lo), hi);
        float tc = tau[k] > 0.0f ? c : (tau[k] < 0.0f ? -c : 0.0f);
        float nu = first ? 0.0f : num[k], de = first ? 0.0f : den[k];
        num[k] = nu + (wgt * lam) * tc;
        den[k] = de + wgt;
    }
    return kept;
}

void pcbm_ks_pcb_apply_finish(const float *base, const float *num, const float *den, float *out,
                              size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = base[k] + num[k] / fmaxf(den[k], 1e-12f);
}

void pcbm_ks_stream_scores(const float *tau, const float *sum, float lo, float ha, float hb,
                           float nf, float *sa, float *sb, float *z, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float xa = norm_mag(tau[k], lo, ha), xb = norm_mag(tau[k], lo, hb);
        float zk = pcbm_tanhf(tau[k] * sum[k]);
        z[k] = zk;
        sa[k] = pcbm_expf(nf * (xa * xa)) * zk;
        sb[k] = pcbm_expf(nf * (xb * xb)) * zk;
    }
}

void pcbm_ks_scores_at(const float *mag, const float *z, float lo, float hi, float nf, float *s,
                       size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float x = norm_mag(mag[k], lo, hi);
        s[k] = pcbm_expf(nf * (x * x)) * z[k];
    }
}

void pcbm_ks_scores_at_hi(const float *mag, const float *z, float lo, const float *hi, float nf,
                          float *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float x = norm_mag(mag[k], lo, hi[k]);
        s[k] = pcbm_expf(nf * (x * x)) * z[k];
    }
}

size_t pcbm_ks_stream_select(const float *sa, const float *sb, float wl, float wh, float track,
                             size_t n, uint32_t *idx, uint64_t *below)
{
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        float smin = fminf(sa[k], sb[k]), smax = fmaxf(sa[k], sb[k]);
        bool in_window = !(smax < wl) && !(smin > wh);
        if (sa[k] != sa[k] || sb[k] != sb[k] || in_window || smax > track)
            idx[m++] = (uint32_t)k;
        else if (smax < wl)
            (*below)++;
    }
    return m;
}

size_t pcbm_ks_stream_full(const float *tau, const float *sum, float lo, float ha, float hb,
                           float nf, float wl, float wh, float track, size_t n, float *sa,
                           float *sb, float *z, uint32_t *idx, uint64_t *below)
{
    pcbm_ks_stream_scores(tau, sum, lo, ha, hb, nf, sa, sb, z, n);
    return pcbm_ks_stream_select(sa, sb, wl, wh, track, n, idx, below);
}

/* ---- TIES, DARE and the simple methods ----------------------------------------------------- */

uint64_t pcbm_ks_trim(const float *tau, float thr, float *out, size_t n)
{
    uint64_t kept = 0;
    for (size_t k = 0; k < n; k++) {
        bool on = fabsf(tau[k]) >= thr;
        out[k] = on ? tau[k] : 0.0f;
        kept += on;
    }
    return kept;
}

void pcbm_ks_dare_scale(const float *tau, const uint8_t *keep, float dens, float *out, size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = keep[k] ? tau[k] / dens : 0.0f;
}

void pcbm_ks_sign_votes(const float *const *v, unsigned N, size_t n, int64_t *pos, int64_t *neg)
{
    for (size_t k = 0; k < n; k++) {
        float s = 0.0f;
        for (unsigned i = 0; i < N; i++)
            s += v[i][k];
        *pos += s > 0.0f;
        *neg += s < 0.0f;
    }
}

void pcbm_ks_ties_apply(const float *const *v, unsigned N, const float *base, float majority,
                        float lam, float *out, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float s = 0.0f;
        for (unsigned i = 0; i < N; i++)
            s += v[i][k];
        float sign = s > 0.0f ? 1.0f : (s < 0.0f ? -1.0f : majority);
        float acc = 0.0f, cnt = 0.0f;
        for (unsigned i = 0; i < N; i++) {
            float x = v[i][k];
            if (sign > 0.0f ? x > 0.0f : x < 0.0f) {
                acc += x;
                cnt += 1.0f;
            }
        }
        out[k] = base[k] + lam * (acc / fmaxf(cnt, 1.0f));
    }
}

void pcbm_ks_task_sum(const float *const *tau, unsigned N, const float *lam, float lam0,
                      const float *base, float *out, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float acc = 0.0f;
        if (lam) {
            for (unsigned i = 0; i < N; i++)
                acc += lam[i] * tau[i][k];
        } else {
            for (unsigned i = 0; i < N; i++)
                acc += tau[i][k];
            acc = lam0 * acc;
        }
        out[k] = base[k] + acc;
    }
}

void pcbm_ks_linear(const float *const *theta, unsigned N, const float *w, float wsum, float *out,
                    size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float acc = 0.0f;
        for (unsigned i = 0; i < N; i++)
            acc += w[i] * theta[i][k];
        out[k] = acc / wsum;
    }
}

void pcbm_ks_axpy(float *acc, float p, const float *q, size_t n)
{
    for (size_t k = 0; k < n; k++)
        acc[k] = acc[k] + p * q[k];
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static const pcbm_kern_table kern_scalar = {
#define PCBM_K_ENTRY(r, name, params, args) .name = pcbm_ks_##name,
    PCBM_KERNELS(PCBM_K_ENTRY)
#undef PCBM_K_ENTRY
};

static inline const pcbm_kern_table *kern(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    switch (pcbm_cpu_level_get()) {
    case PCBM_CPU_AVX512:
        return &pcbm_kern_avx512;
    case PCBM_CPU_AVX2:
        return &pcbm_kern_avx2;
    default:
        break;
    }
#endif
    return &kern_scalar;
}

#define PCBM_K_WRAP(r, name, params, args) \
    r pcbm_k_##name params { return kern()->name args; }
PCBM_KERNELS(PCBM_K_WRAP)
#undef PCBM_K_WRAP

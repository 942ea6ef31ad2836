/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mkern.h — the element-wise loops of the merge methods (decode and task vectors, PCB scores and
 * weighted average, TIES trim/election/disjoint mean, task arithmetic, linear, histogram and
 * window updates of the statistics passes), each with a scalar definition (mkern.c) and AVX2 /
 * AVX-512 forms (mkern_body.inc) chosen at run time by kernels/cpu.h. Every form performs the
 * same float operations in the same order on every element, so results are bit-identical on
 * every path; integer counts are totals, in any order. Arrays may have any length and alignment.
 */
#ifndef PCBM_MKERN_H
#define PCBM_MKERN_H

#include "../common/common.h"

/* ---- decoding ---------------------------------------------------------------------------- */

/* theta[k] = decode(src[k]) (dtype F32/F16/BF16), tau[k] = theta[k] - base[k]; theta may be
 * NULL (not stored). Returns true when some decoded value is Inf or NaN. */
bool pcbm_k_tau(pcbm_dtype dt, const void *src, const float *base, float *theta, float *tau,
                size_t n);
/* true when some x[k] is Inf or NaN */
bool pcbm_k_nonfinite(const float *x, size_t n);

/* ---- shared ------------------------------------------------------------------------------ */

/* sum[k] = ((0 + x[0][k]) + x[1][k]) + ... + x[N-1][k] */
void pcbm_k_sum(const float *const *x, unsigned N, float *sum, size_t n);

/* The larger of m and x with +0 above -0 (NaN x is ignored): the same whatever the order of a
 * sequence of calls, so per-thread maxima reduce to the same bits. */
static inline float pcbm_k_max1(float m, float x)
{
    return (x > m || (x == m && x == 0.0f && !__builtin_signbit(x))) ? x : m;
}
/* pcbm_k_max1 over x[0..n), starting from m. */
float pcbm_k_max(const float *x, size_t n, float m);

/* Histograms over order-preserving keys (stats/qsel.h): key = pcbm_fkey(absval ? |x| : x).
 * coarse: h[key >> 16] += w;  fine: h[key & 0xffff] += 1 for the keys with key >> 16 == prefix. */
void pcbm_k_hist_coarse(const float *x, size_t n, bool absval, uint64_t w, uint64_t *h);
void pcbm_k_hist_fine(const float *x, size_t n, bool absval, uint32_t prefix, uint64_t *h);

/* A window of keys for the streaming statistics: whole coarse bins [p0, p1], fine bins of
 * 2^shift keys. For key = pcbm_fkey(|tau[k]|): key >> 16 < p0 counts in *below, keys inside
 * count in win[(key - (p0 << 16)) >> shift]. */
typedef struct pcbm_k_win {
    uint32_t p0, p1;
    unsigned shift;
    uint64_t *win;
    uint64_t *below;
} pcbm_k_win;
void pcbm_k_win_count(const float *tau, size_t n, const pcbm_k_win *a, const pcbm_k_win *b);

/* ---- PCB ----------------------------------------------------------------------------------
 * With den = hi - lo, c = fminf(fmaxf(|tau|, lo), hi), x = den > 0 ? (c - lo) / den : 0:
 * score = expf(nf * (x * x)) * tanhf(tau * sum)   (pcbm_expf, pcbm_tanhf). */
void pcbm_k_pcb_score(const float *tau, const float *sum, float lo, float hi, float nf, float *s,
                      size_t n);
/* One task's share of the weighted average, s being the score at (lo, hi):
 *   wgt = (s > t && m > t) ? (s - t) / (m - t) : 0
 *   tc  = tau > 0 ? c : (tau < 0 ? -c : 0)
 *   num = (first ? 0 : num) + (wgt * lam) * tc;   den = (first ? 0 : den) + wgt
 * Returns how many wgt > 0. */
uint64_t pcbm_k_pcb_apply_task(const float *tau, const float *sum, float lo, float hi, float nf,
                               float t, float m, float lam, bool first, float *num, float *den,
                               size_t n);
/* out[k] = base[k] + num[k] / fmaxf(den[k], 1e-12f) */
void pcbm_k_pcb_apply_finish(const float *base, const float *num, const float *den, float *out,
                             size_t n);

/* Streaming statistics: z = tanhf(tau * sum) and the scores at (lo, ha) and (lo, hb),
 * sa = expf(nf * xa^2) * z, sb = expf(nf * xb^2) * z. */
void pcbm_k_stream_scores(const float *tau, const float *sum, float lo, float ha, float hb,
                          float nf, float *sa, float *sb, float *z, size_t n);
/* Scores of the elements mag[j] (= |tau|), z[j] at (lo, hi): expf(nf * x^2) * z[j]. */
void pcbm_k_scores_at(const float *mag, const float *z, float lo, float hi, float nf, float *s,
                      size_t n);
/* The same with a bound hi[j] per element. */
void pcbm_k_scores_at_hi(const float *mag, const float *z, float lo, const float *hi, float nf,
                         float *s, size_t n);
/* Which elements the full pass must look at one by one (idx has room for n + 16): with smin = fminf(sa, sb) and
 * smax = fmaxf(sa, sb), every k where sa or sb is NaN, or !(smax < wl) && !(smin > wh), or
 * smax > track; their indices go to idx[] in order (returns how many). For every other
 * element, smax < wl adds one to *below. */
size_t pcbm_k_stream_select(const float *sa, const float *sb, float wl, float wh, float track,
                            size_t n, uint32_t *idx, uint64_t *below);

/* The full pass's work on one task: pcbm_k_stream_scores, then pcbm_k_stream_select, except
 * that sa, sb and z are only filled at the listed elements idx[0..m) (idx: room for n + 16).
 * Most elements cannot matter (their score is below the window); the vector forms find them
 * from tau * sum and sa alone and skip the rest of their work. */
size_t pcbm_k_stream_full(const float *tau, const float *sum, float lo, float ha, float hb,
                          float nf, float wl, float wh, float track, size_t n, float *sa,
                          float *sb, float *z, uint32_t *idx, uint64_t *below);

/* ---- TIES, DARE and the simple methods ----------------------------------------------------- */

/* out[k] = fabsf(tau[k]) >= thr ? tau[k] : 0; returns how many were kept */
uint64_t pcbm_k_trim(const float *tau, float thr, float *out, size_t n);
/* out[k] = keep[k] ? tau[k] / dens : 0  (keep: 0/1 bytes) */
void pcbm_k_dare_scale(const float *tau, const uint8_t *keep, float dens, float *out, size_t n);
/* s = sum of v[i][k] (pcbm_k_sum's order): *pos += s > 0, *neg += s < 0 */
void pcbm_k_sign_votes(const float *const *v, unsigned N, size_t n, int64_t *pos, int64_t *neg);
/* TIES's disjoint mean: s = sum of v[i][k], sign = s > 0 ? 1 : (s < 0 ? -1 : majority); over the
 * tasks in order, the values on sign's side (v > 0 when sign > 0, else v < 0) add into acc and
 * 1 into cnt; out[k] = base[k] + lam * (acc / fmaxf(cnt, 1)). */
void pcbm_k_ties_apply(const float *const *v, unsigned N, const float *base, float majority,
                       float lam, float *out, size_t n);
/* Task arithmetic: out[k] = base[k] + acc with acc = sum of lam[i] * tau[i][k] (from 0, in task
 * order) when lam is given, else acc = lam0 * (pcbm_k_sum of tau). */
void pcbm_k_task_sum(const float *const *tau, unsigned N, const float *lam, float lam0,
                     const float *base, float *out, size_t n);
/* acc[k] = acc[k] + p * q[k]: one rounding for the product and one for the sum (a LoRA factor
 * row, merge/lora_delta.c) */
void pcbm_k_axpy(float *acc, float p, const float *q, size_t n);
/* Linear: out[k] = (sum of w[i] * theta[i][k], from 0 in task order) / wsum */
void pcbm_k_linear(const float *const *theta, unsigned N, const float *w, float wsum, float *out,
                   size_t n);

#endif /* PCBM_MKERN_H */

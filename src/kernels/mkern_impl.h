/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mkern_impl.h — how mkern.c dispatches: the list of kernels (an X-macro), the table of one
 * code path's functions, the scalar definitions (which the vector forms also use for the last
 * elements of an array) and the AVX2 / AVX-512 tables (mkern_avx2.c, mkern_avx512.c).
 */
#ifndef PCBM_MKERN_IMPL_H
#define PCBM_MKERN_IMPL_H

#include "mkern.h"

/* X(return type, name, (parameters), (arguments)) for every pcbm_k_<name> of mkern.h */
#define PCBM_KERNELS(X) \
    X(bool, tau, (pcbm_dtype dt, const void *src, const float *base, float *theta, float *tau, \
      size_t n), \
      (dt, src, base, theta, tau, n)) \
    X(bool, nonfinite, (const float *x, size_t n), \
      (x, n)) \
    X(void, sum, (const float *const *x, unsigned N, float *sum, size_t n), \
      (x, N, sum, n)) \
    X(float, max, (const float *x, size_t n, float m), \
      (x, n, m)) \
    X(void, hist_coarse, (const float *x, size_t n, bool absval, uint64_t w, uint64_t *h), \
      (x, n, absval, w, h)) \
    X(void, hist_fine, (const float *x, size_t n, bool absval, uint32_t prefix, uint64_t *h), \
      (x, n, absval, prefix, h)) \
    X(void, win_count, (const float *tau, size_t n, const pcbm_k_win *a, const pcbm_k_win *b), \
      (tau, n, a, b)) \
    X(void, pcb_score, (const float *tau, const float *sum, float lo, float hi, float nf, float \
      *s, size_t n), \
      (tau, sum, lo, hi, nf, s, n)) \
    X(uint64_t, pcb_apply_task, (const float *tau, const float *sum, float lo, float hi, float \
      nf, float t, float m, float lam, bool first, float *num, float *den, size_t n), \
      (tau, sum, lo, hi, nf, t, m, lam, first, num, den, n)) \
    X(void, pcb_apply_finish, (const float *base, const float *num, const float *den, float \
      *out, size_t n), \
      (base, num, den, out, n)) \
    X(void, stream_scores, (const float *tau, const float *sum, float lo, float ha, float hb, \
      float nf, float *sa, float *sb, float *z, size_t n), \
      (tau, sum, lo, ha, hb, nf, sa, sb, z, n)) \
    X(void, scores_at, (const float *mag, const float *z, float lo, float hi, float nf, float \
      *s, size_t n), \
      (mag, z, lo, hi, nf, s, n)) \
    X(void, scores_at_hi, (const float *mag, const float *z, float lo, const float *hi, \
      float nf, float *s, size_t n), \
      (mag, z, lo, hi, nf, s, n)) \
    X(size_t, stream_select, (const float *sa, const float *sb, float wl, float wh, float track, \
      size_t n, uint32_t *idx, uint64_t *below), \
      (sa, sb, wl, wh, track, n, idx, below)) \
    X(size_t, stream_full, (const float *tau, const float *sum, float lo, float ha, float hb, \
      float nf, float wl, float wh, float track, size_t n, float *sa, float *sb, float *z, \
      uint32_t *idx, uint64_t *below), \
      (tau, sum, lo, ha, hb, nf, wl, wh, track, n, sa, sb, z, idx, below)) \
    X(uint64_t, trim, (const float *tau, float thr, float *out, size_t n), \
      (tau, thr, out, n)) \
    X(void, dare_scale, (const float *tau, const uint8_t *keep, float dens, float *out, size_t \
      n), \
      (tau, keep, dens, out, n)) \
    X(void, sign_votes, (const float *const *v, unsigned N, size_t n, int64_t *pos, int64_t \
      *neg), \
      (v, N, n, pos, neg)) \
    X(void, ties_apply, (const float *const *v, unsigned N, const float *base, float majority, \
      float lam, float *out, size_t n), \
      (v, N, base, majority, lam, out, n)) \
    X(void, task_sum, (const float *const *tau, unsigned N, const float *lam, float lam0, const \
      float *base, float *out, size_t n), \
      (tau, N, lam, lam0, base, out, n)) \
    X(void, linear, (const float *const *theta, unsigned N, const float *w, float wsum, float \
      *out, size_t n), \
      (theta, N, w, wsum, out, n)) \
    X(void, axpy, (float *acc, float p, const float *q, size_t n), \
      (acc, p, q, n))

typedef struct pcbm_kern_table {
#define PCBM_K_FIELD(r, name, params, args) r(*name) params;
    PCBM_KERNELS(PCBM_K_FIELD)
#undef PCBM_K_FIELD
} pcbm_kern_table;

/* The scalar definitions: pcbm_ks_<name>. */
#define PCBM_K_DECL(r, name, params, args) r pcbm_ks_##name params;
PCBM_KERNELS(PCBM_K_DECL)
#undef PCBM_K_DECL

/* A gate lets the vector forms skip the scores of elements that cannot pass a bound: with
 * x = norm_mag(|tau|, lo, hi) and s = fl(expf(nf * x^2) * tanhf(y)), y = tau * sum, every element
 * with y <= y<L>[level] has s <= bound, where level = min(trunc(|tau| * scale<L>), L - 1) as
 * unsigned (out of range and NaN: L - 1). Built from the scalar definitions: for each level, E =
 * the score factor at the smallest |tau| of the next level (at hi for the last), and y = the
 * largest y with fl(E * tanhf(y)) <= bound; expf, tanhf, rounding and the level are monotonic,
 * so the bound holds for every |tau| of the level. With a second bound hi2 (not NaN), e<L>[level]
 * is the factor expf(nf * x2^2) at hi2 of the level's smallest |tau|: a lower bound of the factor
 * of every |tau| of the level. Only filters: the callers compute every element they do not drop
 * exactly as before (NaN y is never dropped). Levels: 32 for AVX-512, 8 for AVX2 (one table
 * lookup). */
#define PCBM_GATE_L16 32u
#define PCBM_GATE_L8 8u
typedef struct pcbm_k_gate {
    uint32_t key[5];                /* bits of lo, hi, nf, bound, hi2 */
    bool ok;                        /* the gate applies */
    float scale32, scale8;
    float y32[PCBM_GATE_L16], y8[PCBM_GATE_L8];
    float e32[PCBM_GATE_L16], e8[PCBM_GATE_L8];
} pcbm_k_gate;

/* The gate of (lo, hi, nf, bound, hi2), memoized per thread; NULL when it does not apply (lo,
 * hi, hi2 not finite (hi2 may be NaN: no e tables), hi <= 0, nf outside [0, 87], bound < 0 or
 * not finite). */
const pcbm_k_gate *pcbm_k_gate_get(float lo, float hi, float nf, float bound, float hi2);

#if defined(__x86_64__) && defined(__GNUC__)
extern const pcbm_kern_table pcbm_kern_avx2, pcbm_kern_avx512;
#endif

#endif /* PCBM_MKERN_IMPL_H */

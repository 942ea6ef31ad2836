/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rowsum.c — exact per-vector sums (rowsum.h): the views of a tensor as rows or columns, the
 * maximum round, the int128 fixed-point sums and their combine.
 */
#include "rowsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROWSUM_BITS 124     /* a vector's sum stays below 2^124 in magnitude */

/* Rows (along the last dimension) and columns (along the first) of output tensor t. */
static void view(const pcbm_layout *p, size_t t, uint64_t *rows, uint64_t *rowlen,
                 uint64_t *first, uint64_t *colcount)
{
    const pcbm_out_tensor *ot = &p->out_tensors[t];
    uint64_t n = 1;
    for (unsigned k = 0; k < ot->ndim; k++)
        n *= ot->shape[k];
    uint64_t last = ot->ndim ? ot->shape[ot->ndim - 1] : 1, d0 = ot->ndim ? ot->shape[0] : 1;
    *rowlen = last ? last : 1;
    *rows = last ? n / last : 0;
    *first = d0 ? d0 : 1;
    *colcount = d0 ? n / d0 : 0;
}

/* The most vectors (rows or columns) and the most columns of p's merged tensors. */
static void max_view(const pcbm_layout *p, uint64_t *vectors, uint64_t *colmax)
{
    *vectors = *colmax = 1;
    for (size_t t = 0; t < p->nt; t++) {
        if (p->t[t].kind != PCBM_T_MERGE)
            continue;
        uint64_t rows, rowlen, first, cols;
        view(p, t, &rows, &rowlen, &first, &cols);
        *vectors = PCBM_MAX(*vectors, PCBM_MAX(rows, cols));
        *colmax = PCBM_MAX(*colmax, cols);
    }
}

uint64_t pcbm_rowsum_max_vectors(const pcbm_layout *p)
{
    uint64_t v, c;
    max_view(p, &v, &c);
    return v;
}

uint64_t pcbm_rowsum_max_cols(const pcbm_layout *p)
{
    uint64_t v, c;
    max_view(p, &v, &c);
    return c;
}

uint64_t pcbm_rowsum_bytes(uint64_t vectors, uint64_t cols, unsigned nsums, unsigned threads)
{
    return (vectors + (uint64_t)threads * cols) * nsums * sizeof(pcbm_i128) +
           (uint64_t)threads * sizeof(float);
}

pcbm_status pcbm_rowsum_init(pcbm_rowsum *r, uint64_t vectors, uint64_t cols, unsigned nsums,
                             unsigned threads, const char *who, pcbm_error *err)
{
    memset(r, 0, sizeof *r);
    r->cap = vectors;
    r->ccap = cols;
    r->nsums = nsums;
    r->threads = threads;
    r->maxloc = pcbm_calloc(threads, sizeof(float));
    r->loc = pcbm_calloc((size_t)threads * cols * nsums, sizeof(pcbm_i128));
    r->tot = pcbm_calloc((size_t)vectors * nsums, sizeof(pcbm_i128));
    if (!r->maxloc || !r->loc || !r->tot) {
        pcbm_rowsum_free(r);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory for %s per-row statistics (%llu "
                         "vectors of %u sums)", who, (unsigned long long)vectors, nsums);
    }
    return PCBM_OK;
}

void pcbm_rowsum_free(pcbm_rowsum *r)
{
    free(r->maxloc);
    free(r->loc);
    free(r->tot);
    memset(r, 0, sizeof *r);
}

void pcbm_rowsum_shape(pcbm_rowsum *r, const pcbm_layout *p, size_t t, bool by_col)
{
    uint64_t rows, rowlen, first, cols;
    view(p, t, &rows, &rowlen, &first, &cols);
    r->by_col = by_col;
    if (by_col) {
        r->nvec = cols;
        r->len = first;
        r->cols = cols ? cols : 1;
    } else {
        r->nvec = rows;
        r->len = rowlen;
        r->cols = rowlen;
    }
}

/* ---- round 1 ---- */

void pcbm_rowsum_max_clear(pcbm_rowsum *r)
{
    r->maxtot = 0.0f;
    memset(r->maxloc, 0, r->threads * sizeof(float));
}

void pcbm_rowsum_max_add(pcbm_rowsum *r, unsigned worker, const float *v, unsigned n)
{
    float m = r->maxloc[worker];
    for (unsigned k = 0; k < n; k++) {
        float a = fabsf(v[k]);
        if (a > m)
            m = a;
    }
    r->maxloc[worker] = m;
}

pcbm_acc pcbm_rowsum_max_region(pcbm_rowsum *r)
{
    return (pcbm_acc){&r->maxtot, sizeof(float), pcbm_acc_max_f32, r->maxloc, sizeof(float)};
}

void pcbm_rowsum_set_scale(pcbm_rowsum *r)
{
    int e = 0, l = 0;
    double m = r->maxtot;
    if (!(m <= 3.4028234663852886e38)) /* NaN or Inf (non-finite inputs allowed): the largest */
        m = 3.4028234663852886e38;
    if (m > 0.0)
        (void)frexp(m, &e); /* m < 2^e */
    while (l < 63 && ((uint64_t)1 << l) < r->len)
        l++;
    r->s = m > 0.0 ? ROWSUM_BITS - 2 * e - l : 0;
    r->scale = ldexp(1.0, r->s);
}

/* ---- round 2 ---- */

void pcbm_rowsum_clear(pcbm_rowsum *r)
{
    size_t n = (size_t)r->nvec * r->nsums;
    memset(r->tot, 0, n * sizeof(pcbm_i128));
    for (unsigned w = 0; r->by_col && w < r->threads; w++)
        memset(r->loc + (size_t)w * r->ccap * r->nsums * 2, 0, n * sizeof(pcbm_i128));
}

/* One product, scaled and truncated: exact up to the truncation (a power-of-two scale), a
 * function of a and b alone. Non-finite products (allow_nonfinite) count as 0. */
static inline pcbm_i128 fixed(double p, double scale)
{
    double x = p * scale;
    return isfinite(x) ? (pcbm_i128)x : 0;
}

/* A sum's two words (low, high) as one number, and x added to them (mod 2^128: exact, since no
 * sum leaves the int128 range). */
static inline pcbm_i128 words_value(const uint64_t *w)
{
    return (pcbm_i128)(((unsigned __int128)w[1] << 64) | w[0]);
}
static inline void words_add(uint64_t *w, pcbm_i128 x)
{
    uint64_t lo = (uint64_t)x, hi = (uint64_t)((unsigned __int128)x >> 64), old = w[0];
    w[0] = old + lo;
    w[1] += hi + (w[0] < old);
}
/* The same by several threads at once: the low word's add tells its own carry, and the high
 * words get every carry, so the total is exact in any interleaving. */
static inline void words_add_atomic(uint64_t *w, pcbm_i128 x)
{
    uint64_t lo = (uint64_t)x, hi = (uint64_t)((unsigned __int128)x >> 64);
    uint64_t old = __atomic_fetch_add(&w[0], lo, __ATOMIC_RELAXED);
    __atomic_fetch_add(&w[1], hi + (old + lo < old), __ATOMIC_RELAXED);
}

void pcbm_rowsum_dot(pcbm_rowsum *r, unsigned worker, unsigned k, uint64_t start,
                     const float *a, const float *b, unsigned n)
{
    unsigned ns = r->nsums;
    double sc = r->scale;
    if (r->by_col) {
        uint64_t *x = r->loc + (size_t)worker * r->ccap * ns * 2;
        uint64_t c = start % r->cols;
        for (unsigned j = 0; j < n; j++) {
            words_add(x + 2 * (c * ns + k), fixed((double)a[j] * (double)b[j], sc));
            if (++c == r->cols)
                c = 0;
        }
        return;
    }
    for (unsigned j = 0; j < n;) {
        uint64_t e = start + j, v = e / r->cols;
        unsigned run = (unsigned)PCBM_MIN((uint64_t)(n - j), r->cols - e % r->cols);
        pcbm_i128 s = 0;
        for (unsigned q = 0; q < run; q++)
            s += fixed((double)a[j + q] * (double)b[j + q], sc);
        words_add_atomic(r->tot + 2 * (v * ns + k), s);
        j += run;
    }
}

static void combine_words(void *dst, const void *src, size_t bytes)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t k = 0; k < bytes / sizeof(uint64_t); k += 2)
        words_add(d + k, words_value(s + k));
}

pcbm_acc pcbm_rowsum_region(pcbm_rowsum *r)
{
    /* rows were added to the totals; columns are in the threads' buffers */
    size_t bytes = (size_t)r->nvec * r->nsums * sizeof(pcbm_i128);
    return (pcbm_acc){r->tot, bytes, combine_words, r->by_col ? r->loc : NULL,
                      (size_t)r->ccap * r->nsums * sizeof(pcbm_i128)};
}

double pcbm_rowsum_value(const pcbm_rowsum *r, uint64_t v, unsigned k)
{
    return ldexp((double)words_value(r->tot + 2 * (v * r->nsums + k)), -r->s);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rowsum.h — exact sums per row or per column of one tensor, for the per-row forms of nuslerp
 * (nuslerp_flatten false) and model_stock (filter_wise): norms and dot products of every vector
 * along the tensor's last dimension (rows of the [units / last, last] view) or along its first
 * (columns of the [first, units / first] view: nuslerp's row_wise). A vector spans tiles, blocks
 * and threads, so its sums must not depend on the cut: two rounds. The first finds the exact
 * maximum M of |value| over the tensor (a float max combines exactly); the second adds every
 * product a·b (exact in double for float32 a, b) scaled by 2^s and truncated to an int128,
 * where s is the largest with len·M²·2^s < 2^124, so a vector's sum cannot overflow and
 * integer additions make it the same number in any order. The truncation is a function of the
 * element alone, so the sums are too: what a vector loses is below 2^-124 of len·M², far below
 * float32. Buffers are sized once for the largest merged tensor and come out of the budget
 * (pcbm_rowsum_bytes in the method's stats_bytes). A sum is kept as two 64-bit words (low, high):
 * a row's tile adds its partial sum into the shared totals atomically (the low word, then the
 * high word plus the carry the low word's add produced: exact, whatever the interleaving), so
 * rows need no copy per thread; a tile adds to many columns, element by element, so columns
 * are summed in per-thread buffers sized for the most columns a tensor has, then combined.
 */
#ifndef PCBM_ROWSUM_H
#define PCBM_ROWSUM_H

#include "method.h"

typedef __int128 pcbm_i128;

typedef struct pcbm_rowsum {
    uint64_t cap;               /* vectors the totals hold (the largest tensor's) */
    uint64_t ccap;              /* columns a thread's buffer holds (the most of any tensor) */
    unsigned nsums, threads;
    /* the current tensor */
    bool by_col;                /* vectors are the columns of the [len, cols] view */
    uint64_t nvec, len, cols;   /* vectors, elements of one, row length of the view */
    double scale;               /* 2^s */
    int s;
    float *maxloc;              /* [threads] max |value| */
    float maxtot;
    uint64_t *loc;              /* [threads][ccap * nsums][2]: columns, per thread */
    uint64_t *tot;              /* [cap * nsums][2] (low, high), vector after vector */
} pcbm_rowsum;

/* The most vectors a merged tensor of p has (rows or columns, whichever is more), and the most
 * columns. */
uint64_t pcbm_rowsum_max_vectors(const pcbm_layout *p);
uint64_t pcbm_rowsum_max_cols(const pcbm_layout *p);
/* Bytes of the buffers for `vectors` vectors (at most `cols` of them columns) of `nsums` sums
 * and `threads` threads. */
uint64_t pcbm_rowsum_bytes(uint64_t vectors, uint64_t cols, unsigned nsums, unsigned threads);
pcbm_status pcbm_rowsum_init(pcbm_rowsum *r, uint64_t vectors, uint64_t cols, unsigned nsums,
                             unsigned threads, const char *who, pcbm_error *err);
void pcbm_rowsum_free(pcbm_rowsum *r);

/* Tensor t's vectors: its rows (by_col false) or its columns. */
void pcbm_rowsum_shape(pcbm_rowsum *r, const pcbm_layout *p, size_t t, bool by_col);
/* The vector element `elem` (index in the tensor) belongs to. */
static inline uint64_t pcbm_rowsum_vec(const pcbm_rowsum *r, uint64_t elem)
{
    return r->by_col ? elem % r->cols : elem / r->cols;
}

/* Round 1: the maximum |value|. */
void pcbm_rowsum_max_clear(pcbm_rowsum *r);
void pcbm_rowsum_max_add(pcbm_rowsum *r, unsigned worker, const float *v, unsigned n);
pcbm_acc pcbm_rowsum_max_region(pcbm_rowsum *r);
/* After round 1: the scale of round 2. */
void pcbm_rowsum_set_scale(pcbm_rowsum *r);

/* Round 2: sum k of every vector += a·b over the tile's n elements from `start`. */
void pcbm_rowsum_clear(pcbm_rowsum *r);
void pcbm_rowsum_dot(pcbm_rowsum *r, unsigned worker, unsigned k, uint64_t start,
                     const float *a, const float *b, unsigned n);
pcbm_acc pcbm_rowsum_region(pcbm_rowsum *r);
/* After round 2: sum k of vector v, rounded to the nearest double. */
double pcbm_rowsum_value(const pcbm_rowsum *r, uint64_t v, unsigned k);

#endif /* PCBM_ROWSUM_H */

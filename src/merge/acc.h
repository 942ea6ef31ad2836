/* SPDX-License-Identifier: Apache-2.0 */
/*
 * acc.h — accumulators of a statistics round: regions that combine exactly (integer sums, the
 * canonical float maximum, set unions), so the sum over threads or over the units of a split
 * merge does not depend on order or grouping, and the statistics are the bytes one machine
 * computes.
 */
#ifndef PCBM_ACC_H
#define PCBM_ACC_H

#include <stddef.h>

/* dst = dst (+) src over `bytes` bytes; must not depend on the order or grouping of regions. */
typedef void (*pcbm_acc_combine)(void *dst, const void *src, size_t bytes);

typedef struct pcbm_acc {
    void *data;             /* the combined value (what a split merge saves and loads) */
    size_t bytes;
    pcbm_acc_combine combine;
    /* The threads' regions, `stride` bytes apart, or NULL. When local == data, thread 0's region is
     * the combined value and threads 1.. are combined into it; otherwise data starts from the
     * combine's identity (set by the round's begin) and every thread's region is combined in. */
    void *local;
    size_t stride;
} pcbm_acc;

void pcbm_acc_sum_u64(void *dst, const void *src, size_t bytes);
void pcbm_acc_sum_i64(void *dst, const void *src, size_t bytes);
void pcbm_acc_max_f32(void *dst, const void *src, size_t bytes);

/* data (+)= every thread's region (see pcbm_acc.local). */
void pcbm_acc_reduce_threads(const pcbm_acc *acc, unsigned threads);

#endif /* PCBM_ACC_H */

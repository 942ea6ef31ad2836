/* SPDX-License-Identifier: Apache-2.0 */
/*
 * split.h — one merge split into parts that run on many machines (Slurm job arrays, Kubernetes
 * Indexed Jobs) over a shared output directory. Statistics are computed in rounds (method.h);
 * the rounds driver (rounds.c) hands each round's combined accumulators to pcbm_split_exchange,
 * which saves this part's part (the part stops: its round is done), or gives back the sum over
 * all parts (the round was reduced), or tells the reduce that no part has run the round yet.
 * Because every accumulator merges exactly (integer sums, maxima with canonical ties, sets), the
 * statistics — and so the output — are the bytes a single machine computes.
 */
#ifndef PCBM_SPLIT_H
#define PCBM_SPLIT_H

#include "../common/common.h"
#include "acc.h"

#include <stdbool.h>

#define PCBM_SPLIT_CTL ".split"   /* control directory inside DIR.partial (not published) */

typedef enum pcbm_split_mode {
    PCBM_SPLIT_STATS = 0,   /* part: run the first round not reduced yet over its tensors */
    PCBM_SPLIT_REDUCE,      /* no I/O on the models: sum the parts' round files, decide */
    PCBM_SPLIT_APPLY        /* part: the apply pass over its output files (statistics replayed) */
} pcbm_split_mode;

typedef struct pcbm_split {
    pcbm_split_mode mode;
    char ctl[3072];         /* DIR.partial/.split */
    unsigned part, parts;
    uint64_t plan_id;       /* every round file carries it: files of another plan are refused */
    unsigned round;         /* index of the next statistics round the driver reaches */
    unsigned reduced;       /* rounds this reduce combined */
    bool local;             /* tensor scope: a part's statistics are its own (no exchange) */
    unsigned file_lo, file_hi; /* the part's output files */
    /* called by a part before it saves a round file (NULL: nothing): what must be durable
     * before the round is (its input identity table), or a later run skips the pass */
    pcbm_status (*before_save)(void *arg, pcbm_error *err);
    void *before_save_arg;
} pcbm_split;

/* What an exchange did with a round's accumulators. */
typedef enum pcbm_exchange_got {
    PCBM_EXCHANGE_TOTAL = 0,        /* acc holds the sum over all parts: go on */
    PCBM_EXCHANGE_SAVED,            /* part: its part is saved (now or by an earlier run): stop */
    PCBM_EXCHANGE_PENDING           /* reduce: no part has run this round yet: stop */
} pcbm_exchange_got;

/* Whether the statistics pass about to run can be skipped: its round is already reduced (its
 * sums will be loaded by the exchange), or this is the reduce (which reads no model). */
bool pcbm_split_skip_stats_pass(const pcbm_split *sp);

/* Parts 0..parts-1 whose control file ctl/NAME is missing (NAME = fmt with the part's index),
 * listed as "0, 3, 5" in list (as many as fit); returns how many are missing. */
unsigned pcbm_split_missing(const char *ctl, unsigned parts, const char *fmt, char *list,
                            size_t len);

/* Whether part's part of statistics round `round` is saved. */
bool pcbm_split_part_saved(const pcbm_split *sp, unsigned round, unsigned part);

/* After a statistics pass and the threads' reduce: exchange the accumulators of this round
 * (see pcbm_exchange_got). Errors: a round file of another plan or round, or (reduce) some
 * parts have not run the round (they are named). Tensor scope (local): always TOTAL. */
pcbm_status pcbm_split_exchange(pcbm_split *sp, const pcbm_acc *acc, unsigned nacc,
                                pcbm_exchange_got *got, pcbm_error *err);

#endif /* PCBM_SPLIT_H */

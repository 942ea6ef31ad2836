/*
 * split.h — one merge split into units that run on many machines (Slurm job arrays, Kubernetes
 * Indexed Jobs) over a shared output directory. What the methods see of it: statistics are
 * computed in rounds; after each statistics pass a method hands its reduced accumulators to
 * pcbm_split_exchange, which either saves this unit's part (and stops the unit: the round is
 * done) or gives back the sum over all units (the round was reduced). Because every accumulator
 * merges exactly (integer sums, maxima with canonical ties, sets), the statistics — and so the
 * output — are the bytes a single machine computes.
 */
#ifndef PCBM_SPLIT_H
#define PCBM_SPLIT_H

#include "../common/common.h"

#include <stdbool.h>

/* Internal statuses that unwind a method without an error (never returned to users). */
#define PCBM_SPLIT_SAVED ((pcbm_status)(PCBM_STATUS_COUNT + 1))  /* unit's round saved */
#define PCBM_SPLIT_MORE ((pcbm_status)(PCBM_STATUS_COUNT + 2))   /* reduce: another round needed */

#define PCBM_SPLIT_CTL ".split"   /* control directory inside DIR.partial (not published) */

typedef enum pcbm_split_mode {
    PCBM_SPLIT_STATS = 0,   /* unit: run the first round not reduced yet over its tensors */
    PCBM_SPLIT_REDUCE,      /* no I/O on the models: sum the units' round files, decide */
    PCBM_SPLIT_APPLY        /* unit: the apply pass over its output files (statistics replayed) */
} pcbm_split_mode;

typedef struct pcbm_split {
    pcbm_split_mode mode;
    char ctl[3072];         /* DIR.partial/.split */
    unsigned unit, units;
    uint64_t plan_id;       /* every round file carries it: files of another plan are refused */
    unsigned round;         /* index of the next statistics round the method reaches */
    unsigned reduced;       /* rounds this reduce combined */
    bool local;             /* tensor scope: a unit's statistics are its own (no exchange) */
    unsigned file_lo, file_hi; /* the unit's output files */
} pcbm_split;

/* How two partial accumulators of one region combine (dst = dst (+) src); must not depend on
 * the order or grouping of the units. */
typedef void (*pcbm_acc_combine)(void *dst, const void *src, size_t bytes);

typedef struct pcbm_acc {
    void *data;
    size_t bytes;
    pcbm_acc_combine combine;
} pcbm_acc;

void pcbm_acc_sum_u64(void *dst, const void *src, size_t bytes);
void pcbm_acc_sum_i64(void *dst, const void *src, size_t bytes);
void pcbm_acc_max_f32(void *dst, const void *src, size_t bytes);

/* Whether the statistics pass about to run can be skipped: its round is already reduced (its
 * sums will be loaded by the exchange), or this is the reduce (which reads no model). */
bool pcbm_split_skip_stats_pass(const pcbm_split *sp);

/* Units 0..units-1 whose control file ctl/NAME is missing (NAME = fmt with the unit's index),
 * listed as "0, 3, 5" in list (as many as fit); returns how many are missing. */
unsigned pcbm_split_missing(const char *ctl, unsigned units, const char *fmt, char *list,
                            size_t len);

/* Whether unit's part of statistics round `round` is saved. */
bool pcbm_split_part_saved(const pcbm_split *sp, unsigned round, unsigned unit);

/* After a statistics pass and the threads' reduce: exchange the accumulators of this round.
 * Returns PCBM_OK with acc holding the sum over all units, PCBM_SPLIT_SAVED (unit: its part is
 * saved, stop), PCBM_SPLIT_MORE (reduce: the round after the reduced ones has not run yet), or
 * an error (reduce: the units that have not run the round are named). */
pcbm_status pcbm_split_exchange(pcbm_split *sp, const pcbm_acc *acc, unsigned nacc,
                                pcbm_error *err);

#endif /* PCBM_SPLIT_H */

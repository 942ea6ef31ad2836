/* SPDX-License-Identifier: Apache-2.0 */
/*
 * statfile.h — the statistics file: what a merge's statistics passes found (PCB's per-task lo,
 * hi, t, m; TIES's thresholds and majority sign), per range (the whole model, or each tensor in
 * tensor scope), with the identity of the inputs and the parameters that shaped them. Saved
 * zstd-compressed (with zstd's checksum) in the output; `--stats FILE` replays it so that a merge
 * that only changes λ skips every statistics pass.
 */
#ifndef PCBM_STATFILE_H
#define PCBM_STATFILE_H

#include "../common/common.h"

#include <jansson.h>

#define PCBM_STATS_NAME "merge_stats.json.zst"

typedef struct pcbm_statrec {
    uint64_t d;                      /* elements of the range */
    float majority;                  /* TIES/dare_ties */
    float v[PCBM_MAX_TASKS][4];      /* per task: lo, hi, t, m (PCB) or threshold (TIES) */
    float x[PCBM_MAX_TASKS][4];      /* more per task (mergekit's methods: scale, mode); saved
                                        as "x" only when some value is not +0 */
    uint64_t *blob;                  /* counts a method needs beyond v and x (DELLA in global
                                        scope: its |tau| histograms), malloc'ed, owned by the
                                        set (a copy must take it over); saved as "b" */
    size_t nblob;
} pcbm_statrec;

typedef struct pcbm_statset {
    unsigned nmodels;                /* base + tasks */
    uint64_t identity[PCBM_MAX_TASKS + 1];
    char *shape_json;                /* the parameters that shaped the statistics (compact JSON) */
    char how[192];
    pcbm_statrec *rec;
    size_t nrec, cap;
    uint64_t *ident;                 /* the input identity table (sched/ident.h) the statistics
                                        were computed from: nmodels * ident_ngran values, model
                                        after model, 0 = not recorded; NULL when absent */
    uint64_t ident_ngran;
} pcbm_statset;

/* The "ident" member of statistics files and split part tables: {"leaf", "granule",
 * "granules", "models": [base64 of little-endian u64 per granule, one string per model]}. */
json_t *pcbm_ident_json(const uint64_t *v, unsigned nmodels, uint64_t ngran);
/* Parse it (*v malloc'ed); false when malformed or cut with another leaf or granule size. */
bool pcbm_ident_parse(const json_t *j, unsigned nmodels, uint64_t **v, uint64_t *ngran);
/* Copy a table into s (replacing its own); false when out of memory. */
bool pcbm_statset_set_ident(pcbm_statset *s, const uint64_t *v, uint64_t ngran);

/* Append a record; returns NULL when out of memory. */
pcbm_statrec *pcbm_statset_add(pcbm_statset *s);
void pcbm_statset_free(pcbm_statset *s);

pcbm_status pcbm_statfile_write(const char *path, const pcbm_statset *s, unsigned ntasks,
                                pcbm_error *err);
/* Read and verify (zstd checksum, structure). */
pcbm_status pcbm_statfile_read(const char *path, pcbm_statset *s, pcbm_error *err);

#endif /* PCBM_STATFILE_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.h — the journal of a merge in progress, kept in the partial directory: the identity of
 * the inputs and every parameter that shapes the output, whether the statistics were saved, and
 * the stat identity of every input file, the durable output segments (file, range, xxh3-64). Rewritten atomically after each change, so
 * a crash at any moment leaves either the old or the new journal, both consistent.
 */
#ifndef PCBM_JOURNAL_H
#define PCBM_JOURNAL_H

#include "../sched/engine.h"

#define PCBM_JOURNAL_NAME "journal.json.zst"

typedef struct pcbm_journal {
    char *path;
    char *params;            /* compact JSON of the parameters that shape the output */
    unsigned ninputs;
    uint64_t inputs[PCBM_MAX_TASKS + 1];
    bool stats_saved;
    uint64_t *fstat;         /* stat identity of every input file when the merge began (device,
                                inode, size, modification and change times; model after model,
                                files in model order); NULL in a journal without them */
    size_t nfstat;
    pcbm_segment *seg;
    size_t nseg, cap;
} pcbm_journal;

pcbm_status pcbm_journal_save(const pcbm_journal *j, pcbm_error *err);
pcbm_status pcbm_journal_load(const char *path, pcbm_journal *j, pcbm_error *err);
pcbm_status pcbm_journal_add(pcbm_journal *j, const pcbm_segment *s, pcbm_error *err);
void pcbm_journal_free(pcbm_journal *j);

#endif /* PCBM_JOURNAL_H */

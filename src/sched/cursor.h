/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cursor.h — which blocks a pass visits, in schedule order: the tensors of the pass's range that
 * belong to the engine's output files (MERGE tensors only for statistics passes), cut into the
 * layout's blocks; sample passes visit only the blocks inside sampled units (pcbm_sample_count);
 * apply passes skip the blocks whose output an earlier run left (resume).
 */
#ifndef PCBM_CURSOR_H
#define PCBM_CURSOR_H

#include "engine.h"

/* Whether bytes [.., end) of output file `file` are kept from an earlier run (not recomputed). */
typedef bool (*pcbm_kept_fn)(const void *arg, unsigned file, uint64_t end);

typedef struct pcbm_walk {
    const pcbm_layout *layout;
    const pcbm_pass *ps;
    unsigned file_lo, file_hi;   /* output files whose tensors are visited */
    pcbm_kept_fn kept;           /* apply passes; NULL = nothing kept */
    const void *kept_arg;
} pcbm_walk;

typedef struct pcbm_cursor {
    size_t t;          /* tensor */
    uint64_t start;    /* first unit of the current block */
    uint64_t n;        /* units in the current block */
} pcbm_cursor;

/* Whether the pass visits tensor t at all. */
bool pcbm_walk_visits(const pcbm_walk *w, const pcbm_tlayout *t);
/* The first block of the pass; false when it visits none. */
bool pcbm_cursor_first(const pcbm_walk *w, pcbm_cursor *c);
/* The block after c; false at the end. */
bool pcbm_cursor_next(const pcbm_walk *w, pcbm_cursor *c);
/* Input bytes the pass reads (all models), kept output not subtracted (for progress). */
uint64_t pcbm_walk_total_bytes(const pcbm_walk *w);

#endif /* PCBM_CURSOR_H */

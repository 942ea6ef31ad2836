/* SPDX-License-Identifier: Apache-2.0 */
/*
 * arena.h — a bump allocator in chunks that never move: per-tensor strings and shapes of a model
 * (~100k tensors in an MoE checkpoint) without a malloc each, counted in bytes so that the merge
 * can charge them to `--mem`. Freed all at once.
 */
#ifndef PCBM_ARENA_H
#define PCBM_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct pcbm_arena_chunk pcbm_arena_chunk;

typedef struct pcbm_arena {
    pcbm_arena_chunk *head;  /* the chunk being filled, then older ones */
    size_t used, cap;        /* of head's data */
    uint64_t bytes;          /* every chunk's size, headers included */
} pcbm_arena;

/* n bytes aligned to `align` (a power of two <= 16); NULL when out of memory. */
void *pcbm_arena_alloc(pcbm_arena *a, size_t n, size_t align);
/* A NUL-terminated copy of s[0..len). */
char *pcbm_arena_strndup(pcbm_arena *a, const char *s, size_t len);
/* Move every chunk of `from` into `to` (from is left empty). */
void pcbm_arena_adopt(pcbm_arena *to, pcbm_arena *from);
void pcbm_arena_free(pcbm_arena *a);

#endif /* PCBM_ARENA_H */

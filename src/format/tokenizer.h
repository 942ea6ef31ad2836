/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer.h — a tokenizer's vocabulary (tokenizer.json): token ↔ id, for aligning the rows of
 * embedding matrices by token (sched/vocab.c). Only the vocabulary is read; the tokenizer files
 * themselves are copied, never rewritten.
 */
#ifndef PCBM_TOKENIZER_H
#define PCBM_TOKENIZER_H

#include "../common/common.h"

#include <sys/stat.h>

typedef struct pcbm_vocab {
    char *arena;              /* token texts, each NUL-terminated (they may hold NULs) */
    size_t arena_len, arena_cap;
    uint32_t *off, *len;      /* per id: offset and length in the arena (off UINT32_MAX: none) */
    uint8_t *added;           /* per id: it came from added_tokens (its id wins for its text) */
    size_t nids, ids_cap;     /* ids 0 .. nids-1 */
    size_t ntokens;           /* ids that have a token */
    uint32_t *map;            /* token -> id + 1, open addressing on XXH3 of the text */
    size_t map_cap, map_used;
} pcbm_vocab;

/* Read the vocabulary of tokenizer.json at `path` (streamed; model.vocab and added_tokens). */
pcbm_status pcbm_vocab_read(const char *path, pcbm_vocab *v, pcbm_error *err);
/* The same from memory (the fuzz target and tests); `label` names it in messages. */
pcbm_status pcbm_vocab_parse(const char *json, size_t n, const char *label, pcbm_vocab *v,
                             pcbm_error *err);
/* The id of token s (n bytes), or -1. */
long pcbm_vocab_find(const pcbm_vocab *v, const char *s, size_t n);
/* The token of `id` (its length in *len), or NULL when no token has that id. */
const char *pcbm_vocab_token(const pcbm_vocab *v, uint32_t id, size_t *len);
/* Bytes the vocabulary holds (for --mem). */
uint64_t pcbm_vocab_bytes(const pcbm_vocab *v);
void pcbm_vocab_free(pcbm_vocab *v);

#endif /* PCBM_TOKENIZER_H */

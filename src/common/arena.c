/* SPDX-License-Identifier: Apache-2.0 */
/*
 * arena.c — chunked bump allocation (arena.h). Chunks grow from 4 KiB to 1 MiB, so a small model
 * costs a few KiB and a large one wastes at most one chunk's tail per arena.
 */
#include "arena.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN (4u << 10)
#define CHUNK_MAX (1u << 20)

struct pcbm_arena_chunk {
    pcbm_arena_chunk *next;
    size_t size;             /* data bytes */
    _Alignas(16) unsigned char data[];
};

void *pcbm_arena_alloc(pcbm_arena *a, size_t n, size_t align)
{
    size_t at = (a->used + align - 1) & ~(align - 1);
    if (!a->head || at > a->cap || n > a->cap - at) {
        size_t size = a->cap ? a->cap * 2 : CHUNK_MIN;
        size = size > CHUNK_MAX ? CHUNK_MAX : size;
        if (size < n)
            size = n;
        pcbm_arena_chunk *c = pcbm_malloc(sizeof *c + size);
        if (!c)
            return NULL;
        c->next = a->head;
        c->size = size;
        a->head = c;
        a->cap = size;
        a->bytes += sizeof *c + size;
        at = 0;
    }
    a->used = at + n;
    return a->head->data + at;
}

char *pcbm_arena_strndup(pcbm_arena *a, const char *s, size_t len)
{
    char *p = pcbm_arena_alloc(a, len + 1, 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

void pcbm_arena_adopt(pcbm_arena *to, pcbm_arena *from)
{
    if (!from->head)
        return;
    pcbm_arena_chunk *last = from->head;
    while (last->next)
        last = last->next;
    if (to->head) { /* keep filling `to`'s head: its chunks go after from's older ones */
        last->next = to->head->next;
        to->head->next = from->head;
    } else {
        *to = *from;
        memset(from, 0, sizeof *from);
        return;
    }
    to->bytes += from->bytes;
    memset(from, 0, sizeof *from);
}

void pcbm_arena_free(pcbm_arena *a)
{
    for (pcbm_arena_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    memset(a, 0, sizeof *a);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tokenizer.c — the vocabulary of a Hugging Face tokenizer.json: every token with its id, from
 * model.vocab (a token → id object for BPE, WordPiece and WordLevel; a [piece, score] array for
 * Unigram, where the id is the position) and added_tokens ({id, content} objects; an added
 * token's id wins over the model's). The file (often 10 MB and more, most of it merges) is
 * streamed through yajl and never held; only the tokens are kept, in one arena.
 */
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <yajl/yajl_parse.h>

#define READ_CHUNK (256u << 10)
#define MAX_IDS (1u << 24) /* 16M tokens: far beyond any vocabulary; bounds a hostile file */

typedef struct reader {
    pcbm_vocab *v;
    int depth;
    char top_key[16];      /* key of the current depth-1 value ("model", "added_tokens") */
    char model_key[16];    /* key of the current depth-2 value inside "model" ("vocab") */
    bool vocab_array;      /* model.vocab is a Unigram [piece, score] array */
    uint64_t unigram_index;/* position in that array */
    int unigram_pos;       /* element index inside one [piece, score] pair */
    char *pending;         /* the current token (a vocab key, or an added token's content) */
    size_t pending_len, pending_cap;
    bool have_pending;
    long long added_id;    /* the current added token's id, -1 when not seen */
    char added_key[16];
    const char *bad;       /* first rule broken */
} reader;

static bool keep_pending(reader *r, const unsigned char *s, size_t n)
{
    if (n + 1 > r->pending_cap) {
        size_t cap = (n + 1) * 2;
        char *p = realloc(r->pending, cap);
        if (!p)
            return false;
        r->pending = p;
        r->pending_cap = cap;
    }
    memcpy(r->pending, s, n);
    r->pending[n] = '\0';
    r->pending_len = n;
    r->have_pending = true;
    return true;
}

static uint64_t hash_of(const char *s, size_t n) { return XXH3_64bits(s, n); }

static const char *token_at(const pcbm_vocab *v, uint32_t id, size_t *len)
{
    *len = v->len[id];
    return v->arena + v->off[id];
}

static bool grow_ids(pcbm_vocab *v, uint64_t id)
{
    if (id < v->nids)
        return true;
    if (id >= MAX_IDS)
        return false;
    size_t cap = v->ids_cap ? v->ids_cap : 1024;
    while (cap <= id)
        cap *= 2;
    if (cap > v->ids_cap) {
        uint32_t *off = realloc(v->off, cap * sizeof *off), *len;
        if (!off)
            return false;
        v->off = off;
        if (!(len = realloc(v->len, cap * sizeof *len)))
            return false;
        v->len = len;
        uint8_t *added = realloc(v->added, cap);
        if (!added)
            return false;
        v->added = added;
        v->ids_cap = cap;
    }
    for (size_t i = v->nids; i <= id; i++) {
        v->off[i] = UINT32_MAX;
        v->added[i] = 0;
    }
    v->nids = (size_t)id + 1;
    return true;
}

static bool map_put(pcbm_vocab *v, uint32_t id);

static bool map_grow(pcbm_vocab *v)
{
    size_t cap = v->map_cap ? v->map_cap * 2 : 4096;
    uint32_t *old = v->map;
    size_t ocap = v->map_cap;
    if (!(v->map = calloc(cap, sizeof *v->map))) {
        v->map = old;
        return false;
    }
    v->map_cap = cap;
    v->map_used = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i] && !map_put(v, old[i] - 1)) {
            free(old);
            return false;
        }
    free(old);
    return true;
}

/* token of `id` -> id in the map (replacing another id of the same token) */
static bool map_put(pcbm_vocab *v, uint32_t id)
{
    if ((v->map_used + 1) * 2 > v->map_cap && !map_grow(v))
        return false;
    size_t n;
    const char *s = token_at(v, id, &n);
    size_t mask = v->map_cap - 1, i = (size_t)hash_of(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        if (!v->map[i]) {
            v->map[i] = id + 1;
            v->map_used++;
            return true;
        }
        size_t m;
        const char *o = token_at(v, v->map[i] - 1, &m);
        if (m == n && !memcmp(o, s, n)) {
            if (v->added[id] || !v->added[v->map[i] - 1]) /* an added token's id wins */
                v->map[i] = id + 1;
            return true;
        }
    }
}

long pcbm_vocab_find(const pcbm_vocab *v, const char *s, size_t n)
{
    if (!v->map_cap)
        return -1;
    size_t mask = v->map_cap - 1, i = (size_t)hash_of(s, n) & mask;
    for (; v->map[i]; i = (i + 1) & mask) {
        size_t m;
        const char *o = token_at(v, v->map[i] - 1, &m);
        if (m == n && !memcmp(o, s, n))
            return (long)(v->map[i] - 1);
    }
    return -1;
}

const char *pcbm_vocab_token(const pcbm_vocab *v, uint32_t id, size_t *len)
{
    if (id >= v->nids || v->off[id] == UINT32_MAX) {
        *len = 0;
        return NULL;
    }
    return token_at(v, id, len);
}

/* Record token (pending) with id; `added`: from added_tokens. */
static bool add_token(reader *r, long long id, bool added)
{
    pcbm_vocab *v = r->v;
    if (id < 0 || !grow_ids(v, (uint64_t)id)) {
        r->bad = id < 0 ? "a negative token id" : "a token id beyond 16M, or out of memory";
        return false;
    }
    size_t n = r->pending_len;
    if (v->arena_len + n + 1 > UINT32_MAX) {
        r->bad = "more than 4 GB of token text";
        return false;
    }
    if (v->arena_len + n + 1 > v->arena_cap) {
        size_t cap = (v->arena_len + n + 1) * 2;
        char *a = realloc(v->arena, cap);
        if (!a) {
            r->bad = "out of memory";
            return false;
        }
        v->arena = a;
        v->arena_cap = cap;
    }
    if (v->off[id] == UINT32_MAX)
        v->ntokens++;
    v->off[id] = (uint32_t)v->arena_len;
    v->len[id] = (uint32_t)n;
    v->added[id] = added;
    memcpy(v->arena + v->arena_len, r->pending, n + 1);
    v->arena_len += n + 1;
    r->have_pending = false;
    if (!map_put(v, (uint32_t)id)) {
        r->bad = "out of memory";
        return false;
    }
    return true;
}

static bool in_vocab(const reader *r)
{
    return !strcmp(r->top_key, "model") && !strcmp(r->model_key, "vocab");
}

static bool in_added(const reader *r) { return !strcmp(r->top_key, "added_tokens"); }

static void set_key(char *dst, size_t cap, const unsigned char *s, size_t n)
{
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(dst, s, k);
    dst[k] = '\0';
    if (n >= cap) /* longer than any key we look for: never matches */
        dst[0] = '\x01';
}

static int on_map_key(void *ctx, const unsigned char *s, size_t n)
{
    reader *r = ctx;
    if (r->depth == 1)
        set_key(r->top_key, sizeof r->top_key, s, n);
    else if (r->depth == 2 && !strcmp(r->top_key, "model"))
        set_key(r->model_key, sizeof r->model_key, s, n);
    else if (r->depth == 3 && in_vocab(r) && !r->vocab_array)
        return keep_pending(r, s, n) ? 1 : (r->bad = "out of memory", 0);
    else if (r->depth == 3 && in_added(r))
        set_key(r->added_key, sizeof r->added_key, s, n);
    return 1;
}

static int on_integer(void *ctx, long long x)
{
    reader *r = ctx;
    if (r->depth == 3 && in_vocab(r) && !r->vocab_array && r->have_pending)
        return add_token(r, x, false);
    if (r->depth == 3 && in_added(r) && !strcmp(r->added_key, "id"))
        r->added_id = x;
    return 1;
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    reader *r = ctx;
    if (r->depth == 4 && in_vocab(r) && r->vocab_array && r->unigram_pos == 0) {
        if (!keep_pending(r, s, n))
            return r->bad = "out of memory", 0;
        return add_token(r, (long long)r->unigram_index, false);
    }
    if (r->depth == 3 && in_added(r) && !strcmp(r->added_key, "content"))
        return keep_pending(r, s, n) ? 1 : (r->bad = "out of memory", 0);
    return 1;
}

static int on_scalar(void *ctx)
{
    reader *r = ctx;
    if (r->depth == 4 && in_vocab(r) && r->vocab_array)
        r->unigram_pos++;
    return 1;
}

static int on_bool(void *ctx, int b) { (void)b; return on_scalar(ctx); }
static int on_double(void *ctx, double d) { (void)d; return on_scalar(ctx); }

static int on_open(reader *r, bool array)
{
    r->depth++;
    if (r->depth == 3 && in_vocab(r))
        r->vocab_array = array;
    if (r->depth == 3 && in_added(r)) {
        r->added_id = -1;
        r->added_key[0] = '\0';
        r->have_pending = false;
    }
    if (r->depth == 4 && in_vocab(r) && r->vocab_array)
        r->unigram_pos = 0;
    return 1;
}

static int on_close(reader *r)
{
    if (r->depth == 3 && in_added(r) && r->added_id >= 0 && r->have_pending &&
        !add_token(r, r->added_id, true))
        return 0;
    if (r->depth == 4 && in_vocab(r) && r->vocab_array)
        r->unigram_index++;
    if (r->depth == 3 && in_vocab(r))
        r->model_key[0] = '\0';
    if (r->depth == 2 && !strcmp(r->top_key, "model"))
        r->model_key[0] = '\0';
    r->depth--;
    return 1;
}

static int on_start_map(void *ctx) { return on_open(ctx, false); }
static int on_start_array(void *ctx) { return on_open(ctx, true); }
static int on_end(void *ctx) { return on_close(ctx); }

static int on_other_scalar(void *ctx)
{
    reader *r = ctx;
    if (r->depth == 3 && in_vocab(r) && !r->vocab_array && r->have_pending)
        return r->bad = "a vocab entry whose id is not an integer", 0;
    return on_scalar(ctx);
}

static int on_null(void *ctx) { return on_other_scalar(ctx); }

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,           .yajl_boolean = on_bool,
    .yajl_integer = on_integer,     .yajl_double = on_double,
    .yajl_string = on_string,       .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,     .yajl_end_map = on_end,
    .yajl_start_array = on_start_array, .yajl_end_array = on_end,
};

void pcbm_vocab_free(pcbm_vocab *v)
{
    free(v->arena);
    free(v->off);
    free(v->len);
    free(v->added);
    free(v->map);
    memset(v, 0, sizeof *v);
}

uint64_t pcbm_vocab_bytes(const pcbm_vocab *v)
{
    return v->arena_cap + v->ids_cap * (2 * sizeof(uint32_t) + 1) + v->map_cap * sizeof(uint32_t);
}

/* One parse, fed in pieces: the file in chunks, or a buffer at once. */
typedef struct vocab_parse {
    reader r;
    yajl_handle h;
    yajl_status ys;
    uint64_t done;         /* bytes accepted so far (where a syntax error was found) */
} vocab_parse;

static bool parse_begin(vocab_parse *vp, pcbm_vocab *v)
{
    memset(v, 0, sizeof *v);
    *vp = (vocab_parse){.r = {.v = v, .added_id = -1}, .ys = yajl_status_ok};
    vp->h = yajl_alloc(&callbacks, NULL, &vp->r);
    return vp->h != NULL;
}

/* Feed n bytes; n == 0 ends the input. False once the JSON or a rule is broken. */
static bool parse_feed(vocab_parse *vp, const void *buf, size_t n)
{
    if (n == 0)
        vp->ys = yajl_complete_parse(vp->h);
    else if ((vp->ys = yajl_parse(vp->h, buf, n)) == yajl_status_ok)
        vp->done += n;
    else
        vp->done += yajl_get_bytes_consumed(vp->h);
    return vp->ys == yajl_status_ok;
}

/* The verdict (st: an error met outside the parser, e.g. a failed read), then everything freed
 * but an accepted vocabulary. */
static pcbm_status parse_end(vocab_parse *vp, const char *label, pcbm_status st, pcbm_error *err)
{
    pcbm_vocab *v = vp->r.v;
    if (st == PCBM_OK && vp->ys != yajl_status_ok)
        st = pcbm_fail(err, PCBM_ERR_FORMAT, "%s: %s near byte %llu; the tokenizer file is "
                       "damaged: download it again", label,
                       vp->r.bad ? vp->r.bad : "not valid JSON", (unsigned long long)vp->done);
    else if (st == PCBM_OK && v->ntokens == 0)
        st = pcbm_fail(err, PCBM_ERR_FORMAT, "%s: no tokens (no model.vocab or added_tokens); "
                       "is it a Hugging Face tokenizer.json?", label);
    if (vp->h)
        yajl_free(vp->h);
    free(vp->r.pending);
    if (st != PCBM_OK)
        pcbm_vocab_free(v);
    return st;
}

pcbm_status pcbm_vocab_parse(const char *json, size_t n, const char *label, pcbm_vocab *v,
                             pcbm_error *err)
{
    vocab_parse vp;
    if (!parse_begin(&vp, v))
        return parse_end(&vp, label, pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s",
                                               label), err);
    if (parse_feed(&vp, json, n))
        parse_feed(&vp, NULL, 0);
    return parse_end(&vp, label, PCBM_OK, err);
}

pcbm_status pcbm_vocab_read(const char *path, pcbm_vocab *v, pcbm_error *err)
{
    memset(v, 0, sizeof *v);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s is not a regular file", path);
    }
    vocab_parse vp;
    unsigned char *buf = malloc(READ_CHUNK);
    pcbm_status st = PCBM_OK;
    if (!parse_begin(&vp, v) || !buf)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
    for (bool more = st == PCBM_OK; more;) {
        ssize_t k = read(fd, buf, READ_CHUNK);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            st = pcbm_fail(err, PCBM_ERR_IO, "%s: read failed at byte %llu: %s", path,
                           (unsigned long long)vp.done, strerror(errno));
            break;
        }
        more = parse_feed(&vp, buf, (size_t)k) && k > 0;
    }
    free(buf);
    close(fd);
    return parse_end(&vp, path, st, err);
}

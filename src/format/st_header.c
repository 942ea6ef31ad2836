/* SPDX-License-Identifier: Apache-2.0 */
/*
 * st_header.c — validation of one safetensors header, fed in pieces or held in memory: the 8-byte
 * length prefix, the JSON (streamed through yajl: no tree of the header is ever built), every
 * tensor entry, __metadata__, and the tiling of the data buffer.
 * Each broken rule becomes one PCBM_ERR_FORMAT naming the file, the tensor, the offset and a fix.
 */
#include "st_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <yajl/yajl_parse.h>

#define FIX "re-download or re-export the file"

const char *pcbm_st_json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static uint64_t load_le64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

pcbm_status pcbm_st_check_prefix(const uint8_t prefix[8], uint64_t file_size, const char *label,
                                 uint64_t *header_len, pcbm_error *err)
{
    if (file_size < 8)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the file is only %llu bytes, shorter than the 8-byte header length "
                         "that starts every safetensors file (truncated, or not a safetensors "
                         "file); " FIX, label, (unsigned long long)file_size);
    uint64_t n = load_le64(prefix);
    if (n > PCBM_ST_MAX_HEADER)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: header length %llu (bytes 0-7) exceeds the format's limit of "
                         "100,000,000 bytes (corrupt, or not a safetensors file); " FIX,
                         label, (unsigned long long)n);
    if (n > file_size - 8)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the header claims %llu bytes (bytes 8 to %llu) but the file ends "
                         "at byte %llu: the header extends past the end of the file (truncated "
                         "download?); " FIX, label, (unsigned long long)n,
                         (unsigned long long)(n + 8), (unsigned long long)file_size);
    *header_len = n;
    return PCBM_OK;
}

/* ---- the streaming parse -------------------------------------------------------------------- *
 * The header is parsed as a stream of events (yajl), never as a tree: a 100k-tensor header of
 * ~10 MB costs its tensor table, names and shapes, not a DOM of 10x its size. yajl checks the
 * grammar; scan_bytes() below checks what jansson (the tree parser this replaced) also refused
 * and yajl lets through: overlong or surrogate UTF-8, lone surrogate escapes, \u0000. Every
 * rule's message is unchanged. Errors of grammar win over errors of content, as they did when the
 * whole tree was parsed before any entry was looked at: the first content error is kept aside
 * until the parse ends. */

#define MAX_DEPTH 2048 /* nesting, as jansson's parser allowed */

enum { K_OBJECT, K_ARRAY, K_STRING, K_INTEGER, K_REAL, K_BOOL, K_NULL };

static const char *kind_name(int k)
{
    static const char *const names[] = {"an object", "an array", "a string", "an integer",
                                        "a real number", "a boolean", "null"};
    return names[k];
}

/* What a container is to the header: the root object, a tensor entry, __metadata__, an entry's
 * shape or data_offsets, or something else (skipped). */
enum { R_OTHER, R_ROOT, R_ENTRY, R_META, R_SHAPE, R_OFFS };
enum { F_OTHER, F_DTYPE, F_SHAPE, F_OFFS };

/* One tensor entry's values as they arrive, checked in the old order when the entry closes. */
typedef struct entry_rec {
    bool has_dtype, has_shape, has_offs;
    int dtype_kind, shape_kind, offs_kind;
    char dtype[48];
    bool dtype_long;
    size_t nd, bad_dim;       /* bad_dim: first dim that is not a non-negative integer */
    int bad_kind;
    long long bad_val;
    size_t noffs;
    int okind[2];
    long long oval[2];
} entry_rec;

/* Keys of nested objects (duplicates are refused at every level): (object serial, key). */
typedef struct keyset {
    uint32_t *slots;          /* record offset + 1, 0 = empty */
    size_t cap, n;
    char *rec;                /* records: serial (4 bytes), length (4 bytes), key bytes */
    size_t rlen, rcap;
} keyset;

struct pcbm_st_parser {
    yajl_handle yh;
    const char *label;
    pcbm_st_header *h;
    pcbm_namemap names;       /* top-level keys -> h->tensors */
    size_t tcap;
    keyset keys;
    uint64_t off;             /* header bytes fed so far */
    unsigned line, col;       /* at `off` */
    /* scan_bytes state */
    int sstate, ucount, utf_need;
    uint32_t uval, utf_cp, utf_min;
    const char *scan_msg;
    /* event state */
    unsigned depth;
    uint8_t role[4];          /* role of the container at depth 1..3 */
    uint32_t serial[MAX_DEPTH + 1];
    uint32_t nserial;
    int child_role, field;
    bool root_seen, meta_seen, top_is_meta;
    size_t cur;               /* tensor of the entry being read */
    char *meta_key;
    size_t meta_cap;
    entry_rec e;
    uint64_t *dims;
    size_t dims_cap;
    char syn[200];            /* grammar error raised by an event (duplicate key, depth, ...) */
    bool sem_set;
    pcbm_status sem_st;
    pcbm_error sem_err;       /* the first content error */
    char num[64];
};

static uint64_t key_hash(uint32_t serial, const char *k, size_t len)
{
    return XXH3_64bits_withSeed(k, len, serial);
}

static bool keyset_grow(keyset *ks)
{
    size_t cap = ks->cap ? 2 * ks->cap : 64;
    uint32_t *s = pcbm_calloc(cap, sizeof *s);
    if (!s)
        return false;
    for (size_t o = 0; o < ks->rlen;) {
        uint32_t serial, len;
        memcpy(&serial, ks->rec + o, 4);
        memcpy(&len, ks->rec + o + 4, 4);
        size_t i = (size_t)key_hash(serial, ks->rec + o + 8, len) & (cap - 1);
        while (s[i])
            i = (i + 1) & (cap - 1);
        s[i] = (uint32_t)o + 1;
        o += 8 + len;
    }
    free(ks->slots);
    ks->slots = s;
    ks->cap = cap;
    return true;
}

/* 1 inserted, 0 duplicate, -1 out of memory (or too large). */
static int keyset_insert(keyset *ks, uint32_t serial, const char *k, size_t len)
{
    if ((2 * (ks->n + 1) > ks->cap && !keyset_grow(ks)) || len > UINT32_MAX / 2)
        return -1;
    size_t i = (size_t)key_hash(serial, k, len) & (ks->cap - 1);
    for (; ks->slots[i]; i = (i + 1) & (ks->cap - 1)) {
        const char *r = ks->rec + ks->slots[i] - 1;
        uint32_t rs, rl;
        memcpy(&rs, r, 4);
        memcpy(&rl, r + 4, 4);
        if (rs == serial && rl == len && memcmp(r + 8, k, len) == 0)
            return 0;
    }
    if (ks->rlen + 8 + len > UINT32_MAX - 1)
        return -1;
    if (ks->rlen + 8 + len > ks->rcap) {
        size_t cap = PCBM_MAX(2 * ks->rcap, ks->rlen + 8 + len + 256);
        char *r = pcbm_realloc(ks->rec, cap);
        if (!r)
            return -1;
        ks->rec = r;
        ks->rcap = cap;
    }
    uint32_t s32 = serial, l32 = (uint32_t)len;
    memcpy(ks->rec + ks->rlen, &s32, 4);
    memcpy(ks->rec + ks->rlen + 4, &l32, 4);
    memcpy(ks->rec + ks->rlen + 8, k, len);
    ks->slots[i] = (uint32_t)ks->rlen + 1;
    ks->rlen += 8 + len;
    ks->n++;
    return 1;
}

static void keyset_reset(keyset *ks)
{
    if (ks->n)
        memset(ks->slots, 0, ks->cap * sizeof *ks->slots);
    ks->n = ks->rlen = 0;
}

static void keyset_free(keyset *ks)
{
    free(ks->slots);
    free(ks->rec);
    memset(ks, 0, sizeof *ks);
}

/* A grammar error raised by an event: stops the parse. */
static int syn_fail(pcbm_st_parser *x, const char *msg)
{
    snprintf(x->syn, sizeof x->syn, "%s", msg);
    return 0;
}

/* A content error: the first is kept, the parse goes on (grammar errors come first). */
static void sem_fail(pcbm_st_parser *x, pcbm_status st, const char *fmt, ...) PCBM_PRINTF(3, 4);
static void sem_fail(pcbm_st_parser *x, pcbm_status st, const char *fmt, ...)
{
    if (x->sem_set)
        return;
    x->sem_set = true;
    x->sem_st = st;
    va_list ap;
    va_start(ap, fmt);
    pcbm_error_clear(&x->sem_err);
    x->sem_err.status = st;
    vsnprintf(x->sem_err.msg, sizeof x->sem_err.msg, fmt, ap);
    va_end(ap);
}

static const char *tensor_name_at(const void *ctx, size_t i)
{
    return ((const pcbm_st_header *)ctx)->tensors[i].name;
}

/* ---- one tensor entry, checked when it closes ----------------------------------------------- */

static const char *cur_name(const pcbm_st_parser *x) { return x->h->tensors[x->cur].name; }

static bool entry_dtype(pcbm_st_parser *x, pcbm_st_tensor *t)
{
    const entry_rec *e = &x->e;
    const char *label = x->label, *name = cur_name(x);
    if (!e->has_dtype) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has no \"dtype\" (rule: every tensor "
                 "entry has dtype, shape and data_offsets); " FIX, label, name);
        return false;
    }
    if (e->dtype_kind != K_STRING) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has a \"dtype\" that is %s, not a "
                 "string (wrong JSON type); " FIX, label, name, kind_name(e->dtype_kind));
        return false;
    }
    t->dtype = e->dtype_long ? PCBM_DT_COUNT : pcbm_dtype_parse(e->dtype);
    if (t->dtype == PCBM_DT_COUNT) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has unknown dtype \"%.40s\" (known: "
                 "BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_*, F6_*, "
                 "F4, C64); the file may come from a newer writer or be corrupt: re-export it "
                 "with a known dtype", label, name, e->dtype);
        return false;
    }
    return true;
}

static bool entry_shape(pcbm_st_parser *x, pcbm_st_tensor *t)
{
    const entry_rec *e = &x->e;
    const char *label = x->label, *name = cur_name(x);
    if (!e->has_shape) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has no \"shape\" (rule: every tensor "
                 "entry has dtype, shape and data_offsets); " FIX, label, name);
        return false;
    }
    if (e->shape_kind != K_ARRAY) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has a \"shape\" that is %s, not an "
                 "array (wrong JSON type); " FIX, label, name, kind_name(e->shape_kind));
        return false;
    }
    if (e->nd > UINT32_MAX) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has %zu dims; " FIX, label, name, e->nd);
        return false;
    }
    uint64_t numel = 1;
    for (size_t i = 0; i < e->nd; i++) {
        if (i == e->bad_dim && e->bad_kind != K_INTEGER) {
            sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has shape[%zu] that is %s, not a "
                     "non-negative integer (rule: dims are non-negative integers); " FIX, label,
                     name, i, kind_name(e->bad_kind));
            return false;
        }
        if (i == e->bad_dim) {
            sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has negative shape[%zu] = %lld "
                     "(rule: dims are non-negative integers); " FIX, label, name, i, e->bad_val);
            return false;
        }
        if (!pcbm_mul_u64(numel, x->dims[i], &numel)) {
            sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s': the product of its shape overflows "
                     "64 bits at shape[%zu] (rule: shape product x element size must fit); " FIX,
                     label, name, i);
            return false;
        }
    }
    t->ndim = (unsigned)e->nd;
    t->numel = numel;
    if (e->nd) {
        t->shape = pcbm_arena_alloc(&x->h->arena, e->nd * sizeof *t->shape, 8);
        if (!t->shape) {
            sem_fail(x, PCBM_ERR_NOMEM, "%s: out of memory reading tensor '%.200s'", label, name);
            return false;
        }
        memcpy(t->shape, x->dims, e->nd * sizeof *t->shape);
    }
    return true;
}

static bool entry_nbytes(pcbm_st_parser *x, pcbm_st_tensor *t)
{
    uint64_t bits;
    if (!pcbm_mul_u64(t->numel, pcbm_dtype_bits(t->dtype), &bits)) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s': %llu elements of %s overflow 64 bits "
                 "(rule: shape product x element size must fit); " FIX, x->label, cur_name(x),
                 (unsigned long long)t->numel, pcbm_dtype_name(t->dtype));
        return false;
    }
    if (bits % 8) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s': %llu elements of %s are %llu bits, not "
                 "a whole number of bytes (rule: tensor data is whole bytes); " FIX, x->label,
                 cur_name(x), (unsigned long long)t->numel, pcbm_dtype_name(t->dtype),
                 (unsigned long long)bits);
        return false;
    }
    t->nbytes = bits / 8;
    return true;
}

/* "[2, 3]" into buf (cut with "..." when long). */
static void fmt_shape(const pcbm_st_tensor *t, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (unsigned d = 0; d < t->ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)t->shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
    else if (len > 4)
        memcpy(buf + len - 4, "...", 4);
}

static bool entry_offsets(pcbm_st_parser *x, pcbm_st_tensor *t)
{
    const entry_rec *e = &x->e;
    const char *label = x->label, *name = cur_name(x);
    if (!e->has_offs) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has no \"data_offsets\" (rule: every "
                 "tensor entry has dtype, shape and data_offsets); " FIX, label, name);
        return false;
    }
    if (e->offs_kind != K_ARRAY || e->noffs != 2 || e->okind[0] != K_INTEGER ||
        e->okind[1] != K_INTEGER || e->oval[0] < 0 || e->oval[1] < 0) {
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has \"data_offsets\" that is not an "
                 "array of two non-negative integers [begin, end] (wrong JSON type); " FIX,
                 label, name);
        return false;
    }
    uint64_t begin = (uint64_t)e->oval[0], end = (uint64_t)e->oval[1];
    if (end < begin || end - begin != t->nbytes) {
        char shape[64];
        fmt_shape(t, shape, sizeof shape);
        sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has data_offsets [%llu, %llu] (file "
                 "offset %llu) but shape %s of %s needs %llu bytes (rule: end - begin = "
                 "product(shape) x element size); " FIX, label, name, (unsigned long long)begin,
                 (unsigned long long)end, (unsigned long long)(x->h->data_start + begin), shape,
                 pcbm_dtype_name(t->dtype), (unsigned long long)t->nbytes);
        return false;
    }
    t->offset = begin; /* relative until the tiling check passes */
    return true;
}

static void entry_end(pcbm_st_parser *x)
{
    if (x->sem_set)
        return;
    pcbm_st_tensor *t = &x->h->tensors[x->cur];
    if (entry_dtype(x, t) && entry_shape(x, t) && entry_nbytes(x, t))
        entry_offsets(x, t);
}

/* ---- events --------------------------------------------------------------------------------- */

/* A value (scalar or container start) at the current depth. */
static int on_value(pcbm_st_parser *x, int kind, const unsigned char *s, size_t len, long long iv)
{
    unsigned d = x->depth;
    int role = d == 0 ? R_OTHER : d < 4 ? x->role[d] : R_OTHER;
    x->child_role = R_OTHER;
    if (d == 0) {
        x->root_seen = true;
        if (kind == K_OBJECT)
            x->child_role = R_ROOT;
        else
            sem_fail(x, PCBM_ERR_FORMAT, "%s: the header JSON is %s, not an object (rule: the top "
                     "level of the header is an object of tensor entries); " FIX, x->label,
                     kind_name(kind));
        return 1;
    }
    entry_rec *e = &x->e;
    switch (role) {
    case R_ROOT:
        if (x->top_is_meta) {
            if (kind == K_OBJECT)
                x->child_role = R_META;
            else
                sem_fail(x, PCBM_ERR_FORMAT, "%s: __metadata__ is %s, not an object (rule: "
                         "__metadata__ maps strings to strings); " FIX, x->label, kind_name(kind));
        } else if (kind == K_OBJECT) {
            x->child_role = R_ENTRY;
            memset(e, 0, sizeof *e);
            e->bad_dim = SIZE_MAX;
        } else {
            sem_fail(x, PCBM_ERR_FORMAT, "%s: tensor '%.200s' is %s, not an object {dtype, shape, "
                     "data_offsets} (wrong JSON type); " FIX, x->label, cur_name(x),
                     kind_name(kind));
        }
        break;
    case R_META:
        if (kind != K_STRING) {
            sem_fail(x, PCBM_ERR_FORMAT, "%s: __metadata__ key \"%.100s\" has a value that is %s, "
                     "not a string (rule: __metadata__ maps strings to strings); " FIX, x->label,
                     x->meta_key, kind_name(kind));
        } else if (!x->sem_set) {
            pcbm_st_header *h = x->h;
            if (h->nmeta + 2 > x->meta_cap) {
                size_t cap = x->meta_cap ? 2 * x->meta_cap : 16;
                char **m = pcbm_realloc(h->meta, cap * sizeof *m);
                if (!m)
                    return syn_fail(x, "out of memory");
                h->meta = m;
                x->meta_cap = cap;
            }
            h->meta[h->nmeta] = pcbm_arena_strndup(&h->arena, x->meta_key, strlen(x->meta_key));
            h->meta[h->nmeta + 1] = pcbm_arena_strndup(&h->arena, (const char *)s, len);
            if (!h->meta[h->nmeta] || !h->meta[h->nmeta + 1])
                return syn_fail(x, "out of memory");
            h->nmeta += 2;
        }
        break;
    case R_ENTRY:
        if (x->field == F_DTYPE) {
            e->has_dtype = true;
            e->dtype_kind = kind;
            if (kind == K_STRING) {
                e->dtype_long = len >= sizeof e->dtype;
                size_t n = PCBM_MIN(len, sizeof e->dtype - 1);
                memcpy(e->dtype, s, n);
                e->dtype[n] = '\0';
            }
        } else if (x->field == F_SHAPE) {
            e->has_shape = true;
            e->shape_kind = kind;
            e->nd = 0;
            e->bad_dim = SIZE_MAX;
            x->child_role = kind == K_ARRAY ? R_SHAPE : R_OTHER;
        } else if (x->field == F_OFFS) {
            e->has_offs = true;
            e->offs_kind = kind;
            e->noffs = 0;
            x->child_role = kind == K_ARRAY ? R_OFFS : R_OTHER;
        }
        break;
    case R_SHAPE: {
        size_t i = e->nd++;
        if (e->bad_dim != SIZE_MAX)
            break;
        if (kind != K_INTEGER || iv < 0) {
            e->bad_dim = i;
            e->bad_kind = kind;
            e->bad_val = iv;
            break;
        }
        if (i >= x->dims_cap) {
            size_t cap = x->dims_cap ? 2 * x->dims_cap : 16;
            uint64_t *p = pcbm_realloc(x->dims, cap * sizeof *p);
            if (!p)
                return syn_fail(x, "out of memory");
            x->dims = p;
            x->dims_cap = cap;
        }
        x->dims[i] = (uint64_t)iv;
        break;
    }
    case R_OFFS:
        if (e->noffs < 2) {
            e->okind[e->noffs] = kind;
            e->oval[e->noffs] = iv;
        }
        e->noffs++;
        break;
    default:
        break;
    }
    return 1;
}

static int open_container(pcbm_st_parser *x, int kind)
{
    if (x->depth >= MAX_DEPTH)
        return syn_fail(x, "maximum parsing depth reached");
    on_value(x, kind, NULL, 0, 0);
    x->depth++;
    if (x->depth < 4)
        x->role[x->depth] = (uint8_t)x->child_role;
    x->serial[x->depth] = x->nserial++;
    return 1;
}

static int close_container(pcbm_st_parser *x)
{
    if (x->depth < 4 && x->role[x->depth] == R_ENTRY)
        entry_end(x);
    x->depth--;
    if (x->depth == 1)
        keyset_reset(&x->keys);
    return 1;
}

static int ev_start_map(void *c) { return open_container(c, K_OBJECT); }
static int ev_start_array(void *c) { return open_container(c, K_ARRAY); }
static int ev_end(void *c) { return close_container(c); }
static int ev_null(void *c) { return on_value(c, K_NULL, NULL, 0, 0); }
static int ev_bool(void *c, int b) { (void)b; return on_value(c, K_BOOL, NULL, 0, 0); }

static int ev_string(void *c, const unsigned char *s, size_t len)
{
    return on_value(c, K_STRING, s, len, 0);
}

/* Numbers as jansson read them: integers (no '.', 'e' or 'E') must fit 64 bits, reals must be
 * finite. */
static int ev_number(void *c, const char *s, size_t len)
{
    pcbm_st_parser *x = c;
    bool real = memchr(s, '.', len) || memchr(s, 'e', len) || memchr(s, 'E', len);
    char *buf = len < sizeof x->num ? x->num : pcbm_malloc(len + 1);
    if (!buf)
        return syn_fail(x, "out of memory");
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    long long iv = 0;
    int ok = 1;
    if (real) {
        double v = strtod(buf, NULL);
        if (errno == ERANGE && (v > 1.0 || v < -1.0))
            ok = syn_fail(x, "real number overflow");
    } else {
        iv = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            ok = syn_fail(x, iv < 0 ? "too big negative integer" : "too big integer");
    }
    if (buf != x->num)
        free(buf);
    return ok ? on_value(x, real ? K_REAL : K_INTEGER, NULL, 0, iv) : 0;
}

static bool add_tensor(pcbm_st_parser *x, const unsigned char *k, size_t len, long *dup)
{
    pcbm_st_header *h = x->h;
    if (h->ntensors == x->tcap) {
        size_t cap = x->tcap ? 2 * x->tcap : 64;
        pcbm_st_tensor *t = pcbm_realloc(h->tensors, cap * sizeof *t);
        if (!t)
            return false;
        h->tensors = t;
        x->tcap = cap;
    }
    if (2 * (h->ntensors + 1) > x->names.cap &&
        !pcbm_namemap_grow(&x->names, x->names.cap ? 2 * x->names.cap : 64))
        return false;
    pcbm_st_tensor *t = &h->tensors[h->ntensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = pcbm_arena_strndup(&h->arena, (const char *)k, len)))
        return false;
    *dup = pcbm_namemap_insert(&x->names, h->ntensors);
    if (*dup < 0)
        x->cur = h->ntensors++;
    return true;
}

static int ev_key(void *c, const unsigned char *k, size_t len)
{
    pcbm_st_parser *x = c;
    unsigned d = x->depth;
    int role = d < 4 ? x->role[d] : R_OTHER;
    if (role == R_ROOT) {
        x->top_is_meta = len == 12 && memcmp(k, "__metadata__", 12) == 0;
        if (x->top_is_meta) {
            if (x->meta_seen)
                return syn_fail(x, "duplicate object key");
            x->meta_seen = true;
            return 1;
        }
        long dup;
        if (!add_tensor(x, k, len, &dup))
            return syn_fail(x, "out of memory");
        return dup < 0 ? 1 : syn_fail(x, "duplicate object key");
    }
    int r = keyset_insert(&x->keys, x->serial[d], (const char *)k, len);
    if (r <= 0)
        return syn_fail(x, r == 0 ? "duplicate object key" : "out of memory");
    if (role == R_ENTRY)
        x->field = len == 5 && memcmp(k, "dtype", 5) == 0          ? F_DTYPE
                   : len == 5 && memcmp(k, "shape", 5) == 0        ? F_SHAPE
                   : len == 12 && memcmp(k, "data_offsets", 12) == 0 ? F_OFFS
                                                                    : F_OTHER;
    if (role == R_META) {
        char *mk = pcbm_realloc(x->meta_key, len + 1);
        if (!mk)
            return syn_fail(x, "out of memory");
        x->meta_key = mk;
        memcpy(x->meta_key, k, len);
        x->meta_key[len] = '\0';
    }
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = ev_null, .yajl_boolean = ev_bool, .yajl_number = ev_number,
    .yajl_string = ev_string, .yajl_start_map = ev_start_map, .yajl_map_key = ev_key,
    .yajl_end_map = ev_end, .yajl_start_array = ev_start_array, .yajl_end_array = ev_end,
};

/* ---- what yajl lets through ----------------------------------------------------------------- */

enum { S_OUT, S_STR, S_ESC, S_HEX, S_SUR_BS, S_SUR_U, S_SUR_HEX };

static int hexval(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Check the bytes inside strings; returns the index of the first bad byte (scan_msg says why)
 * or len. Outside strings yajl's grammar decides. */
static size_t scan_bytes(pcbm_st_parser *x, const unsigned char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = b[i];
        switch (x->sstate) {
        case S_OUT:
            if (c == '"')
                x->sstate = S_STR;
            break;
        case S_STR:
            if (x->utf_need) {
                if ((c & 0xC0) != 0x80)
                    return x->scan_msg = "unable to decode byte", i;
                x->utf_cp = x->utf_cp << 6 | (c & 0x3F);
                if (--x->utf_need == 0 && (x->utf_cp < x->utf_min || x->utf_cp > 0x10FFFF ||
                                           (x->utf_cp >= 0xD800 && x->utf_cp <= 0xDFFF)))
                    return x->scan_msg = "unable to decode byte", i;
            } else if (c == '"') {
                x->sstate = S_OUT;
            } else if (c == '\\') {
                x->sstate = S_ESC;
            } else if (c < 0x20) {
                return x->scan_msg = "control character in string", i;
            } else if (c >= 0x80) {
                if (c >= 0xC2 && c <= 0xDF)
                    x->utf_need = 1, x->utf_cp = c & 0x1F, x->utf_min = 0x80;
                else if (c >= 0xE0 && c <= 0xEF)
                    x->utf_need = 2, x->utf_cp = c & 0x0F, x->utf_min = 0x800;
                else if (c >= 0xF0 && c <= 0xF4)
                    x->utf_need = 3, x->utf_cp = c & 0x07, x->utf_min = 0x10000;
                else
                    return x->scan_msg = "unable to decode byte", i;
            }
            break;
        case S_ESC:
            if (c == 'u') {
                x->sstate = S_HEX;
                x->ucount = 0;
                x->uval = 0;
            } else if (c && strchr("\"\\/bfnrt", c)) {
                x->sstate = S_STR;
            } else {
                return x->scan_msg = "invalid escape", i;
            }
            break;
        case S_HEX:
        case S_SUR_HEX: {
            int v = hexval(c);
            if (v < 0)
                return x->scan_msg = "invalid escape", i;
            x->uval = x->uval << 4 | (uint32_t)v;
            if (++x->ucount < 4)
                break;
            uint32_t u = x->uval & 0xFFFF;
            if (x->sstate == S_SUR_HEX) {
                if (u < 0xDC00 || u > 0xDFFF)
                    return x->scan_msg = "invalid Unicode surrogate pair", i;
                x->sstate = S_STR;
            } else if (u == 0) {
                return x->scan_msg = "\\u0000 is not allowed without JSON_ALLOW_NUL", i;
            } else if (u >= 0xD800 && u <= 0xDBFF) {
                x->sstate = S_SUR_BS;
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                return x->scan_msg = "invalid Unicode (lone low surrogate)", i;
            } else {
                x->sstate = S_STR;
            }
            break;
        }
        case S_SUR_BS:
            if (c != '\\')
                return x->scan_msg = "invalid Unicode (lone high surrogate)", i;
            x->sstate = S_SUR_U;
            break;
        case S_SUR_U:
            if (c != 'u')
                return x->scan_msg = "invalid Unicode (lone high surrogate)", i;
            x->sstate = S_SUR_HEX;
            x->ucount = 0;
            x->uval = 0;
            break;
        }
    }
    return len;
}

/* ---- the parser ----------------------------------------------------------------------------- */

static void advance_pos(pcbm_st_parser *x, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '\n') {
            x->line++;
            x->col = 0;
        } else if ((b[i] & 0xC0) != 0x80) {
            x->col++;
        }
    }
    x->off += n;
}

static pcbm_status json_fail(pcbm_st_parser *x, const unsigned char *b, size_t at,
                             const char *why, pcbm_error *err)
{
    advance_pos(x, b, at);
    return pcbm_fail(err, PCBM_ERR_FORMAT,
                     "%s: the header is not valid UTF-8 JSON at header byte %llu (file offset "
                     "%llu, line %u, column %u): %s; " FIX, x->label, (unsigned long long)x->off,
                     (unsigned long long)(8 + x->off), x->line, x->col, why);
}

/* A yajl error: its own text without the "parse error: " prefix and the newline. */
static pcbm_status yajl_fail(pcbm_st_parser *x, const unsigned char *b, size_t len,
                             pcbm_error *err)
{
    size_t at = PCBM_MIN(yajl_get_bytes_consumed(x->yh), len);
    if (x->syn[0])
        return json_fail(x, b, at, x->syn, err);
    unsigned char *msg = yajl_get_error(x->yh, 0, b, len);
    char why[160] = "invalid JSON";
    if (msg) {
        const char *m = (const char *)msg, *colon = strstr(m, ": ");
        snprintf(why, sizeof why, "%s", colon ? colon + 2 : m);
        why[strcspn(why, "\n")] = '\0';
        yajl_free_error(x->yh, msg);
    }
    return json_fail(x, b, at, why, err);
}

pcbm_status pcbm_st_parser_new(uint64_t header_len, uint64_t file_size, const char *label,
                               pcbm_st_header *out, pcbm_st_parser **px, pcbm_error *err)
{
    memset(out, 0, sizeof *out);
    out->header_len = header_len;
    out->data_start = 8 + header_len;
    out->data_bytes = file_size - out->data_start;
    pcbm_st_parser *x = pcbm_calloc(1, sizeof *x);
    if (!x)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", label);
    x->label = label;
    x->h = out;
    x->line = 1;
    x->names = (pcbm_namemap){.at = tensor_name_at, .ctx = out};
    x->yh = yajl_alloc(&callbacks, NULL, x);
    if (!x->yh) {
        free(x);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", label);
    }
    *px = x;
    return PCBM_OK;
}

static void parser_free(pcbm_st_parser *x)
{
    if (!x)
        return;
    yajl_free(x->yh);
    pcbm_namemap_free(&x->names);
    keyset_free(&x->keys);
    free(x->meta_key);
    free(x->dims);
    free(x);
}

void pcbm_st_parser_abort(pcbm_st_parser *x)
{
    if (x)
        pcbm_st_header_free(x->h);
    parser_free(x);
}

pcbm_status pcbm_st_parser_feed(pcbm_st_parser *x, const void *buf, size_t len, pcbm_error *err)
{
    const unsigned char *b = buf;
    size_t good = scan_bytes(x, b, len);
    pcbm_status st = PCBM_OK;
    if (yajl_parse(x->yh, b, good) != yajl_status_ok)
        st = yajl_fail(x, b, good, err);
    else if (good < len)
        st = json_fail(x, b, good, x->scan_msg, err);
    else
        advance_pos(x, b, len);
    if (st)
        pcbm_st_parser_abort(x);
    return st;
}

static int by_offset(const void *pa, const void *pb);
static pcbm_status check_tiling(pcbm_st_header *h, const char *label, pcbm_error *err);

pcbm_status pcbm_st_parser_finish(pcbm_st_parser *x, pcbm_error *err)
{
    pcbm_st_header *out = x->h;
    pcbm_status st = PCBM_OK;
    if (yajl_complete_parse(x->yh) != yajl_status_ok)
        st = yajl_fail(x, (const unsigned char *)"", 0, err);
    else if (x->sem_set)
        st = pcbm_fail(err, x->sem_st, "%s", x->sem_err.msg);
    if (!st) {
        if (out->ntensors)
            qsort(out->tensors, out->ntensors, sizeof *out->tensors, by_offset);
        st = check_tiling(out, x->label, err);
    }
    if (st) {
        pcbm_st_parser_abort(x);
        return st;
    }
    parser_free(x);
    return PCBM_OK;
}

/* ---- tiling --------------------------------------------------------------------------------- */

static int by_offset(const void *pa, const void *pb)
{
    const pcbm_st_tensor *a = pa, *b = pb;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes)
        return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

static pcbm_status check_tiling(pcbm_st_header *h, const char *label, pcbm_error *err)
{
    uint64_t cursor = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < h->ntensors; i++) {
        const pcbm_st_tensor *t = &h->tensors[i];
        if (t->offset > cursor && !prev)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: the first tensor '%.200s' starts at data offset %llu (file "
                             "offset %llu), not 0: a gap of %llu bytes (rule: tensors must tile "
                             "the data buffer from 0 with no gap or overlap); " FIX, label,
                             t->name, (unsigned long long)t->offset,
                             (unsigned long long)(h->data_start + t->offset),
                             (unsigned long long)t->offset);
        if (t->offset > cursor)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: tensor '%.200s' starts at data offset %llu (file offset %llu) "
                             "but tensor '%.200s' ends at %llu: a gap of %llu bytes (rule: "
                             "tensors must tile the data buffer from 0 with no gap or overlap); "
                             FIX, label, t->name, (unsigned long long)t->offset,
                             (unsigned long long)(h->data_start + t->offset), prev,
                             (unsigned long long)cursor, (unsigned long long)(t->offset - cursor));
        if (t->offset < cursor)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: tensor '%.200s' starts at data offset %llu (file offset %llu), "
                             "inside tensor '%.200s' which ends at %llu: an overlap (rule: "
                             "tensors must tile the data buffer from 0 with no gap or overlap); "
                             FIX, label, t->name, (unsigned long long)t->offset,
                             (unsigned long long)(h->data_start + t->offset), prev,
                             (unsigned long long)cursor);
        cursor = t->offset + t->nbytes; /* cannot overflow: both came from JSON int64 values */
        prev = t->name;
    }
    if (cursor != h->data_bytes)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the tensors end at data offset %llu (file offset %llu) but the "
                         "file is %llu bytes, leaving a data buffer of %llu bytes (rule: the "
                         "file must end exactly at the last tensor's end): the file is %s; " FIX,
                         label, (unsigned long long)cursor,
                         (unsigned long long)(h->data_start + cursor),
                         (unsigned long long)(h->data_start + h->data_bytes),
                         (unsigned long long)h->data_bytes,
                         cursor > h->data_bytes ? "truncated" : "longer, with trailing bytes");
    for (size_t i = 0; i < h->ntensors; i++)
        h->tensors[i].offset += h->data_start;
    return PCBM_OK;
}

/* ---- the whole header ----------------------------------------------------------------------- */

pcbm_status pcbm_st_parse_json(const char *json, size_t n, uint64_t file_size, const char *label,
                               pcbm_st_header *out, pcbm_error *err)
{
    pcbm_st_parser *x;
    pcbm_status st = pcbm_st_parser_new(n, file_size, label, out, &x, err);
    if (!st)
        st = pcbm_st_parser_feed(x, json, n, err);
    if (!st)
        st = pcbm_st_parser_finish(x, err);
    return st;
}

pcbm_status pcbm_st_parse_mem(const void *buf, size_t len, const char *label,
                              pcbm_st_header *out, pcbm_error *err)
{
    memset(out, 0, sizeof *out);
    uint8_t prefix[8] = {0};
    if (len >= 8)
        memcpy(prefix, buf, 8);
    uint64_t n;
    pcbm_status st = pcbm_st_check_prefix(prefix, len, label, &n, err);
    if (st)
        return st;
    return pcbm_st_parse_json((const char *)buf + 8, (size_t)n, len, label, out, err);
}

void pcbm_st_header_free(pcbm_st_header *h)
{
    if (!h)
        return;
    free(h->tensors);
    free(h->meta);
    pcbm_arena_free(&h->arena);
    memset(h, 0, sizeof *h);
}

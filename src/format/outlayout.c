/* SPDX-License-Identifier: Apache-2.0 */
/*
 * outlayout.c — the layout of the output files of a merge: splitting tensors into shards, each file's
 * header (8-byte length + JSON + space padding to a PCBM_ALIGN boundary), absolute data offsets,
 * and the index JSON when there are several shards. The engine streams the data itself.
 */
#include "st_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 99999u /* five digits in model-00001-of-00003.safetensors */

/* ---- checks --------------------------------------------------------------------------------- */

static pcbm_status check_tensor(const pcbm_out_tensor *t, size_t i, pcbm_error *err)
{
    if (!t->name || strcmp(t->name, "__metadata__") == 0 || (unsigned)t->dtype >= PCBM_DT_COUNT)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "output layout: tensor %zu has no name, the name "
                         "__metadata__, or an invalid dtype; please report this bug", i);
    uint64_t numel = 1, bits;
    for (unsigned d = 0; d < t->ndim; d++)
        if (t->shape[d] > (uint64_t)INT64_MAX || !pcbm_mul_u64(numel, t->shape[d], &numel))
            return pcbm_fail(err, PCBM_ERR_INTERNAL, "output layout: tensor '%.200s' has a shape "
                             "too large to write; please report this bug", t->name);
    if (!pcbm_mul_u64(numel, pcbm_dtype_bits(t->dtype), &bits) || bits % 8 ||
        bits / 8 != t->nbytes)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "output layout: tensor '%.200s' has %llu bytes, "
                         "which does not match its %s shape; please report this bug", t->name,
                         (unsigned long long)t->nbytes, pcbm_dtype_name(t->dtype));
    return PCBM_OK;
}

/* ---- shards --------------------------------------------------------------------------------- */

/* Assign t->file and relative offsets; returns the number of files. */
static unsigned assign_shards(pcbm_out_tensor *t, size_t n, uint64_t shard_bytes)
{
    unsigned file = 0;
    uint64_t used = 0;
    size_t in_file = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_file > 0 && shard_bytes && (used + t[i].nbytes > shard_bytes ||
                                           used + t[i].nbytes < used)) {
            file++;
            used = 0;
            in_file = 0;
        }
        t[i].file = file;
        t[i].offset = used;
        used += t[i].nbytes;
        in_file++;
    }
    return file + 1;
}

static pcbm_status name_files(pcbm_outlayout *p, pcbm_error *err)
{
    for (unsigned f = 0; f < p->nfiles; f++) {
        char name[64];
        if (p->nfiles == 1)
            snprintf(name, sizeof name, "%s", PCBM_SINGLE_NAME);
        else
            snprintf(name, sizeof name, "model-%05u-of-%05u.safetensors", f + 1, p->nfiles);
        if (!(p->files[f].name = pcbm_strdup(name)))
            return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: out of memory");
    }
    for (size_t i = 0; i < p->ntensors; i++) {
        pcbm_out_file *f = &p->files[p->tensors[i].file];
        if (f->count++ == 0)
            f->first = i;
    }
    return PCBM_OK;
}

/* ---- JSON text -------------------------------------------------------------------------------
 * Headers and the index are written as text directly, byte for byte what jansson's json_dumps
 * wrote from a tree (insertion order; compact for headers, 2-space indent for the index; '"',
 * '\\' and control characters escaped, as \u00XX when there is no short form; '/' and non-ASCII
 * kept): a 100k-tensor header costs its ~10 MB of text, not a tree of 10x that. */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = PCBM_MAX(2 * b->cap, b->len + n + 4096);
        char *p = pcbm_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_cstr(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char t[24];
    sb_put(b, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}

/* Valid UTF-8 as jansson requires of a string (no overlong forms, surrogates or > U+10FFFF). */
static bool utf8_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s++, need;
        uint32_t cp, min;
        if (c < 0x80)
            continue;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        for (; need; need--, s++) {
            if ((*s & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (*s & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
    }
    return true;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, run, (size_t)(s - run));
        run = s + 1;
        char t[8];
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default: sb_put(b, t, (size_t)snprintf(t, sizeof t, "\\u%04X", c));
        }
    }
    sb_put(b, run, (size_t)(s - run));
    sb_put(b, "\"", 1);
}

/* ---- headers -------------------------------------------------------------------------------- */

/* "format":"pt", then the pairs of meta ("format" and repeated keys skipped: the first wins). */
static bool meta_object(sbuf *b, const char *const *meta, size_t nmeta)
{
    sb_cstr(b, "{\"format\":\"pt\"");
    for (size_t i = 0; i + 1 < nmeta; i += 2) {
        if (!meta[i] || !meta[i + 1] || strcmp(meta[i], "format") == 0)
            continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j += 2)
            seen = meta[j] && meta[j + 1] && strcmp(meta[j], meta[i]) == 0;
        if (seen)
            continue;
        if (!utf8_ok(meta[i]) || !utf8_ok(meta[i + 1]))
            return false;
        sb_put(b, ",", 1);
        sb_str(b, meta[i]);
        sb_put(b, ":", 1);
        sb_str(b, meta[i + 1]);
    }
    sb_put(b, "}", 1);
    return true;
}

static void tensor_entry(sbuf *b, const pcbm_out_tensor *t)
{
    sb_cstr(b, "{\"dtype\":");
    sb_str(b, pcbm_dtype_name(t->dtype));
    sb_cstr(b, ",\"shape\":[");
    for (unsigned d = 0; d < t->ndim; d++) {
        if (d)
            sb_put(b, ",", 1);
        sb_u64(b, t->shape[d]);
    }
    sb_cstr(b, "],\"data_offsets\":[");
    sb_u64(b, t->offset);
    sb_put(b, ",", 1);
    sb_u64(b, t->offset + t->nbytes);
    sb_cstr(b, "]}");
}

/* The 8-byte length, the JSON, spaces up to a PCBM_ALIGN boundary: built in place. */
static pcbm_status build_header(pcbm_outlayout *p, pcbm_out_file *f, const char *const *meta,
                                size_t nmeta, pcbm_error *err)
{
    sbuf b = {0};
    sb_put(&b, "\0\0\0\0\0\0\0\0{\"__metadata__\":", 24);
    if (!meta_object(&b, meta, nmeta)) {
        free(b.p);
        return pcbm_fail(err, PCBM_ERR_USAGE, "output layout for %s: __metadata__ keys and values "
                         "must be valid UTF-8 strings (or memory ran out)", f->name);
    }
    uint64_t data = 0;
    for (size_t i = f->first; i < f->first + f->count; i++) {
        const pcbm_out_tensor *t = &p->tensors[i];
        if (!utf8_ok(t->name)) {
            free(b.p);
            return pcbm_fail(err, PCBM_ERR_USAGE, "output layout for %s: tensor name '%.200s' is "
                             "not valid UTF-8 (or memory ran out)", f->name, t->name);
        }
        sb_put(&b, ",", 1);
        sb_str(&b, t->name);
        sb_put(&b, ":", 1);
        tensor_entry(&b, t);
        data += t->nbytes;
    }
    sb_put(&b, "}", 1);
    f->data_start = pcbm_align_up(b.len, PCBM_ALIGN);
    char *h = b.oom ? NULL : pcbm_realloc(b.p, (size_t)f->data_start);
    if (!h) {
        free(b.p);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: out of memory for a header");
    }
    memset(h + b.len, ' ', (size_t)(f->data_start - b.len));
    uint64_t n = f->data_start - 8;
    for (int k = 0; k < 8; k++)
        h[k] = (char)(uint8_t)(n >> (8 * k));
    f->header = h;
    f->size = f->data_start + data;
    return PCBM_OK;
}

/* ---- index ---------------------------------------------------------------------------------- */

static pcbm_status build_index(pcbm_outlayout *p, pcbm_error *err)
{
    sbuf b = {0};
    sb_cstr(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
    sb_u64(&b, p->total_bytes);
    sb_cstr(&b, "\n  },\n  \"weight_map\": {");
    for (size_t i = 0; i < p->ntensors; i++) {
        sb_cstr(&b, i ? ",\n    " : "\n    ");
        sb_str(&b, p->tensors[i].name);
        sb_cstr(&b, ": ");
        sb_str(&b, p->files[p->tensors[i].file].name);
    }
    sb_cstr(&b, p->ntensors ? "\n  }\n}\n" : "}\n}\n");
    sb_put(&b, "", 1);
    if (b.oom) {
        free(b.p);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: cannot build the index JSON");
    }
    p->index_json = b.p;
    return PCBM_OK;
}

/* ---- plan ----------------------------------------------------------------------------------- */

static const char *out_name_at(const void *ctx, size_t i)
{
    return ((const pcbm_out_tensor *)ctx)[i].name;
}

static pcbm_status check_all(const pcbm_out_tensor *t, size_t n, const char *const *meta,
                             size_t nmeta, uint64_t *total, pcbm_error *err)
{
    if (nmeta % 2 || (nmeta && !meta))
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "output layout: metadata must be key/value "
                         "pairs (got %zu strings); please report this bug", nmeta);
    pcbm_namemap nm;
    if (!pcbm_namemap_init(&nm, n, out_name_at, t))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: out of memory for %zu names", n);
    pcbm_status st = PCBM_OK;
    *total = 0;
    for (size_t i = 0; i < n && !st; i++) {
        st = check_tensor(&t[i], i, err);
        if (!st && pcbm_namemap_insert(&nm, i) >= 0)
            st = pcbm_fail(err, PCBM_ERR_INTERNAL, "output layout: tensor '%.200s' appears twice; "
                           "please report this bug", t[i].name);
        if (!st && (!pcbm_add_u64(*total, t[i].nbytes, total) || *total > (uint64_t)INT64_MAX))
            st = pcbm_fail(err, PCBM_ERR_USAGE, "output layout: the tensors add up to more than "
                           "2^63 bytes");
    }
    pcbm_namemap_free(&nm);
    return st;
}

pcbm_status pcbm_outlayout_build(pcbm_out_tensor *tensors, size_t n, uint64_t shard_bytes,
                               const char *const *meta, size_t nmeta, pcbm_outlayout *plan,
                               pcbm_error *err)
{
    memset(plan, 0, sizeof *plan);
    pcbm_status st = check_all(tensors, n, meta, nmeta, &plan->total_bytes, err);
    if (st)
        return st;
    plan->tensors = tensors;
    plan->ntensors = n;
    plan->nfiles = assign_shards(tensors, n, shard_bytes);
    if (plan->nfiles > MAX_SHARDS)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the output would need %u shards, more than the "
                         "%u that shard names allow; raise the shard size", plan->nfiles,
                         MAX_SHARDS);
    plan->files = pcbm_calloc(plan->nfiles, sizeof *plan->files);
    if (!plan->files)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: out of memory");
    st = name_files(plan, err);
    for (unsigned f = 0; f < plan->nfiles && !st; f++)
        st = build_header(plan, &plan->files[f], meta, nmeta, err);
    for (size_t i = 0; i < n && !st; i++)
        tensors[i].offset += plan->files[tensors[i].file].data_start;
    for (unsigned f = 0; f < plan->nfiles && !st; f++)
        plan->total_file_bytes += plan->files[f].size;
    if (!st && plan->nfiles > 1)
        st = build_index(plan, err);
    if (st)
        pcbm_outlayout_free(plan);
    return st;
}

void pcbm_outlayout_free(pcbm_outlayout *plan)
{
    if (!plan)
        return;
    for (unsigned f = 0; plan->files && f < plan->nfiles; f++) {
        free(plan->files[f].name);
        free(plan->files[f].header);
    }
    free(plan->files);
    free(plan->index_json);
    memset(plan, 0, sizeof *plan);
}

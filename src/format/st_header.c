/* SPDX-License-Identifier: Apache-2.0 */
/*
 * st_header.c — validation of one safetensors header held in memory: the 8-byte length prefix,
 * the JSON (jansson), every tensor entry, __metadata__, and the tiling of the data buffer.
 * Each broken rule becomes one PCBM_ERR_FORMAT naming the file, the tensor, the offset and a fix.
 */
#include "st_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- one tensor entry ----------------------------------------------------------------------- */

typedef struct entry_ctx {
    const char *label;
    const char *name;
    pcbm_error *err;
} entry_ctx;

static pcbm_status entry_dtype(const entry_ctx *c, const json_t *v, pcbm_st_tensor *t)
{
    const json_t *d = json_object_get(v, "dtype");
    if (!d)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has no \"dtype\" (rule: every tensor entry has "
                         "dtype, shape and data_offsets); " FIX, c->label, c->name);
    if (!json_is_string(d))
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has a \"dtype\" that is %s, not a string (wrong "
                         "JSON type); " FIX, c->label, c->name, pcbm_st_json_kind(d));
    t->dtype = pcbm_dtype_parse(json_string_value(d));
    if (t->dtype == PCBM_DT_COUNT)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has unknown dtype \"%.40s\" (known: BOOL, U8, I8, "
                         "I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_*, F6_*, F4, C64)"
                         "; the file may come from a newer writer or be corrupt: re-export it "
                         "with a known dtype", c->label, c->name, json_string_value(d));
    return PCBM_OK;
}

static pcbm_status entry_dim(const entry_ctx *c, const json_t *e, size_t i, uint64_t *dim)
{
    if (!json_is_integer(e))
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has shape[%zu] that is %s, not a non-negative "
                         "integer (rule: dims are non-negative integers); " FIX,
                         c->label, c->name, i, pcbm_st_json_kind(e));
    json_int_t v = json_integer_value(e);
    if (v < 0)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has negative shape[%zu] = %lld (rule: dims are "
                         "non-negative integers); " FIX, c->label, c->name, i, (long long)v);
    *dim = (uint64_t)v;
    return PCBM_OK;
}

static pcbm_status entry_shape(const entry_ctx *c, const json_t *v, pcbm_st_tensor *t)
{
    const json_t *s = json_object_get(v, "shape");
    if (!s)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has no \"shape\" (rule: every tensor entry has "
                         "dtype, shape and data_offsets); " FIX, c->label, c->name);
    if (!json_is_array(s))
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has a \"shape\" that is %s, not an array (wrong "
                         "JSON type); " FIX, c->label, c->name, pcbm_st_json_kind(s));
    size_t nd = json_array_size(s);
    if (nd > UINT32_MAX)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT, "%s: tensor '%.200s' has %zu dims; " FIX,
                         c->label, c->name, nd);
    t->ndim = (unsigned)nd;
    t->shape = nd ? pcbm_calloc(nd, sizeof *t->shape) : NULL;
    if (nd && !t->shape)
        return pcbm_fail(c->err, PCBM_ERR_NOMEM, "%s: out of memory reading tensor '%.200s'",
                         c->label, c->name);
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        pcbm_status st = entry_dim(c, json_array_get(s, i), i, &t->shape[i]);
        if (st)
            return st;
        if (!pcbm_mul_u64(numel, t->shape[i], &numel))
            return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                             "%s: tensor '%.200s': the product of its shape overflows 64 bits "
                             "at shape[%zu] (rule: shape product x element size must fit); " FIX,
                             c->label, c->name, i);
    }
    t->numel = numel;
    return PCBM_OK;
}

static pcbm_status entry_nbytes(const entry_ctx *c, pcbm_st_tensor *t)
{
    uint64_t bits;
    if (!pcbm_mul_u64(t->numel, pcbm_dtype_bits(t->dtype), &bits))
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s': %llu elements of %s overflow 64 bits (rule: "
                         "shape product x element size must fit); " FIX, c->label, c->name,
                         (unsigned long long)t->numel, pcbm_dtype_name(t->dtype));
    if (bits % 8)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s': %llu elements of %s are %llu bits, not a whole "
                         "number of bytes (rule: tensor data is whole bytes); " FIX, c->label,
                         c->name, (unsigned long long)t->numel, pcbm_dtype_name(t->dtype),
                         (unsigned long long)bits);
    t->nbytes = bits / 8;
    return PCBM_OK;
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

static pcbm_status entry_offsets(const entry_ctx *c, const json_t *v, uint64_t data_start,
                                 pcbm_st_tensor *t)
{
    const json_t *o = json_object_get(v, "data_offsets");
    if (!o)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has no \"data_offsets\" (rule: every tensor entry "
                         "has dtype, shape and data_offsets); " FIX, c->label, c->name);
    const json_t *b = json_array_get(o, 0), *e = json_array_get(o, 1);
    if (!json_is_array(o) || json_array_size(o) != 2 || !json_is_integer(b) ||
        !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has \"data_offsets\" that is not an array of two "
                         "non-negative integers [begin, end] (wrong JSON type); " FIX,
                         c->label, c->name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    if (end < begin || end - begin != t->nbytes) {
        char shape[64];
        fmt_shape(t, shape, sizeof shape);
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' has data_offsets [%llu, %llu] (file offset %llu) "
                         "but shape %s of %s needs %llu bytes (rule: end - begin = "
                         "product(shape) x element size); " FIX, c->label, c->name,
                         (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(data_start + begin), shape,
                         pcbm_dtype_name(t->dtype), (unsigned long long)t->nbytes);
    }
    t->offset = begin; /* relative until the tiling check passes */
    return PCBM_OK;
}

static pcbm_status parse_entry(const entry_ctx *c, const json_t *v, uint64_t data_start,
                               pcbm_st_tensor *t)
{
    if (!json_is_object(v))
        return pcbm_fail(c->err, PCBM_ERR_FORMAT,
                         "%s: tensor '%.200s' is %s, not an object {dtype, shape, data_offsets} "
                         "(wrong JSON type); " FIX, c->label, c->name, pcbm_st_json_kind(v));
    t->name = pcbm_strdup(c->name);
    if (!t->name)
        return pcbm_fail(c->err, PCBM_ERR_NOMEM, "%s: out of memory", c->label);
    pcbm_status st = entry_dtype(c, v, t);
    if (!st)
        st = entry_shape(c, v, t);
    if (!st)
        st = entry_nbytes(c, t);
    if (!st)
        st = entry_offsets(c, v, data_start, t);
    return st;
}

/* ---- __metadata__ --------------------------------------------------------------------------- */

static pcbm_status parse_meta(const json_t *v, const char *label, pcbm_st_header *h,
                              pcbm_error *err)
{
    if (!json_is_object(v))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: __metadata__ is %s, not an object (rule: __metadata__ maps strings "
                         "to strings); " FIX, label, pcbm_st_json_kind(v));
    h->meta = pcbm_calloc(2 * json_object_size(v), sizeof *h->meta);
    if (!h->meta)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory reading __metadata__", label);
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)v, k, val) {
        if (!json_is_string(val))
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: __metadata__ key \"%.100s\" has a value that is %s, not a "
                             "string (rule: __metadata__ maps strings to strings); " FIX,
                             label, k, pcbm_st_json_kind(val));
        h->meta[h->nmeta] = pcbm_strdup(k);
        h->meta[h->nmeta + 1] = pcbm_strdup(json_string_value(val));
        h->nmeta += 2;
        if (!h->meta[h->nmeta - 2] || !h->meta[h->nmeta - 1])
            return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", label);
    }
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

static pcbm_status parse_entries(const json_t *root, const char *label, pcbm_st_header *h,
                                 pcbm_error *err)
{
    size_t n = json_object_size(root);
    h->tensors = pcbm_calloc(n, sizeof *h->tensors);
    if (!h->tensors)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory for %zu tensors", label, n);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        pcbm_status st;
        if (strcmp(key, "__metadata__") == 0) {
            st = parse_meta(v, label, h, err);
        } else {
            entry_ctx c = {label, key, err};
            st = parse_entry(&c, v, h->data_start, &h->tensors[h->ntensors++]);
        }
        if (st)
            return st;
    }
    return PCBM_OK;
}

pcbm_status pcbm_st_parse_json(const char *json, size_t n, uint64_t file_size, const char *label,
                               pcbm_st_header *out, pcbm_error *err)
{
    memset(out, 0, sizeof *out);
    out->header_len = n;
    out->data_start = 8 + (uint64_t)n;
    out->data_bytes = file_size - out->data_start;
    json_error_t je;
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the header is not valid UTF-8 JSON at header byte %d (file offset "
                         "%llu, line %d, column %d): %s; " FIX, label, je.position,
                         (unsigned long long)(8 + (uint64_t)je.position), je.line, je.column,
                         je.text);
    pcbm_status st = PCBM_OK;
    if (!json_is_object(root))
        st = pcbm_fail(err, PCBM_ERR_FORMAT,
                       "%s: the header JSON is %s, not an object (rule: the top level of the "
                       "header is an object of tensor entries); " FIX, label,
                       pcbm_st_json_kind(root));
    if (!st)
        st = parse_entries(root, label, out, err);
    json_decref(root);
    if (!st) {
        qsort(out->tensors, out->ntensors, sizeof *out->tensors, by_offset);
        st = check_tiling(out, label, err);
    }
    if (st)
        pcbm_st_header_free(out);
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

void pcbm_st_tensor_free(pcbm_st_tensor *t)
{
    free(t->name);
    free(t->shape);
    t->name = NULL;
    t->shape = NULL;
}

void pcbm_st_header_free(pcbm_st_header *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->ntensors; i++)
        pcbm_st_tensor_free(&h->tensors[i]);
    free(h->tensors);
    for (size_t i = 0; i < h->nmeta; i++)
        free(h->meta[i]);
    free(h->meta);
    memset(h, 0, sizeof *h);
}

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

/* ---- headers -------------------------------------------------------------------------------- */

static json_t *meta_object(const char *const *meta, size_t nmeta)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "format", json_string("pt"))) {
        json_decref(o);
        return NULL;
    }
    for (size_t i = 0; i + 1 < nmeta; i += 2) {
        if (!meta[i] || !meta[i + 1] || json_object_get(o, meta[i]))
            continue; /* "format" and repeated keys: the first wins */
        json_t *v = json_string(meta[i + 1]);
        if (!v || json_object_set_new(o, meta[i], v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* Set key to a new value (stolen, also on failure); returns 0 on success. */
static int set_new(json_t *o, const char *key, json_t *v)
{
    if (!o || !v) {
        json_decref(v);
        return -1;
    }
    return json_object_set_new(o, key, v);
}

static json_t *tensor_entry(const pcbm_out_tensor *t)
{
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    for (unsigned d = 0; shape && d < t->ndim; d++)
        json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    json_array_append_new(offs, json_integer((json_int_t)t->offset));
    json_array_append_new(offs, json_integer((json_int_t)(t->offset + t->nbytes)));
    int bad = set_new(e, "dtype", json_string(pcbm_dtype_name(t->dtype)));
    bad |= set_new(e, "shape", shape);
    bad |= set_new(e, "data_offsets", offs);
    if (bad || json_array_size(shape) != t->ndim || json_array_size(offs) != 2) {
        json_decref(e);
        return NULL;
    }
    return e;
}

/* Serialize `root`, pad with spaces to a PCBM_ALIGN boundary after the 8-byte length. */
static pcbm_status pad_header(json_t *root, pcbm_out_file *f, pcbm_error *err)
{
    char *text = json_dumps(root, JSON_COMPACT);
    if (!text)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: cannot serialize the header of %s",
                         f->name);
    size_t len = strlen(text);
    f->data_start = pcbm_align_up(8 + (uint64_t)len, PCBM_ALIGN);
    f->header = pcbm_malloc((size_t)f->data_start);
    if (!f->header) {
        free(text);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: out of memory for a header");
    }
    uint64_t n = f->data_start - 8;
    for (int b = 0; b < 8; b++)
        f->header[b] = (char)(uint8_t)(n >> (8 * b));
    memcpy(f->header + 8, text, len);
    memset(f->header + 8 + len, ' ', (size_t)(n - len));
    free(text);
    return PCBM_OK;
}

static pcbm_status build_header(pcbm_outlayout *p, pcbm_out_file *f, const char *const *meta,
                                size_t nmeta, pcbm_error *err)
{
    json_t *root = json_object();
    if (set_new(root, "__metadata__", meta_object(meta, nmeta))) {
        json_decref(root);
        return pcbm_fail(err, PCBM_ERR_USAGE, "output layout for %s: __metadata__ keys and values "
                         "must be valid UTF-8 strings (or memory ran out)", f->name);
    }
    uint64_t data = 0;
    for (size_t i = f->first; i < f->first + f->count; i++) {
        const pcbm_out_tensor *t = &p->tensors[i];
        if (set_new(root, t->name, tensor_entry(t))) {
            json_decref(root);
            return pcbm_fail(err, PCBM_ERR_USAGE, "output layout for %s: tensor name '%.200s' is "
                             "not valid UTF-8 (or memory ran out)", f->name, t->name);
        }
        data += t->nbytes;
    }
    pcbm_status st = pad_header(root, f, err);
    json_decref(root);
    f->size = f->data_start + data;
    return st;
}

/* ---- index ---------------------------------------------------------------------------------- */

static pcbm_status build_index(pcbm_outlayout *p, pcbm_error *err)
{
    json_t *root = json_object(), *md = json_object(), *wm = json_object();
    int bad = set_new(md, "total_size", json_integer((json_int_t)p->total_bytes));
    for (size_t i = 0; i < p->ntensors; i++)
        bad |= set_new(wm, p->tensors[i].name, json_string(p->files[p->tensors[i].file].name));
    bad |= set_new(root, "metadata", md);
    bad |= set_new(root, "weight_map", wm);
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    size_t len = text ? strlen(text) : 0;
    p->index_json = text ? pcbm_malloc(len + 2) : NULL;
    if (p->index_json)
        snprintf(p->index_json, len + 2, "%s\n", text);
    free(text);
    if (!p->index_json)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "output layout: cannot build the index JSON");
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

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * st_index.c — validation of model.safetensors.index.json text: a JSON object whose "weight_map"
 * maps tensor names to plain shard file names that exist beside it. Shards are listed in order of
 * first appearance; the cross-check against the shards' own headers is in model.c.
 */
#include "st_internal.h"

#include <stdlib.h>
#include <string.h>

#define IFIX "re-download the index or re-export the model"

int pcbm_st_plain_name(const char *name)
{
    if (!name || !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    return strchr(name, '/') == NULL && strchr(name, '\\') == NULL;
}

static pcbm_status check_root(const json_t *root, const char *label, pcbm_error *err)
{
    if (!json_is_object(root))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the index is %s, not a JSON object (rule: an index is an object "
                         "with a \"weight_map\" of tensor name -> shard file); " IFIX, label,
                         pcbm_st_json_kind(root));
    const json_t *wm = json_object_get(root, "weight_map");
    if (!wm)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the index has no \"weight_map\" (rule: an index is an object with "
                         "a \"weight_map\" of tensor name -> shard file); " IFIX, label);
    if (!json_is_object(wm))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: \"weight_map\" is %s, not an object (rule: weight_map maps tensor "
                         "names to shard file names); " IFIX, label, pcbm_st_json_kind(wm));
    if (json_object_size(wm) == 0)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: \"weight_map\" is empty, so the index names no shard (rule: an "
                         "index lists every tensor of the model); " IFIX, label);
    return PCBM_OK;
}

static pcbm_status check_file_name(const char *tensor, const json_t *v, const char *label,
                                   pcbm_error *err)
{
    if (!json_is_string(v))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: weight_map entry for tensor '%.200s' is %s, not a shard file name "
                         "string (wrong JSON type); " IFIX, label, tensor, pcbm_st_json_kind(v));
    const char *f = json_string_value(v);
    if (!pcbm_st_plain_name(f))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: weight_map maps tensor '%.200s' to \"%.200s\", which is not a plain "
                         "file name inside the model directory (rule: shard names have no '/', "
                         "no '\\', are not empty, \".\" or \"..\"; no path traversal); refusing "
                         "it: fix or re-download the index", label, tensor, f);
    return PCBM_OK;
}

/* Shard number of file name f: its first appearance adds it (after the existence check). */
static pcbm_status shard_number(pcbm_st_index *ix, json_t *seen, const char *tensor,
                                const char *f, const char *label, pcbm_st_exists_fn exists,
                                void *ctx, pcbm_error *err)
{
    json_t *known = json_object_get(seen, f);
    if (known) {
        ix->shard_of[ix->nnames] = (unsigned)json_integer_value(known);
        return PCBM_OK;
    }
    if (exists && !exists(f, ctx))
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: weight_map maps tensor '%.200s' to shard \"%.200s\", which does "
                         "not exist in the model directory (rule: every shard named by the "
                         "index must exist beside it); download the missing shard", label,
                         tensor, f);
    ix->shards[ix->nshards] = pcbm_strdup(f);
    if (!ix->shards[ix->nshards] || json_object_set_new(seen, f, json_integer(ix->nshards)))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", label);
    ix->shard_of[ix->nnames] = ix->nshards++;
    return PCBM_OK;
}

static pcbm_status read_weight_map(const json_t *wm, const char *label, pcbm_st_exists_fn exists,
                                   void *ctx, pcbm_st_index *ix, pcbm_error *err)
{
    size_t n = json_object_size(wm);
    ix->names = pcbm_calloc(n, sizeof *ix->names);
    ix->shard_of = pcbm_calloc(n, sizeof *ix->shard_of);
    ix->shards = pcbm_calloc(n, sizeof *ix->shards);
    json_t *seen = json_object();
    pcbm_status st = PCBM_OK;
    if (!ix->names || !ix->shard_of || !ix->shards || !seen || n >= UINT32_MAX)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory for %zu entries", label, n);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)wm, key, v) {
        if (st)
            break;
        st = check_file_name(key, v, label, err);
        if (!st)
            st = shard_number(ix, seen, key, json_string_value(v), label, exists, ctx, err);
        if (!st && !(ix->names[ix->nnames++] = pcbm_strdup(key)))
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", label);
    }
    json_decref(seen);
    return st;
}

pcbm_status pcbm_st_index_parse(const char *json, size_t len, const char *label,
                                pcbm_st_exists_fn exists, void *ctx, pcbm_st_index *out,
                                pcbm_error *err)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s: the index is not valid UTF-8 JSON at byte %d (line %d, column %d): "
                         "%s; " IFIX, label, je.position, je.line, je.column, je.text);
    pcbm_status st = check_root(root, label, err);
    if (!st)
        st = read_weight_map(json_object_get(root, "weight_map"), label, exists, ctx, out, err);
    json_decref(root);
    if (st)
        pcbm_st_index_free(out);
    return st;
}

void pcbm_st_index_free(pcbm_st_index *ix)
{
    if (!ix)
        return;
    for (unsigned i = 0; i < ix->nshards; i++)
        free(ix->shards[i]);
    for (size_t i = 0; i < ix->nnames; i++)
        free(ix->names[i]);
    free(ix->shards);
    free(ix->names);
    free(ix->shard_of);
    memset(ix, 0, sizeof *ix);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model.c — pcbm_model: resolving a model path (directory with model.safetensors, directory with
 * an index and shards, or one file), loading every header, cross-checking index and shards, the
 * name map, the model identity and the public accessors.
 */
#include "st_internal.h"
#include "adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define PCBM_INDEX_MAX_BYTES PCBM_ST_MAX_HEADER /* an index is a few hundred KB in practice */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = pcbm_malloc(a + b + 2);
    if (p)
        snprintf(p, a + b + 2, "%s/%s", dir, name);
    return p;
}

static bool is_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ---- loading shards ------------------------------------------------------------------------- */

/* Append the tensors of one header to the model as file `fi`; the header keeps only metadata. */
static pcbm_status append_tensors(pcbm_model *m, pcbm_st_header *h, unsigned fi, pcbm_error *err)
{
    if (h->ntensors > (size_t)UINT32_MAX - 1 - m->ntensors)
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: more than 4 billion tensors in one model",
                         m->path);
    pcbm_arena_adopt(&m->arena, &h->arena);
    if (h->ntensors == 0)
        return PCBM_OK;
    pcbm_st_tensor *t;
    if (m->ntensors == 0) { /* the first file's table becomes the model's, trimmed */
        t = pcbm_realloc(h->tensors, h->ntensors * sizeof *t);
        if (t)
            h->tensors = NULL;
    } else {
        t = pcbm_realloc(m->tensors, (m->ntensors + h->ntensors) * sizeof *t);
        if (t)
            memcpy(t + m->ntensors, h->tensors, h->ntensors * sizeof *t);
    }
    if (!t)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory for the tensor list", m->path);
    m->tensors = t;
    for (size_t i = 0; i < h->ntensors; i++)
        t[m->ntensors++].file = fi;
    h->ntensors = 0; /* ownership moved */
    return PCBM_OK;
}

/* Load file `name` of the model directory (or m->path itself when `whole_path`). */
static pcbm_status load_file(pcbm_model *m, const char *name, bool whole_path, pcbm_error *err)
{
    char *path = whole_path ? pcbm_strdup(m->path) : path_join(m->dir, name);
    if (!path)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_st_header h;
    unsigned fi = m->nfiles;
    pcbm_status st = pcbm_st_read_file(path, name, &m->files[fi], &h, err);
    free(path);
    if (st)
        return st;
    m->nfiles++;
    st = append_tensors(m, &h, fi, err);
    if (!st && fi == 0) {
        m->meta = h.meta;
        m->nmeta = h.nmeta;
        h.meta = NULL;
        h.nmeta = 0;
    }
    pcbm_st_header_free(&h);
    return st;
}

static pcbm_status open_single(pcbm_model *m, const char *name, pcbm_error *err)
{
    m->files = pcbm_calloc(1, sizeof *m->files);
    if (!m->files)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    return load_file(m, name, !m->is_dir, err);
}

/* ---- index ---------------------------------------------------------------------------------- */

/* Whether the index's shard is there at all; what kind of file it is, reading it says (a FIFO,
 * a directory or a device is "not a regular file", not "missing"). */
static bool shard_exists(const char *name, void *ctx)
{
    char *p = path_join(ctx, name);
    struct stat sb;
    bool ok = p && stat(p, &sb) == 0;
    free(p);
    return ok;
}

static pcbm_status read_whole(const char *path, char **buf, size_t *len, pcbm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s; check the path and its "
                         "permissions", path, strerror(errno));
    struct stat sb;
    pcbm_status st = PCBM_OK;
    if (fstat(fileno(f), &sb) != 0 || (uint64_t)sb.st_size > PCBM_INDEX_MAX_BYTES)
        st = pcbm_fail(err, PCBM_ERR_FORMAT, "%s: the index is larger than %llu bytes (or cannot "
                       "be sized): not a real index; re-download it", path,
                       (unsigned long long)PCBM_INDEX_MAX_BYTES);
    else if (!(*buf = pcbm_malloc((size_t)sb.st_size)))
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", path);
    else if ((*len = fread(*buf, 1, (size_t)sb.st_size, f)) != (size_t)sb.st_size)
        st = pcbm_fail(err, PCBM_ERR_IO, "%s: short read at byte %zu: %s; check the file and "
                       "retry", path, *len, ferror(f) ? strerror(errno) : "file shrank");
    fclose(f);
    return st;
}

static const char *tensor_name_at(const void *ctx, size_t i)
{
    return ((const pcbm_model *)ctx)->tensors[i].name;
}

static const char *index_name_at(const void *ctx, size_t i)
{
    return ((const pcbm_st_index *)ctx)->names[i];
}

/* Every shard tensor is listed for its shard; every listed tensor is in its shard. */
static pcbm_status cross_check(const pcbm_model *m, const pcbm_st_index *ix, const char *label,
                               const pcbm_namemap *imap, pcbm_error *err)
{
    for (size_t i = 0; i < m->ntensors; i++) {
        const pcbm_st_tensor *t = &m->tensors[i];
        long j = pcbm_namemap_find(imap, t->name);
        if (j < 0)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: shard %s holds tensor '%.200s' (file offset %llu) that the "
                             "index does not list (rule: every tensor of a shard is listed in "
                             "weight_map for that shard); re-download the index or re-export "
                             "the model", label, m->files[t->file].name, t->name,
                             (unsigned long long)t->offset);
        if (ix->shard_of[j] != t->file)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: tensor '%.200s' is stored in shard %s but the index maps it to "
                             "shard %s (rule: every tensor of a shard is listed in weight_map "
                             "for that shard); re-download the index or re-export the model",
                             label, t->name, m->files[t->file].name, ix->shards[ix->shard_of[j]]);
    }
    for (size_t j = 0; j < ix->nnames; j++)
        if (pcbm_model_find(m, ix->names[j]) < 0)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: the index lists tensor '%.200s' in shard %s, but that shard "
                             "has no tensor of that name (rule: every tensor in weight_map is "
                             "in its shard); re-download the shard or the index", label,
                             ix->names[j], ix->shards[ix->shard_of[j]]);
    return PCBM_OK;
}

static pcbm_status build_map(pcbm_model *m, pcbm_error *err);

static pcbm_status load_shards(pcbm_model *m, const pcbm_st_index *ix, const char *label,
                               pcbm_error *err)
{
    m->files = pcbm_calloc(ix->nshards, sizeof *m->files);
    if (!m->files)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = PCBM_OK;
    for (unsigned i = 0; i < ix->nshards && !st; i++)
        st = load_file(m, ix->shards[i], false, err);
    if (!st)
        st = build_map(m, err);
    pcbm_namemap imap;
    if (!st && !pcbm_namemap_init(&imap, ix->nnames, index_name_at, ix))
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    else if (!st) {
        for (size_t j = 0; j < ix->nnames; j++)
            pcbm_namemap_insert(&imap, j); /* names are unique: JSON_REJECT_DUPLICATES */
        st = cross_check(m, ix, label, &imap, err);
        pcbm_namemap_free(&imap);
    }
    return st;
}

static pcbm_status open_index(pcbm_model *m, const char *name, pcbm_error *err)
{
    char *label = path_join(m->dir, name), *buf = NULL;
    size_t len = 0;
    if (!label)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_st_index ix;
    memset(&ix, 0, sizeof ix);
    pcbm_status st = read_whole(label, &buf, &len, err);
    if (!st)
        st = pcbm_st_index_parse(buf, len, label, shard_exists, m->dir, &ix, err);
    if (!st)
        st = load_shards(m, &ix, label, err);
    pcbm_st_index_free(&ix);
    free(buf);
    free(label);
    return st;
}

/* ---- name map and identity ------------------------------------------------------------------ */

static pcbm_status build_map(pcbm_model *m, pcbm_error *err)
{
    if (m->map)
        return PCBM_OK;
    pcbm_namemap nm;
    if (!pcbm_namemap_init(&nm, m->ntensors, tensor_name_at, m))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory for the name map", m->path);
    m->map = nm.slots;
    m->map_cap = nm.cap;
    for (size_t i = 0; i < m->ntensors; i++) {
        long j = pcbm_namemap_insert(&nm, i);
        if (j >= 0)
            return pcbm_fail(err, PCBM_ERR_FORMAT,
                             "%s: tensor '%.200s' is in two shards, %s and %s (rule: a tensor "
                             "lives in exactly one shard); re-export the model or remove the "
                             "stale shard", m->path, m->tensors[i].name,
                             m->files[m->tensors[j].file].name, m->files[m->tensors[i].file].name);
    }
    return PCBM_OK;
}

static void finish(pcbm_model *m)
{
    uint8_t *buf = pcbm_malloc(16 * (size_t)m->nfiles);
    for (unsigned f = 0; buf && f < m->nfiles; f++)
        for (int b = 0; b < 8; b++) {
            buf[16 * f + b] = (uint8_t)(m->files[f].header_hash >> (8 * b));
            buf[16 * f + 8 + b] = (uint8_t)(m->files[f].size >> (8 * b));
        }
    m->identity = buf ? XXH3_64bits(buf, 16 * (size_t)m->nfiles) : 0;
    if (m->adapter) /* rank, alpha and patterns are part of what the adapter means */
        m->identity ^= m->adapter->config_hash;
    free(buf);
    m->total_bytes = 0;
    for (size_t i = 0; i < m->ntensors; i++)
        m->total_bytes += m->tensors[i].nbytes;
}

/* ---- open / close --------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A directory without safetensors weights: name what it holds instead. PyTorch pickles are never
 * loaded (unpickling runs code); say how to convert them. */
static pcbm_status no_weights(const pcbm_model *m, pcbm_error *err)
{
    static const char *const pickles[] = {"pytorch_model.bin", "pytorch_model.bin.index.json",
                                          "model.pt", "consolidated.00.pth"};
    for (size_t i = 0; i < sizeof pickles / sizeof *pickles; i++) {
        char *p = path_join(m->dir, pickles[i]);
        bool found = p && is_regular(p);
        free(p);
        if (found)
            return pcbm_fail(err, PCBM_ERR_UNSUPPORTED,
                             "%s/%s: this model is stored as PyTorch pickle weights, which "
                             "pcbmerge never loads (unpickling can run code); convert it to "
                             "safetensors first, e.g. with transformers: "
                             "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR, "
                             "safe_serialization=True)", m->path, pickles[i]);
    }
    return pcbm_fail(err, PCBM_ERR_FORMAT,
                     "%s holds neither " PCBM_SINGLE_NAME " nor " PCBM_INDEX_NAME ": point to "
                     "a model directory (as downloaded from a hub) or to a .safetensors file",
                     m->path);
}

/* A PEFT adapter folder: adapter_config.json (checked) and adapter_model.safetensors. */
static pcbm_status open_adapter(pcbm_model *m, pcbm_error *err)
{
    pcbm_status st = pcbm_adapter_load_config(m->dir, &m->adapter, err);
    if (st != PCBM_OK)
        return st;
    char *w = path_join(m->dir, PCBM_ADAPTER_WEIGHTS);
    bool found = w && is_regular(w);
    free(w);
    if (!found)
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s holds %s but no " PCBM_ADAPTER_WEIGHTS " "
                         "(adapter_model.bin pickles are never loaded: save the adapter with "
                         "safe_serialization=True)", m->path, PCBM_ADAPTER_CONFIG);
    return open_single(m, PCBM_ADAPTER_WEIGHTS, err);
}

static pcbm_status open_dir(pcbm_model *m, pcbm_error *err)
{
    char *single = path_join(m->dir, PCBM_SINGLE_NAME);
    char *index = path_join(m->dir, PCBM_INDEX_NAME);
    pcbm_status st;
    if (!single || !index)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    else if (is_regular(single) && is_regular(index))
        st = pcbm_fail(err, PCBM_ERR_FORMAT,
                       "%s holds both " PCBM_SINGLE_NAME " and " PCBM_INDEX_NAME ": which one is "
                       "the model is ambiguous (loaders take " PCBM_SINGLE_NAME "); remove the "
                       "stale one, or point to the file you mean (%s/" PCBM_SINGLE_NAME " or "
                       "%s/" PCBM_INDEX_NAME ")", m->path, m->path, m->path);
    else if (is_regular(single))
        st = open_single(m, PCBM_SINGLE_NAME, err);
    else if (is_regular(index))
        st = open_index(m, PCBM_INDEX_NAME, err);
    else if (pcbm_adapter_present(m->dir))
        st = open_adapter(m, err);
    else
        st = no_weights(m, err);
    free(single);
    free(index);
    return st;
}

/* A file path: dir = its directory; an "*.index.json" opens as an index, anything else as one
 * safetensors file. */
static pcbm_status open_file_path(pcbm_model *m, pcbm_error *err)
{
    const char *slash = strrchr(m->path, '/');
    const char *name = slash ? slash + 1 : m->path;
    m->dir = slash ? strndup(m->path, (size_t)(slash - m->path)) : pcbm_strdup(".");
    if (m->dir && slash && !*m->dir) {
        free(m->dir);
        m->dir = pcbm_strdup("/");
    }
    if (!m->dir)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    if (!strcmp(name, PCBM_ADAPTER_WEIGHTS)) { /* the weights of an adapter folder */
        m->is_dir = true;
        return open_adapter(m, err);
    }
    if (ends_with(name, ".index.json")) {
        m->is_dir = true; /* shards and side files live beside the index */
        return open_index(m, name, err);
    }
    return open_single(m, name, err);
}

pcbm_status pcbm_model_open(const char *path, pcbm_model **out, pcbm_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return pcbm_fail(err, PCBM_ERR_USAGE, "no model path given");
    char *resolved = NULL;
    pcbm_status rst = pcbm_model_resolve(path, &resolved, err);
    if (rst != PCBM_OK)
        return rst;
    struct stat sb;
    if (stat(resolved, &sb) != 0) {
        pcbm_fail(err, PCBM_ERR_IO, "cannot access model %s: %s; check the path", resolved,
                  strerror(errno));
        free(resolved);
        return PCBM_ERR_IO;
    }
    pcbm_model *m = pcbm_calloc(1, sizeof *m);
    if (!m) {
        free(resolved);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory opening %s", path);
    }
    m->path = resolved;
    path = resolved;
    pcbm_status st;
    if (S_ISDIR(sb.st_mode)) {
        m->is_dir = true;
        m->dir = pcbm_strdup(path);
        st = m->dir ? open_dir(m, err) : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    } else {
        st = open_file_path(m, err);
    }
    if (!st)
        st = build_map(m, err);
    if (st) {
        pcbm_model_close(m);
        return st;
    }
    finish(m);
    *out = m;
    return PCBM_OK;
}

void pcbm_model_close(pcbm_model *m)
{
    if (!m)
        return;
    for (unsigned i = 0; i < m->nfiles; i++)
        pcbm_st_file_free(&m->files[i]);
    pcbm_arena_free(&m->arena);
    pcbm_adapter_free(m->adapter);
    free(m->files);
    free(m->tensors);
    free(m->meta);
    free(m->map);
    free(m->dir);
    free(m->path);
    free(m);
}

/* ---- accessors ------------------------------------------------------------------------------ */

const char *pcbm_model_path(const pcbm_model *m) { return m ? m->path : NULL; }
size_t pcbm_model_num_tensors(const pcbm_model *m) { return m ? m->ntensors : 0; }
size_t pcbm_model_num_files(const pcbm_model *m) { return m ? m->nfiles : 0; }
uint64_t pcbm_model_total_bytes(const pcbm_model *m) { return m ? m->total_bytes : 0; }

const pcbm_st_tensor *pcbm_model_tensor_at(const pcbm_model *m, size_t i)
{
    return m && i < m->ntensors ? &m->tensors[i] : NULL;
}

pcbm_status pcbm_model_tensor(const pcbm_model *m, size_t i, pcbm_tensor_info *out)
{
    const pcbm_st_tensor *t = pcbm_model_tensor_at(m, i);
    if (!t || !out)
        return PCBM_ERR_USAGE;
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    out->shape = t->shape;
    out->numel = t->numel;
    out->nbytes = t->nbytes;
    out->file = m->files[t->file].path;
    out->offset = t->offset;
    return PCBM_OK;
}

uint64_t pcbm_model_table_bytes(const pcbm_model *m)
{
    if (!m)
        return 0;
    return (uint64_t)m->ntensors * sizeof *m->tensors + m->arena.bytes +
           (uint64_t)m->map_cap * sizeof *m->map + (uint64_t)m->nmeta * sizeof *m->meta +
           (uint64_t)m->nfiles * sizeof *m->files;
}

void pcbm_model_drop_tensors(pcbm_model *m)
{
    free(m->tensors);
    free(m->map);
    free(m->meta);
    pcbm_arena_free(&m->arena);
    m->tensors = NULL;
    m->ntensors = 0;
    m->map = NULL;
    m->map_cap = 0;
    m->meta = NULL;
    m->nmeta = 0;
}

long pcbm_model_find(const pcbm_model *m, const char *name)
{
    if (!m)
        return -1;
    pcbm_namemap nm = {m->map, m->map_cap, tensor_name_at, m};
    return pcbm_namemap_find(&nm, name);
}

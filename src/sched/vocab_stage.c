/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vocab_stage.c — the output's vocabulary (mergekit's tokenizer_source: base, union or one
 * model) and the rows of tensors indexed by token gathered to it. Every model's tokenizer.json
 * gives its token → id; the output vocabulary is the base's, the source model's, or the union
 * (build_union_tokenizer's order: the base's ids, then the other models' tokens it lacks in
 * model order and id order, their added tokens last). A model whose rows are not the output's
 * row for row gets its token-indexed tensors staged: written, float32, permuted to the output's
 * ids and filled where it lacks a token with mergekit's default row (assign_embedding_sources:
 * the only model that has the token, else the base's row, else the average of the models that
 * have it, zero when none has it), into OUT.vocab-staging/; its tensor entries then point there
 * and the engine reads them as any other bytes. The staging is deterministic: every run, resumed
 * run and part of a split merge writes it anew (to a temporary name, renamed into place).
 */
#include "layout.h"

#include "../format/tokenizer.h"
#include "../kernels/convert.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define NONE UINT32_MAX
#define STAGE_SUFFIX ".vocab-staging"
#define WRITE_CAP (1u << 20) /* bytes of output rows written at a time */

static bool tok_path(const pcbm_model *m, char *buf, size_t len)
{
    struct stat sb;
    if (!m->is_dir || snprintf(buf, len, "%s/tokenizer.json", m->dir) >= (int)len)
        return false;
    return stat(buf, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool float_dt(pcbm_dtype dt)
{
    return dt == PCBM_DT_F32 || dt == PCBM_DT_F16 || dt == PCBM_DT_BF16;
}

/* Which input `spec` names: its path as given, or its index. -1: none. */
static int source_model(pcbm_model *const *models, unsigned n, const char *spec)
{
    for (unsigned m = 0; m < n; m++)
        if (!strcmp(models[m]->path, spec))
            return (int)m;
    char *end;
    errno = 0;
    long v = strtol(spec, &end, 10);
    if (!errno && end != spec && !*end && v >= 0 && v < (long)n)
        return (int)v;
    return -1;
}

pcbm_status pcbm_vocab_source_check(const char *spec, pcbm_error *err)
{
    if (spec && !*spec)
        return pcbm_fail(err, PCBM_ERR_USAGE, "tokenizer source is empty: give base, union, a "
                         "model's path or its index (0 = the base, 1..N = task models)");
    return PCBM_OK;
}

/* Token-indexed tensors of the merge: the base's 2-D float tensors whose names say so. */
static pcbm_status find_tensors(pcbm_vocab_plan *v, pcbm_model *const *models, unsigned n,
                                pcbm_error *err)
{
    const pcbm_model *b = models[0];
    for (size_t i = 0; i < b->ntensors; i++) {
        const pcbm_st_tensor *t = &b->tensors[i];
        if (t->ndim == 2 && pcbm_vocab_indexed(t->name) && float_dt(t->dtype) &&
            v->ntensors < PCBM_VOCAB_MAX_TENSORS)
            v->names[v->ntensors++] = t->name;
    }
    for (unsigned m = 0; m < n; m++) {
        v->rows[m] = UINT64_MAX;
        for (unsigned k = 0; k < v->ntensors; k++) {
            long j = pcbm_model_find(models[m], v->names[k]);
            if (j < 0)
                continue;
            const pcbm_st_tensor *t = &models[m]->tensors[j];
            if (t->ndim != 2 || t->shape[1] != b->tensors[pcbm_model_find(b, v->names[k])].shape[1])
                continue; /* the layout refuses it, naming both shapes */
            if (!float_dt(t->dtype) && !v->nogather[m])
                v->nogather[m] = t; /* refused only if its rows must be gathered */
            v->rows[m] = PCBM_MIN(v->rows[m], t->shape[0]);
        }
        if (v->rows[m] == UINT64_MAX)
            v->rows[m] = 0;
    }
    return PCBM_OK;
}

/* ---- the output vocabulary ---- */

typedef struct outvocab {
    uint16_t *model;   /* per output id: the model whose text it is (NONE16: no token) */
    uint32_t *id;      /* and its id there */
    uint64_t n, cap;
    uint64_t first;    /* the first appended id */
    uint32_t *map;     /* appended tokens: open addressing, output id + 1 */
    size_t map_cap;
} outvocab;

#define NONE16 UINT16_MAX

static const char *text_of(pcbm_vocab *const *voc, const outvocab *o, uint64_t r, size_t *len)
{
    if (o->model[r] == NONE16)
        return NULL;
    return pcbm_vocab_token(voc[o->model[r]], o->id[r], len);
}

static bool out_push(outvocab *o, uint16_t m, uint32_t id)
{
    if (o->n == o->cap) {
        uint64_t cap = o->cap ? 2 * o->cap : 1024;
        uint16_t *a = pcbm_realloc(o->model, cap * sizeof *a);
        if (!a)
            return false;
        o->model = a;
        uint32_t *b = pcbm_realloc(o->id, cap * sizeof *b);
        if (!b)
            return false;
        o->id = b;
        o->cap = cap;
    }
    o->model[o->n] = m;
    o->id[o->n++] = id;
    return true;
}

/* Is token s appended already (the union's tokens after the base's)? */
static bool appended_has(pcbm_vocab *const *voc, const outvocab *o, const char *s, size_t n)
{
    if (!o->map_cap)
        return false;
    for (size_t i = XXH3_64bits(s, n) & (o->map_cap - 1);; i = (i + 1) & (o->map_cap - 1)) {
        if (!o->map[i])
            return false;
        size_t l;
        const char *t = text_of(voc, o, o->map[i] - 1, &l);
        if (t && l == n && !memcmp(t, s, n))
            return true;
    }
}

static void appended_insert(pcbm_vocab *const *voc, outvocab *o, uint64_t r)
{
    size_t l;
    const char *t = text_of(voc, o, r, &l);
    size_t j = XXH3_64bits(t, l) & (o->map_cap - 1);
    while (o->map[j])
        j = (j + 1) & (o->map_cap - 1);
    o->map[j] = (uint32_t)(r + 1);
}

static bool appended_add(pcbm_vocab *const *voc, outvocab *o, uint16_t m, uint32_t id)
{
    if (!out_push(o, m, id))
        return false;
    if (4 * (o->n - o->first) > o->map_cap) { /* rebuild, larger */
        size_t cap = o->map_cap ? 2 * o->map_cap : 1024;
        while (cap < 4 * (o->n - o->first))
            cap *= 2;
        uint32_t *map = pcbm_calloc(cap, sizeof *map);
        if (!map)
            return false;
        free(o->map);
        o->map = map;
        o->map_cap = cap;
        for (uint64_t r = o->first; r < o->n; r++)
            appended_insert(voc, o, r);
        return true;
    }
    appended_insert(voc, o, o->n - 1);
    return true;
}

/* Is s an added token (added_tokens) of any model? */
static bool added_anywhere(pcbm_vocab *const *voc, unsigned n, const char *s, size_t l)
{
    for (unsigned m = 0; m < n; m++) {
        long id = voc[m] ? pcbm_vocab_find(voc[m], s, l) : -1;
        if (id >= 0 && voc[m]->added[id])
            return true;
    }
    return false;
}

/* build_union_tokenizer: the base's ids (below its rows), then each model's tokens the output
 * lacks, in model order and id order (ids below the model's rows): first those that are no
 * model's added token, then the added tokens. */
static bool build_union(pcbm_vocab *const *voc, const uint64_t *rows, unsigned n, outvocab *o)
{
    for (int phase = 0; phase < 2; phase++)
        for (unsigned m = 1; m < n; m++) {
            const pcbm_vocab *vm = voc[m];
            for (uint64_t id = 0; vm && id < PCBM_MIN((uint64_t)vm->nids, rows[m]); id++) {
                size_t l;
                const char *s = pcbm_vocab_token(vm, (uint32_t)id, &l);
                if (!s || (phase == 0) != !added_anywhere(voc, n, s, l))
                    continue;
                long b = pcbm_vocab_find(voc[0], s, l);
                if ((b >= 0 && (uint64_t)b < rows[0]) || appended_has(voc, o, s, l))
                    continue;
                if (!appended_add(voc, o, (uint16_t)m, (uint32_t)id))
                    return false;
            }
        }
    return true;
}

/* ---- the plan ---- */

/* Read model m's tokenizer.json into voc[m] (nothing for adapters and models without one). */
static pcbm_status read_vocab(pcbm_vocab_plan *v, pcbm_model *const *models, unsigned m,
                              pcbm_vocab **voc, pcbm_error *err)
{
    char path[4096];
    if (voc[m] || models[m]->adapter || !tok_path(models[m], path, sizeof path))
        return PCBM_OK;
    if (!(voc[m] = pcbm_calloc(1, sizeof *voc[m])))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = pcbm_vocab_read(path, voc[m], err);
    if (st != PCBM_OK) {
        free(voc[m]);
        voc[m] = NULL;
        return st;
    }
    v->vocab_bytes += pcbm_vocab_bytes(voc[m]);
    return PCBM_OK;
}

static void drop_vocab(pcbm_vocab **voc, unsigned m)
{
    if (voc[m]) {
        pcbm_vocab_free(voc[m]);
        free(voc[m]);
        voc[m] = NULL;
    }
}

/* Model m's row for output row r (NONE: it lacks the token). A model without tokenizer.json has
 * the base's vocabulary (mergekit: "Assuming same as base"). */
static uint32_t row_of(pcbm_vocab *const *voc, const outvocab *o, const uint64_t *rows,
                       unsigned m, uint64_t r)
{
    size_t l;
    const char *s = text_of(voc, o, r, &l);
    if (!s) /* an output row without a token: the same row, when the model has one */
        return r < rows[m] ? (uint32_t)r : NONE;
    const pcbm_vocab *vm = voc[m] ? voc[m] : voc[0];
    long id = pcbm_vocab_find(vm, s, l);
    return id >= 0 && (uint64_t)id < rows[m] ? (uint32_t)id : NONE;
}

pcbm_status pcbm_vocab_plan_build(pcbm_model *const *models, unsigned n, const char *spec,
                                  const char *out, pcbm_vocab_plan *v, pcbm_error *err)
{
    memset(v, 0, sizeof *v);
    v->nmodels = n;
    v->source = 0;
    v->is_union = spec && !strcmp(spec, "union");
    if (spec && strcmp(spec, "base") && !v->is_union &&
        (v->source = source_model(models, n, spec)) < 0) {
        char list[1024];
        size_t u = 0;
        for (unsigned m = 0; m < n && u < sizeof list; m++)
            u += (size_t)snprintf(list + u, sizeof list - u, "%s%u = %s", m ? ", " : "", m,
                                  models[m]->path);
        return pcbm_fail(err, PCBM_ERR_USAGE, "tokenizer source '%s' is none of the inputs: "
                         "give base, union, or one input by its path as given or its index "
                         "(%s)", spec, list);
    }
    v->on_spec = spec && strcmp(spec, "base");
    pcbm_status st = find_tensors(v, models, n, err);
    if (st != PCBM_OK)
        return st;
    v->base_rows = v->rows[0];
    char path[4096];
    bool base_tok = tok_path(models[0], path, sizeof path);
    if (v->on_spec) {
        for (unsigned m = 1; m < n; m++)
            if (models[m]->adapter)
                return pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "task model %u (%s) is a LoRA "
                                 "adapter: a tokenizer source other than base is not supported "
                                 "with adapters", m, models[m]->path);
        const pcbm_model *src = models[v->is_union ? 0 : v->source];
        if (!tok_path(src, path, sizeof path) || !base_tok)
            return pcbm_fail(err, PCBM_ERR_USAGE, "--tokenizer-source %s needs %s: rows are "
                             "aligned by token, and the output's tokenizer is built from it; "
                             "give model directories with their tokenizer files, or keep the "
                             "base's vocabulary (base)", spec,
                             !base_tok ? "the base's tokenizer.json"
                                       : "the tokenizer.json of the source model");
    }
    if (!v->ntensors && !v->on_spec)
        return PCBM_OK;
    if (!base_tok) /* base: today's rows by position (sched/vocab.c warns) */
        return PCBM_OK;
    pcbm_vocab *voc[PCBM_MAX_MODELS] = {0};
    outvocab o = {0};
    /* the union needs every vocabulary at once; otherwise the base's and the source's are held
     * and each task's is read in turn */
    for (unsigned m = 0; m < n && st == PCBM_OK; m++)
        if (v->is_union || m == 0 || (int)m == v->source)
            st = read_vocab(v, models, m, voc, err);
    if (st != PCBM_OK)
        goto done;
    /* the output ids */
    if (!v->on_spec || v->is_union) {
        uint64_t ids = PCBM_MIN((uint64_t)voc[0]->nids, v->base_rows);
        uint64_t keep = v->is_union ? ids : v->base_rows; /* union: mergekit's len(vocab) */
        for (uint64_t r = 0; r < keep; r++)
            if (!out_push(&o, r < ids && pcbm_vocab_token(voc[0], (uint32_t)r, &(size_t){0})
                                  ? 0 : NONE16, (uint32_t)r)) {
                st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory building the vocabulary");
                goto done;
            }
        v->first_new = o.first = o.n;
        if (v->is_union && !build_union(voc, v->rows, n, &o)) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory building the vocabulary");
            goto done;
        }
    } else {
        const pcbm_vocab *vs = voc[v->source];
        for (uint64_t r = 0; r < vs->nids; r++)
            if (!out_push(&o, pcbm_vocab_token(vs, (uint32_t)r, &(size_t){0}) ? (uint16_t)v->source
                                                                               : NONE16,
                          (uint32_t)r)) {
                st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory building the vocabulary");
                goto done;
            }
        v->first_new = o.n;
    }
    v->out_rows = o.n;
    if (v->is_union && (v->nnew = o.n - v->first_new) > 0) {
        v->new_model = pcbm_malloc(v->nnew * sizeof *v->new_model);
        v->new_id = pcbm_malloc(v->nnew * sizeof *v->new_id);
        if (!v->new_model || !v->new_id) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (uint64_t k = 0; k < v->nnew; k++) {
            v->new_model[k] = o.model[v->first_new + k];
            v->new_id[k] = o.id[v->first_new + k];
        }
    }
    /* each model's rows for the output's */
    for (unsigned m = 0; m < n && v->ntensors; m++) {
        if (models[m]->adapter || !v->rows[m])
            continue;
        bool own = !voc[m];
        if ((st = read_vocab(v, models, m, voc, err)) != PCBM_OK)
            goto done;
        own = own && voc[m];
        bool no_tok = !voc[m];
        uint32_t *map = pcbm_malloc(o.n * sizeof *map + 1);
        if (!map) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            goto done;
        }
        bool identity = true;
        for (uint64_t r = 0; r < o.n; r++) {
            map[r] = row_of(voc, &o, v->rows, m, r);
            identity = identity && map[r] == r;
        }
        if (own) { /* a task's vocabulary, read for its map only */
            v->vocab_bytes -= pcbm_vocab_bytes(voc[m]);
            drop_vocab(voc, m);
        }
        /* the same rows, or (base) more rows whose first are the output's: read in place */
        if (identity && (v->rows[m] == o.n || (!v->on_spec && v->rows[m] > o.n && m > 0))) {
            free(map);
            continue;
        }
        if (v->nogather[m]) {
            free(map);
            st = pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "%s of %s is %s: its rows differ from the "
                           "output vocabulary's, and rows of tensors indexed by token are "
                           "gathered from F32, F16 or BF16 only; exclude the embeddings "
                           "(`exclude`) to merge the rest", v->nogather[m]->name,
                           models[m]->path, pcbm_dtype_name(v->nogather[m]->dtype));
            goto done;
        }
        if (no_tok && m > 0)
            pcbm_warn("task model %u (%s) has no tokenizer.json: its vocabulary is taken to be "
                      "the base's (as mergekit assumes), and its rows are gathered by the base's "
                      "ids", m, models[m]->path);
        v->map[m] = map;
        v->staged[m] = true;
        v->nstaged++;
    }
    if (v->nstaged) {
        size_t n1 = strlen(out) + sizeof STAGE_SUFFIX;
        if (!(v->dir = pcbm_malloc(n1))) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            goto done;
        }
        snprintf(v->dir, n1, "%s%s", out, STAGE_SUFFIX);
    }
done:
    for (unsigned m = 0; m < n; m++)
        drop_vocab(voc, m);
    free(o.model);
    free(o.id);
    free(o.map);
    return st;
}

uint64_t pcbm_vocab_plan_bytes(const pcbm_vocab_plan *v)
{
    uint64_t b = v->nnew * (sizeof *v->new_model + sizeof *v->new_id);
    for (unsigned m = 0; m < v->nmodels; m++)
        if (v->map[m])
            b += v->out_rows * sizeof(uint32_t);
    return b + v->vocab_bytes;
}

/* ---- staging ---- */

/* Where model m's tensor k lives before the staging points it elsewhere. */
static bool original(const pcbm_vocab_plan *v, unsigned m, unsigned k, pcbm_vocab_src *s)
{
    *s = v->orig[k * v->nmodels + m];
    return s->present;
}

pcbm_status pcbm_vocab_plan_apply(pcbm_vocab_plan *v, pcbm_model *const *models, pcbm_error *err)
{
    if (!v->nstaged)
        return PCBM_OK;
    v->orig = pcbm_calloc((size_t)v->ntensors * v->nmodels, sizeof *v->orig);
    if (!v->orig)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    for (unsigned m = 0; m < v->nmodels; m++)
        for (unsigned k = 0; k < v->ntensors; k++) {
            long j = pcbm_model_find(models[m], v->names[k]);
            if (j < 0)
                continue;
            const pcbm_st_tensor *t = &models[m]->tensors[j];
            if (m > 0 && (t->ndim != 2 || t->shape[1] != v->orig[k * v->nmodels].cols ||
                          !float_dt(t->dtype)))
                continue; /* the layout refuses it */
            pcbm_vocab_src *s = &v->orig[k * v->nmodels + m];
            *s = (pcbm_vocab_src){.present = true, .file = t->file, .off = t->offset,
                                  .dt = t->dtype, .rows = t->shape[0], .cols = t->shape[1]};
        }
    /* point the staged models' tensors at their staged file */
    for (unsigned m = 0; m < v->nmodels; m++) {
        if (!v->staged[m])
            continue;
        pcbm_model *md = models[m];
        pcbm_st_file *f = pcbm_realloc(md->files, (md->nfiles + 1) * sizeof *f);
        if (!f)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        md->files = f;
        char name[64];
        snprintf(name, sizeof name, "model-%u.f32", m);
        size_t plen = strlen(v->dir) + strlen(name) + 2;
        pcbm_st_file *sf = &f[md->nfiles];
        memset(sf, 0, sizeof *sf);
        sf->path = pcbm_malloc(plen);
        sf->name = pcbm_strdup(name);
        if (!sf->path || !sf->name) {
            free(sf->path);
            free(sf->name);
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        }
        snprintf(sf->path, plen, "%s/%s", v->dir, name);
        uint64_t off = 0;
        for (unsigned k = 0; k < v->ntensors; k++) {
            long j = pcbm_model_find(md, v->names[k]);
            if (j < 0 || !v->orig[k * v->nmodels + m].present)
                continue;
            pcbm_st_tensor *t = &md->tensors[j];
            t->shape[0] = v->out_rows;
            t->numel = v->out_rows * t->shape[1];
            t->nbytes = t->numel * 4;
            t->dtype = PCBM_DT_F32;
            t->file = md->nfiles;
            t->offset = off;
            off += t->nbytes;
        }
        sf->size = off;
        md->nfiles++;
        md->nstaged++;
        v->file_bytes[m] = off;
        v->stage_bytes += off;
    }
    return PCBM_OK;
}

static pcbm_status read_row(int fd, const char *path, const pcbm_vocab_src *s, uint64_t row,
                            void *raw, float *dst, pcbm_error *err)
{
    size_t es = pcbm_dtype_bits(s->dt) / 8, n = (size_t)s->cols * es;
    uint64_t off = s->off + row * n;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)raw + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return pcbm_fail(err, PCBM_ERR_IO, "%s: read of %zu bytes at %llu failed: %s; check "
                             "the file", path, n, (unsigned long long)(off + got),
                             r < 0 ? strerror(errno) : "end of file");
        got += (size_t)r;
    }
    pcbm_decode_f32(s->dt, raw, dst, s->cols);
    return PCBM_OK;
}

static pcbm_status write_out(int fd, const char *path, const void *buf, size_t n, uint64_t off,
                             pcbm_error *err)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            return pcbm_fail(err, e == ENOSPC || e == EDQUOT ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                             "%s: write at byte %llu failed: %s; free disk space beside the "
                             "output directory (the staged rows need it) and retry", path,
                             (unsigned long long)(off + done), strerror(e));
        }
        done += (size_t)w;
    }
    return PCBM_OK;
}

/* Model m's tensor k, every output row, into fd at `at`. fds: every model's file of tensor k. */
static pcbm_status stage_tensor(const pcbm_vocab_plan *v, pcbm_model *const *models, unsigned m,
                                unsigned k, const int *fds, int fd, const char *path,
                                uint64_t at, float *rowbuf, void *raw, float *wbuf,
                                uint64_t wrows, pcbm_error *err)
{
    pcbm_vocab_src me;
    original(v, m, k, &me);
    uint64_t cols = me.cols, filled = 0;
    pcbm_status st = PCBM_OK;
    for (uint64_t r = 0; r < v->out_rows && st == PCBM_OK; r++) {
        float *dst = wbuf + filled * cols;
        uint32_t own = v->map[m][r];
        pcbm_vocab_src s;
        if (own != NONE) {
            st = read_row(fds[m], models[m]->files[me.file].path, &me, own, raw, dst, err);
        } else { /* mergekit's default row for a model that lacks the token */
            unsigned has[PCBM_MAX_MODELS], nh = 0;
            for (unsigned d = 0; d < v->nmodels; d++)
                if (original(v, d, k, &s) && fds[d] >= 0 &&
                    (v->map[d] ? v->map[d][r] != NONE : r < v->rows[d]))
                    has[nh++] = d;
            memset(dst, 0, cols * sizeof *dst);
            bool from_base = nh > 1 && has[0] == 0;
            for (unsigned h = 0; h < (from_base ? 1 : nh) && st == PCBM_OK; h++) {
                unsigned d = has[h];
                original(v, d, k, &s);
                uint32_t row = v->map[d] ? v->map[d][r] : (uint32_t)r;
                st = read_row(fds[d], models[d]->files[s.file].path, &s, row, raw, rowbuf, err);
                for (uint64_t c = 0; c < cols; c++)
                    dst[c] += rowbuf[c];
            }
            if (nh > 1 && !from_base)
                for (uint64_t c = 0; c < cols; c++)
                    dst[c] /= (float)nh;
        }
        if (++filled == wrows || r + 1 == v->out_rows) {
            if (st == PCBM_OK)
                st = write_out(fd, path, wbuf, filled * cols * sizeof(float), at, err);
            at += filled * cols * sizeof(float);
            filled = 0;
        }
    }
    return st;
}

pcbm_status pcbm_vocab_stage(const pcbm_vocab_plan *v, pcbm_model *const *models,
                             pcbm_error *err)
{
    if (!v->nstaged)
        return PCBM_OK;
    if (mkdir(v->dir, 0755) != 0 && errno != EEXIST)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot create %s: %s; check the directory above the "
                         "output", v->dir, strerror(errno));
    struct stat sb;
    if (lstat(v->dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pcbm_fail(err, PCBM_ERR_IO, "%s is not a directory: it holds pcbmerge's staged "
                         "rows of the embeddings; remove it", v->dir);
    uint64_t cols = 0;
    for (size_t i = 0; i < (size_t)v->ntensors * v->nmodels; i++)
        cols = PCBM_MAX(cols, v->orig[i].cols);
    uint64_t wrows = PCBM_MAX(1, WRITE_CAP / (cols * sizeof(float) + 1));
    float *rowbuf = pcbm_malloc(cols * sizeof(float) + 16);
    void *raw = pcbm_malloc(cols * sizeof(float) + 16);
    float *wbuf = pcbm_malloc(wrows * cols * sizeof(float) + 16);
    pcbm_status st = rowbuf && raw && wbuf ? PCBM_OK
                     : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory staging embedding rows");
    for (unsigned m = 0; m < v->nmodels && st == PCBM_OK; m++) {
        if (!v->staged[m])
            continue;
        const pcbm_st_file *sf = &models[m]->files[models[m]->nfiles - 1];
        char tmp[4400], host[128] = "host";
        gethostname(host, sizeof host - 1); /* parts of a split merge on other machines */
        host[sizeof host - 1] = '\0';
        snprintf(tmp, sizeof tmp, "%s.tmp.%s.%ld", sf->path, host, (long)getpid());
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) {
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
            break;
        }
        uint64_t at = 0;
        for (unsigned k = 0; k < v->ntensors && st == PCBM_OK; k++) {
            pcbm_vocab_src s;
            if (!original(v, m, k, &s))
                continue;
            int fds[PCBM_MAX_MODELS];
            for (unsigned d = 0; d < v->nmodels; d++) {
                fds[d] = -1;
                if (original(v, d, k, &s) && st == PCBM_OK &&
                    (fds[d] = open(models[d]->files[s.file].path, O_RDONLY | O_CLOEXEC)) < 0)
                    st = pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s",
                                   models[d]->files[s.file].path, strerror(errno));
            }
            if (st == PCBM_OK)
                st = stage_tensor(v, models, m, k, fds, fd, tmp, at, rowbuf, raw, wbuf, wrows,
                                  err);
            original(v, m, k, &s);
            at += v->out_rows * s.cols * sizeof(float);
            for (unsigned d = 0; d < v->nmodels; d++)
                if (fds[d] >= 0)
                    close(fds[d]);
        }
        if (st == PCBM_OK && fsync(fd) != 0)
            st = pcbm_fail(err, PCBM_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
        close(fd);
        if (st == PCBM_OK && rename(tmp, sf->path) != 0)
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot rename %s to %s: %s", tmp, sf->path,
                           strerror(errno));
        if (st != PCBM_OK)
            unlink(tmp);
    }
    free(rowbuf);
    free(raw);
    free(wbuf);
    return st;
}

void pcbm_vocab_unstage(const char *out)
{
    char dir[4200], p[4300];
    snprintf(dir, sizeof dir, "%s%s", out, STAGE_SUFFIX);
    for (unsigned m = 0; m < PCBM_MAX_MODELS; m++) {
        snprintf(p, sizeof p, "%s/model-%u.f32", dir, m);
        unlink(p);
    }
    rmdir(dir);
}

void pcbm_vocab_plan_free(pcbm_vocab_plan *v)
{
    for (unsigned m = 0; m < PCBM_MAX_MODELS; m++)
        free(v->map[m]);
    free(v->orig);
    free(v->dir);
    free(v->new_model);
    free(v->new_id);
    memset(v, 0, sizeof *v);
}

void pcbm_vocab_plan_drop_maps(pcbm_vocab_plan *v)
{
    for (unsigned m = 0; m < PCBM_MAX_MODELS; m++) {
        free(v->map[m]);
        v->map[m] = NULL;
    }
    free(v->orig);
    v->orig = NULL;
    v->vocab_bytes = 0;
}

/* ---- the output's tokenizer ---- */

static json_t *load_json(const char *dir, const char *name, pcbm_error *err)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_error_t je;
    json_t *j = json_load_file(p, JSON_DECODE_ANY, &je);
    if (!j && err)
        pcbm_fail(err, PCBM_ERR_FORMAT, "%s: line %d: %s; check the file", p, je.line, je.text);
    return j;
}

/* Model m's added_tokens entry for id (a new reference), or NULL. */
static json_t *added_entry(json_t *tok, uint32_t id)
{
    json_t *a = json_object_get(tok, "added_tokens"), *e;
    size_t i;
    json_array_foreach(a, i, e) {
        json_t *jid = json_object_get(e, "id");
        if (json_is_integer(jid) && json_integer_value(jid) == (json_int_t)id)
            return json_deep_copy(e);
    }
    return NULL;
}

static pcbm_status write_union(const pcbm_vocab_plan *v, pcbm_model *const *models,
                               const char *out_dir, pcbm_error *err)
{
    json_t *tok = load_json(out_dir, "tokenizer.json", err);
    if (!tok)
        return PCBM_ERR_FORMAT;
    json_t *cfg = load_json(out_dir, "tokenizer_config.json", NULL);
    json_t *added = json_object_get(tok, "added_tokens");
    if (!json_is_array(added)) {
        added = json_array();
        json_object_set_new(tok, "added_tokens", added);
    }
    json_t *dec = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (cfg && !json_is_object(dec)) {
        dec = json_object();
        json_object_set_new(cfg, "added_tokens_decoder", dec);
    }
    pcbm_status st = PCBM_OK;
    json_t *src = NULL;
    unsigned src_m = NONE16;
    for (uint64_t k = 0; k < v->nnew && st == PCBM_OK; k++) {
        unsigned m = v->new_model[k];
        if (m != src_m) {
            json_decref(src);
            src = load_json(models[m]->dir, "tokenizer.json", err);
            src_m = m;
            if (!src) {
                st = PCBM_ERR_FORMAT;
                break;
            }
        }
        uint64_t id = v->first_new + k;
        json_t *e = added_entry(src, v->new_id[k]);
        if (!e) { /* a vocabulary token of another model: transformers' add_tokens(str) */
            json_t *voc = json_object_get(json_object_get(src, "model"), "vocab");
            const char *key = NULL;
            json_t *val;
            json_object_foreach(voc, key, val)
                if (json_is_integer(val) && json_integer_value(val) == (json_int_t)v->new_id[k])
                    break;
            if (!key) {
                st = pcbm_fail(err, PCBM_ERR_FORMAT, "%s/tokenizer.json: no token of id %u "
                               "(read before); was the file changed?", models[m]->dir,
                               v->new_id[k]);
                break;
            }
            e = json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}", "id", (json_int_t)id, "content", key,
                          "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1,
                          "special", 0);
        } else {
            json_object_set_new(e, "id", json_integer((json_int_t)id));
        }
        if (!e) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            break;
        }
        if (dec) {
            json_t *d = json_deep_copy(e);
            json_object_del(d, "id");
            char key[32];
            snprintf(key, sizeof key, "%llu", (unsigned long long)id);
            json_object_set_new(dec, key, d);
        }
        json_array_append_new(added, e);
    }
    json_decref(src);
    char p[4200];
    if (st == PCBM_OK) {
        snprintf(p, sizeof p, "%s/tokenizer.json", out_dir);
        st = pcbm_write_json_file(p, tok, err);
    }
    if (st == PCBM_OK && cfg) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", out_dir);
        st = pcbm_write_json_file(p, cfg, err);
    }
    json_decref(tok);
    json_decref(cfg);
    return st;
}

pcbm_status pcbm_vocab_write_tokenizer(const pcbm_vocab_plan *v, pcbm_model *const *models,
                                       const char *out_dir, pcbm_error *err)
{
    if (!v->on_spec)
        return PCBM_OK;
    pcbm_status st = PCBM_OK;
    if (v->is_union && v->nnew)
        st = write_union(v, models, out_dir, err);
    else if (!v->is_union && v->source > 0)
        st = pcbm_copy_tokenizer_files(models[v->source]->dir, out_dir, err);
    if (st == PCBM_OK && v->out_rows && v->out_rows != v->base_rows)
        st = pcbm_config_set_vocab(out_dir, v->out_rows, err);
    return st;
}

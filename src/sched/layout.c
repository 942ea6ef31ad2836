/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.c — builds the chunk map: which tensors are merged and which are copied, the byte
 * location of every tensor in every model, the output layout, and the block cut.
 */
#include "layout.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LISTED 5 /* offending tensors listed in one mismatch error */

static void fmt_shape(const pcbm_st_tensor *t, char *buf, size_t len)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, len - used, "%s[", pcbm_dtype_name(t->dtype));
    for (unsigned i = 0; i < t->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%llu", i ? "," : "",
                                 (unsigned long long)t->shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

static bool same_shape(const pcbm_st_tensor *a, const pcbm_st_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (unsigned i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

static bool is_float(pcbm_dtype dt) { return pcbm_dtype_is_mergeable(dt) != 0; }

static unsigned float_size(pcbm_dtype dt) { return dt == PCBM_DT_F32 ? 4u : 2u; }

/* Append "  name: base X vs taskN Y" lines to a growing message. */
static void note_line(char *msg, size_t len, const char *fmt, ...) PCBM_PRINTF(3, 4);
static void note_line(char *msg, size_t len, const char *fmt, ...)
{
    size_t used = strlen(msg);
    if (used + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + used, len - used, fmt, ap);
    va_end(ap);
}

typedef struct regex_set {
    regex_t *re;
    unsigned n;
} regex_set;

static pcbm_status compile_excludes(const pcbm_layout_opts *o, regex_set *rs, pcbm_error *err)
{
    rs->n = 0;
    rs->re = pcbm_calloc(o->nexclude, sizeof(regex_t));
    if (!rs->re)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory compiling the `exclude` patterns");
    for (unsigned i = 0; i < o->nexclude; i++) {
        int rc = regcomp(&rs->re[i], o->exclude[i], REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[256];
            regerror(rc, &rs->re[i], why, sizeof why);
            for (unsigned j = 0; j < i; j++)
                regfree(&rs->re[j]);
            free(rs->re);
            rs->re = NULL;
            return pcbm_fail(err, PCBM_ERR_USAGE,
                             "`exclude` '%s' is not a valid POSIX extended regular expression: %s",
                             o->exclude[i], why);
        }
        rs->n = i + 1;
    }
    return PCBM_OK;
}

static void free_excludes(regex_set *rs)
{
    for (unsigned i = 0; i < rs->n; i++)
        regfree(&rs->re[i]);
    free(rs->re);
}

static bool excluded(const regex_set *rs, const char *name)
{
    for (unsigned i = 0; i < rs->n; i++)
        if (regexec(&rs->re[i], name, 0, NULL, 0) == 0)
            return true;
    return false;
}

/* Tensors present in a task model but not in the base: an error unless allow_extra. */
static pcbm_status check_extra(pcbm_model *const *models, unsigned nmodels, int allow_extra,
                               pcbm_error *err)
{
    char msg[900] = "";
    unsigned listed = 0;
    uint64_t count = 0;
    for (unsigned m = 1; m < nmodels; m++) {
        for (size_t i = 0; i < models[m]->ntensors; i++) {
            const char *name = models[m]->tensors[i].name;
            if (pcbm_model_find(models[0], name) >= 0)
                continue;
            count++;
            if (listed++ < MAX_LISTED)
                note_line(msg, sizeof msg, "\n  %s (in %s)", name, models[m]->path);
        }
    }
    if (count == 0)
        return PCBM_OK;
    if (allow_extra) {
        pcbm_warn("ignoring %llu tensor(s) found only in task models (`allow_extra`)",
                  (unsigned long long)count);
        return PCBM_OK;
    }
    return pcbm_fail(err, PCBM_ERR_MISMATCH,
                     "%llu tensor(s) exist only in task models, not in the base %s:%s\n"
                     "check that every model is a fine-tune of this base, or set `allow_extra` "
                     "to ignore them",
                     (unsigned long long)count, models[0]->path, msg);
}

/* Decide the kind of base tensor `bt`; fills src[] for merged tensors. */
static pcbm_status classify(pcbm_model *const *models, unsigned nmodels, const regex_set *rs,
                            const pcbm_st_tensor *bt, pcbm_tlayout *tp, char *mism, size_t mlen,
                            unsigned *nmism, uint64_t *nbaseonly)
{
    tp->src[0] = (pcbm_tsrc){.file = bt->file, .off = bt->offset, .dt = bt->dtype};
    if (!is_float(bt->dtype)) {
        tp->kind = PCBM_T_RAW;
        tp->why = PCBM_WHY_NOT_FLOAT;
        return PCBM_OK;
    }
    bool missing = false, bad = false;
    for (unsigned m = 1; m < nmodels; m++) {
        long j = pcbm_model_find(models[m], bt->name);
        if (j < 0) {
            if (!missing)
                tp->why_task = (uint16_t)m;
            tp->why_count++;
            missing = true;
            continue;
        }
        const pcbm_st_tensor *tt = &models[m]->tensors[j];
        if (!same_shape(bt, tt) || !is_float(tt->dtype)) {
            char a[128], b[128];
            fmt_shape(bt, a, sizeof a);
            fmt_shape(tt, b, sizeof b);
            if ((*nmism)++ < MAX_LISTED)
                note_line(mism, mlen, "\n  %s: base %s, %s %s", bt->name, a, models[m]->path, b);
            bad = true;
            continue;
        }
        tp->src[m] = (pcbm_tsrc){.file = tt->file, .off = tt->offset, .dt = tt->dtype};
    }
    if (bad)
        return PCBM_ERR_MISMATCH;
    if (missing) {
        if ((*nbaseonly)++ < MAX_LISTED)
            pcbm_warn("tensor %s is missing from task model %u (%s)%s: copied from the base, so "
                      "no task's change to it is merged", bt->name, tp->why_task,
                      models[tp->why_task]->path, tp->why_count > 1 ? " and others" : "");
        tp->kind = PCBM_T_CONVERT;
        tp->why = PCBM_WHY_MISSING;
    } else if (excluded(rs, bt->name)) {
        tp->kind = PCBM_T_CONVERT;
        tp->why = PCBM_WHY_EXCLUDED;
    } else {
        tp->kind = PCBM_T_MERGE;
    }
    return PCBM_OK;
}

static void set_units(pcbm_layout *p, pcbm_tlayout *tp, const pcbm_st_tensor *bt, pcbm_dtype want)
{
    if (tp->kind == PCBM_T_RAW) {
        tp->out_dt = bt->dtype;
        tp->units = bt->nbytes;
        tp->in_unit[0] = 1;
        tp->out_unit = 1;
        return;
    }
    tp->out_dt = want == PCBM_DTYPE_BASE ? bt->dtype : want;
    tp->units = bt->numel;
    tp->out_unit = float_size(tp->out_dt);
    unsigned nsrc = tp->kind == PCBM_T_MERGE ? p->nmodels : 1;
    for (unsigned m = 0; m < nsrc; m++) {
        tp->in_unit[m] = float_size(tp->src[m].dt);
        if (tp->in_unit[m] > p->max_in_unit)
            p->max_in_unit = tp->in_unit[m];
    }
    if (tp->kind == PCBM_T_CONVERT && tp->out_dt == bt->dtype) {
        /* same dtype: a plain byte copy */
        tp->kind = PCBM_T_RAW;
        tp->units = bt->nbytes;
        tp->in_unit[0] = 1;
        tp->out_unit = 1;
    }
}

static uint64_t out_bytes(const pcbm_tlayout *tp) { return tp->units * tp->out_unit; }

pcbm_status pcbm_layout_build(pcbm_model *const *models, unsigned nmodels, const pcbm_layout_opts *o,
                            pcbm_layout *p, pcbm_error *err)
{
    memset(p, 0, sizeof *p);
    if (nmodels < 2 || nmodels > PCBM_MAX_MODELS)
        return pcbm_fail(err, PCBM_ERR_USAGE, "a merge needs 1 to %d task models, got %u",
                         PCBM_MAX_TASKS, nmodels - 1);
    p->nmodels = nmodels;
    memcpy(p->models, models, nmodels * sizeof models[0]);
    p->max_in_unit = 2;
    regex_set rs;
    pcbm_status st = compile_excludes(o, &rs, err);
    if (st != PCBM_OK)
        return st;

    const pcbm_model *base = models[0];
    p->nt = base->ntensors;
    p->t = pcbm_calloc(p->nt, sizeof *p->t);
    p->out_tensors = pcbm_calloc(p->nt, sizeof *p->out_tensors);
    p->src_pool = pcbm_calloc(p->nt * nmodels, sizeof *p->src_pool);
    p->unit_pool = pcbm_calloc(p->nt * nmodels, sizeof *p->unit_pool);
    if (!p->t || !p->out_tensors || !p->src_pool || !p->unit_pool) {
        free_excludes(&rs);
        pcbm_layout_free(p);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory planning %zu tensors", p->nt);
    }
    char mism[900] = "";
    unsigned nmism = 0;
    uint64_t nbaseonly = 0;
    for (size_t i = 0; i < p->nt; i++) {
        const pcbm_st_tensor *bt = &base->tensors[i];
        pcbm_tlayout *tp = &p->t[i];
        tp->name = bt->name;
        tp->pidx = -1;
        tp->src = p->src_pool + i * nmodels;
        tp->in_unit = p->unit_pool + i * nmodels;
        if (classify(models, nmodels, &rs, bt, tp, mism, sizeof mism, &nmism, &nbaseonly) != PCBM_OK)
            continue;
        set_units(p, tp, bt, o->out_dtype);
        if (tp->kind == PCBM_T_MERGE) {
            tp->pidx = (long)p->nmerge++;
            tp->elem0 = p->d;
            p->d += tp->units;
            for (unsigned m = 0; m < nmodels; m++)
                p->merge_in_bytes += tp->units * tp->in_unit[m];
        } else {
            p->copy_in_bytes += tp->units * tp->in_unit[0];
        }
        pcbm_out_tensor *ot = &p->out_tensors[i];
        *ot = (pcbm_out_tensor){.name = bt->name, .dtype = tp->out_dt, .ndim = bt->ndim,
                                .shape = bt->shape, .nbytes = out_bytes(tp)};
    }
    free_excludes(&rs);
    if (nbaseonly > MAX_LISTED)
        pcbm_warn("%llu tensors in all are missing from some task models and copied from the base",
                  (unsigned long long)nbaseonly);
    if (nbaseonly && o->require_all && !nmism) {
        size_t first = 0;
        while (p->t[first].why != PCBM_WHY_MISSING)
            first++;
        const pcbm_tlayout *t = &p->t[first];
        st = pcbm_fail(err, PCBM_ERR_MISMATCH, "%llu tensor(s) are missing from some task model "
                       "(the first: %s, from task model %u, %s); `require_all` refuses a merge "
                       "that copies them from the base", (unsigned long long)nbaseonly, t->name,
                       t->why_task, models[t->why_task]->path);
        pcbm_layout_free(p);
        return st;
    }
    /* shapes first: a model of another architecture is best described by its shapes */
    if (!nmism && (st = check_extra(models, nmodels, o->allow_extra, err)) != PCBM_OK) {
        pcbm_layout_free(p);
        return st;
    }
    if (nmism) {
        pcbm_layout_free(p);
        return pcbm_fail(err, PCBM_ERR_MISMATCH,
                         "%u tensor(s) differ in shape or type between the base and task models "
                         "(first %u listed):%s\nall task models must be fine-tunes of the same base",
                         nmism, nmism < MAX_LISTED ? nmism : MAX_LISTED, mism);
    }
    st = pcbm_outlayout_build(p->out_tensors, p->nt, o->shard_bytes, o->meta, o->nmeta, &p->out, err);
    if (st != PCBM_OK) {
        pcbm_layout_free(p);
        return st;
    }
    for (size_t i = 0; i < p->nt; i++) {
        p->t[i].out_file = p->out.tensors[i].file;
        p->t[i].out_off = p->out.tensors[i].offset;
    }
    return PCBM_OK;
}

void pcbm_layout_set_block(pcbm_layout *p, uint64_t elems)
{
    p->block_elems = elems;
    for (size_t i = 0; i < p->nt; i++) {
        pcbm_tlayout *tp = &p->t[i];
        tp->block_units = tp->kind == PCBM_T_RAW ? elems * p->max_in_unit : elems;
        tp->nblocks = (tp->units + tp->block_units - 1) / tp->block_units;
    }
}

uint64_t pcbm_layout_table_bytes(const pcbm_layout *p)
{
    uint64_t per = sizeof *p->t + sizeof *p->out_tensors +
                   p->nmodels * (sizeof *p->src_pool + sizeof *p->unit_pool);
    uint64_t b = (uint64_t)p->nt * per + (uint64_t)p->out.nfiles * sizeof *p->out.files;
    for (unsigned f = 0; f < p->out.nfiles; f++)
        b += p->out.files[f].data_start;
    if (p->out.index_json)
        b += strlen(p->out.index_json) + 1;
    for (unsigned m = 0; m < p->nmodels; m++)
        b += pcbm_model_table_bytes(p->models[m]);
    return b;
}

void pcbm_layout_free(pcbm_layout *p)
{
    pcbm_outlayout_free(&p->out);
    free(p->t);
    free(p->out_tensors);
    free(p->src_pool);
    free(p->unit_pool);
    memset(p, 0, sizeof *p);
}

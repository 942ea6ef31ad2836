/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.c — builds the chunk map: which tensors are merged and which are copied, the byte
 * location of every tensor in every model, the output layout, and the block cut.
 */
#include "layout.h"
#include "ident.h"

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

static unsigned float_size(pcbm_dtype dt) { return pcbm_dtype_bits(dt) / 8; }

/* A tensor the layout merges or converts: a float, or an FP8 weight with block scales. */
static bool takes_part(const pcbm_model *m, const pcbm_st_tensor *t)
{
    return is_float(t->dtype) || (pcbm_quant_is_fp8(t->dtype) && pcbm_quant_has_scale(m, t->name));
}

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

/*
 * Tied heads: an output head that a model may leave out because it reuses its input embedding
 * (tie_word_embeddings). The names are those mergekit's architecture definitions mark as tied.
 * A model without the head supplies the first of these embeddings it has, of the head's shape.
 */
static const struct tied_head {
    const char *head;
    const char *embed[6];
} tied_heads[] = {
    {"lm_head.weight", {"model.embed_tokens.weight", "model.language_model.embed_tokens.weight",
                        "transformer.wte.weight", "wte.weight", "backbone.embeddings.weight",
                        "shared.weight"}},
    {"output.weight", {"model.tok_embeddings.weight"}},
};

static const struct tied_head *tied_head_of(const char *name)
{
    for (size_t i = 0; i < sizeof tied_heads / sizeof tied_heads[0]; i++)
        if (!strcmp(tied_heads[i].head, name))
            return &tied_heads[i];
    return NULL;
}

/* The embedding model m would use as head `th` (-1: none). */
static long tied_embed(const pcbm_model *m, const struct tied_head *th)
{
    for (size_t k = 0; k < sizeof th->embed / sizeof th->embed[0] && th->embed[k]; k++) {
        long j = pcbm_model_find(m, th->embed[k]);
        if (j >= 0)
            return j;
    }
    return -1;
}

/* Tensor `name` of model m, or for a tied head that m lacks, the embedding standing in for it. */
static long find_tied(const pcbm_model *m, const char *name, bool *tied)
{
    long j = pcbm_model_find(m, name);
    *tied = false;
    const struct tied_head *th;
    if (j < 0 && (th = tied_head_of(name)) != NULL && (j = tied_embed(m, th)) >= 0)
        *tied = true;
    return j;
}

/* A head the base ties (leaves out) while some task model stores it: the output gets the head
 * (the tasks' changes to it would otherwise be lost), with the base's embedding as its θ_pre.
 * Returns the head's table entry and the base embedding's index, or NULL. */
static const struct tied_head *untied_by_tasks(pcbm_model *const *models, unsigned nmodels,
                                               long *base_embed)
{
    for (size_t i = 0; i < sizeof tied_heads / sizeof tied_heads[0]; i++) {
        const struct tied_head *th = &tied_heads[i];
        if (pcbm_model_find(models[0], th->head) >= 0 || (*base_embed = tied_embed(models[0], th)) < 0)
            continue;
        for (unsigned m = 1; m < nmodels; m++)
            if (pcbm_model_find(models[m], th->head) >= 0)
                return th;
    }
    return NULL;
}

/*
 * Quantized checkpoints. Packed integer formats (GPTQ/AWQ, bitsandbytes) and narrow float formats
 * (FP8, FP6, FP4, with their scale tensors) store values that only mean something together with
 * per-group scales and zero points; merging their bytes, or copying them beside merged scales,
 * gives a broken model. They are refused, naming what was recognized.
 */
static const struct packed_rule {
    const char *suffix;   /* tensor name suffix */
    const char *format;
} packed_rules[] = {
    {".qweight", "GPTQ/AWQ"},          {".qzeros", "GPTQ/AWQ"},
    {".g_idx", "GPTQ"},                {".absmax", "bitsandbytes"},
    {".quant_map", "bitsandbytes"},    {".nested_absmax", "bitsandbytes"},
    {".SCB", "bitsandbytes int8"},     {".weight_format", "bitsandbytes int8"},
    {".quant_state.bitsandbytes__nf4", "bitsandbytes 4-bit"},
    {".quant_state.bitsandbytes__fp4", "bitsandbytes 4-bit"},
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static bool narrow_float(pcbm_dtype dt)
{
    return dt == PCBM_DT_F8_E4M3 || dt == PCBM_DT_F8_E5M2 || dt == PCBM_DT_F8_E4M3FNUZ ||
           dt == PCBM_DT_F8_E5M2FNUZ || dt == PCBM_DT_F8_E8M0 || dt == PCBM_DT_F4 ||
           dt == PCBM_DT_F6_E2M3 || dt == PCBM_DT_F6_E3M2;
}

static pcbm_status check_quantized(pcbm_model *const *models, unsigned nmodels,
                                   uint32_t qblock[][2], pcbm_error *err)
{
    for (unsigned m = 0; m < nmodels; m++) {
        const pcbm_model *md = models[m];
        bool block_known = false;
        char who[64];
        if (m == 0)
            snprintf(who, sizeof who, "the base");
        else
            snprintf(who, sizeof who, "task model %u", m);
        for (size_t i = 0; i < md->ntensors; i++) {
            const pcbm_st_tensor *t = &md->tensors[i];
            if (pcbm_quant_is_fp8(t->dtype)) {
                pcbm_tquant q;
                pcbm_status st = block_known ? PCBM_OK : pcbm_quant_block(md, qblock[m], err);
                block_known = true;
                if (st == PCBM_OK)
                    st = pcbm_quant_describe(md, qblock[m], who, t, &q, err);
                if (st != PCBM_OK)
                    return st;
            } else if (narrow_float(t->dtype)) {
                return pcbm_fail(err, PCBM_ERR_UNSUPPORTED,
                                 "%s (%s) is quantized: tensor %s is %s; FP6/FP4 checkpoints "
                                 "and FP8 variants other than F8_E4M3/F8_E5M2 with block scales "
                                 "are not merged; merge the model's BF16/F16/F32 release "
                                 "instead", who, md->path, t->name, pcbm_dtype_name(t->dtype));
            }
            for (size_t k = 0; k < sizeof packed_rules / sizeof packed_rules[0]; k++)
                if (ends_with(t->name, packed_rules[k].suffix))
                    return pcbm_fail(err, PCBM_ERR_UNSUPPORTED,
                                     "%s (%s) is a %s-quantized checkpoint (tensor %s): packed "
                                     "quantized weights cannot be merged; merge the unquantized "
                                     "(BF16/F16/F32) checkpoints and quantize the result",
                                     who, md->path, packed_rules[k].format, t->name);
        }
    }
    return PCBM_OK;
}

/* Tensors present in a task model but not in the base: an error unless allow_extra. */
static pcbm_status check_extra(pcbm_model *const *models, unsigned nmodels, int allow_extra,
                               const char *added, pcbm_error *err)
{
    char msg[900] = "";
    unsigned listed = 0;
    uint64_t count = 0;
    for (unsigned m = 1; m < nmodels; m++) {
        for (size_t i = 0; i < models[m]->ntensors && !models[m]->adapter; i++) {
            const char *name = models[m]->tensors[i].name;
            if (pcbm_model_find(models[0], name) >= 0 || (added && !strcmp(name, added)) ||
                pcbm_quant_consumed(models[m], name))
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
/* A non-float base tensor is copied; every task that has it must agree on dtype and shape (its
 * bytes are compared before the merge, merge/nonfloat.c). */
static pcbm_status classify_nonfloat(pcbm_model *const *models, unsigned nmodels, int take_base,
                                     const pcbm_st_tensor *bt, pcbm_tlayout *tp, char *mism,
                                     size_t mlen, unsigned *nmism)
{
    tp->kind = PCBM_T_RAW;
    tp->why = PCBM_WHY_NOT_FLOAT;
    pcbm_status st = PCBM_OK;
    for (unsigned m = 1; m < nmodels; m++) {
        long j = pcbm_model_find(models[m], bt->name);
        if (j < 0)
            continue;
        const pcbm_st_tensor *tt = &models[m]->tensors[j];
        if (same_shape(bt, tt) && tt->dtype == bt->dtype)
            continue;
        char a[128], b[128];
        fmt_shape(bt, a, sizeof a);
        fmt_shape(tt, b, sizeof b);
        if (take_base) {
            pcbm_warn("tensor %s: base %s, task model %u (%s) %s; the base's is copied "
                      "(`take_nonfloat_base`)", bt->name, a, m, models[m]->path, b);
            continue;
        }
        if ((*nmism)++ < MAX_LISTED)
            note_line(mism, mlen, "\n  %s: base %s, %s %s (not a float tensor: it is copied, "
                      "not merged; set `take_nonfloat_base` to copy the base's)", bt->name, a,
                      models[m]->path, b);
        st = PCBM_ERR_MISMATCH;
    }
    return st;
}

/* Model m's tensor t is FP8: its block scales go to the tensor's quant entries (allocated for the
 * whole layout on first use). */
static pcbm_status note_fp8(pcbm_layout *p, size_t i, unsigned m, const pcbm_st_tensor *t,
                            pcbm_error *err)
{
    if (!p->q_pool && !(p->q_pool = pcbm_calloc(p->nt * p->nmodels, sizeof *p->q_pool)))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory planning %zu tensors", p->nt);
    pcbm_tquant *q = p->q_pool + i * p->nmodels;
    char who[32];
    snprintf(who, sizeof who, m ? "task model %u" : "the base", m);
    pcbm_status st = pcbm_quant_describe(p->models[m], p->qblock[m], who, t, &q[m], err);
    if (st == PCBM_OK && !p->t[i].q) {
        p->t[i].q = q;
        p->ndequant++;
    }
    return st;
}

/* Task m's tensor tt has more rows than the base's bt (an embedding with appended tokens) and
 * they align: its first rows take part. A failed vocabulary check is a hard error (*fatal). */
static bool appended_rows(pcbm_layout *p, unsigned m, const pcbm_st_tensor *bt,
                          const pcbm_st_tensor *tt, pcbm_status *fatal, pcbm_error *err)
{
    if (bt->ndim != 2 || tt->ndim != 2 || tt->shape[1] != bt->shape[1] ||
        tt->shape[0] <= bt->shape[0] || !pcbm_vocab_indexed(bt->name) ||
        !takes_part(p->models[m], tt))
        return false;
    if (p->rows_how[m] == PCBM_ROWS_UNCHECKED)
        *fatal = pcbm_vocab_check_task(p->models[0], p->models[m], m, bt->shape[0],
                                       &p->rows_how[m], err);
    return *fatal == PCBM_OK;
}

static pcbm_status classify(pcbm_layout *p, const regex_set *rs, int take_base,
                            bool partial, const pcbm_st_tensor *bt, pcbm_tlayout *tp, char *mism,
                            size_t mlen, unsigned *nmism, uint64_t *nbaseonly, uint64_t *npartial,
                            pcbm_error *err)
{
    pcbm_model *const *models = p->models;
    unsigned nmodels = p->nmodels;
    pcbm_status fatal = PCBM_OK;
    tp->src[0] = (pcbm_tsrc){.file = bt->file, .off = bt->offset, .dt = bt->dtype};
    if (!takes_part(models[0], bt))
        return classify_nonfloat(models, nmodels, take_base, bt, tp, mism, mlen, nmism);
    if (excluded(rs, bt->name)) { /* the base's, whatever the task models hold */
        tp->kind = PCBM_T_CONVERT;
        tp->why = PCBM_WHY_EXCLUDED;
        return PCBM_OK;
    }
    bool missing = false, bad = false;
    const pcbm_model *base = models[0];
    long bi = bt >= base->tensors && bt < base->tensors + base->ntensors ? bt - base->tensors : -1;
    for (unsigned m = 1; m < nmodels; m++) {
        if (models[m]->adapter) { /* factors, a whole tensor (modules_to_save) or τ = 0 */
            pcbm_status lst = pcbm_lora_source(p, (size_t)(tp - p->t), m, bt, bi, err);
            if (lst != PCBM_OK)
                return lst;
            continue;
        }
        bool tied;
        long j = find_tied(models[m], bt->name, &tied);
        if (j < 0) {
            if (!missing)
                tp->why_task = (uint16_t)m;
            tp->why_count++;
            missing = true;
            tp->src[m] = (pcbm_tsrc){.file = PCBM_SRC_NONE, .off = 0, .dt = PCBM_DT_F32};
            continue;
        }
        const pcbm_st_tensor *tt = &models[m]->tensors[j];
        if (!same_shape(bt, tt) && appended_rows(p, m, bt, tt, &fatal, err)) {
            tp->aligned |= 1ull << (m - 1);
        } else if (fatal != PCBM_OK) {
            return fatal;
        } else if (!same_shape(bt, tt) || !takes_part(models[m], tt)) {
            char a[128], b[128];
            fmt_shape(bt, a, sizeof a);
            fmt_shape(tt, b, sizeof b);
            if ((*nmism)++ < MAX_LISTED)
                note_line(mism, mlen, "\n  %s: base %s, %s %s", bt->name, a, models[m]->path, b);
            bad = true;
            continue;
        }
        tp->src[m] = (pcbm_tsrc){.file = tt->file, .off = tt->offset, .dt = tt->dtype};
        if (tied)
            pcbm_info("task model %u (%s) ties its embeddings: %s stands in for %s", m,
                      models[m]->path, tt->name, bt->name);
    }
    if (bad)
        return PCBM_ERR_MISMATCH;
    if (missing && partial && tp->why_count < nmodels - 1) {
        /* the tasks that have it merge it; the others take no part (no bytes, τ = 0) */
        char who[160] = "";
        size_t wl = 0;
        for (unsigned m = 1; m < nmodels; m++) {
            if (tp->src[m].file != PCBM_SRC_NONE || models[m]->adapter)
                continue;
            tp->absent |= 1ull << (m - 1);
            if (wl < sizeof who - 32)
                wl += (size_t)snprintf(who + wl, sizeof who - wl, "%s%u", wl ? ", " : "", m);
        }
        if ((*npartial)++ < MAX_LISTED)
            pcbm_warn("tensor %s is missing from task model%s %s (%s%s): merged over the other "
                      "tasks, without %s", bt->name, tp->why_count > 1 ? "s" : "", who,
                      models[tp->why_task]->path, tp->why_count > 1 ? ", ..." : "",
                      tp->why_count > 1 ? "them" : "it");
        tp->kind = PCBM_T_MERGE;
    } else if (missing) {
        if ((*nbaseonly)++ < MAX_LISTED)
            pcbm_warn("tensor %s is missing from task model %u (%s)%s: copied from the base, so "
                      "no task's change to it is merged", bt->name, tp->why_task,
                      models[tp->why_task]->path, tp->why_count > 1 ? " and others" : "");
        tp->kind = PCBM_T_CONVERT;
        tp->why = PCBM_WHY_MISSING;
    } else {
        tp->kind = PCBM_T_MERGE;
    }
    return PCBM_OK;
}

/* The FP8 sources of tensor i (the base's for a converted tensor, every model's for a merged one). */
static pcbm_status dequant_sources(pcbm_layout *p, size_t i, const pcbm_st_tensor *bt,
                                   pcbm_error *err)
{
    const pcbm_tlayout *tp = &p->t[i];
    unsigned nsrc = tp->kind == PCBM_T_MERGE ? p->nmodels : tp->kind == PCBM_T_CONVERT ? 1 : 0;
    pcbm_status st = PCBM_OK;
    for (unsigned m = 0; m < nsrc && st == PCBM_OK; m++) {
        if (!pcbm_quant_is_fp8(tp->src[m].dt))
            continue;
        bool tied;
        const pcbm_st_tensor *t = m == 0 ? bt
                                  : &p->models[m]->tensors[find_tied(p->models[m], bt->name, &tied)];
        st = note_fp8(p, i, m, t, err);
        if (m == 0)
            p->base_dequantized = true;
    }
    return st;
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
    tp->out_dt = want != PCBM_DTYPE_BASE ? want
                 : pcbm_quant_is_fp8(bt->dtype) ? PCBM_DT_BF16 /* dequantized */
                 : bt->dtype;
    tp->units = bt->numel;
    tp->out_unit = float_size(tp->out_dt);
    unsigned nsrc = tp->kind == PCBM_T_MERGE ? p->nmodels : 1;
    for (unsigned m = 0; m < nsrc; m++) {
        /* a source with no bytes (an adapter's) reads nothing */
        tp->in_unit[m] = tp->src[m].file == PCBM_SRC_NONE ? 0 : float_size(tp->src[m].dt);
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

    if ((st = check_quantized(models, nmodels, p->qblock, err)) != PCBM_OK) {
        free_excludes(&rs);
        return st;
    }
    const pcbm_model *base = models[0];
    long base_embed = -1;
    const struct tied_head *untie = untied_by_tasks(models, nmodels, &base_embed);
    pcbm_st_tensor head;    /* the added head: the base's embedding under the head's name */
    if (untie) {
        head = base->tensors[base_embed];
        head.name = (char *)untie->head;
        p->untied_head = untie->head;
        pcbm_info("the base ties %s to %s but task models store it: the output stores it "
                  "(tie_word_embeddings false), with the base's %s as its starting point",
                  untie->head, base->tensors[base_embed].name, base->tensors[base_embed].name);
    }
    size_t nbase = 0;  /* base tensors in the output: all but the FP8 weights' block scales */
    for (size_t k = 0; k < base->ntensors; k++)
        nbase += !pcbm_quant_consumed(base, base->tensors[k].name);
    p->nt = nbase + (untie ? 1 : 0);
    p->t = pcbm_calloc(p->nt, sizeof *p->t);
    p->out_tensors = pcbm_calloc(p->nt, sizeof *p->out_tensors);
    p->src_pool = pcbm_calloc(p->nt * nmodels, sizeof *p->src_pool);
    p->unit_pool = pcbm_calloc(p->nt * nmodels, sizeof *p->unit_pool);
    if (!p->t || !p->out_tensors || !p->src_pool || !p->unit_pool) {
        free_excludes(&rs);
        pcbm_layout_free(p);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory planning %zu tensors", p->nt);
    }
    if ((st = pcbm_lora_prepare(p, err)) != PCBM_OK) {
        free_excludes(&rs);
        pcbm_layout_free(p);
        return st;
    }
    char mism[900] = "";
    unsigned nmism = 0;
    uint64_t nbaseonly = 0, npartial = 0;
    for (size_t i = 0, k = 0; i < p->nt; i++) {
        const pcbm_st_tensor *bt = &head;
        if (i < nbase) {
            while (pcbm_quant_consumed(base, base->tensors[k].name))
                k++;
            bt = &base->tensors[k++];
        }
        pcbm_tlayout *tp = &p->t[i];
        tp->name = bt->name;
        tp->pidx = -1;
        tp->src = p->src_pool + i * nmodels;
        tp->in_unit = p->unit_pool + i * nmodels;
        unsigned listed = nmism;
        st = classify(p, &rs, o->take_nonfloat_base, o->partial, bt, tp, mism, sizeof mism,
                      &nmism, &nbaseonly, &npartial, err);
        if (st != PCBM_OK && nmism > listed)
            continue; /* a shape or dtype difference, listed in mism */
        if (st != PCBM_OK) {
            free_excludes(&rs);
            pcbm_layout_free(p);
            return st;
        }
        p->naligned += tp->aligned != 0;
        p->npartial += tp->absent != 0;
        if ((st = dequant_sources(p, i, bt, err)) != PCBM_OK) {
            free_excludes(&rs);
            pcbm_layout_free(p);
            return st;
        }
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
    if (npartial > MAX_LISTED)
        pcbm_warn("%llu tensors in all are missing from some task models and merged over the "
                  "tasks that have them", (unsigned long long)npartial);
    if ((nbaseonly || npartial) && o->require_all && !nmism) {
        size_t first = 0;
        while (p->t[first].why != PCBM_WHY_MISSING && !p->t[first].absent)
            first++;
        const pcbm_tlayout *t = &p->t[first];
        st = pcbm_fail(err, PCBM_ERR_MISMATCH, "%llu tensor(s) are missing from some task model "
                       "(the first: %s, from task model %u, %s); `require_all` refuses a merge "
                       "in which a task model lacks a tensor", (unsigned long long)(nbaseonly +
                       npartial), t->name, t->why_task, models[t->why_task]->path);
        pcbm_layout_free(p);
        return st;
    }
    /* shapes first: a model of another architecture is best described by its shapes */
    if (!nmism && (st = check_extra(models, nmodels, o->allow_extra,
                                      p->untied_head, err)) != PCBM_OK) {
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
    if (p->ndequant && (st = pcbm_quant_open(p, err)) != PCBM_OK) {
        pcbm_layout_free(p);
        return st;
    }
    for (unsigned m = 0; m < nmodels; m++) { /* the keys served the classification */
        free(p->lora_keys[m]);
        p->lora_keys[m] = NULL;
    }
    if (p->nadapters && (st = pcbm_lora_open(p, err)) != PCBM_OK) {
        pcbm_layout_free(p);
        return st;
    }
    return PCBM_OK;
}

uint64_t pcbm_layout_row_block(const pcbm_tlayout *t)
{
    if (t->kind != PCBM_T_MERGE || t->row_units == 0 || t->row_units >= t->units)
        return 0; /* one row: the whole tensor must fit a block (checked by the method) */
    uint64_t a = t->row_units, b = PCBM_IDENT_LEAF;
    while (b) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return t->row_units / a * PCBM_IDENT_LEAF;
}

void pcbm_layout_set_block(pcbm_layout *p, uint64_t elems)
{
    p->block_elems = elems;
    for (size_t i = 0; i < p->nt; i++) {
        pcbm_tlayout *tp = &p->t[i];
        tp->block_units = tp->kind == PCBM_T_RAW ? elems * p->max_in_unit : elems;
        uint64_t unit = pcbm_layout_row_block(tp);
        if (unit && unit <= elems) /* whole rows and whole identity leaves in every block */
            tp->block_units = elems / unit * unit;
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
    if (p->q_pool)
        b += (uint64_t)p->nt * p->nmodels * sizeof *p->q_pool;
    if (p->lora_pool)
        b += (uint64_t)p->nt * p->nmodels * sizeof *p->lora_pool;
    return b;
}

void pcbm_layout_free(pcbm_layout *p)
{
    pcbm_outlayout_free(&p->out);
    free(p->t);
    free(p->out_tensors);
    free(p->src_pool);
    free(p->unit_pool);
    pcbm_quant_close(p);
    free(p->q_pool);
    pcbm_lora_free(p);
    memset(p, 0, sizeof *p);
}

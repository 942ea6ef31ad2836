/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lora.c — LoRA adapters in the layout. An adapter task's keys (base_model.model.<module>.
 * lora_A.weight [r, in], .lora_B.weight [out, r], .lora_embedding_A/B, modules_to_save tensors)
 * are matched to base tensors; a targeted tensor gets its factors (pcbm_tlora) and a source with
 * no bytes (PCBM_SRC_NONE), an untargeted one a source with no bytes and r = 0 (τ = 0), a
 * modules_to_save tensor an ordinary source. Keys that name no base tensor, factors whose shapes
 * or rank do not fit, and LoRA variants are refused naming the file, the key and the rule.
 */
#include "layout.h"
#include "../format/adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { KEY_A, KEY_B, KEY_FULL, KEY_FLAGS, KEY_SLOTS };
#define FLAG_EMBED 1u /* lora_embedding_A/B: ΔW = scale · (B · A)ᵀ */

static bool ends_with(const char *s, const char *suffix, size_t *cut)
{
    size_t n = strlen(s), k = strlen(suffix);
    if (n <= k || memcmp(s + n - k, suffix, k) != 0)
        return false;
    *cut = n - k;
    return true;
}

static const char *weights_path(const pcbm_model *m) { return m->files[0].path; }

static pcbm_status refuse_key(const pcbm_model *m, const char *key, const char *why,
                              pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: key %s %s", weights_path(m), key, why);
}

/* A factor key with PEFT's adapter name in it, as a model's state_dict() has it
 * (`<module>.lora_A.<adapter>.weight`, `<module>.lora_embedding_A.<adapter>`), rewritten in place
 * to the saved form (`<module>.lora_A.weight`, `<module>.lora_embedding_A`); the adapter's name
 * into `adapter` (the first one seen; a key of another adapter is refused). */
static pcbm_status strip_adapter_name(const pcbm_model *m, const char *key, char *rest,
                                      char *adapter, size_t adapter_cap, pcbm_error *err)
{
    static const char *const marks[] = {".lora_A.", ".lora_B.", ".lora_embedding_A.",
                                        ".lora_embedding_B."};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        char *at = strstr(rest, marks[i]);
        if (!at)
            continue;
        char *name = at + strlen(marks[i]);
        char *end = strchr(name, '.');
        bool embed = i >= 2;
        /* lora_A.<name>.weight, or lora_embedding_A.<name> at the end of the key */
        if (embed ? end != NULL : (!end || strcmp(end, ".weight") != 0 || end == name))
            continue;
        size_t len = embed ? strlen(name) : (size_t)(end - name);
        if (len == 0 || strcmp(name, "weight") == 0)
            continue;
        if (!adapter[0])
            snprintf(adapter, adapter_cap, "%.*s", (int)len, name);
        else if (strlen(adapter) != len || strncmp(adapter, name, len) != 0) {
            char why[256];
            snprintf(why, sizeof why, "belongs to adapter '%.*s' while other keys belong to '%s': "
                     "the file holds several adapters; save one (PEFT's save_pretrained)",
                     (int)len, name, adapter);
            return refuse_key(m, key, why, err);
        }
        memmove(name - 1, name + len, strlen(name + len) + 1); /* drop ".<name>" */
        return PCBM_OK;
    }
    return PCBM_OK;
}

/* Match one adapter key to its base tensor: slot (KEY_A, KEY_B, KEY_FULL) and base index. */
static pcbm_status match_key(const pcbm_model *base, const pcbm_model *m, const char *key,
                             char *adapter, size_t adapter_cap, int *slot, bool *embed, long *bi,
                             pcbm_error *err)
{
    static const struct { const char *suffix; int slot; bool embed; } factors[] = {
        {".lora_A.weight", KEY_A, false}, {".lora_B.weight", KEY_B, false},
        {".lora_embedding_A", KEY_A, true}, {".lora_embedding_B", KEY_B, true},
    };
    size_t plen = strlen(PCBM_ADAPTER_PREFIX), cut;
    if (strncmp(key, PCBM_ADAPTER_PREFIX, plen) != 0)
        return refuse_key(m, key, "does not start with " PCBM_ADAPTER_PREFIX ": not a PEFT "
                          "adapter key", err);
    char restbuf[1024];
    if (strlen(key + plen) >= sizeof restbuf)
        return refuse_key(m, key, "is longer than 1023 bytes", err);
    strcpy(restbuf, key + plen);
    const char *rest = restbuf;
    pcbm_status sst = strip_adapter_name(m, key, restbuf, adapter, adapter_cap, err);
    if (sst != PCBM_OK)
        return sst;
    if (strstr(rest, ".lora_magnitude_vector"))
        return refuse_key(m, key, "is a DoRA magnitude vector: DoRA adapters are not "
                          "supported; merge the adapter into its base with PEFT's "
                          "merge_and_unload() and give the full model", err);
    char name[1024];
    *embed = false;
    *slot = KEY_FULL;
    for (size_t i = 0; i < sizeof factors / sizeof factors[0]; i++)
        if (ends_with(rest, factors[i].suffix, &cut)) {
            snprintf(name, sizeof name, "%.*s.weight", (int)cut, rest);
            *slot = factors[i].slot;
            *embed = factors[i].embed;
        }
    const char *mts = strstr(rest, ".modules_to_save.");
    if (*slot == KEY_FULL && mts) { /* <module>.modules_to_save.<adapter>.<param> */
        const char *param = strchr(mts + strlen(".modules_to_save."), '.');
        if (!param)
            return refuse_key(m, key, "names no parameter after modules_to_save.<adapter>", err);
        snprintf(name, sizeof name, "%.*s%s", (int)(mts - rest), rest, param);
    } else if (*slot == KEY_FULL) {
        if (strstr(rest, ".lora_"))
            return refuse_key(m, key, "is a LoRA tensor pcbmerge does not know (only "
                              "lora_A.weight, lora_B.weight, lora_embedding_A/B); lora_bias "
                              "and other variants are not supported", err);
        snprintf(name, sizeof name, "%s", rest); /* modules_to_save, as PEFT saves it */
    }
    *bi = pcbm_model_find(base, name);
    if (*bi < 0) {
        char why[1400];
        snprintf(why, sizeof why, "names no tensor of the base %s (looked for %s): is the "
                 "adapter trained on this base?", base->path, name);
        return refuse_key(m, key, why, err);
    }
    const pcbm_st_tensor *bt = pcbm_model_tensor_at(base, (size_t)*bi);
    if (!pcbm_dtype_is_mergeable(bt->dtype) && !pcbm_quant_is_fp8(bt->dtype)) {
        char why[1400];
        snprintf(why, sizeof why, "names the base's %s, which is %s, not a float weight: only "
                 "float weights take LoRA factors or modules_to_save", bt->name,
                 pcbm_dtype_name(bt->dtype));
        return refuse_key(m, key, why, err);
    }
    return PCBM_OK;
}

pcbm_status pcbm_lora_prepare(pcbm_layout *p, pcbm_error *err)
{
    const pcbm_model *base = p->models[0];
    if (base->adapter)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the base %s is a LoRA adapter: the base must be "
                         "a full model (adapters are task models)", base->path);
    for (unsigned m = 1; m < p->nmodels; m++) {
        const pcbm_model *md = p->models[m];
        if (!md->adapter)
            continue;
        p->nadapters++;
        uint32_t *k = p->lora_keys[m] = pcbm_calloc(base->ntensors * KEY_SLOTS, sizeof *k);
        if (!k)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory matching %s", md->path);
        char adapter[128] = "";
        for (size_t j = 0; j < md->ntensors; j++) {
            int slot;
            bool embed;
            long bi;
            const char *key = md->tensors[j].name;
            pcbm_status st = match_key(base, md, key, adapter, sizeof adapter, &slot, &embed, &bi, err);
            if (st != PCBM_OK)
                return st;
            uint32_t *e = k + (size_t)bi * KEY_SLOTS;
            if (e[slot])
                return refuse_key(md, key, "names the same base tensor as another key", err);
            e[slot] = (uint32_t)j + 1;
            e[KEY_FLAGS] |= embed ? FLAG_EMBED : 0;
        }
    }
    if (p->nadapters &&
        !(p->lora_pool = pcbm_calloc(p->nt * p->nmodels, sizeof *p->lora_pool)))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory planning %zu tensors", p->nt);
    return PCBM_OK;
}

static void shape_str(const pcbm_st_tensor *t, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (unsigned d = 0; d < t->ndim && u < len; d++)
        u += (size_t)snprintf(buf + u, len - u, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->shape[d]);
    if (u < len)
        snprintf(buf + u, len - u, "]");
}

static bool factor_dtype(pcbm_dtype dt)
{
    return dt == PCBM_DT_F32 || dt == PCBM_DT_F16 || dt == PCBM_DT_BF16;
}

/* The factors of base tensor bt in adapter m: shapes, rank (rank_pattern) and scale. */
static pcbm_status describe_factors(pcbm_layout *p, unsigned m, const pcbm_st_tensor *bt,
                                    const uint32_t *e, pcbm_tlora *L, pcbm_error *err)
{
    const pcbm_model *md = p->models[m];
    const pcbm_adapter *ad = md->adapter;
    if (!e[KEY_A] || !e[KEY_B])
        return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: tensor %s has lora_%s but no lora_%s: "
                         "the adapter file is incomplete", weights_path(md), bt->name,
                         e[KEY_A] ? "A" : "B", e[KEY_A] ? "B" : "A");
    if (e[KEY_FULL])
        return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: tensor %s has both LoRA factors and a "
                         "whole replacement (modules_to_save): which one applies is ambiguous",
                         weights_path(md), bt->name);
    const pcbm_st_tensor *A = &md->tensors[e[KEY_A] - 1], *B = &md->tensors[e[KEY_B] - 1];
    L->transposed = (e[KEY_FLAGS] & FLAG_EMBED) || ad->fan_in_fan_out;
    char sa[64], sb[64], sw[64];
    shape_str(A, sa, sizeof sa);
    shape_str(B, sb, sizeof sb);
    shape_str(bt, sw, sizeof sw);
    if (bt->ndim != 2 || A->ndim != 2 || B->ndim != 2 || A->shape[0] != B->shape[1] ||
        (L->transposed ? (A->shape[1] != bt->shape[0] || B->shape[0] != bt->shape[1])
                       : (B->shape[0] != bt->shape[0] || A->shape[1] != bt->shape[1])))
        return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: the LoRA factors of %s do not fit the "
                         "base tensor: lora_A %s, lora_B %s, base %s (the rule: A [r, in], "
                         "B [out, r], base [out, in]%s); is the adapter trained on this base?",
                         weights_path(md), bt->name, sa, sb, sw,
                         L->transposed ? ", transposed: base [in, out]" : "");
    if (!factor_dtype(A->dtype) || !factor_dtype(B->dtype))
        return pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "%s: the LoRA factors of %s are %s and %s: "
                         "only F32, F16 and BF16 factors are merged", weights_path(md),
                         bt->name, pcbm_dtype_name(A->dtype), pcbm_dtype_name(B->dtype));
    char module[1024];
    snprintf(module, sizeof module, "%.*s", (int)(strlen(bt->name) - strlen(".weight")),
             bt->name);
    unsigned r;
    double alpha;
    pcbm_adapter_rank_alpha(ad, module, &r, &alpha);
    if (A->shape[0] != r)
        return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: the LoRA factors of %s have rank %llu, "
                         "but %s gives module %s rank %u (r or rank_pattern)", weights_path(md),
                         bt->name, (unsigned long long)A->shape[0], ad->config_path, module, r);
    L->r = r;
    L->scale = (float)pcbm_adapter_scale(ad, r, alpha);
    L->a_dt = A->dtype;
    L->b_dt = B->dtype;
    L->a_off = A->offset;
    L->b_off = B->offset;
    L->rows = bt->shape[0];
    L->cols = bt->shape[1];
    pcbm_adapter_use *u = &p->lora_use[m];
    u->targeted++;
    u->max_r = PCBM_MAX(u->max_r, r);
    u->cache_floats = PCBM_MAX(u->cache_floats, (uint64_t)r * (L->rows + L->cols));
    return PCBM_OK;
}

pcbm_status pcbm_lora_source(pcbm_layout *p, size_t i, unsigned m, const pcbm_st_tensor *bt,
                             long bi, pcbm_error *err)
{
    pcbm_tlayout *tp = &p->t[i];
    pcbm_tlora *L = &p->lora_pool[i * p->nmodels + m];
    const pcbm_model *md = p->models[m];
    tp->lora = &p->lora_pool[i * p->nmodels];
    tp->src[m] = (pcbm_tsrc){.file = PCBM_SRC_NONE, .off = 0, .dt = PCBM_DT_F32};
    const uint32_t *e = bi >= 0 ? p->lora_keys[m] + (size_t)bi * KEY_SLOTS : NULL;
    if (!e || (!e[KEY_A] && !e[KEY_B] && !e[KEY_FULL]))
        return PCBM_OK; /* untargeted: τ = 0 */
    if (e[KEY_A] || e[KEY_B])
        return describe_factors(p, m, bt, e, L, err);
    const pcbm_st_tensor *tt = &md->tensors[e[KEY_FULL] - 1];
    bool same = tt->ndim == bt->ndim && pcbm_dtype_is_mergeable(tt->dtype);
    for (unsigned d = 0; same && d < bt->ndim; d++)
        same = tt->shape[d] == bt->shape[d];
    if (!same) {
        char a[64], b[64];
        shape_str(bt, a, sizeof a);
        shape_str(tt, b, sizeof b);
        return pcbm_fail(err, PCBM_ERR_MISMATCH, "%s: key %s (modules_to_save) is %s %s, the "
                         "base's %s is %s %s: it must have the base tensor's shape and a float "
                         "dtype", weights_path(md), tt->name, pcbm_dtype_name(tt->dtype), b,
                         bt->name, pcbm_dtype_name(bt->dtype), a);
    }
    tp->src[m] = (pcbm_tsrc){.file = tt->file, .off = tt->offset, .dt = tt->dtype};
    p->lora_use[m].saved++;
    return PCBM_OK;
}

unsigned pcbm_layout_reading_models(const pcbm_layout *p)
{
    unsigned n = 0;
    for (unsigned m = 0; m < p->nmodels; m++)
        n += !p->no_bytes[m];
    return n;
}

pcbm_status pcbm_lora_open(pcbm_layout *p, pcbm_error *err)
{
    for (unsigned m = 0; m < p->nmodels; m++)
        p->lfd[m] = -1;
    p->lfd_open = true;
    for (unsigned m = 1; m < p->nmodels; m++) /* its sources all have no bytes */
        p->no_bytes[m] = p->models[m]->adapter && !p->lora_use[m].saved;
    for (unsigned m = 1; m < p->nmodels; m++) {
        if (!p->models[m]->adapter || !p->lora_use[m].targeted)
            continue;
        const char *path = weights_path(p->models[m]);
        if ((p->lfd[m] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    return PCBM_OK;
}

void pcbm_lora_free(pcbm_layout *p)
{
    for (unsigned m = 0; m < PCBM_MAX_MODELS; m++) {
        free(p->lora_keys[m]);
        p->lora_keys[m] = NULL;
        if (p->lfd_open && m < p->nmodels && p->lfd[m] >= 0)
            close(p->lfd[m]);
    }
    p->lfd_open = false;
    free(p->lora_pool);
    p->lora_pool = NULL;
}

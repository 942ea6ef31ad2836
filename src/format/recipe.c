/* SPDX-License-Identifier: Apache-2.0 */
/*
 * recipe.c — mergekit recipes (YAML, read with libyaml): the schema of mergekit's config.py
 * (MergeConfiguration) in the forms pcbmerge merges — `models:`, or `slices:` whose sources all
 * take every layer — turned into merge options: method, base, tasks, the per-tensor parameters
 * (pcbm_params: gradients, filters) and the output dtype. Every other form and key is refused
 * by name, with its line. The text is kept for the report and the model card.
 */
#include "pcbmerge.h"
#include "../common/common.h"
#include "../merge/method.h"
#include "st_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define RECIPE_MAX_BYTES (4u << 20)
#define RECIPE_MAX_VALUES 4096u

/* mergekit's methods and the parameters each reads (merge_methods/): whole-merge and per-model
 * (space-separated), whether a base model is required, whether `weight` is required. */
typedef struct mk_method {
    const char *name;
    const char *global, *per_model;
    bool needs_base, weight_required;
    bool normalize, rescale;    /* mergekit's defaults (where the method takes them) */
} mk_method;

#define GTA_GLOBAL "int8_mask normalize rescale lambda"
#define SPARSE_GLOBAL GTA_GLOBAL " scope" /* pcbmerge's own `scope` for mergekit's sparsifiers */
static const mk_method mk_methods[] = {
    {"linear", "normalize", "weight", false, true, true, false},
    {"task_arithmetic", GTA_GLOBAL, "weight density", true, true, false, false},
    {"ties", SPARSE_GLOBAL, "weight density", true, true, true, false},
    {"dare_ties", SPARSE_GLOBAL, "weight density", true, true, false, true},
    {"dare_linear", SPARSE_GLOBAL, "weight density", true, true, false, true},
    {"breadcrumbs", SPARSE_GLOBAL, "weight density gamma", true, true, false, false},
    {"breadcrumbs_ties", SPARSE_GLOBAL, "weight density gamma", true, true, false, false},
    {"della", SPARSE_GLOBAL, "weight density epsilon", true, true, true, true},
    {"della_linear", SPARSE_GLOBAL, "weight density epsilon", true, true, false, true},
    {"slerp", "t", "", true, false, false, false},
    {"nuslerp", "nuslerp_row_wise nuslerp_flatten", "weight", false, true, false, false},
    {"model_stock", "filter_wise", "", true, false, false, false},
    {"sce", "int8_mask select_topk", "", true, false, false, false},
    /* pcbmerge's own */
    {"pcb", "density lambda clamp_ratio scope", "weight", true, false, false, false},
};
/* mergekit's methods pcbmerge does not merge (yet). */
static const char *const mk_unsupported[] = {
    "passthrough", "arcee_fusion", "karcher", "multislerp", "nearswap", "ram", NULL,
};

struct pcbm_recipe {
    char *name;                 /* the path, for messages */
    char *text;
    const mk_method *mm;
    pcbm_method method;
    char *base_model;           /* as written, or NULL */
    char **models;              /* every `model` as written */
    unsigned nmodels;
    const char *tasks[PCBM_MAX_TASKS];
    unsigned ntasks;
    const char *layout_base;
    pcbm_params *params;
    pcbm_dtype out_dtype;
    pcbm_scope scope;
    double density, lambda, clamp_ratio;
    bool have_density, have_lambda, have_clamp;
    unsigned layer_lo, layer_hi; /* slices: the sources' layer_range */
    bool have_range;
    char *chat_template;        /* as written, or NULL */
    /* pcb: a model's `weight` scales its λ (λ_i = lambda · weight_i; scalars only) */
    double pcb_w[PCBM_MAX_TASKS], pcb_w_all, pcb_lambdas[PCBM_MAX_TASKS];
    bool have_pcb_w[PCBM_MAX_TASKS], have_pcb_w_all;
    char *tokenizer_source;     /* base, union or a model as written; NULL: not given */
};

/* ---- YAML helpers ------------------------------------------------------------------------- */

typedef struct rctx {
    yaml_document_t *doc;
    const char *name;
    pcbm_error *err;
    pcbm_recipe *r;
} rctx;

static unsigned line_of(const yaml_node_t *n) { return (unsigned)n->start_mark.line + 1; }

static pcbm_status bad(rctx *c, const yaml_node_t *n, const char *fmt, ...) PCBM_PRINTF(3, 4);
static pcbm_status bad(rctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
        return pcbm_fail(c->err, PCBM_ERR_USAGE, "%s, line %u: %s", c->name, line_of(n), msg);
    return pcbm_fail(c->err, PCBM_ERR_USAGE, "%s: %s", c->name, msg);
}

static yaml_node_t *node(rctx *c, int id) { return yaml_document_get_node(c->doc, id); }

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* YAML's null: ~, null, Null, NULL or nothing (plain). */
static bool is_null(const yaml_node_t *n)
{
    const char *s = scalar(n);
    return s && plain(n) && (!*s || !strcmp(s, "~") || !strcmp(s, "null") ||
                             !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

/* YAML 1.1's booleans (PyYAML's): 1 true, 0 false, -1 neither. */
static int boolean(const yaml_node_t *n)
{
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
    const char *s = scalar(n);
    if (!s || !plain(n))
        return -1;
    for (int k = 0; t[k]; k++)
        if (!strcmp(s, t[k]))
            return 1;
    for (int k = 0; f[k]; k++)
        if (!strcmp(s, f[k]))
            return 0;
    return -1;
}

/* A plain number (an integer or a float; YAML's .inf and .nan are refused). */
static bool number(const yaml_node_t *n, double *v)
{
    const char *s = scalar(n);
    if (!s || !plain(n) || !*s)
        return false;
    char buf[128];
    size_t u = 0;
    for (const char *p = s; *p && u + 1 < sizeof buf; p++)
        if (*p != '_')
            buf[u++] = *p;
    buf[u] = 0;
    char *end = NULL;
    errno = 0;
    double d = strtod(buf, &end);
    if (end == buf || *end || errno || !isfinite(d) || strpbrk(buf, "xXnNiI"))
        return false;
    *v = d;
    return true;
}

/* A string scalar (quoted, or plain and not null). */
static const char *string(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE && !is_null(n) ? scalar(n) : NULL;
}

static bool in_list(const char *list, const char *name)
{
    size_t l = strlen(name);
    if (l == 0)
        return false;
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += l)
        if ((p == list || p[-1] == ' ') && (p[l] == ' ' || !p[l]))
            return true;
    return false;
}

/* A key given twice in one mapping (PyYAML keeps the last, silently): refused. */
static pcbm_status dup_keys(rctx *c, const yaml_node_t *m)
{
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(node(c, p->key));
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; k && q < p; q++) {
            const char *k2 = scalar(node(c, q->key));
            if (k2 && !strcmp(k, k2))
                return bad(c, node(c, p->key), "'%s' is given twice (first on line %u)", k,
                           line_of(node(c, q->key)));
        }
    }
    return PCBM_OK;
}

/* ---- parameters --------------------------------------------------------------------------- */

/* One value of a setting: a number or a boolean (1, 0). */
static bool value_of(const yaml_node_t *n, double *v, bool *is_num)
{
    int b = boolean(n);
    if (b >= 0) {
        *v = b;
        *is_num = false;
        return true;
    }
    *is_num = true;
    return number(n, v);
}

/* A scalar or a gradient (a list of values) into one entry of the setting. */
static pcbm_status add_values(rctx *c, int task, const char *pname, const char *filter,
                              yaml_node_t *v, const char *who)
{
    double vals[RECIPE_MAX_VALUES];
    size_t n = 0;
    bool all_num = true, isnum;
    if (v->type == YAML_SCALAR_NODE) {
        if (!value_of(v, &vals[0], &isnum))
            return bad(c, v, "%s: parameter %s is '%s': give a number, a boolean, a list of "
                       "numbers (a gradient) or a list of {filter, value}", who, pname, scalar(v));
        n = 1;
    } else if (v->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            yaml_node_t *e = node(c, *it);
            if (n >= RECIPE_MAX_VALUES)
                return bad(c, v, "%s: parameter %s has more than %u values", who, pname,
                           RECIPE_MAX_VALUES);
            if (!value_of(e, &vals[n], &isnum))
                return bad(c, e, "%s: parameter %s: a gradient's values are numbers (or "
                           "booleans), not '%s'", who, pname, scalar(e) ? scalar(e) : "a list or mapping");
            all_num = all_num && isnum;
            n++;
        }
        if (n == 0)
            return bad(c, v, "%s: parameter %s is an empty list", who, pname);
    } else {
        return bad(c, v, "%s: parameter %s: a value is a number or a list of numbers", who, pname);
    }
    pcbm_status st = pcbm_params_add(c->r->params, task, pname, filter, vals, n, n > 1 && !all_num,
                                     c->err);
    return st == PCBM_OK ? st : bad(c, v, "%s", c->err->msg);
}

/* A conditional entry {filter: S, value: V}. */
static pcbm_status add_conditional(rctx *c, int task, const char *pname, yaml_node_t *m,
                                   const char *who)
{
    yaml_node_t *f = NULL, *v = NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key);
        const char *ks = scalar(k);
        if (ks && !strcmp(ks, "filter"))
            f = node(c, p->value);
        else if (ks && !strcmp(ks, "value"))
            v = node(c, p->value);
        else
            return bad(c, k, "%s: parameter %s: unknown key '%s' in a conditional entry (its "
                       "keys are filter and value)", who, pname, ks ? ks : "?");
    }
    if (!v)
        return bad(c, m, "%s: parameter %s: a conditional entry needs a value", who, pname);
    if (v->type == YAML_MAPPING_NODE)
        return bad(c, v, "%s: parameter %s: a conditional value is a number or a gradient "
                   "(conditions do not nest)", who, pname);
    const char *filter = NULL;
    if (f && !is_null(f)) {
        if (f->type != YAML_SCALAR_NODE)
            return bad(c, f, "%s: parameter %s: a filter is a string", who, pname);
        filter = scalar(f);
    }
    return add_values(c, task, pname, filter, v, who);
}

/* Does this setting vary per tensor (a gradient or a filter)? */
static bool varies(yaml_node_t *v)
{
    return v->type != YAML_SCALAR_NODE;
}

/* The `parameters` mapping of a model (task >= 0, or -2 for the base's: checked, unused) or
 * of the whole merge (PCBM_PARAMS_ALL). */
static pcbm_status read_params(rctx *c, yaml_node_t *m, int task, const char *who)
{
    pcbm_recipe *r = c->r;
    if (is_null(m))
        return PCBM_OK;
    if (m->type != YAML_MAPPING_NODE)
        return bad(c, m, "%s: parameters is a mapping of parameter names to values", who);
    pcbm_status dst = dup_keys(c, m);
    if (dst != PCBM_OK)
        return dst;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        const char *pname = scalar(k);
        if (!pname)
            return bad(c, k, "%s: a parameter name is a string", who);
        bool global_ok = in_list(r->mm->global, pname), model_ok = in_list(r->mm->per_model, pname);
        if (task == PCBM_PARAMS_ALL ? !(global_ok || model_ok) : !model_ok) {
            if (task != PCBM_PARAMS_ALL && global_ok)
                return bad(c, k, "%s: %s is a parameter of the whole merge, not of one model: "
                           "put it in the recipe's parameters", who, pname);
            return bad(c, k, "%s: unknown parameter '%s' for merge_method %s (its parameters: "
                       "%s%s%s)", who, pname, r->mm->name, r->mm->global,
                       *r->mm->per_model ? "; per model: " : "", r->mm->per_model);
        }
        if (is_null(v))
            continue;
        if (!strcmp(pname, "int8_mask")) { /* accepted, no effect: pcbmerge masks in float32 */
            if (boolean(v) < 0)
                return bad(c, v, "%s: int8_mask is true or false", who);
            continue;
        }
        if (!strcmp(pname, "scope")) {
            if (varies(v))
                return bad(c, v, "%s: scope is global or tensor for the whole merge: it takes "
                           "no gradient or filter", who);
            continue; /* read before (read_scope) */
        }
        if (r->method == PCBM_METHOD_PCB) {
            if (varies(v))
                return bad(c, v, "%s: a gradient or filter on the PCB parameter %s: %s", who,
                           pname, r->scope == PCBM_SCOPE_GLOBAL
                               ? "PCB's global scope computes one set of statistics over the "
                                 "whole model and takes scalars only (give a number)"
                               : "per-tensor PCB parameters are not supported yet (give a number)");
            double d;
            if (!number(v, &d))
                return bad(c, v, "%s: %s is a number, got '%s'", who, pname, scalar(v));
            if (!strcmp(pname, "weight") && task == -2)
                continue; /* the base listed among the models is no task */
            if (!strcmp(pname, "weight") && task >= 0)
                r->pcb_w[task] = d, r->have_pcb_w[task] = true;
            else if (!strcmp(pname, "weight") && !r->have_pcb_w_all) /* the slice's first */
                r->pcb_w_all = d, r->have_pcb_w_all = true;
            else if (!strcmp(pname, "weight"))
                continue;
            /* the first level that sets one wins (the slice's before the whole merge's) */
            else if (!strcmp(pname, "density") && !r->have_density)
                r->density = d, r->have_density = true;
            else if (!strcmp(pname, "lambda") && !r->have_lambda)
                r->lambda = d, r->have_lambda = true;
            else if (!strcmp(pname, "clamp_ratio") && !r->have_clamp)
                r->clamp_ratio = d, r->have_clamp = true;
            continue;
        }
        if (task == -2)
            continue; /* the base model's own parameters: it is no task (mergekit ignores them) */
        pcbm_status st = PCBM_OK;
        if (v->type == YAML_MAPPING_NODE) {
            st = add_conditional(c, task, pname, v, who);
        } else if (v->type == YAML_SEQUENCE_NODE && v->data.sequence.items.top > v->data.sequence.items.start &&
                   node(c, v->data.sequence.items.start[0])->type == YAML_MAPPING_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 st == PCBM_OK && it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = node(c, *it);
                if (e->type != YAML_MAPPING_NODE)
                    return bad(c, e, "%s: parameter %s mixes {filter, value} entries and plain "
                               "values", who, pname);
                st = add_conditional(c, task, pname, e, who);
            }
        } else {
            st = add_values(c, task, pname, NULL, v, who);
        }
        if (st != PCBM_OK)
            return st;
    }
    return PCBM_OK;
}

/* `scope` (global or tensor; pcbmerge's own, for PCB and mergekit's sparsifiers) before the
 * other parameters. */
static pcbm_status read_scope(rctx *c, yaml_node_t *m)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return PCBM_OK;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(node(c, p->key));
        yaml_node_t *v = node(c, p->value);
        if (!k || strcmp(k, "scope"))
            continue;
        if (varies(v))
            return bad(c, v, "%s: scope is global or tensor for the whole merge: it takes no "
                       "gradient or filter", c->r->mm->name);
        const char *s = string(v);
        if (!s || (strcmp(s, "global") && strcmp(s, "tensor")))
            return bad(c, v, "%s: scope is global or tensor", c->r->mm->name);
        c->r->scope = strcmp(s, "global") ? PCBM_SCOPE_TENSOR : PCBM_SCOPE_GLOBAL;
    }
    return PCBM_OK;
}

/* ---- the document ------------------------------------------------------------------------- */

typedef struct model_in {
    yaml_node_t *at, *params;
    const char *model;
} model_in;

/* mergekit's `MODEL+ADAPTER`: a LoRA adapter (PEFT folder) applied to MODEL. pcbmerge forms an
 * adapter task's vector against the merge's base, so MODEL must be the base (or, for linear
 * without base_model, the first model): the task is then the adapter folder. A spec that names
 * an existing folder as a whole is a path, '+' and all. Returns the adapter part or NULL. */
static const char *adapter_of(const char *spec, size_t *prefix_len)
{
    struct stat sb;
    const char *plus = strchr(spec, '+');
    if (!plus || (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return NULL;
    *prefix_len = (size_t)(plus - spec);
    return plus + 1;
}

static pcbm_status add_model(rctx *c, yaml_node_t *m, model_in *list, unsigned *n, bool slice)
{
    if (m->type != YAML_MAPPING_NODE)
        return bad(c, m, "a %s is a mapping with 'model'%s", slice ? "slice source" : "models entry",
                   slice ? " and 'layer_range'" : "");
    if (*n >= PCBM_MAX_TASKS + 1)
        return bad(c, m, "more than %d models", PCBM_MAX_TASKS + 1);
    model_in *mi = &list[*n];
    memset(mi, 0, sizeof *mi);
    mi->at = m;
    bool ranged = false;
    pcbm_status dst = dup_keys(c, m);
    if (dst != PCBM_OK)
        return dst;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        const char *ks = scalar(k);
        if (ks && !strcmp(ks, "model")) {
            if (!(mi->model = string(v)))
                return bad(c, v, "model is a path or a hub id (ORG/NAME)");
        } else if (ks && !strcmp(ks, "parameters")) {
            mi->params = v;
        } else if (ks && slice && !strcmp(ks, "layer_range")) {
            double a, b;
            if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top - v->data.sequence.items.start != 2 ||
                !number(node(c, v->data.sequence.items.start[0]), &a) ||
                !number(node(c, v->data.sequence.items.start[1]), &b) || a < 0 || b <= a ||
                a != floor(a) || b != floor(b) || b > 1e6)
                return bad(c, v, "layer_range is [FIRST, END], two integers");
            if (c->r->have_range && ((unsigned)a != c->r->layer_lo || (unsigned)b != c->r->layer_hi))
                return bad(c, v, "slices that take different layer ranges from their sources "
                           "(frankenmerges) are not supported yet: every source must take every "
                           "layer, [0, L]");
            c->r->layer_lo = (unsigned)a;
            c->r->layer_hi = (unsigned)b;
            c->r->have_range = ranged = true;
        } else {
            return bad(c, k, "unknown key '%s' in a %s (its keys: model, %sparameters)",
                       ks ? ks : "?", slice ? "slice source" : "models entry",
                       slice ? "layer_range, " : "");
        }
    }
    if (!mi->model)
        return bad(c, m, "a %s without 'model'", slice ? "slice source" : "models entry");
    if (slice && !ranged)
        return bad(c, m, "a slice source without 'layer_range'");
    (*n)++;
    return PCBM_OK;
}

static pcbm_status read_slices(rctx *c, yaml_node_t *s, model_in *list, unsigned *n,
                               yaml_node_t **slice_params)
{
    if (s->type != YAML_SEQUENCE_NODE || s->data.sequence.items.top == s->data.sequence.items.start)
        return bad(c, s, "slices is a list of slices");
    if (s->data.sequence.items.top - s->data.sequence.items.start > 1)
        return bad(c, s, "slices that stack several slices (frankenmerges, passthrough) are not "
                   "supported yet: give one slice whose sources all take every layer, or use "
                   "'models:'");
    yaml_node_t *sl = node(c, s->data.sequence.items.start[0]);
    if (sl->type != YAML_MAPPING_NODE)
        return bad(c, sl, "a slice is a mapping with 'sources'");
    yaml_node_t *src = NULL;
    for (yaml_node_pair_t *p = sl->data.mapping.pairs.start; p < sl->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        const char *ks = scalar(k);
        if (ks && !strcmp(ks, "sources"))
            src = v;
        else if (ks && !strcmp(ks, "parameters"))
            *slice_params = v;
        else if (ks && (!strcmp(ks, "base_model") || !strcmp(ks, "residual_weight")))
            return bad(c, k, "slices that set '%s' are not supported yet: give base_model at "
                       "the top of the recipe", ks);
        else
            return bad(c, k, "unknown key '%s' in a slice (its keys: sources, parameters)",
                       ks ? ks : "?");
    }
    if (!src || src->type != YAML_SEQUENCE_NODE)
        return bad(c, sl, "a slice needs 'sources', a list of {model, layer_range}");
    for (yaml_node_item_t *it = src->data.sequence.items.start; it < src->data.sequence.items.top; it++) {
        pcbm_status st = add_model(c, node(c, *it), list, n, true);
        if (st != PCBM_OK)
            return st;
    }
    return PCBM_OK;
}

static bool dtype_of(const char *s, pcbm_dtype *dt)
{
    if (!strncmp(s, "torch.", 6))
        s += 6;
    if (!strcmp(s, "float32") || !strcmp(s, "fp32") || !strcmp(s, "f32"))
        *dt = PCBM_DT_F32;
    else if (!strcmp(s, "float16") || !strcmp(s, "fp16") || !strcmp(s, "f16") || !strcmp(s, "half"))
        *dt = PCBM_DT_F16;
    else if (!strcmp(s, "bfloat16") || !strcmp(s, "bf16"))
        *dt = PCBM_DT_BF16;
    else
        return false;
    return true;
}

static pcbm_status read_doc(rctx *c)
{
    pcbm_recipe *r = c->r;
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        return bad(c, root, "a recipe is a YAML mapping (merge_method, models, ...)");
    pcbm_status dst = dup_keys(c, root);
    if (dst != PCBM_OK)
        return dst;
    yaml_node_t *method = NULL, *models = NULL, *slices = NULL, *params = NULL, *dtype = NULL,
                *out_dtype = NULL, *base = NULL, *tok_src = NULL, *tok_block = NULL;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
        const char *ks = scalar(k);
        if (!ks)
            return bad(c, k, "a key of the recipe is a string");
        if (!strcmp(ks, "merge_method")) method = v;
        else if (!strcmp(ks, "models")) models = v;
        else if (!strcmp(ks, "slices")) slices = v;
        else if (!strcmp(ks, "parameters")) params = v;
        else if (!strcmp(ks, "dtype")) dtype = v;
        else if (!strcmp(ks, "out_dtype")) out_dtype = v;
        else if (!strcmp(ks, "base_model")) base = v;
        else if (!strcmp(ks, "modules")) {
            if (!is_null(v))
                return bad(c, k, "modules: (per-module merges) are not supported yet: give "
                           "'models:' or one slice");
        } else if (!strcmp(ks, "tokenizer_source")) {
            if (!is_null(v) && !string(v))
                return bad(c, v, "tokenizer_source is base, union or one of the models");
            tok_src = is_null(v) ? NULL : v;
        } else if (!strcmp(ks, "tokenizer")) {
            /* mergekit's TokenizerConfig: source (default union), tokens, pad_to_multiple_of */
            if (is_null(v))
                continue;
            if (v->type != YAML_MAPPING_NODE)
                return bad(c, v, "tokenizer is a mapping (source, tokens, pad_to_multiple_of)");
            tok_block = v;
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top;
                 q++) {
                yaml_node_t *tk = node(c, q->key), *tv = node(c, q->value);
                const char *ts = scalar(tk);
                if (ts && !strcmp(ts, "source")) {
                    if (!string(tv))
                        return bad(c, tv, "tokenizer.source is base, union or one of the models");
                    tok_src = tv;
                } else if (ts && (!strcmp(ts, "tokens") || !strcmp(ts, "pad_to_multiple_of"))) {
                    if (!is_null(tv))
                        return bad(c, tk, "tokenizer.%s is not supported yet (pcbmerge gives "
                                   "every token mergekit's default embedding and pads nothing)",
                                   ts);
                } else {
                    return bad(c, tk, "unknown key '%s' in tokenizer (mergekit's: source, "
                               "tokens, pad_to_multiple_of)", ts ? ts : "?");
                }
            }
        } else if (!strcmp(ks, "chat_template")) {
            if (!is_null(v)) {
                pcbm_error ce;
                if (!string(v))
                    return bad(c, v, "chat_template is 'auto' or a Jinja template's text");
                if (pcbm_chat_template_check(string(v), &ce) != PCBM_OK)
                    return bad(c, v, "%s", ce.msg);
                if (!(r->chat_template = pcbm_strdup(string(v))))
                    return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
            }
        } else if (!strcmp(ks, "name") || !strcmp(ks, "description")) {
            /* not mergekit's (it ignores keys it does not know): recipe collections carry them */
        } else {
            return bad(c, k, "unknown key '%s' (a recipe's keys: merge_method, base_model, "
                       "models, slices, parameters, dtype, out_dtype, tokenizer_source, "
                       "tokenizer, chat_template, name, description)", ks);
        }
    }
    const char *ms = string(method);
    if (!ms)
        return bad(c, method, "the recipe needs merge_method");
    for (size_t k = 0; mk_unsupported[k]; k++)
        if (!strcmp(ms, mk_unsupported[k]))
            return bad(c, method, "merge_method %s is not supported yet", ms);
    for (size_t k = 0; k < sizeof mk_methods / sizeof *mk_methods && !r->mm; k++)
        if (!strcmp(ms, mk_methods[k].name))
            r->mm = &mk_methods[k];
    if (!r->mm)
        return bad(c, method, "unknown merge_method '%s'", ms);
    if ((r->method = pcbm_method_parse(ms)) == PCBM_METHOD_COUNT)
        return bad(c, method, "merge_method %s is not supported by this pcbmerge yet", ms);
    if (dtype && !is_null(dtype) && (!string(dtype) || !dtype_of(string(dtype), &r->out_dtype)))
        return bad(c, dtype, "dtype is float32, float16 or bfloat16");
    if (out_dtype && !is_null(out_dtype) &&
        (!string(out_dtype) || !dtype_of(string(out_dtype), &r->out_dtype)))
        return bad(c, out_dtype, "out_dtype is float32, float16 or bfloat16");
    if (base && !is_null(base)) {
        if (!string(base))
            return bad(c, base, "base_model is a path or a hub id (ORG/NAME)");
        if (!(r->base_model = pcbm_strdup(string(base))))
            return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
    }
    if ((models && !is_null(models)) == (slices && !is_null(slices)))
        return bad(c, root, "give exactly one of 'models' and 'slices' (as mergekit)");
    model_in list[PCBM_MAX_TASKS + 1];
    unsigned n = 0;
    yaml_node_t *slice_params = NULL;
    pcbm_status st = PCBM_OK;
    if (models && !is_null(models)) {
        if (models->type != YAML_SEQUENCE_NODE)
            return bad(c, models, "models is a list of {model, parameters}");
        for (yaml_node_item_t *it = models->data.sequence.items.start;
             st == PCBM_OK && it < models->data.sequence.items.top; it++)
            st = add_model(c, node(c, *it), list, &n, false);
    } else {
        st = read_slices(c, slices, list, &n, &slice_params);
        if (st == PCBM_OK && r->layer_lo != 0)
            st = bad(c, slices, "slices that do not start at layer 0 are not supported yet: "
                     "every source must take every layer, [0, L]");
    }
    if (st != PCBM_OK)
        return st;
    r->scope = PCBM_SCOPE_TENSOR;
    if (in_list(r->mm->global, "scope") &&
        ((st = read_scope(c, params)) != PCBM_OK || (st = read_scope(c, slice_params)) != PCBM_OK))
        return st;
    /* the base and the tasks (mergekit: the base listed among the models is no task) */
    if (!r->base_model && r->mm->needs_base)
        return bad(c, root, "merge_method %s needs base_model (as mergekit)", r->mm->name);
    if (!(r->models = pcbm_calloc(n ? n : 1, sizeof(char *))))
        return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
    /* linear merges every listed model (mergekit's has no base: the base listed is one more
     * input); the other methods take the base's task vectors (the base listed is no task) */
    bool base_listed = false, base_is_input = !strcmp(r->mm->name, "linear");
    int task_of[PCBM_MAX_TASKS + 1];
    for (unsigned i = 0; i < n; i++) {
        if (!(r->models[i] = pcbm_strdup(list[i].model)))
            return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
        r->nmodels = i + 1;
        bool is_base = r->base_model && !strcmp(list[i].model, r->base_model);
        base_listed = base_listed || is_base;
        task_of[i] = -2;
        if (is_base && !base_is_input)
            continue;
        if (r->ntasks >= PCBM_MAX_TASKS)
            return bad(c, list[i].at, "more than %d task models", PCBM_MAX_TASKS);
        task_of[i] = (int)r->ntasks;
        r->tasks[r->ntasks++] = r->models[i];
    }
    if (r->base_model && base_is_input && !base_listed)
        return bad(c, base, "%s merges the listed models only: base_model %s is not among them "
                   "(mergekit would have no weight for it); list it with a weight, or leave "
                   "base_model out", r->mm->name, r->base_model);
    if (r->ntasks == 0)
        return bad(c, root, "no model to merge besides the base");
    /* the output's vocabulary: mergekit's tokenizer.source defaults to union */
    const char *ts = tok_src ? string(tok_src) : tok_block ? "union" : NULL;
    if (ts && strcmp(ts, "base") && strcmp(ts, "union")) {
        bool known = r->base_model && !strcmp(ts, r->base_model);
        for (unsigned i = 0; i < r->nmodels && !known; i++)
            known = !strcmp(ts, r->models[i]);
        if (!known)
            return bad(c, tok_src, "tokenizer source '%s' is none of the recipe's models: give "
                       "base, union, or a model exactly as the recipe names it", ts);
    }
    if (ts && !(r->tokenizer_source = pcbm_strdup(ts)))
        return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
    /* mergekit's nuslerp: exactly two models, plus an optional base_model that is not one of
     * them (without base_model pcbmerge lays the output out on the first model and interpolates
     * the two models themselves) */
    if (r->method == PCBM_METHOD_NUSLERP && (r->ntasks != 2 || base_listed))
        return bad(c, root, "nuslerp merges exactly two models, plus an optional base_model that "
                   "is not one of them, as mergekit (got %u model%s besides the base%s)",
                   r->ntasks, r->ntasks == 1 ? "" : "s",
                   base_listed ? ", and base_model among the models" : "");
    r->layout_base = r->base_model ? r->base_model : r->models[0];
    size_t plen;
    if (adapter_of(r->layout_base, &plen))
        return bad(c, r->base_model ? base : list[0].at, "%s: a LoRA adapter (MODEL+ADAPTER) "
                   "cannot be the base: name the full model there and MODEL+ADAPTER among the "
                   "models", r->layout_base);
    for (unsigned i = 0; i < n; i++) {
        const char *ad = task_of[i] >= 0 ? adapter_of(r->models[i], &plen) : NULL;
        if (!ad)
            continue;
        if (strlen(r->layout_base) != plen || strncmp(r->models[i], r->layout_base, plen) != 0 ||
            !*ad)
            return bad(c, list[i].at, "%s: an adapter task (MODEL+ADAPTER) is applied to the "
                       "merge's base, so MODEL must be %s (pcbmerge forms the adapter's task "
                       "vector against the base)", r->models[i], r->layout_base);
        char *a = pcbm_strdup(ad);
        if (!a)
            return pcbm_fail(c->err, PCBM_ERR_NOMEM, "out of memory");
        free(r->models[i]);
        r->models[i] = a;
        r->tasks[task_of[i]] = a;
    }
    /* parameters: each model's, then the slice's and the whole merge's (one level: the first
     * entry that matches wins, in that order) */
    for (unsigned i = 0; i < n; i++) {
        char who[160];
        snprintf(who, sizeof who, "model %.120s", list[i].model);
        if (list[i].params && (st = read_params(c, list[i].params, task_of[i], who)) != PCBM_OK)
            return st;
    }
    if (slice_params && (st = read_params(c, slice_params, PCBM_PARAMS_ALL, "slice")) != PCBM_OK)
        return st;
    if (params && (st = read_params(c, params, PCBM_PARAMS_ALL, "parameters")) != PCBM_OK)
        return st;
    if (r->mm->weight_required) {
        pcbm_params_require(r->params, "weight", c->err);
        for (unsigned i = 0; i < r->ntasks; i++)
            if (!pcbm_params_has(r->params, (int)i, PCBM_P_WEIGHT))
                return bad(c, NULL, "model %s has no weight: %s requires one per model, as "
                           "mergekit does (parameters: weight: W under the model, or in the "
                           "recipe's parameters)", r->tasks[i], r->mm->name);
    }
    if (r->method == PCBM_METHOD_PCB) { /* λ_i = lambda · weight_i where a weight is given */
        for (unsigned i = 0; i < r->ntasks; i++)
            r->pcb_lambdas[i] = (r->have_lambda ? r->lambda : 1.0) *
                                (r->have_pcb_w[i] ? r->pcb_w[i] : r->have_pcb_w_all ? r->pcb_w_all : 1.0);
    }
    if (r->method == PCBM_METHOD_SLERP) { /* mergekit: t is required (ConfigParameterDef) */
        pcbm_params_require(r->params, "t", c->err);
        if (!pcbm_params_has(r->params, -1, PCBM_P_T))
            return bad(c, NULL, "slerp requires the parameter t, as mergekit does (parameters: "
                       "t: T, a gradient over the layers or filters, in the recipe's parameters)");
    }
    return PCBM_OK;
}

/* ---- public ------------------------------------------------------------------------------- */

void pcbm_recipe_free(pcbm_recipe *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->nmodels; i++)
        free(r->models[i]);
    free(r->models);
    free(r->base_model);
    free(r->chat_template);
    free(r->tokenizer_source);
    pcbm_params_free(r->params);
    free(r->text);
    free(r->name);
    free(r);
}

const char *pcbm_recipe_text(const pcbm_recipe *r) { return r ? r->text : NULL; }

pcbm_status pcbm_recipe_parse(const char *text, size_t len, const char *name, pcbm_recipe **out,
                              pcbm_error *err)
{
    *out = NULL;
    if (!name)
        name = "recipe";
    if (len > RECIPE_MAX_BYTES)
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: a recipe of %zu bytes (at most %u)", name, len,
                         RECIPE_MAX_BYTES);
    if (memchr(text, 0, len))
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: a recipe is text (it holds a NUL byte)", name);
    pcbm_recipe *r = pcbm_calloc(1, sizeof *r);
    if (!r || !(r->text = pcbm_calloc(1, len + 1)) || !(r->name = pcbm_strdup(name)) ||
        !(r->params = pcbm_params_new())) {
        pcbm_recipe_free(r);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    memcpy(r->text, text, len);
    r->out_dtype = PCBM_DTYPE_BASE;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        pcbm_recipe_free(r);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)r->text, len);
    pcbm_status st = PCBM_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        st = pcbm_fail(err, PCBM_ERR_USAGE, "%s, line %zu: not valid YAML: %s%s%s", name,
                       parser.problem_mark.line + 1, parser.problem ? parser.problem : "error",
                       parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        pcbm_recipe_free(r);
        return st;
    }
    if (!yaml_document_get_root_node(&doc))
        st = pcbm_fail(err, PCBM_ERR_USAGE, "%s: the recipe is empty", name);
    else {
        rctx c = {&doc, name, err, r};
        st = read_doc(&c);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (st != PCBM_OK) {
        pcbm_recipe_free(r);
        return st;
    }
    *out = r;
    return PCBM_OK;
}

pcbm_status pcbm_recipe_load(const char *path, pcbm_recipe **out, pcbm_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return pcbm_fail(err, PCBM_ERR_USAGE, "cannot read the recipe %s: %s", path,
                         strerror(errno));
    char *buf = malloc(RECIPE_MAX_BYTES + 1);
    size_t len = buf ? fread(buf, 1, RECIPE_MAX_BYTES + 1, f) : 0;
    bool rd_err = ferror(f);
    fclose(f);
    if (!buf)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = rd_err ? pcbm_fail(err, PCBM_ERR_IO, "cannot read the recipe %s", path)
                            : pcbm_recipe_parse(buf, len, path, out, err);
    free(buf);
    return st;
}

/* The number of layers config.json gives the base (0: unknown). */
static unsigned base_layers(const char *spec)
{
    char *dir = NULL;
    pcbm_error e;
    if (pcbm_model_resolve(spec, &dir, &e) != PCBM_OK || !dir)
        return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    free(dir);
    json_t *j = json_load_file(path, 0, NULL);
    json_t *v = j ? json_object_get(j, "num_hidden_layers") : NULL;
    unsigned n = json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 1 << 30
                     ? (unsigned)json_integer_value(v) : 0;
    json_decref(j);
    return n;
}

pcbm_status pcbm_recipe_merge_opts(const pcbm_recipe *r, pcbm_merge_opts *o, pcbm_error *err)
{
    if (r->have_range) {
        unsigned L = base_layers(r->layout_base);
        if (L && r->layer_hi != L)
            return pcbm_fail(err, PCBM_ERR_USAGE, "%s: slices that take layers [%u, %u) of the "
                             "base's %u are not supported yet: every source must take every "
                             "layer, [0, %u] (or use 'models:')", r->name, r->layer_lo,
                             r->layer_hi, L, L);
    }
    o->method = r->method;
    o->base = r->layout_base;
    o->tasks = r->tasks;
    o->ntasks = r->ntasks;
    o->params = r->params;
    o->recipe = r->text;
    o->chat_template = r->chat_template;
    o->tokenizer_source = r->tokenizer_source;
    o->semantics = PCBM_SEMANTICS_MERGEKIT;
    o->scope = r->scope;
    o->out_dtype = r->out_dtype;
    o->weights = NULL;
    o->lambdas = NULL;
    o->densities = NULL;
    /* mergekit's defaults of normalize and rescale (pcbmerge's own differ for dare_ties), as the
     * switches the methods fall back to where the recipe gives no setting */
    const pcbm_method_def *def = pcbm_method_find(r->method);
    o->normalize = def && (def->uses & PCBM_USES_NORMALIZE)
                       ? (r->mm->normalize ? PCBM_ON : PCBM_OFF) : PCBM_DEFAULT;
    o->rescale = def && (def->uses & PCBM_USES_RESCALE)
                     ? (r->mm->rescale ? PCBM_ON : PCBM_OFF) : PCBM_DEFAULT;
    if (r->method == PCBM_METHOD_PCB) {
        if (r->have_density)
            o->density = r->density;
        if (r->have_lambda)
            o->lambda = r->lambda;
        if (r->have_clamp)
            o->clamp_ratio = r->clamp_ratio;
        bool weighted = r->have_pcb_w_all;
        for (unsigned i = 0; i < r->ntasks; i++)
            weighted = weighted || r->have_pcb_w[i];
        if (weighted)
            o->lambdas = r->pcb_lambdas;
    } else {
        o->density = 1.0; /* mergekit's default density (no sparsification) */
        double v;
        /* a constant lambda / t is also the options' (the report shows it) */
        if (!pcbm_params_varies(r->params, PCBM_P_LAMBDA) &&
            pcbm_params_eval(r->params, PCBM_PARAMS_ALL, "lambda", "", 0, &v))
            o->lambda = v;
        if (!pcbm_params_varies(r->params, PCBM_P_T) &&
            pcbm_params_eval(r->params, PCBM_PARAMS_ALL, "t", "", 0, &v))
            o->t = v;
    }
    return PCBM_OK;
}

/* ---- a recipe with scaled weights (pcbmerge search --config) ------------------------------ */

typedef struct wscale {
    yaml_document_t *doc;
    const pcbm_recipe *r;
    pcbm_error *err;
    int *fid, *vid;             /* the entries of one task's weight setting: filter (0: none) */
    size_t n, cap;              /* and value node ids */
} wscale;

/* The `weight` pair of a parameters mapping, or NULL. */
static yaml_node_pair_t *weight_pair(yaml_document_t *doc, yaml_node_t *params)
{
    if (!params || params->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = params->data.mapping.pairs.start; p < params->data.mapping.pairs.top; p++) {
        const char *k = scalar(yaml_document_get_node(doc, p->key));
        if (k && !strcmp(k, "weight"))
            return p;
    }
    return NULL;
}

static bool add_entry(wscale *w, int filter, int value)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        int *f = realloc(w->fid, cap * sizeof *f);
        if (f)
            w->fid = f;
        int *v = f ? realloc(w->vid, cap * sizeof *v) : NULL;
        if (!v)
            return false;
        w->vid = v;
        w->cap = cap;
    }
    w->fid[w->n] = filter;
    w->vid[w->n++] = value;
    return true;
}

/* The entries of the weight setting of a parameters mapping (read_params' forms), appended. */
static bool weight_entries(wscale *w, int params_id)
{
    yaml_document_t *doc = w->doc;
    yaml_node_pair_t *p = weight_pair(doc, params_id ? yaml_document_get_node(doc, params_id) : NULL);
    yaml_node_t *v = p ? yaml_document_get_node(doc, p->value) : NULL;
    if (!v || is_null(v))
        return true;
    bool listed = v->type == YAML_SEQUENCE_NODE &&
                  v->data.sequence.items.top > v->data.sequence.items.start &&
                  yaml_document_get_node(doc, v->data.sequence.items.start[0])->type == YAML_MAPPING_NODE;
    if (v->type != YAML_MAPPING_NODE && !listed)
        return add_entry(w, 0, p->value);
    yaml_node_item_t one = p->value, *it = &one, *top = &one + 1;
    if (listed)
        it = v->data.sequence.items.start, top = v->data.sequence.items.top;
    for (; it < top; it++) {
        yaml_node_t *m = yaml_document_get_node(doc, *it);
        int f = 0, val = 0;
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++) {
            const char *k = scalar(yaml_document_get_node(doc, q->key));
            yaml_node_t *x = yaml_document_get_node(doc, q->value);
            if (k && !strcmp(k, "filter") && !is_null(x))
                f = q->value;
            else if (k && !strcmp(k, "value"))
                val = q->value;
        }
        if (!add_entry(w, f, val))
            return false;
    }
    return true;
}

/* The shortest text that reads back as v, with a '.' before an exponent (YAML 1.1 floats). */
static void fmt_number(double v, char *b, size_t len)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(b, len, "%.*g", p, v);
        if (strtod(b, NULL) == v)
            break;
    }
    char *e = strchr(b, 'e');
    if (e && !memchr(b, '.', (size_t)(e - b)) && strlen(b) + 3 < len) {
        memmove(e + 2, e, strlen(e) + 1);
        e[0] = '.';
        e[1] = '0';
    }
}

static int add_str(yaml_document_t *doc, const char *s)
{
    return yaml_document_add_scalar(doc, NULL, (yaml_char_t *)s, (int)strlen(s),
                                    YAML_PLAIN_SCALAR_STYLE);
}

/* A new node: node vid (a number or a gradient of numbers) times c; 0 on an error. Node ids,
 * not pointers: adding nodes moves the node array. */
static int scaled_node(wscale *w, int vid, double c, const char *model)
{
    yaml_document_t *doc = w->doc;
    yaml_node_t *v = vid ? yaml_document_get_node(doc, vid) : NULL;
    double d;
    char b[64];
    if (v && v->type == YAML_SCALAR_NODE && number(v, &d)) {
        fmt_number(d * c, b, sizeof b);
        return add_str(doc, b);
    }
    size_t nv = v && v->type == YAML_SEQUENCE_NODE
                    ? (size_t)(v->data.sequence.items.top - v->data.sequence.items.start) : 0;
    if (nv == 0) {
        pcbm_fail(w->err, PCBM_ERR_USAGE, "%s: model %s: a weight that is not a number or a "
                  "gradient of numbers cannot be scaled by the search: give numbers", w->r->name,
                  model);
        return 0;
    }
    int *ids = pcbm_calloc(nv, sizeof *ids);
    if (!ids) {
        pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
        return 0;
    }
    for (size_t k = 0; k < nv; k++) {
        v = yaml_document_get_node(doc, vid);
        yaml_node_t *x = yaml_document_get_node(doc, v->data.sequence.items.start[k]);
        if (!x || !number(x, &d)) {
            free(ids);
            pcbm_fail(w->err, PCBM_ERR_USAGE, "%s: model %s: a weight gradient with a value that "
                      "is not a number cannot be scaled by the search: give numbers", w->r->name,
                      model);
            return 0;
        }
        fmt_number(d * c, b, sizeof b);
        ids[k] = add_str(doc, b);
    }
    int s = yaml_document_add_sequence(doc, NULL, YAML_FLOW_SEQUENCE_STYLE);
    for (size_t k = 0; s && k < nv; k++)
        if (!ids[k] || !yaml_document_append_sequence_item(doc, s, ids[k]))
            s = 0;
    free(ids);
    if (!s)
        pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
    return s;
}

/* The scaled weight setting of one task from w's entries, each value times c; a single entry
 * without filter stays a plain value. */
static int scaled_setting(wscale *w, double c, const char *model)
{
    yaml_document_t *doc = w->doc;
    if (w->n == 1 && !w->fid[0])
        return scaled_node(w, w->vid[0], c, model);
    int seq = yaml_document_add_sequence(doc, NULL, YAML_BLOCK_SEQUENCE_STYLE);
    for (size_t k = 0; seq && k < w->n; k++) {
        int val = scaled_node(w, w->vid[k], c, model);
        if (!val)
            return 0;
        int m = yaml_document_add_mapping(doc, NULL, YAML_BLOCK_MAPPING_STYLE);
        if (!m || (w->fid[k] && !yaml_document_append_mapping_pair(doc, m, add_str(doc, "filter"), w->fid[k])) ||
            !yaml_document_append_mapping_pair(doc, m, add_str(doc, "value"), val) ||
            !yaml_document_append_sequence_item(doc, seq, m))
            seq = 0;
    }
    if (!seq)
        pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
    return seq;
}

/* A copy of mapping map_id (0: none) with `key: value_id` set (replaced or appended); the
 * original stays as it is (an alias may share it). 0 when out of memory. */
static int with_pair(yaml_document_t *doc, int map_id, const char *key, int value_id)
{
    int m = yaml_document_add_mapping(doc, NULL, YAML_BLOCK_MAPPING_STYLE);
    if (!m)
        return 0;
    bool set = false;
    yaml_node_t *old = map_id ? yaml_document_get_node(doc, map_id) : NULL;
    size_t np = old && old->type == YAML_MAPPING_NODE
                    ? (size_t)(old->data.mapping.pairs.top - old->data.mapping.pairs.start) : 0;
    for (size_t k = 0; k < np; k++) {
        yaml_node_pair_t pr = yaml_document_get_node(doc, map_id)->data.mapping.pairs.start[k];
        const char *ks = scalar(yaml_document_get_node(doc, pr.key));
        if (ks && !strcmp(ks, key)) { /* a key of its own (an anchored one would be shared) */
            pr.key = add_str(doc, key);
            pr.value = value_id;
            set = true;
        }
        if (!pr.key)
            return 0;
        if (!yaml_document_append_mapping_pair(doc, m, pr.key, pr.value))
            return 0;
    }
    if (!set) {
        int k = add_str(doc, key);
        if (!k || !yaml_document_append_mapping_pair(doc, m, k, value_id))
            return 0;
    }
    return m;
}

/* Drop the `weight` pair of a parameters mapping (folded into every task's own). */
static void drop_weight(yaml_document_t *doc, int params_id)
{
    yaml_node_t *params = params_id ? yaml_document_get_node(doc, params_id) : NULL;
    yaml_node_pair_t *p = weight_pair(doc, params);
    if (!p)
        return;
    memmove(p, p + 1, (size_t)(params->data.mapping.pairs.top - p - 1) * sizeof *p);
    params->data.mapping.pairs.top--;
}

static int emit_to(void *data, unsigned char *buf, size_t size)
{
    return fwrite(buf, 1, size, (FILE *)data) == size;
}

/* The id of the value of `key` in mapping m (0: none). */
static int child_id(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return 0;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(yaml_document_get_node(doc, p->key));
        if (k && !strcmp(k, key))
            return p->value;
    }
    return 0;
}

static yaml_node_t *child(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
    int id = child_id(doc, m, key);
    return id ? yaml_document_get_node(doc, id) : NULL;
}

int pcbm_recipe_has_weights(const pcbm_recipe *r)
{
    return r && in_list(r->mm->per_model, "weight");
}

/* Rewrite the document: every task's weight setting scaled by c[task]. Node ids throughout:
 * adding nodes moves the node array. */
static pcbm_status scale_doc(wscale *w, const double *c)
{
    yaml_document_t *doc = w->doc;
    const pcbm_recipe *r = w->r;
    yaml_node_t *root = yaml_document_get_root_node(doc);
    int list = child_id(doc, root, "models"), gparams = child_id(doc, root, "parameters");
    int sparams = 0;
    yaml_node_t *ln = list ? yaml_document_get_node(doc, list) : NULL;
    if (!ln || ln->type != YAML_SEQUENCE_NODE) { /* one slice (read_doc checked the forms) */
        yaml_node_t *slices = child(doc, root, "slices");
        yaml_node_t *sl = yaml_document_get_node(doc, slices->data.sequence.items.start[0]);
        sparams = child_id(doc, sl, "parameters");
        list = child_id(doc, sl, "sources");
    }
    size_t nm = (size_t)(yaml_document_get_node(doc, list)->data.sequence.items.top -
                         yaml_document_get_node(doc, list)->data.sequence.items.start);
    bool base_is_input = !strcmp(r->mm->name, "linear");
    unsigned task = 0;
    for (size_t i = 0; i < nm && task < r->ntasks; i++) {
        int mid = yaml_document_get_node(doc, list)->data.sequence.items.start[i];
        yaml_node_t *m = yaml_document_get_node(doc, mid);
        const char *model = scalar(child(doc, m, "model"));
        if (r->base_model && model && !strcmp(model, r->base_model) && !base_is_input)
            continue; /* no task */
        int own = child_id(doc, m, "parameters");
        w->n = 0;
        if (!weight_entries(w, own) || !weight_entries(w, sparams) || !weight_entries(w, gparams))
            return pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < w->n; k++) { /* an entry for every tensor ends the lookup */
            const char *f = w->fid[k] ? scalar(yaml_document_get_node(doc, w->fid[k])) : NULL;
            if (!w->fid[k] || (f && !strcmp(f, "*")))
                w->n = k + 1;
        }
        char b[64];
        int val;
        if (w->n == 0) { /* pcb without a weight: 1 */
            fmt_number(c[task], b, sizeof b);
            val = add_str(doc, b);
        } else {
            val = scaled_setting(w, c[task], model ? model : "?");
        }
        if (!val)
            return w->err->status != PCBM_OK ? w->err->status
                                             : pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
        /* new mappings for the parameters and the entry (aliases may share the old ones) */
        int np = with_pair(doc, own, "weight", val);
        int nmid = np ? with_pair(doc, mid, "parameters", np) : 0;
        if (!nmid)
            return pcbm_fail(w->err, PCBM_ERR_NOMEM, "out of memory");
        yaml_document_get_node(doc, list)->data.sequence.items.start[i] = nmid;
        task++;
    }
    drop_weight(doc, sparams);
    drop_weight(doc, gparams);
    return PCBM_OK;
}

pcbm_status pcbm_recipe_scaled(const pcbm_recipe *r, const double *c, unsigned n, char **text,
                               pcbm_error *err)
{
    *text = NULL;
    if (!pcbm_recipe_has_weights(r))
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: merge_method %s has no per-model weight to "
                         "scale", r ? r->name : "recipe", r ? r->mm->name : "?");
    if (n != r->ntasks)
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: %u coefficients for %u task models", r->name,
                         n, r->ntasks);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)r->text, strlen(r->text));
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_parser_delete(&parser);
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s: not valid YAML", r->name);
    }
    yaml_parser_delete(&parser);
    pcbm_error_clear(err);
    wscale w = {&doc, r, err, NULL, NULL, 0, 0};
    pcbm_status st = scale_doc(&w, c);
    free(w.fid);
    free(w.vid);
    if (st != PCBM_OK) {
        yaml_document_delete(&doc);
        return st;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        yaml_document_delete(&doc);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    fputs("# pcbmerge search: ", f);
    for (const char *p = r->name; *p; p++) /* one comment line */
        fputc(*p == '\n' ? ' ' : *p, f);
    fputs(" with each model's weight multiplied by c = [", f);
    for (unsigned i = 0; i < n; i++) {
        char b[64];
        fmt_number(c[i], b, sizeof b);
        fprintf(f, "%s%s", i ? ", " : "", b);
    }
    fputs("]\n", f);
    yaml_emitter_t em;
    bool ok = yaml_emitter_initialize(&em);
    if (ok) {
        yaml_emitter_set_output(&em, emit_to, f);
        yaml_emitter_set_unicode(&em, 1);
        yaml_emitter_set_width(&em, -1);
        ok = yaml_emitter_open(&em);
        if (!ok)
            yaml_document_delete(&doc);
        /* yaml_emitter_dump takes the document (deleted in every case) */
        ok = ok && yaml_emitter_dump(&em, &doc) && yaml_emitter_close(&em) && yaml_emitter_flush(&em);
        yaml_emitter_delete(&em);
    } else {
        yaml_document_delete(&doc);
    }
    if (fclose(f) != 0 || !ok || !buf) {
        free(buf);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s: cannot write the scaled recipe", r->name);
    }
    *text = buf;
    return PCBM_OK;
}

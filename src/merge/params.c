/* SPDX-License-Identifier: Apache-2.0 */
/*
 * params.c — the value of a method parameter for one tensor and task: from the options' scalars
 * (the command line), or from a recipe's per-tensor settings (o->params: gradients over the
 * layers, filters on tensor names) with mergekit's semantics (config.py evaluate_setting and
 * ConfigReader.parameter; plan.py for the layer position t). pcbm_tparam is called per tile: a
 * worker resolves a tensor's values once, into a small cache of its own (thread-local, a few
 * KiB), so a tile costs a comparison; nothing is held per tensor.
 */
#include "method.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[PCBM_P_COUNT] = {
    [PCBM_P_WEIGHT] = "weight",
    [PCBM_P_DENSITY] = "density",
    [PCBM_P_GAMMA] = "gamma",
    [PCBM_P_EPSILON] = "epsilon",
    [PCBM_P_LAMBDA] = "lambda",
    [PCBM_P_T] = "t",
    [PCBM_P_SELECT_TOPK] = "select_topk",
    [PCBM_P_NORMALIZE] = "normalize",
    [PCBM_P_RESCALE] = "rescale",
    [PCBM_P_NUSLERP_FLATTEN] = "nuslerp_flatten",
    [PCBM_P_NUSLERP_ROW_WISE] = "nuslerp_row_wise",
    [PCBM_P_FILTER_WISE] = "filter_wise",
};

const char *pcbm_param_name(pcbm_param_id p)
{
    return (unsigned)p < PCBM_P_COUNT ? names[p] : "unknown";
}

pcbm_param_id pcbm_param_parse(const char *name)
{
    for (unsigned p = 0; p < PCBM_P_COUNT; p++)
        if (!strcmp(name, names[p]))
            return (pcbm_param_id)p;
    return PCBM_P_COUNT;
}

static double on_off(int v, bool dflt)
{
    return (v == PCBM_ON || (v != PCBM_OFF && dflt)) ? 1.0 : 0.0;
}

/* The options' value (the same for every tensor). */
static double from_opts(const pcbm_merge_opts *o, unsigned task, pcbm_param_id p)
{
    switch (p) {
    case PCBM_P_WEIGHT: return pcbm_task_weight(o, task);
    case PCBM_P_DENSITY: return pcbm_task_density(o, task);
    case PCBM_P_GAMMA: return pcbm_task_gamma(o, task);
    case PCBM_P_EPSILON: return pcbm_task_epsilon(o, task);
    case PCBM_P_LAMBDA: return o->lambda;
    case PCBM_P_T: return o->t;
    case PCBM_P_SELECT_TOPK: return o->select_topk;
    case PCBM_P_NORMALIZE: return pcbm_method_normalizes(o) ? 1.0 : 0.0;
    case PCBM_P_RESCALE: return pcbm_method_rescales(o) ? 1.0 : 0.0;
    case PCBM_P_NUSLERP_FLATTEN: return on_off(o->nuslerp_flatten, true);
    case PCBM_P_NUSLERP_ROW_WISE: return on_off(o->nuslerp_row_wise, false);
    case PCBM_P_FILTER_WISE: return on_off(o->filter_wise, false);
    default: return NAN;
    }
}

/* ---- settings ----------------------------------------------------------------------------- */

typedef struct pp_entry {
    char *filter;       /* NULL: every tensor */
    double *v;
    size_t n;
    bool step;          /* element int(t·(n−1)), not interpolated */
} pp_entry;

typedef struct pp_setting {
    pp_entry *e;
    size_t n;
} pp_setting;

/* set[0]: the whole merge's; set[1 + i]: task i's. */
struct pcbm_params {
    pp_setting set[PCBM_MAX_TASKS + 1][PCBM_P_COUNT];
    unsigned required;  /* bit p: parameter p must resolve for every task */
};

pcbm_params *pcbm_params_new(void)
{
    return calloc(1, sizeof(pcbm_params));
}

void pcbm_params_free(pcbm_params *p)
{
    if (!p)
        return;
    for (unsigned l = 0; l <= PCBM_MAX_TASKS; l++)
        for (unsigned k = 0; k < PCBM_P_COUNT; k++) {
            for (size_t e = 0; e < p->set[l][k].n; e++) {
                free(p->set[l][k].e[e].filter);
                free(p->set[l][k].e[e].v);
            }
            free(p->set[l][k].e);
        }
    free(p);
}

bool pcbm_param_per_task(pcbm_param_id p)
{
    return p < PCBM_P_LAMBDA;
}

pcbm_status pcbm_params_add(pcbm_params *p, int task, const char *name, const char *filter,
                            const double *values, size_t n, int step, pcbm_error *err)
{
    pcbm_param_id id = name ? pcbm_param_parse(name) : PCBM_P_COUNT;
    if (!p || id == PCBM_P_COUNT)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown parameter `%s`", name ? name : "(null)");
    if (task != PCBM_PARAMS_ALL && (task < 0 || task >= PCBM_MAX_TASKS))
        return pcbm_fail(err, PCBM_ERR_USAGE, "parameter %s: task %d is out of range", name, task);
    if (task != PCBM_PARAMS_ALL && !pcbm_param_per_task(id))
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s is a parameter of the whole merge, not of one "
                         "model: give it in the recipe's `parameters`", name);
    if (n == 0 || !values)
        return pcbm_fail(err, PCBM_ERR_USAGE, "parameter %s: an empty list of values", name);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(values[i]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "parameter %s: value %zu is %g, not a finite "
                             "number", name, i + 1, values[i]);
    pp_setting *s = &p->set[task + 1][id];
    pp_entry *ne = realloc(s->e, (s->n + 1) * sizeof *ne);
    if (!ne)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    s->e = ne;
    pp_entry *e = &ne[s->n];
    memset(e, 0, sizeof *e);
    e->v = malloc(n * sizeof(double));
    e->filter = filter ? strdup(filter) : NULL;
    if (!e->v || (filter && !e->filter)) {
        free(e->v);
        free(e->filter);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    memcpy(e->v, values, n * sizeof(double));
    e->n = n;
    e->step = step != 0;
    s->n++;
    return PCBM_OK;
}

pcbm_status pcbm_params_require(pcbm_params *p, const char *name, pcbm_error *err)
{
    pcbm_param_id id = name ? pcbm_param_parse(name) : PCBM_P_COUNT;
    if (!p || id == PCBM_P_COUNT)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown parameter `%s`", name ? name : "(null)");
    p->required |= 1u << id;
    return PCBM_OK;
}

/* mergekit's evaluate_setting for one entry. */
static double entry_value(const pp_entry *e, double t)
{
    if (e->n == 1)
        return e->v[0];
    double scaled = t * (double)(e->n - 1);
    size_t i0 = (size_t)scaled;
    if (i0 > e->n - 1)
        i0 = e->n - 1;
    if (e->step)
        return e->v[i0];
    size_t i1 = i0 + 1 < e->n ? i0 + 1 : e->n - 1;
    double frac = scaled - (double)i0;
    return (1 - frac) * e->v[i0] + frac * e->v[i1];
}

static bool setting_value(const pp_setting *s, const char *tensor, double t, double *out)
{
    for (size_t k = 0; k < s->n; k++) {
        const pp_entry *e = &s->e[k];
        if (!e->filter || !strcmp(e->filter, "*") || (tensor && strstr(tensor, e->filter))) {
            *out = entry_value(e, t);
            return true;
        }
    }
    return false;
}

/* The task's setting, then the whole merge's. */
static bool params_value(const pcbm_params *pp, int task, pcbm_param_id id, const char *tensor,
                         double t, double *out)
{
    if (task >= 0 && task < PCBM_MAX_TASKS && pcbm_param_per_task(id) &&
        setting_value(&pp->set[task + 1][id], tensor, t, out))
        return true;
    return setting_value(&pp->set[0][id], tensor, t, out);
}

int pcbm_params_eval(const pcbm_params *p, int task, const char *name, const char *tensor,
                     double t, double *value)
{
    pcbm_param_id id = name ? pcbm_param_parse(name) : PCBM_P_COUNT;
    if (!p || id == PCBM_P_COUNT)
        return 0;
    return params_value(p, task, id, tensor, t, value) ? 1 : 0;
}

/* ---- layers ------------------------------------------------------------------------------- */

long pcbm_layer_index(const char *tensor)
{
    static const char *const keys[] = {"layers.", "h.", "blocks."};
    for (const char *s = tensor; s && *s; s++) {
        if (s != tensor && s[-1] != '.')
            continue;
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            size_t kl = strlen(keys[k]);
            if (strncmp(s, keys[k], kl) || !isdigit((unsigned char)s[kl]))
                continue;
            const char *d = s + kl;
            long v = 0;
            while (isdigit((unsigned char)*d) && v < 100000000)
                v = v * 10 + (*d++ - '0');
            if (*d == '.')
                return v;
        }
    }
    return -1;
}

double pcbm_layer_t(const char *tensor, unsigned nlayers)
{
    long i = pcbm_layer_index(tensor);
    if (i < 0)
        return 0.0;
    if (nlayers <= 1)
        return 1.0;
    return (double)i / (double)(nlayers - 1);
}

/* The base's layers: config.json num_hidden_layers (n_layer, num_layers), else 1 + the highest
 * layer index among the tensor names. */
static unsigned count_layers(const pcbm_layout *p)
{
    const pcbm_model *base = p->models[0];
    if (base && base->is_dir) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", base->dir);
        json_t *j = json_load_file(path, 0, NULL);
        static const char *const keys[] = {"num_hidden_layers", "n_layer", "num_layers"};
        json_int_t n = 0;
        for (size_t k = 0; j && !n && k < sizeof keys / sizeof *keys; k++) {
            json_t *v = json_object_get(j, keys[k]);
            if (!v) {
                json_t *tc = json_object_get(j, "text_config");
                v = tc ? json_object_get(tc, keys[k]) : NULL;
            }
            if (json_is_integer(v) && json_integer_value(v) > 0)
                n = json_integer_value(v);
        }
        json_decref(j);
        if (n > 0 && n < (json_int_t)1 << 30)
            return (unsigned)n;
    }
    long hi = -1;
    for (size_t t = 0; t < p->nt; t++) {
        long i = pcbm_layer_index(p->t[t].name);
        if (i > hi)
            hi = i;
    }
    return hi >= 0 ? (unsigned)(hi + 1) : 1;
}

/* ---- per merge ---------------------------------------------------------------------------- */

static _Atomic uint64_t bind_counter;

pcbm_status pcbm_params_check(const pcbm_merge_opts *o, const pcbm_layout *p, pcbm_error *err)
{
    const pcbm_params *pp = o->params;
    if (!pp || !pp->required)
        return PCBM_OK;
    unsigned nlayers = count_layers(p);
    /* mergekit refuses a required parameter that some tensor's lookup does not find */
    for (size_t t = 0; t < p->nt; t++) {
        const pcbm_tlayout *tl = &p->t[t];
        if (tl->kind != PCBM_T_MERGE)
            continue;
        double lt = pcbm_layer_t(tl->name, nlayers), v;
        for (unsigned k = 0; k < PCBM_P_COUNT; k++) {
            if (!(pp->required & (1u << k)))
                continue;
            if (!pcbm_param_per_task((pcbm_param_id)k)) { /* a whole-merge parameter */
                if (!params_value(pp, -1, (pcbm_param_id)k, tl->name, lt, &v))
                    return pcbm_fail(err, PCBM_ERR_USAGE, "the parameter %s is missing for tensor "
                                     "%s (%s requires it, as mergekit does): give it in the "
                                     "recipe's parameters, with a last entry without filter",
                                     names[k], tl->name, pcbm_method_name(o->method));
                continue;
            }
            for (unsigned i = 0; i < o->ntasks; i++)
                if (!params_value(pp, (int)i, (pcbm_param_id)k, tl->name, lt, &v))
                    return pcbm_fail(err, PCBM_ERR_USAGE, "model %s: the parameter %s is missing "
                                     "for tensor %s (%s requires it, as mergekit does): give it "
                                     "in the model's parameters or the recipe's parameters, "
                                     "with a last entry without filter", o->tasks[i],
                                     names[k], tl->name, pcbm_method_name(o->method));
        }
    }
    return PCBM_OK;
}

pcbm_status pcbm_params_bind(pcbm_mctx *mc, pcbm_error *err)
{
    mc->params_gen = atomic_fetch_add(&bind_counter, 1) + 1;
    mc->nlayers = 1;
    if (!mc->o->params)
        return PCBM_OK;
    mc->nlayers = count_layers(mc->layout);
    return pcbm_params_check(mc->o, mc->layout, err);
}

/* A worker's values of its current tensor. */
typedef struct pp_cache {
    uint64_t gen;
    size_t tensor;
    double t;
    double v[PCBM_MAX_TASKS + 1][PCBM_P_COUNT];
    uint8_t have[PCBM_MAX_TASKS + 1][PCBM_P_COUNT];
} pp_cache;

static _Thread_local pp_cache cache;

double pcbm_tparam(const pcbm_mctx *mc, size_t tensor, unsigned task, pcbm_param_id p)
{
    const pcbm_params *pp = mc->o->params;
    if (!pp || (unsigned)p >= PCBM_P_COUNT)
        return from_opts(mc->o, task, p);
    unsigned slot = pcbm_param_per_task(p) && task < PCBM_MAX_TASKS ? task + 1 : 0;
    pp_cache *c = &cache;
    if (c->gen != mc->params_gen || c->tensor != tensor) {
        c->gen = mc->params_gen;
        c->tensor = tensor;
        c->t = pcbm_layer_t(mc->layout->t[tensor].name, mc->nlayers);
        memset(c->have, 0, sizeof c->have);
    }
    if (!c->have[slot][p]) {
        double v;
        if (!params_value(pp, slot ? (int)slot - 1 : -1, p, mc->layout->t[tensor].name, c->t, &v))
            v = from_opts(mc->o, task, p);
        c->v[slot][p] = v;
        c->have[slot][p] = 1;
    }
    return c->v[slot][p];
}

/* ---- as JSON (the split plan, the report) ------------------------------------------------- */

static json_t *setting_json(const pp_setting *s)
{
    json_t *a = json_array();
    for (size_t k = 0; k < s->n; k++) {
        json_t *v = json_array();
        for (size_t i = 0; i < s->e[k].n; i++)
            json_array_append_new(v, json_real(s->e[k].v[i]));
        json_t *e = json_object();
        json_object_set_new(e, "filter", s->e[k].filter ? json_string(s->e[k].filter) : json_null());
        json_object_set_new(e, "value", v);
        if (s->e[k].step)
            json_object_set_new(e, "step", json_true());
        json_array_append_new(a, e);
    }
    return a;
}

static json_t *level_json(const pcbm_params *pp, unsigned l)
{
    json_t *o = json_object();
    for (unsigned p = 0; p < PCBM_P_COUNT; p++)
        if (pp->set[l][p].n)
            json_object_set_new(o, names[p], setting_json(&pp->set[l][p]));
    return o;
}

json_t *pcbm_params_json(const pcbm_params *pp, unsigned ntasks)
{
    json_t *j = json_object();
    json_object_set_new(j, "parameters", level_json(pp, 0));
    json_t *m = json_array();
    for (unsigned i = 0; i < ntasks && i < PCBM_MAX_TASKS; i++)
        json_array_append_new(m, level_json(pp, i + 1));
    json_object_set_new(j, "models", m);
    json_t *req = json_array();
    for (unsigned p = 0; p < PCBM_P_COUNT; p++)
        if (pp->required & (1u << p))
            json_array_append_new(req, json_string(names[p]));
    json_object_set_new(j, "required", req);
    return j;
}

static pcbm_status level_from(pcbm_params *pp, int task, json_t *o, pcbm_error *err)
{
    const char *key;
    json_t *set;
    json_object_foreach(o, key, set) {
        size_t k;
        json_t *e;
        json_array_foreach(set, k, e) {
            json_t *f = json_object_get(e, "filter"), *v = json_object_get(e, "value");
            size_t n = json_array_size(v);
            double vals[4096];
            if (!json_is_array(v) || n == 0 || n > 4096)
                return pcbm_fail(err, PCBM_ERR_FORMAT, "parameter %s: a malformed entry", key);
            for (size_t i = 0; i < n; i++)
                vals[i] = json_number_value(json_array_get(v, i));
            pcbm_status st = pcbm_params_add(pp, task, key, json_string_value(f), vals, n,
                                             json_is_true(json_object_get(e, "step")), err);
            if (st != PCBM_OK)
                return st;
        }
    }
    return PCBM_OK;
}

pcbm_status pcbm_params_from_json(json_t *j, pcbm_params **out, pcbm_error *err)
{
    pcbm_params *pp = pcbm_params_new();
    if (!pp)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = level_from(pp, PCBM_PARAMS_ALL, json_object_get(j, "parameters"), err);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "models"), i, m) {
        if (st == PCBM_OK)
            st = level_from(pp, (int)i, m, err);
    }
    json_array_foreach(json_object_get(j, "required"), i, m) {
        if (st == PCBM_OK)
            st = pcbm_params_require(pp, json_string_value(m), err);
    }
    if (st != PCBM_OK) {
        pcbm_params_free(pp);
        return st;
    }
    *out = pp;
    return PCBM_OK;
}

/* Does any setting of p vary per tensor (a gradient or a filter)? */
bool pcbm_params_varies(const pcbm_params *pp, pcbm_param_id p)
{
    for (unsigned l = 0; pp && l <= PCBM_MAX_TASKS; l++)
        for (size_t k = 0; k < pp->set[l][p].n; k++) {
            const pp_entry *e = &pp->set[l][p].e[k];
            if (e->n > 1 || (e->filter && strcmp(e->filter, "*")))
                return true;
        }
    return false;
}

bool pcbm_params_has(const pcbm_params *pp, int task, pcbm_param_id p)
{
    if (!pp || (unsigned)p >= PCBM_P_COUNT)
        return false;
    if (task >= 0 && task < PCBM_MAX_TASKS && pp->set[task + 1][p].n)
        return true;
    return pp->set[0][p].n > 0;
}

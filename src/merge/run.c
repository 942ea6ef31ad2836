/* SPDX-License-Identifier: Apache-2.0 */
/*
 * run.c — pcbm_merge(): the whole merge as a user runs it. Validates options, opens and
 * cross-checks every model before any heavy I/O, sizes the engine from --mem, runs the method's
 * passes into a partial directory, writes the index, side files and merge_report.json, and
 * publishes OUT with one atomic rename. A failed merge leaves nothing that looks like a model.
 */
#include "method.h"
#include "run_internal.h"
#include "lora_delta.h"
#include "../format/adapter.h"

#include "../sched/budget.h"
#include "../sched/ident.h"
#include "../writer/card.h"
#include "../writer/manifest.h"

#include <fcntl.h>
#include <jansson.h>
#include <xxhash.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>



void pcbm_merge_opts_init(pcbm_merge_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = (uint32_t)sizeof *o;
    o->method = PCBM_METHOD_PCB;
    o->density = 0.1;
    o->lambda = 1.0;
    o->clamp_ratio = 1e-4;
    o->scope = PCBM_SCOPE_AUTO;
    o->mem_bytes = 1ull << 30;
    o->io = PCBM_IO_AUTO;
    o->shard_bytes = 5000000000ull;
    o->out_dtype = PCBM_DTYPE_BASE;
    o->t = NAN;
    o->gamma = 0.01;
    o->epsilon = 0.15;
    o->select_topk = 1.0;
}

bool pcbm_method_has_stats(const pcbm_merge_opts *o)
{
    const pcbm_method_def *d = pcbm_method_for(o);
    return d && d->nrounds > 0;
}

/* A coefficient the float32 kernels can use: finite, and finite once rounded to float32. */
static bool usable_coef(double v)
{
    return isfinite(v) && fabs(v) <= FLT_MAX;
}

static pcbm_status check_coefs(const char *name, const double *v, unsigned n, pcbm_error *err)
{
    for (unsigned i = 0; v && i < n; i++)
        if (!usable_coef(v[i]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "`%s` value %u is %g: every coefficient must "
                             "be a finite number of at most %g in magnitude (a float32)", name,
                             i + 1, v[i], (double)FLT_MAX);
    return PCBM_OK;
}

static pcbm_status check_coefficients(const pcbm_merge_opts *o, pcbm_error *err)
{
    if (!usable_coef(o->lambda))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`lambda` is %g: it must be a finite number of at "
                         "most %g in magnitude (a float32)", o->lambda, (double)FLT_MAX);
    pcbm_status st = check_coefs("lambdas", o->lambdas, o->ntasks, err);
    if (st == PCBM_OK)
        st = check_coefs("weights", o->weights, o->ntasks, err);
    for (unsigned i = 0; st == PCBM_OK && o->densities && i < o->ntasks; i++)
        if (!(o->densities[i] > 0.0 && o->densities[i] <= 1.0))
            st = pcbm_fail(err, PCBM_ERR_USAGE, "`densities` value %u is %g: every density must "
                           "be in (0, 1]", i + 1, o->densities[i]);
    /* with `normalize`, the summed weights divide every element of linear, task_arithmetic
     * and dare_linear (ties and dare_ties divide by the agreeing ones' sum, or 1) */
    bool divides = (o->method == PCBM_METHOD_LINEAR || o->method == PCBM_METHOD_TASK_ARITHMETIC ||
                    o->method == PCBM_METHOD_DARE_LINEAR) && pcbm_method_normalizes(o);
    if (st != PCBM_OK || !o->weights || !divides)
        return st;
    double s = 0;
    for (unsigned i = 0; i < o->ntasks; i++)
        s += o->weights[i];
    if (!(s != 0.0) || !usable_coef(s))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`weights` must have a non-zero sum that is a "
                         "finite float32 (got %g): %s divides by it", s,
                         pcbm_method_name(o->method));
    return PCBM_OK;
}

/* The options one method or another reads: given to a method that does not read it, each is
 * refused, naming the methods that do (method.h's `uses`). */
static const struct {
    unsigned use;
    const char *field;
} method_params[] = {
    {PCBM_USES_LAMBDAS, "lambdas"},     {PCBM_USES_WEIGHTS, "weights"},
    {PCBM_USES_DENSITIES, "densities"}, {PCBM_USES_NORMALIZE, "normalize"},
    {PCBM_USES_RESCALE, "rescale"},     {PCBM_USES_T, "t"},
    {PCBM_USES_SELECT_TOPK, "select_topk"}, {PCBM_USES_NUSLERP, "nuslerp_flatten/nuslerp_row_wise"},
    {PCBM_USES_FILTER_WISE, "filter_wise"}, {PCBM_USES_GAMMA, "gammas"},
    {PCBM_USES_EPSILON, "epsilons"},
};

static bool param_given(const pcbm_merge_opts *o, unsigned use)
{
    switch (use) {
    case PCBM_USES_LAMBDAS: return o->lambdas != NULL;
    case PCBM_USES_WEIGHTS: return o->weights != NULL;
    case PCBM_USES_DENSITIES: return o->densities != NULL;
    case PCBM_USES_NORMALIZE: return o->normalize != PCBM_DEFAULT;
    case PCBM_USES_RESCALE: return o->rescale != PCBM_DEFAULT;
    case PCBM_USES_T: return !isnan(o->t);
    case PCBM_USES_SELECT_TOPK: return o->select_topk != 1.0;
    case PCBM_USES_NUSLERP:
        return o->nuslerp_flatten != PCBM_DEFAULT || o->nuslerp_row_wise != PCBM_DEFAULT;
    case PCBM_USES_FILTER_WISE: return o->filter_wise != PCBM_DEFAULT;
    case PCBM_USES_GAMMA: return o->gammas != NULL;
    case PCBM_USES_EPSILON: return o->epsilons != NULL;
    default: return false;
    }
}

static pcbm_status check_method_params(const pcbm_merge_opts *o, pcbm_error *err)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    if ((o->normalize != PCBM_DEFAULT && o->normalize != PCBM_ON && o->normalize != PCBM_OFF) ||
        (o->rescale != PCBM_DEFAULT && o->rescale != PCBM_ON && o->rescale != PCBM_OFF))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`normalize` and `rescale` are PCBM_DEFAULT, "
                         "PCBM_ON or PCBM_OFF");
    for (size_t k = 0; k < sizeof method_params / sizeof *method_params; k++) {
        unsigned use = method_params[k].use;
        if (!param_given(o, use) || (m->uses & use))
            continue;
        char who[160] = "";
        size_t u = 0;
        for (unsigned x = 0; x < PCBM_METHOD_COUNT; x++) {
            const pcbm_method_def *d = pcbm_method_find((pcbm_method)x);
            if (d && (d->uses & use) && u < sizeof who)
                u += (size_t)snprintf(who + u, sizeof who - u, "%s%s", u ? ", " : "", d->name);
        }
        return pcbm_fail(err, PCBM_ERR_USAGE, "`%s` does not apply to the %s method (methods "
                         "that take it: %s)", method_params[k].field, m->name, who);
    }
    if (o->lambdas && (o->weights || o->normalize != PCBM_DEFAULT))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`lambdas` (pcbmerge's per-task coefficients) "
                         "excludes mergekit's `%s`: give `weights` (and `lambda`, which scales "
                         "the weighted sum) or `lambdas`", o->weights ? "weights" : "normalize");
    return PCBM_OK;
}

/* mergekit's sparsifying methods in global scope: one cut per task over the whole model, so the
 * parameters that shape it (density, gamma, epsilon, rescale) cannot vary per tensor. */
static pcbm_status check_global_params(const pcbm_merge_opts *o, pcbm_error *err)
{
    static const pcbm_param_id fixed[] = {PCBM_P_DENSITY, PCBM_P_GAMMA, PCBM_P_EPSILON,
                                          PCBM_P_RESCALE};
    for (unsigned k = 0; k < sizeof fixed / sizeof *fixed; k++)
        if (o->params && pcbm_params_varies(o->params, fixed[k]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "%s with global scope takes one cut per task "
                             "over the whole model: `%s` cannot be a gradient or have a filter "
                             "(it varies per tensor); give one value per model or use tensor "
                             "scope", pcbm_method_name(o->method), pcbm_param_name(fixed[k]));
    return PCBM_OK;
}

/* The per-tensor methods (mergekit's): tensor scope; slerp, nuslerp, model_stock, sce: model counts
 * and their parameters. */
static pcbm_status check_geo(const pcbm_merge_opts *o, pcbm_error *err)
{
    const char *name = pcbm_method_name(o->method);
    bool recipe = o->params != NULL; /* a recipe may give t per tensor */
    const pcbm_method_def *m = pcbm_method_for(o);
    if (m->scope_tensor && o->scope == PCBM_SCOPE_GLOBAL)
        return check_global_params(o, err);
    if (!m->per_tensor)
        return PCBM_OK;
    if (o->scope == PCBM_SCOPE_GLOBAL)
        return pcbm_fail(err, PCBM_ERR_USAGE, "%s computes its statistics per tensor by "
                         "definition: set `scope` to tensor or leave it to the method "
                         "(PCBM_SCOPE_AUTO; --scope global does not apply)", name);
    if (!isnan(o->t) && !isfinite(o->t))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`t` must be a finite number, got %g", o->t);
    switch (o->method) {
    case PCBM_METHOD_SLERP:
        if (o->ntasks != 1)
            return pcbm_fail(err, PCBM_ERR_USAGE, "slerp interpolates the base and exactly one task "
                             "model (got %u task models): give one task model (mergekit: "
                             "base_model plus one other model)", o->ntasks);
        if (isnan(o->t) && !recipe)
            return pcbm_fail(err, PCBM_ERR_USAGE, "slerp needs `t` (--t, in [0, 1]: 0 gives the "
                             "base, 1 the task model)");
        break;
    case PCBM_METHOD_NUSLERP:
        if (o->ntasks != 1 && o->ntasks != 2)
            return pcbm_fail(err, PCBM_ERR_USAGE, "nuslerp interpolates exactly two task models' "
                             "task vectors (got %u task models); with one task model it "
                             "interpolates the base and that model at --t", o->ntasks);
        if (o->ntasks == 2 && !isnan(o->t))
            return pcbm_fail(err, PCBM_ERR_USAGE, "nuslerp with two task models takes t = "
                             "w_2/(w_1 + w_2) from --weights W1,W2 (mergekit's weights), not --t");
        if (o->ntasks == 1 && o->weights)
            return pcbm_fail(err, PCBM_ERR_USAGE, "nuslerp with one task model (mergekit's form "
                             "without base_model, of the base and the task model) takes --t = "
                             "w_B/(w_A + w_B), not --weights");
        if (o->ntasks == 1 && isnan(o->t) && !recipe)
            return pcbm_fail(err, PCBM_ERR_USAGE, "nuslerp with one task model needs `t` (--t: "
                             "mergekit's w_B/(w_A + w_B) for models A = base, B = the task)");
        break;
    case PCBM_METHOD_MODEL_STOCK:
        if (o->ntasks < 2)
            return pcbm_fail(err, PCBM_ERR_USAGE, "model_stock needs at least two task models "
                             "(got %u): it averages them by the angle between their task vectors",
                             o->ntasks);
        break;
    case PCBM_METHOD_SCE:
        if (!isfinite(o->select_topk))
            return pcbm_fail(err, PCBM_ERR_USAGE, "`select_topk` must be a finite number, got %g",
                             o->select_topk);
        break;
    default:
        break;
    }
    return PCBM_OK;
}

pcbm_status pcbm_run_check_opts(const pcbm_merge_opts *o, pcbm_error *err)
{
    if (!o->base || !o->out)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`base` and `out` are required");
    if (!o->out[0])
        return pcbm_fail(err, PCBM_ERR_USAGE, "`out` is empty: name the output directory to create");
    if (o->ntasks < 1 || o->ntasks > PCBM_MAX_TASKS)
        return pcbm_fail(err, PCBM_ERR_USAGE, "give 1 to %d task models (got %u)", PCBM_MAX_TASKS,
                         o->ntasks);
    if ((unsigned)o->method >= PCBM_METHOD_COUNT)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown method");
    if (!(o->density > 0.0 && o->density <= 1.0))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`density` must be in (0, 1], got %g", o->density);
    if (!(o->clamp_ratio >= 0.0 && o->clamp_ratio < 0.5))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`clamp_ratio` must be in [0, 0.5), got %g",
                         o->clamp_ratio);
    if ((unsigned)o->semantics > PCBM_SEMANTICS_MERGEKIT)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown `semantics`");
    if ((pcbm_method_for(o)->uses & PCBM_USES_GAMMA) && !(o->gamma >= 0.0 && o->gamma < 1.0))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`gamma` must be in [0, 1) (the fraction of the "
                         "largest |tau| %s drops), got %g", pcbm_method_name(o->method), o->gamma);
    if ((pcbm_method_for(o)->uses & PCBM_USES_EPSILON) && !(o->epsilon >= 0.0 && o->epsilon < 1.0))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`epsilon` must be in [0, 1), got %g", o->epsilon);
    pcbm_status st = check_method_params(o, err);
    for (unsigned i = 0; st == PCBM_OK && o->gammas && i < o->ntasks; i++)
        if (!(o->gammas[i] >= 0.0 && o->gammas[i] < 1.0))
            st = pcbm_fail(err, PCBM_ERR_USAGE, "`gammas` value %u is %g: every gamma must be in "
                           "[0, 1) (the fraction of the largest |tau| %s drops)", i + 1,
                           o->gammas[i], pcbm_method_name(o->method));
    for (unsigned i = 0; st == PCBM_OK && o->epsilons && i < o->ntasks; i++)
        if (!(o->epsilons[i] >= 0.0 && o->epsilons[i] < 1.0))
            st = pcbm_fail(err, PCBM_ERR_USAGE, "`epsilons` value %u is %g: every epsilon must "
                           "be in [0, 1)", i + 1, o->epsilons[i]);
    if (st == PCBM_OK)
        st = check_coefficients(o, err);
    if (st == PCBM_OK)
        st = check_geo(o, err);
    if (st == PCBM_OK)
        st = pcbm_chat_template_check(o->chat_template, err);
    if (st == PCBM_OK)
        st = pcbm_vocab_source_check(o->tokenizer_source, err);
    for (unsigned i = 0; st == PCBM_OK && (pcbm_method_for(o)->uses & PCBM_USES_EPSILON) &&
                         i < o->ntasks; i++) {
        double d = pcbm_task_density(o, i), e = pcbm_task_epsilon(o, i);
        if (d < 1.0 && !(d + e < 1.0 && d - e > 0.0))
            st = pcbm_fail(err, PCBM_ERR_USAGE, "%s: density %g and epsilon %g (task %u): "
                           "density ± epsilon must lie in (0, 1)", pcbm_method_name(o->method),
                           d, e, i + 1);
    }
    if (st != PCBM_OK)
        return st;
    if (o->out_dtype != PCBM_DTYPE_BASE && !pcbm_dtype_is_mergeable(o->out_dtype))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`out_dtype` must be bf16, f16, f32 or base");
    if (o->shard_bytes == 0)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`shard_bytes` must be positive");
    if ((unsigned)o->stats_mode > PCBM_STATS_STREAMING)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown `stats_mode`");
    if (o->stats_in && !pcbm_method_has_stats(o))
        return pcbm_fail(err, PCBM_ERR_USAGE, "`stats_in` applies to the methods with statistics "
                         "(pcb, ties, dare_ties, the mergekit forms, breadcrumbs, della, slerp, "
                         "nuslerp, model_stock, sce); %s computes no statistics",
                         pcbm_method_name(o->method));
    return PCBM_OK;
}

unsigned pcbm_run_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* The per-task densities, gammas and epsilons when given, and `normalize` / `rescale` when they
 * differ from the method's default (a merge at the defaults records what it always did). */
static void add_switches(json_t *p, const pcbm_merge_opts *o)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    const double *per_task[] = {o->densities, o->gammas, o->epsilons};
    const char *per_task_name[] = {"densities", "gammas", "epsilons"};
    for (unsigned k = 0; k < 3; k++) {
        if (!per_task[k])
            continue;
        json_t *a = json_array();
        for (unsigned i = 0; i < o->ntasks; i++)
            json_array_append_new(a, json_real(per_task[k][i]));
        json_object_set_new(p, per_task_name[k], a);
    }
    if (pcbm_method_normalizes(o) != m->normalizes)
        json_object_set_new(p, "normalize", json_boolean(pcbm_method_normalizes(o)));
    if (pcbm_method_rescales(o) != m->rescales)
        json_object_set_new(p, "rescale", json_boolean(pcbm_method_rescales(o)));
}

/* slerp, nuslerp, model_stock, sce: the parameters they read (the statistics depend on them). */
static void add_geo(json_t *p, const pcbm_merge_opts *o)
{
    const pcbm_method_def *m = pcbm_method_find(o->method);
    if ((m->uses & PCBM_USES_T) && !isnan(o->t))
        json_object_set_new(p, "t", json_real(o->t));
    if (m->uses & PCBM_USES_SELECT_TOPK)
        json_object_set_new(p, "select_topk", json_real(o->select_topk));
    if (m->uses & PCBM_USES_NUSLERP) {
        json_object_set_new(p, "nuslerp_flatten", json_boolean(o->nuslerp_flatten != PCBM_OFF));
        json_object_set_new(p, "nuslerp_row_wise", json_boolean(o->nuslerp_row_wise == PCBM_ON));
    }
    if (m->uses & PCBM_USES_FILTER_WISE)
        json_object_set_new(p, "filter_wise", json_boolean(o->filter_wise == PCBM_ON));
}

static char *params_json(const pcbm_merge_opts *o)
{
    json_t *p = json_object();
    json_object_set_new(p, "method", json_string(pcbm_method_name(o->method)));
    json_object_set_new(p, "density", json_real(o->density));
    json_object_set_new(p, "lambda", json_real(o->lambda));
    if (o->lambdas) {
        json_t *a = json_array();
        for (unsigned i = 0; i < o->ntasks; i++)
            json_array_append_new(a, json_real(o->lambdas[i]));
        json_object_set_new(p, "lambdas", a);
    }
    if (o->weights) {
        json_t *a = json_array();
        for (unsigned i = 0; i < o->ntasks; i++)
            json_array_append_new(a, json_real(o->weights[i]));
        json_object_set_new(p, "weights", a);
    }
    add_switches(p, o);
    add_geo(p, o);
    if (o->semantics == PCBM_SEMANTICS_MERGEKIT)
        json_object_set_new(p, "semantics", json_string("mergekit"));
    if (pcbm_method_for(o)->uses & PCBM_USES_GAMMA)
        json_object_set_new(p, "gamma", json_real(o->gamma));
    if (pcbm_method_for(o)->uses & PCBM_USES_EPSILON)
        json_object_set_new(p, "epsilon", json_real(o->epsilon));
    json_object_set_new(p, "clamp_ratio", json_real(o->clamp_ratio));
    json_object_set_new(p, "scope", json_string(o->scope == PCBM_SCOPE_GLOBAL ? "global" : "tensor"));
    json_object_set_new(p, "exact", json_boolean(o->stats_mode == PCBM_STATS_EXACT));
    json_object_set_new(p, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(p, "dtype", json_string(o->out_dtype == PCBM_DTYPE_BASE
                                                    ? "base" : pcbm_dtype_name(o->out_dtype)));
    if (o->nexclude) {
        json_t *a = json_array();
        for (unsigned i = 0; i < o->nexclude; i++)
            json_array_append_new(a, json_string(o->exclude[i]));
        json_object_set_new(p, "exclude", a);
    }
    /* a recipe's per-tensor settings (absent otherwise: a CLI merge's parameters stay as
     * they were) */
    if (o->params)
        json_object_set_new(p, "recipe", pcbm_params_json(o->params, o->ntasks));
    if (o->chat_template)
        json_object_set_new(p, "chat_template", json_string(o->chat_template));
    if (o->tokenizer_source && strcmp(o->tokenizer_source, "base"))
        json_object_set_new(p, "tokenizer_source", json_string(o->tokenizer_source));
    char *s = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return s;
}

static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024;
}

static json_t *json_num_or_null(double v, bool have)
{
    return have && isfinite(v) ? json_real(v) : json_null();
}

const char *pcbm_run_copy_reason(const pcbm_tlayout *t)
{
    switch ((pcbm_copy_why)t->why) {
    case PCBM_WHY_NOT_FLOAT: return "not a merged dtype";
    case PCBM_WHY_EXCLUDED: return "excluded";
    case PCBM_WHY_MISSING: return "missing from every task model";
    default: return "merged";
    }
}

#define REPORT_COPIED_MAX 1000 /* copied tensors listed one by one in the report */

/* merge_report.json "copied": every tensor copied from the base and why (the first
 * REPORT_COPIED_MAX; "copied_listed" says how many are listed). */
/* A LoRA adapter task: its config's rank, alpha and scale, and what it changes. */
static json_t *adapter_json(const pcbm_layout *p, unsigned m)
{
    const pcbm_adapter *a = p->models[m]->adapter;
    const pcbm_adapter_use *u = &p->lora_use[m];
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "rank", json_integer(a->r));
    json_object_set_new(j, "max_rank", json_integer(u->max_r));
    json_object_set_new(j, "lora_alpha", json_real(a->alpha));
    json_object_set_new(j, "use_rslora", json_boolean(a->rslora));
    json_object_set_new(j, "scale", json_real(pcbm_adapter_scale(a, a->r, a->alpha)));
    json_object_set_new(j, "rank_pattern", json_integer((json_int_t)a->nrank));
    json_object_set_new(j, "alpha_pattern", json_integer((json_int_t)a->nalpha));
    json_object_set_new(j, "targeted_tensors", json_integer((json_int_t)u->targeted));
    json_object_set_new(j, "saved_tensors", json_integer((json_int_t)u->saved));
    json_object_set_new(j, "base_model_name_or_path",
                        a->base_model ? json_string(a->base_model) : json_null());
    return j;
}

/* The first FP8 source of a dequantized tensor. */
static const pcbm_tquant *first_q(const pcbm_tlayout *t, unsigned nmodels)
{
    for (unsigned m = 0; m < nmodels; m++)
        if (t->q[m].on)
            return &t->q[m];
    return &t->q[0];
}

static void report_copied(json_t *rep, const pcbm_mctx *mc)
{
    const pcbm_layout *p = mc->layout;
    const char *const *tasks = mc->o->tasks;
    json_t *a = json_array();
    size_t n = 0;
    for (size_t i = 0; i < p->nt && n < REPORT_COPIED_MAX; i++) {
        const pcbm_tlayout *t = &p->t[i];
        if (t->kind == PCBM_T_MERGE)
            continue;
        n++;
        json_t *e = json_pack("{s:s,s:s}", "tensor", t->name, "reason", pcbm_run_copy_reason(t));
        if (t->why == PCBM_WHY_MISSING) {
            json_object_set_new(e, "task", json_integer(t->why_task));
            json_object_set_new(e, "task_path", json_string(tasks[t->why_task - 1]));
            json_object_set_new(e, "tasks_missing_it", json_integer(t->why_count));
        }
        json_array_append_new(a, e);
    }
    json_object_set_new(rep, "copied", a);
    json_object_set_new(rep, "copied_listed", json_integer((json_int_t)n));
    /* merged tensors some tasks lack: the tasks that take no part in them */
    a = json_array();
    n = 0;
    for (size_t i = 0; i < p->nt && n < REPORT_COPIED_MAX; i++) {
        const pcbm_tlayout *t = &p->t[i];
        if (t->kind != PCBM_T_MERGE || !t->absent)
            continue;
        n++;
        json_t *lack = json_array();
        for (unsigned m = 1; m < p->nmodels; m++)
            if (t->absent >> (m - 1) & 1u)
                json_array_append_new(lack, json_pack("{s:i,s:s}", "task", (int)m, "task_path",
                                                      tasks[m - 1]));
        json_array_append_new(a, json_pack("{s:s,s:o}", "tensor", t->name, "tasks_missing_it",
                                           lack));
    }
    json_object_set_new(rep, "partial", a);
    json_object_set_new(rep, "partial_listed", json_integer((json_int_t)n));
    /* FP8 tensors dequantized with their block scales, and from which models */
    a = json_array();
    n = 0;
    for (size_t i = 0; i < p->nt && n < REPORT_COPIED_MAX; i++) {
        const pcbm_tlayout *t = &p->t[i];
        if (!t->q)
            continue;
        n++;
        json_t *models = json_array();
        for (unsigned m = 0; m < p->nmodels; m++)
            if (t->q[m].on)
                json_array_append_new(models, json_integer(m));
        json_array_append_new(a, json_pack("{s:s,s:o,s:[i,i]}", "tensor", t->name,
                                           "models", models, "block", (int)first_q(t, p->nmodels)->br,
                                           (int)first_q(t, p->nmodels)->bc));
    }
    json_object_set_new(rep, "dequantized", a);
    /* tensors indexed by token where tasks appended rows: which tasks, and how rows were matched */
    a = json_array();
    for (size_t i = 0; i < p->nt; i++) {
        const pcbm_tlayout *t = &p->t[i];
        for (unsigned m = 1; t->aligned && m < p->nmodels; m++)
            if (t->aligned >> (m - 1) & 1)
                json_array_append_new(a, json_pack("{s:s,s:i,s:s}", "tensor", t->name, "task",
                                                   (int)m, "rows_matched_by",
                                                   p->rows_how[m] == PCBM_ROWS_BY_TOKEN
                                                       ? "token" : "position"));
    }
    json_object_set_new(rep, "aligned", a);
    json_object_set_new(rep, "tensors_dequantized", json_integer((json_int_t)p->ndequant));
}

char *pcbm_run_report_json(const pcbm_mctx *mc, const pcbm_engine_report *er, double secs)
{
    const pcbm_merge_opts *o = mc->o;
    const pcbm_layout *p = mc->layout;
    json_t *r = json_object();
    json_object_set_new(r, "tool", json_string("pcbmerge"));
    json_object_set_new(r, "version", json_string(PCBM_VERSION_STRING));
    json_object_set_new(r, "method", json_string(pcbm_method_name(o->method)));
    char *pj = params_json(o);
    json_object_set_new(r, "params", json_loads(pj, 0, NULL));
    free(pj);
    json_object_set_new(r, "base", json_string(o->base));
    if (o->recipe)
        json_object_set_new(r, "recipe_yaml", json_string(o->recipe));
    if (o->chat_template) /* "auto", or the template's text */
        json_object_set_new(r, "chat_template", json_string(o->chat_template));
    const pcbm_vocab_plan *v = mc->vocab;
    if (v && v->out_rows && (v->on_spec || v->nstaged)) { /* rows gathered by token */
        json_t *vj = json_object(), *sm = json_array();
        json_object_set_new(vj, "source", json_string(v->is_union ? "union"
                                                      : o->tokenizer_source ? o->tokenizer_source
                                                      : "base"));
        json_object_set_new(vj, "rows", json_integer((json_int_t)v->out_rows));
        json_object_set_new(vj, "tokens_added", json_integer((json_int_t)v->nnew));
        for (unsigned m = 0; m < v->nmodels; m++)
            if (v->staged[m])
                json_array_append_new(sm, json_integer(m));
        json_object_set_new(vj, "rows_gathered_for_models", sm);
        json_object_set_new(vj, "staged_bytes", json_integer((json_int_t)v->stage_bytes));
        json_object_set_new(r, "vocabulary", vj);
    }
    json_object_set_new(r, "d", json_integer((json_int_t)p->d));
    json_object_set_new(r, "stats", json_string(mc->stats_how[0] ? mc->stats_how : "none"));
    json_object_set_new(r, "tensors_merged", json_integer((json_int_t)p->nmerge));
    json_object_set_new(r, "tensors_copied", json_integer((json_int_t)(p->nt - p->nmerge)));
    json_object_set_new(r, "tensors_partial", json_integer((json_int_t)p->npartial));
    report_copied(r, mc);
    /* every warning said so far in this call (inputs, layout, statistics) */
    const pcbm_log_sink *sink = pcbm_log_current();
    json_t *warn = json_array();
    for (unsigned i = 0; sink && i < sink->nwarnings; i++)
        json_array_append_new(warn, json_string(sink->warnings[i]));
    json_object_set_new(r, "warnings", warn);
    if (sink && sink->dropped)
        json_object_set_new(r, "warnings_not_listed", json_integer(sink->dropped));
    bool global_stats = o->scope == PCBM_SCOPE_GLOBAL;
    bool is_pcb = o->method == PCBM_METHOD_PCB, is_ties = o->method == PCBM_METHOD_TIES;
    const pcbm_method_def *m = pcbm_method_for(o);
    json_t *tasks = json_array();
    for (unsigned i = 0; i < mc->ntasks; i++) {
        const pcbm_task_stats *ts = &mc->task[i];
        json_t *t = json_object();
        json_object_set_new(t, "path", json_string(o->tasks[i]));
        json_object_set_new(t, "lambda", json_real(mc->lam[i]));
        json_object_set_new(t, "weight", (m->uses & PCBM_USES_WEIGHTS) && !o->params
                                             ? json_real(o->weights ? o->weights[i] : 1.0)
                                             : json_null()); /* a recipe's: params.recipe */
        json_object_set_new(t, "density", (m->uses & PCBM_USES_DENSITY) && !o->params
                                              ? json_real(pcbm_task_density(o, i)) : json_null());
        json_object_set_new(t, "lo", json_num_or_null(ts->lo, is_pcb && global_stats));
        json_object_set_new(t, "hi", json_num_or_null(ts->hi, is_pcb && global_stats));
        json_object_set_new(t, "threshold",
                            json_num_or_null(ts->threshold, (is_pcb || is_ties) && global_stats));
        json_object_set_new(t, "max", json_num_or_null(ts->max, is_pcb && global_stats));
        json_object_set_new(t, "kept", json_integer((json_int_t)ts->kept));
        uint64_t di = p->d - pcbm_range_task_absent(p, 0, p->nt, i); /* the elements it has */
        json_object_set_new(t, "d", json_integer((json_int_t)di));
        json_object_set_new(t, "kept_fraction", json_real(di ? (double)ts->kept / (double)di : 0));
        if (p->models[i + 1]->adapter)
            json_object_set_new(t, "adapter", adapter_json(p, i + 1));
        json_array_append_new(tasks, t);
    }
    json_object_set_new(r, "tasks", tasks);
    json_t *passes = json_array();
    for (unsigned i = 0; i < er->npasses; i++) {
        json_t *ps = json_object();
        json_object_set_new(ps, "name", json_string(er->passes[i].name));
        json_object_set_new(ps, "bytes_read", json_integer((json_int_t)er->passes[i].bytes_read));
        json_object_set_new(ps, "bytes_written", json_integer((json_int_t)er->passes[i].bytes_written));
        json_object_set_new(ps, "seconds", json_real(er->passes[i].seconds));
        json_object_set_new(ps, "inputs_mapped", json_boolean(er->passes[i].mapped));
        json_array_append_new(passes, ps);
    }
    json_object_set_new(r, "passes", passes);
    uint64_t input = p->merge_in_bytes + p->copy_in_bytes;
    json_object_set_new(r, "input_bytes", json_integer((json_int_t)input));
    json_object_set_new(r, "bytes_read", json_integer((json_int_t)er->bytes_read));
    json_object_set_new(r, "read_ratio", json_real(input ? (double)er->bytes_read / (double)input : 0));
    json_object_set_new(r, "bytes_written", json_integer((json_int_t)er->bytes_written));
    json_object_set_new(r, "io_backend", json_string(er->backend ? er->backend : ""));
    json_object_set_new(r, "threads", json_integer(er->threads));
    json_object_set_new(r, "mem_limit", json_integer((json_int_t)o->mem_bytes));
    json_object_set_new(r, "buffer_bytes", json_integer((json_int_t)er->buffer_bytes));
    json_object_set_new(r, "block_elems", json_integer((json_int_t)er->block_elems));
    json_object_set_new(r, "peak_rss", json_integer((json_int_t)peak_rss_bytes()));
    json_object_set_new(r, "seconds", json_real(secs));
    char *s = json_dumps(r, JSON_INDENT(2));
    json_decref(r);
    return s;
}

void pcbm_run_print_summary(const pcbm_mctx *mc, const pcbm_engine_report *er, double secs)
{
    const pcbm_merge_opts *o = mc->o;
    const pcbm_layout *p = mc->layout;
    char a[32], b[32], c[32];
    pcbm_info("%s merge of %u task model(s): %llu elements in %zu tensors merged, %zu copied",
              pcbm_method_name(o->method), mc->ntasks, (unsigned long long)p->d, p->nmerge,
              p->nt - p->nmerge);
    if (p->npartial)
        pcbm_info("  %zu merged tensor(s) are missing from some task models: those tasks take no "
                  "part in them (merge_report.json \"partial\")", p->npartial);
    bool stats = o->scope == PCBM_SCOPE_GLOBAL &&
                 (o->method == PCBM_METHOD_PCB || o->method == PCBM_METHOD_TIES);
    for (unsigned i = 0; i < mc->ntasks && p->d; i++) {
        const pcbm_task_stats *ts = &mc->task[i];
        uint64_t di = p->d - pcbm_range_task_absent(p, 0, p->nt, i);
        double kf = di ? (double)ts->kept / (double)di : 0.0;
        if (stats && o->method == PCBM_METHOD_PCB)
            pcbm_info("  task %u: lo %.6g  hi %.6g  threshold %.6g  max %.6g  kept %.4f%%", i + 1,
                      ts->lo, ts->hi, ts->threshold, ts->max, 100 * kf);
        else if (stats)
            pcbm_info("  task %u: threshold %.6g  kept %.4f%%", i + 1, ts->threshold, 100 * kf);
        else
            pcbm_info("  task %u: kept %.4f%%", i + 1, 100 * kf);
    }
    for (unsigned i = 0; i < er->npasses; i++) {
        const pcbm_pass_report *pr = &er->passes[i];
        pcbm_info("  pass %-10s read %s  wrote %s  %.2f s  %.2f GB/s%s", pr->name,
                  pcbm_fmt_bytes(pr->bytes_read, a, sizeof a),
                  pcbm_fmt_bytes(pr->bytes_written, b, sizeof b), pr->seconds,
                  pr->seconds > 0 ? (double)(pr->bytes_read + pr->bytes_written) / pr->seconds / 1e9 : 0,
                  pr->mapped ? "  (inputs cached: mapped)" : "");
    }
    if (mc->stats_how[0])
        pcbm_info("  statistics: %s", mc->stats_how);
    uint64_t input = p->merge_in_bytes + p->copy_in_bytes;
    pcbm_info("  read %s = %.2f x the inputs; %.2f s; peak memory %s (limit %s); I/O %s, %u threads",
              pcbm_fmt_bytes(er->bytes_read, a, sizeof a),
              input ? (double)er->bytes_read / (double)input : 0.0, secs,
              pcbm_fmt_bytes(peak_rss_bytes(), b, sizeof b), pcbm_fmt_bytes(o->mem_bytes, c, sizeof c),
              er->backend ? er->backend : "?", er->threads);
}

static pcbm_status open_models(const pcbm_merge_opts *o, pcbm_model **models, pcbm_error *err)
{
    pcbm_status st = pcbm_model_open(o->base, &models[0], err);
    for (unsigned i = 0; st == PCBM_OK && i < o->ntasks; i++)
        st = pcbm_model_open(o->tasks[i], &models[i + 1], err);
    return st;
}

pcbm_status pcbm_run_write_small_files(const merge_run *r, const pcbm_outdir *od,
                                       const char *report, pcbm_error *err)
{
    const pcbm_outlayout *op = &r->layout.out;
    pcbm_status st = PCBM_OK;
    if (op->index_json)
        st = pcbm_outdir_write(od, PCBM_INDEX_NAME, op->index_json, strlen(op->index_json), err);
    if (st == PCBM_OK)
        st = pcbm_copy_side_files(r->layout.models[0], od->partial, err);
    const pcbm_layout *p = &r->layout;
    if (st == PCBM_OK &&
        (r->o->out_dtype != PCBM_DTYPE_BASE || p->untied_head || p->base_dequantized))
        st = pcbm_config_update(od->partial, r->o->out_dtype, p->untied_head != NULL,
                                p->base_dequantized, err);
    if (st == PCBM_OK)
        st = pcbm_vocab_write_tokenizer(&r->vocab, p->models, od->partial, err);
    if (st == PCBM_OK && r->o->chat_template) {
        const char *dirs[PCBM_MAX_MODELS];
        char how[512];
        for (unsigned m = 0; m < p->nmodels; m++)
            dirs[m] = p->models[m]->is_dir ? p->models[m]->dir : NULL;
        st = pcbm_chat_template_apply(r->o->chat_template, dirs, p->nmodels, od->partial, how,
                                      sizeof how, err);
        if (st == PCBM_OK)
            pcbm_info("chat template: %s", how);
    }
    if (st == PCBM_OK)
        st = pcbm_outdir_write(od, "merge_report.json", report, strlen(report), err);
    if (st == PCBM_OK) {
        char *card = pcbm_model_card(r->o, report, r->ids);
        st = card ? pcbm_outdir_write(od, PCBM_CARD_NAME, card, strlen(card), err)
                  : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing the model card");
        free(card);
    }
    return st;
}

static pcbm_status write_outputs(merge_run *r, pcbm_mctx *mc, const pcbm_outdir *od,
                                 char *report, pcbm_error *err)
{
    pcbm_status st = pcbm_run_write_small_files(r, od, report, err);
    if (st == PCBM_OK && pcbm_method_has_stats(mc->o) && mc->layout->d > 0) {
        char path[4096];
        if ((st = pcbm_run_export_ident(r, err)) != PCBM_OK)
            return st;
        snprintf(path, sizeof path, "%s/%s", od->partial, PCBM_STATS_NAME);
        snprintf(mc->stats_out->how, sizeof mc->stats_out->how, "%s", mc->stats_how);
        st = pcbm_statfile_write(path, mc->stats_out, mc->ntasks, err);
    }
    return st;
}

/* ---- statistics file: identity of the inputs and the parameters that shape statistics ---- */

#define FP_SAMPLES 8u          /* data samples per file in a fingerprint */
#define FP_SAMPLE_BYTES 4096u

/* A model's identity for the statistics file: its headers and sizes (pcbm_model.identity) and
 * 8 samples of 4 KiB of each file's data, so that two fine-tunes of one architecture differ. */
static pcbm_status fingerprint(const pcbm_model *m, uint64_t *out, pcbm_error *err)
{
    XXH3_state_t *x = XXH3_createState();
    uint8_t *buf = pcbm_malloc(FP_SAMPLE_BYTES);
    if (!x || !buf) {
        XXH3_freeState(x);
        free(buf);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    XXH3_64bits_reset(x);
    XXH3_64bits_update(x, &m->identity, sizeof m->identity);
    pcbm_status st = PCBM_OK;
    for (unsigned f = 0; f < m->nfiles - m->nstaged && st == PCBM_OK; f++) {
        const pcbm_st_file *sf = &m->files[f];
        int fd = open(sf->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", sf->path, strerror(errno));
            break;
        }
        uint64_t span = sf->size > sf->data_start ? sf->size - sf->data_start : 0;
        for (unsigned k = 0; k < FP_SAMPLES && span; k++) {
            uint64_t off = sf->data_start + span * k / FP_SAMPLES;
            ssize_t n = pread(fd, buf, FP_SAMPLE_BYTES, (off_t)off);
            if (n < 0) {
                st = pcbm_fail(err, PCBM_ERR_IO, "read error in %s at offset %llu: %s", sf->path,
                               (unsigned long long)off, strerror(errno));
                break;
            }
            XXH3_64bits_update(x, buf, (size_t)n);
        }
        close(fd);
    }
    *out = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    free(buf);
    return st;
}

/* The parameters statistics depend on (λ is not one of them), as canonical JSON. */
static char *shape_json(const pcbm_merge_opts *o)
{
    json_t *p = json_object();
    json_object_set_new(p, "method", json_string(pcbm_method_name(o->method)));
    json_object_set_new(p, "density", json_real(o->density));
    json_object_set_new(p, "scope", json_string(o->scope == PCBM_SCOPE_GLOBAL ? "global" : "tensor"));
    json_object_set_new(p, "dtype", json_string(o->out_dtype == PCBM_DTYPE_BASE
                                                    ? "base" : pcbm_dtype_name(o->out_dtype)));
    json_t *ex = json_array();
    for (unsigned i = 0; i < o->nexclude; i++)
        json_array_append_new(ex, json_string(o->exclude[i]));
    json_object_set_new(p, "exclude", ex);
    json_object_set_new(p, "allow_extra", json_boolean(o->allow_extra));
    if (o->method == PCBM_METHOD_PCB) {
        json_object_set_new(p, "clamp_ratio", json_real(o->clamp_ratio));
        json_object_set_new(p, "exact", json_boolean(o->stats_mode == PCBM_STATS_EXACT));
        json_object_set_new(p, "streaming", json_boolean(o->stats_mode == PCBM_STATS_STREAMING));
    }
    const pcbm_method_def *m = pcbm_method_for(o);
    if (o->method == PCBM_METHOD_DARE_TIES || (m->scope_tensor && (m->uses & PCBM_USES_SEED)))
        json_object_set_new(p, "seed", json_integer((json_int_t)o->seed));
    if (o->semantics == PCBM_SEMANTICS_MERGEKIT) /* the mergekit forms' statistics differ */
        json_object_set_new(p, "semantics", json_string("mergekit"));
    if (m->uses & PCBM_USES_GAMMA)
        json_object_set_new(p, "gamma", json_real(o->gamma));
    if (m->uses & PCBM_USES_EPSILON)
        json_object_set_new(p, "epsilon", json_real(o->epsilon));
    /* per-task densities, the weights (they scale the values the signs are elected on) and
     * dare_ties' rescale shape the statistics; `normalize` only divides afterwards. Nothing is
     * added at the defaults. */
    json_t *q = json_object();
    add_switches(q, o);
    json_object_del(q, "normalize");
    if (o->weights) {
        json_t *a = json_array();
        for (unsigned i = 0; i < o->ntasks; i++)
            json_array_append_new(a, json_real(o->weights[i]));
        json_object_set_new(q, "weights", a);
    }
    /* a recipe's per-tensor settings (weights, densities, ... per tensor) shape them too */
    if (o->params)
        json_object_set_new(q, "recipe", pcbm_params_json(o->params, o->ntasks));
    json_object_update(p, q);
    json_decref(q);
    add_geo(p, o); /* slerp's t, sce's select_topk, ...: the records hold their coefficients */
    /* the output's vocabulary decides the rows of the token-indexed tensors (absent: base) */
    if (o->tokenizer_source && strcmp(o->tokenizer_source, "base"))
        json_object_set_new(p, "tokenizer_source", json_string(o->tokenizer_source));
    char *str = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(p);
    return str;
}

static pcbm_status check_stats_file(const pcbm_merge_opts *o, const pcbm_statset *in,
                                    const pcbm_statset *now, pcbm_error *err)
{
    if (in->nmodels != now->nmodels)
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s was computed for %u task "
                         "models; this merge has %u: recompute them without `stats_in`",
                         o->stats_in, in->nmodels - 1, now->nmodels - 1);
    for (unsigned m = 0; m < now->nmodels; m++) {
        if (in->identity[m] == now->identity[m])
            continue;
        char who[64];
        if (m)
            snprintf(who, sizeof who, "task model %u", m);
        else
            snprintf(who, sizeof who, "the base");
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s was computed from other "
                         "inputs: %s (%s) is not the model it saw (headers, sizes or data "
                         "differ); recompute them without `stats_in`", o->stats_in, who,
                         m ? o->tasks[m - 1] : o->base);
    }
    if (strcmp(in->shape_json, now->shape_json) != 0) {
        char diff[256];
        pcbm_params_differ(in->shape_json, now->shape_json, "method", NULL, 0, diff, sizeof diff);
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s was computed with other "
                         "parameters (%s); only `lambda`/`lambdas` and `normalize` may "
                         "change with `stats_in`; recompute them without `stats_in`",
                         o->stats_in, diff);
    }
    return PCBM_OK;
}

/* Identity of every input (for the journal and the statistics file). */
static pcbm_status fingerprints(const pcbm_merge_opts *o, pcbm_model *const *models,
                                uint64_t *ids, pcbm_error *err)
{
    for (unsigned m = 0; m <= o->ntasks; m++) {
        pcbm_status st = fingerprint(models[m], &ids[m], err);
        if (st != PCBM_OK)
            return st;
    }
    return PCBM_OK;
}

/* The statistics of this merge: identity and shape; with --stats, the file read and checked. */
static pcbm_status prepare_stats(const pcbm_merge_opts *o, const uint64_t *ids,
                                 pcbm_statset *now, pcbm_statset *in, pcbm_error *err)
{
    now->nmodels = o->ntasks + 1;
    memcpy(now->identity, ids, now->nmodels * sizeof ids[0]);
    now->shape_json = shape_json(o);
    if (!now->shape_json)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    if (!o->stats_in)
        return PCBM_OK;
    pcbm_status st = pcbm_statfile_read(o->stats_in, in, err);
    if (st != PCBM_OK)
        return st;
    return check_stats_file(o, in, now, err);
}

/* Every parameter that shapes the output bytes (threads, memory, I/O and block size do not). */
char *pcbm_run_output_params(const pcbm_merge_opts *o)
{
    char *base = params_json(o);
    json_t *p = base ? json_loads(base, 0, NULL) : NULL;
    free(base);
    if (!p)
        return NULL;
    json_object_set_new(p, "shard_bytes", json_integer((json_int_t)o->shard_bytes));
    json_object_set_new(p, "allow_extra", json_boolean(o->allow_extra));
    json_object_set_new(p, "allow_nonfinite", json_boolean(o->allow_nonfinite));
    json_object_set_new(p, "streaming", json_boolean(o->stats_mode == PCBM_STATS_STREAMING));
    json_object_set_new(p, "version", json_string(PCBM_VERSION_STRING));
    char *s = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(p);
    return s;
}


/* ---- stat identity of the input files ---- */

/* xxh3 of what the file system says identifies a file's version: device, inode, size and the
 * modification and change times in nanoseconds (the change time cannot be set by a user). */
static pcbm_status stat_id(const char *path, uint64_t *id, pcbm_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    uint64_t f[7] = {(uint64_t)sb.st_dev, (uint64_t)sb.st_ino, (uint64_t)sb.st_size,
                     (uint64_t)sb.st_mtim.tv_sec, (uint64_t)sb.st_mtim.tv_nsec,
                     (uint64_t)sb.st_ctim.tv_sec, (uint64_t)sb.st_ctim.tv_nsec};
    *id = XXH3_64bits(f, sizeof f);
    return PCBM_OK;
}

/* Every input file's stat identity, model after model, files in model order. */
static pcbm_status stat_inputs(const merge_run *r, uint64_t **ids, size_t *n, pcbm_error *err)
{
    size_t total = 0;
    for (unsigned m = 0; m <= r->o->ntasks; m++)
        total += r->models[m]->nfiles - r->models[m]->nstaged;
    *ids = pcbm_calloc(total + 1, sizeof **ids);
    *n = total;
    if (!*ids)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (unsigned m = 0; m <= r->o->ntasks; m++)
        for (unsigned f = 0; f < r->models[m]->nfiles - r->models[m]->nstaged; f++) {
            pcbm_status st = stat_id(r->models[m]->files[f].path, &(*ids)[k++], err);
            if (st != PCBM_OK)
                return st;
        }
    return PCBM_OK;
}

/* The path of input file k (stat_inputs' order). */
static const char *input_file(const merge_run *r, size_t k)
{
    for (unsigned m = 0; m <= r->o->ntasks; m++) {
        if (k < r->models[m]->nfiles - r->models[m]->nstaged)
            return r->models[m]->files[k].path;
        k -= r->models[m]->nfiles - r->models[m]->nstaged;
    }
    return "?";
}

/* The first input file whose identity differs between a and b (-1: none). */
static long first_changed(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    if (!a || na != nb)
        return 0;
    for (size_t k = 0; k < na; k++)
        if (a[k] != b[k])
            return (long)k;
    return -1;
}

void pcbm_run_resume_files(merge_run *r, bool table)
{
    pcbm_journal *j = &r->journal;
    long k = first_changed(j->fstat, j->nfstat, r->fstat, r->nfstat);
    if (k < 0)
        return;
    if (table)
        pcbm_warn("%s changed since the interrupted run began (inode, size, modification or "
                  "change time differ): the output kept so far is discarded, and the apply pass "
                  "runs again over everything, checking every input against the saved "
                  "statistics", j->fstat ? input_file(r, (size_t)k) : "an input file");
    else
        pcbm_warn("%s changed since the interrupted run began (inode, size, modification or "
                  "change time differ): the output kept so far is discarded and the merge "
                  "starts over", j->fstat ? input_file(r, (size_t)k) : "an input file");
    j->nseg = 0;
    if (table && j->fstat)
        return;
    free(j->fstat);
    j->fstat = pcbm_calloc(r->nfstat + 1, sizeof *j->fstat);
    j->nfstat = j->fstat ? r->nfstat : 0;
    if (j->fstat)
        memcpy(j->fstat, r->fstat, r->nfstat * sizeof *j->fstat);
}

pcbm_status pcbm_run_recheck_files(const merge_run *r, pcbm_error *err)
{
    uint64_t *now = NULL;
    size_t n = 0;
    pcbm_status st = stat_inputs(r, &now, &n, err);
    long k = st == PCBM_OK ? first_changed(r->fstat, r->nfstat, now, n) : -1;
    free(now);
    if (k >= 0)
        st = pcbm_fail(err, PCBM_ERR_STATS, "%s changed while the merge ran (inode, size, "
                       "modification or change time differ): the output is not published, "
                       "since it may mix two versions of the file; once the inputs are final, "
                       "run the merge again from the start (with `force`)", input_file(r, (size_t)k));
    return st;
}

uint64_t pcbm_run_reserved_bytes(const merge_run *r, unsigned threads)
{
    return PCBM_RESERVED_MISC + pcbm_layout_table_bytes(&r->layout) +
           pcbm_method_stats_bytes(r->o, threads, &r->layout) +
           (uint64_t)threads * r->mc.scratch_floats * sizeof(float) +
           pcbm_ident_bytes(&r->layout);
}

pcbm_status pcbm_run_load_ident(merge_run *r, pcbm_error *err)
{
    const pcbm_statset *in = r->mc.stats_in;
    if (!in || !in->ident)
        return PCBM_OK;
    char origin[4200];
    if (in == &r->stats_saved)
        snprintf(origin, sizeof origin, "the interrupted run's statistics pass read (saved in %s)",
                 r->od.partial);
    else
        snprintf(origin, sizeof origin, "the statistics in %s were computed from",
                 r->o->stats_in ? r->o->stats_in : "the saved statistics file");
    return pcbm_ident_load(pcbm_engine_ident(r->eng), in->ident, in->nmodels, in->ident_ngran,
                           origin, err);
}

pcbm_status pcbm_run_export_ident(merge_run *r, pcbm_error *err)
{
    uint64_t ngran = 0;
    const uint64_t *ref = r->eng ? pcbm_ident_ref(pcbm_engine_ident(r->eng), &ngran) : NULL;
    if (!ref || !pcbm_ident_any(pcbm_engine_ident(r->eng)))
        return PCBM_OK;
    if (!pcbm_statset_set_ident(r->mc.stats_out, ref, ngran))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    return PCBM_OK;
}

/* Open, cross-check and identify every input; nothing is written yet. */
/* A task that looks identical to the base (its task vector is zero) or to another task (it
 * counts twice) is almost always a wrong path: say so, naming both. */
static void warn_duplicates(const pcbm_merge_opts *o, const uint64_t *ids)
{
    for (unsigned i = 1; i <= o->ntasks; i++) {
        if (ids[i] == ids[0]) {
            pcbm_warn("task model %u (%s) looks identical to the base (same headers, sizes and "
                      "sampled data): its task vector is zero; check the path", i, o->tasks[i - 1]);
            continue;
        }
        for (unsigned j = 1; j < i; j++)
            if (ids[i] == ids[j]) {
                pcbm_warn("task models %u (%s) and %u (%s) look identical (same headers, sizes "
                          "and sampled data): that task counts twice; check the paths", j,
                          o->tasks[j - 1], i, o->tasks[i - 1]);
                break;
            }
    }
}

pcbm_status pcbm_run_setup_inputs(merge_run *r, pcbm_error *err)
{
    const pcbm_merge_opts *o = r->o;
    pcbm_status st = open_models(o, r->models, err);
    if (st != PCBM_OK)
        return st;
    r->params = params_json(o);
    /* the output's vocabulary: rows of token-indexed tensors gathered to it, before the layout
     * sees their shapes */
    st = pcbm_vocab_plan_build(r->models, o->ntasks + 1, o->tokenizer_source,
                               o->out ? o->out : ".", &r->vocab, err);
    if (st == PCBM_OK)
        st = pcbm_vocab_plan_apply(&r->vocab, r->models, err);
    if (st == PCBM_OK && r->vocab.nstaged && !o->dry_run) {
        double ts = pcbm_now();
        char b[32];
        st = pcbm_vocab_stage(&r->vocab, r->models, err);
        if (st == PCBM_OK)
            pcbm_info("vocabulary: %u model(s) with rows gathered to the output's %llu tokens, "
                      "%s staged in %s (%.1f s)", r->vocab.nstaged,
                      (unsigned long long)r->vocab.out_rows,
                      pcbm_fmt_bytes(r->vocab.stage_bytes, b, sizeof b), r->vocab.dir,
                      pcbm_now() - ts);
    }
    pcbm_vocab_plan_drop_maps(&r->vocab);
    if (st != PCBM_OK)
        return st;
    const char *meta[] = {"pcbmerge_version", PCBM_VERSION_STRING, "merge_method",
                          pcbm_method_name(o->method), "merge_params", r->params};
    pcbm_layout_opts po = {.exclude = o->exclude, .nexclude = o->nexclude,
                         .allow_extra = o->allow_extra, .require_all = o->require_all,
                         .partial = pcbm_method_for(o) && pcbm_method_for(o)->partial,
                         .take_nonfloat_base = o->take_nonfloat_base,
                         .out_dtype = o->out_dtype,
                         .shard_bytes = o->shard_bytes, .meta = meta, .nmeta = 6};
    if ((st = pcbm_layout_build(r->models, o->ntasks + 1, &po, &r->layout, err)) != PCBM_OK)
        return st;
    r->plan_ok = true;
    if ((st = pcbm_run_check_nonfloat(r, err)) != PCBM_OK)
        return st;
    for (unsigned i = 1; i <= o->ntasks; i++) /* the layout says where their bytes are */
        pcbm_model_drop_tensors(r->models[i]);
    if ((st = stat_inputs(r, &r->fstat, &r->nfstat, err)) != PCBM_OK)
        return st;
    if ((st = fingerprints(o, r->models, r->ids, err)) != PCBM_OK)
        return st;
    warn_duplicates(o, r->ids);
    if (!r->models[0]->is_dir)
        pcbm_warn("the base %s is a single file: no config.json, tokenizer or other side file "
                  "will be copied into the output; give the base's directory to have them",
                  o->base);
    if (pcbm_method_has_stats(o) &&
        (st = prepare_stats(o, r->ids, &r->stats_now, &r->stats_in, err)) != PCBM_OK)
        return st;
    if (r->layout.d == 0)
        pcbm_warn("no tensor is merged (all are excluded, non-float or missing from every task "
                  "model): the output is a copy of the base");
    return PCBM_OK;
}

uint64_t pcbm_run_space_needed(const merge_run *r)
{
    const pcbm_outlayout *op = &r->layout.out;
    const uint64_t block = 64 * 1024; /* generous for any filesystem's allocation unit */
    uint64_t need = 0;
    for (unsigned f = 0; f < op->nfiles; f++)
        need += pcbm_align_up(op->files[f].size, block);
    if (op->index_json)
        need += pcbm_align_up(strlen(op->index_json), block);
    const pcbm_model *base = r->layout.models[0];
    for (size_t i = 0; base && base->is_dir && pcbm_side_file_name(i); i++) {
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", base->dir, pcbm_side_file_name(i));
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            need += pcbm_align_up((uint64_t)sb.st_size, block);
    }
    /* journal: ~40 bytes per durable segment (64 MiB or more each), statistics: ~128 bytes per
     * task per record (one record per tensor in tensor scope), report and manifest: a few
     * hundred bytes per task and file; each may exist twice while it is rewritten */
    uint64_t nrec = r->o->scope == PCBM_SCOPE_TENSOR ? r->layout.nmerge + 1 : 1;
    uint64_t own = 40 * (r->layout.out.total_file_bytes / (1u << 20) + op->nfiles + 16) +
                   128 * nrec * (r->o->ntasks + 1) + 512 * ((uint64_t)r->o->ntasks + op->nfiles) +
                   4 * block;
    /* the staged rows of the embeddings (OUT.vocab-staging, beside OUT) */
    return need + 2 * pcbm_align_up(own, block) + r->vocab.stage_bytes;
}

pcbm_status pcbm_run_setup_ctx(merge_run *r, unsigned threads, pcbm_error *err)
{
    const pcbm_merge_opts *o = r->o;
    pcbm_mctx *mc = &r->mc;
    mc->o = o;
    mc->layout = &r->layout;
    mc->vocab = &r->vocab;
    mc->ntasks = o->ntasks;
    mc->threads = threads;
    mc->per_task_lambdas = o->lambdas != NULL;
    mc->stats_out = &r->stats_now;
    mc->stats_in = o->stats_in ? &r->stats_in : NULL;
    for (unsigned i = 0; i < o->ntasks; i++)
        mc->lam[i] = (float)(o->lambdas ? o->lambdas[i] : o->lambda);
    mc->tile_floats = (size_t)(1 + 2 * o->ntasks + 4) * PCBM_TILE;
    mc->qcap = r->layout.ndequant
                   ? pcbm_quant_scale_cap(&r->layout,
                                          pcbm_budget_max_block_elems(&r->layout, o->block_bytes))
                   : 0;
    mc->scratch_floats = mc->tile_floats + (size_t)(o->ntasks + 1) * 2 * mc->qcap;
    if (r->layout.nadapters) { /* LoRA factor caches, one per adapter, and a read buffer */
        for (unsigned m = 1; m <= o->ntasks; m++) {
            mc->lora_off[m] = mc->scratch_floats;
            mc->scratch_floats += pcbm_align_up(r->layout.lora_use[m].cache_floats, 16);
        }
        mc->lora_raw_off = mc->scratch_floats;
        mc->scratch_floats += PCBM_LORA_RAW_FLOATS;
        mc->lora_cached = pcbm_calloc((size_t)threads * (o->ntasks + 1), sizeof(size_t));
        if (!mc->lora_cached)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    pcbm_status pst = pcbm_params_bind(mc, err);
    if (pst != PCBM_OK)
        return pst;
    mc->scratch = pcbm_alloc_aligned((size_t)threads * mc->scratch_floats * sizeof(float));
    mc->kept_local = pcbm_calloc((size_t)threads * o->ntasks, sizeof(uint64_t));
    if (!mc->scratch || !mc->kept_local)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    return PCBM_OK;
}

/* A journal of an earlier run must describe this very merge. */
pcbm_status pcbm_run_check_journal(merge_run *r, const char *params, pcbm_error *err)
{
    const pcbm_journal *j = &r->journal;
    const pcbm_merge_opts *o = r->o;
    if (j->ninputs != o->ntasks + 1)
        return pcbm_fail(err, PCBM_ERR_STATS, "cannot resume %s: it was started with %u task "
                         "models, this run has %u; start over with `force`", r->od.partial,
                         j->ninputs - 1, o->ntasks);
    for (unsigned m = 0; m <= o->ntasks; m++) {
        if (j->inputs[m] == r->ids[m])
            continue;
        char who[64];
        snprintf(who, sizeof who, m ? "task model %u" : "the base", m);
        return pcbm_fail(err, PCBM_ERR_STATS, "cannot resume %s: %s (%s) changed since the "
                         "interrupted run (headers, sizes or data); start over with `force`",
                         r->od.partial, who, m ? o->tasks[m - 1] : o->base);
    }
    if (strcmp(j->params, params) != 0) {
        char diff[256];
        pcbm_params_differ(j->params, params, "method", NULL, 0, diff, sizeof diff);
        return pcbm_fail(err, PCBM_ERR_STATS, "cannot resume %s: the parameters changed (%s); "
                         "run with the same parameters, or start over with `force`",
                         r->od.partial, diff);
    }
    return PCBM_OK;
}

pcbm_status pcbm_run_on_segment(void *arg, const pcbm_segment *seg, pcbm_error *err)
{
    merge_run *r = arg;
    return pcbm_journal_add(&r->journal, seg, err);
}

/* Global statistics are saved as soon as they are known, so a resumed run skips their passes. */
static pcbm_status on_stats(void *arg, pcbm_error *err)
{
    merge_run *r = arg;
    if (r->mc.stats_in)
        return PCBM_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", r->od.partial, PCBM_STATS_NAME);
    snprintf(r->mc.stats_out->how, sizeof r->mc.stats_out->how, "%s", r->mc.stats_how);
    pcbm_status st = pcbm_run_export_ident(r, err);
    if (st == PCBM_OK)
        st = pcbm_statfile_write(path, r->mc.stats_out, r->o->ntasks, err);
    if (st == PCBM_OK) {
        r->journal.stats_saved = true;
        st = pcbm_journal_save(&r->journal, err);
    }
    return st;
}

static void add_hint(pcbm_error *err, const char *hint);

/* Counts the files that do not match the manifest, the partial directory's marker aside. */
static void count_mismatch(void *arg, const char *file, const char *expected, const char *found)
{
    (void)expected, (void)found;
    if (strcmp(file, PCBM_PARTIAL_MARKER) != 0)
        (*(unsigned *)arg)++;
}

/* A partial killed while publishing holds a manifest and no journal. It is published only when
 * the manifest says this merge wrote it (the same inputs, by identity, and the same parameters)
 * and every file, and only those, match it. */
static bool publishable(const merge_run *r, const char *params)
{
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/%s", r->od.partial, PCBM_MANIFEST_NAME);
    json_t *root = json_load_file(mpath, 0, NULL), *want = json_loads(params, 0, NULL);
    json_t *inputs = json_object_get(root, "inputs");
    bool ok = root && want && json_equal(json_object_get(root, "params"), want) &&
              json_array_size(inputs) == r->o->ntasks + 1;
    for (unsigned m = 0; ok && m <= r->o->ntasks; m++) {
        char h[20];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)r->ids[m]);
        const char *id = json_string_value(json_object_get(json_array_get(inputs, m), "identity"));
        ok = id && !strcmp(id, h);
    }
    json_decref(root);
    json_decref(want);
    unsigned bad = 0, counted = 0;
    return ok && pcbm_verify(r->od.partial, count_mismatch, &counted, &bad, NULL) == PCBM_OK &&
           counted == 0;
}

/* The journal: a new one, or the earlier run's, checked, with its saved statistics. */
static pcbm_status setup_journal(merge_run *r, pcbm_error *err)
{
    char path[4096], *params = pcbm_run_output_params(r->o);
    if (!params)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/%s", r->od.partial, PCBM_JOURNAL_NAME);
    pcbm_status st = PCBM_OK;
    if (r->resumed && access(path, F_OK) != 0) {
        /* no journal: the earlier run was publishing (manifest written), or had kept nothing */
        if (publishable(r, params)) {
            free(params);
            r->publish_only = true;
            return PCBM_OK;
        }
        char marker[4096];
        snprintf(marker, sizeof marker, "%s/%s", r->od.partial, PCBM_PARTIAL_MARKER);
        if (access(marker, F_OK) != 0) { /* a finished merge of other inputs or parameters */
            free(params);
            return pcbm_fail(err, PCBM_ERR_STATS, "cannot resume %s: it holds a finished merge "
                             "of other inputs or parameters (its manifest does not match this "
                             "merge); discard it with `force`", r->od.partial);
        }
        pcbm_warn("%s holds nothing that can be kept: starting over", r->od.partial);
        r->resumed = false;
        pcbm_status cst = pcbm_outdir_reset(&r->od, err);
        if (cst != PCBM_OK) {
            free(params);
            return cst;
        }
    }
    if (r->resumed) {
        st = pcbm_journal_load(path, &r->journal, err);
        if (st == PCBM_OK)
            st = pcbm_run_check_journal(r, params, err);
        free(params);
        if (st == PCBM_OK)
            pcbm_run_resume_files(r, r->journal.stats_saved || r->o->stats_in);
        if (st == PCBM_OK && r->journal.stats_saved && !r->o->stats_in) {
            snprintf(path, sizeof path, "%s/%s", r->od.partial, PCBM_STATS_NAME);
            st = pcbm_statfile_read(path, &r->stats_saved, err);
            if (st == PCBM_OK)
                r->mc.stats_in = &r->stats_saved;
            else
                add_hint(err, " (the partial output's own statistics: discard it and start "
                         "over with `force`)");
        }
        return st;
    }
    r->journal.path = pcbm_strdup(path);
    r->journal.params = params;
    r->journal.ninputs = r->o->ntasks + 1;
    memcpy(r->journal.inputs, r->ids, r->journal.ninputs * sizeof r->ids[0]);
    if (!(r->journal.fstat = pcbm_calloc(r->nfstat + 1, sizeof *r->fstat)))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    memcpy(r->journal.fstat, r->fstat, r->nfstat * sizeof *r->fstat);
    r->journal.nfstat = r->nfstat;
    return pcbm_journal_save(&r->journal, err);
}

static pcbm_status setup_output(merge_run *r, unsigned threads, pcbm_error *err)
{
    const pcbm_merge_opts *o = r->o;
    bool existed = false;
    pcbm_status st = pcbm_outdir_begin(&r->od, o->out, o->force, o->resume, &existed, err);
    if (st != PCBM_OK)
        return st;
    r->od_ok = true;
    r->resumed = existed;
    if (!existed && (st = pcbm_outdir_check_space(&r->od, pcbm_run_space_needed(r), err)) != PCBM_OK)
        return st;
    if ((st = setup_journal(r, err)) != PCBM_OK || r->publish_only)
        return st;
    r->keep_partial = true; /* from here on, a failure can be resumed */
    uint64_t reserved = pcbm_run_reserved_bytes(r, threads);
    pcbm_engine_cfg ec = {.mem_bytes = o->mem_bytes, .reserved_bytes = reserved,
                          .threads = threads, .io = o->io, .block_bytes = o->block_bytes,
                          .out_dir = r->od.partial, .progress = &r->progress,
                          .should_stop = o->should_stop, .user = o->user};
    r->progress.expected = pcbm_run_expected_passes(r);
    r->progress.pass_estimate = r->layout.merge_in_bytes;
    pcbm_method_prepare_layout(o, &r->layout);
    if ((st = pcbm_engine_create(&r->layout, &ec, &r->eng, err)) != PCBM_OK)
        return st;
    r->mc.eng = r->eng;
    if ((st = pcbm_run_load_ident(r, err)) != PCBM_OK)
        return st;
    r->mc.stats_done = on_stats;
    r->mc.stats_done_arg = r;
    if (r->resumed) {
        size_t kept = 0;
        st = pcbm_engine_resume_output(r->eng, r->journal.seg, r->journal.nseg, &kept, err);
        if (st != PCBM_OK)
            return st;
        uint64_t bytes = 0;
        for (size_t k = 0; k < kept; k++)
            bytes += r->journal.seg[k].end - r->journal.seg[k].start;
        char b[32], t[32];
        pcbm_info("resuming %s: %s of %s of output verified and kept%s", r->od.partial,
                  pcbm_fmt_bytes(bytes, b, sizeof b),
                  pcbm_fmt_bytes(r->layout.out.total_file_bytes, t, sizeof t),
                  r->mc.stats_in == &r->stats_saved ? ", statistics reused" : "");
        r->journal.nseg = kept;
        if ((st = pcbm_journal_save(&r->journal, err)) != PCBM_OK)
            return st;
    }
    pcbm_engine_on_segment(r->eng, pcbm_run_on_segment, r);
    return PCBM_OK;
}

void pcbm_run_teardown(merge_run *r, pcbm_status st)
{
    pcbm_engine_destroy(r->eng);
    bool keep = r->keep_partial && (st == PCBM_ERR_INTERRUPTED || st == PCBM_ERR_IO ||
                                    st == PCBM_ERR_NOSPACE);
    if (r->od_ok && st != PCBM_OK && !keep && !r->resumed)
        pcbm_outdir_discard(&r->od);
    if (r->od.final || r->od.partial) /* never begun: nothing to close (dirfd is 0) */
        pcbm_outdir_free(&r->od);
    if (r->plan_ok)
        pcbm_layout_free(&r->layout);
    for (unsigned i = 0; r->o && i <= r->o->ntasks && i < PCBM_MAX_MODELS; i++)
        pcbm_model_close(r->models[i]);
    pcbm_free_aligned(r->mc.scratch);
    free(r->mc.kept_local);
    free(r->mc.lora_cached);
    free(r->params);
    pcbm_statset_free(&r->stats_now);
    pcbm_statset_free(&r->stats_in);
    pcbm_statset_free(&r->stats_saved);
    pcbm_journal_free(&r->journal);
    free(r->fstat);
    pcbm_vocab_plan_free(&r->vocab);
}

/* Append to err's message (the caller's hint on what to do next). */
static void add_hint(pcbm_error *err, const char *hint)
{
    if (!err)
        return;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, "%s", hint);
}

/* Manifest: the xxh3-128 of every file of OUT, the method, parameters, inputs and version. */
pcbm_status pcbm_run_write_manifest(merge_run *r, const XXH128_hash_t *hashes, pcbm_error *err)
{
    json_t *root = json_object(), *files = json_array(), *inputs = json_array();
    char h[40];
    const pcbm_outlayout *op = &r->layout.out;
    for (unsigned f = 0; f < op->nfiles; f++) {
        XXH128_hash_t d = hashes ? hashes[f] : pcbm_engine_file_hash(r->eng, f);
        snprintf(h, sizeof h, "%016llx%016llx", (unsigned long long)d.high64,
                 (unsigned long long)d.low64);
        json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "name", op->files[f].name, "size",
                                               (json_int_t)op->files[f].size, "xxh3_128", h));
    }
    const char *names[48];
    size_t nn = 0;
    names[nn++] = PCBM_INDEX_NAME;
    names[nn++] = "merge_report.json";
    names[nn++] = PCBM_STATS_NAME;
    names[nn++] = PCBM_CARD_NAME;
    for (size_t i = 0; pcbm_side_file_name(i) && nn < sizeof names / sizeof *names; i++)
        names[nn++] = pcbm_side_file_name(i);
    pcbm_status st = pcbm_manifest_add_small_files(r->od.partial, names, nn, files, err);
    for (unsigned m = 0; m <= r->o->ntasks; m++) {
        snprintf(h, sizeof h, "%016llx", (unsigned long long)r->ids[m]);
        json_array_append_new(inputs, json_pack("{s:s,s:s}", "path",
                                                m ? r->o->tasks[m - 1] : r->o->base, "identity", h));
    }
    json_object_set_new(root, "tool", json_string("pcbmerge"));
    json_object_set_new(root, "version", json_string(PCBM_VERSION_STRING));
    json_object_set_new(root, "method", json_string(pcbm_method_name(r->o->method)));
    json_object_set_new(root, "params", json_loads(r->journal.params, 0, NULL));
    json_object_set_new(root, "inputs", inputs);
    json_object_set_new(root, "files", files);
    char *txt = st == PCBM_OK ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (st == PCBM_OK)
        st = txt ? pcbm_outdir_write(&r->od, PCBM_MANIFEST_NAME, txt, strlen(txt), err)
                 : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    free(txt);
    return st;
}

static pcbm_status finalize(merge_run *r, double t0, pcbm_error *err)
{
    pcbm_status st = pcbm_engine_finish_output(r->eng, err);
    if (st == PCBM_OK)
        st = pcbm_run_recheck_files(r, err);
    if (st != PCBM_OK)
        return st;
    double secs = pcbm_now() - t0;
    const pcbm_engine_report *er = pcbm_engine_get_report(r->eng);
    char *rep = pcbm_run_report_json(&r->mc, er, secs);
    st = rep ? write_outputs(r, &r->mc, &r->od, rep, err)
             : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing the report");
    free(rep);
    if (st == PCBM_OK) {
        /* the journal is the run's, not the model's: gone before OUT appears */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", r->od.partial, PCBM_JOURNAL_NAME);
        unlink(path);
        st = pcbm_run_write_manifest(r, NULL, err);
    }
    pcbm_test_point("finalize");
    if (st == PCBM_OK)
        st = pcbm_outdir_publish(&r->od, err);
    if (st == PCBM_OK) {
        pcbm_run_print_summary(&r->mc, er, secs);
        pcbm_info("wrote %s", r->o->out);
    }
    return st;
}

/* Passes a merge usually runs (the progress's "pass k of n"; a streaming fallback or tensor
 * scope adds more as they come). */
unsigned pcbm_run_expected_passes(const merge_run *r)
{
    const pcbm_merge_opts *o = r->o;
    if (r->mc.stats_in || !pcbm_method_has_stats(o) || r->layout.d == 0)
        return 1;
    if (o->scope == PCBM_SCOPE_TENSOR)
        return 1 + (unsigned)PCBM_MIN(r->layout.nmerge, 1000u);
    return o->method == PCBM_METHOD_PCB ? 5 : o->method == PCBM_METHOD_TIES ? 4 : 2;
}

/* Killed while publishing: every file was checked against the manifest; finish the rename. */
static pcbm_status finish_publication(merge_run *r, pcbm_error *err)
{
    pcbm_status st = pcbm_outdir_publish(&r->od, err);
    if (st == PCBM_OK)
        pcbm_info("finished publishing %s (verified against its manifest)", r->o->out);
    return st;
}

static pcbm_status run_merge(merge_run *r, unsigned threads, double t0, pcbm_error *err)
{
    pcbm_status st = pcbm_run_setup_inputs(r, err);
    if (st == PCBM_OK)
        st = pcbm_run_setup_ctx(r, threads, err);
    if (st == PCBM_OK && r->o->dry_run)
        return pcbm_run_dry(r, pcbm_run_expected_passes(r), err);
    if (st == PCBM_OK)
        st = setup_output(r, threads, err);
    if (st == PCBM_OK && r->publish_only)
        return finish_publication(r, err);
    if (st == PCBM_OK)
        st = pcbm_method_run(&r->mc, NULL, err);
    if (st == PCBM_OK && r->mc.stats_in == &r->stats_saved) /* resumed: report as first computed */
        snprintf(r->mc.stats_how, sizeof r->mc.stats_how, "%s", r->stats_saved.how);
    if (st == PCBM_OK)
        st = finalize(r, t0, err);
    if (st != PCBM_OK && r->keep_partial &&
        (st == PCBM_ERR_INTERRUPTED || st == PCBM_ERR_IO || st == PCBM_ERR_NOSPACE)) {
        char hint[512];
        snprintf(hint, sizeof hint, "\nthe finished part is kept in %s: run the same command "
                 "with `resume` to continue", r->od.partial);
        add_hint(err, hint);
    }
    return st;
}

static pcbm_status merge(const pcbm_merge_opts *o, pcbm_error *err)
{
    pcbm_status st = pcbm_run_check_opts(o, err);
    if (st != PCBM_OK)
        return st;
    double t0 = pcbm_now();
    unsigned threads = o->threads ? o->threads : pcbm_run_default_threads();
    merge_run *r = pcbm_calloc(1, sizeof *r);
    if (!r)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    r->o = o;
    pcbm_progress_init(&r->progress, o->on_progress, o->user, t0, 1, 0);
    st = run_merge(r, threads, t0, err);
    bool kept = r->keep_partial && (st == PCBM_ERR_INTERRUPTED || st == PCBM_ERR_IO ||
                                    st == PCBM_ERR_NOSPACE);
    if (r->vocab.nstaged && !o->dry_run && !kept) /* published, or nothing to resume */
        pcbm_vocab_unstage(o->out);
    pcbm_run_teardown(r, st);
    pcbm_progress_done(&r->progress, st);
    free(r);
    if (st == PCBM_ERR_INTERRUPTED)
        pcbm_engine_clear_stop();
    return st;
}

/* The size of the first published pcbm_merge_opts with struct_size: callers built against it
 * (or later) are accepted. */
#define MERGE_OPTS_V1_SIZE (offsetof(pcbm_merge_opts, user) + sizeof(void *))

/* The caller's options as this library version knows them: fields the caller's struct_size does
 * not cover take their defaults. PCBM_ERR_USAGE when struct_size is not one this library knows
 * (options not set up with pcbm_merge_opts_init). */
static pcbm_status merge_opts_import(const pcbm_merge_opts *in, pcbm_merge_opts *out,
                                     pcbm_error *err)
{
    pcbm_merge_opts_init(out);
    if (!in)
        return pcbm_fail(err, PCBM_ERR_USAGE, "no merge options given");
    if (in->struct_size < MERGE_OPTS_V1_SIZE)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the merge options' struct_size is %u, which no "
                         "version of libpcbmerge has used: set them up with pcbm_merge_opts_init()",
                         (unsigned)in->struct_size);
    memcpy(out, in, PCBM_MIN((size_t)in->struct_size, sizeof *out));
    out->struct_size = (uint32_t)sizeof *out;
    if (out->scope == PCBM_SCOPE_AUTO) /* the method's own scope */
        out->scope = pcbm_method_default_scope(out);
    if (out->scope != PCBM_SCOPE_GLOBAL && out->scope != PCBM_SCOPE_TENSOR)
        return pcbm_fail(err, PCBM_ERR_USAGE, "`scope` is %d, which is none of "
                         "PCBM_SCOPE_GLOBAL, PCBM_SCOPE_TENSOR, PCBM_SCOPE_AUTO", (int)out->scope);
    return PCBM_OK;
}

pcbm_status pcbm_run_call(const pcbm_merge_opts *user_opts, bool optional, pcbm_run_call_fn fn,
                          void *arg, pcbm_error *err)
{
    pcbm_error_clear(err);
    pcbm_merge_opts o;
    pcbm_status st = merge_opts_import(user_opts, &o, err);
    if (optional && !user_opts) /* the defaults */
        st = PCBM_OK, pcbm_error_clear(err);
    if (st != PCBM_OK)
        return st;
    pcbm_log_sink sink = {.fn = o.on_message, .user = o.user};
    pcbm_log_sink *prev = pcbm_log_enter(&sink);
    st = fn(user_opts ? &o : NULL, arg, err);
    pcbm_log_leave(&sink, prev);
    return st;
}

static pcbm_status merge_call(const pcbm_merge_opts *o, void *arg, pcbm_error *err)
{
    (void)arg;
    return merge(o, err);
}

pcbm_status pcbm_merge(const pcbm_merge_opts *user_opts, pcbm_error *err)
{
    return pcbm_run_call(user_opts, false, merge_call, NULL, err);
}

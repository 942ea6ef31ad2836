/* SPDX-License-Identifier: Apache-2.0 */
/*
 * split.c — one merge split across machines: the phases `plan`, `stats`, `reduce`, `apply` and
 * `finalize` over a shared output directory DIR (see split.h for how statistics travel).
 *
 * Layout of DIR.partial while the merge runs:
 *   .split/plan.json.zst            the merge's parameters, the inputs' identity, the parts
 *   .split/round-R.part-I.zst       part I's part of statistics round R (global scope)
 *   .split/round-R.zst              round R reduced over all parts
 *   .split/stats.part-I.zst         part I's statistics (tensor scope: one round)
 *   .split/ident.part-I.zst         part I's input identity table (what its first full statistics
 *                                   pass read of its tensors; its later passes check against it)
 *   .split/stats.complete           the statistics are known (merge_stats.json.zst is written)
 *   .split/part-I.journal.json.zst  part I's durable output segments (its apply resumes from it)
 *   .split/part-I.done.json.zst     part I's files are written: their xxh3-128, kept counts
 *   merge_stats.json.zst, model-*.safetensors   what will be published
 * A part owns a contiguous run of output files (balanced by the bytes it reads and writes), so
 * parts never write the same file. finalize writes the index, side files, report and manifest,
 * removes .split and renames DIR.partial to DIR: nothing under DIR is ever partial.
 */
#include "method.h"
#include "run_internal.h"
#include "split.h"

#include "../common/zjson.h"
#include "../sched/ident.h"
#include "../writer/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define PLAN_NAME "plan.json.zst"
#define PLAN_FORMAT "pcbmerge-split-plan"
#define PLAN_VERSION 1
#define COMPLETE_NAME "stats.complete"
#define MAX_PARTS 100000u

typedef struct split_plan {
    pcbm_merge_opts o;          /* the merge's parameters; strings below own its pointers */
    char *base;
    char **tasks;
    double *lambdas, *weights, *densities, *gammas, *epsilons;
    char **exclude;
    char *command;              /* how the merge was planned, for the model card */
    pcbm_params *params;        /* a recipe's per-tensor settings, or NULL */
    char *recipe;               /* a recipe's text, or NULL */
    char *chat_template;        /* the output's chat template (pcbm_merge_opts), or NULL */
    char *tokenizer_source;     /* the output's vocabulary (pcbm_merge_opts), or NULL */
    unsigned parts;
    unsigned *file_lo, *file_hi;
    uint64_t *part_bytes;
    unsigned nmodels;
    uint64_t ids[PCBM_MAX_MODELS];
    uint64_t plan_id;
    unsigned rounds_max;
    pcbm_outdir od;             /* DIR and DIR.partial */
    char ctl[3072];             /* DIR.partial/.split */
} split_plan;

static void plan_free(split_plan *sp)
{
    free(sp->command);
    pcbm_params_free(sp->params);
    free(sp->recipe);
    free(sp->chat_template);
    free(sp->tokenizer_source);
    free(sp->base);
    for (unsigned i = 0; sp->tasks && i < sp->o.ntasks; i++)
        free(sp->tasks[i]);
    free(sp->tasks);
    free(sp->lambdas);
    free(sp->weights);
    free(sp->densities);
    free(sp->gammas);
    free(sp->epsilons);
    for (unsigned i = 0; sp->exclude && i < sp->o.nexclude; i++)
        free(sp->exclude[i]);
    free(sp->exclude);
    free(sp->file_lo);
    free(sp->file_hi);
    free(sp->part_bytes);
    pcbm_outdir_free(&sp->od);
    memset(sp, 0, sizeof *sp);
}

static void ctl_path(const split_plan *sp, char *buf, size_t len, const char *fmt, unsigned n)
{
    char name[256];
    snprintf(name, sizeof name, fmt, n);
    snprintf(buf, len, "%s/%s", sp->ctl, name);
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ---- the plan file ------------------------------------------------------------------------ */

static json_t *doubles_json(const double *v, unsigned n)
{
    if (!v)
        return json_null();
    json_t *a = json_array();
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* Every parameter of the merge (run-time settings excluded), as JSON. */
static json_t *opts_json(const pcbm_merge_opts *o)
{
    json_t *j = json_object(), *tasks = json_array(), *ex = json_array();
    for (unsigned i = 0; i < o->ntasks; i++)
        json_array_append_new(tasks, json_string(o->tasks[i]));
    for (unsigned i = 0; i < o->nexclude; i++)
        json_array_append_new(ex, json_string(o->exclude[i]));
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    json_object_set_new(j, "base", json_string(o->base));
    json_object_set_new(j, "tasks", tasks);
    json_object_set_new(j, "method", json_string(pcbm_method_name(o->method)));
    json_object_set_new(j, "density", json_real(o->density));
    json_object_set_new(j, "lambda", json_real(o->lambda));
    json_object_set_new(j, "lambdas", doubles_json(o->lambdas, o->ntasks));
    json_object_set_new(j, "weights", doubles_json(o->weights, o->ntasks));
    json_object_set_new(j, "densities", doubles_json(o->densities, o->ntasks));
    json_object_set_new(j, "normalize", json_integer(o->normalize));
    json_object_set_new(j, "rescale", json_integer(o->rescale));
    if (o->semantics == PCBM_SEMANTICS_MERGEKIT)
        json_object_set_new(j, "semantics", json_string("mergekit"));
    json_object_set_new(j, "gamma", json_real(o->gamma));
    json_object_set_new(j, "epsilon", json_real(o->epsilon));
    json_object_set_new(j, "gammas", doubles_json(o->gammas, o->ntasks));
    json_object_set_new(j, "epsilons", doubles_json(o->epsilons, o->ntasks));
    json_object_set_new(j, "clamp_ratio", json_real(o->clamp_ratio));
    json_object_set_new(j, "scope", json_string(o->scope == PCBM_SCOPE_GLOBAL ? "global" : "tensor"));
    json_object_set_new(j, "exact", json_boolean(o->stats_mode == PCBM_STATS_EXACT));
    json_object_set_new(j, "streaming", json_boolean(o->stats_mode == PCBM_STATS_STREAMING));
    json_object_set_new(j, "seed", json_string(seed));
    json_object_set_new(j, "shard_bytes", json_integer((json_int_t)o->shard_bytes));
    json_object_set_new(j, "dtype", json_string(o->out_dtype == PCBM_DTYPE_BASE
                                                    ? "base" : pcbm_dtype_name(o->out_dtype)));
    json_object_set_new(j, "exclude", ex);
    json_object_set_new(j, "allow_extra", json_boolean(o->allow_extra));
    json_object_set_new(j, "allow_nonfinite", json_boolean(o->allow_nonfinite));
    json_object_set_new(j, "require_all", json_boolean(o->require_all));
    json_object_set_new(j, "take_nonfloat_base", json_boolean(o->take_nonfloat_base));
    /* slerp, nuslerp, model_stock, sce (absent from older plans: the defaults) */
    if (!isnan(o->t))
        json_object_set_new(j, "t", json_real(o->t));
    json_object_set_new(j, "select_topk", json_real(o->select_topk));
    json_object_set_new(j, "nuslerp_flatten", json_integer(o->nuslerp_flatten));
    json_object_set_new(j, "nuslerp_row_wise", json_integer(o->nuslerp_row_wise));
    json_object_set_new(j, "filter_wise", json_integer(o->filter_wise));
    if (o->command)
        json_object_set_new(j, "command", json_string(o->command));
    /* a recipe's merge: its per-tensor settings and text (absent otherwise) */
    if (o->params)
        json_object_set_new(j, "recipe_params", pcbm_params_json(o->params, o->ntasks));
    if (o->recipe)
        json_object_set_new(j, "recipe", json_string(o->recipe));
    if (o->chat_template)
        json_object_set_new(j, "chat_template", json_string(o->chat_template));
    if (o->tokenizer_source)
        json_object_set_new(j, "tokenizer_source", json_string(o->tokenizer_source));
    return j;
}

static bool doubles_from(json_t *a, unsigned n, double **out)
{
    *out = NULL;
    if (json_is_null(a))
        return true;
    if (!json_is_array(a) || json_array_size(a) != n || !(*out = pcbm_calloc(n ? n : 1, sizeof(double))))
        return false;
    for (unsigned i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v))
            return false;
        (*out)[i] = json_number_value(v);
    }
    return true;
}

static bool strings_from(json_t *a, char ***out, unsigned *n)
{
    *out = NULL;
    *n = 0;
    if (!json_is_array(a))
        return false;
    size_t cnt = json_array_size(a);
    if (!(*out = pcbm_calloc(cnt ? cnt : 1, sizeof(char *))))
        return false;
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !((*out)[i] = pcbm_strdup(s)))
            return false;
        *n = (unsigned)(i + 1);
    }
    return true;
}

static bool opts_from(json_t *j, split_plan *sp)
{
    pcbm_merge_opts *o = &sp->o;
    pcbm_merge_opts_init(o);
    const char *base = json_string_value(json_object_get(j, "base"));
    const char *method = json_string_value(json_object_get(j, "method"));
    const char *scope = json_string_value(json_object_get(j, "scope"));
    const char *seed = json_string_value(json_object_get(j, "seed"));
    const char *dtype = json_string_value(json_object_get(j, "dtype"));
    unsigned nt = 0, nex = 0;
    if (!base || !method || !scope || !seed || !dtype || !(sp->base = pcbm_strdup(base)) ||
        !strings_from(json_object_get(j, "tasks"), &sp->tasks, &nt) ||
        !strings_from(json_object_get(j, "exclude"), &sp->exclude, &nex))
        return false;
    o->base = sp->base;
    o->tasks = (const char *const *)sp->tasks;
    o->ntasks = nt;
    o->exclude = (const char *const *)sp->exclude;
    o->nexclude = nex;
    if ((o->method = pcbm_method_parse(method)) == PCBM_METHOD_COUNT)
        return false;
    o->scope = strcmp(scope, "tensor") == 0 ? PCBM_SCOPE_TENSOR : PCBM_SCOPE_GLOBAL;
    o->seed = strtoull(seed, NULL, 10);
    o->out_dtype = strcmp(dtype, "base") == 0 ? PCBM_DTYPE_BASE : pcbm_dtype_parse(dtype);
    o->density = json_number_value(json_object_get(j, "density"));
    o->lambda = json_number_value(json_object_get(j, "lambda"));
    o->clamp_ratio = json_number_value(json_object_get(j, "clamp_ratio"));
    o->stats_mode = json_is_true(json_object_get(j, "exact")) ? PCBM_STATS_EXACT
                    : json_is_true(json_object_get(j, "streaming")) ? PCBM_STATS_STREAMING
                    : PCBM_STATS_AUTO;
    o->shard_bytes = (uint64_t)json_integer_value(json_object_get(j, "shard_bytes"));
    o->allow_extra = json_is_true(json_object_get(j, "allow_extra"));
    o->allow_nonfinite = json_is_true(json_object_get(j, "allow_nonfinite"));
    o->require_all = json_is_true(json_object_get(j, "require_all"));
    o->take_nonfloat_base = json_is_true(json_object_get(j, "take_nonfloat_base"));
    json_t *t = json_object_get(j, "t"), *topk = json_object_get(j, "select_topk");
    if (json_is_number(t))
        o->t = json_number_value(t);
    if (json_is_number(topk))
        o->select_topk = json_number_value(topk);
    o->nuslerp_flatten = (int)json_integer_value(json_object_get(j, "nuslerp_flatten"));
    o->nuslerp_row_wise = (int)json_integer_value(json_object_get(j, "nuslerp_row_wise"));
    o->filter_wise = (int)json_integer_value(json_object_get(j, "filter_wise"));
    json_t *dens = json_object_get(j, "densities"); /* absent from older plans: none */
    if (!doubles_from(json_object_get(j, "lambdas"), nt, &sp->lambdas) ||
        !doubles_from(json_object_get(j, "weights"), nt, &sp->weights) ||
        !doubles_from(dens ? dens : json_null(), nt, &sp->densities))
        return false;
    o->lambdas = sp->lambdas;
    o->weights = sp->weights;
    o->densities = sp->densities;
    o->normalize = (int)json_integer_value(json_object_get(j, "normalize"));
    o->rescale = (int)json_integer_value(json_object_get(j, "rescale"));
    const char *sem = json_string_value(json_object_get(j, "semantics")); /* absent: official */
    o->semantics = sem && strcmp(sem, "mergekit") == 0 ? PCBM_SEMANTICS_MERGEKIT
                                                       : PCBM_SEMANTICS_OFFICIAL;
    json_t *gamma = json_object_get(j, "gamma"), *eps = json_object_get(j, "epsilon");
    if (gamma) /* absent from older plans: the defaults */
        o->gamma = json_number_value(gamma);
    if (eps)
        o->epsilon = json_number_value(eps);
    json_t *gs = json_object_get(j, "gammas"), *es = json_object_get(j, "epsilons"); /* absent
                                                                  from older plans: none */
    if (!doubles_from(gs ? gs : json_null(), nt, &sp->gammas) ||
        !doubles_from(es ? es : json_null(), nt, &sp->epsilons))
        return false;
    o->gammas = sp->gammas;
    o->epsilons = sp->epsilons;
    const char *cmd = json_string_value(json_object_get(j, "command"));
    if (cmd && !(sp->command = pcbm_strdup(cmd)))
        return false;
    o->command = sp->command;
    json_t *rp = json_object_get(j, "recipe_params");
    pcbm_error perr;
    if (rp && pcbm_params_from_json(rp, &sp->params, &perr) != PCBM_OK)
        return false;
    o->params = sp->params;
    const char *rtext = json_string_value(json_object_get(j, "recipe"));
    if (rtext && !(sp->recipe = pcbm_strdup(rtext)))
        return false;
    o->recipe = sp->recipe;
    const char *ct = json_string_value(json_object_get(j, "chat_template"));
    if (ct && !(sp->chat_template = pcbm_strdup(ct)))
        return false;
    o->chat_template = sp->chat_template;
    const char *ts = json_string_value(json_object_get(j, "tokenizer_source"));
    if (ts && !(sp->tokenizer_source = pcbm_strdup(ts)))
        return false;
    o->tokenizer_source = sp->tokenizer_source;
    return true;
}

/* The plan's identity: its parameters, inputs and parts (round files carry it). */
static uint64_t plan_identity(json_t *root)
{
    json_t *copy = json_deep_copy(root);
    json_object_del(copy, "plan_id");
    char *txt = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    uint64_t h = txt ? XXH3_64bits(txt, strlen(txt)) : 0;
    free(txt);
    return h;
}

static json_t *plan_json(const split_plan *sp)
{
    json_t *root = json_object(), *ids = json_array(), *parts = json_array();
    char h[17];
    for (unsigned m = 0; m < sp->nmodels; m++) {
        snprintf(h, sizeof h, "%016" PRIx64, sp->ids[m]);
        json_array_append_new(ids, json_string(h));
    }
    for (unsigned u = 0; u < sp->parts; u++)
        json_array_append_new(parts, json_pack("{s:i,s:i,s:I}", "file_lo", (int)sp->file_lo[u],
                                               "file_hi", (int)sp->file_hi[u], "bytes",
                                               (json_int_t)sp->part_bytes[u]));
    json_object_set_new(root, "format", json_string(PLAN_FORMAT));
    json_object_set_new(root, "format_version", json_integer(PLAN_VERSION));
    json_object_set_new(root, "version", json_string(PCBM_VERSION_STRING));
    json_object_set_new(root, "merge", opts_json(&sp->o));
    json_object_set_new(root, "inputs", ids);
    json_object_set_new(root, "parts", parts);
    json_object_set_new(root, "rounds_max", json_integer(sp->rounds_max));
    uint64_t id = plan_identity(root);
    snprintf(h, sizeof h, "%016" PRIx64, id);
    json_object_set_new(root, "plan_id", json_string(h));
    return root;
}

static pcbm_status plan_damaged(const char *path, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_STATS, "the split plan %s is damaged or of another version: "
                     "plan again with `force`", path);
}

static pcbm_status plan_from_json(json_t *root, const char *path, split_plan *sp, pcbm_error *err)
{
    const char *fmt = json_string_value(json_object_get(root, "format"));
    const char *ver = json_string_value(json_object_get(root, "version"));
    const char *pid = json_string_value(json_object_get(root, "plan_id"));
    json_t *ids = json_object_get(root, "inputs"), *parts = json_object_get(root, "parts");
    if (!fmt || strcmp(fmt, PLAN_FORMAT) != 0 ||
        json_integer_value(json_object_get(root, "format_version")) != PLAN_VERSION || !pid ||
        !json_is_array(ids) || !json_is_array(parts) || json_array_size(parts) < 1 ||
        json_array_size(parts) > MAX_PARTS || !opts_from(json_object_get(root, "merge"), sp) ||
        json_array_size(ids) != sp->o.ntasks + 1 || sp->o.ntasks > PCBM_MAX_TASKS)
        return plan_damaged(path, err);
    if (!ver || strcmp(ver, PCBM_VERSION_STRING) != 0)
        return pcbm_fail(err, PCBM_ERR_STATS, "the split plan %s was made by pcbmerge %s; this is "
                         "%s: every phase of one merge must run the same version (or plan again "
                         "with `force`)", path, ver ? ver : "?", PCBM_VERSION_STRING);
    sp->plan_id = strtoull(pid, NULL, 16);
    if (sp->plan_id != plan_identity(root))
        return plan_damaged(path, err);
    sp->nmodels = sp->o.ntasks + 1;
    for (unsigned m = 0; m < sp->nmodels; m++) {
        const char *s = json_string_value(json_array_get(ids, m));
        if (!s)
            return plan_damaged(path, err);
        sp->ids[m] = strtoull(s, NULL, 16);
    }
    sp->parts = (unsigned)json_array_size(parts);
    sp->file_lo = pcbm_calloc(sp->parts, sizeof(unsigned));
    sp->file_hi = pcbm_calloc(sp->parts, sizeof(unsigned));
    sp->part_bytes = pcbm_calloc(sp->parts, sizeof(uint64_t));
    if (!sp->file_lo || !sp->file_hi || !sp->part_bytes)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    for (unsigned u = 0; u < sp->parts; u++) {
        json_t *e = json_array_get(parts, u);
        sp->file_lo[u] = (unsigned)json_integer_value(json_object_get(e, "file_lo"));
        sp->file_hi[u] = (unsigned)json_integer_value(json_object_get(e, "file_hi"));
        sp->part_bytes[u] = (uint64_t)json_integer_value(json_object_get(e, "bytes"));
        if (sp->file_hi[u] < sp->file_lo[u] || (u && sp->file_lo[u] != sp->file_hi[u - 1]))
            return plan_damaged(path, err);
    }
    sp->rounds_max = (unsigned)json_integer_value(json_object_get(root, "rounds_max"));
    return PCBM_OK;
}

/* ---- planning ----------------------------------------------------------------------------- */

/* Bytes a part moves for output file f: every input read of its tensors and the output. */
static uint64_t file_work(const pcbm_layout *p, unsigned f)
{
    const pcbm_out_file *of = &p->out.files[f];
    uint64_t w = of->size;
    for (size_t i = of->first; i < of->first + of->count; i++) {
        const pcbm_tlayout *t = &p->t[i];
        unsigned nin = t->kind == PCBM_T_MERGE ? p->nmodels : 1;
        for (unsigned m = 0; m < nin; m++)
            w += t->units * t->in_unit[m];
    }
    return w;
}

/* Greedy cut of the files into runs of at most `cap` bytes of work, cutting early when the
 * files left are as many as the parts left (no part is empty while there are files for it).
 * Returns the number of runs used (K + 1 when cap is too small). */
static unsigned cut_runs(const uint64_t *w, unsigned nf, unsigned K, uint64_t cap, unsigned *hi)
{
    unsigned u = 0, f = 0;
    while (f < nf) {
        if (u == K)
            return K + 1;
        uint64_t load = 0;
        while (f < nf && (load == 0 || load + w[f] <= cap) && (load == 0 || nf - f > K - u - 1)) {
            if (w[f] > cap)
                return K + 1;
            load += w[f++];
        }
        hi[u++] = f;
    }
    for (unsigned k = u; k < K; k++)
        hi[k] = nf;
    return u;
}

/* Contiguous runs of output files, K of them, whose largest work (bytes read and written) is as
 * small as possible: the smallest capacity the greedy cut fits in K runs (binary search). With
 * more parts than files, the last parts are empty. */
static void balance(const pcbm_layout *p, split_plan *sp)
{
    unsigned nf = p->out.nfiles, K = sp->parts;
    uint64_t *w = pcbm_calloc(nf ? nf : 1, sizeof *w), lo = 0, hi = 0;
    unsigned *cut = pcbm_calloc(K, sizeof *cut);
    if (!w || !cut) { /* out of memory: everything in the first part (still correct) */
        for (unsigned u = 0; u < K; u++)
            sp->file_lo[u] = u ? nf : 0, sp->file_hi[u] = nf;
        free(w);
        free(cut);
        return;
    }
    for (unsigned f = 0; f < nf; f++) {
        w[f] = file_work(p, f);
        lo = PCBM_MAX(lo, w[f]);
        hi += w[f];
    }
    while (lo < hi) { /* the smallest cap that fits */
        uint64_t mid = lo + (hi - lo) / 2;
        if (cut_runs(w, nf, K, mid, cut) <= K)
            hi = mid;
        else
            lo = mid + 1;
    }
    cut_runs(w, nf, K, lo, cut);
    unsigned f = 0;
    for (unsigned u = 0; u < K; u++) {
        sp->file_lo[u] = f;
        sp->file_hi[u] = cut[u];
        sp->part_bytes[u] = 0;
        for (; f < cut[u]; f++)
            sp->part_bytes[u] += w[f];
    }
    free(w);
    free(cut);
}

static pcbm_status read_plan_file(const char *ctl, split_plan *sp, pcbm_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", ctl, PLAN_NAME);
    json_t *root = NULL;
    pcbm_status st = pcbm_zjson_read(path, &root, "split plan", err);
    if (st == PCBM_OK)
        st = plan_from_json(root, path, sp, err);
    json_decref(root);
    return st;
}

static pcbm_status split_plan_run(const pcbm_merge_opts *o, unsigned parts, pcbm_error *err);

static pcbm_status plan_call(const pcbm_merge_opts *o, void *arg, pcbm_error *err)
{
    return split_plan_run(o, *(const unsigned *)arg, err);
}

pcbm_status pcbm_split_plan(const pcbm_merge_opts *user_opts, unsigned parts, pcbm_error *err)
{
    return pcbm_run_call(user_opts, false, plan_call, &parts, err);
}

static pcbm_status split_plan_run(const pcbm_merge_opts *o, unsigned parts, pcbm_error *err)
{
    pcbm_status st = pcbm_run_check_opts(o, err);
    if (st != PCBM_OK)
        return st;
    if (parts < 1 || parts > MAX_PARTS)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the number of parts must be 1 to %u, got %u", MAX_PARTS, parts);
    if (o->dry_run)
        return pcbm_fail(err, PCBM_ERR_USAGE, "a split merge is planned for real: check it first "
                         "with a merge's `dry_run`");
    if (o->stats_in || o->resume)
        return pcbm_fail(err, PCBM_ERR_USAGE, "a split plan takes neither `stats_in` nor `resume`: a split "
                         "merge computes its statistics in rounds and every phase resumes by itself");
    merge_run *r = pcbm_calloc(1, sizeof *r);
    split_plan *sp = pcbm_calloc(1, sizeof *sp);
    json_t *root = NULL;
    if (!r || !sp) {
        free(r);
        free(sp);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    r->o = o;
    st = pcbm_run_setup_inputs(r, err);
    if (st == PCBM_OK) {
        sp->o = *o;
        sp->parts = parts;
        sp->nmodels = o->ntasks + 1;
        memcpy(sp->ids, r->ids, sizeof r->ids);
        sp->file_lo = pcbm_calloc(parts, sizeof(unsigned));
        sp->file_hi = pcbm_calloc(parts, sizeof(unsigned));
        sp->part_bytes = pcbm_calloc(parts, sizeof(uint64_t));
        if (!sp->file_lo || !sp->file_hi || !sp->part_bytes)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    if (st == PCBM_OK)
        st = pcbm_params_check(o, &r->layout, err); /* a recipe's required parameters */
    if (st == PCBM_OK) {
        balance(&r->layout, sp);
        sp->rounds_max = pcbm_method_max_rounds(o, &r->layout);
        root = plan_json(sp);
        st = pcbm_outdir_attach(&sp->od, o->out, err);
    }
    char ctl[3072], path[4096];
    if (st == PCBM_OK) {
        snprintf(ctl, sizeof ctl, "%s/%s", sp->od.partial, PCBM_SPLIT_CTL);
        snprintf(path, sizeof path, "%s/%s", ctl, PLAN_NAME);
        if (exists(sp->od.final)) {
            st = pcbm_fail(err, PCBM_ERR_EXISTS, "output %s already exists: choose another `out` "
                           "or remove it first", sp->od.final);
        } else if (exists(path) && !o->force) {
            /* planned before: the same plan is a no-op, another one needs --force */
            split_plan old;
            memset(&old, 0, sizeof old);
            pcbm_error e2;
            const char *pid = json_string_value(json_object_get(root, "plan_id"));
            if (read_plan_file(ctl, &old, &e2) == PCBM_OK && pid &&
                old.plan_id == strtoull(pid, NULL, 16)) {
                pcbm_info("%s is already planned with these parameters (%u parts): nothing to do",
                          sp->od.final, parts);
                plan_free(&old);
                json_decref(root);
                pcbm_run_teardown(r, PCBM_OK);
                free(r);
                plan_free(sp);
                free(sp);
                return PCBM_OK;
            }
            plan_free(&old);
            st = pcbm_fail(err, PCBM_ERR_EXISTS, "%s holds another plan (other parameters, inputs "
                           "or parts): discard it with `force` and plan anew",
                           sp->od.partial);
        }
    }
    if (st == PCBM_OK) {
        /* a fresh partial directory (an old one only with `force`) */
        pcbm_outdir od;
        bool existed = false;
        st = pcbm_outdir_begin(&od, o->out, o->force, 0, &existed, err);
        if (st == PCBM_OK)
            st = pcbm_outdir_check_space(&od, pcbm_run_space_needed(r), err);
        if (st == PCBM_OK && mkdir(ctl, 0755) != 0 && errno != EEXIST)
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot create %s: %s", ctl, strerror(errno));
        if (st == PCBM_OK)
            st = pcbm_zjson_write(path, root, "split plan", err);
        if (st != PCBM_OK && od.partial && !existed)
            pcbm_outdir_discard(&od);
        pcbm_outdir_free(&od);
    }
    if (st == PCBM_OK) {
        char b[32];
        pcbm_info("planned %s: %s merge of %u task model(s), %u part(s) over %u output file(s), "
                  "at most %u statistics round(s)", sp->od.final, pcbm_method_name(o->method),
                  o->ntasks, parts, r->layout.out.nfiles, sp->rounds_max);
        for (unsigned u = 0; u < parts; u++) {
            if (sp->file_lo[u] == sp->file_hi[u])
                pcbm_info("  part %u: no output file (nothing to do)", u);
            else
                pcbm_info("  part %u: output files %u-%u, %s to move", u, sp->file_lo[u] + 1,
                          sp->file_hi[u], pcbm_fmt_bytes(sp->part_bytes[u], b, sizeof b));
        }
        for (unsigned u = 0; u < parts; u++)
            if (sp->file_lo[u] == sp->file_hi[u]) {
                pcbm_warn("%u part(s) have no output file to write (%u files for %u parts): "
                          "a smaller `shard_bytes` gives every part work", parts - r->layout.out.nfiles,
                          r->layout.out.nfiles, parts);
                break;
            }
    }
    json_decref(root);
    pcbm_run_teardown(r, st);
    free(r);
    sp->o.tasks = NULL; /* borrowed from the caller: not freed */
    sp->o.ntasks = 0;
    sp->o.nexclude = 0;
    plan_free(sp);
    free(sp);
    return st;
}

/* ---- the phases ----------------------------------------------------------------------------- */

static pcbm_status load_plan(const char *dir, split_plan *sp, pcbm_error *err)
{
    memset(sp, 0, sizeof *sp);
    pcbm_status st = pcbm_outdir_attach(&sp->od, dir, err);
    if (st != PCBM_OK)
        return st;
    snprintf(sp->ctl, sizeof sp->ctl, "%s/%s", sp->od.partial, PCBM_SPLIT_CTL);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", sp->ctl, PLAN_NAME);
    if (!exists(path)) {
        if (exists(sp->od.final) && !exists(sp->od.partial))
            return pcbm_fail(err, PCBM_ERR_EXISTS, "%s is already finalized (published): "
                             "nothing is left to do", sp->od.final);
        return pcbm_fail(err, PCBM_ERR_USAGE, "no split merge is planned for %s (%s is "
                         "missing): plan the split merge into %s first", dir, path,
                         dir);
    }
    return read_plan_file(sp->ctl, sp, err);
}

/* One process per part (batch systems do start a job twice): an flock on a file of .split. */
static pcbm_status take_lock(const split_plan *sp, const char *name, const char *who, int *fd,
                             pcbm_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", sp->ctl, name);
    int rc = pcbm_lock_file(path, O_RDWR | O_CREAT, fd);
    if (rc == -EWOULDBLOCK)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s of %s is running in another process right "
                         "now: wait for it (or stop it) and run this again", who, sp->od.final);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open or lock %s: %s", path, strerror(-rc));
    return PCBM_OK;
}

/* The merge as planned, with this run's run-time settings; inputs opened, checked and compared
 * with the plan's. */
static pcbm_status open_run(split_plan *sp, const pcbm_merge_opts *rt, merge_run *r,
                            const char *stats_in, pcbm_error *err)
{
    pcbm_merge_opts *o = &sp->o;
    o->out = sp->od.final;
    o->mem_bytes = rt ? rt->mem_bytes : o->mem_bytes;
    o->threads = rt ? rt->threads : 0;
    o->io = rt ? rt->io : PCBM_IO_AUTO;
    o->block_bytes = rt ? rt->block_bytes : 0;
    o->on_message = rt ? rt->on_message : NULL;
    o->on_progress = rt ? rt->on_progress : NULL;
    o->should_stop = rt ? rt->should_stop : NULL;
    o->user = rt ? rt->user : NULL;
    o->stats_in = stats_in;
    r->o = o;
    pcbm_status st = pcbm_run_setup_inputs(r, err);
    for (unsigned m = 0; st == PCBM_OK && m < sp->nmodels; m++)
        if (r->ids[m] != sp->ids[m])
            st = pcbm_fail(err, PCBM_ERR_STATS, "%s (%s) changed since the merge was planned "
                           "(headers, sizes or data): plan again with `force`",
                           m ? "a task model" : "the base", m ? o->tasks[m - 1] : o->base);
    if (st == PCBM_OK)
        st = pcbm_run_setup_ctx(r, o->threads ? o->threads : pcbm_run_default_threads(), err);
    return st;
}

static pcbm_status create_engine(merge_run *r, const split_plan *sp, unsigned part,
                                 pcbm_error *err)
{
    const pcbm_merge_opts *o = r->o;
    uint64_t reserved = pcbm_run_reserved_bytes(r, r->mc.threads);
    pcbm_engine_cfg ec = {.mem_bytes = o->mem_bytes, .reserved_bytes = reserved,
                          .threads = r->mc.threads, .io = o->io, .block_bytes = o->block_bytes,
                          .out_dir = sp->od.partial, .progress = &r->progress,
                          .should_stop = o->should_stop, .user = o->user,
                          .file_range = 1, .file_lo = sp->file_lo[part],
                          .file_hi = sp->file_hi[part]};
    pcbm_method_prepare_layout(o, &r->layout);
    pcbm_status st = pcbm_engine_create(&r->layout, &ec, &r->eng, err);
    r->mc.eng = r->eng;
    if (st == PCBM_OK)
        st = pcbm_run_load_ident(r, err);
    return st;
}

static void init_split(pcbm_split *x, const split_plan *sp, pcbm_split_mode mode, unsigned part)
{
    memset(x, 0, sizeof *x);
    x->mode = mode;
    snprintf(x->ctl, sizeof x->ctl, "%s", sp->ctl);
    x->part = part;
    x->parts = sp->parts;
    x->plan_id = sp->plan_id;
    x->local = sp->o.scope == PCBM_SCOPE_TENSOR;
    x->file_lo = sp->file_lo[part < sp->parts ? part : 0];
    x->file_hi = sp->file_hi[part < sp->parts ? part : 0];
}

static bool stats_needed(const split_plan *sp, const merge_run *r)
{
    return pcbm_method_has_stats(&sp->o) && r->layout.d > 0;
}

static bool stats_complete(const split_plan *sp)
{
    if (sp->rounds_max == 0)
        return true; /* nothing to compute (no statistics, or nothing is merged) */
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", sp->ctl, COMPLETE_NAME);
    return exists(p);
}

/* ---- input identity tables of the parts (sched/ident.h) ---- */

#define IDENT_FORMAT "pcbmerge-split-ident"

/* Part `part`'s table, read (*v NULL when it has none). */
static pcbm_status read_part_ident(const split_plan *sp, unsigned part, uint64_t **v,
                                   uint64_t *ngran, pcbm_error *err)
{
    char p[4096];
    ctl_path(sp, p, sizeof p, "ident.part-%u.zst", part);
    *v = NULL;
    if (!exists(p))
        return PCBM_OK;
    json_t *root = NULL;
    pcbm_status st = pcbm_zjson_read(p, &root, "input identity table", err);
    if (st != PCBM_OK)
        return st;
    const char *pid = json_string_value(json_object_get(root, "plan_id"));
    bool ok = pid && strtoull(pid, NULL, 16) == sp->plan_id &&
              pcbm_ident_parse(json_object_get(root, "ident"), sp->nmodels, v, ngran);
    json_decref(root);
    if (!ok)
        return pcbm_fail(err, PCBM_ERR_STATS, "%s does not belong to this plan or is damaged: "
                         "remove it and run the stats phase of part %u again", p, part);
    return PCBM_OK;
}

/* A stats phase checks what it reads against the table of the part's first full pass (an
 * earlier round), or saves the table its first full pass recorded. */
static pcbm_status load_part_ident(const split_plan *sp, merge_run *r, unsigned part,
                                   bool *had, pcbm_error *err)
{
    uint64_t *v = NULL, ngran = 0;
    pcbm_status st = read_part_ident(sp, part, &v, &ngran, err);
    *had = v != NULL;
    if (st == PCBM_OK && v) {
        char origin[256];
        snprintf(origin, sizeof origin, "the statistics phase of part %u read (an earlier "
                 "round)", part);
        st = pcbm_ident_load(pcbm_engine_ident(r->eng), v, sp->nmodels, ngran, origin, err);
    }
    free(v);
    return st;
}

static pcbm_status save_part_ident(const split_plan *sp, merge_run *r, unsigned part,
                                   pcbm_error *err)
{
    const pcbm_ident *id = pcbm_engine_ident(r->eng);
    if (!pcbm_ident_any(id))
        return PCBM_OK;
    uint64_t ngran = 0;
    const uint64_t *ref = pcbm_ident_ref(id, &ngran);
    char p[4096], pid[17];
    ctl_path(sp, p, sizeof p, "ident.part-%u.zst", part);
    snprintf(pid, sizeof pid, "%016" PRIx64, sp->plan_id);
    json_t *root = json_pack("{s:s,s:s,s:i}", "format", IDENT_FORMAT, "plan_id", pid, "part",
                             (int)part);
    json_object_set_new(root, "ident", pcbm_ident_json(ref, sp->nmodels, ngran));
    pcbm_status st = pcbm_zjson_write(p, root, "input identity table", err);
    json_decref(root);
    return st;
}

typedef struct ident_ctx {
    const split_plan *sp;
    merge_run *r;
    unsigned part;
} ident_ctx;

/* A part's round file is about to be saved: its identity table first (when its first full pass
 * has recorded one), so that no later run can skip that pass without the table. */
static pcbm_status ident_before_round(void *arg, pcbm_error *err)
{
    ident_ctx *ic = arg;
    return save_part_ident(ic->sp, ic->r, ic->part, err);
}

/* The reduce: the parts' tables (disjoint: each holds its own tensors) summed into the
 * statistics, so that apply checks every part's inputs against what its statistics read. */
static pcbm_status combine_idents(const split_plan *sp, const merge_run *r, pcbm_error *err)
{
    uint64_t *sum = NULL, nsum = 0;
    pcbm_status st = PCBM_OK;
    for (unsigned u = 0; u < sp->parts && st == PCBM_OK; u++) {
        uint64_t *v = NULL, ngran = 0;
        if ((st = read_part_ident(sp, u, &v, &ngran, err)) != PCBM_OK || !v)
            continue;
        if (!sum) {
            sum = v;
            nsum = ngran;
            continue;
        }
        if (ngran != nsum)
            st = pcbm_fail(err, PCBM_ERR_STATS, "the input identity tables of the parts do not "
                           "fit together: plan again with `force`");
        for (uint64_t k = 0; st == PCBM_OK && k < ngran * sp->nmodels; k++)
            sum[k] += v[k];
        free(v);
    }
    if (st == PCBM_OK && sum && !pcbm_statset_set_ident(r->mc.stats_out, sum, nsum))
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    free(sum);
    return st;
}

/* The statistics are known: merge_stats.json.zst, then the marker that says so. */
static pcbm_status mark_complete(const split_plan *sp, const merge_run *r, pcbm_error *err)
{
    char p[4096];
    pcbm_status st = PCBM_OK;
    if (stats_needed(sp, r)) {
        snprintf(p, sizeof p, "%s/%s", sp->od.partial, PCBM_STATS_NAME);
        st = combine_idents(sp, r, err);
        if (st == PCBM_OK)
            st = pcbm_statfile_write(p, r->mc.stats_out, sp->o.ntasks, err);
    }
    if (st != PCBM_OK)
        return st;
    snprintf(p, sizeof p, "%s/%s", sp->ctl, COMPLETE_NAME);
    json_t *j = json_pack("{s:b}", "complete", 1);
    st = pcbm_zjson_write(p, j, "statistics marker", err);
    json_decref(j);
    return st;
}

typedef struct reduce_ctx {
    const split_plan *sp;
    merge_run *r;
} reduce_ctx;

/* The reduce's method has decided every statistic (stats_done hook). */
static pcbm_status on_stats_reduced(void *arg, pcbm_error *err)
{
    reduce_ctx *rc = arg;
    merge_run *r = rc->r;
    snprintf(r->mc.stats_out->how, sizeof r->mc.stats_out->how, "%s", r->mc.stats_how);
    return mark_complete(rc->sp, r, err);
}

static pcbm_status phase_stats(split_plan *sp, merge_run *r, unsigned part, pcbm_error *err)
{
    if (!stats_needed(sp, r)) {
        pcbm_info("%s computes no statistics: nothing to do for part %u (go on with reduce and "
                  "apply)", pcbm_method_name(sp->o.method), part);
        return PCBM_OK;
    }
    if (stats_complete(sp)) {
        pcbm_info("the statistics are complete: nothing to do for part %u (go on with apply)", part);
        return PCBM_OK;
    }
    char upath[4096];
    ctl_path(sp, upath, sizeof upath, "stats.part-%u.zst", part);
    if (sp->o.scope == PCBM_SCOPE_TENSOR && exists(upath)) {
        pcbm_info("part %u: its statistics are already saved (run reduce)", part);
        return PCBM_OK;
    }
    pcbm_split x;
    init_split(&x, sp, PCBM_SPLIT_STATS, part);
    r->mc.split = &x;
    pcbm_status st = create_engine(r, sp, part, err);
    double t0 = pcbm_now();
    pcbm_rounds_end end = PCBM_ROUNDS_DONE;
    bool had_ident = false;
    if (st == PCBM_OK)
        st = load_part_ident(sp, r, part, &had_ident, err);
    ident_ctx ic = {sp, r, part};
    if (!had_ident) { /* the table is durable before the round that read it */
        x.before_save = ident_before_round;
        x.before_save_arg = &ic;
    }
    if (st == PCBM_OK)
        st = pcbm_method_run(&r->mc, &end, err);
    if (st == PCBM_OK && !had_ident)
        st = save_part_ident(sp, r, part, err);
    if (st == PCBM_OK && end == PCBM_ROUNDS_PART_SAVED) {
        pcbm_info("part %u: statistics round %u saved (%.2f s); reduce when every part has run it",
                  part, x.round, pcbm_now() - t0);
        return PCBM_OK;
    }
    if (st == PCBM_OK && x.local) {
        snprintf(r->mc.stats_out->how, sizeof r->mc.stats_out->how, "%s", r->mc.stats_how);
        st = pcbm_statfile_write(upath, r->mc.stats_out, sp->o.ntasks, err);
        if (st == PCBM_OK)
            pcbm_info("part %u: statistics of its %zu tensor(s) saved (%.2f s); reduce when every "
                      "part has run", part, r->mc.stats_out->nrec, pcbm_now() - t0);
        return st;
    }
    if (st == PCBM_OK)
        pcbm_info("the statistics are complete (every round is reduced): nothing to do for part %u",
                  part);
    return st;
}

/* Tensor scope: the parts' statistics, concatenated in part order (= tensor order). */
static pcbm_status reduce_local(split_plan *sp, merge_run *r, pcbm_error *err)
{
    char list[512];
    unsigned nmiss = pcbm_split_missing(sp->ctl, sp->parts, "stats.part-%u.zst", list,
                                        sizeof list);
    if (nmiss)
        return pcbm_fail(err, PCBM_ERR_STATS, "the statistics of part%s %s of %u are missing: run "
                         "the stats phase for %s (the same plan directory and part), then reduce again",
                         nmiss > 1 ? "s" : "", list, sp->parts, nmiss > 1 ? "them" : "it");
    pcbm_statset *out = r->mc.stats_out;
    pcbm_status st = PCBM_OK;
    for (unsigned u = 0; u < sp->parts && st == PCBM_OK; u++) {
        char p[4096];
        ctl_path(sp, p, sizeof p, "stats.part-%u.zst", u);
        pcbm_statset in;
        if ((st = pcbm_statfile_read(p, &in, err)) != PCBM_OK)
            break;
        if (in.nmodels != out->nmodels || strcmp(in.shape_json, out->shape_json) != 0 ||
            memcmp(in.identity, out->identity, out->nmodels * sizeof out->identity[0]) != 0)
            st = pcbm_fail(err, PCBM_ERR_STATS, "%s was computed for other inputs or parameters: "
                           "remove it and run the stats phase of part %u again", p, u);
        for (size_t k = 0; st == PCBM_OK && k < in.nrec; k++) {
            pcbm_statrec *rec = pcbm_statset_add(out);
            if (!rec)
                st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            else {
                *rec = in.rec[k];
                in.rec[k].blob = NULL; /* taken over */
                in.rec[k].nblob = 0;
            }
        }
        if (u == 0)
            snprintf(out->how, sizeof out->how, "%s", in.how);
        pcbm_statset_free(&in);
    }
    if (st == PCBM_OK)
        st = mark_complete(sp, r, err);
    if (st == PCBM_OK)
        pcbm_info("statistics complete: %zu tensor(s) from %u part(s); go on with apply",
                  out->nrec, sp->parts);
    return st;
}

static pcbm_status phase_reduce(split_plan *sp, merge_run *r, pcbm_error *err)
{
    if (stats_complete(sp)) {
        pcbm_info("the statistics are complete: nothing to reduce (go on with apply)");
        return PCBM_OK;
    }
    if (!stats_needed(sp, r)) {
        pcbm_info("%s computes no statistics: nothing to reduce (go on with apply)",
                  pcbm_method_name(sp->o.method));
        return mark_complete(sp, r, err);
    }
    if (sp->o.scope == PCBM_SCOPE_TENSOR)
        return reduce_local(sp, r, err);
    pcbm_split x;
    init_split(&x, sp, PCBM_SPLIT_REDUCE, 0);
    reduce_ctx rc = {sp, r};
    r->mc.split = &x;
    r->mc.stats_done = on_stats_reduced;
    r->mc.stats_done_arg = &rc;
    pcbm_rounds_end end = PCBM_ROUNDS_DONE;
    pcbm_status st = pcbm_method_run(&r->mc, &end, err);
    if (st == PCBM_OK && end == PCBM_ROUNDS_PENDING) {
        pcbm_info("statistics round %u needs every part: run the stats phase of parts 0-%u, "
                  "then reduce again", x.round, sp->parts - 1);
        return PCBM_OK;
    }
    if (st == PCBM_OK)
        pcbm_info("statistics complete after %u round(s) (%s); go on with apply", x.round,
                  r->mc.stats_how);
    return st;
}

static pcbm_status write_done(const split_plan *sp, merge_run *r, unsigned part, double secs,
                              pcbm_error *err)
{
    json_t *root = json_object(), *files = json_array(), *kept = json_array();
    const pcbm_outlayout *op = &r->layout.out;
    char h[40];
    for (unsigned f = sp->file_lo[part]; f < sp->file_hi[part]; f++) {
        XXH128_hash_t d = pcbm_engine_file_hash(r->eng, f);
        snprintf(h, sizeof h, "%016llx%016llx", (unsigned long long)d.high64,
                 (unsigned long long)d.low64);
        json_array_append_new(files, json_pack("{s:i,s:s,s:I,s:s}", "index", (int)f, "name",
                                               op->files[f].name, "size",
                                               (json_int_t)op->files[f].size, "xxh3_128", h));
    }
    for (unsigned i = 0; i < r->mc.ntasks; i++)
        json_array_append_new(kept, json_integer((json_int_t)r->mc.task[i].kept));
    const pcbm_engine_report *er = pcbm_engine_get_report(r->eng);
    char pid[17];
    snprintf(pid, sizeof pid, "%016" PRIx64, sp->plan_id);
    json_object_set_new(root, "plan_id", json_string(pid));
    json_object_set_new(root, "part", json_integer(part));
    json_object_set_new(root, "files", files);
    json_object_set_new(root, "kept", kept);
    json_object_set_new(root, "bytes_read", json_integer((json_int_t)er->bytes_read));
    json_object_set_new(root, "bytes_written", json_integer((json_int_t)er->bytes_written));
    json_object_set_new(root, "seconds", json_real(secs));
    json_object_set_new(root, "io_backend", json_string(er->backend ? er->backend : ""));
    char p[4096];
    ctl_path(sp, p, sizeof p, "part-%u.done.json.zst", part);
    pcbm_status st = pcbm_zjson_write(p, root, "part record", err);
    json_decref(root);
    return st;
}

static pcbm_status phase_apply(split_plan *sp, merge_run *r, unsigned part, pcbm_error *err)
{
    char done[4096], jpath[4096];
    ctl_path(sp, done, sizeof done, "part-%u.done.json.zst", part);
    ctl_path(sp, jpath, sizeof jpath, "part-%u.journal.json.zst", part);
    if (exists(done)) {
        pcbm_info("part %u: its output files are already written: nothing to do", part);
        return PCBM_OK;
    }
    double t0 = pcbm_now();
    pcbm_split x;
    init_split(&x, sp, PCBM_SPLIT_APPLY, part);
    r->mc.split = &x;
    pcbm_status st = PCBM_OK;
    char *params = pcbm_run_output_params(r->o);
    if (!params)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    bool resumed = exists(jpath);
    if (resumed) {
        st = pcbm_journal_load(jpath, &r->journal, err);
        if (st == PCBM_OK)
            st = pcbm_run_check_journal(r, params, err);
        free(params);
        if (st == PCBM_OK)
            pcbm_run_resume_files(r, r->mc.stats_in != NULL);
    } else {
        r->journal.path = pcbm_strdup(jpath);
        r->journal.params = params;
        r->journal.ninputs = sp->nmodels;
        memcpy(r->journal.inputs, r->ids, sp->nmodels * sizeof r->ids[0]);
        r->journal.fstat = pcbm_calloc(r->nfstat + 1, sizeof *r->fstat);
        if (!r->journal.fstat)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        memcpy(r->journal.fstat, r->fstat, r->nfstat * sizeof *r->fstat);
        r->journal.nfstat = r->nfstat;
        st = pcbm_journal_save(&r->journal, err);
    }
    if (st == PCBM_OK)
        st = create_engine(r, sp, part, err);
    if (st == PCBM_OK && resumed) {
        size_t kept = 0;
        st = pcbm_engine_resume_output(r->eng, r->journal.seg, r->journal.nseg, &kept, err);
        uint64_t bytes = 0;
        for (size_t k = 0; k < kept; k++)
            bytes += r->journal.seg[k].end - r->journal.seg[k].start;
        char b[32];
        if (st == PCBM_OK) {
            pcbm_info("part %u: resuming, %s of its output verified and kept", part,
                      pcbm_fmt_bytes(bytes, b, sizeof b));
            r->journal.nseg = kept;
            st = pcbm_journal_save(&r->journal, err);
        }
    }
    if (st == PCBM_OK) {
        pcbm_engine_on_segment(r->eng, pcbm_run_on_segment, r);
        st = pcbm_method_run(&r->mc, NULL, err);
    }
    if (st == PCBM_OK)
        st = pcbm_engine_finish_output(r->eng, err);
    if (st == PCBM_OK)
        st = pcbm_run_recheck_files(r, err);
    if (st == PCBM_OK)
        st = write_done(sp, r, part, pcbm_now() - t0, err);
    if (st == PCBM_OK) {
        unlink(jpath);
        const pcbm_engine_report *er = pcbm_engine_get_report(r->eng);
        char a[32], b[32];
        double secs = pcbm_now() - t0;
        pcbm_info("part %u: wrote output files %u-%u (%s; read %s) in %.2f s", part,
                  sp->file_lo[part] + 1, sp->file_hi[part],
                  pcbm_fmt_bytes(er->bytes_written, a, sizeof a),
                  pcbm_fmt_bytes(er->bytes_read, b, sizeof b), secs);
    } else if (st == PCBM_ERR_INTERRUPTED || st == PCBM_ERR_IO || st == PCBM_ERR_NOSPACE) {
        size_t n = strlen(err ? err->msg : "");
        if (err)
            snprintf(err->msg + n, sizeof err->msg - n, "\npart %u's finished part is kept: run "
                     "the same command again to continue it", part);
    }
    return st;
}

/* A part's record: hashes of its files, kept counts, bytes. */
static pcbm_status read_done(const split_plan *sp, merge_run *r, unsigned part,
                             XXH128_hash_t *hashes, uint64_t *kept, uint64_t *rd, uint64_t *wr,
                             pcbm_error *err)
{
    char p[4096];
    ctl_path(sp, p, sizeof p, "part-%u.done.json.zst", part);
    json_t *root = NULL;
    pcbm_status st = pcbm_zjson_read(p, &root, "part record", err);
    if (st != PCBM_OK)
        return st;
    json_t *files = json_object_get(root, "files"), *k = json_object_get(root, "kept");
    const char *pid = json_string_value(json_object_get(root, "plan_id"));
    bool ok = pid && strtoull(pid, NULL, 16) == sp->plan_id && json_is_array(files) &&
              json_array_size(files) == sp->file_hi[part] - sp->file_lo[part] &&
              json_is_array(k) && json_array_size(k) == r->mc.ntasks;
    for (size_t i = 0; ok && i < json_array_size(files); i++) {
        json_t *f = json_array_get(files, i);
        const char *h = json_string_value(json_object_get(f, "xxh3_128"));
        unsigned idx = sp->file_lo[part] + (unsigned)i;
        ok = h && strlen(h) == 32 && json_integer_value(json_object_get(f, "index")) == idx;
        if (ok) {
            char hi[17], lo[17];
            memcpy(hi, h, 16);
            hi[16] = '\0';
            memcpy(lo, h + 16, 17);
            hashes[idx].high64 = strtoull(hi, NULL, 16);
            hashes[idx].low64 = strtoull(lo, NULL, 16);
        }
    }
    for (unsigned i = 0; ok && i < r->mc.ntasks; i++)
        kept[i] += (uint64_t)json_integer_value(json_array_get(k, i));
    *rd += (uint64_t)json_integer_value(json_object_get(root, "bytes_read"));
    *wr += (uint64_t)json_integer_value(json_object_get(root, "bytes_written"));
    json_decref(root);
    if (!ok)
        return pcbm_fail(err, PCBM_ERR_STATS, "%s does not belong to this plan or is damaged: "
                         "remove it and run the apply phase of part %u again", p, part);
    return PCBM_OK;
}

/* The report's per-task statistics from the statistics file (global scope). */
static void report_stats(merge_run *r, const char *partial)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", partial, PCBM_STATS_NAME);
    pcbm_statset s;
    pcbm_error e;
    if (!exists(p) || pcbm_statfile_read(p, &s, &e) != PCBM_OK)
        return;
    snprintf(r->mc.stats_how, sizeof r->mc.stats_how, "%s", s.how);
    if (r->o->scope == PCBM_SCOPE_GLOBAL && s.nrec == 1)
        pcbm_method_report_record(&r->mc, &s.rec[0], &e);
    pcbm_statset_free(&s);
}

/* Once the manifest is written, the control directory leaves in two steps that a kill can
 * interrupt anywhere: an atomic rename to RETIRED_CTL (from then on the directory is a finished
 * merge waiting for publication: a re-run of finalize publishes it) and its removal. */
#define RETIRED_CTL ".split-retired"

static pcbm_status retire_ctl(const char *partial, pcbm_error *err)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/%s", partial, PCBM_SPLIT_CTL);
    snprintf(to, sizeof to, "%s/%s", partial, RETIRED_CTL);
    int rc = pcbm_remove_tree(to); /* an earlier finalize's, killed during the removal */
    if (rc == 0 && rename(from, to) != 0 && errno != ENOENT)
        rc = -errno;
    return rc ? pcbm_fail(err, PCBM_ERR_IO, "cannot retire %s: %s", from, strerror(-rc)) : PCBM_OK;
}

static pcbm_status remove_retired(const char *partial, pcbm_error *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", partial, RETIRED_CTL);
    int rc = pcbm_remove_tree(p);
    return rc ? pcbm_fail(err, PCBM_ERR_IO, "cannot remove %s: %s", p, strerror(-rc)) : PCBM_OK;
}

static pcbm_status phase_finalize(split_plan *sp, merge_run *r, double t0, pcbm_error *err)
{
    char list[512];
    unsigned nmiss = pcbm_split_missing(sp->ctl, sp->parts, "part-%u.done.json.zst", list,
                                        sizeof list);
    if (nmiss)
        return pcbm_fail(err, PCBM_ERR_STATS, "part%s %s of %u %s not written %s output files: run "
                         "the apply phase for %s (the same plan directory and part), then finalize again",
                         nmiss > 1 ? "s" : "", list, sp->parts, nmiss > 1 ? "have" : "has",
                         nmiss > 1 ? "their" : "its", nmiss > 1 ? "them" : "it");
    const pcbm_outlayout *op = &r->layout.out;
    XXH128_hash_t *hashes = pcbm_calloc(op->nfiles ? op->nfiles : 1, sizeof *hashes);
    uint64_t kept[PCBM_MAX_TASKS] = {0}, rd = 0, wr = 0;
    pcbm_status st = hashes ? PCBM_OK : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    for (unsigned u = 0; u < sp->parts && st == PCBM_OK; u++)
        st = read_done(sp, r, u, hashes, kept, &rd, &wr, err);
    for (unsigned i = 0; i < r->mc.ntasks; i++)
        r->mc.task[i].kept = kept[i];
    report_stats(r, sp->od.partial);
    pcbm_engine_report er;
    memset(&er, 0, sizeof er);
    char backend[64];
    snprintf(backend, sizeof backend, "split into %u parts", sp->parts);
    er.backend = backend;
    er.bytes_read = rd;
    er.bytes_written = wr;
    er.threads = r->mc.threads;
    char *rep = st == PCBM_OK ? pcbm_run_report_json(&r->mc, &er, pcbm_now() - t0) : NULL;
    if (st == PCBM_OK && !rep)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing the report");
    if (st == PCBM_OK)
        st = pcbm_run_write_small_files(r, &sp->od, rep, err);
    free(rep);
    if (st == PCBM_OK) {
        r->od = sp->od; /* the manifest lists DIR.partial */
        r->journal.params = pcbm_run_output_params(r->o);
        st = r->journal.params ? pcbm_run_write_manifest(r, hashes, err)
                               : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        memset(&r->od, 0, sizeof r->od);
    }
    free(hashes);
    pcbm_test_point("finalize");
    if (st == PCBM_OK)
        st = retire_ctl(sp->od.partial, err);
    pcbm_test_point("finalize-cleanup");
    if (st == PCBM_OK)
        st = remove_retired(sp->od.partial, err);
    if (st == PCBM_OK)
        st = pcbm_outdir_publish(&sp->od, err);
    if (st == PCBM_OK) {
        pcbm_vocab_unstage(sp->od.final); /* the parts' staged rows, when there were some */
        pcbm_info("wrote %s (%u parts, %u output files)", sp->od.final, sp->parts, op->nfiles);
    }
    return st;
}

/* Counts what does not match the manifest, the partial directory's marker aside. */
static void count_bad(void *arg, const char *file, const char *expected, const char *found)
{
    (void)expected, (void)found;
    if (strcmp(file, PCBM_PARTIAL_MARKER) != 0)
        (*(unsigned *)arg)++;
}

/* finalize after .split is retired: the manifest was written, the retired control directory
 * (when a kill interrupted its removal) and the rename are left. */
static pcbm_status finish_publish(const char *dir, pcbm_error *err)
{
    pcbm_outdir od;
    pcbm_status st = pcbm_outdir_attach(&od, dir, err);
    char mpath[4096];
    if (st == PCBM_OK)
        st = remove_retired(od.partial, err);
    if (st == PCBM_OK) {
        snprintf(mpath, sizeof mpath, "%s/%s", od.partial, PCBM_MANIFEST_NAME);
        unsigned bad = 0, counted = 0;
        if (!exists(mpath) || pcbm_verify(od.partial, count_bad, &counted, &bad, err) != PCBM_OK ||
            counted)
            st = pcbm_fail(err, PCBM_ERR_STATS, "%s is neither a planned split merge nor a "
                           "finished one (no plan, no valid manifest): plan again with `force`",
                           od.partial);
    }
    if (st == PCBM_OK)
        st = pcbm_outdir_publish(&od, err);
    if (st == PCBM_OK) {
        pcbm_vocab_unstage(od.final);
        pcbm_info("finished publishing %s (verified against its manifest)", od.final);
    }
    pcbm_outdir_free(&od);
    return st;
}

static pcbm_status split_run(const char *dir, pcbm_phase phase, unsigned part,
                             const pcbm_merge_opts *rt, pcbm_error *err);

typedef struct phase_call {
    const char *dir;
    pcbm_phase phase;
    unsigned part;
} phase_call;

static pcbm_status run_call(const pcbm_merge_opts *rt, void *arg, pcbm_error *err)
{
    const phase_call *pc = arg;
    return split_run(pc->dir, pc->phase, pc->part, rt, err);
}

pcbm_status pcbm_split_run(const char *dir, pcbm_phase phase, unsigned part,
                           const pcbm_merge_opts *user_rt, pcbm_error *err)
{
    phase_call pc = {dir, phase, part};
    return pcbm_run_call(user_rt, true, run_call, &pc, err);
}

static pcbm_status split_run(const char *dir, pcbm_phase phase, unsigned part,
                             const pcbm_merge_opts *rt, pcbm_error *err)
{
    if (!dir)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the plan directory is required");
    if ((unsigned)phase > PCBM_PHASE_FINALIZE)
        return pcbm_fail(err, PCBM_ERR_USAGE, "unknown phase");
    double t0 = pcbm_now();
    split_plan *sp = pcbm_calloc(1, sizeof *sp);
    merge_run *r = pcbm_calloc(1, sizeof *r);
    if (!sp || !r) {
        free(sp);
        free(r);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    /* the phase's progress: the passes it runs (one, or none for reduce and finalize) */
    pcbm_progress_init(&r->progress, rt ? rt->on_progress : NULL, rt ? rt->user : NULL, t0, 1, 0);
    pcbm_status st = load_plan(dir, sp, err);
    if (st != PCBM_OK && phase == PCBM_PHASE_FINALIZE) {
        pcbm_outdir od;
        if (pcbm_outdir_attach(&od, dir, NULL) == PCBM_OK) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", od.partial, PCBM_MANIFEST_NAME);
            if (exists(od.final) && !exists(od.partial)) {
                pcbm_info("%s is already published: nothing to do", od.final);
                st = PCBM_OK;
            } else if (exists(p)) {
                st = finish_publish(dir, err);
            }
            pcbm_outdir_free(&od);
        }
        plan_free(sp);
        free(sp);
        pcbm_progress_done(&r->progress, st);
        free(r);
        return st;
    }
    bool per_part = phase == PCBM_PHASE_STATS || phase == PCBM_PHASE_APPLY;
    if (st == PCBM_OK && per_part && part >= sp->parts)
        st = pcbm_fail(err, PCBM_ERR_USAGE, "part %u is out of range: the plan of %s has %u "
                       "parts (0-%u)", part, dir, sp->parts, sp->parts - 1);
    int lock = -1;
    char lname[64], who[64];
    snprintf(lname, sizeof lname, per_part ? "part-%u.lock" : "reduce.lock", part);
    snprintf(who, sizeof who, per_part ? "part %u" : "the reduce or finalize", part);
    if (st == PCBM_OK)
        st = take_lock(sp, lname, who, &lock, err);
    char spath[4096];
    snprintf(spath, sizeof spath, "%s/%s", sp->od.partial, PCBM_STATS_NAME);
    bool replay = phase == PCBM_PHASE_APPLY || phase == PCBM_PHASE_FINALIZE;
    if (st == PCBM_OK && replay && pcbm_method_has_stats(&sp->o) && !stats_complete(sp))
        st = pcbm_fail(err, PCBM_ERR_STATS, "the statistics of %s are not complete yet: run the "
                       "stats phase of every part and reduce (repeat while reduce asks for another "
                       "round) before %s", dir, phase == PCBM_PHASE_APPLY ? "apply" : "finalize");
    if (st == PCBM_OK)
        st = open_run(sp, rt, r, replay && exists(spath) ? spath : NULL, err);
    if (st == PCBM_OK) {
        switch (phase) {
        case PCBM_PHASE_STATS: st = phase_stats(sp, r, part, err); break;
        case PCBM_PHASE_REDUCE: st = phase_reduce(sp, r, err); break;
        case PCBM_PHASE_APPLY: st = phase_apply(sp, r, part, err); break;
        case PCBM_PHASE_FINALIZE: st = phase_finalize(sp, r, t0, err); break;
        }
    }
    pcbm_run_teardown(r, st);
    pcbm_progress_done(&r->progress, st);
    free(r);
    if (lock >= 0)
        close(lock);
    plan_free(sp);
    free(sp);
    if (st == PCBM_ERR_INTERRUPTED)
        pcbm_engine_clear_stop();
    return st;
}

/* Where a loaded plan stands. */
static void plan_status(const split_plan *sp, pcbm_split_info *info)
{
    info->parts = sp->parts;
    info->rounds_max = sp->rounds_max;
    info->stats_complete = stats_complete(sp);
    char p[4096];
    for (unsigned k = 0; k < 64; k++) {
        snprintf(p, sizeof p, "%s/round-%u.zst", sp->ctl, k);
        if (!exists(p))
            break;
        info->rounds_reduced = k + 1;
    }
    for (unsigned u = 0; u < sp->parts; u++) {
        ctl_path(sp, p, sizeof p, "part-%u.done.json.zst", u);
        info->parts_applied += exists(p);
    }
}

pcbm_status pcbm_split_status(const char *dir, pcbm_split_info *info, pcbm_error *err)
{
    pcbm_error_clear(err);
    memset(info, 0, sizeof *info);
    split_plan *sp = pcbm_calloc(1, sizeof *sp);
    if (!sp)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = load_plan(dir, sp, err);
    pcbm_outdir od;
    char mpath[4096] = "";
    if (st != PCBM_OK && pcbm_outdir_attach(&od, dir, NULL) == PCBM_OK) {
        snprintf(mpath, sizeof mpath, "%s/%s", od.partial, PCBM_MANIFEST_NAME);
        pcbm_outdir_free(&od);
    }
    if (st == PCBM_ERR_EXISTS && sp->od.final && exists(sp->od.final)) {
        info->published = 1;
        st = PCBM_OK;
    } else if (st == PCBM_OK) {
        plan_status(sp, info);
    } else if (mpath[0] && exists(mpath)) {
        /* finalize retired the control directory: only the publication is left */
        info->stats_complete = 1;
        pcbm_error_clear(err);
        st = PCBM_OK;
    }
    plan_free(sp);
    free(sp);
    return st;
}

pcbm_status pcbm_split_pending(const char *dir, pcbm_phase phase, unsigned *parts, unsigned cap,
                               unsigned *n, pcbm_error *err)
{
    pcbm_error_clear(err);
    *n = 0;
    if (phase != PCBM_PHASE_STATS && phase != PCBM_PHASE_APPLY)
        return PCBM_OK; /* reduce and finalize are not per part */
    split_plan *sp = pcbm_calloc(1, sizeof *sp);
    if (!sp)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    pcbm_status st = load_plan(dir, sp, err);
    pcbm_split_info in;
    memset(&in, 0, sizeof in);
    if (st == PCBM_ERR_EXISTS && exists(sp->od.final)) {
        st = PCBM_OK; /* published: nothing is pending */
    } else if (st == PCBM_OK) {
        plan_status(sp, &in);
        pcbm_split x;
        init_split(&x, sp, PCBM_SPLIT_STATS, 0);
        bool stats_done = in.stats_complete;
        for (unsigned u = 0; u < sp->parts && !(phase == PCBM_PHASE_STATS && stats_done); u++) {
            char p[4096];
            bool done;
            if (phase == PCBM_PHASE_APPLY) {
                ctl_path(sp, p, sizeof p, "part-%u.done.json.zst", u);
                done = exists(p);
            } else if (sp->o.scope == PCBM_SCOPE_TENSOR) {
                ctl_path(sp, p, sizeof p, "stats.part-%u.zst", u);
                done = exists(p);
            } else {
                done = pcbm_split_part_saved(&x, in.rounds_reduced, u);
            }
            if (done)
                continue;
            if (*n < cap)
                parts[*n] = u;
            (*n)++;
        }
    }
    plan_free(sp);
    free(sp);
    return st;
}

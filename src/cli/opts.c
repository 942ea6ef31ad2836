/* SPDX-License-Identifier: Apache-2.0 */
/*
 * opts.c — the command line's one option table: every option of merge, plan, search and the
 * split-merge phases with the commands that take it, the check of its value and its help text.
 * One parser (getopt_long over the table) serves every command, and the help of `pcbmerge
 * --help`, of `pcbmerge COMMAND --help` and the list of commands are generated from it.
 */
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- commands ------------------------------------------------------------------------------- */

#define B(c) (1u << (c))
#define M_MERGE (B(CMD_MERGE) | B(CMD_PLAN) | B(CMD_SEARCH))
#define M_PHASES (B(CMD_STATS) | B(CMD_REDUCE) | B(CMD_APPLY) | B(CMD_FINALIZE) | B(CMD_STATUS))
#define M_RUN (M_MERGE | M_PHASES)

static const struct cli_cmd_info {
    const char *name, *synopsis, *summary;
} cmds[CMD_COUNT] = {
    [CMD_MERGE] = {"merge", "--base DIR --out DIR [options] TASK_DIR...  |  --config RECIPE.yml --out DIR",
                   "merge the task models into OUT"},
    [CMD_PLAN] = {"plan", "--base DIR --out DIR --parts K [options] TASK_DIR...",
                  "split a merge into K parts (split merges, below)"},
    [CMD_SEARCH] = {"search", "--base DIR --out DIR --eval-cmd 'CMD {model}' [options] TASK_DIR...  |  "
                              "--config RECIPE.yml --out DIR --eval-cmd 'CMD {model}' [options]",
                    "CMA-ES search of the per-task λ that maximize a score"},
    [CMD_STATS] = {"stats", "--plan DIR [--part I] [run-time settings]",
                   "part I's part of the next statistics round"},
    [CMD_REDUCE] = {"reduce", "--plan DIR [run-time settings]",
                    "combine the parts' statistics (says if another round is due)"},
    [CMD_APPLY] = {"apply", "--plan DIR [--part I] [run-time settings]",
                   "write part I's output files"},
    [CMD_FINALIZE] = {"finalize", "--plan DIR [run-time settings]",
                      "index, manifest and atomic publication of DIR"},
    [CMD_STATUS] = {"status", "--plan DIR [--json | --get KEY]", "where a split merge stands"},
    [CMD_INSPECT] = {"inspect", "MODEL [--json]", "list and validate a checkpoint"},
    [CMD_VERIFY] = {"verify", "OUT_DIR", "check a merged model against its manifest"},
};

cli_cmd cli_cmd_parse(const char *name)
{
    for (unsigned c = 0; c < CMD_COUNT; c++)
        if (!strcmp(name, cmds[c].name))
            return (cli_cmd)c;
    return CMD_COUNT;
}

const char *cli_cmd_name(cli_cmd c) { return c < CMD_COUNT ? cmds[c].name : ""; }

/* ---- the option table ----------------------------------------------------------------------- */

enum {
    O_HELP = 1, O_BASE, O_OUT, O_METHOD, O_DENSITY, O_LAMBDA, O_LAMBDAS, O_WEIGHTS, O_CLAMP,
    O_SCOPE, O_EXACT, O_STREAMING, O_SEED, O_DTYPE, O_EXCLUDE, O_ALLOW_EXTRA, O_ALLOW_NONFINITE,
    O_STATS, O_SHARD_SIZE, O_FORCE, O_RESUME, O_MEM, O_THREADS, O_IO, O_BLOCK, O_PROGRESS,
    O_QUIET, O_PARTS, O_PLAN, O_PART_INDEX, O_JSON, O_GET, O_EVAL, O_BUDGET, O_BOUNDS, O_INIT,
    O_SIGMA, O_POPSIZE, O_SEARCH_SEED, O_ON_ERROR, O_SEARCH_FORCE, O_SEARCH_RESUME, O_DRY_RUN,
    O_REQUIRE_ALL, O_TAKE_NONFLOAT, O_DENSITIES, O_NORMALIZE, O_NO_NORMALIZE, O_RESCALE,
    O_NO_RESCALE, O_T, O_SELECT_TOPK, O_NUSLERP_NO_FLATTEN, O_NUSLERP_ROW_WISE, O_FILTER_WISE,
    O_GAMMA, O_MERGEKIT, O_EPSILON, O_CONFIG, O_CHAT_TEMPLATE, O_GAMMAS, O_EPSILONS,
    O_TOKENIZER_SOURCE, O_COUNT_
};
_Static_assert(O_COUNT_ <= 128, "cli_args.given holds one bit per option id");

enum { G_MERGE, G_RUN, G_PLAN, G_PHASE, G_SEARCH, G_COUNT };

static const char *const group_title[G_COUNT] = {
    [G_MERGE] = "merge options (merge, plan, search)",
    [G_RUN] = "run-time settings (merge, plan, search and the split-merge phases)",
    [G_PLAN] = "plan options",
    [G_PHASE] = "split-merge phase options (stats, reduce, apply, finalize, status)",
    [G_SEARCH] = "search options",
};

typedef struct cli_opt {
    const char *name, *alias; /* --name, and another name accepted for it (or NULL) */
    const char *arg;          /* the value's placeholder, NULL for a flag */
    int id;
    unsigned cmds;            /* the commands that take it */
    int group;
    const char *help;         /* lines after the first are indented */
} cli_opt;

static const cli_opt table[] = {
    {"config", NULL, "RECIPE", O_CONFIG, M_MERGE, G_MERGE,
     "a mergekit recipe (YAML): method, models, base and parameters come\n"
     "from it (the README's table says what maps to what)"},
    {"chat-template", NULL, "T", O_CHAT_TEMPLATE, M_MERGE, G_MERGE,
     "the output's chat template (mergekit's chat_template): auto (the one\n"
     "most models share), a Jinja file, or the template's text"},
    {"tokenizer-source", NULL, "S", O_TOKENIZER_SOURCE, M_MERGE, G_MERGE,
     "the output vocabulary (mergekit's tokenizer_source): base (default),\n"
     "union, or one input (its path, or 0 = base, 1..N = task models)"},
    {"base", NULL, "DIR", O_BASE, M_MERGE, G_MERGE, "the base model (directory or .safetensors file)"},
    {"out", NULL, "DIR", O_OUT, M_MERGE, G_MERGE, "the output directory (must not exist)"},
    {"method", NULL, "M", O_METHOD, M_MERGE, G_MERGE,
     "pcb (default), ties, dare_linear, dare_ties, task_arithmetic, linear,\n"
     "slerp, nuslerp, model_stock, sce, breadcrumbs, breadcrumbs_ties, della,\n"
     "della_linear (mergekit's; per tensor)\n"
     "(search: pcb, task_arithmetic or dare_linear, the methods with one λ per task)"},
    {"density", NULL, "R", O_DENSITY, M_MERGE, G_MERGE,
     "fraction kept: PCB mask ratio r, TIES top-k, DARE 1-p (default 0.1)"},
    {"densities", NULL, "D1,...", O_DENSITIES, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "one density per task, each in (0, 1] (ties, dare_ties, dare_linear;\n"
     "mergekit's per-model density); excludes --density"},
    {"gamma", NULL, "G", O_GAMMA, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "breadcrumbs, breadcrumbs_ties: fraction of the largest |tau| of each\n"
     "tensor dropped, in [0, 1) (mergekit's gamma; default 0.01)"},
    {"gammas", NULL, "G1,...", O_GAMMAS, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "one gamma per task, each in [0, 1) (breadcrumbs, breadcrumbs_ties;\n"
     "mergekit's per-model gamma); excludes --gamma"},
    {"epsilon", NULL, "E", O_EPSILON, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "della, della_linear: spread of the keep probabilities around the\n"
     "density, by rank of |tau| within each row (mergekit's epsilon;\n"
     "default 0.15; density ± epsilon must lie in (0, 1))"},
    {"epsilons", NULL, "E1,...", O_EPSILONS, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "one epsilon per task, each in [0, 1) (della, della_linear; mergekit's\n"
     "per-model epsilon); excludes --epsilon"},
    {"mergekit", NULL, NULL, O_MERGEKIT, M_MERGE, G_MERGE,
     "ties, dare_ties, dare_linear as mergekit computes them: per tensor,\n"
     "exact top-k, majority sign of the sum (>= 0: +), L1-norm rescale,\n"
     "mergekit's normalize defaults (ties on, dare_* off); README's table"},
    {"lambda", NULL, "L", O_LAMBDA, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "coefficient of the merged task vector (default 1)"},
    {"lambdas", NULL, "L1,...", O_LAMBDAS, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "one coefficient per task (pcb, task_arithmetic, dare_linear)"},
    {"weights", NULL, "W1,...", O_WEIGHTS, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "one weight per task model (default 1 each; mergekit's per-model\n"
     "weight): linear, task_arithmetic, dare_linear, ties, dare_ties;\n"
     "excludes --lambdas"},
    {"normalize", NULL, NULL, O_NORMALIZE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "divide by the summed weights (ties, dare_ties: of the tasks that agree\n"
     "with the elected sign): the default of linear, ties and dare_ties;\n"
     "also task_arithmetic and dare_linear"},
    {"no-normalize", NULL, NULL, O_NO_NORMALIZE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "do not divide (the default of task_arithmetic and dare_linear, and\n"
     "mergekit's of dare_ties; linear: Σ w_i θ_i)"},
    {"rescale", NULL, NULL, O_RESCALE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "DARE: divide the kept values by their task's density (the default)"},
    {"no-rescale", NULL, NULL, O_NO_RESCALE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "DARE: keep the kept values as they are (dare_linear, dare_ties)"},
    {"t", NULL, "T", O_T, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "slerp (required): 0 gives the base, 1 the task model; nuslerp with one\n"
     "task model: mergekit's w_B/(w_A+w_B) for A = the base, B = the task"},
    {"select-topk", NULL, "R", O_SELECT_TOPK, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "sce: fraction of the elements of non-zero variance kept (default 1: all)"},
    {"nuslerp-no-flatten", NULL, NULL, O_NUSLERP_NO_FLATTEN, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "nuslerp: one interpolation per row (mergekit's nuslerp_flatten false)"},
    {"nuslerp-row-wise", NULL, NULL, O_NUSLERP_ROW_WISE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "nuslerp: with --nuslerp-no-flatten, per column (mergekit's row_wise)"},
    {"filter-wise", NULL, NULL, O_FILTER_WISE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "model_stock: one t per row (mergekit's filter_wise)"},
    {"clamp-ratio", NULL, "C", O_CLAMP, M_MERGE, G_MERGE, "PCB outlier clamp ratio (default 1e-4)"},
    {"scope", NULL, "S", O_SCOPE, M_MERGE, G_MERGE,
     "global (statistics over the whole model) or tensor (every statistic\n"
     "per tensor); default: the method's own (global for pcb, ties, dare_ties;\n"
     "tensor for mergekit's methods, whose sparsifying ones take global too)"},
    {"exact", NULL, NULL, O_EXACT, M_MERGE, G_MERGE,
     "resolve every quantile exactly (extra passes over the inputs)"},
    {"streaming", NULL, NULL, O_STREAMING, M_MERGE, G_MERGE,
     "pcb: use the two-read streaming statistics even below 64M elements"},
    {"seed", "dare-seed", "S", O_SEED, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "DARE random seed (default 0); --dare-seed is the same option"},
    {"dare-seed", NULL, "S", O_SEED, B(CMD_SEARCH), G_MERGE,
     "search: dare_linear's mask seed (default 0; there --seed seeds CMA-ES)"},
    {"dtype", NULL, "T", O_DTYPE, M_MERGE, G_MERGE,
     "output dtype: base (default: each tensor keeps the base's), bf16, f16, f32"},
    {"exclude", NULL, "REGEX", O_EXCLUDE, M_MERGE, G_MERGE,
     "copy tensors whose name matches (POSIX ERE, matched anywhere in the\n"
     "name; anchor with ^...$) from the base; repeatable"},
    {"allow-extra", NULL, NULL, O_ALLOW_EXTRA, M_MERGE, G_MERGE,
     "ignore tensors that exist only in task models"},
    {"allow-nonfinite", NULL, NULL, O_ALLOW_NONFINITE, M_MERGE, G_MERGE,
     "merge NaN/Inf weights instead of refusing"},
    {"stats", NULL, "FILE", O_STATS, M_MERGE, G_MERGE,
     "reuse the statistics of an earlier merge of these inputs and\n"
     "parameters (its merge_stats.json.zst): only --lambda/--lambdas and\n"
     "--normalize may change"},
    {"shard-size", NULL, "SIZE", O_SHARD_SIZE, M_MERGE, G_MERGE,
     "maximum bytes per output file (default 5GB; KB/MB/GB = powers of 1000)"},
    {"resume", NULL, NULL, O_RESUME, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "continue an interrupted merge into OUT from OUT.partial (the same\n"
     "command otherwise; without OUT.partial it simply starts)"},
    {"force", NULL, NULL, O_FORCE, B(CMD_MERGE) | B(CMD_PLAN), G_MERGE,
     "discard an unfinished earlier merge into OUT (OUT.partial)"},
    {"require-all", NULL, NULL, O_REQUIRE_ALL, M_MERGE, G_MERGE,
     "refuse a merge in which a tensor is missing from a task model\n"
     "(by default that task takes no part in the tensor, with a warning\n"
     "naming tensor and task; a tensor every task lacks is copied from the base)"},
    {"take-nonfloat", NULL, "base", O_TAKE_NONFLOAT, M_MERGE, G_MERGE,
     "integer and bool tensors that differ between the models: copy the\n"
     "base's, with a warning (by default such a merge is refused)"},
    {"dry-run", NULL, NULL, O_DRY_RUN, B(CMD_MERGE), G_MERGE,
     "check everything and say what the merge would do (tensors merged and\n"
     "copied, bytes to read and write, free space needed); write nothing"},
    {"mem", NULL, "SIZE", O_MEM, M_RUN, G_RUN,
     "memory budget for all buffers (default 1G; K/M/G/T = powers of 1024)"},
    {"threads", NULL, "N", O_THREADS, M_RUN, G_RUN, "compute threads (default: online CPUs)"},
    {"io", NULL, "B", O_IO, M_RUN, G_RUN,
     "auto (default: io_uring; inputs found in the page cache are mapped,\n"
     "not copied), uring, pread (every read through that backend), mmap"},
    {"block-size", NULL, "SIZE", O_BLOCK, M_RUN, G_RUN,
     "bytes per model per block (default: chosen from --mem)"},
    {"progress", NULL, "P", O_PROGRESS, M_RUN, G_RUN,
     "auto (a progress line on a terminal), json (JSON lines), none"},
    {"quiet", NULL, NULL, O_QUIET, M_RUN, G_RUN, "print errors only"},
    {"parts", "shards", "K", O_PARTS, B(CMD_PLAN), G_PLAN,
     "the number of parts (the size of the job array), 1 to 100000"},
    {"plan", NULL, "DIR", O_PLAN, M_PHASES, G_PHASE, "the split merge (the --out given to plan)"},
    {"part", "shard", "I", O_PART_INDEX, B(CMD_STATS) | B(CMD_APPLY), G_PHASE,
     "stats, apply: the part (default: SLURM_ARRAY_TASK_ID,\n"
     "JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX)"},
    {"json", NULL, NULL, O_JSON, B(CMD_STATUS) | B(CMD_INSPECT), G_PHASE,
     "status (and inspect): one JSON object"},
    {"get", NULL, "KEY", O_GET, B(CMD_STATUS), G_PHASE,
     "status: print one value: parts, rounds_max, rounds_left, next,\n"
     "pending_stats or pending_apply (comma-separated parts)"},
    {"eval-cmd", NULL, "CMD", O_EVAL, B(CMD_SEARCH), G_SEARCH,
     "the evaluation command, run with /bin/sh -c (required)"},
    {"budget", NULL, "N", O_BUDGET, B(CMD_SEARCH), G_SEARCH,
     "evaluations, the one at λ = init included (default 60)"},
    {"bounds", NULL, "LO,HI", O_BOUNDS, B(CMD_SEARCH), G_SEARCH, "box of every λ_i (default 0.5,3.0)"},
    {"init", NULL, "L", O_INIT, B(CMD_SEARCH), G_SEARCH,
     "starting λ for every task, evaluated first (default 1.0)"},
    {"sigma", NULL, "S", O_SIGMA, B(CMD_SEARCH), G_SEARCH,
     "initial CMA-ES step size (default (HI-LO)/5)"},
    {"popsize", NULL, "P", O_POPSIZE, B(CMD_SEARCH), G_SEARCH,
     "candidates per generation (default 4 + 3 ln N)"},
    {"seed", NULL, "S", O_SEARCH_SEED, B(CMD_SEARCH), G_SEARCH,
     "CMA-ES random seed (default 0); same seed and scores, same search"},
    {"on-eval-error", NULL, "E", O_ON_ERROR, B(CMD_SEARCH), G_SEARCH,
     "stop (default): a failing command stops the search;\n"
     "skip: log it, rank the candidate last and go on"},
    {"resume", NULL, NULL, O_SEARCH_RESUME, B(CMD_SEARCH), G_SEARCH,
     "continue a search that was stopped (SIGTERM/SIGINT: exit 75) or failed,\n"
     "from OUT.search/: logged evaluations are replayed, not re-run (the same\n"
     "parameters are required; --budget may change)"},
    {"force", NULL, NULL, O_SEARCH_FORCE, B(CMD_SEARCH), G_SEARCH,
     "discard an earlier search (OUT.search/) and an unfinished merge into OUT"},
    {"help", NULL, NULL, O_HELP, ~0u, G_COUNT, "this help"},
};
#define NOPTS (sizeof table / sizeof table[0])

/* ---- values --------------------------------------------------------------------------------- */

int cli_usage_error(cli_cmd c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (c < CMD_COUNT)
        fprintf(stderr, "pcbmerge %s: ", cmds[c].name);
    else
        fputs("pcbmerge: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (c < CMD_COUNT)
        fprintf(stderr, "\nrun 'pcbmerge %s --help' for the options\n", cmds[c].name);
    else
        fputs("\nrun 'pcbmerge --help' for the commands and options\n", stderr);
    return EXIT_USAGE;
}

/* A finite number, the whole of s. */
static bool num(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && errno == 0 && isfinite(*out);
}

/* An integer in [lo, hi]. */
static bool int_in(const char *s, double lo, double hi, unsigned *out)
{
    double x;
    if (!num(s, &x) || x < lo || x > hi || x != floor(x))
        return false;
    *out = (unsigned)x;
    return true;
}

/* A non-negative 64-bit integer written in decimal digits. */
static bool u64_arg(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    *out = strtoull(s, &end, 10);
    return *end == '\0' && errno == 0;
}

/* "a,b,c" → doubles; returns the count, or -1. */
static int num_list(const char *s, double *out, int max)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
        if (n >= max || !num(tok, &out[n])) {
            free(copy);
            return -1;
        }
        n++;
    }
    free(copy);
    return copy ? n : -1;
}

/* v among names[] (NULL-terminated): its index, or -1. */
static int pick(const char *v, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i]))
            return i;
    return -1;
}

#define ERR(...) cli_usage_error(c, __VA_ARGS__)

/* The merge parameters. */
static int set_merge_value(cli_cmd c, cli_args *a, int id, const char *opt, const char *v)
{
    pcbm_merge_opts *o = &a->o;
    static const char *const scopes[] = {"global", "tensor", NULL};
    static const char *const dtypes[] = {"base", "bf16", "f16", "f32", NULL};
    static const pcbm_dtype dtype_of[] = {PCBM_DTYPE_BASE, PCBM_DT_BF16, PCBM_DT_F16, PCBM_DT_F32};
    int k;
    switch (id) {
    case O_BASE: o->base = v; break;
    case O_CONFIG: a->config = v; break;
    case O_CHAT_TEMPLATE: a->chat_template = v; break;
    case O_TOKENIZER_SOURCE: a->o.tokenizer_source = v; break;
    case O_OUT: o->out = v; break;
    case O_METHOD:
        if ((o->method = pcbm_method_parse(v)) == PCBM_METHOD_COUNT)
            return ERR("unknown --method %s (pcb, ties, dare_linear, dare_ties, task_arithmetic, "
                       "linear, slerp, nuslerp, model_stock, sce, breadcrumbs, breadcrumbs_ties, "
                       "della, della_linear)", v);
        break;
    case O_T:
        if (!num(v, &o->t)) return ERR("--t needs a number, got %s", v);
        break;
    case O_SELECT_TOPK:
        if (!num(v, &o->select_topk)) return ERR("--select-topk needs a number, got %s", v);
        break;
    case O_NUSLERP_NO_FLATTEN: o->nuslerp_flatten = PCBM_OFF; break;
    case O_NUSLERP_ROW_WISE: o->nuslerp_row_wise = PCBM_ON; break;
    case O_FILTER_WISE: o->filter_wise = PCBM_ON; break;
    case O_DENSITY:
        if (!num(v, &o->density)) return ERR("--density needs a number, got %s", v);
        a->density_given = true;
        break;
    case O_GAMMA:
        if (!num(v, &o->gamma)) return ERR("--gamma needs a number, got %s", v);
        a->gamma_given = true;
        break;
    case O_EPSILON:
        if (!num(v, &o->epsilon)) return ERR("--epsilon needs a number, got %s", v);
        a->epsilon_given = true;
        break;
    case O_MERGEKIT:
        o->semantics = PCBM_SEMANTICS_MERGEKIT;
        break;
    case O_DENSITIES:
        if ((a->ndensities = num_list(v, a->densities, PCBM_MAX_TASKS)) <= 0)
            return ERR("--densities needs comma-separated numbers, got %s", v);
        break;
    case O_GAMMAS:
        if ((a->ngammas = num_list(v, a->gammas, PCBM_MAX_TASKS)) <= 0)
            return ERR("--gammas needs comma-separated numbers, got %s", v);
        break;
    case O_EPSILONS:
        if ((a->nepsilons = num_list(v, a->epsilons, PCBM_MAX_TASKS)) <= 0)
            return ERR("--epsilons needs comma-separated numbers, got %s", v);
        break;
    case O_NORMALIZE:
    case O_NO_NORMALIZE:
    case O_RESCALE:
    case O_NO_RESCALE: {
        bool norm = id == O_NORMALIZE || id == O_NO_NORMALIZE;
        int *sw = norm ? &o->normalize : &o->rescale;
        int want = id == O_NORMALIZE || id == O_RESCALE ? PCBM_ON : PCBM_OFF;
        if (*sw != PCBM_DEFAULT && *sw != want)
            return ERR(norm ? "--normalize and --no-normalize exclude each other"
                            : "--rescale and --no-rescale exclude each other");
        *sw = want;
        break;
    }
    case O_LAMBDA:
        if (!num(v, &o->lambda)) return ERR("--lambda needs a number, got %s", v);
        break;
    case O_LAMBDAS:
        if ((a->nlambdas = num_list(v, a->lambdas, PCBM_MAX_TASKS)) <= 0)
            return ERR("--lambdas needs comma-separated numbers, got %s", v);
        break;
    case O_WEIGHTS:
        if ((a->nweights = num_list(v, a->weights, PCBM_MAX_TASKS)) <= 0)
            return ERR("--weights needs comma-separated numbers, got %s", v);
        break;
    case O_CLAMP:
        if (!num(v, &o->clamp_ratio)) return ERR("--clamp-ratio needs a number, got %s", v);
        break;
    case O_SCOPE:
        if ((k = pick(v, scopes)) < 0) return ERR("--scope is global or tensor, got %s", v);
        o->scope = k ? PCBM_SCOPE_TENSOR : PCBM_SCOPE_GLOBAL;
        a->scope_given = true;
        break;
    case O_EXACT:
    case O_STREAMING:
        if (o->stats_mode != PCBM_STATS_AUTO &&
            o->stats_mode != (id == O_EXACT ? PCBM_STATS_EXACT : PCBM_STATS_STREAMING))
            return ERR("--exact and --streaming exclude each other");
        o->stats_mode = id == O_EXACT ? PCBM_STATS_EXACT : PCBM_STATS_STREAMING;
        break;
    case O_SEED:
        if (!u64_arg(v, &o->seed)) return ERR("--%s needs a non-negative integer, got %s", opt, v);
        break;
    case O_DTYPE:
        if ((k = pick(v, dtypes)) < 0) return ERR("--dtype is bf16, f16, f32 or base, got %s", v);
        o->out_dtype = dtype_of[k];
        break;
    case O_EXCLUDE:
        if (o->nexclude >= CLI_MAX_EXCLUDE)
            return ERR("too many --exclude patterns (max %d)", CLI_MAX_EXCLUDE);
        a->exclude[o->nexclude++] = v;
        break;
    case O_ALLOW_EXTRA: o->allow_extra = 1; break;
    case O_ALLOW_NONFINITE: o->allow_nonfinite = 1; break;
    case O_STATS: o->stats_in = v; break;
    case O_SHARD_SIZE:
        if (pcbm_parse_size(v, &o->shard_bytes)) return ERR("--shard-size needs a size such as 5GB, got %s", v);
        break;
    case O_FORCE: case O_SEARCH_FORCE: o->force = 1; break;
    case O_RESUME: o->resume = 1; break;
    case O_DRY_RUN: o->dry_run = 1; break;
    case O_REQUIRE_ALL: o->require_all = 1; break;
    case O_TAKE_NONFLOAT:
        if (strcmp(v, "base") != 0)
            return ERR("--take-nonfloat takes 'base' (copy the base's tensor), got %s", v);
        o->take_nonfloat_base = 1;
        break;
    default: return -1;
    }
    return 0;
}

/* The run-time settings. */
static int set_run_value(cli_cmd c, cli_args *a, int id, const char *v)
{
    pcbm_merge_opts *o = &a->o;
    static const char *const ios[] = {"auto", "uring", "pread", "mmap", NULL};
    static const pcbm_io_kind io_of[] = {PCBM_IO_AUTO, PCBM_IO_URING, PCBM_IO_PREAD, PCBM_IO_MMAP};
    static const char *const progs[] = {"auto", "json", "none", NULL};
    static const cli_progress prog_of[] = {CLI_PROGRESS_AUTO, CLI_PROGRESS_JSON, CLI_PROGRESS_NONE};
    int k;
    switch (id) {
    case O_MEM:
        if (pcbm_parse_size(v, &o->mem_bytes)) return ERR("--mem needs a size such as 512M or 4G, got %s", v);
        break;
    case O_THREADS:
        if (!int_in(v, 1, 256, &o->threads)) return ERR("--threads needs an integer from 1 to 256, got %s", v);
        break;
    case O_IO:
        if ((k = pick(v, ios)) < 0) return ERR("--io is auto, uring, pread or mmap, got %s", v);
        o->io = io_of[k];
        break;
    case O_BLOCK:
        if (pcbm_parse_size(v, &o->block_bytes)) return ERR("--block-size needs a size such as 1M, got %s", v);
        break;
    case O_PROGRESS:
        if ((k = pick(v, progs)) < 0) return ERR("--progress is auto, json or none, got %s", v);
        a->progress = prog_of[k];
        break;
    case O_QUIET: a->quiet = true; break;
    default: return -1;
    }
    return 0;
}

/* "LO,HI" into the search's bounds. */
static int set_bounds(cli_cmd c, pcbm_search_opts *so, const char *v)
{
    char lo[64], hi[64];
    const char *comma = strchr(v, ',');
    if (!comma || (size_t)(comma - v) >= sizeof lo || strlen(comma + 1) >= sizeof hi)
        return ERR("--bounds needs LO,HI such as 0.5,3.0, got %s", v);
    memcpy(lo, v, (size_t)(comma - v));
    lo[comma - v] = 0;
    snprintf(hi, sizeof hi, "%s", comma + 1);
    if (!num(lo, &so->lo) || !num(hi, &so->hi) || !(so->lo < so->hi))
        return ERR("--bounds needs LO,HI with LO < HI, got %s", v);
    return 0;
}

/* The options of plan, the phases and search. */
static int set_other_value(cli_cmd c, cli_args *a, int id, const char *v)
{
    pcbm_search_opts *so = &a->so;
    switch (id) {
    case O_PARTS:
        if (!int_in(v, 1, 100000, &a->parts)) return ERR("--parts needs an integer from 1 to 100000, got %s", v);
        break;
    case O_PLAN: a->plan = v; break;
    case O_PART_INDEX: a->part = v; break;
    case O_JSON: a->json = true; break;
    case O_GET: a->get = v; break;
    case O_EVAL:
        if (!*v) return ERR("--eval-cmd is empty");
        a->eval_cmd = v;
        break;
    case O_BUDGET:
        if (!int_in(v, 1, 1e7, &so->budget))
            return ERR("--budget needs a number of evaluations from 1 to 10000000, got %s", v);
        break;
    case O_BOUNDS: return set_bounds(c, so, v);
    case O_INIT:
        if (!num(v, &so->init)) return ERR("--init needs a number, got %s", v);
        break;
    case O_SIGMA:
        if (!num(v, &so->sigma) || !(so->sigma > 0)) return ERR("--sigma needs a positive number, got %s", v);
        break;
    case O_POPSIZE:
        if (!int_in(v, 2, 100000, &so->popsize)) return ERR("--popsize needs an integer from 2 to 100000, got %s", v);
        break;
    case O_SEARCH_SEED:
        if (!u64_arg(v, &so->seed)) return ERR("--seed needs a non-negative integer, got %s", v);
        break;
    case O_ON_ERROR:
        if (strcmp(v, "stop") && strcmp(v, "skip")) return ERR("--on-eval-error is stop or skip, got %s", v);
        so->skip_errors = !strcmp(v, "skip");
        break;
    case O_SEARCH_RESUME: so->resume = 1; break;
    default: return -1;
    }
    return 0;
}

/* ---- parsing -------------------------------------------------------------------------------- */

void cli_args_init(cli_args *a)
{
    memset(a, 0, sizeof *a);
    pcbm_merge_opts_init(&a->o);
    a->o.exclude = a->exclude;
    pcbm_search_opts_init(&a->so);
    a->so.merge = &a->o;
}

/* The entry of --name for command c, or NULL; *any: an entry of that name for another command. */
static const cli_opt *find_opt(cli_cmd c, const char *name, const cli_opt **any)
{
    *any = NULL;
    for (size_t i = 0; i < NOPTS; i++) {
        const cli_opt *op = &table[i];
        if (strcmp(op->name, name) && (!op->alias || strcmp(op->alias, name)))
            continue;
        if (op->cmds & B(c))
            return op;
        *any = *any ? *any : op;
    }
    return NULL;
}

/* --name exists but command c does not take it: say why. */
static int refuse(cli_cmd c, const char *name, const cli_opt *any)
{
    int id = any ? any->id : 0;
    if (c == CMD_SEARCH && (id == O_LAMBDA || id == O_LAMBDAS || id == O_WEIGHTS ||
                            id == O_DENSITIES || id == O_NORMALIZE || id == O_NO_NORMALIZE ||
                            id == O_RESCALE || id == O_NO_RESCALE))
        return ERR("--%s does not apply to search: it chooses the per-task λ itself (see --init "
                   "and --bounds)", name);
    if (B(c) & M_PHASES) {
        if (id == O_PART_INDEX)
            return ERR("%s works on the whole merge: it takes no --part", cmds[c].name);
        if (any && any->group != G_PHASE)
            return ERR("--%s is fixed by the plan: plan again (with --force) to change it", name);
    }
    if ((B(c) & M_MERGE) && any && any->group == G_PHASE)
        return ERR("--%s is an option of the split-merge phases (pcbmerge --help)", name);
    char who[160] = "";
    size_t u = 0;
    unsigned takers = 0;
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(table[i].name, name) || (table[i].alias && !strcmp(table[i].alias, name)))
            takers |= table[i].cmds;
    for (unsigned k = 0; k < CMD_COUNT && u < sizeof who; k++)
        if (takers & B(k))
            u += (size_t)snprintf(who + u, sizeof who - u, "%s%s", u ? ", " : "", cmds[k].name);
    return ERR("--%s is not an option of %s (%s: %s)", name, cmds[c].name,
               strchr(who, ',') ? "commands that take it" : "the command that takes it", who);
}

int cli_parse(cli_cmd c, int argc, char **argv, cli_args *a, int *first_arg)
{
    struct option lo[2 * NOPTS + 1];
    size_t n = 0;
    for (size_t i = 0; i < NOPTS; i++)
        for (int k = 0; k < 2; k++) {
            const char *name = k ? table[i].alias : table[i].name;
            bool seen = !name;
            for (size_t j = 0; j < n && !seen; j++)
                seen = !strcmp(lo[j].name, name);
            if (!seen)
                lo[n] = (struct option){name, table[i].arg ? required_argument : no_argument, NULL,
                                        (int)(256 + n)}, n++;
        }
    lo[n] = (struct option){0, 0, 0, 0};
    int ch, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (ch == 'h') {
            a->help = true;
            break;
        }
        if (ch < 256) {
            rc = ERR("unknown or incomplete option %s", argv[optind - 1]);
            continue;
        }
        const char *name = lo[ch - 256].name;
        const cli_opt *any, *op = find_opt(c, name, &any);
        if (op)
            a->given[op->id / 64] |= 1ull << (op->id % 64);
        if (!op)
            rc = refuse(c, name, any);
        else if (op->id == O_HELP) {
            a->help = true;
            break;
        } else if ((rc = set_merge_value(c, a, op->id, name, optarg)) < 0 &&
                   (rc = set_run_value(c, a, op->id, optarg)) < 0)
            rc = set_other_value(c, a, op->id, optarg);
    }
    *first_arg = optind;
    return rc;
}

int cli_recipe_conflicts(const cli_args *a, bool recipe_has_dtype, char *buf, size_t len)
{
    static const int ids[] = {O_BASE, O_METHOD, O_DENSITY, O_DENSITIES, O_LAMBDA, O_LAMBDAS,
                              O_WEIGHTS, O_NORMALIZE, O_NO_NORMALIZE, O_RESCALE, O_NO_RESCALE,
                              O_CLAMP, O_SCOPE, O_DTYPE, O_T, O_SELECT_TOPK,
                              O_NUSLERP_NO_FLATTEN, O_NUSLERP_ROW_WISE, O_FILTER_WISE, O_GAMMA,
                              O_MERGEKIT, O_EPSILON, O_CHAT_TEMPLATE, O_GAMMAS, O_EPSILONS,
                              O_TOKENIZER_SOURCE};
    int n = 0;
    size_t u = 0;
    buf[0] = 0;
    for (size_t k = 0; k < sizeof ids / sizeof *ids; k++) {
        if (!cli_given(a, ids[k]) || (ids[k] == O_DTYPE && !recipe_has_dtype))
            continue;
        for (size_t i = 0; i < NOPTS; i++)
            if (table[i].id == ids[k]) {
                if (u < len)
                    u += (size_t)snprintf(buf + u, len - u, "%s--%s", n ? ", " : "", table[i].name);
                break;
            }
        n++;
    }
    return n;
}

/* ---- help ----------------------------------------------------------------------------------- */

static const char intro[] =
    "Merge fine-tuned safetensors checkpoints of one base model, streaming from disk in bounded\n"
    "memory, with PCB-Merging (Parameter Competition Balancing) or a classic baseline.\n";

static const char split_text[] =
    "split merges (one merge over many machines: Slurm job arrays, Kubernetes Indexed Jobs):\n"
    "  plan takes the merge options and --parts K; the other phases take --plan DIR (the plan's\n"
    "  --out) and only the run-time settings. --part defaults to SLURM_ARRAY_TASK_ID,\n"
    "  JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX.\n"
    "  Order: plan; then stats (every part) and reduce, repeated while reduce asks for another\n"
    "  round (at most `pcbmerge status --plan DIR --get rounds_max` times); apply (every part);\n"
    "  finalize. Every phase can be run again; a failed part is simply re-run. The result is\n"
    "  byte-identical to pcbmerge merge. Job files: tools/slurm/, tools/k8s/.\n";

static const char search_text[] =
    "Searches the per-task coefficients λ_1..λ_N with CMA-ES to maximize a validation score.\n"
    "The statistics pass runs once; every candidate is merged by the apply pass alone into a\n"
    "scratch directory, COMMAND runs with {model} replaced by that directory (also in the\n"
    "environment as PCBM_MODEL), and the last line of its stdout is the score (higher is\n"
    "better). OUT receives the merge at the best λ, search_log.jsonl (every evaluation: λs,\n"
    "score, seconds) and search_summary.json. The methods are pcb, task_arithmetic and\n"
    "dare_linear: ties, dare_ties and linear take no per-task λ and cannot be searched.\n"
    "With --config RECIPE.yml (no task operands) each λ multiplies its model's weight in the\n"
    "recipe (pcb: its λ); every method with per-model weights can be searched, and\n"
    "OUT/search_recipe.yml is the recipe at the best λ (merge --config of it: the same bytes).\n";

static const char inspect_text[] =
    "MODEL: a directory (model.safetensors, or model.safetensors.index.json + shards)\n"
    "or one .safetensors file. Lists every tensor and validates the files.\n";

static const char verify_text[] =
    "Recomputes the xxh3-128 of every file listed in OUT_DIR/pcbmerge.manifest.json; exit 1 on\n"
    "any mismatch.\n";

static const char exit_text[] =
    "exit status: 0 success, 1 failure, 2 usage error, 75 interrupted (resumable)\n";

static void put_opt(FILE *f, const cli_opt *op)
{
    char head[64];
    snprintf(head, sizeof head, "--%s%s%s", op->name, op->arg ? " " : "", op->arg ? op->arg : "");
    const char *p = op->help;
    for (int line = 0; *p; line++) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        if (line == 0)
            fprintf(f, "  %-19s %.*s\n", head, len, p);
        else
            fprintf(f, "%22s%.*s\n", "", len, p);
        p += len + (nl ? 1 : 0);
    }
}

/* The options of group g that the commands `mask` take. */
static void put_group(FILE *f, int g, unsigned mask, bool title)
{
    bool any = false;
    for (size_t i = 0; i < NOPTS; i++) {
        if (table[i].group != g || !(table[i].cmds & mask))
            continue;
        if (!any && title)
            fprintf(f, "\n%s:\n", group_title[g]);
        any = true;
        put_opt(f, &table[i]);
    }
}

void cli_list_cmds(FILE *f)
{
    for (unsigned c = 0; c < CMD_COUNT; c++)
        fprintf(f, "%s%s", c ? ", " : "", cmds[c].name);
}

void cli_help_all(FILE *f)
{
    fprintf(f, "usage: pcbmerge COMMAND [OPTIONS]   (pcbmerge COMMAND --help: one command)\n\n%s"
               "\ncommands:\n", intro);
    for (unsigned c = 0; c < CMD_COUNT; c++)
        fprintf(f, "  %-9s %s\n            pcbmerge %s %s\n", cmds[c].name, cmds[c].summary,
                cmds[c].name, cmds[c].synopsis);
    fputs("  --help, --version\n", f);
    for (int g = 0; g < G_COUNT; g++)
        put_group(f, g, ~0u, true);
    fprintf(f, "\n%s\ncoefficient search (pcbmerge search --help):\n%s\n%s", split_text,
            search_text, exit_text);
}

void cli_help_cmd(FILE *f, cli_cmd c)
{
    static const char *const about[CMD_COUNT] = {
        [CMD_MERGE] = intro, [CMD_PLAN] = split_text, [CMD_SEARCH] = search_text,
        [CMD_STATS] = split_text, [CMD_REDUCE] = split_text, [CMD_APPLY] = split_text,
        [CMD_FINALIZE] = split_text, [CMD_STATUS] = split_text, [CMD_INSPECT] = inspect_text,
        [CMD_VERIFY] = verify_text,
    };
    fprintf(f, "usage: pcbmerge %s %s\n%s: %s\n\n%s", cmds[c].name, cmds[c].synopsis,
            cmds[c].name, cmds[c].summary, about[c]);
    int order[G_COUNT] = {G_SEARCH, G_PLAN, G_PHASE, G_MERGE, G_RUN};
    for (int k = 0; k < G_COUNT; k++)
        put_group(f, order[k], B(c), true);
    fprintf(f, "\n%s", exit_text);
}

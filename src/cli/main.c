/*
 * main.c — the pcbmerge command line: a thin layer over libpcbmerge. Parses options, calls
 * pcbm_merge() or the model reader, prints results and maps statuses to exit codes
 * (0 success, 1 failure, 2 usage error, 75 interrupted and resumable).
 */
#include "pcbmerge.h"
#include "print.h"
#include "search.h"

#include <getopt.h>
#include <stdbool.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2
#define EXIT_TEMPFAIL 75

static const char usage_text[] =
    "usage: pcbmerge COMMAND [OPTIONS]\n"
    "\n"
    "Merge fine-tuned safetensors checkpoints of one base model, streaming from disk in bounded\n"
    "memory, with PCB-Merging (Parameter Competition Balancing) or a classic baseline.\n"
    "\n"
    "commands:\n"
    "  merge --base DIR --out DIR [options] TASK_DIR...   merge task models into OUT\n"
    "  inspect MODEL [--json]                            list and validate a checkpoint\n"
    "  verify OUT_DIR                                    check a merged model against its manifest\n"
    "  search --base DIR --out DIR --eval-cmd CMD ... TASK_DIR...  CMA-ES search of per-task λ\n"
    "                                                    (pcbmerge search --help)\n"
    "  plan --base DIR --out DIR --shards K [options] TASK_DIR...   split a merge into K units\n"
    "  stats --plan DIR [--shard I]      unit I's part of the next statistics round\n"
    "  reduce --plan DIR                 combine the units' statistics (say if another round is due)\n"
    "  apply --plan DIR [--shard I]      write unit I's output files\n"
    "  finalize --plan DIR               index, manifest and atomic publication of DIR\n"
    "  status --plan DIR [--json]        where a split merge stands\n"
    "  --help, --version\n"
    "\n"
    "merge options:\n"
    "  --method M          pcb (default), ties, dare_linear, dare_ties, task_arithmetic, linear\n"
    "  --density R         fraction kept: PCB mask ratio r, TIES top-k, DARE 1-p (default 0.1)\n"
    "  --lambda L          coefficient of the merged task vector (default 1)\n"
    "  --lambdas L1,...    one coefficient per task (pcb, task_arithmetic, dare_linear)\n"
    "  --weights W1,...    linear: weight per task model (default equal)\n"
    "  --clamp-ratio C     PCB outlier clamp ratio (default 1e-4)\n"
    "  --scope S           global (the paper: statistics over the whole model, default) or\n"
    "                      tensor (every statistic per tensor, as per-tensor LLM tools do)\n"
    "  --exact             resolve every quantile exactly (extra passes over the inputs)\n"
    "  --streaming         pcb: use the two-read streaming statistics even below 64M elements\n"
    "  --seed S            DARE random seed (default 0)\n"
    "  --dtype T           output dtype: base (default: each tensor keeps the base's), bf16, f16, f32\n"
    "  --exclude REGEX     copy tensors whose name matches (POSIX ERE, matched anywhere in the\n"
    "                      name; anchor with ^...$) from the base; repeatable\n"
    "  --allow-extra       ignore tensors that exist only in task models\n"
    "  --allow-nonfinite   merge NaN/Inf weights instead of refusing\n"
    "  --mem SIZE          memory budget for all buffers (default 1G; K/M/G/T = powers of 1024)\n"
    "  --threads N         compute threads (default: online CPUs)\n"
    "  --io B              auto (default: io_uring; inputs found in the page cache are mapped,\n"
    "                      not copied), uring, pread (every read through that backend), mmap\n"
    "  --block-size SIZE   bytes per model per block (default: chosen from --mem)\n"
    "  --shard-size SIZE   maximum bytes per output file (default 5GB; KB/MB/GB = powers of 1000)\n"
    "  --resume            continue an interrupted merge into OUT from OUT.partial (the same\n"
    "                      command otherwise; without OUT.partial it simply starts)\n"
    "  --force             discard an unfinished earlier merge into OUT (OUT.partial)\n"
    "  --progress P        auto (a progress line on a terminal), json (JSON lines), none\n"
    "  --quiet             print errors only\n"
    "\n"
    "\n"
    "split merges (one merge over many machines: Slurm job arrays, Kubernetes Indexed Jobs):\n"
    "  plan takes the merge options and --shards K; the other phases take --plan DIR (the plan's\n"
    "  --out) and only --mem, --threads, --io, --block-size, --progress, --quiet. --shard\n"
    "  defaults to SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX.\n"
    "  Order: plan; then stats (every unit) and reduce, repeated while reduce asks for another\n"
    "  round (at most `pcbmerge status --plan DIR --get rounds_max` times); apply (every unit);\n"
    "  finalize. Every phase can be run again; a failed unit is simply re-run. The result is\n"
    "  byte-identical to pcbmerge merge. Job files: tools/cluster/slurm/, tools/cluster/k8s/.\n"
    "\n"
    "exit status: 0 success, 1 failure, 2 usage error, 75 interrupted (resumable)\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "pcbmerge: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'pcbmerge --help' for the options\n");
    return EXIT_USAGE;
}

static int fail(const pcbm_error *err)
{
    char msg[sizeof err->msg + 256];
    pcbm_cli_flagify(err->msg[0] ? err->msg : pcbm_status_name(err->status), msg, sizeof msg);
    fprintf(stderr, "pcbmerge: error: %s\n", msg);
    if (err->status == PCBM_ERR_INTERRUPTED)
        return EXIT_TEMPFAIL;
    return err->status == PCBM_ERR_USAGE ? EXIT_USAGE : 1;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0';
}

/* "a,b,c" → doubles; returns the count or -1. */
static int parse_list(const char *s, double *out, int max)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n >= max || !parse_double(tok, &out[n])) {
            free(copy);
            return -1;
        }
        n++;
    }
    free(copy);
    return n;
}

/* ---- inspect ---------------------------------------------------------------------------- */

static void shape_str(const pcbm_tensor_info *ti, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (unsigned d = 0; d < ti->ndim && u < len; d++)
        u += (size_t)snprintf(buf + u, len - u, "%s%llu", d ? ", " : "", (unsigned long long)ti->shape[d]);
    if (u < len)
        snprintf(buf + u, len - u, "]");
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int inspect_json(const pcbm_model *m)
{
    json_t *root = json_object(), *arr = json_array();
    for (size_t i = 0; i < pcbm_model_num_tensors(m); i++) {
        pcbm_tensor_info ti;
        pcbm_model_tensor(m, i, &ti);
        json_t *t = json_object(), *shape = json_array();
        for (unsigned d = 0; d < ti.ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)ti.shape[d]));
        json_object_set_new(t, "name", json_string(ti.name));
        json_object_set_new(t, "dtype", json_string(pcbm_dtype_name(ti.dtype)));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "bytes", json_integer((json_int_t)ti.nbytes));
        json_object_set_new(t, "shard", json_string(base_name(ti.file)));
        json_object_set_new(t, "offset", json_integer((json_int_t)ti.offset));
        json_array_append_new(arr, t);
    }
    json_object_set_new(root, "path", json_string(pcbm_model_path(m)));
    json_object_set_new(root, "valid", json_true());
    json_object_set_new(root, "tensors", arr);
    json_object_set_new(root, "num_tensors", json_integer((json_int_t)pcbm_model_num_tensors(m)));
    json_object_set_new(root, "num_files", json_integer((json_int_t)pcbm_model_num_files(m)));
    json_object_set_new(root, "total_bytes", json_integer((json_int_t)pcbm_model_total_bytes(m)));
    char *s = json_dumps(root, JSON_INDENT(2));
    puts(s);
    free(s);
    json_decref(root);
    return 0;
}

static int inspect_text(const pcbm_model *m)
{
    uint64_t params = 0;
    printf("%-56s %-6s %-22s %14s  %s\n", "tensor", "dtype", "shape", "bytes", "shard");
    for (size_t i = 0; i < pcbm_model_num_tensors(m); i++) {
        pcbm_tensor_info ti;
        pcbm_model_tensor(m, i, &ti);
        char shape[128];
        shape_str(&ti, shape, sizeof shape);
        printf("%-56s %-6s %-22s %14llu  %s\n", ti.name, pcbm_dtype_name(ti.dtype), shape,
               (unsigned long long)ti.nbytes, base_name(ti.file));
        params += ti.numel;
    }
    printf("%zu tensors in %zu file(s), %llu elements, %llu bytes of tensor data; valid\n",
           pcbm_model_num_tensors(m), pcbm_model_num_files(m), (unsigned long long)params,
           (unsigned long long)pcbm_model_total_bytes(m));
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: pcbmerge inspect MODEL [--json]\n"
                 "MODEL: a directory (model.safetensors, or model.safetensors.index.json + shards)\n"
                 "or one .safetensors file. Lists every tensor and validates the files.");
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1])
            return usage_error("inspect: unknown option %s", argv[i]);
        else if (path)
            return usage_error("inspect takes one model, got a second: %s", argv[i]);
        else
            path = argv[i];
    }
    if (!path)
        return usage_error("%s", "inspect needs a model path");
    pcbm_model *m = NULL;
    pcbm_error err;
    if (pcbm_model_open(path, &m, &err) != PCBM_OK)
        return fail(&err);
    int rc = json ? inspect_json(m) : inspect_text(m);
    pcbm_model_close(m);
    return rc;
}

/* ---- signals ---------------------------------------------------------------------------- */

/* SIGTERM/SIGINT/SIGHUP are blocked in every thread and taken by one thread: the first asks the
 * merge to stop cleanly (exit 75, resumable), a second exits at once (the journal is written
 * atomically, so it is consistent either way). */
static sigset_t stop_signals;
atomic_int pcbm_cli_stop;

static void *signal_thread(void *arg)
{
    (void)arg;
    int sig, count = 0;
    for (;;) {
        if (sigwait(&stop_signals, &sig) != 0)
            continue;
        if (++count == 1) {
            static const char msg[] = "pcbmerge: stopping (signal received): finishing in-flight "
                                      "I/O; a second signal exits at once\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            atomic_store(&pcbm_cli_stop, 1);
            pcbm_request_stop();
        } else {
            static const char msg[] = "pcbmerge: stopped at once; resume with --resume\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            _exit(EXIT_TEMPFAIL);
        }
    }
    return NULL;
}

/* Inputs in the page cache are read through mappings: a file that shrinks under a running merge
 * raises SIGBUS there. Say so instead of dying silently (the partial output stays resumable). */
static void on_sigbus(int sig)
{
    static const char msg[] = "pcbmerge: error: an input file shrank or failed while it was read "
                              "through its mapping (SIGBUS): inputs must not change during a merge; "
                              "check them and run again (with --resume to keep the finished part)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    (void)sig;
    _exit(1);
}

static void start_signal_thread(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, signal_thread, NULL) == 0)
        pthread_detach(t);
}

/* ---- verify ----------------------------------------------------------------------------- */

static void verify_report(void *arg, const char *file, const char *expected, const char *found)
{
    (void)arg;
    fprintf(stderr, "pcbmerge: MISMATCH %s: expected xxh3-128 %s, found %s\n", file, expected, found);
}

static int cmd_verify(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            puts("usage: pcbmerge verify OUT_DIR\nRecomputes the xxh3-128 of every file listed in "
                 "OUT_DIR/pcbmerge.manifest.json; exit 1 on any mismatch.");
            return 0;
        }
        return usage_error("%s", "verify takes one merged model directory");
    }
    unsigned bad = 0;
    pcbm_error err;
    if (pcbm_verify(argv[1], verify_report, NULL, &bad, &err) != PCBM_OK)
        return fail(&err);
    if (bad) {
        fprintf(stderr, "pcbmerge: %s: %u file(s) do not match the manifest\n", argv[1], bad);
        return 1;
    }
    printf("%s: every file matches its manifest\n", argv[1]);
    return 0;
}

/* ---- merge ------------------------------------------------------------------------------ */

enum {
    O_BASE = 256, O_OUT, O_METHOD, O_DENSITY, O_LAMBDA, O_LAMBDAS, O_WEIGHTS, O_CLAMP, O_SCOPE,
    O_EXACT, O_STREAMING, O_SEED, O_DTYPE, O_EXCLUDE, O_ALLOW_EXTRA, O_ALLOW_NONFINITE, O_MEM, O_THREADS, O_IO,
    O_BLOCK, O_SHARD, O_FORCE, O_RESUME, O_PROGRESS, O_QUIET, O_STATS, O_HELP, O_SHARDS,
    O_PLAN, O_SHARD_INDEX, O_JSON, O_GET
};

static const struct option merge_opts[] = {
    {"base", required_argument, 0, O_BASE},       {"out", required_argument, 0, O_OUT},
    {"method", required_argument, 0, O_METHOD},   {"density", required_argument, 0, O_DENSITY},
    {"lambda", required_argument, 0, O_LAMBDA},   {"lambdas", required_argument, 0, O_LAMBDAS},
    {"weights", required_argument, 0, O_WEIGHTS}, {"clamp-ratio", required_argument, 0, O_CLAMP},
    {"scope", required_argument, 0, O_SCOPE},     {"exact", no_argument, 0, O_EXACT},
    {"streaming", no_argument, 0, O_STREAMING},
    {"seed", required_argument, 0, O_SEED},       {"dtype", required_argument, 0, O_DTYPE},
    {"exclude", required_argument, 0, O_EXCLUDE}, {"allow-extra", no_argument, 0, O_ALLOW_EXTRA},
    {"allow-nonfinite", no_argument, 0, O_ALLOW_NONFINITE},
    {"mem", required_argument, 0, O_MEM},         {"threads", required_argument, 0, O_THREADS},
    {"io", required_argument, 0, O_IO},           {"block-size", required_argument, 0, O_BLOCK},
    {"shard-size", required_argument, 0, O_SHARD},{"force", no_argument, 0, O_FORCE},
    {"resume", no_argument, 0, O_RESUME},
    {"progress", required_argument, 0, O_PROGRESS},{"quiet", no_argument, 0, O_QUIET},
    {"stats", required_argument, 0, O_STATS},     {"help", no_argument, 0, O_HELP},
    {"shards", required_argument, 0, O_SHARDS},   {"plan", required_argument, 0, O_PLAN},
    {"shard", required_argument, 0, O_SHARD_INDEX}, {"json", no_argument, 0, O_JSON},
    {"get", required_argument, 0, O_GET},
    {0, 0, 0, 0}};

typedef struct merge_args {
    pcbm_merge_opts o;
    unsigned shards;          /* plan: --shards K */
    double lambdas[PCBM_MAX_TASKS], weights[PCBM_MAX_TASKS];
    int nlambdas, nweights;
    const char *exclude[256];
} merge_args;

static int parse_size_opt(const char *name, const char *v, uint64_t *out)
{
    if (pcbm_parse_size(v, out) != 0)
        return usage_error(name, v);
    return 0;
}

static int set_merge_opt(merge_args *a, int c, const char *v)
{
    pcbm_merge_opts *o = &a->o;
    double x;
    switch (c) {
    case O_BASE: o->base = v; break;
    case O_OUT: o->out = v; break;
    case O_METHOD:
        if ((o->method = pcbm_method_parse(v)) == PCBM_METHOD_COUNT)
            return usage_error("unknown --method %s (pcb, ties, dare_linear, dare_ties, "
                               "task_arithmetic, linear)", v);
        break;
    case O_DENSITY:
        if (!parse_double(v, &o->density)) return usage_error("--density needs a number, got %s", v);
        break;
    case O_LAMBDA:
        if (!parse_double(v, &o->lambda)) return usage_error("--lambda needs a number, got %s", v);
        break;
    case O_LAMBDAS:
        if ((a->nlambdas = parse_list(v, a->lambdas, PCBM_MAX_TASKS)) <= 0)
            return usage_error("--lambdas needs comma-separated numbers, got %s", v);
        break;
    case O_WEIGHTS:
        if ((a->nweights = parse_list(v, a->weights, PCBM_MAX_TASKS)) <= 0)
            return usage_error("--weights needs comma-separated numbers, got %s", v);
        break;
    case O_CLAMP:
        if (!parse_double(v, &o->clamp_ratio)) return usage_error("--clamp-ratio needs a number, got %s", v);
        break;
    case O_SCOPE:
        if (!strcmp(v, "global")) o->scope = PCBM_SCOPE_GLOBAL;
        else if (!strcmp(v, "tensor")) o->scope = PCBM_SCOPE_TENSOR;
        else return usage_error("--scope is global or tensor, got %s", v);
        break;
    case O_EXACT: o->exact = 1; break;
    case O_STREAMING: o->streaming = 1; break;
    case O_SEED:
        if (!parse_double(v, &x) || x < 0 || x != (double)(uint64_t)x)
            return usage_error("--seed needs a non-negative integer, got %s", v);
        o->seed = strtoull(v, NULL, 10);
        break;
    case O_DTYPE:
        if (!strcmp(v, "base")) o->out_dtype = PCBM_DTYPE_BASE;
        else if (!strcmp(v, "bf16")) o->out_dtype = PCBM_DT_BF16;
        else if (!strcmp(v, "f16")) o->out_dtype = PCBM_DT_F16;
        else if (!strcmp(v, "f32")) o->out_dtype = PCBM_DT_F32;
        else return usage_error("--dtype is bf16, f16, f32 or base, got %s", v);
        break;
    case O_EXCLUDE:
        if (o->nexclude >= 256) return usage_error("too many --exclude patterns (max 256)%s", "");
        a->exclude[o->nexclude++] = v;
        break;
    case O_ALLOW_EXTRA: o->allow_extra = 1; break;
    case O_ALLOW_NONFINITE: o->allow_nonfinite = 1; break;
    case O_MEM: return parse_size_opt("--mem needs a size such as 512M or 4G, got %s", v, &o->mem_bytes);
    case O_THREADS:
        if (!parse_double(v, &x) || x < 1 || x > 256 || x != (int)x)
            return usage_error("--threads needs an integer from 1 to 256, got %s", v);
        o->threads = (unsigned)x;
        break;
    case O_IO:
        if (!strcmp(v, "auto")) o->io = PCBM_IO_AUTO;
        else if (!strcmp(v, "uring")) o->io = PCBM_IO_URING;
        else if (!strcmp(v, "pread")) o->io = PCBM_IO_PREAD;
        else if (!strcmp(v, "mmap")) o->io = PCBM_IO_MMAP;
        else return usage_error("--io is auto, uring, pread or mmap, got %s", v);
        break;
    case O_BLOCK: return parse_size_opt("--block-size needs a size such as 1M, got %s", v, &o->block_bytes);
    case O_SHARD: return parse_size_opt("--shard-size needs a size such as 5GB, got %s", v, &o->shard_bytes);
    case O_FORCE: o->force = 1; break;
    case O_RESUME: o->resume = 1; break;
    case O_PROGRESS:
        if (!strcmp(v, "auto")) o->progress = PCBM_PROGRESS_AUTO;
        else if (!strcmp(v, "json")) o->progress = PCBM_PROGRESS_JSON;
        else if (!strcmp(v, "none")) o->progress = PCBM_PROGRESS_NONE;
        else return usage_error("--progress is auto, json or none, got %s", v);
        break;
    case O_QUIET: o->quiet = 1; break;
    case O_STATS: o->stats_in = v; break;
    default: return usage_error("%s", "unknown option");
    }
    return 0;
}

/* merge, or plan (the same options and --shards K: a merge split into K units). */
static int cmd_merge(int argc, char **argv, bool plan)
{
    merge_args *a = calloc(1, sizeof *a);
    pcbm_merge_opts_init(&a->o);
    a->o.exclude = a->exclude;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", merge_opts, NULL)) != -1) {
        if (c == O_HELP) {
            fputs(usage_text, stdout);
            free(a);
            return 0;
        }
        if (c == '?')
            rc = usage_error("unknown or incomplete option %s", argv[optind - 1]);
        else if (c == O_SHARDS && plan) {
            double x;
            if (!parse_double(optarg, &x) || x < 1 || x > 100000 || x != (int)x)
                rc = usage_error("--shards needs an integer from 1 to 100000, got %s", optarg);
            a->shards = (unsigned)x;
        } else if (c >= O_SHARDS)
            rc = usage_error("%s is an option of the split-merge phases (pcbmerge --help)",
                             argv[optind - 1]);
        else
            rc = set_merge_opt(a, c, optarg);
    }
    if (rc == 0 && plan && a->shards == 0)
        rc = usage_error("%s", "plan needs --shards K (the number of units of the job array)");
    if (rc == 0) {
        a->o.tasks = (const char *const *)&argv[optind];
        a->o.ntasks = (unsigned)(argc - optind);
        if (!a->o.base || !a->o.out)
            rc = usage_error("%s needs --base DIR and --out DIR", plan ? "plan" : "merge");
        else if (a->o.ntasks == 0)
            rc = usage_error("%s needs at least one task model after the options",
                             plan ? "plan" : "merge");
        else if (a->nlambdas && (unsigned)a->nlambdas != a->o.ntasks)
            rc = usage_error("--lambdas needs one value per task model (%s)", "count differs");
        else if (a->nweights && (unsigned)a->nweights != a->o.ntasks)
            rc = usage_error("--weights needs one value per task model (%s)", "count differs");
    }
    if (rc == 0) {
        if (a->nlambdas)
            a->o.lambdas = a->lambdas;
        if (a->nweights)
            a->o.weights = a->weights;
        pcbm_error err;
        pcbm_cli_attach_printers(&a->o);
        char *cmdline = pcbm_cli_command_line(&a->o);
        a->o.command = cmdline;
        if ((plan ? pcbm_split_plan(&a->o, a->shards, &err) : pcbm_merge(&a->o, &err)) != PCBM_OK)
            rc = fail(&err);
        free(cmdline);
    }
    free(a);
    return rc;
}

/* ---- split-merge phases ------------------------------------------------------------------ */

/* The unit index: --shard, else the job array's index from the environment. */
static int shard_index(const char *opt, unsigned *out)
{
    static const char *const vars[] = {"SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX",
                                       "AWS_BATCH_JOB_ARRAY_INDEX"};
    const char *v = opt, *from = "--shard";
    for (unsigned k = 0; !v && k < sizeof vars / sizeof vars[0]; k++)
        if ((v = getenv(vars[k])) != NULL)
            from = vars[k];
    if (!v)
        return usage_error("%s", "which unit? give --shard I, or run inside a job array "
                           "(SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or "
                           "AWS_BATCH_JOB_ARRAY_INDEX sets it)");
    char *end = NULL;
    unsigned long u = strtoul(v, &end, 10);
    if (!*v || *end || v[0] == '-' || u > 100000) {
        fprintf(stderr, "pcbmerge: %s is '%s': a unit index is a non-negative integer\n", from, v);
        return EXIT_USAGE;
    }
    *out = (unsigned)u;
    return 0;
}

static const char *next_phase(const pcbm_split_info *in)
{
    return in->published ? "done"
           : in->stats_complete ? (in->units_applied < in->units ? "apply" : "finalize")
           : "stats";
}

static void print_next(const pcbm_split_info *in) { printf("%s\n", next_phase(in)); }

static void print_status(const char *dir, const pcbm_split_info *in, bool json)
{
    const char *next = next_phase(in);
    if (json) {
        json_t *j = json_pack("{s:s,s:i,s:i,s:i,s:b,s:i,s:b,s:s}", "plan", dir, "units",
                              (int)in->units, "rounds_max", (int)in->rounds_max, "rounds_reduced",
                              (int)in->rounds_reduced, "stats_complete", in->stats_complete,
                              "units_applied", (int)in->units_applied, "published",
                              in->published, "next", next);
        char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (txt)
            puts(txt);
        free(txt);
        json_decref(j);
        return;
    }
    if (in->published) {
        printf("%s: published (finalize is done)\n", dir);
        return;
    }
    printf("%s: %u units; statistics %s (%u of at most %u rounds reduced); %u of %u units "
           "applied; next: %s\n", dir, in->units, in->stats_complete ? "complete" : "pending",
           in->rounds_reduced, in->rounds_max, in->units_applied, in->units, next);
}

/* stats, reduce, apply, finalize, status: --plan DIR and run-time settings only. */
static int cmd_phase(const char *name, int argc, char **argv)
{
    merge_args *a = calloc(1, sizeof *a);
    pcbm_merge_opts_init(&a->o);
    const char *dir = NULL, *shard = NULL, *get = NULL;
    bool json = false, status = !strcmp(name, "status");
    bool per_unit = !strcmp(name, "stats") || !strcmp(name, "apply");
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", merge_opts, NULL)) != -1) {
        switch (c) {
        case O_HELP:
            printf("usage: pcbmerge %s --plan DIR%s [--mem SIZE] [--threads N] [--io B] "
                   "[--block-size SIZE] [--progress P] [--quiet]\n(see pcbmerge --help, "
                   "\"split merges\")\n", name, per_unit ? " [--shard I]" : "");
            free(a);
            return 0;
        case O_PLAN: dir = optarg; break;
        case O_SHARD_INDEX:
            if (!per_unit)
                rc = usage_error("%s works on the whole merge: it takes no --shard", name);
            shard = optarg;
            break;
        case O_JSON: json = true; break;
        case O_GET: get = optarg; break;
        case O_MEM: case O_THREADS: case O_IO: case O_BLOCK: case O_PROGRESS: case O_QUIET:
            rc = set_merge_opt(a, c, optarg);
            break;
        case '?':
            rc = usage_error("unknown or incomplete option %s", argv[optind - 1]);
            break;
        default:
            rc = usage_error("%s is fixed by the plan: plan again (with --force) to change it",
                             argv[optind - 1]);
        }
    }
    if (rc == 0 && optind < argc)
        rc = usage_error("unexpected argument %s (the plan names every model)", argv[optind]);
    if (rc == 0 && !dir)
        rc = usage_error("%s needs --plan DIR (the --out given to pcbmerge plan)", name);
    unsigned unit = 0;
    if (rc == 0 && per_unit)
        rc = shard_index(shard, &unit);
    if (rc == 0) {
        pcbm_error err;
        pcbm_status st;
        if (status) {
            pcbm_split_info in;
            st = pcbm_split_status(dir, &in, &err);
            if (st == PCBM_OK && get) {
                if (!strcmp(get, "units")) printf("%u\n", in.units);
                else if (!strcmp(get, "rounds_max")) printf("%u\n", in.rounds_max);
                else if (!strcmp(get, "rounds_left"))
                    printf("%u\n", in.stats_complete || in.rounds_max < in.rounds_reduced
                                        ? 0 : in.rounds_max - in.rounds_reduced);
                else if (!strcmp(get, "next")) print_next(&in);
                else if (!strcmp(get, "pending_stats") || !strcmp(get, "pending_apply")) {
                    unsigned n = 0, *u = calloc(in.units ? in.units : 1, sizeof *u);
                    st = u ? pcbm_split_pending(dir, get[8] == 's' ? PCBM_PHASE_STATS
                                                                    : PCBM_PHASE_APPLY,
                                                u, in.units, &n, &err)
                           : PCBM_ERR_NOMEM;
                    for (unsigned k = 0; st == PCBM_OK && k < n; k++)
                        printf("%s%u", k ? "," : "", u[k]);
                    if (st == PCBM_OK)
                        printf("\n");
                    free(u);
                } else
                    rc = usage_error("--get takes units, rounds_max, rounds_left, next, "
                                     "pending_stats or pending_apply; got %s", get);
            } else if (st == PCBM_OK) {
                print_status(dir, &in, json);
            }
        } else {
            pcbm_phase ph = !strcmp(name, "stats") ? PCBM_PHASE_STATS
                            : !strcmp(name, "reduce") ? PCBM_PHASE_REDUCE
                            : !strcmp(name, "apply") ? PCBM_PHASE_APPLY : PCBM_PHASE_FINALIZE;
            pcbm_cli_attach_printers(&a->o);
            st = pcbm_split_run(dir, ph, unit, &a->o, &err);
        }
        if (st != PCBM_OK)
            rc = fail(&err);
    }
    free(a);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "missing command (merge, inspect, verify)");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("pcbmerge %s\n", pcbm_version());
        return 0;
    }
    if (!strcmp(cmd, "merge") || !strcmp(cmd, "plan")) {
        start_signal_thread();
        return cmd_merge(argc - 1, argv + 1, !strcmp(cmd, "plan"));
    }
    if (!strcmp(cmd, "stats") || !strcmp(cmd, "reduce") || !strcmp(cmd, "apply") ||
        !strcmp(cmd, "finalize") || !strcmp(cmd, "status")) {
        start_signal_thread();
        return cmd_phase(cmd, argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "search")) {
        start_signal_thread();
        return pcbm_cli_search(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 1, argv + 1);
    return usage_error("unknown command %s (merge, inspect, verify)", cmd);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c — the pcbmerge command line: a thin layer over libpcbmerge. Dispatches the commands
 * (options parsed by the shared table of opts.c; search in search.c), runs merge, plan, the
 * split-merge phases, inspect and verify, owns the signal thread (a first SIGTERM/SIGINT/SIGHUP
 * stops cleanly), prints results and maps statuses to exit codes (0 success, 1 failure, 2 usage
 * error, 75 interrupted and resumable).
 */
#include "pcbmerge.h"
#include "opts.h"
#include "print.h"
#include "search.h"

#include <stdbool.h>
#include <sys/stat.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const pcbm_error *err)
{
    char msg[sizeof err->msg + 256];
    pcbm_cli_flagify(err->msg[0] ? err->msg : pcbm_status_name(err->status), msg, sizeof msg);
    fprintf(stderr, "pcbmerge: error: %s\n", msg);
    if (err->status == PCBM_ERR_INTERRUPTED)
        return EXIT_TEMPFAIL;
    return err->status == PCBM_ERR_USAGE ? EXIT_USAGE : 1;
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

/* A LoRA adapter: what its config and factors say. */
static json_t *adapter_json(const pcbm_adapter_info *a)
{
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "r", json_integer(a->r));
    json_object_set_new(j, "lora_alpha", json_real(a->lora_alpha));
    json_object_set_new(j, "use_rslora", json_boolean(a->use_rslora));
    json_object_set_new(j, "scale", json_real(a->scale));
    json_object_set_new(j, "fan_in_fan_out", json_boolean(a->fan_in_fan_out));
    json_object_set_new(j, "rank_pattern_entries", json_integer((json_int_t)a->rank_patterns));
    json_object_set_new(j, "alpha_pattern_entries", json_integer((json_int_t)a->alpha_patterns));
    json_object_set_new(j, "min_rank", json_integer(a->min_rank));
    json_object_set_new(j, "max_rank", json_integer(a->max_rank));
    json_object_set_new(j, "lora_modules", json_integer((json_int_t)a->lora_modules));
    json_object_set_new(j, "saved_tensors", json_integer((json_int_t)a->saved_tensors));
    json_object_set_new(j, "target_modules",
                        a->target_modules ? json_string(a->target_modules) : json_null());
    json_object_set_new(j, "base_model_name_or_path",
                        a->base_model ? json_string(a->base_model) : json_null());
    json_object_set_new(j, "config", json_string(a->config_path));
    return j;
}

static void adapter_text(const pcbm_adapter_info *a)
{
    printf("LoRA adapter (%s): r %u, lora_alpha %g, scale %g%s%s; ranks stored %u..%u "
           "(rank_pattern %zu, alpha_pattern %zu entries)\n", a->config_path, a->r, a->lora_alpha,
           a->scale, a->use_rslora ? " (rsLoRA: alpha / sqrt(r))" : " (alpha / r)",
           a->fan_in_fan_out ? ", fan_in_fan_out" : "", a->min_rank, a->max_rank,
           a->rank_patterns, a->alpha_patterns);
    printf("  targets: %s; %zu modules with LoRA factors, %zu tensors stored whole "
           "(modules_to_save)\n", a->target_modules ? a->target_modules : "(not in the config)",
           a->lora_modules, a->saved_tensors);
    printf("  base_model_name_or_path: %s\n", a->base_model ? a->base_model : "(not in the config)");
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
    pcbm_adapter_info ai;
    if (pcbm_model_adapter(m, &ai) == PCBM_OK)
        json_object_set_new(root, "adapter", adapter_json(&ai));
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
    pcbm_adapter_info ai;
    if (pcbm_model_adapter(m, &ai) == PCBM_OK)
        adapter_text(&ai);
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    cli_args *a = calloc(1, sizeof *a);
    if (!a) {
        fputs("pcbmerge: error: out of memory\n", stderr);
        return 1;
    }
    cli_args_init(a);
    int first, rc = cli_parse(CMD_INSPECT, argc, argv, a, &first);
    bool json = a->json, help = a->help;
    free(a);
    if (rc != 0)
        return rc;
    if (help) {
        cli_help_cmd(stdout, CMD_INSPECT);
        return 0;
    }
    if (first >= argc)
        return cli_usage_error(CMD_INSPECT, "inspect needs a model path");
    if (first + 1 < argc)
        return cli_usage_error(CMD_INSPECT, "inspect takes one model, got a second: %s",
                               argv[first + 1]);
    pcbm_model *m = NULL;
    pcbm_error err;
    if (pcbm_model_open(argv[first], &m, &err) != PCBM_OK)
        return fail(&err);
    rc = json ? inspect_json(m) : inspect_text(m);
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
            cli_help_cmd(stdout, CMD_VERIFY);
            return 0;
        }
        return cli_usage_error(CMD_VERIFY, "verify takes one merged model directory");
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

/* --chat-template T: "auto", a file holding the template, or the template's text. */
static int chat_template_arg(cli_cmd c, cli_args *a, char **text)
{
    struct stat sb;
    const char *v = a->chat_template;
    if (strcmp(v, "auto") != 0 && stat(v, &sb) == 0 && S_ISREG(sb.st_mode)) {
        FILE *f = sb.st_size <= (1 << 20) ? fopen(v, "rb") : NULL;
        if (!f)
            return cli_usage_error(c, "--chat-template %s: cannot read the file (a template file "
                                   "is at most 1 MiB)", v);
        *text = calloc(1, (size_t)sb.st_size + 1);
        size_t n = *text ? fread(*text, 1, (size_t)sb.st_size, f) : 0;
        fclose(f);
        if (!*text || n != (size_t)sb.st_size)
            return cli_usage_error(c, "--chat-template %s: cannot read the file", v);
        v = *text;
    }
    a->o.chat_template = v;
    return 0;
}

/* --config: the merge's parameters from a mergekit recipe; the options that set them are
 * usage errors (they belong in the recipe). */
int cli_recipe_opts(cli_cmd c, cli_args *a, int operands, pcbm_recipe **out)
{
    pcbm_error err;
    if (operands > 0)
        return cli_usage_error(c, "--config takes the models from the recipe: put them in its "
                               "models: list, not after the options");
    if (!a->o.out)
        return cli_usage_error(c, "%s --config RECIPE needs --out DIR", cli_cmd_name(c));
    if (pcbm_recipe_load(a->config, out, &err) != PCBM_OK)
        return fail(&err);
    pcbm_dtype cli_dtype = a->o.out_dtype;
    if (pcbm_recipe_merge_opts(*out, &a->o, &err) != PCBM_OK)
        return fail(&err);
    bool recipe_dtype = a->o.out_dtype != PCBM_DTYPE_BASE;
    char which[512];
    int n = cli_recipe_conflicts(a, recipe_dtype, which, sizeof which);
    if (n)
        return cli_usage_error(c, "%s %s the merge that the recipe %s describes: put %s in "
                               "the recipe instead", which, n > 1 ? "change" : "changes",
                               a->config, n > 1 ? "them" : "it");
    if (!recipe_dtype)
        a->o.out_dtype = cli_dtype;
    return 0;
}

/* merge, or plan (the same options and --parts K: a merge split into K parts). */
static int cmd_merge(int argc, char **argv, cli_cmd c)
{
    cli_args *a = calloc(1, sizeof *a);
    if (!a) {
        fputs("pcbmerge: error: out of memory\n", stderr);
        return 1;
    }
    cli_args_init(a);
    bool plan = c == CMD_PLAN;
    int first, rc = cli_parse(c, argc, argv, a, &first);
    if (rc == 0 && a->help) {
        cli_help_cmd(stdout, c);
        free(a);
        return 0;
    }
    if (rc == 0 && plan && a->parts == 0)
        rc = cli_usage_error(c, "plan needs --parts K (the number of parts of the job array)");
    pcbm_recipe *recipe = NULL;
    if (rc == 0 && a->config)
        rc = cli_recipe_opts(c, a, argc - first, &recipe);
    else if (rc == 0) {
        a->o.tasks = (const char *const *)&argv[first];
        a->o.ntasks = (unsigned)(argc - first);
        if (!a->o.base || !a->o.out)
            rc = cli_usage_error(c, "%s needs --base DIR and --out DIR", cli_cmd_name(c));
        else if (a->o.ntasks == 0)
            rc = cli_usage_error(c, "%s needs at least one task model after the options",
                                 cli_cmd_name(c));
        else if (a->nlambdas && (unsigned)a->nlambdas != a->o.ntasks)
            rc = cli_usage_error(c, "--lambdas needs one value per task model (count differs)");
        else if (a->nweights && (unsigned)a->nweights != a->o.ntasks)
            rc = cli_usage_error(c, "--weights needs one value per task model (%d for %u task "
                                 "models)", a->nweights, a->o.ntasks);
        else if (a->ndensities && (unsigned)a->ndensities != a->o.ntasks)
            rc = cli_usage_error(c, "--densities needs one value per task model (%d for %u task "
                                 "models)", a->ndensities, a->o.ntasks);
        else if (a->ndensities && a->density_given)
            rc = cli_usage_error(c, "--density and --densities exclude each other: give one "
                                 "density for every task or one per task");
        else if (a->ngammas && (unsigned)a->ngammas != a->o.ntasks)
            rc = cli_usage_error(c, "--gammas needs one value per task model (%d for %u task "
                                 "models)", a->ngammas, a->o.ntasks);
        else if (a->nepsilons && (unsigned)a->nepsilons != a->o.ntasks)
            rc = cli_usage_error(c, "--epsilons needs one value per task model (%d for %u task "
                                 "models)", a->nepsilons, a->o.ntasks);
        else if (a->ngammas && a->gamma_given)
            rc = cli_usage_error(c, "--gamma and --gammas exclude each other: give one gamma for "
                                 "every task or one per task");
        else if (a->nepsilons && a->epsilon_given)
            rc = cli_usage_error(c, "--epsilon and --epsilons exclude each other: give one "
                                 "epsilon for every task or one per task");
        else if (a->gamma_given && !(a->o.method == PCBM_METHOD_BREADCRUMBS ||
                                     a->o.method == PCBM_METHOD_BREADCRUMBS_TIES))
            rc = cli_usage_error(c, "--gamma does not apply to the %s method (methods that take "
                                 "it: breadcrumbs, breadcrumbs_ties)", pcbm_method_name(a->o.method));
        else if (a->epsilon_given && !(a->o.method == PCBM_METHOD_DELLA ||
                                       a->o.method == PCBM_METHOD_DELLA_LINEAR))
            rc = cli_usage_error(c, "--epsilon does not apply to the %s method (methods that "
                                 "take it: della, della_linear)", pcbm_method_name(a->o.method));
        else if (a->scope_given && a->o.scope == PCBM_SCOPE_GLOBAL && pcbm_method_per_tensor(&a->o))
            rc = cli_usage_error(c, "--scope global: %s%s computes its statistics per tensor, "
                                 "as mergekit does; drop --scope", pcbm_method_name(a->o.method),
                                 a->o.semantics == PCBM_SEMANTICS_MERGEKIT ? " --mergekit" : "");
    }
    char *template_text = NULL;
    if (rc == 0 && a->chat_template)
        rc = chat_template_arg(c, a, &template_text);
    if (rc == 0) {
        if (a->nlambdas)
            a->o.lambdas = a->lambdas;
        if (a->nweights)
            a->o.weights = a->weights;
        if (a->ndensities)
            a->o.densities = a->densities;
        if (a->ngammas)
            a->o.gammas = a->gammas;
        if (a->nepsilons)
            a->o.epsilons = a->epsilons;
        pcbm_error err;
        pcbm_cli_attach_printers(&a->o, a->progress, a->quiet);
        char *cmdline = pcbm_cli_command_line(&a->o);
        a->o.command = cmdline;
        if ((plan ? pcbm_split_plan(&a->o, a->parts, &err) : pcbm_merge(&a->o, &err)) != PCBM_OK)
            rc = fail(&err);
        free(cmdline);
    }
    pcbm_recipe_free(recipe);
    free(template_text);
    free(a);
    return rc;
}

/* ---- split-merge phases ------------------------------------------------------------------ */

/* The part index: --shard, else the job array's index from the environment. */
static int part_index(const char *opt, unsigned *out)
{
    static const char *const vars[] = {"SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX",
                                       "AWS_BATCH_JOB_ARRAY_INDEX"};
    const char *v = opt, *from = "--part";
    for (unsigned k = 0; !v && k < sizeof vars / sizeof vars[0]; k++)
        if ((v = getenv(vars[k])) != NULL)
            from = vars[k];
    if (!v)
        return cli_usage_error(CMD_COUNT, "which part? give --part I, or run inside a job array "
                               "(SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or "
                               "AWS_BATCH_JOB_ARRAY_INDEX sets it)");
    char *end = NULL;
    unsigned long u = strtoul(v, &end, 10);
    if (!*v || *end || v[0] == '-' || u > 100000) {
        fprintf(stderr, "pcbmerge: %s is '%s': a part index is a non-negative integer\n", from, v);
        return EXIT_USAGE;
    }
    *out = (unsigned)u;
    return 0;
}

static const char *next_phase(const pcbm_split_info *in)
{
    return in->published ? "done"
           : in->stats_complete ? (in->parts_applied < in->parts ? "apply" : "finalize")
           : "stats";
}

static void print_next(const pcbm_split_info *in) { printf("%s\n", next_phase(in)); }

static void print_status(const char *dir, const pcbm_split_info *in, bool json)
{
    const char *next = next_phase(in);
    if (json) {
        json_t *j = json_pack("{s:s,s:i,s:i,s:i,s:b,s:i,s:b,s:s}", "plan", dir, "parts",
                              (int)in->parts, "rounds_max", (int)in->rounds_max, "rounds_reduced",
                              (int)in->rounds_reduced, "stats_complete", in->stats_complete,
                              "parts_applied", (int)in->parts_applied, "published",
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
    printf("%s: %u parts; statistics %s (%u of at most %u rounds reduced); %u of %u parts "
           "applied; next: %s\n", dir, in->parts, in->stats_complete ? "complete" : "pending",
           in->rounds_reduced, in->rounds_max, in->parts_applied, in->parts, next);
}

/* status --get KEY: one value. */
static pcbm_status print_value(const char *dir, const pcbm_split_info *in, const char *get,
                               int *rc, pcbm_error *err)
{
    pcbm_status st = PCBM_OK;
    if (!strcmp(get, "parts") || !strcmp(get, "parts"))
        printf("%u\n", in->parts);
    else if (!strcmp(get, "rounds_max"))
        printf("%u\n", in->rounds_max);
    else if (!strcmp(get, "rounds_left"))
        printf("%u\n", in->stats_complete || in->rounds_max < in->rounds_reduced
                            ? 0 : in->rounds_max - in->rounds_reduced);
    else if (!strcmp(get, "next"))
        print_next(in);
    else if (!strcmp(get, "pending_stats") || !strcmp(get, "pending_apply")) {
        unsigned n = 0, *u = calloc(in->parts ? in->parts : 1, sizeof *u);
        st = u ? pcbm_split_pending(dir, get[8] == 's' ? PCBM_PHASE_STATS : PCBM_PHASE_APPLY, u,
                                    in->parts, &n, err)
               : PCBM_ERR_NOMEM;
        if (st == PCBM_ERR_NOMEM && !u)
            snprintf(err->msg, sizeof err->msg, "out of memory");
        for (unsigned k = 0; st == PCBM_OK && k < n; k++)
            printf("%s%u", k ? "," : "", u[k]);
        if (st == PCBM_OK)
            printf("\n");
        free(u);
    } else
        *rc = cli_usage_error(CMD_STATUS, "--get takes parts, rounds_max, rounds_left, next, "
                              "pending_stats or pending_apply; got %s", get);
    return st;
}

/* stats, reduce, apply, finalize, status: --plan DIR and run-time settings only. */
static int cmd_phase(cli_cmd c, int argc, char **argv)
{
    cli_args *a = calloc(1, sizeof *a);
    if (!a) {
        fputs("pcbmerge: error: out of memory\n", stderr);
        return 1;
    }
    cli_args_init(a);
    const char *name = cli_cmd_name(c);
    int first, rc = cli_parse(c, argc, argv, a, &first);
    if (rc == 0 && a->help) {
        cli_help_cmd(stdout, c);
        free(a);
        return 0;
    }
    if (rc == 0 && first < argc)
        rc = cli_usage_error(c, "unexpected argument %s (the plan names every model)", argv[first]);
    if (rc == 0 && !a->plan)
        rc = cli_usage_error(c, "%s needs --plan DIR (the --out given to pcbmerge plan)", name);
    unsigned part = 0;
    if (rc == 0 && (c == CMD_STATS || c == CMD_APPLY))
        rc = part_index(a->part, &part);
    if (rc == 0) {
        pcbm_error err;
        pcbm_status st;
        if (c == CMD_STATUS) {
            pcbm_split_info in;
            st = pcbm_split_status(a->plan, &in, &err);
            if (st == PCBM_OK && a->get)
                st = print_value(a->plan, &in, a->get, &rc, &err);
            else if (st == PCBM_OK)
                print_status(a->plan, &in, a->json);
        } else {
            pcbm_phase ph = c == CMD_STATS ? PCBM_PHASE_STATS
                            : c == CMD_REDUCE ? PCBM_PHASE_REDUCE
                            : c == CMD_APPLY ? PCBM_PHASE_APPLY : PCBM_PHASE_FINALIZE;
            pcbm_cli_attach_printers(&a->o, a->progress, a->quiet);
            st = pcbm_split_run(a->plan, ph, part, &a->o, &err);
        }
        if (st != PCBM_OK)
            rc = fail(&err);
    }
    free(a);
    return rc;
}

/* The no-argument and unknown-command messages name every command. */
static int no_command(const char *what, const char *cmd)
{
    fprintf(stderr, "pcbmerge: %s%s (", what, cmd);
    cli_list_cmds(stderr);
    fputs(")\nrun 'pcbmerge --help' for the commands and options\n", stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return no_command("missing command", "");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        cli_help_all(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("pcbmerge %s\n", pcbm_version());
        return 0;
    }
    cli_cmd c = cli_cmd_parse(cmd);
    switch (c) {
    case CMD_MERGE: case CMD_PLAN:
        start_signal_thread();
        return cmd_merge(argc - 1, argv + 1, c);
    case CMD_STATS: case CMD_REDUCE: case CMD_APPLY: case CMD_FINALIZE: case CMD_STATUS:
        start_signal_thread();
        return cmd_phase(c, argc - 1, argv + 1);
    case CMD_SEARCH:
        start_signal_thread();
        return pcbm_cli_search(argc - 1, argv + 1);
    case CMD_VERIFY: return cmd_verify(argc - 1, argv + 1);
    case CMD_INSPECT: return cmd_inspect(argc - 1, argv + 1);
    default: return no_command("unknown command ", cmd);
    }
}

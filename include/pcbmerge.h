/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcbmerge.h — the one public header of libpcbmerge.
 *
 * libpcbmerge merges fine-tuned checkpoints of one base model (safetensors) into one model with
 * PCB-Merging (Parameter Competition Balancing, NeurIPS 2024) and the classic baselines (task
 * arithmetic, TIES, DARE, linear), streaming every model from disk in bounded memory.
 *
 * Conventions: every exported name starts with pcbm_ / PCBM_; handles are opaque; every fallible
 * function returns a pcbm_status and, when given a pcbm_error, fills it with one human sentence
 * saying what went wrong, where (file, tensor, byte offset) and what to do.
 */
#ifndef PCBMERGE_H
#define PCBMERGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PCBM_API __attribute__((visibility("default")))
#else
#define PCBM_API
#endif

#define PCBM_VERSION_MAJOR 0
#define PCBM_VERSION_MINOR 1
#define PCBM_VERSION_PATCH 0
#define PCBM_VERSION_STRING "0.1.0"

/* Library version string (may differ from PCBM_VERSION_STRING if the header is older). */
PCBM_API const char *pcbm_version(void);

/* ---------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------- */
typedef enum pcbm_status {
    PCBM_OK = 0,
    PCBM_ERR_USAGE,        /* an argument or option is invalid */
    PCBM_ERR_IO,           /* open/read/write/fsync failed (the message names file and offset) */
    PCBM_ERR_FORMAT,       /* a safetensors file or index breaks a rule of the format */
    PCBM_ERR_MISMATCH,     /* base and task models disagree on names, shapes or dtypes */
    PCBM_ERR_NONFINITE,    /* a participating weight is NaN or Inf */
    PCBM_ERR_NOMEM,        /* allocation failed, or --mem is too small to work */
    PCBM_ERR_NOSPACE,      /* the output filesystem is (or became) full */
    PCBM_ERR_STATS,        /* a statistics file does not match these inputs or parameters */
    PCBM_ERR_EXISTS,       /* the output exists and would be overwritten */
    PCBM_ERR_INTERRUPTED,  /* stopped by a signal; resumable */
    PCBM_ERR_UNSUPPORTED,  /* a feature the platform or build lacks, or an input pcbmerge does
                              not merge (quantized checkpoints) */
    PCBM_ERR_INTERNAL,     /* a bug: please report it */
    PCBM_STATUS_COUNT
} pcbm_status;

/* Static, short name of a status ("format error", ...). Never NULL. */
PCBM_API const char *pcbm_status_name(pcbm_status s);

typedef struct pcbm_error {
    pcbm_status status;
    char msg[1024];
} pcbm_error;

/* ---------------------------------------------------------------------------------------------
 * Data types (the safetensors dtype strings)
 * ------------------------------------------------------------------------------------------- */
typedef enum pcbm_dtype {
    PCBM_DT_BOOL = 0,
    PCBM_DT_U8,
    PCBM_DT_I8,
    PCBM_DT_F8_E5M2,
    PCBM_DT_F8_E4M3,
    PCBM_DT_I16,
    PCBM_DT_U16,
    PCBM_DT_F16,
    PCBM_DT_BF16,
    PCBM_DT_I32,
    PCBM_DT_U32,
    PCBM_DT_F32,
    PCBM_DT_F64,
    PCBM_DT_I64,
    PCBM_DT_U64,
    PCBM_DT_F4,
    PCBM_DT_F6_E2M3,
    PCBM_DT_F6_E3M2,
    PCBM_DT_F8_E8M0,
    PCBM_DT_F8_E4M3FNUZ,
    PCBM_DT_F8_E5M2FNUZ,
    PCBM_DT_C64,
    PCBM_DT_COUNT
} pcbm_dtype;

/* "BF16", "F32", ... as in safetensors headers. */
PCBM_API const char *pcbm_dtype_name(pcbm_dtype dt);
/* Parse a safetensors dtype string; returns PCBM_DT_COUNT if unknown. */
PCBM_API pcbm_dtype pcbm_dtype_parse(const char *s);
/* Size of one element in bits (4 for F4, 6 for F6_*, 8..128 otherwise). */
PCBM_API unsigned pcbm_dtype_bits(pcbm_dtype dt);
/* 1 if the dtype is one of the merged floating-point types (F32, F16, BF16, F64; F64 is computed
 * in float32 like the others). FP8 weights are merged too, dequantized with their block scales. */
PCBM_API int pcbm_dtype_is_mergeable(pcbm_dtype dt);

/* ---------------------------------------------------------------------------------------------
 * Models (read-only view of a safetensors checkpoint)
 * ------------------------------------------------------------------------------------------- */
typedef struct pcbm_model pcbm_model;

typedef struct pcbm_tensor_info {
    const char *name;
    pcbm_dtype dtype;
    unsigned ndim;
    const uint64_t *shape;  /* ndim entries */
    uint64_t numel;
    uint64_t nbytes;
    const char *file;       /* path of the shard that holds it */
    uint64_t offset;        /* absolute byte offset of its data in that file */
} pcbm_tensor_info;

/*
 * Open and fully validate a model: a directory holding model.safetensors, or
 * model.safetensors.index.json plus shards, or a single .safetensors file; or a Hugging Face
 * cache repository folder (models--ORG--NAME: the snapshot refs/main names), or a hub id
 * ORG/NAME[@REVISION] found in the local cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub; REVISION a branch, tag or commit; never downloaded). Tensors are
 * listed in the model's order: shards in index order, then by data offset inside each shard.
 * pcbm_model_path gives the path the model was read from.
 */
PCBM_API pcbm_status pcbm_model_open(const char *path, pcbm_model **out, pcbm_error *err);
PCBM_API void pcbm_model_close(pcbm_model *m);
PCBM_API const char *pcbm_model_path(const pcbm_model *m);
PCBM_API size_t pcbm_model_num_tensors(const pcbm_model *m);
PCBM_API size_t pcbm_model_num_files(const pcbm_model *m);
PCBM_API uint64_t pcbm_model_total_bytes(const pcbm_model *m); /* sum of tensor bytes */
PCBM_API pcbm_status pcbm_model_tensor(const pcbm_model *m, size_t i, pcbm_tensor_info *out);
/* Index of the tensor named `name`, or -1. */
PCBM_API long pcbm_model_find(const pcbm_model *m, const char *name);

/*
 * A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, peft_type LORA)
 * opens as a model whose tensors are the adapter's; it is accepted wherever a task model is.
 * pcbm_model_adapter describes it: PCBM_OK for an adapter, PCBM_ERR_USAGE for any other model.
 */
typedef struct pcbm_adapter_info {
    unsigned r;                 /* the config's rank (rank_pattern may override it per module) */
    double lora_alpha;
    double scale;               /* lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora */
    int use_rslora, fan_in_fan_out;
    size_t rank_patterns, alpha_patterns; /* entries of rank_pattern / alpha_pattern */
    size_t lora_modules;        /* modules with lora_A / lora_B (or lora_embedding_A / B) */
    size_t saved_tensors;       /* other tensors: stored whole (modules_to_save) */
    unsigned min_rank, max_rank;/* of the stored factors */
    const char *target_modules; /* as the config writes it (names joined by ','), or NULL */
    const char *base_model;     /* base_model_name_or_path, or NULL */
    const char *config_path;
} pcbm_adapter_info;
PCBM_API pcbm_status pcbm_model_adapter(const pcbm_model *m, pcbm_adapter_info *out);

/* ---------------------------------------------------------------------------------------------
 * Number formats: exact decoding, round-to-nearest-even encoding, NaN stays NaN.
 * ------------------------------------------------------------------------------------------- */
PCBM_API float pcbm_bf16_to_f32(uint16_t h);
PCBM_API uint16_t pcbm_f32_to_bf16(float f);
PCBM_API float pcbm_f16_to_f32(uint16_t h);
PCBM_API uint16_t pcbm_f32_to_f16(float f);

/* ---------------------------------------------------------------------------------------------
 * Merging
 * ------------------------------------------------------------------------------------------- */
typedef enum pcbm_method {
    PCBM_METHOD_PCB = 0,
    PCBM_METHOD_TIES,
    PCBM_METHOD_DARE_LINEAR,
    PCBM_METHOD_DARE_TIES,
    PCBM_METHOD_TASK_ARITHMETIC,
    PCBM_METHOD_LINEAR,
    PCBM_METHOD_SLERP,          /* mergekit's geometric and statistical methods (per tensor) */
    PCBM_METHOD_NUSLERP,
    PCBM_METHOD_MODEL_STOCK,
    PCBM_METHOD_SCE,
    PCBM_METHOD_BREADCRUMBS,        /* mergekit's (docs/semantics.md) */
    PCBM_METHOD_BREADCRUMBS_TIES,
    PCBM_METHOD_DELLA,
    PCBM_METHOD_DELLA_LINEAR,
    PCBM_METHOD_COUNT
} pcbm_method;

PCBM_API const char *pcbm_method_name(pcbm_method m);
PCBM_API pcbm_method pcbm_method_parse(const char *s); /* PCBM_METHOD_COUNT if unknown */

/* Where a method's statistics are taken: over the whole model (GLOBAL), per tensor (TENSOR), or
 * the method's own scope (AUTO, the default): global for pcb, ties and dare_ties (the papers'),
 * tensor for mergekit's methods. A merge resolves AUTO before it starts (reports, split plans
 * and statistics files record GLOBAL or TENSOR). */
typedef enum pcbm_scope {
    PCBM_SCOPE_GLOBAL = 0,
    PCBM_SCOPE_TENSOR = 1,
    PCBM_SCOPE_AUTO = 2
} pcbm_scope;
/* Whose semantics a method follows where the paper's official code and mergekit differ
 * (docs/semantics.md lists every difference); recipes (--config) use MERGEKIT. */
typedef enum pcbm_semantics { PCBM_SEMANTICS_OFFICIAL = 0, PCBM_SEMANTICS_MERGEKIT } pcbm_semantics;
/* Per-tensor parameters: a mergekit recipe's parameters (scalars, gradients over layers, filters
 * on tensor names) for the whole merge and per model (pcbm_params_* below). */
typedef struct pcbm_params pcbm_params;
/* I/O: auto = io_uring (a pread pool where it is blocked), and inputs found in the page cache at
 * the start of a pass are read through a read-only mapping instead of copied; uring / pread force
 * that backend for every read; mmap maps the inputs whether cached or not. */
typedef enum pcbm_io_kind { PCBM_IO_AUTO = 0, PCBM_IO_URING, PCBM_IO_PREAD, PCBM_IO_MMAP } pcbm_io_kind;
/* SIGBUS: with AUTO or MMAP, an input file that shrinks while a pass reads it through its mapping
 * raises SIGBUS in the calling process (the library installs no signal handler; the pcbmerge
 * command catches it and says which input changed). URING and PREAD never map inputs: a file
 * that shrinks is then an I/O error naming the file and offset. */

/* PCB's global statistics: AUTO reads the inputs about twice (samples, then one full pass)
 * on large 16-bit merges and uses exact passes otherwise; EXACT always resolves every quantile
 * with exact passes (about five reads); STREAMING always uses the two-read statistics (smaller
 * merges too), falling back to exact passes only where a sample misses. */
typedef enum pcbm_stats_mode {
    PCBM_STATS_AUTO = 0,
    PCBM_STATS_EXACT,
    PCBM_STATS_STREAMING
} pcbm_stats_mode;

#define PCBM_MAX_TASKS 64
#define PCBM_DTYPE_BASE PCBM_DT_COUNT /* out_dtype: keep each tensor's base dtype */

/* ---------------------------------------------------------------------------------------------
 * Messages, progress and stopping. The library writes nothing to stdout or stderr and keeps no
 * process-wide settings: each call (pcbm_merge, pcbm_split_plan, pcbm_split_run, ...) sends its
 * warnings and notes to the on_message of its options, its progress to on_progress, and asks
 * should_stop whether to stop. All three are called on the thread that made the call (never
 * concurrently for one call); with none set, the library is silent. Errors are not messages: they
 * come back as a pcbm_status and a pcbm_error.
 * ------------------------------------------------------------------------------------------- */
typedef enum pcbm_level {
    PCBM_LEVEL_WARNING = 0,   /* something the user should look at; the merge goes on */
    PCBM_LEVEL_NOTE           /* what was done: plan, resume, run summary, publication */
} pcbm_level;

/* One message: a sentence without a trailing newline or program-name prefix. */
typedef void (*pcbm_message_fn)(void *user, pcbm_level level, const char *text);

typedef enum pcbm_progress_kind {
    PCBM_PROGRESS_PASS = 0,   /* a pass is under way (sent at most every 0.25 s) */
    PCBM_PROGRESS_PASS_END,   /* a pass ended */
    PCBM_PROGRESS_DONE        /* the call ended (status says how); the last event */
} pcbm_progress_kind;

typedef struct pcbm_progress_event {
    pcbm_progress_kind kind;
    const char *pass;         /* "stats 1/4", "apply", ... (NULL with DONE) */
    unsigned pass_index;      /* 1-based number of this pass in the call */
    unsigned pass_count;      /* passes expected in all (grows if a statistic needs more) */
    uint64_t pass_bytes;      /* bytes this pass moved so far / will move in all */
    uint64_t pass_total;
    double pass_rate;         /* bytes per second over the pass */
    double pass_eta;          /* seconds left in this pass */
    uint64_t bytes;           /* bytes moved by every pass so far / expected in all */
    uint64_t total;
    double elapsed;           /* seconds since the call started */
    double eta;               /* seconds left in the whole call (estimate; 0 when unknown) */
    pcbm_status status;       /* DONE: the call's result */
} pcbm_progress_event;

typedef void (*pcbm_progress_fn)(void *user, const pcbm_progress_event *ev);
/* Polled at block boundaries: non-zero stops the call as pcbm_request_stop() would, for this
 * call only. */
typedef int (*pcbm_stop_fn)(void *user);

typedef struct pcbm_merge_opts {
    uint32_t struct_size;           /* sizeof(pcbm_merge_opts) the caller was compiled with; set
                                       by pcbm_merge_opts_init. Fields added in later versions go
                                       at the end and take their defaults for older callers. */
    const char *base;               /* base model path */
    const char *const *tasks;       /* task model paths */
    unsigned ntasks;
    const char *out;                /* output directory (must not exist) */

    pcbm_method method;             /* default PCB */
    double density;                 /* fraction kept (PCB mask ratio r, TIES k, DARE 1-p); 0.1;
                                       `densities` gives one per task */
    double lambda;                  /* global coefficient; 1.0 */
    const double *lambdas;          /* per-task coefficients (ntasks) or NULL */
    const double *weights;          /* per-task weights (ntasks) or NULL = 1 each: linear,
                                       task_arithmetic, dare_linear, ties, dare_ties */
    double clamp_ratio;             /* PCB outlier clamp ratio c; 1e-4 */
    pcbm_scope scope;               /* global, per tensor, or the method's own (AUTO) */
    pcbm_stats_mode stats_mode;     /* how PCB's global statistics are found; AUTO */
    uint64_t seed;                  /* DARE mask seed */

    uint64_t mem_bytes;             /* memory budget for every buffer; 1 GiB */
    unsigned threads;               /* 0 = online CPUs */
    pcbm_io_kind io;                /* I/O backend */
    uint64_t block_bytes;           /* 0 = chosen from mem; otherwise target bytes per model block */
    uint64_t shard_bytes;           /* output shard size; 5e9 */
    pcbm_dtype out_dtype;           /* PCBM_DTYPE_BASE, or F32/F16/BF16 */

    const char *const *exclude;     /* POSIX ERE patterns of tensor names copied from the base */
    unsigned nexclude;
    int allow_extra;                /* ignore tensors present only in task models */
    int allow_nonfinite;            /* merge NaN/Inf weights instead of refusing */

    int force;                      /* discard a stale partial output of an earlier run */
    int resume;                     /* continue the partial output of an interrupted run */
    const char *stats_in;           /* reuse a statistics file from an earlier run, or NULL */
    pcbm_message_fn on_message;     /* warnings and notes, or NULL */
    pcbm_progress_fn on_progress;   /* progress events, or NULL */
    pcbm_stop_fn should_stop;       /* asked at block boundaries, or NULL */
    void *user;                     /* passed to the three callbacks */

    const char *command;            /* how the caller ran the merge (a shell command line), for
                                       the model card; NULL: none recorded */
    int dry_run;                    /* check everything and report, as notes, what the merge
                                       would do; create and write nothing */
    int require_all;                /* a tensor missing from a task model is an error (by
                                       default it is copied from the base, with a warning) */
    int take_nonfloat_base;         /* integer and bool tensors that differ between the models:
                                       copy the base's, with a warning (by default the merge is
                                       refused, naming tensor and models) */
    /* mergekit's per-model parameters (ties, dare_ties, dare_linear; task_arithmetic takes
     * `normalize`): docs/semantics.md */
    const double *densities;        /* per-task densities in (0, 1] (ntasks) or NULL = `density`
                                       for every task: ties, dare_ties, dare_linear */
    int normalize;                  /* PCBM_DEFAULT: the method's (on for ties, off otherwise);
                                       PCBM_ON: divide by the summed weights (of the agreeing
                                       tasks with ties/dare_ties); PCBM_OFF: do not */
    int rescale;                    /* DARE: PCBM_DEFAULT or PCBM_ON divide the survivors by
                                       their task's density; PCBM_OFF keeps them as they are */
    /* mergekit's methods and recipes (docs/semantics.md) */
    pcbm_semantics semantics;       /* PCBM_SEMANTICS_OFFICIAL (default): ties, dare_* as the
                                       papers' code; MERGEKIT: as mergekit computes them */
    double t;                       /* slerp: interpolation factor in [0, 1]; NAN = not given */
    double gamma;                   /* breadcrumbs: fraction of the largest |tau| removed; 0.01 */
    double epsilon;                 /* della: spread of the keep probabilities; 0.15 */
    double select_topk;             /* sce: fraction of elements kept by variance; 1.0 */
    int nuslerp_flatten;            /* nuslerp: PCBM_DEFAULT (on) / PCBM_ON / PCBM_OFF */
    int nuslerp_row_wise;           /* nuslerp: PCBM_DEFAULT (off) / PCBM_ON / PCBM_OFF */
    int filter_wise;                /* model_stock: PCBM_DEFAULT (off) / PCBM_ON / PCBM_OFF */
    const pcbm_params *params;      /* per-tensor parameters (a recipe's gradients and filters),
                                       or NULL: the scalars above for every tensor */
    const char *recipe;             /* the mergekit recipe's text (pcbm_recipe_text), recorded
                                       in merge_report.json and the model card; or NULL */
    const char *chat_template;      /* mergekit's chat_template: NULL keeps the base's files;
                                       "auto": the template most of the models share; else a
                                       Jinja template's text, written into the output's
                                       tokenizer_config.json */
    const double *gammas;           /* per-task gamma (ntasks), each in [0, 1), or NULL = `gamma`
                                       for every task: breadcrumbs, breadcrumbs_ties */
    const double *epsilons;         /* per-task epsilon (ntasks), each in [0, 1), or NULL =
                                       `epsilon` for every task: della, della_linear */
    const char *tokenizer_source;   /* mergekit's tokenizer_source: NULL or "base" (the base's
                                       vocabulary), "union" (the base's, then every model's
                                       tokens it lacks), or one input (its path as given, or
                                       "0" for the base, "1".."N" for task models); rows of
                                       tensors indexed by token are aligned by token */
} pcbm_merge_opts;

/* ---------------------------------------------------------------------------------------------
 * Per-tensor parameters (o->params), as a mergekit recipe gives them (docs/semantics.md,
 * "Recipes"). A setting of one parameter is a list of entries tried in order; the first whose
 * filter is NULL, "*" or a substring of the tensor's name gives the value: one number (a
 * scalar), several numbers (a gradient over the layers: interpolated at t·(n−1)), or with `step`
 * several values taken as they are (element int(t·(n−1)), mergekit's lists of non-numbers;
 * booleans are 0 and 1). t is the tensor's layer i over the base's L layers, i / (L − 1) (1 when
 * L = 1), and 0 for tensors outside the layers (embeddings, final norm, head). Lookup order for
 * a tensor and task: the task's own setting (per-model parameters: weight, density, gamma,
 * epsilon), then the merge's (PCBM_PARAMS_ALL), then the options' scalar. A setting none of
 * whose entries matches falls through to the next level.
 * ------------------------------------------------------------------------------------------- */
#define PCBM_PARAMS_ALL (-1) /* `task` of the settings of the whole merge */

PCBM_API pcbm_params *pcbm_params_new(void);
PCBM_API void pcbm_params_free(pcbm_params *p);
/* Append one entry to the setting of parameter `name` (mergekit's name: weight, density, gamma,
 * epsilon, lambda, t, select_topk, normalize, rescale, nuslerp_flatten, nuslerp_row_wise,
 * filter_wise) of task `task` (0-based, or PCBM_PARAMS_ALL). PCBM_ERR_USAGE for an unknown
 * name, a task out of range, a whole-merge parameter given to one task, n = 0 or a non-finite
 * value. */
PCBM_API pcbm_status pcbm_params_add(pcbm_params *p, int task, const char *name,
                                     const char *filter, const double *values, size_t n,
                                     int step, pcbm_error *err);
/* Parameter `name` must resolve for every merged tensor of every task (mergekit's required
 * per-model parameters: weight for linear and the task-arithmetic family): a merge in which it
 * does not is refused (PCBM_ERR_USAGE) naming the task and the tensor. */
PCBM_API pcbm_status pcbm_params_require(pcbm_params *p, const char *name, pcbm_error *err);
/* The value of parameter `name` of task `task` for a tensor named `tensor` at layer position t
 * from the settings alone (no options): 1 and *value, or 0 when no setting gives one. */
PCBM_API int pcbm_params_eval(const pcbm_params *p, int task, const char *name,
                              const char *tensor, double t, double *value);
/* The layer index of a tensor name (".layers.I.", ".h.I.", ".blocks.I."; -1: none), and its t
 * for a model of nlayers layers (0 outside the layers). */
PCBM_API long pcbm_layer_index(const char *tensor);
PCBM_API double pcbm_layer_t(const char *tensor, unsigned nlayers);

/* ---------------------------------------------------------------------------------------------
 * mergekit recipes (YAML: docs/semantics.md, "Recipes"): `pcbmerge merge --config R.yml`.
 * ------------------------------------------------------------------------------------------- */
typedef struct pcbm_recipe pcbm_recipe;
/* Read and check the recipe at `path`: PCBM_ERR_USAGE names an unknown key and its line, an
 * unknown or unsupported method, an unsupported form (slices of other ranges, modules, ...). */
PCBM_API pcbm_status pcbm_recipe_load(const char *path, pcbm_recipe **out, pcbm_error *err);
/* The same from text in memory (`name` is used in messages). */
PCBM_API pcbm_status pcbm_recipe_parse(const char *text, size_t len, const char *name,
                                       pcbm_recipe **out, pcbm_error *err);
/* Fill the merge's parameters of o from the recipe: method, base, tasks, params, out_dtype,
 * scope, semantics = PCBM_SEMANTICS_MERGEKIT and the method's scalar defaults (mergekit's). The
 * pointers point into r: keep r until the merge is done. Run-time fields are left alone. */
PCBM_API pcbm_status pcbm_recipe_merge_opts(const pcbm_recipe *r, pcbm_merge_opts *o,
                                            pcbm_error *err);
/* The recipe's text as read. */
PCBM_API const char *pcbm_recipe_text(const pcbm_recipe *r);
/* Whether the recipe's method takes a per-model `weight` (the coefficients a search over the
 * recipe scales): linear, task_arithmetic and the ties/dare/breadcrumbs/della family, nuslerp,
 * pcb (its weight scales the model's λ); 0 for slerp, model_stock and sce. */
PCBM_API int pcbm_recipe_has_weights(const pcbm_recipe *r);
/* The recipe with every task model's weight multiplied by c[i] (n = the task models, in the
 * order of pcbm_merge_opts.tasks), as YAML text (malloc'ed; the caller frees it): each model's
 * own weight setting, then the slice's and the recipe's (mergekit's lookup order), with every
 * value and gradient point scaled, becomes that model's own; a pcb model without a weight gets
 * c[i]. The text merges as `pcbmerge merge --config` of it would. PCBM_ERR_USAGE for a method
 * without per-model weights or a weight that is not numeric. */
PCBM_API pcbm_status pcbm_recipe_scaled(const pcbm_recipe *r, const double *c, unsigned n,
                                        char **text, pcbm_error *err);
PCBM_API void pcbm_recipe_free(pcbm_recipe *r);

/* The values of a pcbm_merge_opts switch whose default depends on the method. */
enum { PCBM_DEFAULT = 0, PCBM_ON = 1, PCBM_OFF = 2 };

/* Fill `o` with the defaults listed above. */
PCBM_API void pcbm_merge_opts_init(pcbm_merge_opts *o);

/* Whether the merge `o` describes computes its statistics per tensor by definition (slerp,
 * nuslerp, model_stock, sce); 0 otherwise. Such merges refuse scope PCBM_SCOPE_GLOBAL. */
PCBM_API int pcbm_method_per_tensor(const pcbm_merge_opts *o);
/* The scope PCBM_SCOPE_AUTO stands for in the merge `o`: PCBM_SCOPE_TENSOR for mergekit's
 * methods (those per tensor by definition; breadcrumbs, breadcrumbs_ties, della, della_linear;
 * ties, dare_ties, dare_linear with PCBM_SEMANTICS_MERGEKIT), PCBM_SCOPE_GLOBAL otherwise. */
PCBM_API pcbm_scope pcbm_method_default_scope(const pcbm_merge_opts *o);

/* Run a whole merge: validate, statistics passes, apply pass, publish OUT. */
PCBM_API pcbm_status pcbm_merge(const pcbm_merge_opts *o, pcbm_error *err);

/* ---------------------------------------------------------------------------------------------
 * Split merges: one merge run as K parts on many machines (Slurm job arrays, Kubernetes Indexed
 * Jobs, AWS Batch array jobs) over a shared output directory, with the bytes of pcbm_merge().
 * Phases: plan, then statistics rounds (stats of every part, then reduce; repeated while the
 * reduce asks for another round), apply of every part, finalize. Every phase is idempotent; a
 * part that failed or was preempted is simply run again.
 * ------------------------------------------------------------------------------------------- */
typedef enum pcbm_phase {
    PCBM_PHASE_STATS = 0,   /* part: its part of the next statistics round */
    PCBM_PHASE_REDUCE,      /* combine the parts' parts of the pending round(s) */
    PCBM_PHASE_APPLY,       /* part: write its output files */
    PCBM_PHASE_FINALIZE     /* index, manifest, atomic publication of DIR */
} pcbm_phase;

/* Validate every input once and split the merge o (o->out = DIR) into `parts` parts balanced by
 * the bytes they read, aligned to output shard files; the plan goes to DIR.partial. Planning
 * again with the same parameters is a no-op; other parameters need o->force. */
PCBM_API pcbm_status pcbm_split_plan(const pcbm_merge_opts *o, unsigned parts, pcbm_error *err);

/* Run one phase of the split merge planned for DIR. `part` is used by stats and apply. Only the
 * run-time fields of rt are used (mem_bytes, threads, io, block_bytes, progress, quiet): the
 * merge's parameters come from the plan. */
PCBM_API pcbm_status pcbm_split_run(const char *dir, pcbm_phase phase, unsigned part,
                                    const pcbm_merge_opts *rt, pcbm_error *err);

typedef struct pcbm_split_info {
    unsigned parts;
    unsigned rounds_max;      /* statistics rounds this merge can need at most (0: none) */
    unsigned rounds_reduced;  /* rounds reduced so far */
    int stats_complete;       /* the statistics are known: parts can apply */
    unsigned parts_applied;   /* parts whose output files are written */
    int published;            /* finalize is done: DIR is the merged model */
} pcbm_split_info;

/* Where the split merge planned for DIR stands. */
PCBM_API pcbm_status pcbm_split_status(const char *dir, pcbm_split_info *info, pcbm_error *err);
/* The parts that still have work in `phase` (stats: their part of the pending round is not
 * saved; apply: their files are not written), ascending, at most cap of them into parts[];
 * *n receives how many there are. Reduce and finalize have none. */
PCBM_API pcbm_status pcbm_split_pending(const char *dir, pcbm_phase phase, unsigned *parts,
                                        unsigned cap, unsigned *n, pcbm_error *err);

/* Verify a merged model against its manifest (OUT/pcbmerge.manifest.json): recompute the
 * xxh3-128 of every file; `report` (may be NULL) is called once per mismatch (file, expected,
 * found) and per file the manifest does not list, and *bad counts them. Returns an error only
 * when the manifest itself cannot be used (unreadable, malformed, or listing no file). */
typedef void (*pcbm_verify_fn)(void *arg, const char *file, const char *expected, const char *found);
PCBM_API pcbm_status pcbm_verify(const char *out_dir, pcbm_verify_fn report, void *arg,
                                 unsigned *bad, pcbm_error *err);

/* Ask running merges to stop at the next block boundary: in-flight I/O completes, the journal
 * stays consistent, pcbm_merge returns PCBM_ERR_INTERRUPTED and the merge can be resumed.
 * Thread-safe; not async-signal-safe (call it from a thread that waits for signals). */
PCBM_API void pcbm_request_stop(void);

/* Parse "512M", "1G", "5GB", "1.5GiB", "4096" into bytes (K/M/G/T powers of 1024 with an optional
 * "i"/"B"; "KB/MB/GB/TB" are powers of 1000). Returns 0 on success. */
PCBM_API int pcbm_parse_size(const char *s, uint64_t *out);
/* "1.50 GiB", "512 B": n bytes in powers of 1024 with two decimals, into buf; returns buf. */
PCBM_API char *pcbm_format_size(uint64_t n, char *buf, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Coefficient search: CMA-ES over the per-task coefficients λ_1..λ_N of one merge (pcb,
 * task_arithmetic or dare_linear), scored by the caller's evaluation, higher is better. The
 * statistics pass runs once; every candidate is merged by the apply pass alone into a scratch
 * directory (OUT.search/model, replaced each time) and handed to `evaluate`; at the end OUT holds
 * the merge at the best λ, search_log.jsonl (one JSON line per evaluation) and
 * search_summary.json. OUT.search/ is locked while a search runs and keeps the log and the
 * statistics when it stops or fails: with `resume` the same search continues (CMA-ES is
 * deterministic for a seed: logged evaluations are checked bit for bit and replayed, not run).
 * The library prints nothing: evaluations and notes reach the caller through callbacks.
 * ------------------------------------------------------------------------------------------- */

/* Score the candidate merged into model_dir (evaluation `index`, from 1). Return PCBM_OK with a
 * finite *score (higher is better). Any other status is a failed evaluation (say why in err):
 * the search stops, or with skip_errors ranks the candidate last and goes on.
 * PCBM_ERR_INTERRUPTED stops the search without logging the candidate (resumable). */
typedef pcbm_status (*pcbm_search_eval_fn)(void *user, const char *model_dir, unsigned index,
                                           double *score, pcbm_error *err);

/* One evaluation, scored, failed or replayed from the log of a resumed search. */
typedef struct pcbm_search_event {
    unsigned index;           /* evaluation number, from 1 */
    unsigned generation;      /* CMA-ES generation; 0 for the evaluation at λ = init */
    unsigned budget;
    unsigned ntasks;
    const double *lambdas;    /* ntasks values */
    int ok;                   /* scored; otherwise `error` says why */
    int replayed;             /* taken from the log (resume), not evaluated again */
    int stops;                /* a failure that stops the search (skip_errors is off) */
    double score;             /* NaN when the evaluation failed */
    double best_score;        /* the best score so far (NaN before any) */
    double seconds, merge_seconds, eval_seconds; /* 0 when replayed */
    const char *error;        /* when !ok: why */
    const char *log_path;     /* the log of the evaluations so far */
} pcbm_search_event;

typedef void (*pcbm_search_event_fn)(void *user, const pcbm_search_event *ev);
/* A note on what the search does ("resuming from ...", "merging the best λ ..."). */
typedef void (*pcbm_search_note_fn)(void *user, const char *msg);

typedef struct pcbm_search_opts {
    uint32_t struct_size;          /* sizeof(pcbm_search_opts): set by pcbm_search_opts_init */
    const pcbm_merge_opts *merge;  /* base, tasks, out, method and every merge parameter (lambda
                                      and lambdas are ignored; weights, densities, normalize and
                                      rescale are refused); stats_in: statistics of an
                                      earlier merge of these inputs; force: discard an earlier
                                      search or partial output; resume: see below */
    pcbm_search_eval_fn evaluate;  /* required */
    void *user;                    /* passed to every callback */
    const char *eval_id;           /* what evaluates (the CLI: the command): part of the
                                      parameters a resumed search must repeat; in the summary */
    unsigned budget;               /* evaluations, the one at λ = init included; 60 */
    double lo, hi;                 /* the box of every λ_i; 0.5, 3.0 */
    double init;                   /* the starting λ of every task, evaluated first; 1.0 */
    double sigma;                  /* initial CMA-ES step size; 0 = (hi - lo) / 5 */
    unsigned popsize;              /* candidates per generation; 0 = 4 + 3 ln N */
    uint64_t seed;                 /* CMA-ES seed (the DARE seed is merge->seed); 0 */
    int skip_errors;               /* a failed evaluation ranks last instead of stopping */
    int resume;                    /* continue the search left in OUT.search/ */
    pcbm_search_event_fn on_event; /* every evaluation, or NULL */
    pcbm_search_note_fn on_note;   /* notes, or NULL */
    /* A search over a mergekit recipe (pcbm_recipe_load), or NULL: the coefficients c_1..c_N
     * multiply each task model's `weight` (pcbm_recipe_scaled; pcb: its λ) and every candidate
     * is the merge of the scaled recipe. The merge's parameters come from the recipe (what
     * pcbm_recipe_merge_opts fills; out_dtype where the recipe gives none stays merge's); merge
     * gives out and the rest. OUT/search_recipe.yml is the recipe at the best c: merged with
     * `pcbmerge merge --config` it gives the same weights. Methods without per-model weights
     * (slerp, model_stock, sce) are refused. Only pcb's statistics (independent of λ) are
     * computed once; the other methods' depend on the weights and are computed per candidate. */
    const pcbm_recipe *recipe;
} pcbm_search_opts;

typedef struct pcbm_search_result {
    unsigned evaluations;          /* logged (replayed included) */
    unsigned failed;               /* failed evaluations (skipped) */
    unsigned generations;          /* CMA-ES generations told */
    unsigned popsize;              /* candidates per generation */
    double sigma0;                 /* initial step size used */
    int have_init;                 /* the evaluation at λ = init scored */
    double init_score;
    unsigned best_evaluation, best_generation;
    double best_score;
    double best_lambdas[PCBM_MAX_TASKS];
    char stopped[64];              /* why the search ended: "budget spent", or CMA-ES's reason */
    char work_dir[4096];           /* OUT.search (kept when the search stops or fails) */
    double seconds, merge_seconds, eval_seconds;
} pcbm_search_result;

/* Fill `o` with the defaults listed above (and struct_size). */
PCBM_API void pcbm_search_opts_init(pcbm_search_opts *o);

/* Run (or with o->resume continue) a search; `res` (may be NULL) receives the outcome, also the
 * counts so far when the search stops. PCBM_ERR_USAGE for invalid options (a struct_size older
 * than the first published layout included); PCBM_ERR_INTERRUPTED when stopped by
 * pcbm_request_stop() (the merge in flight or the next one stops) or by `evaluate`: run again
 * with resume to continue; a failed evaluation's status when it stops the search. */
PCBM_API pcbm_status pcbm_search(const pcbm_search_opts *o, pcbm_search_result *res,
                                 pcbm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* PCBMERGE_H */

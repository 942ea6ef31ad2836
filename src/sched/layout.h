/* SPDX-License-Identifier: Apache-2.0 */
/*
 * layout.h — the layout (the chunk map). From the opened base and task models and the user's
 * selection it decides, per output tensor (in the base's order), whether it is merged or copied from the base,
 * where each model's bytes live, where the output bytes go, and how the tensor is cut into blocks
 * that the scheduler walks pass after pass.
 */
#ifndef PCBM_LAYOUT_H
#define PCBM_LAYOUT_H

#include "../format/safetensors.h"

#define PCBM_MAX_MODELS (PCBM_MAX_TASKS + 1)

typedef enum pcbm_tkind {
    PCBM_T_MERGE = 0,   /* participating: decoded, merged, encoded to out_dt */
    PCBM_T_CONVERT,     /* float copied from the base, re-encoded to out_dt */
    PCBM_T_RAW          /* copied from the base byte for byte */
} pcbm_tkind;

typedef struct pcbm_tsrc {  /* 16 bytes: one per tensor per model */
    uint64_t off;       /* absolute offset of the tensor's first byte */
    unsigned file;      /* index into the model's files */
    pcbm_dtype dt;
} pcbm_tsrc;

/* Why a tensor is copied from the base instead of merged (PCBM_WHY_MERGED when it is merged). */
typedef enum pcbm_copy_why {
    PCBM_WHY_MERGED = 0,
    PCBM_WHY_NOT_FLOAT,     /* not an F32/F16/BF16 tensor in the base */
    PCBM_WHY_EXCLUDED,      /* matches an `exclude` pattern */
    PCBM_WHY_MISSING        /* missing from task model why_task (and maybe others): copied
                               when every task lacks it, or the method cannot merge it without
                               them; a tensor only some tasks lack is otherwise merged ("partial":
                               pcbm_tlayout.absent) */
} pcbm_copy_why;

/* An FP8 source and its block scales (sched/quant.c). */
typedef struct pcbm_tquant {
    bool on;                /* this model's tensor is FP8, dequantized with its block scales */
    pcbm_dtype scale_dt;    /* F32 or BF16 */
    unsigned scale_file;    /* the scale tensor's file (index into the model's files) */
    uint64_t scale_off;     /* absolute offset of the scale tensor */
    uint32_t br, bc;        /* block rows and columns */
    uint64_t cols;          /* the weight's columns */
    uint64_t srows, scols;  /* the scale tensor's shape */
} pcbm_tquant;

/* A source with no bytes to read (sched/lora.c): a LoRA adapter's task tensor, formed from its
 * factors in the tile passes (or zero when the adapter does not target it). Its file is this
 * sentinel, its offset 0 and its in_unit 0: the engine issues no read and maps nothing for it. */
#define PCBM_SRC_NONE UINT32_MAX

/* A LoRA adapter's factors for one base tensor [rows, cols]: ΔW = scale · P · Q with P [rows, r]
 * and Q [r, cols]; P = B and Q = A, or, transposed (fan_in_fan_out, lora_embedding_*),
 * P = Aᵀ and Q = Bᵀ. r == 0: the adapter does not target the tensor (ΔW = 0). */
typedef struct pcbm_tlora {
    uint32_t r;
    bool transposed;
    pcbm_dtype a_dt, b_dt;
    uint64_t a_off, b_off;  /* absolute offsets in the adapter's weights file */
    uint64_t rows, cols;
    float scale;
} pcbm_tlora;

/* Per adapter task: what the report and inspect say about it. */
typedef struct pcbm_adapter_use {
    uint64_t targeted;      /* base tensors with LoRA factors */
    uint64_t saved;         /* base tensors replaced whole (modules_to_save) */
    uint64_t cache_floats;  /* largest r · (rows + cols) over its targeted tensors */
    uint32_t max_r;
} pcbm_adapter_use;

typedef struct pcbm_tlayout {
    const char *name;       /* borrowed from the base model */
    pcbm_tkind kind;
    uint8_t why;            /* pcbm_copy_why */
    uint16_t why_task;      /* the first task (1-based) that lacks it (PCBM_WHY_MISSING, or a
                               partial merged tensor), else 0 */
    uint16_t why_count;     /* how many tasks lack it */
    pcbm_dtype out_dt;
    uint64_t units;         /* elements (MERGE/CONVERT) or bytes (RAW) */
    unsigned *in_unit;      /* [nmodels] bytes per unit of each source (RAW: 1); points into
                               the layout's pool, so a tensor costs the same for 1 or 64 tasks */
    pcbm_tsrc *src;         /* [nmodels]: [0] = base, [1..N] = tasks (MERGE only) */
    unsigned out_unit;
    unsigned out_file;
    uint64_t out_off;
    uint64_t block_units;   /* units per block */
    uint64_t nblocks;
    const pcbm_tquant *q;   /* [nmodels] when some source is FP8 (dequantized), else NULL */
    const pcbm_tlora *lora; /* [nmodels] when some task is a LoRA adapter (MERGE only), else NULL */
    uint64_t aligned;       /* bit m-1: task m has more rows (appended tokens), of which the
                               base's rows take part (sched/vocab.c) */
    uint64_t row_units;     /* MERGE: blocks hold whole rows of this many elements (0: any
                               cut), for methods that rank within rows (DELLA); set before
                               pcbm_layout_set_block */
    uint64_t absent;        /* MERGE: bit m-1: task m lacks the tensor and takes no part in it
                               (its source is PCBM_SRC_NONE, its τ 0 and θ the base's) */
    long pidx;              /* index among merged tensors, -1 otherwise */
    uint64_t elem0;         /* MERGE: index of its first element in the global flattening */
} pcbm_tlayout;

typedef struct pcbm_layout_opts {
    const char *const *exclude;
    unsigned nexclude;
    int allow_extra;
    int require_all;        /* a tensor missing from a task model is an error */
    int partial;            /* the method merges a tensor some tasks lack over the tasks that
                               have it (pcbm_method_def.partial); else such a tensor is copied */
    int take_nonfloat_base; /* non-float tensors of another dtype or shape in a task: copy the
                               base's with a warning instead of refusing */
    pcbm_dtype out_dtype;   /* PCBM_DTYPE_BASE or a float dtype */
    uint64_t shard_bytes;
    const char *const *meta; /* provenance for __metadata__: key/value pairs */
    size_t nmeta;
} pcbm_layout_opts;

typedef struct pcbm_layout {
    unsigned nmodels;                   /* 1 + ntasks */
    pcbm_model *models[PCBM_MAX_MODELS];/* borrowed */
    pcbm_tlayout *t;
    size_t nt;
    pcbm_tsrc *src_pool;                /* nt * nmodels: every tensor's sources */
    unsigned *unit_pool;                /* nt * nmodels: every tensor's in_unit */
    size_t nmerge;                      /* tensors with kind MERGE */
    uint64_t d;                         /* participating elements */
    unsigned max_in_unit;               /* largest element size of any merged input */
    uint64_t merge_in_bytes;            /* bytes of merged tensors, all models */
    uint64_t copy_in_bytes;             /* bytes of copied tensors (base) */
    uint64_t block_elems;               /* set by pcbm_layout_set_block */
    pcbm_outlayout out;
    pcbm_out_tensor *out_tensors;
    pcbm_tquant *q_pool;                /* nt * nmodels, when some tensor is FP8 */
    uint32_t qblock[PCBM_MAX_MODELS][2];/* each FP8 model's block size (config.json) */
    size_t ndequant;                    /* tensors with an FP8 source */
    bool base_dequantized;              /* some base tensor was FP8: the output is not */
    int *qfd[PCBM_MAX_MODELS];          /* per model, per file: descriptors of the files that
                                           hold scale tensors (-1: none), for the workers */
    int rows_how[PCBM_MAX_MODELS];      /* per task with appended rows: PCBM_ROWS_BY_* */
    size_t naligned;                    /* tensors with rows aligned for some task */
    size_t npartial;                    /* merged tensors some tasks lack (absent != 0) */
    unsigned nadapters;                 /* task models that are LoRA adapters */
    pcbm_tlora *lora_pool;              /* nt * nmodels, when some task is an adapter */
    pcbm_adapter_use lora_use[PCBM_MAX_MODELS];
    int lfd[PCBM_MAX_MODELS];           /* adapters: their weights file, for the workers */
    bool lfd_open;                      /* lfd[] of the adapters are open */
    bool no_bytes[PCBM_MAX_MODELS];     /* model m reads nothing (an adapter without
                                           modules_to_save): no read buffers for it */
    uint32_t *lora_keys[PCBM_MAX_MODELS];/* while building: per base tensor, the adapter's
                                           lora_A, lora_B, whole tensor (index + 1) and flags */
    const char *untied_head;            /* a head the base ties but task models store: added as
                                           the last tensor (the base's embedding is its θ_pre),
                                           and the output config unties it; NULL otherwise */
} pcbm_layout;

/* Cross-check models and build the layout (no block size yet). Errors name tensors and shapes. */
pcbm_status pcbm_layout_build(pcbm_model *const *models, unsigned nmodels, const pcbm_layout_opts *o,
                            pcbm_layout *p, pcbm_error *err);
/* vocab.c: tensors indexed by token whose rows differ between models. */
enum { PCBM_ROWS_UNCHECKED = 0, PCBM_ROWS_BY_TOKEN, PCBM_ROWS_BY_POSITION };
/* Is `name` a tensor indexed by token (an input embedding or an output head)? */
bool pcbm_vocab_indexed(const char *name);
/* Task m has more embedding rows than the base's base_rows: check that its first rows are the
 * base's tokens (tokenizer.json of both; by position, with a warning, without them). *how is
 * PCBM_ROWS_BY_TOKEN or PCBM_ROWS_BY_POSITION; PCBM_ERR_MISMATCH names the first token that
 * differs. */
pcbm_status pcbm_vocab_check_task(const pcbm_model *base, const pcbm_model *task, unsigned m,
                                  uint64_t base_rows, int *how, pcbm_error *err);

/* vocab_stage.c: the output's vocabulary (mergekit's tokenizer_source) and the rows of tensors
 * indexed by token gathered to it in staged files (see the file's opening comment). */
#define PCBM_VOCAB_MAX_TENSORS 8
typedef struct pcbm_vocab_src {  /* a model's tensor before staging */
    bool present;
    unsigned file;
    uint64_t off, rows, cols;
    pcbm_dtype dt;
} pcbm_vocab_src;
typedef struct pcbm_vocab_plan {
    unsigned nmodels;
    bool on_spec;                       /* a source other than base was asked for */
    bool is_union;
    int source;                         /* the model whose vocabulary is the output's (not union) */
    const char *names[PCBM_VOCAB_MAX_TENSORS]; /* the base's token-indexed tensors (borrowed) */
    unsigned ntensors;
    uint64_t rows[PCBM_MAX_MODELS];     /* each model's rows (the fewest of its tensors) */
    uint64_t base_rows, out_rows;       /* out_rows 0: nothing aligned by token */
    uint64_t first_new, nnew;           /* union: ids first_new.. are tokens the base lacks, */
    uint16_t *new_model;                /* from this model */
    uint32_t *new_id;                   /* with this id there */
    uint32_t *map[PCBM_MAX_MODELS];     /* staged models: output row -> its row (UINT32_MAX:
                                           it lacks the token; mergekit's default row) */
    bool staged[PCBM_MAX_MODELS];
    unsigned nstaged;
    uint64_t file_bytes[PCBM_MAX_MODELS], stage_bytes;
    pcbm_vocab_src *orig;               /* [ntensors][nmodels] */
    char *dir;                          /* OUT.vocab-staging */
    uint64_t vocab_bytes;               /* the tokenizers read while planning */
    const pcbm_st_tensor *nogather[PCBM_MAX_MODELS]; /* a token-indexed tensor of the model that
                                           cannot be gathered (FP8), or NULL */
} pcbm_vocab_plan;
/* Read the tokenizers, build the output vocabulary for `spec` (NULL or "base", "union", a model
 * path as given or index) and each model's rows; `out` is the output directory as given. */
pcbm_status pcbm_vocab_plan_build(pcbm_model *const *models, unsigned n, const char *spec,
                                  const char *out, pcbm_vocab_plan *v, pcbm_error *err);
pcbm_status pcbm_vocab_source_check(const char *spec, pcbm_error *err);
/* Point the staged models' token-indexed tensors at their staged file (shape out_rows, F32). */
pcbm_status pcbm_vocab_plan_apply(pcbm_vocab_plan *v, pcbm_model *const *models, pcbm_error *err);
/* Write the staged files (after pcbm_vocab_plan_apply, before the layout drops tensors). */
pcbm_status pcbm_vocab_stage(const pcbm_vocab_plan *v, pcbm_model *const *models,
                             pcbm_error *err);
/* Bytes the plan holds while staging (maps, tokenizers read). */
uint64_t pcbm_vocab_plan_bytes(const pcbm_vocab_plan *v);
void pcbm_vocab_plan_drop_maps(pcbm_vocab_plan *v);
void pcbm_vocab_plan_free(pcbm_vocab_plan *v);
/* Remove OUT.vocab-staging (after publication, or a discarded run). */
void pcbm_vocab_unstage(const char *out);
/* The output's tokenizer files and config.json vocab_size (after the side files are copied). */
pcbm_status pcbm_vocab_write_tokenizer(const pcbm_vocab_plan *v, pcbm_model *const *models,
                                       const char *out_dir, pcbm_error *err);

/* quant.c: FP8 sources. */
bool pcbm_quant_is_fp8(pcbm_dtype dt);
/* Model m stores block scales for weight `name`. */
bool pcbm_quant_has_scale(const pcbm_model *m, const char *name);
/* `name` is the block-scale tensor of one of m's FP8 weights (consumed, never output). */
bool pcbm_quant_consumed(const pcbm_model *m, const char *name);
/* Model m's FP8 block size (rows, cols) from its config.json (128 x 128 when it has none). */
pcbm_status pcbm_quant_block(const pcbm_model *m, uint32_t block[2], pcbm_error *err);
/* Describe FP8 weight w of m (`who`: "the base", "task model 2") with its scales, or refuse. */
pcbm_status pcbm_quant_describe(const pcbm_model *m, const uint32_t block[2], const char *who,
                                const pcbm_st_tensor *w, pcbm_tquant *q, pcbm_error *err);
/* Open the files holding scale tensors (p->qfd); closed by pcbm_layout_free. */
pcbm_status pcbm_quant_open(pcbm_layout *p, pcbm_error *err);
void pcbm_quant_close(pcbm_layout *p);
/* Scale values a block of at most max_elems elements needs at most, over every FP8 source. */
uint64_t pcbm_quant_scale_cap(const pcbm_layout *p, uint64_t max_elems);

/* lora.c: LoRA adapter tasks. Match every adapter's keys to base tensors (refusing keys that
 * name none, and factors whose shapes or ranks do not fit), before the tensors are classified. */
pcbm_status pcbm_lora_prepare(pcbm_layout *p, pcbm_error *err);
/* Tensor i's source for adapter m (base tensor index bi, -1 for an added head): its full tensor
 * (modules_to_save), or no bytes with its factors. *bad: a shape mismatch was listed in mism. */
pcbm_status pcbm_lora_source(pcbm_layout *p, size_t i, unsigned m, const pcbm_st_tensor *bt,
                             long bi, pcbm_error *err);
/* Open the adapters' weights files for the workers (p->lfd); closed by pcbm_layout_free. */
pcbm_status pcbm_lora_open(pcbm_layout *p, pcbm_error *err);
void pcbm_lora_free(pcbm_layout *p);

/* Models whose bytes are read (every model but adapters without modules_to_save). */
unsigned pcbm_layout_reading_models(const pcbm_layout *p);

/* Cut every tensor into blocks of `elems` elements (RAW: elems * max_in_unit bytes); a tensor
 * with row_units gets the largest multiple of pcbm_layout_row_block that fits, when one does. */
void pcbm_layout_set_block(pcbm_layout *p, uint64_t elems);
/* The elements a block of t must be a multiple of to hold whole rows and whole identity leaves
 * (lcm(row_units, PCBM_IDENT_LEAF)); 0 when t asks for no row alignment or is a single row. */
uint64_t pcbm_layout_row_block(const pcbm_tlayout *t);
/* Bytes of the merge's tables: every model's (pcbm_model_table_bytes) and the layout's own
 * (per tensor: its entry, output entry, sources and units; the output headers and index). */
uint64_t pcbm_layout_table_bytes(const pcbm_layout *p);
void pcbm_layout_free(pcbm_layout *p);

#endif /* PCBM_LAYOUT_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine.h — the chunk scheduler. It walks the layout's blocks in order, reads block k of every
 * model through the I/O backend into aligned slot buffers, hands complete block sets to worker
 * threads, and (apply passes) streams the finished output blocks, in order, into the output files.
 * A merge method plugs in as a per-block callback; a merge is a sequence of passes over the same
 * schedule. Memory: every buffer is sized from the budget up front; nothing grows with the model.
 */
#ifndef PCBM_ENGINE_H
#define PCBM_ENGINE_H

#include "../io/io.h"
#include "layout.h"
#include "progress.h"
#include "../writer/stream.h"

#include <xxhash.h>

typedef struct pcbm_engine pcbm_engine;

#define PCBM_SAMPLE_UNIT 16384u  /* granularity of sample passes, independent of the block size */

/* One block set as a worker sees it. */
typedef struct pcbm_blockview {
    const pcbm_tlayout *t;
    size_t tensor;                     /* index into layout->t */
    uint64_t start;                    /* first unit (element or byte) of the block */
    uint32_t n;                        /* units in the block */
    const void *in[PCBM_MAX_MODELS];   /* [0] base, [1..N] tasks (MERGE); only [0] otherwise */
    void *out;                         /* apply passes: out bytes (n * t->out_unit) */
} pcbm_blockview;

typedef enum pcbm_pass_kind {
    PCBM_PASS_STATS = 0,   /* visits MERGE tensors only; no output */
    PCBM_PASS_APPLY        /* visits every tensor and writes the output stream */
} pcbm_pass_kind;

/* Per-block callback, run on worker thread `worker` (0..threads-1). Return PCBM_OK, or an error
 * after filling err (the pass stops; the first error in schedule order is reported). */
typedef pcbm_status (*pcbm_block_fn)(void *arg, unsigned worker, const pcbm_blockview *bv,
                                     pcbm_error *err);

typedef struct pcbm_pass {
    const char *name;          /* for progress and the summary ("stats 1/2", "apply") */
    pcbm_pass_kind kind;
    size_t t0, t1;             /* tensor range [t0, t1) of the layout */
    uint32_t sample_stride;    /* stats passes: visit only sampled units of PCBM_SAMPLE_UNIT
                                  elements (see pcbm_sample_count); 1 or 0 = every element */
    pcbm_block_fn fn;
    void *arg;
} pcbm_pass;

typedef struct pcbm_engine_cfg {
    uint64_t mem_bytes;        /* total budget */
    uint64_t reserved_bytes;   /* already promised elsewhere (statistics, scratch) */
    unsigned threads;
    pcbm_io_kind io;
    uint64_t block_bytes;      /* 0 = automatic */
    const char *out_dir;       /* where the output files are created (apply passes) */
    int file_range;            /* set: only output files [file_lo, file_hi) (possibly none) and
                                  the tensors they hold are visited, by every pass (one unit of
                                  a split merge); unset: every file */
    unsigned file_lo, file_hi;
    pcbm_progress_ctx *progress; /* the call's progress events, or NULL */
    pcbm_stop_fn should_stop;  /* the call's own stop question, or NULL (pcbm_request_stop
                                  stops every engine) */
    void *user;                /* for should_stop */
} pcbm_engine_cfg;

typedef struct pcbm_pass_report {
    char name[32];
    uint64_t bytes_read;
    uint64_t bytes_written;
    double seconds;
    bool mapped;               /* the inputs were read through their mappings (page cache) */
} pcbm_pass_report;

#define PCBM_MAX_PASSES 16

typedef struct pcbm_engine_report {
    const char *backend;
    char backend_note[256];
    uint64_t block_elems;
    unsigned nslots;
    unsigned threads;
    uint64_t buffer_bytes;     /* slot + staging buffers */
    uint64_t bytes_read;       /* all passes */
    uint64_t bytes_written;
    unsigned npasses;
    pcbm_pass_report passes[PCBM_MAX_PASSES];
} pcbm_engine_report;

/* Elements of tensor `ti` that a sample pass of this stride visits (all of them for stride <= 1;
 * sched/cursor.c). */
uint64_t pcbm_sample_count(const pcbm_tlayout *t, size_t ti, uint32_t stride);

/* Size the buffers (and pick the block size) from the budget. Fails with PCBM_ERR_NOMEM naming
 * the minimum --mem when the budget is too small. Sets layout's block cut. */
pcbm_status pcbm_engine_create(pcbm_layout *layout, const pcbm_engine_cfg *cfg, pcbm_engine **out,
                               pcbm_error *err);
/* Bytes the engine needs at least for this layout and thread count (for error messages). */
uint64_t pcbm_engine_min_mem(const pcbm_layout *layout, unsigned threads, uint64_t reserved);
pcbm_status pcbm_engine_run(pcbm_engine *e, const pcbm_pass *pass, pcbm_error *err);
/* Bytes a worker read outside the block's reads (LoRA factors): counted in the pass's bytes_read. */
void pcbm_engine_count_read(pcbm_engine *e, uint64_t bytes);
/* Durable segments of the output (pcbm_segment, pcbm_segment_fn: writer/stream.h): fn is called
 * on the output's sync thread each time one becomes durable, in stream order (the journal's
 * hook). */
void pcbm_engine_on_segment(pcbm_engine *e, pcbm_segment_fn fn, void *arg);

/* Resume the output of an earlier, interrupted run: check the journaled segments (in stream
 * order) against the files, keep the longest valid prefix (*kept segments), and continue the
 * output stream after it; apply passes then skip the blocks whose output is kept. */
pcbm_status pcbm_engine_resume_output(pcbm_engine *e, const pcbm_segment *segs, size_t n,
                                      size_t *kept, pcbm_error *err);

/* After the last apply pass: flush, fsync and close the output files. */
pcbm_status pcbm_engine_finish_output(pcbm_engine *e, pcbm_error *err);
const pcbm_engine_report *pcbm_engine_get_report(const pcbm_engine *e);
/* Forget a stop request once the merge it stopped has returned (library users merge again). */
void pcbm_engine_clear_stop(void);
/* xxh3-128 of output file f (valid after pcbm_engine_finish_output). */
XXH128_hash_t pcbm_engine_file_hash(const pcbm_engine *e, unsigned f);
/* The input identity table of the merged tensors (ident.h): full passes record, then check. */
struct pcbm_ident *pcbm_engine_ident(pcbm_engine *e);
void pcbm_engine_destroy(pcbm_engine *e);

#endif /* PCBM_ENGINE_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * run_internal.h — the pieces of pcbm_merge() (run.c) that the split merge (split.c) reuses:
 * one merge's state, opening and identifying the inputs, the method context, the journal check,
 * the report and the manifest.
 */
#ifndef PCBM_RUN_INTERNAL_H
#define PCBM_RUN_INTERNAL_H

#include "merge.h"

#include "../writer/journal.h"
#include "../writer/output.h"

#define PCBM_RESERVED_MISC (4u << 20) /* rings and other small allocations (the tensor tables
                                         are counted: pcbm_layout_table_bytes) */

typedef struct merge_run {
    const pcbm_merge_opts *o;
    pcbm_model *models[PCBM_MAX_MODELS];
    uint64_t ids[PCBM_MAX_MODELS];
    pcbm_layout layout;
    bool plan_ok;
    pcbm_engine *eng;
    pcbm_outdir od;
    bool od_ok, resumed, keep_partial, publish_only;
    pcbm_journal journal;
    pcbm_mctx mc;
    char *params;
    pcbm_statset stats_now, stats_in, stats_saved;
    uint64_t *fstat;              /* stat identity of every input file when this run began */
    size_t nfstat;
    pcbm_progress_ctx progress;   /* the call's progress events */
    pcbm_vocab_plan vocab;        /* the output's vocabulary, staged rows (sched/vocab_stage.c) */
} merge_run;

bool pcbm_method_has_stats(const pcbm_merge_opts *o);
pcbm_status pcbm_run_check_opts(const pcbm_merge_opts *o, pcbm_error *err);
/* A public call taking merge options: the caller's options imported (struct_size; `optional`: NULL
 * means the defaults), their message sink in force on this thread while fn runs with them (NULL
 * options when they were NULL). */
typedef pcbm_status (*pcbm_run_call_fn)(const pcbm_merge_opts *o, void *arg, pcbm_error *err);
pcbm_status pcbm_run_call(const pcbm_merge_opts *user_opts, bool optional, pcbm_run_call_fn fn,
                          void *arg, pcbm_error *err);
unsigned pcbm_run_default_threads(void);
/* Every parameter that shapes the output bytes, as canonical JSON (malloc'ed). */
char *pcbm_run_output_params(const pcbm_merge_opts *o);
/* Open, cross-check and identify every input (r->o set); with o->stats_in, read and check it. */
pcbm_status pcbm_run_setup_inputs(merge_run *r, pcbm_error *err);
/* nonfloat.c: integer and bool tensors equal in every model that has them, or (with
 * take_nonfloat_base) a warning per difference; otherwise PCBM_ERR_MISMATCH naming the first. */
pcbm_status pcbm_run_check_nonfloat(merge_run *r, pcbm_error *err);
/* Bytes the output directory needs at most: the weight files, each rounded up to whole
 * filesystem blocks, the index, the side files copied from the base, and the run's own files
 * (journal, statistics file, report, manifest) with room to rewrite them atomically. */
uint64_t pcbm_run_space_needed(const merge_run *r);
/* dry_run.c: report what the merge of r (inputs set up) would do, expecting `passes` passes. */
pcbm_status pcbm_run_dry(merge_run *r, unsigned passes, pcbm_error *err);
/* Why tensor t is copied from the base, as words ("excluded", "missing from every task model"):
 * the dry run's and the report's. */
const char *pcbm_run_copy_reason(const pcbm_tlayout *t);
/* Passes a merge usually runs (the progress's "pass k of n"). */
unsigned pcbm_run_expected_passes(const merge_run *r);
/* The output's files besides the weights and the statistics: index, side files (config.json
 * told the output dtype), merge_report.json and the model card. */
pcbm_status pcbm_run_write_small_files(const merge_run *r, const pcbm_outdir *od,
                                       const char *report, pcbm_error *err);
pcbm_status pcbm_run_setup_ctx(merge_run *r, unsigned threads, pcbm_error *err);
/* r->journal (loaded) describes this very merge. */
pcbm_status pcbm_run_check_journal(merge_run *r, const char *params, pcbm_error *err);
pcbm_status pcbm_run_on_segment(void *arg, const pcbm_segment *seg, pcbm_error *err);
char *pcbm_run_report_json(const pcbm_mctx *mc, const pcbm_engine_report *er, double secs);
void pcbm_run_print_summary(const pcbm_mctx *mc, const pcbm_engine_report *er, double secs);
/* The manifest of r->od.partial; output files hashed by the engine, or given (hashes). */
pcbm_status pcbm_run_write_manifest(merge_run *r, const XXH128_hash_t *hashes, pcbm_error *err);
void pcbm_run_teardown(merge_run *r, pcbm_status st);
/* Bytes reserved besides the engine's buffers: small tables, statistics, scratch, the input
 * identity table. */
uint64_t pcbm_run_reserved_bytes(const merge_run *r, unsigned threads);
/* Input files that changed: a resumed run compares the journal's stat identity of the inputs with
 * this run's. Any change drops the output kept so far (a warning names the file); with a table of
 * what the inputs held (`table`: statistics saved or given) the journal keeps the old identity,
 * so that every later resume checks everything against that table again, otherwise it takes the
 * new one (the merge starts over). */
void pcbm_run_resume_files(merge_run *r, bool table);
/* Before the output is published: the inputs are still the files this run began with. */
pcbm_status pcbm_run_recheck_files(const merge_run *r, pcbm_error *err);
/* The engine's input identity table takes the reference values of the statistics being replayed
 * (mc.stats_in), if they have one. */
pcbm_status pcbm_run_load_ident(merge_run *r, pcbm_error *err);
/* The engine's input identity table into the statistics about to be saved. */
pcbm_status pcbm_run_export_ident(merge_run *r, pcbm_error *err);

#endif /* PCBM_RUN_INTERNAL_H */

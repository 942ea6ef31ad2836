/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dry_run.c — `dry_run`: after every input is opened and cross-checked (what a real merge does
 * before its first heavy read), say what the merge would do — tensors merged and copied (and
 * why), bytes it would read and write, the free space it needs and has, what it would do with an
 * existing output — and stop. Nothing is created or written.
 */
#include "method.h"
#include "run_internal.h"

#include "../writer/output.h"
#include "../format/adapter.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define LISTED 10   /* copied tensors named one by one */

static void say_tensors(const merge_run *r)
{
    const pcbm_layout *l = &r->layout;
    size_t conv = 0, raw = 0;
    for (size_t i = 0; i < l->nt; i++)
        if (l->t[i].kind != PCBM_T_MERGE)
            l->t[i].kind == PCBM_T_CONVERT ? conv++ : raw++;
    pcbm_info("dry run: %s merge of %u task model(s): %zu tensor(s) merged (%llu elements), %zu "
              "copied from the base (%zu converted to the output dtype, %zu byte for byte)",
              pcbm_method_name(r->o->method), r->o->ntasks, l->nmerge, (unsigned long long)l->d,
              conv + raw, conv, raw);
    size_t listed = 0;
    for (size_t i = 0; i < l->nt; i++) {
        const pcbm_tlayout *t = &l->t[i];
        if (t->kind == PCBM_T_MERGE || listed++ >= LISTED)
            continue;
        pcbm_info("  copied: %s (%s: %s)", t->name, pcbm_dtype_name(t->src[0].dt),
                  pcbm_run_copy_reason(t));
    }
    if (listed > LISTED)
        pcbm_info("  ... and %zu more copied tensor(s)", listed - LISTED);
    listed = 0;
    for (size_t i = 0; i < l->nt; i++) {
        const pcbm_tlayout *t = &l->t[i];
        if (t->kind != PCBM_T_MERGE || !t->absent || listed++ >= LISTED)
            continue;
        char who[600] = "";
        size_t u = 0;
        for (unsigned m = 1; m < l->nmodels && u < sizeof who - 1; m++)
            if (t->absent >> (m - 1) & 1u)
                u += (size_t)snprintf(who + u, sizeof who - u, "%stask %u (%s)", u ? ", " : "", m,
                                      r->o->tasks[m - 1]);
        pcbm_info("  partial: %s (missing from %s: merged over the other tasks)", t->name, who);
    }
    if (listed > LISTED)
        pcbm_info("  ... and %zu more partial tensor(s)", listed - LISTED);
    for (size_t i = 0, k = 0; i < l->nt && k < LISTED; i++) {
        const pcbm_tlayout *t = &l->t[i];
        for (unsigned m = 1; t->aligned && m < l->nmodels; m++)
            if (t->aligned >> (m - 1) & 1 && k++ < LISTED)
                pcbm_info("  aligned: %s: task %u has more rows (appended tokens); its first %s "
                          "rows take part, matched by %s", t->name, m,
                          "base-vocabulary", l->rows_how[m] == PCBM_ROWS_BY_TOKEN ? "token"
                          : "position");
    }
    const pcbm_vocab_plan *v = &r->vocab;
    if (v->out_rows && (v->on_spec || v->nstaged)) {
        char b[32];
        pcbm_info("vocabulary: %s of %llu tokens; rows gathered for %u model(s): %s of float32 "
                  "rows would be staged in %s (written before the passes, read as the models' "
                  "embeddings, removed once the output is published)",
                  v->is_union ? "union" : v->source ? "the source model's" : "the base's",
                  (unsigned long long)v->out_rows, v->nstaged,
                  pcbm_fmt_bytes(v->stage_bytes, b, sizeof b), v->dir ? v->dir : "-");
    }
    if (!l->ndequant)
        return;
    pcbm_info("  dequantized: %zu FP8 tensor(s) with block scales%s (scale tensors are not "
              "written)", l->ndequant, l->base_dequantized ? "; the base's come out as BF16 unless "
              "`out_dtype` says otherwise, and config.json loses quantization_config" : "");
    listed = 0;
    for (size_t i = 0; i < l->nt && listed < LISTED; i++) {
        const pcbm_tlayout *t = &l->t[i];
        if (!t->q)
            continue;
        listed++;
        char who[200] = "";
        const pcbm_tquant *q0 = NULL;
        for (unsigned m = 0; m < l->nmodels; m++) {
            if (!t->q[m].on)
                continue;
            size_t u = strlen(who);
            snprintf(who + u, sizeof who - u, m ? "%stask %u" : "%sbase", u ? ", " : "", m);
            if (!q0)
                q0 = &t->q[m];
        }
        pcbm_info("  dequantized: %s (FP8 in %s; %u x %u blocks)", t->name, who, q0->br, q0->bc);
    }
}

/* LoRA adapter tasks: what each one changes, and the factor cache its workers hold. */
static void say_adapters(const merge_run *r)
{
    const pcbm_layout *l = &r->layout;
    for (unsigned m = 1; m < l->nmodels; m++) {
        const pcbm_adapter *a = l->models[m]->adapter;
        if (!a)
            continue;
        const pcbm_adapter_use *u = &l->lora_use[m];
        char c[32];
        pcbm_info("  adapter: task %u (%s) is a LoRA adapter: r %u, scale %g%s; %llu tensor(s) "
                  "with factors (rank up to %u), %llu replaced whole (modules_to_save), the "
                  "rest unchanged (τ = 0); factor cache %s per thread", m, l->models[m]->path,
                  a->r, pcbm_adapter_scale(a, a->r, a->alpha), a->rslora ? " (rsLoRA)" : "",
                  (unsigned long long)u->targeted, u->max_r, (unsigned long long)u->saved,
                  pcbm_fmt_bytes(u->cache_floats * sizeof(float), c, sizeof c));
    }
}

static void say_bytes(const merge_run *r, unsigned passes)
{
    const pcbm_layout *l = &r->layout;
    char a[32], b[32], c[32];
    uint64_t full = l->merge_in_bytes + l->copy_in_bytes;
    pcbm_info("  reads: %u pass(es) planned; a full pass reads %s (merged tensors of every model "
              "%s, copied tensors %s); statistics passes read the merged tensors or samples of them",
              passes, pcbm_fmt_bytes(full, a, sizeof a), pcbm_fmt_bytes(l->merge_in_bytes, b, sizeof b),
              pcbm_fmt_bytes(l->copy_in_bytes, c, sizeof c));
    pcbm_info("  writes: %u output file(s), %s", l->out.nfiles,
              pcbm_fmt_bytes(l->out.total_file_bytes, a, sizeof a));
}

/* Free space where OUT would be created: OUT's parent directory. */
static pcbm_status say_space(const merge_run *r, pcbm_error *err)
{
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", r->o->out);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else
        slash == parent ? (void)(parent[1] = '\0') : (void)(*slash = '\0');
    uint64_t need = pcbm_run_space_needed(r);
    struct statvfs vf;
    char a[32], b[32];
    if (statvfs(parent, &vf) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "dry run: cannot look at %s, where %s would be "
                         "created: %s", parent, r->o->out, strerror(errno));
    uint64_t avail = (uint64_t)vf.f_bavail * vf.f_frsize;
    pcbm_info("  free space: %s needed in %s, %s available%s", pcbm_fmt_bytes(need, a, sizeof a),
              parent, pcbm_fmt_bytes(avail, b, sizeof b), avail < need ? ": NOT ENOUGH" : "");
    if (avail < need)
        return pcbm_fail(err, PCBM_ERR_NOSPACE, "dry run: the merge would be refused: %s needs "
                         "%s free, the filesystem has %s", r->o->out, a, b);
    return PCBM_OK;
}

/* What the merge would do with an existing OUT or OUT.partial. */
static pcbm_status say_output(const merge_run *r, pcbm_error *err)
{
    const pcbm_merge_opts *o = r->o;
    char partial[4200];
    snprintf(partial, sizeof partial, "%s.partial", o->out);
    struct stat sb;
    if (lstat(o->out, &sb) == 0)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "dry run: the merge would be refused: output %s "
                         "already exists", o->out);
    if (lstat(partial, &sb) == 0)
        pcbm_info("  %s exists: %s", partial, o->resume ? "the merge would resume it (after "
                  "checking it is pcbmerge's and matches these inputs and parameters)"
                  : o->force ? "the merge would discard it (if it is pcbmerge's)"
                             : "the merge would be refused (resume or force)");
    else
        pcbm_info("  output: %s would be written into %s and published by one rename", o->out,
                  partial);
    return PCBM_OK;
}

/* A recipe: the layers t counts over, and which parameters vary per tensor. */
static void say_recipe(const merge_run *r)
{
    const pcbm_merge_opts *o = r->o;
    if (!o->params)
        return;
    char vary[256] = "";
    size_t u = 0;
    for (unsigned p = 0; p < PCBM_P_COUNT && u < sizeof vary; p++)
        if (pcbm_params_varies(o->params, (pcbm_param_id)p))
            u += (size_t)snprintf(vary + u, sizeof vary - u, "%s%s", u ? ", " : "",
                                  pcbm_param_name((pcbm_param_id)p));
    pcbm_info("  recipe: mergekit's semantics, per tensor; t = layer / %u (the base's %u layers)%s%s",
              r->mc.nlayers > 1 ? r->mc.nlayers - 1 : 1, r->mc.nlayers,
              u ? "; varying per tensor: " : "; every parameter is a scalar", vary);
}

pcbm_status pcbm_run_dry(merge_run *r, unsigned passes, pcbm_error *err)
{
    say_tensors(r);
    say_recipe(r);
    say_adapters(r);
    say_bytes(r, passes);
    pcbm_status st = say_output(r, err);
    if (st == PCBM_OK)
        st = say_space(r, err);
    if (st == PCBM_OK)
        pcbm_info("dry run: every input checked; nothing was written");
    return st;
}

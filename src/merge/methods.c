/* SPDX-License-Identifier: Apache-2.0 */
/*
 * methods.c — the method table: one line per method (its pcbm_method_def lives in the method's
 * own file), and what is looked up in it: names (public API), statistics bytes, rounds at most,
 * the defaults of the switches.
 */
#include "method.h"

#include <string.h>

extern const pcbm_method_def pcbm_method_pcb, pcbm_method_ties, pcbm_method_dare_ties,
    pcbm_method_task_arithmetic, pcbm_method_linear, pcbm_method_dare_linear,
    pcbm_method_breadcrumbs, pcbm_method_breadcrumbs_ties, pcbm_method_ties_mk,
    pcbm_method_dare_ties_mk, pcbm_method_dare_linear_mk, pcbm_method_della,
    pcbm_method_della_linear;
extern const pcbm_method_def pcbm_method_slerp, pcbm_method_nuslerp, pcbm_method_model_stock,
    pcbm_method_sce;

static const pcbm_method_def *const methods[PCBM_METHOD_COUNT] = {
    [PCBM_METHOD_PCB] = &pcbm_method_pcb,
    [PCBM_METHOD_TIES] = &pcbm_method_ties,
    [PCBM_METHOD_DARE_TIES] = &pcbm_method_dare_ties,
    [PCBM_METHOD_TASK_ARITHMETIC] = &pcbm_method_task_arithmetic,
    [PCBM_METHOD_LINEAR] = &pcbm_method_linear,
    [PCBM_METHOD_DARE_LINEAR] = &pcbm_method_dare_linear,
    [PCBM_METHOD_SLERP] = &pcbm_method_slerp,
    [PCBM_METHOD_NUSLERP] = &pcbm_method_nuslerp,
    [PCBM_METHOD_MODEL_STOCK] = &pcbm_method_model_stock,
    [PCBM_METHOD_SCE] = &pcbm_method_sce,
    [PCBM_METHOD_BREADCRUMBS] = &pcbm_method_breadcrumbs,
    [PCBM_METHOD_BREADCRUMBS_TIES] = &pcbm_method_breadcrumbs_ties,
    [PCBM_METHOD_DELLA] = &pcbm_method_della,
    [PCBM_METHOD_DELLA_LINEAR] = &pcbm_method_della_linear,
};

const pcbm_method_def *pcbm_method_find(pcbm_method m)
{
    return (unsigned)m < PCBM_METHOD_COUNT ? methods[m] : NULL;
}

const pcbm_method_def *pcbm_method_for(const pcbm_merge_opts *o)
{
    if (o->semantics == PCBM_SEMANTICS_MERGEKIT) {
        switch (o->method) {
        case PCBM_METHOD_TIES: return &pcbm_method_ties_mk;
        case PCBM_METHOD_DARE_TIES: return &pcbm_method_dare_ties_mk;
        case PCBM_METHOD_DARE_LINEAR: return &pcbm_method_dare_linear_mk;
        default: break;
        }
    }
    return pcbm_method_find(o->method);
}

const char *pcbm_method_name(pcbm_method m)
{
    const pcbm_method_def *d = pcbm_method_find(m);
    return d ? d->name : "unknown";
}

pcbm_method pcbm_method_parse(const char *s)
{
    for (unsigned m = 0; m < PCBM_METHOD_COUNT; m++)
        if (methods[m] && strcmp(s, methods[m]->name) == 0)
            return (pcbm_method)m;
    return PCBM_METHOD_COUNT;
}

int pcbm_method_per_tensor(const pcbm_merge_opts *o)
{
    const pcbm_method_def *d = pcbm_method_for(o);
    return d && d->per_tensor;
}

pcbm_scope pcbm_method_default_scope(const pcbm_merge_opts *o)
{
    const pcbm_method_def *d = pcbm_method_for(o);
    return d && (d->per_tensor || d->scope_tensor) ? PCBM_SCOPE_TENSOR : PCBM_SCOPE_GLOBAL;
}

uint64_t pcbm_method_stats_bytes(const pcbm_merge_opts *o, unsigned threads, const pcbm_layout *p)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    return m && m->stats_bytes ? m->stats_bytes(o, threads, p) : 0;
}

void pcbm_method_prepare_layout(const pcbm_merge_opts *o, pcbm_layout *p)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    for (size_t i = 0; i < p->nt; i++) {
        pcbm_tlayout *t = &p->t[i];
        const pcbm_out_tensor *ot = &p->out_tensors[i];
        t->row_units = 0;
        if (!m || !m->whole_rows || o->scope == PCBM_SCOPE_GLOBAL || t->kind != PCBM_T_MERGE)
            continue; /* (DELLA in global scope ranks over the model, not per row) */
        uint64_t cols = 1; /* a 1-D tensor is one row (mergekit's unsqueeze(0)) */
        for (unsigned k = ot->ndim >= 2 ? 1 : 0; k < ot->ndim; k++)
            cols *= ot->shape[k];
        t->row_units = cols;
    }
}

unsigned pcbm_method_max_rounds(const pcbm_merge_opts *o, const pcbm_layout *p)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    if (!m || m->nrounds == 0 || p->d == 0)
        return 0;
    if (o->scope == PCBM_SCOPE_TENSOR || m->per_tensor)
        return 1; /* a unit's statistics are its own tensors' (no exchange) */
    return m->max_rounds ? m->max_rounds(o, p) : m->nrounds;
}

static bool switch_on(int v, bool dflt)
{
    return v == PCBM_ON || (v != PCBM_OFF && dflt);
}

bool pcbm_method_normalizes(const pcbm_merge_opts *o)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    return m && (m->uses & PCBM_USES_NORMALIZE) && switch_on(o->normalize, m->normalizes);
}

bool pcbm_method_rescales(const pcbm_merge_opts *o)
{
    const pcbm_method_def *m = pcbm_method_for(o);
    return m && (m->uses & PCBM_USES_RESCALE) && switch_on(o->rescale, m->rescales);
}

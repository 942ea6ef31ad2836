/* SPDX-License-Identifier: Apache-2.0 */
/*
 * params.c — the value of a method parameter for one tensor and task: from the options' scalars
 * (the command line), or from a recipe's per-tensor rules (o->params: gradients, filters).
 */
#include "method.h"

#include <math.h>

static const char *const names[PCBM_P_COUNT] = {
    [PCBM_P_WEIGHT] = "weight",
    [PCBM_P_DENSITY] = "density",
    [PCBM_P_GAMMA] = "gamma",
    [PCBM_P_EPSILON] = "epsilon",
    [PCBM_P_LAMBDA] = "lambda",
    [PCBM_P_T] = "t",
    [PCBM_P_SELECT_TOPK] = "select_topk",
    [PCBM_P_NORMALIZE] = "normalize",
    [PCBM_P_RESCALE] = "rescale",
    [PCBM_P_NUSLERP_FLATTEN] = "nuslerp_flatten",
    [PCBM_P_NUSLERP_ROW_WISE] = "nuslerp_row_wise",
    [PCBM_P_FILTER_WISE] = "filter_wise",
};

const char *pcbm_param_name(pcbm_param_id p)
{
    return (unsigned)p < PCBM_P_COUNT ? names[p] : "unknown";
}

static double on_off(int v, bool dflt)
{
    return (v == PCBM_ON || (v != PCBM_OFF && dflt)) ? 1.0 : 0.0;
}

/* The options' value (the same for every tensor). */
static double from_opts(const pcbm_merge_opts *o, unsigned task, pcbm_param_id p)
{
    switch (p) {
    case PCBM_P_WEIGHT: return pcbm_task_weight(o, task);
    case PCBM_P_DENSITY: return pcbm_task_density(o, task);
    case PCBM_P_GAMMA: return o->gamma;
    case PCBM_P_EPSILON: return o->epsilon;
    case PCBM_P_LAMBDA: return o->lambda;
    case PCBM_P_T: return o->t;
    case PCBM_P_SELECT_TOPK: return o->select_topk;
    case PCBM_P_NORMALIZE: return pcbm_method_normalizes(o) ? 1.0 : 0.0;
    case PCBM_P_RESCALE: return pcbm_method_rescales(o) ? 1.0 : 0.0;
    case PCBM_P_NUSLERP_FLATTEN: return on_off(o->nuslerp_flatten, true);
    case PCBM_P_NUSLERP_ROW_WISE: return on_off(o->nuslerp_row_wise, false);
    case PCBM_P_FILTER_WISE: return on_off(o->filter_wise, false);
    default: return NAN;
    }
}

double pcbm_tparam(const pcbm_mctx *mc, size_t tensor, unsigned task, pcbm_param_id p)
{
    (void)tensor; /* recipes' per-tensor rules (o->params) are evaluated here */
    return from_opts(mc->o, task, p);
}

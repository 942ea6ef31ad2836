/* SPDX-License-Identifier: Apache-2.0 */
/*
 * quant.c — the dequantization part of the layout: FP8 weights (F8_E4M3, F8_E5M2) stored with
 * block scales, as DeepSeek-V3 and Qwen3-FP8 ship them. A weight W [R, C] comes with
 * W_scale_inv [ceil(R/br), ceil(C/bc)] (F32 or BF16); the block size br × bc is the model's
 * config.json quantization_config.weight_block_size (128 × 128 when absent). Element (r, c) is
 * fp8(W[r, c]) · scale[r / br][c / bc], one float32 multiplication — what the models' own
 * dequantization computes. Scale tensors are consumed: never merged, never written.
 */
#include "layout.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCALE_SUFFIX "_scale_inv"
#define DEFAULT_BLOCK 128u

bool pcbm_quant_is_fp8(pcbm_dtype dt) { return dt == PCBM_DT_F8_E4M3 || dt == PCBM_DT_F8_E5M2; }

/* The scale tensor of weight `name` in m, or -1. */
static long scale_of(const pcbm_model *m, const char *name)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s%s", name, SCALE_SUFFIX) >= (int)sizeof buf)
        return -1;
    return pcbm_model_find(m, buf);
}

bool pcbm_quant_has_scale(const pcbm_model *m, const char *name) { return scale_of(m, name) >= 0; }

bool pcbm_quant_consumed(const pcbm_model *m, const char *name)
{
    size_t n = strlen(name), k = strlen(SCALE_SUFFIX);
    if (n <= k || strcmp(name + n - k, SCALE_SUFFIX) != 0 || n - k >= 1024)
        return false;
    char w[1024];
    memcpy(w, name, n - k);
    w[n - k] = '\0';
    long j = pcbm_model_find(m, w);
    return j >= 0 && pcbm_quant_is_fp8(pcbm_model_tensor_at(m, (size_t)j)->dtype);
}

/* quantization_config.weight_block_size of m's config.json: 1 and the block when the model has
 * one, 0 when it has none (no directory, no config, no such key), -1 when it is malformed. */
static int config_block(const pcbm_model *m, uint32_t *br, uint32_t *bc)
{
    if (!m->is_dir)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", m->dir);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return 0;
    json_t *b = json_object_get(json_object_get(cfg, "quantization_config"), "weight_block_size");
    int rc = 0;
    if (b) {
        json_t *r = json_array_get(b, 0), *c = json_array_get(b, 1);
        rc = json_is_array(b) && json_array_size(b) == 2 && json_is_integer(r) &&
                     json_is_integer(c) && json_integer_value(r) > 0 &&
                     json_integer_value(c) > 0 && json_integer_value(r) <= (1 << 30) &&
                     json_integer_value(c) <= (1 << 30)
                 ? 1 : -1;
        if (rc == 1) {
            *br = (uint32_t)json_integer_value(r);
            *bc = (uint32_t)json_integer_value(c);
        }
    }
    json_decref(cfg);
    return rc;
}

pcbm_status pcbm_quant_block(const pcbm_model *m, uint32_t block[2], pcbm_error *err)
{
    block[0] = block[1] = DEFAULT_BLOCK;
    if (config_block(m, &block[0], &block[1]) < 0)
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s/config.json: quantization_config."
                         "weight_block_size must be two positive integers [rows, cols]", m->dir);
    return PCBM_OK;
}

pcbm_status pcbm_quant_describe(const pcbm_model *m, const uint32_t block[2], const char *who,
                                const pcbm_st_tensor *w, pcbm_tquant *q, pcbm_error *err)
{
    long j = scale_of(m, w->name);
    if (j < 0)
        return pcbm_fail(err, PCBM_ERR_UNSUPPORTED,
                         "%s (%s): tensor %s is %s without a block scale tensor %s%s; only FP8 "
                         "with block scales (weight_scale_inv, as DeepSeek-V3 and Qwen3-FP8 ship "
                         "them) is dequantized; merge the model's BF16 release instead",
                         who, m->path, w->name, pcbm_dtype_name(w->dtype), w->name, SCALE_SUFFIX);
    const pcbm_st_tensor *s = pcbm_model_tensor_at(m, (size_t)j);
    uint32_t br = block[0], bc = block[1];
    if (w->ndim != 2 || s->ndim != 2 || (s->dtype != PCBM_DT_F32 && s->dtype != PCBM_DT_BF16) ||
        s->shape[0] != (w->shape[0] + br - 1) / br || s->shape[1] != (w->shape[1] + bc - 1) / bc)
        return pcbm_fail(err, PCBM_ERR_FORMAT,
                         "%s (%s): the block scales %s (%s, %u dims) do not fit weight %s (%u "
                         "dims) with %u x %u blocks: a [ceil(rows/%u), ceil(cols/%u)] F32 or BF16 "
                         "tensor is expected; check quantization_config.weight_block_size in the "
                         "model's config.json", who, m->path, s->name, pcbm_dtype_name(s->dtype),
                         s->ndim, w->name, w->ndim, br, bc, br, bc);
    *q = (pcbm_tquant){.on = true, .scale_file = s->file, .scale_off = s->offset,
                       .scale_dt = s->dtype, .br = br, .bc = bc, .cols = w->shape[1],
                       .srows = s->shape[0], .scols = s->shape[1]};
    return PCBM_OK;
}

pcbm_status pcbm_quant_open(pcbm_layout *p, pcbm_error *err)
{
    for (size_t i = 0; i < p->nt; i++) {
        const pcbm_tquant *q = p->t[i].q;
        for (unsigned m = 0; q && m < p->nmodels; m++) {
            if (!q[m].on)
                continue;
            const pcbm_model *md = p->models[m];
            if (!p->qfd[m]) {
                if (!(p->qfd[m] = pcbm_malloc(md->nfiles * sizeof(int))))
                    return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
                for (unsigned f = 0; f < md->nfiles; f++)
                    p->qfd[m][f] = -1;
            }
            int *fd = &p->qfd[m][q[m].scale_file];
            if (*fd < 0 && (*fd = open(md->files[q[m].scale_file].path, O_RDONLY | O_CLOEXEC)) < 0)
                return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s",
                                 md->files[q[m].scale_file].path, strerror(errno));
        }
    }
    return PCBM_OK;
}

void pcbm_quant_close(pcbm_layout *p)
{
    for (unsigned m = 0; m < p->nmodels; m++) {
        for (unsigned f = 0; p->qfd[m] && f < p->models[m]->nfiles; f++)
            if (p->qfd[m][f] >= 0)
                close(p->qfd[m][f]);
        free(p->qfd[m]);
        p->qfd[m] = NULL;
    }
}

uint64_t pcbm_quant_scale_cap(const pcbm_layout *p, uint64_t max_elems)
{
    uint64_t cap = 0;
    for (size_t i = 0; i < p->nt; i++) {
        const pcbm_tquant *q = p->t[i].q;
        for (unsigned m = 0; q && m < p->nmodels; m++) {
            if (!q[m].on)
                continue;
            uint64_t rows = max_elems / q[m].cols + 2; /* a block may start and end mid-row */
            uint64_t srows = PCBM_MIN(rows / q[m].br + 2, q[m].srows);
            cap = PCBM_MAX(cap, srows * q[m].scols);
        }
    }
    return cap;
}

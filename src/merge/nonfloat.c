/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nonfloat.c — integer and bool tensors (position ids, masks, counters, buffers) are copied from
 * the base, never merged. Copying is only right when every task model holds the same bytes, so
 * before a merge each such tensor is compared, byte for byte, with the task models' copies:
 * a difference refuses the merge naming tensor, models and the first differing byte, unless the
 * user asked for the base's (`take_nonfloat_base`). Such tensors are small in the checkpoints
 * pcbmerge accepts (packed quantized weights are refused by the layout), so this reads little.
 */
#include "run_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMP_CHUNK (256u << 10)

/* First differing byte of two tensors (UINT64_MAX when equal). */
static pcbm_status first_difference(const char *pa, uint64_t oa, const char *pb, uint64_t ob,
                                    uint64_t n, unsigned char *buf, uint64_t *at, pcbm_error *err)
{
    *at = UINT64_MAX;
    int fa = open(pa, O_RDONLY | O_CLOEXEC), fb = fa < 0 ? -1 : open(pb, O_RDONLY | O_CLOEXEC);
    if (fa < 0 || fb < 0) {
        int e = errno;
        if (fa >= 0)
            close(fa);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", fa < 0 ? pa : pb, strerror(e));
    }
    pcbm_status st = PCBM_OK;
    for (uint64_t done = 0; done < n && *at == UINT64_MAX;) {
        size_t k = (size_t)PCBM_MIN(n - done, (uint64_t)CMP_CHUNK);
        /* an early end: shorter than its header says, so the file changed after it was checked */
        int e = pcbm_pread_full(fa, buf, k, oa + done, NULL);
        const char *bad = pa;
        uint64_t boff = oa + done;
        if (!e) {
            e = pcbm_pread_full(fb, buf + CMP_CHUNK, k, ob + done, NULL);
            bad = pb;
            boff = ob + done;
        }
        if (e) {
            st = pcbm_fail(err, PCBM_ERR_IO, "%s: read failed at byte %llu: %s; check the file",
                           bad, (unsigned long long)boff, e < 0 ? "unexpected end of file" : strerror(e));
            break;
        }
        if (memcmp(buf, buf + CMP_CHUNK, k) != 0) {
            size_t j = 0;
            while (buf[j] == buf[CMP_CHUNK + j])
                j++;
            *at = done + j;
        }
        done += k;
    }
    close(fa);
    close(fb);
    return st;
}

pcbm_status pcbm_run_check_nonfloat(merge_run *r, pcbm_error *err)
{
    const pcbm_layout *p = &r->layout;
    unsigned char *buf = NULL;
    pcbm_status st = PCBM_OK;
    for (size_t i = 0; i < p->nt && st == PCBM_OK; i++) {
        const pcbm_tlayout *t = &p->t[i];
        if (t->why != PCBM_WHY_NOT_FLOAT)
            continue;
        const pcbm_model *base = p->models[0];
        const pcbm_st_tensor *bt = &base->tensors[pcbm_model_find(base, t->name)];
        for (unsigned m = 1; m < p->nmodels && st == PCBM_OK; m++) {
            const pcbm_model *md = p->models[m];
            long j = pcbm_model_find(md, t->name);
            if (j < 0)
                continue;
            const pcbm_st_tensor *tt = &md->tensors[j];
            if (tt->dtype != bt->dtype || tt->nbytes != bt->nbytes)
                continue; /* a shape or dtype difference: refused or warned by the layout */
            if (!buf && !(buf = pcbm_malloc(2 * CMP_CHUNK)))
                return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory comparing tensor %s",
                                 t->name);
            uint64_t at;
            st = first_difference(base->files[bt->file].path, bt->offset, md->files[tt->file].path,
                                  tt->offset, bt->nbytes, buf, &at, err);
            if (st != PCBM_OK || at == UINT64_MAX)
                continue;
            if (r->o->take_nonfloat_base)
                pcbm_warn("tensor %s (%s) differs between the base and task model %u (%s) from "
                          "its byte %llu: the base's is copied (`take_nonfloat_base`)", t->name,
                          pcbm_dtype_name(bt->dtype), m, md->path, (unsigned long long)at);
            else
                st = pcbm_fail(err, PCBM_ERR_MISMATCH,
                               "tensor %s (%s) differs between the base %s and task model %u %s "
                               "from its byte %llu (file offset %llu): integer and bool tensors "
                               "are copied, not merged, so one model's values would be lost; "
                               "check that the models are fine-tunes of this base, or set "
                               "`take_nonfloat_base` to copy the base's", t->name,
                               pcbm_dtype_name(bt->dtype), base->path, m, md->path,
                               (unsigned long long)at, (unsigned long long)(tt->offset + at));
        }
    }
    free(buf);
    return st;
}

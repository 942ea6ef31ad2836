/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_common.h — checks shared by the header fuzz targets: the invariants of an accepted header
 * and the round trip through the output layoutner (plan → header bytes → parse → same tensors).
 */
#ifndef PCBM_FUZZ_COMMON_H
#define PCBM_FUZZ_COMMON_H

#include "format/safetensors.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                  \
    do {                                                                                          \
        if (!(c))                                                                                 \
            abort();                                                                              \
    } while (0)

static void check_invariants(const pcbm_st_header *h, size_t len)
{
    uint64_t cursor = h->data_start;
    for (size_t i = 0; i < h->ntensors; i++) {
        const pcbm_st_tensor *t = &h->tensors[i];
        CHECK(t->offset == cursor);
        CHECK((unsigned)t->dtype < PCBM_DT_COUNT);
        cursor += t->nbytes;
    }
    CHECK(cursor == len);
    CHECK(h->data_start + h->data_bytes == len);
    CHECK(h->nmeta % 2 == 0);
}

/* Plan the same tensors, build the file image (header + zero data), parse it again. */
static void round_trip(const pcbm_st_header *h)
{
    pcbm_out_tensor *ot = calloc(h->ntensors + 1, sizeof *ot);
    CHECK(ot);
    for (size_t i = 0; i < h->ntensors; i++) {
        const pcbm_st_tensor *t = &h->tensors[i];
        ot[i] = (pcbm_out_tensor){t->name, t->dtype, t->ndim, t->shape, t->nbytes, 0, 0};
    }
    pcbm_outlayout p;
    pcbm_error err;
    CHECK(pcbm_outlayout_build(ot, h->ntensors, 0, (const char *const *)h->meta, h->nmeta, &p,
                             &err) == PCBM_OK);
    CHECK(p.nfiles == 1 && p.files[0].data_start % PCBM_ALIGN == 0);
    size_t size = (size_t)p.files[0].size;
    char *img = calloc(size, 1);
    CHECK(img);
    memcpy(img, p.files[0].header, (size_t)p.files[0].data_start);
    pcbm_st_header h2;
    CHECK(pcbm_st_parse_mem(img, size, "roundtrip", &h2, &err) == PCBM_OK);
    CHECK(h2.ntensors == h->ntensors);
    for (size_t i = 0; i < h->ntensors; i++) {
        const pcbm_st_tensor *a = &h->tensors[i], *b = &h2.tensors[i];
        CHECK(strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim);
        CHECK(a->nbytes == b->nbytes && b->offset == ot[i].offset);
        CHECK(a->ndim == 0 || memcmp(a->shape, b->shape, a->ndim * sizeof *a->shape) == 0);
    }
    CHECK(h2.nmeta >= 2 && strcmp(h2.meta[0], "format") == 0 && strcmp(h2.meta[1], "pt") == 0);
    pcbm_st_header_free(&h2);
    free(img);
    pcbm_outlayout_free(&p);
    free(ot);
}

#endif /* PCBM_FUZZ_COMMON_H */

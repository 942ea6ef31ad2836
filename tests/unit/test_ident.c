/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ident.c — the input identity table (src/sched/ident.c) on its own: the recorded values do
 * not depend on how a tensor is cut into blocks nor on the order blocks arrive in; a later pass
 * over the same bytes passes and one over changed bytes fails naming file, byte range and
 * tensor; the table survives the statistics file (base64) unchanged, and a table cut with
 * another leaf size is refused.
 */
#include "sched/ident.h"
#include "stats/statfile.h"
#include "test_tmpdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define NM 2
#define UNITS (3u * PCBM_IDENT_GRANULE + 5000u) /* three granules and a short one */

static uint16_t *data[NM];
static pcbm_st_file files[NM];
static pcbm_model models[NM];
static pcbm_tsrc src[NM];
static unsigned in_unit[NM] = {2, 2};
static pcbm_tlayout tl;
static pcbm_layout lay;

static int setup(void **state)
{
    (void)state;
    for (unsigned m = 0; m < NM; m++) {
        data[m] = malloc(UNITS * sizeof(uint16_t));
        for (uint32_t k = 0; k < UNITS; k++)
            data[m][k] = (uint16_t)(k * 2654435761u >> (7 + m));
        files[m].path = m ? "task/model.safetensors" : "base/model.safetensors";
        models[m].path = m ? "task" : "base";
        models[m].files = &files[m];
        models[m].nfiles = 1;
        src[m] = (pcbm_tsrc){.file = 0, .off = 1000, .dt = PCBM_DT_BF16};
        lay.models[m] = &models[m];
    }
    tl = (pcbm_tlayout){.name = "w", .kind = PCBM_T_MERGE, .units = UNITS, .in_unit = in_unit,
                        .src = src, .pidx = 0};
    lay.nmodels = NM;
    lay.t = &tl;
    lay.nt = 1;
    lay.nmerge = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (unsigned m = 0; m < NM; m++)
        free(data[m]);
    return 0;
}

/* One pass over the tensor in blocks of `block` elements, visited in the order of `stride`
 * (a permutation of the block indices when stride and the block count are coprime). */
static pcbm_status pass(pcbm_ident *id, uint32_t block, uint64_t stride, pcbm_error *err)
{
    uint64_t nb = (UNITS + block - 1) / block;
    pcbm_status st = PCBM_OK;
    for (uint64_t i = 0; i < nb; i++) { /* to the end, as the engine's workers would */
        uint64_t b = i * stride % nb;
        pcbm_blockview bv = {.t = &tl, .tensor = 0, .start = b * block};
        bv.n = (uint32_t)(b * block + block <= UNITS ? block : UNITS - b * block);
        for (unsigned m = 0; m < NM; m++)
            bv.in[m] = data[m] + bv.start;
        pcbm_error e;
        pcbm_status bst = pcbm_ident_block(id, &bv, &e);
        if (bst != PCBM_OK && st == PCBM_OK) {
            st = bst;
            *err = e;
        }
    }
    return st;
}

static void test_cut_independent(void **state)
{
    (void)state;
    assert_int_equal(pcbm_ident_granules(&lay), 4);
    pcbm_ident *a, *b;
    pcbm_error err;
    assert_int_equal(pcbm_ident_create(&lay, &a, &err), PCBM_OK);
    assert_int_equal(pcbm_ident_create(&lay, &b, &err), PCBM_OK);
    assert_int_equal(pass(a, 4096 * 7, 1, &err), PCBM_OK);
    assert_int_equal(pass(b, 2u << 20, 1, &err), PCBM_OK);
    uint64_t ga, gb;
    const uint64_t *ra = pcbm_ident_ref(a, &ga), *rb = pcbm_ident_ref(b, &gb);
    assert_int_equal(ga, 4);
    assert_memory_equal(ra, rb, NM * ga * sizeof *ra);
    for (uint64_t k = 0; k < NM * ga; k++)
        assert_true(ra[k] != 0);
    /* later passes, cut and ordered otherwise, over the same bytes: no complaint */
    assert_int_equal(pass(a, 4096, 97, &err), PCBM_OK);
    assert_int_equal(pass(b, 4096 * 3, 5, &err), PCBM_OK);
    pcbm_ident_free(a);
    pcbm_ident_free(b);
}

static void test_change_named(void **state)
{
    (void)state;
    pcbm_ident *id;
    pcbm_error err;
    assert_int_equal(pcbm_ident_create(&lay, &id, &err), PCBM_OK);
    assert_int_equal(pass(id, 4096 * 5, 1, &err), PCBM_OK);
    uint64_t at = 2u * PCBM_IDENT_GRANULE + 123; /* granule 2 of the task */
    data[1][at] ^= 0x8000;
    assert_int_equal(pass(id, 4096 * 9, 7, &err), PCBM_ERR_STATS);
    data[1][at] ^= 0x8000;
    char want[128];
    snprintf(want, sizeof want, "bytes %llu-%llu of task/model.safetensors",
             1000ull + 2ull * 2 * PCBM_IDENT_GRANULE, 1000ull + 3ull * 2 * PCBM_IDENT_GRANULE);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, "tensor w"));
    /* the table is not altered by the failed pass: the restored bytes pass again */
    assert_int_equal(pass(id, 4096 * 9, 7, &err), PCBM_OK);
    pcbm_ident_free(id);
}

static void test_statfile_roundtrip(void **state)
{
    (void)state;
    char dir[256], path[300];
    assert_int_equal(test_tmpdir_make(dir, sizeof dir, "ident"), 0);
    snprintf(path, sizeof path, "%s/s.json.zst", dir);
    for (uint64_t ng = 0; ng < 5; ng++) { /* every base64 padding */
        pcbm_statset s = {.nmodels = NM, .shape_json = strdup("{}")};
        uint64_t v[NM * 4];
        for (unsigned k = 0; k < NM * ng; k++)
            v[k] = 0x0123456789abcdefull * (k + 1) ^ (uint64_t)k << 60;
        assert_true(pcbm_statset_set_ident(&s, v, ng));
        pcbm_error err;
        assert_int_equal(pcbm_statfile_write(path, &s, NM - 1, &err), PCBM_OK);
        pcbm_statset r;
        assert_int_equal(pcbm_statfile_read(path, &r, &err), PCBM_OK);
        assert_non_null(r.ident);
        assert_int_equal(r.ident_ngran, ng);
        if (ng)
            assert_memory_equal(r.ident, v, NM * ng * sizeof v[0]);
        pcbm_statset_free(&s);
        pcbm_statset_free(&r);
    }
    uint64_t one[NM] = {1, 2}, *back = NULL, ng = 0;
    json_t *j = pcbm_ident_json(one, NM, 1);
    json_object_set_new(j, "leaf", json_integer(8192));
    assert_false(pcbm_ident_parse(j, NM, &back, &ng));
    json_decref(j);
    assert_int_equal(test_tmpdir_remove(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_independent),
        cmocka_unit_test(test_change_named),
        cmocka_unit_test(test_statfile_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_index.c — libFuzzer target for model.safetensors.index.json: the input is index text
 * parsed from memory against a fake directory where every shard name exists except those
 * starting with 'x'. Accepted inputs must name only plain files and map every tensor to a shard.
 */
#include "format/safetensors.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                  \
    do {                                                                                          \
        if (!(c))                                                                                 \
            abort();                                                                              \
    } while (0)

static bool fake_exists(const char *name, void *ctx)
{
    (void)ctx;
    return name[0] != 'x';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pcbm_st_index ix;
    pcbm_error err;
    pcbm_error_clear(&err);
    pcbm_status st = pcbm_st_index_parse((const char *)data, size, "fuzz.index.json", fake_exists,
                                         NULL, &ix, &err);
    if (st != PCBM_OK) {
        CHECK(st == PCBM_ERR_FORMAT && err.status == st);
        CHECK(strncmp(err.msg, "fuzz.index.json", 15) == 0);
        return 0;
    }
    CHECK(ix.nnames > 0 && ix.nshards > 0 && ix.nshards <= ix.nnames);
    for (unsigned s = 0; s < ix.nshards; s++) {
        CHECK(pcbm_st_plain_name(ix.shards[s]) && ix.shards[s][0] != 'x');
        for (unsigned r = 0; r < s; r++)
            CHECK(strcmp(ix.shards[r], ix.shards[s]) != 0);
    }
    for (size_t i = 0; i < ix.nnames; i++)
        CHECK(ix.names[i] && ix.shard_of[i] < ix.nshards);
    pcbm_st_index_free(&ix);
    return 0;
}

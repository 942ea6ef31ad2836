/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_header.c — libFuzzer target for the safetensors header parser: the input is a whole file
 * image parsed from memory. Accepted inputs must satisfy the reader's invariants and survive a
 * round trip through the output planner (plan → header bytes → parse again → same tensors).
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pcbm_st_header h;
    pcbm_error err;
    pcbm_error_clear(&err);
    pcbm_status st = pcbm_st_parse_mem(data, size, "fuzz.safetensors", &h, &err);
    if (st != PCBM_OK) {
        CHECK(st == PCBM_ERR_FORMAT && err.status == st);
        CHECK(strncmp(err.msg, "fuzz.safetensors", 16) == 0);
        return 0;
    }
    check_invariants(&h, size);
    round_trip(&h);
    pcbm_st_header_free(&h);
    return 0;
}

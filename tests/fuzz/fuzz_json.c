/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_json.c — libFuzzer target for the header JSON alone: input = 2-byte little-endian data
 * length + header JSON; the file size is built from them so that mutations of the JSON keep a
 * consistent length prefix and reach the tensor, metadata and tiling rules.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t data_len = (uint64_t)data[0] | (uint64_t)data[1] << 8;
    const char *json = (const char *)data + 2;
    size_t n = size - 2;
    pcbm_st_header h;
    pcbm_error err;
    pcbm_error_clear(&err);
    pcbm_status st = pcbm_st_parse_json(json, n, 8 + n + data_len, "fuzz.json", &h, &err);
    if (st != PCBM_OK) {
        CHECK(st == PCBM_ERR_FORMAT && err.status == st);
        CHECK(strncmp(err.msg, "fuzz.json", 9) == 0);
        return 0;
    }
    check_invariants(&h, 8 + n + data_len);
    round_trip(&h);
    pcbm_st_header_free(&h);
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dtype.c — the safetensors dtype table (names, element widths, which types merge) and
 * pcbm_parse_size, the byte-count parser shared by the CLI and the library.
 */
#include "safetensors.h"

#include <string.h>

static const struct {
    const char *name;
    unsigned bits;
} dtype_table[PCBM_DT_COUNT] = {
    [PCBM_DT_BOOL] = {"BOOL", 8},           [PCBM_DT_U8] = {"U8", 8},
    [PCBM_DT_I8] = {"I8", 8},               [PCBM_DT_F8_E5M2] = {"F8_E5M2", 8},
    [PCBM_DT_F8_E4M3] = {"F8_E4M3", 8},     [PCBM_DT_I16] = {"I16", 16},
    [PCBM_DT_U16] = {"U16", 16},            [PCBM_DT_F16] = {"F16", 16},
    [PCBM_DT_BF16] = {"BF16", 16},          [PCBM_DT_I32] = {"I32", 32},
    [PCBM_DT_U32] = {"U32", 32},            [PCBM_DT_F32] = {"F32", 32},
    [PCBM_DT_F64] = {"F64", 64},            [PCBM_DT_I64] = {"I64", 64},
    [PCBM_DT_U64] = {"U64", 64},            [PCBM_DT_F4] = {"F4", 4},
    [PCBM_DT_F6_E2M3] = {"F6_E2M3", 6},     [PCBM_DT_F6_E3M2] = {"F6_E3M2", 6},
    [PCBM_DT_F8_E8M0] = {"F8_E8M0", 8},     [PCBM_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [PCBM_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8}, [PCBM_DT_C64] = {"C64", 64},
};

const char *pcbm_dtype_name(pcbm_dtype dt)
{
    if ((unsigned)dt >= PCBM_DT_COUNT)
        return "unknown";
    return dtype_table[dt].name;
}

pcbm_dtype pcbm_dtype_parse(const char *s)
{
    if (!s)
        return PCBM_DT_COUNT;
    for (unsigned i = 0; i < PCBM_DT_COUNT; i++)
        if (strcmp(s, dtype_table[i].name) == 0)
            return (pcbm_dtype)i;
    return PCBM_DT_COUNT;
}

unsigned pcbm_dtype_bits(pcbm_dtype dt)
{
    if ((unsigned)dt >= PCBM_DT_COUNT)
        return 0;
    return dtype_table[dt].bits;
}

int pcbm_dtype_is_mergeable(pcbm_dtype dt)
{
    return dt == PCBM_DT_F32 || dt == PCBM_DT_F16 || dt == PCBM_DT_BF16 || dt == PCBM_DT_F64;
}

/* ---- sizes ---------------------------------------------------------------------------------- */

#define SIZE_MAX_FRAC_DIGITS 18

/* Unit suffix → multiplier: "", "B", "K", "Ki", "KiB" (1024^k), "KB" (1000^k); case of the
 * letter is free. Returns 0 for an unknown suffix. */
static uint64_t size_unit(const char *u)
{
    static const char letters[] = "KMGT";
    if (*u == '\0' || ((u[0] == 'B' || u[0] == 'b') && u[1] == '\0'))
        return 1;
    const char *l = strchr(letters, u[0] >= 'a' ? u[0] - 'a' + 'A' : u[0]);
    if (!l)
        return 0;
    unsigned k = (unsigned)(l - letters) + 1;
    const char *rest = u + 1;
    uint64_t base = 1024;
    if (strcmp(rest, "B") == 0 || strcmp(rest, "b") == 0)
        base = 1000;
    else if (*rest && strcmp(rest, "i") != 0 && strcmp(rest, "iB") != 0 && strcmp(rest, "ib") != 0)
        return 0;
    uint64_t m = 1;
    while (k--)
        m *= base;
    return m;
}

int pcbm_parse_size(const char *s, uint64_t *out)
{
    if (!s || !out || !(*s >= '0' && *s <= '9'))
        return -1;
    unsigned __int128 whole = 0, frac = 0, scale = 1;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        whole = whole * 10 + (unsigned)(*p - '0');
        if (whole > UINT64_MAX)
            return -1;
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        for (unsigned nd = 0; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < SIZE_MAX_FRAC_DIGITS) {
                frac = frac * 10 + (unsigned)(*p - '0');
                scale *= 10;
            }
    }
    uint64_t mult = size_unit(p);
    if (mult == 0)
        return -1;
    unsigned __int128 v = whole * mult + (frac * mult + scale / 2) / scale;
    if (v > UINT64_MAX)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

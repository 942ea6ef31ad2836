/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_tokenizer.c — libFuzzer target for the tokenizer.json vocabulary reader: any input is
 * refused with a format error naming the label, or gives a vocabulary whose every token is
 * found again by its text, with that text.
 */
#include "format/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                  \
    do {                                                                                          \
        if (!(c))                                                                                 \
            abort();                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pcbm_vocab v;
    pcbm_error err;
    pcbm_error_clear(&err);
    pcbm_status st = pcbm_vocab_parse((const char *)data, size, "fuzz.json", &v, &err);
    if (st != PCBM_OK) {
        CHECK((st == PCBM_ERR_FORMAT || st == PCBM_ERR_NOMEM) && err.status == st);
        CHECK(strncmp(err.msg, "fuzz.json", 9) == 0 || st == PCBM_ERR_NOMEM);
        return 0;
    }
    size_t seen = 0;
    for (uint32_t id = 0; id < v.nids; id++) {
        size_t n, m;
        const char *t = pcbm_vocab_token(&v, id, &n);
        if (!t)
            continue;
        seen++;
        long j = pcbm_vocab_find(&v, t, n);
        CHECK(j >= 0);
        const char *u = pcbm_vocab_token(&v, (uint32_t)j, &m);
        CHECK(u && m == n && memcmp(u, t, n) == 0);
    }
    CHECK(seen == v.ntokens && seen > 0);
    pcbm_vocab_free(&v);
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_recipe.c — libFuzzer target for the mergekit recipe reader (format/recipe.c): any input
 * is refused with a usage error that names the recipe, or gives merge options with a base, 1 to
 * PCBM_MAX_TASKS tasks and per-tensor settings whose every value is finite for any tensor name
 * and layer position.
 */
#include "pcbmerge.h"

#include <math.h>
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
    static const char *const params[] = {"weight", "density", "gamma", "epsilon", "lambda", "t",
                                         "select_topk", "normalize", "rescale"};
    static const char *const names[] = {"model.embed_tokens.weight", "model.layers.3.mlp.up.weight",
                                        "model.layers.0.self_attn.q_proj.weight", "", "lm_head"};
    pcbm_recipe *r = NULL;
    pcbm_error err;
    memset(&err, 0, sizeof err);
    pcbm_status st = pcbm_recipe_parse((const char *)data, size, "fuzz.yml", &r, &err);
    if (st != PCBM_OK) {
        CHECK((st == PCBM_ERR_USAGE || st == PCBM_ERR_NOMEM) && err.status == st && !r);
        CHECK(strncmp(err.msg, "fuzz.yml", 8) == 0 || st == PCBM_ERR_NOMEM);
        return 0;
    }
    CHECK(r && strlen(pcbm_recipe_text(r)) <= size);
    pcbm_merge_opts o;
    pcbm_merge_opts_init(&o);
    st = pcbm_recipe_merge_opts(r, &o, &err);
    if (st == PCBM_OK) {
        CHECK(o.base && o.tasks && o.ntasks >= 1 && o.ntasks <= PCBM_MAX_TASKS && o.params);
        for (unsigned i = 0; i < o.ntasks; i++)
            CHECK(o.tasks[i] != NULL);
        for (int task = -1; task < (int)o.ntasks; task++)
            for (size_t p = 0; p < sizeof params / sizeof *params; p++)
                for (size_t n = 0; n < sizeof names / sizeof *names; n++)
                    for (double t = 0; t <= 1.0; t += 0.25) {
                        double v;
                        if (pcbm_params_eval(o.params, task, params[p], names[n], t, &v))
                            CHECK(isfinite(v));
                    }
    } else {
        CHECK(st == PCBM_ERR_USAGE);
    }
    pcbm_recipe_free(r);
    return 0;
}

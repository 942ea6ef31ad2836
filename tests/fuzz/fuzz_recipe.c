/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_recipe.c — libFuzzer target for the mergekit recipe reader (format/recipe.c): any input
 * is refused with a usage error that names the recipe, or gives merge options with a base, 1 to
 * PCBM_MAX_TASKS tasks and per-tensor settings whose every value is finite for any tensor name
 * and layer position; its weights scaled (pcbm_recipe_scaled, search --config) read back as the
 * weights times the coefficients.
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
        /* search --config: the scaled recipe parses, with each task's weight times c */
        double c[PCBM_MAX_TASKS];
        for (unsigned i = 0; i < o.ntasks; i++)
            c[i] = 1.0 + 0.25 * (i % 3);
        char *text = NULL;
        pcbm_recipe *s = NULL;
        st = pcbm_recipe_scaled(r, c, o.ntasks, &text, &err);
        CHECK(st == PCBM_OK || st == PCBM_ERR_USAGE || st == PCBM_ERR_NOMEM);
        CHECK((st == PCBM_OK) == (text != NULL));
        CHECK(st == PCBM_OK || !pcbm_recipe_has_weights(r) || st != PCBM_ERR_USAGE ||
              strstr(err.msg, "cannot be scaled"));
        if (st == PCBM_OK && pcbm_recipe_parse(text, strlen(text), "scaled.yml", &s, &err) == PCBM_OK) {
            pcbm_merge_opts so;
            pcbm_merge_opts_init(&so);
            CHECK(pcbm_recipe_merge_opts(s, &so, &err) == PCBM_OK && so.ntasks == o.ntasks);
            for (int task = 0; task < (int)o.ntasks; task++)
                for (size_t n = 0; n < sizeof names / sizeof *names; n++)
                    for (double t = 0; t <= 1.0; t += 0.25) {
                        double v, w;
                        if (pcbm_params_eval(o.params, task, "weight", names[n], t, &v)) {
                            CHECK(pcbm_params_eval(so.params, task, "weight", names[n], t, &w));
                            CHECK(fabs(w - c[task] * v) <= 1e-12 * fabs(c[task] * v) + 1e-300 ||
                                  !isfinite(c[task] * v));
                        }
                    }
        } else if (st == PCBM_OK) { /* a scaled weight that overflows is refused on reading */
            CHECK(strstr(err.msg, "scaled.yml") != NULL);
        }
        pcbm_recipe_free(s);
        free(text);
    } else {
        CHECK(st == PCBM_ERR_USAGE);
    }
    pcbm_recipe_free(r);
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_params.c — cmocka tests of the per-tensor parameters (merge/params.c) and the recipe
 * reader (format/recipe.c): mergekit's evaluate_setting (scalars, gradients interpolated at
 * t·(n−1), lists of non-numbers stepped, filters tried in order, fall-through to the whole
 * merge's setting), the layer position t, pcbm_tparam's lookup order and per-worker cache, and
 * recipes' refusals with their lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "merge/method.h"

#include <math.h>
#include <string.h>

static void add(pcbm_params *p, int task, const char *name, const char *filter,
                const double *v, size_t n, int step)
{
    pcbm_error err;
    assert_int_equal(pcbm_params_add(p, task, name, filter, v, n, step, &err), PCBM_OK);
}

static double eval(const pcbm_params *p, int task, const char *name, const char *tensor, double t)
{
    double v = NAN;
    return pcbm_params_eval(p, task, name, tensor, t, &v) ? v : NAN;
}

static void test_gradient(void **state)
{
    (void)state;
    pcbm_params *p = pcbm_params_new();
    const double g[] = {0, 0.3, 0.7, 1};
    add(p, 0, "weight", NULL, g, 4, 0);
    /* t = 0.5: scaled 1.5 -> 0.5·0.3 + 0.5·0.7 */
    assert_true(eval(p, 0, "weight", "x", 0.5) == (1 - 0.5) * 0.3 + 0.5 * 0.7);
    assert_true(eval(p, 0, "weight", "x", 0.0) == 0.0);
    assert_true(eval(p, 0, "weight", "x", 1.0) == 1.0);
    double t = 2.0 / 5.0, scaled = t * 3; /* layer 2 of 6 */
    size_t i0 = (size_t)scaled;
    assert_true(eval(p, 0, "weight", "x", t) == (1 - (scaled - i0)) * g[i0] + (scaled - i0) * g[i0 + 1]);
    /* a list of non-numbers: element int(t·(n−1)), no interpolation */
    const double b[] = {1, 0, 1};
    add(p, PCBM_PARAMS_ALL, "normalize", NULL, b, 3, 1);
    assert_true(eval(p, -1, "normalize", "x", 0.4) == 1.0);  /* int(0.8) = 0 */
    assert_true(eval(p, -1, "normalize", "x", 0.5) == 0.0);  /* int(1.0) = 1 */
    assert_true(eval(p, -1, "normalize", "x", 0.99) == 0.0); /* int(1.98) = 1 */
    assert_true(eval(p, -1, "normalize", "x", 1.0) == 1.0);
    pcbm_params_free(p);
}

static void test_filters(void **state)
{
    (void)state;
    pcbm_params *p = pcbm_params_new();
    const double a = 0.5, b = 0.2, g[] = {1.0, 3.0}, w = 0.9;
    add(p, 1, "weight", "mlp", &a, 1, 0);
    add(p, 1, "weight", "self_attn", g, 2, 0);
    add(p, PCBM_PARAMS_ALL, "weight", "embed", &w, 1, 0);
    add(p, PCBM_PARAMS_ALL, "weight", "*", &b, 1, 0);
    assert_true(eval(p, 1, "weight", "model.layers.0.mlp.up_proj.weight", 0.3) == 0.5);
    assert_true(eval(p, 1, "weight", "model.layers.0.self_attn.q_proj.weight", 0.5) == 2.0);
    /* task 1's filters do not match: the whole merge's setting, in order */
    assert_true(eval(p, 1, "weight", "model.embed_tokens.weight", 0) == 0.9);
    assert_true(eval(p, 1, "weight", "model.norm.weight", 0) == 0.2);
    /* task 0 has none of its own */
    assert_true(eval(p, 0, "weight", "model.layers.0.mlp.up_proj.weight", 0) == 0.2);
    /* nothing for density */
    assert_true(isnan(eval(p, 0, "density", "x", 0)));
    assert_true(pcbm_params_has(p, 0, PCBM_P_WEIGHT) && !pcbm_params_has(p, 0, PCBM_P_DENSITY));
    assert_true(pcbm_params_varies(p, PCBM_P_WEIGHT) && !pcbm_params_varies(p, PCBM_P_LAMBDA));
    pcbm_params_free(p);
}

static void test_refusals(void **state)
{
    (void)state;
    pcbm_params *p = pcbm_params_new();
    pcbm_error err;
    const double v[] = {1, NAN};
    assert_int_equal(pcbm_params_add(p, 0, "wieght", NULL, v, 1, 0, &err), PCBM_ERR_USAGE);
    assert_int_equal(pcbm_params_add(p, 0, "lambda", NULL, v, 1, 0, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "whole merge"));
    assert_int_equal(pcbm_params_add(p, 0, "weight", NULL, v, 0, 0, &err), PCBM_ERR_USAGE);
    assert_int_equal(pcbm_params_add(p, 0, "weight", NULL, v, 2, 0, &err), PCBM_ERR_USAGE);
    assert_int_equal(pcbm_params_add(p, PCBM_MAX_TASKS, "weight", NULL, v, 1, 0, &err),
                     PCBM_ERR_USAGE);
    pcbm_params_free(p);
}

static void test_layer_t(void **state)
{
    (void)state;
    assert_int_equal(pcbm_layer_index("model.layers.12.mlp.down_proj.weight"), 12);
    assert_int_equal(pcbm_layer_index("transformer.h.3.attn.c_attn.weight"), 3);
    assert_int_equal(pcbm_layer_index("blocks.7.ffn.weight"), 7);
    assert_int_equal(pcbm_layer_index("model.embed_tokens.weight"), -1);
    assert_int_equal(pcbm_layer_index("model.layers.x.weight"), -1);
    assert_int_equal(pcbm_layer_index("model.sublayers.2.weight"), -1);
    assert_true(pcbm_layer_t("model.layers.2.mlp.weight", 6) == 2.0 / 5.0);
    assert_true(pcbm_layer_t("model.layers.5.mlp.weight", 6) == 1.0);
    assert_true(pcbm_layer_t("model.layers.0.mlp.weight", 1) == 1.0); /* L = 1: t = 1 */
    assert_true(pcbm_layer_t("lm_head.weight", 6) == 0.0);
    assert_true(pcbm_layer_t("model.norm.weight", 6) == 0.0);
}

/* pcbm_tparam: the task's, the merge's, the options'; the cache follows the tensor and merge. */
static void test_tparam(void **state)
{
    (void)state;
    pcbm_tlayout t[3] = {{.name = "model.embed_tokens.weight"},
                         {.name = "model.layers.0.mlp.weight"},
                         {.name = "model.layers.3.mlp.weight"}};
    pcbm_layout lay = {.t = t, .nt = 3};
    pcbm_merge_opts o;
    pcbm_merge_opts_init(&o);
    o.method = PCBM_METHOD_TASK_ARITHMETIC;
    o.ntasks = 2;
    o.lambda = 0.25;
    pcbm_params *p = pcbm_params_new();
    const double g[] = {0, 1}, l = 2.0;
    add(p, 0, "weight", NULL, g, 2, 0);
    add(p, PCBM_PARAMS_ALL, "lambda", "mlp", &l, 1, 0);
    o.params = p;
    pcbm_mctx mc = {.o = &o, .layout = &lay, .ntasks = 2, .nlayers = 4, .params_gen = 1000};
    assert_true(pcbm_tparam(&mc, 0, 0, PCBM_P_WEIGHT) == 0.0);
    assert_true(pcbm_tparam(&mc, 2, 0, PCBM_P_WEIGHT) == 1.0);
    assert_true(pcbm_tparam(&mc, 1, 0, PCBM_P_WEIGHT) == 0.0);
    assert_true(pcbm_tparam(&mc, 1, 1, PCBM_P_WEIGHT) == 1.0);   /* the options' (no weights) */
    assert_true(pcbm_tparam(&mc, 1, 0, PCBM_P_LAMBDA) == 2.0);
    assert_true(pcbm_tparam(&mc, 0, 0, PCBM_P_LAMBDA) == 0.25);  /* filter misses: options' */
    assert_true(pcbm_tparam(&mc, 0, 1, PCBM_P_NORMALIZE) == 0.0);
    /* another merge (generation) with other settings on the same tensor index */
    pcbm_params *q = pcbm_params_new();
    const double w = 0.75;
    add(q, 0, "weight", NULL, &w, 1, 0);
    o.params = q;
    mc.params_gen = 1001;
    assert_true(pcbm_tparam(&mc, 1, 0, PCBM_P_WEIGHT) == 0.75);
    /* no params: the options exactly */
    o.params = NULL;
    assert_true(pcbm_tparam(&mc, 1, 0, PCBM_P_WEIGHT) == 1.0);
    assert_true(pcbm_tparam(&mc, 1, 0, PCBM_P_LAMBDA) == 0.25);
    pcbm_params_free(p);
    pcbm_params_free(q);
}

static pcbm_status parse(const char *text, pcbm_recipe **r, pcbm_error *err)
{
    return pcbm_recipe_parse(text, strlen(text), "r.yml", r, err);
}

static void expect_refusal(const char *text, const char *msg)
{
    pcbm_recipe *r = NULL;
    pcbm_error err;
    memset(&err, 0, sizeof err);
    assert_int_equal(parse(text, &r, &err), PCBM_ERR_USAGE);
    assert_null(r);
    if (!strstr(err.msg, msg))
        fail_msg("'%s' does not say '%s'", err.msg, msg);
}

/* pcbm_recipe_scaled (search --config): every task's weight setting times c_i, the slice's and
 * the recipe's folded into the model's own; the text parses into those settings. */
static void test_recipe_scaled(void **state)
{
    (void)state;
    pcbm_recipe *r = NULL, *s = NULL;
    pcbm_error err;
    const char *text = "merge_method: ties\n"
                       "base_model: B\n"
                       "models:\n"
                       "  - model: B\n"
                       "  - model: T1\n"
                       "    parameters: &p\n"
                       "      weight: [0.2, 1]\n"
                       "      density: 0.5\n"
                       "  - model: T2\n"
                       "    parameters:\n"
                       "      weight: [{filter: mlp, value: 0.5}]\n"
                       "  - model: T3\n"
                       "    parameters: *p\n"
                       "parameters: {weight: 0.25, normalize: true}\n";
    const double c[3] = {2.0, 0.1, 3.0};
    char *out = NULL;
    assert_int_equal(parse(text, &r, &err), PCBM_OK);
    assert_true(pcbm_recipe_has_weights(r));
    assert_int_equal(pcbm_recipe_scaled(r, c, 2, &out, &err), PCBM_ERR_USAGE); /* count */
    assert_int_equal(pcbm_recipe_scaled(r, c, 3, &out, &err), PCBM_OK);
    assert_int_equal(parse(out, &s, &err), PCBM_OK);
    pcbm_merge_opts a, b;
    pcbm_merge_opts_init(&a);
    pcbm_merge_opts_init(&b);
    assert_int_equal(pcbm_recipe_merge_opts(r, &a, &err), PCBM_OK);
    assert_int_equal(pcbm_recipe_merge_opts(s, &b, &err), PCBM_OK);
    assert_int_equal(b.ntasks, 3);
    const char *names[] = {"model.layers.0.mlp.w", "model.layers.3.self_attn.w", "lm_head.weight"};
    for (unsigned i = 0; i < 3; i++)
        for (size_t k = 0; k < 3; k++)
            for (double t = 0; t <= 1.0; t += 0.25) {
                double x = eval(a.params, (int)i, "weight", names[k], t);
                double y = eval(b.params, (int)i, "weight", names[k], t);
                if (!(fabs(y - c[i] * x) <= 1e-15 * fabs(c[i] * x)))
                    fail_msg("task %u %s t=%g: %.17g, want %.17g", i, names[k], t, y, c[i] * x);
                double da = eval(a.params, (int)i, "density", names[k], t);
                double db = eval(b.params, (int)i, "density", names[k], t);
                assert_true(da == db || (isnan(da) && isnan(db)));
            }
    /* the whole merge's weight is every task's own now */
    assert_false(pcbm_params_eval(b.params, -1, "weight", "x", 0, &(double){0}));
    assert_true(eval(b.params, -1, "normalize", "x", 0) == 1.0);
    free(out);
    pcbm_recipe_free(s);
    pcbm_recipe_free(r);

    /* pcb: the weight scales λ; a model without one gets c_i */
    assert_int_equal(parse("merge_method: pcb\nbase_model: B\nmodels:\n  - model: T1\n"
                           "    parameters: {weight: 0.5}\n  - model: T2\nparameters: "
                           "{lambda: 0.8}\n", &r, &err), PCBM_OK);
    assert_int_equal(pcbm_recipe_merge_opts(r, &a, &err), PCBM_OK);
    assert_true(a.lambdas && a.lambdas[0] == 0.8 * 0.5 && a.lambdas[1] == 0.8);
    assert_int_equal(pcbm_recipe_scaled(r, c, 2, &out, &err), PCBM_OK);
    assert_int_equal(parse(out, &s, &err), PCBM_OK);
    assert_int_equal(pcbm_recipe_merge_opts(s, &b, &err), PCBM_OK);
    assert_true(b.lambdas[0] == 0.8 * (0.5 * 2.0) && b.lambdas[1] == 0.8 * 0.1);
    free(out);
    pcbm_recipe_free(s);
    pcbm_recipe_free(r);

    /* slerp has no weights; a boolean weight cannot be scaled */
    assert_int_equal(parse("merge_method: slerp\nbase_model: B\nmodels: [{model: A}]\n"
                           "parameters: {t: 0.5}\n", &r, &err), PCBM_OK);
    assert_false(pcbm_recipe_has_weights(r));
    assert_int_equal(pcbm_recipe_scaled(r, c, 1, &out, &err), PCBM_ERR_USAGE);
    assert_null(out);
    pcbm_recipe_free(r);
    assert_int_equal(parse("merge_method: linear\nmodels: [{model: A, parameters: {weight: true}}, "
                           "{model: C, parameters: {weight: 1}}]\n", &r, &err), PCBM_OK);
    assert_int_equal(pcbm_recipe_scaled(r, c, 2, &out, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "model A"));
    pcbm_recipe_free(r);
}

static void test_recipe(void **state)
{
    (void)state;
    pcbm_recipe *r = NULL;
    pcbm_error err;
    const char *ok = "merge_method: task_arithmetic\n"
                     "base_model: B\n"
                     "models:\n"
                     "  - model: B\n"
                     "  - model: T1\n"
                     "    parameters:\n"
                     "      weight: [0, 1]\n"
                     "  - model: T2\n"
                     "    parameters:\n"
                     "      weight: [{filter: mlp, value: 0.5}, {value: 0.25}]\n"
                     "parameters: {lambda: 0.5, normalize: yes, int8_mask: true}\n"
                     "out_dtype: bfloat16\n"
                     "dtype: float16\n";
    assert_int_equal(parse(ok, &r, &err), PCBM_OK);
    pcbm_merge_opts o;
    pcbm_merge_opts_init(&o);
    assert_int_equal(pcbm_recipe_merge_opts(r, &o, &err), PCBM_OK);
    assert_string_equal(o.base, "B");
    assert_int_equal(o.ntasks, 2);
    assert_string_equal(o.tasks[0], "T1");
    assert_string_equal(o.tasks[1], "T2");
    assert_int_equal(o.method, PCBM_METHOD_TASK_ARITHMETIC);
    assert_int_equal(o.semantics, PCBM_SEMANTICS_MERGEKIT);
    assert_int_equal(o.scope, PCBM_SCOPE_TENSOR);
    assert_int_equal(o.out_dtype, PCBM_DT_BF16);
    assert_true(o.lambda == 0.5 && o.density == 1.0);
    assert_true(eval(o.params, 1, "weight", "a.mlp.b", 0) == 0.5);
    assert_true(eval(o.params, 1, "weight", "a.attn.b", 0) == 0.25);
    assert_true(eval(o.params, -1, "normalize", "x", 0) == 1.0);
    assert_string_equal(o.recipe, ok);
    pcbm_recipe_free(r);

    /* linear: every model, the first the layout's base */
    assert_int_equal(parse("merge_method: linear\nmodels:\n  - model: A\n    parameters: "
                           "{weight: 1}\n  - model: C\n    parameters: {weight: 2}\n", &r, &err),
                     PCBM_OK);
    pcbm_merge_opts_init(&o);
    assert_int_equal(pcbm_recipe_merge_opts(r, &o, &err), PCBM_OK);
    assert_string_equal(o.base, "A");
    assert_int_equal(o.ntasks, 2);
    assert_string_equal(o.tasks[0], "A");
    pcbm_recipe_free(r);

    /* mergekit's defaults of the switches: dare_ties does not normalize there */
    assert_int_equal(parse("merge_method: dare_ties\nbase_model: B\nmodels: [{model: A, "
                           "parameters: {weight: 1, density: 0.5}}]\n", &r, &err), PCBM_OK);
    pcbm_merge_opts_init(&o);
    assert_int_equal(pcbm_recipe_merge_opts(r, &o, &err), PCBM_OK);
    assert_int_equal(o.normalize, PCBM_OFF);
    assert_int_equal(o.rescale, PCBM_ON);
    assert_true(o.density == 1.0 && eval(o.params, 0, "density", "x", 0) == 0.5);
    pcbm_recipe_free(r);

    expect_refusal("merge_method: linear\nmodelz: []\n", "line 2: unknown key 'modelz'");
    expect_refusal("merge_method: nope\nmodels: [{model: A}]\n", "unknown merge_method 'nope'");
    expect_refusal("merge_method: linear\nmodels: [{model: A, parameters: {weight: abc}}]\n",
                   "parameter weight is 'abc'");
    expect_refusal("merge_method: task_arithmetic\nbase_model: B\nmodels:\n  - model: A\n"
                   "    parameters: {lambda: 2, weight: 1}\n", "a parameter of the whole merge");
    expect_refusal("merge_method: task_arithmetic\nbase_model: B\nmodels: [{model: A}]\n",
                   "model A has no weight");
    expect_refusal("merge_method: linear\nbase_model: B\nmodels: [{model: A, parameters: {weight: 1}}]\n",
                   "base_model B is not among them");
    expect_refusal("merge_method: linear\nmodels: [{model: A}]\nslices: []\n",
                   "exactly one of 'models' and 'slices'");
    expect_refusal("- 1\n- 2\n", "a recipe is a YAML mapping");
    expect_refusal("merge_method: linear\nmodels: [{model: A, parameters: {weight: 1, weight: 2}}]\n",
                   "'weight' is given twice");
    expect_refusal("merge_method: task_arithmetic\nbase_model: B\nslices:\n  - sources:\n"
                   "      - {model: A, layer_range: [0, 2], parameters: {weight: 1}}\n"
                   "      - {model: C, parameters: {weight: 1}}\n", "without 'layer_range'");
    /* an empty parameter name (a fuzzer's find: it looped in the name lookup) */
    expect_refusal("merge_method: linear\nmodels: [{model: A, parameters: {\"\": 1}}]\n",
                   "unknown parameter ''");
    expect_refusal("", "the recipe is empty");
    expect_refusal("merge_method: linear\nmodels: [{model: A, parameters: {weight: [1, [2]]}}]\n",
                   "a gradient's values are numbers");
    expect_refusal("merge_method: task_arithmetic\nbase_model: B\ntokenizer:\n  source: union\n"
                   "  tokens: {x: {source: A}}\n"
                   "models: [{model: A, parameters: {weight: 1}}]\n",
                   "tokenizer.tokens is not supported yet");
    expect_refusal("merge_method: task_arithmetic\nbase_model: B\ntokenizer_source: C\n"
                   "models: [{model: A, parameters: {weight: 1}}]\n",
                   "tokenizer source 'C' is none of the recipe's models");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_layer_t),
        cmocka_unit_test(test_tparam),
        cmocka_unit_test(test_recipe),
        cmocka_unit_test(test_recipe_scaled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

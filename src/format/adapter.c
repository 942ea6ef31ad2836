/* SPDX-License-Identifier: Apache-2.0 */
/*
 * adapter.c — adapter_config.json of a PEFT LoRA adapter: peft_type, r, lora_alpha, use_rslora,
 * fan_in_fan_out, rank_pattern / alpha_pattern, target_modules and base_model_name_or_path.
 * Adapters whose ΔW is not scale · B · A (DoRA, LoHa, LoKr, IA³, ...) are refused by name.
 */
#include "adapter.h"
#include "st_internal.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

static bool regular_in(const char *dir, const char *name)
{
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

bool pcbm_adapter_present(const char *dir)
{
    return regular_in(dir, PCBM_ADAPTER_CONFIG) || regular_in(dir, PCBM_ADAPTER_WEIGHTS);
}

void pcbm_adapter_free(pcbm_adapter *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nrank; i++)
        free(a->rank_pat[i].key);
    for (size_t i = 0; i < a->nalpha; i++)
        free(a->alpha_pat[i].key);
    free(a->rank_pat);
    free(a->alpha_pat);
    free(a->config_path);
    free(a->base_model);
    free(a->targets);
    free(a);
}

/* PEFT matches a rank_pattern / alpha_pattern key as a Python regular expression against the
 * module name: `(.*\.)?(KEY)$`. The POSIX extended expression of that match, with Python's
 * shorthands rewritten (\d \w \s and their negations, (?: groups, lazy quantifiers, escaped
 * punctuation in brackets); NULL with the construct in *bad when the key uses one POSIX lacks
 * (look-arounds, named groups, \b, backreferences). Freed by the caller. */
static char *pattern_regex(const char *key, const char **bad)
{
    static const struct { char c; const char *out, *in_bracket; } shorthand[] = {
        {'d', "[0-9]", "0-9"}, {'D', "[^0-9]", NULL}, {'w', "[A-Za-z0-9_]", "A-Za-z0-9_"},
        {'W', "[^A-Za-z0-9_]", NULL}, {'s', "[[:space:]]", "[:space:]"},
        {'S', "[^[:space:]]", NULL},
    };
    size_t n = strlen(key), cap = 16 + 16 * n;
    char *rx = pcbm_malloc(cap), *o = rx;
    if (!rx)
        return NULL;
    o += sprintf(o, "^(.*\\.)?(");
    bool bracket = false;
    *bad = NULL;
    for (size_t i = 0; i < n && !*bad; i++) {
        char c = key[i];
        if (c == '\\' && i + 1 < n) {
            char e = key[++i];
            size_t k = 0;
            while (k < sizeof shorthand / sizeof shorthand[0] && shorthand[k].c != e)
                k++;
            if (k < sizeof shorthand / sizeof shorthand[0]) {
                const char *s = bracket ? shorthand[k].in_bracket : shorthand[k].out;
                if (!s)
                    *bad = "a negated class (\\D \\W \\S) inside brackets";
                else
                    o += sprintf(o, "%s", s);
            } else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
                *bad = "an escape (\\b, \\A, a backreference, ...) POSIX expressions lack";
            } else if (bracket) {
                *o++ = e; /* in brackets a backslash is literal in POSIX: the character alone */
            } else {
                *o++ = '\\', *o++ = e;
            }
            continue;
        }
        if (!bracket && c == '(' && key[i + 1] == '?') {
            if (key[i + 2] != ':') {
                *bad = "a (?...) group other than (?:...) (look-around, named group, flags)";
                continue;
            }
            *o++ = '(';
            i += 2;
            continue;
        }
        if (!bracket && c == '?' && i > 0 && strchr("*+?}", key[i - 1]) &&
            !(i >= 2 && key[i - 2] == '\\')) {
            continue; /* lazy quantifier: whether a match exists does not depend on it */
        }
        if (c == '[' && !bracket) {
            bracket = true;
            *o++ = c;
            if (key[i + 1] == '^')
                *o++ = key[++i];
            if (key[i + 1] == ']')
                *o++ = key[++i];
            continue;
        }
        if (c == ']' && bracket)
            bracket = false;
        *o++ = c;
    }
    o += sprintf(o, ")$");
    if (*bad) {
        free(rx);
        return NULL;
    }
    return rx;
}

static pcbm_status bad_field(const pcbm_adapter *a, const char *field, const char *want,
                             const json_t *v, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: `%s` must be %s, found %s; is this a PEFT LoRA "
                     "adapter config?", a->config_path, field, want, pcbm_st_json_kind(v));
}

static bool json_true_field(const json_t *root, const char *key)
{
    return json_is_true(json_object_get(root, key));
}

/* rank_pattern / alpha_pattern: an object of module name (or regex) -> number, in file order. */
static pcbm_status load_pattern(pcbm_adapter *a, const json_t *root, const char *field,
                                pcbm_adapter_pattern **out, size_t *n, pcbm_error *err)
{
    const json_t *o = json_object_get(root, field);
    *n = 0;
    if (!o || json_is_null(o))
        return PCBM_OK;
    if (!json_is_object(o))
        return bad_field(a, field, "an object", o, err);
    *out = pcbm_calloc(json_object_size(o) + 1, sizeof **out);
    if (!*out)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", a->config_path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        if (!json_is_number(v) || json_number_value(v) <= 0)
            return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: `%s` entry '%s' must be a positive "
                             "number, found %s", a->config_path, field, key,
                             pcbm_st_json_kind(v));
        regex_t re;
        const char *bad = NULL;
        char *rx = pattern_regex(key, &bad);
        if (!rx && !bad)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", a->config_path);
        int rc = rx ? regcomp(&re, rx, REG_EXTENDED | REG_NOSUB) : -1;
        free(rx);
        if (rc != 0)
            return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: `%s` key '%s' is not a regular "
                             "expression pcbmerge can match%s%s: write it with plain names, "
                             "alternatives (a|b), classes and \\d", a->config_path, field, key,
                             bad ? ": it uses " : "", bad ? bad : "");
        regfree(&re);
        (*out)[*n].key = pcbm_strdup(key);
        (*out)[*n].value = json_number_value(v);
        if (!(*out)[(*n)++].key)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", a->config_path);
    }
    return PCBM_OK;
}

static const char *str_or_empty(const json_t *v)
{
    const char *s = json_string_value(v);
    return s ? s : "";
}

static char *targets_string(const json_t *t)
{
    if (json_is_string(t))
        return pcbm_strdup(json_string_value(t));
    size_t len = 1;
    for (size_t i = 0; i < json_array_size(t); i++)
        len += strlen(str_or_empty(json_array_get(t, i))) + 1;
    char *s = pcbm_calloc(1, len);
    for (size_t i = 0; s && i < json_array_size(t); i++) {
        if (i)
            strcat(s, ",");
        strcat(s, str_or_empty(json_array_get(t, i)));
    }
    return s;
}

/* Options that change what ΔW is, or add tensors that are not B · A: refused by name. */
static pcbm_status check_variant(const pcbm_adapter *a, const json_t *root, pcbm_error *err)
{
    static const char *const variants[][2] = {
        {"use_dora", "DoRA (use_dora: a magnitude vector rescales every column of W + ΔW)"},
        {"lora_bias", "lora_bias (lora_B carries a bias)"},
        {"use_qalora", "QALoRA (use_qalora)"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        if (json_true_field(root, variants[i][0]))
            return pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "%s: %s is not supported: only plain "
                             "LoRA adapters (ΔW = scale · B · A) are merged; merge this adapter "
                             "into its base with PEFT's merge_and_unload() and give the full "
                             "model as a task", a->config_path, variants[i][1]);
    const json_t *lr = json_object_get(root, "layer_replication");
    if (lr && !json_is_null(lr))
        return pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "%s: layer_replication is not supported "
                         "(the adapter's layers are not the base's); merge it into its base "
                         "with PEFT's merge_and_unload() and give the full model as a task",
                         a->config_path);
    return PCBM_OK;
}

static pcbm_status parse_config(pcbm_adapter *a, const json_t *root, pcbm_error *err)
{
    if (!json_is_object(root))
        return bad_field(a, "(top level)", "an object", root, err);
    const json_t *pt = json_object_get(root, "peft_type");
    if (!json_is_string(pt))
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: no `peft_type` string: not a PEFT adapter "
                         "config", a->config_path);
    if (strcmp(json_string_value(pt), "LORA") != 0)
        return pcbm_fail(err, PCBM_ERR_UNSUPPORTED, "%s: peft_type %s is not supported: only "
                         "LORA adapters are merged (LoHa, LoKr, IA3, prompt tuning and the "
                         "other PEFT methods are not); merge the adapter into its base with "
                         "PEFT's merge_and_unload() and give the full model as a task",
                         a->config_path, json_string_value(pt));
    pcbm_status st = check_variant(a, root, err);
    if (st != PCBM_OK)
        return st;
    const json_t *r = json_object_get(root, "r"), *al = json_object_get(root, "lora_alpha");
    if (!json_is_integer(r) || json_integer_value(r) <= 0 || json_integer_value(r) > 1 << 20)
        return bad_field(a, "r", "a positive integer", r, err);
    a->r = (unsigned)json_integer_value(r);
    if (al && !json_is_number(al))
        return bad_field(a, "lora_alpha", "a number", al, err);
    a->alpha = al ? json_number_value(al) : 8; /* PEFT's default */
    a->rslora = json_true_field(root, "use_rslora");
    a->fan_in_fan_out = json_true_field(root, "fan_in_fan_out");
    const json_t *bm = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(bm) && !(a->base_model = pcbm_strdup(json_string_value(bm))))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", a->config_path);
    const json_t *tm = json_object_get(root, "target_modules");
    if ((json_is_string(tm) || json_is_array(tm)) && !(a->targets = targets_string(tm)))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", a->config_path);
    if ((st = load_pattern(a, root, "rank_pattern", &a->rank_pat, &a->nrank, err)) != PCBM_OK)
        return st;
    return load_pattern(a, root, "alpha_pattern", &a->alpha_pat, &a->nalpha, err);
}

pcbm_status pcbm_adapter_load_config(const char *dir, pcbm_adapter **out, pcbm_error *err)
{
    *out = NULL;
    pcbm_adapter *a = pcbm_calloc(1, sizeof *a);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, PCBM_ADAPTER_CONFIG);
    if (!a || !(a->config_path = pcbm_strdup(path))) {
        free(a);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    if (!regular_in(dir, PCBM_ADAPTER_CONFIG)) {
        pcbm_adapter_free(a);
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s/%s has no %s beside it: an adapter's rank, "
                         "alpha and targets are in that file; copy it from where the adapter "
                         "was trained or downloaded", dir, PCBM_ADAPTER_WEIGHTS,
                         PCBM_ADAPTER_CONFIG);
    }
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    pcbm_status st;
    if (!root) {
        st = pcbm_fail(err, PCBM_ERR_FORMAT, "%s: not valid JSON (line %d: %s)", path, je.line,
                       je.text);
    } else {
        st = parse_config(a, root, err);
        char *text = json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT);
        a->config_hash = text ? XXH3_64bits(text, strlen(text)) : 0;
        free(text);
        json_decref(root);
    }
    if (st != PCBM_OK) {
        pcbm_adapter_free(a);
        return st;
    }
    *out = a;
    return PCBM_OK;
}

static bool pattern_match(const char *key, const char *module)
{
    regex_t re;
    const char *bad;
    char *rx = pattern_regex(key, &bad);
    if (!rx)
        return false;
    bool ok = regcomp(&re, rx, REG_EXTENDED | REG_NOSUB) == 0;
    free(rx);
    if (!ok)
        return false;
    ok = regexec(&re, module, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

void pcbm_adapter_rank_alpha(const pcbm_adapter *a, const char *module, unsigned *r, double *alpha)
{
    *r = a->r;
    *alpha = a->alpha;
    for (size_t i = 0; i < a->nrank; i++)
        if (pattern_match(a->rank_pat[i].key, module)) {
            *r = (unsigned)a->rank_pat[i].value;
            break;
        }
    for (size_t i = 0; i < a->nalpha; i++)
        if (pattern_match(a->alpha_pat[i].key, module)) {
            *alpha = a->alpha_pat[i].value;
            break;
        }
}

double pcbm_adapter_scale(const pcbm_adapter *a, unsigned r, double alpha)
{
    return a->rslora ? alpha / sqrt((double)r) : alpha / (double)r;
}

pcbm_status pcbm_model_adapter(const pcbm_model *m, pcbm_adapter_info *out)
{
    if (!m || !m->adapter || !out)
        return PCBM_ERR_USAGE;
    const pcbm_adapter *a = m->adapter;
    *out = (pcbm_adapter_info){.r = a->r, .lora_alpha = a->alpha,
                               .scale = pcbm_adapter_scale(a, a->r, a->alpha),
                               .use_rslora = a->rslora, .fan_in_fan_out = a->fan_in_fan_out,
                               .rank_patterns = a->nrank, .alpha_patterns = a->nalpha,
                               .target_modules = a->targets, .base_model = a->base_model,
                               .config_path = a->config_path};
    for (size_t i = 0; i < m->ntensors; i++) {
        const pcbm_st_tensor *t = &m->tensors[i];
        size_t n = strlen(t->name);
        bool a_w = n > 14 && !strcmp(t->name + n - 14, ".lora_A.weight");
        bool a_e = n > 17 && !strcmp(t->name + n - 17, ".lora_embedding_A");
        if (a_w || a_e) {
            unsigned r = t->ndim ? (unsigned)t->shape[0] : 0;
            out->lora_modules++;
            out->min_rank = out->min_rank && out->min_rank < r ? out->min_rank : r;
            out->max_rank = out->max_rank > r ? out->max_rank : r;
        } else if (!strstr(t->name, ".lora_")) {
            out->saved_tensors++;
        }
    }
    return PCBM_OK;
}

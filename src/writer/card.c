/* SPDX-License-Identifier: Apache-2.0 */
/*
 * card.c — the model card (README.md) written beside a merged model: Hugging Face model-card
 * front matter (base_model, tags, library_name) and a body that says how the model was made —
 * method and parameters, every input with its identity, the command, and the run's summary
 * (taken from merge_report.json, so the card and the report never disagree).
 */
#include "card.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text {
    char *s;
    size_t n, cap;
    bool oom;
} text;

static void add(text *t, const char *fmt, ...) PCBM_PRINTF(2, 3);
static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || t->oom)
        return;
    if (t->n + (size_t)k + 1 > t->cap) {
        size_t cap = (t->n + (size_t)k + 1) * 2;
        char *s = pcbm_realloc(t->s, cap);
        if (!s) {
            t->oom = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
    va_end(ap);
    t->n += (size_t)k;
}

/* The hub id a model argument names, when it names one: ORG/NAME[@REV] as given, or the
 * repository of a cache path (.../models--ORG--NAME/snapshots/...). NULL otherwise. */
static char *hub_id(const char *arg)
{
    const char *m = strstr(arg, "models--");
    if (m) {
        const char *org = m + 8, *sep = strstr(org, "--");
        const char *end = sep ? strchr(sep + 2, '/') : NULL;
        size_t n = end ? (size_t)(end - org) : sep ? strlen(org) : 0;
        if (sep && n > (size_t)(sep - org) + 2) {
            char *id = pcbm_malloc(n + 1);
            if (!id)
                return NULL;
            snprintf(id, n + 1, "%.*s/%s", (int)(sep - org), org, sep + 2);
            id[n - 1] = '\0'; /* the "--" became one "/" */
            return id;
        }
    }
    if (arg[0] == '/' || arg[0] == '.' || !strchr(arg, '/') || strchr(strchr(arg, '/') + 1, '/'))
        return NULL;
    char *id = pcbm_strdup(arg);
    if (id && strchr(id, '@'))
        *strchr(id, '@') = '\0';
    return id;
}

/* YAML double-quoted scalar (front matter): backslash and quote escaped, control bytes dropped. */
static void add_yaml_str(text *t, const char *s)
{
    add(t, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            add(t, "\\%c", *s);
        else if ((unsigned char)*s >= 0x20)
            add(t, "%c", *s);
    }
    add(t, "\"");
}

static void add_params(text *t, const json_t *params)
{
    const char *key;
    json_t *v;
    add(t, "| parameter | value |\n|---|---|\n");
    json_object_foreach((json_t *)params, key, v) {
        char *val = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(10));
        add(t, "| `%s` | `%s` |\n", key, val ? val : "?");
        free(val);
    }
}

static void add_summary(text *t, const json_t *rep)
{
    add(t, "\n## Summary\n\n");
    add(t, "- %lld tensors merged (%lld elements), %lld copied from the base\n",
        (long long)json_integer_value(json_object_get(rep, "tensors_merged")),
        (long long)json_integer_value(json_object_get(rep, "d")),
        (long long)json_integer_value(json_object_get(rep, "tensors_copied")));
    json_int_t npart = json_integer_value(json_object_get(rep, "tensors_partial"));
    if (npart > 0) /* tensors some task models lack: those tasks took no part in them */
        add(t, "- %lld merged tensors are missing from some task models, which took no part "
            "in them (merge_report.json \"partial\")\n", (long long)npart);
    const char *how = json_string_value(json_object_get(rep, "stats"));
    if (how && strcmp(how, "none") != 0)
        add(t, "- statistics: %s\n", how);
    /* the report's kept counts and timings describe one run (a resumed run counts only what it
     * wrote): the card keeps to what the inputs and parameters decide */
    size_t i;
    json_t *task, *params = json_object_get(rep, "params");
    bool weights = json_object_get(params, "weights") != NULL;
    bool densities = json_object_get(params, "densities") != NULL;
    json_array_foreach(json_object_get(rep, "tasks"), i, task) {
        json_t *thr = json_object_get(task, "threshold");
        add(t, "- task %zu: λ %.6g", i + 1, json_real_value(json_object_get(task, "lambda")));
        if (weights && json_is_number(json_object_get(task, "weight")))
            add(t, ", weight %.6g", json_number_value(json_object_get(task, "weight")));
        if (densities && json_is_number(json_object_get(task, "density")))
            add(t, ", density %.6g", json_number_value(json_object_get(task, "density")));
        if (json_is_number(thr))
            add(t, ", threshold %.6g", json_number_value(thr));
        add(t, "\n");
    }
}

char *pcbm_model_card(const pcbm_merge_opts *o, const char *report_json, const uint64_t *ids)
{
    json_t *rep = json_loads(report_json, 0, NULL);
    if (!rep)
        return NULL;
    text t = {0};
    char *base_id = hub_id(o->base);
    add(&t, "---\nbase_model: ");
    add_yaml_str(&t, base_id ? base_id : o->base);
    add(&t, "\ntags:\n- merge\n- pcbmerge\nlibrary_name: transformers\n---\n\n");
    add(&t, "# Merged model\n\nMade with pcbmerge %s from %u fine-tune(s) of one base with the "
        "`%s` method.\n\n## Method and parameters\n\n", PCBM_VERSION_STRING, o->ntasks,
        pcbm_method_name(o->method));
    add_params(&t, json_object_get(rep, "params"));
    add(&t, "\n## Inputs\n\n| role | model | identity |\n|---|---|---|\n");
    add(&t, "| base | `%s` | `%016llx` |\n", o->base, (unsigned long long)ids[0]);
    for (unsigned i = 0; i < o->ntasks; i++)
        add(&t, "| task %u | `%s` | `%016llx` |\n", i + 1, o->tasks[i],
            (unsigned long long)ids[i + 1]);
    add(&t, "\nThe identity hashes each model's headers, file sizes and sampled data "
        "(`pcbmerge verify` checks the output files against `pcbmerge.manifest.json`).\n");
    if (o->recipe && o->recipe[0])
        add(&t, "\n## Recipe\n\n```yaml\n%s%s```\n", o->recipe,
            o->recipe[strlen(o->recipe) - 1] == '\n' ? "" : "\n");
    if (o->command && o->command[0])
        add(&t, "\n## Command\n\n```sh\n%s\n```\n", o->command);
    add_summary(&t, rep);
    free(base_id);
    json_decref(rep);
    if (t.oom) {
        free(t.s);
        return NULL;
    }
    return t.s;
}

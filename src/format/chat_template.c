/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chat_template.c — the output's chat template, as mergekit's `chat_template` sets it: "auto" (the
 * template most of the models share), or a Jinja template's text. A model's template is read
 * from its tokenizer_config.json (`chat_template`: a string, or a list of {name, template} whose
 * "default" entry counts), else chat_template.jinja, else chat_template.json; compared with
 * surrounding white space trimmed, as mergekit does. The chosen text goes into the output's
 * tokenizer_config.json, and into its chat_template.jinja / chat_template.json when the base's
 * were copied (those take precedence when a tokenizer is loaded).
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TEMPLATE_MAX (1u << 20) /* a chat template file larger than 1 MiB is not one */

static const char *const mergekit_names[] = {"alpaca", "chatml", "exaone", "llama3", "mistral"};

pcbm_status pcbm_chat_template_check(const char *spec, pcbm_error *err)
{
    if (!spec || !strcmp(spec, "auto"))
        return PCBM_OK;
    for (size_t i = 0; i < sizeof mergekit_names / sizeof mergekit_names[0]; i++)
        if (!strcmp(spec, mergekit_names[i]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "chat_template '%s' names a template file "
                             "that ships with mergekit, which pcbmerge does not carry: give the "
                             "template's Jinja text, or 'auto' (the template most of the models "
                             "have)", spec);
    if (strlen(spec) < 20 || !strchr(spec, '{'))
        return pcbm_fail(err, PCBM_ERR_USAGE, "chat_template '%.40s' is neither 'auto' nor a Jinja "
                         "template (mergekit's rule: at least 20 characters with a '{')", spec);
    return PCBM_OK;
}

static char *read_small(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > TEMPLATE_MAX)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = pcbm_malloc((size_t)sb.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* s without leading and trailing white space, as a new string. */
static char *trimmed(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    char *t = pcbm_malloc(n + 1);
    if (t) {
        memcpy(t, s, n);
        t[n] = '\0';
    }
    return t;
}

static char *template_in_json(const json_t *v)
{
    if (json_is_string(v))
        return trimmed(json_string_value(v));
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) { /* [{name, template}, ...]: the default one */
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *t = json_string_value(json_object_get(e, "template"));
        if (name && t && !strcmp(name, "default"))
            return trimmed(t);
    }
    return NULL;
}

/* Model directory dir's chat template (trimmed), or NULL. */
static char *model_template(const char *dir)
{
    char path[4200];
    char *t = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_t *j = json_load_file(path, 0, NULL);
    if (j)
        t = template_in_json(json_object_get(j, "chat_template"));
    json_decref(j);
    if (!t) {
        snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
        char *raw = read_small(path);
        t = raw ? trimmed(raw) : NULL;
        free(raw);
    }
    if (!t) {
        snprintf(path, sizeof path, "%s/chat_template.json", dir);
        j = json_load_file(path, 0, NULL);
        if (j)
            t = template_in_json(json_object_get(j, "chat_template"));
        json_decref(j);
    }
    if (t && !*t) {
        free(t);
        t = NULL;
    }
    return t;
}

/* Write `text` as the chat template of the JSON file `path` (key `chat_template`), if it exists. */
static pcbm_status set_in_json(const char *path, const char *text, bool *done, pcbm_error *err)
{
    json_error_t je;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return PCBM_OK;
    json_t *j = json_load_file(path, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: not a JSON object (line %d: %s); cannot set "
                         "its chat template", path, je.line, je.text);
    }
    json_object_set_new(j, "chat_template", json_string(text));
    pcbm_status st = pcbm_write_json_file(path, j, err);
    json_decref(j);
    *done = *done || st == PCBM_OK;
    return st;
}

pcbm_status pcbm_chat_template_apply(const char *spec, const char *const *dirs, unsigned n,
                                     const char *out_dir, char *how, size_t howlen,
                                     pcbm_error *err)
{
    snprintf(how, howlen, "the base's");
    if (!spec)
        return PCBM_OK;
    char *text = NULL;
    if (!strcmp(spec, "auto")) { /* the plurality; a tie goes to the model listed first */
        char *t[(PCBM_MAX_TASKS + 1)] = {0};
        unsigned best = n, best_count = 0;
        for (unsigned i = 0; i < n && i < (PCBM_MAX_TASKS + 1); i++)
            t[i] = dirs[i] ? model_template(dirs[i]) : NULL;
        for (unsigned i = 0; i < n && i < (PCBM_MAX_TASKS + 1); i++) {
            unsigned c = 0;
            for (unsigned k = 0; t[i] && k < n && k < (PCBM_MAX_TASKS + 1); k++)
                c += t[k] && !strcmp(t[i], t[k]);
            if (c > best_count)
                best = i, best_count = c;
        }
        if (best < n) {
            text = t[best];
            t[best] = NULL;
            snprintf(how, howlen, "auto: the template of %u of %u models, first %s", best_count,
                     n, dirs[best]);
        } else {
            snprintf(how, howlen, "auto: no model has a chat template; the base's files as they "
                     "are");
        }
        for (unsigned i = 0; i < n && i < (PCBM_MAX_TASKS + 1); i++)
            free(t[i]);
        if (!text)
            return PCBM_OK;
    } else {
        pcbm_status st = pcbm_chat_template_check(spec, err);
        if (st != PCBM_OK)
            return st;
        if (!(text = pcbm_strdup(spec)))
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        snprintf(how, howlen, "given");
    }
    char path[4200];
    bool done = false;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", out_dir);
    pcbm_status st = set_in_json(path, text, &done, err);
    snprintf(path, sizeof path, "%s/chat_template.json", out_dir);
    if (st == PCBM_OK)
        st = set_in_json(path, text, &done, err);
    snprintf(path, sizeof path, "%s/chat_template.jinja", out_dir);
    struct stat sb;
    if (st == PCBM_OK && stat(path, &sb) == 0) {
        st = pcbm_write_file_simple(path, text, strlen(text), err);
        done = done || st == PCBM_OK;
    }
    free(text);
    if (st == PCBM_OK && !done) {
        size_t u = strlen(how);
        snprintf(how + u, howlen - u, "; not saved: the base has no tokenizer_config.json");
        pcbm_warn("chat_template: the base has no tokenizer_config.json (nor chat_template.jinja "
                  "or .json), so the chat template is not saved; copy the base's tokenizer files "
                  "beside it first");
    }
    return st;
}

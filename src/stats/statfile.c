/* SPDX-License-Identifier: Apache-2.0 */
/*
 * statfile.c — writing and reading the statistics file: JSON (floats as their exact 32-bit
 * patterns) compressed with zstd, frame checksum on; every field checked on reading.
 */
#include "statfile.h"

#include "../common/zjson.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_FORMAT "pcbmerge-stats"
#define STATS_VERSION 1

pcbm_statrec *pcbm_statset_add(pcbm_statset *s)
{
    if (!pcbm_grow((void **)&s->rec, &s->cap, s->nrec, sizeof *s->rec))
        return NULL;
    pcbm_statrec *r = &s->rec[s->nrec++];
    memset(r, 0, sizeof *r);
    return r;
}

void pcbm_statset_free(pcbm_statset *s)
{
    free(s->rec);
    free(s->shape_json);
    memset(s, 0, sizeof *s);
}

static char *hex64(uint64_t v, char buf[17])
{
    snprintf(buf, 17, "%016llx", (unsigned long long)v);
    return buf;
}

static json_t *to_json(const pcbm_statset *s, unsigned ntasks)
{
    json_t *root = json_object(), *ids = json_array(), *recs = json_array();
    char h[17];
    json_object_set_new(root, "format", json_string(STATS_FORMAT));
    json_object_set_new(root, "version", json_integer(STATS_VERSION));
    for (unsigned m = 0; m < s->nmodels; m++)
        json_array_append_new(ids, json_string(hex64(s->identity[m], h)));
    json_object_set_new(root, "inputs", ids);
    json_object_set_new(root, "shape", json_loads(s->shape_json, 0, NULL));
    json_object_set_new(root, "how", json_string(s->how));
    for (size_t k = 0; k < s->nrec; k++) {
        const pcbm_statrec *r = &s->rec[k];
        json_t *jr = json_object(), *vals = json_array();
        json_object_set_new(jr, "d", json_integer((json_int_t)r->d));
        json_object_set_new(jr, "majority", json_integer((json_int_t)pcbm_f2u(r->majority)));
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                json_array_append_new(vals, json_integer((json_int_t)pcbm_f2u(r->v[i][j])));
        json_object_set_new(jr, "v", vals);
        json_array_append_new(recs, jr);
    }
    json_object_set_new(root, "records", recs);
    return root;
}

pcbm_status pcbm_statfile_write(const char *path, const pcbm_statset *s, unsigned ntasks,
                                pcbm_error *err)
{
    json_t *root = to_json(s, ntasks);
    pcbm_status st = pcbm_zjson_write(path, root, "statistics file", err);
    json_decref(root);
    return st;
}

static pcbm_status bad(const char *path, const char *what, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s is malformed (%s): it cannot be "
                     "used; the statistics must be computed again", path, what);
}

static pcbm_status parse(const char *path, json_t *root, pcbm_statset *s, pcbm_error *err)
{
    json_t *fmt = json_object_get(root, "format"), *ver = json_object_get(root, "version");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), STATS_FORMAT) != 0)
        return bad(path, "not a pcbmerge statistics file", err);
    if (!json_is_integer(ver) || json_integer_value(ver) != STATS_VERSION)
        return bad(path, "unknown version", err);
    json_t *ids = json_object_get(root, "inputs"), *shape = json_object_get(root, "shape");
    json_t *how = json_object_get(root, "how"), *recs = json_object_get(root, "records");
    if (!json_is_array(ids) || json_array_size(ids) < 2 || json_array_size(ids) > PCBM_MAX_TASKS + 1 ||
        !json_is_object(shape) || !json_is_string(how) || !json_is_array(recs))
        return bad(path, "missing fields", err);
    s->nmodels = (unsigned)json_array_size(ids);
    for (unsigned m = 0; m < s->nmodels; m++) {
        json_t *v = json_array_get(ids, m);
        if (!json_is_string(v))
            return bad(path, "input identity", err);
        s->identity[m] = strtoull(json_string_value(v), NULL, 16);
    }
    s->shape_json = json_dumps(shape, JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(s->how, sizeof s->how, "%s", json_string_value(how));
    unsigned ntasks = s->nmodels - 1;
    for (size_t k = 0; k < json_array_size(recs); k++) {
        json_t *jr = json_array_get(recs, k), *d = json_object_get(jr, "d");
        json_t *maj = json_object_get(jr, "majority"), *vals = json_object_get(jr, "v");
        if (!json_is_integer(d) || !json_is_integer(maj) || !json_is_array(vals) ||
            json_array_size(vals) != (size_t)ntasks * 4)
            return bad(path, "record", err);
        pcbm_statrec *r = pcbm_statset_add(s);
        if (!r)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
        r->d = (uint64_t)json_integer_value(d);
        r->majority = pcbm_u2f((uint32_t)json_integer_value(maj));
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                r->v[i][j] = pcbm_u2f((uint32_t)json_integer_value(json_array_get(vals, 4 * i + j)));
    }
    return PCBM_OK;
}

pcbm_status pcbm_statfile_read(const char *path, pcbm_statset *s, pcbm_error *err)
{
    memset(s, 0, sizeof *s);
    json_t *root = NULL;
    pcbm_status st = pcbm_zjson_read(path, &root, "statistics file", err);
    if (st == PCBM_ERR_STATS && err) {
        char why[sizeof err->msg];
        memcpy(why, err->msg, sizeof why);
        return pcbm_fail(err, PCBM_ERR_STATS, "%s: the statistics must be computed again", why);
    }
    if (st != PCBM_OK)
        return st;
    st = parse(path, root, s, err);
    json_decref(root);
    if (st != PCBM_OK)
        pcbm_statset_free(s);
    return st;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * statfile.c — writing and reading the statistics file: JSON (floats as their exact 32-bit
 * patterns) compressed with zstd, frame checksum on; every field checked on reading.
 */
#include "statfile.h"

#include "../common/zjson.h"
#include "../sched/ident.h"

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

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *p, size_t n)
{
    char *o = pcbm_malloc(4 * ((n + 2) / 3) + 1), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *q++ = B64[v >> 18 & 63];
        *q++ = B64[v >> 12 & 63];
        *q++ = i + 1 < n ? B64[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? B64[v & 63] : '=';
    }
    *q = '\0';
    return o;
}

/* Decode exactly n bytes; false when the text is not their base64. */
static bool b64_decode(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 4 * ((n + 2) / 3))
        return false;
    size_t o = 0;
    for (size_t i = 0; s[i]; i += 4) {
        uint32_t v = 0;
        for (unsigned k = 0; k < 4; k++) {
            const char *c = s[i + k] == '=' ? NULL : strchr(B64, s[i + k]);
            if (!c && s[i + k] != '=')
                return false;
            v = v << 6 | (c ? (uint32_t)(c - B64) : 0);
        }
        for (unsigned k = 0; k < 3 && o < n; k++)
            out[o++] = (uint8_t)(v >> (16 - 8 * k));
    }
    return o == n;
}

json_t *pcbm_ident_json(const uint64_t *v, unsigned nmodels, uint64_t ngran)
{
    json_t *j = json_object(), *models = json_array();
    uint8_t *buf = pcbm_malloc(ngran * 8 + 1);
    for (unsigned m = 0; buf && m < nmodels; m++) {
        for (uint64_t g = 0; g < ngran; g++)
            for (unsigned b = 0; b < 8; b++)
                buf[8 * g + b] = (uint8_t)(v[m * ngran + g] >> (8 * b));
        char *txt = b64_encode(buf, (size_t)ngran * 8);
        json_array_append_new(models, txt ? json_string(txt) : json_null());
        free(txt);
    }
    free(buf);
    json_object_set_new(j, "leaf", json_integer(PCBM_IDENT_LEAF));
    json_object_set_new(j, "granule", json_integer(PCBM_IDENT_GRANULE));
    json_object_set_new(j, "granules", json_integer((json_int_t)ngran));
    json_object_set_new(j, "models", models);
    return j;
}

bool pcbm_ident_parse(const json_t *j, unsigned nmodels, uint64_t **v, uint64_t *ngran)
{
    *v = NULL;
    json_t *models = json_object_get(j, "models"), *n = json_object_get(j, "granules");
    if (json_integer_value(json_object_get(j, "leaf")) != PCBM_IDENT_LEAF ||
        json_integer_value(json_object_get(j, "granule")) != PCBM_IDENT_GRANULE ||
        !json_is_integer(n) || json_integer_value(n) < 0 || !json_is_array(models) ||
        json_array_size(models) != nmodels)
        return false;
    *ngran = (uint64_t)json_integer_value(n);
    uint64_t *out = pcbm_calloc((size_t)(*ngran * nmodels) + 1, sizeof *out);
    uint8_t *buf = pcbm_malloc((size_t)*ngran * 8 + 1);
    bool ok = out && buf;
    for (unsigned m = 0; ok && m < nmodels; m++) {
        const char *txt = json_string_value(json_array_get(models, m));
        ok = txt && b64_decode(txt, buf, (size_t)*ngran * 8);
        for (uint64_t g = 0; ok && g < *ngran; g++)
            for (unsigned b = 0; b < 8; b++)
                out[m * *ngran + g] |= (uint64_t)buf[8 * g + b] << (8 * b);
    }
    free(buf);
    if (!ok) {
        free(out);
        return false;
    }
    *v = out;
    return true;
}

bool pcbm_statset_set_ident(pcbm_statset *s, const uint64_t *v, uint64_t ngran)
{
    free(s->ident);
    s->ident = NULL;
    s->ident_ngran = 0;
    if (!v)
        return true;
    size_t n = (size_t)(ngran * s->nmodels);
    if (!(s->ident = pcbm_malloc(n * sizeof *v + 1)))
        return false;
    memcpy(s->ident, v, n * sizeof *v);
    s->ident_ngran = ngran;
    return true;
}

void pcbm_statset_free(pcbm_statset *s)
{
    for (size_t k = 0; k < s->nrec; k++)
        free(s->rec[k].blob);
    free(s->ident);
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
        bool more = false;
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                more = more || pcbm_f2u(r->x[i][j]) != 0;
        if (more) {
            json_t *xs = json_array();
            for (unsigned i = 0; i < ntasks; i++)
                for (unsigned j = 0; j < 4; j++)
                    json_array_append_new(xs, json_integer((json_int_t)pcbm_f2u(r->x[i][j])));
            json_object_set_new(jr, "x", xs);
        }
        if (r->nblob) { /* little-endian u64, base64 */
            uint8_t *le = pcbm_malloc(r->nblob * 8);
            char *b = NULL;
            if (le) {
                for (size_t q = 0; q < r->nblob; q++)
                    for (unsigned c = 0; c < 8; c++)
                        le[8 * q + c] = (uint8_t)(r->blob[q] >> (8 * c));
                b = b64_encode(le, r->nblob * 8);
            }
            json_object_set_new(jr, "nb", json_integer((json_int_t)r->nblob));
            json_object_set_new(jr, "b", b ? json_string(b) : json_null()); /* null: unreadable */
            free(le);
            free(b);
        }
        json_array_append_new(recs, jr);
    }
    json_object_set_new(root, "records", recs);
    if (s->ident)
        json_object_set_new(root, "ident", pcbm_ident_json(s->ident, s->nmodels, s->ident_ngran));
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
    json_t *ident = json_object_get(root, "ident");
    if (ident && !pcbm_ident_parse(ident, s->nmodels, &s->ident, &s->ident_ngran))
        return bad(path, "input identity table", err);
    unsigned ntasks = s->nmodels - 1;
    for (size_t k = 0; k < json_array_size(recs); k++) {
        json_t *jr = json_array_get(recs, k), *d = json_object_get(jr, "d");
        json_t *maj = json_object_get(jr, "majority"), *vals = json_object_get(jr, "v");
        json_t *xs = json_object_get(jr, "x"); /* absent: all +0 */
        if (!json_is_integer(d) || !json_is_integer(maj) || !json_is_array(vals) ||
            json_array_size(vals) != (size_t)ntasks * 4 ||
            (xs && (!json_is_array(xs) || json_array_size(xs) != (size_t)ntasks * 4)))
            return bad(path, "record", err);
        pcbm_statrec *r = pcbm_statset_add(s);
        if (!r)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
        r->d = (uint64_t)json_integer_value(d);
        r->majority = pcbm_u2f((uint32_t)json_integer_value(maj));
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                r->v[i][j] = pcbm_u2f((uint32_t)json_integer_value(json_array_get(vals, 4 * i + j)));
        for (unsigned i = 0; xs && i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                r->x[i][j] = pcbm_u2f((uint32_t)json_integer_value(json_array_get(xs, 4 * i + j)));
        json_t *nb = json_object_get(jr, "nb"), *b = json_object_get(jr, "b");
        if (nb) {
            json_int_t n = json_is_integer(nb) ? json_integer_value(nb) : -1;
            if (n <= 0 || n > (json_int_t)1 << 30 || !json_is_string(b))
                return bad(path, "record counts", err);
            uint8_t *le = pcbm_malloc((size_t)n * 8);
            if (!le || !(r->blob = pcbm_malloc((size_t)n * sizeof *r->blob))) {
                free(le);
                return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
            }
            r->nblob = (size_t)n;
            bool ok = b64_decode(json_string_value(b), le, (size_t)n * 8);
            for (size_t q = 0; ok && q < r->nblob; q++) {
                r->blob[q] = 0;
                for (unsigned c = 0; c < 8; c++)
                    r->blob[q] |= (uint64_t)le[8 * q + c] << (8 * c);
            }
            free(le);
            if (!ok)
                return bad(path, "record counts", err);
        }
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

/*
 * statfile.c — writing and reading the statistics file: JSON (floats as their exact 32-bit
 * patterns) compressed with zstd, frame checksum on; every field checked on reading.
 */
#include "statfile.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define STATS_FORMAT "pcbmerge-stats"
#define STATS_VERSION 1
#define STATS_MAX_BYTES (1u << 30) /* decompressed: far above any real file */

pcbm_statrec *pcbm_statset_add(pcbm_statset *s)
{
    if (s->nrec == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        pcbm_statrec *r = pcbm_realloc(s->rec, cap * sizeof *r);
        if (!r)
            return NULL;
        s->rec = r;
        s->cap = cap;
    }
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

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
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
        json_object_set_new(jr, "majority", json_integer((json_int_t)fbits(r->majority)));
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                json_array_append_new(vals, json_integer((json_int_t)fbits(r->v[i][j])));
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
    char *txt = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!txt)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing %s", path);
    size_t n = strlen(txt), cap = ZSTD_compressBound(n);
    void *z = pcbm_malloc(cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t zn = 0;
    if (z && cc) {
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 9);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
        zn = ZSTD_compress2(cc, z, cap, txt, n);
    }
    ZSTD_freeCCtx(cc);
    free(txt);
    pcbm_status st;
    if (!z || ZSTD_isError(zn)) {
        st = pcbm_fail(err, PCBM_ERR_INTERNAL, "cannot compress the statistics for %s", path);
    } else {
        FILE *f = fopen(path, "wb");
        if (!f) {
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        } else {
            bool ok = fwrite(z, 1, zn, f) == zn;
            ok = (fflush(f) == 0) && ok;
            ok = (fclose(f) == 0) && ok;
            st = ok ? PCBM_OK : pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                                           "cannot write %s: %s", path, strerror(errno));
        }
    }
    free(z);
    return st;
}

static pcbm_status read_all(const char *path, void **buf, size_t *len, pcbm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open statistics file %s: %s", path,
                         strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = pcbm_malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        if (cap >= STATS_MAX_BYTES) {
            free(b);
            b = NULL;
            break;
        }
        char *nb = pcbm_realloc(b, cap *= 2);
        if (!nb)
            free(b);
        b = nb;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot read statistics file %s", path);
    }
    *buf = b;
    *len = n;
    return PCBM_OK;
}

static pcbm_status decompress(const char *path, const void *z, size_t zn, char **out,
                              pcbm_error *err)
{
    unsigned long long size = ZSTD_getFrameContentSize(z, zn);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > STATS_MAX_BYTES)
        return pcbm_fail(err, PCBM_ERR_STATS, "%s is not a pcbmerge statistics file (not a zstd "
                         "frame of known size); pass the %s of an earlier merge", path,
                         PCBM_STATS_NAME);
    char *txt = pcbm_malloc((size_t)size + 1);
    if (!txt)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
    size_t n = ZSTD_decompress(txt, (size_t)size, z, zn);
    if (ZSTD_isError(n) || n != size) {
        free(txt);
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s is damaged (%s): recompute the "
                         "statistics by running without --stats", path,
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
    }
    txt[n] = '\0';
    *out = txt;
    return PCBM_OK;
}

static pcbm_status bad(const char *path, const char *what, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_STATS, "statistics file %s is malformed (%s): recompute the "
                     "statistics by running without --stats", path, what);
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
        r->majority = bitsf((uint32_t)json_integer_value(maj));
        for (unsigned i = 0; i < ntasks; i++)
            for (unsigned j = 0; j < 4; j++)
                r->v[i][j] = bitsf((uint32_t)json_integer_value(json_array_get(vals, 4 * i + j)));
    }
    return PCBM_OK;
}

pcbm_status pcbm_statfile_read(const char *path, pcbm_statset *s, pcbm_error *err)
{
    memset(s, 0, sizeof *s);
    void *z = NULL;
    size_t zn = 0;
    char *txt = NULL;
    pcbm_status st = read_all(path, &z, &zn, err);
    if (st == PCBM_OK)
        st = decompress(path, z, zn, &txt, err);
    free(z);
    if (st != PCBM_OK)
        return st;
    json_error_t je;
    json_t *root = json_loads(txt, 0, &je);
    free(txt);
    if (!root)
        return bad(path, je.text, err);
    st = parse(path, root, s, err);
    json_decref(root);
    if (st != PCBM_OK)
        pcbm_statset_free(s);
    return st;
}

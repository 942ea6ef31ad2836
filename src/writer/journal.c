/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.c — saving and loading the journal (zstd-compressed JSON with checksum, atomic).
 */
#include "journal.h"

#include "../common/zjson.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOURNAL_FORMAT "pcbmerge-journal"
#define JOURNAL_VERSION 1

pcbm_status pcbm_journal_save(const pcbm_journal *j, pcbm_error *err)
{
    json_t *root = json_object(), *in = json_array(), *segs = json_array();
    char h[17];
    json_object_set_new(root, "format", json_string(JOURNAL_FORMAT));
    json_object_set_new(root, "version", json_integer(JOURNAL_VERSION));
    json_object_set_new(root, "params", json_loads(j->params, 0, NULL));
    for (unsigned i = 0; i < j->ninputs; i++) {
        snprintf(h, sizeof h, "%016llx", (unsigned long long)j->inputs[i]);
        json_array_append_new(in, json_string(h));
    }
    json_object_set_new(root, "inputs", in);
    json_object_set_new(root, "stats_saved", json_boolean(j->stats_saved));
    json_t *fs = json_array();
    for (size_t k = 0; k < j->nfstat; k++) {
        snprintf(h, sizeof h, "%016llx", (unsigned long long)j->fstat[k]);
        json_array_append_new(fs, json_string(h));
    }
    json_object_set_new(root, "input_files", fs);
    for (size_t k = 0; k < j->nseg; k++) {
        const pcbm_segment *s = &j->seg[k];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)s->hash);
        json_array_append_new(segs, json_pack("[I,I,I,s]", (json_int_t)s->file,
                                              (json_int_t)s->start, (json_int_t)s->end, h));
    }
    json_object_set_new(root, "segments", segs);
    pcbm_status st = pcbm_zjson_write(j->path, root, "journal", err);
    json_decref(root);
    return st;
}

pcbm_status pcbm_journal_add(pcbm_journal *j, const pcbm_segment *s, pcbm_error *err)
{
    if (!pcbm_grow((void **)&j->seg, &j->cap, j->nseg, sizeof *j->seg))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    j->seg[j->nseg++] = *s;
    return pcbm_journal_save(j, err);
}

static pcbm_status damaged(const char *path, const char *what, pcbm_error *err)
{
    return pcbm_fail(err, PCBM_ERR_STATS, "the journal %s is damaged (%s): start over with "
                     "`force`", path, what);
}

pcbm_status pcbm_journal_load(const char *path, pcbm_journal *j, pcbm_error *err)
{
    memset(j, 0, sizeof *j);
    json_t *root = NULL;
    pcbm_status st = pcbm_zjson_read(path, &root, "journal", err);
    if (st == PCBM_ERR_STATS && err) {
        char why[sizeof err->msg];
        memcpy(why, err->msg, sizeof why);
        return pcbm_fail(err, PCBM_ERR_STATS, "%s: start over with `force`", why);
    }
    if (st != PCBM_OK)
        return st;
    json_t *fmt = json_object_get(root, "format"), *params = json_object_get(root, "params");
    json_t *in = json_object_get(root, "inputs"), *segs = json_object_get(root, "segments");
    json_t *ss = json_object_get(root, "stats_saved");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), JOURNAL_FORMAT) != 0 ||
        !json_is_object(params) || !json_is_array(in) || !json_is_array(segs) ||
        !json_is_boolean(ss) || json_array_size(in) > PCBM_MAX_TASKS + 1) {
        json_decref(root);
        return damaged(path, "fields", err);
    }
    j->path = pcbm_strdup(path);
    j->params = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
    j->stats_saved = json_is_true(ss);
    j->ninputs = (unsigned)json_array_size(in);
    for (unsigned i = 0; i < j->ninputs; i++)
        j->inputs[i] = strtoull(json_string_value(json_array_get(in, i)) ? json_string_value(json_array_get(in, i)) : "0", NULL, 16);
    json_t *fs = json_object_get(root, "input_files");
    if (json_array_size(fs) > 0 && (j->fstat = pcbm_calloc(json_array_size(fs), 8)) != NULL) {
        j->nfstat = json_array_size(fs);
        for (size_t k = 0; k < j->nfstat; k++) {
            const char *v = json_string_value(json_array_get(fs, k));
            j->fstat[k] = v ? strtoull(v, NULL, 16) : 0;
        }
    }
    for (size_t k = 0; k < json_array_size(segs) && st == PCBM_OK; k++) {
        json_int_t f, a, b;
        const char *h;
        if (json_unpack(json_array_get(segs, k), "[I,I,I,s]", &f, &a, &b, &h) != 0 || f < 0 ||
            a < 0 || b < a) {
            st = damaged(path, "segment", err);
            break;
        }
        if (!pcbm_grow((void **)&j->seg, &j->cap, j->nseg, sizeof *j->seg)) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            break;
        }
        j->seg[j->nseg++] = (pcbm_segment){(unsigned)f, (uint64_t)a, (uint64_t)b,
                                           strtoull(h, NULL, 16)};
    }
    json_decref(root);
    if (st != PCBM_OK)
        pcbm_journal_free(j);
    return st;
}

void pcbm_journal_free(pcbm_journal *j)
{
    free(j->path);
    free(j->params);
    free(j->fstat);
    free(j->seg);
    memset(j, 0, sizeof *j);
}

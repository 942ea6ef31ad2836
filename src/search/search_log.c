/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search_log.c — the files of a coefficient search: the work directory OUT.search/ (created, or
 * taken over and locked), search_params.json (what a resumed search must repeat), the log of
 * evaluations (search_log.jsonl: read back and replayed on resume) and OUT/search_summary.json.
 * Numbers are written as the shortest text that reads back as the same double.
 */
#include "search_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- JSON text ------------------------------------------------------------------------------ */

/* Formatted text into a file of the search (the library prints nothing on the terminal). */
static void put_fmt(FILE *f, const char *fmt, ...) PCBM_PRINTF(2, 3);
static void put_fmt(FILE *f, const char *fmt, ...)
{
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fputs(b, f);
}

static void put_real(FILE *f, double v)
{
    char b[40];
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(b, sizeof b, "%.*g", p, v);
        if (strtod(b, NULL) == v)
            break;
    }
    fputs(b, f);
}

static void put_str(FILE *f, const char *s)
{
    json_t *j = json_string(s ? s : "");
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(t ? t : "\"\"", f);
    free(t);
    json_decref(j);
}

static void put_lambdas(FILE *f, const double *l, unsigned n)
{
    fputc('[', f);
    for (unsigned i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        put_real(f, l[i]);
    }
    fputc(']', f);
}

/* Write `text` to path atomically (tmp + fsync + rename). */
int pcbm_search_write_text(const char *path, const char *text)
{
    char tmp[PATH_MAX + 256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- parameters ----------------------------------------------------------------------------- */

/* Everything that shapes the sequence of candidates and their merges (not the budget, not the
 * run-time settings), as canonical JSON: a resumed search must have the same. */
static char *search_params(const pcbm_search_state *s)
{
    const pcbm_merge_opts *o = &s->mo;
    const pcbm_search_opts *so = &s->o;
    json_t *j = json_object(), *tasks = json_array(), *ex = json_array();
    for (unsigned i = 0; i < o->ntasks; i++)
        json_array_append_new(tasks, json_string(o->tasks[i]));
    for (unsigned i = 0; i < o->nexclude; i++)
        json_array_append_new(ex, json_string(o->exclude[i]));
    char seed[32], dseed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)so->seed);
    snprintf(dseed, sizeof dseed, "%llu", (unsigned long long)o->seed);
    json_object_set_new(j, "base", json_string(o->base));
    json_object_set_new(j, "tasks", tasks);
    json_object_set_new(j, "method", json_string(pcbm_method_name(o->method)));
    json_object_set_new(j, "density", json_real(o->density));
    json_object_set_new(j, "clamp_ratio", json_real(o->clamp_ratio));
    pcbm_scope scope = o->scope == PCBM_SCOPE_AUTO ? pcbm_method_default_scope(o) : o->scope;
    json_object_set_new(j, "scope", json_string(scope == PCBM_SCOPE_TENSOR ? "tensor" : "global"));
    json_object_set_new(j, "exact", json_boolean(o->stats_mode == PCBM_STATS_EXACT));
    json_object_set_new(j, "streaming", json_boolean(o->stats_mode == PCBM_STATS_STREAMING));
    json_object_set_new(j, "dtype", json_integer(o->out_dtype));
    json_object_set_new(j, "exclude", ex);
    json_object_set_new(j, "allow_extra", json_boolean(o->allow_extra));
    json_object_set_new(j, "allow_nonfinite", json_boolean(o->allow_nonfinite));
    json_object_set_new(j, "shard_bytes", json_integer((json_int_t)o->shard_bytes));
    json_object_set_new(j, "dare_seed", json_string(dseed));
    json_object_set_new(j, "stats", o->stats_in ? json_string(o->stats_in) : json_null());
    json_object_set_new(j, "eval_cmd", json_string(so->eval_id ? so->eval_id : ""));
    json_object_set_new(j, "bounds", json_pack("[f,f]", so->lo, so->hi));
    json_object_set_new(j, "init", json_real(so->init));
    json_object_set_new(j, "sigma", json_real(so->sigma));
    json_object_set_new(j, "popsize", json_integer(so->popsize));
    json_object_set_new(j, "seed", json_string(seed));
    json_object_set_new(j, "on_eval_error", json_string(so->skip_errors ? "skip" : "stop"));
    if (so->recipe) { /* a recipe search: the recipe's text, by its hash */
        char h[32];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)s->recipe_hash);
        json_object_set_new(j, "recipe", json_string(h));
    }
    char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    return txt;
}

/* ---- the log -------------------------------------------------------------------------------- */

/* One line of the log into the replay list; false when it is not the next well-formed line. */
static bool take_line(pcbm_search_state *s, const char *line, unsigned cnt, unsigned *cap,
                      pcbm_error *err, pcbm_status *st)
{
    json_t *e = json_loads(line, 0, NULL), *l = json_object_get(e, "lambdas");
    json_t *sc = json_object_get(e, "score");
    if (!e || json_integer_value(json_object_get(e, "evaluation")) != cnt + 1 ||
        !json_is_array(l) || json_array_size(l) != s->n || (!json_is_number(sc) && !json_is_null(sc))) {
        json_decref(e);
        return false;
    }
    size_t capz = *cap;
    if (!pcbm_grow((void **)&s->replay, &capz, cnt, sizeof *s->replay)) {
        json_decref(e);
        *st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        return false;
    }
    *cap = (unsigned)capz;
    pcbm_logged *L = &s->replay[cnt];
    for (unsigned i = 0; i < s->n; i++)
        L->lam[i] = json_number_value(json_array_get(l, i));
    L->score = json_is_number(sc) ? json_number_value(sc) : NAN;
    L->gen = (unsigned)json_integer_value(json_object_get(e, "generation"));
    json_decref(e);
    return true;
}

/* Read the log of an earlier run: every complete, well-formed line in order (a line cut by a
 * kill is dropped); without skip_errors, a failed last evaluation is dropped too (it stopped
 * that search and is evaluated again). The log is rewritten with what is kept. */
static pcbm_status load_log(pcbm_search_state *s, pcbm_error *err)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f)
        return errno == ENOENT ? PCBM_OK
                               : pcbm_fail(err, PCBM_ERR_IO, "cannot read %s: %s", s->log_path,
                                           strerror(errno));
    char *line = NULL, *kept = NULL;
    size_t cap = 0, klen = 0, last_start = 0;
    FILE *k = open_memstream(&kept, &klen);
    ssize_t n;
    unsigned cnt = 0, cap_r = 0;
    pcbm_status st = k ? PCBM_OK : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    while (st == PCBM_OK && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n' || !take_line(s, line, cnt, &cap_r, err, &st))
            break;
        cnt++;
        fflush(k);
        last_start = klen;
        fputs(line, k);
    }
    free(line);
    fclose(f);
    if (k)
        fclose(k);
    if (st == PCBM_OK && cnt > 0 && !s->o.skip_errors && isnan(s->replay[cnt - 1].score)) {
        cnt--; /* the failure that stopped the earlier search: evaluated again */
        klen = last_start;
    }
    s->nreplay = cnt;
    if (st == PCBM_OK) {
        char *txt = kept ? strndup(kept, klen) : strdup("");
        if (!txt || pcbm_search_write_text(s->log_path, txt) != 0)
            st = pcbm_fail(err, PCBM_ERR_IO, "cannot rewrite %s: %s", s->log_path, strerror(errno));
        free(txt);
    }
    free(kept);
    return st;
}

pcbm_status pcbm_search_log_eval(pcbm_search_state *s, unsigned k, unsigned gen, const double *lam,
                                 double score, const char *why, double secs, double merge_s,
                                 double eval_s, pcbm_error *err)
{
    FILE *f = s->log;
    put_fmt(f, "{\"evaluation\":%u,\"generation\":%u,\"lambdas\":", k, gen);
    put_lambdas(f, lam, s->n);
    fputs(",\"score\":", f);
    if (!why)
        put_real(f, score);
    else
        fputs("null", f);
    put_fmt(f, ",\"seconds\":%.4f,\"merge_seconds\":%.4f,\"eval_seconds\":%.4f", secs, merge_s,
            eval_s);
    if (s->o.recipe) /* the coefficients multiply this recipe's weights */
        put_fmt(f, ",\"recipe\":\"%016llx\"", (unsigned long long)s->recipe_hash);
    if (why) {
        fputs(",\"error\":", f);
        put_str(f, why);
    }
    fputs("}\n", f);
    if (fflush(f) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot write %s: %s", s->log_path, strerror(errno));
    return PCBM_OK;
}

/* ---- the work directory --------------------------------------------------------------------- */

/* A scored evaluation in the log of dir: worth resuming rather than discarding. */
static bool has_scored_log(const char *dir)
{
    char logp[PATH_MAX + 32], ln[4096];
    snprintf(logp, sizeof logp, "%s/%s", dir, PCBM_SEARCH_LOG_NAME);
    bool has = false;
    FILE *lf = fopen(logp, "r");
    while (lf && !has && fgets(ln, sizeof ln, lf))
        has = strstr(ln, "\"score\":") && !strstr(ln, "\"score\":null");
    if (lf)
        fclose(lf);
    return has;
}

/* dir exists: resume it, refuse (a running or unfinished search) or remove a stale one.
 * *resumed tells which; PCBM_OK with !*resumed means dir is gone. */
static pcbm_status take_over(pcbm_search_state *s, const char *dir, bool *resumed, pcbm_error *err)
{
    const char *out = s->mo.out;
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/.lock", dir);
    int fd;
    if (pcbm_lock_file(lock, O_RDWR, &fd) == -EWOULDBLOCK)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "another search is running into %s (its work "
                         "directory %s is locked)", out, dir);
    if (fd >= 0)
        close(fd);
    if (s->o.resume && !s->mo.force) {
        *resumed = true;
        return PCBM_OK;
    }
    if (has_scored_log(dir) && !s->mo.force)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s holds an earlier search that did not finish: "
                         "continue it with `resume`, or discard it and start over with `force`",
                         dir);
    pcbm_search_note(s, "removing %s, left by an earlier search", dir);
    int rc = pcbm_remove_tree(dir);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot remove the stale search directory %s: %s", dir,
                         strerror(-rc));
    return PCBM_OK;
}

/* Resume: the parameters must be the earlier run's; then its log is loaded. */
static pcbm_status check_resumed(pcbm_search_state *s, const char *dir, const char *ppath,
                                 const char *params, pcbm_error *err)
{
    FILE *pf = fopen(ppath, "r");
    if (!pf)
        return pcbm_fail(err, PCBM_ERR_STATS, "%s has no %s: it cannot be resumed; start over "
                         "with `force`", dir, PCBM_SEARCH_PARAMS_NAME);
    char *old = pcbm_malloc(65536);
    size_t n = old ? fread(old, 1, 65535, pf) : 0;
    fclose(pf);
    if (!old)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    old[n] = '\0';
    char key[128];
    pcbm_status st = PCBM_OK;
    if (pcbm_params_differ(old, params, NULL, key, sizeof key, NULL, 0))
        st = pcbm_fail(err, PCBM_ERR_STATS, "cannot resume the search in %s: its parameters "
                       "differ (%s); run with the same parameters (only `budget` and run-time "
                       "settings may change), or start over with `force`", dir, key);
    free(old);
    if (st == PCBM_OK)
        st = load_log(s, err);
    if (st == PCBM_OK)
        pcbm_search_note(s, "resuming from %s: %u evaluation(s) logged are replayed, not re-run",
                         dir, s->nreplay);
    return st;
}

pcbm_status pcbm_search_make_work(pcbm_search_state *s, pcbm_error *err)
{
    char dir[PATH_MAX];
    bool resumed = false;
    snprintf(dir, sizeof dir, "%s.search", s->mo.out);
    pcbm_status st = PCBM_OK;
    for (int attempt = 0; attempt < 2 && !resumed && st == PCBM_OK; attempt++) {
        if (mkdir(dir, 0755) == 0)
            break;
        if (errno != EEXIST || attempt == 1)
            return pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                             "cannot create the search directory %s: %s", dir, strerror(errno));
        st = take_over(s, dir, &resumed, err);
    }
    if (st != PCBM_OK)
        return st;
    if (!realpath(dir, s->work))
        return pcbm_fail(err, PCBM_ERR_IO, "cannot resolve %s: %s", dir, strerror(errno));
    snprintf(s->res->work_dir, sizeof s->res->work_dir, "%s", s->work);
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/.lock", s->work);
    int rc = pcbm_lock_file(lock, O_RDWR | O_CREAT, &s->lock_fd);
    if (rc)
        return pcbm_fail(err, rc == -EWOULDBLOCK ? PCBM_ERR_EXISTS : PCBM_ERR_IO,
                         "cannot lock %s: %s", lock, strerror(-rc));
    snprintf(s->scratch, sizeof s->scratch, "%s/model", s->work);
    snprintf(s->stats, sizeof s->stats, "%s/%s", s->work, PCBM_SEARCH_STATS_NAME);
    snprintf(s->log_path, sizeof s->log_path, "%s/%s", s->work, PCBM_SEARCH_LOG_NAME);
    char ppath[PATH_MAX + 64];
    snprintf(ppath, sizeof ppath, "%s/%s", s->work, PCBM_SEARCH_PARAMS_NAME);
    char *params = search_params(s);
    if (!params)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    if (resumed)
        st = check_resumed(s, dir, ppath, params, err);
    else if (pcbm_search_write_text(ppath, params) != 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "cannot write %s: %s", ppath, strerror(errno));
    free(params);
    if (st != PCBM_OK)
        return st;
    s->log = fopen(s->log_path, resumed ? "a" : "w");
    if (!s->log)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot create %s: %s", s->log_path, strerror(errno));
    return PCBM_OK;
}

/* ---- the summary ---------------------------------------------------------------------------- */

static void summary_head(FILE *f, const pcbm_search_state *s)
{
    const pcbm_search_result *r = s->res;
    fputs("{\n  \"method\": ", f);
    put_str(f, pcbm_method_name(s->mo.method));
    fputs(",\n  \"base\": ", f);
    put_str(f, s->mo.base);
    fputs(",\n  \"tasks\": [", f);
    for (unsigned i = 0; i < s->n; i++) {
        fputs(i ? ", " : "", f);
        put_str(f, s->mo.tasks[i]);
    }
    fputs("],\n  \"eval_cmd\": ", f);
    put_str(f, s->o.eval_id);
    if (s->o.recipe) {
        put_fmt(f, ",\n  \"recipe\": {\"xxh3\": \"%016llx\", \"scales\": \"%s\", \"best\": ",
                (unsigned long long)s->recipe_hash, s->mo.method == PCBM_METHOD_PCB
                    ? "each model's weight (pcb: λ_i = lambda · weight_i)" : "each model's weight");
        put_str(f, PCBM_SEARCH_RECIPE_NAME);
        fputs("}", f);
    }
    put_fmt(f, ",\n  \"budget\": %u,\n  \"evaluations\": %u,\n  \"failed_evaluations\": %u,\n"
               "  \"generations\": %u,\n  \"stopped\": ", s->o.budget, r->evaluations, r->failed,
            r->generations);
    put_str(f, r->stopped);
    fputs(",\n  \"bounds\": [", f);
    put_real(f, s->o.lo);
    fputs(", ", f);
    put_real(f, s->o.hi);
    fputs("],\n  \"init\": ", f);
    put_real(f, s->o.init);
    fputs(",\n  \"sigma0\": ", f);
    put_real(f, r->sigma0);
    put_fmt(f, ",\n  \"popsize\": %u,\n  \"seed\": %llu,\n  \"init_score\": ", r->popsize,
            (unsigned long long)s->o.seed);
}

pcbm_status pcbm_search_write_summary(const pcbm_search_state *s, pcbm_error *err)
{
    const pcbm_search_result *r = s->res;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    summary_head(f, s);
    if (r->have_init)
        put_real(f, r->init_score);
    else
        fputs("null", f);
    put_fmt(f, ",\n  \"best\": {\"evaluation\": %u, \"generation\": %u, \"score\": ",
            r->best_evaluation, r->best_generation);
    put_real(f, r->best_score);
    fputs(", \"lambdas\": ", f);
    put_lambdas(f, r->best_lambdas, s->n);
    fputs("},\n  \"gain\": ", f);
    if (r->have_init)
        put_real(f, r->best_score - r->init_score);
    else
        fputs("null", f);
    fputs(",\n  \"statistics\": ", f);
    put_str(f, !pcbm_search_has_stats(s->mo.method) && s->o.recipe
                   ? "not reused: every candidate's merge computes the statistics its method has "
                     "(the TIES family's depend on the weights)"
               : !pcbm_search_has_stats(s->mo.method) ? "none (the method has no statistics pass)"
               : s->mo.stats_in                     ? "from --stats"
                                                    : "computed once, at the first evaluation");
    put_fmt(f, ",\n  \"seconds\": %.3f,\n  \"merge_seconds\": %.3f,\n  \"eval_seconds\": %.3f\n}\n",
            r->seconds, r->merge_seconds, r->eval_seconds);
    if (fclose(f) != 0 || !text) {
        free(text);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", s->mo.out, PCBM_SEARCH_SUMMARY_NAME);
    int rc = pcbm_search_write_text(path, text);
    free(text);
    if (rc != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return PCBM_OK;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hub.c — where a model argument points. A path on disk is used as it is, except a Hugging Face
 * cache repository folder (models--ORG--NAME, with refs/ and snapshots/), which resolves to the
 * snapshot its refs/main names. An argument that is no path but looks like a hub id,
 * ORG/NAME[@REVISION], resolves in the local Hugging Face cache ($HF_HUB_CACHE, else
 * $HF_HOME/hub, else ~/.cache/huggingface/hub): REVISION is a branch or tag under refs/ (default
 * main) or a commit hash under snapshots/. Nothing is ever downloaded.
 */
#include "st_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The cache root and how it was chosen (for messages). */
static void cache_root(char *buf, size_t len)
{
    const char *v = getenv("HF_HUB_CACHE");
    if (v && *v) {
        snprintf(buf, len, "%s", v);
        return;
    }
    v = getenv("HF_HOME");
    if (v && *v) {
        snprintf(buf, len, "%s/hub", v);
        return;
    }
    v = getenv("HOME");
    snprintf(buf, len, "%s/.cache/huggingface/hub", v && *v ? v : ".");
}

/* A hub id: ORG/NAME with letters, digits, '-', '_' and '.', not starting with '.' or '-'. */
static bool id_part(const char *s, size_t n)
{
    if (n == 0 || n > 96 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return !(n >= 2 && s[0] == '.' && s[1] == '.');
}

static bool looks_like_id(const char *spec, size_t *slash, size_t *at)
{
    const char *sl = strchr(spec, '/');
    if (!sl || strchr(sl + 1, '/'))
        return false;
    const char *a = strchr(sl + 1, '@');
    size_t end = a ? (size_t)(a - spec) : strlen(spec);
    *slash = (size_t)(sl - spec);
    *at = end;
    if (!id_part(spec, *slash) || !id_part(sl + 1, end - *slash - 1))
        return false;
    return !a || (a[1] && !strchr(a + 1, '/'));
}

static bool is_hex_commit(const char *s)
{
    size_t n = strlen(s);
    if (n != 40)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The commit refs/REV of repository folder `repo` names, into commit[41]. */
static pcbm_status read_ref(const char *repo, const char *rev, const char *label, char *commit,
                            pcbm_error *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/refs/%s", repo, rev);
    int fd = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        return pcbm_fail(err, PCBM_ERR_IO, "%s: the cache has no revision '%s' (%s is missing): "
                         "download that revision, or name a branch, tag or commit the cache "
                         "holds (ORG/NAME@REVISION)", label, rev, p);
    }
    ssize_t n = read(fd, commit, 40);
    close(fd);
    commit[n > 0 ? n : 0] = '\0';
    if (!is_hex_commit(commit))
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s: %s does not hold a commit hash: the cache is "
                         "damaged; download the model again", label, p);
    return PCBM_OK;
}

/* The snapshot folder of repository folder `repo` at revision `rev` (branch, tag or commit). */
static pcbm_status snapshot_of(const char *repo, const char *rev, const char *label,
                               char **out, pcbm_error *err)
{
    char commit[48], p[4096];
    snprintf(commit, sizeof commit, "%s", rev);
    if (!is_hex_commit(rev)) {
        pcbm_status st = read_ref(repo, rev, label, commit, err);
        if (st != PCBM_OK)
            return st;
    }
    snprintf(p, sizeof p, "%s/snapshots/%s", repo, commit);
    if (!is_dir(p))
        return pcbm_fail(err, PCBM_ERR_IO, "%s: revision %s (commit %s) is not in the cache (%s "
                         "is missing): download it first", label, rev, commit, p);
    *out = pcbm_strdup(p);
    return *out ? PCBM_OK : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
}

static bool is_cache_repo(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    char p[4096];
    snprintf(p, sizeof p, "%s/snapshots", path);
    return strncmp(base, "models--", 8) == 0 && is_dir(p);
}

pcbm_status pcbm_model_resolve(const char *spec, char **out, pcbm_error *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(spec, &sb) == 0) {
        if (S_ISDIR(sb.st_mode) && is_cache_repo(spec)) {
            size_t n = strlen(spec);
            while (n > 1 && spec[n - 1] == '/')
                n--;
            char repo[4096];
            snprintf(repo, sizeof repo, "%.*s", (int)n, spec);
            return snapshot_of(repo, "main", spec, out, err);
        }
        *out = pcbm_strdup(spec);
        return *out ? PCBM_OK : pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    }
    size_t slash, at;
    if (errno != ENOENT || !looks_like_id(spec, &slash, &at))
        return pcbm_fail(err, PCBM_ERR_IO, "cannot access model %s: %s; check the path", spec,
                         strerror(errno));
    char root[3072], repo[4096];
    cache_root(root, sizeof root);
    snprintf(repo, sizeof repo, "%s/models--%.*s--%.*s", root, (int)slash, spec,
             (int)(at - slash - 1), spec + slash + 1);
    if (!is_dir(repo))
        return pcbm_fail(err, PCBM_ERR_IO, "model %s is neither a path nor in the local Hugging "
                         "Face cache (looked for %s; the cache is $HF_HUB_CACHE, else "
                         "$HF_HOME/hub, else ~/.cache/huggingface/hub): download it first, or "
                         "give the model's directory", spec, repo);
    return snapshot_of(repo, spec[at] == '@' ? spec + at + 1 : "main", spec, out, err);
}

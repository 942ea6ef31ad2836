/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manifest.c — file hashes for the manifest, and pcbm_verify(): recompute and compare them.
 */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define HASH_READ_BYTES (8u << 20)

/* xxh3-128 of a whole file as 32 hex digits; its size in *size. */
static pcbm_status hash_file(const char *path, char hex[33], uint64_t *size, pcbm_error *err)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t *buf = pcbm_malloc(HASH_READ_BYTES);
    XXH3_state_t *st = XXH3_createState();
    pcbm_status rc = PCBM_OK;
    uint64_t total = 0;
    if (!buf || !st) {
        rc = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    } else {
        XXH3_128bits_reset(st);
        for (;;) {
            ssize_t n = read(fd, buf, HASH_READ_BYTES);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = pcbm_fail(err, PCBM_ERR_IO, "read error in %s at offset %llu: %s", path,
                               (unsigned long long)total, strerror(errno));
                break;
            }
            if (n == 0)
                break;
            XXH3_128bits_update(st, buf, (size_t)n);
            total += (uint64_t)n;
        }
        XXH128_hash_t d = XXH3_128bits_digest(st);
        snprintf(hex, 33, "%016llx%016llx", (unsigned long long)d.high64, (unsigned long long)d.low64);
    }
    *size = total;
    XXH3_freeState(st);
    free(buf);
    close(fd);
    return rc;
}

static bool listed(const json_t *files, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(files, i, v) {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

pcbm_status pcbm_manifest_add_small_files(const char *dir, const char *const *names, size_t n,
                                          json_t *files, pcbm_error *err)
{
    const char **sorted = pcbm_malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    memcpy(sorted, names, n * sizeof *sorted);
    if (n)
        qsort(sorted, n, sizeof *sorted, cmp_str);
    pcbm_status st = PCBM_OK;
    for (size_t i = 0; i < n && st == PCBM_OK; i++) {
        if ((i && !strcmp(sorted[i], sorted[i - 1])) || listed(files, sorted[i]))
            continue;
        char path[4096], hex[33];
        uint64_t size = 0;
        snprintf(path, sizeof path, "%s/%s", dir, sorted[i]);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if ((st = hash_file(path, hex, &size, err)) == PCBM_OK)
            json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "name", sorted[i], "size",
                                                   (json_int_t)size, "xxh3_128", hex));
    }
    free(sorted);
    return st;
}

/* Entries of dir the manifest does not list (the manifest itself and the directory's own
 * entries aside): each is reported as unexpected. */
static unsigned report_unlisted(const char *dir, const json_t *files, pcbm_verify_fn report,
                                void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, PCBM_MANIFEST_NAME) || listed(files, de->d_name))
            continue;
        report(arg, de->d_name, "(not in the manifest)", "present");
        n++;
    }
    closedir(d);
    return n;
}

static void report_nothing(void *arg, const char *file, const char *expected, const char *found)
{
    (void)arg, (void)file, (void)expected, (void)found;
}

pcbm_status pcbm_verify(const char *dir, pcbm_verify_fn report, void *arg, unsigned *bad,
                        pcbm_error *err)
{
    if (!report) /* the count alone */
        report = report_nothing;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, PCBM_MANIFEST_NAME);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    *bad = 0;
    if (!root)
        return pcbm_fail(err, access(path, F_OK) ? PCBM_ERR_IO : PCBM_ERR_FORMAT,
                         "cannot read the manifest %s: %s (is %s a directory written by "
                         "pcbmerge merge?)", path, je.text, dir);
    json_t *files = json_object_get(root, "files");
    if (!json_is_array(files) || json_array_size(files) == 0) {
        json_decref(root);
        return pcbm_fail(err, PCBM_ERR_FORMAT, "the manifest %s lists no files: it cannot vouch "
                         "for anything in %s", path, dir);
    }
    size_t i;
    json_t *v;
    pcbm_status st = PCBM_OK;
    json_array_foreach(files, i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *want = json_string_value(json_object_get(v, "xxh3_128"));
        if (!name || !want || strchr(name, '/')) {
            st = pcbm_fail(err, PCBM_ERR_FORMAT, "the manifest %s has a malformed entry %zu", path, i);
            break;
        }
        char fp[4096], hex[33];
        uint64_t size = 0;
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        pcbm_error e2;
        struct stat sb;
        if (lstat(fp, &sb) != 0) {
            report(arg, name, want, "(missing)");
            (*bad)++;
        } else if (!S_ISREG(sb.st_mode)) {
            report(arg, name, want, "(not a plain file)");
            (*bad)++;
        } else if (access(fp, F_OK) != 0) {
            report(arg, name, want, "(missing)");
            (*bad)++;
        } else if (hash_file(fp, hex, &size, &e2) != PCBM_OK) {
            report(arg, name, want, e2.msg);
            (*bad)++;
        } else if (strcmp(hex, want) != 0) {
            report(arg, name, want, hex);
            (*bad)++;
        }
    }
    if (st == PCBM_OK)
        *bad += report_unlisted(dir, files, report, arg);
    json_decref(root);
    return st;
}

pcbm_status pcbm_manifest_append(const char *dir, const char *const *names, size_t n,
                                 pcbm_error *err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, PCBM_MANIFEST_NAME);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    json_t *files = json_object_get(root, "files");
    if (!json_is_array(files)) {
        json_decref(root);
        return pcbm_fail(err, PCBM_ERR_FORMAT, "cannot read the manifest %s: %s", path, je.text);
    }
    pcbm_status st = pcbm_manifest_add_small_files(dir, names, n, files, err);
    char *txt = st == PCBM_OK ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (st != PCBM_OK)
        return st;
    if (!txt)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    int wr = fd < 0 ? -errno : pcbm_write_all(fd, txt, strlen(txt));
    if (wr == 0 && fsync(fd) != 0)
        wr = -errno;
    if (fd >= 0)
        close(fd);
    free(txt);
    if (wr == 0 && rename(tmp, path) != 0)
        wr = -errno;
    if (wr != 0) {
        unlink(tmp);
        return pcbm_fail(err, wr == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot rewrite the manifest %s: %s", path, strerror(-wr));
    }
    return PCBM_OK;
}

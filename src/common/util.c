/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.c — file-system and parameter helpers shared by the merge, the split merge and the
 * coefficient search: reading exactly n bytes at an offset, removing a tree, taking the exclusive
 * lock of a lock file (or directory), and naming the first parameter that differs between two
 * canonical JSON parameter objects.
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int pcbm_pread_full(int fd, void *buf, size_t len, uint64_t off, uint64_t *done)
{
    size_t got = 0;
    int rc = 0;
    while (got < len) {
        ssize_t r = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? errno : -1;
            break;
        }
        got += (size_t)r;
    }
    if (done)
        *done = got;
    return rc;
}

int pcbm_empty_dirfd(int fd, const char *keep)
{
    int dup_fd = dup(fd);
    if (dup_fd < 0)
        return -errno;
    DIR *d = fdopendir(dup_fd);
    if (!d) {
        int e = errno;
        close(dup_fd);
        return -e;
    }
    rewinddir(d);
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            (keep && !strcmp(de->d_name, keep)))
            continue;
        rc = pcbm_remove_at(fd, de->d_name);
    }
    closedir(d);
    return rc;
}

int pcbm_remove_at(int dfd, const char *name)
{
    struct stat sb;
    if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (S_ISDIR(sb.st_mode)) {
        int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
            return -errno;
        int rc = pcbm_empty_dirfd(sub, NULL);
        close(sub);
        if (rc)
            return rc;
        return unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : -errno;
    }
    return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : -errno;
}

int pcbm_remove_contents(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = pcbm_empty_dirfd(fd, NULL);
    close(fd);
    return rc;
}

int pcbm_remove_tree(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    char *dir = strndup(path, n);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    char *name = strdup(slash ? slash + 1 : dir);
    if (!name) {
        free(dir);
        return -ENOMEM;
    }
    const char *parent = !slash ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = pfd < 0 ? (errno == ENOENT ? 0 : -errno) : pcbm_remove_at(pfd, name);
    if (pfd >= 0)
        close(pfd);
    free(name);
    free(dir);
    return rc;
}

int pcbm_lock_file(const char *path, int flags, int *fd)
{
    *fd = open(path, flags | O_CLOEXEC, 0644);
    if (*fd < 0)
        return -errno;
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return -e;
    }
    return 0;
}

/* The key's values as compact JSON text ("(none)" when absent). */
static void dump_value(const json_t *v, char *out, size_t len)
{
    char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    snprintf(out, len, "%s", v ? (s ? s : "?") : "(none)");
    free(s);
}

int pcbm_params_differ(const char *a, const char *b, const char *first, char *key, size_t keylen,
                       char *desc, size_t desclen)
{
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    const char *k = NULL, *it;
    json_t *va;
    if (key && keylen)
        snprintf(key, keylen, "%s", ja && jb ? "format" : "unreadable parameters");
    if (desc && desclen)
        snprintf(desc, desclen, "parameters differ");
    if (!ja || !jb) {
        json_decref(ja);
        json_decref(jb);
        return 1;
    }
    /* `first` (the method): when it differs, every other difference follows from it */
    if (first && json_object_get(ja, first) && json_object_get(jb, first) &&
        !json_equal(json_object_get(ja, first), json_object_get(jb, first)))
        k = first;
    json_object_foreach(ja, it, va) {
        if (k)
            break;
        if (!json_equal(va, json_object_get(jb, it)))
            k = it;
    }
    int differ = k != NULL || !json_equal(ja, jb);
    if (k) {
        char sa[256], sb[256];
        dump_value(json_object_get(ja, k), sa, sizeof sa);
        dump_value(json_object_get(jb, k), sb, sizeof sb);
        if (key && keylen)
            snprintf(key, keylen, "%s", k);
        if (desc && desclen && json_is_string(json_object_get(ja, k)) &&
            json_is_string(json_object_get(jb, k)) && first && !strcmp(k, first))
            snprintf(desc, desclen, "%s %s there, %s here", k,
                     json_string_value(json_object_get(ja, k)),
                     json_string_value(json_object_get(jb, k)));
        else if (desc && desclen)
            snprintf(desc, desclen, "%s %s there, %s here", k, sa, sb);
    }
    json_decref(ja);
    json_decref(jb);
    return differ;
}

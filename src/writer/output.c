/* SPDX-License-Identifier: Apache-2.0 */
/*
 * output.c — the output directory is the tool's own and nothing else. OUT.partial is created with
 * a marker, opened once without following links (O_DIRECTORY|O_NOFOLLOW) and flock'ed; every
 * file in it is created, opened and removed relative to that descriptor (openat/unlinkat,
 * O_NOFOLLOW), so a link planted at OUT.partial or inside it is refused or removed, never
 * followed. Also the free-space check, small whole-file writes and the atomic publication.
 */
#include "output.h"
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PARTIAL_SUFFIX ".partial"

static char *parent_of(const char *path)
{
    char *tmp = pcbm_strdup(path);
    if (!tmp)
        return NULL;
    char *par = pcbm_strdup(dirname(tmp));
    free(tmp);
    return par;
}

/* ---- what OUT.partial holds --------------------------------------------------------------- */

static bool is_plain_file_at(int dfd, const char *name)
{
    struct stat sb;
    return fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
}

/* A partial killed while publishing has no marker but a manifest of ours (the publication checks
 * it against the inputs, parameters and files before renaming anything). */
static bool has_our_manifest(int dfd)
{
    if (!is_plain_file_at(dfd, PCBM_MANIFEST_NAME))
        return false;
    int fd = openat(dfd, PCBM_MANIFEST_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    json_t *root = json_loadfd(fd, 0, NULL);
    close(fd);
    const char *tool = json_string_value(json_object_get(root, "tool"));
    bool ours = tool && !strcmp(tool, "pcbmerge");
    json_decref(root);
    return ours;
}

/* Remove what a resume must not write through or trust: links, FIFOs, sockets, devices, and
 * plain files with other hard links (their bytes belong to another name too). Directories are
 * swept the same way. */
static int sanitize_dirfd(int fd)
{
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        int e = errno;
        if (dup_fd >= 0)
            close(dup_fd);
        return -e;
    }
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat sb;
        if (fstatat(fd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            int sub = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            rc = sub < 0 ? -errno : sanitize_dirfd(sub);
            if (sub >= 0)
                close(sub);
        } else if (!S_ISREG(sb.st_mode) || sb.st_nlink > 1) {
            rc = pcbm_remove_at(fd, de->d_name);
        }
    }
    closedir(d);
    return rc;
}

/* ---- begin --------------------------------------------------------------------------------- */

/* One run at a time per partial directory: batch systems do launch a job twice. */
static pcbm_status open_partial(pcbm_outdir *od, pcbm_error *err)
{
    int rc = pcbm_lock_file(od->partial, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, &od->dirfd);
    if (rc == -EWOULDBLOCK)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "another pcbmerge is writing %s right now: wait for "
                         "it to finish (or stop it) before resuming", od->partial);
    if (rc)
        return pcbm_fail(err, rc == -ELOOP || rc == -ENOTDIR ? PCBM_ERR_EXISTS : PCBM_ERR_IO,
                         "cannot open %s: %s; pcbmerge writes only into a directory it created "
                         "itself", od->partial, strerror(-rc));
    return PCBM_OK;
}

/* OUT and OUT.partial named, nothing created or locked (the phases of a split merge). */
pcbm_status pcbm_outdir_attach(pcbm_outdir *od, const char *out, pcbm_error *err)
{
    memset(od, 0, sizeof *od);
    od->dirfd = -1;
    size_t n = out ? strlen(out) : 0;
    while (n > 1 && out[n - 1] == '/')
        n--;
    if (n == 0)
        return pcbm_fail(err, PCBM_ERR_USAGE, "the output directory's name is empty: give the "
                         "directory to create (for example merged/)");
    od->final = strndup(out, n);
    od->partial = pcbm_malloc(n + sizeof PARTIAL_SUFFIX);
    if (!od->final || !od->partial)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    memcpy(od->partial, od->final, n);
    memcpy(od->partial + n, PARTIAL_SUFFIX, sizeof PARTIAL_SUFFIX);
    return PCBM_OK;
}

static pcbm_status create_partial(pcbm_outdir *od, pcbm_error *err)
{
    if (mkdir(od->partial, 0755) != 0) {
        int e = errno;
        return pcbm_fail(err, e == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s: %s%s", od->partial, strerror(e),
                         e == ENOENT ? " (does the parent directory exist?)" : "");
    }
    pcbm_status st = open_partial(od, err);
    if (st == PCBM_OK)
        st = pcbm_outdir_write(od, PCBM_PARTIAL_MARKER, "pcbmerge partial output\n", 24, err);
    return st;
}

/* An existing OUT.partial (lstat'ed as sb): ours or refused. */
static pcbm_status reuse_partial(pcbm_outdir *od, const struct stat *sb, int force, int resume,
                                 bool *existed, pcbm_error *err)
{
    if (S_ISLNK(sb->st_mode))
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s is a symbolic link: pcbmerge never writes "
                         "through one; remove the link or choose another output directory",
                         od->partial);
    if (!S_ISDIR(sb->st_mode))
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s exists and is not a directory: move it away "
                         "or choose another output directory", od->partial);
    pcbm_status st = open_partial(od, err);
    if (st != PCBM_OK)
        return st;
    bool marked = is_plain_file_at(od->dirfd, PCBM_PARTIAL_MARKER);
    if (!marked && !has_our_manifest(od->dirfd))
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s exists but is not a partial output of "
                         "pcbmerge (it lacks the %s marker pcbmerge writes into every partial "
                         "output): it is left as it is; move it away or choose another output "
                         "directory", od->partial, PCBM_PARTIAL_MARKER);
    if (!force && !resume)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "%s holds an unfinished earlier merge into %s: "
                         "continue it with `resume`, or discard it and start over with `force`",
                         od->partial, od->final);
    int rc = force ? pcbm_empty_dirfd(od->dirfd, PCBM_PARTIAL_MARKER) : sanitize_dirfd(od->dirfd);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot %s %s: %s", force ? "empty" : "clean",
                         od->partial, strerror(-rc));
    if (force && !marked)
        return pcbm_outdir_write(od, PCBM_PARTIAL_MARKER, "pcbmerge partial output\n", 24, err);
    *existed = !force;
    return PCBM_OK;
}

pcbm_status pcbm_outdir_begin(pcbm_outdir *od, const char *out, int force, int resume,
                              bool *existed, pcbm_error *err)
{
    *existed = false;
    pcbm_status ast = pcbm_outdir_attach(od, out, err);
    if (ast != PCBM_OK)
        return ast;
    struct stat sb;
    if (lstat(od->final, &sb) == 0)
        return pcbm_fail(err, PCBM_ERR_EXISTS,
                         "output %s already exists: choose another output directory or remove "
                         "it first", od->final);
    if (lstat(od->partial, &sb) == 0)
        return reuse_partial(od, &sb, force, resume, existed, err);
    return create_partial(od, err);
}

pcbm_status pcbm_outdir_reset(pcbm_outdir *od, pcbm_error *err)
{
    int rc = od->dirfd >= 0 ? pcbm_empty_dirfd(od->dirfd, PCBM_PARTIAL_MARKER) : -EBADF;
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot empty %s: %s", od->partial, strerror(-rc));
    if (!is_plain_file_at(od->dirfd, PCBM_PARTIAL_MARKER))
        return pcbm_outdir_write(od, PCBM_PARTIAL_MARKER, "pcbmerge partial output\n", 24, err);
    return PCBM_OK;
}

pcbm_status pcbm_outdir_check_space(const pcbm_outdir *od, uint64_t need, pcbm_error *err)
{
    struct statvfs vf;
    if (statvfs(od->partial, &vf) != 0)
        return PCBM_OK; /* cannot tell: the writes will say */
    uint64_t avail = (uint64_t)vf.f_bavail * vf.f_frsize;
    if (avail >= need)
        return PCBM_OK;
    char a[32], b[32];
    return pcbm_fail(err, PCBM_ERR_NOSPACE,
                     "not enough free space for the output in %s: the merged model needs %s, "
                     "the filesystem has %s free; free space or choose another output directory",
                     od->partial, pcbm_fmt_bytes(need, a, sizeof a), pcbm_fmt_bytes(avail, b, sizeof b));
}

/* ---- files inside ------------------------------------------------------------------------- */

/* The partial directory's descriptor: the locked one, or (attached only) one opened now into
 * *tmp, to be closed by the caller. */
static int partial_fd(const pcbm_outdir *od, int *tmp)
{
    *tmp = -1;
    if (od->dirfd >= 0)
        return od->dirfd;
    *tmp = open(od->partial, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return *tmp;
}

/* Create file `name` of the partial directory anew (an earlier entry of that name removed, a link
 * never followed) for writing; the fd, or -errno. */
static int create_in_partial(const pcbm_outdir *od, const char *name)
{
    int tmp, dfd = partial_fd(od, &tmp);
    if (dfd < 0)
        return -errno;
    int fd = pcbm_remove_at(dfd, name);
    if (fd == 0) {
        fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
            fd = -errno;
    }
    if (tmp >= 0)
        close(tmp);
    return fd;
}

pcbm_status pcbm_outdir_write(const pcbm_outdir *od, const char *name, const void *buf, size_t len,
                              pcbm_error *err)
{
    int fd = create_in_partial(od, name);
    if (fd < 0)
        return pcbm_fail(err, fd == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s/%s: %s", od->partial, name, strerror(-fd));
    int wr = pcbm_write_all(fd, buf, len);
    if (wr < 0) {
        close(fd);
        return pcbm_fail(err, wr == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "write error in %s/%s: %s", od->partial, name, strerror(-wr));
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot fsync %s/%s: %s", od->partial, name,
                         strerror(e));
    }
    close(fd);
    return PCBM_OK;
}

/* ---- publication --------------------------------------------------------------------------- */

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

pcbm_status pcbm_outdir_publish(pcbm_outdir *od, pcbm_error *err)
{
    int tmp, dfd = partial_fd(od, &tmp);
    if (dfd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s", od->partial, strerror(errno));
    int rc = unlinkat(dfd, PCBM_PARTIAL_MARKER, 0) == 0 || errno == ENOENT ? 0 : -errno;
    if (!rc)
        rc = fsync(dfd) == 0 ? 0 : -errno;
    if (tmp >= 0)
        close(tmp);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot prepare %s for publication: %s", od->partial,
                         strerror(-rc));
    if (rename(od->partial, od->final) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot rename %s to %s: %s", od->partial, od->final,
                         strerror(errno));
    char *par = parent_of(od->final);
    if (par) {
        fsync_dir(par);
        free(par);
    }
    return PCBM_OK;
}

void pcbm_outdir_discard(pcbm_outdir *od)
{
    if (od->partial)
        pcbm_remove_tree(od->partial);
}

void pcbm_outdir_free(pcbm_outdir *od)
{
    if (od->dirfd >= 0)
        close(od->dirfd);
    free(od->final);
    free(od->partial);
    memset(od, 0, sizeof *od);
    od->dirfd = -1;
}

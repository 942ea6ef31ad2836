/*
 * output.c — partial directory, free-space check, small file writes and atomic publication.
 */
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* One run at a time per partial directory: batch systems do launch a job twice. */
static pcbm_status lock_partial(pcbm_outdir *od, pcbm_error *err)
{
    int rc = pcbm_lock_file(od->partial, O_RDONLY | O_DIRECTORY, &od->lock_fd);
    if (rc == -EWOULDBLOCK)
        return pcbm_fail(err, PCBM_ERR_EXISTS, "another pcbmerge is writing %s right now: wait for "
                         "it to finish (or stop it) before resuming", od->partial);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open or lock %s: %s", od->partial, strerror(-rc));
    return PCBM_OK;
}

/* OUT and OUT.partial named, nothing created or locked (the phases of a split merge). */
pcbm_status pcbm_outdir_attach(pcbm_outdir *od, const char *out, pcbm_error *err)
{
    memset(od, 0, sizeof *od);
    od->lock_fd = -1;
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        n--;
    od->final = strndup(out, n);
    od->partial = pcbm_malloc(n + sizeof PARTIAL_SUFFIX);
    if (!od->final || !od->partial)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    memcpy(od->partial, od->final, n);
    memcpy(od->partial + n, PARTIAL_SUFFIX, sizeof PARTIAL_SUFFIX);
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
    if (stat(od->final, &sb) == 0)
        return pcbm_fail(err, PCBM_ERR_EXISTS,
                         "output %s already exists: choose another --out or remove it first",
                         od->final);
    if (stat(od->partial, &sb) == 0) {
        pcbm_status st = lock_partial(od, err);
        if (st != PCBM_OK)
            return st;
        if (resume && !force) {
            *existed = true;
            return PCBM_OK;
        }
        if (!force)
            return pcbm_fail(err, PCBM_ERR_EXISTS,
                             "%s holds an unfinished earlier merge into %s: pass --resume to "
                             "continue it, or --force to discard it and start over",
                             od->partial, od->final);
        int rc = pcbm_remove_contents(od->partial);
        if (rc)
            return pcbm_fail(err, PCBM_ERR_IO, "cannot empty %s: %s", od->partial, strerror(-rc));
        return PCBM_OK;
    }
    if (mkdir(od->partial, 0755) != 0) {
        int e = errno;
        return pcbm_fail(err, e == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s: %s%s", od->partial, strerror(e),
                         e == ENOENT ? " (does the parent directory exist?)" : "");
    }
    return lock_partial(od, err);
}

pcbm_status pcbm_outdir_reset(pcbm_outdir *od, pcbm_error *err)
{
    int rc = pcbm_remove_contents(od->partial);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot empty %s: %s", od->partial, strerror(-rc));
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
                     "the filesystem has %s free; free space or choose another --out",
                     od->partial, pcbm_fmt_bytes(need, a, sizeof a), pcbm_fmt_bytes(avail, b, sizeof b));
}

pcbm_status pcbm_outdir_write(const pcbm_outdir *od, const char *name, const void *buf, size_t len,
                              pcbm_error *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", od->partial, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s: %s", p, strerror(errno));
    int wr = pcbm_write_all(fd, buf, len);
    if (wr < 0) {
        close(fd);
        return pcbm_fail(err, wr == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "write error in %s: %s", p, strerror(-wr));
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot fsync %s: %s", p, strerror(e));
    }
    close(fd);
    return PCBM_OK;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

pcbm_status pcbm_outdir_publish(pcbm_outdir *od, pcbm_error *err)
{
    int rc = fsync_dir(od->partial);
    if (rc)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot fsync %s: %s", od->partial, strerror(-rc));
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
    if (od->lock_fd >= 0)
        close(od->lock_fd);
    free(od->final);
    free(od->partial);
    memset(od, 0, sizeof *od);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io.c — choosing a backend (io_uring, or the pread pool when io_uring is refused), wrapping it
 * with PCBM_FAULT when set, and opening files with O_DIRECT where the filesystem allows it.
 */
#include "io.h"
#include "../common/seams.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIO_DEFAULT_ALIGN 4096

static pcbm_status fault_cfg(pcbm_fault_cfg *cfg, pcbm_error *err)
{
    char why[512];
    int rc = pcbm_io_fault_parse(pcbm_seams_get()->fault, cfg, why, sizeof why);
    if (rc == -ENOMEM)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "%s", why);
    return rc < 0 ? pcbm_fail(err, PCBM_ERR_USAGE, "%s", why) : PCBM_OK;
}

/* PCBM_IO_THREADS: the pread pool's size (0 = automatic). */
static pcbm_status pool_threads(unsigned *threads, pcbm_error *err)
{
    const char *s = pcbm_seams_get()->io_threads;
    *threads = 0;
    if (!s || !*s)
        return PCBM_OK;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 1 || v > (long)PCBM_IO_MAX_THREADS)
        return pcbm_fail(err, PCBM_ERR_USAGE,
                         "PCBM_IO_THREADS=%s is not a thread count from 1 to %u; unset it or fix it",
                         s, PCBM_IO_MAX_THREADS);
    *threads = (unsigned)v;
    return PCBM_OK;
}

static pcbm_status open_pool(unsigned depth, const pcbm_fault_cfg *cfg, pcbm_io **io,
                             pcbm_error *err)
{
    unsigned threads;
    pcbm_status st = pool_threads(&threads, err);
    if (st != PCBM_OK)
        return st;
    int rc = pcbm_io_pread_create(depth, threads, cfg->max_xfer, io);
    if (rc == -ENOMEM)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory starting the pread I/O thread pool");
    if (rc < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "could not start the pread I/O thread pool: %s",
                         strerror(-rc));
    return PCBM_OK;
}

pcbm_status pcbm_io_open(pcbm_io_kind kind, unsigned depth, pcbm_io **out, char *note,
                         size_t notelen, pcbm_error *err)
{
    *out = NULL;
    if (note && notelen)
        note[0] = '\0';
    if (depth == 0)
        return pcbm_fail(err, PCBM_ERR_USAGE, "I/O queue depth 0 is invalid; use at least 1");
    pcbm_fault_cfg cfg;
    pcbm_status st = fault_cfg(&cfg, err);
    if (st != PCBM_OK)
        return st;
    pcbm_io *io = NULL;
    if (kind != PCBM_IO_PREAD) { /* auto and mmap: io_uring for what is not mapped */
        char why[512];
        int rc = pcbm_io_uring_create(depth, cfg.max_xfer, cfg.uring_setup_errno, &io, why,
                                      sizeof why);
        if (rc < 0 && kind == PCBM_IO_URING)
            return pcbm_fail(err, PCBM_ERR_UNSUPPORTED,
                             "io_uring unavailable (%s); set `io` to pread or auto", why);
        if (rc < 0 && note && notelen)
            snprintf(note, notelen, "io_uring unavailable (%s); using the pread thread pool", why);
    }
    if (!io && (st = open_pool(depth, &cfg, &io, err)) != PCBM_OK)
        return st;
    if (cfg.nrules && pcbm_io_fault_wrap(io, &cfg, &io) < 0)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory setting up PCBM_FAULT");
    *out = io;
    return PCBM_OK;
}

void pcbm_io_close(pcbm_io *io)
{
    if (io)
        io->ops->destroy(io);
}

/* ---- Files ------------------------------------------------------------------------------ */

static bool odirect_faked_away(void)
{
    pcbm_fault_cfg cfg;
    char why[512];
    return pcbm_io_fault_parse(pcbm_seams_get()->fault, &cfg, why, sizeof why) == 0 &&
           cfg.odirect_einval;
}

int pcbm_open_read(const char *path, bool want_direct, bool *direct)
{
    int flags = O_RDONLY | O_CLOEXEC;
    bool dio = want_direct && !odirect_faked_away();
    int fd = open(path, flags | (dio ? O_DIRECT : 0));
    if (fd < 0 && dio && errno == EINVAL) { /* the filesystem lacks O_DIRECT: buffered */
        dio = false;
        fd = open(path, flags);
    }
    if (fd < 0)
        return -errno;
    if (direct)
        *direct = dio;
    return fd;
}

/*
 * open(O_CREAT|O_EXCL|O_DIRECT) creates the file before the kernel refuses O_DIRECT, and a retry
 * would then meet EEXIST; so create the file buffered and switch O_DIRECT on with F_SETFL (which
 * makes the same filesystem check).
 */
int pcbm_open_write(const char *path, bool want_direct, bool *direct)
{
    return pcbm_open_write_mode(path, want_direct, false, direct);
}

int pcbm_open_write_mode(const char *path, bool want_direct, bool existing, bool *direct)
{
    /* O_NOFOLLOW: an output file is never written through a link planted in its place */
    int fd = open(path, existing ? (O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC)
                                 : (O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC),
                  0644);
    if (fd < 0)
        return -errno;
    bool dio = false;
    if (want_direct && !odirect_faked_away()) {
        int fl = fcntl(fd, F_GETFL);
        dio = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
        if (!dio && errno != EINVAL) {
            int e = errno;
            close(fd);
            if (!existing)
                unlink(path);
            return -e;
        }
    }
    if (direct)
        *direct = dio;
    return fd;
}

int pcbm_io_dio_align(int fd)
{
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
        stx.stx_dio_offset_align > 0)
        return (int)PCBM_MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
#else
    PCBM_UNUSED(fd);
#endif
    return DIO_DEFAULT_ALIGN;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * st_read.c — reading one safetensors file from disk: size and type checks, the 8-byte prefix
 * and the header bytes (never the data), the header hash, then st_header.c's validation.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static pcbm_status read_fail(const char *path, int rc, uint64_t off, pcbm_error *err)
{
    if (rc < 0)
        return pcbm_fail(err, PCBM_ERR_IO,
                         "%s: unexpected end of file at byte %llu while reading the header (was "
                         "the file changed while it was read?); check the file and retry",
                         path, (unsigned long long)off);
    return pcbm_fail(err, PCBM_ERR_IO, "%s: read failed at byte %llu: %s; check the disk and "
                     "retry", path, (unsigned long long)off, strerror(rc));
}

static pcbm_status open_regular(const char *path, int *fd, uint64_t *size, pcbm_error *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
    if (*fd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s; check the path and its "
                         "permissions", path, strerror(errno));
    struct stat sb;
    if (fstat(*fd, &sb) != 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) {
        const char *kind = S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO"
                           : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device"
                           : S_ISSOCK(sb.st_mode) ? "a socket" : "not a file";
        return pcbm_fail(err, PCBM_ERR_FORMAT, "%s is %s, not a regular file: a safetensors "
                         "file (or shard) must be a plain file; replace it with the real file",
                         path, kind);
    }
    *size = (uint64_t)sb.st_size;
    return PCBM_OK;
}

#define HEADER_CHUNK (256u << 10) /* header bytes read and parsed at a time */

/* Read the prefix, then stream the N header bytes through the parser in chunks, hashing them:
 * a 10 MB header of an MoE checkpoint is never held whole. */
static pcbm_status read_header(int fd, const char *path, uint64_t size, pcbm_st_header *out,
                               uint64_t *n, uint64_t *hash, pcbm_error *err)
{
    uint8_t prefix[8] = {0};
    int rc = size >= 8 ? pcbm_pread_full(fd, prefix, 8, 0, NULL) : 0;
    if (rc)
        return read_fail(path, rc, 0, err);
    pcbm_status st = pcbm_st_check_prefix(prefix, size, path, n, err);
    if (st)
        return st;
    uint8_t *buf = pcbm_malloc((size_t)PCBM_MIN(*n, HEADER_CHUNK) + 1);
    XXH3_state_t *xs = XXH3_createState();
    pcbm_st_parser *p = NULL;
    if (!buf || !xs)
        st = pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory reading the header", path);
    if (!st)
        st = pcbm_st_parser_new(*n, size, path, out, &p, err);
    if (!st) {
        XXH3_64bits_reset(xs);
        XXH3_64bits_update(xs, prefix, 8);
    }
    for (uint64_t at = 0; !st && at < *n;) {
        size_t len = (size_t)PCBM_MIN(*n - at, HEADER_CHUNK);
        if ((rc = pcbm_pread_full(fd, buf, len, 8 + at, NULL)) != 0) {
            pcbm_st_parser_abort(p);
            st = read_fail(path, rc, 8 + at, err);
            break;
        }
        XXH3_64bits_update(xs, buf, len);
        st = pcbm_st_parser_feed(p, buf, len, err);
        at += len;
    }
    if (!st)
        st = pcbm_st_parser_finish(p, err);
    if (!st)
        *hash = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    free(buf);
    return st;
}

pcbm_status pcbm_st_read_file(const char *path, const char *name, pcbm_st_file *file,
                              pcbm_st_header *out, pcbm_error *err)
{
    memset(file, 0, sizeof *file);
    memset(out, 0, sizeof *out);
    int fd = -1;
    uint64_t size = 0, n = 0, hash = 0;
    pcbm_status st = open_regular(path, &fd, &size, err);
    if (!st)
        st = read_header(fd, path, size, out, &n, &hash, err);
    if (fd >= 0)
        close(fd);
    if (!st) {
        file->path = pcbm_strdup(path);
        file->name = pcbm_strdup(name);
        file->size = size;
        file->data_start = 8 + n;
        file->header_hash = hash;
        if (!file->path || !file->name)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (st) {
        pcbm_st_file_free(file);
        pcbm_st_header_free(out);
    }
    return st;
}

void pcbm_st_file_free(pcbm_st_file *f)
{
    if (!f)
        return;
    free(f->path);
    free(f->name);
    f->path = f->name = NULL;
}

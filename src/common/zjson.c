/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zjson.c — zstd-compressed, checksummed JSON documents and binary blobs written atomically.
 */
#include "zjson.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define ZJSON_MAX_BYTES (1u << 30) /* decompressed; far above any real file */

static void fsync_parent(const char *path)
{
    char *tmp = pcbm_strdup(path);
    if (!tmp)
        return;
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(tmp);
}

/* Compress buf (zstd, frame checksum on) and write it to path atomically. */
static pcbm_status write_frame(const char *path, const void *buf, size_t n, const char *what,
                               pcbm_error *err)
{
    size_t cap = ZSTD_compressBound(n);
    void *z = pcbm_malloc(cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t zn = 0;
    if (z && cc) {
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
        zn = ZSTD_compress2(cc, z, cap, buf, n);
    }
    ZSTD_freeCCtx(cc);
    if (!z || ZSTD_isError(zn)) {
        free(z);
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "cannot compress the %s %s", what, path);
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    pcbm_status st = PCBM_OK;
    if (fd < 0)
        st = pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                       "cannot create %s: %s", tmp, strerror(errno));
    int wr = st == PCBM_OK ? pcbm_write_all(fd, z, zn) : 0;
    if (wr < 0)
        st = pcbm_fail(err, wr == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO, "cannot write %s: %s",
                       tmp, strerror(-wr));
    if (st == PCBM_OK && fsync(fd) != 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "cannot fsync %s: %s", tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (st == PCBM_OK && rename(tmp, path) != 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (st == PCBM_OK)
        fsync_parent(path);
    else
        unlink(tmp);
    free(z);
    return st;
}

pcbm_status pcbm_zjson_write(const char *path, json_t *root, const char *what, pcbm_error *err)
{
    char *txt = json_dumps(root, JSON_COMPACT);
    if (!txt)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing the %s %s", what, path);
    pcbm_status st = write_frame(path, txt, strlen(txt), what, err);
    free(txt);
    return st;
}

pcbm_status pcbm_zblob_write(const char *path, const void *const *parts, const size_t *sizes,
                             unsigned nparts, const char *what, pcbm_error *err)
{
    size_t n = 0;
    for (unsigned k = 0; k < nparts; k++)
        n += sizes[k];
    uint8_t *buf = pcbm_malloc(n ? n : 1);
    if (!buf)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing the %s %s", what, path);
    size_t at = 0;
    for (unsigned k = 0; k < nparts; k++) {
        if (sizes[k])
            memcpy(buf + at, parts[k], sizes[k]);
        at += sizes[k];
    }
    pcbm_status st = write_frame(path, buf, n, what, err);
    free(buf);
    return st;
}

static pcbm_status read_file(const char *path, const char *what, void **buf, size_t *len,
                             pcbm_error *err)
{
    /* O_NONBLOCK: a FIFO (or a device) named here must not block the open forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open the %s %s: %s", what, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return pcbm_fail(err, PCBM_ERR_IO, "the %s %s is not a regular file: give the file "
                         "pcbmerge wrote", what, path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open the %s %s: %s", what, path, strerror(e));
    }
    size_t cap = 1 << 16, n = 0;
    char *b = pcbm_malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = cap >= ZJSON_MAX_BYTES ? NULL : pcbm_realloc(b, cap *= 2);
        if (!nb)
            free(b);
        b = nb;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        return pcbm_fail(err, PCBM_ERR_IO, "cannot read the %s %s", what, path);
    }
    *buf = b;
    *len = n;
    return PCBM_OK;
}

/* Read and decompress a frame written by write_frame; every layer checked. */
static pcbm_status read_frame(const char *path, const char *what, char **out, size_t *len,
                              pcbm_error *err)
{
    void *z = NULL;
    size_t zn = 0;
    pcbm_status st = read_file(path, what, &z, &zn, err);
    if (st != PCBM_OK)
        return st;
    unsigned long long size = ZSTD_getFrameContentSize(z, zn);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > ZJSON_MAX_BYTES) {
        free(z);
        return pcbm_fail(err, PCBM_ERR_STATS, "%s is not a pcbmerge %s (not a zstd frame of "
                         "known size)", path, what);
    }
    char *txt = pcbm_malloc((size_t)size + 1);
    size_t n = txt ? ZSTD_decompress(txt, (size_t)size, z, zn) : 0;
    free(z);
    if (!txt)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory reading %s", path);
    if (ZSTD_isError(n) || n != size) {
        free(txt);
        return pcbm_fail(err, PCBM_ERR_STATS, "the %s %s is damaged (%s)", what, path,
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
    }
    txt[n] = '\0';
    *out = txt;
    *len = n;
    return PCBM_OK;
}

pcbm_status pcbm_zjson_read(const char *path, json_t **root, const char *what, pcbm_error *err)
{
    char *txt = NULL;
    size_t n = 0;
    pcbm_status st = read_frame(path, what, &txt, &n, err);
    if (st != PCBM_OK)
        return st;
    json_error_t je;
    *root = json_loads(txt, 0, &je);
    free(txt);
    if (!*root)
        return pcbm_fail(err, PCBM_ERR_STATS, "the %s %s is damaged (%s)", what, path, je.text);
    return PCBM_OK;
}

pcbm_status pcbm_zblob_read(const char *path, void **buf, size_t *len, const char *what,
                            pcbm_error *err)
{
    char *b = NULL;
    pcbm_status st = read_frame(path, what, &b, len, err);
    *buf = b;
    return st;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidefiles.c — small whole-file writes (index JSON, headers, tests) and copying the files users
 * need beside the weights (config, generation config, tokenizer files, chat template) from the
 * base model's directory into the output directory.
 */
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (1u << 20)

static const char *const side_files[] = {
    "config.json",           "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json",            "merges.txt",             "added_tokens.json",
    "chat_template.json",    "chat_template.jinja",    "preprocessor_config.json",
};

const char *pcbm_side_file_name(size_t i)
{
    return i < sizeof side_files / sizeof side_files[0] ? side_files[i] : NULL;
}

static pcbm_status write_fail(const char *path, int e, uint64_t off, pcbm_error *err)
{
    if (e == ENOSPC || e == EDQUOT)
        return pcbm_fail(err, PCBM_ERR_NOSPACE, "%s: no space left at byte %llu: %s; free disk "
                         "space or choose another output directory", path,
                         (unsigned long long)off, strerror(e));
    return pcbm_fail(err, PCBM_ERR_IO, "%s: write failed at byte %llu: %s; check the output "
                     "directory and retry", path, (unsigned long long)off, strerror(e));
}

/* Write all len bytes; returns 0 or an errno (offset reached in *done). */
static int write_all(int fd, const void *buf, size_t len, uint64_t *done)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        p += w;
        len -= (size_t)w;
        *done += (uint64_t)w;
    }
    return 0;
}

/* fsync + close; returns 0 or an errno. */
static int sync_close(int fd)
{
    int e = fsync(fd) != 0 ? errno : 0;
    if (close(fd) != 0 && !e)
        e = errno;
    return e;
}

pcbm_status pcbm_write_file_simple(const char *path, const void *buf, size_t len, pcbm_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s: %s; check that the output directory exists and is "
                         "writable", path, strerror(errno));
    struct stat sb;
    bool regular = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode); /* never unlink a device */
    uint64_t done = 0;
    int e = write_all(fd, buf, len, &done);
    int e2 = sync_close(fd);
    if (!e)
        e = e2;
    if (e) {
        if (regular)
            unlink(path);
        return write_fail(path, e, done, err);
    }
    return PCBM_OK;
}

/* Copy src to dst (created or truncated), then fsync. */
static pcbm_status copy_file(const char *src, const char *dst, char *buf, pcbm_error *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s: %s; check its permissions", src,
                         strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return pcbm_fail(err, e == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO, "cannot create %s: "
                         "%s; check the output directory", dst, strerror(e));
    }
    uint64_t done = 0;
    int e = 0, rd_err = 0;
    for (;;) {
        ssize_t r = read(in, buf, COPY_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rd_err = errno;
        if (r <= 0 || (e = write_all(out, buf, (size_t)r, &done)) != 0)
            break;
    }
    close(in);
    struct stat sb;
    bool regular = fstat(out, &sb) == 0 && S_ISREG(sb.st_mode); /* never unlink a device */
    int e2 = sync_close(out);
    if (!e && !rd_err)
        e = e2;
    if ((rd_err || e) && regular)
        unlink(dst);
    if (rd_err)
        return pcbm_fail(err, PCBM_ERR_IO, "%s: read failed at byte %llu: %s; check the file",
                         src, (unsigned long long)done, strerror(rd_err));
    return e ? write_fail(dst, e, done, err) : PCBM_OK;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = pcbm_malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

pcbm_status pcbm_copy_side_files(const pcbm_model *base, const char *out_dir, pcbm_error *err)
{
    if (!base || !out_dir)
        return pcbm_fail(err, PCBM_ERR_USAGE, "copy side files: no base model or output dir");
    if (!base->is_dir)
        return PCBM_OK;
    char *buf = pcbm_malloc(COPY_CHUNK);
    if (!buf)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory copying side files");
    pcbm_status st = PCBM_OK;
    for (size_t i = 0; i < sizeof side_files / sizeof side_files[0] && !st; i++) {
        char *src = join(base->dir, side_files[i]), *dst = join(out_dir, side_files[i]);
        struct stat sb;
        if (!src || !dst)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory copying side files");
        else if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode))
            st = copy_file(src, dst, buf, err);
        free(src);
        free(dst);
    }
    free(buf);
    return st;
}

static void set_torch_dtype(json_t *obj, const char *name)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!strcmp(key, "torch_dtype") && json_is_string(v))
            json_string_set(v, name);
        else if (json_is_object(v))
            set_torch_dtype(v, name);
    }
}

/* key = v (borrowed) in obj and in every nested configuration that already has the key. */
static void set_key(json_t *obj, const char *name, json_t *v)
{
    const char *key;
    json_t *sub;
    json_object_foreach(obj, key, sub)
        if (json_is_object(sub) && json_object_get(sub, name))
            set_key(sub, name, v);
    json_object_set(obj, name, v);
}

pcbm_status pcbm_write_json_file(const char *path, const json_t *j, pcbm_error *err)
{
    /* 16 significant digits: the decimal literals of a config come back as written */
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16));
    size_t n = txt ? strlen(txt) : 0;
    char *buf = txt ? pcbm_realloc(txt, n + 2) : NULL;
    if (!buf) {
        free(txt);
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory writing %s", path);
    }
    buf[n] = '\n';
    pcbm_status st = pcbm_write_file_simple(path, buf, n + 1, err);
    free(buf);
    return st;
}

pcbm_status pcbm_config_update(const char *out_dir, pcbm_dtype dt, bool untied, bool dequantized,
                               pcbm_error *err)
{
    if (dequantized && dt == PCBM_DTYPE_BASE)
        dt = PCBM_DT_BF16; /* the FP8 weights were written as BF16 */
    const char *name = dt == PCBM_DT_F32 ? "float32" : dt == PCBM_DT_F16 ? "float16"
                       : dt == PCBM_DT_BF16 ? "bfloat16" : dt == PCBM_DT_F64 ? "float64" : NULL;
    char *path = join(out_dir, "config.json");
    if (!path)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    json_error_t je;
    json_t *cfg = name || untied || dequantized ? json_load_file(path, 0, &je) : NULL;
    pcbm_status st = PCBM_OK;
    if (cfg && json_is_object(cfg)) {
        if (name)
            set_torch_dtype(cfg, name);
        if (untied)
            set_key(cfg, "tie_word_embeddings", json_false());
        if (dequantized)
            json_object_del(cfg, "quantization_config");
        st = pcbm_write_json_file(path, cfg, err);
    }
    json_decref(cfg);
    free(path);
    return st;
}

/* The files that make a tokenizer (a subset of side_files). */
static const char *const tokenizer_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json",     "merges.txt",            "added_tokens.json",
};

pcbm_status pcbm_copy_tokenizer_files(const char *src_dir, const char *out_dir, pcbm_error *err)
{
    char *buf = pcbm_malloc(COPY_CHUNK);
    if (!buf)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory copying tokenizer files");
    pcbm_status st = PCBM_OK;
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof tokenizer_files[0] && !st; i++) {
        char *src = join(src_dir, tokenizer_files[i]), *dst = join(out_dir, tokenizer_files[i]);
        struct stat sb;
        if (!src || !dst)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory copying tokenizer files");
        else {
            if (lstat(dst, &sb) == 0 && S_ISREG(sb.st_mode))
                unlink(dst); /* the base's copy: the source's files replace them all */
            if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode))
                st = copy_file(src, dst, buf, err);
        }
        free(src);
        free(dst);
    }
    free(buf);
    return st;
}

pcbm_status pcbm_config_set_vocab(const char *out_dir, uint64_t rows, pcbm_error *err)
{
    char *path = join(out_dir, "config.json");
    if (!path)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    json_error_t je;
    json_t *cfg = json_load_file(path, JSON_DECODE_ANY, &je);
    pcbm_status st = PCBM_OK;
    if (cfg && json_is_object(cfg)) {
        json_t *v = json_integer((json_int_t)rows);
        set_key(cfg, "vocab_size", v);
        json_decref(v);
        st = pcbm_write_json_file(path, cfg, err);
    }
    json_decref(cfg);
    free(path);
    return st;
}

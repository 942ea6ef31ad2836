/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_safetensors.c — the format layer: one test per validation rule of the reader and the index,
 * the committed corpus of malformed files (tests/corpus), output layouts written and reopened
 * (single file and sharded), side files, dtypes and pcbm_parse_size.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "format/tokenizer.h"

static char tmp_root[PATH_MAX / 2];
static char corpus_dir[PATH_MAX];
static int case_no;

/* ---- helpers -------------------------------------------------------------------------------- */

/* A fresh directory under tmp_root for one case. */
static const char *new_dir(char *buf, size_t len)
{
    snprintf(buf, len, "%s/c%d", tmp_root, case_no++);
    assert_int_equal(mkdir(buf, 0755), 0);
    return buf;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
    pcbm_error err;
    assert_int_equal(pcbm_write_file_simple(path, buf, len, &err), PCBM_OK);
}

/* Write a safetensors file: the 8-byte length (hdr_len, or strlen(json) when UINT64_MAX),
 * the JSON, then data_len pattern bytes. */
static void write_st_n(const char *path, uint64_t hdr_len, const char *json, size_t data_len)
{
    size_t jl = strlen(json);
    uint8_t *buf = malloc(8 + jl + data_len);
    assert_non_null(buf);
    uint64_t n = hdr_len == UINT64_MAX ? jl : hdr_len;
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(n >> (8 * b));
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + jl + i] = (uint8_t)(i * 13 + 5);
    write_bytes(path, buf, 8 + jl + data_len);
    free(buf);
}

static void write_st(const char *path, const char *json, size_t data_len)
{
    write_st_n(path, UINT64_MAX, json, data_len);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_bytes(path, text, strlen(text));
}

/* Open `path`, expect status `want` and a message holding `where` and every word given. */
static void expect_fail_v(const char *path, pcbm_status want, const char *where, va_list ap)
{
    pcbm_model *m = (pcbm_model *)1;
    pcbm_error err;
    pcbm_error_clear(&err);
    pcbm_status st = pcbm_model_open(path, &m, &err);
    if (st != want)
        fail_msg("%s: status %s, want %s: %s", path, pcbm_status_name(st),
                 pcbm_status_name(want), err.msg);
    assert_null(m);
    assert_int_equal(err.status, want);
    if (!strstr(err.msg, where))
        fail_msg("message does not name %s: %s", where, err.msg);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err.msg, w))
            fail_msg("message lacks \"%s\": %s", w, err.msg);
}

static void expect_fail(const char *path, pcbm_status want, const char *where, ...)
{
    va_list ap;
    va_start(ap, where);
    expect_fail_v(path, want, where, ap);
    va_end(ap);
}

/* A single file in a fresh dir; expect a FORMAT error naming the file and the words. */
static void bad_file(const char *json, size_t data_len, ...)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_st(path, json, data_len);
    va_list ap;
    va_start(ap, data_len);
    expect_fail_v(path, PCBM_ERR_FORMAT, path, ap);
    va_end(ap);
}

static pcbm_model *open_ok(const char *path)
{
    pcbm_model *m = NULL;
    pcbm_error err;
    pcbm_status st = pcbm_model_open(path, &m, &err);
    if (st != PCBM_OK)
        fail_msg("%s: %s", path, err.msg);
    assert_non_null(m);
    return m;
}

static void rm_rf(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int setup_all(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "%s/pcbm-st-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown_all(void **state)
{
    (void)state;
    rm_rf(tmp_root);
    return 0;
}

#define T1 "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"

/* ---- header rules --------------------------------------------------------------------------- */

static void test_short_file(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    write_bytes(path, "\x01\x02\x03", 3);
    expect_fail(path, PCBM_ERR_FORMAT, path, "only 3 bytes", "shorter than the 8-byte",
                "re-download or re-export", NULL);
}

static void test_header_too_large(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_st_n(path, 100000001ull, "{}", 64);
    expect_fail(path, PCBM_ERR_FORMAT, path, "100000001", "100,000,000", NULL);
    write_st_n(path, 100000000ull, "{}", 64); /* at the limit: past EOF instead */
    expect_fail(path, PCBM_ERR_FORMAT, path, "extends past the end of the file", NULL);
}

static void test_header_past_eof(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_st_n(path, 40, "{}", 3);
    expect_fail(path, PCBM_ERR_FORMAT, path, "claims 40 bytes", "extends past the end",
                "ends at byte 13", NULL);
}

static void test_invalid_json(void **state)
{
    (void)state;
    bad_file("{\"w\": " T1 "[0,4]", 4, "not valid UTF-8 JSON", "header byte", "file offset",
             NULL);
    bad_file("{} trailing", 0, "not valid UTF-8 JSON", NULL);
    bad_file("", 0, "not valid UTF-8 JSON", NULL);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    bad_file("{\"w\xff\": " T1 "[0,4]}}", 4, "not valid UTF-8 JSON", "header byte", NULL);
    bad_file("{\"\xc0\xaf\": " T1 "[0,4]}}", 4, "not valid UTF-8 JSON", NULL);
    bad_file("{\"a\\u0000\": " T1 "[0,4]}}", 4, "not valid UTF-8 JSON", NULL);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    bad_file("{\"w\": " T1 "[0,4]}, \"w\": " T1 "[4,8]}}", 8, "not valid UTF-8 JSON",
             "duplicate", NULL);
}

static void test_top_not_object(void **state)
{
    (void)state;
    bad_file("[]", 0, "is an array, not an object", "top level", NULL);
    bad_file("\"x\"", 0, "is a string, not an object", NULL);
    bad_file("42", 0, "not an object", NULL);
}

static void test_unknown_dtype(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16, "'w'",
             "unknown dtype \"F128\"", NULL);
    bad_file("{\"w\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
             "unknown dtype", NULL);
}

static void test_missing_fields(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'", "has no \"dtype\"",
             "rule:", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "'w'", "has no \"shape\"",
             NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w'", "has no \"data_offsets\"",
             NULL);
    bad_file("{\"w\": 7}", 0, "'w'", "not an object {dtype, shape, data_offsets}", NULL);
}

static void test_wrong_types(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
             "\"dtype\" that is an integer, not a string", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
             "\"shape\" that is a string, not an array", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
             "not an array of two non-negative integers", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
             "not an array of two non-negative integers", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}", 4,
             "not an array of two non-negative integers", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
             "not an array of two non-negative integers", NULL);
}

static void test_bad_dims(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
             "negative shape[1] = -1", "rule: dims are non-negative integers", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
             "shape[0] that is a real number", "non-negative integer", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
             "shape[0] that is a string", NULL);
}

static void test_shape_overflow(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],"
             "\"data_offsets\":[0,0]}}", 0, "'w'", "overflows 64 bits at shape[1]", NULL);
    bad_file("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
             "\"data_offsets\":[0,0]}}", 0, "'w'", "overflow", NULL);
}

static void test_not_whole_bytes(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "'w'",
             "12 bits, not a whole number of bytes", NULL);
}

static void test_size_mismatch(void **state)
{
    (void)state;
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, "'w'",
             "[0, 20]", "shape [2, 3] of F32 needs 24 bytes",
             "end - begin = product(shape) x element size", NULL);
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
             "end - begin", NULL);
}

static void test_tiling(void **state)
{
    (void)state;
    bad_file("{\"a\":" T1 "[0,4]},\"b\":" T1 "[8,12]}}", 12, "'b'", "a gap of 4 bytes",
             "no gap or overlap", NULL);
    bad_file("{\"a\":" T1 "[4,8]}}", 8, "first tensor 'a'", "not 0", NULL);
    bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":" T1
             "[4,8]}}", 8, "'b'", "inside tensor 'a'", "an overlap", NULL);
}

static void test_file_end(void **state)
{
    (void)state;
    bad_file("{\"a\":" T1 "[0,4]}}", 6, "file must end exactly at the last tensor's end",
             "trailing bytes", NULL);
    bad_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10,
             "truncated", NULL);
    bad_file("{}", 1, "trailing bytes", NULL);
}

static void test_metadata_rules(void **state)
{
    (void)state;
    bad_file("{\"__metadata__\": [\"pt\"]}", 0, "__metadata__ is an array",
             "maps strings to strings", NULL);
    bad_file("{\"__metadata__\": {\"format\": 1}}", 0, "key \"format\"", "not a string",
             "maps strings to strings", NULL);
}

static void test_zero_tensors_valid(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_st(path, "{\"__metadata__\":{\"format\":\"pt\"}}      ", 0);
    pcbm_model *m = open_ok(path);
    assert_int_equal(pcbm_model_num_tensors(m), 0);
    assert_int_equal(pcbm_model_num_files(m), 1);
    assert_int_equal(pcbm_model_total_bytes(m), 0);
    assert_int_equal(m->nmeta, 2);
    assert_string_equal(m->meta[0], "format");
    assert_int_equal(pcbm_model_find(m, "x"), -1);
    pcbm_model_close(m);
}

static void test_order_by_offset(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *json = "{\"c\":" T1 "[8,12]},\"z\":{\"dtype\":\"U8\",\"shape\":[0],"
                       "\"data_offsets\":[4,4]},\"a\":" T1 "[4,8]},\"b\":{\"dtype\":\"BF16\","
                       "\"shape\":[2],\"data_offsets\":[0,4]}}";
    write_st(path, json, 12);
    pcbm_model *m = open_ok(dir); /* the directory form */
    const char *want[] = {"b", "z", "a", "c"};
    assert_int_equal(pcbm_model_num_tensors(m), 4);
    for (size_t i = 0; i < 4; i++) {
        pcbm_tensor_info ti;
        assert_int_equal(pcbm_model_tensor(m, i, &ti), PCBM_OK);
        assert_string_equal(ti.name, want[i]);
        assert_string_equal(ti.file, path);
        assert_int_equal(pcbm_model_find(m, want[i]), (long)i);
    }
    pcbm_tensor_info ti;
    assert_int_equal(pcbm_model_tensor(m, 0, &ti), PCBM_OK);
    assert_int_equal(ti.dtype, PCBM_DT_BF16);
    assert_int_equal(ti.offset, 8 + strlen(json));
    assert_int_equal(ti.nbytes, 4);
    assert_int_equal(pcbm_model_tensor(m, 4, &ti), PCBM_ERR_USAGE);
    assert_null(pcbm_model_tensor_at(m, 4));
    assert_int_equal(pcbm_model_total_bytes(m), 12);
    assert_string_equal(pcbm_model_path(m), dir);
    assert_true(m->is_dir);
    pcbm_model_close(m);
}

static void test_parse_mem(void **state)
{
    (void)state;
    uint8_t buf[64] = {0};
    const char *json = "{\"w\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    size_t jl = strlen(json);
    buf[0] = (uint8_t)jl;
    memcpy(buf + 8, json, jl);
    pcbm_st_header h;
    pcbm_error err;
    assert_int_equal(pcbm_st_parse_mem(buf, 8 + jl + 3, "mem", &h, &err), PCBM_OK);
    assert_int_equal(h.ntensors, 1);
    assert_int_equal(h.tensors[0].offset, 8 + jl);
    assert_int_equal(h.data_bytes, 3);
    pcbm_st_header_free(&h);
    assert_int_equal(pcbm_st_parse_mem(buf, 8 + jl + 2, "mem", &h, &err), PCBM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "mem: "));
    assert_int_equal(pcbm_st_parse_mem(buf, 4, "mem", &h, &err), PCBM_ERR_FORMAT);
}

/* ---- paths ---------------------------------------------------------------------------------- */

static void test_paths(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    expect_fail(dir, PCBM_ERR_FORMAT, dir, "neither model.safetensors nor", NULL);
    snprintf(path, sizeof path, "%s/nope", dir);
    expect_fail(path, PCBM_ERR_IO, path, "cannot access", NULL);
    pcbm_model *m = NULL;
    assert_int_equal(pcbm_model_open("", &m, NULL), PCBM_ERR_USAGE);
}

/* ---- index rules ---------------------------------------------------------------------------- */

#define SH1 "model-00001-of-00002.safetensors"
#define SH2 "model-00002-of-00002.safetensors"

/* Two shards: SH1 holds a, b; SH2 holds c. */
static const char *sharded_dir(char *dir, size_t len)
{
    new_dir(dir, len);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/" SH1, dir);
    write_st(p, "{\"a\":" T1 "[0,4]},\"b\":" T1 "[4,8]}}", 8);
    snprintf(p, sizeof p, "%s/" SH2, dir);
    write_st(p, "{\"c\":" T1 "[0,4]}}", 4);
    return dir;
}

static void bad_index(const char *index_json, ...)
{
    char dir[PATH_MAX];
    sharded_dir(dir, sizeof dir);
    write_text(dir, PCBM_INDEX_NAME, index_json);
    va_list ap;
    va_start(ap, index_json);
    expect_fail_v(dir, PCBM_ERR_FORMAT, dir, ap);
    va_end(ap);
}

#define WM(x) "{\"metadata\":{\"total_size\":12},\"weight_map\":{" x "}}"

static void test_index_ok_and_order(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    sharded_dir(dir, sizeof dir);
    write_text(dir, PCBM_INDEX_NAME, WM("\"c\":\"" SH2 "\",\"b\":\"" SH1 "\",\"a\":\"" SH1 "\""));
    pcbm_model *m = open_ok(dir);
    assert_int_equal(pcbm_model_num_files(m), 2);
    assert_string_equal(m->files[0].name, SH2); /* first appearance in weight_map */
    assert_string_equal(m->files[1].name, SH1);
    const char *want[] = {"c", "a", "b"};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(pcbm_model_tensor_at(m, i)->name, want[i]);
        assert_int_equal(pcbm_model_find(m, want[i]), (long)i);
    }
    assert_int_equal(pcbm_model_tensor_at(m, 0)->file, 0);
    assert_int_equal(pcbm_model_tensor_at(m, 2)->file, 1);
    assert_int_equal(pcbm_model_total_bytes(m), 12);
    pcbm_model_close(m);
    /* the index file itself as the path */
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/" PCBM_INDEX_NAME, dir);
    m = open_ok(p);
    assert_int_equal(pcbm_model_num_tensors(m), 3);
    pcbm_model_close(m);
}

static void test_index_traversal(void **state)
{
    (void)state;
    const char *names[] = {("../" SH1), "/abs/x.safetensors", "sub/x.safetensors",
                           "sub\\\\x.safetensors", ".", "..", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, WM("\"a\":\"%s\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\""),
                 names[i]);
        bad_index(json, "'a'", "not a plain file name", "path traversal", NULL);
    }
}

static void test_index_sub_file_exists_still_refused(void **state)
{
    (void)state;
    char dir[PATH_MAX], sub[PATH_MAX + 8], p[PATH_MAX + 64];
    sharded_dir(dir, sizeof dir);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(p, sizeof p, "%s/x.safetensors", sub);
    write_st(p, "{\"a\":" T1 "[0,4]}}", 4);
    write_text(dir, PCBM_INDEX_NAME, WM("\"a\":\"sub/x.safetensors\""));
    expect_fail(dir, PCBM_ERR_FORMAT, dir, "not a plain file name", NULL);
}

static void test_index_missing_shard(void **state)
{
    (void)state;
    bad_index(WM("\"a\":\"" SH1 "\",\"b\":\"" SH1 "\",\"c\":\"model-9.safetensors\""), "'c'",
              "model-9.safetensors", "does not exist in the model directory", NULL);
}

static void test_index_tensor_missing_from_shard(void **state)
{
    (void)state;
    bad_index(WM("\"a\":\"" SH1 "\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\",\"d\":\"" SH2 "\""),
              "'d'", SH2, "has no tensor of that name", NULL);
}

static void test_index_tensor_not_listed(void **state)
{
    (void)state;
    bad_index(WM("\"a\":\"" SH1 "\",\"c\":\"" SH2 "\""), "'b'", SH1, "does not list",
              "file offset", NULL);
}

static void test_index_wrong_shard(void **state)
{
    (void)state;
    bad_index(WM("\"a\":\"" SH2 "\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\""), "'a'",
              "stored in shard " SH1, "maps it to shard " SH2, NULL);
}

static void test_index_tensor_in_two_shards(void **state)
{
    (void)state;
    char dir[PATH_MAX], p[PATH_MAX + 64];
    sharded_dir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/" SH2, dir);
    write_st(p, "{\"c\":" T1 "[0,4]},\"a\":" T1 "[4,8]}}", 8);
    write_text(dir, PCBM_INDEX_NAME, WM("\"a\":\"" SH1 "\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\""));
    expect_fail(dir, PCBM_ERR_FORMAT, dir, "'a'", "in two shards", SH1, SH2, NULL);
}

static void test_index_structure(void **state)
{
    (void)state;
    bad_index("[1]", "not a JSON object", NULL);
    bad_index("{\"metadata\":{}}", "has no \"weight_map\"", NULL);
    bad_index("{\"weight_map\":[\"a\"]}", "\"weight_map\" is an array", NULL);
    bad_index("{\"weight_map\":{}}", "is empty", NULL);
    bad_index(WM("\"a\":1"), "'a'", "not a shard file name string", NULL);
    bad_index("{\"weight_map\":{\"a\":", "index is not valid UTF-8 JSON", "line", NULL);
    bad_index(WM("\"a\":\"" SH1 "\",\"a\":\"" SH2 "\""), "duplicate", NULL);
}

static void test_index_bad_shard_named(void **state)
{
    (void)state;
    char dir[PATH_MAX], p[PATH_MAX + 64];
    sharded_dir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/" SH2, dir);
    write_st(p, "{\"c\":" T1 "[0,4]}}", 5);
    write_text(dir, PCBM_INDEX_NAME, WM("\"a\":\"" SH1 "\",\"b\":\"" SH1 "\",\"c\":\"" SH2 "\""));
    expect_fail(dir, PCBM_ERR_FORMAT, p, "trailing bytes", NULL);
}

static bool exists_all(const char *name, void *ctx)
{
    (void)name;
    (void)ctx;
    return true;
}

static void test_index_parse_mem(void **state)
{
    (void)state;
    const char *j = WM("\"x\":\"s2\",\"y\":\"s1\",\"z\":\"s2\"");
    pcbm_st_index ix;
    pcbm_error err;
    assert_int_equal(pcbm_st_index_parse(j, strlen(j), "idx", exists_all, NULL, &ix, &err),
                     PCBM_OK);
    assert_int_equal(ix.nshards, 2);
    assert_string_equal(ix.shards[0], "s2");
    assert_int_equal(ix.nnames, 3);
    assert_int_equal(ix.shard_of[1], 1);
    assert_int_equal(ix.shard_of[2], 0);
    pcbm_st_index_free(&ix);
    assert_true(pcbm_st_plain_name("a.safetensors"));
    assert_false(pcbm_st_plain_name("a/b"));
    assert_false(pcbm_st_plain_name("a\\b"));
    assert_false(pcbm_st_plain_name(".."));
    assert_false(pcbm_st_plain_name(""));
    assert_true(pcbm_st_plain_name("..a"));
}

/* ---- corpus --------------------------------------------------------------------------------- */

static bool find_corpus(void)
{
    const char *root = getenv("PCBM_ROOT");
    struct stat sb;
    snprintf(corpus_dir, sizeof corpus_dir, "%s/tests/corpus", root ? root : ".");
    return stat(corpus_dir, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Is `rel` listed in expect.tsv? Returns its words (static) or NULL. */
static const char *expected_words(const char *rel)
{
    static char line[1024];
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/expect.tsv", corpus_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    const char *found = NULL;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (line[0] != '#' && tab) {
            *tab = '\0';
            if (strcmp(line, rel) == 0)
                found = tab + 1;
        }
    }
    fclose(f);
    return found;
}

/* Every entry of corpus_dir/sub whose name starts with `prefix`: open it, expect good or bad. */
static int corpus_walk(const char *sub, const char *prefix, bool good)
{
    char dpath[PATH_MAX + 16];
    snprintf(dpath, sizeof dpath, "%s/%s", corpus_dir, sub);
    DIR *d = opendir(dpath);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char rel[512], path[PATH_MAX + 600];
        snprintf(rel, sizeof rel, "%s/%s", sub, e->d_name);
        snprintf(path, sizeof path, "%s/%s", corpus_dir, rel);
        if (good) {
            pcbm_model_close(open_ok(path));
        } else {
            const char *words = expected_words(rel);
            if (!words)
                fail_msg("corpus file %s has no line in expect.tsv", rel);
            expect_fail(path, PCBM_ERR_FORMAT, path, words, NULL);
        }
        n++;
    }
    closedir(d);
    return n;
}

static void test_corpus(void **state)
{
    (void)state;
    if (!find_corpus())
        fail_msg("tests/corpus not found: run from the repository root or set PCBM_ROOT");
    int bad = corpus_walk("bad", "", false) + corpus_walk("index", "bad-", false);
    int good = corpus_walk("good", "", true) + corpus_walk("index", "good-", true);
    print_message("corpus: %d malformed inputs refused, %d valid inputs accepted\n", bad, good);
    assert_true(bad >= 60);
    assert_true(good >= 8);
}

/* ---- output layouts --------------------------------------------------------------------------- */

static uint8_t pattern(size_t t, uint64_t i) { return (uint8_t)(i * 31 + t * 7 + 1); }

/* Write every file of the plan (headers + pattern data) and the index into dir. */
static void write_plan(const pcbm_outlayout *p, const char *dir)
{
    for (unsigned f = 0; f < p->nfiles; f++) {
        const pcbm_out_file *of = &p->files[f];
        uint8_t *buf = malloc((size_t)of->size);
        assert_non_null(buf);
        memcpy(buf, of->header, (size_t)of->data_start);
        for (size_t i = of->first; i < of->first + of->count; i++)
            for (uint64_t b = 0; b < p->tensors[i].nbytes; b++)
                buf[p->tensors[i].offset + b] = pattern(i, b);
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", dir, of->name);
        write_bytes(path, buf, (size_t)of->size);
        free(buf);
    }
    if (p->index_json)
        write_text(dir, PCBM_INDEX_NAME, p->index_json);
}

/* Reopen dir and compare with the plan: names, order, dtypes, shapes, bytes. */
static void check_reopen(const pcbm_outlayout *p, const char *dir)
{
    pcbm_model *m = open_ok(dir);
    assert_int_equal(pcbm_model_num_tensors(m), p->ntensors);
    assert_int_equal(pcbm_model_num_files(m), p->nfiles);
    assert_int_equal(pcbm_model_total_bytes(m), p->total_bytes);
    for (size_t i = 0; i < p->ntensors; i++) {
        const pcbm_out_tensor *o = &p->tensors[i];
        pcbm_tensor_info ti;
        assert_int_equal(pcbm_model_tensor(m, i, &ti), PCBM_OK);
        assert_string_equal(ti.name, o->name);
        assert_int_equal(ti.dtype, o->dtype);
        assert_int_equal(ti.ndim, o->ndim);
        for (unsigned d = 0; d < o->ndim; d++)
            assert_int_equal(ti.shape[d], o->shape[d]);
        assert_int_equal(ti.nbytes, o->nbytes);
        assert_int_equal(ti.offset, o->offset);
        assert_non_null(strstr(ti.file, p->files[o->file].name));
        uint8_t *buf = malloc((size_t)ti.nbytes + 1);
        int fd = open(ti.file, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, buf, (size_t)ti.nbytes, (off_t)ti.offset), (ssize_t)ti.nbytes);
        close(fd);
        for (uint64_t b = 0; b < ti.nbytes; b++)
            assert_int_equal(buf[b], pattern(i, b));
        free(buf);
    }
    pcbm_model_close(m);
}

static const uint64_t sh_a[] = {4, 3}, sh_b[] = {5}, sh_c[] = {2, 2, 2}, sh_d[] = {1000},
                      sh_e[] = {6};

static size_t sample_tensors(pcbm_out_tensor *t)
{
    t[0] = (pcbm_out_tensor){"layer.0.w", PCBM_DT_BF16, 2, sh_a, 24, 0, 0};
    t[1] = (pcbm_out_tensor){"layer.0.b", PCBM_DT_F32, 1, sh_b, 20, 0, 0};
    t[2] = (pcbm_out_tensor){"scalar", PCBM_DT_F64, 0, NULL, 8, 0, 0};
    t[3] = (pcbm_out_tensor){"cube", PCBM_DT_F16, 3, sh_c, 16, 0, 0};
    t[4] = (pcbm_out_tensor){"big", PCBM_DT_U8, 1, sh_d, 1000, 0, 0};
    t[5] = (pcbm_out_tensor){"nib\xc3\xa9", PCBM_DT_F4, 1, sh_e, 3, 0, 0};
    return 6;
}

static void test_roundtrip_single(void **state)
{
    (void)state;
    pcbm_out_tensor t[6];
    size_t n = sample_tensors(t);
    const char *meta[] = {"format", "np", "merged_by", "pcbmerge", "merged_by", "dup"};
    pcbm_outlayout p;
    pcbm_error err;
    assert_int_equal(pcbm_outlayout_build(t, n, 5000000000ull, meta, 6, &p, &err), PCBM_OK);
    assert_int_equal(p.nfiles, 1);
    assert_null(p.index_json);
    assert_string_equal(p.files[0].name, "model.safetensors");
    assert_int_equal(p.files[0].data_start % 4096, 0);
    assert_int_equal(p.total_bytes, 24 + 20 + 8 + 16 + 1000 + 3);
    assert_int_equal(p.total_file_bytes, p.files[0].data_start + p.total_bytes);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"merged_by\":\"pcbmerge\"},"
                       "\"layer.0.w\":{\"dtype\":\"BF16\",\"shape\":[4,3],\"data_offsets\":[0,24]}";
    assert_memory_equal(p.files[0].header + 8, want, strlen(want));
    assert_int_equal(p.files[0].header[p.files[0].data_start - 1], ' ');
    char dir[PATH_MAX];
    new_dir(dir, sizeof dir);
    write_plan(&p, dir);
    check_reopen(&p, dir);
    pcbm_model *m = open_ok(dir);
    assert_int_equal(m->nmeta, 4);
    assert_string_equal(m->meta[1], "pt");
    assert_string_equal(m->meta[3], "pcbmerge");
    pcbm_model_close(m);
    pcbm_outlayout_free(&p);
}

static void test_roundtrip_sharded(void **state)
{
    (void)state;
    pcbm_out_tensor t[6];
    size_t n = sample_tensors(t);
    pcbm_outlayout p;
    pcbm_error err;
    /* 50-byte shards: [w, b], [scalar, cube], [big] alone (larger than a shard), [nib] */
    assert_int_equal(pcbm_outlayout_build(t, n, 50, NULL, 0, &p, &err), PCBM_OK);
    assert_int_equal(p.nfiles, 4);
    assert_string_equal(p.files[0].name, "model-00001-of-00004.safetensors");
    assert_string_equal(p.files[3].name, "model-00004-of-00004.safetensors");
    assert_int_equal(t[4].file, 2);
    assert_int_equal(p.files[2].count, 1);
    assert_int_equal(t[5].file, 3);
    assert_int_equal(t[1].offset, p.files[0].data_start + 24);
    assert_non_null(p.index_json);
    assert_non_null(strstr(p.index_json, "\"total_size\": 1071"));
    assert_non_null(strstr(p.index_json, "  \"weight_map\": {\n    \"layer.0.w\": "
                                         "\"model-00001-of-00004.safetensors\",\n"));
    char dir[PATH_MAX];
    new_dir(dir, sizeof dir);
    write_plan(&p, dir);
    check_reopen(&p, dir);
    pcbm_outlayout_free(&p);
}

static void test_plan_empty_and_errors(void **state)
{
    (void)state;
    pcbm_outlayout p;
    pcbm_error err;
    assert_int_equal(pcbm_outlayout_build(NULL, 0, 0, NULL, 0, &p, &err), PCBM_OK);
    assert_int_equal(p.nfiles, 1);
    assert_int_equal(p.files[0].size, 4096);
    char dir[PATH_MAX];
    new_dir(dir, sizeof dir);
    write_plan(&p, dir);
    check_reopen(&p, dir);
    pcbm_outlayout_free(&p);

    pcbm_out_tensor t[6];
    size_t n = sample_tensors(t);
    t[1].name = "cube";
    assert_int_equal(pcbm_outlayout_build(t, n, 0, NULL, 0, &p, &err), PCBM_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "'cube' appears twice"));
    n = sample_tensors(t);
    t[0].nbytes = 23;
    assert_int_equal(pcbm_outlayout_build(t, n, 0, NULL, 0, &p, &err), PCBM_ERR_INTERNAL);
    assert_non_null(strstr(err.msg, "'layer.0.w'"));
    n = sample_tensors(t);
    t[0].name = "bad\xff";
    assert_int_equal(pcbm_outlayout_build(t, n, 0, NULL, 0, &p, &err), PCBM_ERR_USAGE);
    const char *odd[] = {"k"};
    n = sample_tensors(t);
    assert_int_equal(pcbm_outlayout_build(t, n, 0, odd, 1, &p, &err), PCBM_ERR_INTERNAL);
    assert_null(p.files);
}

static void test_write_file_simple(void **state)
{
    (void)state;
    pcbm_error err;
    char dir[PATH_MAX], p[PATH_MAX + 32];
    new_dir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/missing/x", dir);
    assert_int_equal(pcbm_write_file_simple(p, "x", 1, &err), PCBM_ERR_IO);
    assert_non_null(strstr(err.msg, p));
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(pcbm_write_file_simple("/dev/full", "xyz", 3, &err), PCBM_ERR_NOSPACE);
        assert_non_null(strstr(err.msg, "no space"));
    }
}

/* ---- identity, side files, dtypes, sizes ---------------------------------------------------- */

static void test_identity(void **state)
{
    (void)state;
    char d1[PATH_MAX], d2[PATH_MAX], d3[PATH_MAX], p[PATH_MAX + 32];
    const char *json = "{\"a\":" T1 "[0,4]}}";
    new_dir(d1, sizeof d1);
    new_dir(d2, sizeof d2);
    new_dir(d3, sizeof d3);
    snprintf(p, sizeof p, "%s/model.safetensors", d1);
    write_st(p, json, 4);
    snprintf(p, sizeof p, "%s/model.safetensors", d2);
    write_st(p, json, 4);
    snprintf(p, sizeof p, "%s/model.safetensors", d3);
    write_st(p, "{\"b\":" T1 "[0,4]}}", 4);
    pcbm_model *a = open_ok(d1), *b = open_ok(d2), *c = open_ok(d3);
    assert_true(a->identity == b->identity);
    assert_true(a->identity != c->identity);
    assert_int_equal(a->files[0].data_start, 8 + strlen(json));
    pcbm_model_close(a);
    pcbm_model_close(b);
    pcbm_model_close(c);
}

static void test_copy_side_files(void **state)
{
    (void)state;
    char base[PATH_MAX], out[PATH_MAX], p[PATH_MAX + 64];
    new_dir(base, sizeof base);
    new_dir(out, sizeof out);
    snprintf(p, sizeof p, "%s/model.safetensors", base);
    write_st(p, "{}", 0);
    write_text(base, "config.json", "{\"model_type\":\"llama\"}\n");
    write_text(base, "tokenizer.json", "{\"version\":\"1.0\"}");
    write_text(base, "chat_template.jinja", "{{ messages }}");
    write_text(base, "notes.txt", "not copied");
    pcbm_model *m = open_ok(base);
    pcbm_error err;
    assert_int_equal(pcbm_copy_side_files(m, out, &err), PCBM_OK);
    pcbm_model_close(m);
    const char *copied[] = {"config.json", "tokenizer.json", "chat_template.jinja"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", out, copied[i]);
        assert_int_equal(access(p, R_OK), 0);
    }
    snprintf(p, sizeof p, "%s/config.json", out);
    FILE *f = fopen(p, "r");
    char line[64] = {0};
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "{\"model_type\":\"llama\"}\n");
    snprintf(p, sizeof p, "%s/notes.txt", out);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/generation_config.json", out);
    assert_int_not_equal(access(p, F_OK), 0);
    /* a single file: no-op */
    char out2[PATH_MAX];
    new_dir(out2, sizeof out2);
    snprintf(p, sizeof p, "%s/model.safetensors", base);
    m = open_ok(p);
    assert_false(m->is_dir);
    assert_int_equal(pcbm_copy_side_files(m, out2, &err), PCBM_OK);
    snprintf(p, sizeof p, "%s/config.json", out2);
    assert_int_not_equal(access(p, F_OK), 0);
    pcbm_model_close(m);
}

static void test_dtypes(void **state)
{
    (void)state;
    for (int i = 0; i < PCBM_DT_COUNT; i++) {
        pcbm_dtype dt = (pcbm_dtype)i;
        assert_int_equal(pcbm_dtype_parse(pcbm_dtype_name(dt)), dt);
        assert_true(pcbm_dtype_bits(dt) >= 4);
    }
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_F4), 4);
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_F6_E2M3), 6);
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_BF16), 16);
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_C64), 64);
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_BOOL), 8);
    assert_int_equal(pcbm_dtype_bits(PCBM_DT_COUNT), 0);
    assert_string_equal(pcbm_dtype_name(PCBM_DT_F8_E4M3), "F8_E4M3");
    assert_string_equal(pcbm_dtype_name(PCBM_DT_COUNT), "unknown");
    assert_int_equal(pcbm_dtype_parse("bf16"), PCBM_DT_COUNT);
    assert_int_equal(pcbm_dtype_parse(NULL), PCBM_DT_COUNT);
    assert_true(pcbm_dtype_is_mergeable(PCBM_DT_BF16));
    assert_true(pcbm_dtype_is_mergeable(PCBM_DT_F16));
    assert_true(pcbm_dtype_is_mergeable(PCBM_DT_F32));
    assert_true(pcbm_dtype_is_mergeable(PCBM_DT_F64));
    assert_false(pcbm_dtype_is_mergeable(PCBM_DT_F8_E4M3)); /* dequantized, not merged as is */
    assert_false(pcbm_dtype_is_mergeable(PCBM_DT_I32));
}

/* tokenizer.json vocabularies: BPE objects, Unigram arrays (id = position), added tokens winning
 * over the model's id, texts with NUL bytes, and refusals. */
static void test_vocab(void **state)
{
    (void)state;
    static const char bpe[] =
        "{\"added_tokens\":[{\"id\":7,\"content\":\"<s>\"},{\"id\":1,\"content\":\"b\"}],"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":3,\"x\\u0000y\":2},"
        "\"merges\":[\"a b\"]}}";
    pcbm_vocab v;
    pcbm_error err;
    assert_int_equal(pcbm_vocab_parse(bpe, sizeof bpe - 1, "t.json", &v, &err), PCBM_OK);
    assert_int_equal(v.nids, 8);
    assert_int_equal(pcbm_vocab_find(&v, "a", 1), 0);
    assert_int_equal(pcbm_vocab_find(&v, "b", 1), 1); /* the added token's id */
    assert_int_equal(pcbm_vocab_find(&v, "x\0y", 3), 2);
    assert_int_equal(pcbm_vocab_find(&v, "<s>", 3), 7);
    assert_int_equal(pcbm_vocab_find(&v, "c", 1), -1);
    size_t n;
    assert_null(pcbm_vocab_token(&v, 5, &n));
    pcbm_vocab_free(&v);
    static const char uni[] = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"<pad>\",0.0],"
                              "[\"\u2581a\",-1.5],[\"b\",-2]]}}";
    assert_int_equal(pcbm_vocab_parse(uni, sizeof uni - 1, "u.json", &v, &err), PCBM_OK);
    assert_int_equal(pcbm_vocab_find(&v, "\xe2\x96\x81" "a", 4), 1);
    assert_int_equal(pcbm_vocab_find(&v, "b", 1), 2);
    pcbm_vocab_free(&v);
    static const char *const bad[] = {"{\"model\":{\"vocab\":{\"a\":-1}}}",
                                      "{\"model\":{\"vocab\":{\"a\":\"x\"}}}", "{\"model\":{}}",
                                      "{\"model\":{\"vocab\":{\"a\":99999999}}}", "[1,2", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pcbm_vocab_parse(bad[i], strlen(bad[i]), "b.json", &v, &err),
                         PCBM_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "b.json"));
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"4096", 4096},         {"0", 0},
        {"512M", 512ull << 20}, {"1G", 1ull << 30},
        {"1Gi", 1ull << 30},    {"1GiB", 1ull << 30},
        {"5GB", 5000000000ull}, {"1.5GiB", 3ull << 29},
        {"2K", 2048},           {"2KB", 2000},
        {"1T", 1ull << 40},     {"3TB", 3000000000000ull},
        {"512m", 512ull << 20}, {"100B", 100},
        {"0.5K", 512},          {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        if (pcbm_parse_size(ok[i].s, &v) != 0)
            fail_msg("pcbm_parse_size(\"%s\") failed", ok[i].s);
        if (v != ok[i].v)
            fail_msg("pcbm_parse_size(\"%s\") = %llu, want %llu", ok[i].s,
                     (unsigned long long)v, (unsigned long long)ok[i].v);
    }
    const char *bad[] = {"", "G", "-1", "1.", ".5G", "1X", "1GBB", "1 G", "1Gb ", "abc",
                         "18446744073709551616", "17179869184G", "1e9", NULL};
    for (size_t i = 0; bad[i]; i++) {
        uint64_t v;
        if (pcbm_parse_size(bad[i], &v) == 0)
            fail_msg("pcbm_parse_size(\"%s\") accepted (%llu)", bad[i], (unsigned long long)v);
    }
    uint64_t v;
    assert_int_not_equal(pcbm_parse_size(NULL, &v), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_file),
        cmocka_unit_test(test_header_too_large),
        cmocka_unit_test(test_header_past_eof),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_top_not_object),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_shape_overflow),
        cmocka_unit_test(test_not_whole_bytes),
        cmocka_unit_test(test_size_mismatch),
        cmocka_unit_test(test_tiling),
        cmocka_unit_test(test_file_end),
        cmocka_unit_test(test_metadata_rules),
        cmocka_unit_test(test_zero_tensors_valid),
        cmocka_unit_test(test_order_by_offset),
        cmocka_unit_test(test_parse_mem),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_index_ok_and_order),
        cmocka_unit_test(test_index_traversal),
        cmocka_unit_test(test_index_sub_file_exists_still_refused),
        cmocka_unit_test(test_index_missing_shard),
        cmocka_unit_test(test_index_tensor_missing_from_shard),
        cmocka_unit_test(test_index_tensor_not_listed),
        cmocka_unit_test(test_index_wrong_shard),
        cmocka_unit_test(test_index_tensor_in_two_shards),
        cmocka_unit_test(test_index_structure),
        cmocka_unit_test(test_index_bad_shard_named),
        cmocka_unit_test(test_index_parse_mem),
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_roundtrip_single),
        cmocka_unit_test(test_roundtrip_sharded),
        cmocka_unit_test(test_plan_empty_and_errors),
        cmocka_unit_test(test_write_file_simple),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_copy_side_files),
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_vocab),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests_name("safetensors", tests, setup_all, teardown_all);
}

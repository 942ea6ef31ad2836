/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_stream.c — the output stream (src/writer/stream.c) on its own: blocks emitted in stream
 * order become the planned files (headers included); durable segments are reported in order,
 * contiguous, each with the xxh3-64 of its bytes; file hashes are the xxh3-128 of the files;
 * resume keeps the longest valid prefix of journaled segments (a damaged segment and everything
 * after it is not kept) and rewrites the output after it.
 */
#include "writer/stream.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define NT 5
#define CHUNK 8192u
#define SEG (3u * CHUNK)
#define BLOCK 7001u            /* bytes per emitted block: blocks straddle chunks and segments */

static char g_dir[256];
static const uint64_t sizes[NT] = {20000, 50000, 12345, 30001, 4096};
static uint64_t shapes[NT][1];
static pcbm_out_tensor tens[NT];
static pcbm_outlayout op;

/* Segments reported by the stream's hook (on its sync thread). */
static pthread_mutex_t seg_mu = PTHREAD_MUTEX_INITIALIZER;
static pcbm_segment segs[1024];
static size_t nsegs;

static pcbm_status on_segment(void *arg, const pcbm_segment *sg, pcbm_error *err)
{
    (void)arg;
    (void)err;
    pthread_mutex_lock(&seg_mu);
    assert_true(nsegs < 1024);
    segs[nsegs++] = *sg;
    pthread_mutex_unlock(&seg_mu);
    return PCBM_OK;
}

static uint8_t byte_of(size_t t, uint64_t i)
{
    return (uint8_t)(i * 2654435761u + t * 97u + (i >> 9));
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/pcbm-test-stream.XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    static const char *names[NT] = {"t.a", "t.b", "t.c", "t.d", "t.e"};
    for (size_t t = 0; t < NT; t++) {
        shapes[t][0] = sizes[t];
        tens[t] = (pcbm_out_tensor){.name = names[t], .dtype = PCBM_DT_U8, .ndim = 1,
                                    .shape = shapes[t], .nbytes = sizes[t]};
    }
    pcbm_error err;
    /* three files: {a}, {b}, {c, d, e} */
    if (pcbm_outlayout_build(tens, NT, 50000, NULL, 0, &op, &err) != PCBM_OK)
        return -1;
    return op.nfiles >= 2 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    pcbm_outlayout_free(&op);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd);
}

static pcbm_io *open_io(void)
{
    pcbm_io *io = NULL;
    pcbm_error err;
    if (pcbm_io_open(PCBM_IO_PREAD, 16, &io, NULL, 0, &err) != PCBM_OK)
        fail_msg("pcbm_io_open: %s", err.msg);
    return io;
}

static pcbm_ostream *open_stream(pcbm_io *io)
{
    pcbm_ostream_cfg cfg = {.out = &op, .dir = g_dir, .file_lo = 0, .file_hi = op.nfiles,
                            .chunk_bytes = CHUNK, .segment_bytes = SEG, .io = io};
    pcbm_ostream *os = NULL;
    pcbm_error err;
    if (pcbm_ostream_create(&cfg, &os, &err) != PCBM_OK)
        fail_msg("pcbm_ostream_create: %s", err.msg);
    pcbm_ostream_on_segment(os, on_segment, NULL);
    nsegs = 0;
    return os;
}

/* Reap at least one write and hand it back to the stream. */
static void pump(pcbm_ostream *os, pcbm_io *io, uint64_t *written)
{
    assert_true(pcbm_ostream_inflight(os) > 0);
    assert_int_equal(pcbm_io_submit(io), 0);
    pcbm_io_req *done[16];
    int n = pcbm_io_reap(io, done, 16, 1);
    assert_true(n >= 0);
    pcbm_error err;
    for (int i = 0; i < n; i++)
        assert_int_equal(pcbm_ostream_write_done(os, done[i], written, &err), PCBM_OK);
}

/* Emit every tensor in blocks of BLOCK bytes, in stream order, skipping the blocks the stream
 * keeps from an earlier run (as the scheduler does); returns the blocks emitted. */
static unsigned emit_all(pcbm_ostream *os, pcbm_io *io, uint64_t *written)
{
    unsigned blocks = 0;
    uint8_t buf[BLOCK];
    for (size_t t = 0; t < NT; t++) {
        for (uint64_t s = 0; s < sizes[t]; s += BLOCK) {
            uint64_t len = PCBM_MIN(BLOCK, sizes[t] - s);
            if (pcbm_ostream_kept(os, tens[t].file, tens[t].offset + s + len))
                continue;
            for (uint64_t i = 0; i < len; i++)
                buf[i] = byte_of(t, s + i);
            uint64_t done = 0;
            pcbm_status st = PCBM_OK;
            pcbm_error err;
            while (!pcbm_ostream_emit(os, tens[t].file, tens[t].offset + s, buf, len, &done,
                                      tens[t].name, &st, &err)) {
                assert_int_equal(st, PCBM_OK);
                pump(os, io, written);
            }
            assert_int_equal(st, PCBM_OK);
            blocks++;
        }
    }
    return blocks;
}

static uint8_t *read_out(unsigned f, uint64_t *size)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, op.files[f].name);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    *size = (uint64_t)sb.st_size;
    uint8_t *b = malloc(*size + 1);
    assert_int_equal(pread(fd, b, *size, 0), (ssize_t)*size);
    close(fd);
    return b;
}

/* Every file is its header then its tensors' bytes; file hashes are their xxh3-128. */
static void check_files(const pcbm_ostream *os)
{
    for (unsigned f = 0; f < op.nfiles; f++) {
        uint64_t size;
        uint8_t *b = read_out(f, &size);
        assert_int_equal(size, op.files[f].size);
        assert_memory_equal(b, op.files[f].header, op.files[f].data_start);
        for (size_t t = 0; t < NT; t++)
            if (tens[t].file == f)
                for (uint64_t i = 0; i < sizes[t]; i++)
                    if (b[tens[t].offset + i] != byte_of(t, i))
                        fail_msg("%s byte %llu differs", tens[t].name, (unsigned long long)i);
        XXH128_hash_t want = XXH3_128bits(b, size), got = pcbm_ostream_file_hash(os, f);
        assert_true(XXH128_isEqual(want, got));
        free(b);
    }
}

/* Segments [from, nsegs) are contiguous in stream order from (file, pos) to the end of the last
 * file (none when everything was kept), none longer than needed, each with the xxh3-64 of its
 * bytes. */
static void check_segments(size_t from, unsigned file, uint64_t pos)
{
    for (size_t k = from; k < nsegs; k++) {
        const pcbm_segment *sg = &segs[k];
        if (pos == op.files[file].size) {
            file++;
            pos = 0;
        }
        assert_int_equal(sg->file, file);
        assert_int_equal(sg->start, pos);
        assert_true(sg->end > sg->start && sg->end <= op.files[file].size);
        assert_true(sg->end - sg->start < SEG + CHUNK);
        uint64_t size;
        uint8_t *b = read_out(file, &size);
        assert_int_equal(sg->hash, XXH3_64bits(b + sg->start, sg->end - sg->start));
        free(b);
        pos = sg->end;
    }
    assert_int_equal(file, op.nfiles - 1);
    assert_int_equal(pos, op.files[file].size);
}

/* A whole run: files, hashes, segments. */
static void full_run(void)
{
    pcbm_io *io = open_io();
    pcbm_ostream *os = open_stream(io);
    uint64_t written = 0;
    assert_int_equal(emit_all(os, io, &written), 3 + 8 + 2 + 5 + 1);
    pcbm_error err;
    assert_int_equal(pcbm_ostream_finish(os, &written, &err), PCBM_OK);
    assert_true(written >= op.total_file_bytes);
    assert_int_equal(pcbm_ostream_inflight(os), 0);
    check_files(os);
    check_segments(0, 0, 0);
    pcbm_ostream_destroy(os);
    pcbm_io_close(io);
}

static void test_stream_order_and_hashes(void **state)
{
    (void)state;
    full_run();
    assert_true(nsegs >= 6);   /* several segments per file at this size */
}

/* Flip one byte of file f at offset off. */
static void damage(unsigned f, uint64_t off)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, op.files[f].name);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
    c ^= 0x5a;
    assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
    close(fd);
}

/* Resume with journal `j` (n segments): expect `keep` kept, then finish the output. */
static void resume_run(const pcbm_segment *j, size_t n, size_t keep)
{
    pcbm_io *io = open_io();
    pcbm_ostream *os = open_stream(io);
    size_t kept = 99;
    pcbm_error err;
    assert_int_equal(pcbm_ostream_resume(os, j, n, &kept, &err), PCBM_OK);
    assert_int_equal(kept, keep);
    uint64_t written = 0;
    emit_all(os, io, &written);
    assert_int_equal(pcbm_ostream_finish(os, &written, &err), PCBM_OK);
    check_files(os); /* damage repaired, the kept prefix hashed into the file hashes */
    unsigned f = keep ? j[keep - 1].file : 0;
    uint64_t pos = keep ? j[keep - 1].end : 0;
    check_segments(0, f, pos); /* new segments start where the kept ones end */
    pcbm_ostream_destroy(os);
    pcbm_io_close(io);
}

static void test_resume(void **state)
{
    (void)state;
    full_run();
    size_t n = nsegs;
    pcbm_segment j[1024];
    memcpy(j, segs, n * sizeof *j);

    /* everything valid: every segment is kept, nothing is rewritten but the end */
    resume_run(j, n, n);

    /* a damaged segment in the middle (of the second file): the segments before it are kept,
     * it and the ones after are rewritten */
    size_t k = 0;
    while (j[k].file != 1)
        k++;
    k++;
    damage(j[k].file, j[k].start + (j[k].end - j[k].start) / 2);
    resume_run(j, n, k);

    /* the journal's hash of a segment does not match the file (another run's journal) */
    pcbm_segment bad[1024];
    memcpy(bad, j, n * sizeof *j);
    bad[2].hash ^= 1;
    resume_run(bad, n, 2);

    /* the first segment damaged: nothing kept, the output starts over */
    damage(0, 5);
    resume_run(j, n, 0);

    /* a journal that skips a segment: kept up to the gap */
    memcpy(bad, j, n * sizeof *j);
    memmove(&bad[3], &bad[4], (n - 4) * sizeof *bad);
    resume_run(bad, n - 1, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_order_and_hashes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

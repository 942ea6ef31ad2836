/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_io.c — the I/O backends (io_uring and the pread pool) through the pcbm_io interface:
 * chunked reads at several depths, writes read back, O_DIRECT and buffered files, EOF, wake-ups,
 * PCBM_FAULT injection, and the io_uring → pread fallback, including under a real seccomp filter.
 */
#include "common/seams.h"
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define KiB 1024u
#define MiB (1024u * 1024u)
#define EXT4_MAGIC 0xEF53
#define XFS_MAGIC 0x58465342
#define BTRFS_MAGIC 0x9123683E

static char g_dir[256];      /* a directory on a disk filesystem (O_DIRECT) */
static char g_shm[256];      /* a directory on /dev/shm (tmpfs) */

/* ---- Helpers ---------------------------------------------------------------------------- */

static const char *in_dir(const char *dir, const char *name)
{
    static char buf[4][512];
    static unsigned k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* A file of n random bytes (written buffered); returns its contents (free()). */
static uint8_t *make_file(const char *path, size_t n, uint64_t seed)
{
    uint8_t *data = malloc(n ? n : 1);
    assert_non_null(data);
    fill_random(data, n, seed);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return data;
}

static pcbm_io *open_io(pcbm_io_kind kind, unsigned depth)
{
    pcbm_io *io = NULL;
    pcbm_error err;
    pcbm_status st = pcbm_io_open(kind, depth, &io, NULL, 0, &err);
    if (st != PCBM_OK)
        fail_msg("pcbm_io_open(%d, %u): %s", (int)kind, depth, err.msg);
    return io;
}

/* Skip io_uring tests where io_uring is refused (the pread tests still run). */
static void need(pcbm_io_kind kind)
{
    static int have = -1;
    if (kind != PCBM_IO_URING)
        return;
    if (have < 0) {
        pcbm_io *io = NULL;
        have = pcbm_io_open(PCBM_IO_URING, 1, &io, NULL, 0, NULL) == PCBM_OK;
        pcbm_io_close(io);
    }
    if (!have)
        skip();
}

static int64_t do_one(pcbm_io *io, pcbm_io_op op, int fd, void *buf, size_t len, uint64_t off)
{
    pcbm_io_req r = {.op = op, .fd = fd, .buf = buf, .len = len, .off = off};
    pcbm_io_req *out[4];
    assert_int_equal(pcbm_io_queue(io, &r), 0);
    assert_int_equal(pcbm_io_submit(io), 0);
    int n;
    while ((n = pcbm_io_reap(io, out, 4, 1)) == 0)
        ;
    assert_int_equal(n, 1);
    assert_ptr_equal(out[0], &r);
    return r.res;
}

/*
 * Read [0, align_up(size, chunk)) in chunks with up to io->depth requests in flight and compare
 * every completion with `expect` (the last chunk ends short at EOF).
 */
static void read_chunks(pcbm_io *io, int fd, const uint8_t *expect, size_t size, size_t chunk)
{
    unsigned depth = io->depth;
    pcbm_io_req *reqs = calloc(depth, sizeof *reqs);
    pcbm_io_req **out = calloc(depth, sizeof *out);
    pcbm_io_req **freel = calloc(depth, sizeof *freel);
    uint8_t *bufs = pcbm_alloc_aligned((size_t)depth * chunk);
    assert_true(reqs && out && freel && bufs);
    for (unsigned i = 0; i < depth; i++) {
        reqs[i].buf = bufs + (size_t)i * chunk;
        freel[i] = &reqs[i];
    }
    unsigned nfree = depth, inflight = 0;
    uint64_t next = 0, end = pcbm_align_up(size, chunk), seen = 0;
    while (next < end || inflight) {
        while (nfree && next < end) {
            pcbm_io_req *r = freel[--nfree];
            r->op = PCBM_OP_READ, r->fd = fd, r->len = chunk, r->off = next;
            assert_int_equal(pcbm_io_queue(io, r), 0);
            next += chunk;
            inflight++;
        }
        assert_int_equal(pcbm_io_submit(io), 0);
        int n = pcbm_io_reap(io, out, depth, 1);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++) {
            pcbm_io_req *r = out[i];
            int64_t want = (int64_t)PCBM_MIN((uint64_t)chunk, size - PCBM_MIN(size, r->off));
            assert_int_equal(r->res, want);
            assert_memory_equal(r->buf, expect + r->off, (size_t)want);
            seen += (uint64_t)r->res;
            freel[nfree++] = r;
            inflight--;
        }
    }
    assert_int_equal(seen, size);
    pcbm_free_aligned(bufs);
    free(reqs);
    free(out);
    free(freel);
}

/* Write data in chunks (depth in flight); every completion must be the full chunk. */
static void write_chunks(pcbm_io *io, int fd, const uint8_t *data, size_t size, size_t chunk)
{
    unsigned depth = io->depth;
    pcbm_io_req *reqs = calloc(depth, sizeof *reqs);
    pcbm_io_req **out = calloc(depth, sizeof *out);
    uint8_t *bufs = pcbm_alloc_aligned((size_t)depth * chunk);
    assert_true(reqs && out && bufs);
    unsigned used = 0, inflight = 0;
    uint64_t next = 0;
    pcbm_io_req *freel[256];
    assert_true(depth <= 256);
    for (unsigned i = 0; i < depth; i++)
        freel[used++] = &reqs[i], reqs[i].buf = bufs + (size_t)i * chunk;
    while (next < size || inflight) {
        while (used && next < size) {
            pcbm_io_req *r = freel[--used];
            size_t len = PCBM_MIN(chunk, size - next);
            memcpy(r->buf, data + next, len);
            r->op = PCBM_OP_WRITE, r->fd = fd, r->len = len, r->off = next;
            assert_int_equal(pcbm_io_queue(io, r), 0);
            next += len;
            inflight++;
        }
        assert_int_equal(pcbm_io_submit(io), 0);
        int n = pcbm_io_reap(io, out, depth, 1);
        for (int i = 0; i < n; i++, inflight--) {
            assert_int_equal(out[i]->res, (int64_t)out[i]->len);
            freel[used++] = out[i];
        }
    }
    pcbm_free_aligned(bufs);
    free(reqs);
    free(out);
}

static bool disk_fs(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) < 0)
        return false;
    return sf.f_type == EXT4_MAGIC || sf.f_type == XFS_MAGIC || (unsigned)sf.f_type == BTRFS_MAGIC;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(1 * MiB);
    *n = fread(buf, 1, 1 * MiB, f);
    fclose(f);
    return buf;
}

/* ---- Reads and writes -------------------------------------------------------------------- */

static void check_read_depths(pcbm_io_kind kind)
{
    need(kind);
    const char *path = in_dir(g_dir, "read.bin");
    size_t size = 8 * MiB + 12345;
    uint8_t *data = make_file(path, size, 1);
    bool direct = false;
    int fd = pcbm_open_read(path, true, &direct);
    assert_true(fd >= 0);
    if (disk_fs(g_dir))
        assert_true(direct);
    static const unsigned depths[] = {8, 16, 32, 64};
    for (unsigned i = 0; i < 4; i++) {
        pcbm_io *io = open_io(kind, depths[i]);
        read_chunks(io, fd, data, size, 64 * KiB);
        if (i == 3)
            read_chunks(io, fd, data, size, 4 * KiB);
        pcbm_io_close(io);
    }
    close(fd);
    unlink(path);
    free(data);
}

static void test_read_depths_uring(void **state) { (void)state; check_read_depths(PCBM_IO_URING); }
static void test_read_depths_pread(void **state) { (void)state; check_read_depths(PCBM_IO_PREAD); }

static void check_write_readback(pcbm_io_kind kind, const char *dir)
{
    need(kind);
    const char *path = in_dir(dir, "write.bin");
    size_t size = 4 * MiB;
    uint8_t *data = malloc(size);
    fill_random(data, size, 2);
    unlink(path);
    bool direct = false;
    int fd = pcbm_open_write(path, true, &direct);
    assert_true(fd >= 0);
    if (disk_fs(dir))
        assert_true(direct);
    assert_int_equal(pcbm_open_write(path, true, &direct), -EEXIST);
    pcbm_io *io = open_io(kind, 16);
    write_chunks(io, fd, data, size, 128 * KiB);
    close(fd);
    fd = pcbm_open_read(path, true, &direct);
    assert_true(fd >= 0);
    read_chunks(io, fd, data, size, 256 * KiB);
    pcbm_io_close(io);
    close(fd);
    unlink(path);
    free(data);
}

static void test_write_readback_uring(void **state)
{
    (void)state;
    check_write_readback(PCBM_IO_URING, g_dir);
    check_write_readback(PCBM_IO_URING, g_shm);
}

static void test_write_readback_pread(void **state)
{
    (void)state;
    check_write_readback(PCBM_IO_PREAD, g_dir);
    check_write_readback(PCBM_IO_PREAD, g_shm);
}

/* Reads past EOF complete short; a read starting at or after EOF completes with 0. */
static void check_eof(pcbm_io_kind kind)
{
    need(kind);
    const char *path = in_dir(g_dir, "eof.bin");
    uint8_t *data = make_file(path, 10000, 3);
    bool direct;
    int fd = pcbm_open_read(path, true, &direct);
    assert_true(fd >= 0);
    pcbm_io *io = open_io(kind, 4);
    uint8_t *buf = pcbm_alloc_aligned(16 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fd, buf, 16 * KiB, 0), 10000);
    assert_memory_equal(buf, data, 10000);
    assert_int_equal(do_one(io, PCBM_OP_READ, fd, buf, 4 * KiB, 8 * KiB), 10000 - 8 * KiB);
    assert_memory_equal(buf, data + 8 * KiB, 10000 - 8 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fd, buf, 4 * KiB, 12 * KiB), 0);
    assert_int_equal(do_one(io, PCBM_OP_READ, fd, buf, 0, 0), 0);
    assert_int_equal(do_one(io, PCBM_OP_READ, 12345, buf, 4 * KiB, 0), -EBADF);
    assert_int_equal(do_one(io, PCBM_OP_WRITE, fd, buf, 4 * KiB, 0), -EBADF); /* read-only fd */
    pcbm_free_aligned(buf);
    pcbm_io_close(io);
    close(fd);
    unlink(path);
    free(data);
}

static void test_eof_uring(void **state) { (void)state; check_eof(PCBM_IO_URING); }
static void test_eof_pread(void **state) { (void)state; check_eof(PCBM_IO_PREAD); }

/* More requests than depth at once: the backend holds the rest back and still completes all. */
static void check_over_depth(pcbm_io_kind kind)
{
    need(kind);
    const char *path = in_dir(g_dir, "over.bin");
    size_t size = 1 * MiB;
    uint8_t *data = make_file(path, size, 4);
    bool direct;
    int fd = pcbm_open_read(path, true, &direct);
    pcbm_io *io = open_io(kind, 2);
    enum { N = 64 };
    static pcbm_io_req reqs[N];
    pcbm_io_req *out[N];
    uint8_t *bufs = pcbm_alloc_aligned(size);
    for (unsigned i = 0; i < N; i++) {
        reqs[i] = (pcbm_io_req){.op = PCBM_OP_READ, .fd = fd, .buf = bufs + i * (size / N),
                                .len = size / N, .off = i * (size / N), .user = &reqs[i]};
        assert_int_equal(pcbm_io_queue(io, &reqs[i]), 0);
    }
    assert_int_equal(pcbm_io_submit(io), 0);
    unsigned got = 0;
    while (got < N) {
        int n = pcbm_io_reap(io, out, N, 1);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++)
            assert_int_equal(out[i]->res, (int64_t)(size / N));
        got += (unsigned)n;
    }
    assert_memory_equal(bufs, data, size);
    pcbm_free_aligned(bufs);
    pcbm_io_close(io);
    io = open_io(kind, PCBM_IO_MAX_RING + 100); /* deeper than any ring: accepted */
    read_chunks(io, fd, data, size, 4 * KiB);
    pcbm_io_close(io);
    close(fd);
    unlink(path);
    free(data);
}

static void test_over_depth_uring(void **state) { (void)state; check_over_depth(PCBM_IO_URING); }
static void test_over_depth_pread(void **state) { (void)state; check_over_depth(PCBM_IO_PREAD); }

/* PCBM_FAULT=xfer:N caps every transfer, so each request is continued many times. */
static void check_continuation(pcbm_io_kind kind)
{
    need(kind);
    const char *path = in_dir(g_dir, "cont.bin");
    size_t size = 2 * MiB + 777;
    uint8_t *data = make_file(path, size, 5);
    bool direct;
    setenv("PCBM_FAULT", "xfer:4096", 1); pcbm_seams_reload();
    int fd = pcbm_open_read(path, true, &direct);
    pcbm_io *io = open_io(kind, 8);
    read_chunks(io, fd, data, size, 1 * MiB);
    pcbm_io_close(io);
    close(fd);
    setenv("PCBM_FAULT", "xfer:1000", 1); pcbm_seams_reload(); /* odd sizes: buffered */
    fd = pcbm_open_read(path, false, &direct);
    assert_false(direct);
    io = open_io(kind, 8);
    read_chunks(io, fd, data, size, 300000);
    pcbm_io_close(io);
    close(fd);
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    unlink(path);
    free(data);
}

static void test_continuation_uring(void **state) { (void)state; check_continuation(PCBM_IO_URING); }
static void test_continuation_pread(void **state) { (void)state; check_continuation(PCBM_IO_PREAD); }

/* ---- Buffered files: tmpfs, procfs, and filesystems without O_DIRECT ------------------------ */

static void check_buffered(pcbm_io_kind kind)
{
    need(kind);
    /* tmpfs: O_DIRECT is refused before Linux 6.6 and accepted since; reads work either way. */
    const char *path = in_dir(g_shm, "shm.bin");
    size_t size = 3 * MiB + 5;
    uint8_t *data = make_file(path, size, 6);
    bool direct;
    int fd = pcbm_open_read(path, true, &direct);
    assert_true(fd >= 0);
    pcbm_io *io = open_io(kind, 16);
    read_chunks(io, fd, data, size, 64 * KiB);
    close(fd);
    /* The EINVAL fallback, forced: unaligned chunks only work on a buffered fd. */
    setenv("PCBM_FAULT", "odirect:einval", 1); pcbm_seams_reload();
    fd = pcbm_open_read(path, true, &direct);
    assert_true(fd >= 0);
    assert_false(direct);
    assert_false(fcntl(fd, F_GETFL) & O_DIRECT);
    read_chunks(io, fd, data, size, 10001);
    close(fd);
    const char *wpath = in_dir(g_dir, "buffered-write.bin");
    unlink(wpath);
    fd = pcbm_open_write(wpath, true, &direct);
    assert_true(fd >= 0);
    assert_false(direct);
    write_chunks(io, fd, data, size, 10001);
    close(fd);
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    fd = pcbm_open_read(wpath, true, &direct);
    read_chunks(io, fd, data, size, 64 * KiB);
    close(fd);
    pcbm_io_close(io);
    unlink(wpath);
    unlink(path);
    free(data);
}

static void test_buffered_uring(void **state) { (void)state; check_buffered(PCBM_IO_URING); }
static void test_buffered_pread(void **state) { (void)state; check_buffered(PCBM_IO_PREAD); }

/* procfs has no O_DIRECT at all: a real EINVAL fallback. */
static void test_procfs_fallback(void **state)
{
    (void)state;
    size_t n;
    uint8_t *expect = slurp("/proc/version", &n);
    bool direct = true;
    int fd = pcbm_open_read("/proc/version", true, &direct);
    assert_true(fd >= 0);
    assert_false(direct);
    for (int k = PCBM_IO_URING; k <= PCBM_IO_PREAD; k++) {
        pcbm_io *io = open_io((pcbm_io_kind)k, 2);
        uint8_t buf[4096];
        assert_int_equal(do_one(io, PCBM_OP_READ, fd, buf, sizeof buf, 0), (int64_t)n);
        assert_memory_equal(buf, expect, n);
        pcbm_io_close(io);
    }
    close(fd);
    free(expect);
}

static void test_dio_align(void **state)
{
    (void)state;
    const char *path = in_dir(g_dir, "align.bin");
    free(make_file(path, 1, 7));
    int fd = open(path, O_RDONLY);
    int a = pcbm_io_dio_align(fd);
    assert_true(a >= 1 && a <= 65536 && (a & (a - 1)) == 0);
    close(fd);
    unlink(path);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pcbm_io_dio_align(p[0]), 4096); /* pipes report no DIO alignment */
    close(p[0]);
    close(p[1]);
}

/* ---- Wake-ups ---------------------------------------------------------------------------- */

static void *wake_later(void *arg)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pcbm_io_wake(arg);
    return NULL;
}

static void check_wake(pcbm_io_kind kind)
{
    need(kind);
    pcbm_io *io = open_io(kind, 4);
    pcbm_io_req *out[4];
    pthread_t t;
    double t0 = pcbm_now();
    assert_int_equal(pthread_create(&t, NULL, wake_later, io), 0);
    assert_int_equal(pcbm_io_reap(io, out, 4, 1), 0); /* nothing in flight: blocks until woken */
    double dt = pcbm_now() - t0;
    pthread_join(t, NULL);
    assert_true(dt >= 0.05 && dt < 5.0);
    /* A wake before the wait is kept; reap(wait=0) does not consume it. */
    pcbm_io_wake(io);
    assert_int_equal(pcbm_io_reap(io, out, 4, 0), 0);
    t0 = pcbm_now();
    assert_int_equal(pcbm_io_reap(io, out, 4, 1), 0);
    assert_true(pcbm_now() - t0 < 1.0);
    /* Consumed: the next wait blocks again until the next wake. */
    t0 = pcbm_now();
    assert_int_equal(pthread_create(&t, NULL, wake_later, io), 0);
    assert_int_equal(pcbm_io_reap(io, out, 4, 1), 0);
    pthread_join(t, NULL);
    assert_true(pcbm_now() - t0 >= 0.05);
    /* Several wakes in a row are one. Then real I/O still works. */
    pcbm_io_wake(io);
    pcbm_io_wake(io);
    assert_int_equal(pcbm_io_reap(io, out, 4, 1), 0);
    uint8_t buf[64];
    int fd = open("/proc/version", O_RDONLY);
    assert_true(do_one(io, PCBM_OP_READ, fd, buf, sizeof buf, 0) > 0);
    close(fd);
    pcbm_io_close(io);
}

static void test_wake_uring(void **state) { (void)state; check_wake(PCBM_IO_URING); }
static void test_wake_pread(void **state) { (void)state; check_wake(PCBM_IO_PREAD); }

/* ---- PCBM_FAULT -------------------------------------------------------------------------- */

static void check_read_faults(pcbm_io_kind kind)
{
    need(kind);
    const char *pa = in_dir(g_dir, "fault-a.bin"), *pb = in_dir(g_dir, "fault-b.bin");
    uint8_t *da = make_file(pa, 64 * KiB, 8), *db = make_file(pb, 64 * KiB, 9);
    bool direct;
    int fa = pcbm_open_read(pa, true, &direct), fb = pcbm_open_read(pb, true, &direct);
    uint8_t *buf = pcbm_alloc_aligned(16 * KiB);
    setenv("PCBM_FAULT", "read:eio:2,read:short:3,read:enospc:4,write:eio:1", 1); pcbm_seams_reload();
    pcbm_io *io = open_io(kind, 4);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), 16 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), -EIO);
    memset(buf, 0, 16 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 16 * KiB), 8 * KiB);
    assert_memory_equal(buf, da + 16 * KiB, 8 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), -ENOSPC);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), 16 * KiB);
    pcbm_io_close(io);
    /* Restricted to one file: the first read of fault-b fails, fault-a is never touched. */
    setenv("PCBM_FAULT", "read:eio:1:fault-b", 1); pcbm_seams_reload();
    io = open_io(kind, 4);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), 16 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fb, buf, 16 * KiB, 0), -EIO);
    assert_int_equal(do_one(io, PCBM_OP_READ, fa, buf, 16 * KiB, 0), 16 * KiB);
    assert_int_equal(do_one(io, PCBM_OP_READ, fb, buf, 16 * KiB, 0), 16 * KiB);
    assert_memory_equal(buf, db, 16 * KiB);
    pcbm_io_close(io);
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    pcbm_free_aligned(buf);
    close(fa);
    close(fb);
    unlink(pa);
    unlink(pb);
    free(da);
    free(db);
}

static void check_write_faults(pcbm_io_kind kind)
{
    need(kind);
    const char *path = in_dir(g_dir, "fault-w.bin");
    unlink(path);
    bool direct;
    int fd = pcbm_open_write(path, true, &direct);
    assert_true(fd >= 0);
    uint8_t *buf = pcbm_alloc_aligned(16 * KiB);
    fill_random(buf, 16 * KiB, 10);
    setenv("PCBM_FAULT", "write:eio:1,write:enospc:2,write:short:3", 1); pcbm_seams_reload();
    pcbm_io *io = open_io(kind, 4);
    assert_int_equal(do_one(io, PCBM_OP_WRITE, fd, buf, 16 * KiB, 0), -EIO);
    assert_int_equal(do_one(io, PCBM_OP_WRITE, fd, buf, 16 * KiB, 0), -ENOSPC);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 0);
    pcbm_io_req r = {.op = PCBM_OP_WRITE, .fd = fd, .buf = buf, .len = 16 * KiB};
    pcbm_io_req *out[1];
    assert_int_equal(pcbm_io_queue(io, &r), 0);
    assert_int_equal(pcbm_io_submit(io), 0);
    assert_int_equal(pcbm_io_reap(io, out, 1, 1), 1);
    assert_int_equal(r.res, -ENOSPC);
    assert_int_equal(r.len, 16 * KiB); /* the caller's len is given back */
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 8 * KiB); /* the partial write happened */
    assert_int_equal(do_one(io, PCBM_OP_WRITE, fd, buf, 16 * KiB, 0), 16 * KiB);
    pcbm_io_close(io);
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    pcbm_free_aligned(buf);
    close(fd);
    unlink(path);
}

static void test_faults_uring(void **state)
{
    (void)state;
    check_read_faults(PCBM_IO_URING);
    check_write_faults(PCBM_IO_URING);
}

static void test_faults_pread(void **state)
{
    (void)state;
    check_read_faults(PCBM_IO_PREAD);
    check_write_faults(PCBM_IO_PREAD);
}

static void test_fault_syntax(void **state)
{
    (void)state;
    static const char *const bad[] = {"read", "read:eio", "read:eio:0", "read:boom:1",
                                      "erase:eio:1", "uring_setup:maybe", "xfer:0", "read:eio:x"};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("PCBM_FAULT", bad[i], 1); pcbm_seams_reload();
        pcbm_io *io = NULL;
        pcbm_error err;
        assert_int_equal(pcbm_io_open(PCBM_IO_PREAD, 4, &io, NULL, 0, &err), PCBM_ERR_USAGE);
        assert_null(io);
        assert_non_null(strstr(err.msg, "PCBM_FAULT"));
    }
    pcbm_fault_cfg cfg;
    char why[256];
    assert_int_equal(pcbm_io_fault_parse("write:short:7:out/model:x,xfer:512", &cfg, why,
                                         sizeof why), 0);
    assert_int_equal(cfg.nrules, 1);
    assert_int_equal(cfg.rules[0].op, PCBM_OP_WRITE);
    assert_int_equal(cfg.rules[0].kind, PCBM_FAULT_SHORT);
    assert_int_equal(cfg.rules[0].nth, 7);
    assert_string_equal(cfg.rules[0].path, "out/model:x");
    assert_int_equal(cfg.max_xfer, 512);
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
}

/* ---- Choosing the backend ---------------------------------------------------------------- */

static void test_open_args(void **state)
{
    (void)state;
    pcbm_io *io = NULL;
    pcbm_error err;
    assert_int_equal(pcbm_io_open(PCBM_IO_AUTO, 0, &io, NULL, 0, &err), PCBM_ERR_USAGE);
    setenv("PCBM_IO_THREADS", "lots", 1); pcbm_seams_reload();
    assert_int_equal(pcbm_io_open(PCBM_IO_PREAD, 4, &io, NULL, 0, &err), PCBM_ERR_USAGE);
    setenv("PCBM_IO_THREADS", "2", 1); pcbm_seams_reload();
    io = open_io(PCBM_IO_PREAD, 32);
    assert_string_equal(pcbm_io_name(io), "pread");
    pcbm_io_close(io);
    unsetenv("PCBM_IO_THREADS"); pcbm_seams_reload();
    char note[512] = "x";
    assert_int_equal(pcbm_io_open(PCBM_IO_AUTO, 8, &io, note, sizeof note, &err), PCBM_OK);
    /* This machine may or may not allow io_uring; either way auto says so consistently. */
    if (strcmp(pcbm_io_name(io), "io_uring") == 0)
        assert_string_equal(note, "");
    else
        assert_non_null(strstr(note, "io_uring unavailable"));
    pcbm_io_close(io);
}

static void test_auto_fallback_fault(void **state)
{
    (void)state;
    setenv("PCBM_FAULT", "uring_setup:eperm", 1); pcbm_seams_reload();
    pcbm_io *io = NULL;
    pcbm_error err;
    char note[512];
    assert_int_equal(pcbm_io_open(PCBM_IO_AUTO, 8, &io, note, sizeof note, &err), PCBM_OK);
    assert_string_equal(pcbm_io_name(io), "pread");
    assert_non_null(strstr(note, "io_uring unavailable (io_uring_setup: Operation not permitted"));
    assert_non_null(strstr(note, "seccomp"));
    assert_non_null(strstr(note, "using the pread thread pool"));
    const char *path = in_dir(g_dir, "fallback.bin");
    uint8_t *data = make_file(path, 1 * MiB, 11);
    bool direct;
    int fd = pcbm_open_read(path, true, &direct);
    read_chunks(io, fd, data, 1 * MiB, 64 * KiB);
    pcbm_io_close(io);
    io = NULL;
    assert_int_equal(pcbm_io_open(PCBM_IO_URING, 8, &io, note, sizeof note, &err),
                     PCBM_ERR_UNSUPPORTED);
    assert_null(io);
    assert_non_null(strstr(err.msg, "set `io` to pread or auto"));
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    close(fd);
    unlink(path);
    free(data);
}

/* ---- A real seccomp filter: io_uring_setup → EPERM, as Docker's default profile does ------- */

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

#define SKIP_CODE 77

#ifdef SECCOMP_ARCH
static int deny_io_uring_setup(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0 ? 0 : -errno;
}

/* Runs in the forked child: exit code 0 = all good, SKIP_CODE = no seccomp, else the failed step. */
static int seccomp_child(const char *path, const uint8_t *data, size_t size)
{
    if (deny_io_uring_setup() < 0)
        return SKIP_CODE;
    if (syscall(__NR_io_uring_setup, 1, NULL) != -1 || errno != EPERM)
        return 10;
    pcbm_io *io = NULL;
    pcbm_error err;
    char note[512];
    if (pcbm_io_open(PCBM_IO_AUTO, 8, &io, note, sizeof note, &err) != PCBM_OK)
        return 11;
    if (strcmp(pcbm_io_name(io), "pread") != 0 || !strstr(note, "Operation not permitted") ||
        !strstr(note, "seccomp"))
        return 12;
    bool direct;
    int fd = pcbm_open_read(path, true, &direct);
    uint8_t *buf = pcbm_alloc_aligned(size);
    pcbm_io_req r = {.op = PCBM_OP_READ, .fd = fd, .buf = buf, .len = size}, *out[1];
    if (fd < 0 || pcbm_io_queue(io, &r) || pcbm_io_submit(io) || pcbm_io_reap(io, out, 1, 1) != 1)
        return 13;
    if (r.res != (int64_t)size || memcmp(buf, data, size) != 0)
        return 14;
    pcbm_io_close(io);
    io = NULL;
    if (pcbm_io_open(PCBM_IO_URING, 8, &io, NULL, 0, &err) != PCBM_ERR_UNSUPPORTED || io)
        return 15;
    if (!strstr(err.msg, "Operation not permitted") || !strstr(err.msg, "set `io` to pread"))
        return 16;
    return 0;
}
#endif

static void test_seccomp_fallback(void **state)
{
    (void)state;
#ifndef SECCOMP_ARCH
    skip();
#else
    const char *path = in_dir(g_dir, "seccomp.bin");
    size_t size = 512 * KiB;
    uint8_t *data = make_file(path, size, 12);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(seccomp_child(path, data, size));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    unlink(path);
    free(data);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == SKIP_CODE)
        skip();
    if (WEXITSTATUS(status) != 0)
        fail_msg("seccomp child failed at step %d", WEXITSTATUS(status));
#endif
}

/* ---- Fixture ----------------------------------------------------------------------------- */

static int make_dirs(void **state)
{
    (void)state;
    const char *base = getenv("PCBM_TEST_DIO_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/pcbm-io-XXXXXX", base ? base : "/var/tmp");
    if (!mkdtemp(g_dir)) {
        snprintf(g_dir, sizeof g_dir, "/tmp/pcbm-io-XXXXXX");
        if (!mkdtemp(g_dir))
            return -1;
    }
    snprintf(g_shm, sizeof g_shm, "/dev/shm/pcbm-io-XXXXXX");
    if (!mkdtemp(g_shm))
        snprintf(g_shm, sizeof g_shm, "%s", g_dir); /* no /dev/shm: the disk again */
    return 0;
}

static int remove_dirs(void **state)
{
    (void)state;
    rmdir(g_dir);
    if (strcmp(g_shm, g_dir) != 0)
        rmdir(g_shm);
    return 0;
}

int main(void)
{
    unsetenv("PCBM_FAULT"); pcbm_seams_reload();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_depths_uring),   cmocka_unit_test(test_read_depths_pread),
        cmocka_unit_test(test_write_readback_uring), cmocka_unit_test(test_write_readback_pread),
        cmocka_unit_test(test_eof_uring),           cmocka_unit_test(test_eof_pread),
        cmocka_unit_test(test_over_depth_uring),    cmocka_unit_test(test_over_depth_pread),
        cmocka_unit_test(test_continuation_uring),  cmocka_unit_test(test_continuation_pread),
        cmocka_unit_test(test_buffered_uring),      cmocka_unit_test(test_buffered_pread),
        cmocka_unit_test(test_procfs_fallback),     cmocka_unit_test(test_dio_align),
        cmocka_unit_test(test_wake_uring),          cmocka_unit_test(test_wake_pread),
        cmocka_unit_test(test_faults_uring),        cmocka_unit_test(test_faults_pread),
        cmocka_unit_test(test_fault_syntax),        cmocka_unit_test(test_open_args),
        cmocka_unit_test(test_auto_fallback_fault), cmocka_unit_test(test_seccomp_fallback),
    };
    return cmocka_run_group_tests(tests, make_dirs, remove_dirs);
}

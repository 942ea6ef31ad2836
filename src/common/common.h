/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.h — what every module of libpcbmerge shares: error reporting into a pcbm_error,
 * logging to stderr, checked allocation, aligned buffers, small arithmetic helpers, and the
 * file-system and parameter helpers of merge, split merge and search (util.c).
 * Internal: nothing here is part of the public API.
 */
#ifndef PCBM_COMMON_H
#define PCBM_COMMON_H

#include "pcbmerge.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCBM_ALIGN 4096u            /* O_DIRECT-safe alignment of offsets, lengths and buffers */
#define PCBM_UNUSED(x) ((void)(x))
#define PCBM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PCBM_MAX(a, b) ((a) > (b) ? (a) : (b))

#if defined(__GNUC__)
#define PCBM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PCBM_PRINTF(f, a)
#endif

/* Fill `err` (may be NULL) and return `st`. The message should say what, where and what to do. */
pcbm_status pcbm_fail(pcbm_error *err, pcbm_status st, const char *fmt, ...) PCBM_PRINTF(3, 4);
/* Clear an error to PCBM_OK / "". */
void pcbm_error_clear(pcbm_error *err);

/* Messages. The library never writes to stdout or stderr: pcbm_warn and pcbm_info hand their
 * sentence to the message callback of the public call running on this thread (its options'
 * on_message), or drop it when that call has none. A public entry point brackets its work with
 * pcbm_log_enter / pcbm_log_leave; the sink is per thread, so concurrent calls on different
 * threads keep their messages apart. */
typedef struct pcbm_log_sink {
    pcbm_message_fn fn;
    void *user;
    /* the warnings said so far (for the call's report): at most PCBM_LOG_KEEP, then counted */
    char **warnings;
    unsigned nwarnings, dropped;
} pcbm_log_sink;
#define PCBM_LOG_KEEP 256u
/* Make `sink` (may be NULL: silent) this thread's sink; returns the previous one, for leave. */
pcbm_log_sink *pcbm_log_enter(pcbm_log_sink *sink);
/* Restore `prev`; the warnings `sink` kept are freed. */
void pcbm_log_leave(pcbm_log_sink *sink, pcbm_log_sink *prev);
/* The sink in force on this thread, or NULL. Only this thread may use it. */
const pcbm_log_sink *pcbm_log_current(void);
void pcbm_warn(const char *fmt, ...) PCBM_PRINTF(1, 2);   /* PCBM_LEVEL_WARNING */
void pcbm_info(const char *fmt, ...) PCBM_PRINTF(1, 2);   /* PCBM_LEVEL_NOTE */

/* Allocation that never returns NULL silently: on failure they return NULL and the caller
 * reports PCBM_ERR_NOMEM. Aligned buffers are PCBM_ALIGN-aligned and freed with pcbm_free_aligned. */
void *pcbm_malloc(size_t n);
void *pcbm_calloc(size_t n, size_t size);
void *pcbm_realloc(void *p, size_t n);
char *pcbm_strdup(const char *s);
void *pcbm_alloc_aligned(size_t n);
void pcbm_free_aligned(void *p);

static inline uint64_t pcbm_align_down(uint64_t x, uint64_t a) { return x - x % a; }
static inline uint64_t pcbm_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Make room for one more element in a growing array (*arr has *cap elements of `size` bytes,
 * n of them used). Returns false when out of memory (the array is unchanged). */
bool pcbm_grow(void **arr, size_t *cap, size_t n, size_t size);
/* write() all of buf, retrying on EINTR and short writes. 0, or -errno (-ENOSPC when write
 * returns 0). */
int pcbm_write_all(int fd, const void *buf, size_t len);

/* The bits of a float and back (memcpy: no aliasing questions, compiled to a move). */
static inline uint32_t pcbm_f2u(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    return u;
}
static inline float pcbm_u2f(uint32_t u)
{
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

/* a*b with overflow detection: returns false on overflow. */
static inline bool pcbm_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool pcbm_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Test hook: PCBM_TEST_KILL=POINT:N raises SIGKILL (PCBM_TEST_PAUSE: SIGSTOP) the N-th time
 * pcbm_test_point(POINT) is reached (points: "stats" and "apply" per block set, "stats-begin" and "apply-begin" when a
 * pass starts, "finalize" before publication). */
void pcbm_test_point(const char *point);

/* Monotonic clock in seconds. */
double pcbm_now(void);

/* Human-readable byte count into buf ("1.50 GiB"). Returns buf. */
char *pcbm_fmt_bytes(uint64_t n, char *buf, size_t len);

/* ---- util.c: shared by merge, split merge and search ---- */

/* pread exactly len bytes at off (EINTR retried): 0, an errno, or -1 when the file ends first;
 * *done (may be NULL) receives the bytes read before it stopped. */
int pcbm_pread_full(int fd, void *buf, size_t len, uint64_t off, uint64_t *done);

/* Removal never follows a symbolic link: a link is removed, never its target. */
/* Remove a file or a directory tree (0 or -errno; a missing path is not an error). */
int pcbm_remove_tree(const char *path);
/* Remove everything inside dir, keeping dir (and a lock held on it). 0 or -errno. */
int pcbm_remove_contents(const char *dir);
/* Remove entry `name` of the directory open as dfd (a directory with its contents). */
int pcbm_remove_at(int dfd, const char *name);
/* Remove every entry of the directory open as fd but `keep` (may be NULL); fd stays valid. */
int pcbm_empty_dirfd(int fd, const char *keep);
/* Open path with flags (O_CLOEXEC is added; O_CREAT creates it 0644) and take an exclusive,
 * non-blocking flock. 0 with *fd open and locked; -EWOULDBLOCK when another process holds the
 * lock, -errno when the open failed (*fd is -1 on failure). */
int pcbm_lock_file(const char *path, int flags, int *fd);
/* Compare two canonical JSON parameter objects: 1 if they differ. key receives the first key of
 * `a` whose value differs (`first`, when given and it differs, is named before any other key;
 * "format" when only the texts differ), desc "KEY A there, B here". */
int pcbm_params_differ(const char *a, const char *b, const char *first, char *key, size_t keylen,
                       char *desc, size_t desclen);

#endif /* PCBM_COMMON_H */

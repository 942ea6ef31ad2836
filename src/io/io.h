/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io.h — the I/O backends behind one small interface (compare fio's ioengines): io_uring and a
 * pread/pwrite thread pool, plus a fault-injecting wrapper for tests. The scheduler queues read
 * and write requests, submits them and reaps completions; it never knows which backend runs.
 *
 * Completion semantics (every backend): a request completes once, with `res` = bytes transferred
 * (== len on success) or -errno. Short transfers are continued by the backend until len is done;
 * a read that hits end of file completes with the bytes it got (res < len). Requests are
 * independent and may complete in any order.
 */
#ifndef PCBM_IO_H
#define PCBM_IO_H

#include "../common/common.h"

#include <sys/types.h>

typedef enum pcbm_io_op { PCBM_OP_READ = 0, PCBM_OP_WRITE } pcbm_io_op;

typedef struct pcbm_io_req {
    pcbm_io_op op;
    int fd;
    void *buf;            /* PCBM_ALIGN-aligned when fd is O_DIRECT */
    size_t len;
    uint64_t off;
    int64_t res;          /* filled on completion */
    void *user;           /* caller's cookie */
    /* backend-private */
    size_t done;          /* bytes already transferred (short-transfer continuation) */
    struct pcbm_io_req *next;
} pcbm_io_req;

typedef struct pcbm_io pcbm_io;

typedef struct pcbm_io_ops {
    const char *name;     /* "io_uring", "pread" */
    /* Queue one request (may be submitted at once). 0 or -errno. */
    int (*queue)(pcbm_io *io, pcbm_io_req *r);
    /* Make sure every queued request is on its way. 0 or -errno. */
    int (*submit)(pcbm_io *io);
    /* Collect up to max completed requests into out[]. If wait, block until at least one
     * completes or pcbm_io_wake() is called. Returns the count (may be 0) or -errno. */
    int (*reap)(pcbm_io *io, pcbm_io_req **out, unsigned max, int wait);
    /* Thread-safe: make a blocked or the next reap(wait=1) return. */
    void (*wake)(pcbm_io *io);
    void (*destroy)(pcbm_io *io);
} pcbm_io_ops;

struct pcbm_io {
    const pcbm_io_ops *ops;
    unsigned depth;       /* maximum requests in flight */
    void *priv;
};

/*
 * Open a backend for at most `depth` requests in flight. PCBM_IO_AUTO tries io_uring and, when it
 * is refused (EPERM/ENOSYS: seccomp, gVisor, kernel.io_uring_disabled), falls back to the pread
 * pool; `note` (may be NULL) then receives one sentence saying why. PCBM_IO_URING fails instead of
 * falling back. The environment variable PCBM_FAULT (see io_fault.c) wraps the backend with
 * injected failures for tests.
 */
pcbm_status pcbm_io_open(pcbm_io_kind kind, unsigned depth, pcbm_io **out, char *note,
                         size_t notelen, pcbm_error *err);
void pcbm_io_close(pcbm_io *io);

static inline int pcbm_io_queue(pcbm_io *io, pcbm_io_req *r) { return io->ops->queue(io, r); }
static inline int pcbm_io_submit(pcbm_io *io) { return io->ops->submit(io); }
static inline int pcbm_io_reap(pcbm_io *io, pcbm_io_req **out, unsigned max, int wait)
{
    return io->ops->reap(io, out, max, wait);
}
static inline void pcbm_io_wake(pcbm_io *io) { io->ops->wake(io); }
static inline const char *pcbm_io_name(const pcbm_io *io) { return io->ops->name; }

/* Open a file for reading, with O_DIRECT when the filesystem supports it (probed once per file);
 * *direct tells which. Returns fd or -errno. */
int pcbm_open_read(const char *path, bool want_direct, bool *direct);
/* Open an existing file for writing (existing) or create one (O_CREAT|O_EXCL), with O_DIRECT
 * when supported. fd or -errno. */
int pcbm_open_write_mode(const char *path, bool want_direct, bool existing, bool *direct);
/* Create a file for writing (O_CREAT|O_EXCL), with O_DIRECT when supported. fd or -errno. */
int pcbm_open_write(const char *path, bool want_direct, bool *direct);
/* The O_DIRECT alignment (offsets, lengths, buffers) the kernel reports for fd through statx
 * STATX_DIOALIGN, or 4096 when it reports none. Callers align to PCBM_MAX(this, PCBM_ALIGN). */
int pcbm_io_dio_align(int fd);

/* ---------------------------------------------------------------------------------------------
 * Inside src/io: the backends behind pcbm_io_open, and the PCBM_FAULT test hooks. Other modules
 * use pcbm_io_open only.
 *
 * Notes on the contract above, shared by every backend:
 *  - queue() resets r->res, r->done and r->next; a request with len 0 completes at once, res 0.
 *  - reap(wait=1) with nothing in flight blocks until pcbm_io_wake(); a wake is kept until a
 *    reap(wait=1) returns (with completions or with 0), so a wake between the caller's last look
 *    at its own state and reap(wait=1) is never lost. reap(wait=0) leaves a pending wake alone.
 *  - The io_uring backend's wake is async-signal-safe (one write to an eventfd); the pread pool's
 *    takes a mutex, so call it from threads, not from signal handlers.
 *  - A signal interrupting a blocked io_uring reap makes it return 0.
 * ------------------------------------------------------------------------------------------- */
#define PCBM_IO_MAX_RING 4096u         /* largest io_uring SQ; deeper queues wait in a backlog */
#define PCBM_IO_MAX_THREADS 16u        /* largest pread pool (PCBM_IO_THREADS may ask for fewer) */
#define PCBM_IO_MAX_XFER (1u << 30)    /* largest single read/write a backend issues */

/* FIFO of requests linked through r->next. */
typedef struct pcbm_io_list {
    pcbm_io_req *head, *tail;
} pcbm_io_list;

static inline void pcbm_io_list_push(pcbm_io_list *l, pcbm_io_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static inline pcbm_io_req *pcbm_io_list_pop(pcbm_io_list *l)
{
    pcbm_io_req *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        r->next = NULL;
    }
    return r;
}

/* Pop up to max requests of l into out[]; returns how many. */
static inline unsigned pcbm_io_list_take(pcbm_io_list *l, pcbm_io_req **out, unsigned max)
{
    unsigned n = 0;
    while (n < max && l->head)
        out[n++] = pcbm_io_list_pop(l);
    return n;
}

/* io_uring backend. fake_setup_errno != 0 makes the ring setup fail with that errno (PCBM_FAULT).
 * On failure returns -errno and writes why into `why`, e.g. "io_uring_setup: Operation not
 * permitted — blocked by a seccomp profile, gVisor or kernel.io_uring_disabled". */
int pcbm_io_uring_create(unsigned depth, size_t max_xfer, int fake_setup_errno, pcbm_io **out,
                         char *why, size_t whylen);

/* pread/pwrite thread pool of `threads` workers (0 = PCBM_MIN(depth, PCBM_IO_MAX_THREADS)). */
int pcbm_io_pread_create(unsigned depth, unsigned threads, size_t max_xfer, pcbm_io **out);

/* PCBM_FAULT, parsed (syntax at the top of io_fault.c). */
#define PCBM_FAULT_MAX_RULES 16u
typedef enum pcbm_fault_kind { PCBM_FAULT_EIO = 0, PCBM_FAULT_SHORT, PCBM_FAULT_ENOSPC } pcbm_fault_kind;

typedef struct pcbm_fault_rule {
    pcbm_io_op op;
    pcbm_fault_kind kind;
    unsigned long nth;            /* fail the nth matching request, 1-based */
    char path[256];               /* "" = any file, else a substring of the fd's path */
} pcbm_fault_rule;

typedef struct pcbm_fault_cfg {
    unsigned nrules;
    pcbm_fault_rule rules[PCBM_FAULT_MAX_RULES];
    int uring_setup_errno;        /* uring_setup:eperm|enosys */
    bool odirect_einval;          /* odirect:einval — act as if no filesystem had O_DIRECT */
    size_t max_xfer;              /* xfer:BYTES — cap every transfer (0 = PCBM_IO_MAX_XFER) */
} pcbm_fault_cfg;

/* Parse spec (NULL or "" = no faults) into cfg. 0, or -EINVAL with a sentence in why. */
int pcbm_io_fault_parse(const char *spec, pcbm_fault_cfg *cfg, char *why, size_t whylen);
/* Wrap inner with cfg's rules; the wrapper owns inner from then on (also on failure). */
int pcbm_io_fault_wrap(pcbm_io *inner, const pcbm_fault_cfg *cfg, pcbm_io **out);

#endif /* PCBM_IO_H */

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
/* Create a file for writing (O_CREAT|O_EXCL), with O_DIRECT when supported. fd or -errno. */
int pcbm_open_write(const char *path, bool want_direct, bool *direct);

#endif /* PCBM_IO_H */

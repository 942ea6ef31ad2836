/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_uring.c — the io_uring backend: one ring, reads and writes prepared with io_uring_prep_read /
 * io_uring_prep_write (reads through the page cache marked IOSQE_ASYNC), short transfers continued
 * at off+done, and an eventfd read kept armed in the ring so that pcbm_io_wake() interrupts a
 * blocked reap from any thread (or signal handler).
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WAKE_TAG ((uint64_t)1)   /* user_data of the eventfd read; requests are aligned pointers */
#define PROBE_TIMEOUT_S 2        /* the start-up round trip through the ring */

typedef struct uring_be {
    pcbm_io io;
    struct io_uring ring;
    bool ring_ok;
    int efd;                 /* eventfd written by wake() */
    uint64_t efd_val;        /* target of the armed eventfd read */
    bool wake_armed;         /* the eventfd read is in the ring */
    bool wake_broken;        /* the eventfd read failed: stop re-arming it */
    bool woken;              /* a wake arrived and no reap(wait=1) has returned since */
    size_t max_xfer;
    unsigned inflight;       /* SQEs prepared and not yet completed (the wake read included) */
    unsigned max_inflight;   /* the CQ ring's size: more in flight could overflow it */
    pcbm_io_list backlog;    /* requests waiting for a free SQE */
    pcbm_io_list ready;      /* completed, not yet handed out */
} uring_be;

static const char *setup_hint(int e)
{
    if (e == EPERM)
        return " — blocked by a seccomp profile, gVisor or kernel.io_uring_disabled";
    if (e == ENOSYS)
        return " — the kernel lacks io_uring, or a seccomp profile or gVisor hides it";
    if (e == ENOMEM)
        return " — RLIMIT_MEMLOCK may be too low for the ring";
    return "";
}

/* An SQE, flushing the submission queue once if it is full. NULL if none is free or if one more
 * in flight could overflow the completion queue; requests leave `reserve` CQEs to the wake read. */
static struct io_uring_sqe *get_sqe(uring_be *be, unsigned reserve)
{
    if (be->inflight + reserve >= be->max_inflight)
        return NULL;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&be->ring);
    if (!sqe && io_uring_submit(&be->ring) >= 0)
        sqe = io_uring_get_sqe(&be->ring);
    be->inflight += sqe != NULL;
    return sqe;
}

/* A read through the page cache that finds its pages cached is a memory copy, done by the thread
 * that submits it unless IOSQE_ASYNC hands it to the ring's worker threads: with the inputs
 * cached, the engine's I/O thread would spend most of its time copying (a quarter of a CPU at
 * 4 GB/s) and hold up its other work (staging, hashing and writing the output), so buffered reads
 * go to the workers. O_DIRECT reads stay as they are (the block layer completes them). One fcntl
 * per request. */
static bool page_cache_fd(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_DIRECT);
}

/* Prepare the remainder of r (from r->done). False when no SQE is free. */
static bool prep_req(uring_be *be, pcbm_io_req *r)
{
    struct io_uring_sqe *sqe = get_sqe(be, 1);
    if (!sqe)
        return false;
    char *buf = (char *)r->buf + r->done;
    unsigned n = (unsigned)PCBM_MIN(r->len - r->done, be->max_xfer);
    if (r->op == PCBM_OP_READ) {
        io_uring_prep_read(sqe, r->fd, buf, n, r->off + r->done);
        if (page_cache_fd(r->fd))
            sqe->flags |= IOSQE_ASYNC;
    } else {
        io_uring_prep_write(sqe, r->fd, buf, n, r->off + r->done);
    }
    io_uring_sqe_set_data(sqe, r);
    return true;
}

static void prep_or_backlog(uring_be *be, pcbm_io_req *r)
{
    if (!prep_req(be, r))
        pcbm_io_list_push(&be->backlog, r);
}

static void flush_backlog(uring_be *be)
{
    while (be->backlog.head && prep_req(be, be->backlog.head))
        pcbm_io_list_pop(&be->backlog);
}

static void arm_wake(uring_be *be)
{
    if (be->wake_armed || be->wake_broken)
        return;
    struct io_uring_sqe *sqe = get_sqe(be, 0);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, be->efd, &be->efd_val, sizeof be->efd_val, 0);
    sqe->user_data = WAKE_TAG;
    be->wake_armed = true;
}

static void complete(uring_be *be, pcbm_io_req *r, int64_t res)
{
    r->res = res;
    pcbm_io_list_push(&be->ready, r);
}

/* One CQE of a request: finish it, or continue it after a short transfer or EAGAIN/EINTR. */
static void on_result(uring_be *be, pcbm_io_req *r, int res)
{
    if (res == -EAGAIN || res == -EINTR)
        prep_or_backlog(be, r);
    else if (res < 0)
        complete(be, r, res);
    else if (res == 0) /* EOF on a read; a write that moves nothing would loop forever */
        complete(be, r, r->op == PCBM_OP_READ ? (int64_t)r->done : -EIO);
    else if ((r->done += (size_t)res) < r->len)
        prep_or_backlog(be, r);
    else
        complete(be, r, (int64_t)r->done);
}

static void on_wake(uring_be *be, int res)
{
    be->wake_armed = false;
    if (res >= 0 || res == -EINTR || res == -EAGAIN || res == -ECANCELED) {
        be->woken = res >= 0 || be->woken;
        return;
    }
    be->wake_broken = true;
    pcbm_warn("io_uring: the wake-up read on an eventfd failed (%s); a blocked wait now ends only "
              "when I/O completes", strerror(-res));
}

static void drain_cqes(uring_be *be)
{
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&be->ring, &cqe) == 0) {
        uint64_t tag = cqe->user_data;
        int res = cqe->res;
        io_uring_cqe_seen(&be->ring, cqe);
        be->inflight--;
        if (tag == WAKE_TAG)
            on_wake(be, res);
        else
            on_result(be, (pcbm_io_req *)(uintptr_t)tag, res);
    }
}

static int uring_queue(pcbm_io *io, pcbm_io_req *r)
{
    uring_be *be = io->priv;
    r->res = 0;
    r->done = 0;
    r->next = NULL;
    if (r->len == 0)
        complete(be, r, 0);
    else if (be->backlog.head)
        pcbm_io_list_push(&be->backlog, r); /* keep the order */
    else
        prep_or_backlog(be, r);
    return 0;
}

static int uring_submit(pcbm_io *io)
{
    uring_be *be = io->priv;
    flush_backlog(be);
    int rc = io_uring_submit(&be->ring);
    /* Transient: the SQEs stay in the ring and the next submit or reap retries them. */
    if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
        return 0;
    return rc < 0 ? rc : 0;
}

/* Block until a CQE is there (submitting what is prepared). 0, 1 on a signal, or -errno. */
static int wait_cqe(uring_be *be)
{
    flush_backlog(be);
    arm_wake(be);
    int rc = io_uring_submit_and_wait(&be->ring, 1);
    if (rc == -EAGAIN || rc == -EBUSY) { /* cannot submit now: wait for completions only */
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&be->ring, &cqe);
    }
    if (rc == -EINTR)
        return 1;
    return rc < 0 ? rc : 0;
}

static int uring_reap(pcbm_io *io, pcbm_io_req **out, unsigned max, int wait)
{
    uring_be *be = io->priv;
    for (;;) {
        drain_cqes(be);
        unsigned n = pcbm_io_list_take(&be->ready, out, max);
        if (n > 0 || !wait || be->woken || max == 0) {
            if (wait)
                be->woken = false;
            return (int)n;
        }
        int rc = wait_cqe(be);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return 0;
    }
}

static void uring_wake(pcbm_io *io)
{
    uring_be *be = io->priv;
    uint64_t one = 1;
    if (write(be->efd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so a wake is pending anyway */
    }
}

static void uring_destroy(pcbm_io *io)
{
    uring_be *be = io->priv;
    if (be->ring_ok)
        io_uring_queue_exit(&be->ring);
    if (be->efd >= 0)
        close(be->efd);
    free(be);
}

static const pcbm_io_ops uring_ops = {
    .name = "io_uring",
    .queue = uring_queue,
    .submit = uring_submit,
    .reap = uring_reap,
    .wake = uring_wake,
    .destroy = uring_destroy,
};

/* The ring must support plain reads and writes (gVisor's io_uring, for one, does not). */
static int check_opcodes(uring_be *be, char *why, size_t whylen)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(&be->ring);
    bool ok = p && io_uring_opcode_supported(p, IORING_OP_READ) &&
              io_uring_opcode_supported(p, IORING_OP_WRITE);
    if (p)
        io_uring_free_probe(p);
    if (ok)
        return 0;
    snprintf(why, whylen, "the kernel's io_uring lacks IORING_OP_READ/IORING_OP_WRITE");
    return -EOPNOTSUPP;
}

/* A real round trip: read the eventfd (made readable first) through the ring. */
static int probe_read(uring_be *be, char *why, size_t whylen)
{
    uint64_t one = 1;
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec ts = {.tv_sec = PROBE_TIMEOUT_S};
    int rc = write(be->efd, &one, sizeof one) == sizeof one ? 0 : -errno;
    if (rc == 0) {
        arm_wake(be);
        rc = io_uring_submit(&be->ring);
    }
    if (rc >= 0)
        rc = io_uring_wait_cqe_timeout(&be->ring, &cqe, &ts);
    if (rc == 0) {
        rc = cqe->user_data == WAKE_TAG && cqe->res == sizeof one ? 0
             : cqe->res < 0                                      ? cqe->res
                                                                 : -EIO;
        io_uring_cqe_seen(&be->ring, cqe);
        be->inflight--;
    }
    be->wake_armed = false;
    if (rc < 0)
        snprintf(why, whylen, "a probe read through io_uring failed: %s", strerror(-rc));
    return rc;
}

int pcbm_io_uring_create(unsigned depth, size_t max_xfer, int fake_setup_errno, pcbm_io **out,
                         char *why, size_t whylen)
{
    *out = NULL;
    uring_be *be = pcbm_calloc(1, sizeof *be);
    if (!be) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    be->io = (pcbm_io){.ops = &uring_ops, .depth = depth, .priv = be};
    be->max_xfer = max_xfer ? PCBM_MIN(max_xfer, PCBM_IO_MAX_XFER) : PCBM_IO_MAX_XFER;
    be->efd = eventfd(0, EFD_CLOEXEC);
    int rc = be->efd < 0 ? -errno : 0;
    if (rc < 0) {
        snprintf(why, whylen, "eventfd: %s", strerror(-rc));
    } else {
        /* +1: the armed eventfd read. In flight is bounded by the CQ ring (twice the SQ). */
        unsigned entries = PCBM_MIN(depth, PCBM_IO_MAX_RING) + 1;
        rc = fake_setup_errno ? -fake_setup_errno : io_uring_queue_init(entries, &be->ring, 0);
        be->ring_ok = rc == 0;
        be->max_inflight = rc == 0 ? be->ring.cq.ring_entries : 0;
        if (rc < 0)
            snprintf(why, whylen, "io_uring_setup: %s%s%s", strerror(-rc), setup_hint(-rc),
                     fake_setup_errno ? " [simulated by PCBM_FAULT]" : "");
    }
    if (rc == 0)
        rc = check_opcodes(be, why, whylen);
    if (rc == 0)
        rc = probe_read(be, why, whylen);
    if (rc < 0) {
        uring_destroy(&be->io);
        return rc;
    }
    *out = &be->io;
    return 0;
}

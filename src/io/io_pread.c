/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_pread.c — the fallback backend: a pool of threads doing pread/pwrite (looping on short
 * transfers and EINTR), fed by a work list and answering through a completion list, both under one
 * mutex with a condition variable each. Used where io_uring is refused (seccomp, gVisor, sysctl).
 */
#include "io.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct pread_be {
    pcbm_io io;
    pthread_mutex_t mu;
    pthread_cond_t work;     /* workers wait here for todo */
    pthread_cond_t done;     /* the reaper waits here for finished or a wake */
    pcbm_io_list todo;       /* submitted, not yet picked up */
    pcbm_io_list finished;   /* completed, not yet reaped */
    pcbm_io_list batch;      /* queued, not yet submitted (scheduler thread only) */
    bool woken;
    bool stop;
    size_t max_xfer;
    unsigned nthreads;       /* started */
    pthread_t threads[PCBM_IO_MAX_THREADS];
} pread_be;

/* The whole request: bytes moved (short only at EOF) or -errno. */
static int64_t transfer(const pcbm_io_req *r, size_t max_xfer)
{
    size_t done = 0;
    while (done < r->len) {
        char *buf = (char *)r->buf + done;
        size_t n = PCBM_MIN(r->len - done, max_xfer);
        off_t off = (off_t)(r->off + done);
        ssize_t got = r->op == PCBM_OP_READ ? pread(r->fd, buf, n, off) : pwrite(r->fd, buf, n, off);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got < 0)
            return -errno;
        if (got == 0) /* EOF on a read; a write that moves nothing would loop forever */
            return r->op == PCBM_OP_READ ? (int64_t)done : -EIO;
        done += (size_t)got;
    }
    return (int64_t)done;
}

static void *worker(void *arg)
{
    pread_be *be = arg;
    pthread_mutex_lock(&be->mu);
    for (;;) {
        pcbm_io_req *r = NULL;
        while (!be->stop && !(r = pcbm_io_list_pop(&be->todo)))
            pthread_cond_wait(&be->work, &be->mu);
        if (be->stop)
            break;
        pthread_mutex_unlock(&be->mu);
        int64_t res = transfer(r, be->max_xfer);
        pthread_mutex_lock(&be->mu);
        r->res = res;
        r->done = res > 0 ? (size_t)res : 0;
        pcbm_io_list_push(&be->finished, r);
        pthread_cond_signal(&be->done);
    }
    pthread_mutex_unlock(&be->mu);
    return NULL;
}

static int pread_queue(pcbm_io *io, pcbm_io_req *r)
{
    pread_be *be = io->priv;
    r->res = 0;
    r->done = 0;
    pcbm_io_list_push(&be->batch, r);
    return 0;
}

/* Hand the batch to the workers (len 0 requests go straight to finished). Call with mu held. */
static void flush_batch_locked(pread_be *be)
{
    pcbm_io_req *r;
    unsigned n = 0;
    while ((r = pcbm_io_list_pop(&be->batch))) {
        pcbm_io_list_push(r->len ? &be->todo : &be->finished, r);
        n += r->len != 0;
    }
    if (n == 1)
        pthread_cond_signal(&be->work);
    else if (n > 1)
        pthread_cond_broadcast(&be->work);
}

static int pread_submit(pcbm_io *io)
{
    pread_be *be = io->priv;
    if (!be->batch.head)
        return 0;
    pthread_mutex_lock(&be->mu);
    flush_batch_locked(be);
    pthread_mutex_unlock(&be->mu);
    return 0;
}

static int pread_reap(pcbm_io *io, pcbm_io_req **out, unsigned max, int wait)
{
    pread_be *be = io->priv;
    pthread_mutex_lock(&be->mu);
    flush_batch_locked(be);
    while (wait && max > 0 && !be->finished.head && !be->woken)
        pthread_cond_wait(&be->done, &be->mu);
    unsigned n = pcbm_io_list_take(&be->finished, out, max);
    if (wait)
        be->woken = false;
    pthread_mutex_unlock(&be->mu);
    return (int)n;
}

static void pread_wake(pcbm_io *io)
{
    pread_be *be = io->priv;
    pthread_mutex_lock(&be->mu);
    be->woken = true;
    pthread_cond_broadcast(&be->done);
    pthread_mutex_unlock(&be->mu);
}

static void pread_destroy(pcbm_io *io)
{
    pread_be *be = io->priv;
    pthread_mutex_lock(&be->mu);
    be->stop = true;
    pthread_cond_broadcast(&be->work);
    pthread_mutex_unlock(&be->mu);
    for (unsigned i = 0; i < be->nthreads; i++)
        pthread_join(be->threads[i], NULL);
    pthread_cond_destroy(&be->work);
    pthread_cond_destroy(&be->done);
    pthread_mutex_destroy(&be->mu);
    free(be);
}

static const pcbm_io_ops pread_ops = {
    .name = "pread",
    .queue = pread_queue,
    .submit = pread_submit,
    .reap = pread_reap,
    .wake = pread_wake,
    .destroy = pread_destroy,
};

/* Workers run with every signal blocked, so that signals reach the program's own threads. */
static int start_workers(pread_be *be, unsigned n)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    while (be->nthreads < n && rc == 0) {
        rc = pthread_create(&be->threads[be->nthreads], NULL, worker, be);
        be->nthreads += rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

int pcbm_io_pread_create(unsigned depth, unsigned threads, size_t max_xfer, pcbm_io **out)
{
    *out = NULL;
    pread_be *be = pcbm_calloc(1, sizeof *be);
    if (!be)
        return -ENOMEM;
    be->io = (pcbm_io){.ops = &pread_ops, .depth = depth, .priv = be};
    be->max_xfer = max_xfer ? PCBM_MIN(max_xfer, PCBM_IO_MAX_XFER) : PCBM_IO_MAX_XFER;
    pthread_mutex_init(&be->mu, NULL);
    pthread_cond_init(&be->work, NULL);
    pthread_cond_init(&be->done, NULL);
    if (threads == 0)
        threads = depth;
    threads = PCBM_MAX(1u, PCBM_MIN(threads, PCBM_IO_MAX_THREADS));
    int rc = start_workers(be, threads);
    if (rc < 0 && be->nthreads == 0) {
        pread_destroy(&be->io);
        return rc;
    }
    *out = &be->io;
    return 0;
}

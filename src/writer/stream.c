/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream.c — the output stream: staging buffers filled in stream order and written through the
 * I/O backend, per-file xxh3-128 and per-segment xxh3-64, the sync thread that makes closed
 * segments durable (fdatasync) and reports them in order, resume after the longest valid prefix
 * of an earlier run's segments, and the end of the output (truncate, fsync, close).
 */
#include "stream.h"
#include "../common/seams.h"
#include "../io/pagecache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STAGE_CHUNKS PCBM_OSTREAM_CHUNKS
#define STAGE_CHUNK_MAX (4u << 20)
#define STAGE_CHUNK_MIN (64u << 10)
#define SEGMENT_BYTES (64ull << 20)    /* durable, hashed segments of about this size */

typedef struct chunk {
    uint8_t *buf;
    uint64_t fill;
    unsigned file;
    uint64_t base;                 /* file offset of buf[0] */
    int busy;                      /* write in flight */
    pcbm_io_req req;
} chunk;

/* Durability off the I/O thread: closed segments whose writes completed wait here, in stream
 * order, for one thread that fdatasyncs them and reports them (the journal's hook), so that the
 * I/O thread keeps reads and writes in flight meanwhile. */
typedef struct syncer {
    pthread_t tid;
    bool started, stop, busy;
    pthread_mutex_t mu;
    pthread_cond_t cv, idle;
    pcbm_segment *q;
    size_t head, n, cap;
    pcbm_status st;                /* the first failure; later segments are not reported */
    pcbm_error err;
} syncer;

typedef struct out_file {
    int fd;
    bool direct;
    bool begun;
    uint64_t pos;                  /* bytes of the stream already staged for this file */
    uint64_t seg_start;            /* start of the segment being hashed */
    XXH3_state_t *seg;             /* xxh3-64 of [seg_start, pos) */
    XXH3_state_t *whole;           /* xxh3-128 of [0, pos) */
} out_file;

struct pcbm_ostream {
    pcbm_ostream_cfg cfg;
    const pcbm_outlayout *op;
    chunk chunks[STAGE_CHUNKS];
    unsigned cur_chunk;            /* chunk being filled, or STAGE_CHUNKS */
    unsigned inflight;             /* writes queued and not yet handed back */
    out_file *ofiles;
    unsigned cur_ofile;            /* output stream position: file index */
    bool output_started;
    pcbm_segment *pend;            /* closed segments waiting for their writes (FIFO) */
    size_t npend, pend_cap;
    pcbm_segment_fn on_segment;
    void *seg_arg;
    syncer sy;
    bool resuming;                 /* files of an earlier run may exist */
    unsigned resume_file;          /* output before (resume_file, resume_pos) is kept */
    uint64_t resume_pos;
};

uint64_t pcbm_ostream_chunk_size(uint64_t block_out_bytes)
{
    uint64_t c = PCBM_MIN(STAGE_CHUNK_MAX, pcbm_align_up(block_out_bytes, PCBM_ALIGN));
    return PCBM_MAX(c, STAGE_CHUNK_MIN);
}

static const char *out_path(const pcbm_ostream *os, unsigned f, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", os->cfg.dir, os->op->files[f].name);
    return buf;
}

/* ---- set-up and tear-down --------------------------------------------------------------- */

static pcbm_status alloc_files(pcbm_ostream *os, pcbm_error *err)
{
    unsigned nf = os->op->nfiles;
    os->ofiles = pcbm_calloc(nf ? nf : 1, sizeof(out_file));
    if (!os->ofiles)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    for (unsigned f = 0; f < nf; f++)
        os->ofiles[f].fd = -1; /* destroy closes only what was opened, even after a failure */
    for (unsigned f = 0; f < nf; f++) {
        out_file *of = &os->ofiles[f];
        of->seg = XXH3_createState();
        of->whole = XXH3_createState();
        if (!of->seg || !of->whole)
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        XXH3_64bits_reset(of->seg);
        XXH3_128bits_reset(of->whole);
    }
    return PCBM_OK;
}

pcbm_status pcbm_ostream_create(const pcbm_ostream_cfg *cfg, pcbm_ostream **out, pcbm_error *err)
{
    *out = NULL;
    pcbm_ostream *os = pcbm_calloc(1, sizeof *os);
    if (!os)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    os->cfg = *cfg;
    os->op = cfg->out;
    os->cur_chunk = STAGE_CHUNKS;
    pthread_mutex_init(&os->sy.mu, NULL);
    pthread_cond_init(&os->sy.cv, NULL);
    pthread_cond_init(&os->sy.idle, NULL);
    pcbm_status st = PCBM_OK;
    for (unsigned c = 0; c < STAGE_CHUNKS && st == PCBM_OK; c++)
        if (!(os->chunks[c].buf = pcbm_alloc_aligned(cfg->chunk_bytes)))
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating write buffers");
    if (st == PCBM_OK)
        st = alloc_files(os, err);
    if (st == PCBM_OK && os->cfg.segment_bytes == 0) {
        uint64_t v = pcbm_seams_get()->segment_bytes; /* tests: small segments */
        os->cfg.segment_bytes = v ? v : SEGMENT_BYTES;
    }
    if (st != PCBM_OK) {
        pcbm_ostream_destroy(os);
        return st;
    }
    *out = os;
    return PCBM_OK;
}

static void syncer_stop(pcbm_ostream *os);

void pcbm_ostream_destroy(pcbm_ostream *os)
{
    if (!os)
        return;
    syncer_stop(os);
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        pcbm_free_aligned(os->chunks[c].buf);
    if (os->ofiles) {
        for (unsigned f = 0; f < os->op->nfiles; f++) {
            if (os->ofiles[f].fd >= 0)
                close(os->ofiles[f].fd);
            XXH3_freeState(os->ofiles[f].seg);
            XXH3_freeState(os->ofiles[f].whole);
        }
        free(os->ofiles);
    }
    free(os->pend);
    free(os->sy.q);
    pthread_mutex_destroy(&os->sy.mu);
    pthread_cond_destroy(&os->sy.cv);
    pthread_cond_destroy(&os->sy.idle);
    free(os);
}

/* ---- durable segments -------------------------------------------------------------------- */

void pcbm_ostream_on_segment(pcbm_ostream *os, pcbm_segment_fn fn, void *arg)
{
    os->on_segment = fn;
    os->seg_arg = arg;
}

XXH128_hash_t pcbm_ostream_file_hash(const pcbm_ostream *os, unsigned f)
{
    return XXH3_128bits_digest(os->ofiles[f].whole);
}

/* Close the segment that ends at file f's stream position; it waits in the FIFO for its writes. */
static pcbm_status close_segment(pcbm_ostream *os, unsigned f, pcbm_error *err)
{
    out_file *of = &os->ofiles[f];
    if (of->pos == of->seg_start)
        return PCBM_OK;
    if (!pcbm_grow((void **)&os->pend, &os->pend_cap, os->npend, sizeof *os->pend))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    os->pend[os->npend++] = (pcbm_segment){f, of->seg_start, of->pos, XXH3_64bits_digest(of->seg)};
    XXH3_64bits_reset(of->seg);
    of->seg_start = of->pos;
    return PCBM_OK;
}

/* fdatasync segment sg's file and report it; runs on the sync thread without its lock. */
static pcbm_status sync_segment(pcbm_ostream *os, const pcbm_segment *sg, pcbm_error *er)
{
    if (fdatasync(os->ofiles[sg->file].fd) != 0) {
        char p[4096];
        return pcbm_fail(er, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot sync %s: %s", out_path(os, sg->file, p, sizeof p),
                         strerror(errno));
    }
    if (os->on_segment)
        return os->on_segment(os->seg_arg, sg, er);
    return PCBM_OK;
}

static void *syncer_main(void *arg)
{
    pcbm_ostream *os = arg;
    syncer *sy = &os->sy;
    pthread_mutex_lock(&sy->mu);
    for (;;) {
        while (sy->head == sy->n && !sy->stop)
            pthread_cond_wait(&sy->cv, &sy->mu);
        if (sy->head == sy->n)
            break;
        pcbm_segment sg = sy->q[sy->head++];
        if (sy->head == sy->n)
            sy->head = sy->n = 0;
        bool skip = sy->st != PCBM_OK;
        sy->busy = true;
        pthread_mutex_unlock(&sy->mu);
        pcbm_error er;
        pcbm_status st = skip ? PCBM_OK : sync_segment(os, &sg, &er);
        pthread_mutex_lock(&sy->mu);
        if (st != PCBM_OK && sy->st == PCBM_OK) {
            sy->st = st;
            sy->err = er;
        }
        sy->busy = false;
        pthread_cond_broadcast(&sy->idle);
    }
    pthread_mutex_unlock(&sy->mu);
    return NULL;
}

static void syncer_stop(pcbm_ostream *os)
{
    syncer *sy = &os->sy;
    if (!sy->started)
        return;
    pthread_mutex_lock(&sy->mu);
    sy->stop = true;
    pthread_cond_signal(&sy->cv);
    pthread_mutex_unlock(&sy->mu);
    pthread_join(sy->tid, NULL);
    sy->started = false;
}

/* The syncer's first failure, if any (copied into err). */
static pcbm_status syncer_status(syncer *sy, pcbm_error *err)
{
    pcbm_status st = sy->st;
    if (st != PCBM_OK && err)
        *err = sy->err;
    return st;
}

pcbm_status pcbm_ostream_drain(pcbm_ostream *os, pcbm_error *err)
{
    syncer *sy = &os->sy;
    pthread_mutex_lock(&sy->mu);
    while (sy->head < sy->n || sy->busy)
        pthread_cond_wait(&sy->idle, &sy->mu);
    pcbm_status st = syncer_status(sy, err);
    pthread_mutex_unlock(&sy->mu);
    return st;
}

/* Whether a write of segment sg's file before its end is still in flight. */
static bool segment_writing(const pcbm_ostream *os, const pcbm_segment *sg)
{
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        if (os->chunks[c].busy && os->chunks[c].file == sg->file && os->chunks[c].base < sg->end)
            return true;
    return false;
}

/* Hand the oldest closed segments whose writes have all completed to the syncer (which
 * fdatasyncs and reports them in order); returns its first failure, if any. */
static pcbm_status flush_durable(pcbm_ostream *os, pcbm_error *err)
{
    syncer *sy = &os->sy;
    size_t done = 0;
    pcbm_status st = PCBM_OK;
    pthread_mutex_lock(&sy->mu);
    if (!sy->started && os->npend > 0) {
        if (pthread_create(&sy->tid, NULL, syncer_main, os) != 0)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "cannot start the output sync thread");
        else
            sy->started = true;
    }
    while (st == PCBM_OK && done < os->npend) {
        if (segment_writing(os, &os->pend[done]))
            break;
        if (!pcbm_grow((void **)&sy->q, &sy->cap, sy->n, sizeof *sy->q)) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            break;
        }
        sy->q[sy->n++] = os->pend[done];
        done++;
    }
    if (done)
        pthread_cond_signal(&sy->cv);
    if (st == PCBM_OK)
        st = syncer_status(sy, err);
    pthread_mutex_unlock(&sy->mu);
    if (done) {
        memmove(os->pend, os->pend + done, (os->npend - done) * sizeof *os->pend);
        os->npend -= done;
    }
    return st;
}

/* ---- staging and writes ------------------------------------------------------------------ */

static pcbm_status submit_chunk(pcbm_ostream *os, unsigned c, pcbm_error *err)
{
    chunk *ch = &os->chunks[c];
    out_file *of = &os->ofiles[ch->file];
    uint64_t len = of->direct ? pcbm_align_up(ch->fill, PCBM_ALIGN) : ch->fill;
    if (len > ch->fill)
        memset(ch->buf + ch->fill, 0, len - ch->fill);
    ch->req = (pcbm_io_req){.op = PCBM_OP_WRITE, .fd = of->fd, .buf = ch->buf, .len = len,
                            .off = ch->base, .user = ch};
    ch->busy = 1;
    os->cur_chunk = STAGE_CHUNKS;
    if (of->pos - of->seg_start >= os->cfg.segment_bytes ||
        of->pos == os->op->files[ch->file].size) {
        pcbm_status st = close_segment(os, ch->file, err);
        if (st != PCBM_OK)
            return st;
    }
    int rc = pcbm_io_queue(os->cfg.io, &ch->req);
    if (rc == 0)
        os->inflight++;
    else
        ch->busy = 0;
    if (rc < 0) {
        char p[4096];
        return pcbm_fail(err, PCBM_ERR_IO, "cannot queue a write to %s at offset %llu: %s",
                         out_path(os, ch->file, p, sizeof p), (unsigned long long)ch->base,
                         strerror(-rc));
    }
    return PCBM_OK;
}

static int free_chunk(const pcbm_ostream *os)
{
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        if (!os->chunks[c].busy && c != os->cur_chunk)
            return (int)c;
    return -1;
}

/* Stage up to len bytes of the stream for file f. Returns bytes taken (0 when no buffer is
 * free). */
static uint64_t stage_put(pcbm_ostream *os, unsigned f, const uint8_t *src, uint64_t len,
                          pcbm_status *st, pcbm_error *err)
{
    out_file *of = &os->ofiles[f];
    uint64_t taken = 0;
    while (taken < len) {
        if (os->cur_chunk == STAGE_CHUNKS) {
            int c = free_chunk(os);
            if (c < 0)
                break;
            os->cur_chunk = (unsigned)c;
            os->chunks[c].fill = 0;
            os->chunks[c].file = f;
            os->chunks[c].base = of->pos;
        }
        chunk *ch = &os->chunks[os->cur_chunk];
        uint64_t n = PCBM_MIN(len - taken, os->cfg.chunk_bytes - ch->fill);
        memcpy(ch->buf + ch->fill, src + taken, n);
        XXH3_64bits_update(of->seg, src + taken, n);
        XXH3_128bits_update(of->whole, src + taken, n);
        ch->fill += n;
        of->pos += n;
        taken += n;
        if (ch->fill == os->cfg.chunk_bytes || of->pos == os->op->files[f].size) {
            if ((*st = submit_chunk(os, os->cur_chunk, err)) != PCBM_OK)
                return taken;
        }
    }
    return taken;
}

static pcbm_status begin_file(pcbm_ostream *os, unsigned f, pcbm_error *err)
{
    out_file *of = &os->ofiles[f];
    char p[4096];
    int fd = pcbm_open_write_mode(out_path(os, f, p, sizeof p), !pcbm_buffered_only(),
                                  os->resuming, &of->direct);
    if (fd < 0)
        return pcbm_fail(err, fd == -ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "cannot create %s: %s", p, strerror(-fd));
    of->fd = fd;
    of->begun = true;
    of->pos = 0;
    return PCBM_OK;
}

/* Move the stream to file f (opening it); headers are staged like data. Returns false while a
 * header could not be staged for lack of buffers. */
static bool stream_to_file(pcbm_ostream *os, unsigned f, pcbm_status *st, pcbm_error *err)
{
    const pcbm_outlayout *op = os->op;
    while (os->cur_ofile <= f || !os->output_started) {
        if (!os->output_started) {
            os->output_started = true;
            os->cur_ofile = os->cfg.file_lo;
        }
        unsigned c = os->cur_ofile;
        out_file *of = &os->ofiles[c];
        if (!of->begun && (*st = begin_file(os, c, err)) != PCBM_OK)
            return false;
        if (of->pos < op->files[c].data_start) {
            uint64_t done = of->pos;
            stage_put(os, c, (const uint8_t *)op->files[c].header + done,
                      op->files[c].data_start - done, st, err);
            if (*st != PCBM_OK || of->pos < op->files[c].data_start)
                return false;
        }
        if (c == f)
            return true;
        if (of->pos != op->files[c].size) {
            *st = pcbm_fail(err, PCBM_ERR_INTERNAL, "output stream left %s incomplete",
                            op->files[c].name);
            return false;
        }
        os->cur_ofile++;
    }
    return true;
}

bool pcbm_ostream_emit(pcbm_ostream *os, unsigned f, uint64_t off, const uint8_t *src,
                       uint64_t len, uint64_t *done, const char *what, pcbm_status *st,
                       pcbm_error *err)
{
    if (!stream_to_file(os, f, st, err))
        return false;
    uint64_t want_pos = off + *done;
    uint64_t have = os->ofiles[f].pos;
    if (want_pos < have && os->resuming && f == os->resume_file && have == os->resume_pos &&
        *done < len) {
        /* the first block after a resume point: its leading bytes are kept from the earlier run */
        uint64_t skip = PCBM_MIN(have - want_pos, len - *done);
        *done += skip;
        want_pos += skip;
    }
    if (*done == len)
        return true;
    if (os->ofiles[f].pos != want_pos) {
        *st = pcbm_fail(err, PCBM_ERR_INTERNAL, "output stream out of order in %s (at %llu, "
                        "block wants %llu)", what, (unsigned long long)os->ofiles[f].pos,
                        (unsigned long long)want_pos);
        return false;
    }
    *done += stage_put(os, f, src + *done, len - *done, st, err);
    return *done == len;
}

unsigned pcbm_ostream_inflight(const pcbm_ostream *os) { return os->inflight; }

pcbm_status pcbm_ostream_write_done(pcbm_ostream *os, pcbm_io_req *r, uint64_t *written,
                                    pcbm_error *err)
{
    chunk *ch = r->user;
    os->inflight--;
    ch->busy = 0;
    if (r->res < 0 || (uint64_t)r->res < r->len) {
        char p[4096];
        int errnum = r->res < 0 ? (int)-r->res : ENOSPC;
        return pcbm_fail(err, errnum == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                         "write error in %s at offset %llu: %s%s",
                         out_path(os, ch->file, p, sizeof p),
                         (unsigned long long)(r->off + (r->res > 0 ? (uint64_t)r->res : 0)),
                         strerror(errnum),
                         errnum == ENOSPC ? "; free space on the output filesystem and run again"
                                          : "");
    }
    *written += r->len;
    return flush_durable(os, err);
}

/* ---- resuming ----------------------------------------------------------------------------- */

/* Hash [start, end) of file f (read with a plain descriptor) into *h and whole. */
static bool hash_range(pcbm_ostream *os, unsigned f, uint64_t start, uint64_t end, uint64_t *h,
                       XXH3_state_t *whole)
{
    char p[4096];
    int fd = open(out_path(os, f, p, sizeof p), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    XXH3_state_t *st = XXH3_createState();
    uint8_t *buf = os->chunks[0].buf;
    bool ok = st != NULL;
    if (ok)
        XXH3_64bits_reset(st);
    for (uint64_t off = start; ok && off < end;) {
        size_t want = (size_t)PCBM_MIN(os->cfg.chunk_bytes, end - off);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            ok = false;
            break;
        }
        XXH3_64bits_update(st, buf, (size_t)n);
        XXH3_128bits_update(whole, buf, (size_t)n);
        off += (uint64_t)n;
    }
    if (ok)
        *h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    close(fd);
    return ok;
}

/* The longest prefix of segs that is the stream's start and matches the files: its length,
 * and where it ends (*file, *pos). The kept bytes are hashed into the files' xxh3-128. */
static size_t valid_prefix(pcbm_ostream *os, const pcbm_segment *segs, size_t n, XXH3_state_t *save,
                           unsigned *file, uint64_t *pos)
{
    const pcbm_outlayout *op = os->op;
    unsigned f = os->cfg.file_lo, hi = os->cfg.file_hi;
    uint64_t at = 0;
    size_t k = 0;
    for (; k < n && f < hi; k++) {
        const pcbm_segment *sg = &segs[k];
        if (at == op->files[f].size && f + 1 < hi && sg->file == f + 1) {
            f++;
            at = 0;
        }
        if (sg->file != f || sg->start != at || sg->end <= sg->start || sg->end > op->files[f].size)
            break;
        uint64_t h = 0;
        XXH3_copyState(save, os->ofiles[f].whole);
        if (!hash_range(os, f, sg->start, sg->end, &h, os->ofiles[f].whole) || h != sg->hash) {
            XXH3_copyState(os->ofiles[f].whole, save);
            break;
        }
        at = sg->end;
    }
    *file = f;
    *pos = at;
    return k;
}

pcbm_status pcbm_ostream_resume(pcbm_ostream *os, const pcbm_segment *segs, size_t n,
                                size_t *kept, pcbm_error *err)
{
    const pcbm_outlayout *op = os->op;
    XXH3_state_t *save = XXH3_createState();
    if (!save)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    os->resuming = true;
    unsigned f;
    uint64_t pos;
    size_t k = valid_prefix(os, segs, n, save, &f, &pos);
    XXH3_freeState(save);
    *kept = k;
    os->resume_file = f;
    os->resume_pos = pos;
    if (k == 0)
        return PCBM_OK; /* nothing kept: the output starts over (files may exist) */
    for (unsigned g = os->cfg.file_lo; g <= f; g++) {
        out_file *of = &os->ofiles[g];
        pcbm_status st = begin_file(os, g, err);
        if (st != PCBM_OK)
            return st;
        of->pos = of->seg_start = g < f ? op->files[g].size : pos;
    }
    os->cur_ofile = f;
    os->output_started = true;
    return PCBM_OK;
}

bool pcbm_ostream_kept(const pcbm_ostream *os, unsigned f, uint64_t end)
{
    if (!os->resuming)
        return false;
    if (f != os->resume_file)
        return f < os->resume_file;
    return end <= os->resume_pos;
}

/* ---- finishing the output --------------------------------------------------------------- */

/* Keep the first failure: st and err take s and er unless st already failed. */
static void keep_first(pcbm_status *st, pcbm_error *err, pcbm_status s, const pcbm_error *er)
{
    if (s == PCBM_OK || *st != PCBM_OK)
        return;
    *st = s;
    if (err)
        *err = *er;
}

/* Reap until no write is in flight (only writes are, after the passes); the first failure. */
static pcbm_status wait_writes(pcbm_ostream *os, uint64_t *written, pcbm_error *err)
{
    pcbm_status st = PCBM_OK;
    while (os->inflight > 0) {
        pcbm_io_req *done[64];
        pcbm_error er;
        int n = pcbm_io_reap(os->cfg.io, done, 64, true);
        if (n < 0) {
            keep_first(&st, err, pcbm_fail(&er, PCBM_ERR_IO, "I/O backend %s failed: %s",
                                           pcbm_io_name(os->cfg.io), strerror(-n)), &er);
            continue;
        }
        for (int i = 0; i < n; i++)
            keep_first(&st, err, pcbm_ostream_write_done(os, done[i], written, &er), &er);
    }
    return st;
}

/* Stage the headers of the files not begun yet (files made only of empty tensors, or none). */
static pcbm_status stage_headers(pcbm_ostream *os, uint64_t *written, pcbm_error *err)
{
    pcbm_status st = PCBM_OK;
    unsigned lo = os->cfg.file_lo, hi = os->cfg.file_hi;
    if (hi > lo && !stream_to_file(os, hi - 1, &st, err) && st == PCBM_OK) {
        while (st == PCBM_OK && !stream_to_file(os, hi - 1, &st, err)) {
            if ((st = pcbm_io_submit(os->cfg.io) < 0 ? PCBM_ERR_IO : PCBM_OK) != PCBM_OK)
                break;
            st = wait_writes(os, written, err);
        }
    }
    return st;
}

/* Every file complete: truncate (O_DIRECT writes end aligned) and fsync it. */
static pcbm_status close_files(pcbm_ostream *os, pcbm_status st, pcbm_error *err)
{
    const pcbm_outlayout *op = os->op;
    for (unsigned f = os->cfg.file_lo; st == PCBM_OK && f < os->cfg.file_hi; f++) {
        out_file *of = &os->ofiles[f];
        char p[4096];
        out_path(os, f, p, sizeof p);
        if (of->pos != op->files[f].size)
            st = pcbm_fail(err, PCBM_ERR_INTERNAL, "%s: wrote %llu of %llu bytes", p,
                           (unsigned long long)of->pos, (unsigned long long)op->files[f].size);
        else if (ftruncate(of->fd, (off_t)op->files[f].size) != 0 || fsync(of->fd) != 0)
            st = pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                           "cannot finish %s: %s", p, strerror(errno));
    }
    for (unsigned f = 0; f < op->nfiles; f++) {
        if (os->ofiles[f].fd >= 0)
            close(os->ofiles[f].fd);
        os->ofiles[f].fd = -1;
    }
    return st;
}

pcbm_status pcbm_ostream_finish(pcbm_ostream *os, uint64_t *written, pcbm_error *err)
{
    pcbm_status st = stage_headers(os, written, err);
    if (st == PCBM_OK && os->cur_chunk != STAGE_CHUNKS)
        st = submit_chunk(os, os->cur_chunk, err);
    if (st == PCBM_OK && pcbm_io_submit(os->cfg.io) < 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "I/O submit failed while flushing the output");
    pcbm_status wst = wait_writes(os, written, err);
    if (st == PCBM_OK)
        st = wst;
    if (st == PCBM_OK)
        st = flush_durable(os, err);
    pcbm_status dst = pcbm_ostream_drain(os, err);
    if (st == PCBM_OK)
        st = dst;
    return close_files(os, st, err);
}

/*
 * engine.c — the chunk scheduler: buffer sizing from --mem, the I/O loop on the calling thread
 * (reads of block sets, in-order output writes), worker threads running the method's per-block
 * callback, progress reporting. Completion order never changes results: statistics are merged
 * by the methods in a fixed order and output blocks are written strictly in schedule order.
 */
#include "engine.h"
#include "budget.h"
#include "cursor.h"
#include "../io/pagecache.h"
#include "../writer/stream.h"
#include "progress.h"
#include "stop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define STAGE_CHUNKS PCBM_OSTREAM_CHUNKS
#define SEGMENT_BYTES (64ull << 20)    /* output journaled in durable, hashed segments of this size */

typedef struct slot {
    uint64_t seq;
    size_t tensor;
    uint64_t start;
    uint32_t n;
    unsigned pending;              /* reads outstanding */
    uint8_t *in[PCBM_MAX_MODELS];  /* aligned buffers */
    uint32_t skew[PCBM_MAX_MODELS];/* data starts at in[m] + skew[m] */
    const uint8_t *map[PCBM_MAX_MODELS]; /* mapped passes: the data in the input's mapping */
    uint64_t need[PCBM_MAX_MODELS];/* bytes from the aligned start that must be present */
    uint8_t *out;
    uint64_t emitted;              /* output bytes already staged */
    int collected;                 /* its result was taken by the scheduler thread (only that
                                      thread reads or writes this flag) */
    pcbm_status st;                /* worker result */
    pcbm_error err;
    pcbm_io_req req[PCBM_MAX_MODELS];
    struct slot *next;
} slot;

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
    bool begun, ended;
    uint64_t pos;                  /* bytes of the stream already staged for this file */
    uint64_t seg_start;            /* start of the segment being hashed */
    XXH3_state_t *seg;             /* xxh3-64 of [seg_start, pos) */
    XXH3_state_t *whole;           /* xxh3-128 of [0, pos) */
} out_file;

struct pcbm_engine {
    pcbm_plan *plan;
    pcbm_engine_cfg cfg;
    pcbm_io *io;
    pcbm_inputs in;
    unsigned nmodels;
    uint64_t cap_in, cap_out;      /* bytes per slot buffer */
    unsigned nslots;
    slot *slots;
    chunk chunks[STAGE_CHUNKS];
    uint64_t chunk_bytes;
    unsigned cur_chunk;            /* chunk being filled, or STAGE_CHUNKS */
    unsigned inflight;             /* requests queued and not yet reaped (reads and writes) */
    out_file *ofiles;
    unsigned cur_ofile;            /* output stream position: file index */
    bool output_started;
    uint64_t seg_bytes;
    pcbm_segment *pend;            /* closed segments waiting for their writes (FIFO) */
    size_t npend, pend_cap;
    pcbm_segment_fn on_segment;
    void *seg_arg;
    syncer sy;
    bool mapped;                   /* this pass reads the inputs through their mappings */
    bool bufs_touched;             /* the slots' read buffers hold pages (a pass read into them) */
    bool resuming;                 /* files of an earlier run may exist */
    unsigned resume_file;          /* output before (resume_file, resume_pos) is kept */
    uint64_t resume_pos;

    /* pass state shared with workers */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot *work_head, *work_tail;
    slot *done_head;
    bool stop;
    const pcbm_pass *pass;

    pcbm_engine_report rep;
};

static const char *out_path(const pcbm_engine *e, unsigned f, char *buf, size_t len);
static pcbm_status close_segment(pcbm_engine *e, unsigned f, pcbm_error *err);

static pcbm_status size_buffers(pcbm_engine *e, pcbm_error *err)
{
    pcbm_budget b;
    pcbm_status st = pcbm_budget_size(e->plan, &e->cfg, &b, err);
    if (st != PCBM_OK)
        return st;
    e->cap_in = b.cap_in;
    e->cap_out = b.cap_out;
    e->nslots = b.nslots;
    e->chunk_bytes = b.chunk_bytes;
    pcbm_plan_set_block(e->plan, b.block_elems);
    e->rep.block_elems = b.block_elems;
    e->rep.nslots = b.nslots;
    e->rep.buffer_bytes = b.buffer_bytes;
    return PCBM_OK;
}

/* ---- set-up and tear-down --------------------------------------------------------------- */

/* Choose, at the start of a pass, between reading into the slots' buffers and reading through
 * the mappings (--io mmap always; auto when the inputs are cached). Mapped pages a block used
 * are dropped from the process (MADV_DONTNEED) when its slot is released, so --mem still bounds
 * what is resident; the slots' own read buffers are emptied when a mapped pass starts. */
static void choose_mapping(pcbm_engine *e, const pcbm_pass *ps)
{
    e->mapped = pcbm_inputs_use_map(&e->in, ps->sample_stride <= 1);
    if (e->mapped && e->bufs_touched) {
        for (unsigned s = 0; s < e->nslots; s++)
            for (unsigned m = 0; m < e->nmodels; m++)
                pcbm_pages_drop(e->slots[s].in[m], (size_t)e->cap_in);
        e->bufs_touched = false;
    }
}

static pcbm_status alloc_buffers(pcbm_engine *e, pcbm_error *err)
{
    e->slots = pcbm_calloc(e->nslots, sizeof(slot));
    if (!e->slots)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating slots");
    for (unsigned s = 0; s < e->nslots; s++) {
        for (unsigned m = 0; m < e->nmodels; m++)
            if (!(e->slots[s].in[m] = pcbm_alloc_aligned(e->cap_in)))
                return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating read buffers");
        if (!(e->slots[s].out = pcbm_alloc_aligned(e->cap_out)))
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating output buffers");
    }
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        if (!(e->chunks[c].buf = pcbm_alloc_aligned(e->chunk_bytes)))
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating write buffers");
    e->cur_chunk = STAGE_CHUNKS;
    return PCBM_OK;
}

pcbm_status pcbm_engine_create(pcbm_plan *plan, const pcbm_engine_cfg *cfg, pcbm_engine **out,
                               pcbm_error *err)
{
    *out = NULL;
    pcbm_engine *e = pcbm_calloc(1, sizeof *e);
    if (!e)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory creating the engine");
    e->plan = plan;
    e->cfg = *cfg;
    if (e->cfg.threads == 0)
        e->cfg.threads = 1;
    e->nmodels = plan->nmodels;
    if (!e->cfg.file_range) {
        e->cfg.file_lo = 0;
        e->cfg.file_hi = plan->out.nfiles;
    }
    e->cfg.file_hi = PCBM_MIN(e->cfg.file_hi, plan->out.nfiles);
    e->cfg.file_lo = PCBM_MIN(e->cfg.file_lo, e->cfg.file_hi);
    e->rep.threads = e->cfg.threads;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->sy.mu, NULL);
    pthread_cond_init(&e->sy.cv, NULL);
    pthread_cond_init(&e->sy.idle, NULL);
    pcbm_status st = size_buffers(e, err);
    if (st == PCBM_OK)
        st = pcbm_inputs_open(&e->in, plan->models, plan->nmodels, e->cfg.io, err);
    if (st == PCBM_OK)
        st = alloc_buffers(e, err);
    if (st == PCBM_OK) {
        unsigned depth = e->nslots * e->nmodels + STAGE_CHUNKS;
        st = pcbm_io_open(cfg->io, depth, &e->io, e->rep.backend_note,
                          sizeof e->rep.backend_note, err);
        if (st == PCBM_OK) {
            pcbm_stop_register(e->io);
            e->rep.backend = pcbm_io_name(e->io);
            if (e->rep.backend_note[0])
                pcbm_warn("%s", e->rep.backend_note);
        }
    }
    if (st == PCBM_OK) {
        e->ofiles = pcbm_calloc(plan->out.nfiles ? plan->out.nfiles : 1, sizeof(out_file));
        if (!e->ofiles)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
        for (unsigned f = 0; st == PCBM_OK && f < plan->out.nfiles; f++) {
            out_file *of = &e->ofiles[f];
            of->fd = -1;
            of->seg = XXH3_createState();
            of->whole = XXH3_createState();
            if (!of->seg || !of->whole)
                st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            else {
                XXH3_64bits_reset(of->seg);
                XXH3_128bits_reset(of->whole);
            }
        }
        const char *sb = getenv("PCBM_SEGMENT_BYTES"); /* tests: small segments */
        uint64_t v = 0;
        e->seg_bytes = sb && pcbm_parse_size(sb, &v) == 0 && v >= PCBM_ALIGN ? v : SEGMENT_BYTES;
    }
    if (st != PCBM_OK) {
        pcbm_engine_destroy(e);
        return st;
    }
    *out = e;
    return PCBM_OK;
}

static void syncer_stop(pcbm_engine *e);

void pcbm_engine_destroy(pcbm_engine *e)
{
    if (!e)
        return;
    syncer_stop(e);
    if (e->io) {
        pcbm_stop_unregister(e->io); /* before the backend goes: a stop request wakes it */
        pcbm_io_close(e->io);
    }
    pcbm_inputs_close(&e->in);
    if (e->slots) {
        for (unsigned s = 0; s < e->nslots; s++) {
            for (unsigned m = 0; m < e->nmodels; m++)
                pcbm_free_aligned(e->slots[s].in[m]);
            pcbm_free_aligned(e->slots[s].out);
        }
        free(e->slots);
    }
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        pcbm_free_aligned(e->chunks[c].buf);
    if (e->ofiles) {
        for (unsigned f = 0; f < e->plan->out.nfiles; f++) {
            if (e->ofiles[f].fd >= 0)
                close(e->ofiles[f].fd);
            XXH3_freeState(e->ofiles[f].seg);
            XXH3_freeState(e->ofiles[f].whole);
        }
        free(e->ofiles);
    }
    free(e->pend);
    free(e->sy.q);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->sy.mu);
    pthread_cond_destroy(&e->sy.cv);
    pthread_cond_destroy(&e->sy.idle);
    free(e);
}

const pcbm_engine_report *pcbm_engine_get_report(const pcbm_engine *e) { return &e->rep; }

/* ---- durable segments -------------------------------------------------------------------- */

void pcbm_engine_on_segment(pcbm_engine *e, pcbm_segment_fn fn, void *arg)
{
    e->on_segment = fn;
    e->seg_arg = arg;
}

XXH128_hash_t pcbm_engine_file_hash(const pcbm_engine *e, unsigned f)
{
    return XXH3_128bits_digest(e->ofiles[f].whole);
}

/* Close the segment that ends at file f's stream position; it waits in the FIFO for its writes. */
static pcbm_status close_segment(pcbm_engine *e, unsigned f, pcbm_error *err)
{
    out_file *of = &e->ofiles[f];
    if (of->pos == of->seg_start)
        return PCBM_OK;
    if (!pcbm_grow((void **)&e->pend, &e->pend_cap, e->npend, sizeof *e->pend))
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    e->pend[e->npend++] = (pcbm_segment){f, of->seg_start, of->pos, XXH3_64bits_digest(of->seg)};
    XXH3_64bits_reset(of->seg);
    of->seg_start = of->pos;
    return PCBM_OK;
}

static void *syncer_main(void *arg)
{
    pcbm_engine *e = arg;
    syncer *sy = &e->sy;
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
        pcbm_status st = PCBM_OK;
        pcbm_error er;
        if (!skip && fdatasync(e->ofiles[sg.file].fd) != 0) {
            char p[4096];
            st = pcbm_fail(&er, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                           "cannot sync %s: %s", out_path(e, sg.file, p, sizeof p), strerror(errno));
        }
        if (!skip && st == PCBM_OK && e->on_segment)
            st = e->on_segment(e->seg_arg, &sg, &er);
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

static void syncer_stop(pcbm_engine *e)
{
    syncer *sy = &e->sy;
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

/* Wait until every segment handed over is synced and reported. */
static pcbm_status syncer_drain(pcbm_engine *e, pcbm_error *err)
{
    syncer *sy = &e->sy;
    pthread_mutex_lock(&sy->mu);
    while (sy->head < sy->n || sy->busy)
        pthread_cond_wait(&sy->idle, &sy->mu);
    pcbm_status st = syncer_status(sy, err);
    pthread_mutex_unlock(&sy->mu);
    return st;
}

/* Hand the oldest closed segments whose writes have all completed to the syncer (which
 * fdatasyncs and reports them in order); returns its first failure, if any. */
static pcbm_status flush_durable(pcbm_engine *e, pcbm_error *err)
{
    syncer *sy = &e->sy;
    size_t done = 0;
    pcbm_status st = PCBM_OK;
    pthread_mutex_lock(&sy->mu);
    if (!sy->started && e->npend > 0) {
        if (pthread_create(&sy->tid, NULL, syncer_main, e) != 0)
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "cannot start the output sync thread");
        else
            sy->started = true;
    }
    while (st == PCBM_OK && done < e->npend) {
        const pcbm_segment *sg = &e->pend[done];
        bool busy = false;
        for (unsigned c = 0; c < STAGE_CHUNKS; c++)
            if (e->chunks[c].busy && e->chunks[c].file == sg->file && e->chunks[c].base < sg->end)
                busy = true;
        if (busy)
            break;
        if (!pcbm_grow((void **)&sy->q, &sy->cap, sy->n, sizeof *sy->q)) {
            st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
            break;
        }
        sy->q[sy->n++] = *sg;
        done++;
    }
    if (done)
        pthread_cond_signal(&sy->cv);
    if (st == PCBM_OK)
        st = syncer_status(sy, err);
    pthread_mutex_unlock(&sy->mu);
    if (done) {
        memmove(e->pend, e->pend + done, (e->npend - done) * sizeof *e->pend);
        e->npend -= done;
    }
    return st;
}

/* ---- workers ---------------------------------------------------------------------------- */

typedef struct worker_arg {
    pcbm_engine *e;
    unsigned id;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *wa = p;
    pcbm_engine *e = wa->e;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->work_head && !e->stop)
            pthread_cond_wait(&e->cv, &e->mu);
        slot *s = e->work_head;
        if (!s) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        e->work_head = s->next;
        if (!e->work_head)
            e->work_tail = NULL;
        pthread_mutex_unlock(&e->mu);

        const pcbm_tplan *t = &e->plan->t[s->tensor];
        pcbm_blockview bv = {.t = t, .tensor = s->tensor, .start = s->start, .n = s->n,
                             .out = s->out};
        unsigned nin = t->kind == PCBM_T_MERGE ? e->nmodels : 1;
        for (unsigned m = 0; m < nin; m++)
            bv.in[m] = s->map[m] ? s->map[m] : s->in[m] + s->skew[m];
        pcbm_error_clear(&s->err);
        s->st = e->pass->fn(e->pass->arg, wa->id, &bv, &s->err);

        pthread_mutex_lock(&e->mu);
        s->next = e->done_head;
        e->done_head = s;
        pthread_mutex_unlock(&e->mu);
        pcbm_io_wake(e->io);
    }
}

/* ---- output stream ---------------------------------------------------------------------- */

static const char *out_path(const pcbm_engine *e, unsigned f, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", e->cfg.out_dir, e->plan->out.files[f].name);
    return buf;
}

static pcbm_status submit_chunk(pcbm_engine *e, unsigned c, pcbm_error *err)
{
    chunk *ch = &e->chunks[c];
    out_file *of = &e->ofiles[ch->file];
    uint64_t len = of->direct ? pcbm_align_up(ch->fill, PCBM_ALIGN) : ch->fill;
    if (len > ch->fill)
        memset(ch->buf + ch->fill, 0, len - ch->fill);
    ch->req = (pcbm_io_req){.op = PCBM_OP_WRITE, .fd = of->fd, .buf = ch->buf, .len = len,
                            .off = ch->base, .user = ch};
    ch->busy = 1;
    e->cur_chunk = STAGE_CHUNKS;
    if (of->pos - of->seg_start >= e->seg_bytes || of->pos == e->plan->out.files[ch->file].size) {
        pcbm_status st = close_segment(e, ch->file, err);
        if (st != PCBM_OK)
            return st;
    }
    int rc = pcbm_io_queue(e->io, &ch->req);
    if (rc == 0)
        e->inflight++;
    else
        ch->busy = 0;
    if (rc < 0) {
        char p[4096];
        return pcbm_fail(err, PCBM_ERR_IO, "cannot queue a write to %s at offset %llu: %s",
                         out_path(e, ch->file, p, sizeof p), (unsigned long long)ch->base,
                         strerror(-rc));
    }
    return PCBM_OK;
}

static int free_chunk(const pcbm_engine *e)
{
    for (unsigned c = 0; c < STAGE_CHUNKS; c++)
        if (!e->chunks[c].busy && c != e->cur_chunk)
            return (int)c;
    return -1;
}

/* Stage up to len bytes of the stream for file f. Returns bytes taken (0 when no buffer is free). */
static uint64_t stage_bytes_put(pcbm_engine *e, unsigned f, const uint8_t *src, uint64_t len,
                                pcbm_status *st, pcbm_error *err)
{
    out_file *of = &e->ofiles[f];
    uint64_t taken = 0;
    while (taken < len) {
        if (e->cur_chunk == STAGE_CHUNKS) {
            int c = free_chunk(e);
            if (c < 0)
                break;
            e->cur_chunk = (unsigned)c;
            e->chunks[c].fill = 0;
            e->chunks[c].file = f;
            e->chunks[c].base = of->pos;
        }
        chunk *ch = &e->chunks[e->cur_chunk];
        uint64_t n = PCBM_MIN(len - taken, e->chunk_bytes - ch->fill);
        memcpy(ch->buf + ch->fill, src + taken, n);
        XXH3_64bits_update(of->seg, src + taken, n);
        XXH3_128bits_update(of->whole, src + taken, n);
        ch->fill += n;
        of->pos += n;
        taken += n;
        if (ch->fill == e->chunk_bytes || of->pos == e->plan->out.files[f].size) {
            if ((*st = submit_chunk(e, e->cur_chunk, err)) != PCBM_OK)
                return taken;
        }
    }
    return taken;
}

static pcbm_status begin_file(pcbm_engine *e, unsigned f, pcbm_error *err)
{
    out_file *of = &e->ofiles[f];
    char p[4096];
    int fd = pcbm_open_write_mode(out_path(e, f, p, sizeof p), !pcbm_buffered_only(), e->resuming,
                                  &of->direct);
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
static bool stream_to_file(pcbm_engine *e, unsigned f, pcbm_status *st, pcbm_error *err)
{
    const pcbm_outplan *op = &e->plan->out;
    while (e->cur_ofile <= f || !e->output_started) {
        if (!e->output_started) {
            e->output_started = true;
            e->cur_ofile = e->cfg.file_lo;
        }
        unsigned c = e->cur_ofile;
        out_file *of = &e->ofiles[c];
        if (!of->begun && (*st = begin_file(e, c, err)) != PCBM_OK)
            return false;
        if (of->pos < op->files[c].data_start) {
            uint64_t done = of->pos;
            stage_bytes_put(e, c, (const uint8_t *)op->files[c].header + done,
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
        e->cur_ofile++;
    }
    return true;
}

/* Stage as much of slot s's output as buffers allow; true when all of it is staged. */
static bool emit_slot(pcbm_engine *e, slot *s, pcbm_status *st, pcbm_error *err)
{
    const pcbm_tplan *t = &e->plan->t[s->tensor];
    if (!stream_to_file(e, t->out_file, st, err))
        return false;
    uint64_t total = (uint64_t)s->n * t->out_unit;
    uint64_t want_pos = t->out_off + s->start * t->out_unit + s->emitted;
    uint64_t have = e->ofiles[t->out_file].pos;
    if (want_pos < have && e->resuming && t->out_file == e->resume_file &&
        have == e->resume_pos && s->emitted < total) {
        /* the first block after a resume point: its leading bytes are kept from the earlier run */
        uint64_t skip = PCBM_MIN(have - want_pos, total - s->emitted);
        s->emitted += skip;
        want_pos += skip;
    }
    if (s->emitted == total)
        return true;
    if (e->ofiles[t->out_file].pos != want_pos) {
        *st = pcbm_fail(err, PCBM_ERR_INTERNAL, "output stream out of order in %s (at %llu, "
                        "block wants %llu)", t->name,
                        (unsigned long long)e->ofiles[t->out_file].pos,
                        (unsigned long long)want_pos);
        return false;
    }
    s->emitted += stage_bytes_put(e, t->out_file, s->out + s->emitted, total - s->emitted, st, err);
    return s->emitted == total;
}

/* ---- the pass loop ---------------------------------------------------------------------- */

/* Whether output before `end` in file f is kept from an earlier run (apply passes skip it). */
static bool kept_output(const void *arg, unsigned f, uint64_t end)
{
    const pcbm_engine *e = arg;
    if (!e->resuming)
        return false;
    if (f != e->resume_file)
        return f < e->resume_file;
    return end <= e->resume_pos;
}

typedef struct run_state {
    pcbm_engine *e;
    const pcbm_pass *ps;
    pcbm_walk walk;
    pcbm_cursor cur;
    bool more;                 /* blocks left to issue */
    uint64_t seq_next;         /* next seq to issue */
    uint64_t seq_emit;         /* apply: next seq to emit */
    slot **ring;               /* apply: slots by seq % nslots */
    slot *free_list;
    unsigned busy;             /* slots not free */
    pcbm_status st;
    pcbm_error *err;
    uint64_t err_seq;          /* schedule position of the reported error */
    pcbm_progress_line pg;
    pcbm_pass_report *pr;
} run_state;

static void fail_at(run_state *rs, uint64_t seq, pcbm_status st, const pcbm_error *src)
{
    if (rs->st != PCBM_OK && rs->err_seq <= seq)
        return;
    rs->st = st;
    rs->err_seq = seq;
    if (rs->err && src && src != rs->err)
        *rs->err = *src;
}

static void queue_work(run_state *rs, slot *s);

static void issue_block(run_state *rs, slot *s)
{
    pcbm_engine *e = rs->e;
    const pcbm_tplan *t = &e->plan->t[rs->cur.t];
    s->seq = rs->seq_next++;
    s->tensor = rs->cur.t;
    s->start = rs->cur.start;
    s->n = (uint32_t)rs->cur.n;
    s->emitted = 0;
    s->collected = 0;
    unsigned nin = t->kind == PCBM_T_MERGE ? e->nmodels : 1;
    s->pending = nin;
    memset(s->map, 0, sizeof s->map);
    if (e->mapped) { /* the data is in the mappings: straight to a worker */
        for (unsigned m = 0; m < nin; m++) {
            const pcbm_tsrc *src = &t->src[m];
            uint64_t len = (uint64_t)s->n * t->in_unit[m];
            s->map[m] = e->in.f[m][src->file].map + src->off + s->start * t->in_unit[m];
            s->need[m] = len;
            rs->pr->bytes_read += len;
        }
        s->pending = 0;
        queue_work(rs, s);
        return;
    }
    e->bufs_touched = true;
    for (unsigned m = 0; m < nin; m++) {
        const pcbm_tsrc *src = &t->src[m];
        uint64_t off = src->off + s->start * t->in_unit[m];
        uint64_t len = (uint64_t)s->n * t->in_unit[m];
        uint64_t a0 = pcbm_align_down(off, PCBM_ALIGN);
        uint64_t a1 = pcbm_align_up(off + len, PCBM_ALIGN);
        s->skew[m] = (uint32_t)(off - a0);
        s->need[m] = off + len - a0;
        s->req[m] = (pcbm_io_req){.op = PCBM_OP_READ, .fd = e->in.f[m][src->file].fd,
                                  .buf = s->in[m], .len = a1 - a0, .off = a0, .user = s};
        rs->pr->bytes_read += a1 - a0;
        int rc = pcbm_io_queue(e->io, &s->req[m]);
        if (rc < 0) {
            pcbm_error er;
            pcbm_fail(&er, PCBM_ERR_IO, "cannot queue a read of %s at offset %llu: %s",
                      e->plan->models[m]->files[src->file].path, (unsigned long long)a0,
                      strerror(-rc));
            fail_at(rs, s->seq, PCBM_ERR_IO, &er);
            s->pending--;
            continue;
        }
        e->inflight++;
    }
}

static void fill_slots(run_state *rs)
{
    while (rs->more && rs->free_list && rs->st == PCBM_OK) {
        slot *s = rs->free_list;
        rs->free_list = s->next;
        rs->busy++;
        issue_block(rs, s);
        if (rs->ps->kind == PCBM_PASS_APPLY)
            rs->ring[s->seq % rs->e->nslots] = s;
        rs->more = pcbm_cursor_next(&rs->walk, &rs->cur);
        if (s->pending == 0 && !s->map[0] && rs->st == PCBM_OK)
            rs->st = PCBM_ERR_INTERNAL; /* unreachable: every block reads at least the base */
    }
}

static void release_slot(run_state *rs, slot *s)
{
    for (unsigned m = 0; m < PCBM_MAX_MODELS && s->map[m]; m++) {
        /* the block's pages leave the process: what is resident stays bounded */
        const pcbm_tplan *t = &rs->e->plan->t[s->tensor];
        pcbm_map_release(&rs->e->in.f[m][t->src[m].file], s->map[m], s->need[m]);
        s->map[m] = NULL;
    }
    s->next = rs->free_list;
    rs->free_list = s;
    rs->busy--;
}

static void queue_work(run_state *rs, slot *s)
{
    pcbm_engine *e = rs->e;
    pthread_mutex_lock(&e->mu);
    s->next = NULL;
    if (e->work_tail)
        e->work_tail->next = s;
    else
        e->work_head = s;
    e->work_tail = s;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static const char *req_path(const run_state *rs, const slot *s, const pcbm_io_req *r)
{
    const pcbm_engine *e = rs->e;
    const pcbm_tplan *t = &e->plan->t[s->tensor];
    unsigned m = (unsigned)(r - s->req);
    return e->plan->models[m]->files[t->src[m].file].path;
}

static void on_read_done(run_state *rs, pcbm_io_req *r)
{
    slot *s = r->user;
    unsigned m = (unsigned)(r - s->req);
    const pcbm_tplan *t = &rs->e->plan->t[s->tensor];
    if (r->res < 0 || (uint64_t)r->res < s->need[m]) {
        pcbm_error er;
        if (r->res < 0)
            pcbm_fail(&er, PCBM_ERR_IO, "read error in %s at offset %llu (tensor %s): %s",
                      req_path(rs, s, r), (unsigned long long)r->off, t->name,
                      strerror((int)-r->res));
        else
            pcbm_fail(&er, PCBM_ERR_IO, "unexpected end of file in %s at offset %llu (tensor %s): "
                      "the file is shorter than its header says; was it truncated or changed "
                      "during the merge?", req_path(rs, s, r),
                      (unsigned long long)(r->off + (uint64_t)r->res), t->name);
        fail_at(rs, s->seq, PCBM_ERR_IO, &er);
    }
    pcbm_progress_add(&rs->pg, (uint64_t)s->n * t->in_unit[m]);
    if (--s->pending == 0) {
        if (rs->st != PCBM_OK) {
            /* the pass is stopping: the block is dropped, not an error of its own (a read
             * error of its own was recorded above) */
            s->st = PCBM_OK;
            pthread_mutex_lock(&rs->e->mu);
            s->next = rs->e->done_head;
            rs->e->done_head = s;
            pthread_mutex_unlock(&rs->e->mu);
        } else {
            queue_work(rs, s);
        }
    }
}

static void on_write_done(run_state *rs, pcbm_io_req *r)
{
    chunk *ch = r->user;
    ch->busy = 0;
    if (r->res < 0 || (uint64_t)r->res < r->len) {
        char p[4096];
        int errnum = r->res < 0 ? (int)-r->res : ENOSPC;
        pcbm_error er;
        pcbm_fail(&er, errnum == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                  "write error in %s at offset %llu: %s%s", out_path(rs->e, ch->file, p, sizeof p),
                  (unsigned long long)(r->off + (r->res > 0 ? (uint64_t)r->res : 0)),
                  strerror(errnum),
                  errnum == ENOSPC ? "; free space on the output filesystem and run again" : "");
        fail_at(rs, 0, er.status, &er);
        return;
    }
    rs->pr->bytes_written += r->len;
    pcbm_error er;
    pcbm_status st = flush_durable(rs->e, &er);
    if (st != PCBM_OK)
        fail_at(rs, 0, st, &er);
}

/* Take finished blocks from the workers; apply passes stage their output in order. */
static void collect_done(run_state *rs)
{
    pcbm_engine *e = rs->e;
    pthread_mutex_lock(&e->mu);
    slot *d = e->done_head;
    e->done_head = NULL;
    pthread_mutex_unlock(&e->mu);
    while (d) {
        slot *s = d;
        d = d->next;
        s->collected = 1; /* emission below trusts only results seen here */
        if (s->st != PCBM_OK)
            fail_at(rs, s->seq, s->st, &s->err);
        pcbm_test_point(rs->ps->kind == PCBM_PASS_APPLY ? "apply" : "stats");
        if (rs->ps->kind != PCBM_PASS_APPLY)
            release_slot(rs, s);
    }
    if (rs->ps->kind != PCBM_PASS_APPLY)
        return;
    while (rs->seq_emit < rs->seq_next) {
        slot *s = rs->ring[rs->seq_emit % e->nslots];
        if (!s || !s->collected)
            break;
        if (rs->st == PCBM_OK) {
            pcbm_status st = PCBM_OK;
            pcbm_error er;
            bool all = emit_slot(e, s, &st, &er);
            if (st != PCBM_OK) {
                fail_at(rs, 0, st, &er);
            } else if (!all) {
                break; /* wait for a staging buffer */
            }
        }
        rs->ring[rs->seq_emit % e->nslots] = NULL;
        rs->seq_emit++;
        release_slot(rs, s);
    }
}

static void reap_some(run_state *rs, bool wait)
{
    pcbm_io_req *done[64];
    int n = pcbm_io_reap(rs->e->io, done, 64, wait);
    if (n < 0) {
        pcbm_error er;
        pcbm_fail(&er, PCBM_ERR_IO, "I/O backend %s failed: %s", pcbm_io_name(rs->e->io),
                  strerror(-n));
        fail_at(rs, 0, PCBM_ERR_IO, &er);
        return;
    }
    for (int i = 0; i < n; i++) {
        rs->e->inflight--;
        if (done[i]->op == PCBM_OP_READ)
            on_read_done(rs, done[i]);
        else
            on_write_done(rs, done[i]);
    }
}

static void run_loop(run_state *rs)
{
    pcbm_engine *e = rs->e;
    for (;;) {
        if (pcbm_stop_requested() && rs->st == PCBM_OK) {
            pcbm_error er;
            pcbm_fail(&er, PCBM_ERR_INTERRUPTED, "interrupted by a signal during pass '%s'",
                      rs->ps->name);
            fail_at(rs, 0, PCBM_ERR_INTERRUPTED, &er);
        }
        fill_slots(rs);
        int rc = pcbm_io_submit(e->io);
        if (rc < 0) {
            pcbm_error er;
            pcbm_fail(&er, PCBM_ERR_IO, "I/O submit failed: %s", strerror(-rc));
            fail_at(rs, 0, PCBM_ERR_IO, &er);
        }
        collect_done(rs);
        bool idle_workers_pending = rs->busy > 0;
        if (rs->st != PCBM_OK && e->inflight == 0) {
            /* stopping: drop the queued block sets, collect what the workers finished, and wait
             * only for blocks still being computed (their workers wake us) */
            pthread_mutex_lock(&e->mu);
            while (e->work_head) {
                slot *s = e->work_head;
                e->work_head = s->next;
                s->st = PCBM_OK;
                s->next = e->done_head;
                e->done_head = s;
            }
            e->work_tail = NULL;
            pthread_mutex_unlock(&e->mu);
            collect_done(rs);
            if (rs->busy == 0)
                break;
            reap_some(rs, true);
            continue;
        }
        if (!rs->more && rs->busy == 0 && e->inflight == 0)
            break;
        pcbm_progress_tick(&rs->pg);
        bool can_issue = rs->more && rs->free_list && rs->st == PCBM_OK;
        if (!can_issue && (idle_workers_pending || e->inflight > 0))
            reap_some(rs, true);
        else if (e->inflight > 0)
            reap_some(rs, false);
    }
}

static pcbm_status start_workers(pcbm_engine *e, pthread_t *tids, worker_arg *was, pcbm_error *err)
{
    e->stop = false;
    for (unsigned w = 0; w < e->cfg.threads; w++) {
        was[w] = (worker_arg){e, w};
        if (pthread_create(&tids[w], NULL, worker_main, &was[w]) != 0) {
            pthread_mutex_lock(&e->mu);
            e->stop = true;
            pthread_cond_broadcast(&e->cv);
            pthread_mutex_unlock(&e->mu);
            for (unsigned j = 0; j < w; j++)
                pthread_join(tids[j], NULL);
            return pcbm_fail(err, PCBM_ERR_NOMEM, "cannot start worker thread %u", w);
        }
    }
    return PCBM_OK;
}

static void stop_workers(pcbm_engine *e, pthread_t *tids)
{
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (unsigned w = 0; w < e->cfg.threads; w++)
        pthread_join(tids[w], NULL);
}

pcbm_status pcbm_engine_run(pcbm_engine *e, const pcbm_pass *ps, pcbm_error *err)
{
    /* passes of the same name (tensor scope repeats them per tensor) share one report line */
    pcbm_pass_report *pr = NULL;
    for (unsigned i = 0; i < e->rep.npasses && !pr; i++)
        if (strcmp(e->rep.passes[i].name, ps->name) == 0)
            pr = &e->rep.passes[i];
    if (!pr) {
        if (e->rep.npasses >= PCBM_MAX_PASSES)
            return pcbm_fail(err, PCBM_ERR_INTERNAL, "too many distinct passes");
        pr = &e->rep.passes[e->rep.npasses++];
        memset(pr, 0, sizeof *pr);
        snprintf(pr->name, sizeof pr->name, "%s", ps->name);
    }
    uint64_t read0 = pr->bytes_read, written0 = pr->bytes_written;
    double t0 = pcbm_now();

    choose_mapping(e, ps);
    pr->mapped |= e->mapped;
    run_state rs = {.e = e, .ps = ps, .err = err, .pr = pr};
    rs.walk = (pcbm_walk){.plan = e->plan, .ps = ps, .file_lo = e->cfg.file_lo,
                          .file_hi = e->cfg.file_hi, .kept = kept_output, .kept_arg = e};
    rs.more = pcbm_cursor_first(&rs.walk, &rs.cur);
    slot *ring[PCBM_MAX_SLOTS] = {0};
    rs.ring = ring;
    for (unsigned s = 0; s < e->nslots; s++) {
        e->slots[s].next = rs.free_list;
        rs.free_list = &e->slots[s];
    }
    pcbm_progress_begin(&rs.pg, e->cfg.progress, e->cfg.quiet, ps->name, pcbm_walk_total_bytes(&rs.walk), t0);
    e->pass = ps;
    e->work_head = e->work_tail = e->done_head = NULL;

    pthread_t tids[256];
    worker_arg was[256];
    if (e->cfg.threads > 256)
        e->cfg.threads = 256;
    pcbm_status st = start_workers(e, tids, was, err);
    if (st != PCBM_OK)
        return st;
    run_loop(&rs);
    stop_workers(e, tids);
    if (ps->kind == PCBM_PASS_APPLY) { /* the journal is the caller's again after a pass */
        pcbm_error er;
        pcbm_status dst = syncer_drain(e, &er);
        if (dst != PCBM_OK && rs.st == PCBM_OK) {
            rs.st = dst;
            if (err)
                *err = er;
        }
    }
    pr->seconds += pcbm_now() - t0;
    e->rep.bytes_read += pr->bytes_read - read0;
    e->rep.bytes_written += pr->bytes_written - written0;
    pcbm_progress_end(&rs.pg, rs.st == PCBM_OK);
    return rs.st;
}

/* ---- resuming ----------------------------------------------------------------------------- */

/* Hash [start, end) of file f (read with a plain descriptor) into *h and whole. */
static bool hash_range(pcbm_engine *e, unsigned f, uint64_t start, uint64_t end, uint64_t *h,
                       XXH3_state_t *whole)
{
    char p[4096];
    int fd = open(out_path(e, f, p, sizeof p), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    XXH3_state_t *st = XXH3_createState();
    uint8_t *buf = e->chunks[0].buf;
    bool ok = st != NULL;
    if (ok)
        XXH3_64bits_reset(st);
    for (uint64_t off = start; ok && off < end;) {
        size_t want = (size_t)PCBM_MIN(e->chunk_bytes, end - off);
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

pcbm_status pcbm_engine_resume_output(pcbm_engine *e, const pcbm_segment *segs, size_t n,
                                      size_t *kept, pcbm_error *err)
{
    const pcbm_outplan *op = &e->plan->out;
    XXH3_state_t *save = XXH3_createState();
    if (!save)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory");
    e->resuming = true;
    unsigned f = e->cfg.file_lo, hi = e->cfg.file_hi;
    uint64_t pos = 0;
    size_t k = 0;
    for (; k < n && f < hi; k++) {
        const pcbm_segment *sg = &segs[k];
        if (pos == op->files[f].size && f + 1 < hi && sg->file == f + 1) {
            f++;
            pos = 0;
        }
        if (sg->file != f || sg->start != pos || sg->end <= sg->start || sg->end > op->files[f].size)
            break;
        uint64_t h = 0;
        XXH3_copyState(save, e->ofiles[f].whole);
        if (!hash_range(e, f, sg->start, sg->end, &h, e->ofiles[f].whole) || h != sg->hash) {
            XXH3_copyState(e->ofiles[f].whole, save);
            break;
        }
        pos = sg->end;
    }
    XXH3_freeState(save);
    *kept = k;
    e->resume_file = f;
    e->resume_pos = pos;
    if (k == 0)
        return PCBM_OK; /* nothing kept: the output starts over (files may exist) */
    for (unsigned g = e->cfg.file_lo; g <= f; g++) {
        out_file *of = &e->ofiles[g];
        pcbm_status st = begin_file(e, g, err);
        if (st != PCBM_OK)
            return st;
        of->pos = of->seg_start = g < f ? op->files[g].size : pos;
    }
    e->cur_ofile = f;
    e->output_started = true;
    return PCBM_OK;
}

/* ---- finishing the output --------------------------------------------------------------- */

static pcbm_status wait_writes(pcbm_engine *e, pcbm_error *err)
{
    run_state rs = {.e = e, .err = err};
    pcbm_pass_report pr;
    memset(&pr, 0, sizeof pr);
    rs.pr = &pr;
    while (e->inflight > 0)
        reap_some(&rs, true);
    e->rep.bytes_written += pr.bytes_written;
    return rs.st;
}

pcbm_status pcbm_engine_finish_output(pcbm_engine *e, pcbm_error *err)
{
    const pcbm_outplan *op = &e->plan->out;
    pcbm_status st = PCBM_OK;
    /* files made only of empty tensors (or none at all) still get their headers */
    unsigned lo = e->cfg.file_lo, hi = e->cfg.file_hi;
    if (hi > lo && !stream_to_file(e, hi - 1, &st, err) && st == PCBM_OK) {
        while (st == PCBM_OK && !stream_to_file(e, hi - 1, &st, err)) {
            if ((st = pcbm_io_submit(e->io) < 0 ? PCBM_ERR_IO : PCBM_OK) != PCBM_OK)
                break;
            st = wait_writes(e, err);
        }
    }
    if (st == PCBM_OK && e->cur_chunk != STAGE_CHUNKS)
        st = submit_chunk(e, e->cur_chunk, err);
    if (st == PCBM_OK && pcbm_io_submit(e->io) < 0)
        st = pcbm_fail(err, PCBM_ERR_IO, "I/O submit failed while flushing the output");
    pcbm_status wst = wait_writes(e, err);
    if (st == PCBM_OK)
        st = wst;
    if (st == PCBM_OK)
        st = flush_durable(e, err);
    pcbm_status dst = syncer_drain(e, err);
    if (st == PCBM_OK)
        st = dst;
    for (unsigned f = lo; st == PCBM_OK && f < hi; f++) {
        out_file *of = &e->ofiles[f];
        char p[4096];
        out_path(e, f, p, sizeof p);
        if (of->pos != op->files[f].size)
            st = pcbm_fail(err, PCBM_ERR_INTERNAL, "%s: wrote %llu of %llu bytes", p,
                           (unsigned long long)of->pos, (unsigned long long)op->files[f].size);
        else if (ftruncate(of->fd, (off_t)op->files[f].size) != 0 || fsync(of->fd) != 0)
            st = pcbm_fail(err, errno == ENOSPC ? PCBM_ERR_NOSPACE : PCBM_ERR_IO,
                           "cannot finish %s: %s", p, strerror(errno));
    }
    for (unsigned f = 0; f < op->nfiles; f++) {
        if (e->ofiles[f].fd >= 0)
            close(e->ofiles[f].fd);
        e->ofiles[f].fd = -1;
    }
    return st;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine.c — the chunk scheduler: slots (block sets in flight), the I/O loop on the calling
 * thread (reads of block sets, reaping completions), worker threads running the method's
 * per-block callback, and in-order emission of the output blocks into the output stream.
 * Completion order never changes results: statistics are merged by the methods in a fixed order
 * and output blocks are emitted strictly in schedule order.
 *
 * Elsewhere: buffer sizing (budget.c), which blocks a pass visits (cursor.c), stop requests
 * (stop.c), the progress display (progress.c), input files and mappings (io/pagecache.c), the
 * output stream with its durable segments and resume (writer/stream.c).
 */
#include "engine.h"
#include "budget.h"
#include "cursor.h"
#include "ident.h"
#include "progress.h"
#include "stop.h"
#include "../io/pagecache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A slot holds one block set: one block of one tensor, or a run of whole tiny tensors [tensor,
 * tensor_end) whose bytes follow each other in every input file and in the output (MoE
 * checkpoints carry ~100k tiny tensors: one read and one work item for the run instead of one
 * per tensor). The method's callback still sees each tensor as a block of its own. */
typedef struct slot {
    uint64_t seq;
    size_t tensor, tensor_end;     /* tensors [tensor, tensor_end) */
    uint64_t start;                /* first unit of the first tensor's block */
    uint32_t n;                    /* units of the first tensor's block */
    uint64_t len[PCBM_MAX_MODELS]; /* input bytes of the block set per model */
    uint64_t out_len;              /* output bytes */
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

struct pcbm_engine {
    pcbm_layout *layout;
    pcbm_engine_cfg cfg;
    pcbm_io *io;
    pcbm_inputs in;
    unsigned nmodels;
    uint64_t cap_in, cap_out;      /* bytes per slot buffer */
    unsigned nslots;
    slot *slots;
    uint64_t chunk_bytes;          /* each output staging buffer */
    unsigned reads;                /* reads queued and not yet reaped */
    pcbm_ostream *os;
    bool mapped;                   /* this pass reads the inputs through their mappings */
    bool bufs_touched;             /* the slots' read buffers hold pages (a pass read into them) */
    pcbm_ident *ident;             /* what full passes read of the merged tensors (ident.h) */

    /* pass state shared with workers */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot *work_head, *work_tail;
    slot *done_head;
    bool stop;
    const pcbm_pass *pass;
    uint64_t side_read;            /* bytes workers read themselves this pass (atomic) */

    pcbm_engine_report rep;
};

/* Requests in flight: reads and the output stream's writes. */
static unsigned inflight(const pcbm_engine *e) { return e->reads + pcbm_ostream_inflight(e->os); }

/* ---- set-up and tear-down --------------------------------------------------------------- */

static pcbm_status size_buffers(pcbm_engine *e, pcbm_error *err)
{
    pcbm_budget b;
    pcbm_status st = pcbm_budget_size(e->layout, &e->cfg, &b, err);
    if (st != PCBM_OK)
        return st;
    e->cap_in = b.cap_in;
    e->cap_out = b.cap_out;
    e->nslots = b.nslots;
    e->chunk_bytes = b.chunk_bytes;
    pcbm_layout_set_block(e->layout, b.block_elems);
    e->rep.block_elems = b.block_elems;
    e->rep.nslots = b.nslots;
    e->rep.buffer_bytes = b.buffer_bytes;
    return PCBM_OK;
}

static pcbm_status alloc_slots(pcbm_engine *e, pcbm_error *err)
{
    e->slots = pcbm_calloc(e->nslots, sizeof(slot));
    if (!e->slots)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating slots");
    for (unsigned s = 0; s < e->nslots; s++) {
        for (unsigned m = 0; m < e->nmodels; m++)
            if (!e->layout->no_bytes[m] && !(e->slots[s].in[m] = pcbm_alloc_aligned(e->cap_in)))
                return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating read buffers");
        if (!(e->slots[s].out = pcbm_alloc_aligned(e->cap_out)))
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory allocating output buffers");
    }
    return PCBM_OK;
}

static pcbm_status open_backend(pcbm_engine *e, pcbm_error *err)
{
    unsigned depth = e->nslots * e->nmodels + PCBM_OSTREAM_CHUNKS;
    pcbm_status st = pcbm_io_open(e->cfg.io, depth, &e->io, e->rep.backend_note,
                                  sizeof e->rep.backend_note, err);
    if (st != PCBM_OK)
        return st;
    pcbm_stop_register(e->io);
    e->rep.backend = pcbm_io_name(e->io);
    if (e->rep.backend_note[0])
        pcbm_warn("%s", e->rep.backend_note);
    return PCBM_OK;
}

static pcbm_status open_stream(pcbm_engine *e, pcbm_error *err)
{
    pcbm_ostream_cfg oc = {.out = &e->layout->out, .dir = e->cfg.out_dir,
                           .file_lo = e->cfg.file_lo, .file_hi = e->cfg.file_hi,
                           .chunk_bytes = e->chunk_bytes, .io = e->io};
    return pcbm_ostream_create(&oc, &e->os, err);
}

/* The configuration with its defaults: one thread at least, the file range inside the layout. */
static void set_cfg(pcbm_engine *e, const pcbm_engine_cfg *cfg)
{
    const pcbm_layout *layout = e->layout;
    e->cfg = *cfg;
    if (e->cfg.threads == 0)
        e->cfg.threads = 1;
    if (!e->cfg.file_range) {
        e->cfg.file_lo = 0;
        e->cfg.file_hi = layout->out.nfiles;
    }
    e->cfg.file_hi = PCBM_MIN(e->cfg.file_hi, layout->out.nfiles);
    e->cfg.file_lo = PCBM_MIN(e->cfg.file_lo, e->cfg.file_hi);
}

pcbm_status pcbm_engine_create(pcbm_layout *layout, const pcbm_engine_cfg *cfg, pcbm_engine **out,
                               pcbm_error *err)
{
    *out = NULL;
    pcbm_engine *e = pcbm_calloc(1, sizeof *e);
    if (!e)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory creating the engine");
    e->layout = layout;
    set_cfg(e, cfg);
    e->nmodels = layout->nmodels;
    e->rep.threads = e->cfg.threads;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pcbm_status st = size_buffers(e, err);
    if (st == PCBM_OK)
        st = pcbm_inputs_open(&e->in, layout->models, layout->nmodels, e->cfg.io, err);
    if (st == PCBM_OK)
        st = alloc_slots(e, err);
    if (st == PCBM_OK)
        st = open_backend(e, err);
    if (st == PCBM_OK)
        st = open_stream(e, err);
    if (st == PCBM_OK)
        st = pcbm_ident_create(layout, &e->ident, err);
    if (st != PCBM_OK) {
        pcbm_engine_destroy(e);
        return st;
    }
    *out = e;
    return PCBM_OK;
}

void pcbm_engine_destroy(pcbm_engine *e)
{
    if (!e)
        return;
    if (e->io) {
        pcbm_stop_unregister(e->io); /* before the backend goes: a stop request wakes it */
        pcbm_io_close(e->io);
    }
    pcbm_ostream_destroy(e->os);
    pcbm_inputs_close(&e->in);
    pcbm_ident_free(e->ident);
    if (e->slots) {
        for (unsigned s = 0; s < e->nslots; s++) {
            for (unsigned m = 0; m < e->nmodels; m++)
                pcbm_free_aligned(e->slots[s].in[m]);
            pcbm_free_aligned(e->slots[s].out);
        }
        free(e->slots);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

const pcbm_engine_report *pcbm_engine_get_report(const pcbm_engine *e) { return &e->rep; }

pcbm_ident *pcbm_engine_ident(pcbm_engine *e) { return e->ident; }

/* Choose, at the start of a pass, between reading into the slots' buffers and reading through
 * the mappings (io/pagecache.c). Mapped pages a block used are dropped from the process when its
 * slot is released, so --mem still bounds what is resident; the slots' own read buffers are
 * emptied when a mapped pass starts. */
static void choose_mapping(pcbm_engine *e, const pcbm_pass *ps)
{
    e->mapped = pcbm_inputs_use_map(&e->in, ps->sample_stride <= 1);
    if (e->mapped && e->bufs_touched) {
        for (unsigned s = 0; s < e->nslots; s++)
            for (unsigned m = 0; m < e->nmodels; m++)
                if (e->slots[s].in[m]) /* none for a model that reads nothing */
                    pcbm_pages_drop(e->slots[s].in[m], (size_t)e->cap_in);
        e->bufs_touched = false;
    }
}

/* ---- workers ---------------------------------------------------------------------------- */

typedef struct worker_arg {
    pcbm_engine *e;
    unsigned id;
} worker_arg;

/* Run the pass's callback on slot s (worker thread): once per tensor of the slot, in order. */
static void compute(pcbm_engine *e, unsigned worker, slot *s)
{
    const pcbm_tlayout *t = &e->layout->t[s->tensor];
    unsigned nin = t->kind == PCBM_T_MERGE ? e->nmodels : 1;
    const uint8_t *in[PCBM_MAX_MODELS];
    for (unsigned m = 0; m < nin; m++) /* NULL: a source with no bytes in a model with no buffer */
        in[m] = s->map[m] ? s->map[m] : s->in[m] ? s->in[m] + s->skew[m] : NULL;
    uint8_t *out = s->out;
    pcbm_error_clear(&s->err);
    s->st = PCBM_OK;
    for (size_t i = s->tensor; i < s->tensor_end && s->st == PCBM_OK; i++) {
        t = &e->layout->t[i];
        bool first = i == s->tensor;
        pcbm_blockview bv = {.t = t, .tensor = i, .start = first ? s->start : 0,
                             .n = first ? s->n : (uint32_t)t->units, .out = out};
        for (unsigned m = 0; m < nin; m++) {
            bv.in[m] = in[m];
            if (in[m])
                in[m] += (uint64_t)bv.n * t->in_unit[m];
        }
        out += (uint64_t)bv.n * t->out_unit;
        /* every full pass checks what it read of a merged tensor against the first one
         * (ident.h) before anything is computed from it */
        if (t->kind == PCBM_T_MERGE && e->pass->sample_stride <= 1)
            s->st = pcbm_ident_block(e->ident, &bv, &s->err);
        if (s->st == PCBM_OK)
            s->st = e->pass->fn(e->pass->arg, worker, &bv, &s->err);
    }
}

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

        compute(e, wa->id, s);

        pthread_mutex_lock(&e->mu);
        s->next = e->done_head;
        e->done_head = s;
        pthread_mutex_unlock(&e->mu);
        pcbm_io_wake(e->io);
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

/* ---- the pass loop ---------------------------------------------------------------------- */

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

/* Hand slot s to the scheduler as done without computing it (a pass that is stopping). */
static void drop_done(pcbm_engine *e, slot *s)
{
    s->st = PCBM_OK;
    pthread_mutex_lock(&e->mu);
    s->next = e->done_head;
    e->done_head = s;
    pthread_mutex_unlock(&e->mu);
}

/* Mapped passes: the block's data is in the mappings: straight to a worker. */
static void issue_mapped(run_state *rs, slot *s, const pcbm_tlayout *t, unsigned nin)
{
    pcbm_engine *e = rs->e;
    for (unsigned m = 0; m < nin; m++) {
        const pcbm_tsrc *src = &t->src[m];
        uint64_t len = s->len[m];
        if (src->file == PCBM_SRC_NONE) { /* no bytes (an adapter's source): nothing mapped */
            s->skew[m] = 0;
            s->need[m] = 0;
            continue;
        }
        s->map[m] = e->in.f[m][src->file].map + src->off + s->start * t->in_unit[m];
        s->need[m] = len;
        rs->pr->bytes_read += len;
        pcbm_progress_add(&rs->pg, len);
    }
    s->pending = 0;
    queue_work(rs, s);
}

/* Queue the aligned reads of the block's data of every model into the slot's buffers. */
static void issue_reads(run_state *rs, slot *s, const pcbm_tlayout *t, unsigned nin)
{
    pcbm_engine *e = rs->e;
    e->bufs_touched = true;
    for (unsigned m = 0; m < nin; m++) {
        const pcbm_tsrc *src = &t->src[m];
        if (src->file == PCBM_SRC_NONE) { /* no bytes (an adapter's source): no read */
            s->skew[m] = 0;
            s->need[m] = 0;
            s->pending--;
            continue;
        }
        uint64_t off = src->off + s->start * t->in_unit[m];
        uint64_t len = s->len[m];
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
                      e->layout->models[m]->files[src->file].path, (unsigned long long)a0,
                      strerror(-rc));
            fail_at(rs, s->seq, PCBM_ERR_IO, &er);
            s->pending--;
            continue;
        }
        e->reads++;
    }
}

/* Tensors of at most 1/64 of a block are tiny: only they are gathered into runs, so a model of
 * ordinary tensors is cut into blocks exactly as before. */
#define TINY_PER_BLOCK 64

static bool tiny(const pcbm_tlayout *t) { return t->units * TINY_PER_BLOCK <= t->block_units; }

/* Whether the cursor's block c, a whole tiny tensor, continues slot s's run of whole tiny
 * tensors: the next tensor, its bytes right after the run's in every input file and in the
 * output, and the run still fitting the slot's buffers. Sources with no bytes (PCBM_SRC_NONE,
 * offset 0, in_unit 0) continue each other and nothing else. */
static bool extends_run(const pcbm_engine *e, const slot *s, const pcbm_cursor *c, unsigned nin)
{
    const pcbm_tlayout *last = &e->layout->t[s->tensor_end - 1];
    const pcbm_tlayout *t = &e->layout->t[c->t];
    if (c->t != s->tensor_end || c->start != 0 || c->n != t->units || !tiny(t) ||
        (t->kind == PCBM_T_MERGE) != (last->kind == PCBM_T_MERGE))
        return false;
    if (t->out_file != last->out_file || t->out_off != last->out_off + last->units * last->out_unit ||
        s->out_len + t->units * t->out_unit > e->cap_out)
        return false;
    for (unsigned m = 0; m < nin; m++)
        if (t->src[m].file != last->src[m].file ||
            t->src[m].off != last->src[m].off + last->units * last->in_unit[m] ||
            s->len[m] + t->units * t->in_unit[m] > e->cap_in - 2 * PCBM_ALIGN)
            return false;
    return true;
}

/* Take the cursor's block into slot s, with the whole tensors after it that extend the run;
 * advance the cursor past them. */
static void take_blocks(run_state *rs, slot *s, unsigned nin)
{
    const pcbm_engine *e = rs->e;
    const pcbm_tlayout *t = &e->layout->t[rs->cur.t];
    s->tensor = rs->cur.t;
    s->tensor_end = rs->cur.t + 1;
    s->start = rs->cur.start;
    s->n = (uint32_t)rs->cur.n;
    for (unsigned m = 0; m < nin; m++)
        s->len[m] = (uint64_t)s->n * t->in_unit[m];
    s->out_len = (uint64_t)s->n * t->out_unit;
    bool whole = s->start == 0 && s->n == t->units && tiny(t);
    rs->more = pcbm_cursor_next(&rs->walk, &rs->cur);
    while (whole && rs->more && extends_run(e, s, &rs->cur, nin)) {
        t = &e->layout->t[rs->cur.t];
        for (unsigned m = 0; m < nin; m++)
            s->len[m] += t->units * t->in_unit[m];
        s->out_len += t->units * t->out_unit;
        s->tensor_end++;
        rs->more = pcbm_cursor_next(&rs->walk, &rs->cur);
    }
}

static void issue_block(run_state *rs, slot *s)
{
    pcbm_engine *e = rs->e;
    const pcbm_tlayout *t = &e->layout->t[rs->cur.t];
    unsigned nin = t->kind == PCBM_T_MERGE ? e->nmodels : 1;
    s->seq = rs->seq_next++;
    take_blocks(rs, s, nin);
    s->emitted = 0;
    s->collected = 0;
    s->pending = nin;
    memset(s->map, 0, sizeof s->map);
    if (e->mapped)
        issue_mapped(rs, s, t, nin);
    else
        issue_reads(rs, s, t, nin);
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
        if (s->pending == 0 && !s->map[0] && rs->st == PCBM_OK)
            rs->st = PCBM_ERR_INTERNAL; /* unreachable: every block reads at least the base */
    }
}

static void release_slot(run_state *rs, slot *s)
{
    for (unsigned m = 0; m < PCBM_MAX_MODELS; m++) {
        if (!s->map[m]) /* not mapped, or a source with no bytes */
            continue;
        /* the block's pages leave the process: what is resident stays bounded */
        const pcbm_tlayout *t = &rs->e->layout->t[s->tensor];
        pcbm_map_release(&rs->e->in.f[m][t->src[m].file], s->map[m], s->need[m]);
        s->map[m] = NULL;
    }
    s->next = rs->free_list;
    rs->free_list = s;
    rs->busy--;
}

static const char *req_path(const run_state *rs, const slot *s, const pcbm_io_req *r)
{
    const pcbm_engine *e = rs->e;
    const pcbm_tlayout *t = &e->layout->t[s->tensor];
    unsigned m = (unsigned)(r - s->req);
    return e->layout->models[m]->files[t->src[m].file].path;
}

static void on_read_done(run_state *rs, pcbm_io_req *r)
{
    slot *s = r->user;
    unsigned m = (unsigned)(r - s->req);
    const pcbm_tlayout *t = &rs->e->layout->t[s->tensor];
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
    pcbm_progress_add(&rs->pg, s->len[m]);
    if (--s->pending == 0) {
        /* a pass that is stopping drops the block: not an error of its own (a read error of
         * its own was recorded above) */
        if (rs->st != PCBM_OK)
            drop_done(rs->e, s);
        else
            queue_work(rs, s);
    }
}

static void on_write_done(run_state *rs, pcbm_io_req *r)
{
    pcbm_error er;
    pcbm_status st = pcbm_ostream_write_done(rs->e->os, r, &rs->pr->bytes_written, &er);
    if (st != PCBM_OK)
        fail_at(rs, 0, st, &er);
}

/* Stage slot s's output into the output stream; true when all of it is staged. */
static bool emit_slot(pcbm_engine *e, slot *s, pcbm_status *st, pcbm_error *err)
{
    const pcbm_tlayout *t = &e->layout->t[s->tensor];
    return pcbm_ostream_emit(e->os, t->out_file, t->out_off + s->start * t->out_unit, s->out,
                             s->out_len, &s->emitted, t->name, st, err);
}

/* Apply passes: emit the collected blocks in schedule order, as far as staging buffers allow. */
static void emit_in_order(run_state *rs)
{
    pcbm_engine *e = rs->e;
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
        for (size_t i = s->tensor; i < s->tensor_end; i++) /* one point per tensor's block */
            pcbm_test_point(rs->ps->kind == PCBM_PASS_APPLY ? "apply" : "stats");
        if (rs->ps->kind != PCBM_PASS_APPLY)
            release_slot(rs, s);
    }
    if (rs->ps->kind == PCBM_PASS_APPLY)
        emit_in_order(rs);
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
        if (done[i]->op == PCBM_OP_READ) {
            rs->e->reads--;
            on_read_done(rs, done[i]);
        } else {
            on_write_done(rs, done[i]);
        }
    }
}

/* A failed pass with nothing in flight: drop the queued block sets, collect what the workers
 * finished, and wait only for blocks still being computed (their workers wake us). False once
 * every slot is back. */
static bool wind_down(run_state *rs)
{
    pcbm_engine *e = rs->e;
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
        return false;
    reap_some(rs, true);
    return true;
}

/* Issue, submit and collect once; false when the pass is over. */
static bool loop_once(run_state *rs)
{
    pcbm_engine *e = rs->e;
    bool asked = e->cfg.should_stop && e->cfg.should_stop(e->cfg.user);
    if ((asked || pcbm_stop_requested()) && rs->st == PCBM_OK) {
        pcbm_error er;
        pcbm_fail(&er, PCBM_ERR_INTERRUPTED, "interrupted by %s during pass '%s'",
                  asked ? "the caller's stop request" : "a stop request (a signal)", rs->ps->name);
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
    if (rs->st != PCBM_OK && inflight(e) == 0)
        return wind_down(rs);
    if (!rs->more && rs->busy == 0 && inflight(e) == 0)
        return false;
    pcbm_progress_tick(&rs->pg);
    bool can_issue = rs->more && rs->free_list && rs->st == PCBM_OK;
    if (!can_issue && (idle_workers_pending || inflight(e) > 0))
        reap_some(rs, true);
    else if (inflight(e) > 0)
        reap_some(rs, false);
    return true;
}

/* The report line of pass ps: passes of the same name (tensor scope repeats them per tensor)
 * share one. NULL when there are too many distinct passes. */
static pcbm_pass_report *pass_report(pcbm_engine *e, const pcbm_pass *ps)
{
    for (unsigned i = 0; i < e->rep.npasses; i++)
        if (strcmp(e->rep.passes[i].name, ps->name) == 0)
            return &e->rep.passes[i];
    if (e->rep.npasses >= PCBM_MAX_PASSES)
        return NULL;
    pcbm_pass_report *pr = &e->rep.passes[e->rep.npasses++];
    memset(pr, 0, sizeof *pr);
    snprintf(pr->name, sizeof pr->name, "%s", ps->name);
    return pr;
}

static bool kept_output(const void *os, unsigned f, uint64_t end)
{
    return pcbm_ostream_kept(os, f, end);
}

/* Start the pass: mapping choice, the walk's first block, every slot free, progress. */
static void begin_pass(run_state *rs, pcbm_engine *e, const pcbm_pass *ps, double t0)
{
    choose_mapping(e, ps);
    rs->pr->mapped |= e->mapped;
    rs->walk = (pcbm_walk){.layout = e->layout, .ps = ps, .file_lo = e->cfg.file_lo,
                           .file_hi = e->cfg.file_hi, .kept = kept_output, .kept_arg = e->os};
    rs->more = pcbm_cursor_first(&rs->walk, &rs->cur);
    pcbm_test_point(ps->kind == PCBM_PASS_APPLY ? "apply-begin" : "stats-begin");
    for (unsigned s = 0; s < e->nslots; s++) {
        e->slots[s].next = rs->free_list;
        rs->free_list = &e->slots[s];
    }
    pcbm_progress_begin(&rs->pg, e->cfg.progress, ps->name, pcbm_walk_total_bytes(&rs->walk), t0);
    e->pass = ps;
    e->work_head = e->work_tail = e->done_head = NULL;
}

pcbm_status pcbm_engine_run(pcbm_engine *e, const pcbm_pass *ps, pcbm_error *err)
{
    pcbm_pass_report *pr = pass_report(e, ps);
    if (!pr)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "too many distinct passes");
    uint64_t read0 = pr->bytes_read, written0 = pr->bytes_written;
    double t0 = pcbm_now();
    slot *ring[PCBM_MAX_SLOTS] = {0};
    run_state rs = {.e = e, .ps = ps, .err = err, .pr = pr, .ring = ring};
    begin_pass(&rs, e, ps, t0);

    pthread_t tids[256];
    worker_arg was[256];
    if (e->cfg.threads > 256)
        e->cfg.threads = 256;
    pcbm_status st = start_workers(e, tids, was, err);
    if (st != PCBM_OK)
        return st;
    while (loop_once(&rs))
        ;
    stop_workers(e, tids);
    if (ps->kind == PCBM_PASS_APPLY) { /* the journal is the caller's again after a pass */
        pcbm_error er;
        pcbm_status dst = pcbm_ostream_drain(e->os, &er);
        if (dst != PCBM_OK && rs.st == PCBM_OK) {
            rs.st = dst;
            if (err)
                *err = er;
        }
    }
    pr->seconds += pcbm_now() - t0;
    pr->bytes_read += __atomic_exchange_n(&e->side_read, 0, __ATOMIC_RELAXED);
    e->rep.bytes_read += pr->bytes_read - read0;
    e->rep.bytes_written += pr->bytes_written - written0;
    pcbm_progress_end(&rs.pg, rs.st == PCBM_OK);
    return rs.st;
}

void pcbm_engine_count_read(pcbm_engine *e, uint64_t bytes)
{
    __atomic_fetch_add(&e->side_read, bytes, __ATOMIC_RELAXED);
}

/* ---- the output stream ------------------------------------------------------------------ */

void pcbm_engine_on_segment(pcbm_engine *e, pcbm_segment_fn fn, void *arg)
{
    pcbm_ostream_on_segment(e->os, fn, arg);
}

pcbm_status pcbm_engine_resume_output(pcbm_engine *e, const pcbm_segment *segs, size_t n,
                                      size_t *kept, pcbm_error *err)
{
    return pcbm_ostream_resume(e->os, segs, n, kept, err);
}

pcbm_status pcbm_engine_finish_output(pcbm_engine *e, pcbm_error *err)
{
    uint64_t written = 0;
    pcbm_status st = pcbm_ostream_finish(e->os, &written, err);
    e->rep.bytes_written += written;
    return st;
}

XXH128_hash_t pcbm_engine_file_hash(const pcbm_engine *e, unsigned f)
{
    return pcbm_ostream_file_hash(e->os, f);
}

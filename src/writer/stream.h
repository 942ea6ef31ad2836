/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream.h — the output stream of an apply pass: the output files' bytes (headers, then every
 * tensor's blocks) arrive in file order and are staged into a few aligned buffers, written
 * through the I/O backend, hashed per file (xxh3-128) and per durable segment (xxh3-64). A closed
 * segment whose writes completed is fdatasync'ed by the sync thread, which then reports it (the
 * journal's hook), in stream order. An interrupted run's output is resumed after its longest
 * valid prefix of journaled segments.
 *
 * The scheduler owns the I/O loop: it reaps every completion and hands the writes back here.
 */
#ifndef PCBM_STREAM_H
#define PCBM_STREAM_H

#include "../format/safetensors.h"
#include "../io/io.h"

#include <xxhash.h>

#define PCBM_OSTREAM_CHUNKS 4u         /* output staging buffers */

/* A durable piece of the output stream: bytes [start, end) of output file `file`, written and
 * fdatasync'ed, with their xxh3-64. Segments follow each other in stream order. */
typedef struct pcbm_segment {
    unsigned file;
    uint64_t start, end;
    uint64_t hash;
} pcbm_segment;

/* Called (on the sync thread) each time a segment becomes durable: the journal's hook. */
typedef pcbm_status (*pcbm_segment_fn)(void *arg, const pcbm_segment *seg, pcbm_error *err);

typedef struct pcbm_ostream pcbm_ostream;

typedef struct pcbm_ostream_cfg {
    const pcbm_outlayout *out;   /* the files: names, headers, sizes */
    const char *dir;           /* where they are created */
    unsigned file_lo, file_hi; /* the stream is files [file_lo, file_hi) */
    uint64_t chunk_bytes;      /* each staging buffer (pcbm_ostream_chunk_size) */
    uint64_t segment_bytes;    /* durable segments of about this size (0: 64 MiB, or
                                  PCBM_SEGMENT_BYTES from the environment) */
    pcbm_io *io;               /* writes are queued here; the caller reaps them */
} pcbm_ostream_cfg;

/* Bytes of each staging buffer for blocks of `block_out_bytes` output bytes. */
uint64_t pcbm_ostream_chunk_size(uint64_t block_out_bytes);

pcbm_status pcbm_ostream_create(const pcbm_ostream_cfg *cfg, pcbm_ostream **out, pcbm_error *err);
/* Stops the sync thread and closes the files; writes must not be in flight. */
void pcbm_ostream_destroy(pcbm_ostream *os);
void pcbm_ostream_on_segment(pcbm_ostream *os, pcbm_segment_fn fn, void *arg);

/* Stage bytes [*done, len) of src, which belong at offset off + *done of file f (files before
 * f are completed first, headers included). True when all of it is staged; false when a staging
 * buffer is lacking (retry after writes complete) or on an error (*st, err). `what` names the
 * data in errors (a tensor). */
bool pcbm_ostream_emit(pcbm_ostream *os, unsigned f, uint64_t off, const uint8_t *src,
                       uint64_t len, uint64_t *done, const char *what, pcbm_status *st,
                       pcbm_error *err);
/* Writes queued and not yet handed back through pcbm_ostream_write_done. */
unsigned pcbm_ostream_inflight(const pcbm_ostream *os);
/* A write request of the stream completed (the caller reaped it): *written += its bytes;
 * segments whose writes are all done go to the sync thread. Its first failure is returned. */
pcbm_status pcbm_ostream_write_done(pcbm_ostream *os, pcbm_io_req *r, uint64_t *written,
                                    pcbm_error *err);
/* Wait until every segment handed to the sync thread is synced and reported. */
pcbm_status pcbm_ostream_drain(pcbm_ostream *os, pcbm_error *err);

/* Resume the output of an earlier run: check the journaled segments (in stream order) against
 * the files, keep the longest valid prefix (*kept segments) and continue the stream after it. */
pcbm_status pcbm_ostream_resume(pcbm_ostream *os, const pcbm_segment *segs, size_t n,
                                size_t *kept, pcbm_error *err);
/* Whether bytes [.., end) of file f are kept from the earlier run (not to be recomputed). */
bool pcbm_ostream_kept(const pcbm_ostream *os, unsigned f, uint64_t end);

/* After the last block: headers of files not begun, flush, wait for the writes (*written +=
 * their bytes), sync, truncate, fsync and close every file. */
pcbm_status pcbm_ostream_finish(pcbm_ostream *os, uint64_t *written, pcbm_error *err);
/* xxh3-128 of output file f (valid after pcbm_ostream_finish). */
XXH128_hash_t pcbm_ostream_file_hash(const pcbm_ostream *os, unsigned f);

#endif /* PCBM_STREAM_H */

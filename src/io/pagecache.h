/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pagecache.h — the inputs as files and as mappings: opening them (O_DIRECT when possible, plus a
 * read-only mapping that costs nothing until read), the mincore probe that tells whether they are
 * in the page cache, the per-pass choice between reads and mappings, and releasing the mapped
 * pages a block used so that --mem still bounds what is resident.
 *
 * SIGBUS: a mapped input that shrinks under the merge raises SIGBUS in the worker that touches
 * it; the CLI turns it into a clear message (src/cli/main.c). Reads (not mapped) see a short read
 * instead. Mappings are never used with --io uring/pread nor under PCBM_FAULT.
 */
#ifndef PCBM_PAGECACHE_H
#define PCBM_PAGECACHE_H

#include "io.h"
#include "../format/safetensors.h"

typedef struct pcbm_infile {
    int fd;
    bool direct;
    const uint8_t *map;        /* read-only mapping of the whole file, or NULL */
    uint64_t size;             /* of the mapping */
} pcbm_infile;

/* The files of every input model. */
typedef struct pcbm_inputs {
    unsigned nmodels;
    unsigned nfiles[PCBM_MAX_TASKS + 1];
    pcbm_infile *f[PCBM_MAX_TASKS + 1];   /* f[m][file] */
    pcbm_io_kind kind;
    bool cached;               /* the inputs' sampled pages were in the page cache ... */
    double cached_checked;     /* ... when last looked at (pcbm_now) */
} pcbm_inputs;

/* PCBM_BUFFERED=1: read and write through the page cache instead of O_DIRECT (benchmarks of
 * compute speed with the inputs cached, filesystems that misreport O_DIRECT). */
bool pcbm_buffered_only(void);

/* Open every file of models[0..n) (mapped too when `kind` allows). On failure what was opened
 * stays for pcbm_inputs_close. */
pcbm_status pcbm_inputs_open(pcbm_inputs *in, pcbm_model *const *models, unsigned n,
                             pcbm_io_kind kind, pcbm_error *err);
void pcbm_inputs_close(pcbm_inputs *in);

/* Whether a pass reads the inputs through their mappings: --io mmap always, auto when every
 * file is in the page cache (probed at most once a second). Sample passes (whole = false) never:
 * they read little, and the pages the kernel maps around each faulted one would stay resident. */
bool pcbm_inputs_use_map(pcbm_inputs *in, bool whole);

/* Drop the mapped pages of [p, p + len) in file fi from the process (they stay cached). */
void pcbm_map_release(const pcbm_infile *fi, const uint8_t *p, uint64_t len);
/* Drop the pages of a buffer (they are faulted in again, zeroed, when touched). */
void pcbm_pages_drop(void *p, size_t len);

#endif /* PCBM_PAGECACHE_H */

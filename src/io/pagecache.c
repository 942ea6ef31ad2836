/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pagecache.c — inputs opened for reads and mappings; the mincore probe ("are the inputs
 * cached?"); the per-pass mapping choice; MADV_DONTNEED of the mapped pages a block used,
 * widened to the fault-around unit so that --mem bounds the resident set.
 */
#include "pagecache.h"
#include "../common/seams.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP_AROUND (2u << 20)          /* mapped pages are released in aligned units of this */

bool pcbm_buffered_only(void)
{
    return pcbm_seams_get()->buffered;
}

static pcbm_status open_one(pcbm_infile *inf, const char *path, pcbm_io_kind kind, pcbm_error *err)
{
    int fd = pcbm_open_read(path, !pcbm_buffered_only(), &inf->direct);
    if (fd < 0)
        return pcbm_fail(err, PCBM_ERR_IO, "cannot open %s for reading: %s", path, strerror(-fd));
    inf->fd = fd;
    /* a mapping costs nothing until read; passes use it when the file is cached */
    struct stat sb;
    if (kind != PCBM_IO_URING && kind != PCBM_IO_PREAD && !pcbm_seams_get()->fault &&
        fstat(fd, &sb) == 0 && sb.st_size > 0) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            inf->map = p;
            inf->size = (uint64_t)sb.st_size;
        }
    }
    return PCBM_OK;
}

pcbm_status pcbm_inputs_open(pcbm_inputs *in, pcbm_model *const *models, unsigned n,
                             pcbm_io_kind kind, pcbm_error *err)
{
    memset(in, 0, sizeof *in);
    in->kind = kind;
    in->nmodels = n;
    for (unsigned m = 0; m < n; m++) {
        const pcbm_model *md = models[m];
        in->f[m] = pcbm_calloc(md->nfiles, sizeof(pcbm_infile));
        if (!in->f[m])
            return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory opening inputs");
        in->nfiles[m] = md->nfiles;
        for (unsigned f = 0; f < md->nfiles; f++)
            in->f[m][f].fd = -1;
        for (unsigned f = 0; f < md->nfiles; f++) {
            pcbm_status st = open_one(&in->f[m][f], md->files[f].path, kind, err);
            if (st != PCBM_OK)
                return st;
        }
    }
    return PCBM_OK;
}

void pcbm_inputs_close(pcbm_inputs *in)
{
    for (unsigned m = 0; m < in->nmodels; m++) {
        if (!in->f[m])
            continue;
        for (unsigned f = 0; f < in->nfiles[m]; f++) {
            if (in->f[m][f].fd >= 0)
                close(in->f[m][f].fd);
            if (in->f[m][f].map)
                munmap((void *)in->f[m][f].map, (size_t)in->f[m][f].size);
        }
        free(in->f[m]);
        in->f[m] = NULL;
    }
}

/* Whether the file's sampled pages are in the page cache (64 windows of 256 KiB, mincore). */
static bool file_cached(const pcbm_infile *inf)
{
    static const uint64_t win = 256u << 10;
    long page = sysconf(_SC_PAGESIZE);
    unsigned char vec[(256u << 10) / 4096];
    if (page != 4096 || !inf->map)
        return false;
    for (unsigned k = 0; k < 64; k++) {
        uint64_t off = pcbm_align_down(inf->size * k / 64, (uint64_t)page);
        uint64_t len = PCBM_MIN(win, inf->size - off);
        if (len == 0 || mincore((void *)(inf->map + off), (size_t)len, vec) != 0)
            return false;
        for (uint64_t i = 0; i < (len + (uint64_t)page - 1) / (uint64_t)page; i++)
            if (!(vec[i] & 1))
                return false;
    }
    return true;
}

/* Whether every input file's sampled pages are in the page cache: reading such a file through
 * its mapping avoids copying every byte. */
static bool inputs_cached(const pcbm_inputs *in)
{
    for (unsigned m = 0; m < in->nmodels; m++)
        for (unsigned f = 0; f < in->nfiles[m]; f++)
            if (!file_cached(&in->f[m][f]))
                return false;
    return true;
}

bool pcbm_inputs_use_map(pcbm_inputs *in, bool whole)
{
    bool all = whole;
    for (unsigned m = 0; m < in->nmodels && all; m++)
        for (unsigned f = 0; f < in->nfiles[m] && all; f++)
            all = in->f[m][f].map != NULL;
    if (all && in->kind == PCBM_IO_AUTO) {
        /* the sample costs a few syscalls per file: tensor scope runs passes per tensor, so the
         * answer is kept for a second */
        double now = pcbm_now();
        if (now - in->cached_checked > 1.0) {
            in->cached = inputs_cached(in);
            in->cached_checked = now;
        }
    }
    return all && (in->kind == PCBM_IO_MMAP || (in->kind == PCBM_IO_AUTO && in->cached));
}

void pcbm_map_release(const pcbm_infile *fi, const uint8_t *p, uint64_t len)
{
    /* the block's pages leave the process (they stay cached): what is resident stays bounded.
     * The range is widened to MAP_AROUND so that the pages the kernel mapped around a fault
     * (fault-around maps whole large folios, up to 2 MiB) go too; a neighbour block still in use
     * refaults them */
    uintptr_t a0 = (uintptr_t)p & ~(uintptr_t)(MAP_AROUND - 1);
    uintptr_t a1 = ((uintptr_t)p + len + MAP_AROUND - 1) & ~(uintptr_t)(MAP_AROUND - 1);
    a0 = PCBM_MAX(a0, (uintptr_t)fi->map);
    a1 = PCBM_MIN(a1, ((uintptr_t)fi->map + fi->size + 4095) & ~(uintptr_t)4095);
    madvise((void *)a0, a1 - a0, MADV_DONTNEED);
}

void pcbm_pages_drop(void *p, size_t len) { madvise(p, len, MADV_DONTNEED); }

/*
 * output.h — the output directory's life: a partial directory beside OUT receives every file,
 * is fsynced, and only an atomic rename makes OUT appear. Also the free-space check and small
 * whole-file writes (index, report).
 */
#ifndef PCBM_OUTPUT_H
#define PCBM_OUTPUT_H

#include "../common/common.h"

typedef struct pcbm_outdir {
    char *final;    /* OUT as given */
    char *partial;  /* OUT.partial: where the files are written */
    int lock_fd;    /* the partial directory, flock'ed for the whole run */
} pcbm_outdir;

/* Refuse an existing OUT. A partial directory of an earlier run is kept when resume (*existed
 * tells), removed with force, refused otherwise; a new one is created when needed. */
pcbm_status pcbm_outdir_begin(pcbm_outdir *od, const char *out, int force, int resume,
                              bool *existed, pcbm_error *err);
/* Name OUT and OUT.partial without creating or locking anything. */
pcbm_status pcbm_outdir_attach(pcbm_outdir *od, const char *out, pcbm_error *err);
/* Empty the partial directory (an earlier run left nothing that can be kept). */
pcbm_status pcbm_outdir_reset(pcbm_outdir *od, pcbm_error *err);
/* Check that the filesystem of OUT has `need` bytes free. */
pcbm_status pcbm_outdir_check_space(const pcbm_outdir *od, uint64_t need, pcbm_error *err);
/* Write (create, write, fsync) one small file inside the partial directory. */
pcbm_status pcbm_outdir_write(const pcbm_outdir *od, const char *name, const void *buf, size_t len,
                              pcbm_error *err);
/* fsync the partial directory, rename it to OUT, fsync the parent. */
pcbm_status pcbm_outdir_publish(pcbm_outdir *od, pcbm_error *err);
/* Remove the partial directory (after a failure that cannot be resumed). */
void pcbm_outdir_discard(pcbm_outdir *od);
void pcbm_outdir_free(pcbm_outdir *od);

#endif /* PCBM_OUTPUT_H */

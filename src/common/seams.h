/* SPDX-License-Identifier: Apache-2.0 */
/*
 * seams.h — the test seams: environment variables through which the test suite injects faults
 * and forces code paths. They are read once per process, here and nowhere else, and are not
 * part of the library's interface (a program embedding libpcbmerge never needs them):
 *   PCBM_FAULT          I/O fault injection (io/io_fault.c has the grammar)
 *   PCBM_IO_THREADS     the pread pool's size
 *   PCBM_BUFFERED       read through the page cache, never O_DIRECT or mappings
 *   PCBM_SEGMENT_BYTES  durable output segments of this size (small: many journal entries)
 *   PCBM_CPU            kernel level: scalar, avx2, avx512 or auto (clamped to the CPU)
 *   PCBM_TEST_KILL      POINT[:N]: SIGKILL the N-th time pcbm_test_point(POINT) is reached
 *   PCBM_TEST_PAUSE     POINT[:N]: SIGSTOP the N-th time it is reached (the test edits an
 *                       input, then sends SIGCONT)
 */
#ifndef PCBM_SEAMS_H
#define PCBM_SEAMS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct pcbm_seams {
    const char *fault;          /* NULL when unset */
    const char *io_threads;
    bool buffered;
    uint64_t segment_bytes;     /* 0: unset or not a size of at least 4096 */
    const char *cpu;
    const char *test_kill;
    const char *test_pause;
} pcbm_seams;

/* The seams as the environment set them when first asked. */
const pcbm_seams *pcbm_seams_get(void);
/* Read the environment again (unit tests that change it between cases). */
void pcbm_seams_reload(void);

#endif /* PCBM_SEAMS_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cpu.h — run-time choice of the vector code path (scalar, AVX2+FMA+F16C, AVX-512) for the kernels.
 * Owns CPU feature detection and the PCBM_CPU=scalar|avx2|avx512 override that tests and tools use
 * to force (lower) the path; every path of every kernel gives the same bits, only speed differs.
 */
#ifndef PCBM_CPU_H
#define PCBM_CPU_H

typedef enum pcbm_cpu_level {
    PCBM_CPU_SCALAR = 0, /* baseline x86-64 (SSE2) C code */
    PCBM_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C (x86-64-v3 style) */
    PCBM_CPU_AVX512 = 2, /* the above + AVX-512 F, BW, DQ, VL (x86-64-v4 style) */
    PCBM_CPU_LEVEL_COUNT
} pcbm_cpu_level;

/* Best level this CPU and OS support (ignores PCBM_CPU). */
pcbm_cpu_level pcbm_cpu_detect(void);

/* Level the kernels use now: the calling thread's override if it set one, else the process-wide
 * level. The first call reads PCBM_CPU (scalar|avx2|avx512|auto): a level above the detected one
 * is lowered to it with a warning, an unknown value is ignored with a warning.
 * Cheap (a thread-local read and a relaxed atomic load after the first call); thread-safe. */
pcbm_cpu_level pcbm_cpu_level_get(void);

/* Force a level (tests, tools); clamped to pcbm_cpu_detect(). Returns the level now in use.
 * Not meant to be called while other threads are running kernels (they would just switch path). */
pcbm_cpu_level pcbm_cpu_level_set(pcbm_cpu_level level);

/* Force a level for the calling thread only (tools that compare paths from several threads);
 * clamped to pcbm_cpu_detect(); PCBM_CPU_LEVEL_COUNT removes the thread's override. Returns the
 * level this thread now uses. */
pcbm_cpu_level pcbm_cpu_level_set_thread(pcbm_cpu_level level);

/* "scalar", "avx2", "avx512". */
const char *pcbm_cpu_level_name(pcbm_cpu_level level);
/* Parse a level name; returns 0 on success, -1 if unknown. "auto" gives pcbm_cpu_detect(). */
int pcbm_cpu_level_parse(const char *s, pcbm_cpu_level *out);

#endif /* PCBM_CPU_H */

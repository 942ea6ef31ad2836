/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cpu.c — CPU feature detection (__builtin_cpu_supports, which also checks that the OS saves the
 * YMM/ZMM state) and the process-wide kernel level with its PCBM_CPU environment override.
 */
#include "cpu.h"
#include "../common/seams.h"

#include "../common/common.h"

#include <stdatomic.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

static const char *const level_names[PCBM_CPU_LEVEL_COUNT] = {"scalar", "avx2", "avx512"};

#if defined(__x86_64__) && defined(__GNUC__)
/* F16C from CPUID leaf 1 (clang's __builtin_cpu_supports does not know "f16c"); the OS support of
 * the YMM state it needs is part of the "avx2" check. */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static pcbm_cpu_level detect_uncached(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()))
        return PCBM_CPU_SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return PCBM_CPU_AVX512;
    return PCBM_CPU_AVX2;
#else
    return PCBM_CPU_SCALAR;
#endif
}

/* CPUID traps to the hypervisor in a VM (microseconds): detect once. -1 = not yet. */
static atomic_int detected = -1;

pcbm_cpu_level pcbm_cpu_detect(void)
{
    int v = atomic_load_explicit(&detected, memory_order_relaxed);
    if (v < 0) {
        v = (int)detect_uncached();
        atomic_store_explicit(&detected, v, memory_order_relaxed);
    }
    return (pcbm_cpu_level)v;
}

const char *pcbm_cpu_level_name(pcbm_cpu_level level)
{
    if ((unsigned)level >= PCBM_CPU_LEVEL_COUNT)
        return "unknown";
    return level_names[level];
}

int pcbm_cpu_level_parse(const char *s, pcbm_cpu_level *out)
{
    if (!s)
        return -1;
    if (strcmp(s, "auto") == 0) {
        *out = pcbm_cpu_detect();
        return 0;
    }
    for (int i = 0; i < PCBM_CPU_LEVEL_COUNT; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (pcbm_cpu_level)i;
            return 0;
        }
    }
    return -1;
}

/* -1 = not decided yet; otherwise the level in use. */
static atomic_int cur_level = -1;
/* -1 = follow cur_level; otherwise this thread's forced level. */
static _Thread_local int thread_level = -1;

static pcbm_cpu_level clamp_level(pcbm_cpu_level want, pcbm_cpu_level best)
{
    if ((unsigned)want >= PCBM_CPU_LEVEL_COUNT)
        return best;
    return want > best ? best : want;
}

static pcbm_cpu_level decide(void)
{
    pcbm_cpu_level best = pcbm_cpu_detect();
    pcbm_cpu_level lv = best;
    const char *env = pcbm_seams_get()->cpu;
    if (env && *env) {
        pcbm_cpu_level want;
        if (pcbm_cpu_level_parse(env, &want) != 0) {
            pcbm_warn("PCBM_CPU=%s is not one of scalar, avx2, avx512, auto; using %s", env,
                      level_names[best]);
        } else {
            lv = clamp_level(want, best);
            if (lv != want)
                pcbm_warn("PCBM_CPU=%s: this CPU supports only %s; using %s", env,
                          level_names[best], level_names[lv]);
        }
    }
    return lv;
}

pcbm_cpu_level pcbm_cpu_level_get(void)
{
    if (thread_level >= 0)
        return (pcbm_cpu_level)thread_level;
    int v = atomic_load_explicit(&cur_level, memory_order_relaxed);
    if (v >= 0)
        return (pcbm_cpu_level)v;
    int lv = (int)decide();
    int expected = -1;
    /* Another thread may have decided (or a test forced a level) meanwhile: keep theirs. */
    if (!atomic_compare_exchange_strong(&cur_level, &expected, lv))
        return (pcbm_cpu_level)expected;
    return (pcbm_cpu_level)lv;
}

pcbm_cpu_level pcbm_cpu_level_set(pcbm_cpu_level level)
{
    pcbm_cpu_level lv = clamp_level(level, pcbm_cpu_detect());
    atomic_store(&cur_level, (int)lv);
    return lv;
}

pcbm_cpu_level pcbm_cpu_level_set_thread(pcbm_cpu_level level)
{
    if ((unsigned)level >= PCBM_CPU_LEVEL_COUNT) {
        thread_level = -1;
        return pcbm_cpu_level_get();
    }
    thread_level = (int)clamp_level(level, pcbm_cpu_detect());
    return (pcbm_cpu_level)thread_level;
}

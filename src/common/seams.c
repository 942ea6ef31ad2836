/* SPDX-License-Identifier: Apache-2.0 */
/*
 * seams.c — the test seams (see seams.h), read from the environment once.
 */
#include "seams.h"
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pcbm_seams seams;
static char *owned[5];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static const char *keep(unsigned slot, const char *name)
{
    free(owned[slot]);
    const char *v = getenv(name);
    owned[slot] = v && *v ? pcbm_strdup(v) : NULL;
    return owned[slot];
}

static void load(void)
{
    pthread_mutex_lock(&mu);
    seams.fault = keep(0, "PCBM_FAULT");
    seams.io_threads = keep(1, "PCBM_IO_THREADS");
    seams.cpu = keep(2, "PCBM_CPU");
    seams.test_kill = keep(3, "PCBM_TEST_KILL");
    seams.test_pause = keep(4, "PCBM_TEST_PAUSE");
    const char *b = getenv("PCBM_BUFFERED");
    seams.buffered = b && *b && strcmp(b, "0") != 0;
    const char *sb = getenv("PCBM_SEGMENT_BYTES");
    uint64_t v = 0;
    seams.segment_bytes = sb && pcbm_parse_size(sb, &v) == 0 && v >= PCBM_ALIGN ? v : 0;
    pthread_mutex_unlock(&mu);
}

const pcbm_seams *pcbm_seams_get(void)
{
    pthread_once(&once, load);
    return &seams;
}

void pcbm_seams_reload(void)
{
    pthread_once(&once, load);
    load();
}

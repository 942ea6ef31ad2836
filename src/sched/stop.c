/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stop.c — the stop registry: a flag set by pcbm_request_stop (async-signal context included)
 * and the I/O backends of the engines alive, woken so that a scheduler blocked in a reap sees
 * the flag at once. pcbm_engine_clear_stop forgets the request once the stopped merge returned.
 */
#include "stop.h"
#include "engine.h"

#include <pthread.h>
#include <signal.h>

static volatile sig_atomic_t stop_requested;
static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static pcbm_io *active[PCBM_STOP_MAX];

void pcbm_stop_register(pcbm_io *io)
{
    pthread_mutex_lock(&active_mu);
    for (unsigned i = 0; i < PCBM_STOP_MAX; i++)
        if (!active[i]) {
            active[i] = io;
            break;
        }
    pthread_mutex_unlock(&active_mu);
}

void pcbm_stop_unregister(pcbm_io *io)
{
    pthread_mutex_lock(&active_mu);
    for (unsigned i = 0; i < PCBM_STOP_MAX; i++)
        if (active[i] == io)
            active[i] = NULL;
    pthread_mutex_unlock(&active_mu);
}

bool pcbm_stop_requested(void) { return stop_requested != 0; }

void pcbm_request_stop(void)
{
    stop_requested = 1;
    pthread_mutex_lock(&active_mu);
    for (unsigned i = 0; i < PCBM_STOP_MAX; i++)
        if (active[i])
            pcbm_io_wake(active[i]);
    pthread_mutex_unlock(&active_mu);
}

void pcbm_engine_clear_stop(void)
{
    stop_requested = 0;
}

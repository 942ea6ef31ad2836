/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stop.h — the stop registry: pcbm_request_stop (public API, signal handlers) marks a stop and
 * wakes the I/O backend of every running engine, whose scheduler then ends the pass with
 * PCBM_ERR_INTERRUPTED. Engines register their backend while they exist.
 */
#ifndef PCBM_STOP_H
#define PCBM_STOP_H

#include "../io/io.h"

/* Wake io on a stop request (at most PCBM_STOP_MAX backends at a time; more are not woken). */
#define PCBM_STOP_MAX 16
void pcbm_stop_register(pcbm_io *io);
void pcbm_stop_unregister(pcbm_io *io);
/* Whether a stop was requested (and not cleared by pcbm_engine_clear_stop). */
bool pcbm_stop_requested(void);

#endif /* PCBM_STOP_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rng.h — the counter-based random numbers behind DARE masks: a pure function of
 * (seed, stream, counter), so a mask never depends on chunking, threads or visiting order, plus
 * the stable 64-bit key of a tensor name. Exact algorithm (for bit-for-bit references) in rng.c.
 */
#ifndef PCBM_RNG_H
#define PCBM_RNG_H

#include <stddef.h>
#include <stdint.h>

/* 64 random bits for position `counter` of stream `stream` under `seed`. */
uint64_t pcbm_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter);

/* Stable key of a tensor name: XXH3_64bits(name, strlen(name)) with seed 0. */
uint64_t pcbm_name_key(const char *name);

/* The stream used for task `task` (0-based) of the tensor with key `tensor_key`. */
uint64_t pcbm_dare_stream(unsigned task, uint64_t tensor_key);

/* 1 if DARE keeps element `index` of the tensor for task `task`, else 0. Keeps with probability
 * density: u = (pcbm_rng_u64(seed, pcbm_dare_stream(task, tensor_key), index) >> 11) * 2^-53 and
 * keep iff u < density (density >= 1 keeps all, <= 0 or NaN keeps none). */
int pcbm_dare_keep(uint64_t seed, unsigned task, uint64_t tensor_key, uint64_t index, double density);

/* mask[i] = pcbm_dare_keep(seed, task, tensor_key, start + i, density) for i in [0, n), as 0/1
 * bytes. Returns how many were kept. */
uint64_t pcbm_dare_mask(uint64_t seed, unsigned task, uint64_t tensor_key, uint64_t start, size_t n,
                        double density, uint8_t *mask);

#endif /* PCBM_RNG_H */

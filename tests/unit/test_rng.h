/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_rng.h — the unit tests' random inputs: xorshift64* with a per-file seed (TEST_RNG_SEED),
 * reproducible run to run. Test inputs only.
 */
#ifndef PCBM_TEST_RNG_H
#define PCBM_TEST_RNG_H

#include <stdint.h>

#ifndef TEST_RNG_SEED
#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#endif

static uint64_t rng_state = TEST_RNG_SEED;

static inline uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

#endif /* PCBM_TEST_RNG_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rng.c — counter-based generator for DARE masks (SplitMix64 keyed per stream) and tensor-name
 * keys (XXH3-64). Everything here is a pure function of its arguments: same bits on every machine.
 *
 * Exact algorithm (all arithmetic on unsigned 64-bit integers, modulo 2^64):
 *
 *   mix(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
 *            z = (z ^ (z >> 27)) * 0x94D049BB133111EB
 *            return z ^ (z >> 31)                  (SplitMix64's finalizer, a bijection)
 *
 *   pcbm_rng_u64(seed, stream, counter):
 *            key = mix(mix(seed ^ 0x6A09E667F3BCC909) ^ stream)
 *            return mix(key + (counter + 1) * 0x9E3779B97F4A7C15)
 *
 *   i.e. the SplitMix64 sequence whose state starts at `key` (output number counter, 0-based), with
 *   `key` a bijective function of stream for a fixed seed. SplitMix64 passes BigCrush; distinct
 *   streams are distinct keys, and two streams' sequences overlap only if their keys differ by a
 *   small multiple of the golden gamma (probability ~ length / 2^64).
 *
 *   pcbm_name_key(name)            = XXH3_64bits(name bytes without the NUL, seed 0)
 *   pcbm_dare_stream(task, key)    = key + (task + 1) * 0xD1B54A32D192ED03
 *   pcbm_dare_keep(seed, task, key, index, density):
 *            r = pcbm_rng_u64(seed, pcbm_dare_stream(task, key), index)
 *            u = (double)(r >> 11) * 2^-53          (exact: a multiple of 2^-53 in [0, 1))
 *            keep = u < density                     (IEEE double comparison; NaN keeps nothing)
 *   so P(keep) = ceil(density * 2^53) / 2^53 for density in [0, 1].
 *
 * Python reference (bit for bit):
 *   M = (1 << 64) - 1
 *   def mix(z):
 *       z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
 *       z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
 *       return z ^ (z >> 31)
 *   def rng_u64(seed, stream, counter):
 *       key = mix(mix(seed ^ 0x6A09E667F3BCC909) ^ stream)
 *       return mix((key + (counter + 1) * 0x9E3779B97F4A7C15) & M)
 *   def dare_keep(seed, task, tensor_key, index, density):
 *       stream = (tensor_key + (task + 1) * 0xD1B54A32D192ED03) & M
 *       return (rng_u64(seed, stream, index) >> 11) * 2.0**-53 < density
 *   # tensor_key: xxhash.xxh3_64_intdigest(name.encode()), or without the PyPI module, from Debian's
 *   # libxxhash0 through ctypes:
 *   lib = ctypes.CDLL("libxxhash.so.0"); lib.XXH3_64bits.restype = ctypes.c_uint64
 *   lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
 *   b = name.encode("utf-8"); tensor_key = lib.XXH3_64bits(b, len(b))
 */
#include "rng.h"

#include <string.h>
#include <xxhash.h>

#define RNG_SEED_SALT 0x6A09E667F3BCC909ull /* fractional bits of sqrt(2) */
#define RNG_GAMMA 0x9E3779B97F4A7C15ull     /* SplitMix64's golden gamma */
#define RNG_TASK_MUL 0xD1B54A32D192ED03ull  /* odd constant spreading task numbers */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t stream_key(uint64_t seed, uint64_t stream)
{
    return mix64(mix64(seed ^ RNG_SEED_SALT) ^ stream);
}

uint64_t pcbm_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter)
{
    return mix64(stream_key(seed, stream) + (counter + 1) * RNG_GAMMA);
}

uint64_t pcbm_name_key(const char *name)
{
    return (uint64_t)XXH3_64bits(name, strlen(name));
}

uint64_t pcbm_dare_stream(unsigned task, uint64_t tensor_key)
{
    return tensor_key + ((uint64_t)task + 1) * RNG_TASK_MUL;
}

static inline int keep_bits(uint64_t r, double density)
{
    return (double)(r >> 11) * 0x1p-53 < density;
}

int pcbm_dare_keep(uint64_t seed, unsigned task, uint64_t tensor_key, uint64_t index, double density)
{
    return keep_bits(pcbm_rng_u64(seed, pcbm_dare_stream(task, tensor_key), index), density);
}

uint64_t pcbm_dare_mask(uint64_t seed, unsigned task, uint64_t tensor_key, uint64_t start, size_t n,
                        double density, uint8_t *mask)
{
    uint64_t key = stream_key(seed, pcbm_dare_stream(task, tensor_key));
    uint64_t kept = 0;
    if (!(density > 0.0)) { /* also NaN */
        memset(mask, 0, n);
        return 0;
    }
    if (density >= 1.0) {
        memset(mask, 1, n);
        return n;
    }
    /* u < density  <=>  (r >> 11) < ceil(density * 2^53) for density in (0, 1): density * 2^53 is
     * exact, and an integer m satisfies m < x iff m < ceil(x). */
    uint64_t lim = (uint64_t)(density * 0x1p53);
    if ((double)lim < density * 0x1p53)
        lim++;
    uint64_t state = key + (start + 1) * RNG_GAMMA;
    for (size_t i = 0; i < n; i++) {
        uint8_t k = (uint8_t)((mix64(state) >> 11) < lim);
        mask[i] = k;
        kept += k;
        state += RNG_GAMMA;
    }
    return kept;
}

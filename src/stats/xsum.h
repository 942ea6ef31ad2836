/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xsum.h — exact sums of doubles: a fixed-point accumulator wide enough for every finite double,
 * so a norm or a dot product summed over threads, blocks or the machines of a split merge is the
 * same number whatever the order or grouping. Values are added exactly (no rounding at all);
 * reading the total rounds once, to nearest. Combining two accumulators is a limb-wise integer
 * sum (pcbm_acc_sum_i64 after pcbm_xsum_norm), so an array of them is an accumulator region.
 *
 * The usual pattern for float32 data: a tile's products (exact in double: 24 + 24 bits) summed in
 * element order in a double (deterministic, as tiles sit on a fixed grid of PCBM_TILE elements
 * from the tensor's start), then that partial added here once per tile.
 */
#ifndef PCBM_XSUM_H
#define PCBM_XSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 32-bit digits in int64 limbs: bit 0 of limb 0 weighs 2^-1074 (the smallest subnormal); 68
 * limbs reach 2^1102, beyond any finite double plus the carries of 2^64 additions. */
#define PCBM_XSUM_LIMBS 68u

typedef struct pcbm_xsum {
    int64_t limb[PCBM_XSUM_LIMBS];
    int64_t adds;       /* additions since the last normalization (carries are due by 2^30) */
    int64_t nonfinite;  /* NaN or infinite values offered (not added) */
} pcbm_xsum;

void pcbm_xsum_clear(pcbm_xsum *x);
/* x += v exactly; a NaN or infinite v is counted in x->nonfinite instead. */
void pcbm_xsum_add(pcbm_xsum *x, double v);
/* Carries propagated: every limb but the top one in [0, 2^32). Idempotent; the value is kept. */
void pcbm_xsum_norm(pcbm_xsum *x);
/* dst += src (both any state); dst is left normalized. */
void pcbm_xsum_merge(pcbm_xsum *dst, const pcbm_xsum *src);
/* The exact total rounded to the nearest double (ties to even); ±HUGE_VAL beyond the double
 * range; NaN when a non-finite value was offered. */
double pcbm_xsum_value(const pcbm_xsum *x);
/* A pcbm_acc combine over whole pcbm_xsum structs (bytes a multiple of sizeof(pcbm_xsum)). */
void pcbm_xsum_combine(void *dst, const void *src, size_t bytes);

/* The partial sums of one tile, in element order, in double: Σ a[k]·b[k], Σ |a[k]|, Σ a[k]². */
double pcbm_xsum_dot_f32(const float *a, const float *b, unsigned n);
double pcbm_xsum_abs_f32(const float *a, unsigned n);

#endif /* PCBM_XSUM_H */

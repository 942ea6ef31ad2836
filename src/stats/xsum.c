/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xsum.c — the exact double accumulator of xsum.h: a double's 53-bit significand, shifted to its
 * place, is split into three 32-bit digits added into int64 limbs; carries are propagated every
 * 2^30 additions and before the total is read or combined.
 */
#include "xsum.h"

#include <math.h>
#include <string.h>

#define DIGIT 32
#define DIGIT_MASK 0xffffffffll
#define NORM_EVERY (1ll << 30)

void pcbm_xsum_clear(pcbm_xsum *x)
{
    memset(x, 0, sizeof *x);
}

void pcbm_xsum_norm(pcbm_xsum *x)
{
    int64_t carry = 0;
    for (unsigned i = 0; i + 1 < PCBM_XSUM_LIMBS; i++) {
        int64_t v = x->limb[i] + carry;
        carry = v >> DIGIT; /* floor division by 2^32 (arithmetic shift) */
        x->limb[i] = v - carry * ((int64_t)1 << DIGIT);
    }
    x->limb[PCBM_XSUM_LIMBS - 1] += carry;
    x->adds = 0;
}

void pcbm_xsum_add(pcbm_xsum *x, double v)
{
    if (!isfinite(v)) {
        x->nonfinite++;
        return;
    }
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    unsigned e = (unsigned)(u >> 52) & 0x7ffu;
    uint64_t m = u & ((1ull << 52) - 1);
    if (m == 0 && e == 0)
        return;
    if (e == 0)
        e = 1; /* subnormal: the same scale as the smallest normal, no hidden bit */
    else
        m |= 1ull << 52;
    unsigned p = e - 1; /* v = m * 2^(p - 1074) */
    unsigned j = p / DIGIT;
    unsigned __int128 w = (unsigned __int128)m << (p % DIGIT);
    int64_t d0 = (int64_t)(w & DIGIT_MASK), d1 = (int64_t)((w >> DIGIT) & DIGIT_MASK),
            d2 = (int64_t)(w >> (2 * DIGIT));
    if (u >> 63) {
        x->limb[j] -= d0, x->limb[j + 1] -= d1, x->limb[j + 2] -= d2;
    } else {
        x->limb[j] += d0, x->limb[j + 1] += d1, x->limb[j + 2] += d2;
    }
    if (++x->adds >= NORM_EVERY)
        pcbm_xsum_norm(x);
}

void pcbm_xsum_merge(pcbm_xsum *dst, const pcbm_xsum *src)
{
    pcbm_xsum s = *src;
    pcbm_xsum_norm(&s);
    pcbm_xsum_norm(dst);
    for (unsigned i = 0; i < PCBM_XSUM_LIMBS; i++)
        dst->limb[i] += s.limb[i];
    dst->nonfinite += s.nonfinite;
    pcbm_xsum_norm(dst);
}

void pcbm_xsum_combine(void *dst, const void *src, size_t bytes)
{
    pcbm_xsum *d = dst;
    const pcbm_xsum *s = src;
    for (size_t k = 0; k < bytes / sizeof(pcbm_xsum); k++)
        pcbm_xsum_merge(&d[k], &s[k]);
}

double pcbm_xsum_value(const pcbm_xsum *x)
{
    if (x->nonfinite)
        return NAN;
    pcbm_xsum s = *x;
    pcbm_xsum_norm(&s);
    double sign = 1.0;
    if (s.limb[PCBM_XSUM_LIMBS - 1] < 0) { /* negative: take the magnitude */
        for (unsigned i = 0; i < PCBM_XSUM_LIMBS; i++)
            s.limb[i] = -s.limb[i];
        pcbm_xsum_norm(&s);
        sign = -1.0;
    }
    int h = (int)PCBM_XSUM_LIMBS - 1;
    while (h >= 0 && s.limb[h] == 0)
        h--;
    if (h < 0)
        return 0.0;
    /* the top three digits (at least 65 bits when h >= 2), the rest as a sticky bit */
    unsigned __int128 top = 0;
    for (int i = h; i >= h - 2; i--)
        top = (top << DIGIT) | (unsigned __int128)(i >= 0 ? (uint64_t)s.limb[i] : 0);
    bool sticky = false;
    for (int i = h - 3; i >= 0 && !sticky; i--)
        sticky = s.limb[i] != 0;
    if (sticky)
        top |= 1;
    return sign * ldexp((double)top, (h - 2) * DIGIT - 1074);
}

double pcbm_xsum_dot_f32(const float *a, const float *b, unsigned n)
{
    double s = 0.0;
    for (unsigned k = 0; k < n; k++)
        s += (double)a[k] * (double)b[k];
    return s;
}

double pcbm_xsum_abs_f32(const float *a, unsigned n)
{
    double s = 0.0;
    for (unsigned k = 0; k < n; k++)
        s += fabs((double)a[k]);
    return s;
}

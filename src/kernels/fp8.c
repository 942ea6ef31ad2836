/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fp8.c — decoding 8-bit floats (safetensors F8_E4M3 = float8_e4m3fn: no infinities, 0x7f/0xff are
 * NaN, largest 448; F8_E5M2: IEEE-style with infinities) to float32, exactly: every FP8 value is
 * a float32. A 256-entry table per format, built once; the same bits on every CPU.
 */
#include "fp8.h"

#include <math.h>
#include <pthread.h>

static float table[2][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static float e4m3(unsigned b)
{
    unsigned e = (b >> 3) & 0xf, m = b & 7;
    float v;
    if (e == 15 && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9);              /* subnormal: m/8 * 2^-6 */
    else
        v = ldexpf((float)(8 + m), (int)e - 10); /* (1 + m/8) * 2^(e-7) */
    return (b & 0x80) ? -v : v;
}

static float e5m2(unsigned b)
{
    unsigned e = (b >> 2) & 0x1f, m = b & 3;
    float v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexpf((float)m, -16);             /* subnormal: m/4 * 2^-14 */
    else
        v = ldexpf((float)(4 + m), (int)e - 17); /* (1 + m/4) * 2^(e-15) */
    return (b & 0x80) ? -v : v;
}

static void build(void)
{
    for (unsigned b = 0; b < 256; b++) {
        table[0][b] = e4m3(b);
        table[1][b] = e5m2(b);
    }
}

void pcbm_fp8_decode(pcbm_dtype dt, const void *src, float *dst, size_t n)
{
    pthread_once(&once, build);
    const float *t = table[dt == PCBM_DT_F8_E5M2];
    const unsigned char *s = src;
    for (size_t k = 0; k < n; k++)
        dst[k] = t[s[k]];
}

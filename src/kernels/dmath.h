/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmath.h — deterministic transcendental functions. One implementation of exp and tanh serves
 * every code path of every merge: fixed polynomials, fixed operation order, no FMA contraction,
 * no -ffast-math, so a merge's bits never depend on the CPU, vector width or libm.
 * Accuracy (max ulp error against a correctly rounded reference) is measured by
 * tools/ulp-check and stated in dmath.c.
 */
#ifndef PCBM_DMATH_H
#define PCBM_DMATH_H

float pcbm_expf(float x);
float pcbm_tanhf(float x);
/* Array forms (same bits as the scalar forms, element by element). */
void pcbm_expf_n(const float *x, float *y, unsigned long n);
void pcbm_tanhf_n(const float *x, float *y, unsigned long n);

#endif /* PCBM_DMATH_H */

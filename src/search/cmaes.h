/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmaes.h — CMA-ES (covariance matrix adaptation evolution strategy) with an ask/tell interface,
 * for the coefficient search (pcbmerge search). Internal to libpcbmerge.
 *
 * The algorithm is the standard (μ/μ_w, λ)-CMA-ES of Hansen's tutorial and reference code
 * (cmaes.m 3.61): log-linear positive recombination weights, cumulative step-size adaptation with
 * the h_σ stall, rank-one and rank-μ covariance updates, and a step-size increase on flat fitness.
 * Box constraints are handled as in cmaes.m: every candidate is repaired into the box (clipped)
 * and evaluated there, and the ranking adds a quadratic penalty on the distance between the
 * sampled and the repaired point, with per-coordinate weights set from the observed fitness
 * spread and increased while the mean drifts away outside the box (Hansen et al. 2009, IEEE TEC
 * 13(1), appendix). The distribution keeps the unrepaired samples, so an optimum on a bound is
 * approached from both sides and found exactly by the repair.
 *
 * Numerics come from GSL: the Mersenne Twister (gsl_rng_mt19937) seeded with `seed` and
 * gsl_ran_gaussian for the samples, gsl_eigen_symmv for the eigendecomposition of C. The same
 * seed and the same fitness values give the same sequence of candidates, bit for bit.
 *
 * Use: create, then repeat { ask → evaluate every row → tell } until pcbm_cmaes_stopped() or the
 * budget is spent. The values told are minimized; a failed evaluation may be told as NaN or
 * +Inf (ranked last).
 */
#ifndef PCBM_CMAES_H
#define PCBM_CMAES_H

#include "../common/common.h"

typedef struct pcbm_cmaes pcbm_cmaes;

typedef struct pcbm_cmaes_opts {
    unsigned n;            /* dimension (1..PCBM_CMAES_MAX_DIM) */
    const double *x0;      /* initial mean, n values (inside the bounds) */
    double sigma0;         /* initial step size, > 0 */
    const double *lo, *hi; /* box bounds, n values each, or both NULL (unbounded); a coordinate
                              may be unbounded on one side with -HUGE_VAL / HUGE_VAL */
    unsigned popsize;      /* λ; 0 = the default 4 + ⌊3 ln n⌋ */
    uint64_t seed;         /* random seed */
    double tol_x;          /* stop when σ·max(|p_c|, √diag C) < tol_x in every coordinate;
                              0 = 1e-11·sigma0 */
    double tol_fun;        /* stop when the best values of the last 10 + ⌈30n/λ⌉ generations and
                              all of this one lie within tol_fun; 0 = never */
} pcbm_cmaes_opts;

#define PCBM_CMAES_MAX_DIM 256

typedef enum pcbm_cmaes_stop {
    PCBM_CMAES_RUNNING = 0,
    PCBM_CMAES_STOP_TOLX,      /* the distribution has shrunk below tol_x */
    PCBM_CMAES_STOP_TOLFUN,    /* the values stopped changing (tol_fun) */
    PCBM_CMAES_STOP_CONDITION, /* the condition number of C exceeds 1e14 */
    PCBM_CMAES_STOP_TOLUPX,    /* σ·max(D) grew beyond 1e4·sigma0: diverging */
} pcbm_cmaes_stop;

/* Fill `o` with the defaults (popsize 0, tol_x 0, tol_fun 0); n, x0, sigma0, bounds and seed
 * are the caller's. */
void pcbm_cmaes_opts_init(pcbm_cmaes_opts *o);

/* Validate `o` and create the optimizer (copies x0 and the bounds). PCBM_ERR_USAGE with a
 * message when an option is invalid (x0 outside the bounds, lo >= hi, sigma0 <= 0, ...). */
pcbm_status pcbm_cmaes_create(const pcbm_cmaes_opts *o, pcbm_cmaes **out, pcbm_error *err);
void pcbm_cmaes_free(pcbm_cmaes *es);

unsigned pcbm_cmaes_dim(const pcbm_cmaes *es);
unsigned pcbm_cmaes_popsize(const pcbm_cmaes *es);    /* λ: rows of every ask */
unsigned pcbm_cmaes_mu(const pcbm_cmaes *es);         /* μ: parents recombined */
double pcbm_cmaes_mueff(const pcbm_cmaes *es);

/* Sample one generation into x (popsize rows of n values, row-major): every row inside the
 * bounds (repaired). Asking again before tell returns the same generation. */
void pcbm_cmaes_ask(pcbm_cmaes *es, double *x);

/* The values of the rows of the last ask, in order (popsize values, minimized; NaN and +Inf
 * rank last). Updates the distribution. PCBM_ERR_USAGE when there was no ask. */
pcbm_status pcbm_cmaes_tell(pcbm_cmaes *es, const double *f, pcbm_error *err);

/* Why the optimizer stopped (PCBM_CMAES_RUNNING while it goes on), and a short phrase for it. */
pcbm_cmaes_stop pcbm_cmaes_stopped(const pcbm_cmaes *es);
const char *pcbm_cmaes_stop_name(pcbm_cmaes_stop s);

/* The best point told so far (repaired, inside the bounds) and its value (+Inf before any). */
double pcbm_cmaes_best(const pcbm_cmaes *es, const double **x);
const double *pcbm_cmaes_mean(const pcbm_cmaes *es);  /* the distribution mean (n values) */
double pcbm_cmaes_sigma(const pcbm_cmaes *es);
/* √(largest eigenvalue / smallest) of C. */
double pcbm_cmaes_axis_ratio(const pcbm_cmaes *es);
unsigned pcbm_cmaes_generation(const pcbm_cmaes *es); /* generations told */
uint64_t pcbm_cmaes_evaluations(const pcbm_cmaes *es); /* values told */

#endif /* PCBM_CMAES_H */

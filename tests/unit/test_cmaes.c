/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_cmaes.c — cmocka tests of the CMA-ES of the coefficient search (src/search/cmaes.c):
 * convergence within a stated budget of evaluations on known functions (sphere, rotated
 * ellipsoid, a quadratic with its optimum inside the bounds, one with its optimum on bounds),
 * the search's own small-budget setting, failed evaluations, flat fitness, determinism for a
 * seed, and the refusal of invalid options.
 *
 * Budgets are counts of evaluations (whole generations). Each test prints the evaluations it
 * used; the budgets leave a margin of about 2× over what seeds 1..20 need.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "search/cmaes.h"

#include <gsl/gsl_linalg.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 16

typedef struct problem {
    unsigned n;
    double c[MAXN];         /* optimum (unconstrained) */
    double R[MAXN][MAXN];   /* rotation (identity when not rotated) */
    double scale[MAXN];     /* per-axis coefficient after rotation */
    int nan_above;          /* return NaN when x[0] > 2.5 (a failing evaluation) */
} problem;

static double fval(const problem *p, const double *x)
{
    if (p->nan_above && x[0] > 2.5)
        return NAN;
    double s = 0.0;
    for (unsigned i = 0; i < p->n; i++) {
        double y = 0.0;
        for (unsigned j = 0; j < p->n; j++)
            y += p->R[i][j] * (x[j] - p->c[j]);
        s += p->scale[i] * y * y;
    }
    return s;
}

static void identity(problem *p)
{
    for (unsigned i = 0; i < p->n; i++)
        for (unsigned j = 0; j < p->n; j++)
            p->R[i][j] = i == j;
}

/* A random orthogonal matrix: Q of the QR decomposition of a Gaussian matrix (fixed seed). */
static void random_rotation(problem *p, unsigned long seed)
{
    unsigned n = p->n;
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(r, seed);
    gsl_matrix *A = gsl_matrix_alloc(n, n), *Q = gsl_matrix_alloc(n, n), *Rm = gsl_matrix_alloc(n, n);
    gsl_vector *tau = gsl_vector_alloc(n);
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++)
            gsl_matrix_set(A, i, j, gsl_ran_gaussian(r, 1.0));
    gsl_linalg_QR_decomp(A, tau);
    gsl_linalg_QR_unpack(A, tau, Q, Rm);
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++)
            p->R[i][j] = gsl_matrix_get(Q, i, j);
    gsl_matrix_free(A);
    gsl_matrix_free(Q);
    gsl_matrix_free(Rm);
    gsl_vector_free(tau);
    gsl_rng_free(r);
}

typedef struct run_result {
    uint64_t evals;     /* evaluations until the target was reached (or the budget) */
    int reached;
    double fbest;
    double xbest[MAXN];
    pcbm_cmaes_stop stop;
} run_result;

/* Run CMA-ES on p from x0 until fbest <= target or `budget` evaluations. */
static run_result run(const problem *p, const double *x0, double sigma0, const double *lo,
                      const double *hi, uint64_t seed, uint64_t budget, double target)
{
    pcbm_cmaes_opts o;
    pcbm_cmaes_opts_init(&o);
    o.n = p->n;
    o.x0 = x0;
    o.sigma0 = sigma0;
    o.lo = lo;
    o.hi = hi;
    o.seed = seed;
    pcbm_cmaes *es = NULL;
    pcbm_error err;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_OK);
    unsigned lam = pcbm_cmaes_popsize(es), n = p->n;
    double *X = malloc(sizeof(double) * lam * n), *F = malloc(sizeof(double) * lam);
    run_result r = {0};
    while (r.evals + lam <= budget && pcbm_cmaes_stopped(es) == PCBM_CMAES_RUNNING) {
        pcbm_cmaes_ask(es, X);
        for (unsigned k = 0; k < lam; k++) {
            if (lo)
                for (unsigned i = 0; i < n; i++)
                    assert_true(X[k * n + i] >= lo[i] && X[k * n + i] <= hi[i]);
            F[k] = fval(p, X + k * n);
        }
        assert_int_equal(pcbm_cmaes_tell(es, F, &err), PCBM_OK);
        r.evals += lam;
        if (pcbm_cmaes_best(es, NULL) <= target) {
            r.reached = 1;
            break;
        }
    }
    const double *xb;
    r.fbest = pcbm_cmaes_best(es, &xb);
    memcpy(r.xbest, xb, n * sizeof(double));
    r.stop = pcbm_cmaes_stopped(es);
    free(X);
    free(F);
    pcbm_cmaes_free(es);
    return r;
}

/* Run seeds 1..nseeds; every one must reach the target within the budget. Prints the worst. */
static void converges(const char *name, const problem *p, const double *x0, double sigma0,
                      const double *lo, const double *hi, uint64_t budget, double target,
                      unsigned nseeds)
{
    uint64_t worst = 0, total = 0;
    for (unsigned s = 1; s <= nseeds; s++) {
        run_result r = run(p, x0, sigma0, lo, hi, s, budget, target);
        if (!r.reached)
            fail_msg("%s: seed %u did not reach f <= %g within %llu evaluations (best %g, %s)",
                     name, s, target, (unsigned long long)budget, r.fbest,
                     pcbm_cmaes_stop_name(r.stop));
        worst = r.evals > worst ? r.evals : worst;
        total += r.evals;
    }
    print_message("%s: f <= %.12g reached by seeds 1..%u in %.0f evaluations on average, at most "
                  "%llu (budget %llu)\n", name, target, nseeds, (double)total / nseeds,
                  (unsigned long long)worst, (unsigned long long)budget);
}

static void test_sphere(void **state)
{
    (void)state;
    problem p = {.n = 8};
    identity(&p);
    double x0[MAXN];
    for (unsigned i = 0; i < p.n; i++) {
        p.scale[i] = 1.0;
        x0[i] = 3.0;
    }
    converges("sphere n=8", &p, x0, 1.0, NULL, NULL, 3200, 1e-10, 20);
}

static void test_rotated_ellipsoid(void **state)
{
    (void)state;
    problem p = {.n = 6};
    random_rotation(&p, 7);
    double x0[MAXN];
    for (unsigned i = 0; i < p.n; i++) {
        p.scale[i] = pow(10.0, 6.0 * i / (p.n - 1)); /* condition number 1e6 */
        p.c[i] = 0.5 * i;
        x0[i] = 2.0;
    }
    converges("rotated ellipsoid n=6 cond 1e6", &p, x0, 1.0, NULL, NULL, 6000, 1e-10, 20);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const double LO[4] = {0.5, 0.5, 0.5, 0.5}, HI[4] = {3.0, 3.0, 3.0, 3.0};
static const double ONES[4] = {1.0, 1.0, 1.0, 1.0};

/* A rotated quadratic with its optimum inside [0.5, 3]^4: found to 1e-5 in every coordinate. */
static void test_bounded_inside(void **state)
{
    (void)state;
    problem p = {.n = 4, .c = {1.7, 2.3, 0.9, 1.2}, .scale = {1, 4, 9, 16}};
    random_rotation(&p, 3);
    converges("quadratic, optimum inside [0.5,3]^4", &p, ONES, 0.5, LO, HI, 2000, 1e-11, 20);
    run_result r = run(&p, ONES, 0.5, LO, HI, 5, 2000, 1e-11);
    for (unsigned i = 0; i < 4; i++)
        assert_true(fabs(r.xbest[i] - p.c[i]) < 1e-5);
}

/* The optimum outside the box: the constrained optimum lies on two bounds, and the repair makes
 * the best point sit exactly on them. */
static void test_bounded_on_bound(void **state)
{
    (void)state;
    problem p = {.n = 4, .c = {3.6, 1.5, 0.1, 2.0}, .scale = {1, 1, 1, 1}};
    identity(&p);
    const double fstar = 0.6 * 0.6 + 0.4 * 0.4; /* at (3, 1.5, 0.5, 2) */
    converges("sphere, optimum on 2 bounds of [0.5,3]^4", &p, ONES, 0.5, LO, HI, 2000,
              fstar + 1e-10, 20);
    run_result r = run(&p, ONES, 0.5, LO, HI, 9, 2000, fstar + 1e-10);
    assert_true(r.xbest[0] == 3.0);
    assert_true(r.xbest[2] == 0.5);
    assert_true(fabs(r.xbest[1] - 1.5) < 1e-5 && fabs(r.xbest[3] - 2.0) < 1e-5);

    /* A rotated, ill-conditioned quadratic with its optimum beyond a corner region. */
    problem q = {.n = 4, .c = {3.4, 0.2, 1.5, 2.0}, .scale = {1, 10, 100, 1000}};
    random_rotation(&q, 11);
    run_result a = run(&q, ONES, 0.5, LO, HI, 1, 4000, -1.0); /* run the whole budget */
    for (unsigned s = 2; s <= 10; s++) {
        run_result b = run(&q, ONES, 0.5, LO, HI, s, 4000, -1.0);
        assert_true(fabs(b.fbest - a.fbest) <= 1e-8 * fmax(1.0, a.fbest));
    }
    print_message("rotated quadratic, optimum beyond bounds: seeds 1..10 agree on f* = %.10g\n",
                  a.fbest);
}

/* The search's setting: 4 coefficients in [0.5, 3], init 1, σ0 = 0.5, 60 evaluations (7 whole
 * generations of 8). Every seed gains a factor 3 over the initial point, the median seed 10. */
static void test_search_budget(void **state)
{
    (void)state;
    problem p = {.n = 4, .c = {1.6, 0.8, 2.2, 1.3}, .scale = {1, 2, 3, 4}};
    random_rotation(&p, 5);
    double f0 = fval(&p, ONES), ratio[20];
    for (unsigned s = 1; s <= 20; s++) {
        run_result r = run(&p, ONES, 0.5, LO, HI, s, 60, -1.0);
        assert_true(r.evals == 56);
        ratio[s - 1] = r.fbest / f0;
    }
    qsort(ratio, 20, sizeof ratio[0], cmp_double);
    print_message("search setting (n=4, 56 evaluations): f(best)/f(init) median %.4f, worst %.4f "
                  "over seeds 1..20 (required < 0.1 and < 0.33)\n", 0.5 * (ratio[9] + ratio[10]),
                  ratio[19]);
    assert_true(0.5 * (ratio[9] + ratio[10]) < 0.1);
    assert_true(ratio[19] < 0.33);
}

/* Failed evaluations (NaN) rank last and the search still converges around them. */
static void test_failed_evaluations(void **state)
{
    (void)state;
    problem p = {.n = 4, .c = {2.0, 1.0, 1.0, 1.0}, .scale = {1, 1, 1, 1}, .nan_above = 1};
    identity(&p);
    double x0[4] = {1.0, 2.0, 2.0, 2.0};
    converges("sphere with NaN for x1 > 2.5", &p, x0, 0.5, LO, HI, 1000, 1e-10, 10);
}

/* Constant values: the step size grows (flat fitness), nothing breaks, the best is the first. */
static void test_flat(void **state)
{
    (void)state;
    pcbm_cmaes_opts o;
    pcbm_cmaes_opts_init(&o);
    o.n = 3;
    o.x0 = ONES;
    o.sigma0 = 0.1;
    o.lo = LO;
    o.hi = HI;
    o.seed = 4;
    pcbm_cmaes *es;
    pcbm_error err;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_OK);
    double X[3 * 64], F[64];
    for (int g = 0; g < 5; g++) {
        pcbm_cmaes_ask(es, X);
        for (unsigned k = 0; k < pcbm_cmaes_popsize(es); k++)
            F[k] = 0.5;
        assert_int_equal(pcbm_cmaes_tell(es, F, &err), PCBM_OK);
    }
    assert_true(pcbm_cmaes_sigma(es) > 0.1);
    assert_true(pcbm_cmaes_best(es, NULL) == 0.5);
    pcbm_cmaes_free(es);
}

/* One seed, one sequence of candidates, bit for bit; another seed, another sequence; asking
 * twice without telling gives the same generation. */
static void test_deterministic(void **state)
{
    (void)state;
    problem p = {.n = 4, .c = {1.7, 2.3, 0.9, 1.2}, .scale = {1, 4, 9, 16}};
    random_rotation(&p, 3);
    double X[3][8 * 4], X2[8 * 4], F[8];
    pcbm_cmaes *es[3];
    pcbm_error err;
    for (int e = 0; e < 3; e++) {
        pcbm_cmaes_opts o;
        pcbm_cmaes_opts_init(&o);
        o.n = 4;
        o.x0 = ONES;
        o.sigma0 = 0.5;
        o.lo = LO;
        o.hi = HI;
        o.seed = e == 2 ? 43 : 42;
        assert_int_equal(pcbm_cmaes_create(&o, &es[e], &err), PCBM_OK);
        assert_int_equal(pcbm_cmaes_popsize(es[e]), 8);
    }
    int differs = 0;
    for (int g = 0; g < 30; g++) {
        for (int e = 0; e < 3; e++) {
            pcbm_cmaes_ask(es[e], X[e]);
            if (e == 0) {
                pcbm_cmaes_ask(es[e], X2);
                assert_memory_equal(X[0], X2, sizeof X2);
            }
            for (int k = 0; k < 8; k++)
                F[k] = fval(&p, X[e] + 4 * k);
            assert_int_equal(pcbm_cmaes_tell(es[e], F, &err), PCBM_OK);
        }
        assert_memory_equal(X[0], X[1], sizeof X[0]);
        differs |= memcmp(X[0], X[2], sizeof X[0]) != 0;
    }
    assert_true(differs);
    assert_true(pcbm_cmaes_generation(es[0]) == 30 && pcbm_cmaes_evaluations(es[0]) == 240);
    for (int e = 0; e < 3; e++)
        pcbm_cmaes_free(es[e]);
}

static void test_invalid(void **state)
{
    (void)state;
    pcbm_cmaes_opts o;
    pcbm_cmaes *es = NULL;
    pcbm_error err;
    double x0[2] = {1.0, 3.5}, lo[2] = {0.5, 0.5}, hi[2] = {3.0, 3.0}, bad_hi[2] = {3.0, 0.5};
    pcbm_cmaes_opts_init(&o);
    o.n = 2;
    o.x0 = x0;
    o.sigma0 = 0.5;
    o.lo = lo;
    o.hi = hi;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "coordinate 2 = 3.5 is outside its bounds"));
    x0[1] = 1.0;
    o.hi = bad_hi;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_ERR_USAGE);
    assert_non_null(strstr(err.msg, "must be below the upper bound"));
    o.hi = hi;
    o.sigma0 = 0.0;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_ERR_USAGE);
    o.sigma0 = 0.5;
    o.popsize = 1;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_ERR_USAGE);
    o.popsize = 0;
    o.n = 0;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_ERR_USAGE);
    o.n = 2;
    assert_int_equal(pcbm_cmaes_create(&o, &es, &err), PCBM_OK);
    double F[8] = {0};
    assert_int_equal(pcbm_cmaes_tell(es, F, &err), PCBM_ERR_USAGE);
    assert_int_equal(pcbm_cmaes_popsize(es), 6); /* 4 + ⌊3 ln 2⌋ */
    assert_int_equal(pcbm_cmaes_mu(es), 3);
    pcbm_cmaes_free(es);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sphere),
        cmocka_unit_test(test_rotated_ellipsoid),
        cmocka_unit_test(test_bounded_inside),
        cmocka_unit_test(test_bounded_on_bound),
        cmocka_unit_test(test_search_budget),
        cmocka_unit_test(test_failed_evaluations),
        cmocka_unit_test(test_flat),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

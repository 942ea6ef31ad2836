/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmaes.c — CMA-ES with box constraints by repair and adaptive penalty (see cmaes.h). Follows
 * Hansen's reference implementation cmaes.m (version 3.61) step by step; the comments name the
 * quantities as there. Minimizes.
 */
#include "cmaes.h"

#include <gsl/gsl_eigen.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <gsl/gsl_vector.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pcbm_cmaes {
    unsigned n, lam, mu;
    double *w;                  /* μ recombination weights, sum 1 */
    double mueff, cc, cs, c1, cmu, damps, chiN;
    double sigma, sigma0, tol_x, tol_fun;

    double *xmean, *xold, *pc, *ps, *D; /* D: square roots of the eigenvalues of C */
    gsl_matrix *C, *B, *work;           /* C = B·diag(D²)·Bᵀ */
    gsl_vector *eval;
    gsl_eigen_symmv_workspace *ews;

    double *arz, *ary, *arx, *arxv;     /* λ×n: N(0,I) samples, B·D·z, mean + σ·y, repaired */
    double *fraw, *fsel;                /* λ values as told, and penalized for ranking */
    unsigned *idx;                      /* ranking of fsel */
    int asked;

    /* Bounds (cmaes.m's bnd structure). */
    int bounded;
    double *lo, *hi;
    unsigned char *isb;                 /* coordinate bounded on at least one side */
    double *bw;                         /* penalty weights */
    double *dfithist;                   /* recent fitness spreads */
    unsigned ndfit, maxdfit;
    int iniphase, validfitval;

    double *fhist;                      /* best raw value of recent generations (ring) */
    unsigned nfhist, maxfhist, fhpos;

    double *xbest, fbest;
    unsigned gen;
    uint64_t evals;
    pcbm_cmaes_stop stop;
    gsl_rng *rng;
};

void pcbm_cmaes_opts_init(pcbm_cmaes_opts *o)
{
    memset(o, 0, sizeof *o);
}

const char *pcbm_cmaes_stop_name(pcbm_cmaes_stop s)
{
    switch (s) {
    case PCBM_CMAES_RUNNING: return "running";
    case PCBM_CMAES_STOP_TOLX: return "converged (step size below tol_x)";
    case PCBM_CMAES_STOP_TOLFUN: return "converged (values stopped changing)";
    case PCBM_CMAES_STOP_CONDITION: return "covariance matrix ill-conditioned";
    case PCBM_CMAES_STOP_TOLUPX: return "diverging (step size grew too large)";
    }
    return "unknown";
}

void pcbm_cmaes_free(pcbm_cmaes *es)
{
    if (!es)
        return;
    free(es->w);
    free(es->xmean);
    free(es->xold);
    free(es->pc);
    free(es->ps);
    free(es->D);
    if (es->C) gsl_matrix_free(es->C);
    if (es->B) gsl_matrix_free(es->B);
    if (es->work) gsl_matrix_free(es->work);
    if (es->eval) gsl_vector_free(es->eval);
    if (es->ews) gsl_eigen_symmv_free(es->ews);
    free(es->arz);
    free(es->ary);
    free(es->arx);
    free(es->arxv);
    free(es->fraw);
    free(es->fsel);
    free(es->idx);
    free(es->lo);
    free(es->hi);
    free(es->isb);
    free(es->bw);
    free(es->dfithist);
    free(es->fhist);
    free(es->xbest);
    if (es->rng) gsl_rng_free(es->rng);
    free(es);
}

/* The options make sense: dimension, start point inside its bounds, step size, population. */
static pcbm_status check_opts(const pcbm_cmaes_opts *o, pcbm_error *err)
{
    unsigned n = o->n;
    if (n < 1 || n > PCBM_CMAES_MAX_DIM)
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES needs 1 to %d dimensions, got %u",
                         PCBM_CMAES_MAX_DIM, n);
    if (!o->x0)
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES needs an initial point");
    if (!(o->sigma0 > 0.0) || !isfinite(o->sigma0))
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES needs a positive, finite initial step size, "
                         "got %g", o->sigma0);
    if ((o->lo == NULL) != (o->hi == NULL))
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES bounds need both lower and upper values");
    if (o->popsize == 1 || o->popsize > 100000)
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES population size must be 2 to 100000, got %u",
                         o->popsize);
    for (unsigned i = 0; i < n; i++) {
        if (!isfinite(o->x0[i]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES initial point: coordinate %u is not "
                             "finite", i + 1);
        if (o->lo && (isnan(o->lo[i]) || isnan(o->hi[i]) || !(o->lo[i] < o->hi[i])))
            return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES bounds of coordinate %u: the lower "
                             "bound %g must be below the upper bound %g", i + 1, o->lo[i], o->hi[i]);
        if (o->lo && (o->x0[i] < o->lo[i] || o->x0[i] > o->hi[i]))
            return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES initial point: coordinate %u = %g is "
                             "outside its bounds [%g, %g]", i + 1, o->x0[i], o->lo[i], o->hi[i]);
    }
    return PCBM_OK;
}

/* Every array of the state (and the bounds' when there are bounds); NULL when out of memory. */
static pcbm_cmaes *alloc_state(const pcbm_cmaes_opts *o, unsigned n, unsigned lam, double mureal)
{
    pcbm_cmaes *es = calloc(1, sizeof *es);
    if (!es)
        return NULL;
    es->n = n;
    es->lam = lam;
    es->mu = (unsigned)floor(mureal);
    size_t nl = (size_t)n * lam;
    es->w = calloc(es->mu, sizeof *es->w);
    es->xmean = calloc(n, sizeof(double));
    es->xold = calloc(n, sizeof(double));
    es->pc = calloc(n, sizeof(double));
    es->ps = calloc(n, sizeof(double));
    es->D = calloc(n, sizeof(double));
    es->C = gsl_matrix_calloc(n, n);
    es->B = gsl_matrix_calloc(n, n);
    es->work = gsl_matrix_calloc(n, n);
    es->eval = gsl_vector_calloc(n);
    es->ews = gsl_eigen_symmv_alloc(n);
    es->arz = calloc(nl, sizeof(double));
    es->ary = calloc(nl, sizeof(double));
    es->arx = calloc(nl, sizeof(double));
    es->arxv = calloc(nl, sizeof(double));
    es->fraw = calloc(lam, sizeof(double));
    es->fsel = calloc(lam, sizeof(double));
    es->idx = calloc(lam, sizeof(unsigned));
    es->xbest = calloc(n, sizeof(double));
    es->maxfhist = 10 + (unsigned)ceil(30.0 * n / lam);
    es->fhist = calloc(es->maxfhist, sizeof(double));
    es->rng = gsl_rng_alloc(gsl_rng_mt19937);
    int ok = es->w && es->xmean && es->xold && es->pc && es->ps && es->D && es->C && es->B &&
             es->work && es->eval && es->ews && es->arz && es->ary && es->arx && es->arxv &&
             es->fraw && es->fsel && es->idx && es->xbest && es->fhist && es->rng;
    if (ok && o->lo) {
        es->bounded = 1;
        es->lo = malloc(n * sizeof(double));
        es->hi = malloc(n * sizeof(double));
        es->isb = calloc(n, 1);
        es->bw = calloc(n, sizeof(double));
        es->maxdfit = 20 + (unsigned)ceil(3.0 * n / lam);
        es->dfithist = calloc(es->maxdfit, sizeof(double));
        ok = es->lo && es->hi && es->isb && es->bw && es->dfithist;
        if (ok) {
            memcpy(es->lo, o->lo, n * sizeof(double));
            memcpy(es->hi, o->hi, n * sizeof(double));
            for (unsigned i = 0; i < n; i++)
                es->isb[i] = isfinite(es->lo[i]) || isfinite(es->hi[i]);
            es->dfithist[0] = 1.0; /* cmaes.m: bnd.dfithist = 1 */
            es->ndfit = 1;
            es->iniphase = 1;
        }
    }
    if (!ok) {
        pcbm_cmaes_free(es);
        return NULL;
    }
    return es;
}


pcbm_status pcbm_cmaes_create(const pcbm_cmaes_opts *o, pcbm_cmaes **out, pcbm_error *err)
{
    *out = NULL;
    pcbm_status st = check_opts(o, err);
    if (st != PCBM_OK)
        return st;
    unsigned n = o->n;
    unsigned lam = o->popsize ? o->popsize : 4 + (unsigned)floor(3.0 * log((double)n));
    /* Strategy parameters (cmaes.m): μ = λ/2 as a real number in the weights, then ⌊μ⌋. */
    double mureal = lam / 2.0;
    pcbm_cmaes *es = alloc_state(o, n, lam, mureal);
    if (!es)
        return pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory (CMA-ES, dimension %u, population %u)",
                         n, lam);

    double sw = 0.0, sw2 = 0.0;
    for (unsigned i = 0; i < es->mu; i++) {
        es->w[i] = log(mureal + 0.5) - log((double)(i + 1));
        sw += es->w[i];
    }
    for (unsigned i = 0; i < es->mu; i++) {
        es->w[i] /= sw;
        sw2 += es->w[i] * es->w[i];
    }
    double N = n;
    es->mueff = 1.0 / sw2;
    es->cc = (4.0 + es->mueff / N) / (N + 4.0 + 2.0 * es->mueff / N);
    es->cs = (es->mueff + 2.0) / (N + es->mueff + 5.0);
    es->c1 = 2.0 / ((N + 1.3) * (N + 1.3) + es->mueff);
    es->cmu = fmin(1.0 - es->c1, 2.0 * (es->mueff - 2.0 + 1.0 / es->mueff) /
                                     ((N + 2.0) * (N + 2.0) + es->mueff));
    es->damps = 1.0 + 2.0 * fmax(0.0, sqrt((es->mueff - 1.0) / (N + 1.0)) - 1.0) + es->cs;
    es->chiN = sqrt(N) * (1.0 - 1.0 / (4.0 * N) + 1.0 / (21.0 * N * N));

    es->sigma = es->sigma0 = o->sigma0;
    es->tol_x = o->tol_x > 0 ? o->tol_x : 1e-11 * o->sigma0;
    es->tol_fun = o->tol_fun > 0 ? o->tol_fun : 0.0;
    memcpy(es->xmean, o->x0, n * sizeof(double));
    memcpy(es->xold, o->x0, n * sizeof(double));
    gsl_matrix_set_identity(es->C);
    gsl_matrix_set_identity(es->B);
    for (unsigned i = 0; i < n; i++)
        es->D[i] = 1.0;
    es->fbest = HUGE_VAL;
    memcpy(es->xbest, o->x0, n * sizeof(double));
    /* gsl_rng_set(r, 0) would mean the generator's default seed; offset every seed by one so
     * that 0 is a seed like any other (2^64 − 1 wraps to 0, the default: still deterministic). */
    gsl_rng_set(es->rng, (unsigned long)(o->seed + 1));
    *out = es;
    return PCBM_OK;
}

unsigned pcbm_cmaes_dim(const pcbm_cmaes *es) { return es->n; }
unsigned pcbm_cmaes_popsize(const pcbm_cmaes *es) { return es->lam; }
unsigned pcbm_cmaes_mu(const pcbm_cmaes *es) { return es->mu; }
double pcbm_cmaes_mueff(const pcbm_cmaes *es) { return es->mueff; }
pcbm_cmaes_stop pcbm_cmaes_stopped(const pcbm_cmaes *es) { return es->stop; }
const double *pcbm_cmaes_mean(const pcbm_cmaes *es) { return es->xmean; }
double pcbm_cmaes_sigma(const pcbm_cmaes *es) { return es->sigma; }
unsigned pcbm_cmaes_generation(const pcbm_cmaes *es) { return es->gen; }
uint64_t pcbm_cmaes_evaluations(const pcbm_cmaes *es) { return es->evals; }

double pcbm_cmaes_axis_ratio(const pcbm_cmaes *es)
{
    double mx = es->D[0], mn = es->D[0];
    for (unsigned i = 1; i < es->n; i++) {
        mx = fmax(mx, es->D[i]);
        mn = fmin(mn, es->D[i]);
    }
    return mx / mn;
}

double pcbm_cmaes_best(const pcbm_cmaes *es, const double **x)
{
    if (x)
        *x = es->xbest;
    return es->fbest;
}

static double clip(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void pcbm_cmaes_ask(pcbm_cmaes *es, double *x)
{
    unsigned n = es->n;
    if (!es->asked) {
        for (unsigned k = 0; k < es->lam; k++) {
            double *z = es->arz + (size_t)k * n, *y = es->ary + (size_t)k * n;
            double *xs = es->arx + (size_t)k * n, *xv = es->arxv + (size_t)k * n;
            for (unsigned i = 0; i < n; i++)
                z[i] = gsl_ran_gaussian(es->rng, 1.0);
            for (unsigned i = 0; i < n; i++) { /* y = B·(D∘z) */
                double s = 0.0;
                for (unsigned j = 0; j < n; j++)
                    s += gsl_matrix_get(es->B, i, j) * (es->D[j] * z[j]);
                y[i] = s;
            }
            for (unsigned i = 0; i < n; i++) {
                xs[i] = es->xmean[i] + es->sigma * y[i];
                xv[i] = es->bounded ? clip(xs[i], es->lo[i], es->hi[i]) : xs[i];
            }
        }
        es->asked = 1;
    }
    memcpy(x, es->arxv, (size_t)es->lam * n * sizeof(double));
}

/* ---- helpers of tell ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* cmaes.m's myprctile: the percentile p (0..100) of the m values v (sorted in place). */
static double prctile(double *v, unsigned m, double p)
{
    qsort(v, m, sizeof *v, cmp_double);
    if (p <= 100.0 * (0.5 / m))
        return v[0];
    if (p >= 100.0 * ((m - 0.5) / m))
        return v[m - 1];
    unsigned i = 0; /* largest i with p > 100·(i + 0.5)/m (0-based) */
    while (i + 1 < m && p > 100.0 * (i + 1.5) / m)
        i++;
    double ai = 100.0 * (i + 0.5) / m, aj = 100.0 * (i + 1.5) / m;
    return v[i] + (v[i + 1] - v[i]) * (p - ai) / (aj - ai);
}

static double median_of(const double *v, unsigned m)
{
    double tmp[64];
    double *t = m <= 64 ? tmp : malloc(m * sizeof *t);
    if (!t)
        return v[0];
    memcpy(t, v, m * sizeof *t);
    qsort(t, m, sizeof *t, cmp_double);
    double r = m % 2 ? t[m / 2] : 0.5 * (t[m / 2 - 1] + t[m / 2]);
    if (t != tmp)
        free(t);
    return r;
}

/* cmaes.m's boundary handling: sets fsel = fraw + penalty. */
static void bound_penalty(pcbm_cmaes *es)
{
    unsigned n = es->n, lam = es->lam;
    double mean_diag = 0.0;
    for (unsigned i = 0; i < n; i++)
        mean_diag += gsl_matrix_get(es->C, i, i);
    mean_diag /= n;

    /* The spread of the values (interquartile range over the finite ones), per coordinate and
     * unit of σ²·mean(diag C). */
    double fin[1024], *f = lam <= 1024 ? fin : malloc(lam * sizeof *f);
    unsigned m = 0;
    if (f)
        for (unsigned k = 0; k < lam; k++)
            if (isfinite(es->fraw[k]))
                f[m++] = es->fraw[k];
    double val = NAN;
    if (m >= 1)
        val = (prctile(f, m, 75.0) - prctile(f, m, 25.0)) / n / mean_diag / (es->sigma * es->sigma);
    if (f && f != fin)
        free(f);
    int record = 1;
    if (!isfinite(val)) {
        record = 0; /* cmaes.m takes max(dfithist); keeping the history unchanged is the same */
    } else if (val == 0.0) {
        double mn = HUGE_VAL; /* the smallest positive value of the history */
        for (unsigned i = 0; i < es->ndfit; i++)
            if (es->dfithist[i] > 0 && es->dfithist[i] < mn)
                mn = es->dfithist[i];
        if (isfinite(mn))
            val = mn;
        else
            record = 0;
    } else if (!es->validfitval) {
        es->ndfit = 0; /* the first sensible value replaces the initial 1 */
        es->validfitval = 1;
    }
    if (record) {
        if (es->ndfit < es->maxdfit) {
            es->dfithist[es->ndfit++] = val;
        } else {
            memmove(es->dfithist, es->dfithist + 1, (es->maxdfit - 1) * sizeof(double));
            es->dfithist[es->maxdfit - 1] = val;
        }
    }

    /* Is the mean out of bounds, and where (tx = xmean − its repair)? */
    double tx[PCBM_CMAES_MAX_DIM];
    int any_out = 0;
    for (unsigned i = 0; i < n; i++) {
        tx[i] = es->xmean[i] - clip(es->xmean[i], es->lo[i], es->hi[i]);
        if (tx[i] != 0.0)
            any_out = 1;
    }
    /* Initial weights: set once the mean first leaves the box (and again during the first two
     * generations with sensible values), scaled by diag C relative to its mean. */
    if (es->iniphase && any_out) {
        double med = median_of(es->dfithist, es->ndfit);
        for (unsigned i = 0; i < n; i++)
            if (es->isb[i])
                es->bw[i] = 2.0002 * med / (gsl_matrix_get(es->C, i, i) / mean_diag);
        if (es->validfitval && es->gen > 2)
            es->iniphase = 0;
    }
    /* Increase the weights of coordinates where the mean is well outside and moving away. */
    if (any_out) {
        double fac = pow(1.2, fmin(1.0, es->mueff / 10.0 / n));
        double lim = 3.0 * fmax(1.0, sqrt((double)n) / es->mueff) * es->sigma;
        for (unsigned i = 0; i < n; i++) {
            double mv = es->xmean[i] - es->xold[i];
            int same_sign = (tx[i] > 0 && mv > 0) || (tx[i] < 0 && mv < 0);
            if (tx[i] != 0.0 && fabs(tx[i]) > lim * sqrt(gsl_matrix_get(es->C, i, i)) && same_sign)
                es->bw[i] *= fac;
        }
    }
    /* Penalized values (scale 1: cmaes.m's default flgscale = 0). */
    for (unsigned k = 0; k < lam; k++) {
        const double *xs = es->arx + (size_t)k * n, *xv = es->arxv + (size_t)k * n;
        double pen = 0.0;
        for (unsigned i = 0; i < n; i++) {
            double d = xv[i] - xs[i];
            pen += es->bw[i] * d * d;
        }
        es->fsel[k] = es->fraw[k] + pen;
    }
}

static int cmp_rank(const void *a, const void *b, void *key)
{
    const double *rank_key = key;
    unsigned i = *(const unsigned *)a, j = *(const unsigned *)b;
    double x = rank_key[i], y = rank_key[j];
    if (x < y) return -1;
    if (x > y) return 1;
    return i < j ? -1 : i > j; /* stable: equal values keep the sampling order */
}

/* Eigendecomposition of C (GSL), with the regularization of cmaes.m when it degenerates. */
static void decompose(pcbm_cmaes *es)
{
    unsigned n = es->n;
    for (unsigned i = 0; i < n; i++) /* enforce symmetry from the upper triangle */
        for (unsigned j = i + 1; j < n; j++)
            gsl_matrix_set(es->C, j, i, gsl_matrix_get(es->C, i, j));
    gsl_matrix_memcpy(es->work, es->C);
    gsl_eigen_symmv(es->work, es->eval, es->B, es->ews);
    gsl_eigen_symmv_sort(es->eval, es->B, GSL_EIGEN_SORT_VAL_ASC);
    double mn = gsl_vector_get(es->eval, 0), mx = gsl_vector_get(es->eval, n - 1);
    if (!(mn > 0.0) || mx > 1e14 * mn) {
        if (mx > 1e14 * fmax(mn, 0.0))
            es->stop = PCBM_CMAES_STOP_CONDITION;
        double add = mx / 1e14 - fmin(mn, 0.0);
        for (unsigned i = 0; i < n; i++) {
            gsl_matrix_set(es->C, i, i, gsl_matrix_get(es->C, i, i) + add);
            gsl_vector_set(es->eval, i, gsl_vector_get(es->eval, i) + add);
        }
    }
    for (unsigned i = 0; i < n; i++)
        es->D[i] = sqrt(fmax(gsl_vector_get(es->eval, i), 0.0));
}

pcbm_status pcbm_cmaes_tell(pcbm_cmaes *es, const double *f, pcbm_error *err)
{
    if (!es->asked)
        return pcbm_fail(err, PCBM_ERR_USAGE, "CMA-ES: tell without a preceding ask");
    unsigned n = es->n, lam = es->lam, mu = es->mu;
    es->gen++;
    es->evals += lam;

    double genbest = HUGE_VAL;
    for (unsigned k = 0; k < lam; k++) {
        es->fraw[k] = isnan(f[k]) ? HUGE_VAL : f[k];
        genbest = fmin(genbest, es->fraw[k]);
        if (es->fraw[k] < es->fbest) {
            es->fbest = es->fraw[k];
            memcpy(es->xbest, es->arxv + (size_t)k * n, n * sizeof(double));
        }
    }
    if (es->bounded)
        bound_penalty(es);
    else
        memcpy(es->fsel, es->fraw, lam * sizeof(double));

    for (unsigned k = 0; k < lam; k++)
        es->idx[k] = k;
    qsort_r(es->idx, lam, sizeof *es->idx, cmp_rank, es->fsel);

    /* Recombination: new mean from the μ best unrepaired samples. */
    double zmean[PCBM_CMAES_MAX_DIM], bz[PCBM_CMAES_MAX_DIM];
    memcpy(es->xold, es->xmean, n * sizeof(double));
    for (unsigned i = 0; i < n; i++) {
        double xm = 0.0, zm = 0.0;
        for (unsigned r = 0; r < mu; r++) {
            size_t k = es->idx[r];
            xm += es->w[r] * es->arx[k * n + i];
            zm += es->w[r] * es->arz[k * n + i];
        }
        es->xmean[i] = xm;
        zmean[i] = zm;
    }

    /* Cumulation: p_σ += B·zmean (= C^{-1/2}·(xmean − xold)/σ), then p_c with the h_σ stall. */
    double cs = es->cs, cc = es->cc, psn = 0.0;
    for (unsigned i = 0; i < n; i++) {
        double s = 0.0;
        for (unsigned j = 0; j < n; j++)
            s += gsl_matrix_get(es->B, i, j) * zmean[j];
        bz[i] = s;
    }
    for (unsigned i = 0; i < n; i++) {
        es->ps[i] = (1.0 - cs) * es->ps[i] + sqrt(cs * (2.0 - cs) * es->mueff) * bz[i];
        psn += es->ps[i] * es->ps[i];
    }
    psn = sqrt(psn);
    int hsig = psn / sqrt(1.0 - pow(1.0 - cs, 2.0 * es->gen)) / es->chiN < 1.4 + 2.0 / (n + 1.0);
    for (unsigned i = 0; i < n; i++)
        es->pc[i] = (1.0 - cc) * es->pc[i] +
                    (hsig ? sqrt(cc * (2.0 - cc) * es->mueff) : 0.0) *
                        (es->xmean[i] - es->xold[i]) / es->sigma;

    /* Covariance: rank-one and rank-μ updates (y = (x − xold)/σ are the stored B·D·z). */
    double c1 = es->c1, cmu = es->cmu;
    double keep = 1.0 - c1 - cmu + (hsig ? 0.0 : c1 * cc * (2.0 - cc));
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = i; j < n; j++) {
            double rmu = 0.0;
            for (unsigned r = 0; r < mu; r++) {
                size_t k = es->idx[r];
                rmu += es->w[r] * es->ary[k * n + i] * es->ary[k * n + j];
            }
            double v = keep * gsl_matrix_get(es->C, i, j) + c1 * es->pc[i] * es->pc[j] + cmu * rmu;
            gsl_matrix_set(es->C, i, j, v);
        }
    }

    /* Step size: cumulative step-size adaptation (the change capped at e^1, as cmaes.m). */
    es->sigma *= exp(fmin(1.0, (psn / es->chiN - 1.0) * cs / es->damps));
    /* Flat fitness: the best and the median ranked value are equal → larger steps. */
    if (es->fsel[es->idx[0]] == es->fsel[es->idx[lam / 2]])
        es->sigma *= exp(0.2 + cs / es->damps);

    decompose(es);
    es->asked = 0;

    /* Termination criteria (cmaes.m's TolX, TolUpX, TolFun; ConditionCov in decompose). */
    if (es->stop == PCBM_CMAES_RUNNING) {
        int small = 1, large = 0;
        for (unsigned i = 0; i < n; i++) {
            double sd = sqrt(gsl_matrix_get(es->C, i, i));
            if (es->sigma * fmax(fabs(es->pc[i]), sd) >= es->tol_x)
                small = 0;
            if (es->sigma * sd > 1e3 * es->sigma0)
                large = 1;
        }
        if (small)
            es->stop = PCBM_CMAES_STOP_TOLX;
        else if (large)
            es->stop = PCBM_CMAES_STOP_TOLUPX;
    }
    if (es->nfhist < es->maxfhist)
        es->nfhist++;
    es->fhist[es->fhpos] = genbest;
    es->fhpos = (es->fhpos + 1) % es->maxfhist;
    if (es->stop == PCBM_CMAES_RUNNING && es->tol_fun > 0 && es->gen > 1) {
        double lo = HUGE_VAL, hi = -HUGE_VAL;
        for (unsigned i = 0; i < es->nfhist; i++) {
            lo = fmin(lo, es->fhist[i]);
            hi = fmax(hi, es->fhist[i]);
        }
        for (unsigned k = 0; k < lam; k++) {
            lo = fmin(lo, es->fraw[k]);
            hi = fmax(hi, es->fraw[k]);
        }
        if (isfinite(hi) && hi - lo < es->tol_fun)
            es->stop = PCBM_CMAES_STOP_TOLFUN;
    }
    return PCBM_OK;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * example-train — the worked example of `make demo`: a small multi-task problem, a "pre-trained"
 * MLP and task models fine-tuned from it, written as safetensors model directories that
 * pcbmerge merges and example-eval scores. Deterministic for a --seed (fixed operation order,
 * one process per model, its own SplitMix64 streams): the same bytes on every run, for any --jobs.
 *
 * The problem. Inputs x ∈ R^42: 6 dimensions every task has, and one block of 6 per task
 * domain (zero outside the task's own domain), like tasks that share a vocabulary and each
 * add their own. Every task is a 4-class problem y = argmax_c (V f(x))_c over 10 ridge features
 * f_j(x) = tanh(a_j·x + c_j) of the shared and the domain's dimensions (the shared ones weigh
 * less). The base model is pre-trained on a mixture of 8 auxiliary tasks, two per domain, with
 * features of their own (one head each, dropped afterwards): it knows the domains, not the
 * tasks. Each task model is fine-tuned from the base with Adam: a linear probe first (head
 * only), then body and head together. The first layer's weights of a task's own input block
 * change only for that task; the shared dimensions, the biases and the second layer change for
 * every task: the task vectors conflict partially, merging methods differ, and no merge reaches
 * the fine-tuned models.
 *
 * The model: body.0 (42→64, ReLU), body.1 (64→64, ReLU), head (64→4). Every model directory
 * holds body.* (merged) and head.* (the task's classifier: excluded from the merge with
 * --exclude '^head\.' and read by example-eval from the task's own directory), in F32, plus a
 * config.json. DIR/data/taskI.safetensors holds the task's validation and test sets (val.x,
 * val.y, test.x, test.y; x F32 [n,42], y I32 [n]).
 *
 * Usage: example-train --out DIR [--tasks N] [--seed S] [--jobs J] [--quiet]
 */
#include "format/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DSH 6         /* input dimensions every domain has */
#define DBLK 6        /* input dimensions of one task's domain alone */
#define MAXTASKS 6
#define D (DSH + DBLK * MAXTASKS) /* input dimension: 42 */
#define H 64          /* hidden width */
#define C 4           /* classes */
#define NFEAT 10      /* teacher features per task */
#define NAUX 8        /* pre-training (auxiliary) tasks */
#define BATCH 32

typedef struct cfg {
    const char *out;
    unsigned tasks;
    uint64_t seed;
    int quiet;
    unsigned n_train, n_val, n_test, n_pre;
    unsigned pre_steps, probe_epochs, ft_epochs;
    double pre_lr, probe_lr, ft_lr;
} cfg;

static int errmsg(const char *fmt, ...) PCBM_PRINTF(1, 2);
static int errmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("example-train: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ---- randomness: SplitMix64 streams ------------------------------------------------------- */
typedef struct rng {
    uint64_t s;
} rng;

static rng rng_make(uint64_t seed, uint64_t stream)
{
    rng r = {seed * 0x9e3779b97f4a7c15ull ^ (stream + 1) * 0xd1b54a32d192ed03ull};
    return r;
}

static uint64_t rng_u64(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unif(rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double rng_normal(rng *r)
{
    double u1 = rng_unif(r), u2 = rng_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static unsigned rng_below(rng *r, unsigned n) { return (unsigned)(rng_u64(r) % n); }

/* ---- the problem -------------------------------------------------------------------------- */
/* A task: its input domain (which block of x is active besides the shared one) and its teacher:
 * NFEAT ridge features over the shared and the domain's dimensions, and C label weights. */
typedef struct task_def {
    unsigned domain;
    double a[NFEAT][DSH + DBLK], c[NFEAT];
    double v[C][NFEAT];
} task_def;

static void make_def(task_def *d, unsigned domain, uint64_t seed, uint64_t stream)
{
    rng r = rng_make(seed, stream);
    const double gain = 2.0, shw = 0.3; /* nonlinearity; weight of the shared dimensions */
    d->domain = domain;
    for (unsigned j = 0; j < NFEAT; j++) {
        for (unsigned k = 0; k < DSH + DBLK; k++)
            d->a[j][k] = rng_normal(&r) * gain / sqrt((double)(DSH + DBLK)) * (k < DSH ? shw : 1.0);
        d->c[j] = 0.5 * rng_normal(&r);
    }
    for (unsigned c = 0; c < C; c++)
        for (unsigned j = 0; j < NFEAT; j++)
            d->v[c][j] = rng_normal(&r);
}

/* Downstream task i (0-based) lives on domain i; auxiliary task p on domain p mod ntasks. */
static void make_task(task_def *d, unsigned i, uint64_t seed) { make_def(d, i, seed, 100 + i); }
static void make_aux(task_def *d, unsigned p, unsigned ntasks, uint64_t seed)
{
    make_def(d, p % ntasks, seed, 200 + p);
}

typedef struct dataset {
    unsigned n;
    float *x;   /* n × D */
    int32_t *y; /* n */
} dataset;

static int make_data(dataset *ds, const task_def *d, unsigned n, uint64_t seed, uint64_t stream)
{
    rng r = rng_make(seed, stream);
    ds->n = n;
    ds->x = calloc((size_t)n * D, sizeof(float));
    ds->y = malloc(sizeof(int32_t) * n);
    if (!ds->x || !ds->y)
        return errmsg("out of memory");
    for (unsigned s = 0; s < n; s++) {
        float *x = ds->x + (size_t)s * D;
        double u[DSH + DBLK];
        for (unsigned k = 0; k < DSH + DBLK; k++)
            u[k] = rng_normal(&r);
        for (unsigned k = 0; k < DSH; k++)
            x[k] = (float)u[k];
        for (unsigned k = 0; k < DBLK; k++)
            x[DSH + DBLK * d->domain + k] = (float)u[DSH + k];
        double f[NFEAT], best = -HUGE_VAL;
        for (unsigned j = 0; j < NFEAT; j++) {
            double z = d->c[j];
            for (unsigned k = 0; k < DSH + DBLK; k++)
                z += d->a[j][k] * (double)x[k < DSH ? k : DSH + DBLK * d->domain + (k - DSH)];
            f[j] = tanh(z);
        }
        int32_t y = 0;
        for (unsigned c = 0; c < C; c++) {
            double l = 0.0;
            for (unsigned j = 0; j < NFEAT; j++)
                l += d->v[c][j] * f[j];
            if (l > best) {
                best = l;
                y = (int32_t)c;
            }
        }
        ds->y[s] = y;
    }
    return 0;
}

static void free_data(dataset *ds)
{
    free(ds->x);
    free(ds->y);
}

/* ---- the MLP ------------------------------------------------------------------------------ */
/* Parameters in one array, PyTorch layout ([out][in]) so they are written as they are. */
enum { P_W1 = 0, P_B1 = P_W1 + H * D, P_W2 = P_B1 + H, P_B2 = P_W2 + H * H, P_BODY = P_B2 + H };
enum { P_WH = 0, P_BH = P_WH + C * H, P_HEAD = P_BH + C };

typedef struct adam {
    float *m, *v;
    unsigned n;
    unsigned long t;
} adam;

static int adam_init(adam *a, unsigned n)
{
    a->m = calloc(n, sizeof(float));
    a->v = calloc(n, sizeof(float));
    a->n = n;
    a->t = 0;
    return a->m && a->v ? 0 : errmsg("out of memory");
}

static void adam_free(adam *a)
{
    free(a->m);
    free(a->v);
}

static void adam_step(adam *a, float *p, const float *g, double lr)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    a->t++;
    double c1 = 1.0 - pow(b1, (double)a->t), c2 = 1.0 - pow(b2, (double)a->t);
    float s = (float)(lr * sqrt(c2) / c1);
    for (unsigned i = 0; i < a->n; i++) {
        a->m[i] = (float)b1 * a->m[i] + (float)(1.0 - b1) * g[i];
        a->v[i] = (float)b2 * a->v[i] + (float)(1.0 - b2) * g[i] * g[i];
        p[i] -= s * a->m[i] / (sqrtf(a->v[i]) + (float)eps);
    }
}

typedef struct acts {
    float z1[H], a1[H], z2[H], a2[H], p[C];
    unsigned pred;
} acts;

/* Weights transposed ([in][out]) for the forward pass: the inner loops then run over outputs
 * and vectorize; every z[o] is still b[o] + Σ_i w[o][i]·x[i] added in the order i = 0, 1, ...,
 * so the values are those of example-eval's plain loops, bit for bit. */
typedef struct wt {
    float w1[D][H], w2[H][H], wh[H][C];
} wt;

static void transpose(const float *body, const float *head, wt *t)
{
    for (unsigned o = 0; o < H; o++) {
        for (unsigned i = 0; i < D; i++)
            t->w1[i][o] = body[P_W1 + o * D + i];
        for (unsigned i = 0; i < H; i++)
            t->w2[i][o] = body[P_W2 + o * H + i];
    }
    for (unsigned c = 0; c < C; c++)
        for (unsigned i = 0; i < H; i++)
            t->wh[i][c] = head[P_WH + c * H + i];
}

static void forward(const float *body, const float *head, const wt *t, const float *x, acts *s)
{
    float z1[H], z2[H], zl[C];
    memcpy(z1, body + P_B1, sizeof z1);
    for (unsigned i = 0; i < D; i++)
        for (unsigned o = 0; o < H; o++)
            z1[o] += t->w1[i][o] * x[i];
    for (unsigned o = 0; o < H; o++) {
        s->z1[o] = z1[o];
        s->a1[o] = z1[o] > 0 ? z1[o] : 0;
    }
    memcpy(z2, body + P_B2, sizeof z2);
    for (unsigned i = 0; i < H; i++)
        for (unsigned o = 0; o < H; o++)
            z2[o] += t->w2[i][o] * s->a1[i];
    for (unsigned o = 0; o < H; o++) {
        s->z2[o] = z2[o];
        s->a2[o] = z2[o] > 0 ? z2[o] : 0;
    }
    memcpy(zl, head + P_BH, sizeof zl);
    for (unsigned i = 0; i < H; i++)
        for (unsigned c = 0; c < C; c++)
            zl[c] += t->wh[i][c] * s->a2[i];
    float mx = zl[0];
    for (unsigned c = 1; c < C; c++)
        mx = zl[c] > mx ? zl[c] : mx;
    float sum = 0;
    for (unsigned c = 0; c < C; c++) {
        s->p[c] = expf(zl[c] - mx);
        sum += s->p[c];
    }
    for (unsigned c = 0; c < C; c++)
        s->p[c] /= sum;
    /* The predicted class from the logits (as example-eval: the first maximum). */
    s->pred = 0;
    for (unsigned c = 1; c < C; c++)
        if (zl[c] > zl[s->pred])
            s->pred = c;
}

/* Accumulate the gradients of the cross-entropy of one sample (gbody may be NULL: head only). */
static float backward(const float *body, const float *head, const float *x, int32_t y,
                      const acts *s, float *gbody, float *ghead)
{
    float dl[C], da2[H], dz2[H], dz1[H];
    for (unsigned c = 0; c < C; c++)
        dl[c] = s->p[c] - (c == (unsigned)y ? 1.0f : 0.0f);
    for (unsigned c = 0; c < C; c++) {
        for (unsigned i = 0; i < H; i++)
            ghead[P_WH + c * H + i] += dl[c] * s->a2[i];
        ghead[P_BH + c] += dl[c];
    }
    float loss = -logf(s->p[y] > 1e-30f ? s->p[y] : 1e-30f);
    if (!gbody)
        return loss;
    for (unsigned i = 0; i < H; i++)
        da2[i] = 0;
    for (unsigned c = 0; c < C; c++)
        for (unsigned i = 0; i < H; i++)
            da2[i] += head[P_WH + c * H + i] * dl[c];
    for (unsigned o = 0; o < H; o++)
        dz2[o] = s->z2[o] > 0 ? da2[o] : 0;
    const float *w2 = body + P_W2;
    float da1[H];
    for (unsigned i = 0; i < H; i++)
        da1[i] = 0;
    for (unsigned o = 0; o < H; o++) {
        if (dz2[o] == 0) /* inactive unit: nothing flows back */
            continue;
        for (unsigned i = 0; i < H; i++) {
            gbody[P_W2 + o * H + i] += dz2[o] * s->a1[i];
            da1[i] += w2[o * H + i] * dz2[o];
        }
        gbody[P_B2 + o] += dz2[o];
    }
    for (unsigned o = 0; o < H; o++)
        dz1[o] = s->z1[o] > 0 ? da1[o] : 0;
    for (unsigned o = 0; o < H; o++) {
        if (dz1[o] == 0)
            continue;
        for (unsigned i = 0; i < D; i++)
            gbody[P_W1 + o * D + i] += dz1[o] * x[i];
        gbody[P_B1 + o] += dz1[o];
    }
    return loss;
}

static double accuracy(const float *body, const float *head, const dataset *ds)
{
    unsigned ok = 0;
    acts s;
    static wt t;
    transpose(body, head, &t);
    for (unsigned k = 0; k < ds->n; k++) {
        forward(body, head, &t, ds->x + (size_t)k * D, &s);
        ok += s.pred == (unsigned)ds->y[k];
    }
    return (double)ok / ds->n;
}

static void init_linear(float *w, float *b, unsigned out, unsigned in, rng *r)
{
    double sd = sqrt(2.0 / in); /* He initialization */
    for (unsigned i = 0; i < out * in; i++)
        w[i] = (float)(sd * rng_normal(r));
    for (unsigned i = 0; i < out; i++)
        b[i] = 0.0f;
}

/* One epoch of minibatch Adam over ds in a shuffled order; train_body = 0 freezes the body. */
static double epoch(float *body, float *head, adam *ab, adam *ah, const dataset *ds, double lr,
                    int train_body, rng *r, unsigned *perm, float *gb, float *gh)
{
    for (unsigned i = 0; i < ds->n; i++)
        perm[i] = i;
    for (unsigned i = ds->n - 1; i > 0; i--) {
        unsigned j = rng_below(r, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    double loss = 0;
    acts s;
    static wt t;
    for (unsigned b0 = 0; b0 + BATCH <= ds->n; b0 += BATCH) {
        transpose(body, head, &t);
        memset(gh, 0, sizeof(float) * P_HEAD);
        if (train_body)
            memset(gb, 0, sizeof(float) * P_BODY);
        for (unsigned k = b0; k < b0 + BATCH; k++) {
            const float *x = ds->x + (size_t)perm[k] * D;
            forward(body, head, &t, x, &s);
            loss += backward(body, head, x, ds->y[perm[k]], &s, train_body ? gb : NULL, gh);
        }
        for (unsigned i = 0; i < P_HEAD; i++)
            gh[i] /= BATCH;
        adam_step(ah, head, gh, lr);
        if (train_body) {
            for (unsigned i = 0; i < P_BODY; i++)
                gb[i] /= BATCH;
            adam_step(ab, body, gb, lr);
        }
    }
    return loss / (ds->n / BATCH * BATCH);
}

/* ---- writing ------------------------------------------------------------------------------ */
static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return errmsg("cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return errmsg("cannot create %s: %s", buf, strerror(errno));
    return 0;
}

typedef struct wtensor {
    const char *name;
    pcbm_dtype dtype;
    unsigned ndim;
    uint64_t shape[2];
    const void *data;
} wtensor;

/* One safetensors file through the library's output layout (header, alignment, offsets). */
static int write_st(const char *path, const wtensor *t, size_t n, const char *kind)
{
    pcbm_out_tensor ot[8];
    for (size_t i = 0; i < n; i++) {
        uint64_t numel = t[i].shape[0] * (t[i].ndim > 1 ? t[i].shape[1] : 1);
        ot[i] = (pcbm_out_tensor){.name = t[i].name, .dtype = t[i].dtype, .ndim = t[i].ndim,
                                  .shape = t[i].shape, .nbytes = numel * (pcbm_dtype_bits(t[i].dtype) / 8)};
    }
    const char *const meta[] = {"generator", "example-train", "content", kind};
    pcbm_outlayout plan;
    pcbm_error err;
    memset(&plan, 0, sizeof plan);
    if (pcbm_outlayout_build(ot, n, 0, meta, 4, &plan, &err) != PCBM_OK)
        return errmsg("cannot plan %s: %s", path, err.msg);
    int rc = 0;
    const pcbm_out_file *of = &plan.files[0];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        pcbm_outlayout_free(&plan);
        return errmsg("cannot create %s: %s", path, strerror(errno));
    }
    if (ftruncate(fd, (off_t)of->size) != 0 || pwrite(fd, of->header, of->data_start, 0) != (ssize_t)of->data_start)
        rc = errmsg("cannot write %s: %s", path, strerror(errno));
    for (size_t i = 0; !rc && i < n; i++)
        if (pwrite(fd, t[i].data, ot[i].nbytes, (off_t)ot[i].offset) != (ssize_t)ot[i].nbytes)
            rc = errmsg("cannot write %s: %s", path, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = errmsg("cannot close %s: %s", path, strerror(errno));
    pcbm_outlayout_free(&plan);
    return rc;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        return errmsg("cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int write_model(const char *dir, const float *body, const float *head, const char *kind)
{
    if (mkdir_p(dir))
        return 1;
    wtensor t[6] = {
        {"body.0.weight", PCBM_DT_F32, 2, {H, D}, body + P_W1},
        {"body.0.bias", PCBM_DT_F32, 1, {H, 0}, body + P_B1},
        {"body.1.weight", PCBM_DT_F32, 2, {H, H}, body + P_W2},
        {"body.1.bias", PCBM_DT_F32, 1, {H, 0}, body + P_B2},
        {"head.weight", PCBM_DT_F32, 2, {C, H}, head + P_WH},
        {"head.bias", PCBM_DT_F32, 1, {C, 0}, head + P_BH},
    };
    char path[4096], cfgtext[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (write_st(path, t, 6, kind))
        return 1;
    snprintf(cfgtext, sizeof cfgtext,
             "{\n  \"model_type\": \"pcbm-example-mlp\",\n  \"input_size\": %d,\n"
             "  \"hidden_size\": %d,\n  \"num_classes\": %d,\n  \"activation\": \"relu\",\n"
             "  \"layers\": [\"body.0\", \"body.1\", \"head\"],\n  \"torch_dtype\": \"float32\"\n}\n",
             D, H, C);
    snprintf(path, sizeof path, "%s/config.json", dir);
    return write_text(path, cfgtext);
}

/* ---- the pipeline ------------------------------------------------------------------------- */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int pretrain(const cfg *g, float *body, float *aux_head0)
{
    dataset ds[NAUX];
    float *heads = calloc((size_t)NAUX * P_HEAD, sizeof(float));
    adam ab, ah[NAUX];
    float *gb = malloc(sizeof(float) * P_BODY), *gh = malloc(sizeof(float) * P_HEAD);
    int rc = (!heads || !gb || !gh) ? errmsg("out of memory") : adam_init(&ab, P_BODY);
    rng r = rng_make(g->seed, 2);
    init_linear(body + P_W1, body + P_B1, H, D, &r);
    init_linear(body + P_W2, body + P_B2, H, H, &r);
    for (unsigned a = 0; a < NAUX && !rc; a++) {
        task_def d;
        make_aux(&d, a, g->tasks, g->seed);
        rc = make_data(&ds[a], &d, g->n_pre, g->seed, 300 + a) || adam_init(&ah[a], P_HEAD);
        init_linear(heads + (size_t)a * P_HEAD + P_WH, heads + (size_t)a * P_HEAD + P_BH, C, H, &r);
    }
    /* Minibatches from the auxiliary tasks in turn (the mixture). */
    acts s;
    static wt t;
    for (unsigned step = 0; step < g->pre_steps && !rc; step++) {
        unsigned a = step % NAUX;
        float *head = heads + (size_t)a * P_HEAD;
        transpose(body, head, &t);
        memset(gb, 0, sizeof(float) * P_BODY);
        memset(gh, 0, sizeof(float) * P_HEAD);
        for (unsigned k = 0; k < BATCH; k++) {
            unsigned i = rng_below(&r, ds[a].n);
            const float *x = ds[a].x + (size_t)i * D;
            forward(body, head, &t, x, &s);
            backward(body, head, x, ds[a].y[i], &s, gb, gh);
        }
        for (unsigned i = 0; i < P_BODY; i++)
            gb[i] /= BATCH;
        for (unsigned i = 0; i < P_HEAD; i++)
            gh[i] /= BATCH;
        adam_step(&ab, body, gb, g->pre_lr);
        adam_step(&ah[a], head, gh, g->pre_lr);
    }
    if (!rc) {
        memcpy(aux_head0, heads, sizeof(float) * P_HEAD);
        if (!g->quiet) {
            double acc = 0;
            for (unsigned a = 0; a < NAUX; a++)
                acc += accuracy(body, heads + (size_t)a * P_HEAD, &ds[a]);
            fprintf(stderr, "example-train: pre-trained on %u auxiliary tasks (%u steps): mean "
                    "training accuracy %.1f%%\n", NAUX, g->pre_steps, 100.0 * acc / NAUX);
        }
    }
    for (unsigned a = 0; a < NAUX; a++) {
        free_data(&ds[a]);
        adam_free(&ah[a]);
    }
    adam_free(&ab);
    free(heads);
    free(gb);
    free(gh);
    return rc;
}

/* Task i (1-based): data, linear probe, fine-tuning; writes DIR/taskI and DIR/data/taskI. */
/* Task i's validation accuracies (linear probe, fine-tuned), in memory shared with the parent,
 * which prints them in task order once every model is trained. */
static double (*task_acc)[2];

static int finetune(const cfg *g, const float *base, unsigned i)
{
    task_def d;
    make_task(&d, i - 1, g->seed);
    dataset tr, va, ts;
    memset(&tr, 0, sizeof tr), memset(&va, 0, sizeof va), memset(&ts, 0, sizeof ts);
    int rc = make_data(&tr, &d, g->n_train, g->seed, 1000 + 3 * i) ||
             make_data(&va, &d, g->n_val, g->seed, 1001 + 3 * i) ||
             make_data(&ts, &d, g->n_test, g->seed, 1002 + 3 * i);
    float *body = malloc(sizeof(float) * P_BODY), *head = calloc(P_HEAD, sizeof(float));
    float *gb = malloc(sizeof(float) * P_BODY), *gh = malloc(sizeof(float) * P_HEAD);
    unsigned *perm = malloc(sizeof(unsigned) * g->n_train);
    adam ab, ah;
    memset(&ab, 0, sizeof ab), memset(&ah, 0, sizeof ah);
    if (!rc && (!body || !head || !gb || !gh || !perm))
        rc = errmsg("out of memory");
    if (!rc)
        rc = adam_init(&ab, P_BODY) || adam_init(&ah, P_HEAD);
    if (!rc) {
        rng r = rng_make(g->seed, 2000 + i);
        memcpy(body, base, sizeof(float) * P_BODY);
        init_linear(head + P_WH, head + P_BH, C, H, &r);
        double probe = 0.0;
        for (unsigned e = 0; e < g->probe_epochs; e++)
            epoch(body, head, &ab, &ah, &tr, g->probe_lr, 0, &r, perm, gb, gh);
        probe = accuracy(body, head, &va);
        adam_free(&ah);
        rc = adam_init(&ah, P_HEAD);
        for (unsigned e = 0; e < g->ft_epochs && !rc; e++)
            epoch(body, head, &ab, &ah, &tr, g->ft_lr, 1, &r, perm, gb, gh);
        task_acc[i - 1][0] = probe;
        task_acc[i - 1][1] = accuracy(body, head, &va);
    }
    char dir[4096];
    if (!rc) {
        snprintf(dir, sizeof dir, "%s/task%u", g->out, i);
        rc = write_model(dir, body, head, "task model");
    }
    if (!rc) {
        snprintf(dir, sizeof dir, "%s/data/task%u.safetensors", g->out, i);
        wtensor t[4] = {
            {"val.x", PCBM_DT_F32, 2, {va.n, D}, va.x},
            {"val.y", PCBM_DT_I32, 1, {va.n, 0}, va.y},
            {"test.x", PCBM_DT_F32, 2, {ts.n, D}, ts.x},
            {"test.y", PCBM_DT_I32, 1, {ts.n, 0}, ts.y},
        };
        rc = write_st(dir, t, 4, "data set");
    }
    free_data(&tr), free_data(&va), free_data(&ts);
    adam_free(&ab), adam_free(&ah);
    free(body), free(head), free(gb), free(gh), free(perm);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: example-train --out DIR [--tasks N] [--seed S] [--jobs J] [--quiet]\n"
            "Writes DIR/base, DIR/task1..taskN (safetensors, F32: body.* merged, head.* per task)\n"
            "and DIR/data/taskI.safetensors (validation and test sets). Deterministic. DIR must not\n"
            "exist (or be empty).\n"
            "  --tasks N   downstream tasks, 2..%d (default 4)\n"
            "  --seed S    problem and training seed (default 1)\n"
            "  --jobs J    task models trained at once, one process each (default: online CPUs)\n",
            MAXTASKS);
}

int main(int argc, char **argv)
{
    cfg g = {.tasks = 4, .seed = 1, .n_train = 20000, .n_val = 2000, .n_test = 4000,
             .n_pre = 20000, .pre_steps = 6000, .probe_epochs = 3, .ft_epochs = 8,
             .pre_lr = 2e-3, .probe_lr = 1e-2, .ft_lr = 1e-3};
    unsigned jobs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            g.quiet = 1;
            continue;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--out")) {
            g.out = v;
        } else if (!strcmp(a, "--tasks")) {
            long n = strtol(v, &end, 10);
            if (*end || n < 2 || n > MAXTASKS)
                return errmsg("--tasks must be 2..%d", MAXTASKS), 2;
            g.tasks = (unsigned)n;
        } else if (!strcmp(a, "--seed")) {
            g.seed = strtoull(v, &end, 10);
            if (*end || !*v)
                return errmsg("--seed wants an integer"), 2;
        } else if (!strcmp(a, "--jobs")) {
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 64)
                return errmsg("--jobs must be 1..64"), 2;
            jobs = (unsigned)n;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!g.out) {
        usage(stderr);
        return 2;
    }
    if (!jobs) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = c > 0 ? (unsigned)(c < 64 ? c : 64) : 1;
    }
    struct stat sb;
    if (stat(g.out, &sb) == 0) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/base", g.out);
        if (!S_ISDIR(sb.st_mode) || stat(probe, &sb) == 0)
            return errmsg("%s exists; remove it first (the example is written into a new "
                          "directory)", g.out), 1;
    }
    double t0 = now();
        float *base = malloc(sizeof(float) * P_BODY), *head0 = malloc(sizeof(float) * P_HEAD);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/data", g.out);
    int rc = (!base || !head0) ? errmsg("out of memory") : mkdir_p(dir);
    if (!rc)
        rc = pretrain(&g, base, head0);
    if (!rc) {
        snprintf(dir, sizeof dir, "%s/base", g.out);
        rc = write_model(dir, base, head0, "base model");
    }
    /* Task models are independent: up to `jobs` at once, one process each. */
    task_acc = mmap(NULL, sizeof(double[2]) * MAXTASKS, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (task_acc == MAP_FAILED)
        return errmsg("cannot map shared memory: %s", strerror(errno));
    fflush(NULL);
    unsigned next = 1, running = 0;
    while (!rc && (next <= g.tasks || running)) {
        if (next <= g.tasks && running < jobs) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(finetune(&g, base, next) ? 1 : 0);
            if (pid < 0) {
                rc = errmsg("fork failed: %s", strerror(errno));
                break;
            }
            next++;
            running++;
            continue;
        }
        int st;
        if (wait(&st) < 0) {
            if (errno == EINTR)
                continue;
            rc = 1;
            break;
        }
        running--;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = 1;
    }
    while (running > 0) {
        int st;
        if (wait(&st) < 0 && errno != EINTR)
            break;
        running--;
    }
    for (unsigned i = 0; !rc && !g.quiet && i < g.tasks; i++)
        fprintf(stderr, "example-train: task%u: linear probe on the base %.1f%%, fine-tuned %.1f%% "
                "(validation)\n", i + 1, 100.0 * task_acc[i][0], 100.0 * task_acc[i][1]);
    if (!rc && !g.quiet)
        fprintf(stderr, "example-train: base and %u task models in %s (%.1f s)\n", g.tasks, g.out,
                now() - t0);
    free(base);
    free(head0);
    return rc;
}

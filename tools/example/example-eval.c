/* SPDX-License-Identifier: Apache-2.0 */
/*
 * example-eval — the evaluator of the worked example (see example-train.c): loads a model's
 * body (body.0, body.1) with libpcbmerge's reader, puts each task's own classification head on
 * it (head.* from FAMILY/taskI) and prints the accuracy on the task's validation or test set.
 *
 *   example-eval --family DIR --model MODEL [--split val|test]
 *       one line per task ("task1 0.8125"), then the mean accuracy alone on the last line: the
 *       form `pcbmerge search --eval-cmd` reads (the score is the last line of stdout).
 *   example-eval --family DIR --table [--split test] [LABEL=MODEL ...]
 *       one table (Markdown): the fine-tuned models (each task on its own model: the ceiling),
 *       the base (the floor), then every LABEL=MODEL given; accuracy in %, per task and mean.
 *
 * Tensors are read as the library describes them (pcbm_model_open / pcbm_model_tensor: file,
 * offset, dtype, shape) with pread, and decoded from F32, BF16 or F16.
 */
#include "pcbmerge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXTASKS 64
#define MAXROWS 32

static int errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int errmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("example-eval: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ---- reading tensors with the library ----------------------------------------------------- */

typedef struct mat {
    unsigned rows, cols; /* cols = 1 for vectors */
    float *v;
} mat;

static int read_exact(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Tensor `name` of m as floats (F32, BF16 or F16); rows × cols must match when given (0 = any). */
static int load(const pcbm_model *m, const char *name, unsigned rows, unsigned cols, mat *out)
{
    long i = pcbm_model_find(m, name);
    if (i < 0)
        return errmsg("%s has no tensor %s", pcbm_model_path(m), name);
    pcbm_tensor_info ti;
    if (pcbm_model_tensor(m, (size_t)i, &ti) != PCBM_OK)
        return errmsg("%s: cannot describe %s", pcbm_model_path(m), name);
    if (ti.ndim < 1 || ti.ndim > 2)
        return errmsg("%s: %s has %u dimensions (1 or 2 expected)", pcbm_model_path(m), name, ti.ndim);
    unsigned r = (unsigned)ti.shape[0], c = ti.ndim == 2 ? (unsigned)ti.shape[1] : 1;
    if ((rows && r != rows) || (cols && c != cols))
        return errmsg("%s: %s is %ux%u, expected %ux%u", pcbm_model_path(m), name, r, c, rows, cols);
    size_t n = (size_t)r * c;
    unsigned esize = pcbm_dtype_bits(ti.dtype) / 8;
    if (ti.dtype != PCBM_DT_F32 && ti.dtype != PCBM_DT_BF16 && ti.dtype != PCBM_DT_F16 &&
        ti.dtype != PCBM_DT_I32)
        return errmsg("%s: %s is %s (F32, BF16, F16 or I32 expected)", pcbm_model_path(m), name,
                      pcbm_dtype_name(ti.dtype));
    void *raw = malloc(n * esize);
    out->v = malloc(n * sizeof(float));
    out->rows = r;
    out->cols = c;
    if (!raw || !out->v) {
        free(raw);
        return errmsg("out of memory");
    }
    int fd = open(ti.file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read_exact(fd, raw, n * esize, ti.offset) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        free(raw);
        return errmsg("cannot read %s from %s: %s", name, ti.file, strerror(e));
    }
    close(fd);
    for (size_t k = 0; k < n; k++) {
        if (ti.dtype == PCBM_DT_F32) {
            memcpy(&out->v[k], (char *)raw + 4 * k, 4);
        } else if (ti.dtype == PCBM_DT_I32) {
            int32_t y;
            memcpy(&y, (char *)raw + 4 * k, 4);
            out->v[k] = (float)y;
        } else {
            uint16_t h;
            memcpy(&h, (char *)raw + 2 * k, 2);
            out->v[k] = ti.dtype == PCBM_DT_BF16 ? pcbm_bf16_to_f32(h) : pcbm_f16_to_f32(h);
        }
    }
    free(raw);
    return 0;
}

static pcbm_model *open_model(const char *path)
{
    pcbm_model *m = NULL;
    pcbm_error err;
    if (pcbm_model_open(path, &m, &err) != PCBM_OK) {
        errmsg("%s", err.msg);
        return NULL;
    }
    return m;
}

/* ---- the network -------------------------------------------------------------------------- */

typedef struct body {
    mat w1, b1, w2, b2; /* [H][D], [H], [H][H], [H] */
} body;

typedef struct head {
    mat w, b; /* [C][H], [C] */
} head;

static void free_mat(mat *m)
{
    free(m->v);
    m->v = NULL;
}

static int load_body(const char *path, body *b)
{
    pcbm_model *m = open_model(path);
    if (!m)
        return 1;
    memset(b, 0, sizeof *b);
    int rc = load(m, "body.0.weight", 0, 0, &b->w1) ||
             load(m, "body.0.bias", b->w1.rows, 1, &b->b1) ||
             load(m, "body.1.weight", 0, b->w1.rows, &b->w2) ||
             load(m, "body.1.bias", b->w2.rows, 1, &b->b2);
    pcbm_model_close(m);
    return rc;
}

static void free_body(body *b)
{
    free_mat(&b->w1), free_mat(&b->b1), free_mat(&b->w2), free_mat(&b->b2);
}

typedef struct task {
    head h;
    mat x, y; /* the split: x [n][D], y [n] */
} task;

static int load_task(const char *family, unsigned i, const char *split, unsigned hidden, task *t)
{
    char path[4096], name[64];
    memset(t, 0, sizeof *t);
    snprintf(path, sizeof path, "%s/task%u", family, i);
    pcbm_model *m = open_model(path);
    if (!m)
        return 1;
    int rc = load(m, "head.weight", 0, hidden, &t->h.w) || load(m, "head.bias", t->h.w.rows, 1, &t->h.b);
    pcbm_model_close(m);
    if (rc)
        return 1;
    snprintf(path, sizeof path, "%s/data/task%u.safetensors", family, i);
    if (!(m = open_model(path)))
        return 1;
    snprintf(name, sizeof name, "%s.x", split);
    rc = load(m, name, 0, 0, &t->x);
    snprintf(name, sizeof name, "%s.y", split);
    rc = rc || load(m, name, t->x.rows, 1, &t->y);
    pcbm_model_close(m);
    return rc;
}

static void free_task(task *t)
{
    free_mat(&t->h.w), free_mat(&t->h.b), free_mat(&t->x), free_mat(&t->y);
}

/* Accuracy of body + head on the task's split (the same float arithmetic as example-train). */
static double accuracy(const body *b, const task *t)
{
    unsigned D = b->w1.cols, H = b->w1.rows, C = t->h.w.rows, ok = 0;
    float a1[1024], a2[1024];
    if (H > 1024 || t->x.cols != D)
        return -1.0;
    for (unsigned s = 0; s < t->x.rows; s++) {
        const float *x = t->x.v + (size_t)s * D;
        for (unsigned o = 0; o < H; o++) {
            float z = b->b1.v[o];
            for (unsigned i = 0; i < D; i++)
                z += b->w1.v[o * D + i] * x[i];
            a1[o] = z > 0 ? z : 0;
        }
        for (unsigned o = 0; o < H; o++) {
            float z = b->b2.v[o];
            for (unsigned i = 0; i < H; i++)
                z += b->w2.v[o * H + i] * a1[i];
            a2[o] = z > 0 ? z : 0;
        }
        unsigned best = 0;
        float bestz = 0;
        for (unsigned c = 0; c < C; c++) {
            float z = t->h.b.v[c];
            for (unsigned i = 0; i < H; i++)
                z += t->h.w.v[c * H + i] * a2[i];
            if (c == 0 || z > bestz) {
                bestz = z;
                best = c;
            }
        }
        ok += (float)best == t->y.v[s];
    }
    return (double)ok / t->x.rows;
}

/* "| label   |" padded to `width` characters (UTF-8 aware: "λ" is one character). */
static void print_label(const char *label, unsigned width)
{
    unsigned chars = 0;
    for (const unsigned char *p = (const unsigned char *)label; *p; p++)
        chars += (*p & 0xC0) != 0x80;
    printf("| %s%*s |", label, chars < width ? (int)(width - chars) : 0, "");
}

static unsigned count_tasks(const char *family)
{
    unsigned n = 0;
    for (;;) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/task%u", family, n + 1);
        if (stat(path, &sb) != 0 || n >= MAXTASKS)
            return n;
        n++;
    }
}

/* Scores of one body (path) on every task, or each task on its own model (own = 1). */
static int score(const char *family, const char *model, int own, task *tasks, unsigned n, double *acc)
{
    body b;
    if (!own && load_body(model, &b))
        return 1;
    for (unsigned i = 0; i < n; i++) {
        if (own) {
            char path[4096];
            snprintf(path, sizeof path, "%s/task%u", family, i + 1);
            if (load_body(path, &b))
                return 1;
        }
        if (b.w1.rows != tasks[i].h.w.cols) {
            free_body(&b);
            return errmsg("%s: hidden width %u does not match the heads (%u)", model, b.w1.rows,
                          tasks[i].h.w.cols);
        }
        acc[i] = accuracy(&b, &tasks[i]);
        if (acc[i] < 0) {
            free_body(&b);
            return errmsg("%s: input width does not match the data", model);
        }
        if (own)
            free_body(&b);
    }
    if (!own)
        free_body(&b);
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: example-eval --family DIR --model MODEL [--split val|test]\n"
          "       example-eval --family DIR --table [--split val|test] [LABEL=MODEL ...]\n"
          "Scores a model's body with each task's own head (FAMILY/taskI/head.*) on the task's\n"
          "validation (default) or test set. The first form prints one line per task and the mean\n"
          "accuracy alone on the last line (for pcbmerge search --eval-cmd); --table prints the\n"
          "fine-tuned models (ceiling), the base (floor) and every LABEL=MODEL, accuracy in %.\n",
          f);
}

int main(int argc, char **argv)
{
    const char *family = NULL, *model = NULL, *split = "val";
    const char *labels[MAXROWS], *models[MAXROWS];
    unsigned nrows = 0;
    int table = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--table")) {
            table = 1;
        } else if ((!strcmp(a, "--family") || !strcmp(a, "--model") || !strcmp(a, "--split")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--family")) family = v;
            else if (!strcmp(a, "--model")) model = v;
            else split = v;
        } else if (a[0] != '-' && strrchr(a, '=') && nrows < MAXROWS) {
            char *eq = strrchr(a, '='); /* the label may hold "=" */
            *eq = 0;
            labels[nrows] = a;
            models[nrows++] = eq + 1;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!family || (!table && !model) || (strcmp(split, "val") && strcmp(split, "test"))) {
        usage(stderr);
        return 2;
    }
    unsigned n = count_tasks(family);
    if (n == 0)
        return errmsg("%s has no task1 directory (make it with example-train)", family);
    task tasks[MAXTASKS];
    unsigned loaded = 0;
    int rc = 0;
    for (unsigned i = 0; i < n && !rc; i++, loaded++)
        rc = load_task(family, i + 1, split, 0, &tasks[i]);
    double acc[MAXTASKS];
    if (!rc && !table) {
        rc = score(family, model, 0, tasks, n, acc);
        if (!rc) {
            double mean = 0;
            for (unsigned i = 0; i < n; i++) {
                printf("task%u %.4f\n", i + 1, acc[i]);
                mean += acc[i];
            }
            printf("%.6f\n", mean / n);
        }
    } else if (!rc) {
        char base[4096];
        snprintf(base, sizeof base, "%s/base", family);
        print_label("model", 34);
        for (unsigned i = 0; i < n; i++)
            printf(" task%-2u|", i + 1);
        printf("  mean |\n|%s|", "------------------------------------");
        for (unsigned i = 0; i < n; i++)
            printf("-------|");
        printf("-------|\n");
        for (unsigned r = 0; r < nrows + 2 && !rc; r++) {
            const char *label = r == 0 ? "fine-tuned, own task (ceiling)"
                              : r == 1 ? "base (floor)" : labels[r - 2];
            rc = score(family, r == 1 ? base : r == 0 ? NULL : models[r - 2], r == 0, tasks, n, acc);
            if (rc)
                break;
            double mean = 0;
            print_label(label, 34);
            for (unsigned i = 0; i < n; i++) {
                printf(" %5.1f |", 100.0 * acc[i]);
                mean += acc[i];
            }
            printf(" %5.1f |\n", 100.0 * mean / n);
        }
    }
    for (unsigned i = 0; i < loaded; i++)
        free_task(&tasks[i]);
    return rc;
}

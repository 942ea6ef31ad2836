/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pcbm-gen — deterministic generator of synthetic Llama-shaped model families (a base model and N
 * fine-tuned task models) for tests and benchmarks. Every element is a pure function of
 * (seed, model, tensor name, element index), so families are reproducible, task i does not depend
 * on how many tasks are generated, and models are streamed to disk tensor by tensor in chunks
 * (memory stays a few MiB at any size).
 *
 * Values: base ~ N(0, s_t) with a per-tensor scale s_t spread over two orders of magnitude
 * (0.002 .. 0.2; norm weights 1 ± 0.02); task deltas are a heavy-tailed Laplace mixture of about
 * delta-scale × s_t, mixing a component shared by all tasks with one of their own, then rounded
 * to the dtype (so task vectors are differences of dtype values, with realistic ties and zeros).
 */
#include "format/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GEN_CHUNK (1u << 18)          /* elements generated and written per pwrite */
#define GEN_MAX_TENSORS 4096
#define STREAM_BASE 0x0ba5eull
#define STREAM_SHARED 0x5a4edull
#define STREAM_TASK 0x7a5c0000ull      /* + task index */
#define STREAM_PARAM 0x9a4a0000ull     /* per-tensor parameters, + task index */

/* ---------------------------------------------------------------------------------------------
 * Counter-based randomness: the SplitMix64 finalizer over (key, element, word). Deliberately not
 * src/kernels/rng.c's DARE generator: generated families must stay the same when that changes,
 * and one mix per word (rng.c re-derives its stream key on every call) keeps generation fast.
 * ------------------------------------------------------------------------------------------- */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return mix64(h);
}

static uint64_t key_of(uint64_t seed, uint64_t stream, const char *name)
{
    return mix64(mix64(seed ^ 0x5eedull) ^ mix64(stream + 0x1234567ull) ^ hash_str(name));
}

/* The w-th 64-bit word of element j under key k. */
static uint64_t word(uint64_t k, uint64_t j, unsigned w)
{
    return mix64(k + (j * 4 + w + 1) * 0x9e3779b97f4a7c15ull);
}

/* Uniform in (0, 1), never 0 or 1. */
static double unif(uint64_t x) { return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double normal(uint64_t k, uint64_t j)
{
    double u1 = unif(word(k, j, 0)), u2 = unif(word(k, j, 1));
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Heavy-tailed, unit-variance-ish: 93% Laplace(b = 1/√2), 7% Laplace(b = 4/√2). */
static double laplace_mix(uint64_t k, uint64_t j)
{
    uint64_t a = word(k, j, 2);
    double b = (a >> 57) < 9 ? 4.0 * 0.7071067811865476 : 0.7071067811865476; /* 9/128 ≈ 7% */
    double mag = -log(unif(word(k, j, 3))) * b;
    return (a & 1) ? -mag : mag;
}

/* ---------------------------------------------------------------------------------------------
 * Model layout
 * ------------------------------------------------------------------------------------------- */
typedef struct arch {
    const char *name;
    uint64_t vocab, hidden, inter, layers, heads, kv_heads, max_pos;
} arch;

typedef struct gen_tensor {
    char name[96];
    pcbm_dtype dtype;        /* output dtype, or I64 for position ids */
    unsigned ndim;
    uint64_t shape[2];
    uint64_t numel;
    int is_norm;
    int is_ids;
} gen_tensor;

typedef struct gen_opts {
    const char *out;
    unsigned tasks;
    pcbm_dtype dtype;
    arch a;
    uint64_t seed;
    uint64_t shard_bytes;
    double delta_scale;
    unsigned identical_task;  /* 0 = none */
    const char *nonfinite;
    int extra_task_tensor;
    int quiet;
    int dry_run;
    unsigned jobs;            /* models generated at once (processes) */
} gen_opts;

static uint64_t arch_params(const arch *a)
{
    uint64_t h = a->hidden, kv = h / a->heads * a->kv_heads;
    uint64_t layer = 2 * h * h + 2 * kv * h + 3 * h * a->inter + 2 * h;
    return 2 * a->vocab * h + a->layers * layer + h;
}

static arch preset(const char *name)
{
    arch a = {0};
    a.name = name;
    if (!strcmp(name, "tiny")) {            /* ~100K */
        a = (arch){name, 512, 48, 128, 2, 4, 2, 64};
    } else if (!strcmp(name, "small")) {    /* ~5.0M */
        a = (arch){name, 4096, 256, 688, 4, 8, 4, 256};
    } else if (!strcmp(name, "llama-mini")) { /* ~31M */
        a = (arch){name, 8192, 512, 1376, 8, 8, 4, 512};
    }
    return a;
}

/* Custom size: hidden a multiple of 16 (64 from 1024 on), about hidden/64 layers (× 3/4 past 2),
 * head size 64 (one head below), vocab 16 × hidden (256..32000). */
static arch custom_arch(uint64_t params)
{
    arch best = {0};
    uint64_t best_err = UINT64_MAX;
    for (uint64_t h = 16; h <= 16384; h += h < 1024 ? 16 : 64) {
        arch a = {"custom", 0, h, (h * 8 / 3 + 15) / 16 * 16, PCBM_MAX(h / 64, 1), PCBM_MAX(h / 64, 1), 0, 256};
        a.vocab = PCBM_MIN(PCBM_MAX(h * 16, 256), 32000);
        a.kv_heads = a.heads >= 2 ? a.heads / 2 : 1;
        if (a.layers > 2) a.layers = a.layers * 3 / 4;
        uint64_t p = arch_params(&a);
        uint64_t e = p > params ? p - params : params - p;
        if (e < best_err) { best_err = e; best = a; }
        if (p > params) break;
    }
    /* Fine-tune the layer count toward the target. */
    for (;;) {
        arch b = best;
        b.layers = best.layers + 1;
        uint64_t pb = arch_params(&b), pa = arch_params(&best);
        if (pb > params || params - pb >= (params > pa ? params - pa : pa - params)) break;
        best = b;
    }
    /* Then the vocabulary (a multiple of 64, 256..32000) takes up the rest. */
    uint64_t rest = arch_params(&best) - 2 * best.vocab * best.hidden;
    if (params > rest) {
        uint64_t v = (params - rest) / (2 * best.hidden) / 64 * 64;
        best.vocab = PCBM_MIN(PCBM_MAX(v, 256), 32000);
    }
    return best;
}

static size_t layout(const gen_opts *o, int with_extra, gen_tensor *t)
{
    const arch *a = &o->a;
    uint64_t h = a->hidden, kv = h / a->heads * a->kv_heads, in = a->inter;
    size_t n = 0;
#define ADD(nm, d0, d1, norm)                                                       \
    do {                                                                            \
        gen_tensor *x = &t[n++];                                                    \
        memset(x, 0, sizeof *x);                                                    \
        snprintf(x->name, sizeof x->name, "%s", nm);                                \
        x->dtype = o->dtype;                                                        \
        x->ndim = (d1) ? 2 : 1;                                                     \
        x->shape[0] = (d0);                                                         \
        x->shape[1] = (d1);                                                         \
        x->numel = (uint64_t)(d0) * ((d1) ? (uint64_t)(d1) : 1);                    \
        x->is_norm = (norm);                                                        \
    } while (0)
    char nm[96];
    ADD("model.embed_tokens.weight", a->vocab, h, 0);
    for (uint64_t l = 0; l < a->layers; l++) {
#define LAYER(suffix, d0, d1, norm)                                                 \
    snprintf(nm, sizeof nm, "model.layers.%llu.%s", (unsigned long long)l, suffix); \
    ADD(nm, d0, d1, norm)
        LAYER("input_layernorm.weight", h, 0, 1);
        LAYER("mlp.down_proj.weight", h, in, 0);
        LAYER("mlp.gate_proj.weight", in, h, 0);
        LAYER("mlp.up_proj.weight", in, h, 0);
        LAYER("post_attention_layernorm.weight", h, 0, 1);
        LAYER("self_attn.k_proj.weight", kv, h, 0);
        LAYER("self_attn.o_proj.weight", h, h, 0);
        LAYER("self_attn.q_proj.weight", h, h, 0);
        LAYER("self_attn.v_proj.weight", kv, h, 0);
#undef LAYER
    }
    ADD("model.norm.weight", h, 0, 1);
    ADD("lm_head.weight", a->vocab, h, 0);
    ADD("model.rotary_emb.position_ids", 1, a->max_pos, 0);
    t[n - 1].dtype = PCBM_DT_I64;
    t[n - 1].is_ids = 1;
    if (with_extra) ADD("model.extra_task_head.weight", 16, h, 0);
#undef ADD
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------------------------- */
typedef struct tensor_params {
    uint64_t kbase, kshared, kown;
    double scale;      /* base standard deviation */
    double center;     /* 1 for norm weights, else 0 */
    double dscale;     /* delta standard deviation (before heavy tails) */
    double rho;        /* weight of the shared component */
} tensor_params;

static tensor_params params_for(const gen_opts *o, const gen_tensor *t, unsigned task)
{
    tensor_params p;
    uint64_t kp = key_of(o->seed, STREAM_PARAM, t->name);
    p.kbase = key_of(o->seed, STREAM_BASE, t->name);
    p.kshared = key_of(o->seed, STREAM_SHARED, t->name);
    p.kown = key_of(o->seed, STREAM_TASK + task, t->name);
    if (t->is_norm) {
        p.center = 1.0;
        p.scale = 0.02;
        p.dscale = o->delta_scale;
    } else {
        p.center = 0.0;
        p.scale = 0.02 * pow(10.0, 2.0 * unif(word(kp, 0, 0)) - 1.0); /* 0.002 .. 0.2 */
        p.dscale = o->delta_scale * p.scale;
    }
    p.rho = 0.3 + 0.5 * unif(word(kp, 0, 1));                  /* shared-component weight */
    if (task) {
        uint64_t kt = key_of(o->seed, STREAM_PARAM + task, t->name);
        p.dscale *= pow(2.0, 2.0 * unif(word(kt, 0, 0)) - 1.0); /* task magnitude 0.5x .. 2x */
    }
    return p;
}

static float elem_value(const tensor_params *p, uint64_t j, int task)
{
    float base = (float)(p->center + p->scale * normal(p->kbase, j));
    if (!task) return base;
    double d = p->rho * laplace_mix(p->kshared, j) +
               sqrt(1.0 - p->rho * p->rho) * laplace_mix(p->kown, j);
    return (float)((double)base + p->dscale * d);
}

static void encode(pcbm_dtype dt, const float *src, void *dst, size_t n)
{
    if (dt == PCBM_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dt == PCBM_DT_BF16) {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = pcbm_f32_to_bf16(src[i]);
    } else {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = pcbm_f32_to_f16(src[i]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Writing one model
 * ------------------------------------------------------------------------------------------- */
/* Print "pcbm-gen: MESSAGE" on stderr and return rc. */
static int errmsg(int rc, const char *fmt, ...) PCBM_PRINTF(2, 3);
static int errmsg(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pcbm-gen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return rc;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path)
{
    const char *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return errmsg(1, "cannot write %s: %s", path, strerror(w < 0 ? errno : ENOSPC));
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) return errmsg(1, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int write_side_files(const gen_opts *o, const char *dir)
{
    const arch *a = &o->a;
    const char *tdt = o->dtype == PCBM_DT_BF16 ? "bfloat16" : o->dtype == PCBM_DT_F16 ? "float16" : "float32";
    char cfg[2048], tok[512];
    snprintf(cfg, sizeof cfg,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
             "  \"hidden_size\": %llu,\n  \"intermediate_size\": %llu,\n"
             "  \"num_hidden_layers\": %llu,\n  \"num_attention_heads\": %llu,\n"
             "  \"num_key_value_heads\": %llu,\n  \"vocab_size\": %llu,\n"
             "  \"max_position_embeddings\": %llu,\n  \"rms_norm_eps\": 1e-05,\n"
             "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"%s\"\n}\n",
             (unsigned long long)a->hidden, (unsigned long long)a->inter,
             (unsigned long long)a->layers, (unsigned long long)a->heads,
             (unsigned long long)a->kv_heads, (unsigned long long)a->vocab,
             (unsigned long long)a->max_pos, tdt);
    snprintf(tok, sizeof tok,
             "{\n  \"tokenizer_class\": \"LlamaTokenizer\",\n  \"model_max_length\": %llu,\n"
             "  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\"\n}\n",
             (unsigned long long)a->max_pos);
    return write_text(dir, "config.json", cfg) || write_text(dir, "tokenizer_config.json", tok);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return errmsg(1, "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return errmsg(1, "cannot create %s: %s", buf, strerror(errno));
    return 0;
}

/* Write the data of tensor t of model `task` (0 = base) at `off` in fd. */
static int write_tensor(const gen_opts *o, const gen_tensor *t, unsigned task, int fd, uint64_t off,
                        const char *path, float *fbuf, void *ebuf)
{
    if (t->is_ids) {
        int64_t *ids = ebuf;
        for (uint64_t j = 0; j < t->numel; j += GEN_CHUNK) {
            size_t n = (size_t)PCBM_MIN((uint64_t)GEN_CHUNK, t->numel - j);
            for (size_t k = 0; k < n; k++) ids[k] = (int64_t)(j + k); /* little-endian host */
            if (pwrite_all(fd, ids, n * 8, off + j * 8, path)) return 1;
        }
        return 0;
    }
    int is_task = task != 0 && task != o->identical_task;
    tensor_params p = params_for(o, t, is_task ? task : 0);
    unsigned esize = pcbm_dtype_bits(t->dtype) / 8;
    uint64_t nan_at = UINT64_MAX;
    if (task == 1 && o->nonfinite && !strcmp(o->nonfinite, t->name)) nan_at = t->numel / 2;
    for (uint64_t j = 0; j < t->numel; j += GEN_CHUNK) {
        size_t n = (size_t)PCBM_MIN((uint64_t)GEN_CHUNK, t->numel - j);
        for (size_t k = 0; k < n; k++) fbuf[k] = elem_value(&p, j + k, is_task);
        if (nan_at >= j && nan_at < j + n) fbuf[nan_at - j] = NAN;
        encode(t->dtype, fbuf, ebuf, n);
        if (pwrite_all(fd, ebuf, n * esize, off + j * esize, path)) return 1;
    }
    return 0;
}

static int write_model(const gen_opts *o, unsigned task, const char *dir, float *fbuf, void *ebuf)
{
    static gen_tensor t[GEN_MAX_TENSORS];
    static pcbm_out_tensor ot[GEN_MAX_TENSORS];
    size_t n = layout(o, o->extra_task_tensor && task == 1, t);
    for (size_t i = 0; i < n; i++) {
        ot[i] = (pcbm_out_tensor){.name = t[i].name, .dtype = t[i].dtype, .ndim = t[i].ndim,
                                  .shape = t[i].shape, .nbytes = t[i].numel * (pcbm_dtype_bits(t[i].dtype) / 8)};
    }
    static const char *const meta[] = {"generator", "pcbm-gen"};
    pcbm_outlayout plan;
    pcbm_error err;
    memset(&plan, 0, sizeof plan);
    if (pcbm_outlayout_build(ot, n, o->shard_bytes, meta, 2, &plan, &err) != PCBM_OK)
        return errmsg(1, "cannot plan %s: %s", dir, err.msg);
    int rc = mkdir_p(dir);
    for (unsigned f = 0; !rc && f < plan.nfiles; f++) {
        const pcbm_out_file *of = &plan.files[f];
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, of->name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) { rc = errmsg(1, "cannot create %s: %s", path, strerror(errno)); break; }
        if (ftruncate(fd, (off_t)of->size) != 0) rc = errmsg(1, "cannot size %s: %s", path, strerror(errno));
        if (!rc) rc = pwrite_all(fd, of->header, (size_t)of->data_start, 0, path);
        for (size_t i = of->first; !rc && i < of->first + of->count; i++)
            rc = write_tensor(o, &t[i], task, fd, ot[i].offset, path, fbuf, ebuf);
        if (close(fd) != 0 && !rc) rc = errmsg(1, "cannot close %s: %s", path, strerror(errno));
    }
    if (!rc && plan.index_json) rc = write_text(dir, PCBM_INDEX_NAME, plan.index_json);
    if (!rc) rc = write_side_files(o, dir);
    pcbm_outlayout_free(&plan);
    return rc;
}

/* Model m: 0 = base, i = task i. */
static int generate_one(const gen_opts *o, unsigned m)
{
    char dir[4096];
    if (m == 0) snprintf(dir, sizeof dir, "%s/base", o->out);
    else snprintf(dir, sizeof dir, "%s/task%u", o->out, m);
    float *fbuf = malloc(GEN_CHUNK * sizeof(float));
    void *ebuf = malloc(GEN_CHUNK * 8);
    int rc = (!fbuf || !ebuf) ? errmsg(1, "out of memory") : write_model(o, m, dir, fbuf, ebuf);
    free(fbuf);
    free(ebuf);
    return rc;
}

/* Every model, up to o->jobs at once in child processes (each model is independent). */
static int generate_all(const gen_opts *o)
{
    unsigned next = 0, running = 0;
    int rc = 0;
    if (o->jobs <= 1) {
        for (unsigned m = 0; !rc && m <= o->tasks; m++) rc = generate_one(o, m);
        return rc;
    }
    fflush(NULL);
    while (next <= o->tasks || running) {
        if (!rc && next <= o->tasks && running < o->jobs) {
            pid_t pid = fork();
            if (pid == 0) _exit(generate_one(o, next) ? 1 : 0);
            if (pid < 0) { rc = errmsg(1, "fork failed: %s", strerror(errno)); continue; }
            next++;
            running++;
            continue;
        }
        if (!running) break;
        int st;
        if (wait(&st) < 0) { if (errno == EINTR) continue; rc = 1; break; }
        running--;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */
static void usage(FILE *f)
{
    fprintf(f,
            "usage: pcbm-gen --out DIR [--tasks N] [--dtype bf16|f16|f32]\n"
            "                [--preset tiny|small|llama-mini|custom] [--params P] [--seed S]\n"
            "                [--shard-size SIZE] [--single-file] [--delta-scale X]\n"
            "                [--identical-task I] [--nonfinite TENSOR] [--extra-task-tensor]\n"
            "                [--layers N]\n"
            "                [--jobs J] [--dry-run] [--quiet]\n"
            "Writes DIR/base and DIR/task1..taskN (Llama-shaped safetensors model directories).\n"
            "  --tasks N            number of task models (default 3)\n"
            "  --dtype              element type of the float tensors (default bf16)\n"
            "  --preset             tiny ~100K, small ~5M, llama-mini ~31M elements (default tiny);\n"
            "                       custom (implied by --params) sizes layers/hidden to ~P elements\n"
            "  --params P           approximate element count, e.g. 50M, 1.5G (K/M/G = powers of 1000)\n"
            "  --seed S             family seed (default 1); task i depends only on (seed, i)\n"
            "  --shard-size SIZE    shard the models at SIZE bytes of tensor data (default: one file)\n"
            "  --single-file        one model.safetensors per model, whatever --shard-size says\n"
            "  --delta-scale X      task deltas ~ X times the tensor's scale (default 0.01)\n"
            "  --identical-task I   make task I byte-identical to the base\n"
            "  --nonfinite TENSOR   put a NaN in TENSOR of task1\n"
            "  --layers N           N decoder layers instead of the preset's\n"
            "  --extra-task-tensor  add model.extra_task_head.weight to task1 only\n"
            "  --jobs J             models written at once, one process each (default: online CPUs)\n"
            "  --dry-run            print the architecture and element count, write nothing\n");
}

static int parse_count(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0)) return -1;
    double mul = 1;
    if (*end == 'k' || *end == 'K') mul = 1e3, end++;
    else if (*end == 'm' || *end == 'M') mul = 1e6, end++;
    else if (*end == 'g' || *end == 'G') mul = 1e9, end++;
    if (*end) return -1;
    v *= mul;
    if (v > 1e13) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parse argv into o: 0 = go on, 1 = --help printed (exit 0), 2 = usage error (message printed). */
static int parse_args(int argc, char **argv, gen_opts *o)
{
    const char *preset_name = NULL;
    uint64_t layers = 0; /* --layers: the preset's layer count replaced */
    uint64_t params = 0;
    int single = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        long n = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (!strcmp(a, "--single-file")) { single = 1; continue; }
        if (!strcmp(a, "--extra-task-tensor")) { o->extra_task_tensor = 1; continue; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!strcmp(a, "--dry-run")) { o->dry_run = 1; continue; }
        if (strncmp(a, "--", 2) != 0) return errmsg(2, "unexpected argument '%s' (see --help)", a);
        if (!v) return errmsg(2, "unknown option or missing value: %s (see --help)", a);
        i++;
        if (!strcmp(a, "--tasks") || !strcmp(a, "--jobs") || !strcmp(a, "--identical-task") ||
            !strcmp(a, "--layers"))
            n = strtol(v, &end, 10);
        if (!strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "--tasks")) {
            if (*end || n < 0 || n > PCBM_MAX_TASKS) return errmsg(2, "--tasks must be 0..%d", PCBM_MAX_TASKS);
            o->tasks = (unsigned)n;
        } else if (!strcmp(a, "--jobs")) {
            if (*end || n < 1 || n > 256) return errmsg(2, "--jobs must be 1..256");
            o->jobs = (unsigned)n;
        } else if (!strcmp(a, "--identical-task")) {
            if (*end || n < 1 || n > PCBM_MAX_TASKS) return errmsg(2, "--identical-task wants a task number");
            o->identical_task = (unsigned)n;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "bf16")) o->dtype = PCBM_DT_BF16;
            else if (!strcmp(v, "f16")) o->dtype = PCBM_DT_F16;
            else if (!strcmp(v, "f32")) o->dtype = PCBM_DT_F32;
            else return errmsg(2, "--dtype must be bf16, f16 or f32");
        } else if (!strcmp(a, "--preset")) {
            preset_name = v;
        } else if (!strcmp(a, "--params")) {
            if (parse_count(v, &params) || params < 10000) return errmsg(2, "--params wants a count >= 10K like 50M");
        } else if (!strcmp(a, "--seed")) {
            o->seed = strtoull(v, &end, 0);
            if (*end || !*v) return errmsg(2, "--seed wants an integer");
        } else if (!strcmp(a, "--shard-size")) {
            if (pcbm_parse_size(v, &o->shard_bytes)) return errmsg(2, "bad --shard-size '%s'", v);
        } else if (!strcmp(a, "--delta-scale")) {
            o->delta_scale = strtod(v, &end);
            if (*end || !(o->delta_scale >= 0)) return errmsg(2, "bad --delta-scale '%s'", v);
        } else if (!strcmp(a, "--nonfinite")) {
            o->nonfinite = v;
        } else if (!strcmp(a, "--layers")) {
            if (*end || n < 1 || n > 1000) return errmsg(2, "--layers must be 1..1000");
            layers = (uint64_t)n;
        } else {
            return errmsg(2, "unknown option %s (see --help)", a);
        }
    }
    if (!o->out) return errmsg(2, "--out DIR is required (see --help)");
    if (single) o->shard_bytes = 0;
    if (!preset_name) preset_name = params ? "custom" : "tiny";
    if (!strcmp(preset_name, "custom")) {
        if (!params) return errmsg(2, "--preset custom needs --params");
        o->a = custom_arch(params);
    } else {
        if (params) return errmsg(2, "--params goes with --preset custom");
        o->a = preset(preset_name);
        if (!o->a.hidden) return errmsg(2, "unknown preset '%s' (tiny, small, llama-mini, custom)", preset_name);
    }
    if (layers) o->a.layers = layers;
    if (o->a.layers * 9 + 8 > GEN_MAX_TENSORS) return errmsg(2, "too many layers");
    if (o->identical_task > o->tasks) return errmsg(2, "--identical-task %u is beyond --tasks %u", o->identical_task, o->tasks);
    if (o->nonfinite) {
        static gen_tensor t[GEN_MAX_TENSORS];
        size_t nt = layout(o, o->extra_task_tensor, t), k = 0;
        while (k < nt && (strcmp(t[k].name, o->nonfinite) || t[k].is_ids)) k++;
        if (k == nt) return errmsg(2, "--nonfinite: no float tensor named '%s'", o->nonfinite);
        if (o->tasks < 1) return errmsg(2, "--nonfinite needs at least one task");
    }
    return 0;
}

int main(int argc, char **argv)
{
    gen_opts o = {.tasks = 3, .dtype = PCBM_DT_BF16, .seed = 1, .delta_scale = 0.01};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (!o.quiet || o.dry_run)
        fprintf(o.dry_run ? stdout : stderr,
                "pcbm-gen: %s family (%llu elements per model: vocab %llu, hidden %llu, intermediate %llu, "
                "%llu layers), %u tasks, %s, seed %llu -> %s\n",
                o.a.name, (unsigned long long)arch_params(&o.a), (unsigned long long)o.a.vocab,
                (unsigned long long)o.a.hidden, (unsigned long long)o.a.inter,
                (unsigned long long)o.a.layers, o.tasks, pcbm_dtype_name(o.dtype),
                (unsigned long long)o.seed, o.out);
    if (o.dry_run) return 0;
    if (mkdir_p(o.out)) return 1;
    if (!o.jobs) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        o.jobs = c > 0 ? (unsigned)PCBM_MIN(c, 64) : 1;
    }
    return generate_all(&o);
}

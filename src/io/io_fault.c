/* SPDX-License-Identifier: Apache-2.0 */
/*
 * io_fault.c — PCBM_FAULT: a wrapper backend that makes chosen requests fail, for tests, plus the
 * parser of the variable (which also carries the start-up hooks read by io.c).
 *
 * PCBM_FAULT is a comma-separated list of:
 *   OP:KIND:N[:PATHSUBSTR]  OP = read|write, KIND = eio|short|enospc, N >= 1: the Nth request of
 *                           that OP (counted among requests on fds whose /proc/self/fd link
 *                           contains PATHSUBSTR, when given) completes as follows:
 *                             eio    res = -EIO, nothing transferred
 *                             enospc res = -ENOSPC, nothing transferred
 *                             short  read:  only the first len/2 bytes are read and res = len/2,
 *                                           as if the file ended there;
 *                                    write: the first len/2 bytes are written, then res = -ENOSPC.
 *   uring_setup:eperm|enosys  io_uring setup fails with that errno (tests the pread fallback).
 *   odirect:einval            every O_DIRECT attempt of pcbm_open_read/write fails as on a
 *                             filesystem without O_DIRECT (tmpfs before Linux 6.6).
 *   xfer:BYTES                no single read/write the backend issues exceeds BYTES, so that
 *                             short-transfer continuation runs on every request.
 * Example: PCBM_FAULT=read:eio:3:model-00002,write:short:1
 */
#include "io.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Parsing ---------------------------------------------------------------------------- */

static int bad(const char *tok, const char *what, char *why, size_t whylen)
{
    snprintf(why, whylen,
             "PCBM_FAULT: '%s' %s; expected OP:KIND:N[:PATHSUBSTR] (OP read|write, KIND "
             "eio|short|enospc, N >= 1), uring_setup:eperm|enosys, odirect:einval or xfer:BYTES",
             tok, what);
    return -EINVAL;
}

static bool parse_count(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static int parse_hook(const char *tok, pcbm_fault_cfg *cfg, char *why, size_t whylen)
{
    unsigned long v;
    if (!strcmp(tok, "uring_setup:eperm"))
        cfg->uring_setup_errno = EPERM;
    else if (!strcmp(tok, "uring_setup:enosys"))
        cfg->uring_setup_errno = ENOSYS;
    else if (!strcmp(tok, "odirect:einval"))
        cfg->odirect_einval = true;
    else if (!strncmp(tok, "xfer:", 5) && parse_count(tok + 5, &v))
        cfg->max_xfer = v;
    else
        return bad(tok, "is not a known fault", why, whylen);
    return 0;
}

/* "OP:KIND:N[:PATHSUBSTR]" into a rule. */
static int parse_rule(char *tok, pcbm_fault_rule *rule, char *why, size_t whylen)
{
    char copy[512];
    snprintf(copy, sizeof copy, "%s", tok);
    char *kind = strchr(tok, ':');
    char *num = kind ? strchr(kind + 1, ':') : NULL;
    if (!num)
        return bad(copy, "has too few fields", why, whylen);
    *kind++ = '\0';
    *num++ = '\0';
    char *path = strchr(num, ':');
    if (path)
        *path++ = '\0';
    static const char *const kinds[] = {"eio", "short", "enospc"};
    int k = -1;
    for (int i = 0; i < 3; i++)
        k = strcmp(kind, kinds[i]) ? k : i;
    if (strcmp(tok, "read") && strcmp(tok, "write"))
        return bad(copy, "names no operation (read or write)", why, whylen);
    if (k < 0)
        return bad(copy, "names no kind (eio, short or enospc)", why, whylen);
    if (!parse_count(num, &rule->nth))
        return bad(copy, "has no count N >= 1", why, whylen);
    if (path && strlen(path) >= sizeof rule->path)
        return bad(copy, "has a path substring that is too long", why, whylen);
    rule->op = strcmp(tok, "read") ? PCBM_OP_WRITE : PCBM_OP_READ;
    rule->kind = (pcbm_fault_kind)k;
    snprintf(rule->path, sizeof rule->path, "%s", path ? path : "");
    return 0;
}

static int parse_token(char *tok, pcbm_fault_cfg *cfg, char *why, size_t whylen)
{
    if (strncmp(tok, "read:", 5) && strncmp(tok, "write:", 6))
        return parse_hook(tok, cfg, why, whylen);
    if (cfg->nrules == PCBM_FAULT_MAX_RULES)
        return bad(tok, "is one rule too many", why, whylen);
    return parse_rule(tok, &cfg->rules[cfg->nrules++], why, whylen);
}

int pcbm_io_fault_parse(const char *spec, pcbm_fault_cfg *cfg, char *why, size_t whylen)
{
    memset(cfg, 0, sizeof *cfg);
    if (!spec || !*spec)
        return 0;
    char *s = pcbm_strdup(spec);
    if (!s) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save))
        rc = parse_token(tok, cfg, why, whylen);
    free(s);
    return rc;
}

/* ---- The wrapper ------------------------------------------------------------------------ */

typedef struct fd_path {
    int fd;
    dev_t dev;
    ino_t ino;
    char link[PATH_MAX];
} fd_path;

typedef struct shortened {
    pcbm_io_req *r;          /* NULL = free slot */
    size_t len;              /* the caller's len, restored on completion */
} shortened;

typedef struct fault_be {
    pcbm_io io;
    pcbm_io_ops ops;         /* ours, named after the inner backend */
    pcbm_io *inner;
    pcbm_fault_cfg cfg;
    unsigned long seen[PCBM_FAULT_MAX_RULES];  /* matching requests so far, per rule */
    pcbm_io_list injected;   /* failed here, never reached the inner backend */
    shortened shorts[PCBM_FAULT_MAX_RULES];
    fd_path *paths;          /* readlink cache, keyed by fd and the file's identity */
    size_t npaths;
} fault_be;

/* The /proc/self/fd link of fd, read once per (fd, file). "" when unknown. */
static const char *fd_link(fault_be *be, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return "";
    for (size_t i = 0; i < be->npaths; i++)
        if (be->paths[i].fd == fd && be->paths[i].dev == st.st_dev && be->paths[i].ino == st.st_ino)
            return be->paths[i].link;
    fd_path *p = pcbm_realloc(be->paths, (be->npaths + 1) * sizeof *p);
    if (!p)
        return "";
    be->paths = p;
    p = &be->paths[be->npaths++];
    *p = (fd_path){.fd = fd, .dev = st.st_dev, .ino = st.st_ino};
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, p->link, sizeof p->link - 1);
    p->link[n > 0 ? n : 0] = '\0';
    return p->link;
}

/* Count r against every rule it matches; the rule whose turn it is, or NULL. */
static const pcbm_fault_rule *match(fault_be *be, const pcbm_io_req *r)
{
    const pcbm_fault_rule *hit = NULL;
    for (unsigned i = 0; i < be->cfg.nrules; i++) {
        const pcbm_fault_rule *rule = &be->cfg.rules[i];
        if (rule->op != r->op || (rule->path[0] && !strstr(fd_link(be, r->fd), rule->path)))
            continue;
        if (++be->seen[i] == rule->nth && !hit)
            hit = rule;
    }
    return hit;
}

static void inject(fault_be *be, pcbm_io_req *r, int64_t res)
{
    r->res = res;
    pcbm_io_list_push(&be->injected, r);
}

static int queue_short(fault_be *be, pcbm_io_req *r)
{
    if (r->len / 2 == 0) {
        inject(be, r, r->op == PCBM_OP_READ ? 0 : -ENOSPC);
        return 0;
    }
    for (unsigned i = 0; i < PCBM_FAULT_MAX_RULES; i++) {
        if (!be->shorts[i].r) {
            be->shorts[i] = (shortened){.r = r, .len = r->len};
            r->len /= 2;
            return be->inner->ops->queue(be->inner, r);
        }
    }
    return -EINVAL; /* unreachable: one slot per rule */
}

static int fault_queue(pcbm_io *io, pcbm_io_req *r)
{
    fault_be *be = io->priv;
    const pcbm_fault_rule *rule = match(be, r);
    if (!rule)
        return be->inner->ops->queue(be->inner, r);
    if (rule->kind == PCBM_FAULT_SHORT)
        return queue_short(be, r);
    inject(be, r, rule->kind == PCBM_FAULT_EIO ? -EIO : -ENOSPC);
    return 0;
}

static int fault_submit(pcbm_io *io)
{
    fault_be *be = io->priv;
    return be->inner->ops->submit(be->inner);
}

/* Give a shortened request its len back: a read stays short (EOF), a write becomes -ENOSPC. */
static void restore(fault_be *be, pcbm_io_req *r)
{
    for (unsigned i = 0; i < PCBM_FAULT_MAX_RULES; i++) {
        if (be->shorts[i].r == r) {
            r->len = be->shorts[i].len;
            be->shorts[i].r = NULL;
            if (r->op == PCBM_OP_WRITE && r->res >= 0)
                r->res = -ENOSPC;
        }
    }
}

static int fault_reap(pcbm_io *io, pcbm_io_req **out, unsigned max, int wait)
{
    fault_be *be = io->priv;
    unsigned n = pcbm_io_list_take(&be->injected, out, max);
    if (n == max)
        return (int)n;
    int m = be->inner->ops->reap(be->inner, out + n, max - n, n ? 0 : wait);
    if (m < 0)
        return n ? (int)n : m;
    for (int i = 0; i < m; i++)
        restore(be, out[n + (unsigned)i]);
    return (int)n + m;
}

static void fault_wake(pcbm_io *io)
{
    fault_be *be = io->priv;
    be->inner->ops->wake(be->inner);
}

static void fault_destroy(pcbm_io *io)
{
    fault_be *be = io->priv;
    be->inner->ops->destroy(be->inner);
    free(be->paths);
    free(be);
}

int pcbm_io_fault_wrap(pcbm_io *inner, const pcbm_fault_cfg *cfg, pcbm_io **out)
{
    *out = NULL;
    fault_be *be = pcbm_calloc(1, sizeof *be);
    if (!be) {
        inner->ops->destroy(inner);
        return -ENOMEM;
    }
    be->ops = (pcbm_io_ops){
        .name = inner->ops->name,
        .queue = fault_queue,
        .submit = fault_submit,
        .reap = fault_reap,
        .wake = fault_wake,
        .destroy = fault_destroy,
    };
    be->io = (pcbm_io){.ops = &be->ops, .depth = inner->depth, .priv = be};
    be->inner = inner;
    be->cfg = *cfg;
    *out = &be->io;
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * split_rounds.c — statistics rounds of a split merge. A round is one statistics pass of the
 * method (method.h); each part saves its part of the pass's accumulators in `.split/round-R.part-I.zst`,
 * the reduce combines the K parts (in part order; every combine is order-independent anyway)
 * into `.split/round-R.zst`, and later runs load that sum instead of running the pass again.
 * Files are zstd frames with their checksum, written atomically, tagged with the plan's id, the
 * round and the part, and with the size of every region, so a file of another plan, round or
 * method is refused, never silently combined. Also the accumulators' combines (acc.h).
 */
#include "split.h"

#include "../common/zjson.h"
#include "../kernels/mkern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROUND_MAGIC "PCBMRND1"
#define GLOBAL_UNIT 0xffffffffu
#define MAX_ACC 16u

typedef struct round_hdr {
    char magic[8];
    uint32_t round, part;
    uint64_t plan_id;
    uint32_t nacc, pad;
    uint64_t bytes[MAX_ACC];
} round_hdr;

void pcbm_acc_sum_u64(void *dst, const void *src, size_t bytes)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t k = 0; k < bytes / 8; k++)
        d[k] += s[k];
}

void pcbm_acc_sum_i64(void *dst, const void *src, size_t bytes)
{
    int64_t *d = dst;
    const int64_t *s = src;
    for (size_t k = 0; k < bytes / 8; k++)
        d[k] += s[k];
}

void pcbm_acc_max_f32(void *dst, const void *src, size_t bytes)
{
    float *d = dst;
    const float *s = src;
    for (size_t k = 0; k < bytes / 4; k++)
        d[k] = pcbm_k_max1(d[k], s[k]);
}

void pcbm_acc_reduce_threads(const pcbm_acc *acc, unsigned threads)
{
    if (!acc->local)
        return;
    const uint8_t *l = acc->local;
    for (unsigned w = acc->local == acc->data ? 1 : 0; w < threads; w++)
        acc->combine(acc->data, l + (size_t)w * acc->stride, acc->bytes);
}

static void round_path(const pcbm_split *sp, unsigned round, unsigned part, char *buf, size_t len)
{
    if (part == GLOBAL_UNIT)
        snprintf(buf, len, "%s/round-%u.zst", sp->ctl, round);
    else
        snprintf(buf, len, "%s/round-%u.part-%u.zst", sp->ctl, round, part);
}

bool pcbm_split_skip_stats_pass(const pcbm_split *sp)
{
    if (sp->local)
        return false;
    if (sp->mode == PCBM_SPLIT_REDUCE)
        return true;
    char p[4096];
    round_path(sp, sp->round, GLOBAL_UNIT, p, sizeof p);
    if (access(p, F_OK) == 0)
        return true;
    round_path(sp, sp->round, sp->part, p, sizeof p);
    return sp->mode == PCBM_SPLIT_STATS && access(p, F_OK) == 0; /* its part is saved already */
}

static pcbm_status save(const pcbm_split *sp, unsigned part, const pcbm_acc *acc, unsigned nacc,
                        pcbm_error *err)
{
    round_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, ROUND_MAGIC, 8);
    h.round = sp->round;
    h.part = part;
    h.plan_id = sp->plan_id;
    h.nacc = nacc;
    const void *parts[MAX_ACC + 1] = {&h};
    size_t sizes[MAX_ACC + 1] = {sizeof h};
    for (unsigned k = 0; k < nacc; k++) {
        h.bytes[k] = acc[k].bytes;
        parts[k + 1] = acc[k].data;
        sizes[k + 1] = acc[k].bytes;
    }
    char p[4096];
    round_path(sp, sp->round, part, p, sizeof p);
    return pcbm_zblob_write(p, parts, sizes, nacc + 1, "statistics round file", err);
}

/* Read a round file and check it belongs here; *data points at the first region. */
static pcbm_status load(const pcbm_split *sp, unsigned part, const pcbm_acc *acc, unsigned nacc,
                        void **buf, const uint8_t **data, pcbm_error *err)
{
    char p[4096];
    round_path(sp, sp->round, part, p, sizeof p);
    size_t len = 0;
    pcbm_status st = pcbm_zblob_read(p, buf, &len, "statistics round file", err);
    if (st != PCBM_OK)
        return st;
    round_hdr h;
    size_t need = sizeof h;
    for (unsigned k = 0; k < nacc; k++)
        need += acc[k].bytes;
    bool ok = len >= sizeof h;
    if (ok)
        memcpy(&h, *buf, sizeof h);
    ok = ok && memcmp(h.magic, ROUND_MAGIC, 8) == 0 && h.round == sp->round && h.part == part;
    if (ok && h.plan_id != sp->plan_id) {
        free(*buf);
        *buf = NULL;
        return pcbm_fail(err, PCBM_ERR_STATS, "%s belongs to another plan: remove it (and run "
                         "the round again) or plan anew with `force`", p);
    }
    ok = ok && h.nacc == nacc && len == need;
    for (unsigned k = 0; ok && k < nacc; k++)
        ok = h.bytes[k] == acc[k].bytes;
    if (!ok) {
        free(*buf);
        *buf = NULL;
        return pcbm_fail(err, PCBM_ERR_STATS, "%s does not fit round %u of this merge (another "
                         "version or a damaged file): remove it and run the round again", p,
                         sp->round);
    }
    *data = (const uint8_t *)*buf + sizeof h;
    return PCBM_OK;
}

static pcbm_status load_into(const pcbm_split *sp, unsigned part, const pcbm_acc *acc,
                             unsigned nacc, bool combine, pcbm_error *err)
{
    void *buf = NULL;
    const uint8_t *d = NULL;
    pcbm_status st = load(sp, part, acc, nacc, &buf, &d, err);
    if (st != PCBM_OK)
        return st;
    for (unsigned k = 0; k < nacc && st == PCBM_OK; k++) {
        if (combine && acc[k].bytes) {
            void *tmp = pcbm_malloc(acc[k].bytes); /* aligned for the region's type */
            if (!tmp)
                st = pcbm_fail(err, PCBM_ERR_NOMEM, "out of memory combining statistics");
            else {
                memcpy(tmp, d, acc[k].bytes);
                acc[k].combine(acc[k].data, tmp, acc[k].bytes);
                free(tmp);
            }
        } else if (acc[k].bytes) {
            memcpy(acc[k].data, d, acc[k].bytes);
        }
        d += acc[k].bytes;
    }
    free(buf);
    return st;
}

unsigned pcbm_split_missing(const char *ctl, unsigned parts, const char *fmt, char *list,
                            size_t len)
{
    unsigned n = 0;
    size_t used = 0;
    list[0] = '\0';
    for (unsigned u = 0; u < parts; u++) {
        char name[256], p[4096];
        snprintf(name, sizeof name, fmt, u);
        snprintf(p, sizeof p, "%s/%s", ctl, name);
        if (access(p, F_OK) == 0)
            continue;
        if (used + 16 < len)
            used += (size_t)snprintf(list + used, len - used, "%s%u", n ? ", " : "", u);
        n++;
    }
    return n;
}

/* Whether round `round`'s file of `part` is there and whole: its zstd frame and checksum read
 * back, and its header names this plan, round and part. A damaged file is removed, so that the
 * part's next stats run writes it again instead of saying it is saved. */
static bool part_intact(const pcbm_split *sp, unsigned round, unsigned part)
{
    char p[4096];
    round_path(sp, round, part, p, sizeof p);
    if (access(p, F_OK) != 0)
        return false;
    void *buf = NULL;
    size_t len = 0;
    pcbm_error e;
    bool ok = pcbm_zblob_read(p, &buf, &len, "statistics round file", &e) == PCBM_OK &&
              len >= sizeof(round_hdr);
    round_hdr h;
    if (ok)
        memcpy(&h, buf, sizeof h);
    ok = ok && memcmp(h.magic, ROUND_MAGIC, 8) == 0 && h.round == round && h.part == part &&
         h.plan_id == sp->plan_id && h.nacc <= MAX_ACC;
    free(buf);
    if (!ok) {
        pcbm_warn("%s is damaged or not this plan's: removed; this part's round is run again", p);
        unlink(p);
    }
    return ok;
}

bool pcbm_split_part_saved(const pcbm_split *sp, unsigned round, unsigned part)
{
    return part_intact(sp, round, part);
}

pcbm_status pcbm_split_exchange(pcbm_split *sp, const pcbm_acc *acc, unsigned nacc,
                                pcbm_exchange_got *got, pcbm_error *err)
{
    *got = PCBM_EXCHANGE_TOTAL;
    if (sp->local)
        return PCBM_OK;
    if (nacc > MAX_ACC)
        return pcbm_fail(err, PCBM_ERR_INTERNAL, "too many statistics regions (%u)", nacc);
    char gp[4096];
    round_path(sp, sp->round, GLOBAL_UNIT, gp, sizeof gp);
    pcbm_status st;
    if (access(gp, F_OK) == 0) {
        st = load_into(sp, GLOBAL_UNIT, acc, nacc, false, err);
        sp->round++;
        return st;
    }
    if (sp->mode != PCBM_SPLIT_REDUCE) {
        *got = PCBM_EXCHANGE_SAVED;
        if (part_intact(sp, sp->round, sp->part)) /* saved by an earlier run (pass skipped) */
            return PCBM_OK;
        if (sp->before_save && (st = sp->before_save(sp->before_save_arg, err)) != PCBM_OK)
            return st;
        return save(sp, sp->part, acc, nacc, err);
    }
    char list[512];
    char fmt[64];
    snprintf(fmt, sizeof fmt, "round-%u.part-%%u.zst", sp->round); /* round_path's part files */
    unsigned nmiss = pcbm_split_missing(sp->ctl, sp->parts, fmt, list, sizeof list);
    if (nmiss == sp->parts && sp->reduced > 0) {
        *got = PCBM_EXCHANGE_PENDING;
        return PCBM_OK;
    }
    if (nmiss > 0)
        return pcbm_fail(err, PCBM_ERR_STATS, "statistics round %u is missing from part%s %s of "
                         "%u: run the stats phase for %s (the same plan directory and part), then reduce "
                         "again", sp->round, nmiss > 1 ? "s" : "", list, sp->parts,
                         nmiss > 1 ? "them" : "it");
    for (unsigned u = 0; u < sp->parts; u++)
        if ((st = load_into(sp, u, acc, nacc, u > 0, err)) != PCBM_OK)
            return st;
    if ((st = save(sp, GLOBAL_UNIT, acc, nacc, err)) != PCBM_OK)
        return st;
    pcbm_info("reduced statistics round %u of %u parts", sp->round, sp->parts);
    sp->reduced++;
    sp->round++;
    return PCBM_OK;
}

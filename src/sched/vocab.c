/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vocab.c — tensors indexed by token (input embeddings, output heads) whose rows differ between
 * the base and a task model, as when a chat fine-tune appends special tokens. The output keeps
 * the base's vocabulary (mergekit's tokenizer_source: base): row i of every model must then be
 * the base's token i. With both tokenizer.json files this is checked token by token (the task
 * may only have appended tokens after the base's); without them rows are taken by position, with
 * a warning. A task's extra rows take no part. Every other difference of vocabulary (reordered
 * ids, fewer rows, another --tokenizer-source) is gathered by token before the layout sees the
 * tensors (vocab_stage.c); what reaches the check here unaligned (FP8 embeddings, which are not
 * gathered) is refused naming the token.
 */
#include "layout.h"

#include "../format/tokenizer.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const vocab_suffixes[] = {
    "embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight",
    "embed_in.weight", "embed_out.weight", "tok_embeddings.weight", "output.weight",
    "shared.weight",
};

bool pcbm_vocab_indexed(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof vocab_suffixes / sizeof vocab_suffixes[0]; i++) {
        size_t k = strlen(vocab_suffixes[i]);
        if (n >= k && !strcmp(name + n - k, vocab_suffixes[i]) &&
            (n == k || name[n - k - 1] == '.'))
            return true;
    }
    return false;
}

static bool tokenizer_path(const pcbm_model *m, char *buf, size_t len)
{
    struct stat sb;
    if (!m->is_dir || snprintf(buf, len, "%s/tokenizer.json", m->dir) >= (int)len)
        return false;
    return stat(buf, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Printable form of a token (control bytes escaped) for messages. */
static void show(const char *s, size_t n, char *out, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

pcbm_status pcbm_vocab_check_task(const pcbm_model *base, const pcbm_model *task, unsigned m,
                                  uint64_t base_rows, int *how, pcbm_error *err)
{
    char pb[4096], pt[4096];
    if (!tokenizer_path(base, pb, sizeof pb) || !tokenizer_path(task, pt, sizeof pt)) {
        pcbm_warn("task model %u (%s) has more embedding rows than the base and %s has no "
                  "tokenizer.json: rows are matched by position, assuming its tokens were "
                  "appended after the base's", m, task->path,
                  tokenizer_path(base, pb, sizeof pb) ? "it" : "the base");
        *how = PCBM_ROWS_BY_POSITION;
        return PCBM_OK;
    }
    pcbm_vocab vb, vt;
    pcbm_status st = pcbm_vocab_read(pb, &vb, err);
    if (st != PCBM_OK)
        return st;
    if ((st = pcbm_vocab_read(pt, &vt, err)) != PCBM_OK) {
        pcbm_vocab_free(&vb);
        return st;
    }
    uint64_t ids = PCBM_MIN((uint64_t)vb.nids, base_rows);
    for (uint64_t id = 0; id < ids && st == PCBM_OK; id++) {
        size_t n;
        const char *tok = pcbm_vocab_token(&vb, (uint32_t)id, &n);
        if (!tok)
            continue;
        long tid = pcbm_vocab_find(&vt, tok, n);
        if (tid == (long)id)
            continue;
        char shown[128];
        show(tok, n, shown, sizeof shown);
        if (tid < 0)
            st = pcbm_fail(err, PCBM_ERR_MISMATCH,
                           "task model %u (%s) lacks the base's token '%s' (id %llu): a task "
                           "must keep every token of the base's vocabulary at its id, with new "
                           "tokens appended after them, when its embeddings are not gathered by "
                           "token (FP8) — exclude the embeddings (`exclude`) to merge the rest",
                           m, task->path, shown, (unsigned long long)id);
        else
            st = pcbm_fail(err, PCBM_ERR_MISMATCH,
                           "task model %u (%s) gives the base's token '%s' the id %ld, the base "
                           "%llu: reordered vocabularies of embeddings that are not gathered "
                           "by token (FP8) are not aligned — exclude the embeddings (`exclude`) "
                           "to merge the rest", m, task->path, shown, tid, (unsigned long long)id);
    }
    pcbm_vocab_free(&vb);
    pcbm_vocab_free(&vt);
    *how = PCBM_ROWS_BY_TOKEN;
    return st;
}

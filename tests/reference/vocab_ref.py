#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""vocab_ref.py — mergekit's tokenizer_source (mergekit/tokenizer/build.py and embed.py) in NumPy:
the output vocabulary (base, union or one model) and every model's token-indexed tensors permuted
and filled to it, written as an aligned family that any reference merge then merges as it is.

    vocab_ref.py align --source base|union|INDEX --out DIR BASE TASK...

writes DIR/base, DIR/task1.. (float32 tensors; the embeddings permuted and filled, the rest as
they are) and DIR/vocab.json (the output's token of every id, and its rows).

Written from mergekit's source:
  build_tokenizer / build_union_tokenizer: the base's vocabulary (tokens with ids below its
  vocab_size), then the other models' vocabulary tokens it lacks (tokens no model added), then
  every model's added tokens it lacks, each new token taking the next id. mergekit walks
  get_vocab() in the dictionary's order (a fast tokenizer's hash order); here ids ascend, as
  pcbmerge's does. A model's vocab_size is its embedding's rows (config.json's vocab_size).
  permutations: out id -> the model's id of the same token (-1: it lacks it, or its id is past its
  vocab_size).
  PermutedEmbeddings.assign_embedding_sources: a token only one model has takes that model's row,
  none: zero, the base has it: the base's row, else the average of the models that have it; each
  model's row where it has the token, else that default.
The base source keeps the base's rows (mergekit's output has len(vocab) rows: the same when every
row has a token); a row without a token is each model's row at the same position (pcbmerge's rule
for padding rows), filled by the same defaults where a model has fewer rows.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcb_ref import read_model, write_model, encode  # noqa: E402

VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight",
                  "embed_in.weight", "embed_out.weight", "tok_embeddings.weight", "output.weight",
                  "shared.weight")


def is_embed(name):
    return any(name == s or name.endswith("." + s) for s in VOCAB_SUFFIXES)


def tokenizer(d):
    """(vocab: token -> id, added: {token} ) of d/tokenizer.json, or None."""
    p = os.path.join(d, "tokenizer.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        t = json.load(f)
    vocab = dict(t["model"]["vocab"])
    added = set()
    for e in t.get("added_tokens", []):
        vocab[e["content"]] = e["id"]
        added.add(e["content"])
    return vocab, added


def by_id(vocab):
    return sorted(vocab.items(), key=lambda kv: kv[1])


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("align")
    a.add_argument("--source", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("models", nargs="+")
    args = ap.parse_args()
    dirs = args.models
    models = [read_model(d) for d in dirs]
    vals = [{k: np.asarray(t.f32(), np.float32).reshape(t.shape) for k, t in m.items()}
            for m in models]
    names = [k for k, t in models[0].items() if is_embed(k) and len(t.shape) == 2]
    size = [min(models[i][k].shape[0] for k in names if k in models[i]) for i in range(len(dirs))]
    toks = [tokenizer(d) for d in dirs]
    if toks[0] is None:
        sys.exit("the base has no tokenizer.json")
    toks = [t if t is not None else toks[0] for t in toks]  # "Assuming same as base"
    # the output vocabulary
    if args.source == "base":
        out = {tok: i for tok, i in toks[0][0].items() if i < size[0]}
        rows = size[0]
    elif args.source == "union":
        base_vocab = {tok: i for tok, i in toks[0][0].items() if i < size[0]}
        out_vocab, out_added = {}, {}
        for i, (vocab, added) in enumerate(toks):
            for tok, idx in by_id(vocab):
                if idx >= size[i] or tok in added:
                    continue
                out_vocab.setdefault(tok, len(out_vocab))
            for tok, idx in by_id(vocab):
                if tok in added and idx < size[i]:
                    out_added.setdefault(tok, (i, idx))
        out = dict(base_vocab)
        for tok in out_vocab:
            if tok in out_added or tok in out:
                continue
            out[tok] = len(out)
        for tok in out_added:
            if tok not in out:
                out[tok] = len(out)
        rows = len(out)
    else:
        s = int(args.source)
        out = dict(toks[s][0])
        rows = max(out.values()) + 1
    # permutations; a row of the output without a token (the base's padding rows, kept by the
    # base source: pcbmerge's, mergekit drops them) is each model's row at the same position
    perm = []
    untokened = sorted(set(range(rows)) - set(out.values()))
    for i, (vocab, _) in enumerate(toks):
        p = {}
        for tok, new in out.items():
            old = vocab.get(tok, -1)
            p[new] = old if 0 <= old < size[i] else -1
        for r in untokened:
            p[r] = r if r < size[i] else -1
        perm.append(p)
    slots = list(out.values()) + untokened
    os.makedirs(args.out, exist_ok=True)
    aligned = [dict(v) for v in vals]
    for name in names:
        have = [i for i in range(len(dirs)) if name in vals[i]]
        H = vals[0][name].shape[1]
        default = {}
        for new in slots:
            present = [i for i in have if perm[i][new] >= 0]
            if len(present) == 1:
                default[new] = vals[present[0]][name][perm[present[0]][new]]
            elif not present:
                default[new] = np.zeros(H, np.float32)
            elif 0 in present:
                default[new] = vals[0][name][perm[0][new]]
            else:
                acc = np.zeros(H, np.float32)
                for i in present:
                    acc = (acc + vals[i][name][perm[i][new]]).astype(np.float32)
                default[new] = (acc / np.float32(len(present))).astype(np.float32)
        for i in have:
            e = np.zeros((rows, H), np.float32)
            for new in slots:
                e[new] = vals[i][name][perm[i][new]] if perm[i][new] >= 0 else default[new]
            aligned[i][name] = e
    for i, d in enumerate(dirs):
        tag = "base" if i == 0 else "task%d" % i
        write_model(os.path.join(args.out, tag),
                    [(k, "F32", v.shape, encode("F32", v.ravel())) for k, v in aligned[i].items()])
    with open(os.path.join(args.out, "vocab.json"), "w") as f:
        json.dump({"rows": rows, "tokens": {str(i): t for t, i in out.items()}}, f)


if __name__ == "__main__":
    main()

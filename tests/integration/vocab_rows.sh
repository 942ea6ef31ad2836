#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# vocab_rows.sh — a chat fine-tune that appended special tokens (embed_tokens and lm_head with
# more rows than the base's). The output keeps the base's vocabulary: rows are matched by token
# through both tokenizer.json files (by position, with a warning, without them), the task's extra
# rows take no part, and the merge equals the NumPy reference's merge of the family with those
# rows cut off. A reordered vocabulary, or a task with fewer rows, has its rows gathered by token
# (tests/reference/vocab_ref.py, mergekit's tokenizer_source: base; tests/integration/vocab_union.sh
# for the other sources); --exclude of the embeddings merges the rest whatever their shapes.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin

# family DIR VARIANT: DIR/as-is (what the hub has) and DIR/cut (the task's rows cut to the base's).
# VARIANT: appended (task1 adds 2 tokens) | no-tokenizer (the same, task1 without
# tokenizer.json) | reordered (task1 swaps two base tokens) | fewer (task1 has 4 rows less).
family() {
    "$PY" - "$1" "$2" <<'EOF' || fail "cannot generate $1"
import json
import os
import shutil
import sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode
out, variant = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(23)
V, H = 96, 64                       # 90 vocab tokens + 2 added, padded to 96 rows
vocab = {"t%d" % i: i for i in range(90)}
added = [{"id": 90, "content": "<s>", "special": True}, {"id": 91, "content": "</s>", "special": True}]

def tokenizer(vocab, added):
    return {"version": "1.0", "truncation": None, "added_tokens": added,
            "model": {"type": "BPE", "dropout": None, "vocab": vocab, "merges": ["t 1", "t 2"]}}

base = {"model.embed_tokens.weight": rng.normal(0, 0.02, (V, H)), "lm_head.weight": rng.normal(0, 0.02, (V, H)),
        "model.layers.0.mlp.weight": rng.normal(0, 0.02, (H, 2 * H)), "model.norm.weight": 1 + rng.normal(0, 0.02, H)}
base = {k: v.astype(np.float32) for k, v in base.items()}

def save(d, vals, tok):
    write_model(d, [(n, "BF16", v.shape, encode("BF16", v.ravel())) for n, v in vals.items()])
    with open(d + "/config.json", "w") as f:
        json.dump({"model_type": "llama", "vocab_size": int(vals["lm_head.weight"].shape[0]),
                   "torch_dtype": "bfloat16"}, f)
    if tok is not None:
        with open(d + "/tokenizer.json", "w") as f:
            json.dump(tok, f)

for kind in ("as-is", "cut"):
    save("%s/%s/base" % (out, kind), base, tokenizer(vocab, added))
for t in ("task1", "task2"):
    vals = {k: (v + rng.laplace(0, 2e-3, v.shape)).astype(np.float32) for k, v in base.items()}
    tv, ta = dict(vocab), list(added)
    if t == "task1" and variant in ("appended", "no-tokenizer", "reordered"):
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            vals[k] = np.concatenate([vals[k], rng.normal(0, 0.02, (2, H)).astype(np.float32)])
        ta = ta + [{"id": 96, "content": "<|im_start|>", "special": True},
                   {"id": 97, "content": "<|im_end|>", "special": True}]
        if variant == "reordered":
            tv["t5"], tv["t6"] = 6, 5
    if t == "task1" and variant == "fewer":
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            vals[k] = vals[k][:V - 4]
    tok = None if (t == "task1" and variant == "no-tokenizer") else tokenizer(tv, ta)
    save("%s/as-is/%s" % (out, t), vals, tok)
    save("%s/cut/%s" % (out, t), {k: v[:V] if v.shape[0] > V and v.ndim == 2 else v
                                  for k, v in vals.items()}, tok)
EOF
}
export PCBM_ROOT

for v in appended no-tokenizer reordered fewer; do family "$TMP/$v" "$v"; done

# rows_case NAME VARIANT HOW OPTIONS...: merge VARIANT/as-is, compare with the reference's merge of
# VARIANT/cut; merge_report.json says task 1's rows were matched by HOW.
rows_case() {
    local name=$1 fam=$TMP/$2 how=$3 ok=1
    shift 3
    local dir=$TMP/$name cmp=(--max-mismatch 1e-4)
    [[ " $* " == *" task_arithmetic "* ]] && cmp=(--max-ulp 1)
    CASES=$((CASES + 1))
    "$PCBM_BIN" merge --base "$fam/as-is/base" --out "$dir.ours" "$@" \
        "$fam/as-is/task1" "$fam/as-is/task2" >"$dir.log" 2>&1 || ok=0
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --base "$fam/cut/base" --out "$dir.ref" "$@" \
        "$fam/cut/task1" "$fam/cut/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" "${cmp[@]}" \
        --ref-report "$dir.ref/ref_report.json" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" - "$dir.ours" "$how" <<'EOF' >>"$dir.log" 2>&1 || ok=0; }
import json, sys
rep = json.load(open(sys.argv[1] + "/merge_report.json"))
got = sorted((a["tensor"], a["task"], a["rows_matched_by"]) for a in rep["aligned"])
want = [("lm_head.weight", 1, sys.argv[2]), ("model.embed_tokens.weight", 1, sys.argv[2])]
assert got == want, got
cfg = json.load(open(sys.argv[1] + "/config.json"))
assert cfg["vocab_size"] == 96, cfg
tok = json.load(open(sys.argv[1] + "/tokenizer.json"))
assert len(tok["added_tokens"]) == 2, "the base's tokenizer is the output's"
EOF
    if [ $ok = 1 ] && [ "$how" = position ] && ! grep -q "rows are matched by position" "$dir.log"; then
        echo "    no warning about matching by position" >>"$dir.log"
        ok=0
    fi
    if [ $ok = 1 ]; then
        echo "ok   $name: $(grep -E '^float elements' "$dir.log" | sed 's/^float elements //')"
    else
        echo "FAIL $name"
        tail -n 12 "$dir.log" | sed 's/^/    /'
        FAILED+=("$name")
    fi
}

for m in pcb ties task_arithmetic; do
    opts=(--method "$m")
    [ "$m" = task_arithmetic ] || opts+=(--density 0.3)
    rows_case "appended-$m" appended token "${opts[@]}"
done
rows_case no-tokenizer-by-position no-tokenizer position --method pcb --density 0.3

m() { local fam=$TMP/$1; shift; "$PCBM_BIN" merge --base "$fam/as-is/base" "$@" "$fam/as-is/task1" "$fam/as-is/task2"; }
# gathered_case NAME VARIANT OPTIONS...: rows gathered by token (the base's vocabulary): equal to
# the reference's merge of the family vocab_ref.py aligns (float32 rows; the output is BF16).
gathered_case() {
    local name=$1 variant=$2 fam=$TMP/$2 ok=1
    shift 2
    local dir=$TMP/$name
    CASES=$((CASES + 1))
    m "$variant" --out "$dir.ours" "$@" >"$dir.log" 2>&1 || ok=0
    [ $ok = 1 ] && { "$PY" "$PCBM_ROOT/tests/reference/vocab_ref.py" align --source base \
        --out "$dir.fam" "$fam/as-is/base" "$fam/as-is/task1" "$fam/as-is/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --base "$dir.fam/base" --out "$dir.ref" --dtype bf16 "$@" \
        "$dir.fam/task1" "$dir.fam/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --max-mismatch 1e-5 >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && [ ! -e "$dir.ours.vocab-staging" ] || ok=0
    if [ $ok = 1 ]; then
        echo "ok   $name: $(grep -E '^float elements' "$dir.log" | sed 's/^float elements //')"
    else
        echo "FAIL $name"
        tail -n 12 "$dir.log" | sed 's/^/    /'
        FAILED+=("$name")
    fi
}
gathered_case reordered-gathered reordered --method ties --density 0.3
gathered_case fewer-rows-gathered fewer --method pcb --density 0.3
excluded_ok() {
    m reordered --out "$TMP/o-ex" --exclude 'embed_tokens|lm_head' >/dev/null 2>&1 &&
        m fewer --out "$TMP/o-ex2" --exclude 'embed_tokens|lm_head' >/dev/null 2>&1
}
check exclude-embeddings-merges-the-rest excluded_ok
dry_ok() {
    m appended --out "$TMP/o-dry" --dry-run 2>&1 |
        grep -q "aligned: model.embed_tokens.weight: task 1 has more rows (appended tokens)"
}
check dry-run-says-aligned dry_ok
finish

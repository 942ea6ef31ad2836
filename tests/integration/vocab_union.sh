#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# vocab_union.sh — --tokenizer-source base|union|MODEL (mergekit's tokenizer_source). A generated
# F32 family with tokenizer files: task 1 appends 2 special tokens and a token task 2 also has,
# task 2 adds another token, replaces one base token by its own and swaps two. Merged with union,
# base and a model (by path and by index) for task_arithmetic, ties, linear and pcb, the output
# equals the NumPy reference's merge of the family tests/reference/vocab_ref.py aligns (mergekit's
# build.py / embed.py: union order, permutations, default rows), and the tokenizer files and
# config.json are the chosen source's. Also: the same bytes for any --threads/--mem/--io/
# --block-size, for a split merge and for a killed and resumed merge; the staged rows are removed
# once OUT is published; refusals (unknown model, union without tokenizer.json, recipe keys);
# recipes' tokenizer_source and tokenizer.source; --dry-run tells the staging.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin
export PCBM_ROOT

VREF=$PCBM_ROOT/tests/reference/vocab_ref.py
F=$TMP/fam
"$PY" - "$F" <<'EOF' || fail "cannot generate the family"
import json, os, sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode
out = sys.argv[1]
rng = np.random.default_rng(31)
NV, H = 90, 64                       # 90 vocabulary tokens, then 2 added tokens
R = NV + 2
vocab = {"t%d" % i: i for i in range(NV)}

def added_tok(i, s):
    return {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}

added = [added_tok(NV, "<s>"), added_tok(NV + 1, "</s>")]

def tokenizer(vocab, added):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "vocab": vocab,
                      "merges": ["t 1", "t 2"]}}

def tok_config(added):
    return {"bos_token": "<s>", "eos_token": "</s>",
            "added_tokens_decoder": {str(e["id"]): {k: v for k, v in e.items() if k != "id"}
                                     for e in added},
            "tokenizer_class": "PreTrainedTokenizerFast"}

base = {"model.embed_tokens.weight": rng.normal(0, 0.02, (R, H)),
        "model.layers.0.mlp.weight": rng.normal(0, 0.02, (H, 2 * H)),
        "model.layers.1.mlp.weight": rng.normal(0, 0.02, (H, 2 * H)),
        "model.norm.weight": 1 + rng.normal(0, 0.02, H),
        "lm_head.weight": rng.normal(0, 0.02, (R, H))}
base = {k: v.astype(np.float32) for k, v in base.items()}

def save(d, vals, tok, cfg, special):
    os.makedirs(d, exist_ok=True)
    write_model(d, [(n, "F32", v.shape, encode("F32", v.ravel())) for n, v in vals.items()])
    with open(d + "/config.json", "w") as f:
        json.dump({"model_type": "llama", "vocab_size": int(vals["lm_head.weight"].shape[0]),
                   "num_hidden_layers": 2, "torch_dtype": "float32"}, f, indent=2)
    with open(d + "/tokenizer.json", "w") as f:
        json.dump(tok, f)
    with open(d + "/tokenizer_config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    with open(d + "/special_tokens_map.json", "w") as f:
        json.dump(special, f)

save(out + "/base", base, tokenizer(vocab, added), tok_config(added),
     {"bos_token": "<s>", "eos_token": "</s>"})
emb = ("model.embed_tokens.weight", "lm_head.weight")
for t in ("task1", "task2"):
    vals = {k: (v + rng.laplace(0, 2e-3, v.shape)).astype(np.float32) for k, v in base.items()}
    tv, ta = dict(vocab), list(added)
    if t == "task1":   # 2 special tokens appended, then a token task 2 has too
        for k in emb:
            vals[k] = np.concatenate([vals[k], rng.normal(0, 0.02, (3, H)).astype(np.float32)])
        ta = ta + [added_tok(R, "<|im_start|>"), added_tok(R + 1, "<|im_end|>")]
        tv["y_shared"] = R + 2
        special = {"bos_token": "<s>", "eos_token": "<|im_end|>"}
    else:              # its own token, the shared one, a swapped pair, a base token replaced
        for k in emb:
            vals[k] = np.concatenate([vals[k], rng.normal(0, 0.02, (2, H)).astype(np.float32)])
        tv["x_new"] = R
        tv["y_shared"] = R + 1
        tv["t5"], tv["t6"] = 6, 5
        del tv["t7"]
        tv["z_other"] = 7
        special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    save(out + "/" + t, vals, tokenizer(tv, ta), tok_config(ta), special)
EOF
T="$F/task1 $F/task2"
P=$PCBM_BIN

# check_tokenizer OUT SOURCE ALIGNED: the output's vocabulary (tokenizer.json's model.vocab and
# added_tokens) is the reference's, added_tokens_decoder matches added_tokens, config.json's
# vocab_size is the rows; a model source's tokenizer files are its own, byte for byte.
check_tokenizer() {
    "$PY" - "$1" "$2" "$3" "$F" <<'EOF'
import json, os, sys, filecmp
out, source, aligned, fam = sys.argv[1:5]
want = json.load(open(aligned + "/vocab.json"))
tok = json.load(open(out + "/tokenizer.json"))
got = dict(tok["model"]["vocab"])
for e in tok["added_tokens"]:
    got[e["content"]] = e["id"]
got = {str(i): t for t, i in got.items()}
assert got == want["tokens"], sorted(set(got.items()) ^ set(want["tokens"].items()))
cfg = json.load(open(out + "/config.json"))
assert cfg["vocab_size"] == want["rows"], (cfg["vocab_size"], want["rows"])
rep = json.load(open(out + "/merge_report.json"))
assert rep["vocabulary"]["rows"] == want["rows"], rep.get("vocabulary")
tc = json.load(open(out + "/tokenizer_config.json"))
dec = {int(k): v["content"] for k, v in tc["added_tokens_decoder"].items()}
assert dec == {e["id"]: e["content"] for e in tok["added_tokens"]}, dec
src = {"base": "base", "union": "base", "1": "task1", "2": "task2"}.get(source)
if src is None:
    src = os.path.basename(source)
names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
if source not in ("base", "union"):
    for n in names:
        assert filecmp.cmp(out + "/" + n, fam + "/" + src + "/" + n, shallow=False), n
else:
    assert filecmp.cmp(out + "/special_tokens_map.json", fam + "/base/special_tokens_map.json",
                       shallow=False)
if source == "union":  # the base's added tokens, then the new ones as mergekit adds them
    new = [(e["content"], e["special"], e["normalized"]) for e in tok["added_tokens"][2:]]
    assert new == [("y_shared", False, True), ("z_other", False, True), ("x_new", False, True),
                   ("<|im_start|>", True, False), ("<|im_end|>", True, False)], new
EOF
}

# vcase NAME SOURCE OPTIONS...: pcbmerge with --tokenizer-source SOURCE against the reference's
# merge of the aligned family; the tokenizer files and config checked; nothing staged is left.
vcase() {
    local name=$1 source=$2 ok=1 refsrc
    shift 2
    local dir=$TMP/$name
    refsrc=$source
    [ "$source" = "$F/task1" ] && refsrc=1
    local refopts=() a
    for a in "$@"; do [ "$a" = --exact ] || refopts+=("$a"); done
    CASES=$((CASES + 1))
    "$P" merge --base "$F/base" --out "$dir.ours" --tokenizer-source "$source" "$@" $T \
        >"$dir.log" 2>&1 || ok=0
    [ $ok = 1 ] && { "$PY" "$VREF" align --source "$refsrc" --out "$dir.fam" "$F/base" $T \
        >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --base "$dir.fam/base" --out "$dir.ref" "${refopts[@]}" \
        "$dir.fam/task1" "$dir.fam/task2" >>"$dir.log" 2>&1 || ok=0; }
    # the staged rows are the aligned family's: pcbmerge merging that family gives the same values
    [ $ok = 1 ] && { "$P" merge --base "$dir.fam/base" --out "$dir.same" "$@" "$dir.fam/task1" \
        "$dir.fam/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.same" --max-ulp 0 >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --max-mismatch 1e-5 \
        --ref-report "$dir.ref/ref_report.json" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { check_tokenizer "$dir.ours" "$refsrc" "$dir.fam" >>"$dir.log" 2>&1 || ok=0; }
    if [ $ok = 1 ] && [ -e "$dir.ours.vocab-staging" ]; then
        echo "    $dir.ours.vocab-staging left behind" >>"$dir.log"
        ok=0
    fi
    if [ $ok = 1 ]; then
        echo "ok   $name: $(grep -E '^float elements' "$dir.log" | tail -n 1 | sed 's/^float elements //')"
    else
        echo "FAIL $name"
        tail -n 12 "$dir.log" | sed 's/^/    /'
        FAILED+=("$name")
    fi
}

vcase union-task_arithmetic union --method task_arithmetic --lambda 0.8
vcase union-ties union --method ties --density 0.3
vcase union-linear union --method linear --weights 0.3,0.7
vcase union-pcb union --method pcb --density 0.3 --exact --dtype bf16
vcase union-pcb-tensor union --method pcb --density 0.3 --scope tensor --exact --dtype bf16
vcase base-task_arithmetic base --method task_arithmetic
vcase base-ties base --method ties --density 0.3
vcase model-path-pcb "$F/task1" --method pcb --density 0.3 --exact --dtype bf16
vcase model-path-linear "$F/task1" --method linear --weights 0.5,0.5
vcase model-index-ties 2 --method ties --density 0.3

# ---- the same bytes for any --threads/--mem/--io/--block-size, split, resume ---------------------
U=(--tokenizer-source union --method pcb --density 0.3 --quiet)
"$P" merge --base "$F/base" --out "$TMP/d0" "${U[@]}" --threads 1 $T || fail "union merge"
same_or_fail() {
    local msg
    if msg=$(same_outputs "$2" "$3"); then case_pass "$1"; else case_fail "$1" "$msg"; fi
}
i=1
for o in "--threads 2 --mem 16M --io pread" "--threads 2 --io mmap --block-size 4K" \
    "--threads 1 --io uring --block-size 8K --shard-size 40KB"; do
    "$P" merge --base "$F/base" --out "$TMP/d$i" "${U[@]}" $o $T || fail "union merge $o"
    if [[ "$o" == *shard-size* ]]; then
        "$P" merge --base "$F/base" --out "$TMP/d${i}s" "${U[@]}" --threads 2 --shard-size 40KB $T ||
            fail "union merge sharded"
        same_or_fail "same bytes: $o" "$TMP/d${i}s" "$TMP/d$i"
    else
        same_or_fail "same bytes: $o" "$TMP/d0" "$TMP/d$i"
    fi
    i=$((i + 1))
done

S=$TMP/split
RT=(--threads 2 --quiet)
split_ok() {
    "$P" plan --base "$F/base" --out "$S" --parts 2 "${U[@]}" $T || return 1
    local r
    for ((r = 0; r < 6; r++)); do
        "$P" status --plan "$S" --json | grep -q '"stats_complete":true' && break
        for i in 1 0; do "$P" stats --plan "$S" --part $i "${RT[@]}" || return 1; done
        "$P" reduce --plan "$S" "${RT[@]}" || return 1
    done
    for i in 0 1; do "$P" apply --plan "$S" --part $i "${RT[@]}" || return 1; done
    "$P" finalize --plan "$S" "${RT[@]}" || return 1
    [ ! -e "$S.vocab-staging" ] || { echo "$S.vocab-staging left behind"; return 1; }
}
if msg=$(split_ok 2>&1); then same_or_fail "split merge (2 parts) = merge" "$TMP/d0" "$S"
else case_fail "split merge (2 parts)" "$msg"; fi

K=$TMP/kill
{ PCBM_SEGMENT_BYTES=16K PCBM_TEST_KILL=apply:2 "$P" merge --base "$F/base" --out "$K" "${U[@]}" \
    --threads 1 --block-size 4K --shard-size 40KB $T; } 2>/dev/null
rc=$?
if [ $rc -ne 137 ] || [ -e "$K" ] || [ ! -e "$K.vocab-staging" ]; then
    case_fail "union merge killed mid-apply" "not killed (exit $rc), or nothing staged kept"
else
    "$P" merge --base "$F/base" --out "$K" "${U[@]}" --threads 2 --shard-size 40KB --resume $T ||
        fail "resume"
    "$P" merge --base "$F/base" --out "$TMP/k-ref" "${U[@]}" --threads 2 --shard-size 40KB $T ||
        fail "union merge (sharded)"
    same_or_fail "killed mid-apply and resumed = merge" "$TMP/k-ref" "$K"
fi

# ---- the statistics file: replayed with the same source, refused with another ------------------
stats_ok() {
    "$P" merge --base "$F/base" --out "$TMP/st2" "${U[@]}" --stats "$TMP/d0/merge_stats.json.zst" \
        $T && same_outputs "$TMP/d0" "$TMP/st2" merge_stats.json.zst README.md pcbmerge.manifest.json
}
check stats-replayed-with-the-same-source stats_ok
expect_fail stats-refused-with-another-source 'tokenizer_source "union" there, \(none\) here' \
    "$P" merge --base "$F/base" --out "$TMP/st3" --method pcb --density 0.3 \
    --stats "$TMP/d0/merge_stats.json.zst" $T

# ---- refusals ---------------------------------------------------------------------------------
expect_fail unknown-model-refused "tokenizer source 'nosuch' is none of the inputs" \
    "$P" merge --base "$F/base" --out "$TMP/r1" --tokenizer-source nosuch --method ties $T
expect_fail index-out-of-range-refused "tokenizer source '3' is none of the inputs" \
    "$P" merge --base "$F/base" --out "$TMP/r2" --tokenizer-source 3 --method ties $T
mkdir -p "$TMP/notok"
cp "$F/base/model.safetensors" "$F/base/config.json" "$TMP/notok/"
expect_fail union-without-tokenizer-refused "union needs the base's tokenizer.json" \
    "$P" merge --base "$TMP/notok" --out "$TMP/r3" --tokenizer-source union --method ties $T
cat >"$TMP/bad1.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 1.0}
tokenizer_source: $F/elsewhere
EOF
expect_fail recipe-unknown-source-refused "bad1.yml, line 6: tokenizer source '.*elsewhere' is none of the recipe's models" \
    "$P" merge --config "$TMP/bad1.yml" --out "$TMP/r4"
cat >"$TMP/bad2.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 1.0}
tokenizer:
  source: union
  tokens:
    "<|im_start|>": {source: $F/task1}
EOF
expect_fail recipe-tokens-refused "bad2.yml, line 8: tokenizer.tokens is not supported yet" \
    "$P" merge --config "$TMP/bad2.yml" --out "$TMP/r5"
cat >"$TMP/ok.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 1.0}
EOF
expect_fail cli-source-with-recipe-refused "tokenizer-source" \
    "$P" merge --config "$TMP/ok.yml" --out "$TMP/r6" --tokenizer-source union

# ---- recipes: tokenizer_source and tokenizer.source (default union) ------------------------------
recipe_ok() {
    local y=$TMP/r-$1.yml
    cat >"$y" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 1.0}
  - model: $F/task2
    parameters: {weight: 1.0}
$2
EOF
    "$P" merge --config "$y" --out "$TMP/ro-$1" --quiet || return 1
    "$PY" "$VREF" align --source "$3" --out "$TMP/ra-$1" "$F/base" $T || return 1
    check_tokenizer "$TMP/ro-$1" "$3" "$TMP/ra-$1"
}
check recipe-tokenizer_source-union recipe_ok u "tokenizer_source: union" union
check recipe-tokenizer-block-defaults-to-union recipe_ok b "tokenizer: {}" union
check recipe-tokenizer_source-model recipe_ok m "tokenizer_source: $F/task2" 2

dry_ok() {
    "$P" merge --base "$F/base" --out "$TMP/dry" --tokenizer-source union --method pcb \
        --density 0.3 --dry-run $T 2>&1 |
        grep -q "vocabulary: union of 97 tokens; rows gathered for 3 model(s)" &&
        [ ! -e "$TMP/dry.vocab-staging" ]
}
check dry-run-tells-the-staging dry_ok
finish

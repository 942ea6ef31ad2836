#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lora_inputs.sh — PEFT LoRA adapters as task models (lora_family.py writes a Llama-shaped base,
# adapters as PEFT saves them, and their MATERIALIZED fine-tunes: base + scale · B·A in float32,
# written as F32). `pcbmerge merge` over base + adapters must match the NumPy reference's merge
# over base + materialized models: plain and rsLoRA scales, F32 and BF16 factors, ranks that
# differ per adapter and per module (rank_pattern / alpha_pattern), fan_in_fan_out, LoRA on the
# embedding (lora_embedding_A/B),
# modules_to_save, an adapter mixed with a full fine-tune; F32 and BF16 outputs. An adapter's task
# vector is the materialized fine-tune's in float32, round(base + ΔW) − base, as the reference's,
# so every case also checks that the adapters give the very bytes pcbmerge gives for the
# materialized fine-tunes.
# Bytes are the same for any thread
# count, budget, I/O backend and block cut; bad adapters are refused naming file, tensor and rule.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin
export PCBM_ROOT

for dt in F32 BF16; do
    "$PY" "$PCBM_ROOT/tests/integration/lora_family.py" "$TMP/$dt" "$dt" || fail "cannot generate $TMP/$dt"
done

# lora_case NAME FAMILY "ADAPTERS" OPTIONS...: ADAPTERS are names in FAMILY (an adapter NAME is
# compared with its materialized NAME.full; "ft" is a full fine-tune, the same on both sides).
lora_case() {
    local name=$1 fam=$TMP/$2 ok=1 a
    local ours=() refs=()
    for a in $3; do
        ours+=("$fam/$a")
        if [ -d "$fam/$a.full" ]; then refs+=("$fam/$a.full"); else refs+=("$fam/$a"); fi
    done
    shift 3
    local dir=$TMP/$name cmp=(--max-mismatch 1e-4)
    local dt=()
    [ "$(basename "$fam")" = F32 ] && cmp+=(--base "$fam/base") # F32: cancellation-aware
    # PCB in F32 output: its score maximum m is 1 ulp off the reference's correctly rounded
    # exp/tanh here, which moves every weight (docs/semantics.md, "Where the bounds hold"); the
    # comparison is made in BF16, and the byte check below covers F32
    [ "$(basename "$fam")" = F32 ] && [[ " $* " == *" pcb "* ]] && dt=(--dtype bf16)
    CASES=$((CASES + 1))
    "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$dir.ours" "${dt[@]}" "$@" "${ours[@]}" \
        >"$dir.log" 2>&1 || ok=0
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --base "$fam/base" --out "$dir.ref" "${dt[@]}" "$@" \
        --report "$dir.ref.json" "${refs[@]}" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" "${cmp[@]}" \
        --ref-report "$dir.ref.json" >>"$dir.log" 2>&1 || ok=0; }
    # and the adapters give the very bytes of the materialized fine-tunes, in the output's dtype
    # as the family has it (F32 included)
    if [ $ok = 1 ]; then
        "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$dir.a" "$@" "${ours[@]}" &&
            "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$dir.m" "$@" "${refs[@]}" &&
            cmp -s "$dir.a/model.safetensors" "$dir.m/model.safetensors" ||
            { echo "    adapters and materialized fine-tunes differ" >>"$dir.log"; ok=0; }
        rm -rf "$dir.a" "$dir.m"
    fi
    if [ $ok = 1 ]; then
        echo "ok   $name: $(grep -E '^float elements' "$dir.log" | sed 's/^float elements //')"
        rm -rf "$dir.ours" "$dir.ref"
    else
        echo "FAIL $name"
        tail -n 14 "$dir.log" | sed 's/^/    /'
        FAILED+=("$name")
    fi
}

for dt in F32 BF16; do
    for m in pcb ties task_arithmetic dare_linear; do
        opts=(--method "$m" --density 0.3 --seed 7)
        [ "$m" = task_arithmetic ] && opts=(--method "$m")
        lora_case "$dt-$m" "$dt" "plain rslora saved ft" "${opts[@]}"
    done
    lora_case "$dt-adapters-only-pcb" "$dt" "plain rslora fifo" --method pcb --density 0.2
    lora_case "$dt-fan-in-fan-out-ties" "$dt" "fifo ft" --method ties --density 0.3
done
lora_case "F32-linear-theta" F32 "plain saved ft" --method linear --weights 0.5,0.3,0.2
lora_case "F32-python-patterns-ta" F32 "pyre ft" --method task_arithmetic

# The same bytes for any thread count, budget, backend and block cut; nothing about adapters
# in the report is missing.
same_bytes() {
    local fam=$TMP/BF16 a=$TMP/det-a b opt
    local tasks=("$fam/plain" "$fam/rslora" "$fam/saved" "$fam/fifo" "$fam/ft")
    "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$a" --threads 1 "${tasks[@]}" || return 1
    for opt in "--threads 2" "--mem 64M --threads 2" "--mem 1G" "--io pread" "--io mmap" \
        "--block-size 64K --threads 2" "--block-size 4K --io pread"; do
        b=$TMP/det-$RANDOM
        # shellcheck disable=SC2086
        "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$b" $opt "${tasks[@]}" || return 1
        cmp -s "$a/model.safetensors" "$b/model.safetensors" || { echo "    differs with $opt"; return 1; }
        rm -rf "$b"
    done
    for lv in scalar avx2; do # ΔW's vector and scalar forms give the same bits
        b=$TMP/det-$lv
        PCBM_CPU=$lv "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$b" --threads 1 \
            "${tasks[@]}" || return 1
        cmp -s "$a/model.safetensors" "$b/model.safetensors" || { echo "    differs with PCBM_CPU=$lv"; return 1; }
        rm -rf "$b"
    done
    "$PY" - "$a/merge_report.json" "$fam" <<'PYEOF'
import json, os, sys
rep = json.load(open(sys.argv[1]))
t = rep["tasks"]
# bytes_read counts the factors the workers read (at least once each) besides the blocks
fam = sys.argv[2]
size = lambda d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))
blocks = size(fam + "/base") + size(fam + "/ft")
factors = sum(size(fam + "/" + a) for a in ("plain", "rslora", "saved", "fifo"))
assert rep["bytes_read"] >= blocks + 0.9 * factors, (rep["bytes_read"], blocks, factors)
want = [(8, 2.0, 5, 0), (4, 4.0, 14, 0), (6, 2.0, 4, 1), (5, 1.4, 4, 0)]
for task, (r, scale, targeted, saved) in zip(t, want):
    a = task["adapter"]
    assert (a["rank"], a["targeted_tensors"], a["saved_tensors"]) == (r, targeted, saved), a
    assert abs(a["scale"] - scale) < 1e-12, a
assert "adapter" not in t[4], t[4]
PYEOF
}
check same-bytes-and-report same_bytes

# A split merge into 2 parts and a merge killed and resumed give the same bytes as one merge;
# an adapter's config is part of its identity (a changed alpha refuses the resume).
split_resume_same() {
    local fam=$TMP/F32 P=$PCBM_BIN one=$TMP/sp-one two=$TMP/sp-two res=$TMP/sp-res f k
    local tasks=("$fam/plain" "$fam/rslora" "$fam/saved" "$fam/ft")
    "$P" merge --quiet --shard-size 300K --base "$fam/base" --out "$one" "${tasks[@]}" || return 1
    "$P" plan --quiet --shard-size 300K --parts 2 --base "$fam/base" --out "$two" "${tasks[@]}" || return 1
    for ((k = 0; k < 8; k++)); do
        "$P" status --plan "$two" --json | grep -q '"stats_complete":true' && break
        "$P" stats --quiet --plan "$two" --part 0 && "$P" stats --quiet --plan "$two" --part 1 &&
            "$P" reduce --quiet --plan "$two" || return 1
    done
    "$P" apply --quiet --plan "$two" --part 0 && "$P" apply --quiet --plan "$two" --part 1 &&
        "$P" finalize --quiet --plan "$two" || return 1
    (PCBM_TEST_KILL=apply:2 "$P" merge --quiet --shard-size 300K --block-size 16K --base "$fam/base" \
        --out "$res" "${tasks[@]}"; true) >/dev/null 2>&1 # the subshell reports the kill
    [ -d "$res.partial" ] || { echo "    the kill left no partial output"; return 1; }
    cp -r "$fam/plain" "$TMP/plain-alpha"
    sed -i 's/"lora_alpha": 16/"lora_alpha": 17/' "$TMP/plain-alpha/adapter_config.json"
    "$P" merge --quiet --resume --shard-size 300K --block-size 16K --base "$fam/base" --out "$res" \
        "$TMP/plain-alpha" "${tasks[@]:1}" >/dev/null 2>&1 && { echo "    resumed with another alpha"; return 1; }
    "$P" merge --quiet --resume --shard-size 300K --block-size 16K --base "$fam/base" --out "$res" \
        "${tasks[@]}" || return 1
    ls "$one"/model-*.safetensors >/dev/null 2>&1 || return 1
    for f in "$one"/model-*.safetensors; do
        cmp -s "$f" "$two/$(basename "$f")" || { echo "    split differs: $f"; return 1; }
        cmp -s "$f" "$res/$(basename "$f")" || { echo "    resume differs: $f"; return 1; }
    done
}
check split-and-resume-same-bytes split_resume_same

inspect_adapter() {
    local out
    out=$("$PCBM_BIN" inspect "$TMP/F32/rslora") || return 1
    grep -q "LoRA adapter .*r 4, lora_alpha 8, scale 4 (rsLoRA" <<<"$out" &&
        grep -q "ranks stored 2..6" <<<"$out" && grep -q "base_model_name_or_path: test/base" <<<"$out"
}
check inspect-adapter inspect_adapter
dry_run_adapter() {
    "$PCBM_BIN" merge --dry-run --base "$TMP/F32/base" --out "$TMP/o-dry" "$TMP/F32/saved" \
        "$TMP/F32/ft" 2>&1 | grep -q "adapter: task 1 (.*saved) is a LoRA adapter: r 6, scale 2; 4 tensor(s) with factors (rank up to 6), 1 replaced whole"
}
check dry-run-says-adapter dry_run_adapter

m() { "$PCBM_BIN" merge --quiet --base "$TMP/F32/base" --out "$TMP/o-$RANDOM" "$TMP/F32/plain" "$@"; }
expect_fail dora-refused "dora/adapter_config.json: DoRA \(use_dora" m "$TMP/F32/dora"
expect_fail lookahead-pattern-refused \
    "lookahead/adapter_config.json: \`rank_pattern\` key 'q_proj\(\?=x\)' is not a regular expression pcbmerge can match: it uses a \(\?...\) group" \
    m "$TMP/F32/lookahead"
expect_fail loha-refused "loha/adapter_config.json: peft_type LOHA is not supported" m "$TMP/F32/loha"
expect_fail missing-config-refused \
    "noconfig/adapter_model.safetensors has no adapter_config.json beside it" m "$TMP/F32/noconfig"
expect_fail b-shape-refused \
    "badb/adapter_model.safetensors: the LoRA factors of model.layers.1.self_attn.v_proj.weight do not fit the base tensor: lora_A \[4, 128\], lora_B \[63, 4\]" \
    m "$TMP/F32/badb"
expect_fail unknown-key-refused \
    "nokey/adapter_model.safetensors: key base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight names no tensor of the base" \
    m "$TMP/F32/nokey"
expect_fail adapter-as-base-refused "the base .* is a LoRA adapter" \
    "$PCBM_BIN" merge --quiet --base "$TMP/F32/plain" --out "$TMP/o-base" "$TMP/F32/ft"
# a key naming an integer tensor of the base (a base with an I64 buffer, an adapter that saves it)
"$PY" - "$TMP/F32" "$TMP/int" <<'PYEOF' || fail "cannot build the integer-buffer case"
import os, shutil, sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import read_model, write_model
src, out = sys.argv[1], sys.argv[2]
base = read_model(src + "/base")
ids = np.arange(16, dtype="<i8").tobytes()
write_model(out + "/base", [(t.name, t.dtype, t.shape, t.raw.tobytes()) for t in base.values()]
            + [("model.position_ids", "I64", (16,), ids)])
shutil.copytree(src + "/plain", out + "/ad")
PYEOF
int_key_case() {
    "$PY" - "$TMP/int/ad" <<'PYEOF' || return 1
import json, os, struct, sys
d = sys.argv[1]
p = d + "/adapter_model.safetensors"
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
data = b[8 + n:]
off = len(data)
hdr["base_model.model.model.position_ids"] = {"dtype": "I64", "shape": [16],
                                              "data_offsets": [off, off + 128]}
js = json.dumps(hdr).encode()
js += b" " * ((8 - len(js) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(js)) + js + data + bytes(128))
PYEOF
    "$PCBM_BIN" merge --quiet --base "$TMP/int/base" --out "$TMP/o-int" "$TMP/int/ad" 2>&1 |
        grep -q "key base_model.model.model.position_ids names the base's model.position_ids, which is I64, not a float weight"
}
check integer-key-refused int_key_case
# Keys as a model's state_dict() has them, with PEFT's adapter name (`lora_A.default.weight`,
# `lora_embedding_A.default`): the same merge as the saved form; two adapters in one file refused.
# rename_keys SRC DST SUFFIX_OF_SECOND: DST = SRC with ".default" inserted after lora_A/lora_B/
# lora_embedding_A/B (and, with a second argument, "other" for the keys of one module).
rename_keys() {
    "$PY" - "$@" <<'PYEOF'
import json, re, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
other = sys.argv[3] if len(sys.argv) > 3 else None
shutil.copytree(src, dst)
p = dst + "/adapter_model.safetensors"
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + n])
out, renamed = {}, 0
for k, v in hdr.items():
    name = "other" if other and other in k else "default"
    k2 = re.sub(r"\.(lora_[AB])\.weight$", r".\1.%s.weight" % name, k)
    k2 = re.sub(r"\.(lora_embedding_[AB])$", r".\1.%s" % name, k2)
    renamed += k2 != k
    out[k2] = v
assert renamed >= 4, renamed
js = json.dumps(out).encode()
js += b" " * ((8 - len(js) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(js)) + js + b[8 + n:])
PYEOF
}
default_keys_case() {
    rename_keys "$TMP/F32/plain" "$TMP/named" || return 1
    "$PCBM_BIN" merge --quiet --base "$TMP/F32/base" --out "$TMP/o-saved" "$TMP/F32/plain" &&
        "$PCBM_BIN" merge --quiet --base "$TMP/F32/base" --out "$TMP/o-named" "$TMP/named" &&
        cmp -s "$TMP/o-saved/model.safetensors" "$TMP/o-named/model.safetensors"
}
check state-dict-keys-same-merge default_keys_case
rename_keys "$TMP/F32/plain" "$TMP/two" "layers.1." || fail "cannot build the two-adapter case"
expect_fail two-adapters-refused \
    "two/adapter_model.safetensors: key .*lora_[AB]\.(other|default)\.weight belongs to adapter '(other|default)' while other keys belong to '(default|other)': the file holds several adapters" \
    m "$TMP/two"
# A recipe names an adapter as mergekit does, MODEL+ADAPTER: with MODEL the base, the adapter is a
# task (the same bytes as the command line's merge); MODEL other than the base, or an adapter as
# base_model, is refused naming it.
recipe_adapter_case() {
    cat >"$TMP/ad.yml" <<YEOF
merge_method: task_arithmetic
base_model: $TMP/F32/base
models:
  - model: $TMP/F32/base+$TMP/F32/plain
    parameters: {weight: 1.0}
  - model: $TMP/F32/ft
    parameters: {weight: 1.0}
YEOF
    "$PCBM_BIN" merge --quiet --config "$TMP/ad.yml" --out "$TMP/o-rad" &&
        "$PCBM_BIN" merge --quiet --method task_arithmetic --base "$TMP/F32/base" \
            --out "$TMP/o-cad" "$TMP/F32/plain" "$TMP/F32/ft" &&
        "$PY" - "$TMP/o-rad" "$TMP/o-cad" <<'PYEOF' # the tensors' bytes (headers record the recipe)
import os, sys
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import read_model
a, b = read_model(sys.argv[1]), read_model(sys.argv[2])
assert list(a) == list(b), "tensor lists differ"
bad = [n for n in a if a[n].raw.tobytes() != b[n].raw.tobytes()]
assert not bad, "tensors differ: %s" % bad[:3]
PYEOF
}
check recipe-model-plus-adapter recipe_adapter_case
sed "s|model: $TMP/F32/base+|model: $TMP/F32/ft+|" "$TMP/ad.yml" >"$TMP/ad-other.yml"
expect_fail recipe-adapter-on-other-model-refused \
    "ft\+.*plain: an adapter task \(MODEL\+ADAPTER\) is applied to the merge's base, so MODEL must be .*F32/base" \
    "$PCBM_BIN" merge --quiet --config "$TMP/ad-other.yml" --out "$TMP/o-rad2"
sed "s|^base_model: .*|base_model: $TMP/F32/base+$TMP/F32/plain|" "$TMP/ad.yml" >"$TMP/ad-base.yml"
expect_fail recipe-adapter-as-base-refused "a LoRA adapter \(MODEL\+ADAPTER\) cannot be the base" \
    "$PCBM_BIN" merge --quiet --config "$TMP/ad-base.yml" --out "$TMP/o-rad3"
finish

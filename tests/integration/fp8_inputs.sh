#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# fp8_inputs.sh — FP8 checkpoints with block scales (DeepSeek-V3 / Qwen3-FP8 layout: F8_E4M3 or
# F8_E5M2 weights W, F32 W_scale_inv [ceil(R/br), ceil(C/bc)], config.json
# quantization_config.weight_block_size). The merge must equal the NumPy reference's merge of
# the materialized family (every FP8 weight decoded and multiplied by its block's scale in
# float32, written as F32); FP8 weights come out BF16, scale tensors are dropped, config.json
# loses quantization_config. Bytes are the same for any --threads, --mem and --block-size (blocks
# that start and end mid-row). FP8 without scales, or with scales of the wrong shape, is refused.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin

# family DIR VARIANT: DIR/q (as stored) and DIR/f32 (materialized). VARIANT: fp8-tasks (base and
# tasks FP8 E4M3, 128x128 blocks) | bf16-tasks (FP8 base, BF16 tasks) | mixed (task1 E5M2 with
# 64x64 blocks, task2 BF16) | noscale (the base lacks one scale) | badscale (a scale of the
# wrong shape).
family() {
    "$PY" - "$1" "$2" <<'EOF' || fail "cannot generate $1"
import json
import os
import sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode

def fp8_table(fmt):
    """float32 value of every byte: e4m3fn (no inf; 0x7f/0xff NaN) or e5m2 (IEEE-like)."""
    out = np.empty(256, np.float64)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        if fmt == "e4m3":
            e, m = (b >> 3) & 15, b & 7
            v = np.nan if (e == 15 and m == 7) else (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
        else:
            e, m = (b >> 2) & 31, b & 3
            v = (np.inf if m == 0 else np.nan) if e == 31 else (m / 4 * 2.0 ** -14 if e == 0 else (1 + m / 4) * 2.0 ** (e - 15))
        out[b] = s * v
    return out.astype(np.float32)

out, variant = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(17)
shapes = {"model.layers.0.mlp.down_proj.weight": (300, 260), "model.layers.0.mlp.up_proj.weight": (128, 384)}
other = {"model.embed_tokens.weight": (96, 64), "model.norm.weight": (64,)}
valid = {"e4m3": np.array([b for b in range(256) if (b & 0x7f) != 0x7f], np.uint8),
         "e5m2": np.array([b for b in range(256) if ((b >> 2) & 31) != 31], np.uint8)}
base_bytes = {n: rng.choice(valid["e4m3"], size=s).astype(np.uint8) for n, s in shapes.items()}
base_other = {n: rng.normal(0, 0.02, s).astype(np.float32) for n, s in other.items()}

def quantized(name, fmt, blk, perturb):
    r, c = shapes[name]
    if perturb:   # a fine-tune: small changes of the stored bytes and of the scales
        b = base_bytes[name].astype(np.int32)
        b = np.where(rng.random(b.shape) < 0.3, b ^ rng.integers(1, 4, b.shape), b).astype(np.uint8)
        bad = ~np.isin(b, valid[fmt])
        b[bad] = base_bytes[name][bad] if fmt == "e4m3" else 0x3c
    else:
        b = base_bytes[name]
    sr, sc = -(-r // blk), -(-c // blk)
    scale = rng.uniform(1e-3, 4e-3, (sr, sc)).astype(np.float32)
    vals = fp8_table(fmt)[b] * np.repeat(np.repeat(scale, blk, 0), blk, 1)[:r, :c]
    return b, scale, vals.astype(np.float32)

def save(name, spec):
    """spec: per weight (fmt, block) or None for BF16; returns nothing, writes q/ and f32/."""
    q, f = [], []
    blocks = set()
    for n, s in other.items():
        v = base_other[n] if name == "base" else (base_other[n] + rng.laplace(0, 1e-3, s)).astype(np.float32)
        q.append((n, "BF16", s, encode("BF16", v.ravel())))
        f.append((n, "BF16", s, encode("BF16", v.ravel())))
    for n, s in shapes.items():
        how = spec.get(n)
        if how is None:   # a BF16 fine-tune of the FP8 base
            _, _, v = quantized(n, "e4m3", 128, False)
            v = (v + rng.laplace(0, 5e-4, s)).astype(np.float32)
            data = encode("BF16", v.ravel())
            q.append((n, "BF16", s, data))
            f.append((n, "BF16", s, data))
            continue
        fmt, blk, drop_scale, bad_scale = how
        b, scale, v = quantized(n, fmt, blk, name != "base")
        q.append((n, "F8_E4M3" if fmt == "e4m3" else "F8_E5M2", s, b.tobytes()))
        if not drop_scale:
            sc = scale[:, :-1] if bad_scale else scale
            q.append((n + "_scale_inv", "F32", sc.shape, sc.astype("<f4").tobytes()))
        f.append((n, "F32", s, encode("F32", v.ravel())))
        blocks.add(blk)
    for kind, tensors in (("q", q), ("f32", f)):
        d = "%s/%s/%s" % (out, kind, name)
        write_model(d, tensors)
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}
        if kind == "q" and blocks:
            cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                          "fmt": "e4m3", "weight_block_size": [max(blocks)] * 2}
        with open(d + "/config.json", "w") as fh:
            json.dump(cfg, fh, indent=2)

e4 = ("e4m3", 128, False, False)
allq = {n: e4 for n in shapes}
down = "model.layers.0.mlp.down_proj.weight"
if variant == "fp8-tasks":
    save("base", allq); save("task1", allq); save("task2", allq)
elif variant == "bf16-tasks":
    save("base", allq); save("task1", {}); save("task2", {})
elif variant == "mixed":
    save("base", allq); save("task1", {n: ("e5m2", 64, False, False) for n in shapes}); save("task2", {})
elif variant == "noscale":
    save("base", dict(allq, **{down: ("e4m3", 128, True, False)})); save("task1", allq); save("task2", allq)
elif variant == "badscale":
    save("base", allq); save("task1", dict(allq, **{down: ("e4m3", 128, False, True)})); save("task2", allq)
EOF
}
export PCBM_ROOT

for v in fp8-tasks bf16-tasks mixed noscale badscale; do family "$TMP/$v" "$v"; done

# fp8_case NAME VARIANT OPTIONS...: merge VARIANT/q, compare with the reference's merge of
# VARIANT/f32 (output dtype bf16, as the FP8 base's tensors come out), check what must go.
fp8_case() {
    local name=$1 fam=$TMP/$2 ok=1
    shift 2
    local dir=$TMP/$name cmp=(--max-mismatch 1e-4)
    [[ " $* " == *" task_arithmetic "* ]] && cmp=(--max-ulp 1)
    CASES=$((CASES + 1))
    "$PCBM_BIN" merge --quiet --base "$fam/q/base" --out "$dir.ours" "$@" \
        "$fam/q/task1" "$fam/q/task2" >"$dir.log" 2>&1 || ok=0
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --dtype bf16 --base "$fam/f32/base" --out "$dir.ref" \
        "$@" "$fam/f32/task1" "$fam/f32/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" "${cmp[@]}" \
        --ref-report "$dir.ref/ref_report.json" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" - "$dir.ours" <<'EOF' >>"$dir.log" 2>&1 || ok=0; }
import json, os, sys
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import read_model
m = read_model(sys.argv[1])
assert not [n for n in m if n.endswith("_scale_inv")], "scale tensors in the output"
assert all(t.dtype == "BF16" for t in m.values()), [(n, t.dtype) for n, t in m.items()]
cfg = json.load(open(sys.argv[1] + "/config.json"))
assert "quantization_config" not in cfg and cfg["torch_dtype"] == "bfloat16", cfg
rep = json.load(open(sys.argv[1] + "/merge_report.json"))
assert rep["tensors_dequantized"] == 2 and len(rep["dequantized"]) == 2, rep["dequantized"]
EOF
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
    fp8_case "fp8-tasks-$m" fp8-tasks "${opts[@]}"
    fp8_case "bf16-tasks-$m" bf16-tasks "${opts[@]}"
    fp8_case "mixed-$m" mixed "${opts[@]}"
done

# The same bytes for any thread count, budget and block cut (blocks end mid-row at 4 KiB).
same_bytes() {
    local fam=$TMP/mixed a=$TMP/det-a b
    "$PCBM_BIN" merge --quiet --base "$fam/q/base" --out "$a" --threads 1 "$fam/q/task1" "$fam/q/task2" || return 1
    for opt in "--threads 2 --mem 16M" "--block-size 4K --threads 2" "--io pread --block-size 12K"; do
        b=$TMP/det-$RANDOM
        # shellcheck disable=SC2086
        "$PCBM_BIN" merge --quiet --base "$fam/q/base" --out "$b" $opt "$fam/q/task1" "$fam/q/task2" || return 1
        cmp -s "$a/model.safetensors" "$b/model.safetensors" || { echo "    differs with $opt"; return 1; }
    done
}
check same-bytes-threads-mem-blocks same_bytes

# A split merge into 2 parts (small shards: each part owns its own files) and a resumed merge
# give the same bytes as one merge.
split_same() {
    local fam=$TMP/fp8-tasks P=$PCBM_BIN one=$TMP/split-one two=$TMP/split-two
    "$P" merge --quiet --shard-size 200K --base "$fam/q/base" --out "$one" "$fam/q/task1" "$fam/q/task2" || return 1
    "$P" plan --quiet --shard-size 200K --parts 2 --base "$fam/q/base" --out "$two" \
        "$fam/q/task1" "$fam/q/task2" || return 1
    local k
    for ((k = 0; k < 8; k++)); do
        "$P" status --plan "$two" --json | grep -q '"stats_complete":true' && break
        "$P" stats --quiet --plan "$two" --part 0 && "$P" stats --quiet --plan "$two" --part 1 &&
            "$P" reduce --quiet --plan "$two" || return 1
    done
    "$P" apply --quiet --plan "$two" --part 0 && "$P" apply --quiet --plan "$two" --part 1 &&
        "$P" finalize --quiet --plan "$two" || return 1
    for f in "$one"/model-*.safetensors; do cmp -s "$f" "$two/$(basename "$f")" || return 1; done
    ls "$one"/model-*.safetensors >/dev/null 2>&1
}
check split-merge-same-bytes split_same
resume_same() {
    local fam=$TMP/fp8-tasks P=$PCBM_BIN a=$TMP/res-a b=$TMP/res-b
    "$P" merge --quiet --shard-size 200K --base "$fam/q/base" --out "$a" "$fam/q/task1" "$fam/q/task2" || return 1
    PCBM_TEST_KILL=apply:2 "$P" merge --quiet --shard-size 200K --block-size 16K --base "$fam/q/base" \
        --out "$b" "$fam/q/task1" "$fam/q/task2" >/dev/null 2>&1
    [ -d "$b.partial" ] || return 1
    "$P" merge --quiet --resume --shard-size 200K --block-size 16K --base "$fam/q/base" --out "$b" \
        "$fam/q/task1" "$fam/q/task2" || return 1
    for f in "$a"/model-*.safetensors; do cmp -s "$f" "$b/$(basename "$f")" || return 1; done
}
check resume-same-bytes resume_same

m() { local fam=$TMP/$1; shift; "$PCBM_BIN" merge --base "$fam/q/base" "$@" "$fam/q/task1" "$fam/q/task2"; }
expect_fail fp8-without-scales-refused \
    "the base \(.*\): tensor model.layers.0.mlp.down_proj.weight is F8_E4M3 without a block scale tensor model.layers.0.mlp.down_proj.weight_scale_inv" \
    m noscale --out "$TMP/o-ns"
expect_fail fp8-bad-scale-shape-refused \
    "task model 1 \(.*\): the block scales model.layers.0.mlp.down_proj.weight_scale_inv .* do not fit weight" \
    m badscale --out "$TMP/o-bs"
finish

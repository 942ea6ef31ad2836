#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# nonfloat_inputs.sh — tensors that are not merged: integer and bool tensors equal in every model
# are copied; differing ones (bytes, dtype or shape) refuse the merge naming tensor and models,
# or with --take-nonfloat base are copied from the base with a warning. Quantized checkpoints
# other than FP8 with block scales (FP8 with a per-tensor scale, GPTQ/AWQ, bitsandbytes) are
# refused by name instead of having their scales merged beside copied weights. An F32 task of a
# BF16 base and F64 weights merge like any other (checked against the reference).
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin

# family DIR VARIANT: base, task1, task2 with a float weight, an I64 position buffer and a BOOL
# mask; VARIANT changes task2: same | ibytes (one I64 differs) | ishape (I64 of another length)
# | f32task (task2's weight in F32) | f64 (every weight F64) | fp8 | gptq | bnb.
family() {
    "$PY" - "$1" "$2" <<'EOF' || fail "cannot generate $1"
import os
import sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode
out, variant = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(5)
w = rng.normal(0, 0.02, (64, 48)).astype(np.float32)
pos = np.arange(32, dtype=np.int64)
mask = (np.arange(40) % 3 == 0).astype(np.uint8)
for k, name in enumerate(("base", "task1", "task2")):
    wk = w if k == 0 else (w + rng.laplace(0, 2e-3, w.shape)).astype(np.float32)
    p = pos.copy()
    wdt = "BF16"
    extra = []
    if name == "task2":
        if variant == "ibytes":
            p[17] = 99
        elif variant == "ishape":
            p = np.arange(33, dtype=np.int64)
        elif variant == "f32task":
            wdt = "F32"
        elif variant == "fp8":
            extra = [("layers.0.proj.weight", "F8_E4M3", (256, 256), bytes(256 * 256)),
                     ("layers.0.proj.weight_scale", "F32", (1,), np.ones(1, np.float32).tobytes())]
        elif variant == "gptq":
            extra = [("layers.0.proj.qweight", "I32", (16, 64), bytes(16 * 64 * 4))]
        elif variant == "bnb":
            extra = [("layers.0.proj.weight.absmax", "F32", (8,), bytes(32))]
    if variant == "f64":   # every model's weight in F64
        wdt = "F64"
    if wdt == "F64":
        wbytes = wk.astype("<f8").tobytes()
    elif wdt == "F32":
        wbytes = encode("F32", wk.ravel())
    else:   # a BF16 model: the values are BF16 numbers
        wbytes = encode("BF16", wk.ravel())
    write_model("%s/%s" % (out, name),
                [("layers.0.mlp.weight", wdt, w.shape, wbytes),
                 ("position_ids", "I64", p.shape, p.tobytes()),
                 ("causal_mask", "BOOL", mask.shape, mask.tobytes())] + extra)
EOF
}
export PCBM_ROOT

for v in same ibytes ishape f32task f64 fp8 gptq bnb; do family "$TMP/$v" "$v"; done
m() { local fam=$1; shift; "$PCBM_BIN" merge --base "$fam/base" "$@" "$fam/task1" "$fam/task2"; }

# tensor_bytes_equal OUT FAM NAME: the output's tensor NAME has the base's bytes
tensor_bytes_equal() {
    "$PY" - "$1" "$2/base" "$3" <<'EOF'
import os, sys
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import read_model
a, b = read_model(sys.argv[1])[sys.argv[3]], read_model(sys.argv[2])[sys.argv[3]]
sys.exit(0 if a.dtype == b.dtype and a.shape == b.shape and a.raw.tobytes() == b.raw.tobytes() else 1)
EOF
}

equal_ok() {
    local out
    out=$(m "$TMP/same" --out "$TMP/o-same" 2>&1) && ! grep -q "position_ids\|causal_mask" <<<"$out" &&
        tensor_bytes_equal "$TMP/o-same" "$TMP/same" position_ids &&
        tensor_bytes_equal "$TMP/o-same" "$TMP/same" causal_mask
}
check equal-integer-tensors-copied-quietly equal_ok

expect_fail differing-bytes-refused \
    "tensor position_ids \(I64\) differs between the base .* and task model 2 .* from its byte 136 .*take-nonfloat base" \
    m "$TMP/ibytes" --out "$TMP/o-ib"
check differing-bytes-nothing-published test ! -e "$TMP/o-ib" -a ! -e "$TMP/o-ib.partial"
expect_fail differing-bytes-dry-run \
    "tensor position_ids \(I64\) differs" m "$TMP/ibytes" --out "$TMP/o-ib" --dry-run
take_ok() {
    local out
    out=$(m "$TMP/ibytes" --out "$TMP/o-ibt" --take-nonfloat base 2>&1) &&
        grep -q "tensor position_ids (I64) differs .* the base's is copied" <<<"$out" &&
        tensor_bytes_equal "$TMP/o-ibt" "$TMP/ibytes" position_ids
}
check differing-bytes-take-base take_ok
expect_fail differing-shape-refused \
    "position_ids: base I64\[32\], .*task2 I64\[33\] \(not a float tensor" m "$TMP/ishape" --out "$TMP/o-is"
take_shape_ok() {
    local out
    out=$(m "$TMP/ishape" --out "$TMP/o-ist" --take-nonfloat base 2>&1) &&
        grep -q "tensor position_ids: base I64\[32\], task model 2 .* I64\[33\]; the base's is copied" <<<"$out" &&
        tensor_bytes_equal "$TMP/o-ist" "$TMP/ishape" position_ids
}
check differing-shape-take-base take_shape_ok
expect_fail take-nonfloat-bad-value "--take-nonfloat takes 'base'" \
    m "$TMP/same" --out "$TMP/o-x" --take-nonfloat task1

expect_fail fp8-per-tensor-scale-refused \
    "task model 2 \(.*task2\): tensor layers.0.proj.weight is F8_E4M3 without a block scale tensor" \
    m "$TMP/fp8" --out "$TMP/o-fp8" --allow-extra
expect_fail gptq-refused "is a GPTQ/AWQ-quantized checkpoint \(tensor layers.0.proj.qweight\)" \
    m "$TMP/gptq" --out "$TMP/o-gptq" --allow-extra
expect_fail bnb-refused "is a bitsandbytes-quantized checkpoint \(tensor layers.0.proj.weight.absmax\)" \
    m "$TMP/bnb" --out "$TMP/o-bnb" --allow-extra

# An F32 task of a BF16 base: every element within 1 ulp of the reference, kept counts equal.
ref_case f32-task-of-bf16-base-ta  "$TMP/f32task" 2 --cmp "--max-ulp 1" --method task_arithmetic
ref_case f32-task-of-bf16-base-pcb "$TMP/f32task" 2 --method pcb --density 0.3
# F64 tensors are merged (in float32, like every dtype) and written as F64.
ref_case f64-ta  "$TMP/f64" 2 --cmp "--max-ulp 1" --method task_arithmetic
# (3,072 elements: the 3 that PCB puts more than 1 ulp from the reference are the same 3 when this
# family is stored as F32 — exp/tanh's last ulp near the threshold, docs/semantics.md — hence 1e-3)
ref_case f64-pcb "$TMP/f64" 2 --cmp "--max-mismatch 1e-3 --base $TMP/f64/base" --method pcb --density 0.3
finish

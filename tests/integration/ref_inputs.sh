#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_inputs.sh — the generator and unusual inputs: pcbm-gen is deterministic (task i depends only
# on the seed and i), --identical-task is byte-identical to the base; pcbmerge refuses a NaN
# (naming the tensor) unless --allow-nonfinite, refuses a task-only tensor unless --allow-extra,
# and then still matches the reference; sharded output compares equal to the reference.
. "$(dirname "$0")/lib.sh"
need_ref

A=$TMP/a C=$TMP/c N=$TMP/nan X=$TMP/extra
gen "$A" --tasks 3 --seed 41 --identical-task 3 --jobs 1
gen "$C" --tasks 2 --seed 41 --shard-size 40K
CASES=$((CASES + 1))
if cmp -s "$A/base/model.safetensors" "$A/task3/model.safetensors" &&
    "$PY" - "$PCBM_ROOT/tests/reference" "$A" "$C" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import read_model
for m in ("base", "task1", "task2"):
    a, c = read_model(sys.argv[2] + "/" + m), read_model(sys.argv[3] + "/" + m)
    assert list(a) == list(c), m
    assert all(a[n].raw.tobytes() == c[n].raw.tobytes() for n in a), m
PYEOF
then
    echo "ok   generator deterministic across task counts, shardings and jobs; identical task"
else
    echo "FAIL generator determinism"
    FAILED+=(generator)
fi

gen "$N" --tasks 2 --seed 42 --nonfinite model.norm.weight
expect_fail nan-refused 'model\.norm\.weight' \
    "$PCBM_BIN" merge --base "$N/base" --out "$TMP/nan.out" --quiet "$N/task1" "$N/task2"
ref_case nan-allowed-ta "$N" 2 --cmp "--max-ulp 1 --no-kept" --method task_arithmetic --allow-nonfinite

gen "$X" --tasks 3 --seed 43 --extra-task-tensor
expect_fail extra-refused 'extra_task_head' \
    "$PCBM_BIN" merge --base "$X/base" --out "$TMP/extra.out" --quiet $(task_dirs "$X" 3)
ref_case extra-allowed-pcb "$X" 3 --method pcb --density 0.1 --allow-extra
ref_case sharded-output    "$C" 2 --method pcb --density 0.1 --shard-size 30K
finish

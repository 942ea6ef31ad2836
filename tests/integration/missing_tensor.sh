#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# missing_tensor.sh — a task model that lacks a tensor: the other tasks merge it and that task
# takes no part in it (absent_tensor.sh compares every method with the references); the warning,
# merge_report.json ("partial": tensor, the tasks missing it) and --dry-run name the tensor and
# the task; --require-all refuses such a merge naming both.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
need_numpy

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset tiny --seed 37
GONE=model.layers.0.mlp.up_proj.weight
# task2 without $GONE: the file rewritten with every other tensor, data packed
"$PY" - "$F/task2/model.safetensors" "$GONE" <<'EOF' || fail "cannot drop $GONE"
import json, struct, sys
path, gone = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out, blob = {}, b""
for name, t in sorted((k, v) for k, v in head.items() if k != "__metadata__"):
    if name == gone:
        continue
    a, b = t["data_offsets"]
    out[name] = dict(t, data_offsets=[len(blob), len(blob) + b - a])
    blob += data[a:b]
if "__metadata__" in head:
    out["__metadata__"] = head["__metadata__"]
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + blob)
EOF

named_everywhere() {
    local log
    log=$("$PCBM_BIN" merge --threads 1 --base "$F/base" --out "$TMP/o" "$F/task1" "$F/task2" 2>&1) ||
        { echo "    $log"; return 1; }
    grep -q "warning: tensor $GONE is missing from task model 2 ($F/task2): merged over the other tasks" <<<"$log" ||
        { echo "    $log"; return 1; }
    "$PY" - "$TMP/o/merge_report.json" "$GONE" "$F/task2" <<'EOF' || return 1
import json, sys
rep, gone, task = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
e = [c for c in rep["partial"] if c["tensor"] == gone]
assert e and e[0]["tasks_missing_it"] == [{"task": 2, "task_path": task}], rep["partial"]
assert rep["partial_listed"] == rep["tensors_partial"] == 1, rep
assert not [c for c in rep["copied"] if c["tensor"] == gone], rep["copied"]
assert [w for w in rep["warnings"] if gone in w and "missing from task model 2" in w], rep["warnings"]
EOF
    log=$("$PCBM_BIN" merge --dry-run --base "$F/base" --out "$TMP/d" "$F/task1" "$F/task2" 2>&1)
    grep -q "partial: $GONE (missing from task 2 ($F/task2): merged over the other tasks)" <<<"$log" ||
        { echo "    $log"; return 1; }
}
check "the tensor and the task are named in the warning, the report and the dry run" named_everywhere

expect_fail "--require-all refuses, naming tensor and task" \
    "missing from some task model \(the first: $GONE, from task model 2, .*--require-all refuses" \
    "$PCBM_BIN" merge --require-all --base "$F/base" --out "$TMP/r" "$F/task1" "$F/task2"
CASES=$((CASES + 1))
if [ -e "$TMP/r" ] || [ -e "$TMP/r.partial" ]; then
    echo "FAIL the refusal left files"; FAILED+=("the refusal left files")
else echo "ok   the refusal leaves nothing"; fi
finish

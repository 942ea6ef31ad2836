#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_pcb_stream.sh — PCB's default two-read streaming statistics where they are the default:
# a 70M-element family (bf16, and f16), merged without options that force a mode, against the
# NumPy reference. Criteria (spec): at most 1e-4 of elements more than 1 ulp off; kept count per
# task within max(2, 1e-5·d); the report's read ratio at most 2.35 (a 70M model is below the
# 100M parameters from which the 1/16 sample cap and 2.1 apply; see README). N = 2, 5, 8.
# Also: the run reports streaming statistics, and f32 outputs take the exact passes instead.
. "$(dirname "$0")/lib.sh"
need_ref
free_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
[ "$free_kb" -gt $((12 * 1024 * 1024)) ] || skip "needs 12 GiB of free memory for the in-memory reference"

B=$TMP/big
gen "$B" --tasks 8 --dtype bf16 --params 70M --seed 21
ref_case stream-bf16-n2 "$B" 2 --method pcb --density 0.1
ref_case stream-bf16-n5 "$B" 5 --method pcb --density 0.05 --lambdas 1,0.8,1.2,1,0.9
ref_case stream-bf16-n8 "$B" 8 --method pcb --density 0.2

# the read ratio and the statistics used, from a kept report
out=$TMP/report-run
# shellcheck disable=SC2046
"$PCBM_BIN" merge --quiet --base "$B/base" --out "$out" $(task_dirs "$B" 3) >/dev/null 2>&1 ||
    fail "merge for the report failed"
"$PY" - "$out/merge_report.json" <<'PY' || FAILED+=(report)
import json, sys
r = json.load(open(sys.argv[1]))
how, ratio = r.get("stats", ""), r["read_ratio"]
print(f"report: stats = {how!r}; read ratio {ratio:.3f}")
assert how.startswith("streaming"), "the default statistics of a 70M bf16 merge should stream"
assert ratio <= 2.35, f"read ratio {ratio} > 2.35"
PY
CASES=$((CASES + 1))
rm -rf "$out"
finish

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# cli_progress.sh — what a merge prints: --progress json gives JSON lines (pass, bytes, total,
# rate, eta; pass k of n and the whole merge's bytes and ETA), a final line per pass and a
# completion record; the summary names every pass with bytes and time, the
# read ratio, peak memory and the I/O backend; --progress none prints no JSON; --quiet prints
# nothing at all on success; --help and --version work; usage errors exit 2.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
need_numpy

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset small --seed 61
T="$F/task1 $F/task2"
json_lines() {
    # shellcheck disable=SC2086
    "$PCBM_BIN" merge --progress json --base "$F/base" --out "$TMP/j" $T 2>"$TMP/j.err" || return 1
    grep '^{' "$TMP/j.err" | "$PY" -c '
import json, sys
passes, lines = set(), [json.loads(l) for l in sys.stdin]
done = lines.pop()
assert done.get("done") is True and done["status"] == "ok" and done["passes"] >= 2, done
last_index = 0
for d in lines:
    assert set(d) >= {"pass", "bytes", "total", "rate", "eta", "pass_index", "pass_count",
                      "merge_bytes", "merge_total", "merge_eta"}, d
    assert 0 <= d["bytes"] <= d["total"], d
    assert 0 <= d["merge_bytes"] <= d["merge_total"], d
    assert last_index <= d["pass_index"] <= d["pass_count"], d
    last_index = d["pass_index"]
    passes.add(d["pass"])
ends = [d for d in lines if d.get("end")]
assert len(ends) == done["passes"] and ends[-1]["pass"] == "apply", ends
assert ends[-1]["merge_bytes"] == done["bytes"] > 0, (ends[-1], done)
assert "apply" in passes, passes
' && grep -q "pass apply .*read .*wrote" "$TMP/j.err" && grep -q "peak memory" "$TMP/j.err" &&
        grep -Eq "x the inputs.*I/O (io_uring|pread)" "$TMP/j.err"
}
check "--progress json: JSON lines per pass, then the summary" json_lines
none() {
    # shellcheck disable=SC2086
    "$PCBM_BIN" merge --progress none --base "$F/base" --out "$TMP/n" $T 2>"$TMP/n.err" &&
        ! grep -q '^{' "$TMP/n.err" && grep -q "wrote $TMP/n" "$TMP/n.err"
}
check "--progress none: summary only" none
quiet() {
    local out
    # shellcheck disable=SC2086
    out=$("$PCBM_BIN" merge --quiet --base "$F/base" --out "$TMP/q" $T 2>&1) && [ -z "$out" ]
}
check "--quiet: nothing printed on success" quiet
usage() {
    "$PCBM_BIN" --help | grep -q "pcbmerge merge\|merge --base" && "$PCBM_BIN" --version | grep -q "^pcbmerge [0-9]" &&
        { "$PCBM_BIN" merge --bogus >/dev/null 2>&1; [ $? -eq 2 ]; } &&
        { "$PCBM_BIN" merge --base "$F/base" >/dev/null 2>&1; [ $? -eq 2 ]; } &&
        { "$PCBM_BIN" frobnicate >/dev/null 2>&1; [ $? -eq 2 ]; }
}
check "--help, --version, usage errors exit 2" usage
finish

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run.sh — the whole suite: every unit-test binary (cmocka) and every integration script.
# Integration scripts exit 0 (pass), 77 (skipped, with a reason on stdout) or anything else (fail).
# Ends with one line "tests: N passed, N failed, N skipped" and a non-zero exit on any failure.
set -u
BUILD=${BUILD:-build}
export BUILD
export PCBM_BIN="$PWD/$BUILD/pcbmerge"
export PCBM_TOOLS="$PWD/$BUILD/tools"
export PCBM_ROOT="$PWD"
passed=0 failed=0 skipped=0
failures=()
log_dir="$BUILD/test-logs"
mkdir -p "$log_dir"

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    out="$log_dir/$name.log"
    if "$t" >"$out" 2>&1; then rc=0; else rc=$?; fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
    if [ "$rc" -ne 0 ]; then
        failures+=("$name")
        echo "FAIL $name (log: $out)"
        tail -n 30 "$out" | sed 's/^/    /'
    else
        echo "ok   $name ($p tests)"
    fi
done

for t in tests/integration/*.sh; do
    [ "$(basename "$t")" = lib.sh ] && continue   # helpers sourced by the scripts
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    out="$log_dir/$name.log"
    start=$(date +%s)
    if bash "$t" >"$out" 2>&1; then rc=0; else rc=$?; fi
    secs=$(( $(date +%s) - start ))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1)); echo "ok   $name (${secs}s)"
    elif [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1)); echo "SKIP $name: $(tail -n 1 "$out")"
    else
        failed=$((failed + 1)); failures+=("$name")
        echo "FAIL $name (exit $rc, log: $out)"
        tail -n 30 "$out" | sed 's/^/    /'
    fi
done

echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

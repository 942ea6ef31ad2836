#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# dry_run.sh — `merge --dry-run` checks every input and says what the merge would do (tensors
# merged and copied with the reason, bytes to read and write, free space needed and available,
# what happens to an existing output) and writes nothing: no OUT, no OUT.partial, no file
# touched; a merge that would be refused (existing OUT, mismatched models, too little space) is
# refused the same way, exit 1.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset tiny --seed 31

says_and_writes_nothing() {
    local log
    log=$("$PCBM_BIN" merge --dry-run --exclude norm --base "$F/base" --out "$TMP/o" "$F/task1" \
        "$F/task2" 2>&1) || { echo "    $log"; return 1; }
    [ ! -e "$TMP/o" ] && [ ! -e "$TMP/o.partial" ] || { echo "    something was written"; return 1; }
    grep -q "dry run: pcb merge of 2 task model(s): 16 tensor(s) merged" <<<"$log" &&
        grep -q "copied: model.norm.weight (BF16: excluded" <<<"$log" &&
        grep -q "writes: 1 output file(s)" <<<"$log" && grep -q "free space: .* needed" <<<"$log" &&
        grep -q "nothing was written" <<<"$log" || { echo "    $log"; return 1; }
    # the real merge agrees with what the dry run said it would merge
    "$PCBM_BIN" merge --quiet --exclude norm --base "$F/base" --out "$TMP/real" "$F/task1" \
        "$F/task2" || return 1
    grep -q '"tensors_merged": 16' "$TMP/real/merge_report.json" || { echo "    report differs"; return 1; }
}
check "says what it would do and writes nothing" says_and_writes_nothing

refuses_as_the_merge_would() {
    mkdir -p "$TMP/exists"
    local log
    log=$("$PCBM_BIN" merge --dry-run --base "$F/base" --out "$TMP/exists" "$F/task1" 2>&1)
    [ $? -eq 1 ] && grep -q "would be refused: output .* already exists" <<<"$log" ||
        { echo "    $log"; return 1; }
    gen "$TMP/other" --tasks 1 --dtype bf16 --preset small --seed 32
    log=$("$PCBM_BIN" merge --dry-run --base "$F/base" --out "$TMP/o2" "$TMP/other/task1" 2>&1)
    [ $? -eq 1 ] && grep -q "differ in shape" <<<"$log" || { echo "    $log"; return 1; }
    [ ! -e "$TMP/o2.partial" ]
}
check "refuses as the merge would" refuses_as_the_merge_would
finish

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# stats_file.sh — the statistics file (merge_stats.json.zst) saved by pcb, ties and dare_ties:
# replaying it with --stats skips every statistics pass and gives the same bytes as a full run
# (same λ, and a changed λ, global and tensor scope); it is refused, with a message that says
# why, when the parameters that shaped it, the inputs or their order changed, when it is damaged,
# and for methods without statistics.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset small --seed 31
T="$F/task1 $F/task2 $F/task3"
same() { # OUT_A OUT_B: identical weights and index
    for f in "$1"/model*.safetensors*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}
run() { "$PCBM_BIN" merge --quiet --base "$F/base" "$@"; }

for m in "pcb" "pcb --scope tensor" "ties" "ties --scope tensor" "dare_ties --seed 3"; do
    tag=$(echo "$m" | tr -d ' -')
    CASES=$((CASES + 1))
    # shellcheck disable=SC2086
    if run --out "$TMP/a-$tag" --method $m $T &&
        run --out "$TMP/b-$tag" --method $m --lambda 0.7 $T &&
        run --out "$TMP/c-$tag" --method $m --lambda 0.7 --stats "$TMP/a-$tag/merge_stats.json.zst" $T &&
        run --out "$TMP/d-$tag" --method $m --stats "$TMP/a-$tag/merge_stats.json.zst" $T &&
        same "$TMP/b-$tag" "$TMP/c-$tag" && same "$TMP/a-$tag" "$TMP/d-$tag" &&
        grep -q '"replayed from --stats"' "$TMP/c-$tag/merge_report.json" &&
        ! grep -q '"stats [0-9]' "$TMP/c-$tag/merge_report.json"; then
        echo "ok   $m: --stats replays give the bytes of full runs, with no statistics pass"
    else
        echo "FAIL $m: --stats replay differs from a full run"
        FAILED+=("replay-$tag")
    fi
done

S=$TMP/a-pcb/merge_stats.json.zst
expect_fail stats-density 'computed with other parameters \(density' \
    run --out "$TMP/x1" --density 0.2 --stats "$S" $T
expect_fail stats-clamp 'clamp_ratio' run --out "$TMP/x2" --clamp-ratio 1e-3 --stats "$S" $T
expect_fail stats-method 'method' run --out "$TMP/x3" --method ties --stats "$S" $T
expect_fail stats-order 'other inputs: task model 1' \
    run --out "$TMP/x4" --stats "$S" "$F/task2" "$F/task1" "$F/task3"
expect_fail stats-count 'computed for 3 task models; this merge has 2' \
    run --out "$TMP/x5" --stats "$S" "$F/task1" "$F/task2"
head -c 200 "$S" > "$TMP/damaged.zst"
expect_fail stats-damaged 'is damaged|not a pcbmerge statistics file' \
    run --out "$TMP/x6" --stats "$TMP/damaged.zst" $T
expect_fail stats-linear 'computes no statistics' run --out "$TMP/x7" --method linear --stats "$S" $T
for x in x1 x2 x3 x4 x5 x6 x7; do
    [ ! -e "$TMP/$x" ] && [ ! -e "$TMP/$x.partial" ] || { echo "FAIL: $x left output behind"; FAILED+=("$x-left"); }
done
finish

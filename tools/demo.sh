#!/bin/bash
# demo.sh — `make demo`: generate a small deterministic Llama-shaped family (a base and three
# fine-tunes, bf16, sharded), inspect it, merge it with PCB and the baselines, and show what each
# merge did. Everything lands in $BUILD/demo (regenerated on every run).
set -euo pipefail
BUILD=${BUILD:-build}
BIN="$BUILD/pcbmerge"
GEN="$BUILD/tools/pcbm-gen"
DEMO="$BUILD/demo"

rm -rf "$DEMO"
mkdir -p "$DEMO"
echo "== 1. generating the example family (seed 1): base + 3 task models, bf16, ~5M parameters"
"$GEN" --out "$DEMO/family" --preset small --tasks 3 --dtype bf16 --seed 1 --shard-size 4MB --quiet
echo
echo "== 2. pcbmerge inspect $DEMO/family/base (first tensors and totals)"
"$BIN" inspect "$DEMO/family/base" | { head -n 6; echo "   ..."; tail -n 1; }
echo
T="$DEMO/family/task1 $DEMO/family/task2 $DEMO/family/task3"
for m in pcb ties task_arithmetic; do
    echo "== 3. pcbmerge merge --method $m --mem 64M"
    # shellcheck disable=SC2086
    "$BIN" merge --base "$DEMO/family/base" --out "$DEMO/merged-$m" --method $m --mem 64M \
        --progress none $T
    echo
done
echo "== 4. the merged PCB model"
"$BIN" inspect "$DEMO/merged-pcb" | tail -n 1
ls -l "$DEMO/merged-pcb"
echo
echo "demo done: merged models are in $DEMO/merged-*; each has a merge_report.json"

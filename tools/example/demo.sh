#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# demo.sh — `make demo`: generate a small deterministic Llama-shaped family (a base and three
# fine-tunes, bf16, sharded), inspect it, merge it with PCB and the baselines, and show what each
# merge did, and the same merge split into 3 parts (plan, stats rounds, reduce, apply,
# finalize: the phases a Slurm array or a Kubernetes Indexed Job runs). Then the worked example on really trained models: train a small multi-task problem
# (a pre-trained MLP and four fine-tuned task models, tools/example/example-train.c), merge it with
# linear, task_arithmetic, ties and pcb, score every merge (tools/example/example-eval.c) in one table,
# and run a short coefficient search (pcbmerge search) with its gain. Everything lands in
# $BUILD/demo (regenerated on every run); every number is deterministic.
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
echo "== 4b. the same pcb merge split into 3 parts, as a job array would run it (one process each)"
# shellcheck disable=SC2086
"$BIN" plan --base "$DEMO/family/base" --out "$DEMO/split-pcb" --mem 64M --shard-size 2MB \
    --parts 3 $T
while [ "$("$BIN" status --plan "$DEMO/split-pcb" --get next)" = stats ]; do
    for i in 0 1 2; do "$BIN" stats --plan "$DEMO/split-pcb" --part $i --quiet; done
    "$BIN" reduce --plan "$DEMO/split-pcb" --quiet
done
for i in 0 1 2; do SLURM_ARRAY_TASK_ID=$i "$BIN" apply --plan "$DEMO/split-pcb"; done
"$BIN" finalize --plan "$DEMO/split-pcb"
"$BIN" merge --quiet --base "$DEMO/family/base" --out "$DEMO/merged-pcb-2MB" --mem 64M \
    --shard-size 2MB --progress none $T
same=yes
for f in "$DEMO"/merged-pcb-2MB/*; do
    case $(basename "$f") in merge_report.json | pcbmerge.manifest.json) continue ;; esac
    cmp -s "$f" "$DEMO/split-pcb/$(basename "$f")" || same=no
done
echo "split merge vs one-machine merge: every model file identical: $same"
echo

# ---- The worked example: really trained models --------------------------------------------------
EX="$DEMO/example"
TRAIN="$BUILD/tools/example-train"
EVAL="$BUILD/tools/example-eval"
echo
echo "== 5. worked example: a pre-trained MLP and 4 task models fine-tuned from it (seed 1)"
"$TRAIN" --out "$EX" --tasks 4 --seed 1
ET="$EX/task1 $EX/task2 $EX/task3 $EX/task4"
# The classification heads stay out of the merge: each task keeps its own (example-eval puts it
# on the merged body).
emerge() { # NAME MERGE_OPTIONS...
    local name=$1
    shift
    # shellcheck disable=SC2086
    "$BIN" merge --quiet --progress none --exclude '^head\.' --base "$EX/base" \
        --out "$EX/merged-$name" "$@" $ET
}
echo
echo "== 6. merging the body with linear, task_arithmetic, ties and pcb (heads excluded)"
emerge linear --method linear
emerge task_arithmetic --method task_arithmetic --lambda 0.3
emerge ties --method ties --density 0.2
emerge pcb --method pcb --density 0.2
echo "   merged into $EX/merged-{linear,task_arithmetic,ties,pcb}"
echo
echo "== 7. test accuracy (%) of each merge, every task with its own head"
"$EVAL" --family "$EX" --table --split test \
    "linear (equal weights)=$EX/merged-linear" \
    "task_arithmetic (λ=0.3)=$EX/merged-task_arithmetic" \
    "ties (k=0.2, λ=1)=$EX/merged-ties" \
    "pcb (r=0.2, λ=1)=$EX/merged-pcb"
echo
echo "== 8. pcbmerge search: CMA-ES over the 4 PCB coefficients, 40 evaluations on the validation sets"
# shellcheck disable=SC2086
"$BIN" search --quiet --progress none --exclude '^head\.' --base "$EX/base" --out "$EX/searched" \
    --method pcb --density 0.2 --budget 40 --seed 1 \
    --eval-cmd "$EVAL --family $EX --split val --model {model}" $ET
before=$("$EVAL" --family "$EX" --split test --model "$EX/merged-pcb" | tail -n 1)
after=$("$EVAL" --family "$EX" --split test --model "$EX/searched" | tail -n 1)
awk -v b="$before" -v a="$after" 'BEGIN {
    printf "gain on the test sets: mean accuracy %.1f%% at λ = 1 -> %.1f%% at the searched λ (%+.1f points)\n",
        100 * b, 100 * a, 100 * (a - b) }'
echo
echo "demo done: merged models are in $DEMO/merged-* and $EX/merged-*; each has a merge_report.json;"
echo "the searched model, its search_log.jsonl and search_summary.json are in $EX/searched"

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench-split.sh — `make bench`, split merges: wall time of the apply phase of one merge split into
# K parts that run at once on this machine (one process per part, cores/K threads each), inputs
# in the page cache, for K = 1 and K = the core count (and K = 4 beside it when there are fewer
# cores: more parts than cores shows the cost of over-subscription). Also the statistics phase
# (every round: the parts' stats at once, then reduce) and checks that every K gives the bytes
# of K = 1. The family is bench.sh's (bench-data/family-bf16-n3-540M: a base + 3 tasks, 540M bf16
# elements each), its output cut into 256 MB shards so that parts have whole files to own, written
# to tmpfs (/dev/shm; BENCH_SPLIT_OUT) so that the disk's write speed of the minute stays out.
# Prints a table; writes bench-data/bench-split.json (BENCH_SPLIT_JSON).
# Each K runs BENCH_SPLIT_REPS times (default 2); the table gives the best time of each phase.
# Environment: BUILD, BENCH_DATA, BENCH_PARAMS (540M), BENCH_METHOD (pcb), BENCH_MEM (1G per
# part), BENCH_SPLIT_K ("1 NPROC 4"), BENCH_SPLIT_REPS (2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/pcbmerge
DATA=${BENCH_DATA:-$ROOT/bench-data}
PARAMS=${BENCH_PARAMS:-540M}
METHOD=${BENCH_METHOD:-pcb}
MEM=${BENCH_MEM:-1G}
NPROC=$(nproc)
KS=${BENCH_SPLIT_K:-$(printf '%s\n' 1 "$NPROC" 4 | awk '!seen[$0]++' | tr '\n' ' ')}
JSON=${BENCH_SPLIT_JSON:-$DATA/bench-split.json}
REPS=${BENCH_SPLIT_REPS:-2}
FAM=$DATA/family-bf16-n3-$PARAMS
say() { echo "bench-split: $*" >&2; }

[ -x "$BIN" ] || { say "$BIN is missing: run make all"; exit 1; }
if [ ! -f "$FAM/.stamp" ]; then
    say "generating $FAM (once, then cached)"
    rm -rf "$FAM"
    "$BUILD/tools/pcbm-gen" --quiet --out "$FAM" --tasks 3 --dtype bf16 --params "$PARAMS" --seed 1
    echo "bf16 tasks=3 params=$PARAMS seed=1" >"$FAM/.stamp"
fi
# outputs in tmpfs when there is one: the phase's own work, not the disk's write speed of the minute
OUTROOT=${BENCH_SPLIT_OUT:-$([ -d /dev/shm ] && echo /dev/shm || echo "$DATA")}
WORK=$(mktemp -d "$OUTROOT/pcbm-split.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cat "$FAM"/base/*.safetensors "$FAM"/task?/*.safetensors >/dev/null   # page cache

now() { date +%s.%N; }
results=()
ref=
# pipeline OUT K THREADS: plan, statistics rounds (parts at once, then reduce), apply (parts at
# once), finalize; sets STATS_S, APPLY_S, ROUNDS
pipeline() {
    local out=$1 K=$2 threads=$3 i p t0 t1 t2
    local RT=(--threads "$threads" --mem "$MEM" --quiet --progress none)
    "$BIN" plan --quiet --method "$METHOD" --shard-size 256MB --base "$FAM/base" --out "$out" \
        --parts "$K" "$FAM/task1" "$FAM/task2" "$FAM/task3"
    t0=$(now)
    ROUNDS=0
    while [ "$("$BIN" status --plan "$out" --get next)" = stats ]; do
        local pids=()
        for ((i = 0; i < K; i++)); do
            PCBM_BUFFERED=1 "$BIN" stats --plan "$out" --part $i "${RT[@]}" & pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        "$BIN" reduce --plan "$out" "${RT[@]}"
        ROUNDS=$((ROUNDS + 1))
    done
    t1=$(now)
    local pids=()
    for ((i = 0; i < K; i++)); do
        PCBM_BUFFERED=1 "$BIN" apply --plan "$out" --part $i "${RT[@]}" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t2=$(now)
    "$BIN" finalize --plan "$out" --quiet
    STATS_S=$(echo "$t1 - $t0" | bc -l)
    APPLY_S=$(echo "$t2 - $t1" | bc -l)
}
min() { echo "if ($1 < $2) $1 else $2" | bc -l; }

for K in $KS; do
    threads=$((NPROC / K))
    [ $threads -ge 1 ] || threads=1
    best_stats=999999 best_apply=999999 same=true
    for ((r = 1; r <= REPS; r++)); do
        out=$WORK/k$K-$r
        pipeline "$out" "$K" "$threads"
        best_stats=$(min "$STATS_S" "$best_stats")
        best_apply=$(min "$APPLY_S" "$best_apply")
        if [ -z "$ref" ]; then
            ref=$out
        else
            for f in "$ref"/*.safetensors "$ref"/*.json; do
                case $(basename "$f") in merge_report.json | pcbmerge.manifest.json) continue ;; esac
                cmp -s "$f" "$out/$(basename "$f")" || same=false
            done
            rm -rf "$out"
        fi
    done
    stats_s=$(printf '%.4f' "$best_stats") apply_s=$(printf '%.4f' "$best_apply") rounds=$ROUNDS
    say "K=$K: statistics $rounds round(s) $(printf %.2f "$stats_s") s, apply $(printf %.2f "$apply_s") s (best of $REPS), same bytes as K=1: $same"
    results+=("{\"parts\": $K, \"threads_per_part\": $threads, \"stats_rounds\": $rounds, \"stats_seconds\": $stats_s, \"apply_seconds\": $apply_s, \"same_bytes_as_k1\": $same}")
done
input=$(cat "$FAM"/base/*.safetensors "$FAM"/task?/*.safetensors | wc -c)
{
    echo "{\"method\": \"$METHOD\", \"cores\": $NPROC, \"reps\": $REPS, \"input_bytes\": $input, \"runs\": ["
    (IFS=,; echo "${results[*]}")
    echo "]}"
} >"$JSON"
/usr/bin/python3 - "$JSON" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
base = r["runs"][0]
print(f"split merge ({r['method']}, {r['input_bytes'] / 1e9:.2f} GB of inputs in the page cache, {r['cores']} cores): K parts at once, cores/K threads each, best of {r['reps']}")
print(f"{'K':>3} {'threads':>7} {'stats s':>8} {'apply s':>8} {'apply GB/s':>10} {'apply vs K=1':>12} {'bytes = K=1':>11}")
for x in r["runs"]:
    print(f"{x['parts']:>3} {x['threads_per_part']:>7} {x['stats_seconds']:8.2f} {x['apply_seconds']:8.2f} "
          f"{r['input_bytes'] / x['apply_seconds'] / 1e9:10.2f} {base['apply_seconds'] / x['apply_seconds']:11.2f}x "
          f"{'yes' if x['same_bytes_as_k1'] else 'NO':>11}")
EOF

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# golden-check.sh — byte-for-byte comparison of two pcbmerge binaries over every method, scope and
# mode on generated families (bf16, f16, f32; N = 2, 3, 5, 8), with the new binary run under each
# kernel level (PCBM_CPU=scalar|avx2|avx512, clamped to the CPU). Used before every change to a
# kernel: a speed-up must not move a single output bit. Not part of `make test` (CI has no golden
# binary); run it by hand:
#
#   tools/testing/golden-check.sh GOLDEN_BIN NEW_BIN [WORKDIR]
#
# Every output file except merge_report.json (timings) and the manifest (which hashes the report)
# is compared with cmp; a run that fails must fail in both binaries with the same exit status.
# Families and the golden outputs are cached in WORKDIR (default /tmp/pcbm-golden), keyed by the
# golden binary's checksum.
# Environment: GC_LEVELS (default "scalar avx2 avx512"), GC_PARAMS (family size, default 300K),
# GC_SKIP="NAME..." leaves out more files, ones the two binaries are meant to write differently
# (config.json across the change that made its torch_dtype follow --dtype).
# GC_LARGE=DIR also compares pcb/ties/task_arithmetic on an existing large family DIR (base, task1..).
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 GOLDEN_BIN NEW_BIN [WORKDIR]" >&2
    exit 2
fi
GOLD=$(readlink -f "$1")
NEW=$(readlink -f "$2")
WORK=${3:-/tmp/pcbm-golden}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GEN=${PCBM_TOOLS:-$ROOT/build/tools}/pcbm-gen
LEVELS=${GC_LEVELS:-scalar avx2 avx512}
PARAMS=${GC_PARAMS:-300K}
for b in "$GOLD" "$NEW" "$GEN"; do
    [ -x "$b" ] || { echo "golden-check: $b is not an executable" >&2; exit 2; }
done
mkdir -p "$WORK"
GSUM=$(sha256sum "$GOLD" | cut -c1-16)
GDIR=$WORK/golden-$GSUM
mkdir -p "$GDIR"

fails=0 runs=0

family() { # family NAME GEN_OPTIONS...: generate once into $WORK/fam/NAME
    local name=$1
    shift
    local dir=$WORK/fam/$name
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir"
        "$GEN" --quiet --out "$dir" --params "$PARAMS" "$@" || { echo "pcbm-gen $* failed" >&2; exit 1; }
        touch "$dir/.done"
    fi
    echo "$dir"
}

lambdas() { # lambdas N: N distinct coefficients
    local i out=""
    for ((i = 1; i <= $1; i++)); do out+="${out:+,}0.$((5 + i % 5))$i"; done
    echo "$out"
}

# run BIN OUT LEVEL FAMILY N OPTIONS...: merge; prints the exit status
run_merge() {
    local bin=$1 out=$2 level=$3 fam=$4 n=$5
    shift 5
    local tasks=() i
    for ((i = 1; i <= n; i++)); do tasks+=("$fam/task$i"); done
    rm -rf "$out" "$out.partial"
    local env=()
    [ "$level" != default ] && env=(PCBM_CPU="$level")
    env "${env[@]}" "$bin" merge --base "$fam/base" --out "$out" --progress none --quiet "$@" \
        "${tasks[@]}" >"$out.log" 2>&1
    echo $?
}

# compare_dirs GOLDEN NEW: 0 when every file of GOLDEN but the report and manifest is in NEW, identical
# (.zst files: identical once decompressed, as the framing may change). Files that only NEW has
# (a manifest, say) are not outputs of the merge and are ignored.
compare_dirs() {
    local a=$1 b=$2 f rc=0
    local skip=() x
    for x in ${GC_SKIP:-}; do skip+=(! -name "$x"); done
    for f in $(cd "$a" && find . -type f ! -name merge_report.json ! -name pcbmerge.manifest.json \
        "${skip[@]}" | sort); do
        if [ ! -f "$b/$f" ]; then
            echo "    $f is missing"
            rc=1
        elif [ "${f%.zst}" != "$f" ]; then
            if ! cmp -s <(zstd -qdc "$a/$f") <(zstd -qdc "$b/$f"); then
                echo "    $f differs (decompressed)"
                rc=1
            fi
        elif ! cmp -s "$a/$f" "$b/$f"; then
            echo "    $f differs: $(cmp "$a/$f" "$b/$f" 2>&1 | head -1)"
            rc=1
        fi
    done
    return $rc
}

# case NAME FAMILY N OPTIONS...
check_case() {
    local name=$1 fam=$2 n=$3
    shift 3
    local key
    key=$(basename "$fam")-$name
    local g=$GDIR/$key
    if [ ! -f "$g.rc" ]; then
        run_merge "$GOLD" "$g" default "$fam" "$n" "$@" >"$g.rc"
    fi
    local grc
    grc=$(cat "$g.rc")
    local lv
    for lv in $LEVELS; do
        local o=$WORK/new/$key-$lv
        mkdir -p "$WORK/new"
        local rc
        rc=$(run_merge "$NEW" "$o" "$lv" "$fam" "$n" "$@")
        runs=$((runs + 1))
        if [ "$rc" != "$grc" ]; then
            echo "FAIL $key [$lv]: exit $rc, golden exit $grc ($(tail -1 "$o.log"))"
            fails=$((fails + 1))
        elif [ "$rc" = 0 ] && ! compare_dirs "$g" "$o"; then
            echo "FAIL $key [$lv]: outputs differ"
            fails=$((fails + 1))
        fi
        rm -rf "$o"
    done
}

cases_for() { # cases_for FAMILY N DTYPE
    local fam=$1 n=$2 dt=$3
    local L
    L=$(lambdas "$n")
    check_case pcb "$fam" "$n"
    check_case pcb-exact "$fam" "$n" --exact
    check_case pcb-tensor "$fam" "$n" --scope tensor
    check_case pcb-streaming "$fam" "$n" --streaming
    check_case pcb-lambdas "$fam" "$n" --lambdas "$L" --density 0.3 --clamp-ratio 1e-3
    check_case pcb-streaming-lam "$fam" "$n" --streaming --lambdas "$L" --density 0.05
    check_case pcb-blocks "$fam" "$n" --block-size 10006 --threads 1
    check_case ties "$fam" "$n"
    check_case ties-tensor "$fam" "$n" --scope tensor --density 0.2 --lambda 1.3
    check_case dare-ties "$fam" "$n" --method dare_ties --density 0.5 --seed 7
    check_case dare-linear "$fam" "$n" --method dare_linear --density 0.3 --seed 3
    check_case ta "$fam" "$n" --method task_arithmetic --lambda 0.7
    check_case ta-lambdas "$fam" "$n" --method task_arithmetic --lambdas "$L"
    check_case linear "$fam" "$n" --method linear
    check_case linear-w "$fam" "$n" --method linear --weights "$L"
    check_case slerp "$fam" 1 --method slerp --t 0.3
    check_case nuslerp "$fam" 2 --method nuslerp --weights 1,2
    check_case model-stock "$fam" "$n" --method model_stock
    check_case sce "$fam" "$n" --method sce --select-topk 0.3
    case $dt in
    bf16)
        check_case pcb-f32 "$fam" "$n" --dtype f32
        check_case ties-f16 "$fam" "$n" --method ties --dtype f16
        check_case ta-f32 "$fam" "$n" --method task_arithmetic --dtype f32 --block-size 10006 ;;
    f16)
        check_case pcb-bf16 "$fam" "$n" --dtype bf16
        check_case ta-f32 "$fam" "$n" --method task_arithmetic --dtype f32 ;;
    f32)
        check_case pcb-bf16 "$fam" "$n" --dtype bf16
        check_case pcb-streaming-f16 "$fam" "$n" --streaming --dtype f16
        check_case ties-bf16 "$fam" "$n" --method ties --dtype bf16
        check_case linear-f16 "$fam" "$n" --method linear --dtype f16 ;;
    esac
}

t0=$(date +%s)
for dt in bf16 f16 f32; do
    for n in 2 3 5 8; do
        fam=$(family "$dt-n$n" --dtype "$dt" --tasks "$n" --seed "$n")
        cases_for "$fam" "$n" "$dt"
        echo "  $dt N=$n: $runs runs so far, $fails failures ($(( $(date +%s) - t0 ))s)"
    done
done
# Degenerate and non-finite inputs.
fam=$(family bf16-identical --dtype bf16 --tasks 3 --identical-task 2)
check_case pcb "$fam" 3
check_case pcb-streaming "$fam" 3 --streaming
check_case ties "$fam" 3 --method ties
fam=$(family bf16-nan --dtype bf16 --tasks 3 --nonfinite model.layers.0.mlp.up_proj.weight)
for m in pcb ties dare_ties task_arithmetic linear; do
    check_case "$m-refused" "$fam" 3 --method "$m"
    check_case "$m-nonfinite" "$fam" 3 --method "$m" --allow-nonfinite
done
check_case pcb-streaming-nonfinite "$fam" 3 --streaming --allow-nonfinite
check_case pcb-exact-nonfinite "$fam" 3 --exact --allow-nonfinite
fam=$(family f16-nan --dtype f16 --tasks 2 --nonfinite model.layers.0.mlp.up_proj.weight)
check_case pcb-nonfinite "$fam" 2 --allow-nonfinite
check_case ta-nonfinite "$fam" 2 --method task_arithmetic --allow-nonfinite

if [ -n "${GC_LARGE:-}" ]; then
    n=$(ls -d "$GC_LARGE"/task* | wc -l)
    check_case large-pcb "$GC_LARGE" "$n"
    check_case large-pcb-exact "$GC_LARGE" "$n" --exact
    check_case large-ties "$GC_LARGE" "$n" --method ties
    check_case large-ta "$GC_LARGE" "$n" --method task_arithmetic
fi

echo "golden-check: $runs runs, $fails failures ($(( $(date +%s) - t0 ))s)"
[ "$fails" -eq 0 ]

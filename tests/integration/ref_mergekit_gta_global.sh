#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_mergekit_gta_global.sh — `--scope global` for mergekit's sparsifying methods (merge/gta.c):
# ties, dare_ties, dare_linear --mergekit, breadcrumbs, breadcrumbs_ties, della, della_linear with
# every per-task statistic (the cuts, DELLA's ranks, the L1 sums) taken over the whole model.
#   reference   every global form on generated 3-task families (F32; BF16, whose |tau| values
#               repeat, so the cuts fall inside runs of equal values and the global index selects
#               run), against tests/reference/mk_gta.py --scope global (gta_global): at most 1e-5
#               of the elements more than one ulp apart; and unlike tensor scope (the cut moved).
#   determinism every global form, --threads 1 --mem 1G --io pread vs --threads 2 --mem 64M
#               --io uring --block-size 64K: the same bytes; --stats replay of the first merge's
#               statistics: the same model files.
#   split       every global form, a split merge into K=3 parts: the bytes of one merge.
#   usage       slerp with --scope global: exit 2.
#   memory      ties --mergekit and della --scope global at --mem 64M on a family more than 8x larger:
#               peak RSS <= 112 MiB.
. "$(dirname "$0")/lib.sh"
need_ref
need_tool peak-rss
MK_PY=$PCBM_ROOT/tests/reference/mk_gta.py
P=$PCBM_BIN

# mk_case NAME FAMILY MERGE_OPTIONS...: pcbmerge and mk_gta.py --scope global on FAMILY's 3
# tasks, compared; the merge must differ from tensor scope's.
mk_case() {
    local name=$1 fam=$2
    shift 2
    local dir=$TMP/$name tasks log=$TMP/$name.log t0=$SECONDS
    tasks=$(task_dirs "$fam" 3)
    # shellcheck disable=SC2086
    if ! "$P" merge --quiet --scope global --base "$fam/base" --out "$dir.ours" "$@" $tasks \
        >"$log" 2>&1; then
        case_fail "$name" "pcbmerge merge --scope global $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    # shellcheck disable=SC2086
    if ! "$PY" "$MK_PY" merge --scope global --base "$fam/base" --out "$dir.ref" "$@" $tasks \
        >"$log" 2>&1; then
        case_fail "$name" "mk_gta.py --scope global $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    if ! "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --max-mismatch 1e-5 >"$log" 2>&1; then
        case_fail "$name" "$* differs from the reference: $(grep -E '^(float|FAIL)' "$log" | tr '\n' ' ')"
        return
    fi
    local res
    res=$(grep -E '^float elements' "$log" | sed 's/^float elements //')
    # shellcheck disable=SC2086
    "$P" merge --quiet --base "$fam/base" --out "$dir.tensor" "$@" $tasks >"$log" 2>&1 &&
        if same_outputs "$dir.ours" "$dir.tensor" >/dev/null; then
            case_fail "$name" "$*: global scope gave tensor scope's bytes"
            return
        fi
    case_pass "$name" "$* ($((SECONDS - t0))s): $res"
    rm -rf "$dir.ours" "$dir.ref" "$dir.tensor"
}

METHODS=("ties --mergekit --densities 0.3,0.5,0.8 --weights 0.5,1,0.7"
    "ties --mergekit --density 0.4 --rescale --no-normalize --lambda 0.8"
    "dare_ties --mergekit --densities 0.3,0.5,0.8 --weights 0.5,1,-0.7 --seed 7"
    "dare_linear --mergekit --densities 0.3,0.5,0.8 --seed 3 --normalize --weights 0.5,1,0.7"
    "breadcrumbs --densities 0.7,0.9,0.5 --gamma 0.05 --rescale --weights 0.5,1,0.7"
    "breadcrumbs_ties --densities 0.3,0.9,0.98 --gamma 0.05 --weights 0.5,1,-0.7"
    "della --densities 0.5,0.7,0.4 --epsilon 0.1 --weights 0.5,1,-0.7 --seed 3"
    "della_linear --densities 0.3,0.8,0.6 --seed 5 --normalize --weights 0.5,1,0.7")

# ---- against the reference ----------------------------------------------------------------------
FF=$TMP/f32
FB=$TMP/bf16
gen "$FF" --tasks 3 --dtype f32 --seed 5
gen "$FB" --tasks 3 --dtype bf16 --seed 6
for fam in f32 bf16; do
    k=0
    for m in "${METHODS[@]}"; do
        k=$((k + 1))
        # shellcheck disable=SC2086
        mk_case "$fam-global-$k-${m%% *}" "$TMP/$fam" --method $m
    done
done
rm -rf "$FF"

# ---- the same bytes for any threads, budget, I/O backend and block size; --stats replay ---------
FS=$TMP/small
gen "$FS" --tasks 3 --dtype bf16 --preset small --seed 8
TS=$(task_dirs "$FS" 3)
k=0
for m in "${METHODS[@]}"; do
    k=$((k + 1))
    a=$TMP/det$k.a b=$TMP/det$k.b c=$TMP/det$k.c
    # shellcheck disable=SC2086
    if "$P" merge --quiet --scope global --base "$FS/base" --out "$a" --method $m --threads 1 \
        --mem 1G --io pread $TS &&
        "$P" merge --quiet --scope global --base "$FS/base" --out "$b" --method $m --threads 2 \
            --mem 64M --io uring --block-size 64K $TS &&
        "$P" merge --quiet --scope global --base "$FS/base" --out "$c" --method $m --threads 2 \
            --stats "$a/merge_stats.json.zst" $TS; then
        if ! why=$(same_outputs "$a" "$b"); then
            case_fail "same-bytes-$k-${m%% *}" "$m: $why"
            diff_tensors "$a" "$b"
        elif ! why=$(same_outputs "$a" "$c" README.md pcbmerge.manifest.json merge_stats.json.zst); then
            case_fail "same-bytes-$k-${m%% *}" "$m: --stats replay: $why"
        else
            case_pass "same-bytes-$k-${m%% *}" "$m: threads 1/2, mem 1G/64M, io pread/uring, blocks 64K, --stats replay"
        fi
    else
        case_fail "same-bytes-$k-${m%% *}" "a merge $m failed"
    fi
    rm -rf "$b" "$c"
done

# ---- a split merge into 3 parts ----------------------------------------------------------------------
split3() { # OUT MERGE_OPTIONS...
    local out=$1 i r rounds
    shift
    "$P" plan --quiet --shard-size 4MB --base "$FS/base" --out "$out" --parts 3 "$@" $TS || return 1
    rounds=$("$P" status --plan "$out" --get rounds_max) || return 1
    for ((r = 0; r <= rounds; r++)); do
        "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
        for i in 2 0 1; do "$P" stats --plan "$out" --part "$i" --threads 2 --quiet || return 1; done
        "$P" reduce --plan "$out" --quiet || return 1
    done
    for i in 1 2 0; do "$P" apply --plan "$out" --part "$i" --threads 2 --quiet || return 1; done
    "$P" finalize --plan "$out" --quiet
}
k=0
for m in "${METHODS[@]}"; do
    k=$((k + 1))
    one=$TMP/split-one sp=$TMP/split-k3
    rm -rf "$one" "$sp"
    # shellcheck disable=SC2086
    if "$P" merge --quiet --shard-size 4MB --scope global --base "$FS/base" --out "$one" \
        --method $m $TS && split3 "$sp" --scope global --method $m >"$TMP/split.log" 2>&1; then
        if why=$(same_outputs "$one" "$sp"); then
            case_pass "split-k3-$k-${m%% *}" "$m: the bytes of one merge"
        else
            case_fail "split-k3-$k-${m%% *}" "$m: $why"
        fi
    else
        case_fail "split-k3-$k-${m%% *}" "$m failed: $(tail -n 3 "$TMP/split.log" | tr '\n' ' ')"
    fi
done
rm -rf "$TMP"/det* "$TMP"/split-*

# ---- usage ---------------------------------------------------------------------------------------------
refused() { # NAME WORD MERGE_OPTIONS...
    local name=$1 word=$2 out rc
    shift 2
    # shellcheck disable=SC2086
    out=$("$P" merge --base "$FS/base" --out "$TMP/bad" "$@" 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -q -- "$word" <<<"$out"; then
        case_pass "$name" "refused: $(head -n 1 <<<"$out")"
    else
        case_fail "$name" "exit $rc: $out"
    fi
}
refused "slerp-global" "per tensor" --method slerp --t 0.5 --scope global "$FS/task1"

# ---- bounded memory --------------------------------------------------------------------------------------
if grep -q "__asan_init" "$PCBM_BIN" 2>/dev/null; then
    echo "skip memory cases: $PCBM_BIN is built with AddressSanitizer"
    finish
fi
rm -rf "$FB"
MEM_BYTES=$((64 << 20))
LIMIT=$((112 << 20))
FM=$TMP/big
big_family "$FM"
TM=$(task_dirs "$FM" 3)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
for m in "ties --mergekit --density 0.3 --rescale" "della --density 0.5"; do
    name="mem64M-global-${m%% *}"
    out=$TMP/$name t=$SECONDS
    # shellcheck disable=SC2086
    "$PCBM_TOOLS/peak-rss" --limit "$LIMIT" --output "$TMP/$name.rss" -- "$P" merge --quiet \
        --base "$FM/base" --out "$out" --threads 2 --mem 64M --scope global --method $m $TM \
        >"$TMP/$name.log" 2>&1
    rc=$?
    peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/$name.rss" 2>/dev/null)
    if [ $rc -eq 0 ]; then
        case_pass "$name" "$m in $((SECONDS - t)) s, peak RSS $(mib "${peak:-0}") <= $(mib $LIMIT)"
    else
        case_fail "$name" "$m: exit $rc, peak RSS $(mib "${peak:-0}"): $(tail -n 2 "$TMP/$name.log" | tr '\n' ' ')"
    fi
    rm -rf "$out"
done
finish

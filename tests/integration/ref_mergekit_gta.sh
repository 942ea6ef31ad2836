#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_mergekit_gta.sh — mergekit's task-vector family (merge/gta.c): breadcrumbs, breadcrumbs_ties,
# della, della_linear and the --mergekit forms of ties, dare_ties, dare_linear.
#   reference   every method on generated 3-task families (F32; BF16 too, whose |tau| values
#               repeat, so the cuts fall inside runs of equal values and the index selects run),
#               per-model --weights and --densities, the switches: against tests/reference/mk_gta.py
#               (NumPy, written from mergekit's source), at most 1e-5 of the elements more than
#               one ulp apart, the same kept counts; the random masks are the same by construction.
#   determinism every method, --threads 1 --mem 1G --io pread vs --threads 2 --mem 64M --io uring
#               --block-size 64K: the same bytes.
#   split       breadcrumbs_ties, della and dare_ties --mergekit, a split merge into K=3 parts: the bytes
#               of one merge.
#   memory      every method at --mem 64M on a family more than 8x larger: peak RSS <= 112 MiB.
#   per model   --gammas and --epsilons (mergekit's per-model gamma, epsilon) against mk_gta.py, and
#               in the split merges.
#   usage       --gamma out of range, density ± epsilon outside (0, 1), --gamma/--epsilon/--gammas/
#               --epsilons to a method that does not read them, counts, exclusions: exit 2.
. "$(dirname "$0")/lib.sh"
need_ref
need_tool peak-rss
MK_PY=$PCBM_ROOT/tests/reference/mk_gta.py
P=$PCBM_BIN

# mk_case NAME FAMILY MERGE_OPTIONS...: pcbmerge and mk_gta.py on FAMILY's 3 tasks, compared.
mk_case() {
    local name=$1 fam=$2
    shift 2
    local dir=$TMP/$name tasks log=$TMP/$name.log t0=$SECONDS
    tasks=$(task_dirs "$fam" 3)
    # shellcheck disable=SC2086
    if ! "$P" merge --quiet --base "$fam/base" --out "$dir.ours" "$@" $tasks >"$log" 2>&1; then
        case_fail "$name" "pcbmerge merge $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    # shellcheck disable=SC2086
    if ! "$PY" "$MK_PY" merge --base "$fam/base" --out "$dir.ref" "$@" $tasks >"$log" 2>&1; then
        case_fail "$name" "mk_gta.py $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    if ! "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --max-mismatch 1e-5 >"$log" 2>&1; then
        case_fail "$name" "$* differs from the reference: $(grep -E '^(float|FAIL)' "$log" | tr '\n' ' ')"
        return
    fi
    case_pass "$name" "$* ($((SECONDS - t0))s): $(grep -E '^float elements' "$log" | sed 's/^float elements //')"
    rm -rf "$dir.ours" "$dir.ref"
}

# ---- against the reference ----------------------------------------------------------------------
FF=$TMP/f32
FB=$TMP/bf16
gen "$FF" --tasks 3 --dtype f32 --seed 5
gen "$FB" --tasks 3 --dtype bf16 --seed 6
for fam in f32 bf16; do
    F=$TMP/$fam
    W="--weights 0.5,1,0.7"
    mk_case "$fam-breadcrumbs" "$F" --method breadcrumbs --densities 0.7,0.9,0.5 --gamma 0.05 $W
    mk_case "$fam-breadcrumbs-rescale" "$F" --method breadcrumbs --density 0.8 --gamma 0.02 \
        --rescale --normalize $W
    mk_case "$fam-breadcrumbs-gamma0" "$F" --method breadcrumbs --density 0.9 --gamma 0
    mk_case "$fam-breadcrumbs_ties" "$F" --method breadcrumbs_ties --densities 0.3,0.9,0.98 \
        --gamma 0.05 --weights 0.5,1,-0.7
    mk_case "$fam-breadcrumbs_ties-rescale" "$F" --method breadcrumbs_ties --density 0.6 \
        --rescale --normalize --lambda 0.8 $W
    mk_case "$fam-ties-mk" "$F" --method ties --mergekit --densities 0.3,0.5,0.8 $W
    mk_case "$fam-ties-mk-rescale" "$F" --method ties --mergekit --density 0.4 --rescale \
        --no-normalize --lambda 0.8
    mk_case "$fam-dare_ties-mk" "$F" --method dare_ties --mergekit --densities 0.3,0.5,0.8 \
        --weights 0.5,1,-0.7 --seed 7
    mk_case "$fam-dare_ties-mk-norm" "$F" --method dare_ties --mergekit --density 0.5 --normalize \
        --no-rescale $W
    mk_case "$fam-dare_linear-mk" "$F" --method dare_linear --mergekit --densities 0.3,0.5,0.8 \
        --seed 3 --normalize $W
    mk_case "$fam-dare_linear-mk-norescale" "$F" --method dare_linear --mergekit --density 0.6 \
        --no-rescale
    mk_case "$fam-della" "$F" --method della --densities 0.5,0.7,0.4 --epsilon 0.1 \
        --weights 0.5,1,-0.7 --seed 3
    mk_case "$fam-della-norescale" "$F" --method della --density 0.6 --no-rescale --no-normalize
    mk_case "$fam-della_linear" "$F" --method della_linear --densities 0.3,0.8,0.6 --seed 5 \
        --normalize $W
    # per-model gamma and epsilon (mergekit's per-model parameters)
    mk_case "$fam-breadcrumbs-gammas" "$F" --method breadcrumbs --densities 0.7,0.9,0.5 \
        --gammas 0.02,0.1,0 $W
    mk_case "$fam-breadcrumbs_ties-gammas" "$F" --method breadcrumbs_ties --density 0.8 \
        --gammas 0.05,0,0.15 --weights 0.5,1,-0.7
    mk_case "$fam-della-epsilons" "$F" --method della --densities 0.5,0.7,0.4 \
        --epsilons 0.1,0.25,0.3 --seed 3 $W
    mk_case "$fam-della_linear-epsilons" "$F" --method della_linear --density 0.5 \
        --epsilons 0.05,0.2,0.45 --seed 5
done

# ---- the same bytes for any threads, budget, I/O backend and block size ---------------------------
FS=$TMP/small
gen "$FS" --tasks 3 --dtype f32 --preset small --seed 8
TS=$(task_dirs "$FS" 3)
METHODS=("breadcrumbs --gamma 0.02 --density 0.8 --rescale"
    "breadcrumbs_ties --densities 0.5,0.8,0.9 --weights 1,0.5,0.8"
    "ties --mergekit --density 0.3 --rescale"
    "dare_ties --mergekit --density 0.5 --seed 4"
    "dare_linear --mergekit --densities 0.4,0.6,0.9 --weights 1,0.5,0.8"
    "della --density 0.5 --epsilon 0.2 --seed 2"
    "della_linear --densities 0.4,0.6,0.8 --weights 1,0.5,0.8")
k=0
for m in "${METHODS[@]}"; do
    k=$((k + 1))
    a=$TMP/det$k.a b=$TMP/det$k.b
    bs=64K # della: blocks of whole rows (down_proj: lcm(688, 4096) = 176128 elements)
    [ "${m#della}" != "$m" ] && bs=1M
    # shellcheck disable=SC2086
    if "$P" merge --quiet --base "$FS/base" --out "$a" --method $m --threads 1 --mem 1G --io pread $TS &&
        "$P" merge --quiet --base "$FS/base" --out "$b" --method $m --threads 2 --mem 64M --io uring \
            --block-size "$bs" $TS; then
        if why=$(same_outputs "$a" "$b"); then
            case_pass "same-bytes-${m%% *}" "$m: threads 1/2, mem 1G/64M, io pread/uring, blocks $bs"
        else
            case_fail "same-bytes-${m%% *}" "$m: $why"
            diff_tensors "$a" "$b"
        fi
    else
        case_fail "same-bytes-${m%% *}" "a merge $m failed"
    fi
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
for m in "breadcrumbs_ties --density 0.7 --rescale --weights 1,0.5,0.8 --gammas 0.02,0.1,0.05" \
    "dare_ties --mergekit --density 0.5 --seed 9" "della --density 0.4 --seed 1 --epsilons 0.1,0.3,0.2"; do
    one=$TMP/split-one sp=$TMP/split-k3
    rm -rf "$one" "$sp"
    # shellcheck disable=SC2086
    if "$P" merge --quiet --shard-size 4MB --base "$FS/base" --out "$one" --method $m $TS &&
        split3 "$sp" --method $m >"$TMP/split.log" 2>&1; then
        if why=$(same_outputs "$one" "$sp"); then
            case_pass "split-k3-${m%% *}" "$m: the bytes of one merge"
        else
            case_fail "split-k3-${m%% *}" "$m: $why"
        fi
    else
        case_fail "split-k3-${m%% *}" "$m failed: $(tail -n 3 "$TMP/split.log" | tr '\n' ' ')"
    fi
done

# ---- usage ---------------------------------------------------------------------------------------------
out=$("$P" merge --base "$FS/base" --out "$TMP/bad" --method breadcrumbs --gamma 1.5 $TS 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q "gamma" <<<"$out"; then
    case_pass "gamma-range" "refused: $(head -n 1 <<<"$out")"
else
    case_fail "gamma-range" "exit $rc: $out"
fi
# usage_refused NAME REGEX MERGE_OPTIONS...: exit 2, the message matches, no output
usage_refused() {
    local name=$1 re=$2 out rc
    shift 2
    rm -rf "$TMP/bad"
    # shellcheck disable=SC2086
    out=$("$P" merge --base "$FS/base" --out "$TMP/bad" "$@" $TS 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -Eq -- "$re" <<<"$out" && no_output "$TMP/bad"; then
        case_pass "$name" "refused: $(head -n 1 <<<"$out")"
    else
        case_fail "$name" "exit $rc: $out"
    fi
}
usage_refused gamma-not-read "--gamma does not apply to the ties method" --method ties --mergekit \
    --density 0.5 --gamma 0.02
usage_refused epsilon-not-read "--epsilon does not apply to the breadcrumbs method" \
    --method breadcrumbs --density 0.5 --epsilon 0.1
usage_refused gammas-not-read "--gammas does not apply to the della method" --method della \
    --density 0.5 --gammas 0.1,0.1,0.1
usage_refused epsilons-not-read "--epsilons does not apply to the dare_linear method" \
    --method dare_linear --mergekit --density 0.5 --epsilons 0.1,0.1,0.1
usage_refused gammas-count "--gammas needs one value per task model \(2 for 3" \
    --method breadcrumbs --gammas 0.1,0.1
usage_refused epsilons-count "--epsilons needs one value per task model \(4 for 3" \
    --method della --density 0.5 --epsilons 0.1,0.1,0.1,0.1
usage_refused gamma-and-gammas "--gamma and --gammas exclude each other" --method breadcrumbs \
    --gamma 0.1 --gammas 0.1,0.1,0.1
usage_refused epsilon-and-epsilons "--epsilon and --epsilons exclude each other" --method della \
    --density 0.5 --epsilon 0.1 --epsilons 0.1,0.1,0.1
usage_refused gammas-range "--gammas value 2 is 1: every gamma must be in \[0, 1\)" \
    --method breadcrumbs --gammas 0.1,1,0.1
usage_refused epsilons-task-range "della: density 0.5 and epsilon 0.5 \(task 3\)" --method della \
    --density 0.5 --epsilons 0.1,0.2,0.5
out=$("$P" merge --base "$FS/base" --out "$TMP/bad" --method della --density 0.1 --epsilon 0.15 $TS 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q "epsilon" <<<"$out"; then
    case_pass "epsilon-range" "refused: $(head -n 1 <<<"$out")"
else
    case_fail "epsilon-range" "exit $rc: $out"
fi

# ---- bounded memory --------------------------------------------------------------------------------------
if grep -q "__asan_init" "$PCBM_BIN" 2>/dev/null; then
    echo "skip memory cases: $PCBM_BIN is built with AddressSanitizer"
    finish
fi
rm -rf "$FF" "$FB" "$TMP"/det* "$TMP"/split-*
MEM_BYTES=$((64 << 20))
LIMIT=$((112 << 20))
FM=$TMP/big
big_family "$FM"
TM=$(task_dirs "$FM" 3)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
for m in "breadcrumbs --density 0.9 --rescale" "breadcrumbs_ties --density 0.5" \
    "ties --mergekit --density 0.3 --rescale" "dare_ties --mergekit --density 0.5" \
    "dare_linear --mergekit --density 0.5" "della --density 0.5" "della_linear --density 0.3"; do
    name="mem64M-${m%% *}"
    out=$TMP/$name t=$SECONDS
    # shellcheck disable=SC2086
    "$PCBM_TOOLS/peak-rss" --limit "$LIMIT" --output "$TMP/$name.rss" -- "$P" merge --quiet \
        --base "$FM/base" --out "$out" --threads 2 --mem 64M --method $m $TM >"$TMP/$name.log" 2>&1
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

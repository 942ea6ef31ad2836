#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_weights.sh — mergekit's per-model parameters (--weights, --densities, --normalize /
# --no-normalize, --rescale / --no-rescale) with task_arithmetic, ties, dare_linear and dare_ties
# against the NumPy reference (pcb_ref.py's gta_group, written from mergekit's
# generalized_task_arithmetic.py and sparsify.py) on F32 families, N = 3: at most 1e-5 of the
# elements more than 1 ulp apart and the kept counts equal. Then, for one weighted ties merge:
# bytes identical across --threads 1/2, two --mem values and block sizes, a split merge, a
# killed and resumed merge and --stats reuse (the statistics do not depend on --normalize); every
# weight 1 and every density equal to --density give the unweighted merge's tensors; and the
# usage errors (exit 2, naming the option).
. "$(dirname "$0")/lib.sh"
need_ref

F=$TMP/f32 G=$TMP/f32b
gen "$F" --tasks 3 --dtype f32 --params 300K --seed 41
gen "$G" --tasks 3 --dtype f32 --params 300K --seed 42 --delta-scale 0.03
cmp_opts="--max-mismatch 1e-5 --kept-tol-abs 0 --kept-tol-rel 0"
W="0.7,1.3,0.4" WN="1.5,-0.5,0.8" D="0.1,0.3,0.2" DD="0.3,0.7,0.5"

# ---- against the reference -------------------------------------------------------------------
ref_case ta-weights            "$F" 3 --cmp "$cmp_opts" --method task_arithmetic --weights $W
ref_case ta-weights-neg-lambda "$F" 3 --cmp "$cmp_opts" --method task_arithmetic --weights $WN --lambda 0.6
ref_case ta-normalize          "$F" 3 --cmp "$cmp_opts" --method task_arithmetic --normalize
ref_case ta-weights-normalize  "$G" 3 --cmp "$cmp_opts" --method task_arithmetic --weights $W --normalize
ref_case ties-weights          "$F" 3 --cmp "$cmp_opts" --method ties --density 0.2 --weights $W
ref_case ties-weights-neg      "$G" 3 --cmp "$cmp_opts" --method ties --density 0.2 --weights $WN
ref_case ties-densities        "$F" 3 --cmp "$cmp_opts" --method ties --densities $D
ref_case ties-densities-all    "$F" 3 --cmp "$cmp_opts" --method ties --densities 1,0.2,1
ref_case ties-both             "$G" 3 --cmp "$cmp_opts" --method ties --densities $D --weights $W --lambda 1.2
ref_case ties-no-normalize     "$F" 3 --cmp "$cmp_opts" --method ties --density 0.3 --no-normalize
ref_case ties-both-no-normalize "$F" 3 --cmp "$cmp_opts" --method ties --densities $D --weights $W --no-normalize
ref_case ties-both-tensor      "$G" 3 --cmp "$cmp_opts" --method ties --densities $D --weights $W --scope tensor
ref_case dl-weights            "$F" 3 --cmp "$cmp_opts" --method dare_linear --density 0.3 --seed 3 --weights $W
ref_case dl-densities          "$F" 3 --cmp "$cmp_opts" --method dare_linear --densities $DD --seed 4
ref_case dl-both-normalize     "$G" 3 --cmp "$cmp_opts" --method dare_linear --densities $DD --weights $W --normalize
ref_case dl-no-rescale         "$F" 3 --cmp "$cmp_opts" --method dare_linear --densities $DD --weights $W --no-rescale
ref_case dt-weights            "$F" 3 --cmp "$cmp_opts" --method dare_ties --density 0.3 --seed 5 --weights $W
ref_case dt-densities          "$G" 3 --cmp "$cmp_opts" --method dare_ties --densities $DD --seed 6
ref_case dt-both-no-normalize  "$F" 3 --cmp "$cmp_opts" --method dare_ties --densities $DD --weights $W --no-normalize
ref_case dt-normalize-explicit "$F" 3 --cmp "$cmp_opts" --method dare_ties --densities $DD --weights $W --normalize
ref_case linear-no-normalize   "$F" 3 --cmp "$cmp_opts" --method linear --weights $W --no-normalize
ref_case linear-no-normalize-neg "$G" 3 --cmp "$cmp_opts" --method linear --weights 1,-1,0.5 --no-normalize
ref_case dt-no-rescale         "$G" 3 --cmp "$cmp_opts" --method dare_ties --densities $DD --weights $WN --no-rescale

# ---- bytes: threads, memory, --stats, split; the unweighted merge at weights 1 ----------------
P=$PCBM_BIN
T="$F/task1 $F/task2 $F/task3"
WT=(--method ties --densities $D --weights $W --shard-size 400KB --quiet)
one() { # OUT OPTIONS...
    local out=$1
    shift
    "$P" merge --base "$F/base" --out "$out" "$@" $T >"$out.log" 2>&1 ||
        { echo "merge $* failed: $(tail -n 3 "$out.log")"; return 1; }
}
same_case() { # NAME A B [SKIPPED FILE...]
    local name=$1 msg
    shift
    if msg=$(same_outputs "$@"); then case_pass "$name"; else case_fail "$name" "$msg"; fi
}
one "$TMP/w-t1" "${WT[@]}" --threads 1 --mem 64M || fail "weighted ties merge"
one "$TMP/w-t2" "${WT[@]}" --threads 2 --mem 1G || fail "weighted ties merge (2 threads)"
same_case "weighted ties: --threads 1 --mem 64M = --threads 2 --mem 1G" "$TMP/w-t1" "$TMP/w-t2"
one "$TMP/w-blk" "${WT[@]}" --threads 2 --mem 64M --block-size 64K --io pread || fail "merge (64K blocks)"
same_case "weighted ties: --block-size 64K --io pread" "$TMP/w-t1" "$TMP/w-blk"
one "$TMP/w-stats" "${WT[@]}" --stats "$TMP/w-t1/merge_stats.json.zst" --no-normalize ||
    fail "merge with --stats"
one "$TMP/w-nonorm" "${WT[@]}" --no-normalize || fail "merge --no-normalize"
same_case "--stats reused across --no-normalize" "$TMP/w-nonorm" "$TMP/w-stats" README.md \
    merge_stats.json.zst # (both say how the statistics were obtained)
expect_fail "--stats refused with other weights" "other parameters.*weights" \
    "$P" merge --base "$F/base" --out "$TMP/w-bad" --method ties --densities $D --weights 1,1,1 \
    --stats "$TMP/w-t1/merge_stats.json.zst" $T
"$PY" -c 'import json, sys
t = json.load(open(sys.argv[1]))["tasks"]
sys.exit(0 if [x["weight"] for x in t] == [0.7, 1.3, 0.4] and [x["density"] for x in t] == [0.1, 0.3, 0.2] else 1)' \
    "$TMP/w-t1/merge_report.json" && grep -q 'task 2: λ 1, weight 1.3, density 0.3' "$TMP/w-t1/README.md" &&
    case_pass "report and model card show weight and density per task" ||
    case_fail "report and model card" "no per-task weight/density"

# split merge: plan, stats rounds + reduce, apply, finalize (as split_phases.sh)
S=$TMP/w-split
RT="--threads 2 --quiet"
"$P" plan --base "$F/base" --out "$S" --parts 2 "${WT[@]}" $T || fail "plan"
rounds=$("$P" status --plan "$S" --get rounds_max) || fail "status"
for ((r = 0; r <= rounds; r++)); do
    "$P" status --plan "$S" --json | grep -q '"stats_complete":true' && break
    for i in 0 1; do "$P" stats --plan "$S" --part $i $RT || fail "stats part $i"; done
    "$P" reduce --plan "$S" $RT || fail "reduce"
done
for i in 1 0; do "$P" apply --plan "$S" --part $i $RT || fail "apply part $i"; done
"$P" finalize --plan "$S" $RT || fail "finalize"
same_case "weighted ties: split merge (2 parts) = merge" "$TMP/w-t1" "$S"

# resume: killed mid-apply, then --resume; other weights cannot resume it
K=$TMP/w-kill
PCBM_SEGMENT_BYTES=64K PCBM_TEST_KILL=apply:10 "$P" merge --base "$F/base" --out "$K" "${WT[@]}" \
    --threads 1 --resume $T 2>/dev/null
rc=$?
if [ $rc -ne 137 ] || [ -e "$K" ]; then
    case_fail "weighted ties killed mid-apply" "not killed (exit $rc)"
else
    expect_fail "resume refused with other weights" "parameters changed.*weights" \
        "$P" merge --base "$F/base" --out "$K" --method ties --densities $D --weights 1,1,1 \
        --shard-size 400KB --quiet --resume $T
    PCBM_SEGMENT_BYTES=64K "$P" merge --base "$F/base" --out "$K" "${WT[@]}" --threads 2 --resume $T ||
        fail "resume"
    same_case "weighted ties: killed mid-apply and resumed = merge" "$TMP/w-t1" "$K"
fi

# every weight 1 and density = --density: the tensors of the plain merge (the recorded
# parameters differ: the safetensors metadata, the card, the statistics file and manifest)
one "$TMP/plain" --method ties --density 0.2 --quiet || fail "plain ties"
one "$TMP/ones" --method ties --densities 0.2,0.2,0.2 --weights 1,1,1 --quiet || fail "ties at 1"
"$PY" - "$PCBM_ROOT/tests/reference" "$TMP/plain" "$TMP/ones" <<'PYEOF' && case_pass "ties: weights 1, densities = density: the unweighted tensors" || case_fail "ties at weights 1" "tensors differ"
import sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import read_model
a, b = read_model(sys.argv[2]), read_model(sys.argv[3])
sys.exit(0 if a.keys() == b.keys() and all(a[k].raw.tobytes() == b[k].raw.tobytes() for k in a) else 1)
PYEOF

# ---- usage errors: exit 2, naming the option ---------------------------------------------------
usage() { # NAME REGEX OPTIONS...
    local name=$1 re=$2 out rc
    shift 2
    CASES=$((CASES + 1))
    out=$("$P" merge --base "$F/base" --out "$TMP/never" "$@" $T 2>&1)
    rc=$?
    if [ $rc = 2 ] && grep -Eq -- "$re" <<<"$out" && no_output "$TMP/never"; then
        echo "ok   $name"
    else
        echo "FAIL $name: exit $rc, message: $(head -n 1 <<<"$out")"
        FAILED+=("$name")
    fi
}
usage "--weights: 2 values for 3 tasks"    "--weights needs one value per task" --method ties --weights 1,2
usage "--densities: 4 values for 3 tasks"  "--densities needs one value per task" --method ties --densities 0.1,0.2,0.3,0.4
usage "--densities with a zero"            "--densities value 2 is 0" --method ties --densities 0.1,0,0.3
usage "--densities with a negative"        "--densities value 1 is -0.1" --method dare_ties --densities -0.1,0.2,0.3
usage "--densities above 1"                "--densities value 3 is 1.5" --method dare_linear --densities 0.1,0.2,1.5
usage "--weights with pcb"                 "--weights does not apply to the pcb method" --method pcb --weights 1,2,3
usage "--densities with task_arithmetic"   "--densities does not apply to the task_arithmetic method" --method task_arithmetic --densities 0.1,0.2,0.3
usage "--densities with linear"            "--densities does not apply to the linear method" --method linear --densities 0.1,0.2,0.3
usage "--no-normalize with pcb"            "--normalize/--no-normalize does not apply to the pcb method" --no-normalize
usage "--rescale with ties"                "--rescale/--no-rescale does not apply to the ties method" --method ties --no-rescale
usage "--weights with --lambdas"           "--lambdas.*excludes.*--weights" --method task_arithmetic --weights 1,2,3 --lambdas 1,1,1
usage "--normalize with --lambdas"         "--lambdas.*excludes.*--normalize" --method dare_linear --normalize --lambdas 1,1,1
usage "--density with --densities"         "--density and --densities exclude each other" --method ties --density 0.2 --densities 0.1,0.2,0.3
usage "--normalize with --no-normalize"    "--normalize and --no-normalize exclude each other" --method ties --normalize --no-normalize
usage "normalized weights summing to 0"    "--weights must have a non-zero sum" --method task_arithmetic --weights 1,-1,0 --normalize
finish

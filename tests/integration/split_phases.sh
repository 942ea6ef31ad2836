#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# split_phases.sh — one merge split into K parts (plan, stats rounds + reduce, apply, finalize),
# each phase run as its own process, as a job array would: the published files are byte-identical
# to `pcbmerge merge` for K = 1, 2, 4, 7 (pcb exact and streaming, ties), for K = 3 with every
# other method and tensor scope, and with more parts than output files. Also: the parts of a
# round run in any order; reduce/apply/finalize refuse, naming the missing parts, until all have
# run; a part killed mid-apply is re-run and resumes; phases are idempotent; --part from the
# job-array variables; out-of-range and malformed indexes; inputs changed after the plan; a
# second plan with other parameters needs --force. A family whose task 2 lacks two merged tensors
# (pcb, della_linear) splits as well. (The Slurm pipeline: split_slurm.sh.)
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset small --seed 7
T="$F/task1 $F/task2 $F/task3"
export PCBM_SEGMENT_BYTES=256K                 # several durable segments per part
COMMON="--shard-size 1MB --quiet"
RT="--threads 2 --quiet"
P=$PCBM_BIN

single() { # OUT MERGE_OPTIONS...
    local out=$1
    shift
    "$P" merge $COMMON --threads 2 --base "$F/base" --out "$out" "$@" $T
}

# split OUT K ORDER MERGE_OPTIONS...: the whole pipeline; ORDER "fwd" or "rev" (parts' order)
split() {
    local out=$1 k=$2 order=$3 i r rounds parts
    shift 3
    "$P" plan $COMMON --base "$F/base" --out "$out" --parts "$k" "$@" $T || return 1
    rounds=$("$P" status --plan "$out" --get rounds_max) || return 1
    parts=$(seq 0 $((k - 1)))
    [ "$order" = rev ] && parts=$(seq $((k - 1)) -1 0)
    for ((r = 0; r <= rounds; r++)); do
        "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
        for i in $parts; do "$P" stats --plan "$out" --part "$i" $RT || return 1; done
        "$P" reduce --plan "$out" $RT || return 1
    done
    "$P" status --plan "$out" --json | grep -q '"stats_complete":true' ||
        { echo "statistics not complete after $rounds rounds"; return 1; }
    for i in $parts; do "$P" apply --plan "$out" --part "$i" $RT || return 1; done
    "$P" finalize --plan "$out" $RT
}

same_case() { # NAME REF OUT
    local msg
    if msg=$(same_outputs "$2" "$3") && "$P" verify "$3" >/dev/null; then
        case_pass "$1"
    else
        case_fail "$1" "$msg"
    fi
}

# ---- byte identity, K = 1, 2, 4, 7 -------------------------------------------------------------
declare -A REF
for m in "pcb" "pcb --streaming" "ties"; do
    tag=${m// /}
    single "$TMP/ref-$tag" --method $m || fail "single merge ($m)"
    for k in 1 2 4 7; do
        order=fwd
        [ $k = 4 ] && order=rev
        out=$TMP/split-$tag-$k
        if split "$out" $k $order --method $m >"$TMP/log" 2>&1; then
            same_case "$m, K=$k ($order)" "$TMP/ref-$tag" "$out"
        else
            case_fail "$m, K=$k" "$(tail -n 3 "$TMP/log")"
        fi
    done
done

# ---- every other method, tensor scope, more parts than files ----------------------------------
while IFS='|' read -r name k opts; do
    ref=$TMP/ref-$name
    single "$ref" $opts || fail "single merge ($opts)"
    if split "$TMP/split-$name" "$k" fwd $opts >"$TMP/log" 2>&1; then
        same_case "$opts, K=$k" "$ref" "$TMP/split-$name"
    else
        case_fail "$opts, K=$k" "$(tail -n 3 "$TMP/log")"
    fi
done <<'EOF'
dare_ties|3|--method dare_ties --seed 5 --density 0.3
dare_linear|3|--method dare_linear --seed 5
task_arithmetic|3|--method task_arithmetic --lambda 0.7
linear|3|--method linear
pcb_tensor|3|--method pcb --scope tensor
ties_tensor|3|--method ties --scope tensor
pcb_exact_f32|3|--method pcb --exact --dtype f32
pcb_many|15|--method pcb
EOF

# ---- a quirky family (tools/testing/quirky-family.py: FP8 base with block scales and a tied
# head, a BF16 task with appended tokens that unties the head, an FP8 task) --------------------
if "$PY" -c 'import numpy' 2>/dev/null; then
    Q=$TMP/quirky
    "$PY" "$PCBM_ROOT/tools/testing/quirky-family.py" "$Q" --params 3M || fail "quirky-family.py"
    saved_F=$F saved_T=$T
    F=$Q T="$Q/task1 $Q/task2"
    for m in pcb ties; do
        single "$TMP/ref-quirky-$m" --method $m || fail "single merge (quirky, $m)"
        if split "$TMP/split-quirky-$m" 3 rev --method $m >"$TMP/log" 2>&1; then
            same_case "quirky family, $m, K=3" "$TMP/ref-quirky-$m" "$TMP/split-quirky-$m"
        else
            case_fail "quirky family, $m, K=3" "$(tail -n 3 "$TMP/log")"
        fi
    done
    F=$saved_F T=$saved_T
fi

# ---- task 2 lacking two merged tensors (it takes no part in them): pcb (global: per-task element
# counts in the statistics) and della_linear (tensor scope, mergekit's family), K=3 -----------------
AB=$TMP/absent
mkdir -p "$AB" && ln -s "$F/base" "$AB/base" && ln -s "$F/task1" "$AB/task1" &&
    ln -s "$F/task3" "$AB/task3" && cp -r "$F/task2" "$AB/task2" || fail "cannot copy task2"
drop_tensors "$AB/task2" model.layers.0.mlp.up_proj.weight model.layers.1.self_attn.q_proj.weight
saved_F=$F saved_T=$T
F=$AB T="$AB/task1 $AB/task2 $AB/task3"
for m in "pcb" "della_linear --density 0.6 --epsilon 0.1 --seed 5"; do
    tag=${m%% *}
    single "$TMP/ref-absent-$tag" --method $m || fail "single merge (absent, $m)"
    if split "$TMP/split-absent-$tag" 3 rev --method $m >"$TMP/log" 2>&1; then
        same_case "task 2 lacking two tensors, $tag, K=3" "$TMP/ref-absent-$tag" "$TMP/split-absent-$tag"
    else
        case_fail "task 2 lacking two tensors, $tag, K=3" "$(tail -n 3 "$TMP/log")"
    fi
done
F=$saved_F T=$saved_T

# ---- refusals until every part has run; a killed part is re-run --------------------------------
D=$TMP/steps
"$P" plan $COMMON --base "$F/base" --out "$D" --parts 3 --method ties $T || fail "plan"
expect_refusal() { # NAME EXPECTED_TEXT COMMAND...
    local name=$1 want=$2 msg rc
    shift 2
    msg=$("$@" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$want" <<<"$msg" && [ ! -e "$D" ]; then
        case_pass "$name"
    else
        case_fail "$name" "exit $rc: $msg"
    fi
}
expect_refusal "reduce before any stats names every part" "parts 0, 1, 2 of 3" \
    "$P" reduce --plan "$D" $RT
expect_refusal "apply before the statistics is refused" "not complete" \
    "$P" apply --plan "$D" --part 0 $RT
"$P" stats --plan "$D" --part 0 $RT && "$P" stats --plan "$D" --part 2 $RT || fail "stats"
expect_refusal "reduce names the missing part" "part 1 of 3" "$P" reduce --plan "$D" $RT
expect_refusal "--part out of range" "out of range" "$P" stats --plan "$D" --part 3 $RT
expect_refusal "malformed SLURM_ARRAY_TASK_ID" "SLURM_ARRAY_TASK_ID is 'x1'" \
    env SLURM_ARRAY_TASK_ID=x1 "$P" stats --plan "$D" $RT
expect_refusal "no part index at all" "give --part" \
    env -u SLURM_ARRAY_TASK_ID -u JOB_COMPLETION_INDEX -u AWS_BATCH_JOB_ARRAY_INDEX \
    "$P" stats --plan "$D" $RT
expect_refusal "merge parameters are fixed by the plan" "fixed by the plan" \
    "$P" stats --plan "$D" --part 1 --method pcb $RT
JOB_COMPLETION_INDEX=1 "$P" stats --plan "$D" $RT || fail "stats (JOB_COMPLETION_INDEX)"
"$P" stats --plan "$D" --part 1 $RT || fail "stats twice"
for ((r = 0; r < 4; r++)); do
    "$P" reduce --plan "$D" $RT || fail "reduce"
    "$P" status --plan "$D" --json | grep -q '"stats_complete":true' && break
    for i in 0 1 2; do AWS_BATCH_JOB_ARRAY_INDEX=$i "$P" stats --plan "$D" $RT || fail "stats"; done
done
"$P" status --plan "$D" --json | grep -q '"stats_complete":true' &&
    case_pass "job-array variables select the part; rounds complete" ||
    case_fail "rounds complete" "$("$P" status --plan "$D")"
"$P" apply --plan "$D" --part 0 $RT || fail "apply 0"
{ PCBM_TEST_KILL=apply:3 "$P" apply --plan "$D" --part 1 --threads 1 --quiet; } 2>/dev/null
rc=$?
[ $rc -eq 137 ] || case_fail "part 1 killed mid-apply" "exit $rc, not SIGKILL"
expect_refusal "finalize names the parts still missing" "parts 1, 2 of 3" \
    "$P" finalize --plan "$D" $RT
msg=$("$P" apply --plan "$D" --part 1 --threads 1 2>&1) && grep -q "resuming" <<<"$msg" &&
    case_pass "the killed part resumes when re-run" || case_fail "resume part 1" "$msg"
"$P" apply --plan "$D" --part 2 $RT || fail "apply 2"
msg=$("$P" apply --plan "$D" --part 2 --threads 1 2>&1) && grep -q "nothing to do" <<<"$msg" &&
    case_pass "apply again is a no-op" || case_fail "apply again" "$msg"
"$P" finalize --plan "$D" $RT || fail "finalize"
same_case "resumed part: the bytes of a single merge" "$TMP/ref-ties" "$D"
msg=$("$P" finalize --plan "$D" 2>&1) && grep -q "already published" <<<"$msg" &&
    case_pass "finalize again is a no-op" || case_fail "finalize again" "$msg"
[ ! -e "$D.partial" ] && case_pass "nothing left beside DIR" || case_fail "leftovers" "$D.partial"

# ---- plans: idempotent, other parameters need --force, inputs changed after the plan -----------
D2=$TMP/plans
"$P" plan $COMMON --base "$F/base" --out "$D2" --parts 2 $T || fail "plan"
msg=$("$P" plan --shard-size 1MB --base "$F/base" --out "$D2" --parts 2 $T 2>&1) &&
    grep -q "already planned" <<<"$msg" && case_pass "the same plan again is a no-op" ||
    case_fail "plan again" "$msg"
msg=$("$P" plan $COMMON --base "$F/base" --out "$D2" --parts 3 $T 2>&1)
[ $? -ne 0 ] && grep -q -- "--force" <<<"$msg" && case_pass "another plan needs --force" ||
    case_fail "another plan" "$msg"
"$P" plan $COMMON --base "$F/base" --out "$D2" --parts 3 --force $T || fail "plan --force"
cp -r "$F/task2" "$TMP/task2-copy"
G=$TMP/fam2
mkdir -p "$G" && cp -r "$F/base" "$G/base" && cp -r "$F/task1" "$G/task1"
cp -r "$F/task2" "$G/task2"
"$P" plan $COMMON --base "$G/base" --out "$TMP/chg" --parts 2 "$G/task1" "$G/task2" || fail "plan"
"$PCBM_TOOLS/pcbm-gen" --quiet --out "$TMP/other" --tasks 2 --dtype bf16 --preset small --seed 8 ||
    fail "gen"
rm -rf "$G/task2" && cp -r "$TMP/other/task2" "$G/task2"
msg=$("$P" stats --plan "$TMP/chg" --part 0 2>&1)
[ $? -ne 0 ] && grep -q "changed since the merge was planned" <<<"$msg" &&
    case_pass "inputs changed after the plan are refused" || case_fail "changed inputs" "$msg"
msg=$("$P" stats --plan "$TMP/nothing" --part 0 2>&1)
[ $? -ne 0 ] && grep -q "no split merge is planned" <<<"$msg" &&
    case_pass "a directory without a plan is refused" || case_fail "no plan" "$msg"
finish

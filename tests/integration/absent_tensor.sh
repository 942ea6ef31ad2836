#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# absent_tensor.sh — a task model lacking a merged tensor takes no part in it (as in mergekit, which
# hands a method only the tensors of the models that have it); a tensor that every task lacks is
# copied from the base. On a generated F32 family of 3 tasks where task 2 lacks two merged tensors
# (and every task lacks a third):
#   reference   every method against its NumPy reference in its "present tasks only" mode
#               (pcb_ref.py / mk_gta.py / mk_geo.py --absent skip), at most 1e-5 of the elements
#               more than one ulp apart (PCB: compare.py's default bound and cancellation-aware
#               rule, as ref_pcb.sh), the same kept counts: pcb (global exact and streaming, tensor
#               scope, per-task lambdas), official ties (global, tensor scope), dare_ties and
#               dare_linear (the same seed), task_arithmetic, linear (weights), mergekit's ties /
#               dare_ties / dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear (tensor
#               and global scope), model_stock (also filter_wise), sce; and the reference in its
#               old mode ("copy")
#               must NOT match (the cases tell the two semantics apart).
#   refusals    nuslerp (two tasks, one lacking) and model_stock with one task left refuse naming
#               tensor and task, exit 2; --require-all refuses, exit 1, naming tensor, task and
#               path, leaving nothing; slerp's only task lacking a tensor: the base's tensor.
#   messages    the warning names tensor and task; merge_report.json lists the partial tensors
#               with the tasks missing them ("partial"), the tensor all lack under "copied",
#               per-task d; --dry-run prints the partial tensors.
#   determinism pcb, ties, della and mergekit's dare_ties: --threads 1 --mem 1G --io pread vs
#               --threads 2 --mem 64M --io mmap --block-size 64K: the same bytes.
#   split       pcb, ties (K=3) and breadcrumbs_ties (K=2), each phase its own process: the bytes
#               of one merge.
#   resume      a write error mid-merge, then --resume: the bytes of a normal run; --stats replay
#               of the merge's statistics: the same bytes.
. "$(dirname "$0")/lib.sh"
need_ref
P=$PCBM_BIN
MKG=$PCBM_ROOT/tests/reference/mk_gta.py
MKO=$PCBM_ROOT/tests/reference/mk_geo.py

F=$TMP/fam
gen "$F" --tasks 3 --dtype f32 --preset tiny --seed 53
A=model.layers.0.mlp.up_proj.weight          # task 2 lacks it
B=model.layers.1.self_attn.q_proj.weight     # task 2 lacks it
C=model.layers.1.post_attention_layernorm.weight  # every task lacks it: copied from the base
drop_tensors "$F/task2" "$A" "$B" "$C"
drop_tensors "$F/task1" "$C"
drop_tensors "$F/task3" "$C"
T=$(task_dirs "$F" 3)

# ---- against the references ---------------------------------------------------------------------
export REF_EXTRA="--absent skip"
ref_case pcb $F 3 --cmp "--base $F/base" -- --method pcb --density 0.3 --exact
ref_case pcb-streaming $F 3 --cmp "--base $F/base" -- --method pcb --density 0.3 --streaming
ref_case pcb-tensor $F 3 --cmp "--base $F/base" -- --method pcb --density 0.2 --scope tensor
ref_case pcb-lambdas $F 3 --cmp "--base $F/base" -- --method pcb --density 0.1 --lambdas 0.5,1,1.5
ref_case ties $F 3 --cmp "--max-mismatch 1e-5" -- --method ties --density 0.3 --lambda 0.8
ref_case ties-tensor $F 3 --cmp "--max-mismatch 1e-5" -- --method ties --density 0.3 --scope tensor
ref_case ties-weights $F 3 --cmp "--max-mismatch 1e-5" -- --method ties --densities 0.3,0.5,0.2 \
    --weights 0.5,1,2
ref_case dare_ties $F 3 --cmp "--max-mismatch 1e-5" -- --method dare_ties --density 0.5 --seed 11
ref_case dare_linear $F 3 --cmp "--max-mismatch 1e-5" -- --method dare_linear --density 0.5 --seed 11
ref_case dare_linear-weights $F 3 --cmp "--max-mismatch 1e-5" -- --method dare_linear \
    --density 0.5 --seed 11 --weights 1,2,3 --normalize
ref_case task_arithmetic $F 3 --cmp "--max-mismatch 1e-5" -- --method task_arithmetic --lambda 0.7
ref_case task_arithmetic-normalize $F 3 --cmp "--max-mismatch 1e-5" -- --method task_arithmetic \
    --weights 1,2,3 --normalize
ref_case linear $F 3 --cmp "--max-mismatch 1e-5" -- --method linear --weights 0.5,1,2

# mk_case NAME REF_PY MERGE_OPTIONS...: pcbmerge and mergekit's reference (present tasks only).
mk_case() {
    local name=$1 ref=$2
    shift 2
    local dir=$TMP/$name log=$TMP/$name.log t0=$SECONDS
    # shellcheck disable=SC2086
    if ! "$P" merge --quiet --base "$F/base" --out "$dir.ours" "$@" $T >"$log" 2>&1; then
        case_fail "$name" "pcbmerge merge $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    # shellcheck disable=SC2086
    if ! "$PY" "$ref" merge --base "$F/base" --out "$dir.ref" --report "$dir.rep" --absent skip \
        "$@" $T >"$log" 2>&1; then
        case_fail "$name" "$(basename "$ref") $* failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    local kept=""
    [ "$ref" = "$MKO" ] && kept=--no-kept
    if ! "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --ref-report "$dir.rep" $kept --max-mismatch 1e-5 \
        >"$log" 2>&1; then
        case_fail "$name" "$* differs from the reference: $(grep -E '^(float|FAIL| +-)' "$log" | tr '\n' ' ')"
        return
    fi
    case_pass "$name" "$* ($((SECONDS - t0))s): $(grep -E '^float elements' "$log" | sed 's/^float elements //')"
    rm -rf "$dir.ours" "$dir.ref"
}
W="--weights 0.5,1,0.7"
mk_case mk-ties "$MKG" --mergekit --method ties --densities 0.4,0.6,0.3 $W
mk_case mk-ties-global "$MKG" --mergekit --method ties --density 0.4 $W --scope global
mk_case mk-dare_ties "$MKG" --mergekit --method dare_ties --density 0.6 --seed 3 $W
mk_case mk-dare_ties-global "$MKG" --mergekit --method dare_ties --density 0.6 --seed 3 --scope global
mk_case mk-dare_linear "$MKG" --mergekit --method dare_linear --density 0.6 --seed 3 $W --normalize
mk_case breadcrumbs "$MKG" --method breadcrumbs --density 0.8 --gamma 0.05 $W
mk_case breadcrumbs-global "$MKG" --method breadcrumbs --density 0.8 --gamma 0.05 --scope global
mk_case breadcrumbs_ties "$MKG" --method breadcrumbs_ties --density 0.8 --gamma 0.05 --rescale $W
mk_case della "$MKG" --method della --density 0.6 --epsilon 0.1 --seed 4 $W
mk_case della-global "$MKG" --method della --density 0.6 --epsilon 0.1 --seed 4 --scope global
mk_case della_linear "$MKG" --method della_linear --density 0.6 --epsilon 0.1 --seed 4 $W
mk_case model_stock "$MKO" --method model_stock
mk_case model_stock-filter-wise "$MKO" --method model_stock --filter-wise
mk_case sce "$MKO" --method sce --select-topk 0.5
mk_case sce-all "$MKO" --method sce

# the old semantics ("copy") must not pass: the cases above tell the two apart
CASES=$((CASES + 1))
"$P" merge --quiet --base "$F/base" --out "$TMP/tell.ours" --method ties --density 0.3 $T &&
    "$PY" "$REF_PY" merge --base "$F/base" --out "$TMP/tell.ref" --method ties --density 0.3 \
        --report "$TMP/tell.rep" $T >/dev/null 2>&1
if "$PY" "$CMP_PY" "$TMP/tell.ours" "$TMP/tell.ref" --no-kept >/dev/null 2>&1; then
    echo "FAIL the reference copying the partial tensors matches: the cases prove nothing"
    FAILED+=("tell-apart")
else
    echo "ok   the reference's old mode (copy from the base) does not match"
fi
rm -rf "$TMP/tell.ours" "$TMP/tell.ref"

# ---- refusals -----------------------------------------------------------------------------------
expect_fail2() { # NAME REGEX CODE COMMAND...
    local name=$1 re=$2 code=$3 msg rc
    shift 3
    msg=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq "$code" ] && grep -Eq -- "$re" <<<"$msg"; then
        case_pass "$name" "exit $rc: $(grep -m1 error <<<"$msg" | cut -c1-160)"
    else
        case_fail "$name" "exit $rc (want $code), output: $(tr '\n' ' ' <<<"$msg" | cut -c1-400)"
    fi
}
expect_fail2 "nuslerp refuses a partial tensor" "nuslerp: tensor $A is missing from task model 2" 2 \
    "$P" merge --quiet --base "$F/base" --out "$TMP/nu" --method nuslerp --weights 1,2 \
    "$F/task1" "$F/task2"
expect_fail2 "model_stock with one task left refuses" \
    "model_stock: tensor $A is missing from task model 2" 2 \
    "$P" merge --quiet --base "$F/base" --out "$TMP/ms" --method model_stock "$F/task1" "$F/task2"
expect_fail2 "--require-all refuses naming tensor, task and path" \
    "missing from some task model \(the first: $A, from task model 2, $F/task2\).*--require-all refuses" 1 \
    "$P" merge --require-all --base "$F/base" --out "$TMP/ra" $T
CASES=$((CASES + 1))
if no_output "$TMP/ra" && no_output "$TMP/nu" && no_output "$TMP/ms"; then
    echo "ok   the refusals leave nothing"
else
    echo "FAIL a refusal left files"
    FAILED+=("refusals leave nothing")
fi
slerp_base() {
    "$P" merge --quiet --base "$F/base" --out "$TMP/slerp" --method slerp --t 0.3 "$F/task2" ||
        return 1
    "$PY" - "$PCBM_ROOT/tests/reference" "$TMP/slerp" "$F/base" "$A" "$B" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import read_model
o, b = read_model(sys.argv[2]), read_model(sys.argv[3])
for n in sys.argv[4:]:
    assert o[n].raw.tobytes() == b[n].raw.tobytes(), n
EOF
}
check "slerp: its only task lacking a tensor gives the base's" slerp_base

# ---- messages -----------------------------------------------------------------------------------
named_everywhere() {
    local log
    log=$("$P" merge --threads 1 --base "$F/base" --out "$TMP/o" --method ties --density 0.3 $T 2>&1) ||
        { echo "    $log"; return 1; }
    grep -q "warning: tensor $A is missing from task model 2 ($F/task2): merged over the other tasks" <<<"$log" ||
        { echo "    $log"; return 1; }
    grep -q "warning: tensor $C is missing from task model 1 .*copied from the base" <<<"$log" ||
        { echo "    $log"; return 1; }
    "$PY" - "$TMP/o/merge_report.json" "$A" "$B" "$C" "$F/task2" <<'EOF' || return 1
import json, sys
rep, a, b, c, task = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
part = {e["tensor"]: e["tasks_missing_it"] for e in rep["partial"]}
assert set(part) == {a, b}, rep["partial"]
assert part[a] == [{"task": 2, "task_path": task}], part[a]
assert rep["tensors_partial"] == 2 and rep["partial_listed"] == 2, rep
cop = [e for e in rep["copied"] if e["tensor"] == c]
assert cop and cop[0]["reason"] == "missing from every task model" and cop[0]["tasks_missing_it"] == 3, cop
d = rep["d"]
ds = [t["d"] for t in rep["tasks"]]
assert ds[0] == ds[2] == d and ds[1] == d - 128 * 48 - 48 * 48, (d, ds)
assert [w for w in rep["warnings"] if a in w and "task model 2" in w], rep["warnings"]
EOF
    log=$("$P" merge --dry-run --base "$F/base" --out "$TMP/d" $T 2>&1)
    grep -q "partial: $A (missing from task 2 ($F/task2): merged over the other tasks)" <<<"$log" ||
        { echo "    $log"; return 1; }
}
check "tensor and task named in the warning, merge_report.json and the dry run" named_everywhere

# ---- determinism --------------------------------------------------------------------------------
same_bytes() { # NAME MERGE_OPTIONS...
    local name=$1 why
    shift
    "$P" merge --quiet --base "$F/base" --out "$TMP/$name-a" --threads 1 --mem 1G --io pread "$@" $T &&
        "$P" merge --quiet --base "$F/base" --out "$TMP/$name-b" --threads 2 --mem 64M --io mmap \
            --block-size 64K "$@" $T || { case_fail "$name" "merge $* failed"; return; }
    if why=$(same_outputs "$TMP/$name-a" "$TMP/$name-b"); then
        case_pass "$name" "$* : the same bytes for --threads/--mem/--io/--block-size"
    else
        case_fail "$name" "$why"
    fi
}
same_bytes det-pcb --method pcb --density 0.2
same_bytes det-ties --method ties --density 0.3
same_bytes det-della --method della --density 0.6 --epsilon 0.1 --seed 4
same_bytes det-mk-dare_ties --mergekit --method dare_ties --density 0.6 --seed 3 --scope global

# ---- split merges -------------------------------------------------------------------------------
RT="--threads 2 --quiet"
split_same() { # NAME K MERGE_OPTIONS...
    local name=$1 k=$2 out=$TMP/split-$1 r rounds i why
    shift 2
    "$P" merge --quiet --threads 2 --base "$F/base" --out "$TMP/one-$name" --shard-size 100KB "$@" $T ||
        { case_fail "$name" "merge failed"; return; }
    {
        "$P" plan --quiet --shard-size 100KB --base "$F/base" --out "$out" --parts "$k" "$@" $T &&
            rounds=$("$P" status --plan "$out" --get rounds_max) &&
            for ((r = 0; r <= rounds; r++)); do
                "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
                for ((i = 0; i < k; i++)); do "$P" stats --plan "$out" --part $i $RT || exit 1; done
                "$P" reduce --plan "$out" $RT || exit 1
            done &&
            for ((i = 0; i < k; i++)); do "$P" apply --plan "$out" --part $i $RT || exit 1; done &&
            "$P" finalize --plan "$out" $RT
    } >"$TMP/split.log" 2>&1 || { case_fail "$name" "split: $(tail -n 3 "$TMP/split.log" | tr '\n' ' ')"; return; }
    if why=$(same_outputs "$TMP/one-$name" "$out"); then
        case_pass "$name" "$* split into $k parts: the bytes of one merge"
    else
        case_fail "$name" "$why"
    fi
}
split_same split-pcb 3 --method pcb --density 0.2
split_same split-ties 3 --method ties --density 0.3
split_same split-breadcrumbs_ties 2 --method breadcrumbs_ties --density 0.8 --gamma 0.05

# ---- resume and --stats replay ------------------------------------------------------------------
resume_same() {
    local out=$TMP/res why
    "$P" merge --quiet --base "$F/base" --out "$TMP/res-ref" --shard-size 100KB --method pcb --density 0.2 $T ||
        return 1
    PCBM_FAULT=write:eio:2 "$P" merge --quiet --base "$F/base" --out "$out" --shard-size 100KB \
        --method pcb --density 0.2 $T >/dev/null 2>&1 && { echo "    the fault did not fail the merge"; return 1; }
    [ -e "$out.partial" ] || { echo "    no $out.partial to resume"; return 1; }
    "$P" merge --quiet --base "$F/base" --out "$out" --shard-size 100KB --method pcb --density 0.2 \
        --resume $T || return 1
    why=$(same_outputs "$TMP/res-ref" "$out") || { echo "    $why"; return 1; }
    "$P" merge --quiet --base "$F/base" --out "$TMP/res-stats" --shard-size 100KB --method pcb \
        --density 0.2 --stats "$TMP/res-ref/merge_stats.json.zst" $T || return 1
    # the model card says where the statistics came from: the weights and index are compared
    why=$(same_outputs "$TMP/res-ref" "$TMP/res-stats" README.md merge_stats.json.zst) ||
        { echo "    $why"; return 1; }
    grep -q '"replayed from --stats"' "$TMP/res-stats/merge_report.json" ||
        { echo "    the statistics were not replayed"; return 1; }
}
check "a merge resumed after a write error, and a --stats replay: the bytes of one merge" resume_same

finish

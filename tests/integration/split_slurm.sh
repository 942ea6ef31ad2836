#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# split_slurm.sh — the split merge on a real Slurm: a single-node cluster on localhost (Debian's
# munge, slurmctld and slurmd; tools/cluster/slurm/local-cluster.sh), the pipeline submitted by
# tools/cluster/slurm/pcbmerge-slurm.sh as job arrays chained with afterok, K = 4:
#   1. pcb: the published files are the bytes of a single-machine `pcbmerge merge`;
#   2. ties with part 2's process killed mid-apply (SIGKILL from the test hook): finalize never
#      runs, DIR never appears; `pcbmerge-slurm.sh --resume` re-submits only part 2's apply and
#      finalize (cancelling the first submission's waiting finalize); the result is again the
#      bytes of a single merge.
# Skipped (with the reason) only when the daemons cannot start on this machine.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

CL=$TMP/cluster
SL=$PCBM_ROOT/tools/cluster/slurm
start_out=$("$SL/local-cluster.sh" start "$CL" 2>&1)
case $? in
0) eval "$(grep '^export SLURM_CONF=' <<<"$start_out")" ;;
3) skip "slurmctld cannot start here: $(head -n 1 <<<"$start_out")" ;;
*) fail "local-cluster.sh start: $start_out" ;;
esac
trap '"$SL/local-cluster.sh" stop "$CL"; cleanup' EXIT

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset small --seed 11
T="$F/task1 $F/task2 $F/task3"
COMMON="--shard-size 1MB --quiet"
export PCBM_RUN_ARGS="--threads 1 --quiet"
export SBATCH_ARGS="--cpus-per-task=1"
export PCBM_SEGMENT_BYTES=256K

# wait_job ID SECONDS: until the job leaves the queue (or the time runs out); prints its state
wait_job() {
    local id=$1 t=$2 s i
    for ((i = 0; i < t * 2; i++)); do
        s=$(scontrol -o show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1)
        s=${s#JobState=}
        case $s in PENDING | RUNNING | CONFIGURING | COMPLETING | "") ;; *) echo "$s"; return 0 ;; esac
        # a job whose dependency can never be met stays PENDING: report it as such
        if [ "$s" = PENDING ] && scontrol -o show job "$id" | grep -q 'Reason=DependencyNeverSatisfied'; then
            echo NEVER
            return 0
        fi
        sleep 0.5
    done
    echo "TIMEOUT($s)"
}
job_of() { awk -v p="$1" '$1 == p {id = $2} END {print id}' "$2"; }

# ---- 1. pcb, K = 4 ------------------------------------------------------------------------------
"$PCBM_BIN" merge $COMMON --threads 2 --base "$F/base" --out "$TMP/ref-pcb" $T || fail "single merge"
PCBMERGE=$PCBM_BIN "$SL/pcbmerge-slurm.sh" --parts 4 $COMMON --base "$F/base" --out "$TMP/pcb" $T \
    >"$TMP/jobs-pcb" 2>"$TMP/submit-pcb.log" || fail "submit: $(cat "$TMP/submit-pcb.log")"
state=$(wait_job "$(job_of finalize "$TMP/jobs-pcb")" 300)
if [ "$state" = COMPLETED ] && msg=$(same_outputs "$TMP/ref-pcb" "$TMP/pcb"); then
    case_pass "Slurm pipeline, pcb, K=4: the bytes of a single merge" \
        "$(grep -c . "$TMP/jobs-pcb") jobs"
else
    case_fail "Slurm pipeline, pcb, K=4" "finalize $state; ${msg:-}; $(tail -n 3 "$TMP"/pcb.slurm-logs/* 2>/dev/null | tail -n 8)"
fi

# ---- 2. ties, part 2 killed mid-apply, resubmitted alone ----------------------------------------
"$PCBM_BIN" merge $COMMON --threads 2 --method ties --base "$F/base" --out "$TMP/ref-ties" $T ||
    fail "single merge (ties)"
cat >"$TMP/killer.sh" <<EOF
#!/bin/bash
# part 2's apply dies by SIGKILL after 3 blocks; every other job runs pcbmerge as it is
if [ "\$1" = apply ] && [ "\${SLURM_ARRAY_TASK_ID:-}" = 2 ]; then export PCBM_TEST_KILL=apply:3; fi
exec "$PCBM_BIN" "\$@"
EOF
chmod +x "$TMP/killer.sh"
PCBMERGE=$TMP/killer.sh "$SL/pcbmerge-slurm.sh" --parts 4 $COMMON --method ties --base "$F/base" \
    --out "$TMP/ties" $T >"$TMP/jobs-ties" 2>"$TMP/submit-ties.log" ||
    fail "submit: $(cat "$TMP/submit-ties.log")"
state=$(wait_job "$(job_of finalize "$TMP/jobs-ties")" 300)
pending=$("$PCBM_BIN" status --plan "$TMP/ties" --get pending_apply 2>&1)
if [ "$state" = NEVER ] && [ "$pending" = 2 ] && [ ! -e "$TMP/ties" ]; then
    case_pass "a part killed mid-apply: finalize never runs, only part 2 is pending"
else
    case_fail "killed part" "finalize $state, pending '$pending', DIR exists: $([ -e "$TMP/ties" ] && echo yes || echo no)"
fi
PCBMERGE=$PCBM_BIN "$SL/pcbmerge-slurm.sh" --resume "$TMP/ties" >"$TMP/jobs-resume" \
    2>"$TMP/resume.log" || fail "resume: $(cat "$TMP/resume.log")"
apply_id=$(job_of apply "$TMP/jobs-resume")
state=$(wait_job "$(job_of finalize "$TMP/jobs-resume")" 300)
old_fin=$(scontrol -o show job "$(job_of finalize "$TMP/jobs-ties")" 2>/dev/null |
    grep -o 'JobState=[A-Z]*')
if [ "$old_fin" = JobState=CANCELLED ]; then
    case_pass "--resume cancels the earlier submission's waiting finalize"
else
    case_fail "stale finalize" "the first finalize is ${old_fin:-gone}, not cancelled"
fi
tasks=$(scontrol -o show job "$apply_id" 2>/dev/null | grep -c 'ArrayTaskId=2 ')
resumed=$(cat "$TMP"/ties.slurm-logs/apply-"$apply_id"_2.log 2>/dev/null)
if [ "$state" = COMPLETED ] && [ "$(grep -c . "$TMP/jobs-resume")" = 2 ] && [ "$tasks" = 1 ] &&
    msg=$(same_outputs "$TMP/ref-ties" "$TMP/ties"); then
    case_pass "resubmitted part 2 alone (apply + finalize): the bytes of a single merge"
else
    case_fail "resubmit" "finalize $state; jobs: $(tr '\n' ' ' <"$TMP/jobs-resume"); array tasks $tasks; ${msg:-}; $resumed"
fi
finish

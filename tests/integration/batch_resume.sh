#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# batch_resume.sh — merges as preemptible batch jobs: a killed run never leaves OUT; --resume
# continues from the durable, hash-checked output and the saved statistics and ends with the
# bytes of an uninterrupted run. SIGKILL at fixed points (before the statistics are done,
# mid-apply, during finalization) and at 6 random moments in a row; SIGTERM (exit 75, message
# that says how to resume); ENOSPC during writes (resumable once space is back); a read-only
# output location; changed inputs or parameters (resume refused, saying which); an existing
# partial directory without --resume; pcbmerge verify (ok, then a damaged file named); a quirky
# family (FP8, tied head, appended tokens) killed and resumed.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset llama-mini --seed 41
T="$F/task1 $F/task2 $F/task3"
export PCBM_SEGMENT_BYTES=512K            # many durable segments on a small model
OPTS="--threads 1 --shard-size 8MB --quiet"
merge() { "$PCBM_BIN" merge $OPTS --base "$F/base" "$@"; }
same_as() { # REF OUT: every file identical except the run's own report and manifest
    local f ok=0
    for f in "$1"/*; do
        case $(basename "$f") in merge_report.json | pcbmerge.manifest.json) continue ;; esac
        cmp -s "$f" "$2/$(basename "$f")" || { echo "    differs: $(basename "$f")"; ok=1; }
    done
    [ -e "$2/pcbmerge.manifest.json" ] || { echo "    no manifest"; ok=1; }
    return $ok
}

declare -A MS # milliseconds an uninterrupted merge takes, per method
for m in pcb ties task_arithmetic; do
    t0=$(date +%s%N)
    merge --method $m --out "$TMP/ref-$m" $T || fail "reference merge ($m) failed"
    MS[$m]=$((($(date +%s%N) - t0) / 1000000))
done
echo "uninterrupted: pcb ${MS[pcb]} ms, ties ${MS[ties]} ms, task_arithmetic ${MS[task_arithmetic]} ms"

# SIGKILL at fixed points, then --resume
kill_point() { # METHOD POINT
    local out=$TMP/kp-$1-${2%%:*}
    PCBM_TEST_KILL=$2 merge --method "$1" --resume --out "$out" $T 2>/dev/null
    local rc=$?
    [ $rc -eq 137 ] || { echo "    not killed (exit $rc)"; return 1; }
    [ ! -e "$out" ] || { echo "    $out appeared after a kill"; return 1; }
    merge --method "$1" --resume --out "$out" $T && same_as "$TMP/ref-$1" "$out"
}
check "pcb killed before the statistics are done" kill_point pcb stats:40
check "pcb killed mid-apply" kill_point pcb apply:30
check "pcb killed during finalization" kill_point pcb finalize
check "ties killed mid-apply" kill_point ties apply:10
check "task_arithmetic killed mid-apply" kill_point task_arithmetic apply:20

# SIGKILL at random moments, resuming each time: a chain of 6 kills (the first anywhere in a
# run, the next ones early in the resumed runs) and then a run to the end. A run that finishes
# before its kill ends the chain; a new chain starts from scratch with delays halved, since runs
# are faster than the measured one (at most 8 chains).
random_kills() { # METHOD
    local out=$TMP/rk-$1 full=${MS[$1]} chain kills pid delay max
    for chain in 1 2 3 4 5 6 7 8; do
        rm -rf "$out" "$out.partial"
        kills=0
        while [ $kills -lt 6 ]; do
            # shellcheck disable=SC2086 # (the process itself, not a shell function's subshell)
            "$PCBM_BIN" merge $OPTS --base "$F/base" --method "$1" --resume --out "$out" $T 2>/dev/null &
            pid=$!
            max=$((kills == 0 ? full * 9 / 10 : full / 5))
            delay=$((RANDOM % (max > 10 ? max : 10) + 5))
            sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
            kill -9 $pid 2>/dev/null && kills=$((kills + 1))
            wait $pid 2>/dev/null
            [ -d "$out" ] && break
        done
        [ $kills -eq 6 ] && [ ! -d "$out" ] && break
        full=$((full / 2)) # runs were faster than the measured one: kill earlier
    done
    [ $kills -eq 6 ] || { echo "    no chain of 6 kills (the merge is too fast to kill)"; return 1; }
    merge --method "$1" --resume --out "$out" $T || return 1
    echo "    6 kills in chain $chain"
    same_as "$TMP/ref-$1" "$out"
}
check "task_arithmetic survives random SIGKILLs" random_kills task_arithmetic
check "pcb survives random SIGKILLs" random_kills pcb

# SIGTERM: clean stop, exit 75, a message that says how to resume
sigterm() {
    local out=$TMP/term log=$TMP/term.log
    PCBM_TEST_KILL= "$PCBM_BIN" merge --threads 1 --shard-size 8MB --method pcb --base "$F/base" \
        --out "$out" $T 2>"$log" &
    local pid=$!
    sleep 0.4
    kill -TERM $pid
    wait $pid
    local rc=$?
    if [ $rc -ne 75 ]; then
        [ $rc -eq 0 ] && { echo "    finished before the signal (machine too fast?)"; return 0; }
        echo "    exit $rc, expected 75"; cat "$log"; return 1
    fi
    grep -q -- "--resume" "$log" || { echo "    no resume hint:"; cat "$log"; return 1; }
    [ ! -e "$out" ] || { echo "    $out exists after exit 75:"; cat "$log"; return 1; }
    merge --method pcb --resume --out "$out" $T || { echo "    resume failed"; return 1; }
    same_as "$TMP/ref-pcb" "$out"
}
check "SIGTERM stops with exit 75 and resumes" sigterm

# ENOSPC while writing (injected): clear error, resumable once space is back
enospc() {
    local out=$TMP/nospace log=$TMP/nospace.log
    PCBM_FAULT=write:enospc:12 merge --method pcb --out "$out" $T 2>"$log" && return 1
    grep -q "No space left" "$log" && grep -q -- "--resume" "$log" || { cat "$log"; return 1; }
    [ ! -e "$out" ] && [ -d "$out.partial" ] || return 1
    merge --method pcb --resume --out "$out" $T && same_as "$TMP/ref-pcb" "$out"
}
check "ENOSPC is reported and resumable" enospc

# resume refused when inputs or parameters changed
refused() {
    local out=$TMP/refused
    PCBM_TEST_KILL=apply:10 merge --method pcb --out "$out" $T 2>/dev/null
    local a b c
    a=$(merge --method pcb --resume --density 0.2 --out "$out" $T 2>&1) && return 1
    b=$(merge --method pcb --resume --out "$out" "$F/task2" "$F/task1" "$F/task3" 2>&1) && return 1
    c=$(merge --method pcb --out "$out" $T 2>&1) && return 1
    grep -q "parameters changed (density" <<<"$a" && grep -q "task model 1" <<<"$b" &&
        grep -q -- "--resume" <<<"$c" && grep -q -- "--force" <<<"$c" || { echo "$a$b$c"; return 1; }
    merge --method pcb --force --out "$out" $T && same_as "$TMP/ref-pcb" "$out"
}
check "changed inputs or parameters refuse to resume" refused

# a read-only output location
readonly_out() {
    local ro=$TMP/ro
    mkdir -p "$ro"
    if ! mount -t tmpfs -o ro,size=1M tmpfs "$ro" 2>/dev/null; then
        echo "    (cannot mount a read-only tmpfs here: checked with chmod instead)"
        chmod 555 "$ro"
        [ "$(id -u)" = 0 ] && { echo "    root ignores chmod: part skipped"; return 0; }
    fi
    local out
    out=$(merge --method pcb --out "$ro/out" $T 2>&1)
    local rc=$?
    umount "$ro" 2>/dev/null
    [ $rc -eq 1 ] && grep -q "cannot create $ro/out.partial" <<<"$out" || { echo "$out"; return 1; }
}
check "read-only output location" readonly_out

# a damaged journal or saved statistics file: a clear error, never a wrong output
damaged() {
    local out=$TMP/damaged a b
    PCBM_TEST_KILL=apply:10 merge --method pcb --out "$out" $T 2>/dev/null
    cp "$out.partial/merge_stats.json.zst" "$TMP/stats.bak"
    printf 'XXXX' | dd of="$out.partial/merge_stats.json.zst" bs=1 seek=20 conv=notrunc 2>/dev/null
    a=$(merge --method pcb --resume --out "$out" $T 2>&1) && return 1
    cp "$TMP/stats.bak" "$out.partial/merge_stats.json.zst"
    printf 'XXXX' | dd of="$out.partial/journal.json.zst" bs=1 seek=20 conv=notrunc 2>/dev/null
    b=$(merge --method pcb --resume --out "$out" $T 2>&1) && return 1
    grep -q "statistics file .* is damaged" <<<"$a" && grep -q "journal .* is damaged" <<<"$b" &&
        grep -q -- "--force" <<<"$b" || { echo "    $a"; echo "    $b"; return 1; }
    [ ! -e "$out" ] && merge --method pcb --force --out "$out" $T && same_as "$TMP/ref-pcb" "$out"
}
check "a damaged journal or statistics file is refused" damaged

# a second run on the same partial directory waits its turn
double_launch() {
    local out=$TMP/double
    "$PCBM_BIN" merge $OPTS --base "$F/base" --method pcb --out "$out" $T 2>/dev/null &
    local pid=$! msg
    sleep 0.3
    msg=$(merge --method pcb --resume --out "$out" $T 2>&1)
    local rc=$?
    wait $pid || return 1
    [ $rc -ne 0 ] && grep -q "another pcbmerge is writing" <<<"$msg" || { echo "    $msg"; return 1; }
    same_as "$TMP/ref-pcb" "$out"
}
check "a concurrent second run is refused" double_launch

# verify
verify_cases() {
    local out=$TMP/ref-pcb
    "$PCBM_BIN" verify "$out" >/dev/null || return 1
    local victim
    victim=$(ls "$out"/model-0000*.safetensors | sed -n 2p)
    [ -f "$victim" ] || return 1
    printf 'X' | dd of="$victim" bs=1 seek=5000 conv=notrunc 2>/dev/null
    local msg
    msg=$("$PCBM_BIN" verify "$out" 2>&1) && return 1
    grep -q "MISMATCH model-0000" <<<"$msg" || { echo "$msg"; return 1; }
}
check "verify passes, then names a damaged file" verify_cases

# A quirky family (FP8 base with block scales and a tied head, a BF16 task with appended tokens
# that unties the head, an FP8 task): killed mid-statistics and mid-apply, resumed, the same bytes.
quirky_resume() { # METHOD POINT
    local Q=$TMP/quirky out=$TMP/qk-$1-${2%%:*} qt
    [ -d "$Q" ] || "$PY" "$PCBM_ROOT/tools/testing/quirky-family.py" "$Q" --params 3M || return 1
    qt="$Q/task1 $Q/task2"
    [ -d "$TMP/qref-$1" ] || "$PCBM_BIN" merge $OPTS --method "$1" --base "$Q/base" \
        --out "$TMP/qref-$1" $qt || return 1
    PCBM_TEST_KILL=$2 "$PCBM_BIN" merge $OPTS --method "$1" --base "$Q/base" --out "$out" $qt \
        2>/dev/null
    [ $? -eq 137 ] && [ -d "$out.partial" ] || { echo "    not killed at $2"; return 1; }
    "$PCBM_BIN" merge $OPTS --resume --method "$1" --base "$Q/base" --out "$out" $qt &&
        same_as "$TMP/qref-$1" "$out"
}
if "$PY" -c 'import numpy' 2>/dev/null; then
    check "quirky family: pcb killed mid-statistics, resumed" quirky_resume pcb stats:3
    check "quirky family: pcb killed mid-apply, resumed" quirky_resume pcb apply:12
    check "quirky family: task_arithmetic killed mid-apply, resumed" quirky_resume task_arithmetic apply:8
fi

finish

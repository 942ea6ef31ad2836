#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# engine_faults.sh — failures are clean. With PCBM_FAULT (src/io/io_fault.c) read and write
# requests fail (eio, short, enospc; some only on one task or output shard, some at the last read
# of a shard, i.e. in PCB's apply pass): the merge must exit non-zero, within a time limit (a hang
# is a failure), with one "pcbmerge: error: ..." line on stderr naming the file and an offset, and
# leave nothing that looks complete: no OUT, and OUT.partial only where pcbmerge keeps it for
# --resume (I/O errors), says so, and resuming it without the fault gives the normal run's bytes.
# Both I/O backends.
# io_uring refused (PCBM_FAULT=uring_setup:eperm|enosys, and a real seccomp filter through
# tools/no-uring): --io auto succeeds, says once that it fell back, and writes the same bytes as a
# normal run; --io uring fails and points at --io pread.
# Inputs that must be refused before anything is written (with PCBM_FAULT=read:eio:1 where the
# refusal must come before any tensor data is read): task models of another shape (both ways
# round), a task-only tensor (--allow-extra), NaN weights (every method; --allow-nonfinite),
# an existing OUT, a stale OUT.partial (--force), an output filesystem without room (tmpfs).
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
TO=${PCBM_TEST_TIMEOUT:-15} # seconds a merge of these small families may take before it "hangs"

F=$TMP/fam
gen "$F" --params 1M --tasks 3 --dtype bf16 --seed 61 --shard-size 512K
TASKS=$(task_dirs "$F" 3)
nin=$(ls "$F"/base/*.safetensors | wc -l)
[ "$nin" -ge 3 ] || fail "expected several input shards, got $nin"
OUTSHARD=600KB

# run_merge LOG OUT [ENV=VALUE...] -- MERGE OPTIONS...: pcbmerge merge on the family, with a timeout.
run_merge() {
    local log=$1 out=$2
    shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    # shellcheck disable=SC2086
    env "${envs[@]}" timeout "$TO" "$PCBM_BIN" merge --base "$F/base" --out "$out" \
        --shard-size $OUTSHARD "$@" $TASKS >"$log" 2>&1
}

IOS=(pread)
if run_merge "$TMP/probe.log" "$TMP/probe" -- --quiet --io uring --method linear; then
    IOS=(uring pread)
else
    echo "io_uring is unavailable here: the fault cases run on the pread backend only"
fi
rm -rf "$TMP/probe"

# the normal outputs the fallback runs are compared with
run_merge "$TMP/ref-pcb.log" "$TMP/ref-pcb" -- --quiet --method pcb || fail "normal pcb merge failed"
cp -r "$TMP/ref-pcb" "$TMP/normal-pcb"
nout=$(ls "$TMP/ref-pcb"/model-*.safetensors | wc -l)
[ "$nout" -ge 3 ] || fail "expected several output shards, got $nout"
last_out=$(printf 'model-%05d-of-%05d' "$nout" "$nout")
echo "family: $nin input shards per model, $nout output shards (--shard-size $OUTSHARD)"

# ---- injected I/O faults ---------------------------------------------------------------------

RESUME=""
"$PCBM_BIN" merge --help | grep -q -- '--resume' && RESUME=yes

# normal_out METHOD: the output of a normal merge with METHOD (made once).
normal_out() {
    local out=$TMP/normal-$1
    [ -d "$out" ] || run_merge "$out.log" "$out" -- --quiet --method "$1" || fail "normal $1 merge failed"
    echo "$out"
}

# fault_case IO METHOD SPEC FILE_REGEX [OPTIONS...]: the merge (with OPTIONS) must fail cleanly,
# naming FILE_REGEX and an offset.
# Nothing may look complete: no OUT. A kept OUT.partial (resumable I/O failures, when pcbmerge has
# --resume) must be announced on stderr, hold no index, manifest or report, and resuming it without
# the fault must give the normal run's bytes.
fault_case() {
    local io=$1 method=$2 spec=$3 file_re=$4
    shift 4
    local name="$io/$method/$spec${*:+ ($*)}" out=$TMP/fault log=$TMP/fault.log rc nerr line other why
    run_merge "$log" "$out" PCBM_FAULT="$spec" -- --quiet --io "$io" --method "$method" "$@"
    rc=$?
    nerr=$(grep -c '^pcbmerge: error: ' "$log")
    line=$(grep -m1 '^pcbmerge: error: ' "$log")
    other=$(grep -v '^pcbmerge: error: ' "$log" | grep -v -- '--resume')
    if [ $rc -eq 124 ]; then
        case_fail "$name" "hung: killed after $TO s (stderr so far: $(tr '\n' ' ' <"$log"))"
    elif [ $rc -eq 0 ]; then
        case_fail "$name" "the merge succeeded despite the fault"
    elif [ "$nerr" -ne 1 ] || [ -n "$other" ]; then
        case_fail "$name" "exit $rc; expected one 'pcbmerge: error:' line (and at most a --resume hint), got: $(head -c 600 "$log" | tr '\n' '|')"
    elif ! grep -Eq -- "$file_re" <<<"$line" || ! grep -q 'offset' <<<"$line"; then
        case_fail "$name" "the error does not name the file /$file_re/ and an offset: $line"
    elif [ -e "$out" ]; then
        case_fail "$name" "exit $rc, but OUT exists"
    elif [ -e "$out.partial" ] && { [ -z "$RESUME" ] || ! grep -q -- '--resume' "$log"; }; then
        case_fail "$name" "exit $rc, but left $out.partial without saying it can be resumed"
    elif [ -e "$out.partial" ] && [ -n "$(cd "$out.partial" && ls -d model.safetensors.index.json \
        pcbmerge.manifest.json merge_report.json 2>/dev/null)" ]; then
        case_fail "$name" "the kept OUT.partial looks complete: $(ls "$out.partial" | tr '\n' ' ')"
    elif [ -e "$out.partial" ]; then
        if ! run_merge "$log" "$out" -- --quiet --io "$io" --method "$method" "$@" --resume; then
            case_fail "$name" "resuming after the fault failed: $(head -c 400 "$log" | tr '\n' '|')"
        elif ! why=$(same_outputs "$(normal_out "$method")" "$out"); then
            case_fail "$name" "resumed after the fault, the output differs from a normal run: $why"
        else
            case_pass "$name" "exit $rc, kept OUT.partial, --resume gives the normal bytes: ${line#pcbmerge: error: }"
        fi
    else
        case_pass "$name" "exit $rc, nothing left: ${line#pcbmerge: error: }"
    fi
    rm -rf "$out" "$out.partial"
}

# reads_of METHOD PATHSUBSTR: how many read requests a normal merge issues on files matching
# PATHSUBSTR (the first N at which read:eio:N:PATHSUBSTR no longer fails, minus one).
reads_of() {
    local method=$1 sub=$2 lo=0 hi=1 mid rc out=$TMP/count
    while :; do # double hi until read:eio:hi no longer fails
        run_merge /dev/null "$out" PCBM_FAULT="read:eio:$hi:$sub" -- --quiet --method "$method"
        rc=$?
        rm -rf "$out" "$out.partial"
        [ $rc -eq 0 ] && break
        [ $rc -eq 124 ] || [ $hi -gt 1000000 ] && { echo 0; return; }
        lo=$hi
        hi=$((hi * 2))
    done
    while [ $((hi - lo)) -gt 1 ]; do # read:eio:lo fails (or lo = 0), read:eio:hi succeeds
        mid=$(((lo + hi) / 2))
        if run_merge /dev/null "$out" PCBM_FAULT="read:eio:$mid:$sub" -- --quiet --method "$method"; then
            hi=$mid
        else
            lo=$mid
        fi
        rm -rf "$out" "$out.partial"
    done
    echo $lo
}

last_t1=$(reads_of pcb task1/model-00002)
[ "$last_t1" -gt 0 ] || fail "could not count the reads of task1/model-00002"
echo "a pcb merge reads task1/model-00002 in $last_t1 requests; the last one belongs to the apply pass"

for io in "${IOS[@]}"; do
    fault_case $io pcb read:eio:1 'base/model-00001-of-'
    fault_case $io pcb read:eio:3:task2/model-00002 'task2/model-00002-of-'
    fault_case $io ties read:short:2:task3/model-00003 'task3/model-00003-of-'
    fault_case $io pcb "read:eio:$last_t1:task1/model-00002" 'task1/model-00002-of-'
    fault_case $io pcb "read:short:$last_t1:task1/model-00002" 'task1/model-00002-of-'
    fault_case $io task_arithmetic read:short:1:task1/model-00003 'task1/model-00003-of-'
    fault_case $io dare_ties read:eio:2:base/model-00002 'base/model-00002-of-'
    fault_case $io pcb write:eio:1 'model-00001-of-'
    fault_case $io task_arithmetic write:eio:2 'model-0000[12]-of-'
    fault_case $io pcb write:eio:2 'model-0000[12]-of-'
    fault_case $io ties write:enospc:2 'model-0000[12]-of-'
    fault_case $io pcb write:enospc:1:model-00002 'model-00002-of-'
    fault_case $io ties write:short:1:model-00003 'model-00003-of-'
    fault_case $io dare_linear write:short:1 'model-00001-of-'
    fault_case $io pcb "write:eio:1:$last_out" "$last_out"
    fault_case $io linear "write:short:1:$last_out" "$last_out"
    # many small blocks in flight on 4 workers when the fault hits
    fault_case $io pcb write:eio:3 'model-0000[1-5]-of-' --block-size 64K --threads 4
    fault_case $io task_arithmetic read:eio:20:task2/ 'task2/model-0000[1-5]-of-' --block-size 64K --threads 4
    fault_case $io ties write:enospc:4 'model-0000[1-5]-of-' --block-size 64K --threads 4 --mem 64M
done

# ---- io_uring refused ---------------------------------------------------------------------------

# fallback_case NAME PREFIX...: PREFIX pcbmerge merge --io auto succeeds, mentions io_uring once
# (the fallback note, which also names the pread pool) and writes the normal run's bytes.
fallback_case() {
    local name=$1
    shift
    local out=$TMP/fb log=$TMP/fb.log rc n why
    # shellcheck disable=SC2086
    timeout "$TO" "$@" "$PCBM_BIN" merge --io auto --method pcb --base "$F/base" --out "$out" \
        --shard-size $OUTSHARD $TASKS >"$log" 2>&1
    rc=$?
    n=$(grep -ci 'io_uring' "$log")
    if [ $rc -ne 0 ]; then
        case_fail "$name" "exit $rc: $(tail -n 3 "$log" | tr '\n' ' ')"
    elif [ "$n" -ne 1 ] || ! grep -i 'io_uring' "$log" | grep -q 'pread'; then
        case_fail "$name" "expected one line about falling back from io_uring to pread, got $n: $(grep -i 'io_uring' "$log" | tr '\n' '|')"
    elif ! why=$(same_outputs "$TMP/ref-pcb" "$out"); then
        case_fail "$name" "the output differs from the normal run: $why"
    else
        case_pass "$name" "$(grep -i 'io_uring' "$log")"
    fi
    rm -rf "$out" "$out.partial"
}

# uring_refused NAME PREFIX...: PREFIX pcbmerge merge --io uring fails, pointing at --io pread.
uring_refused() {
    local name=$1
    shift
    local out=$TMP/fb log=$TMP/fb.log rc
    # shellcheck disable=SC2086
    timeout "$TO" "$@" "$PCBM_BIN" merge --quiet --io uring --method pcb --base "$F/base" \
        --out "$out" $TASKS >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        case_fail "$name" "exit $rc, expected a failure"
    elif ! grep -q -- '--io to pread' "$log"; then
        case_fail "$name" "the message does not say to set --io to pread: $(tr '\n' ' ' <"$log")"
    elif ! no_output "$out"; then
        case_fail "$name" "left $(ls -d "$out"* | tr '\n' ' ')"
    else
        case_pass "$name" "exit $rc: $(head -n 1 "$log")"
    fi
    rm -rf "$out" "$out.partial"
}

fallback_case fallback-eperm env PCBM_FAULT=uring_setup:eperm
fallback_case fallback-enosys env PCBM_FAULT=uring_setup:enosys
uring_refused uring-eperm env PCBM_FAULT=uring_setup:eperm
NO_URING=$PCBM_TOOLS/no-uring
if [ ! -x "$NO_URING" ]; then
    echo "skipped: the seccomp cases ($NO_URING is not built)"
elif ! "$NO_URING" true 2>"$TMP/nu.log"; then
    echo "skipped: the seccomp cases (no-uring cannot install a filter here: $(cat "$TMP/nu.log"))"
else
    fallback_case seccomp-fallback "$NO_URING"
    fallback_case seccomp-fallback-enosys "$NO_URING" --errno enosys
    uring_refused seccomp-uring "$NO_URING"
fi

# ---- inputs refused before anything is written -----------------------------------------------

# refused NAME REGEX [ENV=VALUE...] -- MERGE ARGS (with --base, tasks; OUT is $TMP/ref-out):
# exit 1 with a message matching REGEX, within the time limit, and no OUT or OUT.partial.
refused() {
    local name=$1 re=$2
    shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    local out=$TMP/ref-out log=$TMP/refused.log rc
    env "${envs[@]}" timeout "$TO" "$PCBM_BIN" merge --quiet --out "$out" "$@" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 124 ]; then
        case_fail "$name" "hung: killed after $TO s"
    elif [ $rc -ne 1 ]; then
        case_fail "$name" "exit $rc, expected 1: $(head -c 400 "$log" | tr '\n' '|')"
    elif ! grep -Eq -- "$re" "$log"; then
        case_fail "$name" "the message does not match /$re/: $(head -c 600 "$log" | tr '\n' '|')"
    elif ! no_output "$out"; then
        case_fail "$name" "left $(ls -d "$out" "$out.partial" 2>/dev/null | tr '\n' ' ')"
    else
        case_pass "$name" "exit 1: $(grep -m1 'error' "$log" | cut -c1-150)"
    fi
    rm -rf "$out" "$out.partial"
}

# succeeds NAME OUT MERGE ARGS...: the merge succeeds (the output is left in OUT).
succeeds() {
    local name=$1 out=$2
    shift 2
    if timeout "$TO" "$PCBM_BIN" merge --quiet --out "$out" "$@" >"$TMP/ok.log" 2>&1; then
        return 0
    fi
    case_fail "$name" "exit $?: $(head -c 400 "$TMP/ok.log" | tr '\n' '|')"
    return 1
}

X=$TMP/tiny Y=$TMP/small Z=$TMP/extra N=$TMP/nan
gen "$X" --preset tiny --tasks 2 --seed 3
gen "$Y" --preset small --tasks 1 --seed 4
gen "$Z" --preset tiny --tasks 2 --seed 3 --extra-task-tensor
NANT=model.layers.1.mlp.up_proj.weight
gen "$N" --preset tiny --tasks 2 --seed 3 --nonfinite $NANT
NOREAD=PCBM_FAULT=read:eio:1 # any tensor read would fail with a read error instead

# another family's task: every shared tensor differs in shape; the error lists them with both
shape_re='model\.embed_tokens\.weight.*\[[0-9, ]+\].*\[[0-9, ]+\]'
refused mismatch-small-base "$shape_re" $NOREAD -- --base "$Y/base" "$Y/task1" "$X/task1"
refused mismatch-tiny-base "$shape_re" $NOREAD -- --base "$X/base" "$X/task1" "$Y/task1"

# a tensor only a task has
refused extra-tensor 'allow-extra' $NOREAD -- --base "$Z/base" "$Z/task1" "$Z/task2"
if succeeds extra-allowed "$TMP/extra-ok" --allow-extra --base "$Z/base" "$Z/task1" "$Z/task2" &&
    succeeds extra-plain "$TMP/plain" --base "$X/base" "$X/task1" "$X/task2"; then
    if "$PCBM_BIN" inspect "$TMP/extra-ok" | grep -q extra_task_head; then
        case_fail extra-allowed "the task-only tensor reached the output"
    elif ! why=$(same_outputs "$TMP/plain" "$TMP/extra-ok" merge_stats.json.zst pcbmerge.manifest.json README.md); then
        case_fail extra-allowed "differs from the same merge without the extra tensor: $why"
    else
        case_pass extra-allowed "--allow-extra ignores it: the output equals the family without it"
    fi
fi
rm -rf "$TMP/extra-ok" "$TMP/plain"

# NaN in a task: every method refuses (naming the tensor), --allow-nonfinite merges. The methods
# that find it in their apply pass are run a few times: a refusal there raced with the writer.
for spec in pcb:global pcb:tensor ties:global ties:tensor dare_ties:global dare_linear:global \
    task_arithmetic:global linear:global; do
    m=${spec%%:*} sc=${spec#*:}
    reps=1
    case $m in task_arithmetic | dare_linear | linear) reps=4 ;; esac
    for ((r = 1; r <= reps; r++)); do
        suffix=""
        [ $r -gt 1 ] && suffix="-run$r"
        refused "nonfinite-$m-$sc$suffix" "$NANT" -- --method $m --scope $sc --base "$N/base" \
            "$N/task1" "$N/task2"
    done
done
for m in pcb ties task_arithmetic; do
    succeeds "allow-nonfinite-$m" "$TMP/nan-ok" --allow-nonfinite --method $m --base "$N/base" \
        "$N/task1" "$N/task2" && case_pass "allow-nonfinite-$m" "merged with --allow-nonfinite"
    rm -rf "$TMP/nan-ok"
done

# OUT exists: refused, untouched
mkdir -p "$TMP/ref-out" && echo keep >"$TMP/ref-out/marker"
msg=$(timeout "$TO" env $NOREAD "$PCBM_BIN" merge --quiet --base "$X/base" --out "$TMP/ref-out" \
    "$X/task1" 2>&1)
rc=$?
if [ $rc -ne 1 ] || ! grep -qi 'exists' <<<"$msg"; then
    case_fail out-exists "exit $rc: $msg"
elif [ "$(cat "$TMP/ref-out/marker" 2>/dev/null)" != keep ] || [ -e "$TMP/ref-out.partial" ] ||
    [ "$(ls "$TMP/ref-out")" != marker ]; then
    case_fail out-exists "OUT was changed or OUT.partial created"
else
    case_pass out-exists "exit 1, OUT untouched: $msg"
fi
rm -rf "$TMP/ref-out"

# a stale OUT.partial of an earlier pcbmerge run (its marker): refused (naming --force) and kept;
# --force discards it and merges (a directory without the marker is adversarial.sh's case)
P=$TMP/stale
mkdir -p "$P.partial" && echo old >"$P.partial/model-00001-of-00009.safetensors" &&
    echo "pcbmerge partial output" >"$P.partial/.pcbmerge-partial"
msg=$(timeout "$TO" env $NOREAD "$PCBM_BIN" merge --quiet --base "$F/base" --out "$P" \
    --shard-size $OUTSHARD $TASKS 2>&1)
rc=$?
if [ $rc -ne 1 ] || ! grep -q -- '--force' <<<"$msg"; then
    case_fail stale-partial "exit $rc: $msg"
elif [ -e "$P" ] || [ "$(cat "$P.partial/model-00001-of-00009.safetensors")" != old ]; then
    case_fail stale-partial "OUT was created or the stale OUT.partial changed"
else
    case_pass stale-partial "exit 1, kept: $msg"
fi
if timeout "$TO" "$PCBM_BIN" merge --quiet --force --method pcb --base "$F/base" --out "$P" \
    --shard-size $OUTSHARD $TASKS >"$TMP/force.log" 2>&1; then
    if [ -e "$P.partial" ]; then
        case_fail stale-force "OUT.partial is still there after --force"
    elif ! why=$(same_outputs "$TMP/ref-pcb" "$P"); then
        case_fail stale-force "the output differs from a normal run: $why"
    else
        case_pass stale-force "--force discarded the stale OUT.partial and merged"
    fi
else
    case_fail stale-force "exit $?: $(head -n 3 "$TMP/force.log" | tr '\n' ' ')"
fi
rm -rf "$P" "$P.partial"

# no room on the output filesystem: refused before any tensor is read
MNT=$TMP/smallfs
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: the free-space case (mounting a small tmpfs needs root)"
elif ! mkdir -p "$MNT" || ! mount -t tmpfs -o size=1M pcbm-test "$MNT" 2>"$TMP/mount.log"; then
    echo "skipped: the free-space case (mount -t tmpfs failed: $(cat "$TMP/mount.log"))"
else
    trap 'umount "$MNT" 2>/dev/null; cleanup' EXIT
    msg=$(timeout "$TO" env $NOREAD "$PCBM_BIN" merge --quiet --base "$F/base" \
        --out "$MNT/out" $TASKS 2>&1)
    rc=$?
    if [ $rc -ne 1 ] || ! grep -qi 'free space' <<<"$msg"; then
        case_fail free-space "exit $rc, expected 1 and a message about free space: $msg"
    elif [ -n "$(ls -A "$MNT")" ]; then
        case_fail free-space "left $(ls -A "$MNT" | tr '\n' ' ') on the small filesystem"
    else
        case_pass free-space "exit 1 before any tensor read: $msg"
    fi
    umount "$MNT"
fi
finish

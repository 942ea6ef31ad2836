#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# input_identity.sh — an input edited in place (same size, modification time restored, outside the
# sampled bytes of the models' identity) is never merged as if nothing happened: the result is
# refused, naming the file and the byte range, or it is the merge of the edited inputs, never a
# mix of both versions.
#   * edited between a kill and --resume: pcb (statistics saved) is refused, linear (no
#     statistics) merges again from the start;
#   * edited between `stats` and `apply` of a split merge (global and tensor scope): apply
#     refuses, naming file and bytes;
#   * edited between a merge that saved its statistics and a merge that reuses them (--stats);
#   * edited during one run, between the statistics pass and the apply pass (PCBM_TEST_PAUSE).
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset small --seed 73
T="$F/task1 $F/task2"
export PCBM_SEGMENT_BYTES=256K
OPTS="--threads 1 --quiet"
merge() { "$PCBM_BIN" merge $OPTS --base "$F/base" "$@"; }
same_dir() { diff -r -q -x merge_report.json -x pcbmerge.manifest.json -x README.md "$1" "$2" >/dev/null; }

# edit FILE [first|last|both]: flip the sign of one element of the model's first tensor of 1 MiB
# or more, its last one or both, 600 KiB into their data (between the 4 KiB samples of the identity; the value
# stays finite), keeping the size, access and modification times; prints the offsets of the
# elements' bytes in the file.
edit() {
    "$PY" - "$1" "${2:-first}" <<'EOF'
import json, os, struct, sys
path, which = sys.argv[1], sys.argv[2]
st = os.stat(path)
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    ts = sorted((v for k, v in h.items() if k != "__metadata__" and
                 v["data_offsets"][1] - v["data_offsets"][0] >= 1 << 20),
                key=lambda v: v["data_offsets"][0])
    pick = {"first": ts[:1], "last": ts[-1:], "both": [ts[0], ts[-1]]}[which]
    for t in pick:
        off = 8 + n + t["data_offsets"][0] + 600 * 1024
        f.seek(off + 1)  # the high byte of a little-endian bf16: its sign bit
        b = f.read(1)[0] ^ 0x80
        f.seek(off + 1)
        f.write(bytes([b]))
        print(off)
os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
EOF
}
# names_range LOG FILE OFF: the message names FILE and a byte range "bytes A-B" holding OFF.
names_range() {
    grep -q "$2" <<<"$1" || { echo "    the message does not name $2: $1"; return 1; }
    local r
    r=$(grep -o 'bytes [0-9]*-[0-9]*' <<<"$1" | head -1)
    [ -n "$r" ] || { echo "    no byte range in: $1"; return 1; }
    local a=${r#bytes } b
    b=${a#*-}
    a=${a%-*}
    [ "$a" -le "$3" ] && [ "$3" -lt "$b" ] || { echo "    $r does not hold offset $3"; return 1; }
}

merge --method pcb --out "$TMP/ref" $T || fail "reference merge failed"
cp -r "$F" "$TMP/orig"
restore() { rm -rf "$F" && cp -a "$TMP/orig" "$F"; }

resume_after_edit() {
    local method=$1 out=$TMP/res-$1
    restore
    # small blocks: the kill leaves the first large tensor kept, the last one to redo
    PCBM_TEST_KILL=apply:80 merge --method "$method" --block-size 64K --out "$out" $T 2>/dev/null
    [ -d "$out.partial" ] || { echo "    the kill left no partial"; return 1; }
    edit "$F/task1/model.safetensors" both >/dev/null
    local log rc=0
    log=$(merge --method "$method" --resume --out "$out" $T 2>&1) || rc=$?
    if [ $rc -ne 0 ]; then
        [ ! -e "$out" ] || { echo "    refused, yet $out exists"; return 1; }
        grep -q "task1" <<<"$log" || { echo "    the refusal does not name the file: $log"; return 1; }
        return 0
    fi
    # merged: it must be the merge of the edited inputs
    merge --method "$method" --out "$TMP/fresh-$1" $T || { echo "    fresh merge failed"; return 1; }
    same_dir "$out" "$TMP/fresh-$1" || { echo "    resumed output is neither merge"; return 1; }
}
check "pcb: an input edited between a kill and --resume is refused or merged again" \
    resume_after_edit pcb
check "linear: an input edited between a kill and --resume is refused or merged again" \
    resume_after_edit linear

split_edit() {
    restore
    local d=$TMP/split-$1 log off
    "$PCBM_BIN" plan --quiet --out "$d" --parts 2 --shard-size 3MB --method pcb --scope "$1" --base "$F/base" $T ||
        { echo "    plan failed"; return 1; }
    for p in 0 1; do "$PCBM_BIN" stats --quiet --plan "$d" --part $p || return 1; done
    for _ in 1 2 3 4 5 6 7 8; do
        "$PCBM_BIN" reduce --quiet --plan "$d" || return 1
        [ "$("$PCBM_BIN" status --plan "$d" --get pending_stats)" = "" ] && break
        for p in 0 1; do "$PCBM_BIN" stats --quiet --plan "$d" --part $p || return 1; done
    done
    off=$(edit "$F/task1/model.safetensors")
    for p in 0 1; do
        log+=$("$PCBM_BIN" apply --quiet --plan "$d" --part $p 2>&1) && continue
    done
    grep -q "changed" <<<"$log" || { echo "    apply accepted the edited input: $log"; return 1; }
    names_range "$log" "$F/task1/model.safetensors" "$off"
}
check "split: an input edited between stats and apply is refused, naming file and bytes" \
    split_edit global
check "split, tensor scope: an input edited between stats and apply is refused" split_edit tensor

stats_reuse_edit() {
    restore
    local log off
    off=$(edit "$F/task1/model.safetensors")
    log=$(merge --method pcb --lambda 0.7 --stats "$TMP/ref/merge_stats.json.zst" \
          --out "$TMP/reuse" $T 2>&1) && { echo "    --stats accepted the edited input"; return 1; }
    [ ! -e "$TMP/reuse" ] || { echo "    output published"; return 1; }
    names_range "$log" "$F/task1/model.safetensors" "$off"
}
check "--stats: an input edited since the statistics were saved is refused, naming file and bytes" \
    stats_reuse_edit

during_run_edit() {
    restore
    local out=$TMP/during pid state off log
    PCBM_TEST_PAUSE=apply-begin "$PCBM_BIN" merge $OPTS --base "$F/base" --method pcb \
        --out "$out" $T >"$TMP/during.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
        [ "$state" = T ] && break
        [ -z "$state" ] && break
        sleep 0.1
    done
    if [ "$state" != T ]; then
        wait $pid
        echo "    the merge did not stop before its apply pass"
        return 1
    fi
    off=$(edit "$F/task2/model.safetensors")
    kill -CONT $pid
    wait $pid && { echo "    the merge accepted an input changed after its statistics pass"; return 1; }
    log=$(cat "$TMP/during.log")
    [ ! -e "$out" ] || { echo "    output published"; return 1; }
    names_range "$log" "$F/task2/model.safetensors" "$off"
}
check "an input edited between the statistics pass and the apply pass of one run is refused" \
    during_run_edit

restore
unedited() {
    PCBM_TEST_KILL=apply:6 merge --method pcb --out "$TMP/plain" $T 2>/dev/null
    merge --method pcb --resume --out "$TMP/plain" $T || return 1
    same_dir "$TMP/plain" "$TMP/ref"
}
check "unedited inputs: a killed and resumed merge gives the uninterrupted bytes" unedited

finish

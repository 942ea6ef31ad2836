#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# adversarial.sh — the output directory under hostile and careless conditions: nothing outside OUT
# is touched, nothing is published that the inputs do not give, and bad coefficients or paths are
# refused before any work.
#   * a symbolic link planted at OUT.partial (with --resume, with --force): refused, the linked
#     directory's files unchanged;
#   * an OUT.partial that pcbmerge did not make (no marker): kept intact by --resume and --force;
#   * links planted inside a partial before a resume: removed, never written through; the result
#     is the uninterrupted merge's bytes;
#   * a partial killed while publishing (manifest, no journal) resumed with other parameters: not
#     published as this merge;
#   * files planted in a partial before a resume are not listed in the manifest; verify fails on
#     files the manifest does not list and on an empty manifest;
#   * non-finite or float32-overflowing coefficients, an empty --out, --stats naming a FIFO:
#     refused at once.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset small --seed 73
T="$F/task1 $F/task2"
export PCBM_SEGMENT_BYTES=256K
OPTS="--threads 1 --quiet"
merge() { "$PCBM_BIN" merge $OPTS --base "$F/base" "$@"; }
tree_sum() { (cd "$1" && find . -printf '%p %y %s\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort); }

merge --method pcb --out "$TMP/ref" $T || fail "reference merge failed"
merge --method linear --out "$TMP/ref-linear" $T || fail "reference linear merge failed"

# A victim directory with files of its own, and a link to it planted as OUT.partial.
mkvictim() {
    rm -rf "$TMP/victim"
    mkdir -p "$TMP/victim/sub"
    echo "precious" >"$TMP/victim/data.txt"
    echo "keep me" >"$TMP/victim/sub/more.txt"
}
planted_partial_link() {
    local flag=$1 out=$TMP/lnk$1
    mkvictim
    local before
    before=$(tree_sum "$TMP/victim")
    ln -s "$TMP/victim" "$out.partial"
    local log
    log=$(merge --method pcb $flag --out "$out" $T 2>&1) && { echo "    merge succeeded"; return 1; }
    grep -q "symbolic link" <<<"$log" || { echo "    message: $log"; return 1; }
    [ "$(tree_sum "$TMP/victim")" = "$before" ] || { echo "    the victim changed"; return 1; }
    [ ! -e "$out" ] && [ -L "$out.partial" ] || { echo "    OUT appeared or the link moved"; return 1; }
}
check "a link planted at OUT.partial is refused with --resume" planted_partial_link --resume
check "a link planted at OUT.partial is refused with --force" planted_partial_link --force

foreign_partial() {
    local flag=$1 out=$TMP/foreign$1
    mkdir -p "$out.partial"
    echo "my notes" >"$out.partial/notes.txt"
    cp -r "$F/task1" "$out.partial/task1"
    local before log
    before=$(tree_sum "$out.partial")
    log=$(merge --method pcb $flag --out "$out" $T 2>&1) && { echo "    merge succeeded"; return 1; }
    grep -q "not a partial output of pcbmerge" <<<"$log" || { echo "    message: $log"; return 1; }
    [ "$(tree_sum "$out.partial")" = "$before" ] || { echo "    the directory changed"; return 1; }
}
check "a foreign OUT.partial is kept intact by --resume" foreign_partial --resume
check "a foreign OUT.partial is kept intact by --force" foreign_partial --force

# A run killed mid-apply, then links planted inside its partial before the resume.
links_inside() {
    local out=$TMP/inside
    PCBM_TEST_KILL=apply:6 merge --method pcb --out "$out" $T 2>/dev/null
    [ $? -eq 137 ] || { echo "    not killed"; return 1; }
    local shard
    shard=$(cd "$out.partial" && ls -- *.safetensors | head -n 1)
    [ -n "$shard" ] || { echo "    no output file in the partial"; return 1; }
    echo "victim bytes" >"$TMP/victim-file"
    cp "$TMP/victim-file" "$TMP/victim-copy"
    rm -f "$out.partial/$shard"
    ln -s "$TMP/victim-file" "$out.partial/$shard"
    ln -s "$TMP/victim-file" "$out.partial/config.json"
    echo "planted" >"$out.partial/planted.txt"
    merge --method pcb --resume --out "$out" $T || { echo "    resume failed"; return 1; }
    cmp -s "$TMP/victim-file" "$TMP/victim-copy" || { echo "    the link's target was written"; return 1; }
    [ ! -L "$out/$shard" ] || { echo "    OUT kept the link"; return 1; }
    same_outputs "$TMP/ref" "$out" planted.txt || return 1
    grep -q planted.txt "$out/pcbmerge.manifest.json" && { echo "    planted file in the manifest"; return 1; }
    # the planted file is in OUT but not in the manifest: verify must say so
    "$PCBM_BIN" verify "$out" >/dev/null 2>&1 && { echo "    verify passed with planted.txt"; return 1; }
    rm "$out/planted.txt"
    "$PCBM_BIN" verify "$out" >/dev/null 2>&1 || { echo "    verify failed"; return 1; }
}
check "links inside a partial are removed, never written through; planted files not listed" links_inside

# Killed while publishing: manifest written, journal gone. Another merge must not publish it.
publish_window() {
    local out=$TMP/pubwin
    PCBM_TEST_KILL=finalize merge --method pcb --out "$out" $T 2>/dev/null
    [ $? -eq 137 ] || { echo "    not killed at finalize"; return 1; }
    [ -f "$out.partial/pcbmerge.manifest.json" ] || { echo "    no manifest in the partial"; return 1; }
    merge --method linear --resume --out "$out" $T 2>/dev/null
    if [ -e "$out" ]; then # re-merged as linear: must be the linear merge's bytes
        same_outputs "$TMP/ref-linear" "$out" || { echo "    published, but not the linear merge"; return 1; }
    fi
    rm -rf "$out" "$out.partial"
    PCBM_TEST_KILL=finalize merge --method pcb --out "$out" $T 2>/dev/null
    merge --method pcb --resume --out "$out" $T || { echo "    same merge not published"; return 1; }
    same_outputs "$TMP/ref" "$out"
}
check "a partial killed while publishing is published only for the same merge" publish_window

verify_strays() {
    local out=$TMP/strays
    merge --method pcb --shard-size 2MB --out "$out" $T || return 1
    "$PCBM_BIN" verify "$out" >/dev/null 2>&1 || { echo "    verify failed on a clean output"; return 1; }
    cp "$(ls "$out"/model-*.safetensors | head -n 1)" "$out/model.safetensors"
    local log
    log=$("$PCBM_BIN" verify "$out" 2>&1) && { echo "    verify passed with a stray file"; return 1; }
    grep -q "model.safetensors" <<<"$log" || { echo "    message: $log"; return 1; }
    rm "$out/model.safetensors"
    "$PY" - "$out/pcbmerge.manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["files"] = []
json.dump(m, open(sys.argv[1], "w"))
EOF
    "$PCBM_BIN" verify "$out" >/dev/null 2>&1 && { echo "    verify passed an empty manifest"; return 1; }
    return 0
}
need_numpy
check "verify fails on unlisted files and on an empty manifest" verify_strays

O=$TMP/never
expect_fail "--lambdas 1,nan refused" "lambdas (value 2 is nan|needs comma-separated numbers, got 1,nan)" merge --lambdas 1,nan --out "$O" $T
expect_fail "--lambdas 1,inf refused" "lambdas (value 2 is inf|needs comma-separated numbers, got 1,inf)" merge --lambdas 1,inf --out "$O" $T
expect_fail "--lambda 1e39 (Inf in float32) refused" "--lambda is 1e\+39" merge --lambda 1e39 --out "$O" $T
expect_fail "linear --weights 3e38,3e38 (sum overflows) refused" "--weights must have a non-zero sum" \
    merge --method linear --weights 3e38,3e38 --out "$O" $T
cd "$TMP" || fail "cannot cd to $TMP"
expect_fail "--out '' refused" "output directory|--out" merge --out "" $T
CASES=$((CASES + 1))
if [ -e "$O" ] || [ -e "$O.partial" ] || [ -e "$TMP/.partial" ]; then
    echo "FAIL refusals left files behind"; FAILED+=("refusals left files behind")
else echo "ok   refusals leave nothing behind"; fi

fifo_stats() {
    mkfifo "$TMP/fifo"
    local log rc
    log=$(timeout -k 5 20 "$PCBM_BIN" merge $OPTS --base "$F/base" --stats "$TMP/fifo" --out "$TMP/ff" $T 2>&1)
    rc=$?
    [ $rc -ne 124 ] || { echo "    blocked on the FIFO"; return 1; }
    [ $rc -ne 0 ] && grep -q "not a regular file" <<<"$log" || { echo "    rc $rc: $log"; return 1; }
}
check "--stats naming a FIFO is refused at once" fifo_stats

# A shard that is a FIFO, a directory or a device: named as such, never "missing", never a hang.
odd_shard() {
    local kind=$1 m=$TMP/odd-$1
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$m" --tasks 1 --preset tiny --seed 5 --shard-size 100K ||
        return 1
    local shard
    shard=$(cd "$m/task1" && ls model-*.safetensors | head -n 1)
    rm "$m/task1/$shard"
    case $kind in
    fifo) mkfifo "$m/task1/$shard" ;;
    dir) mkdir "$m/task1/$shard" ;;
    device) ln -s /dev/zero "$m/task1/$shard" ;;
    esac
    local log rc
    log=$(timeout -k 5 20 "$PCBM_BIN" merge $OPTS --base "$m/base" --out "$m/out" "$m/task1" 2>&1)
    rc=$?
    [ $rc -eq 1 ] || { echo "    exit $rc: $log"; return 1; }
    grep -q "$shard" <<<"$log" && grep -q "not a regular file" <<<"$log" &&
        ! grep -q "does not exist" <<<"$log" || { echo "    message: $log"; return 1; }
}
check "a shard that is a FIFO is named as one" odd_shard fifo
check "a shard that is a directory is named as one" odd_shard dir
check "a shard that is /dev/zero is named as a device" odd_shard device

both_layouts() {
    local m=$TMP/both
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$m" --tasks 1 --preset tiny --seed 6 --shard-size 100K ||
        return 1
    cp "$(ls "$m"/base/model-*.safetensors | head -n 1)" "$m/base/model.safetensors"
    local log
    log=$("$PCBM_BIN" merge $OPTS --base "$m/base" --out "$m/out" "$m/task1" 2>&1) &&
        { echo "    merged"; return 1; }
    grep -q "holds both model.safetensors and model.safetensors.index.json" <<<"$log" ||
        { echo "    message: $log"; return 1; }
}
check "a folder with both model.safetensors and an index is refused as ambiguous" both_layouts

duplicate_tasks() {
    local log
    log=$("$PCBM_BIN" merge --threads 1 --base "$F/base" --out "$TMP/dup" "$F/task1" "$F/task1" \
        "$F/base" 2>&1) || { echo "    merge failed: $log"; return 1; }
    grep -q "warning: task models 1 .* and 2 .* look identical" <<<"$log" &&
        grep -q "warning: task model 3 .* looks identical to the base" <<<"$log" ||
        { echo "    warnings: $log"; return 1; }
}
check "a task identical to the base, or given twice, is warned about" duplicate_tasks

# Tensor names are printed escaped: an escape sequence in a name never reaches the terminal.
escaped_names() {
    local m=$TMP/esc
    mkdir -p "$m/base" "$m/task"
    "$PY" - "$m" <<'EOF'
import json, struct, sys
def write(path, tensors):
    header, data, off = {}, b"", 0
    for name, vals in tensors:
        raw = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": [len(vals)], "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
d = sys.argv[1]
write(d + "/base/model.safetensors", [("w", [1, 2, 3, 4])])
write(d + "/task/model.safetensors", [("w", [1, 2, 3, 5]), ("evil\x1b[2J\x1b]0;pwned\x07", [0])])
EOF
    local log
    log=$("$PCBM_BIN" merge --threads 1 --base "$m/base" --out "$m/out" "$m/task" 2>&1) &&
        { echo "    merged"; return 1; }
    grep -q $'\x1b' <<<"$log" && { echo "    a raw escape byte was printed"; return 1; }
    grep -qF 'evil\x1b[2J' <<<"$log" || { echo "    message: $log"; return 1; }
}
check "tensor names are printed escaped" escaped_names
# Free space: the check counts everything the run writes (weights rounded to blocks, side files,
# journal, statistics, report, manifest), so a disk that holds the weights and 12 KB more is
# refused before any work instead of failing at the last file.
tight_disk() {
    local mnt=$TMP/tight
    mkdir -p "$mnt"
    local wsize
    wsize=$(stat -c %s "$TMP/ref/model.safetensors")
    local size=$(((wsize + 12288 + 4095) / 4096 * 4096))
    mount -t tmpfs -o size=$size tmpfs "$mnt" 2>/dev/null || { echo "    (cannot mount a tmpfs here: case not run)"; return 0; }
    local log rc
    log=$(merge --method pcb --out "$mnt/out" $T 2>&1)
    rc=$?
    local left
    left=$(ls -A "$mnt")
    umount "$mnt"
    [ $rc -ne 0 ] && grep -q "not enough free space" <<<"$log" ||
        { echo "    rc $rc: $log"; return 1; }
    [ -z "$left" ] || { echo "    left behind: $left"; return 1; }
}
check "free space counts every file the run writes" tight_disk
# Overflow: finite inputs whose merge the output dtype cannot hold are refused naming the tensor
# (F32 Inf from huge coefficients, F16 beyond 65504), unless --allow-nonfinite; a NaN input can
# no longer reach the output through --stats (which skips the passes that check the inputs).
overflow() {
    local m=$TMP/big
    [ -d "$m" ] || "$PCBM_TOOLS/pcbm-gen" --quiet --out "$m" --tasks 2 --dtype f32 --preset tiny \
        --seed 9 --delta-scale 100 || return 1
    local log
    log=$(merge --method task_arithmetic --lambda 3e38 --base "$m/base" --out "$m/o1" "$m/task1" \
        "$m/task2" 2>&1) && { echo "    f32 overflow published"; return 1; }
    grep -q "the merged value of tensor .* is Inf" <<<"$log" || { echo "    $log"; return 1; }
    log=$(merge --method task_arithmetic --lambda 1e7 --dtype f16 --base "$m/base" --out "$m/o2" \
        "$m/task1" "$m/task2" 2>&1) && { echo "    f16 overflow published"; return 1; }
    grep -q "too large for F16" <<<"$log" || { echo "    $log"; return 1; }
    [ ! -e "$m/o1" ] && [ ! -e "$m/o2" ] || { echo "    an output appeared"; return 1; }
    merge --method task_arithmetic --lambda 3e38 --allow-nonfinite --base "$m/base" --out "$m/o3" \
        "$m/task1" "$m/task2" 2>/dev/null || { echo "    --allow-nonfinite refused"; return 1; }
}
check "overflowing merges are refused naming the tensor" overflow

nan_through_stats() {
    local m=$TMP/nanfam
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$m" --tasks 2 --preset tiny --seed 10 \
        --nonfinite model.layers.0.mlp.up_proj.weight || return 1
    merge --method pcb --allow-nonfinite --base "$m/base" --out "$m/a" "$m/task1" "$m/task2" \
        2>/dev/null || { echo "    the merge with --allow-nonfinite failed"; return 1; }
    local log
    log=$(merge --method pcb --lambda 0.5 --stats "$m/a/merge_stats.json.zst" --base "$m/base" \
        --out "$m/b" "$m/task1" "$m/task2" 2>&1) && { echo "    NaN published through --stats"; return 1; }
    grep -q "has a non-finite value (NaN)" <<<"$log" || { echo "    $log"; return 1; }
}
check "a NaN input is refused with --stats too" nan_through_stats
# finalize of a split merge survives a SIGKILL at any of its file system calls: each run below is
# killed (strace fault injection) at the n-th call of one kind; finalize run again publishes the
# bytes of a single merge, and verify passes. A damaged round part is rewritten by its stats run.
finalize_kills() {
    command -v strace >/dev/null || { echo "    (strace is not installed: case not run)"; return 0; }
    local f=$TMP/sfam d=$TMP/sd r=$TMP/sref u n sc count fails=0 runs=0
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$f" --tasks 2 --preset tiny --seed 12 || return 1
    "$PCBM_BIN" merge --quiet --base "$f/base" --out "$r" "$f/task1" "$f/task2" || return 1
    "$PCBM_BIN" plan --quiet --parts 2 --base "$f/base" --out "$d" "$f/task1" "$f/task2" || return 1
    while [ "$("$PCBM_BIN" status --plan "$d" --get next)" = stats ]; do
        for u in 0 1; do "$PCBM_BIN" stats --quiet --plan "$d" --part $u || return 1; done
        "$PCBM_BIN" reduce --quiet --plan "$d" || return 1
    done
    for u in 0 1; do "$PCBM_BIN" apply --quiet --plan "$d" --part $u || return 1; done
    cp -a "$d.partial" "$TMP/sd-template"
    for sc in openat fsync unlinkat rename write; do
        count=$(strace -f -qq -c -e trace=$sc "$PCBM_BIN" finalize --quiet --plan "$d" 2>&1 >/dev/null |
            awk -v s=$sc '$NF == s {print $4}')
        rm -rf "$d" "$d.partial" && cp -a "$TMP/sd-template" "$d.partial"
        for ((n = 1; n <= ${count:-0}; n++)); do
            runs=$((runs + 1))
            (strace -f -qq -o /dev/null -e inject=$sc:signal=SIGKILL:when=$n \
                "$PCBM_BIN" finalize --quiet --plan "$d" >/dev/null 2>&1; true) 2>/dev/null
            if ! "$PCBM_BIN" finalize --quiet --plan "$d" >"$TMP/fin.log" 2>&1 ||
                ! "$PCBM_BIN" verify "$d" >/dev/null 2>&1 || ! same_outputs "$r" "$d" >/dev/null; then
                fails=$((fails + 1))
                [ $fails -le 3 ] && echo "    killed at $sc #$n: $(head -c 300 "$TMP/fin.log")"
            fi
            rm -rf "$d" "$d.partial" && cp -a "$TMP/sd-template" "$d.partial"
        done
    done
    echo "    $runs kills of finalize, $fails not recovered"
    [ $runs -gt 20 ] && [ $fails -eq 0 ]
}
check "finalize survives a kill at every file system call" finalize_kills

damaged_round_part() {
    local f=$TMP/sfam d=$TMP/sd2
    "$PCBM_BIN" plan --quiet --parts 2 --base "$f/base" --out "$d" "$f/task1" "$f/task2" || return 1
    "$PCBM_BIN" stats --quiet --plan "$d" --part 0 || return 1
    local part=$d.partial/.split/round-0.part-0.zst
    [ -f "$part" ] || { echo "    no $part"; return 1; }
    head -c 40 "$part" >"$part.cut" && mv "$part.cut" "$part"
    "$PCBM_BIN" stats --plan "$d" --part 0 2>&1 | grep -q "damaged" || { echo "    not noticed"; return 1; }
    "$PCBM_BIN" stats --quiet --plan "$d" --part 1 && "$PCBM_BIN" reduce --quiet --plan "$d" ||
        { echo "    reduce still fails"; return 1; }
}
check "a damaged round part is rewritten by its stats run" damaged_round_part
finish

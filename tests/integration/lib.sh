#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lib.sh — helpers sourced by the integration scripts (`. "$(dirname "$0")/lib.sh"`): paths from the
# environment tests/run.sh sets (PCBM_BIN, PCBM_TOOLS, PCBM_ROOT), a private temp dir removed on
# exit (kept when PCBM_KEEP_TMP=1), skip/fail helpers, family generation and reference comparisons.
# tests/run.sh runs every tests/integration/*.sh: executed directly, this file does nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "lib.sh: helpers for the integration scripts; nothing to run"
    exit 0
fi

set -u
PCBM_ROOT=${PCBM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
PCBM_BIN=${PCBM_BIN:-$PCBM_ROOT/$BUILD/pcbmerge}
PCBM_TOOLS=${PCBM_TOOLS:-$PCBM_ROOT/$BUILD/tools}
PY=/usr/bin/python3                      # Debian's interpreter: the one that sees python3-numpy
REF_PY=$PCBM_ROOT/tests/reference/pcb_ref.py
CMP_PY=$PCBM_ROOT/tests/reference/compare.py

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pcbm-it.XXXXXX") || { echo "cannot create a temp dir"; exit 1; }
cleanup() {
    if [ "${PCBM_KEEP_TMP:-0}" = 1 ]; then echo "temp files kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# skip "reason": the test cannot run here (exit 77, the reason on the last line).
skip() { echo "$*"; exit 77; }
# fail "reason": stop now with a failure.
fail() { echo "FAIL: $*"; exit 1; }

need_numpy() {
    "$PY" -c 'import numpy' 2>/dev/null ||
        skip "numpy is missing for $PY (apt-get install python3-numpy, or make test-deps)"
}
need_bin() { [ -x "$PCBM_BIN" ] || skip "pcbmerge is not built ($PCBM_BIN)"; }
need_gen() { [ -x "$PCBM_TOOLS/pcbm-gen" ] || skip "pcbm-gen is not built ($PCBM_TOOLS/pcbm-gen)"; }
# The usual preamble of a reference comparison script.
need_ref() { need_numpy; need_bin; need_gen; }

# gen DIR [pcbm-gen options...]: generate a family into DIR (base, task1..taskN).
gen() {
    local dir=$1
    shift
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$dir" "$@" || fail "pcbm-gen --out $dir $*"
}

# task_dirs FAMILY N: "FAMILY/task1 ... FAMILY/taskN"
task_dirs() {
    local i out=""
    for ((i = 1; i <= $2; i++)); do out+="$1/task$i "; done
    echo "$out"
}

# Per-script tallies: ref_case records every case; finish prints the summary and sets the exit code.
CASES=0
FAILED=()
T_START=$(date +%s)

# ref_case NAME FAMILY NTASKS [--cmp "compare options"] [--] MERGE_OPTIONS...
#   Runs `pcbmerge merge` and the reference on FAMILY/base + the first NTASKS tasks with the same
#   options and compares the two. pcbmerge-only options (--exact, --streaming, --threads, --mem,
#   --io, --shard-size, --progress, --allow-extra) are not passed to the reference; --exact also selects compare.py's
#   --exact bound. REF_EXTRA (words) goes to the reference only (e.g. "--absent skip").
ref_case() {
    local name=$1 fam=$2 n=$3
    shift 3
    local cmp_opts=""
    if [ "${1:-}" = --cmp ]; then cmp_opts=$2; shift 2; fi
    [ "${1:-}" = -- ] && shift
    local ours=() refs=() a
    while [ $# -gt 0 ]; do
        a=$1
        case "$a" in
        --exact) ours+=("$a"); cmp_opts+=" --exact" ;;
        --threads | --mem | --io | --shard-size | --progress) ours+=("$a" "$2"); shift ;;
        --allow-extra | --quiet | --streaming) ours+=("$a") ;;
        *) ours+=("$a"); refs+=("$a") ;;
        esac
        shift
    done
    local dir=$TMP/$name tasks
    tasks=$(task_dirs "$fam" "$n")
    CASES=$((CASES + 1))
    local t0=$SECONDS ok=1 log=$dir.log
    mkdir -p "$(dirname "$dir")"
    # shellcheck disable=SC2086
    if ! "$PCBM_BIN" merge --base "$fam/base" --out "$dir.ours" "${ours[@]}" --quiet $tasks >"$log" 2>&1; then
        echo "FAIL $name: pcbmerge merge ${ours[*]} failed:"
        sed 's/^/    /' "$log" | tail -n 15
        ok=0
    fi
    # shellcheck disable=SC2086
    if [ $ok = 1 ] && ! "$PY" "$REF_PY" merge --base "$fam/base" --out "$dir.ref" "${refs[@]}" \
        ${REF_EXTRA:-} --report "$dir.ref.json" $tasks >"$log" 2>&1; then
        echo "FAIL $name: the reference failed:"
        sed 's/^/    /' "$log" | tail -n 15
        ok=0
    fi
    # shellcheck disable=SC2086
    if [ $ok = 1 ] && ! "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --ref-report "$dir.ref.json" \
        $cmp_opts >"$log" 2>&1; then
        echo "FAIL $name (pcbmerge merge ${ours[*]}; compare.py$cmp_opts):"
        sed 's/^/    /' "$log" | tail -n 22
        ok=0
    fi
    if [ $ok = 1 ]; then
        echo "ok   $name ($((SECONDS - t0))s): $(grep -E '^(float elements|cancellation)' "$log" |
            sed 's/^float elements //' | tr '\n' ' ')"
        rm -rf "$dir.ours" "$dir.ref"
    else
        FAILED+=("$name")
    fi
}

# check NAME COMMAND...: one case that passes when the command succeeds.
check() {
    local name=$1
    shift
    CASES=$((CASES + 1))
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; FAILED+=("$name"); fi
}

# expect_fail NAME EXPECTED_REGEX COMMAND...: the command must fail with a message matching REGEX.
expect_fail() {
    local name=$1 re=$2
    shift 2
    CASES=$((CASES + 1))
    local out
    if out=$("$@" 2>&1); then
        echo "FAIL $name: succeeded but should have failed: $*"
        FAILED+=("$name")
    elif ! grep -Eq -- "$re" <<<"$out"; then
        echo "FAIL $name: message does not match /$re/:"
        sed 's/^/    /' <<<"$out" | tail -n 5
        FAILED+=("$name")
    else
        echo "ok   $name"
    fi
}

finish() {
    local secs=$(($(date +%s) - T_START))
    if [ ${#FAILED[@]} -eq 0 ]; then
        echo "all $CASES cases passed (${secs}s)"
        exit 0
    fi
    echo "${#FAILED[@]} of $CASES cases failed (${secs}s): ${FAILED[*]}"
    exit 1
}

# float_tensors MODEL_DIR: how many F32/F16/BF16 tensors the model holds (tensor-scope tolerances
# are per tensor: kept within 2 per tensor adds up to 2 × this).
float_tensors() {
    "$PY" -c 'import sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import read_model, FLOAT_DTYPES
print(sum(1 for t in read_model(sys.argv[2]).values() if t.dtype in FLOAT_DTYPES))' \
        "$PCBM_ROOT/tests/reference" "$1"
}

# ---- Helpers of the engine_*.sh scripts (appended; the functions above are unchanged) ----------

# case_pass NAME [DETAIL] / case_fail NAME DETAIL...: record one case for finish().
case_pass() { CASES=$((CASES + 1)); echo "ok   $1${2:+: $2}"; }
case_fail() {
    local n=$1
    shift
    CASES=$((CASES + 1))
    FAILED+=("$n")
    echo "FAIL $n: $*"
}

# need_tool NAME: skip unless $PCBM_TOOLS/NAME is built (make all builds every tools/*.c).
need_tool() { [ -x "$PCBM_TOOLS/$1" ] || skip "$1 is not built ($PCBM_TOOLS/$1; run make all)"; }
# need_plain_rss: the peak-RSS bounds mean nothing under AddressSanitizer (shadow memory, redzones,
# quarantine), so the memory suites skip a sanitizer build (make asan) instead of failing it.
need_plain_rss() {
    if grep -q "__asan_init" "$PCBM_BIN" 2>/dev/null; then
        skip "$PCBM_BIN is built with AddressSanitizer: peak RSS bounds do not apply"
    fi
}

# rss_measurable: peak RSS bounds can be checked here (no sanitizer build, peak-rss is built).
rss_measurable() { ! grep -q "__asan_init" "$PCBM_BIN" 2>/dev/null && [ -x "$PCBM_TOOLS/peak-rss" ]; }

# big_family DIR: the memory cases' family, a base and 3 bf16 tasks of 70M parameters (seed 41),
# checked to be at least 8x --mem 64M; its safetensors bytes are left in in_bytes.
big_family() {
    gen "$1" --preset custom --params 70M --tasks 3 --dtype bf16 --seed 41 --jobs 2
    in_bytes=$(du -cb "$1"/base/*.safetensors "$1"/task*/*.safetensors | tail -n 1 | cut -f1)
    [ "$in_bytes" -ge $((8 * (64 << 20))) ] ||
        fail "the family $1 is smaller than 8x --mem 64M ($in_bytes bytes)"
}

# same_outputs DIR_A DIR_B [NAME...]: the same file names and every file byte-identical, except
# merge_report.json (timings) and the NAMEs given. pcbmerge.manifest.json, which lists a hash of
# every file, is compared without its entries for the files left out. Prints the first difference
# and returns 1 when the outputs differ.
same_outputs() {
    local a=$1 b=$2 la lb f x
    shift 2
    local skip=(merge_report.json "$@")
    [ -d "$a" ] && [ -d "$b" ] || { echo "missing output directory: $a or $b"; return 1; }
    local find_not=()
    for x in "${skip[@]}"; do find_not+=(! -name "$x"); done
    la=$(cd "$a" && find . -type f "${find_not[@]}" | LC_ALL=C sort)
    lb=$(cd "$b" && find . -type f "${find_not[@]}" | LC_ALL=C sort)
    if [ "$la" != "$lb" ]; then
        echo "different files: $(basename "$a"): $(echo $la) / $(basename "$b"): $(echo $lb)"
        return 1
    fi
    [ -n "$la" ] || { echo "no files in $a"; return 1; }
    while IFS= read -r f; do
        cmp -s "$a/$f" "$b/$f" && continue
        if [ "${f##*/}" = pcbmerge.manifest.json ] &&
            "$PY" - "$a/$f" "$b/$f" "${skip[@]}" <<'PYEOF' 2>/dev/null; then
import json, sys
def norm(path):
    m = json.load(open(path))
    if isinstance(m.get("files"), list):
        m["files"] = [e for e in m["files"] if e.get("name") not in sys.argv[3:]]
    return m
sys.exit(0 if norm(sys.argv[1]) == norm(sys.argv[2]) else 1)
PYEOF
            continue
        fi
        echo "${f#./} differs: $(cmp "$a/$f" "$b/$f" 2>&1 | head -n 1)"
        return 1
    done <<<"$la"
    return 0
}

# diff_tensors DIR_A DIR_B: which tensors of two outputs differ, and in how many elements (a
# diagnostic for same_outputs failures; needs numpy, silent without it).
diff_tensors() {
    "$PY" -c 'import numpy' 2>/dev/null || return 0
    "$PY" - "$PCBM_ROOT/tests/reference" "$1" "$2" <<'PYEOF' 2>&1 | head -n 8
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from pcb_ref import read_model
a, b = read_model(sys.argv[2]), read_model(sys.argv[3])
shown = 0
for name, ta in a.items():
    tb = b.get(name)
    if tb is None:
        print("  %s: only in the first" % name); shown += 1; continue
    if ta.dtype != tb.dtype or ta.shape != tb.shape:
        print("  %s: %s%s vs %s%s" % (name, ta.dtype, list(ta.shape), tb.dtype, list(tb.shape))); shown += 1; continue
    ra, rb = np.asarray(ta.raw), np.asarray(tb.raw)
    if not np.array_equal(ra, rb):
        es = max(1, len(ra) // max(1, ta.numel))
        diff = np.flatnonzero((ra != rb).reshape(-1, es).any(axis=1)) if len(ra) % es == 0 else np.flatnonzero(ra != rb)
        print("  %s: %d of %d elements differ (first at element %d)" % (name, len(diff), ta.numel, diff[0]))
        shown += 1
    if shown >= 6:
        break
PYEOF
}

# no_output OUT: true when neither OUT nor OUT.partial exists (a failed merge leaves nothing).
no_output() { [ ! -e "$1" ] && [ ! -e "$1.partial" ]; }

# min_mem_bytes MERGE_ARGS...: the minimum --mem pcbmerge names when refusing --mem 1K for this
# merge (pcbm_engine_min_mem, printed as "at least 16.81 MiB"), rounded up to whole KiB plus the
# display rounding (0.005 of the unit); empty when the message names no minimum.
min_mem_bytes() {
    local msg
    msg=$("$PCBM_BIN" merge --quiet --mem 1K "$@" 2>&1 >/dev/null)
    sed -n 's/.*at least \([0-9.][0-9.]*\) \([KMGT]\)i\{0,1\}B.*/\1 \2/p' <<<"$msg" | head -n 1 |
        awk '{u = ($2 == "K") ? 1024 : ($2 == "M") ? 1048576 : ($2 == "G") ? 1073741824 : 1099511627776;
              b = ($1 + 0.005) * u; printf "%d\n", (int(b / 1024) + 1) * 1024}'
}

# drop_tensors MODEL_DIR NAME...: rewrite the model's safetensors files without the named tensors
# (a task model that lacks them), the other tensors' bytes packed in order and copied in chunks
# (no file is read whole); model.safetensors.index.json, when present, loses their entries.
drop_tensors() {
    "$PY" - "$@" <<'PYEOF' || fail "drop_tensors $*"
import glob, json, os, struct, sys
d, gone = sys.argv[1], set(sys.argv[2:])
found = set()
for path in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        if not gone & set(head):
            continue
        found |= gone & set(head)
        keep = sorted(((k, v) for k, v in head.items() if k != "__metadata__" and k not in gone),
                      key=lambda kv: kv[1]["data_offsets"][0])
        out, pos = {}, 0
        for k, v in keep:
            a, b = v["data_offsets"]
            out[k] = dict(v, data_offsets=[pos, pos + b - a])
            pos += b - a
        if "__metadata__" in head:
            out["__metadata__"] = head["__metadata__"]
        h = json.dumps(out).encode()
        h += b" " * (-len(h) % 8)
        with open(path + ".tmp", "wb") as g:
            g.write(struct.pack("<Q", len(h)) + h)
            for k, v in keep:
                a, b = v["data_offsets"]
                f.seek(8 + n + a)
                left = b - a
                while left:
                    chunk = f.read(min(left, 1 << 24))
                    g.write(chunk)
                    left -= len(chunk)
    os.replace(path + ".tmp", path)
if found != gone:
    sys.exit("not in %s: %s" % (d, ", ".join(sorted(gone - found))))
idx = os.path.join(d, "model.safetensors.index.json")
if os.path.exists(idx):
    j = json.load(open(idx))
    j["weight_map"] = {k: v for k, v in j["weight_map"].items() if k not in gone}
    json.dump(j, open(idx, "w"), indent=2)
PYEOF
}

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# many_tensors.sh — --mem is a bound at MoE tensor counts (tracker issue 16, point 8). A family of
# 50,000 tiny BF16 tensors per model (tools/bench/moe-family.py: base + 2 tasks, ~5 MB of
# headers each) is merged with --mem 64M under tools/peak-rss, by pcb and task_arithmetic: the
# peak RSS stays within 64 MiB + 48 MiB (the headers are streamed, never held as a tree; the tensor
# tables are charged to --mem) and the merge takes seconds, at most 20 (runs of tiny tensors are one block
# set each). The output is the same with --threads 1 and 2 and with --mem 64M and 1G; --mem 8M is
# refused up front with the usual message naming the minimum.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin
need_tool peak-rss
need_plain_rss
PEAK=$PCBM_TOOLS/peak-rss
N=${PCBM_MANY_TENSORS:-50000}
LIMIT=$(((64 + 48) << 20))
MAX_SECONDS=20 # ~1 s here; ~30 s when every tiny tensor was a block set of its own
F=$TMP/moe

"$PY" "$PCBM_ROOT/tools/bench/moe-family.py" "$N" "$F" || fail "moe-family.py $N failed"
T="$F/task1 $F/task2"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# bounded NAME MERGE_OPTIONS...: merge under peak-rss --limit into $TMP/NAME.
bounded() {
    local name=$1 t=$SECONDS rc peak
    shift
    # shellcheck disable=SC2086
    "$PEAK" --limit "$LIMIT" --output "$TMP/$name.rss" -- "$PCBM_BIN" merge --quiet \
        --base "$F/base" --out "$TMP/$name" "$@" $T >"$TMP/$name.log" 2>&1
    rc=$?
    peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/$name.rss" 2>/dev/null)
    if [ $rc -ne 0 ]; then
        case_fail "$name" "merge $* failed (exit $rc; peak RSS $(mib "${peak:-0}"), limit" \
            "$(mib $LIMIT)): $(tail -n 2 "$TMP/$name.log" | tr '\n' ' ')"
        return 1
    fi
    if [ $((SECONDS - t)) -gt $MAX_SECONDS ]; then
        case_fail "$name" "merge $* took $((SECONDS - t)) s, more than $MAX_SECONDS s"
        return 1
    fi
    case_pass "$name" "$N tensors x 3 models, merge $* in $((SECONDS - t)) s, peak RSS $(mib "$peak") <= $(mib $LIMIT)"
}

same() { # NAME A B
    local why
    if why=$(same_outputs "$TMP/$2" "$TMP/$3"); then case_pass "$1" "$2 = $3"; else case_fail "$1" "$why"; fi
}

bounded pcb-64M --mem 64M --threads 2
bounded pcb-64M-t1 --mem 64M --threads 1
bounded ta-64M --mem 64M --threads 2 --method task_arithmetic
"$PCBM_BIN" merge --quiet --base "$F/base" --out "$TMP/pcb-1G" --mem 1G --threads 2 $T ||
    case_fail pcb-1G "merge --mem 1G failed"
same "threads 1 = threads 2" pcb-64M pcb-64M-t1
same "--mem 64M = --mem 1G" pcb-64M pcb-1G
expect_fail "--mem 8M refused, naming the minimum" "too small .* at least .* tensor tables" \
    "$PCBM_BIN" merge --quiet --base "$F/base" --out "$TMP/small" --mem 8M $T
[ ! -e "$TMP/small" ] && [ ! -e "$TMP/small.partial" ] || case_fail "no output when refused" "$TMP/small exists"
finish

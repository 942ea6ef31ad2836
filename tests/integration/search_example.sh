#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# search_example.sh — pcbmerge search on the worked example (really trained models,
# tools/example/example-train.c, scored by tools/example/example-eval.c on the validation sets): the search
# improves the validation score over λ = init; OUT holds the merge at the best λ (its score is
# the best one of the log), a log line per evaluation with λ inside the bounds, a summary, a
# manifest that verifies; the statistics pass runs once; the same seed gives the same search and
# the same bytes, another seed another search; task_arithmetic searches without statistics;
# --stats reuses an earlier statistics file.
. "$(dirname "$0")/lib.sh"
need_bin
need_tool example-train
need_tool example-eval
"$PY" -c 'import json' 2>/dev/null || skip "python3 is missing ($PY)"

EX=$TMP/example
"$PCBM_TOOLS/example-train" --quiet --out "$EX" --tasks 4 --seed 1 || fail "example-train failed"
ET="$EX/task1 $EX/task2 $EX/task3 $EX/task4"
EVAL="$PCBM_TOOLS/example-eval --family $EX --split val --model {model}"

search() { # OUT [options...]
    local out=$1
    shift
    # shellcheck disable=SC2086
    "$PCBM_BIN" search --quiet --exclude '^head\.' --base "$EX/base" --out "$out" \
        --eval-cmd "$EVAL" "$@" $ET >"$out.stdout" 2>"$out.stderr"
}

# check_out OUT BUDGET LO HI INIT: the log, the summary and the model agree (prints what differs).
check_out() {
    "$PY" - "$1" "$2" "$3" "$4" "$5" <<'PYEOF'
import json, sys
out, budget, lo, hi = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
init = float(sys.argv[5])
log = [json.loads(l) for l in open(out + "/search_log.jsonl")]
s = json.load(open(out + "/search_summary.json"))
errs = []
if len(log) != budget: errs.append("%d log lines for a budget of %d" % (len(log), budget))
if [e["evaluation"] for e in log] != list(range(1, len(log) + 1)): errs.append("evaluations not numbered 1..N")
if any(l != init for l in log[0]["lambdas"]): errs.append("evaluation 1 is not at λ = init")
for e in log:
    if not all(lo <= l <= hi for l in e["lambdas"]): errs.append("λ outside the bounds: %s" % e["lambdas"])
    if not isinstance(e.get("score"), float) or not e["seconds"] >= 0: errs.append("bad line %s" % e)
best = max(log, key=lambda e: (e["score"], -e["evaluation"]))
if s["best"]["evaluation"] != best["evaluation"] or s["best"]["lambdas"] != best["lambdas"] \
        or s["best"]["score"] != best["score"]:
    errs.append("summary best %s is not the log's best %s" % (s["best"], best))
if s["init_score"] != log[0]["score"]: errs.append("init_score differs from evaluation 1")
if s["evaluations"] != budget or s["failed_evaluations"] != 0: errs.append("counts: %s" % s)
print("; ".join(errs) if errs else "init %.5f best %.5f (evaluation %d) λ %s" % (
    s["init_score"], s["best"]["score"], s["best"]["evaluation"],
    " ".join("%.3f" % l for l in s["best"]["lambdas"])))
sys.exit(1 if errs else 0)
PYEOF
}

# 1. PCB, 25 evaluations (λ = init + 3 generations of 8), seed 1.
A=$TMP/a
if search "$A" --method pcb --density 0.2 --budget 25 --seed 1; then
    if msg=$(check_out "$A" 25 0.5 3.0 1.0); then case_pass "pcb search: log, summary and best agree" "$msg"
    else case_fail pcb-log "$msg"; fi
    read -r init best < <("$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["init_score"], s["best"]["score"])' "$A/search_summary.json")
    if awk -v i="$init" -v b="$best" 'BEGIN { exit !(b > i) }'; then
        case_pass "the search improves the validation score over λ = init" "$init -> $best"
    else
        case_fail improves "best $best is not above the score at λ = init $init"
    fi
    got=$("$PCBM_TOOLS/example-eval" --family "$EX" --split val --model "$A" | tail -n 1)
    if awk -v g="$got" -v b="$best" 'BEGIN { exit !(g == b) }'; then
        case_pass "OUT is the merge at the best λ (scores $got again)"
    else
        case_fail out-model "OUT scores $got, the best evaluation scored $best"
    fi
    if "$PCBM_BIN" verify "$A" >/dev/null 2>&1; then case_pass "pcbmerge verify OUT"
    else case_fail verify "pcbmerge verify $A failed"; fi
    if grep -q '"replayed from --stats"' "$A/merge_report.json" && [ -f "$A/merge_stats.json.zst" ]; then
        case_pass "the final merge replays the statistics (apply pass only)"
    else
        case_fail replay "OUT/merge_report.json does not say the statistics were replayed"
    fi
    if [ ! -e "$A.search" ] && [ ! -e "$A.partial" ]; then case_pass "no work directory left"
    else case_fail leftovers "$A.search or $A.partial left behind"; fi
    grep -q '^search: 25 evaluations' "$A.stdout" && grep -q 'score at λ = 1 (init)' "$A.stdout" &&
        case_pass "summary printed" || case_fail summary "$(cat "$A.stdout")"
else
    case_fail pcb-search "$(tail -n 20 "$A.stderr")"
fi

# 2. Determinism: the same seed, the same search and bytes; another seed, another search.
B=$TMP/b
C=$TMP/c
strip() { sed 's/,"seconds".*//' "$1"; }
if search "$B" --method pcb --density 0.2 --budget 25 --seed 1 && search "$C" --method pcb --density 0.2 --budget 25 --seed 2; then
    if [ "$(strip "$A/search_log.jsonl")" = "$(strip "$B/search_log.jsonl")" ] &&
        cmp -s "$A/model.safetensors" "$B/model.safetensors"; then
        case_pass "seed 1 twice: the same candidates, scores and model bytes"
    else
        case_fail same-seed "two searches with seed 1 differ: $(diff <(strip "$A/search_log.jsonl") <(strip "$B/search_log.jsonl") | head -n 4)"
    fi
    if [ "$(sed -n 2p "$A/search_log.jsonl" | strip /dev/stdin)" != "$(sed -n 2p "$C/search_log.jsonl" | strip /dev/stdin)" ]; then
        case_pass "seed 2: other candidates"
    else
        case_fail other-seed "seeds 1 and 2 gave the same first candidate"
    fi
else
    case_fail determinism "$(tail -n 5 "$B.stderr" "$C.stderr")"
fi

# 3. Statistics once: one statistics pass in the whole search (the first merge), then replays;
#    --stats FILE skips even that one.
D=$TMP/d
if search "$D" --method pcb --density 0.2 --budget 3 --seed 1 --stats "$A/merge_stats.json.zst" &&
    grep -q '"from --stats"' "$D/search_summary.json" &&
    [ "$(sed -n 1p "$D/search_log.jsonl" | strip /dev/stdin)" = "$(sed -n 1p "$A/search_log.jsonl" | strip /dev/stdin)" ]; then
    case_pass "--stats: every candidate replays the given statistics, the same scores"
else
    case_fail stats-file "$(tail -n 5 "$D.stderr")"
fi
E=$TMP/e
if search "$E" --method pcb --density 0.3 --budget 2 --seed 1 --stats "$A/merge_stats.json.zst"; then
    case_fail stats-mismatch "--stats computed at density 0.2 was accepted for density 0.3"
elif grep -q 'computed with other parameters' "$E.stderr"; then
    case_pass "--stats of other parameters refused with the reason"
else
    case_fail stats-mismatch "$(tail -n 3 "$E.stderr")"
fi

# 4. task_arithmetic: per-task λ, no statistics pass; 9 evaluations = init + one generation.
F=$TMP/f
if search "$F" --method task_arithmetic --budget 9 --bounds 0.1,1.0 --init 0.3 --seed 3 &&
    msg=$(check_out "$F" 9 0.1 1.0 0.3) &&
    grep -q '"statistics": "none' "$F/search_summary.json" && [ ! -e "$F/merge_stats.json.zst" ]; then
    case_pass "task_arithmetic search" "$msg"
else
    case_fail task-arithmetic "$(tail -n 5 "$F.stderr") $msg"
fi
finish

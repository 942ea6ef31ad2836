#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# search_resume.sh — a coefficient search stopped mid-way continues with --resume: SIGTERM
# (exit 75, a message that says how to resume; the evaluation in flight is not logged) and
# SIGKILL (a log line may be cut) both end, after --resume, with the log (every λ, generation and
# score), the best λ and the merged model of an uninterrupted search; logged evaluations are not
# run again; --resume with another parameter is refused naming it; a plain re-run refuses to
# discard a stopped search; --force discards it.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset tiny --seed 21
T="$F/task1 $F/task2 $F/task3"
# A deterministic score of the candidate's bytes; each evaluation is counted in a file.
SCORE='sleep 0.2; echo run >> '"$TMP"'/runs; echo $(( $(cksum < {model}/model.safetensors | cut -d" " -f1) % 100000 ))'
search() { # OUT [options...]
    local out=$1
    shift
    # shellcheck disable=SC2086
    "$PCBM_BIN" search --quiet --budget 14 --popsize 4 --base "$F/base" --out "$out" \
        --eval-cmd "$SCORE" "$@" $T
}
same_search() { # REF OUT: logs (without times), summaries' best, model files
    "$PY" - "$1" "$2" <<'EOF' && same_outputs "$1" "$2" search_log.jsonl search_summary.json >/dev/null
import json, sys
def log(d):
    return [(e["evaluation"], e["generation"], e["lambdas"], e["score"])
            for e in map(json.loads, open(d + "/search_log.jsonl"))]
def best(d):
    return json.load(open(d + "/search_summary.json"))["best"]
a, b = sys.argv[1], sys.argv[2]
sys.exit(0 if log(a) == log(b) and best(a) == best(b) else 1)
EOF
}

search "$TMP/ref" >/dev/null || fail "uninterrupted search"
full=$(wc -l <"$TMP/runs")

# stop_after OUT SIGNAL SECONDS: start a search, signal it after SECONDS; prints its exit status
stop_after() {
    rm -f "$TMP/runs"
    (exec "$PCBM_BIN" search --quiet --budget 14 --popsize 4 --base "$F/base" --out "$1" \
        --eval-cmd "$SCORE" $T >/dev/null 2>"$1.err") &
    local pid=$!
    sleep "$3"
    kill -"$2" $pid
    wait $pid
    echo $?
    while pgrep -f "out $1 " >/dev/null; do sleep 0.1; done # the evaluation in flight ends
}

rc=$(stop_after "$TMP/term" TERM 1.6)
logged=$(wc -l <"$TMP/term.search/search_log.jsonl")
if [ "$rc" = 75 ] && grep -q -- "--resume to continue" "$TMP/term.err" && [ ! -e "$TMP/term" ] &&
    [ "$logged" -ge 1 ] && [ "$logged" -lt 14 ]; then
    case_pass "SIGTERM: exit 75, how to resume, $logged evaluations logged"
else
    case_fail "SIGTERM" "exit $rc, $logged logged: $(cat "$TMP/term.err")"
fi
msg=$(search "$TMP/term" 2>&1)
[ $? -ne 0 ] && grep -q "continue it with --resume, or discard it and start over with --force" <<<"$msg" &&
    case_pass "a plain re-run does not discard the stopped search" || case_fail "re-run" "$msg"
msg=$(search "$TMP/term" --resume --seed 3 2>&1)
[ $? -ne 0 ] && grep -q "parameters differ (seed)" <<<"$msg" &&
    case_pass "--resume with another --seed is refused naming it" || case_fail "changed seed" "$msg"
rm -f "$TMP/runs"
search "$TMP/term" --resume >/dev/null 2>"$TMP/resume.err"
rc=$?
ran=$(wc -l <"$TMP/runs")
if [ $rc = 0 ] && same_search "$TMP/ref" "$TMP/term" && [ "$ran" -eq $((full - logged)) ]; then
    case_pass "--resume: the uninterrupted search's log, best λ and bytes; $ran of $full evaluations run again"
else
    case_fail "resume after SIGTERM" "exit $rc, ran $ran (want $((full - logged))): $(tail -n 3 "$TMP/resume.err")"
fi

rc=$(stop_after "$TMP/kill" KILL 2.1)
search "$TMP/kill" --resume >/dev/null 2>"$TMP/resume2.err"
rc2=$?
if [ "$rc" = 137 ] && [ $rc2 = 0 ] && same_search "$TMP/ref" "$TMP/kill"; then
    case_pass "SIGKILL, then --resume: the uninterrupted search's result"
else
    case_fail "resume after SIGKILL" "exit $rc / $rc2: $(tail -n 3 "$TMP/resume2.err")"
fi

rc=$(stop_after "$TMP/force" TERM 1.0)
search "$TMP/force" --force >/dev/null 2>&1 && same_search "$TMP/ref" "$TMP/force" &&
    case_pass "--force discards a stopped search and starts over" || case_fail "force" "exit $?"
finish

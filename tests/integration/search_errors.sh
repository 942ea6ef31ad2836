#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# search_errors.sh — how pcbmerge search fails: an evaluation command that exits non-zero, is
# killed, prints nothing or prints no number stops the search with a message that names the
# command and shows its stderr (or stdout), leaving no OUT and keeping the log of the
# evaluations so far; --on-eval-error skip logs failures and goes on; methods without per-task
# λ, merge-only options and bad search options are refused with the reason; OUT must not exist;
# a stale work directory is replaced and a running search's is not touched; {model} is quoted
# for the shell.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset tiny --seed 5
T="$F/task1 $F/task2 $F/task3"
run() { # OUT [options...]: a pcb search of the tiny family
    local out=$1
    shift
    # shellcheck disable=SC2086
    "$PCBM_BIN" search --quiet --base "$F/base" --out "$out" "$@" $T
}
# A scorer that reads the candidate: the number of bytes of its weights file, plus evaluation/1000.
SCORE='s=$(wc -c < {model}/model.safetensors); echo "eval $PCBM_SEARCH_EVALUATION"; echo "$s.$PCBM_SEARCH_EVALUATION"'

# --- failing commands stop the search ----------------------------------------------------------
expect_fail exit-status 'evaluation 1 .*failed: the command exited with status 3' \
    run "$TMP/o1" --budget 5 --eval-cmd 'echo loading {model}; echo "Traceback: boom" >&2; exit 3'
out=$(run "$TMP/o1" --budget 5 --eval-cmd 'echo loading {model}; echo "Traceback: boom" >&2; exit 3' 2>&1)
CASES=$((CASES + 1))
if grep -q "command: echo loading $TMP/o1.search/model; echo \"Traceback: boom\" >&2; exit 3" <<<"$out" &&
    grep -q '| Traceback: boom' <<<"$out" && no_output "$TMP/o1" &&
    grep -q '"score":null' "$TMP/o1.search/search_log.jsonl" && [ ! -e "$TMP/o1.search/model" ]; then
    echo "ok   the message names the command and shows its stderr; no OUT; the log is kept"
else
    echo "FAIL failing command report:"; sed 's/^/    /' <<<"$out"; FAILED+=(exit-report)
fi
expect_fail no-number 'printed no score: the last line of its stdout is "accuracy: n/a", not a number' \
    run "$TMP/o2" --eval-cmd 'echo {model}; echo "accuracy: n/a"'
expect_fail empty-stdout 'printed no score: its stdout is empty' run "$TMP/o3" --eval-cmd 'true {model}'
expect_fail killed 'killed by signal 9' run "$TMP/o4" --eval-cmd 'kill -9 $$ {model}'
expect_fail not-found 'exited with status 127' run "$TMP/o5" --eval-cmd '/nonexistent/evaluator {model}'
expect_fail later-failure 'evaluation 4 .*exited with status 1' \
    run "$TMP/o6" --budget 9 --eval-cmd "[ \$PCBM_SEARCH_EVALUATION = 4 ] && exit 1; $SCORE"
for o in o2 o3 o4 o5 o6; do
    no_output "$TMP/$o" || { echo "FAIL $o: OUT left behind"; FAILED+=("$o-left"); }
done

# --- --on-eval-error skip ----------------------------------------------------------------------
CASES=$((CASES + 1))
if run "$TMP/s1" --budget 9 --on-eval-error skip \
    --eval-cmd "case \$PCBM_SEARCH_EVALUATION in 3|6) echo nope; exit 2;; esac; $SCORE" \
    >"$TMP/s1.out" 2>&1 &&
    grep -q '"failed_evaluations": 2' "$TMP/s1/search_summary.json" &&
    [ "$(grep -c '"score":null' "$TMP/s1/search_log.jsonl")" = 2 ] &&
    [ "$(wc -l <"$TMP/s1/search_log.jsonl")" = 9 ] &&
    grep -q 'warning: evaluation 3 .*exited with status 2' "$TMP/s1.out"; then
    echo "ok   --on-eval-error skip: 2 failures logged, the search goes on to its budget"
else
    echo "FAIL --on-eval-error skip:"; tail -n 8 "$TMP/s1.out" | sed 's/^/    /'; FAILED+=(skip)
fi
expect_fail all-fail 'every evaluation failed' run "$TMP/s2" --budget 3 --on-eval-error skip --eval-cmd 'exit 1 {model}'

# --- refusals ----------------------------------------------------------------------------------
E='echo 1 {model}'
expect_fail ties 'method ties cannot be searched.*ties and dare_ties take one global --lambda' \
    run "$TMP/r" --method ties --eval-cmd "$E"
expect_fail dare-ties 'method dare_ties cannot be searched' run "$TMP/r" --method dare_ties --eval-cmd "$E"
expect_fail linear 'method linear cannot be searched.*linear takes --weights' run "$TMP/r" --method linear --eval-cmd "$E"
expect_fail lambdas '--lambdas does not apply to search' run "$TMP/r" --lambdas 1,1,1 --eval-cmd "$E"
expect_fail no-cmd 'search needs --eval-cmd' run "$TMP/r"
expect_fail no-placeholder 'must contain \{model\}' run "$TMP/r" --eval-cmd 'echo 1'
expect_fail bounds '--bounds needs LO,HI with LO < HI' run "$TMP/r" --bounds 3,1 --eval-cmd "$E"
expect_fail init '--init 4 is outside --bounds 0.5,3' run "$TMP/r" --init 4 --eval-cmd "$E"
expect_fail budget '--budget needs a number of evaluations' run "$TMP/r" --budget 0 --eval-cmd "$E"
expect_fail popsize '--popsize needs an integer from 2' run "$TMP/r" --popsize 1 --eval-cmd "$E"
expect_fail on-error '--on-eval-error is stop or skip' run "$TMP/r" --on-eval-error retry --eval-cmd "$E"
expect_fail stats-ta '--stats applies to pcb' run "$TMP/r" --method task_arithmetic --stats x --eval-cmd "$E"
mkdir -p "$TMP/exists"
expect_fail out-exists 'exists; search writes a new directory' run "$TMP/exists" --eval-cmd "$E"
no_output "$TMP/r" || { echo "FAIL: refusals left $TMP/r behind"; FAILED+=(refusals-left); }

# --- work directory: a stale one is replaced, a locked one is left alone ------------------------
mkdir -p "$TMP/w1.search/model.partial"
touch "$TMP/w1.search/junk"
CASES=$((CASES + 1))
if run "$TMP/w1" --budget 2 --eval-cmd "$SCORE" >/dev/null 2>&1 && [ ! -e "$TMP/w1.search" ] &&
    [ -f "$TMP/w1/model.safetensors" ]; then
    echo "ok   a stale OUT.search is replaced"
else
    echo "FAIL stale work directory"; FAILED+=(stale)
fi
if command -v flock >/dev/null 2>&1; then
    mkdir -p "$TMP/w2.search"
    touch "$TMP/w2.search/.lock"
    expect_fail locked 'another search is running into' \
        flock "$TMP/w2.search/.lock" "$PCBM_BIN" search --quiet --base "$F/base" --out "$TMP/w2" \
        --eval-cmd "$E" $T
    [ -e "$TMP/w2.search/.lock" ] || { echo "FAIL: the locked work directory was touched"; FAILED+=(locked-touched); }
fi

# --- {model} with spaces and quotes reaches the command as one word -----------------------------
Q="$TMP/with space's"
mkdir -p "$Q"
CASES=$((CASES + 1))
if run "$Q/out" --budget 2 --eval-cmd 'test -f {model}/model.safetensors && [ {model} = "$PCBM_MODEL" ] && echo 0.5' \
    >"$TMP/q.out" 2>&1 && [ -f "$Q/out/search_log.jsonl" ]; then
    echo "ok   {model} is shell-quoted (a path with a space and a quote)"
else
    echo "FAIL quoting:"; tail -n 6 "$TMP/q.out" | sed 's/^/    /'; FAILED+=(quoting)
fi
finish

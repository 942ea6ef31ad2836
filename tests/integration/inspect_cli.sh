#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# inspect_cli.sh — `pcbmerge inspect` as a user meets it: it lists a generated Llama-shaped
# sharded checkpoint (text and --json), accepts every valid corpus file, and refuses every
# malformed file and index of tests/corpus with exit 1 and one error that names the file and
# contains the words expect.tsv lists for the rule broken (path traversal in an index included).
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

C=$PCBM_ROOT/tests/corpus
F=$TMP/fam
gen "$F" --tasks 1 --dtype bf16 --preset small --seed 51 --shard-size 2MB
CASES=$((CASES + 1))
out=$("$PCBM_BIN" inspect "$F/base")
if grep -q "model.embed_tokens.weight" <<<"$out" && grep -q "model-00001-of-0000" <<<"$out" &&
    grep -Eq "tensors in [0-9]+ file\(s\).*valid" <<<"$out" &&
    "$PCBM_BIN" inspect --json "$F/base" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert d["valid"] and d["num_files"] > 1 and d["tensors"][0]["shard"].startswith("model-")'; then
    echo "ok   sharded Llama-shaped checkpoint listed (text and --json)"
else
    echo "FAIL listing the sharded checkpoint"; FAILED+=(list)
fi

for g in "$C"/good/*; do
    CASES=$((CASES + 1))
    if "$PCBM_BIN" inspect "$g" >/dev/null 2>&1; then :; else echo "FAIL valid $(basename "$g") refused"; FAILED+=("$(basename "$g")"); fi
done

while IFS=$'\t' read -r rel words; do
    case "$rel" in '#'* | '') continue ;; esac
    CASES=$((CASES + 1))
    msg=$("$PCBM_BIN" inspect "$C/$rel" 2>&1)
    rc=$?
    name=$(basename "$rel")
    if [ $rc -ne 1 ]; then
        echo "FAIL $rel: exit $rc, expected 1"; FAILED+=("$rel")
    elif [ "$(grep -c 'error:' <<<"$msg")" -ne 1 ] || ! grep -qF "$name" <<<"$msg" ||
        ! grep -qiF "$words" <<<"$msg"; then
        echo "FAIL $rel: message lacks the file or '$words':"; echo "    $msg"; FAILED+=("$rel")
    fi
done <"$C/expect.tsv"
echo "checked $CASES cases"
finish

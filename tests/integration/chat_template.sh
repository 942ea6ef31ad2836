#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# chat_template.sh — mergekit's `chat_template`, from a recipe or --chat-template: "auto" takes the
# template most of the models share (a tie goes to the model listed first: base, then the tasks
# in order), a Jinja text or file is written as it is; it lands in the output's
# tokenizer_config.json (its other keys unchanged) and in a copied chat_template.jinja. mergekit's
# named templates, a text that is no template, and --chat-template beside --config are usage
# errors (exit 2); "auto" among models without templates keeps the base's files; a base without
# tokenizer_config.json gets a warning and no template. The manifest covers the rewritten files.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
need_numpy

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset tiny --seed 5
A='{% for m in messages %}<|A|>{{ m.content }}{% endfor %}'
B='{% for m in messages %}<|B|>{{ m["role"] }}: {{ m.content }}{% endfor %}'
# tokenizer_config.json: base A, task1 B (as a list with a default entry), task2 B (in
# chat_template.jinja, with trailing new lines), task3 none
"$PY" - "$F" "$A" "$B" <<'EOF' || fail "cannot write the tokenizer files"
import json, sys
fam, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
json.dump({"model_max_length": 2048, "chat_template": a, "bos_token": "<s>"},
          open(fam + "/base/tokenizer_config.json", "w"), indent=2)
json.dump({"chat_template": [{"name": "tool_use", "template": "{{ x }} other one ........"},
                             {"name": "default", "template": b}]},
          open(fam + "/task1/tokenizer_config.json", "w"))
json.dump({"bos_token": "<s>"}, open(fam + "/task2/tokenizer_config.json", "w"))
open(fam + "/task2/chat_template.jinja", "w").write("\n" + b + "\n\n")
json.dump({"bos_token": "<s>"}, open(fam + "/task3/tokenizer_config.json", "w"))
EOF
TASKS=$(task_dirs "$F" 3)

# template_is OUT EXPECTED: OUT's tokenizer_config.json has chat_template EXPECTED and the base's
# other keys; verify passes.
template_is() {
    "$PCBM_BIN" verify "$1" >/dev/null || { echo "    verify failed"; return 1; }
    "$PY" - "$1" "$2" "$F/base/tokenizer_config.json" <<'EOF'
import json, sys
out, want, base = sys.argv[1], sys.argv[2], sys.argv[3]
got = json.load(open(out + "/tokenizer_config.json"))
b = json.load(open(base))
assert got.pop("chat_template") == want, "chat_template differs"
b.pop("chat_template")
assert got == b, "other keys changed"
EOF
}

auto_case() {
    # shellcheck disable=SC2086
    "$PCBM_BIN" merge --quiet --method task_arithmetic --chat-template auto --base "$F/base" \
        --out "$TMP/auto" $TASKS || return 1
    template_is "$TMP/auto" "$B"
}
check auto-takes-the-plurality auto_case

tie_case() { # base A, task3 none, task2 B: one each, the base is listed first
    "$PCBM_BIN" merge --quiet --method task_arithmetic --chat-template auto --base "$F/base" \
        --out "$TMP/tie" "$F/task3" "$F/task2" || return 1
    template_is "$TMP/tie" "$A"
}
check auto-tie-goes-to-the-first tie_case

text_and_file_case() {
    local T='{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}'
    "$PCBM_BIN" merge --quiet --method linear --chat-template "$T" --base "$F/base" \
        --out "$TMP/text" "$F/task1" || return 1
    template_is "$TMP/text" "$T" || return 1
    printf '%s' "$T" >"$TMP/t.jinja"
    "$PCBM_BIN" merge --quiet --method linear --chat-template "$TMP/t.jinja" --base "$F/base" \
        --out "$TMP/file" "$F/task1" || return 1
    template_is "$TMP/file" "$T" || return 1
    grep -q -- '--chat-template' "$TMP/file/README.md" # the card's command says it
}
check text-and-file text_and_file_case

recipe_case() {
    cat >"$TMP/r.yml" <<YEOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 0.5}
  - model: $F/task2
    parameters: {weight: 0.5}
chat_template: "{% for m in messages %}<|R|>{{ m.content }}{% endfor %}"
YEOF
    "$PCBM_BIN" merge --quiet --config "$TMP/r.yml" --out "$TMP/recipe" || return 1
    template_is "$TMP/recipe" '{% for m in messages %}<|R|>{{ m.content }}{% endfor %}' || return 1
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["chat_template"].startswith("{%")' \
        "$TMP/recipe/merge_report.json"
}
check recipe-chat-template recipe_case

jinja_case() { # a base with chat_template.jinja: rewritten too
    cp -r "$F/base" "$TMP/jbase"
    printf '%s\n' "$A" >"$TMP/jbase/chat_template.jinja"
    "$PCBM_BIN" merge --quiet --method task_arithmetic --chat-template auto --base "$TMP/jbase" \
        --out "$TMP/jinja" $TASKS || return 1
    [ "$(cat "$TMP/jinja/chat_template.jinja")" = "$B" ] && "$PCBM_BIN" verify "$TMP/jinja" >/dev/null
}
check chat-template-jinja-rewritten jinja_case

none_case() { # no model has a template: the base's files as they are
    cp -r "$F/base" "$TMP/nbase"
    echo '{"bos_token": "<s>"}' >"$TMP/nbase/tokenizer_config.json"
    "$PCBM_BIN" merge --method task_arithmetic --chat-template auto --base "$TMP/nbase" \
        --out "$TMP/none" "$F/task3" 2>"$TMP/none.log" || return 1
    cmp -s "$TMP/nbase/tokenizer_config.json" "$TMP/none/tokenizer_config.json" &&
        grep -q "no model has a chat template" "$TMP/none.log"
}
check auto-without-templates none_case

notok_case() { # no tokenizer_config.json in the base: a warning, nothing written
    cp -r "$F/base" "$TMP/tbase"
    rm "$TMP/tbase/tokenizer_config.json"
    "$PCBM_BIN" merge --method task_arithmetic --chat-template auto --base "$TMP/tbase" \
        --out "$TMP/notok" "$F/task1" 2>"$TMP/notok.log" || return 1
    [ ! -e "$TMP/notok/tokenizer_config.json" ] && grep -q "warning: chat_template: the base has no tokenizer_config.json" "$TMP/notok.log"
}
check no-tokenizer-config-warns notok_case

m() { "$PCBM_BIN" merge --quiet --method task_arithmetic --base "$F/base" --out "$TMP/x-$RANDOM" "$@" "$F/task1"; }
expect_fail named-template-refused "chat_template 'chatml' names a template file that ships with mergekit" \
    m --chat-template chatml
expect_fail not-a-template-refused "chat_template 'hello' is neither 'auto' nor a Jinja template" \
    m --chat-template hello
sed 's/^chat_template: .*/chat_template: llama3/' "$TMP/r.yml" >"$TMP/r-named.yml"
expect_fail recipe-named-template-refused "r-named.yml, line 8: chat_template 'llama3' names a template file" \
    "$PCBM_BIN" merge --quiet --config "$TMP/r-named.yml" --out "$TMP/r-named"
expect_fail chat-template-beside-config-refused "--chat-template .*put .* in the recipe" \
    "$PCBM_BIN" merge --quiet --config "$TMP/r.yml" --chat-template auto --out "$TMP/r-both"
for code in 2; do
    "$PCBM_BIN" merge --quiet --method task_arithmetic --chat-template chatml --base "$F/base" \
        --out "$TMP/x-code" "$F/task1" >/dev/null 2>&1
    rc=$?
    CASES=$((CASES + 1))
    if [ $rc -eq $code ]; then echo "ok   named-template-exit-$code"; else echo "FAIL named-template-exit-$code (exit $rc)"; FAILED+=("named-template-exit"); fi
done
finish

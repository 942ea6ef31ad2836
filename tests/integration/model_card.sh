#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# model_card.sh — what a merged model says about itself: README.md with Hugging Face model-card
# front matter (base_model — the hub id when the base was named by one —, tags merge and
# pcbmerge, library_name) and a body naming the method, its parameters, every input and the
# command; config.json's torch_dtype follows --dtype and nothing else in it changes; the manifest
# lists the card and verify passes; a split merge writes the same card without the command.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
need_numpy
"$PY" -c "import yaml" 2>/dev/null || skip "python3-yaml is not installed"

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset tiny --seed 23

card_and_config() {
    local out=$TMP/f32
    "$PCBM_BIN" merge --quiet --method ties --density 0.3 --dtype f32 --base "$F/base" --out "$out" \
        "$F/task1" "$F/task2" || return 1
    "$PCBM_BIN" verify "$out" >/dev/null || { echo "    verify failed"; return 1; }
    "$PY" - "$F/base/config.json" "$out" "$F" <<'EOF'
import json, sys, yaml
base_cfg, out, fam = sys.argv[1], sys.argv[2], sys.argv[3]
a, b = json.load(open(base_cfg)), json.load(open(out + "/config.json"))
assert b.pop("torch_dtype") == "float32", "torch_dtype"
a.pop("torch_dtype", None)
assert a == b, "config.json changed beyond torch_dtype"
text = open(out + "/README.md").read()
assert text.startswith("---\n")
front = yaml.safe_load(text.split("---\n")[1])
assert front["base_model"] == fam + "/base", front
assert {"merge", "pcbmerge"} <= set(front["tags"]) and front["library_name"] == "transformers", front
body = text.split("---\n", 2)[2]
for want in ("`ties`", "`density` | `0.3`", fam + "/task1", fam + "/task2",
             "pcbmerge merge --method ties --density 0.3 --dtype f32 --base " + fam + "/base --out OUT " + fam + "/task1 " + fam + "/task2"):
    assert want in body, want
names = [f["name"] for f in json.load(open(out + "/pcbmerge.manifest.json"))["files"]]
assert "README.md" in names, names
EOF
}
check "model card and config.json's torch_dtype" card_and_config

hub_base_id() {
    export HF_HUB_CACHE=$TMP/hub
    local repo=$HF_HUB_CACHE/models--acme--tiny-base c=0123456789abcdef0123456789abcdef01234567
    mkdir -p "$repo/snapshots" "$repo/refs"
    cp -r "$F/base" "$repo/snapshots/$c"
    printf '%s' $c >"$repo/refs/main"
    "$PCBM_BIN" merge --quiet --base acme/tiny-base --out "$TMP/hubout" "$F/task1" "$F/task2" || return 1
    grep -q '^base_model: "acme/tiny-base"$' "$TMP/hubout/README.md" || { head -3 "$TMP/hubout/README.md"; return 1; }
    grep -q "torch_dtype\": \"bfloat16\"" "$TMP/hubout/config.json" &&
        cmp -s "$F/base/config.json" "$TMP/hubout/config.json" # unchanged without --dtype
}
check "a base named by hub id is the card's base_model; config.json untouched without --dtype" hub_base_id

split_card() {
    local out=$TMP/split
    "$PCBM_BIN" plan --quiet --parts 2 --base "$F/base" --out "$out" "$F/task1" "$F/task2" || return 1
    local u
    for u in 0 1; do "$PCBM_BIN" stats --quiet --plan "$out" --part $u || return 1; done
    "$PCBM_BIN" reduce --quiet --plan "$out" || return 1
    while [ "$("$PCBM_BIN" status --plan "$out" --get next 2>/dev/null)" = stats ]; do
        for u in 0 1; do "$PCBM_BIN" stats --quiet --plan "$out" --part $u || return 1; done
        "$PCBM_BIN" reduce --quiet --plan "$out" || return 1
    done
    for u in 0 1; do "$PCBM_BIN" apply --quiet --plan "$out" --part $u || return 1; done
    "$PCBM_BIN" finalize --quiet --plan "$out" || return 1
    [ -f "$out/README.md" ] && grep -q "pcb" "$out/README.md" && "$PCBM_BIN" verify "$out" >/dev/null
}
check "a split merge writes the card too" split_card
finish

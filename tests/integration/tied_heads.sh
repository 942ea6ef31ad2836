#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tied_heads.sh — models that tie lm_head to their input embedding (no lm_head.weight stored,
# config tie_word_embeddings true) mixed with models that store it. A tied model's embedding
# stands in for its head; the merge must equal the NumPy reference's merge of the materialized
# family (every tied model given lm_head = its embedding). A base that ties while tasks store the
# head gives an output that stores it, with tie_word_embeddings false in config.json.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin

# family DIR TIED...: base, task1, task2 of a tiny Llama-shaped model (vocabulary 96, hidden 64)
# in DIR/tied (the named models leave lm_head out) and DIR/full (every model stores it).
family() {
    local dir=$1
    shift
    "$PY" - "$dir" "$@" <<'EOF' || fail "cannot generate $dir"
import json
import os
import sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode
out, tied = sys.argv[1], set(sys.argv[2:])
rng = np.random.default_rng(11)
shapes = [("model.embed_tokens.weight", (96, 64)), ("model.layers.0.mlp.down_proj.weight", (64, 128)),
          ("model.norm.weight", (64,)), ("lm_head.weight", (96, 64))]
base = {n: rng.normal(0, 0.02, s).astype(np.float32) for n, s in shapes}
models = {"base": base}
for t in ("task1", "task2"):
    models[t] = {n: (v + rng.laplace(0, 2e-3, v.shape)).astype(np.float32) for n, v in base.items()}
for name, vals in models.items():
    if name in tied:    # a tied model: its head is its embedding
        vals["lm_head.weight"] = vals["model.embed_tokens.weight"]
    for kind in ("tied", "full"):
        keep = [(n, s) for n, s in shapes if not (kind == "tied" and name in tied and n == "lm_head.weight")]
        d = "%s/%s/%s" % (out, kind, name)
        write_model(d, [(n, "BF16", s, encode("BF16", vals[n].ravel())) for n, s in keep])
        with open(d + "/config.json", "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                       "vocab_size": 96, "hidden_size": 64, "torch_dtype": "bfloat16",
                       "tie_word_embeddings": kind == "tied" and name in tied}, f, indent=2)
EOF
}
export PCBM_ROOT

# tied_case NAME FAMILY CFG_TIE OPTIONS...: merge FAMILY/tied with pcbmerge and compare with the
# reference; config.json's tie_word_embeddings must be CFG_TIE (true/false).
tied_case() {
    local name=$1 fam=$2 want=$3
    shift 3
    local dir=$TMP/$name ok=1
    CASES=$((CASES + 1))
    "$PCBM_BIN" merge --quiet --base "$fam/tied/base" --out "$dir.ours" "$@" \
        "$fam/tied/task1" "$fam/tied/task2" >"$dir.log" 2>&1 || ok=0
    # the reference merges the materialized family; when every model ties, the tied family itself
    # (the embedding is one set of parameters, counted once by the global statistics)
    local src=full
    [ "$want" = true ] && src=tied
    [ $ok = 1 ] && { "$PY" "$REF_PY" merge --base "$fam/$src/base" --out "$dir.ref" "$@" \
        "$fam/$src/task1" "$fam/$src/task2" >>"$dir.log" 2>&1 || ok=0; }
    [ $ok = 1 ] && { "$PY" "$CMP_PY" "$dir.ours" "$dir.ref" --max-ulp 1 \
        --ref-report "$dir.ref/ref_report.json" >>"$dir.log" 2>&1 || ok=0; }
    local got
    got=$("$PY" -c 'import json,sys; print(str(json.load(open(sys.argv[1]))["tie_word_embeddings"]).lower())' \
        "$dir.ours/config.json" 2>/dev/null)
    [ "$got" = "$want" ] || { echo "    config.json tie_word_embeddings: $got, want $want" >>"$dir.log"; ok=0; }
    if [ $ok = 1 ]; then
        echo "ok   $name: $(grep -E '^float elements' "$dir.log" | sed 's/^float elements //')"
    else
        echo "FAIL $name"
        tail -n 12 "$dir.log" | sed 's/^/    /'
        FAILED+=("$name")
    fi
}

A=$TMP/task-tied B=$TMP/base-tied C=$TMP/all-tied
family "$A" task2
family "$B" base task1
family "$C" base task1 task2
for m in pcb task_arithmetic ties; do
    opts=(--method "$m")
    [ "$m" = task_arithmetic ] || opts+=(--density 0.2)
    tied_case "untied-base-tied-task-$m" "$A" false "${opts[@]}"
    tied_case "tied-base-untied-task-$m" "$B" false "${opts[@]}"
    tied_case "all-tied-$m" "$C" true "${opts[@]}"
done

# The messages say which model's embedding stood in for the head.
expect_fail_msg() { "$PCBM_BIN" merge --base "$A/tied/base" --out "$TMP/msg" "$A/tied/task1" \
    "$A/tied/task2" 2>&1 | grep -q "task model 2 .* ties its embeddings: model.embed_tokens.weight stands in for lm_head.weight"; }
check message-names-tied-task expect_fail_msg
finish

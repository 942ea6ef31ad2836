#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# recipe.sh — mergekit recipes (`pcbmerge merge --config R.yml`) against the NumPy reference
# tests/reference/mergekit_ref.py (written from mergekit's source): (a) mergekit's own examples
# (tests/recipes/mergekit/) with their models replaced by a generated family, for the methods
# pcbmerge and the reference both have; (b) a 6-layer F32 family with per-model weight gradients
# and filters for linear and task_arithmetic, the slices form, the base among the models, and
# pcb's scalars (against pcb_ref.py); (c) refusals (exit 2, naming the key, line, method or form);
# (d) plan --config in 3 parts gives the one-machine bytes, a killed merge resumes (another
# recipe is refused); (e) --mem 64M on a family 8x larger
# with a gradient recipe: peak RSS <= 112 MiB (skipped under ASan), and the same bytes for
# --threads 1/2 and --io pread/uring. At most 1e-5 of the elements may differ from the reference.
. "$(dirname "$0")/lib.sh"
need_ref
"$PY" -c 'import yaml' 2>/dev/null || skip "PyYAML is missing for $PY (apt-get install python3-yaml)"

P=$PCBM_BIN
MKREF=$PCBM_ROOT/tests/reference/mergekit_ref.py
EX=$PCBM_ROOT/tests/recipes/mergekit
F=$TMP/fam
gen "$F" --dtype f32 --layers 6 --tasks 4 --seed 7

# ref_recipe NAME RECIPE [pcbmerge options...]: ours and the reference on RECIPE, compared.
ref_recipe() {
    local name=$1 recipe=$2 log=$TMP/$1.log
    shift 2
    rm -rf "$TMP/$name.ours" "$TMP/$name.ref"
    if ! "$P" merge --config "$recipe" --out "$TMP/$name.ours" --quiet "$@" >"$log" 2>&1; then
        case_fail "$name" "pcbmerge failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return 1
    fi
    if ! "$PY" "$MKREF" --config "$recipe" --out "$TMP/$name.ref" >"$log" 2>&1; then
        case_fail "$name" "the reference failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return 1
    fi
    if "$PY" "$CMP_PY" "$TMP/$name.ours" "$TMP/$name.ref" --max-mismatch 1e-5 >"$log" 2>&1; then
        case_pass "$name" "$(grep -E '^float elements' "$log")"
    else
        case_fail "$name" "$(tail -n 4 "$log" | tr '\n' ' ')"
        return 1
    fi
}

# has_ref METHOD: the reference has the method (mk_basic, mk_gta, mk_geo).
has_ref() {
    "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import mergekit_ref as m
sys.exit(0 if sys.argv[2] in m.METHODS else 1)' "$PCBM_ROOT/tests/reference" "$1"
}

# ---- (a) mergekit's examples ----------------------------------------------------------------
# local_recipe SRC DST: the example with base_model -> base and the other models -> task1.. in
# order of appearance (no base_model: the first model is the family's base), layer ranges ->
# the family's 6 layers.
local_recipe() {
    "$PY" - "$1" "$2" "$F" <<'PYEOF'
import re, sys, yaml
src, dst, fam = sys.argv[1:4]
text = open(src).read()
cfg = yaml.safe_load(text)
names = []
if cfg.get("base_model"):
    names.append(cfg["base_model"])
for m in cfg.get("models") or [s for sl in cfg.get("slices", []) for s in sl["sources"]]:
    if m["model"] not in names:
        names.append(m["model"])
dirs = ["%s/base" % fam] + ["%s/task%d" % (fam, i) for i in range(1, len(names))]
for n, d in sorted(zip(names, dirs), key=lambda nd: -len(nd[0])):
    text = re.sub(r"(?<=[\s:])" + re.escape(n) + r"(?=\s|$)", d, text)
text = re.sub(r"layer_range: \[0, \d+\]", "layer_range: [0, 6]", text)
open(dst, "w").write(text)
PYEOF
}

for ex in "$EX"/*.yml; do
    n=$(basename "$ex" .yml)
    local_recipe "$ex" "$TMP/ex-$n.yml" || fail "cannot localize $ex"
    method=$(sed -n 's/^merge_method: *//p' "$ex")
    if ! msg=$("$P" merge --config "$TMP/ex-$n.yml" --out "$TMP/ex-$n.dry" --dry-run 2>&1); then
        if grep -q "merge_method $method is not supported" <<<"$msg"; then
            echo "skip example $n: this pcbmerge does not merge $method yet"
        else
            case_fail "example-$n" "--dry-run failed: $(tail -n 2 <<<"$msg" | tr '\n' ' ')"
        fi
        continue
    fi
    if ! has_ref "$method"; then
        echo "skip example $n: no reference for $method (tests/reference/mk_*.py)"
        continue
    fi
    ref_recipe "example-$n" "$TMP/ex-$n.yml"
done

# ---- (b) gradients and filters on a 6-layer F32 family ---------------------------------------
R=$TMP/recipes
mkdir -p "$R"
cat >"$R/linear-grad.yml" <<EOF
merge_method: linear
models:
  - model: $F/task1
    parameters:
      weight: [1.0, 0.2, 0.7]
  - model: $F/task2
    parameters:
      weight:
        - filter: self_attn
          value: [0.1, 0.9]
        - filter: mlp
          value: 0.4
        - value: 0.25
  - model: $F/task3
    parameters:
      weight: 0.5
dtype: float32
EOF
ref_recipe linear-gradient-filter "$R/linear-grad.yml"

cat >"$R/linear-nonorm.yml" <<EOF
merge_method: linear
base_model: $F/base
models:
  - model: $F/base
    parameters:
      weight: 0.5
  - model: $F/task1
    parameters:
      weight: [0.3, 0.6]
parameters:
  normalize: false
EOF
ref_recipe linear-base-listed-no-normalize "$R/linear-nonorm.yml"

cat >"$R/ta-grad.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters:
      weight: [0, 0.3, 0.7, 1]
  - model: $F/task2
    parameters:
      weight:
        - filter: mlp
          value: [1.0, 0.1]
        - filter: "*"
          value: 0.6
  - model: $F/task3
    parameters:
      weight:
        - filter: embed_tokens
          value: 2.0
parameters:
  weight: 0.3
  lambda: [0.5, 1.5]
  normalize: true
dtype: float32
EOF
ref_recipe ta-gradient-filter-fallthrough "$R/ta-grad.yml"

cat >"$R/ta-base-listed.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/base
  - model: $F/task1
    parameters:
      weight: 0.7
  - model: $F/task4
    parameters:
      weight:
        - filter: layers.2.
          value: -0.5
        - value: 0.4
parameters:
  lambda: 0.9
EOF
ref_recipe ta-base-among-models "$R/ta-base-listed.yml"

# hub ids: models named ORG/NAME from the local Hugging Face cache, the base among the models
# by its id (the same merge as by paths)
export HF_HUB_CACHE=$TMP/hub
for m in base task1 task4; do
    repo=$HF_HUB_CACHE/models--acme--$m
    c=0123456789abcdef0123456789abcdef0123456$((${#m} % 10))
    mkdir -p "$repo/snapshots/$c" "$repo/refs"
    echo "$c" >"$repo/refs/main"
    for f in "$F/$m"/*; do ln -s "$f" "$repo/snapshots/$c/$(basename "$f")"; done
done
sed -e "s|$F/base|acme/base|g" -e "s|$F/task1|acme/task1|g" -e "s|$F/task4|acme/task4|g" \
    "$R/ta-base-listed.yml" >"$R/ta-hub.yml"
rm -rf "$TMP/hub.ours"
if "$P" merge --config "$R/ta-hub.yml" --out "$TMP/hub.ours" --quiet >"$TMP/hub.log" 2>&1 &&
    why=$(cmp "$TMP/ta-base-among-models.ours/model.safetensors" "$TMP/hub.ours/model.safetensors"); then
    case_pass "hub ids in a recipe" "the weights of the merge by paths, byte for byte"
else
    case_fail "hub ids in a recipe" "${why:-$(tail -n 2 "$TMP/hub.log" | tr '\n' ' ')}"
fi
unset HF_HUB_CACHE

# zero summed weights with normalize: mergekit divides by 1
cat >"$R/ta-zero-sum.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters: {weight: 0.5}
  - model: $F/task2
    parameters: {weight: -0.5}
parameters: {normalize: true}
EOF
ref_recipe ta-zero-weight-sum "$R/ta-zero-sum.yml"

# the slices form (one slice over every layer) is the models form
cat >"$R/ta-slices.yml" <<EOF
merge_method: task_arithmetic
base_model: $F/base
slices:
  - sources:
      - model: $F/task1
        layer_range: [0, 6]
        parameters:
          weight: [0, 0.3, 0.7, 1]
      - model: $F/task2
        layer_range: [0, 6]
        parameters:
          weight:
            - filter: mlp
              value: [1.0, 0.1]
            - filter: "*"
              value: 0.6
      - model: $F/task3
        layer_range: [0, 6]
        parameters:
          weight:
            - filter: embed_tokens
              value: 2.0
      - model: $F/base
        layer_range: [0, 6]
parameters:
  weight: 0.3
  lambda: [0.5, 1.5]
  normalize: true
dtype: float32
EOF
ref_recipe ta-slices-form "$R/ta-slices.yml" &&
    if why=$(same_outputs "$TMP/ta-gradient-filter-fallthrough.ours" "$TMP/ta-slices-form.ours" README.md); then
        case_pass "slices form = models form" "byte-identical"
    else
        case_fail "slices form = models form" "$why"
    fi

# a negative control: the reference of another gradient must not match
sed 's/weight: \[0, 0.3, 0.7, 1\]/weight: [0, 0.3, 0.7, 0.9]/' "$R/ta-grad.yml" >"$R/ta-grad-other.yml"
rm -rf "$TMP/neg.ref"
"$PY" "$MKREF" --config "$R/ta-grad-other.yml" --out "$TMP/neg.ref" >/dev/null 2>&1 &&
    if "$PY" "$CMP_PY" "$TMP/ta-gradient-filter-fallthrough.ours" "$TMP/neg.ref" --max-mismatch 1e-5 \
        >/dev/null 2>&1; then
        case_fail "negative control" "a different gradient's reference matches"
    else
        case_pass "negative control" "a different gradient's reference does not match"
    fi

# pcb from a recipe: scalars, tensor scope by default: the tensors of the CLI's merge with the
# same parameters, and pcb_ref.py's within the bound of the PCB suites (compare.py's default,
# cancellation-aware: exp/tanh may differ by an ulp between implementations)
cat >"$R/pcb.yml" <<EOF
merge_method: pcb
base_model: $F/base
models:
  - model: $F/task1
  - model: $F/task2
  - model: $F/task3
parameters:
  density: 0.2
  lambda: 0.8
  clamp_ratio: 0.001
dtype: float32
EOF
same_tensors() { # A B: every tensor's bytes equal (the headers' metadata may differ)
    "$PY" - "$PCBM_ROOT/tests/reference" "$1" "$2" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import read_model
a, b = read_model(sys.argv[2]), read_model(sys.argv[3])
sys.exit(0 if list(a) == list(b) and all(a[n].raw.tobytes() == b[n].raw.tobytes() for n in a) else 1)
PYEOF
}
rm -rf "$TMP/pcb.ours" "$TMP/pcb.cli" "$TMP/pcb.ref"
if "$P" merge --config "$R/pcb.yml" --out "$TMP/pcb.ours" --quiet >"$TMP/pcb.log" 2>&1 &&
    "$P" merge --base "$F/base" --out "$TMP/pcb.cli" --method pcb --density 0.2 --lambda 0.8 \
        --clamp-ratio 0.001 --scope tensor --dtype f32 --quiet $(task_dirs "$F" 3) >>"$TMP/pcb.log" 2>&1 &&
    same_tensors "$TMP/pcb.ours" "$TMP/pcb.cli" &&
    "$PY" "$REF_PY" merge --base "$F/base" --out "$TMP/pcb.ref" --method pcb --density 0.2 \
        --lambda 0.8 --clamp-ratio 0.001 --scope tensor --dtype f32 $(task_dirs "$F" 3) \
        >>"$TMP/pcb.log" 2>&1 &&
    "$PY" "$CMP_PY" "$TMP/pcb.ours" "$TMP/pcb.ref" --base "$F/base" >>"$TMP/pcb.log" 2>&1; then
    case_pass "pcb-recipe-scalars" "the CLI's tensors; $(grep -E '^float elements' "$TMP/pcb.log")"
else
    case_fail "pcb-recipe-scalars" "$(tail -n 4 "$TMP/pcb.log" | tr '\n' ' ')"
fi

# mergekit looks a whole-merge parameter up in the slice before the recipe's parameters: a pcb
# recipe whose slice sets density, lambda and scope gives the tensors of the slice's values
L=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"])' "$F/base/config.json")
cat >"$R/pcb-slice.yml" <<EOF
merge_method: pcb
base_model: $F/base
slices:
  - sources:
      - model: $F/task1
        layer_range: [0, $L]
      - model: $F/task2
        layer_range: [0, $L]
      - model: $F/task3
        layer_range: [0, $L]
    parameters:
      density: 0.2
      lambda: 0.8
      scope: tensor
parameters:
  density: 0.6
  lambda: 0.3
  clamp_ratio: 0.001
  scope: global
dtype: float32
EOF
rm -rf "$TMP/pcb-slice.ours"
if "$P" merge --config "$R/pcb-slice.yml" --out "$TMP/pcb-slice.ours" --quiet >"$TMP/pcb-slice.log" 2>&1 &&
    same_tensors "$TMP/pcb-slice.ours" "$TMP/pcb.cli"; then
    case_pass "pcb-recipe-slice-first" "the slice's density, lambda and scope win over the recipe's"
else
    case_fail "pcb-recipe-slice-first" "$(tail -n 3 "$TMP/pcb-slice.log" | tr '\n' ' ')"
fi

# ---- (c) refusals ------------------------------------------------------------------------------
refuse() { # NAME REGEX RECIPE_TEXT [options]
    local name=$1 re=$2 text=$3 out rc
    shift 3
    printf '%s\n' "$text" >"$R/$name.yml"
    out=$("$P" merge --config "$R/$name.yml" --out "$TMP/$name.out" "$@" 2>&1)
    rc=$?
    if [ $rc -ne 2 ]; then
        case_fail "refuse $name" "exit $rc, not 2: $out"
    elif ! grep -Eq -- "$re" <<<"$out"; then
        case_fail "refuse $name" "message does not match /$re/: $out"
    elif [ -e "$TMP/$name.out" ]; then
        case_fail "refuse $name" "left an output"
    else
        case_pass "refuse $name"
    fi
}
MODELS="models:
  - model: $F/task1
    parameters: {weight: 1.0}"
refuse misspelt-key "line 2: unknown key 'merge_methd'" "base_model: $F/base
merge_methd: task_arithmetic
$MODELS"
refuse misspelt-model-key "line 5: unknown key 'parameter'" "merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameter: {weight: 1.0}"
refuse unknown-method "unknown merge_method 'frankenstein'" "merge_method: frankenstein
base_model: $F/base
$MODELS"
refuse unknown-parameter "line 6: .*unknown parameter 'wieght' for merge_method task_arithmetic" \
    "merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters:
      wieght: 1.0"
refuse slices-ranges "slices that take different layer ranges" "merge_method: task_arithmetic
base_model: $F/base
slices:
  - sources:
      - model: $F/task1
        layer_range: [0, 6]
      - model: $F/task2
        layer_range: [0, 4]"
refuse slices-partial "slices that take layers \[0, 4\) of the base's 6 are not supported yet" \
    "merge_method: task_arithmetic
base_model: $F/base
slices:
  - sources:
      - model: $F/task1
        layer_range: [0, 4]
        parameters: {weight: 1.0}"
refuse modules "modules: .*not supported yet" "merge_method: task_arithmetic
base_model: $F/base
modules:
  text: {models: [{model: $F/task1}]}"
refuse tokenizer-pad "tokenizer.pad_to_multiple_of is not supported yet" "merge_method: task_arithmetic
base_model: $F/base
tokenizer:
  source: union
  pad_to_multiple_of: 64
$MODELS"
refuse tokenizer-model "tokenizer source '$F/task9' is none of the recipe's models" "merge_method: task_arithmetic
base_model: $F/base
tokenizer_source: $F/task9
$MODELS"
refuse chat-template-named "chat_template 'chatml' names a template file that ships with mergekit" "merge_method: task_arithmetic
base_model: $F/base
chat_template: chatml
$MODELS"
refuse missing-weight "model $F/task2 has no weight: task_arithmetic requires one" \
    "merge_method: task_arithmetic
base_model: $F/base
$MODELS
  - model: $F/task2"
refuse filtered-weight-missing "model $F/task1: the parameter weight is missing for tensor" \
    "merge_method: task_arithmetic
base_model: $F/base
models:
  - model: $F/task1
    parameters:
      weight: [{filter: mlp, value: 1.0}]"
refuse pcb-global-gradient "gradient or filter on the PCB parameter density: PCB's global scope" \
    "merge_method: pcb
base_model: $F/base
models: [{model: $F/task1}, {model: $F/task2}]
parameters:
  scope: global
  density: [0.1, 0.3]"
refuse passthrough "merge_method passthrough is not supported yet" "merge_method: passthrough
base_model: $F/base
$MODELS"
refuse method-flag "--method, --weights change the merge that the recipe .* describes: put them in the recipe" \
    "merge_method: task_arithmetic
base_model: $F/base
$MODELS" --method ties --weights 1
refuse positional-models "takes the models from the recipe" "merge_method: task_arithmetic
base_model: $F/base
$MODELS" "$F/task2"
refuse bad-yaml "line [0-9]+: not valid YAML" "merge_method: [task_arithmetic
base_model: $F/base"
refuse needs-base "merge_method task_arithmetic needs base_model" "merge_method: task_arithmetic
$MODELS"
out=$("$P" plan --config "$R/filtered-weight-missing.yml" --out "$TMP/pl.out" --parts 2 2>&1)
[ $? -eq 2 ] && grep -q "the parameter weight is missing for tensor" <<<"$out" &&
    case_pass "refuse plan --config with a weight missing for some tensor" ||
    case_fail "refuse plan --config with a weight missing for some tensor" "$out"

# ---- (d) plan --config: 3 parts give the one-machine bytes ------------------------------------
split_recipe() { # RECIPE OUT K
    local out=$2 k=$3 i r rounds
    "$P" plan --config "$1" --out "$out" --parts "$k" --quiet || return 1
    rounds=$("$P" status --plan "$out" --get rounds_max) || return 1
    for ((r = 0; r <= rounds; r++)); do
        "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
        for ((i = 0; i < k; i++)); do "$P" stats --plan "$out" --part "$i" --quiet || return 1; done
        "$P" reduce --plan "$out" --quiet || return 1
    done
    for ((i = k - 1; i >= 0; i--)); do "$P" apply --plan "$out" --part "$i" --quiet || return 1; done
    "$P" finalize --plan "$out" --quiet
}
for rc in ta-grad linear-grad pcb; do
    one=$TMP/$( [ $rc = ta-grad ] && echo ta-gradient-filter-fallthrough ||
                { [ $rc = linear-grad ] && echo linear-gradient-filter || echo pcb; } ).ours
    if ! split_recipe "$R/$rc.yml" "$TMP/split-$rc" 3 >"$TMP/split-$rc.log" 2>&1; then
        case_fail "split-3-$rc" "$(tail -n 3 "$TMP/split-$rc.log" | tr '\n' ' ')"
    elif why=$(same_outputs "$one" "$TMP/split-$rc" README.md); then
        case_pass "split-3-$rc" "plan --config in 3 parts = merge --config"
    else
        case_fail "split-3-$rc" "$why"
        diff_tensors "$one" "$TMP/split-$rc"
    fi
done
grep -q "## Recipe" "$TMP/ta-gradient-filter-fallthrough.ours/README.md" &&
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if "lambda: [0.5, 1.5]" in r["recipe_yaml"] else 1)' \
        "$TMP/ta-gradient-filter-fallthrough.ours/merge_report.json" &&
    case_pass "report and card record the recipe" || case_fail "report and card record the recipe"

# resume: a recipe merge killed mid-apply resumes to the same bytes; another recipe is refused
rm -rf "$TMP/res" "$TMP/res.partial"
{ PCBM_TEST_KILL=apply:3 "$P" merge --config "$R/ta-grad.yml" --out "$TMP/res" --threads 1 \
    --block-size 64K --quiet; } 2>/dev/null
out=$("$P" merge --config "$R/ta-grad-other.yml" --out "$TMP/res" --resume --quiet 2>&1)
if [ $? -ne 0 ] && grep -q "the parameters changed" <<<"$out"; then
    case_pass "resume with another recipe is refused"
else
    case_fail "resume with another recipe is refused" "$out"
fi
if "$P" merge --config "$R/ta-grad.yml" --out "$TMP/res" --resume --quiet >"$TMP/res.log" 2>&1 &&
    why=$(same_outputs "$TMP/ta-gradient-filter-fallthrough.ours" "$TMP/res" README.md); then
    case_pass "killed recipe merge resumed" "the uninterrupted merge's bytes"
else
    case_fail "killed recipe merge resumed" "${why:-$(tail -n 2 "$TMP/res.log" | tr '\n' ' ')}"
fi

# ---- (e) memory and determinism on a family 8x --mem --------------------------------------------
if ! rss_measurable; then
    echo "skip memory cases: AddressSanitizer build or no peak-rss"
else
    G=$TMP/big
    big_family "$G"
    cat >"$R/big.yml" <<EOF
merge_method: task_arithmetic
base_model: $G/base
models:
  - model: $G/task1
    parameters:
      weight: [0.2, 1.0, 0.4]
  - model: $G/task2
    parameters:
      weight:
        - filter: mlp
          value: [1.0, 0.1]
        - value: 0.5
  - model: $G/task3
    parameters: {weight: 0.3}
parameters:
  lambda: [0.8, 1.2]
EOF
    limit=$((112 << 20))
    "$PCBM_TOOLS/peak-rss" --limit "$limit" --output "$TMP/big.rss" -- "$P" merge --quiet \
        --config "$R/big.yml" --out "$TMP/big-64M" --mem 64M --threads 2 >"$TMP/big.log" 2>&1
    rc=$?
    peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/big.rss" 2>/dev/null)
    if [ $rc -eq 0 ]; then
        case_pass "gradient recipe at --mem 64M" "$((in_bytes >> 20)) MiB of inputs, peak RSS $((${peak:-0} >> 20)) MiB <= 112 MiB"
    else
        case_fail "gradient recipe at --mem 64M" "exit $rc, peak RSS $((${peak:-0} >> 20)) MiB: $(tail -n 2 "$TMP/big.log" | tr '\n' ' ')"
    fi
    for v in "--threads 1 --io pread" "--threads 2 --io uring --mem 256M"; do
        o=$TMP/big-$(echo "$v" | tr -dc 'a-z0-9')
        "$P" merge --quiet --config "$R/big.yml" --out "$o" $v >"$TMP/big2.log" 2>&1 ||
            { case_fail "same bytes: $v" "$(tail -n 2 "$TMP/big2.log" | tr '\n' ' ')"; continue; }
        if why=$(same_outputs "$TMP/big-64M" "$o" README.md); then
            case_pass "same bytes: $v" "as --mem 64M --threads 2"
        else
            case_fail "same bytes: $v" "$why"
        fi
        rm -rf "$o"
    done
fi

finish

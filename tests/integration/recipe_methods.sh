#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# recipe_methods.sh — every mergekit method pcbmerge has, through a recipe (`merge --config`), on a
# generated 6-layer F32 family, against the NumPy driver tests/reference/mergekit_ref.py (written
# from mergekit's source; it dispatches to mk_basic.py, mk_gta.py, mk_geo.py):
#   reference    linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
#                breadcrumbs_ties, della, della_linear, slerp, nuslerp (with and without
#                base_model; nuslerp_flatten false per row or column), model_stock (filter_wise on
#                every tensor or a filter's), sce (and the base listed between the models), each with
#                per-model gradients and filters of the parameters the method has (weight,
#                density, gamma, epsilon; t for slerp, select_topk for sce, lambda, normalize):
#                at most 1e-5 of the elements differ; the random masks are the same by
#                construction (the same counter-based generator, keyed by seed, task, tensor name).
#   determinism  each recipe: --threads 1 --io pread vs --threads 2 --io uring --block-size 64K:
#                the same bytes.
#   split        dare_ties (random), sce (statistics), nuslerp without base_model, nuslerp per
#                column and model_stock filter-wise on some tensors (per-row statistics
#                recomputed by the parts' apply) through `plan --config` in K=3 parts: the bytes
#                of the one-machine merge.
#   scope        pcbmerge's own `scope: global` in a ties recipe: the command line's
#                --mergekit --scope global tensors.
#   edge cases   a parameter the method does not have, slerp without t (or a t filter without
#                fallback), nuslerp with 3 models or the base among them, model_stock with 1
#                model, della with density ± epsilon outside (0, 1) for some tensor of a
#                gradient, a filtered weight that leaves a tensor without one: exit 2, naming
#                what is wrong and where; `scope` with a gradient, per model, under slerp, and
#                with a density gradient in global scope.
. "$(dirname "$0")/lib.sh"
need_ref
"$PY" -c 'import yaml' 2>/dev/null || skip "PyYAML is missing for $PY (apt-get install python3-yaml)"

P=$PCBM_BIN
MKREF=$PCBM_ROOT/tests/reference/mergekit_ref.py
F=$TMP/fam
R=$TMP/recipes
mkdir -p "$R"
gen "$F" --dtype f32 --layers 6 --tasks 3 --seed 13

# ref_recipe NAME RECIPE [pcbmerge options...]: ours and the reference on RECIPE, compared.
ref_recipe() {
    local name=$1 recipe=$2 log=$TMP/$1.log seed=0 t0=$SECONDS a prev=
    shift 2
    for a in "$@"; do [ "$prev" = --seed ] && seed=$a; prev=$a; done
    rm -rf "$TMP/$name.ours" "$TMP/$name.ref"
    if ! "$P" merge --config "$recipe" --out "$TMP/$name.ours" --quiet "$@" >"$log" 2>&1; then
        case_fail "$name" "pcbmerge failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return 1
    fi
    if ! "$PY" "$MKREF" --config "$recipe" --out "$TMP/$name.ref" --seed "$seed" >"$log" 2>&1; then
        case_fail "$name" "the reference failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return 1
    fi
    if "$PY" "$CMP_PY" "$TMP/$name.ours" "$TMP/$name.ref" --max-mismatch 1e-5 >"$log" 2>&1; then
        case_pass "$name" "($((SECONDS - t0))s) $(grep -E '^float elements' "$log")"
    else
        case_fail "$name" "$(grep -E '^(float|FAIL)' "$log" | tail -n 4 | tr '\n' ' ')"
        return 1
    fi
}

# same_bytes NAME RECIPE: the reference run's output again with other threads/io/block size
same_bytes() {
    local name=$1 o=$TMP/$1.det
    rm -rf "$o"
    if ! "$P" merge --config "$2" --out "$o" --quiet --threads 2 --io uring --block-size 64K \
        --mem 256M "${@:3}" >"$TMP/$name.det.log" 2>&1; then
        case_fail "$name same bytes" "$(tail -n 2 "$TMP/$name.det.log" | tr '\n' ' ')"
    elif why=$(same_outputs "$TMP/$name.ours" "$o" README.md); then
        case_pass "$name same bytes" "--threads 1 --io pread = --threads 2 --io uring --block-size 64K"
    else
        case_fail "$name same bytes" "$why"
    fi
    rm -rf "$o"
}

# method_case NAME RECIPE_BODY [--seed S]: the recipe with the family's models, compared with the
# reference; then the determinism variant.
method_case() {
    local name=$1
    printf '%s\n' "$2" >"$R/$name.yml"
    shift 2
    ref_recipe "$name" "$R/$name.yml" --threads 1 --io pread "$@" &&
        same_bytes "$name" "$R/$name.yml" "$@"
}

B=$F/base T1=$F/task1 T2=$F/task2 T3=$F/task3

# per-model weight and density: gradients over the layers, filters with and without fallback
gta_models() { # DENSITY_EXTRA_1 DENSITY_EXTRA_2 (extra per-model lines, e.g. gamma)
    cat <<EOF
base_model: $B
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.3, 0.8]
      density: [0.9, 0.4, 0.7]
${1:-}
  - model: $T2
    parameters:
      weight:
        - filter: self_attn
          value: [0.2, 0.9]
        - filter: mlp
          value: 0.6
        - value: 0.4
      density:
        - filter: mlp
          value: [0.3, 0.8]
        - value: 0.5
${2:-}
  - model: $T3
    parameters:
      weight: -0.4
      density: 0.6
EOF
}

method_case linear "merge_method: linear
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.2, 0.7]
  - model: $T2
    parameters:
      weight:
        - filter: self_attn
          value: [0.1, 0.9]
        - filter: mlp
          value: 0.4
        - value: 0.25
  - model: $T3
    parameters:
      weight: 0.5
dtype: float32"

method_case task_arithmetic "merge_method: task_arithmetic
$(gta_models)
parameters:
  lambda: [0.5, 1.5]
  normalize: true"

method_case ties "merge_method: ties
$(gta_models)
parameters:
  lambda: 0.9"

method_case dare_ties "merge_method: dare_ties
$(gta_models)
parameters:
  lambda: [1.2, 0.8]" --seed 7

method_case dare_linear "merge_method: dare_linear
$(gta_models)
parameters:
  normalize: true" --seed 11

# the base listed between the models: no task vector (the masks keyed by the task's index
# without it, as the reference's)
method_case dare_linear-base-listed "merge_method: dare_linear
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0, density: [0.4, 0.9]}
  - model: $B
  - model: $T3
    parameters: {weight: 0.5, density: 0.3}" --seed 4

GAMMA1="      gamma: [0.02, 0.1, 0.05]"
GAMMA2="      gamma:
        - filter: self_attn
          value: [0.0, 0.2]
        - value: 0.03"
method_case breadcrumbs "merge_method: breadcrumbs
$(gta_models "$GAMMA1" "$GAMMA2")
parameters:
  gamma: 0.04"

method_case breadcrumbs_ties "merge_method: breadcrumbs_ties
$(gta_models "$GAMMA1" "$GAMMA2")
parameters:
  rescale: true"

EPS1="      epsilon: [0.05, 0.2, 0.1]"
EPS2="      epsilon:
        - filter: mlp
          value: [0.1, 0.15]
        - value: 0.25"
DELLA_MODELS="base_model: $B
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.3, 0.8]
      density: [0.6, 0.4, 0.7]
$EPS1
  - model: $T2
    parameters:
      weight:
        - filter: self_attn
          value: [0.2, 0.9]
        - value: 0.4
      density:
        - filter: mlp
          value: [0.3, 0.8]
        - value: 0.5
$EPS2
  - model: $T3
    parameters:
      weight: 0.7
      density: 0.6"
method_case della "merge_method: della
$DELLA_MODELS
parameters:
  epsilon: 0.08
  lambda: 1.1" --seed 3

method_case della_linear "merge_method: della_linear
$DELLA_MODELS" --seed 5

method_case slerp "merge_method: slerp
base_model: $B
models:
  - model: $B
  - model: $T1
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32"

method_case nuslerp "merge_method: nuslerp
base_model: $B
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.2, 0.6]
  - model: $T2
    parameters:
      weight:
        - filter: mlp
          value: [0.3, 1.0]
        - value: 0.5"

# mergekit's nuslerp without base_model: the two models themselves at t = w_1/(w_0 + w_1)
method_case nuslerp-no-base "merge_method: nuslerp
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.2, 0.6]
  - model: $T2
    parameters:
      weight:
        - filter: self_attn
          value: 0.3
        - value: [0.5, 1.5]
dtype: float32"

method_case model_stock "merge_method: model_stock
base_model: $B
models:
  - model: $T1
  - model: $T2
  - model: $T3"

# the per-row forms: nuslerp_flatten false (per row; per column with nuslerp_row_wise) and
# model_stock's filter_wise, some of them only on the tensors a filter names
method_case nuslerp-rows "merge_method: nuslerp
base_model: $B
parameters:
  nuslerp_flatten: false
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.2, 0.6]
  - model: $T2
    parameters:
      weight:
        - filter: mlp
          value: [0.3, 1.0]
        - value: 0.5"

method_case nuslerp-cols "merge_method: nuslerp
base_model: $B
parameters:
  nuslerp_flatten:
    - filter: self_attn
      value: true
    - value: false
  nuslerp_row_wise: true
models:
  - model: $T1
    parameters:
      weight:
        - filter: mlp
          value: [0.2, 0.9]
        - value: 0.7
  - model: $T2
    parameters:
      weight: [0.4, 1.0, 0.1]"

method_case nuslerp-rows-no-base "merge_method: nuslerp
parameters:
  nuslerp_flatten: false
models:
  - model: $T1
    parameters:
      weight: [1.0, 0.2, 0.6]
  - model: $T2
    parameters:
      weight:
        - filter: self_attn
          value: 0.3
        - value: [0.5, 1.5]
dtype: float32"

method_case model_stock-filter-wise "merge_method: model_stock
base_model: $B
parameters:
  filter_wise: true
models:
  - model: $T1
  - model: $T2
  - model: $T3"

method_case model_stock-filter-mlp "merge_method: model_stock
base_model: $B
parameters:
  filter_wise:
    - filter: mlp
      value: true
    - value: false
models:
  - model: $T1
  - model: $T2"

method_case sce "merge_method: sce
base_model: $B
models:
  - model: $T1
  - model: $T2
  - model: $T3
parameters:
  select_topk:
    - filter: self_attn
      value: [0.1, 0.9, 0.5]
    - filter: mlp
      value: 0.3
    - value: 1.0"

# ---- pcbmerge's own `scope: global` for mergekit's sparsifiers: the recipe gives the tensors of
# the command line's --mergekit --scope global with the same per-model weights and densities
# (ref_mergekit_gta_global.sh checks that merge against its reference) -------------------------
printf '%s\n' "merge_method: ties
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0, density: 0.7}
  - model: $T2
    parameters: {weight: 0.6, density: 0.5}
parameters:
  scope: global
dtype: float32" >"$R/ties-global.yml"
rm -rf "$TMP/ties-global.cfg" "$TMP/ties-global.cli"
if ! "$P" merge --config "$R/ties-global.yml" --out "$TMP/ties-global.cfg" --quiet \
    >"$TMP/ties-global.log" 2>&1; then
    case_fail "recipe scope global" "$(tail -n 3 "$TMP/ties-global.log" | tr '\n' ' ')"
elif ! "$P" merge --mergekit --method ties --scope global --weights 1.0,0.6 --densities 0.7,0.5 \
    --dtype f32 --base "$B" --out "$TMP/ties-global.cli" --quiet "$T1" "$T2" \
    >>"$TMP/ties-global.log" 2>&1; then
    case_fail "recipe scope global" "$(tail -n 3 "$TMP/ties-global.log" | tr '\n' ' ')"
elif ! grep -q '"scope": *"global"' "$TMP/ties-global.cfg/merge_report.json"; then
    case_fail "recipe scope global" "merge_report.json does not say scope global"
elif "$PY" "$CMP_PY" "$TMP/ties-global.cfg" "$TMP/ties-global.cli" --max-mismatch 0 \
    >>"$TMP/ties-global.log" 2>&1; then
    case_pass "recipe scope global" "ties with scope: global = --mergekit --scope global"
else
    case_fail "recipe scope global" "$(grep -E '^(float|FAIL)' "$TMP/ties-global.log" | tail -n 3 | tr '\n' ' ')"
fi

# ---- split: plan --config in 3 parts gives the one-machine bytes ------------------------------
split_recipe() { # RECIPE OUT K [options]
    local out=$2 k=$3 i r rounds
    "$P" plan --config "$1" --out "$out" --parts "$k" --quiet "${@:4}" || return 1
    rounds=$("$P" status --plan "$out" --get rounds_max) || return 1
    for ((r = 0; r <= rounds; r++)); do
        "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
        for ((i = 0; i < k; i++)); do "$P" stats --plan "$out" --part "$i" --quiet || return 1; done
        "$P" reduce --plan "$out" --quiet || return 1
    done
    for ((i = k - 1; i >= 0; i--)); do "$P" apply --plan "$out" --part "$i" --quiet || return 1; done
    "$P" finalize --plan "$out" --quiet
}
for sc in "dare_ties --seed 7" sce nuslerp-no-base nuslerp-cols model_stock-filter-mlp; do
    m=${sc%% *}
    opts=()
    [ "$m" != "$sc" ] && read -ra opts <<<"${sc#* }"
    rm -rf "$TMP/split-$m"
    if [ ! -d "$TMP/$m.ours" ]; then
        case_fail "split-3-$m" "no one-machine merge to compare with"
    elif ! split_recipe "$R/$m.yml" "$TMP/split-$m" 3 "${opts[@]}" >"$TMP/split-$m.log" 2>&1; then
        case_fail "split-3-$m" "$(tail -n 3 "$TMP/split-$m.log" | tr '\n' ' ')"
    elif why=$(same_outputs "$TMP/$m.ours" "$TMP/split-$m" README.md); then
        case_pass "split-3-$m" "plan --config in 3 parts = merge --config"
    else
        case_fail "split-3-$m" "$why"
        diff_tensors "$TMP/$m.ours" "$TMP/split-$m"
    fi
done

# ---- edge cases: refusals ---------------------------------------------------------------------
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
        case_pass "refuse $name" "$(head -n 1 <<<"$out")"
    fi
}
refuse gamma-under-ties "line 7: .*unknown parameter 'gamma' for merge_method ties" \
    "merge_method: ties
base_model: $B
models:
  - model: $T1
    parameters:
      weight: 1.0
      gamma: 0.1"
refuse epsilon-global-under-dare "line 6: .*unknown parameter 'epsilon' for merge_method dare_linear" \
    "merge_method: dare_linear
base_model: $B
models:
  - model: $T1
parameters:
  epsilon: 0.1
  weight: 1.0"
refuse slerp-without-t "slerp requires the parameter t, as mergekit does" "merge_method: slerp
base_model: $B
models:
  - model: $B
  - model: $T1"
refuse slerp-t-filter-no-fallback "the parameter t is missing for tensor [^ ]+ \(slerp requires it" \
    "merge_method: slerp
base_model: $B
models:
  - model: $B
  - model: $T1
parameters:
  t:
    - filter: self_attn
      value: [0, 1]"
refuse nuslerp-3-models "nuslerp.*(two|2) " "merge_method: nuslerp
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0}
  - model: $T2
    parameters: {weight: 1.0}
  - model: $T3
    parameters: {weight: 1.0}"
refuse nuslerp-base-listed "nuslerp merges exactly two models, plus an optional base_model that is not one of them" \
    "merge_method: nuslerp
base_model: $B
models:
  - model: $B
    parameters: {weight: 1.0}
  - model: $T1
    parameters: {weight: 1.0}"
refuse model_stock-1-model "model_stock.*(two|2)" "merge_method: model_stock
base_model: $B
models:
  - model: $T1"
refuse della-epsilon-gradient "tensor model\.layers\.[0-9]+\..*density .* epsilon .*\(0, 1\)" \
    "merge_method: della
base_model: $B
models:
  - model: $T1
    parameters:
      weight: 1.0
      density: [0.5, 0.9]
      epsilon: 0.15"
refuse breadcrumbs-gamma-gradient "breadcrumbs: task 1 \\(.*\\) on tensor model\\.layers\\.[0-9]+\\..* has gamma 1\\.[0-9]*: gamma must lie in \\[0, 1\\)" \
    "merge_method: breadcrumbs
base_model: $B
models:
  - model: $T1
    parameters:
      weight: 1.0
      density: 0.5
      gamma: [0.01, 1.5]"
refuse scope-gradient "line 8: .*scope is global or tensor for the whole merge: it takes no gradient" \
    "merge_method: ties
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0, density: 0.5}
parameters:
  scope:
    - filter: mlp
      value: global
    - value: tensor"
refuse scope-per-model "line 6: .*scope is a parameter of the whole merge" "merge_method: della
base_model: $B
models:
  - model: $T1
    parameters:
      scope: global
      weight: 1.0
      density: 0.5"
refuse scope-under-slerp "unknown parameter 'scope' for merge_method slerp" "merge_method: slerp
base_model: $B
models:
  - model: $B
  - model: $T1
parameters:
  t: 0.5
  scope: global"
refuse scope-global-gradient-density "ties with global scope .*density cannot be a gradient" \
    "merge_method: ties
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0, density: [0.3, 0.7]}
parameters:
  scope: global"
refuse weight-filter-no-fallback "model $T2: the parameter weight is missing for tensor [^ ]+" \
    "merge_method: ties
base_model: $B
models:
  - model: $T1
    parameters: {weight: 1.0, density: 0.5}
  - model: $T2
    parameters:
      density: 0.5
      weight:
        - filter: self_attn
          value: 0.7
        - filter: mlp
          value: [0.1, 0.9]"

finish

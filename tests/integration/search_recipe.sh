#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# search_recipe.sh — `pcbmerge search --config RECIPE`: the coefficients multiply each model's
# weight (every gradient point and filter entry; the slice's and the recipe's weights become the
# model's own; pcb: λ_i = lambda · weight_i). Checked with a deterministic score (a checksum of the
# candidate's weights): (a) a ties recipe with gradients, filters and a whole-merge weight: every
# candidate's bytes equal `pcbmerge merge --config` of the recipe scaled by an independent Python
# scaler (so the weight-dependent TIES statistics are not reused), the final model equals the
# merge of OUT/search_recipe.yml and mergekit_ref.py's on the scaled recipe (≤ 1e-5 of elements
# differ); the log and summary carry the recipe's XXH3 (checked against pcb_ref.py's xxh3_64);
# (b) a search stopped by a failed evaluation resumes into the uninterrupted search's log, best
# and bytes, running only the rest; a resume with a changed recipe is refused naming it;
# (c) pcb: statistics computed once, the result equals the merge of search_recipe.yml and
# pcb_ref.py with λ_i = lambda · w_i · c_i; (d) refusals: slerp, model_stock and sce (exit 2
# naming the method), options the recipe sets, --stats with ties, task operands; (e) the same
# search with other --threads/--io/--mem/--block-size: the same log and bytes; (f) a ties search
# over a family 8x --mem 64M: peak RSS <= 112 MiB (skipped under ASan).
. "$(dirname "$0")/lib.sh"
need_ref
"$PY" -c 'import yaml' 2>/dev/null || skip "PyYAML is missing for $PY"

P=$PCBM_BIN
REFDIR=$PCBM_ROOT/tests/reference
F=$TMP/fam
gen "$F" --dtype f32 --layers 4 --tasks 3 --seed 11
R=$TMP/recipes
mkdir -p "$R"

# A deterministic score; every evaluation appends "N CKSUM" to $TMP/evals; a file
# $TMP/failat<N> makes evaluation N fail.
# The checksum is of the tensor data (after the header, whose metadata records the recipe's form).
datasum() { # FILE: cksum of the bytes after the safetensors header
    local n
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    tail -c +$((n + 9)) "$1" | cksum | cut -d" " -f1
}
SCORE='n=$PCBM_SEARCH_EVALUATION; f={model}/model.safetensors; h=$(od -An -tu8 -N8 $f | tr -d " "); s=$(tail -c +$((h + 9)) $f | cksum | cut -d" " -f1); echo "$n $s" >> '"$TMP"'/evals; [ -e '"$TMP"'/failat$n ] && exit 1; echo $((s % 100000))'
search() { # RECIPE OUT [options...]
    local r=$1 out=$2
    shift 2
    "$P" search --quiet --budget 9 --popsize 4 --seed 2 --config "$r" --out "$out" \
        --eval-cmd "$SCORE" "$@"
}

cat >"$R/ties.yml" <<EOF
merge_method: ties
base_model: $F/base
models:
  - model: $F/base
  - model: $F/task1
    parameters:
      weight: [0.2, 0.9]
      density: 0.5
  - model: $F/task2
    parameters:
      weight:
        - filter: mlp
          value: [0.4, 0.1]
        - filter: self_attn
          value: 0.3
      density: 0.7
  - model: $F/task3
    parameters:
      density: 0.6
parameters:
  weight: 0.5
  normalize: true
dtype: float32
EOF

# scale.py SRC DST C_JSON: the recipe with each task model's weight times c_i, written from
# mergekit's lookup order (the model's setting, the slice's, the recipe's) independently of the C.
cat >"$TMP/scale.py" <<'PYEOF'
import json, sys, yaml
src, dst, c = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = yaml.safe_load(open(src))
method, base = cfg["merge_method"], cfg.get("base_model")
if cfg.get("models"):
    models, sparams = cfg["models"], {}
else:
    sl = cfg["slices"][0]
    models, sparams = sl["sources"], sl.get("parameters") or {}
gparams = cfg.get("parameters") or {}
def entries(v):
    if v is None:
        return []
    if isinstance(v, dict):
        return [v]
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return list(v)
    return [{"value": v}]
def scaled(v, k):
    return [float(x) * k for x in v] if isinstance(v, list) else float(v) * k
i = 0
for m in models:
    if base and m["model"] == base and method != "linear":
        continue
    p = m.get("parameters") or {}
    chain = entries(p.get("weight")) + entries(sparams.get("weight")) + entries(gparams.get("weight"))
    chain = chain or [{"value": 1.0}]
    new = [dict(e, value=scaled(e["value"], c[i])) for e in chain]
    p["weight"] = new[0]["value"] if len(new) == 1 and "filter" not in new[0] else new
    m["parameters"] = p
    i += 1
sparams.pop("weight", None)
gparams.pop("weight", None)
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
PYEOF
lambdas_of() { # OUT N: evaluation N's λ as JSON
    "$PY" -c 'import json, sys
for e in map(json.loads, open(sys.argv[1] + "/search_log.jsonl")):
    if e["evaluation"] == int(sys.argv[2]): print(json.dumps(e["lambdas"]))' "$1" "$2"
}
best_of() { "$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1] + "/search_summary.json"))["best"]["lambdas"]))' "$1"; }

# ---- (a) ties -------------------------------------------------------------------------------
rm -f "$TMP/evals"
if search "$R/ties.yml" "$TMP/t" >"$TMP/t.log" 2>&1; then
    case_pass "search --config ties" "$(wc -l <"$TMP/t/search_log.jsonl") evaluations"
else
    case_fail "search --config ties" "$(tail -n 4 "$TMP/t.log" | tr '\n' ' ')"
fi
cp "$TMP/evals" "$TMP/t.evals"

# the log and the summary: the recipe's hash on every line and in the summary, search_recipe.yml
if "$PY" - "$REFDIR" "$R/ties.yml" "$TMP/t" <<'PYEOF' >"$TMP/t.chk" 2>&1; then
import json, sys
sys.path.insert(0, sys.argv[1])
from pcb_ref import xxh3_64
h = "%016x" % xxh3_64(open(sys.argv[2], "rb").read())
log = [json.loads(l) for l in open(sys.argv[3] + "/search_log.jsonl")]
s = json.load(open(sys.argv[3] + "/search_summary.json"))
assert len(log) == 9, len(log)
assert all(e["recipe"] == h for e in log), "log hash"
assert s["recipe"]["xxh3"] == h and s["recipe"]["best"] == "search_recipe.yml", s["recipe"]
assert s["method"] == "ties" and len(s["tasks"]) == 3, s
assert s["statistics"].startswith("not reused"), s["statistics"]
assert s["best"]["evaluation"] != 1, "the best is the init: the test would not see a wrong reuse"
head = open(sys.argv[3] + "/search_recipe.yml").readline()
assert head.startswith("# pcbmerge search:"), head
print("hash", h, "best evaluation", s["best"]["evaluation"])
PYEOF
    case_pass "log and summary record the recipe" "$(cat "$TMP/t.chk")"
else
    case_fail "log and summary record the recipe" "$(tail -n 3 "$TMP/t.chk" | tr '\n' ' ')"
fi

# OUT/search_recipe.yml merges into the same weights
if "$P" merge --config "$TMP/t/search_recipe.yml" --out "$TMP/t.re" --quiet >"$TMP/t.re.log" 2>&1 &&
    cmp -s "$TMP/t/model.safetensors" "$TMP/t.re/model.safetensors"; then
    case_pass "merge --config OUT/search_recipe.yml: the search's bytes"
else
    case_fail "reproduce the search's model" "$(tail -n 2 "$TMP/t.re.log"; diff_tensors "$TMP/t" "$TMP/t.re")"
fi

# every candidate: the merge of the recipe scaled in Python, byte for byte (the statistics that
# depend on the weights are recomputed for each)
bad=""
for n in 1 2 5 9; do
    c=$(lambdas_of "$TMP/t" $n)
    "$PY" "$TMP/scale.py" "$R/ties.yml" "$R/ties.$n.yml" "$c" &&
        "$P" merge --config "$R/ties.$n.yml" --out "$TMP/t.$n" --quiet >/dev/null 2>&1 ||
        { bad="$bad $n(merge)"; continue; }
    want=$(datasum "$TMP/t.$n/model.safetensors")
    got=$(awk -v n=$n '$1 == n { print $2 }' "$TMP/t.evals")
    [ "$want" = "$got" ] || bad="$bad $n"
done
[ -z "$bad" ] && case_pass "candidates 1, 2, 5, 9: the tensors of the scaled recipes' merges" ||
    case_fail "candidates = scaled recipes" "differ:$bad"

# the best c against mergekit's semantics (NumPy reference on the recipe scaled in Python)
"$PY" "$TMP/scale.py" "$R/ties.yml" "$R/ties.best.yml" "$(best_of "$TMP/t")"
if "$PY" "$REFDIR/mergekit_ref.py" --config "$R/ties.best.yml" --out "$TMP/t.ref" >"$TMP/t.ref.log" 2>&1 &&
    "$PY" "$CMP_PY" "$TMP/t" "$TMP/t.ref" --max-mismatch 1e-5 >>"$TMP/t.ref.log" 2>&1; then
    case_pass "the search's model = mergekit_ref.py on the scaled recipe" "$(grep -E '^float elements' "$TMP/t.ref.log")"
else
    case_fail "mergekit reference" "$(tail -n 4 "$TMP/t.ref.log" | tr '\n' ' ')"
fi

# ---- (b) resume ---------------------------------------------------------------------------------
rm -f "$TMP/evals"
touch "$TMP/failat5"
search "$R/ties.yml" "$TMP/r" >"$TMP/r.log" 2>&1
rc=$?
logged=$(wc -l <"$TMP/r.search/search_log.jsonl" 2>/dev/null || echo 0)
rm -f "$TMP/failat5" "$TMP/evals"
if [ $rc -ne 0 ] && [ "$logged" = 5 ] && search "$R/ties.yml" "$TMP/r" --resume >>"$TMP/r.log" 2>&1 &&
    [ "$(wc -l <"$TMP/evals")" = 5 ] &&
    "$PY" - "$TMP/t" "$TMP/r" <<'PYEOF' && same_outputs "$TMP/t" "$TMP/r" search_log.jsonl search_summary.json >>"$TMP/r.log"; then
import json, sys
def log(d):
    return [(e["evaluation"], e["generation"], e["lambdas"], e["score"], e["recipe"])
            for e in map(json.loads, open(d + "/search_log.jsonl"))]
def best(d):
    return json.load(open(d + "/search_summary.json"))["best"]
sys.exit(0 if log(sys.argv[1]) == log(sys.argv[2]) and best(sys.argv[1]) == best(sys.argv[2]) else 1)
PYEOF
    case_pass "--resume after a failed evaluation" "4 scored and 1 failed logged, 5 run again; the uninterrupted search's log, best and files"
else
    case_fail "resume" "exit $rc, $logged logged: $(tail -n 3 "$TMP/r.log" | tr '\n' ' ')"
fi

touch "$TMP/failat3"
search "$R/ties.yml" "$TMP/c" >/dev/null 2>&1
rm -f "$TMP/failat3"
sed 's/value: 0.3/value: 0.35/' "$R/ties.yml" >"$R/ties2.yml"
out=$(search "$R/ties2.yml" "$TMP/c" --resume 2>&1)
rc=$?
[ $rc -ne 0 ] && grep -q "parameters differ (recipe)" <<<"$out" &&
    case_pass "--resume with a changed recipe is refused naming it" ||
    case_fail "changed recipe" "exit $rc: $out"

# ---- (c) pcb --------------------------------------------------------------------------------------
cat >"$R/pcb.yml" <<EOF
merge_method: pcb
base_model: $F/base
models:
  - model: $F/task1
  - model: $F/task2
    parameters:
      weight: 0.5
  - model: $F/task3
parameters:
  density: 0.3
  lambda: 0.8
  clamp_ratio: 0.001
dtype: float32
EOF
rm -f "$TMP/evals"
if "$P" search --budget 6 --popsize 4 --seed 3 --config "$R/pcb.yml" --out "$TMP/p" \
    --eval-cmd "$SCORE" >"$TMP/p.log" 2>&1 &&
    [ "$(grep -c "statistics pass (once)" "$TMP/p.log")" = 1 ] &&
    grep -q '"statistics": "computed once' "$TMP/p/search_summary.json" &&
    "$P" merge --config "$TMP/p/search_recipe.yml" --out "$TMP/p.re" --quiet >>"$TMP/p.log" 2>&1 &&
    cmp -s "$TMP/p/model.safetensors" "$TMP/p.re/model.safetensors"; then
    case_pass "pcb recipe: statistics once, search_recipe.yml gives the same bytes"
else
    case_fail "pcb recipe" "$(tail -n 4 "$TMP/p.log" | tr '\n' ' ')"
fi
lams=$("$PY" -c 'import json, sys
c = json.load(open(sys.argv[1] + "/search_summary.json"))["best"]["lambdas"]
w = [1.0, 0.5, 1.0]
print(" ".join("--lambdas %r" % (0.8 * w[i] * c[i]) for i in range(3)))' "$TMP/p")
# within the bound of the PCB suites (compare.py's default, cancellation-aware: exp/tanh may
# differ by an ulp between implementations), as recipe.sh's pcb case
# shellcheck disable=SC2086
if "$PY" "$REF_PY" merge --base "$F/base" --out "$TMP/p.ref" --method pcb --density 0.3 \
    --clamp-ratio 0.001 --scope tensor --dtype f32 $lams $(task_dirs "$F" 3) >"$TMP/p.ref.log" 2>&1 &&
    "$PY" "$CMP_PY" "$TMP/p" "$TMP/p.ref" --base "$F/base" >>"$TMP/p.ref.log" 2>&1; then
    case_pass "pcb: the search's model = pcb_ref.py with λ_i = lambda·w_i·c_i" "$(grep -E '^float elements' "$TMP/p.ref.log")"
else
    case_fail "pcb reference" "$(tail -n 4 "$TMP/p.ref.log" | tr '\n' ' ')"
fi

# ---- (e) run-time settings: the same search -------------------------------------------------------
rm -f "$TMP/evals"
if search "$R/ties.yml" "$TMP/d" --threads 1 --io pread --mem 64M --block-size 64K >"$TMP/d.log" 2>&1 &&
    "$PY" - "$TMP/t" "$TMP/d" <<'PYEOF' && cmp -s "$TMP/t/model.safetensors" "$TMP/d/model.safetensors"; then
import json, sys
def log(d):
    return [(e["evaluation"], e["lambdas"], e["score"]) for e in map(json.loads, open(d + "/search_log.jsonl"))]
sys.exit(0 if log(sys.argv[1]) == log(sys.argv[2]) else 1)
PYEOF
    case_pass "--threads 1 --io pread --mem 64M --block-size 64K: the same log and bytes"
else
    case_fail "run-time settings" "$(tail -n 3 "$TMP/d.log" | tr '\n' ' ')"
fi

# ---- (d) refusals -------------------------------------------------------------------------------
refuse() { # NAME PATTERN RECIPE-TEXT|- [options...]
    local name=$1 pat=$2 text=$3 out rc
    shift 3
    [ "$text" = - ] || printf '%s\n' "$text" >"$R/$name.yml"
    out=$("$P" search --config "$R/$name.yml" --out "$TMP/x.$name" --eval-cmd "$SCORE" "$@" 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -Eq -- "$pat" <<<"$out" && [ ! -e "$TMP/x.$name" ]; then
        case_pass "refuse $name"
    else
        case_fail "refuse $name" "exit $rc: $out"
    fi
}
refuse slerp "merge_method slerp cannot be searched.*interpolates two models with t" "merge_method: slerp
base_model: $F/base
models:
  - model: $F/task1
parameters:
  t: 0.4"
refuse model_stock "merge_method model_stock cannot be searched" "merge_method: model_stock
base_model: $F/base
models:
  - model: $F/task1
  - model: $F/task2"
refuse sce "merge_method sce cannot be searched" "merge_method: sce
base_model: $F/base
models:
  - model: $F/task1
  - model: $F/task2"
cp "$R/ties.yml" "$R/opt.yml"
refuse opt "--density, --clamp-ratio change the merge that the recipe" - --density 0.3 --clamp-ratio 0.01
cp "$R/ties.yml" "$R/base.yml"
refuse base "--base changes the merge" - --base "$F/base"
cp "$R/ties.yml" "$R/stats.yml"
refuse stats "--stats applies to pcb; over a recipe, the other methods. statistics are computed for every candidate" - \
    --stats "$TMP/t/merge_stats.json.zst"
cp "$R/ties.yml" "$R/operands.yml"
refuse operands "--config takes the models from the recipe" - "$F/task1"

# ---- (f) memory: a search over a family 8x --mem ------------------------------------------------
if ! rss_measurable; then
    echo "skip the memory case: AddressSanitizer build or no peak-rss"
else
    G=$TMP/big
    big_family "$G"
    cat >"$R/big.yml" <<EOF
merge_method: ties
base_model: $G/base
models:
  - model: $G/task1
    parameters: {weight: [0.2, 1.0, 0.4], density: 0.5}
  - model: $G/task2
    parameters:
      weight:
        - filter: mlp
          value: [1.0, 0.1]
        - value: 0.5
      density: 0.3
  - model: $G/task3
    parameters: {weight: 0.3, density: 0.7}
EOF
    "$PCBM_TOOLS/peak-rss" --limit $((112 << 20)) --output "$TMP/big.rss" -- "$P" search --quiet \
        --config "$R/big.yml" --out "$TMP/big.out" --mem 64M --threads 2 --budget 2 --popsize 4 \
        --eval-cmd 'echo 1 # {model}' >"$TMP/big.log" 2>&1
    rc=$?
    peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/big.rss" 2>/dev/null)
    if [ $rc -eq 0 ]; then
        case_pass "search --config at --mem 64M" "$((in_bytes >> 20)) MiB of inputs, 3 ties merges, peak RSS $((${peak:-0} >> 20)) MiB <= 112 MiB"
    else
        case_fail "search --config at --mem 64M" "exit $rc, peak RSS $((${peak:-0} >> 20)) MiB: $(tail -n 2 "$TMP/big.log" | tr '\n' ' ')"
    fi
fi
finish

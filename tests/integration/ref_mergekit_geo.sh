#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_mergekit_geo.sh — mergekit's slerp, nuslerp, model_stock and sce against the NumPy reference
# tests/reference/mk_geo.py (written from mergekit's source; exact statistics as
# docs/semantics.md defines them): every method and option on generated F32 families (and a BF16
# family full of equal variances for sce's cut), at most 1e-5 of elements more than 1 ulp apart
# (they are in fact bit-identical). Then: the same bytes for --threads 1/2, --mem 64M/1G,
# --io pread/uring, --block-size, a split merge into K = 3 parts, a --stats replay and a merge
# killed (SIGKILL) in a statistics pass or in the apply and resumed, for every method and the
# per-row forms (nuslerp_flatten false per row and per column, model_stock filter_wise: their
# records are recomputed on replay); every form at --mem 64M on a family more than 8x the
# budget, peak RSS ≤ 64 MiB + 48 MiB; the option checks (model counts, options a method does
# not read) refused with exit 2.
. "$(dirname "$0")/lib.sh"
need_ref
REF_PY=$PCBM_ROOT/tests/reference/mk_geo.py
P=$PCBM_BIN

F=$TMP/f32 G=$TMP/f32b Z=$TMP/ties I=$TMP/ident
gen "$F" --tasks 3 --dtype f32 --params 300K --seed 51 --jobs 2
gen "$G" --tasks 5 --dtype f32 --preset tiny --seed 52 --delta-scale 0.2 --jobs 2
gen "$Z" --tasks 5 --dtype bf16 --params 300K --seed 53 --delta-scale 0.002 --jobs 2
gen "$I" --tasks 3 --dtype f32 --preset tiny --seed 54 --identical-task 1 --jobs 2
X=(--cmp "--max-mismatch 1e-5 --no-kept")
# N-dimensional tensors for the per-row forms: 3-D and 4-D (rows along the last dimension,
# columns along the first), one row, rows of one element, rows longer than a tile, a zero task
# vector (task3's model.b.weight)
N=$TMP/nd
"$PY" - "$N" "$PCBM_ROOT/tests/reference" <<'PYEOF' || fail "the N-d family"
import os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from pcb_ref import write_model
shapes = [("model.a.weight", (5, 7, 300)), ("model.b.weight", (1, 2000)),
          ("model.c.weight", (2000, 1)), ("model.d.bias", (3000,)),
          ("model.e.weight", (3, 4, 5, 60)), ("model.f.weight", (130, 1500))]
rng = np.random.default_rng(7)
base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes}
for m in range(4):
    ts = []
    for n, s in shapes:
        v = base[n] if m == 0 or (m == 3 and n == "model.b.weight") else \
            (base[n] + 0.05 * rng.standard_normal(s)).astype(np.float32)
        ts.append((n, "F32", s, np.ascontiguousarray(v).tobytes()))
    write_model(os.path.join(sys.argv[1], "base" if m == 0 else "task%d" % m), ts)
PYEOF

# ---- against the reference ----------------------------------------------------------------------
ref_case slerp-t0.3          "$F" 1 "${X[@]}" --method slerp --t 0.3
ref_case slerp-t0            "$F" 1 "${X[@]}" --method slerp --t 0
ref_case slerp-t1            "$F" 1 "${X[@]}" --method slerp --t 1
ref_case slerp-t0.7-far      "$G" 1 "${X[@]}" --method slerp --t 0.7
ref_case slerp-identical     "$I" 1 "${X[@]}" --method slerp --t 0.4       # |cos| > 0.9995: lerp
ref_case nuslerp-w1,2        "$F" 2 "${X[@]}" --method nuslerp --weights 1,2
ref_case nuslerp-default-w   "$F" 2 "${X[@]}" --method nuslerp
ref_case nuslerp-w-sum0      "$G" 2 "${X[@]}" --method nuslerp --weights 1,-1   # |Σw| < 1e-6: t = 0.5
ref_case nuslerp-identical   "$I" 2 "${X[@]}" --method nuslerp --weights 3,1    # τ_1 = 0
ref_case nuslerp-nobase-t0.4 "$F" 1 "${X[@]}" --method nuslerp --t 0.4
ref_case nuslerp-row-wise    "$F" 2 "${X[@]}" --method nuslerp --weights 2,1 --nuslerp-row-wise
# nuslerp_flatten false: one interpolation per row (last dimension) or, row_wise, per column
ref_case nuslerp-rows        "$F" 2 "${X[@]}" --method nuslerp --weights 1,2 --nuslerp-no-flatten
ref_case nuslerp-cols        "$F" 2 "${X[@]}" --method nuslerp --weights 2,1 --nuslerp-no-flatten --nuslerp-row-wise
ref_case nuslerp-rows-far    "$G" 2 "${X[@]}" --method nuslerp --weights 3,1 --nuslerp-no-flatten
ref_case nuslerp-rows-ident  "$I" 2 "${X[@]}" --method nuslerp --weights 3,1 --nuslerp-no-flatten
ref_case nuslerp-cols-ident  "$I" 2 "${X[@]}" --method nuslerp --weights 1,1 --nuslerp-no-flatten --nuslerp-row-wise
ref_case nuslerp-rows-nobase "$F" 1 "${X[@]}" --method nuslerp --t 0.4 --nuslerp-no-flatten
ref_case nuslerp-cols-nobase "$G" 1 "${X[@]}" --method nuslerp --t 0.7 --nuslerp-no-flatten --nuslerp-row-wise
ref_case nuslerp-rows-nd      "$N" 2 "${X[@]}" --method nuslerp --weights 1,2 --nuslerp-no-flatten --threads 2 --mem 64M
ref_case nuslerp-cols-nd      "$N" 2 "${X[@]}" --method nuslerp --weights 1,2 --nuslerp-no-flatten --nuslerp-row-wise --threads 2
ref_case model-stock-n2      "$F" 2 "${X[@]}" --method model_stock
ref_case model-stock-n3      "$F" 3 "${X[@]}" --method model_stock
ref_case model-stock-n5      "$G" 5 "${X[@]}" --method model_stock
ref_case model-stock-ident   "$I" 3 "${X[@]}" --method model_stock
ref_case model-stock-fw-n2   "$F" 2 "${X[@]}" --method model_stock --filter-wise
ref_case model-stock-fw-n3   "$F" 3 "${X[@]}" --method model_stock --filter-wise
ref_case model-stock-fw-n5   "$G" 5 "${X[@]}" --method model_stock --filter-wise
ref_case model-stock-fw-id   "$I" 3 "${X[@]}" --method model_stock --filter-wise
ref_case model-stock-fw-nd   "$N" 3 "${X[@]}" --method model_stock --filter-wise --threads 2 --mem 64M
ref_case sce-all-n3          "$F" 3 "${X[@]}" --method sce
ref_case sce-k0.5-n3         "$F" 3 "${X[@]}" --method sce --select-topk 0.5
ref_case sce-k0.1-n5         "$G" 5 "${X[@]}" --method sce --select-topk 0.1
ref_case sce-k0-n2           "$F" 2 "${X[@]}" --method sce --select-topk 0
ref_case sce-ties-k0.3       "$Z" 5 "${X[@]}" --method sce --select-topk 0.3    # a cut among equal ones
ref_case sce-ties-k0.9       "$Z" 3 "${X[@]}" --method sce --select-topk 0.9
ref_case sce-one-task        "$F" 1 "${X[@]}" --method sce --select-topk 0.5
ref_case sce-ident-k0.5      "$I" 3 "${X[@]}" --method sce --select-topk 0.5

# ---- the same bytes for any threads, budget, I/O backend, split ---------------------------------
# a form: its method (METH, the form's name when absent), task models and options
declare -A TASKS=([slerp]=1 [nuslerp]=2 [model_stock]=3 [sce]=5 [nuslerp-rows]=2 [nuslerp-cols]=2
                  [model_stock-fw]=3)
declare -A OPTS=([slerp]="--t 0.35" [nuslerp]="--weights 1,3" [model_stock]="" [sce]="--select-topk 0.3"
                 [nuslerp-rows]="--weights 1,3 --nuslerp-no-flatten"
                 [nuslerp-cols]="--weights 1,3 --nuslerp-no-flatten --nuslerp-row-wise"
                 [model_stock-fw]="--filter-wise")
declare -A METH=([nuslerp-rows]=nuslerp [nuslerp-cols]=nuslerp [model_stock-fw]=model_stock)
FORMS="slerp nuslerp nuslerp-rows nuslerp-cols model_stock model_stock-fw sce"
one() { # OUT FAMILY FORM RUN_OPTIONS...
    local out=$1 fam=$2 m=$3
    shift 3
    # shellcheck disable=SC2086
    "$P" merge --quiet --base "$fam/base" --out "$out" --method ${METH[$m]:-$m} ${OPTS[$m]} "$@" \
        $(task_dirs "$fam" ${TASKS[$m]})
}
split3() { # OUT FAMILY METHOD
    local out=$1 fam=$2 m=$3 i r rounds
    # shellcheck disable=SC2086
    "$P" plan --quiet --shard-size 100KB --base "$fam/base" --out "$out" --parts 3 --method ${METH[$m]:-$m} \
        ${OPTS[$m]} $(task_dirs "$fam" ${TASKS[$m]}) || return 1
    rounds=$("$P" status --plan "$out" --get rounds_max) || return 1
    for ((r = 0; r <= rounds; r++)); do
        "$P" status --plan "$out" --json | grep -q '"stats_complete":true' && break
        for i in 0 1 2; do "$P" stats --plan "$out" --part $i --quiet || return 1; done
        "$P" reduce --plan "$out" --quiet || return 1
    done
    for i in 2 0 1; do "$P" apply --plan "$out" --part $i --quiet || return 1; done
    "$P" finalize --plan "$out" --quiet
}
same() { # NAME A B
    local why
    if why=$(same_outputs "$2" "$3" merge_stats.json.zst); then case_pass "$1"; else case_fail "$1" "$why"; fi
}
for m in $FORMS; do
    fam=$G
    [ $m = sce ] && fam=$Z
    d=$TMP/det-$m
    one "$d-a" $fam $m --threads 1 --mem 1G --io pread --shard-size 100KB || fail "$m merge"
    one "$d-b" $fam $m --threads 2 --mem 64M --io uring --shard-size 100KB || fail "$m merge"
    one "$d-c" $fam $m --threads 2 --mem 64M --block-size 64K --shard-size 100KB || fail "$m merge"
    same "$m: threads 1/2, mem 1G/64M, io pread/uring" "$d-a" "$d-b"
    same "$m: --block-size 64K" "$d-a" "$d-c"
    if split3 "$d-split" $fam $m >"$TMP/split.log" 2>&1; then
        same "$m: split K=3" "$d-a" "$d-split"
    else
        case_fail "$m: split K=3" "$(tail -n 3 "$TMP/split.log")"
    fi
    # --stats replays the records: the same bytes without the statistics passes
    one "$d-replay" $fam $m --stats "$d-a/merge_stats.json.zst" --shard-size 100KB ||
        fail "$m --stats"
    if why=$(same_outputs "$d-a" "$d-replay" merge_stats.json.zst README.md); then
        case_pass "$m: --stats replay"
    else
        case_fail "$m: --stats replay" "$why"
    fi
done

# ---- SIGKILL mid-statistics and mid-apply, then --resume: the same bytes -----------------------
for m in $FORMS; do
    fam=$G
    [ $m = sce ] && fam=$Z
    for pt in stats:3 apply:3; do
        out=$TMP/kill-$m-${pt%%:*}
        PCBM_TEST_KILL=$pt one "$out" $fam $m --threads 2 --block-size 64K --shard-size 100KB \
            2>/dev/null
        rc=$?
        if [ $rc -ne 137 ] || [ -e "$out" ]; then
            case_fail "$m killed at $pt" "exit $rc (expected 137), output present: $([ -e "$out" ] && echo yes || echo no)"
        elif one "$out" $fam $m --resume --threads 2 --block-size 64K --shard-size 100KB; then
            same "$m killed at $pt, resumed" "$TMP/det-$m-a" "$out"
        else
            case_fail "$m killed at $pt" "the resumed merge failed"
        fi
    done
done

# ---- option checks ------------------------------------------------------------------------------
B="--base $F/base --out $TMP/never"
usage() { # NAME REGEX ARGS...: exit 2 with the message
    local name=$1 re=$2 out rc
    shift 2
    out=$("$P" merge --quiet $B "$@" 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -Eq -- "$re" <<<"$out"; then case_pass "$name"
    else case_fail "$name" "exit $rc: $out"; fi
}
usage "slerp: two tasks"        "exactly one task"      --method slerp --t 0.5 $F/task1 $F/task2
usage "slerp: no t"             "needs --t"             --method slerp $F/task1
usage "slerp: --weights"        "does not apply"        --method slerp --t 0.5 --weights 1 $F/task1
usage "slerp: --scope global"   "per tensor"            --method slerp --t 0.5 --scope global $F/task1
usage "nuslerp: three tasks"    "exactly two"           --method nuslerp $(task_dirs $F 3)
usage "nuslerp: t with two"     "--weights W1,W2"       --method nuslerp --t 0.5 $F/task1 $F/task2
usage "nuslerp: one, no t"      "needs --t"             --method nuslerp $F/task1
usage "model_stock: one task"   "at least two"          --method model_stock $F/task1
usage "model_stock: filter, 1"  "at least two"          --method model_stock --filter-wise $F/task1
usage "slerp: --filter-wise"    "does not apply"        --method slerp --t 0.5 --filter-wise $F/task1
usage "model_stock: no-flatten" "does not apply"        --method model_stock --nuslerp-no-flatten $F/task1 $F/task2
usage "model_stock: --t"        "does not apply"        --method model_stock --t 0.2 $F/task1 $F/task2
usage "sce: --density"          "does not apply|density" --method sce --densities 0.5,0.5 $F/task1 $F/task2
usage "ties: --select-topk"     "does not apply"        --method ties --select-topk 0.5 $F/task1 $F/task2
[ -e "$TMP/never" ] && case_fail "refusals leave nothing" "$TMP/never exists"

# ---- bounded memory -----------------------------------------------------------------------------
if grep -q "__asan_init" "$P" 2>/dev/null || [ ! -x "$PCBM_TOOLS/peak-rss" ]; then
    echo "skip: peak RSS (AddressSanitizer build or peak-rss not built)"
else
    M=$TMP/big
    gen "$M" --preset custom --params 70M --tasks 3 --dtype f32 --seed 55 --jobs 2
    in_bytes=$(du -cb "$M"/base/*.safetensors "$M"/task1/*.safetensors | tail -n 1 | cut -f1)
    echo "big family: $in_bytes bytes in base + task1 ($((in_bytes >> 26))x --mem 64M)"
    [ "$in_bytes" -ge $((8 << 26)) ] || fail "the family is smaller than 8x --mem"
    LIMIT=$(((64 + 48) << 20))
    for m in $FORMS; do
        t=$SECONDS
        # shellcheck disable=SC2046
        "$PCBM_TOOLS/peak-rss" --limit $LIMIT --output "$TMP/$m.rss" -- "$P" merge --quiet \
            --base "$M/base" --out "$TMP/big-$m" --threads 2 --mem 64M --method ${METH[$m]:-$m} ${OPTS[$m]} \
            $(task_dirs "$M" $((TASKS[$m] < 3 ? TASKS[$m] : 3))) >"$TMP/$m.log" 2>&1
        rc=$?
        peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/$m.rss" 2>/dev/null)
        mibs=$(awk -v b="${peak:-0}" 'BEGIN { printf "%.1f MiB", b / 1048576 }')
        if [ $rc -eq 0 ]; then
            case_pass "$m --mem 64M" "$((SECONDS - t)) s, peak RSS $mibs <= 112 MiB"
        else
            case_fail "$m --mem 64M" "exit $rc, peak RSS $mibs: $(tail -n 2 "$TMP/$m.log")"
        fi
        rm -rf "$TMP/big-$m"
    done
    # per-row sums of a vocabulary-sized tensor (131072 rows) with 5 task models: the rows' sums
    # are shared by the threads (one copy, not one per thread), so --mem 64M holds them; the
    # bytes are those of --mem 1G
    V=$TMP/vocab
    "$PY" - "$V" <<'PYEOF' || fail "writing the vocabulary family"
import json, os, struct, sys
import numpy as np
rng = np.random.default_rng(7)
shapes = {"model.embed_tokens.weight": (131072, 64), "model.layers.0.mlp.up_proj.weight": (256, 64)}
base = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
for m in ["base"] + ["task%d" % i for i in range(1, 6)]:
    os.makedirs(os.path.join(sys.argv[1], m), exist_ok=True)
    hdr, blobs, off = {}, [], 0
    for n, a in base.items():
        b = (a if m == "base" else a + 0.01 * rng.standard_normal(a.shape, dtype=np.float32)).tobytes()
        hdr[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(sys.argv[1], m, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with open(os.path.join(sys.argv[1], m, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1}, f)
PYEOF
    for m in "model_stock --filter-wise" "nuslerp --nuslerp-no-flatten --weights 1,0.5"; do
        n=${m%% *}
        nt=5
        [ "$n" = nuslerp ] && nt=2
        # shellcheck disable=SC2086
        "$PCBM_TOOLS/peak-rss" --limit $LIMIT --output "$TMP/vocab-$n.rss" -- "$P" merge --quiet \
            --base "$V/base" --out "$TMP/vocab-$n-64M" --threads 2 --mem 64M --method $m \
            $(task_dirs "$V" $nt) >"$TMP/vocab-$n.log" 2>&1
        rc=$?
        peak=$(sed -n 's/^peak_rss_bytes //p' "$TMP/vocab-$n.rss" 2>/dev/null)
        mibs=$(awk -v b="${peak:-0}" 'BEGIN { printf "%.1f MiB", b / 1048576 }')
        # shellcheck disable=SC2086
        if [ $rc -ne 0 ]; then
            case_fail "$n per row, 131072 rows, $nt tasks, --mem 64M" "exit $rc, peak RSS $mibs: $(tail -n 2 "$TMP/vocab-$n.log")"
        elif ! "$P" merge --quiet --base "$V/base" --out "$TMP/vocab-$n-1G" --threads 1 --mem 1G \
            --method $m $(task_dirs "$V" $nt) >>"$TMP/vocab-$n.log" 2>&1; then
            case_fail "$n per row, 131072 rows, $nt tasks, --mem 64M" "--mem 1G failed: $(tail -n 2 "$TMP/vocab-$n.log")"
        elif why=$(same_outputs "$TMP/vocab-$n-64M" "$TMP/vocab-$n-1G" README.md); then
            case_pass "$n per row, 131072 rows, $nt tasks, --mem 64M" "peak RSS $mibs <= 112 MiB, the bytes of --mem 1G --threads 1"
        else
            case_fail "$n per row, 131072 rows, $nt tasks, --mem 64M" "$why"
        fi
        rm -rf "$TMP/vocab-$n-64M" "$TMP/vocab-$n-1G"
    done
fi
finish

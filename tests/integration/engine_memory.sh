#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# engine_memory.sh — the memory bound. A family whose inputs are more than 8x the budget (3 tasks
# of a ~70M-element bf16 model: 4 x 140 MB = 560 MB against --mem 64M = 67 MB) is merged with
# --mem 64M by task_arithmetic, pcb and ties under tools/peak-rss; the peak RSS must stay within
# 64 MiB + 48 MiB (code, libraries, thread stacks and the allocator's slack on top of the buffers).
#
# Correctness of the bounded merges (the NumPy reference needs ~6 GB and ~30 s per method at this
# size, so it runs for pcb only; tests/integration/ref_*.sh compare every method with the reference
# on smaller families):
#   task_arithmetic  bit-exact against a streaming NumPy computation written below (tensor by
#                    tensor, float32 in pcbmerge's order of operations: tau_i = theta_i - base,
#                    acc = ((0 + tau_1) + tau_2) + tau_3, out = base + lambda*acc, rounded to bf16);
#   pcb, ties        byte-identical to a second pcbmerge run with --mem 1G (the budget changes only
#                    how much is in flight, never the result); pcb also with --block-size 256K, as
#                    at 70M elements its default statistics are the streaming ones (sampled), whose
#                    sample must not depend on the block cut;
#   pcb              against the in-memory NumPy reference (tests/reference/pcb_ref.py + compare.py,
#                    default tolerances) when 8 GiB are available; PCBM_MEM_REF=1 adds ties;
#   --io mmap        pcb and task_arithmetic (64K blocks) with the inputs read through their
#                    mappings: the same bound, the same bytes.
#
# Two LoRA adapters beside the three full tasks of the same family (8x the budget): pcb and task_arithmetic within 64 MiB +
# 48 MiB, byte-identical to --mem 1G. The same family with task 3 lacking three merged tensors
# (it takes no part in them): pcb and ties within the same bound, byte-identical to --mem 1G.
#
# A quirky family (FP8 base with block scales and a tied head, a BF16 task with appended tokens
# that unties the head, an FP8 task) at 10x --mem 16M: pcb, ties and task_arithmetic within
# 16 MiB + 48 MiB, byte-identical to --mem 1G.
#
# A family whose vocabularies differ (tokenizer_source: union; 3 F32 models of 20000+ tokens x
# 1024, the embeddings 90% of the bytes, 8x --mem 64M): the rows of every model are staged
# (OUT.vocab-staging) and merged by pcb within 64 MiB + 48 MiB, byte-identical to --mem 1G.
#
# Also: --mem 1M is refused before any merging with a message naming the minimum, exit 1 (or 2),
# and leaves no output directory; the minimum it names is enough (a task_arithmetic merge at that
# budget succeeds, within its own bound) and 64 KiB less is refused; with --block-size 1M the
# minimum named is again enough.
. "$(dirname "$0")/lib.sh"
need_numpy
need_bin
need_gen
need_tool peak-rss
need_plain_rss
PEAK=$PCBM_TOOLS/peak-rss

MEM=64M
MEM_BYTES=$((64 << 20))
SLACK=$((48 << 20))
LIMIT=$((MEM_BYTES + SLACK))
THREADS=2 # the statistics' per-thread histograms grow with threads: pin them for a portable bound

F=$TMP/fam
t0=$SECONDS
gen "$F" --preset custom --params 70M --tasks 3 --dtype bf16 --seed 41 --jobs 2
TASKS=$(task_dirs "$F" 3)
in_bytes=$(du -cb "$F"/base/*.safetensors "$F"/task*/*.safetensors | tail -n 1 | cut -f1)
echo "family: 4 models, $in_bytes bytes of safetensors ($((in_bytes / MEM_BYTES))x --mem $MEM), generated in $((SECONDS - t0))s"
[ "$in_bytes" -ge $((8 * MEM_BYTES)) ] || fail "the family is smaller than 8x --mem ($in_bytes bytes)"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# bounded NAME LIMIT_BYTES MERGE_OPTIONS...: merge under peak-rss --limit; records the case.
# Leaves the output in $TMP/NAME and the peak in PEAK_BYTES.
bounded() {
    local name=$1 limit=$2
    shift 2
    local out=$TMP/$name t=$SECONDS rc
    PEAK_BYTES=0
    # shellcheck disable=SC2086
    "$PEAK" --limit "$limit" --output "$TMP/$name.rss" -- "$PCBM_BIN" merge --quiet \
        --base "$F/base" --out "$out" --threads $THREADS "$@" $TASKS >"$TMP/$name.log" 2>&1
    rc=$?
    PEAK_BYTES=$(sed -n 's/^peak_rss_bytes //p' "$TMP/$name.rss" 2>/dev/null)
    PEAK_BYTES=${PEAK_BYTES:-0}
    if [ $rc -eq 3 ]; then
        case_fail "$name" "peak RSS $(mib "$PEAK_BYTES") is over the limit $(mib "$limit"):" \
            "$(tail -n 2 "$TMP/$name.log" | tr '\n' ' ')"
        return 1
    elif [ $rc -ne 0 ]; then
        case_fail "$name" "merge $* failed (exit $rc): $(tail -n 3 "$TMP/$name.log" | tr '\n' ' ')"
        return 1
    fi
    case_pass "$name" "merge $* in $((SECONDS - t)) s, peak RSS $(mib "$PEAK_BYTES") <= $(mib "$limit")"
}

# same_as NAME A B: outputs A and B byte-identical.
same_as() {
    local why
    if why=$(same_outputs "$TMP/$2" "$TMP/$3"); then
        case_pass "$1" "$2 and $3 are byte-identical"
    else
        case_fail "$1" "$2 and $3 differ: $why"
        diff_tensors "$TMP/$2" "$TMP/$3"
    fi
}

# ---- task arithmetic: bounded, and bit-exact against a streaming NumPy computation ------------
bounded ta-64M "$LIMIT" --method task_arithmetic --lambda 0.7 --mem "$MEM"
if [ -d "$TMP/ta-64M" ]; then
    cat >"$TMP/ta_check.py" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from pcb_ref import read_model, decode, encode, FLOAT_DTYPES
fam, out, lam, n = sys.argv[2], sys.argv[3], np.float32(float(sys.argv[4])), int(sys.argv[5])
base = read_model(fam + "/base")                      # memory-mapped, one tensor at a time
tasks = [read_model("%s/task%d" % (fam, i + 1)) for i in range(n)]
ours = read_model(out)
if list(ours) != list(base):
    sys.exit("tensor names or order differ from the base")
merged = elems = 0
for name, bt in base.items():
    ot = ours[name]
    if (ot.dtype, ot.shape) != (bt.dtype, bt.shape):
        sys.exit("%s: %s%s, base %s%s" % (name, ot.dtype, ot.shape, bt.dtype, bt.shape))
    if bt.dtype not in FLOAT_DTYPES:
        if ot.raw.tobytes() != bt.raw.tobytes():
            sys.exit("%s: a non-float tensor was not copied verbatim" % name)
        continue
    b = bt.f32()
    acc = np.zeros_like(b)
    for t in tasks:
        acc = acc + (t[name].f32() - b)               # float32 throughout, no FMA
    want = encode(ot.dtype, b + lam * acc)
    got = ot.raw.tobytes()
    if got != want:
        g = np.frombuffer(got, dtype=np.uint16); w = np.frombuffer(want, dtype=np.uint16)
        bad = np.flatnonzero(g != w)
        sys.exit("%s: %d of %d elements differ, first at %d (ours 0x%04x, expected 0x%04x)"
                 % (name, len(bad), len(w), bad[0], g[bad[0]], w[bad[0]]))
    merged += 1
    elems += b.size
print("%d tensors, %d elements bit-exact" % (merged, elems))
PYEOF
    t=$SECONDS
    if msg=$("$PY" "$TMP/ta_check.py" "$PCBM_ROOT/tests/reference" "$F" "$TMP/ta-64M" 0.7 3 2>&1); then
        case_pass ta-64M-exact "$msg (NumPy, $((SECONDS - t)) s)"
    else
        case_fail ta-64M-exact "$msg"
    fi
fi
bounded ta-1G $(((1024 << 20) + SLACK)) --method task_arithmetic --lambda 0.7 --mem 1G &&
    same_as ta-64M-vs-1G ta-64M ta-1G
rm -rf "$TMP/ta-1G"

# ---- pcb and ties: bounded, and the same bytes as with a large budget --------------------------
for m in pcb ties; do
    bounded $m-64M "$LIMIT" --method $m --mem "$MEM"
    bounded $m-1G $(((1024 << 20) + SLACK)) --method $m --mem 1G
    same_as $m-64M-vs-1G $m-64M $m-1G
    rm -rf "${TMP:?}/$m-1G"
done
if "$PCBM_BIN" merge --help | grep -q -- '--streaming'; then
    how=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("stats", "?"))' \
        "$TMP/pcb-64M/merge_report.json" 2>/dev/null)
    echo "pcb statistics at this size: ${how:-?}"
fi
bounded pcb-64M-b256K "$LIMIT" --method pcb --mem "$MEM" --block-size 256K &&
    same_as pcb-64M-vs-b256K pcb-64M pcb-64M-b256K
rm -rf "$TMP/pcb-64M-b256K"

# ---- inputs read through their mappings (--io mmap; auto does so when they are cached): the
# pages a block used are released with it, so the same bound holds, and the bytes do not change
bounded pcb-64M-mmap "$LIMIT" --method pcb --mem "$MEM" --io mmap &&
    same_as pcb-64M-vs-mmap pcb-64M pcb-64M-mmap
rm -rf "$TMP/pcb-64M-mmap"
bounded ta-64M-mmap-b64K "$LIMIT" --method task_arithmetic --lambda 0.7 --mem "$MEM" --io mmap \
    --block-size 64K && same_as ta-64M-vs-mmap ta-64M ta-64M-mmap-b64K
rm -rf "$TMP/ta-64M-mmap-b64K"

# ---- against the in-memory reference ------------------------------------------------------------
# pcb by default (its statistics at this size are the sampled streaming ones: the reference is
# what can tell whether they are right), when the machine has the memory; ties with PCBM_MEM_REF=1.
ref_methods=pcb
[ "${PCBM_MEM_REF:-0}" = 1 ] && ref_methods="pcb ties"
free_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
if [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
    echo "skipped: the reference comparison (needs 8 GiB of available memory, $((free_kb / 1024)) MiB here)"
    ref_methods=""
fi
for m in $ref_methods; do
    t=$SECONDS
    # shellcheck disable=SC2086
    if ! "$PY" "$REF_PY" merge --base "$F/base" --out "$TMP/$m-ref" --method $m \
        --report "$TMP/$m-ref.json" $TASKS >"$TMP/$m-ref.log" 2>&1; then
        case_fail $m-64M-ref "the reference failed: $(tail -n 3 "$TMP/$m-ref.log" | tr '\n' ' ')"
    elif "$PY" "$CMP_PY" "$TMP/$m-64M" "$TMP/$m-ref" --ref-report "$TMP/$m-ref.json" \
        >"$TMP/$m-cmp.log" 2>&1; then
        case_pass $m-64M-ref "compare.py PASS against the reference ($((SECONDS - t)) s): $(grep '^float elements' "$TMP/$m-cmp.log" | cut -c1-120)"
    else
        case_fail $m-64M-ref "compare.py against the reference:"
        sed 's/^/    /' "$TMP/$m-cmp.log" | tail -n 8
    fi
    rm -rf "${TMP:?}/$m-ref"
done
[ "${PCBM_MEM_REF:-0}" = 1 ] || echo "(PCBM_MEM_REF=1 also compares ties with the in-memory reference)"
rm -rf "$TMP/pcb-64M" "$TMP/ties-64M" "$TMP/ta-64M"

# ---- too small a budget: refused up front, naming the minimum ----------------------------------
out=$TMP/tiny-mem
msg=$("$PCBM_BIN" merge --quiet --base "$F/base" --out "$out" --threads $THREADS --mem 1M \
    $TASKS 2>&1)
rc=$?
if [ $rc -ne 1 ] && [ $rc -ne 2 ]; then
    case_fail mem-1M "exit $rc, expected 1 or 2: $msg"
elif ! grep -Eq -- '--mem' <<<"$msg" || ! grep -Eq 'at least [0-9.]+ ?[KMGT]i?B' <<<"$msg"; then
    case_fail mem-1M "the message does not name the minimum (\"at least N MiB\"): $msg"
elif ! no_output "$out"; then
    case_fail mem-1M "a refused merge left $(ls -d "$out"* | tr '\n' ' ')"
else
    case_pass mem-1M "exit $rc: $msg"
fi

# the named minimum is enough, and not much more than needed (task arithmetic: no statistics)
# shellcheck disable=SC2086
min=$(min_mem_bytes --base "$F/base" --out "$out" --threads $THREADS --method task_arithmetic $TASKS)
if [ -z "$min" ]; then
    case_fail mem-min "no minimum in the task_arithmetic --mem 1K message"
else
    if bounded mem-min $((min + SLACK)) --method task_arithmetic --lambda 0.7 --mem "$min"; then
        rm -rf "$TMP/mem-min"
    fi
    below=$((min - 64 * 1024 - 10 * 1024))
    # shellcheck disable=SC2086
    if "$PCBM_BIN" merge --quiet --base "$F/base" --out "$out" --threads $THREADS \
        --method task_arithmetic --mem $below $TASKS >/dev/null 2>&1; then
        case_fail mem-below-min "--mem $below (74 KiB under the named minimum $min) was accepted"
    elif ! no_output "$out"; then
        case_fail mem-below-min "a refused merge left $(ls -d "$out"* | tr '\n' ' ')"
    else
        case_pass mem-below-min "--mem $below (74 KiB under the named minimum) is refused"
    fi
fi

# with an explicit --block-size the engine cannot shrink blocks: the minimum it names when refusing
# must then be the minimum for that block size (following the message must work)
# shellcheck disable=SC2086
minb=$(min_mem_bytes --base "$F/base" --out "$out" --threads $THREADS --method task_arithmetic \
    --block-size 1M $TASKS)
if [ -z "$minb" ]; then
    case_fail mem-min-block1M "no minimum in the --block-size 1M --mem 1K message"
elif bounded mem-min-block1M $((minb + SLACK)) --method task_arithmetic --lambda 0.7 \
    --block-size 1M --mem "$minb"; then
    rm -rf "$TMP/mem-min-block1M"
else
    echo "    (pcbmerge named $minb bytes as the minimum for --block-size 1M, then refused that budget)"
fi
rm -rf "$out" "$out.partial"

# ---- LoRA adapters (issue 15): the three full tasks and two rank-16 PEFT adapters on every layer weight of
# the same base (tools/bench/lora-adapters.py), formed in the stream: the same bound, and the
# same bytes at --mem 1G (the factor caches come out of the budget)
"$PY" "$PCBM_ROOT/tools/bench/lora-adapters.py" "$F/base" "$TMP/lora" 2 16 >/dev/null ||
    fail "lora-adapters.py"
TASKS="$F/task1 $F/task2 $F/task3 $TMP/lora/adapter1 $TMP/lora/adapter2"
for m in pcb task_arithmetic; do
    bounded "lora-$m-64M" "$LIMIT" --method "$m" --mem "$MEM"
    bounded "lora-$m-1G" $(((1 << 30) + SLACK)) --method "$m" --mem 1G
    same_as "lora-$m-same-bytes" "lora-$m-64M" "lora-$m-1G"
    rm -rf "$TMP/lora-$m-64M" "$TMP/lora-$m-1G"
done
rm -rf "$TMP/lora"

# ---- task 3 lacking merged tensors (it takes no part in them; PCB's statistics are then the exact
# rounds, per task over its own elements): the three tasks of the same family, 8x the budget, the
# same bound, and the same bytes at --mem 1G
AB=$TMP/absent
mkdir -p "$AB" && ln -s "$F/base" "$AB/base" && ln -s "$F/task1" "$AB/task1" &&
    ln -s "$F/task2" "$AB/task2" && cp -r "$F/task3" "$AB/task3" || fail "cannot copy task3"
drop_tensors "$AB/task3" model.layers.0.mlp.up_proj.weight model.layers.1.self_attn.q_proj.weight \
    model.layers.2.mlp.down_proj.weight
TASKS="$AB/task1 $AB/task2 $AB/task3"
for m in pcb ties; do
    bounded "absent-$m-64M" "$LIMIT" --method "$m" --mem "$MEM"
    bounded "absent-$m-1G" $(((1 << 30) + SLACK)) --method "$m" --mem 1G
    same_as "absent-$m-same-bytes" "absent-$m-64M" "absent-$m-1G"
    "$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
assert r["tensors_partial"] == 3, r["tensors_partial"]' "$TMP/absent-$m-64M/merge_report.json" ||
        case_fail "absent-$m-partial" "merge_report.json does not list 3 partial tensors"
    rm -rf "$TMP/absent-$m-64M" "$TMP/absent-$m-1G"
done
rm -rf "$AB"

# ---- a quirky family (tools/testing/quirky-family.py: an FP8 base with block scales and a tied
# head, a BF16 task that unties the head and appended tokens, an FP8 task), 10x the budget ----------
F=$TMP/quirky
"$PY" "$PCBM_ROOT/tools/testing/quirky-family.py" "$F" --params 64M || fail "quirky-family.py"
TASKS="$F/task1 $F/task2"
q_bytes=$(du -cb "$F"/*/model.safetensors | tail -n 1 | cut -f1)
echo "quirky family: 3 models, $q_bytes bytes of safetensors ($((q_bytes / (16 << 20)))x --mem 16M)"
[ "$q_bytes" -ge $((8 * (16 << 20))) ] || fail "the quirky family is smaller than 8x --mem 16M"
for m in pcb ties task_arithmetic; do
    bounded "quirky-$m-16M" $(((16 << 20) + SLACK)) --method "$m" --mem 16M
    bounded "quirky-$m-1G" $(((1 << 30) + SLACK)) --method "$m" --mem 1G
    same_as "quirky-$m-same-bytes" "quirky-$m-16M" "quirky-$m-1G"
    rm -rf "$TMP/quirky-$m-1G"
done

# ---- differing vocabularies (--tokenizer-source union): staging within the bound ----------------
F=$TMP/vocab
"$PY" - "$F" <<'PYEOF2' || fail "cannot generate the vocabulary family"
import json, os, sys
import numpy as np
sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model
out = sys.argv[1]
rng = np.random.default_rng(5)
NV, H, L = 20000, 1024, 4
def tok(vocab, added):
    return {"version": "1.0", "added_tokens": [{"id": i, "content": c, "special": True}
                                                for c, i in added],
            "model": {"type": "BPE", "vocab": vocab, "merges": []}}
vocab = {"t%d" % i: i for i in range(NV)}
added = [("<s>", NV), ("</s>", NV + 1)]
R = NV + 2
def emb(rows):
    return rng.standard_normal((rows, H), dtype=np.float32) * np.float32(0.02)
base = {"model.embed_tokens.weight": emb(R)}
for l in range(L):
    base["model.layers.%d.mlp.weight" % l] = rng.standard_normal((H, 2 * H), dtype=np.float32) * np.float32(0.02)
base["lm_head.weight"] = emb(R)
def save(d, vals, t):
    os.makedirs(d, exist_ok=True)
    write_model(d, [(n, "F32", v.shape, v.astype("<f4").tobytes()) for n, v in vals.items()])
    json.dump({"model_type": "llama", "vocab_size": vals["lm_head.weight"].shape[0],
               "num_hidden_layers": L}, open(d + "/config.json", "w"))
    json.dump(t, open(d + "/tokenizer.json", "w"))
save(out + "/base", base, tok(vocab, added))
for k in (1, 2):
    vals = {n: v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(2e-3)
            for n, v in base.items()}
    tv, ta = dict(vocab), list(added)
    extra = 3 if k == 1 else 2
    for n in ("model.embed_tokens.weight", "lm_head.weight"):
        vals[n] = np.concatenate([vals[n], emb(extra)])
    if k == 1:
        ta += [("<|im_start|>", R), ("<|im_end|>", R + 1)]
        tv["y_shared"] = R + 2
    else:
        tv["x_new"], tv["y_shared"] = R, R + 1
        tv["t5"], tv["t6"] = 6, 5
    save("%s/task%d" % (out, k), vals, tok(tv, ta))
PYEOF2
TASKS="$F/task1 $F/task2"
v_bytes=$(du -cb "$F"/*/model.safetensors | tail -n 1 | cut -f1)
echo "vocabulary family: 3 models, $v_bytes bytes of safetensors ($((v_bytes / MEM_BYTES))x --mem $MEM)"
[ "$v_bytes" -ge $((8 * MEM_BYTES)) ] || fail "the vocabulary family is smaller than 8x --mem"
bounded vocab-union-pcb-64M "$LIMIT" --method pcb --tokenizer-source union --mem "$MEM"
bounded vocab-union-pcb-1G $(((1 << 30) + SLACK)) --method pcb --tokenizer-source union --mem 1G
same_as vocab-union-pcb-same-bytes vocab-union-pcb-64M vocab-union-pcb-1G
rm -rf "$TMP/vocab-union-pcb-64M" "$TMP/vocab-union-pcb-1G" "$F"
finish

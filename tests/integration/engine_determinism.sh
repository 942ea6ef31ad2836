#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# engine_determinism.sh — how a merge is run never changes its bytes. A ~3M-element bf16 family,
# sharded (several input shards per model, --shard-size 2MB output shards), is merged by every
# method — pcb and ties with --scope global and tensor, ties and dare_ties with per-model weights
# and densities, mergekit's slerp, nuslerp, model_stock and sce (per tensor, exact sums), pcb also with --streaming (the sampled statistics large models use by default)
# — once as a baseline (--threads 2 --mem 1G --io uring, automatic block size, the best vector
# kernels of this CPU) and then with one setting changed at a time:
#   --threads 1 | 4,  --mem 64M | the minimum pcbmerge names (smallest blocks),  --io pread,
#   --io mmap | auto (the inputs, just generated, are cached: read through their mappings),
#   --block-size 64K | 1M,  PCBM_CPU=scalar | avx2 (vector paths vs scalar),
# and then with 11 runs that change several settings at once, chosen so that every pair of values
# of any two axes (threads x mem x io x block x cpu) occurs in at least one run (a pairwise
# covering array; the minimum --mem goes with automatic block sizes only). Every output file (shards,
# index, statistics, side files) must be byte-identical to the baseline's; merge_report.json
# (timings) is left out, and pcbmerge.manifest.json is compared without its hash of that report.
# A bf16 -> f32 merge and an f16 family add the other decode/encode paths; a quirky family
# (tools/testing/quirky-family.py: FP8 dequantization, a tied head, appended tokens) adds theirs,
# and the bf16 family with task 2 lacking two merged tensors (it takes no part in them: tiles with
# a task absent, per-task element counts) adds pcb and weighted ties on partial tensors. PCBM_DET_FULL=1 runs the
# whole cross product of the axes for pcb and ties (global) instead (a few minutes).
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
need_numpy

F=$TMP/fam H=$TMP/f16
gen "$F" --preset custom --params 3M --tasks 3 --dtype bf16 --seed 51 --shard-size 2M
gen "$H" --preset custom --params 1M --tasks 2 --dtype f16 --seed 52 --shard-size 1M
Q=$TMP/quirky # FP8 base with block scales and a tied head, a BF16 task with appended tokens
"$PY" "$PCBM_ROOT/tools/testing/quirky-family.py" "$Q" --params 3M || fail "quirky-family.py"
AB=$TMP/absent # the bf16 family, task 2 without two merged tensors
mkdir -p "$AB" && ln -s "$F/base" "$AB/base" && ln -s "$F/task1" "$AB/task1" &&
    ln -s "$F/task3" "$AB/task3" && cp -r "$F/task2" "$AB/task2" || fail "cannot copy task2"
drop_tensors "$AB/task2" model.layers.0.mlp.up_proj.weight model.layers.0.self_attn.k_proj.weight
nshards=$(ls "$F"/base/*.safetensors | wc -l)
[ "$nshards" -ge 3 ] || fail "expected several input shards, got $nshards"
[ -f "$F/base/model.safetensors.index.json" ] || fail "the generated base has no index"
echo "family: $(ls "$F"/base/*.safetensors | wc -l) input shards per model; output --shard-size 2MB"

# io_uring may be refused here (seccomp, gVisor): then the uring side of the io axis is skipped.
IO_BASE=uring
if ! "$PCBM_BIN" merge --quiet --io uring --method linear --base "$F/base" --out "$TMP/probe" \
    "$F/task1" >"$TMP/probe.log" 2>&1; then
    grep -q 'io_uring' "$TMP/probe.log" || fail "probe merge failed: $(cat "$TMP/probe.log")"
    echo "io_uring is unavailable here: baseline and variants use --io pread (the io axis is not covered)"
    IO_BASE=pread
fi
rm -rf "$TMP/probe"
STREAMING=""
"$PCBM_BIN" merge --help | grep -q -- '--streaming' && STREAMING=yes

# configurations: NAME|FAMILY|NTASKS|METHOD OPTIONS
CONFIGS=(
    "pcb-global|$F|3|--method pcb --scope global --density 0.1"
    "pcb-tensor|$F|3|--method pcb --scope tensor --density 0.2 --lambda 0.9"
    "ties-global|$F|3|--method ties --scope global --density 0.2"
    "ties-tensor|$F|3|--method ties --scope tensor --density 0.1"
    "dare_linear|$F|3|--method dare_linear --density 0.3 --seed 7 --lambdas 1,0.5,1.5"
    "dare_ties|$F|3|--method dare_ties --density 0.3 --seed 9"
    "ties-weighted|$F|3|--method ties --densities 0.1,0.3,0.2 --weights 0.7,1.3,-0.4"
    "dare_ties-weighted|$F|3|--method dare_ties --densities 0.3,0.6,0.5 --weights 0.7,1.3,0.4 --seed 9 --no-normalize"
    "task_arithmetic|$F|3|--method task_arithmetic --lambda 0.7"
    "linear|$F|3|--method linear --weights 1,2,3"
    "ta-to-f32|$F|3|--method task_arithmetic --dtype f32"
    "pcb-f16|$H|2|--method pcb --density 0.1"
    "ties-f16-tensor|$H|2|--method ties --scope tensor --density 0.3"
    "quirky-pcb|$Q|2|--method pcb --density 0.2"
    "quirky-ta|$Q|2|--method task_arithmetic --lambda 0.9"
    "slerp|$F|1|--method slerp --t 0.35"
    "nuslerp|$F|2|--method nuslerp --weights 1,3"
    "model_stock|$F|3|--method model_stock"
    "sce|$F|3|--method sce --select-topk 0.3"
    "quirky-slerp|$Q|1|--method slerp --t 0.6"
    "absent-pcb|$AB|3|--method pcb --density 0.2"
    "absent-ties-weighted|$AB|3|--method ties --densities 0.1,0.3,0.2 --weights 0.7,1.3,-0.4"
)
[ -n "$STREAMING" ] && CONFIGS+=("pcb-streaming|$F|3|--method pcb --streaming --density 0.1")

# variants: NAME|ENVIRONMENT|OPTIONS (MIN, MINn: the minimum --mem pcbmerge names for 2 or n
# threads; "--io uring" becomes "--io pread" where io_uring is unavailable)
VARIANTS=(
    "threads1||--threads 1"
    "threads4||--threads 4"
    "mem64M||--mem 64M"
    "mem-min||--mem MIN"
    "pread||--io pread"
    "mmap||--io mmap"
    "auto-mapped||--io auto"
    "mmap-small|PCBM_CPU=scalar|--io mmap --threads 4 --mem 64M --block-size 64K"
    "block64K||--block-size 64K"
    "block1M||--block-size 1M"
    "scalar|PCBM_CPU=scalar|"
    "avx2|PCBM_CPU=avx2|"
    # pairwise rows (every feasible pair of values of two axes occurs; MINn = the minimum for n
    # threads, which holds for automatic block sizes only, so MIN rows keep the automatic size)
    "pw1|PCBM_CPU=scalar|--threads 1 --mem 1G --io uring --block-size 64K"
    "pw2|PCBM_CPU=auto|--threads 4 --mem 1G --io pread --block-size 1M"
    "pw3|PCBM_CPU=avx2|--threads 2 --mem MIN2 --io uring"
    "pw4|PCBM_CPU=scalar|--threads 2 --mem 64M --io pread"
    "pw5|PCBM_CPU=avx2|--threads 1 --mem 64M --io uring --block-size 1M"
    "pw6|PCBM_CPU=avx2|--threads 4 --mem 64M --io pread --block-size 64K"
    "pw7|PCBM_CPU=auto|--threads 1 --mem MIN1 --io pread"
    "pw8|PCBM_CPU=scalar|--threads 4 --mem MIN4 --io uring"
    "pw9|PCBM_CPU=auto|--threads 2 --mem 64M --io uring --block-size 64K"
    "pw10|PCBM_CPU=scalar|--threads 2 --mem 1G --io pread --block-size 1M"
    "pw11|PCBM_CPU=avx2|--threads 4 --mem 1G --io pread"
)

# merge OUT ENV FAMILY NTASKS OPTIONS...: one quiet merge; the log in OUT.log.
merge() {
    local out=$1 envs=$2 fam=$3 n=$4
    shift 4
    # shellcheck disable=SC2046,SC2086
    env $envs timeout 300 "$PCBM_BIN" merge --quiet --base "$fam/base" --out "$out" \
        --shard-size 2MB "$@" $(task_dirs "$fam" "$n") >"$out.log" 2>&1
}

BASE_OPTS="--threads 2 --mem 1G --io $IO_BASE"
runs=0

# check_variant CONFIG VNAME ENV OPTIONS...: merge with this variant and compare with the baseline.
check_variant() {
    local cname=$1 vname=$2 envs=$3 fam=$4 n=$5 base=$6
    shift 6
    local out=$TMP/$cname.$vname why
    runs=$((runs + 1))
    if ! merge "$out" "$envs" "$fam" "$n" "$@"; then
        case_fail "$cname/$vname" "merge ${envs:+$envs }$* failed: $(tail -n 3 "$out.log" | tr '\n' ' ')"
        return
    fi
    if why=$(same_outputs "$base" "$out"); then
        VOK+=("$vname")
    else
        case_fail "$cname/$vname" "${envs:+$envs }$* differs from the baseline: $why"
        diff_tensors "$base" "$out"
    fi
    rm -rf "$out" "$out.log"
}

t_all=$SECONDS
for c in "${CONFIGS[@]}"; do
    IFS='|' read -r cname fam n opts <<<"$c"
    t=$SECONDS
    base=$TMP/$cname.base
    # shellcheck disable=SC2086
    if ! merge "$base" "" "$fam" "$n" $opts $BASE_OPTS; then
        case_fail "$cname" "baseline merge $opts $BASE_OPTS failed: $(tail -n 3 "$base.log" | tr '\n' ' ')"
        continue
    fi
    nout=$(ls "$base" | grep -vc '^merge_report.json$')
    declare -A MINS=()
    for th in 1 2 4; do
        # the same --shard-size as merge(): the output's headers and index count in the minimum
        # shellcheck disable=SC2086
        MINS[$th]=$(min_mem_bytes --base "$fam/base" --out "$TMP/$cname.min" --threads $th $opts \
            --shard-size 2MB \
            $(task_dirs "$fam" "$n"))
    done
    min=${MINS[2]}
    VOK=()
    nfail_before=${#FAILED[@]}
    if [ "${PCBM_DET_FULL:-0}" = 1 ] && [[ $cname == pcb-global || $cname == ties-global ]]; then
        for th in 1 2 4; do for mem in 64M 1G; do for io in uring pread; do
            [ $io = uring ] && [ $IO_BASE = pread ] && continue
            for bs in auto 64K 1M; do for cpu in scalar avx2 auto; do
                bopt=""
                [ $bs = auto ] || bopt="--block-size $bs"
                # shellcheck disable=SC2086
                check_variant "$cname" "t$th-$mem-$io-$bs-$cpu" "PCBM_CPU=$cpu" "$fam" "$n" "$base" \
                    $opts --threads $th --mem $mem --io $io $bopt
            done; done
        done; done; done
    else
        for v in "${VARIANTS[@]}"; do
            IFS='|' read -r vname envs vopts <<<"$v"
            if [[ $vopts =~ MIN([124]?) ]]; then
                th=${BASH_REMATCH[1]:-2}
                [ -n "${MINS[$th]}" ] || { case_fail "$cname/$vname" "no minimum --mem in the --mem 1K message"; continue; }
                vopts=${vopts/MIN$th/${MINS[$th]}}
                vopts=${vopts/MIN/${MINS[$th]}}
            fi
            [ $IO_BASE = pread ] && vopts=${vopts/--io uring/--io pread}
            # the variant's options come last and override the baseline's
            # shellcheck disable=SC2086
            check_variant "$cname" "$vname" "$envs" "$fam" "$n" "$base" $opts $BASE_OPTS $vopts
        done
    fi
    if [ ${#FAILED[@]} -eq "$nfail_before" ]; then
        case_pass "$cname" "$nout output files identical in ${#VOK[@]} variants ($((SECONDS - t)) s; min --mem $min)"
    fi
    rm -rf "$base" "$base.log"
done
echo "$runs variant merges in $((SECONDS - t_all)) s"
finish

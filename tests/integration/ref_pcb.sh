#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_pcb.sh — PCB merges of generated families against the NumPy reference (tests/reference):
# N = 2, 3, 5, 8 tasks; densities 0.05/0.1/0.3; bf16, f16 and f32; global λ and per-task λ;
# global and tensor scope; bf16 ties at the threshold; tensors whose scales span two orders of
# magnitude; degenerate cases (a task identical to the base, d = 0); sharded inputs; a 5M-element
# family under a 32 MiB memory budget (many blocks), 1 or 2 threads, io_uring or pread; --exact.
# Default mode: ≤ 1e-4 of elements more than 1 ulp off, kept within max(2, 1e-5·d) per task.
# --exact mode: ≤ 1e-5. f32 outputs are compared cancellation-aware (compare.py --base): where
# θ_m ≈ 0 ≪ |θ_pre|, |τ_m|, one ulp of τ_m (exp/tanh differ by an ulp between implementations)
# is many ulps of θ_m.
. "$(dirname "$0")/lib.sh"
need_ref

B=$TMP/bf16 H=$TMP/f16 F=$TMP/f32 I=$TMP/ident S=$TMP/shard M=$TMP/mid
gen "$B" --tasks 8 --dtype bf16 --seed 11
gen "$H" --tasks 3 --dtype f16 --params 300K --seed 12 --delta-scale 0.02
gen "$F" --tasks 5 --dtype f32 --params 300K --seed 13
gen "$I" --tasks 3 --dtype bf16 --seed 14 --identical-task 2
gen "$S" --tasks 3 --dtype bf16 --seed 15 --shard-size 64K
gen "$M" --tasks 3 --dtype bf16 --params 2M --seed 16
L=$TMP/small Z=$TMP/ties
gen "$L" --tasks 3 --dtype bf16 --preset small --seed 17
gen "$Z" --tasks 5 --dtype bf16 --params 300K --seed 18 --delta-scale 0.002   # mostly 0 and ±1 ulp
tb=$(( 2 * $(float_tensors "$B/base") ))
th=$(( 2 * $(float_tensors "$H/base") ))
tl=$(( 2 * $(float_tensors "$L/base") ))

ref_case pcb-bf16-n2-r0.1    "$B" 2 --method pcb --density 0.1
ref_case pcb-bf16-n3-r0.05   "$B" 3 --method pcb --density 0.05
ref_case pcb-bf16-n5-r0.3    "$B" 5 --method pcb --density 0.3
ref_case pcb-bf16-n8-r0.1    "$B" 8 --method pcb --density 0.1 --lambda 0.8
ref_case pcb-bf16-n8-lambdas "$B" 8 --method pcb --density 0.05 --lambdas 1,0.5,1.5,1,0.8,1.2,0.9,1.1
ref_case pcb-f16-n3-r0.1     "$H" 3 --method pcb --density 0.1 --lambda 0.7
ref_case pcb-f16-n2-r0.3     "$H" 2 --method pcb --density 0.3
ref_case pcb-f32-n5-r0.05    "$F" 5 --cmp "--base $F/base" --method pcb --density 0.05 --lambdas 0.5,1,1.5,0.8,1.2
ref_case pcb-f32-n3-c1e-3    "$F" 3 --cmp "--base $F/base" --method pcb --density 0.1 --clamp-ratio 1e-3
ref_case pcb-bf16-mid-n3     "$M" 3 --method pcb --density 0.1
ref_case pcb-tensor-bf16-n3  "$B" 3 --cmp "--kept-tol-abs $tb" --method pcb --density 0.1 --scope tensor
ref_case pcb-tensor-f16-n3   "$H" 3 --cmp "--kept-tol-abs $th" --method pcb --density 0.3 --scope tensor
ref_case pcb-tensor-bf16-n5  "$B" 5 --cmp "--kept-tol-abs $tb" --method pcb --density 0.05 --scope tensor --lambda 1.3
ref_case pcb-identical-task  "$I" 3 --method pcb --density 0.1
ref_case pcb-identical-tensor "$I" 3 --cmp "--kept-tol-abs $tb" --method pcb --density 0.1 --scope tensor
ref_case pcb-d0-exclude-all  "$B" 3 --method pcb --exclude '.*'
ref_case pcb-exclude-dtype   "$B" 3 --method pcb --density 0.1 --exclude 'embed_tokens|lm_head' --dtype f32
ref_case pcb-f32-to-bf16     "$F" 3 --method pcb --density 0.1 --dtype bf16
ref_case pcb-sharded-input   "$S" 3 --method pcb --density 0.1
ref_case pcb-massive-ties-n3 "$Z" 3 --method pcb --density 0.1
ref_case pcb-massive-ties-n5 "$Z" 5 --method pcb --density 0.3 --exact
ref_case pcb-small-mem32M    "$L" 3 --method pcb --density 0.1 --mem 32M --threads 2
ref_case pcb-small-tensor-pread "$L" 3 --cmp "--kept-tol-abs $tl" --method pcb --density 0.05 --scope tensor \
    --threads 1 --io pread --mem 32M
# The two-read streaming statistics are the default from 64M elements on (16-bit outputs); their
# accuracy is checked at that scale by ref_pcb_stream.sh.
ref_case pcb-exact-bf16-n5   "$B" 5 --method pcb --density 0.1 --exact
ref_case pcb-exact-f16-n3    "$H" 3 --method pcb --density 0.05 --exact
ref_case pcb-exact-tensor    "$B" 3 --cmp "--kept-tol-abs $tb" --method pcb --density 0.3 --scope tensor --exact
finish

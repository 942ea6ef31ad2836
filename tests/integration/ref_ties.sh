#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_ties.sh — TIES (official code: global top-k trim with ties at the threshold kept, sign
# election by mass, zero sums → majority sign, disjoint mean) and dare_ties against the NumPy
# reference: N = 2, 3, 5, 8; densities 0.05/0.1/0.3; bf16 (many ties at the threshold), f16, f32;
# λ; global and tensor scope; a task identical to the base; d = 0. TIES has no transcendental
# functions and exact thresholds, so --exact cases require every element within 1 ulp and the
# same kept counts; the default cases use the spec's accuracy bounds.
. "$(dirname "$0")/lib.sh"
need_ref

B=$TMP/bf16 H=$TMP/f16 F=$TMP/f32 I=$TMP/ident M=$TMP/mid
gen "$B" --tasks 8 --dtype bf16 --seed 21
gen "$H" --tasks 3 --dtype f16 --params 300K --seed 22
gen "$F" --tasks 5 --dtype f32 --params 300K --seed 23 --delta-scale 0.03
gen "$I" --tasks 3 --dtype bf16 --seed 24 --identical-task 1
gen "$M" --tasks 3 --dtype bf16 --params 2M --seed 25
L=$TMP/small Z=$TMP/ties
gen "$L" --tasks 3 --dtype bf16 --preset small --seed 26
gen "$Z" --tasks 5 --dtype bf16 --params 300K --seed 27 --delta-scale 0.002   # mostly 0 and ±1 ulp
tb=$(( 2 * $(float_tensors "$B/base") ))
strict="--max-ulp 1 --kept-tol-abs 0 --kept-tol-rel 0"

ref_case ties-bf16-n2-k0.1   "$B" 2 --method ties --density 0.1
ref_case ties-bf16-n3-k0.05  "$B" 3 --method ties --density 0.05
ref_case ties-bf16-n5-k0.3   "$B" 5 --method ties --density 0.3 --lambda 1.5
ref_case ties-bf16-n8-k0.1   "$B" 8 --method ties --density 0.1
ref_case ties-f16-n3-k0.3    "$H" 3 --method ties --density 0.3 --lambda 0.6
ref_case ties-f32-n5-k0.05   "$F" 5 --method ties --density 0.05
ref_case ties-bf16-mid-n3    "$M" 3 --method ties --density 0.1
ref_case ties-tensor-bf16-n3 "$B" 3 --cmp "--kept-tol-abs $tb" --method ties --density 0.1 --scope tensor
ref_case ties-tensor-f32-n5  "$F" 5 --cmp "--kept-tol-abs $tb" --method ties --density 0.3 --scope tensor
ref_case ties-identical-task "$I" 3 --method ties --density 0.1
ref_case ties-d0-exclude-all "$B" 3 --method ties --exclude '.*'
ref_case ties-keep-all       "$B" 3 --method ties --density 1
ref_case ties-massive-ties-n3 "$Z" 3 --method ties --density 0.1
ref_case ties-massive-ties-n5 "$Z" 5 --cmp "$strict" --method ties --density 0.3 --exact
ref_case ties-small-mem32M   "$L" 3 --cmp "$strict" --method ties --density 0.1 --mem 32M --threads 2
ref_case dare-ties-small-pread "$L" 3 --cmp "$strict" --method dare_ties --density 0.2 --seed 5 \
    --threads 1 --io pread --mem 32M
ref_case ties-exact-bf16-n5  "$B" 5 --cmp "$strict" --method ties --density 0.1 --exact
ref_case ties-exact-f16-n3   "$H" 3 --cmp "$strict" --method ties --density 0.05 --exact
ref_case ties-exact-tensor   "$B" 3 --cmp "$strict" --method ties --density 0.3 --scope tensor --exact
ref_case dare-ties-bf16-n3   "$B" 3 --cmp "$strict" --method dare_ties --density 0.3 --seed 7
ref_case dare-ties-f32-n5    "$F" 5 --cmp "$strict" --method dare_ties --density 0.1 --seed 8 --lambda 0.9
ref_case dare-ties-tensor    "$H" 3 --cmp "$strict" --method dare_ties --density 0.5 --seed 9 --scope tensor
finish

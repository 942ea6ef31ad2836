#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# ref_baselines.sh — task arithmetic, linear and dare_linear against the NumPy reference. They have
# no statistics, so every element must be within 1 ulp of the reference and the kept counts equal
# (task arithmetic counts every element; DARE counts what its counter-based mask keeps).
. "$(dirname "$0")/lib.sh"
need_ref

B=$TMP/bf16 H=$TMP/f16 F=$TMP/f32 S=$TMP/shard
gen "$B" --tasks 5 --dtype bf16 --seed 31
gen "$H" --tasks 3 --dtype f16 --params 300K --seed 32
gen "$F" --tasks 3 --dtype f32 --params 300K --seed 33
gen "$S" --tasks 3 --dtype bf16 --params 1M --seed 34 --shard-size 1M
L=$TMP/small
gen "$L" --tasks 3 --dtype bf16 --preset small --seed 35
strict="--max-ulp 1 --kept-tol-abs 0 --kept-tol-rel 0"

ref_case ta-bf16-n2          "$B" 2 --cmp "$strict" --method task_arithmetic
ref_case ta-bf16-n5-lambda   "$B" 5 --cmp "$strict" --method task_arithmetic --lambda 0.4
ref_case ta-f16-lambdas      "$H" 3 --cmp "$strict" --method task_arithmetic --lambdas 0.5,1.25,0.3
ref_case ta-f32-n3           "$F" 3 --cmp "$strict" --method task_arithmetic --lambda 0.7
ref_case ta-f32-to-bf16      "$F" 3 --cmp "$strict" --method task_arithmetic --dtype bf16
ref_case ta-bf16-to-f32      "$B" 3 --cmp "$strict" --method task_arithmetic --dtype f32
ref_case ta-sharded          "$S" 3 --cmp "$strict" --method task_arithmetic --lambda 0.5
ref_case ta-exclude          "$B" 3 --cmp "$strict" --method task_arithmetic --exclude 'norm' --exclude '^lm_head'
ref_case ta-d0               "$B" 2 --cmp "$strict" --method task_arithmetic --exclude '.*'
ref_case ta-small-mem32M      "$L" 3 --cmp "$strict" --method task_arithmetic --lambda 0.6 --mem 32M --threads 2
ref_case dare-linear-small-pread "$L" 3 --cmp "$strict" --method dare_linear --density 0.1 --seed 6 \
    --threads 1 --io pread --mem 32M
ref_case linear-bf16-equal   "$B" 5 --cmp "--max-ulp 1 --no-kept" --method linear
ref_case linear-f16-weights  "$H" 3 --cmp "--max-ulp 1 --no-kept" --method linear --weights 0.2,0.5,0.3
ref_case linear-f32-weights  "$F" 3 --cmp "--max-ulp 1 --no-kept" --method linear --weights 3,1,2
ref_case dare-linear-bf16    "$B" 3 --cmp "$strict" --method dare_linear --density 0.3 --seed 1
ref_case dare-linear-f16     "$H" 3 --cmp "$strict" --method dare_linear --density 0.1 --seed 2 --lambda 0.5
ref_case dare-linear-f32     "$F" 3 --cmp "$strict" --method dare_linear --density 0.7 --seed 3 --lambdas 1,0.5,2
ref_case dare-linear-sharded "$S" 3 --cmp "$strict" --method dare_linear --density 0.2 --seed 4
finish

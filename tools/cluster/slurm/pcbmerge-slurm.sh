#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# pcbmerge-slurm.sh — one merge split across a Slurm cluster, as job arrays chained with
# --dependency=afterok over a shared output directory:
#
#   plan (here, at once: every input is validated before anything is queued)
#   -> [stats array (K tasks) -> reduce] x R   (R = the most statistics rounds the merge can
#                                               need; rounds it does not need finish at once)
#   -> apply array (K tasks) -> finalize
#
# Usage:
#   pcbmerge-slurm.sh --parts K --base BASE --out DIR [merge options] TASK...
#       plan the merge into DIR (the options of `pcbmerge plan`) and submit the whole pipeline
#   pcbmerge-slurm.sh --resume DIR
#       after a failure (a part crashed, was preempted or cancelled): cancel this merge's jobs that
#       still wait, and submit only what is left: the parts whose part of the pending statistics
#       round or whose output files are missing, the rounds after it, finalize
#
# Environment:
#   PCBMERGE      the pcbmerge binary the jobs run (default: pcbmerge from PATH, as an absolute path)
#   PCBM_RUN_ARGS run-time options of every phase, e.g. "--mem 16G --threads 32"
#   SBATCH_ARGS   extra sbatch options of every job, e.g. "--partition=cpu --time=4:00:00
#                 --cpus-per-task=32"
#   PCBM_LOGS     directory of the jobs' logs (default: DIR.slurm-logs)
# Every job is named pcbmerge:NAME:PHASE (NAME = DIR's base name); `pcbmerge status --plan DIR`
# tells where the merge stands. Prints the job ids it submitted, one "phase id" per line.
set -euo pipefail

die() { echo "pcbmerge-slurm: $*" >&2; exit 1; }

PCBMERGE=${PCBMERGE:-$(command -v pcbmerge || true)}
[ -n "$PCBMERGE" ] && [ -x "$PCBMERGE" ] || die "pcbmerge not found: put it on PATH or set PCBMERGE"
case $PCBMERGE in /*) ;; *) PCBMERGE=$(cd "$(dirname "$PCBMERGE")" && pwd)/$(basename "$PCBMERGE") ;; esac
command -v sbatch >/dev/null || die "sbatch not found: run this where Slurm's commands are"
read -r -a RUN_ARGS <<<"${PCBM_RUN_ARGS:-}"
read -r -a SB_ARGS <<<"${SBATCH_ARGS:-}"

resume=0
DIR=
if [ "${1:-}" = --resume ]; then
    [ $# -eq 2 ] || die "usage: $0 --resume DIR"
    resume=1
    DIR=$2
else
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        [ "${args[i]}" = --out ] && [ $((i + 1)) -lt ${#args[@]} ] && DIR=${args[i + 1]}
        case ${args[i]} in --out=*) DIR=${args[i]#--out=} ;; esac
    done
    [ -n "$DIR" ] || die "usage: $0 --parts K --base BASE --out DIR [merge options] TASK... (or --resume DIR)"
    "$PCBMERGE" plan "$@" || die "the plan failed (see above): nothing was submitted"
fi
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
NAME=pcbmerge:$(basename "$DIR")
LOGS=${PCBM_LOGS:-$DIR.slurm-logs}
mkdir -p "$LOGS"
status() { "$PCBMERGE" status --plan "$DIR" --get "$1"; }
K=$(status parts)
NEXT=$(status next)
[ "$NEXT" = done ] && { echo "pcbmerge-slurm: $DIR is already published" >&2; exit 0; }

if [ $resume = 1 ]; then
    # the jobs of an earlier submission that still wait would run after (or never): gone
    for phase in stats reduce apply finalize; do
        scancel --name="$NAME:$phase" --state=PENDING >/dev/null 2>&1 || true
    done
fi

q() { printf '%q ' "$@"; }
PHASE_CMD() { # PHASE: the command line a job of that phase runs
    q "$PCBMERGE" "$1" --plan "$DIR" ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} --progress none
}

DEP=()
LAST=
submit() { # PHASE ARRAY(or "") : submit one job (array) after LAST, set LAST
    local phase=$1 array=$2 id
    local opts=(--parsable --job-name="$NAME:$phase" -o "$LOGS/$phase-%A_%a.log")
    [ -n "$array" ] && opts+=(--array="$array")
    [ -n "$array" ] || opts=(--parsable --job-name="$NAME:$phase" -o "$LOGS/$phase-%j.log")
    [ -n "$LAST" ] && opts+=(--dependency=afterok:"$LAST")
    id=$(sbatch "${opts[@]}" ${SB_ARGS[@]+"${SB_ARGS[@]}"} --wrap "$(PHASE_CMD "$phase")") ||
        die "sbatch failed for $phase"
    id=${id%%;*}
    echo "$phase $id"
    LAST=$id
}

if [ "$NEXT" = stats ]; then
    ROUNDS=$(status rounds_left)
    ALL="0-$((K - 1))"
    for ((r = 0; r < ROUNDS; r++)); do
        parts=$ALL
        if [ $r = 0 ] && [ $resume = 1 ]; then
            parts=$(status pending_stats)
        fi
        [ -n "$parts" ] && submit stats "$parts"
        submit reduce ""
    done
    NEXT=apply
fi
if [ "$NEXT" = apply ]; then
    parts="0-$((K - 1))"
    [ $resume = 1 ] && parts=$(status pending_apply)
    [ -n "$parts" ] && submit apply "$parts"
fi
submit finalize ""
echo "pcbmerge-slurm: submitted; follow with: $PCBMERGE status --plan $DIR (logs in $LOGS)" >&2

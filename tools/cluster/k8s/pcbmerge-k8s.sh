#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# pcbmerge-k8s.sh — one merge split across a Kubernetes cluster: every phase a Job (job.yaml.in
# beside this script), stats and apply as Indexed Jobs of K pods (JOB_COMPLETION_INDEX is the
# part), all on one ReadWriteMany volume holding the models and the output directory:
#
#   plan -> [stats (Indexed, K) -> reduce] until reduce says the statistics are complete
#        -> apply (Indexed, K) -> finalize
#
# Usage:
#   pcbmerge-k8s.sh --image IMAGE --pvc CLAIM [options] -- --parts K --base BASE --out DIR
#                   [merge options] TASK...          paths as the pods see them (under --mount)
#   pcbmerge-k8s.sh --image IMAGE --pvc CLAIM [options] --resume DIR
#                                                    continue after a failure: the phases that are
#                                                    done finish at once, the rest runs
# Options:
#   --mount PATH       where the volume is mounted in the pods (default /data)
#   --cpus N           CPU request of a pod (default 2); --memory Q memory of a pod (default 2Gi,
#                      keep it above pcbmerge's --mem + 64Mi)
#   --parallelism P    pods of an Indexed Job running at once (default K)
#   --namespace NS     (default: kubectl's)
#   --dry-run          print the manifests of every phase instead of applying them
# Environment: PCBM_RUN_ARGS (run-time options of every phase, default "--mem 1G"), KUBECTL.
# Images: any image with pcbmerge on PATH (make install PREFIX=/usr/local in a Debian image with
# liburing2, libzstd1, libxxhash0, libjansson4, libyajl2, libgsl27).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "pcbmerge-k8s: $*" >&2; exit 1; }
KUBECTL=${KUBECTL:-kubectl}
IMAGE= PVC= MOUNT=/data CPUS=2 MEMORY=2Gi PARALLELISM= NS=() DRY=0 RESUME=
while [ $# -gt 0 ]; do
    case $1 in
    --image) IMAGE=$2; shift 2 ;;
    --pvc) PVC=$2; shift 2 ;;
    --mount) MOUNT=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --memory) MEMORY=$2; shift 2 ;;
    --parallelism) PARALLELISM=$2; shift 2 ;;
    --namespace) NS=(-n "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --resume) RESUME=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see the head of $0)" ;;
    esac
done
[ -n "$IMAGE" ] && [ -n "$PVC" ] || die "--image and --pvc are required"
command -v envsubst >/dev/null || die "envsubst is missing (apt-get install gettext-base)"
[ $DRY = 1 ] || command -v "$KUBECTL" >/dev/null || die "$KUBECTL not found"
RUN_ARGS=${PCBM_RUN_ARGS:---mem 1G}

# The output directory and K from the plan's arguments (or --resume DIR).
DIR=$RESUME K=
PLAN_ARGS=("$@")
for ((i = 0; i < ${#PLAN_ARGS[@]}; i++)); do
    case ${PLAN_ARGS[i]} in
    --out) DIR=${PLAN_ARGS[i + 1]:-} ;;
    --out=*) DIR=${PLAN_ARGS[i]#--out=} ;;
    --parts) K=${PLAN_ARGS[i + 1]:-} ;;
    --parts=*) K=${PLAN_ARGS[i]#--parts=} ;;
    esac
done
[ -n "$DIR" ] || die "give the plan's arguments after -- (with --out DIR and --parts K), or --resume DIR"
[ -n "$RESUME" ] || [ -n "$K" ] || die "the plan's arguments need --parts K"

# Job names: DNS labels, unique per output directory.
base=$(basename "$DIR" | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-' | cut -c1-30)
MERGE_LABEL=pcbm-${base:-merge}-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
q() { printf '%q ' "$@"; }

render() { # PHASE SUFFIX MODE COMPLETIONS COMMAND
    local phase=$1 suffix=$2
    export JOB_NAME=$MERGE_LABEL-$phase$suffix PHASE=$phase MERGE_LABEL IMAGE PVC MOUNT CPUS MEMORY
    export COMPLETION_MODE=$3 COMPLETIONS=$4 PARALLELISM=${PARALLELISM:-$4}
    export BACKOFF_LIMIT=$((6 * $4))
    COMMAND=$(printf '%s' "$5" | sed 's/\\/\\\\/g; s/"/\\"/g')
    export COMMAND
    envsubst <"$HERE/job.yaml.in"
}

# run PHASE SUFFIX MODE COMPLETIONS COMMAND: create the Job, wait for it; its last log line on stdout
run() {
    local name=$MERGE_LABEL-$1$2 s i
    if [ $DRY = 1 ]; then
        { echo "---"; render "$@"; } >&3  # the script's own stdout, also when run's is captured
        return 0
    fi
    "$KUBECTL" "${NS[@]}" delete job "$name" --ignore-not-found >/dev/null
    render "$@" | "$KUBECTL" "${NS[@]}" apply -f - >/dev/null
    echo "pcbmerge-k8s: $1$2 running (job $name)" >&2
    for ((i = 0; ; i++)); do
        s=$("$KUBECTL" "${NS[@]}" get job "$name" -o jsonpath='{.status.conditions[*].type}' 2>/dev/null || true)
        case " $s " in
        *" Complete "*) break ;;
        *" Failed "*) die "job $name failed: see kubectl logs -l job-name=$name; fix the cause and run again with --resume $DIR" ;;
        esac
        sleep 5
    done
    "$KUBECTL" "${NS[@]}" logs "job/$name" --tail=1 2>/dev/null || true
}

exec 3>&1
PB=pcbmerge
RT=$(q $RUN_ARGS)
if [ -z "$RESUME" ]; then
    run plan "" NonIndexed 1 "$PB plan $(q "${PLAN_ARGS[@]}") && $PB status --plan $(q "$DIR") --get parts" >/dev/null
fi
if [ $DRY = 1 ]; then
    K=${K:-K}
else
    K=$(run status "" NonIndexed 1 "$PB status --plan $(q "$DIR") --get parts")
    [[ $K =~ ^[0-9]+$ ]] || die "cannot read the plan of $DIR (got '$K')"
fi
NEXT=stats
[ $DRY = 1 ] || NEXT=$(run status "" NonIndexed 1 "$PB status --plan $(q "$DIR") --get next")
r=0
while [ "$NEXT" = stats ] && [ $r -lt 16 ]; do
    run stats "-r$r" Indexed "$K" "$PB stats --plan $(q "$DIR") $RT --progress none" >/dev/null
    NEXT=$(run reduce "-r$r" NonIndexed 1 "$PB reduce --plan $(q "$DIR") $RT && $PB status --plan $(q "$DIR") --get next")
    [ $DRY = 1 ] && NEXT=apply
    r=$((r + 1))
done
[ "$NEXT" = stats ] && die "the statistics are still not complete after 16 rounds: see $PB status --plan $DIR"
if [ "$NEXT" != done ]; then
    run apply "" Indexed "$K" "$PB apply --plan $(q "$DIR") $RT --progress none" >/dev/null
    run finalize "" NonIndexed 1 "$PB finalize --plan $(q "$DIR") $RT" >/dev/null
fi
[ $DRY = 1 ] || echo "pcbmerge-k8s: $DIR is published" >&2

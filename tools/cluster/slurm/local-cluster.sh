#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# local-cluster.sh — a single-node Slurm cluster on localhost, for tests and for trying the split
# merge on one machine: Debian's munge and slurm-wlm daemons, every file (key, sockets, state,
# logs, slurm.conf) inside one private directory, nothing in /etc touched, ports 16817/16818.
#
#   tools/cluster/slurm/local-cluster.sh start DIR   starts munged, slurmctld and slurmd; prints the
#                                            `export SLURM_CONF=...` line the Slurm commands need
#   tools/cluster/slurm/local-cluster.sh stop DIR    stops them
#
# Needs root (the daemons run as root here) and the packages munge, slurmctld, slurmd and
# slurm-client (apt-get install munge slurmctld slurmd slurm-client). Exit status 3 when a daemon
# cannot start (the reason is printed, with the log's last lines).
set -u
cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
CTLD_PORT=${PCBM_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${PCBM_SLURMD_PORT:-16818}

stop() {
    if [ -f "$DIR/slurm.conf" ]; then
        SLURM_CONF=$DIR/slurm.conf scontrol shutdown >/dev/null 2>&1
        local i
        for i in $(seq 50); do
            [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null || break
            sleep 0.1
        done
    fi
    local p
    for p in slurmd.pid slurmctld.pid; do
        [ -f "$DIR/$p" ] && kill "$(cat "$DIR/$p")" 2>/dev/null
    done
    [ -S "$DIR/munge/socket" ] && munged --stop --socket="$DIR/munge/socket" >/dev/null 2>&1
    rm -f "$DIR"/*.pid
    return 0
}

cannot() { # REASON [LOG]
    echo "local-cluster: $1" >&2
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 5 "$2" | sed 's/^/    /' >&2
    stop
    exit 3
}

start() {
    local b
    for b in munged slurmctld slurmd sbatch scontrol; do
        command -v "$b" >/dev/null || cannot "$b is not installed (apt-get install munge slurmctld slurmd slurm-client)"
    done
    [ "$(id -u)" = 0 ] || cannot "the daemons need root here"
    mkdir -p "$DIR" && chmod 700 "$DIR" || cannot "cannot create $DIR"
    DIR=$(cd "$DIR" && pwd)
    mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 700 "$DIR/munge"
    if [ ! -f "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    munged --force --socket="$DIR/munge/socket" --key-file="$DIR/munge/munge.key" \
        --log-file="$DIR/log/munged.log" --pid-file="$DIR/munged.pid" \
        --seed-file="$DIR/munge/seed" >/dev/null 2>&1 || cannot "munged did not start" "$DIR/log/munged.log"
    local host
    host=$(hostname -s)
    cat >"$DIR/slurm.conf" <<EOF
# written by pcbmerge tools/cluster/slurm/local-cluster.sh: a single-node cluster on localhost
ClusterName=pcbmerge-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$DIR/slurm.conf
    slurmctld -i >/dev/null 2>&1 || cannot "slurmctld did not start" "$DIR/log/slurmctld.log"
    slurmd >/dev/null 2>&1 || cannot "slurmd did not start" "$DIR/log/slurmd.log"
    local i
    for i in $(seq 100); do
        sinfo -h -o %t 2>/dev/null | grep -qx idle && { echo "export SLURM_CONF=$DIR/slurm.conf"; return 0; }
        sleep 0.2
    done
    cannot "the node did not become idle within 20 s" "$DIR/log/slurmctld.log"
}

case $cmd in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

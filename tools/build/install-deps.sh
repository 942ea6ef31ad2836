#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# install-deps.sh — make sure the Debian packages a target needs are installed.
# Usage: tools/build/install-deps.sh build|test|fuzz|bench
# (test: munge and Slurm's daemons run a single-node cluster for tests/integration/split_slurm.sh)
# (strace: the kill-at-every-syscall cases of tests/integration/adversarial.sh)
# Installs what is missing with apt-get when root (or through sudo when available); otherwise
# prints the exact command to run and exits 1, which stops make.
set -eu

build="gcc make pkg-config liburing-dev libzstd-dev libxxhash-dev libjansson-dev libyajl-dev libgsl-dev libyaml-dev"
case "${1:-build}" in
build) want="$build" ;;
test) want="$build libcmocka-dev python3-numpy python3-yaml gettext-base munge slurmctld slurmd slurm-client strace" ;;
fuzz) want="$build clang libclang-rt-14-dev" ;;
bench) want="$build python3-numpy" ;;
*) echo "install-deps.sh: unknown set '$1' (build|test|fuzz|bench)" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "pcbmerge needs these packages:$missing — install them with your package manager." >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    echo "pcbmerge needs packages that are not installed. Run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# An install from a stale package list fails; refresh it first (quietly) and retry once.
$sudo apt-get install -y -qq $missing >/dev/null 2>&1 || {
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq $missing >/dev/null
}

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# split_k8s.sh — tools/cluster/k8s/pcbmerge-k8s.sh and its Job manifests, without a cluster: the driver
# runs against a stand-in kubectl that parses every manifest it is given (YAML), checks it is a
# batch/v1 Job whose name is a DNS label, whose stats/apply phases are Indexed Jobs of K pods,
# and runs the pod's command as a pod would (sh -c, JOB_COMPLETION_INDEX set for each index of
# an Indexed Job, pcbmerge on PATH as in the image). The merge it publishes must be the bytes of a
# single-machine merge (pcb, K = 3), and --resume after the end must be a no-op. --dry-run prints
# the manifests of every phase.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen
"$PY" -c 'import yaml' 2>/dev/null || skip "python3-yaml is missing (make test-deps installs it)"
command -v envsubst >/dev/null || skip "envsubst is missing (gettext-base; make test-deps installs it)"

F=$TMP/fam
gen "$F" --tasks 3 --dtype bf16 --preset small --seed 13
T="$F/task1 $F/task2 $F/task3"
COMMON="--shard-size 1MB --quiet"
K8S=$PCBM_ROOT/tools/cluster/k8s/pcbmerge-k8s.sh

mkdir -p "$TMP/bin" "$TMP/kube"
ln -s "$PCBM_BIN" "$TMP/bin/pcbmerge"
cat >"$TMP/bin/kubectl" <<'EOF'
#!/usr/bin/python3
# A stand-in for kubectl: apply runs the Job's pods here, get/logs report on them.
import os, re, subprocess, sys, yaml
state = os.environ["FAKE_KUBE_DIR"]
args = [a for a in sys.argv[1:]]
if args[:1] == ["-n"]:
    args = args[2:]
def fail(msg):
    print("fake kubectl: " + msg, file=sys.stderr)
    sys.exit(1)
if args[0] == "delete":
    sys.exit(0)
if args[0] == "apply":
    doc = yaml.safe_load(sys.stdin.read())
    if doc.get("apiVersion") != "batch/v1" or doc.get("kind") != "Job":
        fail("not a batch/v1 Job")
    name = doc["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        fail("job name %r is not a DNS label" % name)
    spec = doc["spec"]
    phase = doc["metadata"]["labels"]["pcbmerge/phase"]
    indexed = spec["completionMode"] == "Indexed"
    if (phase in ("stats", "apply")) != indexed:
        fail("%s: completionMode %s" % (name, spec["completionMode"]))
    pod = spec["template"]["spec"]
    if pod["restartPolicy"] != "OnFailure" or pod["volumes"][0]["persistentVolumeClaim"]["claimName"] != "models":
        fail("pod spec")
    c = pod["containers"][0]
    assert c["command"] == ["/bin/sh", "-c"], c["command"]
    out, ok = "", True
    for i in range(int(spec["completions"])):
        env = dict(os.environ)
        if indexed:
            env["JOB_COMPLETION_INDEX"] = str(i)
        p = subprocess.run(["/bin/sh", "-c", c["args"][0]], env=env, capture_output=True, text=True)
        sys.stderr.write(p.stderr)
        out += p.stdout
        ok = ok and p.returncode == 0
    with open(os.path.join(state, name + ".log"), "w") as f:
        f.write(out)
    with open(os.path.join(state, name + ".state"), "w") as f:
        f.write("Complete" if ok else "Failed")
    with open(os.path.join(state, "jobs"), "a") as f:
        f.write("%s %s %s\n" % (name, spec["completionMode"], spec["completions"]))
    sys.exit(0)
if args[0] == "get":
    print(open(os.path.join(state, args[2] + ".state")).read())
    sys.exit(0)
if args[0] == "logs":
    name = args[1].split("/", 1)[1]
    lines = open(os.path.join(state, name + ".log")).read().splitlines()
    print(lines[-1] if lines else "")
    sys.exit(0)
fail("unexpected: %s" % " ".join(sys.argv[1:]))
EOF
chmod +x "$TMP/bin/kubectl"
export FAKE_KUBE_DIR=$TMP/kube
export PATH=$TMP/bin:$PATH
export PCBM_RUN_ARGS="--threads 2 --quiet"

"$PCBM_BIN" merge $COMMON --threads 2 --base "$F/base" --out "$TMP/ref" $T || fail "single merge"
if "$K8S" --image example/pcbmerge --pvc models -- --parts 3 $COMMON --base "$F/base" \
    --out "$TMP/out k8s" $T >"$TMP/driver.log" 2>&1 && msg=$(same_outputs "$TMP/ref" "$TMP/out k8s"); then
    case_pass "Jobs run as pods would: the bytes of a single merge" \
        "$(grep -c . "$FAKE_KUBE_DIR/jobs") jobs"
else
    case_fail "driver" "${msg:-} $(tail -n 5 "$TMP/driver.log")"
fi
n_idx=$(grep -c ' Indexed 3$' "$FAKE_KUBE_DIR/jobs")
n_stats=$(grep -c -- '-stats-r[0-9]* Indexed 3$' "$FAKE_KUBE_DIR/jobs")
[ "$n_stats" = 4 ] && [ "$n_idx" = 5 ] && case_pass "stats (4 rounds) and apply are Indexed Jobs of 3 pods" ||
    case_fail "indexed jobs" "$(cat "$FAKE_KUBE_DIR/jobs")"
"$K8S" --image example/pcbmerge --pvc models --resume "$TMP/out k8s" >"$TMP/resume.log" 2>&1 &&
    case_pass "--resume after the end is a no-op" || case_fail "resume" "$(tail -n 5 "$TMP/resume.log")"
"$K8S" --image example/pcbmerge --pvc models --dry-run -- --parts 5 --base /data/base \
    --out /data/out /data/t1 /data/t2 >"$TMP/dry.yaml" 2>&1 &&
    "$PY" - "$TMP/dry.yaml" <<'EOF' && case_pass "--dry-run prints every phase's manifest" || case_fail "dry-run" "$(head -n 5 "$TMP/dry.yaml")"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
phases = [d["metadata"]["labels"]["pcbmerge/phase"] for d in docs]
assert phases == ["plan", "stats", "reduce", "apply", "finalize"], phases
assert [d["spec"]["completions"] for d in docs] == [1, 5, 1, 5, 1]
EOF
finish

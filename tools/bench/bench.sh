#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench.sh — `make bench`: is a merge bound by the disk? On one generated family (a base and 3 task
# models, bf16, >= 1 GB each, generated once and cached in bench-data/), in one run:
#   1. the disk's floor: raw sequential O_DIRECT read of every input, raw O_DIRECT write of an
#      output-sized file (tools/bench/pcbm-bench.c);
#   2. pcb, ties and task_arithmetic merges with the page cache dropped (root; otherwise said):
#      seconds and GB/s per pass, the floor (reads of the inputs x raw read + raw write),
#      floor / merge time, peak RSS (tools/peak-rss) against --mem + 48 MiB;
#   3. the compute-only rate: the same merges with the inputs in the page cache (PCBM_BUFFERED=1),
#      per pass GB/s and elements per second per thread, against twice what keeping up with
#      2 GB/s of input takes (4 GB/s; for bf16, 1e9 input elements per second per thread);
#   4. tests/reference/pcb_ref.py (in-memory NumPy) and pcbmerge on a family that fits in memory.
#   5. MoE tensor counts: tools/bench/moe-family.py (base + 2 tasks of BENCH_MOE_TENSORS = 100,000
#      tiny tensors each, ~10 MB of header per model), pcb and task_arithmetic merged with
#      --mem 64M: wall time and peak RSS against --mem + 48 MiB (per-tensor costs, not bandwidth).
#   6. LoRA adapters: the base + BENCH_LORA_ADAPTERS (2) adapters of rank BENCH_LORA_RANK (16) on
#      every layer weight (tools/bench/lora-adapters.py), task_arithmetic and pcb: cold time against
#      the floor (the base's reads + the write) and the CPU time forming ΔW costs per element.
# Prints a table; writes bench-data/bench.json (BENCH_JSON). The acceptance targets are in
# README.md ("Performance").
# Environment: BUILD (build), BENCH_DATA (bench-data), BENCH_PARAMS (540M elements per model),
# BENCH_MEM (1G), BENCH_THREADS (2), BENCH_REF_PARAMS (100M), BENCH_METHODS
# ("pcb ties task_arithmetic"), BENCH_SKIP_REF=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/pcbmerge
TOOLS=$BUILD/tools
DATA=${BENCH_DATA:-$ROOT/bench-data}
PARAMS=${BENCH_PARAMS:-540M}
REF_PARAMS=${BENCH_REF_PARAMS:-100M}
MEM=${BENCH_MEM:-1G}
THREADS=${BENCH_THREADS:-2}
METHODS=${BENCH_METHODS:-pcb ties task_arithmetic}
JSON=${BENCH_JSON:-$DATA/bench.json}
PY=/usr/bin/python3
NTASKS=3

for t in "$BIN" "$TOOLS/pcbm-gen" "$TOOLS/pcbm-bench"; do
    [ -x "$t" ] || { echo "bench: $t is missing: run make all" >&2; exit 1; }
done
mkdir -p "$DATA"
WORK=$(mktemp -d "$DATA/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say() { echo "bench: $*" >&2; }

# family DIR PARAMS: generate once (a stamp records how)
family() {
    local dir=$1 params=$2 stamp="bf16 tasks=$NTASKS params=$2 seed=1"
    if [ ! -f "$dir/.stamp" ] || [ "$(cat "$dir/.stamp")" != "$stamp" ]; then
        say "generating $dir ($stamp; once, then cached)"
        rm -rf "$dir"
        "$TOOLS/pcbm-gen" --quiet --out "$dir" --tasks $NTASKS --dtype bf16 --params "$params" --seed 1
        echo "$stamp" >"$dir/.stamp"
    fi
}

inputs() { # the data files of a family
    find "$1/base" "$1"/task? -name '*.safetensors' | sort
}

DROP=1
drop_caches() {
    if [ "$DROP" = 1 ]; then
        "$TOOLS/pcbm-bench" drop-caches 2>/dev/null || { DROP=0; say "cannot drop the page cache (not root): cold-cache numbers are not cold"; }
    fi
}

warm() { cat $(inputs "$1") >/dev/null; }

peak() { # peak OUTJSON CMD...: run CMD under peak-rss (or /usr/bin/time)
    local out=$1
    shift
    if [ -x "$TOOLS/peak-rss" ]; then
        "$TOOLS/peak-rss" --json --output "$out" -- "$@"
    else
        /usr/bin/time -f '{"peak_rss_bytes":%M000,"via":"time"}' -o "$out" "$@"
    fi
}

merge() { # merge FAMILY METHOD OUT: pcbmerge merge with the bench's settings
    local fam=$1 m=$2 out=$3
    rm -rf "$out" "$out.partial"
    peak "$out.rss.json" "$BIN" merge --base "$fam/base" --out "$out" --method "$m" --mem "$MEM" \
        --threads "$THREADS" --progress none --quiet "$fam"/task?
}

FAM=$DATA/family-bf16-n$NTASKS-$PARAMS
family "$FAM" "$PARAMS"
IN_BYTES=$(cat $(inputs "$FAM") | wc -c)
OUT_BYTES=$(cat $(find "$FAM/base" -name '*.safetensors') | wc -c)

# The disk needs many large requests in flight: the floor is the best of two geometries (the
# engine's 4 MiB blocks and 8 MiB ones, 128 in flight, every file at once), each tried twice.
say "raw sequential read of the inputs (O_DIRECT)"
best=""
for geo in "--depth 128 --block 4M" "--depth 128 --block 8M" "--depth 128 --block 4M" \
    "--depth 128 --block 8M"; do
    drop_caches
    # shellcheck disable=SC2086
    "$TOOLS/pcbm-bench" read $geo $(inputs "$FAM") >"$WORK/raw-read-try.json"
    if [ -z "$best" ] || "$PY" -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); sys.exit(0 if a["seconds"] < b["seconds"] else 1)' "$WORK/raw-read-try.json" "$WORK/raw-read.json"; then
        cp "$WORK/raw-read-try.json" "$WORK/raw-read.json"
        best=1
    fi
done
say "raw write of an output-sized file (O_DIRECT + fsync)"
"$TOOLS/pcbm-bench" write --depth 32 --block 4M "$WORK/raw-write.tmp" "$OUT_BYTES" >"$WORK/raw-write.json"
rm -f "$WORK/raw-write.tmp"

# Compute-only runs write into memory (tmpfs) when there is room: buffered writes to the disk's
# filesystem would measure its writeback, not the merge.
HOTDIR=$WORK
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt $((OUT_BYTES / 1024 * 2)) ]; then
    HOTDIR=$(mktemp -d /dev/shm/pcbm-bench.XXXXXX)
    trap 'rm -rf "$WORK" "$HOTDIR"' EXIT
fi

# The virtual disk's speed drifts from one minute to the next: the floor and each cold merge are
# the best of two runs.
for m in $METHODS; do
    for r in 1 2; do
        say "$m: cold cache ($r/2)"
        drop_caches
        merge "$FAM" "$m" "$WORK/cold-$m"
        if [ $r = 1 ] || "$PY" -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); sys.exit(0 if a["seconds"] < b["seconds"] else 1)' "$WORK/cold-$m/merge_report.json" "$WORK/cold-$m.json"; then
            cp "$WORK/cold-$m/merge_report.json" "$WORK/cold-$m.json"
            cp "$WORK/cold-$m.rss.json" "$WORK/cold-$m.rss"
        fi
        rm -rf "$WORK/cold-$m"
    done
    say "$m: inputs in the page cache (PCBM_BUFFERED=1, output in $HOTDIR), best of 2, and 1 thread"
    for r in 1 2 t1; do
        warm "$FAM"
        if [ $r = t1 ]; then
            PCBM_BUFFERED=1 THREADS=1 merge "$FAM" "$m" "$HOTDIR/hot-$m-$r"
        else
            PCBM_BUFFERED=1 merge "$FAM" "$m" "$HOTDIR/hot-$m-$r"
        fi
        cp "$HOTDIR/hot-$m-$r/merge_report.json" "$WORK/hot-$m-$r.json"
        cp "$HOTDIR/hot-$m-$r.rss.json" "$WORK/hot-$m-$r.rss"
        rm -rf "$HOTDIR/hot-$m-$r"
    done
done

REF_TIMES=""
if [ "${BENCH_SKIP_REF:-0}" != 1 ] && "$PY" -c 'import numpy' 2>/dev/null; then
    RFAM=$DATA/family-bf16-n$NTASKS-$REF_PARAMS
    family "$RFAM" "$REF_PARAMS"
    warm "$RFAM"
    t0=$(date +%s.%N)
    "$BIN" merge --base "$RFAM/base" --out "$WORK/ref-ours" --method pcb --mem "$MEM" \
        --threads "$THREADS" --progress none --quiet "$RFAM"/task?
    t1=$(date +%s.%N)
    for math in f32 cr; do
        say "NumPy reference (pcb_ref.py --math $math) on $REF_PARAMS elements per model"
        s0=$(date +%s.%N)
        "$PY" "$ROOT/tests/reference/pcb_ref.py" merge --base "$RFAM/base" --out "$WORK/ref-np-$math" \
            --method pcb --math $math "$RFAM"/task? >/dev/null
        s1=$(date +%s.%N)
        REF_TIMES+="\"$math\":$(awk "BEGIN{print $s1 - $s0}"),"
        rm -rf "$WORK/ref-np-$math"
    done
    REF_TIMES="{${REF_TIMES%,},\"ours\":$(awk "BEGIN{print $t1 - $t0}"),\"params\":\"$REF_PARAMS\"}"
    rm -rf "$WORK/ref-ours"
else
    say "NumPy comparison skipped (BENCH_SKIP_REF=1 or no numpy for $PY)"
    REF_TIMES=null
fi

# MoE tensor counts: planning, headers and scheduling of ~100k tiny tensors per model.
MOE_N=${BENCH_MOE_TENSORS:-100000}
MOE=$DATA/moe-$MOE_N
if [ ! -f "$MOE/.done" ]; then
    say "generating $MOE ($MOE_N tensors per model; once, then cached)"
    rm -rf "$MOE"
    "$PY" "$ROOT/tools/bench/moe-family.py" "$MOE_N" "$MOE" && touch "$MOE/.done"
fi
MOE_JSON=$WORK/moe.json
echo "{\"tensors\": $MOE_N, \"mem\": \"64M\", \"methods\": {" >"$MOE_JSON"
sep=""
for m in pcb task_arithmetic; do
    say "$m: $MOE_N tensors per model, --mem 64M"
    rm -rf "$WORK/moe-$m"
    s0=$(date +%s.%N)
    peak "$WORK/moe-$m.rss" "$BIN" merge --base "$MOE/base" --out "$WORK/moe-$m" --method "$m" \
        --mem 64M --threads "$THREADS" --progress none --quiet "$MOE/task1" "$MOE/task2"
    s1=$(date +%s.%N)
    echo "$sep\"$m\": {\"seconds\": $(awk "BEGIN{print $s1 - $s0}"), \"rss\": $(cat "$WORK/moe-$m.rss")}" >>"$MOE_JSON"
    sep=","
    rm -rf "$WORK/moe-$m"
done
echo "}}" >>"$MOE_JSON"

# LoRA adapters: the base read once per pass, each adapter's task vector formed from its factors.
LORA_N=${BENCH_LORA_ADAPTERS:-2}
LORA_R=${BENCH_LORA_RANK:-16}
LORA=$DATA/lora-$PARAMS-n$LORA_N-r$LORA_R
if [ ! -f "$LORA/.done" ]; then
    say "generating $LORA_N rank-$LORA_R adapters of $FAM/base (once, then cached)"
    rm -rf "$LORA"
    mkdir -p "$LORA"
    "$PY" "$ROOT/tools/bench/lora-adapters.py" "$FAM/base" "$LORA" "$LORA_N" "$LORA_R" \
        >"$LORA/targeted" && touch "$LORA/.done"
fi
LORA_JSON=$WORK/lora.json
echo "{\"adapters\": $LORA_N, \"rank\": $LORA_R, \"targeted\": $(cat "$LORA/targeted"), \"methods\": {" >"$LORA_JSON"
sep=""
for m in task_arithmetic pcb; do
    say "$m: base + $LORA_N rank-$LORA_R adapters, cold cache"
    drop_caches
    rm -rf "$WORK/lora-$m"
    peak "$WORK/lora-$m.rss" "$BIN" merge --base "$FAM/base" --out "$WORK/lora-$m" --method "$m" \
        --mem "$MEM" --threads "$THREADS" --progress none --quiet "$LORA"/adapter*
    cp "$WORK/lora-$m/merge_report.json" "$WORK/lora-$m.cold.json"
    rm -rf "$WORK/lora-$m"
    say "$m: base + adapters, the base in the page cache"
    cat $(find "$FAM/base" -name '*.safetensors') "$LORA"/adapter*/*.safetensors >/dev/null
    PCBM_BUFFERED=1 peak "$WORK/lora-$m-hot.rss" "$BIN" merge --base "$FAM/base" \
        --out "$HOTDIR/lora-$m" --method "$m" --mem "$MEM" --threads "$THREADS" --progress none \
        --quiet "$LORA"/adapter*
    cp "$HOTDIR/lora-$m/merge_report.json" "$WORK/lora-$m.hot.json"
    rm -rf "$HOTDIR/lora-$m"
    echo "$sep\"$m\": {\"cold\": $(cat "$WORK/lora-$m.cold.json"), \"hot\": $(cat "$WORK/lora-$m.hot.json"), \"rss\": $(cat "$WORK/lora-$m.rss"), \"hot_rss\": $(cat "$WORK/lora-$m-hot.rss")}" >>"$LORA_JSON"
    sep=","
done
echo "}}" >>"$LORA_JSON"

"$PY" - "$WORK" "$JSON" "$IN_BYTES" "$OUT_BYTES" "$MEM" "$THREADS" "$DROP" "$REF_TIMES" "$PARAMS" \
    $METHODS <<'EOF'
import json, sys, os
work, out, in_bytes, out_bytes, mem, threads, dropped, ref = sys.argv[1:9]
params = sys.argv[9]
methods = sys.argv[10:]
in_bytes, out_bytes, threads = int(in_bytes), int(out_bytes), int(threads)
def size(s):
    u = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
    return int(float(s[:-1]) * u[s[-1]]) if s[-1] in u else int(s)
mem_b = size(mem)
rd = json.load(open(f"{work}/raw-read.json"))
wr = json.load(open(f"{work}/raw-write.json"))
ELEM = 2  # bf16
NEED = 4e9  # 2 x 2 GB/s of input
res = {"params_per_model": params, "input_bytes": in_bytes, "output_bytes": out_bytes,
       "threads": threads, "mem": mem, "cache_dropped": dropped == "1",
       "raw_read": rd, "raw_write": wr, "methods": {}, "numpy": json.loads(ref)}
rows = []
for m in methods:
    cold = json.load(open(f"{work}/cold-{m}.json"))
    rss = json.load(open(f"{work}/cold-{m}.rss"))
    hots = [(json.load(open(f"{work}/hot-{m}-{r}.json")), json.load(open(f"{work}/hot-{m}-{r}.rss")))
            for r in (1, 2)]
    hot, hrss = min(hots, key=lambda h: h[0]["seconds"])
    one = json.load(open(f"{work}/hot-{m}-t1.json"))
    cpu = (hrss.get("user_seconds") or 0) + (hrss.get("sys_seconds") or 0)
    reads = cold["bytes_read"] / in_bytes
    floor = reads * rd["seconds"] + wr["seconds"] * cold["bytes_written"] / max(wr["bytes"], 1)
    passes = []
    for pc, ph, p1 in zip(cold["passes"], hot["passes"], one["passes"]):
        full = pc["bytes_read"] > 0.5 * in_bytes
        e = {"name": pc["name"], "bytes_read": pc["bytes_read"], "cold_s": pc["seconds"],
             "cold_gbps": pc["bytes_read"] / pc["seconds"] / 1e9 if pc["seconds"] else 0,
             "hot_s": ph["seconds"],
             "hot_gbps": ph["bytes_read"] / ph["seconds"] / 1e9 if ph["seconds"] else 0,
             "hot_elems_per_s_per_thread": ph["bytes_read"] / ELEM / ph["seconds"] / threads
             if ph["seconds"] else 0,
             "one_thread_s": p1["seconds"],
             "one_thread_elems_per_s": p1["bytes_read"] / ELEM / p1["seconds"] if p1["seconds"] else 0,
             "full_read": full}
        passes.append(e)
    full = [p for p in passes if p["full_read"]]
    worst = min(p["hot_gbps"] for p in full) if full else 0
    hot_total = sum(p["bytes_read"] for p in passes) / sum(p["hot_s"] for p in passes)
    r = {"seconds": cold["seconds"], "floor_s": floor, "floor_over_merge": floor / cold["seconds"],
         "merge_over_floor": cold["seconds"] / floor, "reads_of_inputs": reads,
         "stats": cold.get("stats"), "peak_rss": rss.get("peak_rss_bytes"),
         "rss_limit": mem_b + (48 << 20), "hot_seconds": hot["seconds"],
         "hot_gbps_worst_full_pass": worst, "hot_gbps_all_passes": hot_total / 1e9,
         "hot_cpu_seconds": cpu,
         "hot_gbps_per_cpu_second": cold["bytes_read"] / cpu / 1e9 if cpu else None,
         "compute_vs_need": worst * 1e9 / NEED, "passes": passes}
    res["methods"][m] = r
res["moe"] = json.load(open(f"{work}/moe.json"))
lora = json.load(open(f"{work}/lora.json"))
for m, r in lora["methods"].items():
    cold, hot, hrss = r["cold"], r["hot"], r["hot_rss"]
    reads = cold["bytes_read"] / out_bytes             # the base (and the factors) per pass
    r["floor_s"] = reads * out_bytes / (rd["gbps"] * 1e9) + \
        wr["seconds"] * cold["bytes_written"] / max(wr["bytes"], 1)
    r["floor_over_merge"] = r["floor_s"] / cold["seconds"]
    cpu = (hrss.get("user_seconds") or 0) + (hrss.get("sys_seconds") or 0)
    per = lora["targeted"] * lora["adapters"] * len(hot["passes"])
    r["hot_cpu_ns_per_elem_adapter_pass"] = cpu * 1e9 / per if per else None
    del r["cold"]["tasks"], r["hot"]["tasks"]          # keep the JSON small
    r["seconds"], r["hot_seconds"] = cold["seconds"], hot["seconds"]
res["lora"] = lora
json.dump(res, open(out, "w"), indent=1)

gb = lambda b: b / 1e9
print()
print(f"pcbmerge bench: base + 3 tasks, bf16, {params} elements per model "
      f"({gb(in_bytes):.2f} GB of inputs, {gb(out_bytes):.2f} GB out), --mem {mem}, "
      f"{threads} threads" + ("" if dropped == "1" else "  [page cache NOT dropped: not root]"))
print(f"disk floor: raw read {rd['gbps']:.2f} GB/s ({rd['seconds']:.2f} s for the inputs), "
      f"raw write {wr['gbps']:.2f} GB/s ({wr['seconds']:.2f} s)")
print()
hdr = f"{'method':17} {'pass':10} {'read GB':>8} {'cold s':>7} {'cold GB/s':>9} {'hot s':>7} {'hot GB/s':>8} {'Melem/s/thr':>11} {'1-thr Melem/s':>13}"
print(hdr)
print("-" * len(hdr))
for m in methods:
    r = res["methods"][m]
    for p in r["passes"]:
        print(f"{m:17} {p['name']:10} {gb(p['bytes_read']):8.2f} {p['cold_s']:7.2f} {p['cold_gbps']:9.2f} "
              f"{p['hot_s']:7.2f} {p['hot_gbps']:8.2f} {p['hot_elems_per_s_per_thread'] / 1e6:11.0f} "
              f"{p['one_thread_elems_per_s'] / 1e6:13.0f}")
    print(f"{m:17} {'total':10} {r['reads_of_inputs'] * gb(in_bytes):8.2f} {r['seconds']:7.2f} "
          f"{'':9} {r['hot_seconds']:7.2f}")
print()
hdr = f"{'method':17} {'reads':>5} {'floor s':>7} {'merge s':>7} {'floor/merge':>11} {'merge/floor':>11} {'peak RSS':>9} {'limit':>9} {'compute':>8} {'GB/CPU-s':>8}"
print(hdr)
print("-" * len(hdr))
for m in methods:
    r = res["methods"][m]
    print(f"{m:17} {r['reads_of_inputs']:5.2f} {r['floor_s']:7.2f} {r['seconds']:7.2f} "
          f"{r['floor_over_merge']:11.2f} {r['merge_over_floor']:11.2f} "
          f"{r['peak_rss'] / 2**20:8.0f}M {r['rss_limit'] / 2**20:8.0f}M "
          f"{r['compute_vs_need']:7.2f}x {r['hot_gbps_per_cpu_second'] or 0:8.2f}")
print("  floor = reads of the inputs x raw read time + raw write time; compute = slowest full pass with")
print("  the inputs cached, in units of 4 GB/s (twice what keeping up with 2 GB/s of input takes);")
print("  GB/CPU-s = bytes read per second of CPU time (user + system, every thread) with the inputs")
print("  cached: the rate 2 threads would reach with nothing else on the machine is twice that.")
print("  Melem/s: input elements (every model's) per second; hot per thread = 2-thread run / 2;")
print("  keeping up with 2 GB/s of bf16 input twice over takes 1000 Melem/s per thread on 2 threads")
if res["numpy"]:
    n = res["numpy"]
    print()
    print(f"NumPy reference (tests/reference/pcb_ref.py, pcb, {n['params']} elements per model): "
          f"--math f32 {n['f32']:.1f} s, --math cr {n['cr']:.1f} s; pcbmerge {n['ours']:.2f} s: "
          f"{n['f32'] / n['ours']:.0f}x / {n['cr'] / n['ours']:.0f}x faster")
moe = res["moe"]
print()
print(f"MoE tensor counts: base + 2 tasks of {moe['tensors']:,} tensors each, --mem {moe['mem']}, "
      f"{threads} threads")
for m, r in moe["methods"].items():
    peak = r["rss"].get("peak_rss_bytes") or 0
    print(f"  {m:17} {r['seconds']:6.2f} s   peak RSS {peak / 2**20:6.1f} MiB   "
          f"limit (--mem + 48 MiB) {(64 + 48):4d} MiB")
lo = res["lora"]
print()
print(f"LoRA adapters: base + {lo['adapters']} rank-{lo['rank']} adapters targeting "
      f"{lo['targeted'] / 1e6:.0f}M base elements, --mem {mem}, {threads} threads")
for m, r in lo["methods"].items():
    peak = r["rss"].get("peak_rss_bytes") or 0
    print(f"  {m:17} cold {r['seconds']:6.2f} s  floor {r['floor_s']:6.2f} s  "
          f"floor/merge {r['floor_over_merge']:5.2f}  hot {r['hot_seconds']:6.2f} s  "
          f"{r['hot_cpu_ns_per_elem_adapter_pass'] or 0:5.1f} CPU-ns per element per adapter per pass"
          f"  peak RSS {peak / 2**20:5.0f} MiB")
print("  floor = the base's reads at the raw read rate + the raw write; CPU-ns = CPU time (every")
print("  thread) of the cached run per targeted element, adapter and pass: what forming ΔW costs")
print()
print(f"JSON: {out}")
EOF

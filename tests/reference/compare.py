#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""compare.py — compare a merged model with the reference merge (docs/semantics.md, "Judging a
merge against the reference").

  compare.py OUR_DIR REF_DIR [--our-report OUR_DIR/merge_report.json]
             [--ref-report REF_DIR/ref_report.json] [--max-mismatch 1e-4]
             [--kept-tol-abs 2] [--kept-tol-rel 1e-5] [--exact] [--max-ulp U] [--quiet]

Checks: the same tensor names, dtypes and shapes; non-float tensors byte-identical; over all float
output tensors the fraction of elements more than one unit in the last place (of the output dtype)
apart — measured on order-preserving integer keys of the bit patterns, NaN == NaN — is at most
--max-mismatch; per task |kept_ours − kept_ref| ≤ max(kept-tol-abs, kept-tol-rel · d) and the same d.
--exact (for merges run with --exact) tightens the default mismatch bound to 1e-5. --max-ulp U
additionally requires every element within U ulps (task arithmetic / linear: --max-ulp 1).
--base DIR (the merge's base model) makes the mismatch bound cancellation-aware: an element counts
as a mismatch only when it is also more than one ulp off at the scale of the largest operand of
θ_pre + τ_m (max(|θ_pre|, |τ_m|, |θ_m|)). Where θ_m is much smaller than θ_pre and τ_m, a 1-ulp
difference of τ_m (from exp/tanh implementations that differ by an ulp) is many ulps of θ_m; that
matters for f32 outputs, hardly ever for bf16/f16. Both counts are printed.
Prints a short table and a final PASS/FAIL line; exits 0 on PASS, 1 on FAIL, 2 on usage errors.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcb_ref import read_model, decode, FLOAT_DTYPES, RefError  # noqa: E402

MANT = {"F32": (23, -126), "F16": (10, -14), "BF16": (7, -126),  # mantissa bits, min normal exponent
        "F64": (23, -126)}                                        # F64 outputs: float32 values
BITS = {"F32": (np.uint32, 0x7FFFFFFF, 0x80000000),
        "F16": (np.uint16, 0x7FFF, 0x8000),
        "BF16": (np.uint16, 0x7FFF, 0x8000)}


def keys(dtype, raw):
    """Order-preserving signed integer keys of the bit patterns (+0 and -0 share key 0)."""
    ut, mag, sign = BITS[dtype]
    b = np.frombuffer(raw.tobytes(), dtype=np.dtype(ut).newbyteorder("<")).astype(np.int64)
    m = b & mag
    return np.where((b & sign) != 0, -m, m)


def f64_as_f32(raw):
    """F64 outputs hold float32 values (pcbmerge computes in float32): compared as F32."""
    return np.frombuffer(raw.tobytes(), "<f8").astype("<f4").view(np.uint8)


def ulp_diff(dtype, raw_a, raw_b):
    if dtype == "F64":
        dtype, raw_a, raw_b = "F32", f64_as_f32(raw_a), f64_as_f32(raw_b)
    fa, fb = decode(dtype, raw_a), decode(dtype, raw_b)
    d = np.abs(keys(dtype, raw_a) - keys(dtype, raw_b))
    na, nb = np.isnan(fa), np.isnan(fb)
    d = np.where(na & nb, 0, d)
    d = np.where(na ^ nb, np.iinfo(np.int64).max, d)
    return d, fa, fb


def ulp_at(dtype, scale):
    """One unit in the last place of dtype at magnitude `scale` (float64 array)."""
    p, emin = MANT[dtype]
    _, e = np.frexp(scale)                     # scale = f·2^e, 0.5 <= f < 1
    return np.ldexp(1.0, np.maximum(e - 1, emin) - p)


def load_report(path, label, required):
    if path is None or not os.path.isfile(path):
        if required:
            raise RefError("%s report %s not found" % (label, path))
        return None
    with open(path) as f:
        return json.load(f)


def main(argv):
    ap = argparse.ArgumentParser(prog="compare.py")
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--our-report")
    ap.add_argument("--ref-report")
    ap.add_argument("--max-mismatch", type=float, default=None)
    ap.add_argument("--kept-tol-abs", type=float, default=2)
    ap.add_argument("--kept-tol-rel", type=float, default=1e-5)
    ap.add_argument("--max-ulp", type=int, default=None)
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--no-kept", action="store_true", help="skip the kept-count check")
    ap.add_argument("--base", help="the base model: cancellation-aware mismatch count")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.max_mismatch is None:
        a.max_mismatch = 1e-5 if a.exact else 1e-4
    fails = []

    try:
        ours, ref = read_model(a.ours), read_model(a.ref)
        base = read_model(a.base) if a.base else None
        our_rep = load_report(a.our_report or os.path.join(a.ours, "merge_report.json"), "our",
                              a.our_report is not None)
        ref_rep = load_report(a.ref_report or os.path.join(a.ref, "ref_report.json"), "reference",
                              a.ref_report is not None)
    except (RefError, OSError, ValueError) as e:
        print("compare.py: %s" % e)
        print("FAIL")
        return 1

    # --- names, dtypes, shapes
    missing = [n for n in ref if n not in ours]
    extra = [n for n in ours if n not in ref]
    if missing:
        fails.append("%d tensors missing from ours (first: %s)" % (len(missing), missing[0]))
    if extra:
        fails.append("%d extra tensors in ours (first: %s)" % (len(extra), extra[0]))
    total = mism = mism_scaled = 0
    max_ulp = 0
    worst = None
    err2 = ref2 = 0.0
    rows = []
    for name, rt in ref.items():
        ot = ours.get(name)
        if ot is None:
            continue
        if ot.dtype != rt.dtype or ot.shape != rt.shape:
            fails.append("%s: ours %s%s, reference %s%s" % (name, ot.dtype, list(ot.shape), rt.dtype,
                                                            list(rt.shape)))
            continue
        if rt.dtype not in FLOAT_DTYPES:
            if ot.raw.tobytes() != rt.raw.tobytes():
                fails.append("%s (%s, copied): bytes differ" % (name, rt.dtype))
            continue
        d, fo, fr = ulp_diff(rt.dtype, ot.raw, rt.raw)
        n = d.size
        bad = int(np.count_nonzero(d > 1))
        mu = int(d.max()) if n else 0
        fin = np.isfinite(fo) & np.isfinite(fr)
        e2 = float(np.sum((fo[fin].astype(np.float64) - fr[fin]) ** 2))
        r2 = float(np.sum(fr[fin].astype(np.float64) ** 2))
        if base is not None and name in base and base[name].dtype in FLOAT_DTYPES:
            fb = base[name].f32().astype(np.float64)
            r64 = fr.astype(np.float64)
            scale = np.maximum(np.maximum(np.abs(fb), np.abs(r64)), np.abs(r64 - fb))
            far = np.abs(fo.astype(np.float64) - r64) > ulp_at(rt.dtype, scale)
            mism_scaled += int(np.count_nonzero((d > 1) & (far | ~fin)))
        else:
            mism_scaled += bad
        total += n
        mism += bad
        err2 += e2
        ref2 += r2
        if mu > max_ulp:
            max_ulp = mu
            k = int(np.argmax(d))
            worst = (name, k, float(fo[k]), float(fr[k]))
        rows.append((bad, name, rt.dtype, n, mu, int(np.count_nonzero(d == 0))))

    frac = mism / total if total else 0.0
    rel_l2 = (err2 / ref2) ** 0.5 if ref2 > 0 else (0.0 if err2 == 0 else float("inf"))
    if not a.quiet and rows:
        rows.sort(key=lambda r: (-r[0], r[1]))
        print("%-52s %-5s %10s %10s %8s %9s" % ("tensor (worst first)", "dtype", "elements",
                                                ">1ulp", "max ulp", "identical"))
        for bad, name, dt, n, mu, same in rows[:8]:
            mus = "inf" if mu == np.iinfo(np.int64).max else str(mu)
            print("%-52s %-5s %10d %10d %8s %8.4f%%" % (name[-52:], dt, n, bad, mus, 100.0 * same / n if n else 100))
    mus = "inf" if max_ulp == np.iinfo(np.int64).max else str(max_ulp)
    print("float elements %d: %d (%.3g) differ by more than 1 ulp (limit %.3g); max ulp %s; "
          "relative L2 error %.3g" % (total, mism, frac, a.max_mismatch, mus, rel_l2))
    if worst and max_ulp > 1:
        print("worst element: %s[%d] ours %.9g reference %.9g" % worst)
    if base is not None:
        frac_s = mism_scaled / total if total else 0.0
        print("cancellation-aware: %d (%.3g) differ by more than 1 ulp of max(|base|, |tau_m|, "
              "|merged|) (limit %.3g)" % (mism_scaled, frac_s, a.max_mismatch))
        if frac_s > a.max_mismatch:
            fails.append("cancellation-aware mismatch fraction %.3g > %.3g" % (frac_s, a.max_mismatch))
    elif frac > a.max_mismatch:
        fails.append("mismatch fraction %.3g > %.3g" % (frac, a.max_mismatch))
    if a.max_ulp is not None and max_ulp > a.max_ulp:
        fails.append("max ulp difference %s > %d" % (mus, a.max_ulp))

    # --- per-task statistics
    if a.no_kept:
        pass
    elif our_rep is None or ref_rep is None:
        print("kept counts: not checked (%s report missing)" % ("our" if our_rep is None else "reference"))
    else:
        dr, do = ref_rep.get("d"), our_rep.get("d")
        if do is not None and do != dr:
            fails.append("d: ours %s, reference %s (participating sets differ)" % (do, dr))
        tr, to = ref_rep.get("tasks", []), our_rep.get("tasks", [])
        if len(tr) != len(to):
            fails.append("reports list %d (ours) and %d (reference) tasks" % (len(to), len(tr)))
        tol = max(a.kept_tol_abs, a.kept_tol_rel * (dr or 0))
        print("%-5s %12s %12s %6s   %-11s %-11s %-11s %-11s" % ("task", "kept ours", "kept ref", "diff",
                                                                "rel lo", "rel hi", "rel thr", "rel max"))
        for i, (o, r) in enumerate(zip(to, tr)):
            ko, kr = o.get("kept"), r.get("kept")
            diff = None if ko is None or kr is None else ko - kr

            def rel(key):
                x, y = o.get(key), r.get(key)
                if x is None or y is None:
                    return "-"
                return "%.2e" % (abs(x - y) / abs(y) if y else abs(x - y))
            print("%-5d %12s %12s %6s   %-11s %-11s %-11s %-11s" % (i + 1, ko, kr, diff, rel("lo"), rel("hi"),
                                                                   rel("threshold"), rel("max")))
            if diff is None:
                fails.append("task %d: kept missing from a report" % (i + 1))
            elif abs(diff) > tol:
                fails.append("task %d: kept %d vs reference %d (|diff| %d > %g)" % (i + 1, ko, kr, abs(diff), tol))

    for f in fails:
        print("  - " + f)
    print("PASS" if not fails else "FAIL")
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

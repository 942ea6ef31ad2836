#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""mk_geo.py — NumPy reference of mergekit's slerp, nuslerp, model_stock and sce, per tensor,
written from mergekit's source (mergekit/merge_methods/slerp.py, nuslerp.py, model_stock.py,
sce.py, generalized_task_arithmetic.get_mask), with the statistics pcbmerge defines exactly
(docs/semantics.md, "mergekit's geometric and statistical methods"):

- norms and dot products are exact sums (math.fsum of the float64 products of float32 values),
  where mergekit sums float32 products in float32 (torch/NumPy order);
- the scalar coefficients (slerp's s0/s1, nuslerp's sin terms, model_stock's t, sce's weights)
  are computed in float64 from those sums and rounded to float32 once;
- element-wise arithmetic is float32, in mergekit's order of operations;
- the per-vector forms (nuslerp_flatten false, model_stock filter_wise) take the same exact
  sums per vector: nuslerp's vectors lie along the last dimension, or along the first with
  nuslerp_row_wise (mergekit: dim=0 → transpose(0, -1)); model_stock's along the last (a 1-D
  tensor is one row: unsqueeze(0));
- sce's variance per element is float64 (mean, then mean of squared deviations; 0 when every
  task value is equal) rounded to float32; the top-k keeps ties in index order (stable sort).

Contract for the recipe driver (tests/reference/mergekit_ref.py):
    METHODS[name](tensor_name, base, tasks, tparams, gparams, ctx) -> np.ndarray float32
base, tasks: float32 arrays of the tensor's shape; tparams[i]: task i's per-model parameters
({'weight': ...}); gparams: the global ones ({'t', 'select_topk', 'nuslerp_flatten',
'nuslerp_row_wise', 'filter_wise'}); ctx: {'seed', 'task_index', 'shape'}. Absent: mergekit's
default. nuslerp with one task is mergekit's form without base_model (base and task model
interpolated at gparams['t']).

    mk_geo.py merge --base DIR --out DIR --method slerp|nuslerp|model_stock|sce
                    [--t T] [--weights W1,W2] [--select-topk R] [--nuslerp-no-flatten]
                    [--nuslerp-row-wise] [--filter-wise] TASK_DIR...
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcb_ref import read_model, write_model, participating, encode  # noqa: E402

F32 = np.float32


def _dot(a, b):
    """Exact Σ a·b of float32 arrays, rounded once to float64."""
    return math.fsum((a.astype(np.float64).ravel() * b.astype(np.float64).ravel()).tolist())


def slerp(name, base, tasks, tparams, gparams, ctx):
    if len(tasks) != 1:
        raise ValueError("slerp: base plus exactly one model")
    t = float(gparams["t"])
    v0, v1 = base.astype(F32), tasks[0].astype(F32)
    n0, n1 = math.sqrt(_dot(v0, v0)), math.sqrt(_dot(v1, v1))
    d0 = n0 if n0 > 1e-8 else 1.0       # normalize(): only when norm > eps
    d1 = n1 if n1 > 1e-8 else 1.0
    dot = _dot(v0, v1) / (d0 * d1)
    if abs(dot) > 0.9995:                # lerp(t, v0, v1) = (1 - t) * v0 + t * v1
        c0, c1 = F32(1.0 - t), F32(t)
    else:
        th0 = math.acos(dot)
        s0 = math.sin(th0)
        tht = th0 * t
        c0, c1 = F32(math.sin(th0 - tht) / s0), F32(math.sin(tht) / s0)
    return (c0 * v0 + c1 * v1).astype(F32)


def _nuslerp(t, v0, v1):
    """mergekit's nuslerp(t, v0, v1, flatten=True)."""
    n0, n1 = math.sqrt(_dot(v0, v0)), math.sqrt(_dot(v1, v1))
    cos = _dot(v0, v1) / (max(n0, 1e-7) * max(n1, 1e-7))   # _normalize: norm.clamp(min=1e-7)
    cos = min(max(cos, -1.0), 1.0)
    th = math.acos(cos)
    sn = math.sin(th)
    if abs(sn) < 1e-8:                                      # colinear: lerp
        return (F32(1.0 - t) * v0 + F32(t) * v1).astype(F32)
    a, b, s = F32(math.sin((1.0 - t) * th)), F32(math.sin(t * th)), F32(sn)
    return ((a * v0 + b * v1) / s).astype(F32)


def _by_vector(fn, v0, v1, dim0):
    """mergekit's nuslerp(..., flatten=False): with dim 0 (row_wise) the tensors are transposed
    (0, -1) first; the vectors are the last dimension's (every other index picks one)."""
    shape = v0.shape
    if v0.ndim == 0:
        return fn(v0.reshape(1), v1.reshape(1)).reshape(shape)
    if dim0:
        v0, v1 = np.swapaxes(v0, 0, -1), np.swapaxes(v1, 0, -1)
    tshape = v0.shape
    a = np.ascontiguousarray(v0).reshape(-1, tshape[-1])
    b = np.ascontiguousarray(v1).reshape(-1, tshape[-1])
    out = np.empty_like(a)
    for r in range(a.shape[0]):
        out[r] = fn(a[r], b[r])
    out = out.reshape(tshape)
    if dim0:
        out = np.swapaxes(out, 0, -1)
    return np.ascontiguousarray(out).reshape(shape)


def _nuslerp_form(t, v0, v1, gparams):
    if gparams.get("nuslerp_flatten", True):
        return _nuslerp(t, v0, v1)
    return _by_vector(lambda a, b: _nuslerp(t, a, b), v0, v1,
                      bool(gparams.get("nuslerp_row_wise", False)))


def nuslerp(name, base, tasks, tparams, gparams, ctx):
    if len(tasks) == 1:                  # mergekit without base_model: the two models themselves
        return _nuslerp_form(float(gparams["t"]), base.astype(F32), tasks[0].astype(F32), gparams)
    if len(tasks) != 2:
        raise ValueError("nuslerp: exactly two models (plus the base)")
    w = [float(tp.get("weight", 1.0)) for tp in tparams]
    t = 0.5 if abs(w[0] + w[1]) < 1e-6 else w[1] / (w[0] + w[1])
    if base is None:                     # a recipe without base_model: the two models themselves
        return _nuslerp_form(t, tasks[0].astype(F32), tasks[1].astype(F32), gparams)
    v0 = (tasks[0] - base).astype(F32)
    v1 = (tasks[1] - base).astype(F32)
    return (base + _nuslerp_form(t, v0, v1, gparams)).astype(F32)


def _stock_t(off):
    """model_stock's t of the task vectors `off` (one vector each), float32."""
    n = len(off)
    norm = [math.sqrt(_dot(o, o)) for o in off]
    csum, pairs = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            c = _dot(off[i], off[j]) / max(norm[i] * norm[j], 1e-6)
            csum += min(max(c, -1.0), 1.0)
            pairs += 1
    c = csum / pairs
    return F32((n * c) / (1.0 + (n - 1) * c))


def model_stock(name, base, tasks, tparams, gparams, ctx):
    n = len(tasks)
    if n < 2:
        raise ValueError("model_stock: base plus at least two models")
    off = [(x - base).astype(F32) for x in tasks]
    if gparams.get("filter_wise", False) and base.ndim >= 1:
        # one t per row of the last dimension (a 1-D tensor: unsqueeze(0), one row)
        cols = base.shape[-1]
        rows = [o.reshape(-1, cols) for o in off]
        t = np.array([_stock_t([r[k] for r in rows]) for k in range(rows[0].shape[0])], F32)
        t = t.reshape(base.shape[:-1] + (1,))
    else:
        t = _stock_t(off)
    s = tasks[0].astype(F32)
    for x in tasks[1:]:
        s = (s + x).astype(F32)
    w_avg = (s / F32(n)).astype(F32)
    return (t * w_avg + (F32(1.0) - t) * base).astype(F32)


def _sce_variance(tv):
    """float64 variance per element across tasks (sequential in task order), rounded to f32."""
    n = len(tv)
    m = np.zeros(tv[0].size, np.float64)
    same = np.ones(tv[0].size, bool)
    for x in tv:
        m = m + x.ravel().astype(np.float64)
        same &= x.ravel() == tv[0].ravel()
    m = m / n
    v = np.zeros_like(m)
    for x in tv:
        d = x.ravel().astype(np.float64) - m
        v = v + d * d
    var = (v / n).astype(F32)
    var[same] = 0
    return var


def sce(name, base, tasks, tparams, gparams, ctx):
    n = len(tasks)
    topk = float(gparams.get("select_topk", 1.0))
    tv = [(x - base).astype(F32).ravel() for x in tasks]
    d = tv[0].size
    if topk < 1:                          # sce_mask
        if topk <= 0:
            mask = np.zeros(d, bool)
        else:
            var = _sce_variance(tv)
            k = int(F32(np.count_nonzero(var)) * F32(topk))   # torch: int64 * float -> float32
            mask = np.zeros(d, bool)
            if k > 0:
                order = np.argsort(-var.astype(np.float64), kind="stable")
                mask[order[:k]] = True
        tv = [np.where(mask, x, x * F32(0)).astype(F32) for x in tv]
    ms = [_dot(x, x) / d for x in tv]     # sce_weight: mean of squares
    tot = 0.0
    for v in ms:
        tot += v
    w = [F32(1.0 / n) if abs(tot) < 1e-6 else F32(v / tot) for v in ms]
    s = np.zeros(d, F32)                  # get_mask(method="sum"): sign of the sum, >= 0 -> +1
    for x in tv:
        s = (s + x).astype(F32)
    maj = np.where(s >= 0, F32(1), F32(-1))
    acc = np.zeros(d, F32)
    den = np.zeros(d, F32)
    for i, x in enumerate(tv):
        ew = np.where(np.sign(x) == maj, w[i], F32(0)).astype(F32)
        acc = (acc + x * ew).astype(F32)
        den = (den + ew).astype(F32)
    out = base.ravel() + acc / np.maximum(den, F32(1e-6))
    return out.astype(F32).reshape(base.shape)


METHODS = {"slerp": slerp, "nuslerp": nuslerp, "model_stock": model_stock, "sce": sce}


def merge(base_dir, task_dirs, out_dir, method, gparams, weights, report=None, absent="copy"):
    base = read_model(base_dir)
    tasks = [read_model(p) for p in task_dirs]
    names = set(participating(base, tasks, [], absent))
    fn = METHODS[method]
    out = []
    for name, t in base.items():
        if name not in names:
            out.append((name, t.dtype, t.shape, t.raw.tobytes()))
            continue
        b = t.f32().reshape(t.shape)
        has = [i for i, m in enumerate(tasks) if name in m]  # present tasks only (mergekit)
        xs = [tasks[i][name].f32().reshape(t.shape) for i in has]
        tparams = [{"weight": weights[i]} for i in has] if weights else [{} for _ in xs]
        ctx = {"seed": 0, "task_index": has, "shape": tuple(t.shape)}
        r = fn(name, b, xs, tparams, gparams, ctx) if b.size else b
        out.append((name, t.dtype, t.shape, encode(t.dtype, np.asarray(r, F32).ravel())))
    write_model(out_dir, out)
    if report:
        with open(report, "w") as f:
            json.dump({"method": method, "d": int(sum(base[n].numel for n in names)),
                       "tasks": []}, f)


def main(argv):
    ap = argparse.ArgumentParser(prog="mk_geo.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--method", required=True, choices=sorted(METHODS))
    m.add_argument("--t", type=float)
    m.add_argument("--weights")
    m.add_argument("--select-topk", type=float)
    m.add_argument("--nuslerp-no-flatten", action="store_true")
    m.add_argument("--nuslerp-row-wise", action="store_true")
    m.add_argument("--filter-wise", action="store_true")
    m.add_argument("--report", help="a JSON report (method, d): for compare.py --ref-report")
    m.add_argument("--absent", choices=("copy", "skip"), default="copy",
                   help="a tensor some task lacks: copied from the base, or merged over the "
                   "tasks that have it")
    m.add_argument("tasks", nargs="+")
    a = ap.parse_args(argv)
    g = {}
    if a.t is not None:
        g["t"] = a.t
    if a.select_topk is not None:
        g["select_topk"] = a.select_topk
    g["nuslerp_flatten"] = not a.nuslerp_no_flatten
    g["nuslerp_row_wise"] = a.nuslerp_row_wise
    g["filter_wise"] = a.filter_wise
    w = [float(x) for x in a.weights.split(",")] if a.weights else None
    merge(a.base, a.tasks, a.out, a.method, g, w, a.report, a.absent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

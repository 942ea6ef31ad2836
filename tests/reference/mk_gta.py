#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""mk_gta.py — NumPy reference of mergekit's generalized task arithmetic family (ties, dare_ties,
dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear), written from mergekit's
mergekit/merge_methods/generalized_task_arithmetic.py, mergekit/sparsify.py and
mergekit/merge_methods/registry.py, with pcbmerge's documented choices where mergekit's result is
arbitrary or broken (README, "Methods and where they differ from other tools"):

  * ties among equal |τ| at a cut follow a stable sort (the smaller element index first);
  * magnitude with k = int(density·n) = 0 keeps nothing (mergekit asserts);
  * magnitude_outliers keeps the ranks [n_bot, n − n_top) also when n_top = 0 (mergekit's
    indices[n_bot:-0] is empty);
  * the random masks are pcbmerge's counter-based generator (pcb_ref.dare_keep) instead of
    torch.bernoulli; DELLA draws u from its own stream (docs/semantics.md);
  * the L1 rescale's sums are exact (math.fsum), their quotient rounded once to float32.

Library contract (tests/reference/mergekit_ref.py imports it; gta_global for pcbmerge's global
scope, over a whole model):
  METHODS[name](name, base, tasks, tparams, gparams, ctx) -> float32 array of base's shape
    base, tasks[i]: float32 arrays; tparams[i]: task i's per-model parameters for this tensor
    ({'weight', 'density', 'gamma', 'epsilon'}, absent ones take mergekit's defaults); gparams:
    {'lambda', 'normalize', 'rescale'} (absent: the method's default); ctx: {'seed', 'task_index'
    (pcbmerge's 0-based task index of each task), 'shape', and 'name' (the tensor's name, which
    keys the random masks)}.

Command line (whole models, F32 and other float dtypes computed in float32, output in the base's
dtype): mk_gta.py merge --base DIR --out DIR --method M [--density R | --densities D1,...]
[--weights W1,...] [--gamma G | --gammas G1,...] [--epsilon E | --epsilons E1,...] [--lambda L]
[--normalize|--no-normalize] [--rescale|--no-rescale] [--seed S] [--scope tensor|global]
[--report FILE] TASK_DIR...
(--scope global: gta_global, every per-task statistic over the whole model)
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcb_ref import (read_model, write_model, encode, FLOAT_DTYPES, xxh3_64, dare_keep,  # noqa: E402
                     _mix_int, _mix_np, XXH_M64)

F32 = np.float32

# registry.py: consensus, sparsification, default normalize, default rescale
SPEC = {
    "ties": ("sum", "magnitude", True, False),
    "dare_ties": ("sum", "random", False, True),
    "dare_linear": (None, "random", False, True),
    "breadcrumbs": (None, "magnitude_outliers", False, False),
    "breadcrumbs_ties": ("sum", "magnitude_outliers", False, False),
    "della": ("sum", "della_magprune", True, True),
    "della_linear": (None, "della_magprune", False, True),
}

DELLA_SALT = 0x44454C4C41000000  # "DELLA": DELLA's stream differs from DARE's


def rescaled(tau, mask, rescale):
    """sparsify.rescaled_masked_tensor with RescaleNorm.l1 (or none)."""
    masked = np.where(mask, tau, F32(0)).astype(F32)
    if not rescale:
        return masked
    before = math.fsum(np.abs(tau).astype(np.float64).ravel())
    after = math.fsum(np.abs(masked).astype(np.float64).ravel())
    if before < 1e-7 or after < 1e-7:
        return masked
    return (masked * F32(before / after)).astype(F32)


def magnitude(tau, density, rescale):
    if density >= 1:
        return tau, tau.size
    n = tau.size
    k = int(density * n)
    w = np.abs(tau).ravel()
    mask = np.zeros(n, dtype=bool)
    if k > 0:  # mergekit asserts k > 0; pcbmerge keeps nothing
        # the k largest |τ|, equal ones by index (a stable descending sort)
        order = np.lexsort((np.arange(n), -w.astype(np.float64)))
        mask[order[:k]] = True
    mask = mask.reshape(tau.shape)
    return rescaled(tau, mask, rescale), int(mask.sum())


def magnitude_outliers(tau, density, gamma, rescale):
    if density >= 1:
        return tau, tau.size
    n = tau.size
    target_n = int(density * n)
    n_top = int(gamma * n)
    n_bot = n - target_n - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    w = np.abs(tau).ravel()
    order = np.argsort(w, kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[n_bot:n - n_top]] = True  # mergekit: order[n_bot:-n_top], empty when n_top = 0
    mask = mask.reshape(tau.shape)
    return rescaled(tau, mask, rescale), int(mask.sum())


def bernoulli(tau, density, rescale, seed, task, name):
    if density >= 1:
        return tau, tau.size
    mask = dare_keep(seed, task, name, tau.size, density).reshape(tau.shape)
    return rescaled(tau, mask, rescale), int(mask.sum())


def della_u(seed, task, name, numel):
    """DELLA's uniforms: pcbm_rng_u64(seed, dare_stream(task, key) ^ DELLA_SALT, index)."""
    stream = ((xxh3_64(name.encode("utf-8")) + (task + 1) * 0xD1B54A32D192ED03) & XXH_M64) ^ DELLA_SALT
    key = _mix_int(_mix_int((seed & XXH_M64) ^ 0x6A09E667F3BCC909) ^ stream)
    idx = np.arange(1, numel + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        r = _mix_np(np.uint64(key) + idx * np.uint64(0x9E3779B97F4A7C15))
    return (r >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def della_magprune(tau, density, epsilon, rescale, seed, task, name):
    if density >= 1:
        return tau, tau.size
    if density <= 0:
        return np.zeros_like(tau), 0
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    t2 = tau.reshape(1, -1) if tau.ndim < 2 else tau.reshape(tau.shape[0], -1)
    rows, cols = t2.shape
    mag = np.abs(t2)
    ranks = np.empty(t2.shape, dtype=np.float64)
    for r in range(rows):  # ranks within the row, equal values by index (stable)
        ranks[r, np.argsort(mag[r], kind="stable")] = np.arange(cols, dtype=np.float64)
    rank_norm = ranks / (cols - 1) if cols > 1 else np.zeros_like(ranks)
    p = (density - epsilon) + rank_norm * 2 * epsilon
    u = della_u(seed, task, name, tau.size).reshape(t2.shape)
    mask = (u < p).reshape(tau.shape)
    return rescaled(tau, mask, rescale), int(mask.sum())


def gta(name, base, tasks, tparams, gparams, ctx, kept=None):
    """One tensor of `name` (a key of SPEC) as mergekit's GTATask.execute computes it."""
    consensus, sp, dnorm, dresc = SPEC[name]
    normalize = bool(gparams.get("normalize", dnorm))
    rescale = bool(gparams.get("rescale", dresc))
    lam = float(gparams.get("lambda", 1.0))
    if sp in ("random", "della_magprune") and "name" not in ctx:
        raise KeyError("mk_gta.%s: ctx['name'] (the tensor's name) is required: pcbmerge's random "
                       "masks are keyed by it" % name)
    tname = ctx.get("name", "")
    seed = int(ctx.get("seed", 0))
    tix = ctx.get("task_index", list(range(len(tasks))))
    base = np.asarray(base, dtype=F32)
    deltas = []
    for i, th in enumerate(tasks):
        tau = (np.asarray(th, dtype=F32) - base).astype(F32)
        tp = tparams[i]
        d = float(tp.get("density", 1.0))
        if sp == "magnitude":
            v, k = magnitude(tau, d, rescale)
        elif sp == "random":
            v, k = bernoulli(tau, d, rescale, seed, tix[i], tname)
        elif sp == "magnitude_outliers":
            v, k = magnitude_outliers(tau, d, float(tp.get("gamma", 0.01)), rescale)
        else:
            v, k = della_magprune(tau, d, float(tp.get("epsilon", 0.15)), rescale, seed, tix[i],
                                  tname)
        if kept is not None:
            kept[i] += k
        deltas.append(v.astype(F32))
    w = [F32(tp["weight"]) for tp in tparams]
    return mix(consensus, base, deltas, w, normalize, lam)


def mix(consensus, base, deltas, w, normalize, lam):
    """The weighted sum of the sparsified task vectors, with or without the sign consensus."""
    wd = [(deltas[i] * w[i]).astype(F32) for i in range(len(deltas))]
    if consensus:
        s = wd[0].copy()
        for x in wd[1:]:
            s = (s + x).astype(F32)
        maj = np.where(s >= 0, F32(1), F32(-1))
        mixed = np.zeros_like(base)
        div = np.zeros_like(base)
        for i, x in enumerate(wd):
            m = np.sign(x) == maj
            mixed = np.where(m, (mixed + x).astype(F32), mixed)
            div = np.where(m, (div + w[i]).astype(F32), div)
        div = np.where(div == 0, F32(1), div)
    else:
        mixed = np.zeros_like(base)
        for x in wd:
            mixed = (mixed + x).astype(F32)
        ws = F32(0)
        for x in w:
            ws = F32(ws + x)
        div = F32(1) if abs(ws) < 1e-8 else ws
    if normalize:
        mixed = (mixed / div).astype(F32)
    if lam != 1:
        mixed = (mixed * F32(lam)).astype(F32)
    return (base + mixed).astype(F32)


def della_global(tau, density, epsilon, rescale, seed, task, tensors):
    """DELLA over the whole model (tau: the task's flat τ of all merged tensors): the rank of |τ|
    among the model's d elements interpolated in its 16-bit coarse bin b of the float key
    (pcbmerge's rule, docs/semantics.md): q = below(b) + floor(count(b) · (key mod 2^16) / 2^16),
    p = (density − ε) + q / (d − 1) · 2 · ε; u from the per-tensor DELLA draws."""
    if density >= 1:
        return tau, tau.size
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    d = tau.size
    key = np.abs(tau).astype(F32).view(np.uint32) | np.uint32(0x80000000)  # fkey of |τ| (≥ +0)
    b = (key >> np.uint32(16)).astype(np.int64)
    lo = (key & np.uint32(0xFFFF)).astype(np.uint64)
    cnt = np.bincount(b, minlength=1 << 16).astype(np.uint64)
    below = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.uint64)
    q = below[b] + ((cnt[b] * lo) >> np.uint64(16))
    rank_norm = q.astype(np.float64) / (d - 1) if d > 1 else np.zeros(d)
    p = (density - epsilon) + rank_norm * 2 * epsilon
    u = np.concatenate([della_u(seed, task, tn, bt.size) for tn, bt, _ in tensors])
    mask = u < p
    return rescaled(tau, mask, rescale), int(mask.sum())


def gta_global(name, tensors, tparams, gparams, seed=0, kept=None):
    """The whole model in global scope: every per-task statistic over all merged elements at
    once. tensors: [(tensor name, base, [task arrays])] in the order of the global flattening
    (the element's global index = the elements of the tensors before it + its offset); tparams:
    per task {'weight', 'density', 'gamma', 'epsilon'} (one value for the model; weight may also
    be a list, one per tensor). magnitude: k = int(density·d) of the d model elements, equal |τ|
    by global index; outliers: the ranks [n_bot, d − n_top) of the model's |τ|; random: the
    per-tensor masks; DELLA: della_global's interpolated ranks over the model; rescale with the model's Σ|τ| / Σ|masked τ|. Returns the merged arrays, in order."""
    consensus, sp, dnorm, dresc = SPEC[name]
    normalize = bool(gparams.get("normalize", dnorm))
    rescale = bool(gparams.get("rescale", dresc))
    lam = float(gparams.get("lambda", 1.0))
    n = len(tparams)
    scaled = []  # per task: the sparsified, rescaled τ over the tensors it has (flat)
    at = []      # per task: per tensor, the offset of its slice in scaled[i] (None: lacks it)
    for i in range(n):
        own = [(tn, b, ts) for tn, b, ts in tensors if ts[i] is not None]  # present tasks only
        offs, o = [], 0
        for _, b, ts in tensors:
            offs.append(o if ts[i] is not None else None)
            o += b.size if ts[i] is not None else 0
        at.append(offs)
        if not own:
            scaled.append(np.zeros(0, dtype=F32))
            continue
        tau = np.concatenate([(np.asarray(ts[i], dtype=F32) - np.asarray(b, dtype=F32))
                              .astype(F32).ravel() for _, b, ts in own])
        tp = tparams[i]
        d = float(tp.get("density", 1.0))
        if sp == "magnitude":
            v, k = magnitude(tau, d, rescale)
        elif sp == "magnitude_outliers":
            v, k = magnitude_outliers(tau, d, float(tp.get("gamma", 0.01)), rescale)
        elif sp == "della_magprune":
            v, k = della_global(tau, d, float(tp.get("epsilon", 0.15)), rescale, seed, i, own)
        else:
            if d >= 1:
                v, k = tau, tau.size
            else:
                mask = np.concatenate([dare_keep(seed, i, tn, b.size, d) for tn, b, _ in own])
                v, k = rescaled(tau, mask, rescale), int(mask.sum())
        if kept is not None:
            kept[i] += k
        scaled.append(v.astype(F32))
    out = []
    for t, (tn, b, ts) in enumerate(tensors):
        b = np.asarray(b, dtype=F32)
        has = [i for i in range(n) if ts[i] is not None]
        deltas = [scaled[i][at[i][t]:at[i][t] + b.size].reshape(b.shape) for i in has]
        w = [F32(tparams[i]["weight"][t] if isinstance(tparams[i]["weight"], list)
                 else tparams[i]["weight"]) for i in has]
        out.append(mix(consensus, b, deltas, w, normalize, lam))
    return out


def _bind(name):
    return lambda _n, base, tasks, tparams, gparams, ctx: gta(name, base, tasks, tparams,
                                                              gparams, ctx)


METHODS = {m: _bind(m) for m in SPEC}


# ---- whole models ------------------------------------------------------------------------------
def merge(a):
    base = read_model(a.base)
    tasks = [read_model(p) for p in a.tasks]
    n = len(tasks)
    dens = [float(x) for x in a.densities.split(",")] if a.densities else [a.density] * n
    wts = [float(x) for x in a.weights.split(",")] if a.weights else [1.0] * n
    gams = [float(x) for x in a.gammas.split(",")] if a.gammas else [a.gamma] * n
    epss = [float(x) for x in a.epsilons.split(",")] if a.epsilons else [a.epsilon] * n
    tparams = [{"weight": wts[i], "density": dens[i], "gamma": gams[i], "epsilon": epss[i]}
               for i in range(n)]
    gparams = {"lambda": a.lam}
    if a.normalize is not None:
        gparams["normalize"] = a.normalize
    if a.rescale is not None:
        gparams["rescale"] = a.rescale
    kept = [0] * n
    d = 0
    out = []
    if a.scope == "global":
        return merge_global(a, base, tasks, tparams, gparams)
    for name, t in base.items():
        has = present(a, name, t, tasks)
        if not has:
            out.append((name, t.dtype, t.shape, bytes(np.asarray(t.raw))))
            continue
        shape = tuple(t.shape)
        b = t.f32().reshape(shape)
        ts = [tasks[i][name].f32().reshape(shape) for i in has]   # present tasks only
        ctx = {"seed": a.seed, "task_index": has, "shape": shape, "name": name}
        sub = [0] * len(has)
        r = gta(a.method, b, ts, [tparams[i] for i in has], gparams, ctx, sub)
        for j, i in enumerate(has):
            kept[i] += sub[j]
        d += t.numel
        out.append((name, t.dtype, t.shape, encode(t.dtype, r.ravel())))
    write_model(a.out, out)
    rep = {"method": a.method, "d": d, "tasks": [{"kept": k} for k in kept]}
    with open(a.report or os.path.join(a.out, "ref_report.json"), "w") as f:
        json.dump(rep, f)


def present(a, name, t, tasks):
    """The tasks (0-based) whose tensor `name` is merged: all, or none (copied from the base)
    when one lacks it; with --absent skip, those that have it (mergekit passes only the present
    models' tensors to the method)."""
    if t.dtype not in FLOAT_DTYPES:
        return []
    has = [i for i, m in enumerate(tasks) if name in m]
    if not all(tasks[i][name].dtype in FLOAT_DTYPES and tasks[i][name].shape == t.shape
               for i in has):
        return []
    return has if len(has) == len(tasks) or (has and a.absent == "skip") else []


def merge_global(a, base, tasks, tparams, gparams):
    n = len(tasks)
    kept = [0] * n
    out, merged = [], []
    for name, t in base.items():
        has = present(a, name, t, tasks)
        if not has:
            out.append((name, t.dtype, t.shape, bytes(np.asarray(t.raw))))
            continue
        shape = tuple(t.shape)
        merged.append((name, t.f32().reshape(shape),
                       [m[name].f32().reshape(shape) if i in has else None
                        for i, m in enumerate(tasks)]))
        out.append((name, t.dtype, t.shape, None))
    res = gta_global(a.method, merged, tparams, gparams, a.seed, kept)
    it = iter(res)
    for k, (name, dt, shape, raw) in enumerate(out):
        if raw is None:
            out[k] = (name, dt, shape, encode(dt, next(it).ravel()))
    write_model(a.out, out)
    rep = {"method": a.method, "d": sum(b.size for _, b, _ in merged),
           "tasks": [{"kept": k} for k in kept]}
    with open(a.report or os.path.join(a.out, "ref_report.json"), "w") as f:
        json.dump(rep, f)


def main(argv):
    ap = argparse.ArgumentParser(prog="mk_gta.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--method", required=True, choices=sorted(SPEC))
    m.add_argument("--density", type=float, default=1.0)
    m.add_argument("--densities")
    m.add_argument("--weights")
    m.add_argument("--gamma", type=float, default=0.01)
    m.add_argument("--epsilon", type=float, default=0.15)
    m.add_argument("--gammas")
    m.add_argument("--epsilons")
    m.add_argument("--lambda", dest="lam", type=float, default=1.0)
    m.add_argument("--normalize", dest="normalize", action="store_const", const=True, default=None)
    m.add_argument("--no-normalize", dest="normalize", action="store_const", const=False)
    m.add_argument("--rescale", dest="rescale", action="store_const", const=True, default=None)
    m.add_argument("--no-rescale", dest="rescale", action="store_const", const=False)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--mergekit", action="store_true", help="accepted (always mergekit's)")
    m.add_argument("--report")
    m.add_argument("--scope", choices=("tensor", "global"), default="tensor")
    m.add_argument("--absent", choices=("copy", "skip"), default="copy",
                   help="a tensor some task lacks: copied from the base, or merged over the "
                   "tasks that have it")
    m.add_argument("tasks", nargs="+")
    a = ap.parse_args(argv)
    merge(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

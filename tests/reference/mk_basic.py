# SPDX-License-Identifier: Apache-2.0
"""mk_basic.py — mergekit's linear and task_arithmetic per tensor, for mergekit_ref.py (the method
function contract is in its docstring), written from merge_methods/linear.py and
merge_methods/generalized_task_arithmetic.py. Float32 throughout, sums in the models' order.

linear:           res = Σ w_i·θ_i; with normalize (default on) res / Σ w_i.
task_arithmetic:  mixed = Σ w_i·(θ_i − θ_base); with normalize (default off) mixed / Σ w_i, where
                  |Σ w_i| < 1e-8 divides by 1; with lambda ≠ 1 mixed·lambda; θ_base + mixed.
"""
import numpy as np

F32 = np.float32


def _wsum(ws):
    s = F32(0)
    for w in ws:
        s = F32(s + w)
    return s


def linear(name, base, tasks, tparams, gparams, ctx):
    w = [F32(tp["weight"]) for tp in tparams]
    res = np.zeros_like(tasks[0], dtype=F32)
    for wi, x in zip(w, tasks):
        res = (res + wi * x).astype(F32)
    if gparams.get("normalize", True):
        res = (res / _wsum(w)).astype(F32)
    return res


def task_arithmetic(name, base, tasks, tparams, gparams, ctx):
    w = [F32(tp["weight"]) for tp in tparams]
    mixed = np.zeros_like(base, dtype=F32)
    for wi, x in zip(w, tasks):
        mixed = (mixed + wi * (x - base).astype(F32)).astype(F32)
    if gparams.get("normalize", False):
        div = _wsum(w)
        if abs(div) < 1e-8:
            div = F32(1)
        mixed = (mixed / div).astype(F32)
    lam = gparams.get("lambda", 1.0)
    if lam != 1:
        mixed = (mixed * F32(lam)).astype(F32)
    return (base + mixed).astype(F32)


METHODS = {"linear": linear, "task_arithmetic": task_arithmetic}

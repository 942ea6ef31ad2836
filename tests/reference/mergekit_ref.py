#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""mergekit_ref.py — a NumPy reference DRIVER for mergekit recipes, written from mergekit's source
(config.py: evaluate_setting, ConfigReader.parameter, MergeConfiguration; plan.py: the `models:`
form, the layer position t, the base model's handling; merge_methods/*: each method's parameters
and defaults). It reads the recipe with PyYAML, the models with pcb_ref.py's read_model, calls one
per-tensor method function per merged tensor and writes the result with write_model.

  mergekit_ref.py --config R.yml --out DIR [--seed N]     (model paths in the recipe)

Methods live in the dict METHODS, filled from tests/reference/mk_basic.py (linear,
task_arithmetic) and, when present, mk_gta.py and mk_geo.py (the other methods). The contract of a
method function:

`fn(name: str, base: np.ndarray float32 (or None), tasks: list[np.ndarray float32], tparams:
list[dict], gparams: dict, ctx: dict) -> np.ndarray float32` where base and tasks come in the
tensor's shape (DELLA ranks |tau| within rows), tparams[i] holds task i's evaluated per-model
parameters for this tensor ({'weight':..., 'density':..., 'gamma':..., 'epsilon':...} as given or
defaulted), gparams the evaluated global ones ({'lambda', 'normalize', 'rescale', 't',
'select_topk', ...}; absent → the function's default), ctx = {'seed': int, 'task_index': [0-based
pcbmerge task index of each task], 'shape': tuple, 'name': the tensor's name (it keys the random
methods' masks)}.

The driver: the task models are the recipe's models without the base model (mergekit: the base
listed among the models is no task vector), except for linear, which merges every listed model
(mergekit's linear has no base; pcbmerge lays the output out on the first model). A setting is a
scalar, a gradient (numbers interpolated at t·(len−1); non-numbers: element int(t·(len−1))) or a
list of {filter, value} (the first whose filter is absent, "*" or a substring of the tensor name;
none: the next level). Lookup: the model's parameters, the slice's, the recipe's, the method's
default; a required one missing is an error. t = i / (L − 1) for a tensor of layer i (".layers.i.",
".h.i.", ".blocks.i."), L the base's num_hidden_layers (else 1 + the highest layer index); t = 1
when L = 1; 0 for every other tensor. Arithmetic in float32 (pcbmerge's); the output dtype is
out_dtype, else dtype, else each tensor's base dtype.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcb_ref import read_model, write_model, encode, FLOAT_DTYPES, RefError  # noqa: E402

METHODS = {}
import mk_basic  # noqa: E402
METHODS.update(mk_basic.METHODS)
try:
    import mk_gta  # noqa: E402
    METHODS.update(mk_gta.METHODS)
except ImportError:
    pass
try:
    import mk_geo  # noqa: E402
    METHODS.update(mk_geo.METHODS)
except ImportError:
    pass

REQUIRED = object()
GTA_G = {"int8_mask": False, "lambda": 1.0}
# mergekit's parameters (merge_methods/): (whole-merge defaults, per-model defaults)
PARAMS = {
    "linear": ({"normalize": True}, {"weight": REQUIRED}),
    "task_arithmetic": (dict(GTA_G, normalize=False, rescale=False), {"weight": REQUIRED, "density": 1.0}),
    "ties": (dict(GTA_G, normalize=True, rescale=False), {"weight": REQUIRED, "density": 1.0}),
    "dare_ties": (dict(GTA_G, normalize=False, rescale=True), {"weight": REQUIRED, "density": 1.0}),
    "dare_linear": (dict(GTA_G, normalize=False, rescale=True), {"weight": REQUIRED, "density": 1.0}),
    "breadcrumbs": (dict(GTA_G, normalize=False, rescale=False),
                    {"weight": REQUIRED, "density": 1.0, "gamma": 0.01}),
    "breadcrumbs_ties": (dict(GTA_G, normalize=False, rescale=False),
                         {"weight": REQUIRED, "density": 1.0, "gamma": 0.01}),
    "della": (dict(GTA_G, normalize=True, rescale=True),
              {"weight": REQUIRED, "density": 1.0, "epsilon": 0.15}),
    "della_linear": (dict(GTA_G, normalize=False, rescale=True),
                     {"weight": REQUIRED, "density": 1.0, "epsilon": 0.15}),
    "slerp": ({"t": REQUIRED}, {}),
    "nuslerp": ({"nuslerp_row_wise": False, "nuslerp_flatten": True}, {"weight": REQUIRED}),
    "model_stock": ({"filter_wise": False}, {}),
    "sce": ({"int8_mask": False, "select_topk": 1.0}, {}),
}
BASE_IS_INPUT = {"linear"}   # merges every listed model, the base among them (no task vectors)
OUT = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def evaluate_setting(tensor_name, setting, t=0.0):
    """mergekit's config.evaluate_setting (None: no conditional entry matched)."""
    if isinstance(setting, (float, int, bool, str)):
        return setting
    if isinstance(setting, list):
        if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if all(isinstance(e, (float, int, bool, str)) for e in setting):
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            f = cond.get("filter")
            if f is None or f == "*" or (tensor_name and f in tensor_name):
                return evaluate_setting(tensor_name, cond["value"], t)
        return None
    if isinstance(setting, dict):   # one {filter, value}
        return evaluate_setting(tensor_name, [setting], t)
    raise RefError("unexpected setting %r" % (setting,))


LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def layer_t(name, nlayers):
    m = LAYER.search(name)
    if not m:
        return 0.0
    if nlayers <= 1:
        return 1.0
    return int(m.group(1)) / (nlayers - 1)


def num_layers(model_dir, names):
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            n = json.load(f).get("num_hidden_layers")
        if isinstance(n, int) and n > 0:
            return n
    except (OSError, ValueError):
        pass
    idx = [int(m.group(1)) for m in (LAYER.search(n) for n in names) if m]
    return max(idx) + 1 if idx else 1


def parameter(name, levels, tensor, t, default):
    """ConfigReader.parameter: the first level whose setting gives a value."""
    for lv in levels:
        if lv and name in lv:
            v = evaluate_setting(tensor, lv[name], t)
            if v is not None:
                return v
    if default is REQUIRED:
        raise RefError("missing required parameter %s for %s" % (name, tensor))
    return default


def run(config_path, out_dir, seed=0):
    with open(config_path) as f:
        cfg = yaml.safe_load(f)
    method = cfg["merge_method"]
    if method not in METHODS:
        raise RefError("no reference for merge_method %s" % method)
    gdef, mdef = PARAMS.get(method, ({}, {}))
    if "models" in cfg:
        inputs = cfg["models"]
        slice_params = None
    else:
        sl = cfg["slices"][0]
        inputs = sl["sources"]
        slice_params = sl.get("parameters")
    base_ref = cfg.get("base_model")
    models = [m["model"] for m in inputs]
    if method in BASE_IS_INPUT or not base_ref:
        task_ins = list(inputs)
    else:
        task_ins = [m for m in inputs if m["model"] != base_ref]
    layout_dir = base_ref if base_ref else models[0]
    layout = read_model(layout_dir)
    base = read_model(base_ref) if base_ref and method not in BASE_IS_INPUT else None
    tasks = [read_model(m["model"]) for m in task_ins]
    L = num_layers(layout_dir, list(layout))
    out_dt = OUT.get(str(cfg.get("out_dtype") or cfg.get("dtype") or ""), None)
    glevels = [slice_params, cfg.get("parameters")]
    out = []
    for name, bt in layout.items():
        ok = bt.dtype in FLOAT_DTYPES and all(
            name in m and m[name].dtype in FLOAT_DTYPES and m[name].shape == bt.shape for m in tasks)
        dt = bt.dtype if (out_dt is None or bt.dtype not in FLOAT_DTYPES) else out_dt
        if not ok:
            if bt.dtype in FLOAT_DTYPES:
                out.append((name, dt, bt.shape, encode(dt, bt.f32())))
            else:
                out.append((name, bt.dtype, bt.shape, bt.raw.tobytes()))
            continue
        t = layer_t(name, L)
        tparams = [{p: parameter(p, [m.get("parameters")] + glevels, name, t, d)
                    for p, d in mdef.items()} for m in task_ins]
        gparams = {p: parameter(p, glevels, name, t, d) for p, d in gdef.items()}
        ctx = {"seed": seed, "task_index": list(range(len(tasks))), "shape": tuple(bt.shape),
               "name": name}
        shape = tuple(bt.shape)   # in the tensor's shape: DELLA ranks |tau| within rows
        res = METHODS[method](name, None if base is None else base[name].f32().reshape(shape),
                              [m[name].f32().reshape(shape) for m in tasks], tparams, gparams,
                              ctx)
        res = np.asarray(res, dtype=np.float32).reshape(-1)
        out.append((name, dt, bt.shape, encode(dt, res)))
    write_model(out_dir, out)


def main(argv):
    ap = argparse.ArgumentParser(description="mergekit recipe reference (NumPy)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        run(a.config, a.out, a.seed)
    except RefError as e:
        print("mergekit_ref: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

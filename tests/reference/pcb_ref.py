#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pcb_ref.py — an independent, in-memory NumPy implementation of docs/semantics.md.

It is the yardstick the streaming C implementation is compared with (tests/reference/compare.py).
Everything is float32 as docs/semantics.md says: inputs are decoded to float32 exactly, every
operation yields a float32, order statistics come from np.partition on float32 arrays. exp/tanh
are the correctly rounded float32 functions (float64 rounded once; --math f32 selects NumPy's
float32 functions instead, whose last bits depend on the CPU). Only numpy and the standard
library are used (run it with /usr/bin/python3).

  pcb_ref.py merge --base DIR --out DIR --method pcb|ties|task_arithmetic|linear|dare_linear|dare_ties
                   [--density R] [--lambda L] [--lambdas L1,L2,...] [--weights W1,W2,...]
                   [--densities D1,D2,...] [--normalize|--no-normalize] [--rescale|--no-rescale]
                   [--clamp-ratio C] [--scope global|tensor] [--dtype base|bf16|f16|f32]
                   [--exclude REGEX ...] [--seed S] [--allow-nonfinite] [--math cr|f32]
                   [--report FILE] TASK...
  pcb_ref.py selftest

The report (default OUT/ref_report.json) holds "method", "d" and per task lo, hi, threshold, max and
kept (PCB: elements with w_i > 0; TIES: elements kept by the top-k trim, |τ| >= threshold;
DARE: elements the random mask keeps; task arithmetic / linear: d; tensor scope: kept summed over
tensors, per-tensor statistics under "tensors").

Choices the paper leaves open (docs/semantics.md records them; they match src/merge/*.c):
- DARE rescales survivors as τ / float32(density); dare_ties = DARE's drop in place of the top-k
  trim, then TIES's election and disjoint mean; the mask is src/kernels/rng.c's generator
  (task numbers 0-based, element index within the tensor), re-implemented here.
- Per-task λ: PCB as docs/semantics.md says; task arithmetic Σ λ_i·τ_i; TIES
  Σ λ_i·selected_i / count (pcbmerge defines TIES with one λ only).
- Float order: sums over tasks run i = 1..N, one float32 rounding per operation.
- --dtype applies to every float tensor of the output, copied (excluded) ones included.

mergekit's per-model parameters (--weights, --densities, --normalize, --rescale with
task_arithmetic, ties, dare_linear, dare_ties) follow mergekit's generalized task arithmetic as
its source reads (merge_methods/generalized_task_arithmetic.py, sparsify.py), in gta_group():
each task vector is sparsified with its own density, multiplied by its weight, the signs are
elected on the sum of the weighted deltas (ties, dare_ties), the agreeing weighted deltas are
summed and, when normalizing, divided by the sum of the agreeing tasks' weights (a zero divisor
counts as 1; without election: by the sum of all weights), and the result times λ is added to the
base. Where pcbmerge defines the steps otherwise, on purpose, this follows pcbmerge: the top-k is
global with ties at the threshold kept (mergekit: int(density·n) per tensor), a zero elected sum
takes the majority sign (mergekit: +1), dare_ties normalizes by default as ties does (mergekit:
not), the DARE mask is rng.c's and its rescale is 1/density (mergekit: a Bernoulli mask from
torch's generator, rescaled to the masked tensor's L1 norm).
"""
import argparse
import json
import math
import os
import re
import struct
import sys
import tempfile

import numpy as np

F32 = np.float32      # the arithmetic's type: float32, or float64 under --math f64 (set_math)
REAL32 = np.float32   # bit-level float32 (decoding, encoding), whatever the arithmetic
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")   # F64 is computed in float32 like the others
ELEM_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
             "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "C64": 8}
OUT_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}


class RefError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# Number formats
# ------------------------------------------------------------------------------------------------
def decode(dtype, raw):
    """Raw little-endian bytes (uint8 array) of a F32/F16/BF16 tensor -> float32 array (exact)."""
    if dtype == "F32":
        return np.frombuffer(raw.tobytes(), dtype="<f4").astype(F32)
    if dtype == "F16":
        return np.frombuffer(raw.tobytes(), dtype="<f2").astype(F32)
    if dtype == "F64":   # rounded to the nearest float32 (the arithmetic's type)
        return np.frombuffer(raw.tobytes(), dtype="<f8").astype(REAL32).astype(F32)
    if dtype == "BF16":
        u = np.frombuffer(raw.tobytes(), dtype="<u2").astype(np.uint32) << np.uint32(16)
        return u.view(REAL32).astype(F32)
    raise RefError("not a float dtype: %s" % dtype)


def f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even, NaN stays NaN (quieted)."""
    u = np.ascontiguousarray(x, dtype=REAL32).view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    r = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), r)
    return r.astype(np.uint16)


def encode(dtype, x):
    """float32 array -> little-endian bytes of dtype (round to nearest even; under --math f64 the
    float64 result is rounded once to float32 here)."""
    x = np.ascontiguousarray(x, dtype=REAL32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()  # IEEE round-to-nearest-even, NaN kept
    if dtype == "F64":
        return x.astype("<f8").tobytes()  # exact
    if dtype == "BF16":
        return f32_to_bf16_bits(x).astype("<u2").tobytes()
    raise RefError("cannot encode to %s" % dtype)


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------
class Tensor:
    def __init__(self, name, dtype, shape, raw):
        self.name, self.dtype, self.shape, self.raw = name, dtype, tuple(shape), raw

    @property
    def numel(self):
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def f32(self):
        return decode(self.dtype, self.raw)


def read_file(path):
    """One .safetensors file -> list of Tensor in data-offset order (raw bytes as uint8 views)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    if len(mm) < 8:
        raise RefError("%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", mm[:8].tobytes())
    if 8 + n > len(mm):
        raise RefError("%s: header length %d beyond the file" % (path, n))
    hdr = json.loads(mm[8:8 + n].tobytes().decode("utf-8"))
    start = 8 + n
    out = []
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        t = Tensor(name, e["dtype"], e["shape"], mm[start + b:start + en])
        if e["dtype"] in ELEM_SIZE and t.numel * ELEM_SIZE[e["dtype"]] != en - b:
            raise RefError("%s: tensor %s: %d bytes for shape %s" % (path, name, en - b, e["shape"]))
        out.append((b, t))
    out.sort(key=lambda bt: bt[0])
    return [t for _, t in out]


def read_model(path):
    """A model directory (model.safetensors, or index + shards) or one file -> dict name -> Tensor
    (insertion order = model order)."""
    if os.path.isfile(path):
        files = [path]
    elif os.path.isfile(os.path.join(path, "model.safetensors.index.json")):
        with open(os.path.join(path, "model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        files = []
        for shard in wm.values():
            if shard not in files:
                files.append(shard)
        files = [os.path.join(path, s) for s in files]
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = [os.path.join(path, "model.safetensors")]
    else:
        raise RefError("%s: no model.safetensors or model.safetensors.index.json" % path)
    model = {}
    for fp in files:
        for t in read_file(fp):
            if t.name in model:
                raise RefError("%s: tensor %s appears twice" % (path, t.name))
            model[t.name] = t
    return model


def write_model(out_dir, tensors):
    """tensors: list of (name, dtype, shape, bytes) -> OUT/model.safetensors (header padded to 8)."""
    os.makedirs(out_dir, exist_ok=True)
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape, data in tensors:
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    js = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for _, _, _, data in tensors:
            f.write(data)


# ------------------------------------------------------------------------------------------------
# exp and tanh on float32 arrays. "f32": NumPy's float32 functions (SIMD code whose last bit depends
# on the CPU: measured on AVX-512 ~39% of exp results 1-2 ulp from correct rounding); "cr": the
# float64 function rounded once to float32 (correctly rounded but for double rounding, ~never
# wrong), the same bits on every machine. Both are float32-valued functions of float32 inputs.
# ------------------------------------------------------------------------------------------------
def _cr(fn):
    return lambda x: fn(np.asarray(x, dtype=F32).astype(np.float64)).astype(F32)


MATH_MODES = {"f32": {"exp": np.exp, "tanh": np.tanh},
              "cr": {"exp": _cr(np.exp), "tanh": _cr(np.tanh)},
              "f64": {"exp": np.exp, "tanh": np.tanh}}
MATH = dict(MATH_MODES["cr"])


def set_math(mode):
    """"f64" is not pcbmerge's semantics but the yardstick for its float32 arithmetic: every
    operation in float64 (statistics too), one rounding to the output dtype at the end — the
    correctly rounded result of the same formula, up to float64's own error."""
    global F32
    F32 = np.float64 if mode == "f64" else np.float32
    MATH.update(MATH_MODES[mode])


# ------------------------------------------------------------------------------------------------
# Order statistics helpers (0-based indices exactly as the official code computes them)
# ------------------------------------------------------------------------------------------------
def clamp_index(i, d):
    return max(0, min(d - 1, i))


def kth(a, i):
    """The element at 0-based index i of the ascending sort of float32 array a."""
    i = clamp_index(i, a.size)
    return F32(np.partition(a, i)[i])


def seq_sum(rows):
    """Σ_j rows[j] in float32, j = 0, 1, ... in order."""
    acc = rows[0].astype(F32, copy=True)
    for r in rows[1:]:
        acc = acc + r
    return acc


# ------------------------------------------------------------------------------------------------
# PCB (docs/semantics.md, PCB steps 1-6) on one group of elements: T has shape (N, d), float32
# task vectors.
# ------------------------------------------------------------------------------------------------
def pcb_group(T, density, clamp_ratio, lambdas, P=None):
    """P (N, d) bool: the elements each task has (None: all). Present tasks only: at each element
    PCB runs on the tasks that have it (N = their count there, Σ_j over them), and each task's
    statistics (lo, hi, t, m) run over its own d_i elements; elsewhere it takes no part."""
    n, d = T.shape
    Pm = np.ones((n, d), dtype=bool) if P is None else P
    nf = F32(n) if P is None else Pm.sum(axis=0).astype(F32)   # present tasks per element
    S = seq_sum(T)                                     # Σ_j τ_j, raw (absent τ are 0)
    num = np.zeros(d, dtype=F32)
    den = np.zeros(d, dtype=F32)
    stats = []
    for i in range(n):
        tau = T[i]
        a = np.abs(tau)
        pres = Pm[i]
        di = int(np.count_nonzero(pres))
        if di == 0:
            stats.append({"lo": None, "hi": None, "threshold": None, "max": None, "kept": 0})
            continue
        lo = kth(a[pres], int(di * clamp_ratio))
        hi = kth(a[pres], int(di * (1 - clamp_ratio) - 1))
        at = np.minimum(np.maximum(a, lo), hi)
        tct = np.sign(tau) * at                        # sign(0) = 0
        if hi > lo:
            q = (at - lo) / (hi - lo)
        else:                                          # degenerate: normalized magnitude 0
            q = np.zeros(d, dtype=F32)
        intra = MATH["exp"]((nf * (q * q)).astype(F32))
        inter = MATH["tanh"](tau * S)
        s = intra * inter
        t = kth(s[pres], int(di * (1 - density)))
        m = F32(np.max(s[pres]))
        if m > t:
            w = (np.maximum(s, t) - t) / (m - t)
            w = np.where(pres, w, F32(0)).astype(F32)
        else:                                          # degenerate: nothing above the threshold
            w = np.zeros(d, dtype=F32)
        kept = int(np.count_nonzero(w > 0))
        num = num + (w * F32(lambdas[i])) * tct
        den = den + w
        stats.append({"lo": float(lo), "hi": float(hi), "threshold": float(t), "max": float(m),
                      "kept": kept})
    tau_m = num / np.maximum(den, F32(1e-12))
    return tau_m.astype(F32), stats


# ------------------------------------------------------------------------------------------------
# TIES (official code): T (N, d) float32 task vectors (possibly DARE-sparsified already).
# trim=False skips the top-k trim (dare_ties keeps every DARE survivor).
# ------------------------------------------------------------------------------------------------
def ties_group(T, density, lambdas, trim=True, dare_kept=None, P=None):
    """P (N, d) bool: the elements each task has (None: all). A task's top-k runs over its own
    elements; elsewhere its τ is 0 and it takes no part (present tasks only)."""
    n, d = T.shape
    trimmed = []
    stats = []
    for i in range(n):
        a = np.abs(T[i])
        pres = np.ones(d, dtype=bool) if P is None else P[i]
        di = int(np.count_nonzero(pres))
        if trim:
            thr = kth(a[pres], di - int(di * density) - 1) if di else F32(0)
            mask = (a >= thr) & pres                   # ties at the threshold are kept
        else:
            thr = F32(0)
            mask = T[i] != 0
        trimmed.append(np.where(mask, T[i], F32(0)).astype(F32))
        stats.append({"lo": None, "hi": None, "threshold": float(thr), "max": float(np.max(a)),
                      "kept": int(np.count_nonzero(mask)) if dare_kept is None else dare_kept[i]})
    total = seq_sum(trimmed)
    sign = np.sign(total)
    majority = np.sign(np.sum(sign.astype(np.int64)))
    sign[sign == 0] = F32(majority)
    sel = [np.where(np.where(sign > 0, tr > 0, tr < 0), tr, F32(0)).astype(F32) for tr in trimmed]
    count = np.zeros(d, dtype=np.int64)
    for s in sel:
        count += (s != 0)
    if all(l == lambdas[0] for l in lambdas):
        agg = seq_sum(sel) / np.maximum(count, 1).astype(F32)
        tau_m = F32(lambdas[0]) * agg
    else:
        tau_m = seq_sum([F32(l) * s for l, s in zip(lambdas, sel)]) / np.maximum(count, 1).astype(F32)
    return tau_m.astype(F32), stats


# ------------------------------------------------------------------------------------------------
# mergekit's generalized task arithmetic with per-model weights and densities.
#   T (N, d) float32 task vectors, already DARE-dropped (dare_*) or to be trimmed (ties: trim).
#   consensus: ties / dare_ties elect signs; task_arithmetic / dare_linear sum everything.
# ------------------------------------------------------------------------------------------------
def gta_group(T, densities, weights, lam, normalize, consensus, trim, dare_kept=None, P=None):
    """P (N, d) bool: the elements each task has (None: all); a task takes no part elsewhere."""
    n, d = T.shape
    w = [F32(x) for x in weights]
    Pm = np.ones((n, d), dtype=bool) if P is None else P
    deltas, stats = [], []
    for i in range(n):
        thr = None
        di = int(np.count_nonzero(Pm[i]))
        if trim:                                       # magnitude sparsification, global top-k
            a = np.abs(T[i])
            k = int(di * densities[i])
            if k >= di:
                thr = F32(0)
            else:
                thr = kth(a[Pm[i]], di - k - 1)
            keep = (a >= thr) & Pm[i]
            delta = np.where(keep, T[i], F32(0)).astype(F32)
            kept = int(np.count_nonzero(keep))
        else:
            delta = T[i]
            kept = dare_kept[i] if dare_kept is not None else di
        deltas.append(delta)
        stats.append({"lo": None, "hi": None, "threshold": None if thr is None else float(thr),
                      "max": None, "kept": kept})
    wd = [(w[i] * deltas[i]).astype(F32) for i in range(n)]   # weighted deltas
    if consensus:
        mass = seq_sum(wd)                              # sign election on the weighted sum
        sign = np.sign(mass)
        majority = np.sign(np.sum(sign.astype(np.int64)))
        sign[sign == 0] = F32(majority)
        agree = [np.where(sign > 0, x > 0, x < 0) for x in wd]
        mixed = seq_sum([np.where(m, x, F32(0)).astype(F32) for m, x in zip(agree, wd)])
        div = seq_sum([np.where(m, w[i], F32(0)).astype(F32) for i, m in enumerate(agree)])
        div = np.where(div == 0, F32(1), div).astype(F32)
    else:
        mixed = seq_sum(wd)
        if P is None:
            div = F32(0)
            for x in w:
                div = F32(div + x)
            if normalize and div == 0:
                raise RefError("the weights sum to 0: nothing to normalize by")
        else:                                          # the weights of the tasks present
            div = np.zeros(d, dtype=F32)
            for i in range(n):
                div = np.where(Pm[i], div + w[i], div).astype(F32)
    if normalize:
        mixed = (mixed / div).astype(F32)
    return (F32(lam) * mixed).astype(F32), stats


# ------------------------------------------------------------------------------------------------
# DARE: the counter-based drop mask documented in src/kernels/rng.c, re-implemented from that text:
#   key(seed, stream) = mix(mix(seed ^ 0x6A09E667F3BCC909) ^ stream)
#   r = mix(key + (index + 1) * 0x9E3779B97F4A7C15), stream = name_key + (task + 1) * 0xD1B54A32D192ED03
#   keep iff (r >> 11) * 2^-53 < density (task 0-based, index within the tensor);
#   name_key = XXH3-64 (seed 0) of the UTF-8 tensor name, implemented below in pure Python.
# ------------------------------------------------------------------------------------------------
XXH_M64 = (1 << 64) - 1
_XP32_1, _XP32_2, _XP32_3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_XP64_1, _XP64_2, _XP64_3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_XP64_4, _XP64_5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
_XPMX1, _XPMX2 = 0x165667919E3779F9, 0x9FB21C651E98DF25
_XSECRET = bytes.fromhex(  # XXH3's default 192-byte secret
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e")


def _r64(b, o):
    return int.from_bytes(b[o:o + 8], "little")


def _r32(b, o):
    return int.from_bytes(b[o:o + 4], "little")


def _fold(a, b):
    p = a * b
    return (p ^ (p >> 64)) & XXH_M64


def _xavalanche(h):
    h ^= h >> 37
    h = (h * _XPMX1) & XXH_M64
    return h ^ (h >> 32)


def _x64avalanche(h):
    h ^= h >> 33
    h = (h * _XP64_2) & XXH_M64
    h ^= h >> 29
    h = (h * _XP64_3) & XXH_M64
    return h ^ (h >> 32)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & XXH_M64


def _mix16(b, o, so):
    return _fold(_r64(b, o) ^ _r64(_XSECRET, so), _r64(b, o + 8) ^ _r64(_XSECRET, so + 8))


def xxh3_64(b):
    """XXH3_64bits(b) with seed 0 and the default secret (xxHash 0.8)."""
    n, s = len(b), _XSECRET
    if n == 0:
        return _x64avalanche(_r64(s, 56) ^ _r64(s, 64))
    if n <= 3:
        c = (b[0] << 16) | (b[n >> 1] << 24) | b[n - 1] | (n << 8)
        return _x64avalanche(c ^ (_r32(s, 0) ^ _r32(s, 4)))
    if n <= 8:
        x = ((_r32(b, n - 4) + (_r32(b, 0) << 32)) & XXH_M64) ^ (_r64(s, 8) ^ _r64(s, 16))
        x ^= _rotl(x, 49) ^ _rotl(x, 24)
        x = (x * _XPMX2) & XXH_M64
        x ^= (x >> 35) + n
        x = (x * _XPMX2) & XXH_M64
        return x ^ (x >> 28)
    if n <= 16:
        lo = _r64(b, 0) ^ (_r64(s, 24) ^ _r64(s, 32))
        hi = _r64(b, n - 8) ^ (_r64(s, 40) ^ _r64(s, 48))
        swapped = int.from_bytes(lo.to_bytes(8, "little"), "big")
        return _xavalanche((n + swapped + hi + _fold(lo, hi)) & XXH_M64)
    if n <= 128:
        acc = n * _XP64_1
        if n > 32:
            if n > 64:
                if n > 96:
                    acc += _mix16(b, 48, 96) + _mix16(b, n - 64, 112)
                acc += _mix16(b, 32, 64) + _mix16(b, n - 48, 80)
            acc += _mix16(b, 16, 32) + _mix16(b, n - 32, 48)
        acc += _mix16(b, 0, 0) + _mix16(b, n - 16, 16)
        return _xavalanche(acc & XXH_M64)
    if n <= 240:
        acc = n * _XP64_1
        for i in range(8):
            acc += _mix16(b, 16 * i, 16 * i)
        acc = _xavalanche(acc & XXH_M64)
        for i in range(8, n // 16):
            acc += _mix16(b, 16 * i, 16 * (i - 8) + 3)
        acc += _mix16(b, n - 16, 136 - 17)
        return _xavalanche(acc & XXH_M64)
    acc = [_XP32_3, _XP64_1, _XP64_2, _XP64_3, _XP64_4, _XP32_2, _XP64_5, _XP32_1]

    def accumulate(o, so):
        for i in range(8):
            v = _r64(b, o + 8 * i)
            k = v ^ _r64(s, so + 8 * i)
            acc[i ^ 1] = (acc[i ^ 1] + v) & XXH_M64
            acc[i] = (acc[i] + (k & 0xFFFFFFFF) * (k >> 32)) & XXH_M64

    def scramble():
        for i in range(8):
            a = acc[i] ^ (acc[i] >> 47) ^ _r64(s, 192 - 64 + 8 * i)
            acc[i] = (a * _XP32_1) & XXH_M64
    stripes = (192 - 64) // 8
    block = 64 * stripes
    nb = (n - 1) // block
    for blk in range(nb):
        for st in range(stripes):
            accumulate(blk * block + st * 64, st * 8)
        scramble()
    for st in range(((n - 1) - block * nb) // 64):
        accumulate(nb * block + st * 64, st * 8)
    accumulate(n - 64, 192 - 64 - 7)
    res = n * _XP64_1
    for i in range(4):
        res += _fold(acc[2 * i] ^ _r64(s, 11 + 16 * i), acc[2 * i + 1] ^ _r64(s, 19 + 16 * i))
    return _xavalanche(res & XXH_M64)


def _mix_int(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & XXH_M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & XXH_M64
    return z ^ (z >> 31)


def _mix_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dare_keep(seed, task, name, numel, density):
    """Boolean keep mask of the numel elements of tensor `name` for task `task` (0-based)."""
    stream = (xxh3_64(name.encode("utf-8")) + (task + 1) * 0xD1B54A32D192ED03) & XXH_M64
    key = _mix_int(_mix_int((seed & XXH_M64) ^ 0x6A09E667F3BCC909) ^ stream)
    idx = np.arange(1, numel + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        r = _mix_np(np.uint64(key) + idx * np.uint64(0x9E3779B97F4A7C15))
    u = (r >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u < density


def dare_group(T, names_sizes, seed, density, rescale=True, P=None):
    """Drop with p = 1 - density, rescale survivors (τ / float32(density), unless rescale is
    off); density: one number, or one per task. Returns the new task vectors and, per task, how
    many elements the mask kept."""
    out = np.empty_like(T)
    kept = []
    for i in range(T.shape[0]):
        off = 0
        k = 0
        di = density[i] if isinstance(density, (list, tuple)) else density
        for name, size in names_sizes:
            keep = dare_keep(seed, i, name, size, di)   # keyed by the task's own index
            if P is not None:
                keep = keep & P[i, off:off + size]
            seg = T[i, off:off + size]
            out[i, off:off + size] = np.where(keep, seg / F32(di) if rescale else seg, F32(0))
            k += int(np.count_nonzero(keep))
            off += size
        kept.append(k)
    return out, kept


# ------------------------------------------------------------------------------------------------
# The merge driver
# ------------------------------------------------------------------------------------------------
def participating(base, tasks, excludes, absent="copy"):
    """The merged tensors. absent "copy": a tensor some task lacks is copied from the base;
    "skip": it is merged when some task has it, the tasks lacking it taking no part."""
    pats = [re.compile(p) for p in excludes]
    names = []
    for name, t in base.items():
        if t.dtype not in FLOAT_DTYPES:
            continue
        if any(p.search(name) for p in pats):
            continue
        have = [m for m in tasks if name in m]
        ok = all(m[name].dtype in FLOAT_DTYPES and m[name].shape == t.shape for m in have)
        if ok and (len(have) == len(tasks) or (absent == "skip" and have)):
            names.append(name)
    return names


def merge(base_dir, task_dirs, out_dir, method="pcb", density=0.1, lam=1.0, lambdas=None,
          weights=None, clamp_ratio=1e-4, scope="global", out_dtype="base", excludes=(),
          seed=0, allow_nonfinite=False, densities=None, normalize=None, rescale=None,
          absent="copy"):
    base = read_model(base_dir)
    tasks = [read_model(p) for p in task_dirs]
    n = len(tasks)
    if n < 1:
        raise RefError("need at least one task model")
    lambdas = [float(x) for x in lambdas] if lambdas else [float(lam)] * n
    if len(lambdas) != n:
        raise RefError("%d lambdas for %d tasks" % (len(lambdas), n))
    # mergekit's parameters: any of them given selects gta_group for the methods that take them
    gta = method in ("task_arithmetic", "ties", "dare_linear", "dare_ties") and (
        weights is not None or densities is not None or normalize is not None or
        rescale is not None)
    weights = [float(x) for x in weights] if weights else [1.0] * n
    if len(weights) != n:
        raise RefError("%d weights for %d tasks" % (len(weights), n))
    densities = [float(x) for x in densities] if densities else [float(density)] * n
    if len(densities) != n:
        raise RefError("%d densities for %d tasks" % (len(densities), n))
    if normalize is None:  # linear, ties: mergekit's default; dare_ties: pcbmerge's (mergekit: off)
        normalize = method in ("linear", "ties", "dare_ties")
    if rescale is None:
        rescale = True
    names = participating(base, tasks, excludes, absent)
    sizes = [base[nm].numel for nm in names]
    d = int(sum(sizes))
    partial = [nm for nm in names if not all(nm in m for m in tasks)]

    report = {"method": method, "d": d, "scope": scope, "tasks": []}
    merged = {}
    if d > 0:
        B = np.concatenate([base[nm].f32() for nm in names]).astype(F32)
        TH = np.empty((n, d), dtype=F32)
        P = None                                       # present: P[i] the elements task i has
        if partial:
            P = np.concatenate([np.full((n, base[nm].numel), True) if nm not in partial else
                                np.array([[nm in m] * base[nm].numel for m in tasks])
                                for nm in names], axis=1)
        for i, m in enumerate(tasks):                  # a task lacking a tensor: θ = base there
            TH[i] = np.concatenate([m[nm].f32() if nm in m else base[nm].f32() for nm in names])
        if not allow_nonfinite:
            for label, arr in [("base", B)] + [("task %d" % (i + 1), TH[i]) for i in range(n)]:
                bad = ~np.isfinite(arr)
                if bad.any():
                    k = int(np.argmax(bad))
                    off = 0
                    for nm, sz in zip(names, sizes):
                        if k < off + sz:
                            raise RefError("%s: tensor %s holds a non-finite value" % (label, nm))
                        off += sz
        if method == "linear":
            T = TH - B
        else:                                          # in place: θ_i is not needed any more
            T = TH
            T -= B                                     # τ_i = θ_i − θ_pre (float32)
        groups = [(0, d, names, sizes)] if scope == "global" else \
            [(o, o + s, [nm], [s]) for o, s, nm in zip(np.cumsum([0] + sizes[:-1]), sizes, names)]
        OUT = np.empty(d, dtype=F32)
        per_tensor = {}
        totals = [0] * n
        for g0, g1, gnames, gsizes in groups:
            g0, g1 = int(g0), int(g1)
            Tg = T[:, g0:g1]
            Pg = None if P is None else P[:, g0:g1]
            stats = [{"lo": None, "hi": None, "threshold": None, "max": None, "kept": 0}] * n
            if gta:
                consensus = method in ("ties", "dare_ties")
                dk = None
                if method.startswith("dare"):
                    Tg, dk = dare_group(Tg, list(zip(gnames, gsizes)), seed, densities, rescale,
                                        P=Pg)
                tau_m, stats = gta_group(Tg, densities, weights, lam, normalize, consensus,
                                         trim=method == "ties", dare_kept=dk, P=Pg)
                OUT[g0:g1] = B[g0:g1] + tau_m
            elif method == "pcb":
                tau_m, stats = pcb_group(Tg, density, clamp_ratio, lambdas, P=Pg)
                OUT[g0:g1] = B[g0:g1] + tau_m
            elif method == "ties":
                tau_m, stats = ties_group(Tg, density, lambdas, P=Pg)
                OUT[g0:g1] = B[g0:g1] + tau_m
            elif method == "dare_ties":
                Dg, dk = dare_group(Tg, list(zip(gnames, gsizes)), seed, density, P=Pg)
                tau_m, stats = ties_group(Dg, density, lambdas, trim=False, dare_kept=dk, P=Pg)
                OUT[g0:g1] = B[g0:g1] + tau_m
            elif method in ("task_arithmetic", "dare_linear"):
                kept = [g1 - g0] * n if Pg is None else [int(np.count_nonzero(x)) for x in Pg]
                if method == "dare_linear":
                    Tg, kept = dare_group(Tg, list(zip(gnames, gsizes)), seed, density, P=Pg)
                stats = [{"lo": None, "hi": None, "threshold": None, "max": None, "kept": k}
                         for k in kept]
                if all(l == lambdas[0] for l in lambdas):
                    tau_m = F32(lambdas[0]) * seq_sum(list(Tg))
                else:
                    tau_m = seq_sum([F32(l) * t for l, t in zip(lambdas, Tg)])
                OUT[g0:g1] = B[g0:g1] + tau_m
            elif method == "linear" and Pg is not None:  # the present tasks' sums, per element
                wsum = np.zeros(g1 - g0, dtype=F32)
                acc = np.zeros(g1 - g0, dtype=F32)
                for i, w in enumerate(weights):
                    wsum = np.where(Pg[i], wsum + F32(w), wsum).astype(F32)
                    acc = np.where(Pg[i], acc + F32(w) * TH[i, g0:g1], acc).astype(F32)
                OUT[g0:g1] = acc / wsum if normalize else acc
                stats = [{"lo": None, "hi": None, "threshold": None, "max": None,
                          "kept": int(np.count_nonzero(Pg[i]))} for i in range(n)]
            elif method == "linear":
                wsum = F32(0)
                for w in weights:
                    wsum = F32(wsum + F32(w))
                acc = seq_sum([F32(w) * TH[i, g0:g1] for i, w in enumerate(weights)])
                OUT[g0:g1] = acc / wsum if normalize else acc   # mergekit's linear normalize
                stats = [{"lo": None, "hi": None, "threshold": None, "max": None, "kept": g1 - g0}
                         for _ in range(n)]
            else:
                raise RefError("unknown method %s" % method)
            for i in range(n):
                totals[i] += stats[i]["kept"]
            if scope == "tensor":
                per_tensor[gnames[0]] = stats
        if scope == "global":
            report["tasks"] = stats
        else:
            report["tasks"] = [{"lo": None, "hi": None, "threshold": None, "max": None,
                                "kept": totals[i]} for i in range(n)]
            report["tensors"] = per_tensor
        off = 0
        for nm, sz in zip(names, sizes):
            merged[nm] = OUT[off:off + sz]
            off += sz
    else:
        report["tasks"] = [{"lo": None, "hi": None, "threshold": None, "max": None, "kept": 0}
                           for _ in range(n)]
        report["note"] = "d = 0: nothing to merge, the base is copied"

    # --dtype applies to every float tensor of the output: merged ones, and copied ones (excluded,
    # or missing from a task) whose values are the base's rounded to that dtype. Non-float tensors
    # and same-dtype copies are byte copies.
    out = []
    for name, t in base.items():
        dt = t.dtype if out_dtype == "base" or t.dtype not in FLOAT_DTYPES else OUT_DTYPES[out_dtype]
        if name in merged:
            out.append((name, dt, t.shape, encode(dt, merged[name])))
        elif dt != t.dtype:
            out.append((name, dt, t.shape, encode(dt, t.f32())))
        else:
            out.append((name, t.dtype, t.shape, t.raw.tobytes()))
    write_model(out_dir, out)
    return report


# ------------------------------------------------------------------------------------------------
# Self-test: tiny cases worked out by hand
# ------------------------------------------------------------------------------------------------
def _write_toy(root, name, tensors):
    """tensors: list of (name, dtype, values or (shape, bytes))."""
    items = []
    for tn, dt, vals in tensors:
        if dt in FLOAT_DTYPES:
            arr = np.asarray(vals, dtype=F32)
            items.append((tn, dt, arr.shape, encode(dt, arr)))
        else:
            shape, data = vals
            items.append((tn, dt, shape, data))
    write_model(os.path.join(root, name), items)
    return os.path.join(root, name)


def _load(path, name):
    return read_model(path)[name].f32()


class _Check:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def __call__(self, cond, what):
        self.n += 1
        if not cond:
            self.failed += 1
            print("FAIL: " + what)

    def close(self, a, b, what, rel=1e-6):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        ok = a.shape == b.shape and bool(np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-30)))
        self(ok, "%s: got %s, want %s" % (what, a.tolist(), b.tolist()))


def selftest():
    ck = _Check()
    tmp = tempfile.mkdtemp(prefix="pcb_ref_selftest.")

    # --- number formats
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), np.finfo(F32).max, np.inf, -np.inf, 0.0,
                  -0.0], dtype=F32)
    got = f32_to_bf16_bits(x).tolist()
    ck(got == [0x3F80, 0x3F80, 0x3F82, 0xBF80, 0x7F80, 0x7F80, 0xFF80, 0x0000, 0x8000],
       "bf16 round-to-nearest-even: %s" % [hex(g) for g in got])
    nan_in = np.array([0x7F800001, 0xFFC00000, 0x7FFFFFFF], dtype=np.uint32).view(F32)
    got = f32_to_bf16_bits(nan_in).tolist()
    ck(got == [0x7FC0, 0xFFC0, 0x7FFF], "bf16 keeps NaN NaN: %s" % [hex(g) for g in got])
    ck(np.frombuffer(encode("F16", np.array([1 + 2 ** -11], dtype=F32)), "<u2")[0] == 0x3C00,
       "f16 ties to even")

    # --- exp/tanh modes: "cr" is the float64 function rounded once to float32
    xs = np.array([0.0, 1.0, -2.5, 1e-3, 10.0], dtype=F32)
    ck(MATH_MODES["cr"]["exp"](xs).tolist() == [float(F32(math.exp(float(v)))) for v in xs], "cr exp")
    ck(MATH_MODES["cr"]["tanh"](xs).tolist() == [float(F32(math.tanh(float(v)))) for v in xs], "cr tanh")
    ck(MATH_MODES["cr"]["exp"](xs).dtype == F32 and MATH_MODES["f32"]["exp"](xs).dtype == F32, "f32 results")

    # --- safetensors round trip, including a non-float tensor
    ids = np.arange(4, dtype="<i8")
    p = _write_toy(tmp, "rt", [("a", "BF16", [[1.5, -2.0], [0.25, 3.0]]), ("ids", "I64", ((1, 4), ids.tobytes())),
                               ("b", "F16", [0.5]), ("c", "F32", [1e-3])])
    m = read_model(p)
    ck(list(m) == ["a", "ids", "b", "c"] and m["a"].shape == (2, 2), "safetensors order/shape")
    ck(m["a"].f32().tolist() == [1.5, -2.0, 0.25, 3.0], "bf16 decode")
    ck(np.frombuffer(m["ids"].raw.tobytes(), "<i8").tolist() == [0, 1, 2, 3], "I64 raw")
    ck(m["c"].f32()[0] == F32(1e-3), "f32 decode")

    # --- task arithmetic / linear on dyadic values (exact)
    base = _write_toy(tmp, "base", [("w", "F32", [1.0, 2.0, -1.0, 0.5]), ("ids", "I64", ((1, 4), ids.tobytes()))])
    t1 = _write_toy(tmp, "t1", [("w", "F32", [1.5, 2.0, -1.25, 0.5]), ("ids", "I64", ((1, 4), ids.tobytes()))])
    t2 = _write_toy(tmp, "t2", [("w", "F32", [0.5, 2.5, -1.25, 0.75]), ("ids", "I64", ((1, 4), ids.tobytes()))])
    rep = merge(base, [t1, t2], os.path.join(tmp, "o_ta"), "task_arithmetic", lam=0.5)
    # τ1 = [.5, 0, -.25, 0], τ2 = [-.5, .5, -.25, .25]; Σ = [0, .5, -.5, .25]; ×0.5
    ck(_load(os.path.join(tmp, "o_ta"), "w").tolist() == [1.0, 2.25, -1.25, 0.625], "task arithmetic")
    ck(rep["d"] == 4, "d counts float elements only")
    ck(read_model(os.path.join(tmp, "o_ta"))["ids"].raw.tobytes() == ids.tobytes(), "I64 copied")
    merge(base, [t1, t2], os.path.join(tmp, "o_ta2"), "task_arithmetic", lambdas=[1.0, 0.5])
    ck(_load(os.path.join(tmp, "o_ta2"), "w").tolist() == [1.25, 2.25, -1.375, 0.625], "task arithmetic per-task λ")
    merge(base, [t1, t2], os.path.join(tmp, "o_lin"), "linear", weights=[3.0, 1.0])
    # (3·t1 + t2)/4 = [(4.5+.5)/4, (6+2.5)/4, (-3.75-1.25)/4, (1.5+.75)/4]
    ck(_load(os.path.join(tmp, "o_lin"), "w").tolist() == [1.25, 2.125, -1.25, 0.5625], "linear weights")
    merge(base, [t1, t2], os.path.join(tmp, "o_lin2"), "linear")
    ck(_load(os.path.join(tmp, "o_lin2"), "w").tolist() == [1.0, 2.25, -1.25, 0.625], "linear equal")

    # --- TIES, d = 5, k = 0.6: int(5·0.6) = 3, threshold index 5-3-1 = 1 (2nd smallest |τ|)
    b5 = [0.0] * 5
    tb = _write_toy(tmp, "tb", [("w", "F32", b5)])
    ta = _write_toy(tmp, "ta", [("w", "F32", [1.0, -0.5, 0.25, 2.0, -0.25])])   # |τ| sorted .25 .25 .5 1 2
    tc = _write_toy(tmp, "tc", [("w", "F32", [-0.5, 0.125, 0.5, -1.0, 0.75])])  # sorted .125 .5 .5 .75 1
    td = _write_toy(tmp, "td", [("w", "F32", [-0.75, -1.0, 0.0625, 0.5, 0.5])])  # sorted .0625 .5 .5 .75 1
    rep = merge(tb, [ta, tc, td], os.path.join(tmp, "o_ties"), "ties", density=0.6)
    # thresholds: a .25 (ties kept: all 5), c .5 (keeps -.5,.5,-1,.75), d .5 (keeps -.75,-1,.5,.5)
    ck([s["kept"] for s in rep["tasks"]] == [5, 4, 4], "ties kept %s" % [s["kept"] for s in rep["tasks"]])
    ck([s["threshold"] for s in rep["tasks"]] == [0.25, 0.5, 0.5], "ties thresholds")
    # trimmed: a [1,-.5,.25,2,-.25]; c [-.5,0,.5,-1,.75]; d [-.75,-1,0,.5,.5]
    # sums [-.25,-1.5,.75,1.5,1] -> signs [-,-,+,+,+]
    # agree: p0 c,d -> (-.5-.75)/2; p1 a,d -> (-.5-1)/2; p2 a,c -> (.25+.5)/2; p3 a,d -> (2+.5)/2;
    # p4 c,d -> (.75+.5)/2
    ck(_load(os.path.join(tmp, "o_ties"), "w").tolist() == [-0.625, -0.75, 0.375, 1.25, 0.625], "ties merge")
    merge(tb, [ta, tc, td], os.path.join(tmp, "o_ties2"), "ties", density=0.6, lam=2.0)
    ck(_load(os.path.join(tmp, "o_ties2"), "w").tolist() == [-1.25, -1.5, 0.75, 2.5, 1.25], "ties λ")
    # zero sum -> majority sign of the elected vector: two tasks cancel at p0
    te = _write_toy(tmp, "te", [("w", "F32", [1.0, 1.0, 1.0, -1.0, 0.0])])
    tf = _write_toy(tmp, "tf", [("w", "F32", [-1.0, 1.0, 1.0, -1.0, 0.0])])
    merge(tb, [te, tf], os.path.join(tmp, "o_ties3"), "ties", density=1.0)
    # sums [0,2,2,-2,0] -> signs [0,+,+,-,0]; majority + -> [+,+,+,-,+]; p0 keeps only +1 -> 1
    ck(_load(os.path.join(tmp, "o_ties3"), "w").tolist() == [1.0, 1.0, 1.0, -1.0, 0.0], "ties zero-sum election")

    # --- PCB, one task, d = 10, r = 0.5: N=1 so s = exp(q²)·tanh(τ²) rises with |τ|.
    # lo = s[int(10e-4)] = s[0]; hi = s[int(10·0.9999 − 1)] = s[8] (the largest is clamped)
    tau = [0.0, 0.1, -0.2, 0.3, -0.4, 0.5, 0.6, -0.7, 0.8, -1.6]
    b10 = [0.0] * 10
    pb = _write_toy(tmp, "pb", [("w", "F32", b10)])
    p1 = _write_toy(tmp, "p1", [("w", "F32", tau)])
    rep = merge(pb, [p1], os.path.join(tmp, "o_pcb1"), "pcb", density=0.5)
    st = rep["tasks"][0]
    ck(st["lo"] == 0.0 and st["hi"] == float(F32(0.8)), "pcb lo/hi %s %s" % (st["lo"], st["hi"]))

    def score(t_, lo, hi, n, s_):
        a_ = min(max(abs(t_), lo), hi)
        return math.exp(n * ((a_ - lo) / (hi - lo)) ** 2) * math.tanh(t_ * s_)
    sc = sorted(score(t_, 0.0, 0.8, 1, t_) for t_ in tau)
    ck.close(st["threshold"], sc[5], "pcb threshold = sorted score[int(10·0.5)]", rel=1e-5)
    ck.close(st["max"], sc[9], "pcb max", rel=1e-5)
    # kept: scores strictly above sorted[5] -> the 4 largest |τ|: 0.6, -0.7, 0.8, -1.6
    ck(st["kept"] == 4, "pcb kept %d" % st["kept"])
    # N = 1: τ_m = w·τ̃/w = τ̃ where kept; -1.6 is clamped to -0.8
    ck.close(_load(os.path.join(tmp, "o_pcb1"), "w"), [0, 0, 0, 0, 0, 0, 0.6, -0.7, 0.8, -0.8],
             "pcb one-task merge", rel=1e-6)

    # --- PCB, two tasks, disagreement: task 2 opposes the sum where |τ2| < |τ1|
    t1v = [1.0, 0.5, -0.5, 0.25, 0.0, 0.75, -1.0, 0.125]
    t2v = [-0.5, 0.5, 0.25, 0.25, 0.5, -1.0, -0.25, 0.0]
    q1 = _write_toy(tmp, "q1", [("w", "F32", t1v)])
    q2 = _write_toy(tmp, "q2", [("w", "F32", t2v)])
    pb8 = _write_toy(tmp, "pb8", [("w", "F32", [0.0] * 8)])
    rep = merge(pb8, [q1, q2], os.path.join(tmp, "o_pcb2"), "pcb", density=0.5, lambdas=[1.0, 2.0])
    S = [a + b for a, b in zip(t1v, t2v)]
    want_num = [0.0] * 8
    want_den = [0.0] * 8
    for i, tv in enumerate((t1v, t2v)):
        mags = sorted(abs(v) for v in tv)
        lo, hi = mags[int(8 * 1e-4)], mags[int(8 * (1 - 1e-4) - 1)]
        sc = [score(v, lo, hi, 2, s_) for v, s_ in zip(tv, S)]
        t = sorted(sc)[int(8 * 0.5)]
        mx = max(sc)
        w = [(max(s_, t) - t) / (mx - t) for s_ in sc]
        ck(rep["tasks"][i]["kept"] == sum(1 for x in w if x > 0), "pcb2 kept task %d" % (i + 1))
        ck.close(rep["tasks"][i]["threshold"], t, "pcb2 threshold task %d" % (i + 1), rel=1e-5)
        lam_i = (1.0, 2.0)[i]
        for p_ in range(8):
            tc_ = math.copysign(min(max(abs(tv[p_]), lo), hi), tv[p_]) if tv[p_] else 0.0
            want_num[p_] += w[p_] * lam_i * tc_
            want_den[p_] += w[p_]
    want = [nm / max(dn, 1e-12) for nm, dn in zip(want_num, want_den)]
    got = _load(os.path.join(tmp, "o_pcb2"), "w")
    ck(bool(np.all(np.abs(got - np.array(want)) <= 1e-5)), "pcb2 merge %s vs %s" % (got.tolist(), want))

    # --- PCB degenerate: a task identical to the base (hi == lo, m == t) contributes nothing
    same = _write_toy(tmp, "same", [("w", "F32", [0.0] * 10)])
    rep = merge(pb, [p1, same], os.path.join(tmp, "o_pcb3"), "pcb", density=0.5)
    ck(rep["tasks"][1]["kept"] == 0 and rep["tasks"][1]["lo"] == rep["tasks"][1]["hi"] == 0.0,
       "identical task contributes nothing")
    got = _load(os.path.join(tmp, "o_pcb3"), "w")
    ck(bool(np.all(np.isfinite(got))), "identical task: no NaN")
    ck(rep["tasks"][0]["kept"] == 4, "identical task: task 1 still keeps 4")
    ck.close(got, [0, 0, 0, 0, 0, 0, 0.6, -0.7, 0.8, -0.8], "identical task merge", rel=1e-6)

    # --- ties at the threshold: bf16 magnitudes all equal -> scores tie, nothing strictly above
    flat = _write_toy(tmp, "flat", [("w", "BF16", [0.5, -0.5, 0.5, 0.5, -0.5, 0.5, 0.5, 0.5, 0.5, 0.5])])
    pbb = _write_toy(tmp, "pbb", [("w", "BF16", [0.0] * 10)])
    rep = merge(pbb, [flat], os.path.join(tmp, "o_tie"), "pcb", density=0.3)
    ck(rep["tasks"][0]["kept"] == 0, "all scores tied at t: kept 0 (got %d)" % rep["tasks"][0]["kept"])
    ck(_load(os.path.join(tmp, "o_tie"), "w").tolist() == [0.0] * 10, "tied scores: base copied")
    # 7 values tie at the threshold, 2 above (one clamped): only those strictly above are kept
    tied = [0.25] * 7 + [0.5, 0.75, 1.0]
    tt = _write_toy(tmp, "tt", [("w", "BF16", tied)])
    rep = merge(pbb, [tt], os.path.join(tmp, "o_tie2"), "pcb", density=0.3)
    # t = sorted[int(10·0.7)] = sorted[7] = score(0.5): strictly above: 0.75 and 1.0 (clamped to .75
    # in magnitude but its tanh(τ·Σ) is larger)
    ck(rep["tasks"][0]["kept"] == 2, "ties at threshold kept %d" % rep["tasks"][0]["kept"])
    ck.close(_load(os.path.join(tmp, "o_tie2"), "w"), [0] * 7 + [0, 0.75, 0.75], "ties at threshold merge")
    # 4 scores tie at t = sorted[5] (|τ| = 0.5): fewer than r·d − 1 = 4 are kept (0.6, 0.7, 0.8)
    tied = [0.1, -0.2, 0.3, 0.5, -0.5, 0.5, 0.5, 0.6, -0.7, 0.8]
    tt = _write_toy(tmp, "tt3", [("w", "BF16", tied)])
    rep = merge(pbb, [tt], os.path.join(tmp, "o_tie3"), "pcb", density=0.5)
    ck(rep["tasks"][0]["kept"] == 3, "4 tied at threshold: kept %d" % rep["tasks"][0]["kept"])
    v = [float(x) for x in read_model(tt)["w"].f32()]
    ck.close(_load(os.path.join(tmp, "o_tie3"), "w"), [0] * 7 + [v[7], v[8], -v[8]],
             "tied threshold merge (0.8 clamped to |0.7|)")
    # global vs tensor scope on two tensors of very different scales
    gb = _write_toy(tmp, "gb", [("a", "F32", [0.0] * 4), ("b", "F32", [0.0] * 4)])
    g1 = _write_toy(tmp, "g1", [("a", "F32", [1.0, 2.0, 3.0, 4.0]), ("b", "F32", [0.001, 0.002, 0.003, 0.004])])
    rep_g = merge(gb, [g1], os.path.join(tmp, "o_glob"), "pcb", density=0.5, clamp_ratio=0.0)
    rep_t = merge(gb, [g1], os.path.join(tmp, "o_tens"), "pcb", density=0.5, clamp_ratio=0.0, scope="tensor")
    # global: hi = s[int(8·1 − 1)] = 4; t = sorted[4] = score(1.0): kept 2.0, 3.0, 4.0 of tensor a
    ck(rep_g["tasks"][0]["kept"] == 3, "global kept %d" % rep_g["tasks"][0]["kept"])
    ck(_load(os.path.join(tmp, "o_glob"), "b").tolist() == [0.0] * 4, "global: small tensor dropped")
    # tensor scope: per tensor t = sorted[2] -> 1 kept in each (score(3) is t)... 4 only
    ck(rep_t["tasks"][0]["kept"] == 2 and rep_t["tensors"]["a"][0]["kept"] == 1,
       "tensor-scope kept %s" % rep_t["tasks"][0]["kept"])
    ck.close(_load(os.path.join(tmp, "o_tens"), "b"), [0, 0, 0, 0.004], "tensor scope small tensor")

    # --- d = 0: everything excluded -> base copied bit for bit
    rep = merge(pb, [p1], os.path.join(tmp, "o_d0"), "pcb", excludes=[".*"])
    ck(rep["d"] == 0 and _load(os.path.join(tmp, "o_d0"), "w").tolist() == b10, "d = 0 copies the base")
    # exclusion copies that tensor from the base (converted to --dtype); non-float tensors are
    # byte copies whatever --dtype says
    gx = _write_toy(tmp, "gx", [("a", "F32", [0.0] * 4), ("b", "F32", [1 + 2 ** -9, 3.0, -0.5, 1e-3]),
                                ("ids", "I64", ((1, 4), ids.tobytes()))])
    gy = _write_toy(tmp, "gy", [("a", "F32", [1.0, 2.0, 3.0, 4.0]), ("b", "F32", [5.0] * 4),
                                ("ids", "I64", ((1, 4), ids.tobytes()))])
    rep = merge(gx, [gy], os.path.join(tmp, "o_ex"), "task_arithmetic", excludes=["^b$"], out_dtype="bf16")
    bf16_1e3 = float(decode("BF16", np.frombuffer(encode("BF16", np.array([1e-3], F32)), np.uint8))[0])
    om = read_model(os.path.join(tmp, "o_ex"))
    ck(rep["d"] == 4 and om["b"].dtype == "BF16" and om["a"].dtype == "BF16" and om["ids"].dtype == "I64" and
       om["b"].f32().tolist() == [1.0, 3.0, -0.5, bf16_1e3] and
       om["a"].f32().tolist() == [1.0, 2.0, 3.0, 4.0], "exclude + dtype")
    rep = merge(gx, [gy], os.path.join(tmp, "o_ex2"), "task_arithmetic", excludes=["^b$"])
    om = read_model(os.path.join(tmp, "o_ex2"))
    ck(om["b"].raw.tobytes() == read_model(gx)["b"].raw.tobytes(), "excluded tensor: byte copy")

    # --- DARE: XXH3 name keys (vectors from libxxhash 0.8.1), the counter-based mask, rescaling
    vec = [(b"", 0x2d06800538d394c2), (b"abc", 0x78af5f94892f3950),
           (b"model.norm.weight", 0x86f0cb6af602213b),
           (b"model.layers.0.self_attn.q_proj.weight", 0x6e5e08f124f44fd4),
           (bytes(range(200)), 0xf42a8864feaf0703), (bytes(i * 7 % 251 for i in range(1500)), 0xde3153dcb8699975)]
    for data, want in vec:
        ck(xxh3_64(data) == want, "xxh3_64 of %d bytes: %x" % (len(data), xxh3_64(data)))

    def keep_scalar(seed, task, name, index, density):  # rng.c's "Python reference", verbatim logic
        stream = (xxh3_64(name.encode()) + (task + 1) * 0xD1B54A32D192ED03) & XXH_M64
        key = _mix_int(_mix_int(seed ^ 0x6A09E667F3BCC909) ^ stream)
        return (_mix_int((key + (index + 1) * 0x9E3779B97F4A7C15) & XXH_M64) >> 11) * 2.0 ** -53 < density
    km = dare_keep(42, 1, "model.norm.weight", 64, 0.3)
    ck(km.tolist() == [keep_scalar(42, 1, "model.norm.weight", j, 0.3) for j in range(64)], "dare mask vs scalar")
    rate = float(np.mean(dare_keep(7, 0, "x", 200000, 0.3)))
    ck(abs(rate - 0.3) < 0.005, "dare keep rate %.4f" % rate)
    ck(not np.array_equal(dare_keep(7, 0, "x", 64, 0.5), dare_keep(7, 1, "x", 64, 0.5)), "dare tasks differ")
    ck(bool(np.all(dare_keep(7, 0, "x", 64, 1.0))) and not np.any(dare_keep(7, 0, "x", 64, 0.0)), "dare 0/1")
    rep = merge(base, [t1, t2], os.path.join(tmp, "o_dl1"), "dare_linear", density=1.0, lam=0.5)
    ck(_load(os.path.join(tmp, "o_dl1"), "w").tolist() == [1.0, 2.25, -1.25, 0.625], "dare_linear p=0 = TA")
    rep = merge(base, [t1, t2], os.path.join(tmp, "o_dl"), "dare_linear", density=0.5, seed=3)
    m1, m2 = dare_keep(3, 0, "w", 4, 0.5), dare_keep(3, 1, "w", 4, 0.5)
    want = [b_ + (a1 / 0.5 if k1 else 0.0) + (a2 / 0.5 if k2 else 0.0) for b_, a1, a2, k1, k2 in
            zip([1.0, 2.0, -1.0, 0.5], [.5, 0, -.25, 0], [-.5, .5, -.25, .25], m1, m2)]
    ck(_load(os.path.join(tmp, "o_dl"), "w").tolist() == want, "dare_linear by hand")
    ck([s["kept"] for s in rep["tasks"]] == [int(m1.sum()), int(m2.sum())], "dare kept = mask counts")
    merge(tb, [ta, tc, td], os.path.join(tmp, "o_dt1"), "dare_ties", density=1.0)
    merge(tb, [ta, tc, td], os.path.join(tmp, "o_t1"), "ties", density=1.0)
    ck(_load(os.path.join(tmp, "o_dt1"), "w").tolist() == _load(os.path.join(tmp, "o_t1"), "w").tolist(),
       "dare_ties p=0 = ties k=1")

    # --- non-finite inputs are refused, naming the tensor
    nf = _write_toy(tmp, "nf", [("w", "F32", [0.0] * 9 + [float("nan")])])
    try:
        merge(pb, [nf], os.path.join(tmp, "o_nf"), "pcb")
        ck(False, "non-finite refused")
    except RefError as e:
        ck("tensor w" in str(e), "non-finite message names the tensor: %s" % e)

    print("selftest: %d checks, %d failed" % (ck.n, ck.failed))
    if not ck.failed:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("selftest files kept in " + tmp)
    return 1 if ck.failed else 0


# ------------------------------------------------------------------------------------------------
def main(argv):
    ap = argparse.ArgumentParser(prog="pcb_ref.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--method", default="pcb",
                   choices=["pcb", "ties", "task_arithmetic", "linear", "dare_linear", "dare_ties"])
    m.add_argument("--density", type=float, default=0.1)
    m.add_argument("--lambda", dest="lam", type=float, default=1.0)
    m.add_argument("--lambdas", action="append", default=None,
                   help="per-task coefficients L1,L2,... (comma separated, or the option repeated)")
    m.add_argument("--weights", action="append", default=None,
                   help="per-model weights W1,W2,... (linear; mergekit's for the task methods)")
    m.add_argument("--densities", action="append", default=None,
                   help="per-model densities D1,D2,... (ties, dare_ties, dare_linear)")
    m.add_argument("--normalize", dest="normalize", action="store_const", const=True, default=None)
    m.add_argument("--no-normalize", dest="normalize", action="store_const", const=False)
    m.add_argument("--rescale", dest="rescale", action="store_const", const=True, default=None)
    m.add_argument("--no-rescale", dest="rescale", action="store_const", const=False)
    m.add_argument("--clamp-ratio", type=float, default=1e-4)
    m.add_argument("--scope", choices=["global", "tensor"], default="global")
    m.add_argument("--dtype", choices=["base", "bf16", "f16", "f32"], default="base")
    m.add_argument("--exclude", action="append", default=[])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--allow-nonfinite", action="store_true")
    m.add_argument("--math", choices=["cr", "f32", "f64"], default="cr",
                   help="exp/tanh: float64 rounded to float32 (default: correctly rounded, the "
                        "same on every CPU), NumPy's float32 functions (CPU-dependent last bits), or "
                        "f64: every operation in float64, rounded once at the end (the yardstick "
                        "for float32 arithmetic, not pcbmerge's semantics)")
    m.add_argument("--absent", choices=["copy", "skip"], default="copy",
                   help="a tensor some task lacks: copied from the base, or merged over the "
                   "tasks that have it (present tasks only)")
    m.add_argument("--report", default=None, help="JSON report path (default OUT/ref_report.json)")
    m.add_argument("tasks", nargs="+")
    sub.add_parser("selftest")
    a = ap.parse_args(argv)
    if a.cmd == "selftest":
        return selftest()

    def floats(v):
        if v is None:
            return None
        return [float(x) for s in v for x in s.split(",") if x != ""]
    set_math(a.math)
    try:
        rep = merge(a.base, a.tasks, a.out, a.method, a.density, a.lam, floats(a.lambdas),
                    floats(a.weights), a.clamp_ratio, a.scope, a.dtype, a.exclude, a.seed,
                    a.allow_nonfinite, floats(a.densities), a.normalize, a.rescale, a.absent)
    except RefError as e:
        print("pcb_ref.py: " + str(e), file=sys.stderr)
        return 1
    path = a.report or os.path.join(a.out, "ref_report.json")
    with open(path, "w") as f:
        json.dump(rep, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

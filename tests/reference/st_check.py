#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""st_check.py — an independent safetensors reader (Python + NumPy) used to check files pcbmerge
writes. It shares no code with src/format and enforces the same rules as the reference reader.

  st_check.py PATH [--values N] [--quiet]

PATH is a .safetensors file, a model.safetensors.index.json, or a model directory holding either.
Prints one line per tensor, in model order (shards in order of first appearance in weight_map,
then by data offset):
  name <TAB> dtype <TAB> [shape] <TAB> file <TAB> offset <TAB> nbytes <TAB> wsum
where offset is absolute in the file and wsum = sum((i + 1) * byte[i]) mod 2^64 as 16 hex digits.
--values N adds the first N decoded values of F32/F16/BF16/F64 and integer tensors.
Exits 0 when valid, 1 with "st_check: FILE: reason" on stderr when a rule is broken, 2 on usage.
"""
import json
import os
import signal
import struct
import sys

import numpy as np

MAX_HEADER = 100_000_000
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
        "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
        "C64": 64}
NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "U8": "u1", "I16": "<i2",
         "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "u1"}
INDEX = "model.safetensors.index.json"
U64 = 1 << 64


class Bad(Exception):
    pass


def is_int(x):
    return type(x) is int  # bool is an int subclass in Python: refuse it


def strict_json(text, what):
    def pairs(kv):
        d = {}
        for k, v in kv:
            if k in d:
                raise Bad(f"{what}: duplicate key {k!r}")
            d[k] = v
        return d

    def no_const(c):
        raise Bad(f"{what}: {c} is not JSON")

    try:
        s = text.decode("utf-8")
        obj = json.loads(s, object_pairs_hook=pairs, parse_constant=no_const)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Bad(f"{what} is not valid UTF-8 JSON: {e}") from None
    check_strings(obj, what)
    return obj


def check_strings(obj, what):
    """Refuse NUL characters and lone surrogates (no C reader can represent them)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        items = list(o.items()) if isinstance(o, dict) else (o if isinstance(o, list) else [])
        for it in items:
            for s in (it if isinstance(o, dict) else (it,)):
                if isinstance(s, str):
                    if "\0" in s:
                        raise Bad(f"{what}: NUL character in a string")
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError:
                        raise Bad(f"{what}: invalid Unicode escape in a string") from None
                elif isinstance(s, (dict, list)):
                    stack.append(s)


def tensor_bytes(name, e):
    if not isinstance(e, dict):
        raise Bad(f"tensor {name!r} is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in e:
            raise Bad(f"tensor {name!r} has no {key}")
    dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
    if not isinstance(dt, str) or dt not in BITS:
        raise Bad(f"tensor {name!r}: unknown dtype {dt!r}")
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        raise Bad(f"tensor {name!r}: shape must be a list of non-negative integers")
    numel = 1
    for d in shape:  # checked in order, like the reference reader
        numel *= d
        if numel >= U64:
            raise Bad(f"tensor {name!r}: shape product overflows")
    bits = numel * BITS[dt]
    if bits >= U64 or bits % 8:
        raise Bad(f"tensor {name!r}: {numel} x {BITS[dt]} bits overflow or are not whole bytes")
    if (not isinstance(offs, list) or len(offs) != 2 or not all(is_int(o) and 0 <= o < U64
                                                                 for o in offs)):
        raise Bad(f"tensor {name!r}: data_offsets must be two non-negative integers")
    if offs[1] - offs[0] != bits // 8:
        raise Bad(f"tensor {name!r}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, "
                  f"shape needs {bits // 8}")
    return dt, shape, offs[0], bits // 8


def read_file(path):
    """Validate one file; returns (list of tensor dicts sorted by offset, metadata)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pre = f.read(8)
        if len(pre) < 8:
            raise Bad("shorter than 8 bytes")
        n = struct.unpack("<Q", pre)[0]
        if n > MAX_HEADER:
            raise Bad(f"header length {n} > {MAX_HEADER}")
        if 8 + n > size:
            raise Bad(f"header of {n} bytes extends past the end of the file ({size} bytes)")
        hdr = strict_json(f.read(n), "header")
    if not isinstance(hdr, dict):
        raise Bad("header is not a JSON object")
    meta = hdr.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and
                                 all(isinstance(v, str) for v in meta.values())):
        raise Bad("__metadata__ must map strings to strings")
    tensors = []
    for name, e in hdr.items():
        dt, shape, begin, nbytes = tensor_bytes(name, e)
        tensors.append({"name": name, "dtype": dt, "shape": shape, "begin": begin,
                        "nbytes": nbytes, "path": path, "start": 8 + n})
    tensors.sort(key=lambda t: (t["begin"], t["nbytes"], t["name"]))
    cursor = 0
    for t in tensors:
        if t["begin"] != cursor:
            raise Bad(f"tensor {t['name']!r} starts at {t['begin']}, expected {cursor} "
                      "(gap or overlap)")
        cursor += t["nbytes"]
    if cursor != size - 8 - n:
        raise Bad(f"tensors end at {cursor} but the data buffer has {size - 8 - n} bytes")
    return tensors, meta


def plain(name):
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name)


def read_index(path):
    d = os.path.dirname(path) or "."
    with open(path, "rb") as f:
        idx = strict_json(f.read(), "index")
    if not isinstance(idx, dict) or not isinstance(idx.get("weight_map"), dict):
        raise Bad("index must be an object with a weight_map object")
    wm = idx["weight_map"]
    if not wm:
        raise Bad("weight_map is empty")
    shards = []
    for name, fname in wm.items():
        if not plain(fname):
            raise Bad(f"weight_map[{name!r}] = {fname!r} is not a plain file name")
        if fname not in shards:
            if not os.path.isfile(os.path.join(d, fname)):
                raise Bad(f"shard {fname!r} does not exist")
            shards.append(fname)
    tensors, meta, seen = [], None, {}
    for i, fname in enumerate(shards):
        try:
            ts, m = read_file(os.path.join(d, fname))
        except Bad as e:
            raise Bad(f"{fname}: {e}") from None
        meta = m if i == 0 else meta
        for t in ts:
            if t["name"] in seen:
                raise Bad(f"tensor {t['name']!r} is in two shards")
            if wm.get(t["name"]) != fname:
                raise Bad(f"tensor {t['name']!r} of {fname} is not mapped to that shard")
            seen[t["name"]] = fname
        tensors += ts
    missing = [k for k in wm if k not in seen]
    if missing:
        raise Bad(f"weight_map lists {missing[0]!r} but no shard holds it")
    return tensors, meta


def open_model(path):
    if os.path.isdir(path):
        single = os.path.join(path, "model.safetensors")
        if os.path.isfile(single):
            return read_file(single)
        if os.path.isfile(os.path.join(path, INDEX)):
            return read_index(os.path.join(path, INDEX))
        raise Bad("neither model.safetensors nor an index")
    if path.endswith(".index.json"):
        return read_index(path)
    return read_file(path)


def tensor_bytes_of(t):
    with open(t["path"], "rb") as f:
        f.seek(t["start"] + t["begin"])
        b = f.read(t["nbytes"])
    assert len(b) == t["nbytes"]
    return np.frombuffer(b, dtype=np.uint8)


def wsum(b):
    w = np.arange(1, len(b) + 1, dtype=np.uint64)
    return int(np.sum(b.astype(np.uint64) * w, dtype=np.uint64))


def values(t, b, n):
    if t["dtype"] == "BF16":
        v = (b.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif t["dtype"] in NUMPY:
        v = b.view(NUMPY[t["dtype"]])
    else:
        return ""
    return " " + " ".join(repr(x.item()) for x in v[:n])


def main(argv):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    args = [a for a in argv if not a.startswith("--")]
    nvals = 0
    if "--values" in argv:
        i = argv.index("--values")
        nvals = int(argv[i + 1])
        args.remove(argv[i + 1])
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = args[0]
    try:
        tensors, _ = open_model(path)
    except Bad as e:
        print(f"st_check: {path}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"st_check: {path}: {e}", file=sys.stderr)
        return 1
    if "--quiet" in argv:
        return 0
    for t in tensors:
        b = tensor_bytes_of(t)
        shape = "[" + ",".join(str(d) for d in t["shape"]) + "]"
        line = (f"{t['name']}\t{t['dtype']}\t{shape}\t{os.path.basename(t['path'])}\t"
                f"{t['start'] + t['begin']}\t{t['nbytes']}\t{wsum(b):016x}")
        print(line + (values(t, b, nvals) if nvals else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

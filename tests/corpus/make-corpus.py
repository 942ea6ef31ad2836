#!/usr/bin/python3
"""make-corpus.py — generate the safetensors test corpus (run once, commit the output).

  bad/*.safetensors   files that break one rule each; every reader must refuse them
  good/*.safetensors  valid edge cases (no tensors, scalars, empty tensors, F4, padding, ...)
  index/bad-*/        model directories whose index or shards break one rule each
  index/good-*/       valid sharded model directories
  expect.tsv          path <TAB> words the error message must contain (bad cases only)

Usage: /usr/bin/python3 tests/corpus/make-corpus.py   (from anywhere; output is deterministic)
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
expect = []


def header_bytes(hdr, pad_to=8):
    text = hdr if isinstance(hdr, bytes) else json.dumps(hdr, separators=(",", ":")).encode()
    if pad_to:
        text += b" " * (-len(text) % pad_to)
    return text


def raw(rel, data, keyword=None):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if keyword:
        expect.append((rel, keyword))


def st(rel, hdr, data, keyword=None, pad_to=8, n=None):
    """A file: 8-byte length (n, or the real one), header, data (bytes or a length)."""
    text = header_bytes(hdr, pad_to)
    if isinstance(data, int):
        data = bytes((i * 7 + 3) & 0xFF for i in range(data))
    raw(rel, struct.pack("<Q", len(text) if n is None else n) + text + data, keyword)


def t(dtype, shape, begin, end, **extra):
    e = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    e.update(extra)
    return e


def bad_files():
    raw("bad/empty.safetensors", b"", "shorter than the 8-byte header length")
    raw("bad/short.safetensors", b"\x02\x00\x00", "shorter than the 8-byte header length")
    st("bad/header-too-large.safetensors", {}, 16, "exceeds the format's limit", n=100_000_001)
    st("bad/header-len-max.safetensors", {}, 0, "exceeds the format's limit", n=2**64 - 1)
    st("bad/header-past-eof.safetensors", {}, 0, "extends past the end of the file", n=4096)
    st("bad/empty-header.safetensors", b"", 0, "not valid UTF-8 JSON", pad_to=0)
    st("bad/not-json.safetensors", b'{"a": {"dtype"', 0, "not valid UTF-8 JSON", pad_to=0)
    st("bad/bad-utf8.safetensors", b'{"w\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
       1, "not valid UTF-8 JSON")
    st("bad/overlong-utf8.safetensors", b'{"\xc0\xaf":{"dtype":"U8","shape":[1],'
       b'"data_offsets":[0,1]}}', 1, "not valid UTF-8 JSON")
    st("bad/nul-in-header.safetensors", b'{"a\x00":{}}', 0, "not valid UTF-8 JSON")
    st("bad/escaped-nul-name.safetensors", b'{"a\\u0000b":{"dtype":"U8","shape":[1],'
       b'"data_offsets":[0,1]}}', 1, "not valid UTF-8 JSON")
    st("bad/trailing-garbage.safetensors", b"{} x", 0, "not valid UTF-8 JSON")
    st("bad/duplicate-key.safetensors", b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
       b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2, "duplicate")
    st("bad/deep-nesting.safetensors", b"[" * 5000 + b"]" * 5000, 0, "not valid UTF-8 JSON")
    st("bad/top-array.safetensors", [], 0, "not an object (rule: the top level")
    st("bad/top-string.safetensors", "weights", 0, "not an object (rule: the top level")
    st("bad/entry-not-object.safetensors", {"w": 3}, 0,
       "not an object {dtype, shape, data_offsets}")
    st("bad/unknown-dtype.safetensors", {"w": t("F128", [1], 0, 16)}, 16, "unknown dtype")
    st("bad/lowercase-dtype.safetensors", {"w": t("f32", [1], 0, 4)}, 4, "unknown dtype")
    st("bad/dtype-number.safetensors", {"w": t(32, [1], 0, 4)}, 4, "not a string")
    for key in ("dtype", "shape", "data_offsets"):
        e = t("F32", [1], 0, 4)
        del e[key]
        st(f"bad/missing-{key}.safetensors", {"w": e}, 4, f'has no "{key}"')
    st("bad/shape-string.safetensors", {"w": t("F32", "2", 0, 8)}, 8, "not an array")
    st("bad/shape-object.safetensors", {"w": t("F32", {"0": 2}, 0, 8)}, 8, "not an array")
    st("bad/shape-negative.safetensors", {"w": t("F32", [-1, 2], 0, 8)}, 8,
       "rule: dims are non-negative integers")
    st("bad/shape-real.safetensors", {"w": t("F32", [2.0], 0, 8)}, 8,
       "rule: dims are non-negative integers")
    st("bad/shape-bool.safetensors", {"w": t("F32", [True], 0, 4)}, 4,
       "rule: dims are non-negative integers")
    st("bad/shape-null.safetensors", {"w": t("F32", [None], 0, 4)}, 4,
       "rule: dims are non-negative integers")
    st("bad/shape-huge-int.safetensors", b'{"w":{"dtype":"F32","shape":[99999999999999999999],'
       b'"data_offsets":[0,4]}}', 4, "not valid UTF-8 JSON")
    st("bad/shape-overflow.safetensors", {"w": t("U8", [2**32, 2**32, 2], 0, 0)}, 0, "overflow")
    st("bad/shape-overflow-then-zero.safetensors", {"w": t("U8", [2**40, 2**40, 0], 0, 0)}, 0,
       "overflow")
    st("bad/bytes-overflow.safetensors", {"w": t("F64", [2**61], 0, 0)}, 0, "overflow")
    st("bad/f4-odd.safetensors", {"w": t("F4", [3], 0, 2)}, 2, "not a whole number of bytes")
    st("bad/f6-partial.safetensors", {"w": t("F6_E2M3", [2], 0, 2)}, 2,
       "not a whole number of bytes")
    st("bad/offsets-one.safetensors", {"w": {"dtype": "U8", "shape": [1], "data_offsets": [0]}},
       1, "not an array of two non-negative integers")
    st("bad/offsets-three.safetensors", {"w": {"dtype": "U8", "shape": [1],
                                               "data_offsets": [0, 1, 2]}},
       1, "not an array of two non-negative integers")
    st("bad/offsets-negative.safetensors", {"w": t("U8", [1], -1, 0)}, 1,
       "not an array of two non-negative integers")
    st("bad/offsets-string.safetensors", {"w": t("U8", [1], "0", "1")}, 1,
       "not an array of two non-negative integers")
    st("bad/offsets-object.safetensors", {"w": {"dtype": "U8", "shape": [1],
                                                "data_offsets": {"begin": 0, "end": 1}}},
       1, "not an array of two non-negative integers")
    st("bad/offsets-reversed.safetensors", {"w": t("U8", [1], 1, 0)}, 1,
       "rule: end - begin = product(shape) x element size")
    st("bad/size-mismatch.safetensors", {"w": t("F32", [2, 3], 0, 20)}, 20,
       "rule: end - begin = product(shape) x element size")
    st("bad/gap.safetensors", {"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, 12,
       "a gap of 4 bytes")
    st("bad/not-from-zero.safetensors", {"a": t("F32", [1], 4, 8)}, 8, "not 0")
    st("bad/overlap.safetensors", {"a": t("F32", [2], 0, 8), "b": t("F32", [1], 4, 8)}, 8,
       "an overlap")
    st("bad/same-range.safetensors", {"a": t("F32", [1], 0, 4), "b": t("F32", [1], 0, 4)}, 4,
       "an overlap")
    st("bad/trailing-bytes.safetensors", {"a": t("F32", [1], 0, 4)}, 5, "trailing bytes")
    st("bad/truncated-data.safetensors", {"a": t("F32", [4], 0, 16)}, 10, "truncated")
    st("bad/no-tensors-but-data.safetensors", {}, 3, "trailing bytes")
    st("bad/metadata-array.safetensors", {"__metadata__": ["pt"]}, 0,
       "rule: __metadata__ maps strings to strings")
    st("bad/metadata-number.safetensors", {"__metadata__": {"format": 1}}, 0,
       "rule: __metadata__ maps strings to strings")
    st("bad/metadata-nested.safetensors", {"__metadata__": {"a": {"b": "c"}}}, 0,
       "rule: __metadata__ maps strings to strings")


def good_files():
    st("good/zero-tensors.safetensors", {}, 0)
    st("good/zero-tensors-metadata.safetensors", {"__metadata__": {"format": "pt"}}, 0)
    st("good/basic.safetensors", {
        "__metadata__": {"format": "pt", "note": "caf\u00e9"},
        "z.bias": t("F32", [3], 24, 36),
        "a.weight": t("BF16", [2, 3], 12, 24),
        "b.weight": t("F16", [6], 0, 12),
    }, 36, pad_to=4096)
    st("good/scalar-and-empty.safetensors", {
        "scalar": t("F32", [], 0, 4),
        "empty": t("F32", [0, 5], 4, 4),
        "after": t("U8", [2], 4, 6),
        "empty2": t("I64", [7, 0], 0, 0),
    }, 6)
    st("good/subbyte.safetensors", {
        "f4": t("F4", [4], 0, 2),
        "f6": t("F6_E3M2", [4], 2, 5),
    }, 5)
    names = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32",
             "F32", "F64", "I64", "U64", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"]
    size = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
            "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8}
    hdr, off = {}, 0
    for name in names:
        n = 2 * size.get(name, 1)
        hdr["t_" + name.lower()] = t(name, [2], off, off + n)
        off += n
    st("good/all-dtypes.safetensors", hdr, off)
    st("good/extra-keys.safetensors", {"w": t("U8", [1], 0, 1, quant="none")}, 1)
    st("good/unicode-name.safetensors", {"\u00e9\u00e8.\u4e2d": t("U8", [1], 0, 1)}, 1)


# ---- sharded model directories ----------------------------------------------------------------

def shard(d, name, tensors):
    """tensors: list of (name, dtype, shape) laid out in order."""
    hdr, off = {}, 0
    for tn, dt, shape in tensors:
        n = {"F32": 4, "BF16": 2, "U8": 1}[dt]
        for s in shape:
            n *= s
        hdr[tn] = t(dt, shape, off, off + n)
        off += n
    st(os.path.join(d, name), hdr, off)


def index(d, weight_map, keyword=None, raw_text=None):
    text = raw_text if raw_text is not None else json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2).encode()
    raw(os.path.join(d, "model.safetensors.index.json"), text)
    if keyword:
        expect.append((d, keyword))


S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def two_shards(d):
    shard(d, S1, [("a", "F32", [2]), ("b", "BF16", [3])])
    shard(d, S2, [("c", "F32", [1]), ("d", "U8", [4])])


def good_indexes():
    d = "index/good-two-shards"
    two_shards(d)
    # shard 2 first in weight_map order: the model lists shard 2, then shard 1
    index(d, {"c": S2, "a": S1, "d": S2, "b": S1})
    with open(os.path.join(HERE, d, "config.json"), "w") as f:
        f.write('{"model_type": "llama"}\n')


def bad_indexes():
    base_map = {"a": S1, "b": S1, "c": S2, "d": S2}
    cases = {
        "bad-json": (None, b'{"weight_map": {"a": ', "not valid UTF-8 JSON"),
        "not-object": (None, b"[]", "not a JSON object"),
        "no-weight-map": (None, b'{"metadata": {}}', 'has no "weight_map"'),
        "weight-map-array": (None, b'{"weight_map": ["a"]}', 'is an array, not an object'),
        "empty-weight-map": (None, b'{"weight_map": {}}', "is empty"),
        "value-number": (dict(base_map, a=1), None, "not a shard file name string"),
        "duplicate-tensor": (None, b'{"weight_map": {"a": "%s", "a": "%s"}}' % (
            S1.encode(), S2.encode()), "duplicate"),
        "traversal": (dict(base_map, a="../" + S1), None, "not a plain file name"),
        "absolute": (dict(base_map, a="/abs/x.safetensors"), None, "not a plain file name"),
        "subdir": (dict(base_map, a="sub/x.safetensors"), None, "not a plain file name"),
        "backslash": (dict(base_map, a="sub\\x.safetensors"), None, "not a plain file name"),
        "dot": (dict(base_map, a="."), None, "not a plain file name"),
        "dotdot": (dict(base_map, a=".."), None, "not a plain file name"),
        "empty-name": (dict(base_map, a=""), None, "not a plain file name"),
        "missing-shard": (dict(base_map, a="model-00003-of-00003.safetensors"), None,
                          "does not exist in the model directory"),
        "listed-not-in-shard": (dict(base_map, e=S1), None, "has no tensor of that name"),
        "not-listed": ({k: v for k, v in base_map.items() if k != "b"}, None, "does not list"),
        "wrong-shard": (dict(base_map, a=S2), None, "maps it to shard"),
    }
    for name, (wm, text, kw) in sorted(cases.items()):
        d = "index/bad-" + name
        two_shards(d)
        index(d, wm, kw, text)
    shard("index/bad-subdir/sub", "x.safetensors", [("a", "F32", [2])])  # exists, still refused
    d = "index/bad-two-shards"
    shard(d, S1, [("a", "F32", [2]), ("b", "BF16", [3])])
    shard(d, S2, [("c", "F32", [1]), ("a", "F32", [2])])
    index(d, {"a": S1, "b": S1, "c": S2}, "in two shards")
    d = "index/bad-shard-file"
    two_shards(d)
    st(os.path.join(d, S2), {"c": t("F32", [1], 0, 4), "d": t("U8", [4], 4, 9)}, 9)
    index(d, base_map, "rule: end - begin = product(shape) x element size")


def main():
    for sub in ("bad", "good", "index"):
        shutil.rmtree(os.path.join(HERE, sub), ignore_errors=True)
    bad_files()
    good_files()
    good_indexes()
    bad_indexes()
    with open(os.path.join(HERE, "expect.tsv"), "w") as f:
        f.write("# path (relative to tests/corpus)\twords the error message must contain\n")
        for rel, kw in sorted(expect):
            f.write(f"{rel}\t{kw}\n")


if __name__ == "__main__":
    main()

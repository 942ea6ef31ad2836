#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""quirky-family.py — a base and two task models with the quirks of real hub checkpoints, for the
memory, determinism, resume and split-merge suites:

  base   FP8 (F8_E4M3) linear weights with F32 128x128 block scales (weight_scale_inv) and
         quantization_config, a tied head (no lm_head.weight; tie_word_embeddings true), BF16
         embeddings and norms, an I64 buffer, tokenizer.json;
  task1  a BF16 fine-tune that unties its head (stores lm_head.weight) and appended two special
         tokens (embed_tokens and lm_head with 2 rows more, in its tokenizer.json);
  task2  an FP8 fine-tune with its own scales, tied like the base.

  quirky-family.py OUT [--params N] [--seed S] [--layers L]

N is about the elements of the base (default 4M); every tensor is written as soon as it is made,
so generating a few hundred MB needs little memory. The same arguments give the same bytes.
"""
import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np

E4M3_OK = np.array([b for b in range(256) if (b & 0x7F) != 0x7F], np.uint8)


class Writer:
    """A single-file safetensors model written tensor by tensor (header sized up front)."""

    def __init__(self, path, specs):
        self.specs, off, hdr = specs, 0, {"__metadata__": {"format": "pt"}}
        for name, dtype, shape, nbytes in specs:
            hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
            off += nbytes
        js = json.dumps(hdr, separators=(",", ":")).encode()
        js += b" " * ((8 - len(js) % 8) % 8)
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(js)) + js)

    def close(self):
        self.f.close()


def bf16(x):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--params", default="4M")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args()
    n = int(float(a.params[:-1]) * {"K": 1e3, "M": 1e6, "G": 1e9}[a.params[-1]]) \
        if a.params[-1] in "KMG" else int(a.params)
    L = a.layers
    H = max(128, int((n / (L * 12)) ** 0.5) // 64 * 64)     # 12 H^2 per layer: 4 weights of H x 3H
    V = 1000
    rng = np.random.default_rng(a.seed)

    def weights():
        for l in range(L):
            for w, (r, c) in (("mlp.up_proj", (3 * H, H)), ("mlp.down_proj", (H, 3 * H)),
                              ("self_attn.q_proj", (H, H)), ("self_attn.o_proj", (H, H))):
                yield "model.layers.%d.%s.weight" % (l, w), (r, c)

    def vocab(extra):
        v = {"tok%d" % i: i for i in range(V - 2)}
        added = [{"id": V - 2, "content": "<s>", "special": True},
                 {"id": V - 1, "content": "</s>", "special": True}]
        added += [{"id": V + k, "content": t, "special": True} for k, t in enumerate(extra)]
        return {"version": "1.0", "added_tokens": added,
                "model": {"type": "BPE", "vocab": v, "merges": []}}

    models = {"base": dict(fp8=True, tied=True, rows=V, extra=[]),
              "task1": dict(fp8=False, tied=False, rows=V + 2, extra=["<|im_start|>", "<|im_end|>"]),
              "task2": dict(fp8=True, tied=True, rows=V, extra=[])}
    for k, (name, m) in enumerate(models.items()):
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        specs = [("model.embed_tokens.weight", "BF16", (m["rows"], H), m["rows"] * H * 2)]
        for w, (r, c) in weights():
            if m["fp8"]:
                specs.append((w, "F8_E4M3", (r, c), r * c))
                specs.append((w + "_scale_inv", "F32", (-(-r // 128), -(-c // 128)),
                              4 * (-(-r // 128)) * (-(-c // 128))))
            else:
                specs.append((w, "BF16", (r, c), 2 * r * c))
        specs.append(("model.norm.weight", "BF16", (H,), 2 * H))
        specs.append(("model.rotary_emb.position_ids", "I64", (64,), 8 * 64))
        if not m["tied"]:
            specs.append(("lm_head.weight", "BF16", (m["rows"], H), m["rows"] * H * 2))
        wr = Writer(os.path.join(d, "model.safetensors"), specs)
        for tname, dtype, shape, _ in specs:
            # every model derives its values from the base's stream (same seed per tensor) plus
            # its own small change, so the tasks are fine-tunes of the base
            # (a head is a fine-tune of the base's embedding, which the tied base uses as its head)
            key = stable("model.embed_tokens.weight" if tname == "lm_head.weight" else tname)
            g = np.random.default_rng([a.seed, key])
            own = np.random.default_rng([a.seed, k, stable(tname)])
            if dtype == "I64":
                data = np.arange(shape[0], dtype="<i8").tobytes()
            elif dtype == "F8_E4M3":
                b = g.choice(E4M3_OK, size=shape).astype(np.uint8)
                if k:
                    nb = b ^ 1
                    flip = (own.random(shape) < 0.2) & ((nb & 0x7F) != 0x7F)  # never a NaN
                    b = np.where(flip, nb, b).astype(np.uint8)
                data = b.tobytes()
            elif tname.endswith("_scale_inv"):
                s = g.uniform(1e-3, 4e-3, shape).astype(np.float32)
                if k:
                    s = (s * own.uniform(0.99, 1.01, shape)).astype(np.float32)
                data = s.astype("<f4").tobytes()
            else:
                vocab_rows = tname in ("model.embed_tokens.weight", "lm_head.weight")
                base_rows = V if vocab_rows else shape[0]
                full = (base_rows,) + tuple(shape[1:])
                x = g.normal(0, 0.02, full).astype(np.float32)
                if tname == "model.norm.weight":
                    x += 1
                if tname.endswith(".weight") and ".layers." in tname:
                    # a BF16 fine-tune of an FP8 weight: the dequantized values plus a change
                    r, c = shape
                    b = g.choice(E4M3_OK, size=shape).astype(np.uint8)
                    sname = tname + "_scale_inv"
                    gs = np.random.default_rng([a.seed, stable(sname)])
                    s = gs.uniform(1e-3, 4e-3, (-(-r // 128), -(-c // 128))).astype(np.float32)
                    table = e4m3_table()
                    x = table[b] * np.repeat(np.repeat(s, 128, 0), 128, 1)[:r, :c]
                if k:
                    x = x + own.laplace(0, 1e-3, full).astype(np.float32)
                if shape[0] > base_rows:
                    x = np.concatenate([x, own.normal(0, 0.02, (shape[0] - base_rows,) + full[1:])
                                       .astype(np.float32)])
                data = bf16(x)
            wr.f.write(data)
        wr.close()
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
               "num_hidden_layers": L, "vocab_size": m["rows"], "torch_dtype": "bfloat16",
               "tie_word_embeddings": m["tied"]}
        if m["fp8"]:
            cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                          "activation_scheme": "dynamic",
                                          "weight_block_size": [128, 128]}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(vocab(m["extra"]), f)
    return 0


_TABLE = None


def stable(name):
    """A per-name stream key that is the same in every run (Python's hash() is not)."""
    return zlib.crc32(name.encode())


def e4m3_table():
    global _TABLE
    if _TABLE is None:
        t = np.empty(256, np.float64)
        for b in range(256):
            e, m = (b >> 3) & 15, b & 7
            v = np.nan if (e == 15 and m == 7) else (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
            t[b] = -v if b & 0x80 else v
        _TABLE = t.astype(np.float32)
    return _TABLE


if __name__ == "__main__":
    sys.exit(main())

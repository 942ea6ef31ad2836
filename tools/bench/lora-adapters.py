#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""lora-adapters.py — PEFT LoRA adapters for a generated base (make bench's adapter case).

  lora-adapters.py BASE_DIR OUT_DIR N RANK

Writes OUT_DIR/adapter1 .. adapterN (adapter_config.json + adapter_model.safetensors, BF16
factors) that target every 2-D weight of the base's transformer layers (attention and MLP
projections) with rank RANK, alpha = 2 * RANK. Prints the targeted element count. Reads only the
base's header; factors are written tensor by tensor.
"""
import json
import os
import struct
import sys

import numpy as np


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def bf16(x):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def main():
    base, out, n, r = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    files = [f for f in sorted(os.listdir(base)) if f.endswith(".safetensors")]
    shapes = {}
    for f in files:
        for k, v in header(os.path.join(base, f)).items():
            if k != "__metadata__" and len(v["shape"]) == 2 and ".layers." in k and k.endswith(".weight"):
                shapes[k] = v["shape"]
    targeted = sum(a * b for a, b in shapes.values())
    for i in range(1, n + 1):
        d = os.path.join(out, "adapter%d" % i)
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(i)
        specs, modules = [], set()
        for k, (rows, cols) in sorted(shapes.items()):
            m = "base_model.model." + k[:-len(".weight")]
            modules.add(k.split(".")[-2])
            specs.append((m + ".lora_A.weight", (r, cols)))
            specs.append((m + ".lora_B.weight", (rows, r)))
        hdr, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in specs:
            nb = 2 * shape[0] * shape[1]
            hdr[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
        js = json.dumps(hdr, separators=(",", ":")).encode()
        js += b" " * ((8 - len(js) % 8) % 8)
        with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(js)) + js)
            for name, shape in specs:
                std = 0.3 if name.endswith("lora_A.weight") else 0.002
                f.write(bf16(rng.normal(0, std, shape).astype(np.float32)))
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
                       "target_modules": sorted(modules), "base_model_name_or_path": base}, f)
    print(targeted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

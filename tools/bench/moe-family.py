#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""moe-family.py N DIR — a family with MoE-scale tensor counts: DIR/base, DIR/task1, DIR/task2,
each one model.safetensors of N BF16 tensors of 4 elements (names like an MoE checkpoint's
experts). Measures per-tensor costs (planning, scheduling, memory), not bandwidth:

    tools/bench/moe-family.py 100000 /tmp/moe
    /usr/bin/time -v build/pcbmerge merge --mem 64M --base /tmp/moe/base --out /tmp/moe-out \\
        /tmp/moe/task1 /tmp/moe/task2
"""
import json
import os
import struct
import sys

import numpy as np


def write(path, vals):
    n = vals.shape[0]
    bits = (vals.view(np.uint32) >> 16).astype(np.uint16)  # truncated to BF16: fine for timing
    header = {f"model.layers.{i // 1000}.mlp.experts.{i % 1000}.w":
              {"dtype": "BF16", "shape": [4], "data_offsets": [8 * i, 8 * i + 8]} for i in range(n)}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bits.tobytes())


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(1)
    base = rng.standard_normal((n, 4)).astype(np.float32)
    for name in ("base", "task1", "task2"):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        vals = base if name == "base" else base + 0.01 * rng.standard_normal((n, 4)).astype(np.float32)
        write(os.path.join(out, name, "model.safetensors"), vals)


if __name__ == "__main__":
    main()

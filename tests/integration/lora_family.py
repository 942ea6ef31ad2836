# SPDX-License-Identifier: Apache-2.0
"""lora_family.py OUT BASE_DTYPE: a small Llama-shaped base, PEFT LoRA adapters of it (as PEFT
saves them: adapter_config.json + adapter_model.safetensors, keys base_model.model.<module>.
lora_A.weight [r, in] / lora_B.weight [out, r], modules_to_save tensors under
base_model.model.<module>.weight), the MATERIALIZED fine-tunes (base + scale * B @ A in float32,
written as F32) and a full fine-tune. Refusal fixtures beside them. Used by lora_inputs.sh."""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.environ["PCBM_ROOT"] + "/tests/reference")
from pcb_ref import write_model, encode  # noqa: E402

out, base_dt = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(23)
H, I, V, KV, L = 128, 352, 96, 64, 2
shapes = {"model.embed_tokens.weight": (V, H)}
for l in range(L):
    p = "model.layers.%d." % l
    shapes.update({p + "input_layernorm.weight": (H,),
                   p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                   p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                   p + "post_attention_layernorm.weight": (H,),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                   p + "mlp.down_proj.weight": (H, I)})
shapes.update({"model.norm.weight": (H,), "lm_head.weight": (V, H)})



def seq_matmul(B, A):
    """B @ A in float32 with the documented summation order (docs/semantics.md): for every
    element, k = 0 .. r-1 in turn from +0, one rounding per product and per sum, no FMA —
    the order that makes an adapter's ΔW the same on every machine."""
    B = B.astype(np.float32)
    A = A.astype(np.float32)
    acc = np.zeros((B.shape[0], A.shape[1]), np.float32)
    for k in range(B.shape[1]):
        acc = acc + B[:, k:k + 1] * A[k:k + 1, :]
    return acc

def as_dtype(x, dt):
    """float32 values as stored in dt (so the materialized models start from the same base)."""
    raw = np.frombuffer(encode(dt, x.ravel()), dtype="<u2" if dt == "BF16" else "<f4")
    if dt == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(x.shape)
    return raw.reshape(x.shape).astype(np.float32)


base = {}
for n, s in shapes.items():
    v = rng.normal(1.0, 0.05, s) if n.endswith("norm.weight") else rng.normal(0, 0.05, s)
    base[n] = as_dtype(v.astype(np.float32), base_dt)


def save_full(d, vals, dt):
    write_model(d, [(n, dt, v.shape, encode(dt, v.ravel())) for n, v in vals.items()])
    with open(d + "/config.json", "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "torch_dtype": "bfloat16" if dt == "BF16" else "float32"}, f, indent=2)


save_full(out + "/base", base, base_dt)


def pattern_match(patterns, module):
    import re
    for k, v in patterns.items():
        if re.match(r"(.*\.)?(%s)$" % k, module):
            return v
    return None


def adapter(name, r, alpha, targets, fdt, rslora=False, rank_pattern=None, alpha_pattern=None,
            save=(), fan_in_fan_out=False, extra_cfg=None, extra_keys=None, bad_b=None,
            embed=False):
    """Write OUT/NAME (the adapter) and OUT/NAME.full (the materialized fine-tune, F32)."""
    rank_pattern, alpha_pattern = rank_pattern or {}, alpha_pattern or {}
    tensors, full = [], {n: v.copy() for n, v in base.items()}
    for n, s in shapes.items():
        module = n[:-len(".weight")]
        if len(s) != 2 or module.split(".")[-1] not in targets:
            continue
        rr = pattern_match(rank_pattern, module) or r
        aa = pattern_match(alpha_pattern, module) or alpha
        scale = np.float32(aa / math.sqrt(rr) if rslora else aa / rr)
        out_f, in_f = (s[1], s[0]) if fan_in_fan_out else s   # Conv1D-style bases: [in, out]
        A = as_dtype(rng.normal(0, 0.3, (rr, in_f)).astype(np.float32), fdt)
        B = as_dtype(rng.normal(0, 0.02, (out_f, rr)).astype(np.float32), fdt)
        if bad_b == module:
            B = B[:-1]
        key = "base_model.model." + module
        tensors.append((key + ".lora_A.weight", fdt, A.shape, encode(fdt, A.ravel())))
        tensors.append((key + ".lora_B.weight", fdt, B.shape, encode(fdt, B.ravel())))
        if bad_b != module:
            delta = seq_matmul(B, A).T if fan_in_fan_out else seq_matmul(B, A)
            full[n] = (base[n] + delta * scale).astype(np.float32)
    if embed:   # LoRA on the input embedding: lora_embedding_A [r, V], _B [H, r], ΔW = (B A)^T
        n = "model.embed_tokens.weight"
        A = as_dtype(rng.normal(0, 0.3, (r, V)).astype(np.float32), fdt)
        B = as_dtype(rng.normal(0, 0.02, (H, r)).astype(np.float32), fdt)
        key = "base_model.model.model.embed_tokens"
        tensors.append((key + ".lora_embedding_A", fdt, A.shape, encode(fdt, A.ravel())))
        tensors.append((key + ".lora_embedding_B", fdt, B.shape, encode(fdt, B.ravel())))
        full[n] = (base[n] + seq_matmul(B, A).T * np.float32(alpha / r)).astype(np.float32)
    for n in save:   # modules_to_save: stored whole, as PEFT saves it
        v = as_dtype((base[n] + rng.laplace(0, 2e-3, base[n].shape)).astype(np.float32), base_dt)
        tensors.append(("base_model.model." + n, base_dt, v.shape, encode(base_dt, v.ravel())))
        full[n] = v
    for k, (dt, shape) in (extra_keys or {}).items():
        tensors.append((k, dt, shape, encode(dt, np.zeros(int(np.prod(shape)), np.float32))))
    d = out + "/" + name
    write_model(d, tensors)
    os.rename(d + "/model.safetensors", d + "/adapter_model.safetensors")
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "test/base",
           "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "use_rslora": rslora,
           "use_dora": False, "fan_in_fan_out": fan_in_fan_out, "bias": "none",
           "target_modules": sorted(targets), "rank_pattern": rank_pattern,
           "alpha_pattern": alpha_pattern,
           "modules_to_save": [n[:-len(".weight")].split(".")[-1] for n in save] or None,
           "inference_mode": True}
    cfg.update(extra_cfg or {})
    with open(d + "/adapter_config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    save_full(d + ".full", full, "F32")


attn = {"q_proj", "v_proj"}
every = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
adapter("plain", 8, 16, attn, "F32", embed=True)
adapter("rslora", 4, 8, every, "BF16", rslora=True,
        rank_pattern={"layers.1.mlp.down_proj": 2, "k_proj": 6}, alpha_pattern={"o_proj": 3})
adapter("saved", 6, 12, {"up_proj", "down_proj"}, "F32", save=("lm_head.weight",))
adapter("fifo", 5, 7, {"q_proj", "k_proj"}, "BF16", fan_in_fan_out=True)
ft = {n: as_dtype((v + rng.laplace(0, 2e-3, v.shape)).astype(np.float32), base_dt)
      for n, v in base.items()}
save_full(out + "/ft", ft, base_dt)
# refusals
adapter("dora", 4, 8, attn, "F32", extra_cfg={"use_dora": True})
adapter("loha", 4, 8, attn, "F32", extra_cfg={"peft_type": "LOHA"})
adapter("noconfig", 4, 8, attn, "F32")
os.remove(out + "/noconfig/adapter_config.json")
adapter("badb", 4, 8, attn, "F32", bad_b="model.layers.1.self_attn.v_proj")
adapter("nokey", 4, 8, attn, "F32",
        extra_keys={"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": ("F32", (4, H))})
# rank/alpha patterns in Python's regular-expression syntax (PEFT matches them with `re`)
adapter("pyre", 4, 8, every, "F32",
        rank_pattern={r"layers\.\d+\.mlp\.(?:down|up)_proj": 3, r"k_pro[j]": 5},
        alpha_pattern={r"self_attn\.[oq]_proj": 2.5, r"layers\.1\.mlp\.gate_proj$": 12})
adapter("lookahead", 4, 8, attn, "F32", rank_pattern={r"q_proj(?=x)": 2})

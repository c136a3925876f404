"""
Activation bytes one compiled block keeps for its backward, per token, by default, with
`recompute_elementwise` and with `recompute_swiglu` (train.py), and with the residual stream in
bf16 (model.py's `residual_in_compute_dtype`): what torch.compile's partitioner saves, counted through
torch.autograd.graph.saved_tensors_hooks (parameters, which exist anyway, left out).

    python docs/measurements/saved_activations.py [--preset xmodel-2.5] [--tokens 512]

Runs on a CPU under bf16 autocast (a GPU works too). The partitioner's choices do not depend
on the device, except the attention kernel's own saved set: on a CPU SDPA's output is kept
twice (its [B, H, T, d] output and the [B, T, H·d] copy the out projection reads; on a GPU
the second is a view of the first), so a GPU keeps ~3 KB per token less in both columns.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import model as model_lib  # noqa: E402
from train import apply_swiglu_recompute, set_elementwise_recompute  # noqa: E402


def saved_tensors(block, x, cos, sin, device):
    """The distinct tensors a compiled block's forward saves for its backward, less the
    parameters and RoPE tables (which exist anyway)."""
    exists = {p.data_ptr() for p in block.parameters()} | {cos.data_ptr(), sin.data_ptr()}
    kept = {}

    def pack(t):
        if t.data_ptr() not in exists:
            kept[(t.data_ptr(), t.dtype, tuple(t.shape))] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y = block(x, cos, sin)
    y.float().sum().backward()
    return list(kept.values())


def split_bytes(tensors, tokens):
    """(activation bytes per token: tensors with a dimension of `tokens`; other bytes: the
    weights' bf16 copies)."""
    per_token = sum(t.numel() * t.element_size() for t in tensors if tokens in t.shape) / tokens
    other = sum(t.numel() * t.element_size() for t in tensors if tokens not in t.shape)
    return per_token, other


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="xmodel-2.5")
    p.add_argument("--tokens", type=int, default=256, help="sequence length of the one-sequence batch")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = model_lib.model_config(args.preset)
    m = model_lib.Xmodel(cfg).to(device)
    T = args.tokens
    cos, sin = m.rope_cos[:T].to(device), m.rope_sin[:T].to(device)
    print(f"{args.preset}, one block (d {cfg.d_model}, ffn {cfg.d_ffn}), {T} tokens, bf16 autocast, "
          f"compiled, {device.type}")
    for name in ("default", "recompute_elementwise", "residual_bf16", "recompute_swiglu"):  # swiglu last: in place
        set_elementwise_recompute(name == "recompute_elementwise")
        if name == "recompute_swiglu":
            apply_swiglu_recompute(m)
        torch._dynamo.reset()
        block = torch.compile(m.blocks[0])
        # the block's input: the residual stream, fp32 with residual_in_compute_dtype=False (the
        # default when this was counted; "default" below), bf16 with True (the default since)
        dtype = torch.bfloat16 if name == "residual_bf16" else torch.float32
        x = torch.randn(1, T, cfg.d_model, device=device, dtype=dtype, requires_grad=True)
        tensors = saved_tensors(block, x, cos, sin, device)
        per_token, other = split_bytes(tensors, T)
        print(f"{name:21}: activations {per_token / 1024:5.1f} KB per token, "
              f"weight copies {other / 2**20:5.1f} MiB per block; "
              + ", ".join(f"{str(t.dtype)[6:]}{list(t.shape)}" for t in tensors))
    set_elementwise_recompute(False)


if __name__ == "__main__":
    main()

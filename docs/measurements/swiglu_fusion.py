"""
Where `recompute_swiglu` (train.py) puts the recomputed SwiGLU output: the backward kernels
inductor generates for one compiled block, in call order, without and with it. With it, the
kernel that computes the SwiGLU gradient also writes the SwiGLU output again (one extra store
in the same pass over the gate|up output), between the down projection's two backward GEMMs;
the down weight gradient's fp32 cast, which rode in that kernel, becomes a small kernel of its own.

    python docs/measurements/swiglu_fusion.py [--preset proxy] [--tokens 64]

Runs on a CPU (inductor's C++ backend; needs a C++ compiler). A GPU's Triton backend makes its
own fusion choices with the same scheduler: bench.py's `ours_swiglu` variant measures the cost.
"""
import argparse
import os
import re
import sys

import torch
from torch._inductor.utils import run_and_get_code

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import model as model_lib  # noqa: E402
from train import apply_swiglu_recompute  # noqa: E402


def backward_calls(code):
    """Kernel and extern-GEMM calls of the backward module's call(), in order."""
    body = code[code.index("def call("):]
    return re.findall(r"(cpp_fused_\w+|extern_kernels\.mm)\(", body.split("def get_args")[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="proxy")
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    m = model_lib.Xmodel(model_lib.model_config(args.preset))
    T = args.tokens
    cos, sin = m.rope_cos[:T], m.rope_sin[:T]
    for name in ("default", "recompute_swiglu"):
        if name == "recompute_swiglu":
            apply_swiglu_recompute(m)
        torch._dynamo.reset()
        block = torch.compile(m.blocks[0])
        x = torch.randn(1, T, m.config.d_model, requires_grad=True)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = block(x, cos, sin)
            y.float().sum().backward()
        _, codes = run_and_get_code(step)
        calls = backward_calls(codes[-1])  # the last module compiled is the backward
        print(f"{name}: {len(calls)} backward calls; the MLP's, in order:")
        for c in calls[:6]:
            print(f"    {c.replace('cpp_fused_', 'kernel ')[:90]}")


if __name__ == "__main__":
    main()

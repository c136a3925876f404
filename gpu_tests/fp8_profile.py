"""
Where the time of one FP8 linear goes: torch.profiler kernel tables of a compiled
forward+backward, bf16 nn.Linear against fp8.Float8Linear, at one of the full model's shapes
(fp32 master weight under bf16 autocast, as train.py runs it). fp8_check.py says how fast;
this says why.

    python gpu_tests/fp8_profile.py                      # gate_up: 7680x1536, 16384 tokens
    python gpu_tests/fp8_profile.py --shape down --rows 25
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fp8  # noqa: E402
from gpu_tests.common import kernel_times, require_cuda, set_compile_limits  # noqa: E402
from gpu_tests.fp8_check import SHAPES  # noqa: E402


def step(module, x, g):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = module(x)
    y.backward(g)


def kernel_table(module, x, g, iters, rows, title):
    # 5 warm-up calls: compile, the first-step graph, autotuning
    kernels = kernel_times(lambda: step(module, x, g), warmup=5, iters=iters)
    total = sum(us for _, us, _ in kernels)
    print(f"\n## {title}: {total / 1e3:.3f} ms of kernels per forward+backward\n")
    print("| us/iter | calls/iter | kernel |\n|---|---|---|")
    for name, us, calls in kernels[:rows]:
        print(f"| {us:.1f} | {calls:.1f} | {name[:110]} |")
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gate_up", choices=[s[0] for s in SHAPES])
    p.add_argument("--tokens", type=int, default=4 * 4096)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rows", type=int, default=18)
    args = p.parse_args()
    set_compile_limits()
    name, k, n, std = next(s for s in SHAPES if s[0] == args.shape)
    torch.manual_seed(0)
    x = torch.randn(args.tokens, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(args.tokens, n, device="cuda", dtype=torch.bfloat16) * 1e-4
    lin = nn.Linear(k, n, bias=False, device="cuda")
    nn.init.normal_(lin.weight, std=std)
    f8 = fp8.Float8Linear.from_linear(nn.Linear(k, n, bias=False, device="cuda"))
    f8.weight.data.copy_(lin.weight.data)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; shape {name} {n}x{k}, {args.tokens} tokens")
    t_b = kernel_table(torch.compile(lin), x, g, args.iters, args.rows, "bf16 nn.Linear")
    torch._dynamo.reset()
    t_8 = kernel_table(torch.compile(f8), x, g, args.iters, args.rows, "fp8.Float8Linear")
    print(f"\nkernel time fp8 / bf16: {t_8 / t_b:.2f} (speed-up {t_b / t_8:.2f}x)")


if __name__ == "__main__":
    require_cuda("fp8_profile.py")
    main()

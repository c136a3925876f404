"""
FP8 linear (fp8.py, native backend) on a CUDA GPU: accuracy against bf16 and fp32, and speed
against bf16 at the full model's Linear shapes (RECIPE §1: d=1536, qkv 2560x1536, out 1536x1536,
gate_up 7680x1536, down 1536x3840), 4 x 4096 = 16384 tokens.

    python gpu_tests/fp8_check.py                      # both parts, default sizes
    python gpu_tests/fp8_check.py --iters 100 --json out/fp8_check.json

Accuracy: relative Frobenius error of the forward output and of both gradients, FP8 and bf16
against an fp32 reference (TF32 off), plus FP8 against bf16; the torch._scaled_mm path against
the emulation (same quantized operands: catches scale/layout mistakes) and torch.compile against
eager. Speed: median CUDA-event time of forward+backward, torch.compile'd, bf16 nn.Linear vs
Float8Linear, per shape and summed over one block's four Linears.
Exits 1 if a check fails (error bounds, non-finite values), 2 on an exception, 3 if the GPU
cannot run FP8.
"""
import argparse
import json
import math
import os
import sys
import traceback

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fp8  # noqa: E402
from gpu_tests.common import median_ms, set_compile_limits  # noqa: E402

# (name, in_features, out_features, init std): µP init of RECIPE §1, width_mult 6, 48 layers
SHAPES = [
    ("qkv", 1536, 2560, 0.1 / math.sqrt(6)),
    ("out", 1536, 1536, 0.1 / math.sqrt(2 * 48)),
    ("gate_up", 1536, 7680, 0.1 / math.sqrt(6)),
    ("down", 3840, 1536, 0.1 / math.sqrt(2 * 48)),
]
# Norm-wise bounds: E4M3 rounds with relative error <= 2**-4 per element, E5M2 <= 2**-3.
# Random operands land well inside (about 0.04 / 0.06 measured in CPU emulation).
FWD_BOUND, BWD_BOUND = 2.0 ** -4, 2.0 ** -3
PATH_BOUND = 5e-3      # _scaled_mm vs emulation on identical FP8 operands: accumulation order only
COMPILE_BOUND = 5e-3   # compiled vs eager


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def fwd_bwd(module, x, g, autocast):
    x = x.detach().clone().requires_grad_()
    module.weight.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        y = module(x)
    y.backward(g)
    return y.detach(), x.grad, module.weight.grad


def accuracy(args, failures):
    torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 reference
    rows = []
    for name, k, n, std in SHAPES:
        torch.manual_seed(0)
        w = torch.randn(n, k, device="cuda") * std       # fp32 master weight
        x = torch.randn(args.tokens, k, device="cuda")   # unit-RMS activations (after RMSNorm)
        g = torch.randn(args.tokens, n, device="cuda") * 1e-4  # small, as LM-loss gradients are
        y_ref = x @ w.t()
        dx_ref = g @ w
        dw_ref = g.t() @ x

        bf16 = nn.Linear(k, n, bias=False, device="cuda")
        bf16.weight.data.copy_(w)
        y_b, dx_b, dw_b = fwd_bwd(bf16, x, g.bfloat16(), autocast=True)

        def make_fp8(emulate):
            lin = nn.Linear(k, n, bias=False, device="cuda")
            lin.weight.data.copy_(w)
            return fp8.Float8Linear.from_linear(lin, emulate=emulate)

        real, emul, comp = make_fp8(False), make_fp8(True), make_fp8(False)
        torch._dynamo.reset()
        compiled = torch.compile(comp)
        for _ in range(3):  # fill the histories: the last call uses delayed scales
            y_8, dx_8, dw_8 = fwd_bwd(real, x, g.bfloat16(), autocast=True)
            y_e, dx_e, dw_e = fwd_bwd(emul, x, g.bfloat16(), autocast=True)
            y_c, dx_c, dw_c = fwd_bwd(compiled, x, g.bfloat16(), autocast=True)
        r = {
            "shape": name, "out x in": f"{n}x{k}",
            "fp8 fwd vs fp32": rel(y_8, y_ref), "fp8 dx vs fp32": rel(dx_8, dx_ref),
            "fp8 dw vs fp32": rel(dw_8, dw_ref),
            "bf16 fwd vs fp32": rel(y_b, y_ref), "bf16 dx vs fp32": rel(dx_b, dx_ref),
            "bf16 dw vs fp32": rel(dw_b, dw_ref),
            "fp8 fwd vs bf16": rel(y_8, y_b), "fp8 dx vs bf16": rel(dx_8, dx_b), "fp8 dw vs bf16": rel(dw_8, dw_b),
            "scaled_mm vs emulated (max of 3)": max(rel(y_8, y_e), rel(dx_8, dx_e), rel(dw_8, dw_e)),
            "compiled vs eager (max of 3)": max(rel(y_c, y_8), rel(dx_c, dx_8), rel(dw_c, dw_8)),
        }
        rows.append(r)
        for key, bound in (("fp8 fwd vs fp32", FWD_BOUND), ("fp8 dx vs fp32", BWD_BOUND),
                           ("fp8 dw vs fp32", BWD_BOUND), ("scaled_mm vs emulated (max of 3)", PATH_BOUND),
                           ("compiled vs eager (max of 3)", COMPILE_BOUND)):
            if not (r[key] <= bound):  # also catches NaN
                failures.append(f"{name}: {key} = {r[key]:.4g} > {bound:.4g}")
        for t, what in ((y_8, "y"), (dx_8, "dx"), (dw_8, "dw")):
            if not torch.isfinite(t).all():
                failures.append(f"{name}: non-finite FP8 {what}")
        if not torch.equal(real.fp8_amax_history, comp.fp8_amax_history):
            failures.append(f"{name}: compiled module's amax history differs from eager "
                            f"(a buffer update lost under torch.compile?)")
        if not (real.fp8_amax_history[:, :3] > 0).all():
            failures.append(f"{name}: amax history not recorded for all of input/weight/grad")
        if dx_8.dtype != torch.float32 or dw_8.dtype != torch.float32 or y_8.dtype != torch.bfloat16:
            failures.append(f"{name}: dtypes y {y_8.dtype} dx {dx_8.dtype} dw {dw_8.dtype}")
    torch.backends.cuda.matmul.allow_tf32 = True
    print_table("Accuracy (relative Frobenius error; bounds: fwd %.4f, grads %.4f)" % (FWD_BOUND, BWD_BOUND), rows)
    return rows


def time_fwd_bwd(module, x, g, autocast, warmup, iters):
    def step():
        module.weight.grad = None
        x.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y = module(x)
        y.backward(g)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return median_ms(step, warmup=0, iters=iters), torch.cuda.max_memory_allocated() / 2 ** 30


def speed(args, failures):
    rows = []
    configs = {"bf16 params": (torch.bfloat16, False), "fp32 master + autocast": (torch.float32, True)}
    for config in args.configs.split(","):
        dtype, autocast = configs[config]
        total = {"bf16": 0.0, "fp8": 0.0}
        for name, k, n, std in SHAPES:
            torch.manual_seed(0)
            x = torch.randn(args.tokens, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            g = torch.randn(args.tokens, n, device="cuda", dtype=torch.bfloat16) * 1e-4
            lin = nn.Linear(k, n, bias=False, device="cuda", dtype=dtype)
            nn.init.normal_(lin.weight, std=std)
            f8 = fp8.Float8Linear.from_linear(nn.Linear(k, n, bias=False, device="cuda", dtype=dtype))
            f8.weight.data.copy_(lin.weight.data)
            torch._dynamo.reset()
            t_b, m_b = time_fwd_bwd(torch.compile(lin), x, g, autocast, args.warmup, args.iters)
            torch._dynamo.reset()
            t_8, m_8 = time_fwd_bwd(torch.compile(f8), x, g, autocast, args.warmup, args.iters)
            flops = 6 * args.tokens * k * n  # forward + two backward GEMMs
            # GEMM-only ceiling: one forward product on ready operands, no quantization
            a16, b16 = x.detach(), lin.weight.detach().to(torch.bfloat16)
            a8, b8 = a16.to(fp8.E4M3), b16.to(fp8.E4M3).t()
            one = torch.ones((), device="cuda")
            g_b = median_ms(lambda: a16 @ b16.t(), args.warmup, args.iters)
            g_8 = median_ms(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                                     use_fast_accum=True), args.warmup, args.iters)
            total["bf16"] += t_b
            total["fp8"] += t_8
            rows.append({"config": config, "shape": name, "out x in": f"{n}x{k}", "tokens": args.tokens,
                         "bf16 ms": t_b, "fp8 ms": t_8, "speedup": t_b / t_8,
                         "bf16 TFLOP/s": flops / t_b / 1e9, "fp8 TFLOP/s": flops / t_8 / 1e9,
                         "bf16 peak GiB": m_b, "fp8 peak GiB": m_8,
                         "fwd GEMM only speedup": g_b / g_8})
            for t, what in ((t_b, "bf16"), (t_8, "fp8")):
                if not (t > 0 and math.isfinite(t)):
                    failures.append(f"{config} {name}: bad {what} time {t}")
        rows.append({"config": config, "shape": "block (sum of 4)", "out x in": "", "tokens": args.tokens,
                     "bf16 ms": total["bf16"], "fp8 ms": total["fp8"], "speedup": total["bf16"] / total["fp8"]})
    print_table(f"Speed: forward+backward, torch.compile'd, median of {args.iters} after {args.warmup} warm-up", rows)
    return rows


def print_table(title, rows):
    print(f"\n## {title}\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4 * 4096, help="tokens per GEMM (micro-batch 4 x seq 4096)")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--configs", default="bf16 params,fp32 master + autocast")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    try:
        fp8.check_fp8_supported("cuda")
    except fp8.FP8UnsupportedError as e:
        print(f"FP8 not supported here: {e}")
        return 3
    dev = torch.cuda.get_device_name()
    print(f"device {dev}, capability {torch.cuda.get_device_capability()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    set_compile_limits()
    failures, result = [], {"device": dev, "torch": torch.__version__, "tokens": args.tokens}
    try:
        if not args.skip_accuracy:
            result["accuracy"] = accuracy(args, failures)
        if not args.skip_speed:
            result["speed"] = speed(args, failures)
    except Exception:
        traceback.print_exc()
        return 2
    result["failures"] = failures
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print("\nFAILED:\n  " + "\n  ".join(failures) if failures else "\nall FP8 checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

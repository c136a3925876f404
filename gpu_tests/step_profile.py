"""
Where a whole training step's GPU time goes: torch.profiler kernel time of full steps of the
full model (blocks and the loss compiled one by one, bf16 autocast, fused AdamW), bf16 and
native FP8, grouped into GEMMs, attention, the rest; then SDPA's attention backends timed
alone at the model's attention shape. bench.py says how fast; this says where to work next.

    python gpu_tests/step_profile.py                     # bf16 and fp8, seq 4096, micro-batch 4
    python gpu_tests/step_profile.py --variants bf16 --rows 30
    python gpu_tests/step_profile.py --variants fp8,fp8_whole_amax   # an A/B of fp8.tensor_amax
    python gpu_tests/step_profile.py --attention-only --preset proxy --seq-len 2048 --micro-batch 12

Variant fp8_whole_amax is FP8 with fp8.tensor_amax replaced by one reduction over the whole
tensor (what fp8.py did before taking the maximum of row maxima), to measure that choice.
"""
import argparse
import contextlib
import itertools
import os
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_tests.common import kernel_times, median_ms, require_cuda, set_compile_limits  # noqa: E402
import fp8  # noqa: E402
from model import Xmodel, model_config  # noqa: E402

# Kernel-name patterns per category (cuBLAS/cuBLASLt GEMMs are "nvjet*", "sm90_xmma*", "*gemm*").
CATEGORIES = [
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
    ("GEMM", ("nvjet", "gemm", "xmma", "cutlass", "matmul")),
    ("optimizer", ("adam", "multi_tensor")),
    ("fused element-wise (triton)", ("triton",)),
]


def category(name):
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


SHIPPED_AMAX = fp8.tensor_amax  # kept before a variant replaces it


def whole_tensor_amax(t):
    return t.abs().amax().float()


def profile_steps(variant, args):
    fp8.tensor_amax = whole_tensor_amax if variant == "fp8_whole_amax" else SHIPPED_AMAX
    torch.manual_seed(0)
    cfg = model_config("xmodel-2.5")
    model = Xmodel(cfg).cuda()
    model.loss_chunk_rows = args.loss_chunk_rows
    if variant.startswith("fp8"):
        fp8.convert_to_fp8(model, backend="native")
    model.compile_by_block()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batches = [torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len + 1), device="cuda")
               for _ in range(2)]

    calls = itertools.count()

    def step():
        b = batches[next(calls) % 2]  # the two batches take turns
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(b[:, :-1], b[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {name: us / 1e3 for name, us, _ in kernel_times(step, warmup=4, iters=args.steps)}  # ms per step


def report(name, per_step, rows):
    total = sum(per_step.values())
    cats = defaultdict(float)
    for k, ms in per_step.items():
        cats[category(k)] += ms
    print(f"\n## {name}: {total:.1f} ms of kernels per step\n")
    print("| category | ms/step | share |\n|---|---|---|")
    for cat, ms in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"| {cat} | {ms:.1f} | {ms / total:.1%} |")
    print("\n| ms/step | category | kernel |\n|---|---|---|")
    for k, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"| {ms:.2f} | {category(k)} | {k[:100]} |")
    return total


def attention_backends(args):
    """SDPA forward+backward at the model's attention shape, per backend that accepts it: with
    grouped-query K/V as the model calls it, and (for the backends that refuse GQA) with K/V
    repeated to every head first; "default" is SDPA's own pick, what the model gets."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    cfg = model_config(args.preset)
    hd = cfg.d_model // cfg.n_head
    B, T = args.micro_batch, args.seq_len
    q = torch.randn(B, cfg.n_head, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, cfg.n_kv_head, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    g = torch.randn(B, cfg.n_head, T, hd, device="cuda", dtype=torch.bfloat16)
    flops = 4 * B * cfg.n_head * T * T * hd / 2 * 3.5  # causal; backward ~2.5x forward
    print(f"\n## SDPA alone ({args.preset}), B={B} heads {cfg.n_head}/{cfg.n_kv_head} T={T} head dim {hd}, "
          f"causal, forward+backward, one layer\n")
    print(f"| backend | K/V | ms | TFLOP/s | x {cfg.n_layer} layers (ms) |\n|---|---|---|---|---|")
    repeat = cfg.n_head // cfg.n_kv_head
    for backend in ("default", SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                    SDPBackend.EFFICIENT_ATTENTION):
        for expand in (False, True):
            def run():
                ctx = contextlib.nullcontext() if backend == "default" else sdpa_kernel(backend)
                kk, vv = (k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1)) if expand else (k, v)
                with ctx:
                    out = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=not expand)
                out.backward(g)
            name = getattr(backend, "name", backend)
            kv = "repeated" if expand else "grouped"
            try:
                ms = median_ms(run)
                print(f"| {name} | {kv} | {ms:.2f} | {flops / ms / 1e9:.0f} | {cfg.n_layer * ms:.0f} |")
            except Exception as e:  # a backend may refuse GQA or the shape
                print(f"| {name} | {kv} | refused: {type(e).__name__}: {' '.join(str(e).split())[:80]} | | |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="bf16,fp8")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--loss-chunk-rows", type=int, default=4096)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--attention-only", action="store_true", help="only the SDPA backends alone")
    p.add_argument("--preset", default="xmodel-2.5", help="model shape for --attention-only")
    args = p.parse_args()
    set_compile_limits()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    if args.attention_only:
        return attention_backends(args)
    totals = {}
    for v in args.variants.split(","):
        totals[v] = report(v, profile_steps(v, args), args.rows)
        torch._dynamo.reset()
        torch.cuda.empty_cache()  # the model of this variant is gone with profile_steps
    if "bf16" in totals:
        for v, t in totals.items():
            print(f"kernel time per step: {v} {t:.1f} ms ({totals['bf16'] / t:.2f}x bf16)")
    attention_backends(args)


if __name__ == "__main__":
    require_cuda("step_profile.py")
    main()

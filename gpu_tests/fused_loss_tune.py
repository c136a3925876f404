"""
fused_loss.py's three kernels one by one on the GPU, at the proxy's and the full model's widths
with the real 129,280 vocabulary: each tile configuration of the autotuner's list timed alone
(median, triton.testing.do_bench) and checked against the same product in PyTorch (fp32); the
vocabulary split of grad_h; then the whole loss (ce_chunks, forward + backward as training calls
it) per chunk size. Each time is set against its floor: FLOPs at the measured bf16 matmul peak and
bytes at the measured copy bandwidth.

    python gpu_tests/fused_loss_tune.py --json $OUT/tune.json       # ~3 min on one H200
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_tests.common import require_cuda  # noqa: E402

require_cuda("gpu_tests/fused_loss_tune.py")
import fused_loss as FL  # noqa: E402
from triton.testing import do_bench  # noqa: E402

VOCAB = 129_280
SHAPES = {"proxy": 256, "full": 1536}  # width


def peaks():
    """Measured ceilings: an 8192³ bf16 product (TFLOP/s) and a 4 GiB device copy (GB/s, read + write)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ a, warmup=50, rep=300)
    x = torch.empty(2**31, device="cuda", dtype=torch.uint8)
    y = torch.empty_like(x)
    ms_copy = do_bench(lambda: y.copy_(x), warmup=50, rep=300)
    return 2 * 8192**3 / ms / 1e9, 2 * x.numel() / ms_copy / 1e6


def problem(n, d, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    h = torch.randn(n, d, device="cuda", generator=g)
    h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True))).bfloat16()
    w = (0.1 * torch.randn(VOCAB, d, device="cuda", generator=g)).bfloat16()
    t = torch.randint(0, VOCAB, (n,), device="cuda", generator=g).int()
    weights = torch.full((n,), 1.0 / n, device="cuda")
    return h, w, t, weights, 1.0


def rel(x, ref):
    return ((x.float() - ref).norm() / ref.norm()).item()


def tiles_of(cfg):
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def name_of(t):
    return "/".join(f"{k}{v}" for k, v in t.items() if k in ("BM", "BV", "BK", "BD")) + \
        f" w{t['num_warps']} s{t['num_stages']}"


def tune_kernels(shape, n, peak_tf, peak_gbs, rows):
    d = SHAPES[shape]
    h, w, t, weights, mult = problem(n, d)
    flops = 2 * n * VOCAB * d
    logit_bytes = n * VOCAB * 2
    ref_logits = (h.float() @ w.float().t()) * mult
    logits, lse = FL.logits_and_lse(h, w, mult)  # autotuned (its choice printed below)
    ref_lse = torch.logsumexp(logits.float(), 1)
    rows.append(dict(shape=shape, rows=n, kernel="logits autotuned", err_lse=rel(lse, ref_lse),
                     err_logits=rel(logits, ref_logits)))
    print(json.dumps(rows[-1]), flush=True)
    g = torch.softmax(logits.float(), 1)  # the function the gradient kernels compute, in fp32
    g[torch.arange(n, device="cuda"), t.long()] -= 1
    rs = (weights * mult).float()
    g *= rs[:, None]
    ref_gh, ref_gw = g @ w.float(), g.t() @ h.float()
    del g
    cases = [("logits", c, lambda tl_: FL.logits_and_lse(h, w, mult, tiles=tl_), logit_bytes) for c in FL.LOGITS_CONFIGS]
    cases += [("grad_h", c, lambda tl_: FL.grad_h(logits, lse, t, rs, w, tiles=tl_), logit_bytes)
              for c in FL.GRAD_H_CONFIGS]
    cases += [("grad_w", c, lambda tl_: FL.grad_w(logits, lse, t, rs, h, tiles=tl_), logit_bytes)
              for c in FL.GRAD_W_CONFIGS]
    for kernel, cfg, fn, nbytes in cases:
        tiles = tiles_of(cfg)
        row = dict(shape=shape, rows=n, kernel=kernel, tiles=name_of(tiles))
        try:
            out = fn(tiles)
            torch.cuda.synchronize()
            if kernel == "logits":
                row["err"] = max(rel(out[0], ref_logits), rel(out[1], ref_lse))
            else:
                row["err"] = rel(out, ref_gh if kernel == "grad_h" else ref_gw)
            row["ms"] = do_bench(lambda: fn(tiles), warmup=25, rep=150)
        except Exception as e:  # a config that does not fit (shared memory, registers) is reported, not fatal
            row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        else:
            row["tflops"] = flops / row["ms"] / 1e9
            row["floor_ms"] = max(flops / peak_tf / 1e9, nbytes / peak_gbs / 1e6)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name, kernel in FL._tuned.items():
        rows.append(dict(shape=shape, rows=n, kernel=name, autotuned=name_of(tiles_of(kernel.best_config))))
        print(json.dumps(rows[-1]), flush=True)
    best_h = min((r for r in rows if r.get("kernel") == "grad_h" and r.get("shape") == shape and "ms" in r
                  and r["rows"] == n), key=lambda r: r["ms"], default=None)
    if best_h:
        cfg = next(c for c in FL.GRAD_H_CONFIGS if name_of(tiles_of(c)) == best_h["tiles"])
        for split in (1, 2, 4, 8):
            ms = do_bench(lambda: FL.grad_h(logits, lse, t, rs, w, tiles=tiles_of(cfg), split=split),
                          warmup=25, rep=150)
            rows.append(dict(shape=shape, rows=n, kernel="grad_h split", tiles=best_h["tiles"], split=split,
                             ms=ms, auto_split=FL.split_for(triton_cdiv(n, 128) * triton_cdiv(d, 256))))
            print(json.dumps(rows[-1]), flush=True)


def triton_cdiv(a, b):
    return -(-a // b)


def whole_loss(shape, n, chunk_rows, rows):
    """ce_chunks as train.py runs it (autotuned kernels), forward + backward in one call."""
    d = SHAPES[shape]
    h, w, t, weights, mult = problem(n, d, seed=1)
    fn = lambda: FL.ce_chunks(h, w, t.long(), weights, mult, chunk_rows, torch.bfloat16, True)  # noqa: E731
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    ms = do_bench(fn, warmup=25, rep=200)
    rows.append(dict(shape=shape, rows=n, kernel="ce_chunks", chunk_rows=chunk_rows, ms=ms, peak_gib=peak,
                     tflops=3 * 2 * n * VOCAB * d / ms / 1e9))
    print(json.dumps(rows[-1]), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--shapes", default="proxy,full")
    args = p.parse_args()
    start = time.time()
    peak_tf, peak_gbs = peaks()
    print(f"{torch.cuda.get_device_name()}: bf16 matmul {peak_tf:.0f} TFLOP/s, copy {peak_gbs:.0f} GB/s", flush=True)
    rows = [dict(peak_tflops=peak_tf, copy_gbs=peak_gbs, device=torch.cuda.get_device_name())]
    shapes = args.shapes.split(",")
    for shape in shapes:
        tune_kernels(shape, 8192, peak_tf, peak_gbs, rows)  # the default chunk
        FL._tuned.clear()
    for shape in shapes:
        n = 24576 if shape == "proxy" else 16384  # one micro-batch: 12 x 2048, 4 x 4096
        for chunk in (4096, 8192, 12288, n):
            whole_loss(shape, n, chunk, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"\n## fused_loss kernels ({rows[0]['device']}, {time.time() - start:.0f} s)\n")
    print("| shape | rows | kernel | tiles | ms | TFLOP/s | floor ms | rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows[1:]:
        if "err_lse" in r:
            print(f"| {r['shape']} | {r['rows']} | logits autotuned: lse err {r['err_lse']:.1e}, logits err "
                  f"{r['err_logits']:.1e} | | | | | |")
        elif "autotuned" in r:
            print(f"| {r['shape']} | {r['rows']} | {r['kernel']} autotuned | {r['autotuned']} | | | | |")
        elif "error" in r:
            print(f"| {r['shape']} | {r['rows']} | {r['kernel']} | {r['tiles']} | failed: {r['error'][:50]} | | | |")
        elif r["kernel"] == "grad_h split":
            print(f"| {r['shape']} | {r['rows']} | grad_h, split {r['split']} (rule: {r['auto_split']}) | "
                  f"{r['tiles']} | {r['ms']:.3f} | | | |")
        elif r["kernel"] == "ce_chunks":
            print(f"| {r['shape']} | {r['rows']} | whole loss, chunks of {r['chunk_rows']} | | {r['ms']:.2f} | "
                  f"{r['tflops']:.0f} | | peak {r['peak_gib']:.2f} GiB |")
        else:
            print(f"| {r['shape']} | {r['rows']} | {r['kernel']} | {r['tiles']} | {r['ms']:.3f} | "
                  f"{r['tflops']:.0f} | {r['floor_ms']:.3f} | {r['err']:.1e} |")


if __name__ == "__main__":
    main()

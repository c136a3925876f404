"""
The output layer + cross-entropy alone, at the proxy's micro-batch (width 256, 12 x 2048 rows)
and the full model's (width 1536, 4 x 4096 rows), both with the real 129,280 vocabulary:
model.py's chunked loss (eager; compiled as train.py does; one chunk; max-autotune) against
liger-kernel's fused linear cross-entropy and cut-cross-entropy (through model.py's adapter, and
with each package's own defaults), and the unfused F.linear + F.cross_entropy that transformers
does. For each: forward + backward time (median, triton.testing.do_bench), peak memory above the
inputs, the first call's time (compile / JIT), and numerics: the loss, dL/dh and dL/dW against
F.cross_entropy in fp32 (TF32 off), with ignored targets (-1), a loss mask and the µP output
multiplier, at init-like and at 4x sharper logits.

    python gpu_tests/loss_bench.py                        # every case that fits --budget-s
    python gpu_tests/loss_bench.py --shapes proxy --json out/loss_bench.json --table out/loss.md

Inputs are what the loss sees in training: h = unit-RMS rows in fp32 (the final RMSNorm's
output under autocast), W = the fp32 [V, d] tied embedding with the µP init std 0.1, random
targets; timing runs without masks (pre-training), the numerics with ~10% ignored and ~10% masked.
"""
import argparse
import gc
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_tests.common import require_cuda, set_compile_limits  # noqa: E402
import model as M  # noqa: E402
import mup  # noqa: E402

SHAPES = {"proxy": ("proxy", 12, 2048), "full": ("xmodel-2.5", 4, 4096)}  # preset, micro-batch, seq
DEVICE = "cuda"
GRAD_BOUND = 1e-2  # bf16 operands land between 1e-3 and 1e-2 (relative Frobenius error)
LOSS_BOUND = 1e-3


def chunked(compiled=None, chunk_rows=None):
    ce = M._ce_chunks if compiled is None else torch.compile(M._ce_chunks, dynamic=False, **compiled)

    def loss(h, w, t, mask, mult):
        return M.chunked_cross_entropy(h, w, t, mask, mult, chunk_rows, ce)
    return loss


def external(impl, **options):
    def loss(h, w, t, mask, mult):
        return M.external_cross_entropy(impl, h, w, t, mask, mult, options=options)
    return loss


def unfused(h, w, t, mask, mult):
    # transformers' way: the whole [N, V] bf16 logits, upcast to fp32, then F.cross_entropy
    t = t if mask is None else t.masked_fill(mask == 0, -1)
    return F.cross_entropy((F.linear(h, w).float() * mult), t, ignore_index=-1)


def rows(shape):
    return SHAPES[shape][1] * SHAPES[shape][2]


# (name, what it is, builder(shape), package needed, {shape: None (required) or the seconds an
# optional case is expected to take}). Required cases run first; an optional one starts only if
# it is expected to end inside --budget-s, in the order listed.
REQUIRED = {"proxy": None, "full": None}
CASES = [
    ("chunked", "model.py, chunk loop compiled (train.py)", lambda s: chunked({}), None, REQUIRED),
    ("liger", "liger-kernel, model.py's adapter (4,096-row chunks, fp32 dW accumulation)",
     lambda s: external("liger"), "liger", REQUIRED),
    ("cce", "cut-cross-entropy, exact gradients (filter_eps=None)", lambda s: external("cce"), "cce", REQUIRED),
    ("chunked_eager", "model.py, eager", lambda s: chunked(), None, REQUIRED),
    ("unfused", "F.linear + F.cross_entropy on fp32 logits (as transformers)", lambda s: unfused, None, REQUIRED),
    ("liger_default", "liger-kernel with its own defaults (chunk_mem_const 1, bf16 dW accumulation)",
     lambda s: external("liger", chunk_mem_const=1, accum_dtype=None), "liger", REQUIRED),
    ("cce_filter", "cut-cross-entropy with its default gradient filter (filter_eps='high')",
     lambda s: external("cce", filter_eps="high"), "cce", {"proxy": None, "full": 10}),
    ("chunked_1chunk", "model.py compiled, one chunk of every row",
     lambda s: chunked({}, chunk_rows=rows(s)), None, {"proxy": 25}),
    ("chunked_autotune", "model.py compiled with mode max-autotune-no-cudagraphs",
     lambda s: chunked({"mode": "max-autotune-no-cudagraphs"}), None, {"proxy": 75}),
]


def inputs(shape, scale, seed, masked):
    preset, batch, seq = SHAPES[shape]
    cfg = M.model_config(preset)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    n = batch * seq
    h = torch.randn(n, cfg.d_model, device=DEVICE, generator=g)
    h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True))).requires_grad_()
    std = scale * mup.init_std(cfg, "embedding")
    w = (std * torch.randn(cfg.vocab_size, cfg.d_model, device=DEVICE, generator=g)).requires_grad_()
    t = torch.randint(0, cfg.vocab_size, (n,), device=DEVICE, generator=g)
    mask = None
    if masked:
        t[torch.rand(n, device=DEVICE, generator=g) < 0.1] = -1
        mask = (torch.rand(n, device=DEVICE, generator=g) >= 0.1).to(torch.uint8)
    return h, w, t, mask, mup.multipliers(cfg)["output_mult"]


def reference(h, w, t, mask, mult):
    """Loss and both gradients in fp32, TF32 off: the exact function every case must compute."""
    torch.backends.cuda.matmul.allow_tf32 = False
    h, w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    valid = t != -1
    if mask is not None:
        valid = valid & mask.bool()
    ce = F.cross_entropy((h @ w.t()) * mult, t.clamp(min=0), reduction="none")
    loss = (ce * valid).sum() / valid.sum()
    loss.backward()
    return loss.detach(), h.grad, w.grad, ~valid


def rel(a, b):
    return ((a.float() - b).norm() / b.norm()).item()


def run_case(fn, h, w, t, mask, mult):
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        loss = fn(h, w, t, mask, mult)
    loss.backward()
    return loss


def numerics(fn, refs):
    worst = {"loss": 0.0, "dh": 0.0, "dW": 0.0, "ignored_dh": 0.0}
    for (h, w, t, mask, mult), (l_ref, gh_ref, gw_ref, ignored) in refs:
        h.grad = w.grad = None
        loss = run_case(fn, h, w, t, mask, mult)
        torch.cuda.synchronize()
        if not (torch.isfinite(loss) and torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()):
            return {"loss": float("nan"), "dh": float("nan"), "dW": float("nan"), "ignored_dh": float("nan")}
        worst["loss"] = max(worst["loss"], abs(loss.item() - l_ref.item()) / abs(l_ref.item()))
        worst["dh"] = max(worst["dh"], rel(h.grad, gh_ref))
        worst["dW"] = max(worst["dW"], rel(w.grad, gw_ref))
        # an ignored row's gradient must be exactly zero
        worst["ignored_dh"] = max(worst["ignored_dh"], h.grad[ignored].abs().max().item())
    return worst


def do_bench(*args, **kwargs):
    from triton.testing import do_bench  # imported late: Triton comes with CUDA builds of torch
    return do_bench(*args, **kwargs)


def measure(name, fn, shape, refs, args):
    h, w, t, _, mult = inputs(shape, 1.0, seed=1, masked=False)

    def step():
        run_case(fn, h, w, t, None, mult)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()  # compile / JIT / autotune
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    h.grad = w.grad = None
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak_gib = (torch.cuda.max_memory_allocated() - base) / 2**30  # includes the fp32 dh and dW
    ms, p10, p90 = do_bench(step, warmup=args.warmup_ms, rep=args.rep_ms, grad_to_none=[h, w],
                            quantiles=[0.5, 0.1, 0.9])
    err = numerics(fn, refs)
    return dict(case=name, shape=shape, ms=ms, ms_p10_p90=(p10, p90), peak_gib=peak_gib, first_call_s=first_s,
                **{f"err_{k}": v for k, v in err.items()})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="proxy,full")
    p.add_argument("--cases", default=",".join(c[0] for c in CASES))
    p.add_argument("--budget-s", type=float, default=150,
                   help="an optional case starts only if expected to end before this")
    p.add_argument("--warmup-ms", type=float, default=50)
    p.add_argument("--rep-ms", type=float, default=400)
    p.add_argument("--json", default=None)
    p.add_argument("--table", default=None, help="also write the short table here")
    args = p.parse_args()
    start = time.time()
    set_compile_limits()
    available = {}
    for impl in ("liger", "cce"):
        try:
            M.check_loss_impl(impl)
            available[impl] = None
        except ValueError as e:
            available[impl] = str(e)
            print(f"skipping {impl}: {e}", flush=True)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)

    shapes = args.shapes.split(",")
    wanted = args.cases.split(",")
    plan = [(c, shape, cost) for cost_pass in (False, True) for c in CASES for shape, cost in c[4].items()
            if (cost is not None) == cost_pass and shape in shapes and c[0] in wanted]
    results, refs = [], {}
    for (name, what, build, needs, _), shape, cost in plan:
        if needs and available[needs]:
            results.append(dict(case=name, shape=shape, skipped=available[needs]))
            continue
        if cost is not None and time.time() - start + cost > args.budget_s:
            results.append(dict(case=name, shape=shape, skipped="not started: time budget"))
            print(f"{name} {shape}: not started (time budget)", flush=True)
            continue
        if shape not in refs:  # two fresh draws with masks: init-like logits and 4x sharper
            refs[shape] = []
            for scale, seed in ((1.0, 2), (4.0, 3)):
                x = inputs(shape, scale, seed, masked=True)
                refs[shape].append((x, reference(*x)))
        if name.startswith("chunked") and name != "chunked_eager":
            # a fresh compile per case: no cached graph of another case, mode or shape reused
            torch._dynamo.reset()
        try:
            r = measure(name, build(shape), shape, refs[shape], args)
        except Exception as e:  # one failing backend must not cost the others' numbers
            r = dict(case=name, shape=shape, error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            print(f"{name} {shape}: FAILED {r['error']}", flush=True)
        else:
            print(f"{name} {shape}: {r['ms']:.2f} ms, {r['peak_gib']:.2f} GiB, first call "
                  f"{r['first_call_s']:.1f} s, loss err {r['err_loss']:.1e}, dh {r['err_dh']:.1e}, "
                  f"dW {r['err_dW']:.1e}, ignored dh {r['err_ignored_dh']:.1e}", flush=True)
        r["what"] = what
        results.append(r)
        write(results, args, start)  # after every case: a run cut short keeps what it measured
        gc.collect()
        torch.cuda.empty_cache()
    print(write(results, args, start), flush=True)


def write(results, args, start):
    lines = [f"\n## Output layer + loss alone, forward+backward ({torch.cuda.get_device_name()}, "
             f"{time.time() - start:.0f} s)\n",
             "| shape | case | ms | vs chunked | peak GiB | first call s | loss err | dh err | dW err | "
             "ignored dh | numerics |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["shape"]: r["ms"] for r in results if r["case"] == "chunked" and "ms" in r}
    for r in sorted(results, key=lambda r: (r["shape"] != "proxy", r.get("ms", 1e9))):
        if "ms" not in r:
            lines.append(f"| {r['shape']} | {r['case']} | {r.get('skipped') or 'failed: ' + r['error'][:60]} "
                         f"| | | | | | | | |")
            continue
        ok = (r["err_loss"] <= LOSS_BOUND and r["err_dh"] <= GRAD_BOUND and r["err_dW"] <= GRAD_BOUND
              and r["err_ignored_dh"] == 0)
        vs = f"{base[r['shape']] / r['ms']:.2f}x" if r["shape"] in base else "-"
        lines.append(f"| {r['shape']} | {r['case']} | {r['ms']:.2f} | {vs} | {r['peak_gib']:.2f} | "
                     f"{r['first_call_s']:.1f} | {r['err_loss']:.1e} | {r['err_dh']:.1e} | {r['err_dW']:.1e} | "
                     f"{r['err_ignored_dh']:.0e} | {'ok' if ok else 'OUT OF BOUNDS'} |")
    lines.append(f"\nvs chunked: its time over this one's (>1: faster). Errors: worst of two draws, relative "
                 f"to fp32 F.cross_entropy; bounds loss {LOSS_BOUND:g}, gradients {GRAD_BOUND:g}, "
                 f"ignored rows' dh exactly 0. Peak: above the inputs, incl. the fp32 dh and dW.")
    table = "\n".join(lines)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return table


if __name__ == "__main__":
    require_cuda("loss_bench.py")
    main()

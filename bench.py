"""
Training-step throughput on the current GPU: this trainer against `transformers`' Llama.

    python bench.py                                   # full model, seq 4096, micro-batch 4
    python bench.py --preset proxy --seq-len 2048 --micro-batch 8
    python bench.py --variants ours,ours_fp8,hf --json out/bench.json
    python bench.py --preset proxy --seq-len 2048 --micro-batch 12 --loss-impl liger --kernel-time
    python bench.py --preset proxy --compile-scope model --compile-mode reduce-overhead
    python bench.py --preset proxy --vocab-size 8192 --compile-scope model --compile-mode reduce-overhead --hf-compile-mode reduce-overhead
    torchrun --nproc_per_node=2 bench.py --variants ours --parallel ddp

Every variant runs in its own subprocess (clean memory, clean compile caches) and does
full training steps: forward, backward, optimizer step, zero_grad. Times are CUDA-event
medians over --steps steps after --warmup steps. MFU is given four ways: against the bf16
matmul peak measured in the same run (an 8192^3 bf16 product) and against the datasheet's
dense bf16 peak (989 TFLOP/s on H100/H200, what most published MFU figures use), each with
attention counted over the full T x T square and causal-only. Each variant also
reports the host time per step (how long the CPU takes to issue it; close to the step time
means launch-bound), the host syncs of one step (torch.cuda.set_sync_debug_mode) and, with
--kernel-time, the GPU's kernel time per step from torch.profiler (its share of the step is
how busy the GPU is).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch

from train import COMPILE_MODES, CUDA_GRAPH_MODES, compile_kwargs  # train.py's modes, one list

VARIANTS = {
    # name: (implementation, fp8: False | True (block Linears) | "output" (and the output layer), compile)
    "ours": ("ours", False, True),
    "ours_eager": ("ours", False, False),
    "ours_fp8": ("ours", True, True),
    "ours_fp8_out": ("ours", "output", True),
    "ours_muon": ("ours_muon", False, True),
    "ours_recompute": ("ours_recompute", False, True),  # train.py's recompute_elementwise
    "ours_swiglu": ("ours_swiglu", False, True),  # train.py's recompute_swiglu
    "ours_fp32res": ("ours_fp32res", False, True),  # residual_in_compute_dtype=False: an fp32 stream
    "hf": ("hf", False, True),
    "hf_eager": ("hf", False, False),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    p.add_argument("--preset", default="xmodel-2.5")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=12, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps first (compile, autotune)")
    p.add_argument("--variants", default="ours,hf", help="comma list of " + ",".join(VARIANTS))
    p.add_argument("--parallel", default="none", choices=["none", "ddp", "fsdp"])
    p.add_argument("--activation-checkpointing", type=int, default=0,
                   help="recompute every N-th block in backward (0: none, 1: all)")
    p.add_argument("--compile-scope", default="block", choices=["model", "block"],
                   help="this trainer's variants; block: each block alone plus the loss alone, "
                        "as train.py does (identical blocks share one compile: far shorter); "
                        "model: one torch.compile of the whole model, for comparison. "
                        "The hf variant is always compiled whole")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode for this trainer's variants (reduce-overhead: CUDA graphs); "
                        "hf keeps --hf-compile-mode")
    p.add_argument("--hf-compile-mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode for the hf variant (default: what its users run, and what "
                        "the speed targets were measured against)")
    p.add_argument("--loss-impl", default="chunked",
                   help="this trainer's output layer + loss: chunked (model.py's), liger or cce "
                        "(optional packages; model.LOSS_IMPLS)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="override the preset's vocabulary (both models), e.g. 8192 for a small proxy")
    p.add_argument("--kernel-time", action="store_true",
                   help="also profile 3 steps: GPU kernel time and launches per step")
    p.add_argument("--fp8-backend", default="native", choices=["native", "te", "auto"],
                   help="fp8.py backend for the *_fp8 variants")
    p.add_argument("--loss-chunk-rows", type=int, default=None,
                   help="rows per cross-entropy chunk (ours); default: model.py's")
    p.add_argument("--json", default=None, help="also write the table here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant
    return p.parse_args(argv)


def measure_matmul_peak(n=8192, iters=20):
    """bf16 TFLOP/s of a large square product on random data (METHOD: never zeros)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


# Dense bf16 datasheet peaks (TFLOP/s, no sparsity) of the GPUs this was run on.
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}


def datasheet_peak_tflops(device_name):
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in device_name), None)


def _pct(x):
    return "-" if x is None else f"{x:.1%}"


def build_ours(preset, fp8, act_ckpt, loss_chunk_rows, fp8_backend="native", loss_impl="chunked",
               overrides=None, recompute_swiglu=False):
    from model import Xmodel, model_config
    cfg = model_config(preset, **(overrides or {}))
    model = Xmodel(cfg).cuda()
    model.loss_chunk_rows = loss_chunk_rows
    model.loss_impl = loss_impl
    report = None
    if fp8:
        from fp8 import convert_to_fp8
        report = convert_to_fp8(model, backend=fp8_backend, output_layer=fp8 == "output")
        print("fp8:", report, flush=True)
    if recompute_swiglu:
        from train import apply_swiglu_recompute
        apply_swiglu_recompute(model)
    if act_ckpt:
        from train import apply_activation_checkpointing
        apply_activation_checkpointing(model, every=act_ckpt)

    from fp8 import fp8_autocast_context

    def loss_fn(m, x, y):
        with fp8_autocast_context(report):  # TE's FP8 autocast; nothing for native / bf16
            return m(x, y)
    return model, cfg, loss_fn, model.flops_per_token


def build_hf(preset, overrides=None):
    from transformers import LlamaConfig, LlamaForCausalLM
    from model import Xmodel, model_config
    cfg = model_config(preset, **(overrides or {}))
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ffn,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head, head_dim=cfg.d_model // cfg.n_head,
        rope_theta=cfg.rope_base, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=True,
        max_position_embeddings=8192, attention_bias=False, mlp_bias=False)
    hf_cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(hf_cfg).cuda()
    with torch.device("meta"):  # same FLOP count as ours: identical shapes
        flops = Xmodel(cfg).flops_per_token

    def loss_fn(m, x, y):
        return m(input_ids=x, labels=y).loss
    return model, cfg, loss_fn, flops


def count_host_syncs(fn):
    """Host-device synchronisations of one call of fn (a training step), counted from the
    warnings of torch.cuda.set_sync_debug_mode (.item(), nonzero, copies to the host...)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchronizing" in str(w.message) for w in seen)


def kernel_time_per_step(train_step, first, steps=3):
    """(GPU kernel ms, kernel launches) per step from torch.profiler, over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            train_step(first + i)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return (sum(e.device_time_total for e in events) / 1e3 / steps,
            sum(e.count for e in events) / steps)


def cudagraph_skips():
    """How many compiled graphs Inductor ran without CUDA graphs under mode reduce-overhead
    (it logs why: a CPU tensor, a mutated input, ...)."""
    from torch._dynamo.utils import counters
    return counters["inductor"]["cudagraph_skips"]


def run_one(args, name):
    impl, fp8, compile_ = VARIANTS[name]
    distributed = args.parallel != "none"
    rank, world = 0, 1
    if distributed:
        torch.distributed.init_process_group("nccl")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(1234 + rank)
    if impl == "ours_recompute":
        from train import set_elementwise_recompute
        set_elementwise_recompute(True)  # read when the blocks compile, at the first step
    peak = measure_matmul_peak()
    datasheet = datasheet_peak_tflops(torch.cuda.get_device_name())

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    if impl == "ours_fp32res":
        overrides["residual_in_compute_dtype"] = False
    if impl == "hf":
        model, cfg, loss_fn, flops_per_token = build_hf(args.preset, overrides)
    else:
        model, cfg, loss_fn, flops_per_token = build_ours(
            args.preset, fp8, args.activation_checkpointing, args.loss_chunk_rows, args.fp8_backend,
            args.loss_impl, overrides, recompute_swiglu=impl == "ours_swiglu")
    n_params = sum(p.numel() for p in model.parameters())

    if args.parallel == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    elif args.parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        blocks = model.blocks if impl != "hf" else model.model.layers
        for block in blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)

    if impl == "ours_muon":
        from mup import param_groups
        from muon import Muon, split_groups_for_muon
        adamw_groups, muon_groups = split_groups_for_muon(param_groups(model, weight_decay=0.1))
        optimizers = [torch.optim.AdamW(adamw_groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True),
                      Muon(muon_groups, lr=1e-4)]
    else:
        optimizers = [torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                        weight_decay=0.1, fused=True)]
    step_model = model
    mode_name = args.hf_compile_mode if impl == "hf" else args.compile_mode
    mode = compile_kwargs(mode_name)
    if compile_ and args.compile_scope == "block" and impl != "hf":
        model.compile_by_block(**mode)  # as train.py does
    elif compile_:
        # transformers' Llama is always compiled whole: what its users do (and what
        # RECIPE §4's measured anchor ran).
        step_model = torch.compile(model, **mode)
    # CUDA graphs replay into the same output buffers: each step tells them a new one began
    graphs = compile_ and mode_name in CUDA_GRAPH_MODES

    B, T = args.micro_batch, args.seq_len
    # Real-looking data: random tokens (not zeros), a fresh batch per micro-step.
    batches = [torch.randint(0, cfg.vocab_size, (B, T + 1), device="cuda") for _ in range(4)]

    def train_step(step, mid=None):
        loss = None
        for micro in range(args.accum):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            batch = batches[(step * args.accum + micro) % len(batches)]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(step_model, batch[:, :-1], batch[:, 1:])
            (loss / args.accum).backward()
        if mid is not None:
            mid.record()
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        return loss

    step_times, opt_times, host_times = [], [], []
    t_start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        s, mid, e = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        s.record()
        t0 = time.perf_counter()
        loss = train_step(step, mid)
        host_s = time.perf_counter() - t0  # the CPU's time to issue the step (no sync inside)
        e.record()
        e.synchronize()
        if step == 0:
            first_step_s = time.perf_counter() - t_start  # compile, autotune, first run
        if step >= args.warmup:
            step_times.append(s.elapsed_time(e) / 1e3)
            opt_times.append(mid.elapsed_time(e) / 1e3)
            host_times.append(host_s)
    final_loss = float(loss)  # read now: CUDA graphs reuse its buffer in the next step
    host_syncs = count_host_syncs(lambda: train_step(args.warmup + args.steps))
    kernel_ms = launches = None
    if args.kernel_time:
        try:  # an extra: a profiler failure must not cost the step's timing
            kernel_ms, launches = kernel_time_per_step(train_step, args.warmup + args.steps + 1)
        except Exception as e:
            print(f"kernel time not measured: {type(e).__name__}: {e}", flush=True)
    step_s = statistics.median(step_times)
    tokens_per_s = B * T * args.accum / step_s
    result = dict(
        variant=name, preset=args.preset, seq_len=T, micro_batch=B, accum=args.accum,
        parallel=args.parallel, world_size=world, params=n_params,
        step_s=step_s, step_s_spread=(min(step_times), max(step_times)),
        tokens_per_s_per_gpu=tokens_per_s,
        # MFU four ways, so the figures compare with published ones: against the matmul peak
        # measured here and against the datasheet's (the convention of torchtitan, nanochat,
        # Megatron), each with attention counted over the full square and causal-only.
        mfu=flops_per_token(T) * tokens_per_s / (peak * 1e12),
        mfu_causal=flops_per_token(T, causal=True) * tokens_per_s / (peak * 1e12),
        mfu_datasheet=(flops_per_token(T) * tokens_per_s / (datasheet * 1e12)) if datasheet else None,
        mfu_datasheet_causal=(flops_per_token(T, causal=True) * tokens_per_s / (datasheet * 1e12))
        if datasheet else None, datasheet_peak_tflops=datasheet,
        optimizer_share=statistics.median(opt_times) / step_s,
        optimizer_s=statistics.median(opt_times),
        host_s=statistics.median(host_times), host_syncs=host_syncs, first_step_s=first_step_s,
        kernel_ms_per_step=kernel_ms, kernel_launches_per_step=launches,
        gpu_busy=kernel_ms / 1e3 / step_s if kernel_ms else None,
        compile_scope=args.compile_scope if impl != "hf" else "model",
        compile_mode=mode_name if compile_ else "eager",
        loss_impl=args.loss_impl if impl != "hf" else "hf", vocab_size=cfg.vocab_size,
        cudagraph_skips=cudagraph_skips(),
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
        matmul_peak_tflops=peak, device=torch.cuda.get_device_name(),
        loss=final_loss)
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    if distributed:
        torch.distributed.destroy_process_group()


def main():
    args = parse_args()
    from model import check_loss_impl
    try:  # before any GPU work: an unknown backend or a missing package is one line
        check_loss_impl(args.loss_impl)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if args.one:
        return run_one(args, args.one)
    results = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        cmd = [sys.executable, os.path.abspath(__file__)] + sys.argv[1:] + ["--one", name]
        if args.parallel != "none":
            n = torch.cuda.device_count()
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
                   os.path.abspath(__file__)] + sys.argv[1:] + ["--one", name]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"--- {name} failed (rc {proc.returncode}) ---\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
            results.append(dict(variant=name, error=(proc.stderr or proc.stdout)[-500:]))
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        r["wall_s"] = time.time() - t0
        results.append(r)
        print(f"{name}: {r['tokens_per_s_per_gpu']:.0f} tok/s/GPU, MFU {r['mfu']:.1%}, "
              f"{r['peak_mem_gib']:.1f} GiB", flush=True)

    ok = [r for r in results if "error" not in r]
    base = {r["variant"]: r["tokens_per_s_per_gpu"] for r in ok}
    print("\n| variant | tok/s/GPU | MFU measured peak, full / causal | MFU datasheet, full / causal | peak GiB "
          "| opt share | host ms | syncs | GPU busy | vs hf | vs ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['variant']} | failed | | | | | | | | | |")
            continue
        vs_hf, vs_ours = (f"{r['tokens_per_s_per_gpu'] / base[k]:.2f}x" if k in base else "-"
                          for k in ("hf", "ours"))
        busy = f"{r['gpu_busy']:.0%}" if r.get("gpu_busy") else "-"
        print(f"| {r['variant']} | {r['tokens_per_s_per_gpu']:.0f} | {_pct(r['mfu'])} / {_pct(r.get('mfu_causal'))} | "
              f"{_pct(r.get('mfu_datasheet'))} / {_pct(r.get('mfu_datasheet_causal'))} | "
              f"{r['peak_mem_gib']:.1f} | {r['optimizer_share']:.1%} | {1e3 * r['host_s']:.1f} | "
              f"{r['host_syncs']} | {busy} | {vs_hf} | {vs_ours} |")
    if ok:
        r = ok[0]
        print(f"\n{r['device']}, {r['preset']}, seq {r['seq_len']}, micro-batch {r['micro_batch']}, "
              f"accum {r['accum']}, {r['parallel']} x{r['world_size']}, compile scope {args.compile_scope}, "
              f"mode {args.compile_mode} (hf {args.hf_compile_mode}), loss {args.loss_impl}, vocab {r['vocab_size']}; "
              f"measured bf16 matmul peak {r['matmul_peak_tflops']:.0f} TFLOP/s, datasheet "
              + (f"{r['datasheet_peak_tflops']:.0f}" if r.get("datasheet_peak_tflops") else "unknown")
              + " TFLOP/s; attention FLOPs counted over the full T x T square or causal-only")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

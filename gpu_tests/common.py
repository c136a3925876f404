"""Helpers shared by the GPU scripts: CUDA-event timing, profiler kernel times and
torch.compile's recompile limit."""
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def require_cuda(script):
    """One line and exit, before any work, on a machine without a GPU (these scripts measure one)."""
    if not torch.cuda.is_available() and not {"-h", "--help"} & set(sys.argv[1:]):
        raise SystemExit(f"{script} measures on a GPU and this machine has none: run it on a GPU "
                         f"machine (gpu_tests/README.md)")


def median_ms(fn, warmup=3, iters=20):
    """Median wall time of fn() on the GPU in ms, timed with CUDA events after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def set_compile_limits(limit=64):
    """Room for the many small graphs these scripts compile (the key was renamed across versions)."""
    for key in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, limit)


def kernel_times(fn, warmup, iters):
    """GPU kernels of fn() from torch.profiler after `warmup` untimed calls: a list of
    (kernel name, microseconds per call of fn, launches per call of fn), largest first."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    kernels = [(e.key, e.device_time_total / iters, e.count / iters) for e in prof.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    return sorted(kernels, key=lambda k: -k[1])

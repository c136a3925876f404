"""Cost of fp8.sync_amax_history, which train.py calls after every micro-batch under data
parallelism (native FP8): one all-reduce MAX over every block Linear's [3, 128] amax history,
at the full model's count (48 layers x 4 Linears). The history size does not depend on the
Linear's shape, so small Linears stand in for the real ones.
    torchrun --nproc_per_node=2 gpu_tests/amax_sync_bench.py   (or 8)
Prints the median time per call; x 60 micro-batches per decay step (RECIPE §3) is the cost
per optimizer step."""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fp8  # noqa: E402
from common import median_ms, require_cuda  # noqa: E402

N_LINEARS = 48 * 4  # fp8.BLOCK_LINEARS in each of the 48 blocks

if __name__ == "__main__":
    require_cuda("amax_sync_bench.py")
    if "RANK" not in os.environ:
        sys.exit("amax_sync_bench.py runs one process per GPU: torchrun --nproc_per_node=N gpu_tests/amax_sync_bench.py")
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(rank)
    model = torch.nn.ModuleList(fp8.Float8Linear(16, 16, device="cuda") for _ in range(N_LINEARS))
    for m in model:
        m.fp8_amax_history.uniform_()
    ms = median_ms(lambda: fp8.sync_amax_history(model), warmup=10, iters=200)
    if rank == 0:
        kib = N_LINEARS * model[0].fp8_amax_history.numel() * 4 / 1024
        print(f"world {dist.get_world_size()}: sync_amax_history {kib:.0f} KiB in {ms * 1e3:.1f} us; "
              f"x 60 micro-batches = {ms * 60:.2f} ms per optimizer step")
    dist.destroy_process_group()

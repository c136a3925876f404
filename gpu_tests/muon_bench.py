"""
Muon's optimizer step on one GPU at the full model's shapes (RECIPE §1: 48 blocks of qkv
2560x1536, out 1536x1536, gate_up 7680x1536, down 1536x3840), against fused AdamW, and the
Newton–Schulz work one rank does when the step is split over W data-parallel ranks.

    python gpu_tests/muon_bench.py
    python gpu_tests/muon_bench.py --profile    # also Muon.step's GPU kernels, largest first

Rows:
- AdamW (fused) over every parameter: the optimizer train.py runs before the switch.
- AdamW for embedding/norms + Muon for the hidden matrices: the optimizers after the switch.
- Newton–Schulz of the busiest rank for W = 1, 2, 4, 8: the blocks muon.assign_blocks gives
  that rank, run on this one GPU. This is the compute part of the distributed step; the
  all_gather that shares the results (2 bytes per matrix element, ~2.3 GB over all ranks
  together) is not in it: that needs the several-GPU machine.
Times are medians of CUDA-event timings after warm-up; gradients are random (never zeros).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_tests.common import kernel_times, median_ms  # noqa: E402
from model import Xmodel, model_config  # noqa: E402
from mup import param_groups  # noqa: E402
from muon import Muon, assign_blocks, newton_schulz, ns_flops, split_groups_for_muon  # noqa: E402


def main():
    torch.manual_seed(0)
    model = Xmodel(model_config("xmodel-2.5")).cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    groups = param_groups(model, weight_decay=0.1)
    adamw_all = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    adamw_groups, muon_groups = split_groups_for_muon(param_groups(model, weight_decay=0.1))
    adamw_rest = torch.optim.AdamW(adamw_groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    muon = Muon(muon_groups, lr=1e-4)
    matrices = [p for g in muon_groups for p in g["params"]]
    total_flops = sum(ns_flops(*p.shape) for p in matrices)

    rows = []
    t_adamw = median_ms(adamw_all.step)
    rows.append(("AdamW (fused), all parameters", t_adamw, ""))
    t_rest = median_ms(adamw_rest.step)
    t_muon = median_ms(muon.step)
    rows.append(("AdamW (embedding, norms) + Muon (hidden matrices)", t_rest + t_muon,
                 f"Muon alone {t_muon:.1f} ms; {t_muon / t_adamw:.1f}x AdamW's whole step"))
    grads = [p.grad for p in matrices]
    ns_all = None
    for world in (1, 2, 4, 8):
        owner, load = assign_blocks([ns_flops(*g.shape) for g in grads], world)
        busiest = max(range(world), key=lambda r: load[r])
        mine = [g for g, o in zip(grads, owner) if o == busiest]
        t = median_ms(lambda: [newton_schulz(g) for g in mine])
        ns_all = ns_all or t
        rows.append((f"Newton–Schulz of the busiest rank, {world} rank(s)", t,
                     f"{len(mine)} matrices, {load[busiest] / t / 1e9:.0f} TFLOP/s, "
                     f"{ns_all / t:.2f}x faster than 1 rank (ideal {world})"))
    # Same-shape matrices stacked into one batched product per shape (fewer, larger kernels;
    # newton_schulz takes a stack), as Muon.step does it, against the per-matrix loop above.
    by_shape = {}
    for g in grads:
        by_shape.setdefault(tuple(g.shape), []).append(g)
    gs = next(iter(by_shape.values()))
    stacked, alone = newton_schulz(torch.stack(gs)).float(), [newton_schulz(g).float() for g in gs]
    diff = max(((s - o).norm() / o.norm()).item() for s, o in zip(stacked, alone))
    t = median_ms(lambda: [newton_schulz(torch.stack(gs)) for gs in by_shape.values()])
    rows.append(("Newton–Schulz batched by shape, 1 rank (as Muon.step)", t,
                 f"{len(by_shape)} batches, {total_flops / t / 1e9:.0f} TFLOP/s, {ns_all / t:.2f}x the per-matrix loop; "
                 f"relative difference to it {diff:.1e}"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {len(matrices)} Muon matrices, "
          f"Newton–Schulz {total_flops / 1e12:.1f} TFLOP per step (5 steps, bf16)\n")
    print("| what | median ms | notes |\n|---|---|---|")
    for what, ms, note in rows:
        print(f"| {what} | {ms:.1f} | {note} |")
    if "--profile" in sys.argv[1:]:
        # Where Muon.step's time goes beyond Newton–Schulz (momentum, stack copies, update)
        kernels = kernel_times(muon.step, warmup=3, iters=5)
        total = sum(k[1] for k in kernels)
        print(f"\nMuon.step, GPU kernel time {total / 1e3:.1f} ms per step (wall {t_muon:.1f} ms)\n")
        print("| kernel | ms per step | launches per step | share |\n|---|---|---|---|")
        for name, us, count in kernels[:15]:
            print(f"| {name[:90]} | {us / 1e3:.2f} | {count:.0f} | {us / total:.1%} |")


if __name__ == "__main__":
    main()

"""One train.train_step on a fixed global batch (no data files), with the gradients captured
where the optimizer would step. In-process (test_train.py), or under torchrun on 2 gloo ranks
wrapped in DDP: `python -m torch.distributed.run --nproc_per_node=2 tests/step_harness.py OUT
MICRO_BATCH LOSS_REDUCTION [fp8]` writes rank 0's (loss, gradients) to OUT, and with fp8 (the
native backend, CPU emulation) every rank's (loss, gradients, histories) to OUT.rankN."""
import os
import sys
import types

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import fp8  # noqa: E402
import schedule  # noqa: E402
import train  # noqa: E402
from model import model_config  # noqa: E402


class FixedBatch:
    """Mixture.get_batch's signature over one fixed global batch: global micro-batch `index`
    is rows index*micro_batch ... of it, so any split of the batch sees the same sequences."""

    def __init__(self, rows=8, seq=16, vocab=512, mask=None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (rows, seq), generator=g)
        self.y = torch.randint(0, vocab, (rows, seq), generator=g)
        self.mask = mask

    def get_batch(self, step, micro_step, index, micro_batch):
        rows = slice(index * micro_batch, (index + 1) * micro_batch)
        return self.x[rows], self.y[rows], None if self.mask is None else self.mask[rows]


def sft_like_mask():
    """Micro-batch 0 (of 2-row ones) keeps 2 tokens, the others most of theirs."""
    mask = torch.ones(8, 16, dtype=torch.uint8)
    mask[0:2, :15] = 0
    mask[4, :8] = 0
    return mask


def step_gradients(micro_batch, data, d=None, histories=None, steps=1, **cfg):
    """(loss, {name: grad}) of train.train_step over `data` with this micro_batch (the last of
    `steps` steps); under a process group (d.world_size > 1) the model is DDP-wrapped and the
    grads are all-reduced. histories: a list -> native FP8 (emulated), and the first FP8 layer's
    amax history as each forward starts (its grad_output row as each backward starts: the
    scaling state each one quantizes with) is appended to it."""
    d = d or train.Dist()
    torch.manual_seed(0)
    raw = train.model_lib.Xmodel(model_config("tiny"))
    report = None
    if histories is not None:
        report = fp8.convert_to_fp8(raw, backend="native", emulate=True)
        first = next(m for m in raw.modules() if isinstance(m, fp8.Float8Linear))
        first.register_forward_pre_hook(lambda m, a: histories.append(m.fp8_amax_history.clone()))
        first.register_full_backward_pre_hook(  # the backward scales grad_output from its row only
            lambda m, g: histories.append(m.fp8_amax_history[fp8.GRAD_OUTPUT].clone()))
    model = torch.nn.parallel.DistributedDataParallel(raw) if d.world_size > 1 else raw
    cfg = train.Config(**{"global_batch": data.x.shape[0], "micro_batch": micro_batch,
                          "grad_clip": 0.0, **cfg})
    opt = train.Optimizers(raw, cfg, torch.device("cpu"), muon_active=False)
    grads = {}
    real_step = opt.step

    def step():
        grads.update({n: p.grad.clone() for n, p in raw.named_parameters()})
        real_step()
    opt.step = step
    run = types.SimpleNamespace(  # stop: a StopSignal never entered installs no handlers
        cfg=cfg, d=d, opt=opt, model=model, raw_model=raw, data=data, fsdp=False,
        dtype=torch.float32, fp8_report=report, monitor=train.Monitor(cfg),
        stop=train.StopSignal(), logger=types.SimpleNamespace(log=lambda *a: None),
        lr_schedule=schedule.WSD(start_step=0, max_steps=10, learning_rate=1e-3))
    for step in range(steps):
        result = train.train_step(run, step)
    assert grads, "the optimizer did not step"
    return result.loss, grads


if __name__ == "__main__":
    out, micro_batch, reduction = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    use_fp8 = sys.argv[4:] == ["fp8"]
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    histories = [] if use_fp8 else None
    result = step_gradients(micro_batch, FixedBatch(mask=sft_like_mask()),
                            d=train.Dist(rank, rank, world, torch.device("cpu")),
                            histories=histories, steps=2 if use_fp8 else 1, loss_reduction=reduction)
    if use_fp8:
        torch.save((*result, histories), f"{out}.rank{rank}")
    elif rank == 0:
        torch.save(result, out)
    torch.distributed.destroy_process_group()

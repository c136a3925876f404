"""The training loop end to end on CPU with a tiny model: the loss falls; 2-process DDP (gloo)
equals one process; an interrupted run resumes bitwise; the AdamW -> Muon switch happens and
resumes exactly across it; FSDP2 trains, checkpoints through torch.distributed.checkpoint and
reloads on a different number of processes."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
import checkpoint  # noqa: E402
import train  # noqa: E402
from model import model_config  # noqa: E402
from muon import Muon  # noqa: E402
from step_harness import FixedBatch, sft_like_mask, step_gradients  # noqa: E402
from tiny_run import VOCAB, draw_random_numbers_in_the_loss, plays, run_inprocess, tiny_args  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return plays(tmp_path_factory)


def losses(out_dir):
    """step -> train loss; a resumed run appends to the same file, the last record wins."""
    out = {}
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "train":
                out[r["step"]] = r["loss"]
    return out


def records(out_dir, kind):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == kind]


def torchrun(nproc, args, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--standalone", os.path.join(ROOT, "train.py"), *args]
    # Own session: on a timeout the whole group (torchrun and its workers) is killed.
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"torchrun timed out after {timeout}s:\n{out[-3000:]}{err[-3000:]}")
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    return out


def test_tiny_run_loss_falls_and_writes_everything(dataset, tmp_path):
    out = tmp_path / "run"
    result = run_inprocess(tiny_args(dataset, out, max_steps=40, warmup_steps=4, eval_interval=20,
                                     global_batch=16, micro_batch=8, log_interval=5))
    ls = losses(out)
    assert ls[5] > ls[40] + 1.0, ls  # ~5.7 -> ~4.2: clearly learning
    assert math.log(VOCAB) - 0.5 < ls[5] < math.log(VOCAB) + 0.5
    val = records(out, "val")
    assert [r["step"] for r in val] == [20, 40] and val[-1]["val_loss"]["plays"] < val[0]["val_loss"]["plays"]
    assert result["step"] == 40
    # The checkpoint (checkpoint.py's format): consolidated model.pt readable with weights_only,
    # tokenizer, latest.
    step_dir = out / "ckpt" / "step_00000040"
    assert (out / "ckpt" / "latest").read_text().strip() == "step_00000040"
    assert {p.name for p in step_dir.iterdir()} == {"model.pt", "train_state.pt", "tokenizer.json"}
    model = checkpoint.load_model(str(out))
    assert model.checkpoint_info["step"] == 40
    assert model.checkpoint_info["tokenizer"]["vocab_size"] == VOCAB
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    # Resolved config, report and loss curve.
    assert train.load_config(str(out / "config.json")).max_steps == 40
    report = (out / "report.md").read_text()
    assert "final train loss" in report and "loss.png" in report and (out / "loss.png").exists()
    assert "| MFU, last log interval (attention full / causal-only) | - |" in report  # CPU: no peak


def test_report_gives_mfu_with_both_attention_counts_and_its_peak(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=2, warmup_steps=1, peak_tflops=1e-3))
    row = next(l for l in (out / "report.md").read_text().splitlines() if l.startswith("| MFU"))
    full, causal = [float(x) for x in re.findall(r"([0-9.]+)% ", row)[:2]]
    # seq 32: the causal count drops (32 - 16.5) of the 12·L·H·hd·32 attention term, so it is lower
    assert 0 < causal < full and "of 0.001 TFLOP/s (peak_tflops)" in row


def test_learning_rate_and_batch_follow_the_schedule(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=10, warmup_steps=2, warmup_init_lr=1e-3,
                            decay_start_step=4, decay_steps=4, min_lr=1e-3,
                            batch_ramp=((6, 16),)))
    recs = {r["step"]: r for r in records(out, "train")}  # record of step s = after s steps
    import schedule
    wsd = schedule.WSD(learning_rate=1e-2, start_step=0, max_steps=10, warmup_steps=2,
                       warmup_init_lr=1e-3, decay_start_step=4, decay_steps=4, min_lr=1e-3)
    for s in range(10):
        assert recs[s + 1]["lr"] == pytest.approx(wsd.lr_at(s))
        assert recs[s + 1]["global_batch"] == (16 if s >= 6 else 8)
    assert recs[1]["segment"] == "warmup" and recs[5]["segment"] == "decay" and recs[10]["segment"] == "min_lr"


def test_two_process_ddp_matches_one_process(dataset, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_inprocess(tiny_args(dataset, single, max_steps=6))  # 1 process x 4 micro-batches
    torchrun(2, tiny_args(dataset, ddp, max_steps=6))  # 2 processes x 2 micro-batches
    a, b = losses(single), losses(ddp)
    assert a.keys() == b.keys() == set(range(1, 7))
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a[s], b[s])


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(dataset, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_inprocess(tiny_args(dataset, full, max_steps=16, eval_interval=8))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"),
                          *tiny_args(dataset, cut, max_steps=16, eval_interval=8)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # interrupt mid-run, like a preemption
        if line.startswith("step 5/"):
            p.send_signal(signal.SIGTERM)
            break
    rest = p.stdout.read()
    assert p.wait(timeout=60) == 0, rest
    stopped_at = int((cut / "ckpt" / "latest").read_text().strip().split("_")[1])
    assert 5 <= stopped_at < 16 and "stopped by signal" in rest
    run_inprocess(tiny_args(dataset, cut, max_steps=16, eval_interval=8, init_from="resume"))
    a, b = losses(full), losses(cut)
    assert a == b  # bitwise: same floats at every step
    val_a = {r["step"]: r["val_loss"] for r in records(full, "val")}
    val_b = {r["step"]: r["val_loss"] for r in records(cut, "val")}
    assert val_a == val_b


@pytest.mark.parametrize("setting", [dict(activation_checkpointing=True),  # every block
                                     dict(activation_checkpointing=2),  # selective: every 2nd block
                                     dict(recompute_swiglu=True),  # the SwiGLU output alone
                                     dict(recompute_swiglu=True, activation_checkpointing=True)])
def test_recomputation_gives_the_same_losses(dataset, tmp_path, setting):
    run_inprocess(tiny_args(dataset, tmp_path / "plain", max_steps=4))
    run_inprocess(tiny_args(dataset, tmp_path / "ac", max_steps=4, **setting))
    assert losses(tmp_path / "plain") == losses(tmp_path / "ac")


def test_recompute_swiglu_leaves_the_fp8_model_training_alike(dataset, tmp_path):
    # Float8Linear keeps its own FP8 copy of the down projection's input: nothing to recompute
    fp8 = dict(max_steps=3, fp8=True, fp8_emulate=True)
    run_inprocess(tiny_args(dataset, tmp_path / "plain", **fp8))
    run_inprocess(tiny_args(dataset, tmp_path / "swiglu", recompute_swiglu=True, **fp8))
    assert losses(tmp_path / "plain") == losses(tmp_path / "swiglu")


def test_compile_compiles_each_block_and_the_loss_and_trains_like_eager(dataset, tmp_path, monkeypatch):
    # train.py compiles block by block plus the loss (docs/PERFORMANCE.md: as fast as one
    # whole-model compile, in far less time). aot_eager traces what inductor would (dynamo
    # graphs, AOT autograd) without needing a C++ compiler on the test machine.
    compiled, real_compile = [], torch.compile

    def traced_compile(fn, *args, **kwargs):
        compiled.append(fn.__name__)
        return real_compile(fn, backend="aot_eager")
    monkeypatch.setattr(torch, "compile", traced_compile)
    run_inprocess(tiny_args(dataset, tmp_path / "compiled", max_steps=4, compile=True))
    assert compiled == ["_call_impl", "_call_impl", "_ce_chunks"]  # 2 blocks, then the loss
    run_inprocess(tiny_args(dataset, tmp_path / "eager", max_steps=4, compile=False))
    a, b = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert a.keys() == b.keys() and len(a) == 4
    for step in a:
        assert math.isclose(a[step], b[step], rel_tol=1e-5), (step, a[step], b[step])


def compiled_block_backward(block, cos, sin, x0):
    """One compiled block's forward + backward under bf16 autocast: ({(data_ptr, shape): bytes}
    of the tensors it keeps for backward, parameters and RoPE tables left out; its gradients).
    The partitioner inductor uses (min-cut), traced and run eagerly: no C++ compiler needed."""
    exists = {p.data_ptr() for p in block.parameters()} | {cos.data_ptr(), sin.data_ptr()}
    torch._dynamo.reset()
    compiled = torch.compile(block, backend="aot_eager_decomp_partition")
    saved = {}

    def pack(t):
        if t.data_ptr() not in exists:
            saved[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
        return t
    x = x0.clone().requires_grad_()
    block.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = compiled(x, cos, sin)
    y.float().square().sum().backward()
    return saved, [x.grad] + [p.grad.clone() for p in block.parameters()]


def tiny_block(T=32):
    torch.manual_seed(0)
    model = train.model_lib.Xmodel(train.model_lib.model_config("tiny"))
    return model, model.rope_cos[:T], model.rope_sin[:T], torch.randn(1, T, model.config.d_model)


def test_recompute_elementwise_keeps_fewer_activations_and_gives_the_same_gradients():
    model, cos, sin, x0 = tiny_block()
    kept, grads = {}, {}
    try:
        for on in (False, True):
            train.set_elementwise_recompute(on)
            kept[on], grads[on] = compiled_block_backward(model.blocks[0], cos, sin, x0)
    finally:
        train.set_elementwise_recompute(False)
        torch._dynamo.reset()
    # off: the RMSNorm and SwiGLU outputs and the bf16 weight casts are kept as well
    assert sum(kept[True].values()) < 0.75 * sum(kept[False].values()), kept
    for a, b in zip(grads[False], grads[True]):
        assert torch.equal(a, b)  # the same element-wise ops, recomputed bit for bit


def test_recompute_swiglu_keeps_the_gate_up_output_only_and_gives_the_same_gradients():
    model, cos, sin, x0 = tiny_block()
    T, ffn = x0.shape[1], model.config.d_ffn
    try:
        kept_off, grads_off = compiled_block_backward(model.blocks[0], cos, sin, x0)
        train.apply_swiglu_recompute(model)
        kept_on, grads_on = compiled_block_backward(model.blocks[0], cos, sin, x0)
    finally:
        torch._dynamo.reset()
    shapes_off, shapes_on = [shape for _, shape in kept_off], [shape for _, shape in kept_on]
    assert (T, ffn) in shapes_off and (T, ffn) not in shapes_on, shapes_on  # the SwiGLU output
    assert (T, 2 * ffn) in shapes_on  # the gate|up output it is recomputed from
    for a, b in zip(grads_off, grads_on):
        assert torch.equal(a, b)


def test_selective_activation_checkpointing_wraps_every_nth_block():
    model = train.model_lib.Xmodel(train.model_lib.model_config("tiny", n_layer=6))
    train.apply_activation_checkpointing(model, every=3)
    wrapped = [i for i, b in enumerate(model.blocks) if "forward" in vars(b)]
    assert wrapped == [0, 3]


def test_existing_run_is_not_overwritten_without_resume(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=2))
    with pytest.raises(ValueError, match="--init_from=resume"):
        run_inprocess(tiny_args(dataset, out, max_steps=4))


def test_muon_switch_happens_and_resume_across_it_is_exact(dataset, tmp_path):
    full = tmp_path / "full"
    run_inprocess(tiny_args(dataset, full, max_steps=14, muon_switch_step=7, ckpt_interval=4))
    events = records(full, "event")
    assert [(e["step"], e["event"]) for e in events] == [(7, "muon_switch")]
    rms = {r["step"]: r for r in records(full, "update_rms")}
    assert set(rms) == set(range(3, 12))  # 4 steps before, the switch, 4 after
    roles = {"update_rms_embedding", "update_rms_matrix", "update_rms_norm"}
    assert all(roles <= set(r) for r in rms.values())  # per role, whichever optimizer holds it
    assert all(r["update_rms_matrix"] > 0 for r in rms.values())
    a = losses(full)
    assert all(math.isfinite(v) for v in a.values()) and a[14] < a[1]
    assert not records(full, "train")[5]["muon_active"] and records(full, "train")[-1]["muon_active"]
    # Resume from a checkpoint before the switch (step 4), exactly at it (8: written before
    # step 8 ran... the switch happened at 7, so 8 is after) and after it (12).
    for ckpt in ("step_00000004", "step_00000008", "step_00000012"):
        cut = tmp_path / f"from_{ckpt}"
        shutil.copytree(full, cut)
        for later in sorted((cut / "ckpt").glob("step_*")):
            if later.name > ckpt:
                shutil.rmtree(later)
        (cut / "ckpt" / "latest").write_text(ckpt + "\n")
        (cut / "metrics.jsonl").write_text("")
        run_inprocess(tiny_args(dataset, cut, max_steps=14, muon_switch_step=7, ckpt_interval=4,
                                init_from="resume"))
        b = losses(cut)
        start = int(ckpt.split("_")[1])
        assert b == {s: a[s] for s in range(start + 1, 15)}, ckpt


def test_muon_switch_at_phase_start_from_a_previous_phase(dataset, tmp_path):
    """The decay pattern: weights from the previous phase, fresh optimizer, Muon from step 1."""
    s1, decay = tmp_path / "s1", tmp_path / "decay"
    run_inprocess(tiny_args(dataset, s1, max_steps=6))
    run_inprocess(tiny_args(dataset, decay, init_from=str(s1), load_optimizer=False, start_step=6,
                            max_steps=10, muon_switch_step=6, learning_rate=2e-3, warmup_steps=1,
                            warmup_init_lr=1e-5, decay_start_step=7, decay_steps=3, min_lr=1e-4))
    recs = records(decay, "train")
    assert recs[0]["step"] == 7 and all(r["muon_active"] for r in recs)
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert losses(decay)[7] < losses(s1)[1]  # it started from the trained weights


def test_phase_chaining_with_optimizer_state_equals_one_long_run(dataset, tmp_path):
    """S1 -> S2 with load_optimizer=True behaves exactly like one run across the boundary."""
    one, s1, s2 = tmp_path / "one", tmp_path / "s1", tmp_path / "s2"
    run_inprocess(tiny_args(dataset, one, max_steps=10))
    run_inprocess(tiny_args(dataset, s1, max_steps=5))
    run_inprocess(tiny_args(dataset, s2, init_from=str(s1), load_optimizer=True, start_step=5,
                            max_steps=10, warmup_steps=0))
    a, b = losses(one), {**losses(s1), **losses(s2)}
    assert b == a


def test_checkpoint_from_another_model_shape_names_the_tensors(dataset, tmp_path):
    s1 = tmp_path / "s1"
    run_inprocess(tiny_args(dataset, s1, max_steps=2))
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.gate_up\.weight: checkpoint \(320, 64\) vs model \(384, 64\)"):
        run_inprocess(tiny_args(dataset, tmp_path / "s2", init_from=str(s1), start_step=2, max_steps=4,
                                model_overrides={"vocab_size": VOCAB, "d_ffn": 192}))


def test_nonfinite_gradients_skip_the_update_then_stop(dataset, tmp_path, monkeypatch):
    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def poisoned(params, max_norm):  # NaN gradients at steps 3, 4 (0-based 2, 3), then all
        calls.append(1)
        norm = real(params, max_norm)
        return norm * float("nan") if len(calls) in (3, 4) or len(calls) >= 8 else norm
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="3 non-finite steps in a row at step 9"):
        run_inprocess(tiny_args(dataset, out, max_steps=20, max_nonfinite_in_a_row=3))
    assert [r["step"] for r in records(out, "nonfinite")] == [2, 3, 7, 8, 9]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_fsdp2_trains_checkpoints_with_dcp_and_reloads_on_another_world_size(dataset, tmp_path):
    """FSDP2 (fully_shard) runs on CPU with gloo in torch 2.13."""
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    # Muon from step 3: its sharded (DTensor) path and its state in dcp/ are covered too.
    run_inprocess(tiny_args(dataset, single, max_steps=8, muon_switch_step=3))
    torchrun(2, tiny_args(dataset, fsdp, max_steps=8, muon_switch_step=3, parallel="fsdp", ckpt_interval=4,
                          activation_checkpointing=True))  # recompute under FSDP2's hooks
    a, b = losses(single), losses(fsdp)
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a[s], b[s])
    assert (fsdp / "ckpt" / "step_00000004" / "dcp").is_dir()
    # Reload the 2-process checkpoint of step 4 in ONE process and finish: same losses.
    shutil.rmtree(fsdp / "ckpt" / "step_00000008")
    (fsdp / "ckpt" / "latest").write_text("step_00000004\n")
    (fsdp / "metrics.jsonl").write_text("")
    torchrun(1, tiny_args(dataset, fsdp, max_steps=8, muon_switch_step=3, parallel="fsdp",
                          init_from="resume"))
    c = losses(fsdp)
    assert set(c) == {5, 6, 7, 8}
    for s in c:
        assert c[s] == pytest.approx(a[s], rel=1e-5), (s, a[s], c[s])
    # The consolidated model.pt of an FSDP run is the plain state dict.
    assert checkpoint.load_model(str(fsdp)).checkpoint_info["step"] == 8


def test_fsdp2_under_bf16_autocast_has_the_numerics_of_one_process(dataset, tmp_path):
    """bf16 autocast with fp32 parameters in both modes: FSDP2 keeps the numerics of one
    process / DDP, the bf16 residual stream included. Measured over the 4 steps: at most 8e-8
    relative; 4e-5 when FSDP2 cast each block's input back to fp32 (its default
    cast_forward_inputs), and 2.3e-5 at step 1 without autocast (fp32 matmuls)."""
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    run_inprocess(tiny_args(dataset, single, max_steps=4, dtype="bfloat16"))
    torchrun(2, tiny_args(dataset, fsdp, max_steps=4, dtype="bfloat16", parallel="fsdp"))
    a, c = losses(single), losses(fsdp)
    assert a.keys() == c.keys() == {1, 2, 3, 4}
    for s in a:
        assert c[s] == pytest.approx(a[s], rel=2e-6), (s, a[s], c[s])


def _tiny_optimizers(muon_active, **cfg):
    """train.Optimizers over the tiny model, with a random gradient on every parameter."""
    torch.manual_seed(0)
    model = train.model_lib.Xmodel(model_config("tiny"))
    cfg = train.Config(**{"weight_decay": 0.0, "muon_switch_step": 0, **cfg})
    opt = train.Optimizers(model, cfg, torch.device("cpu"), muon_active)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    return opt


def test_update_rms_measures_the_update_each_optimizer_applied():
    # AdamW's first update is lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g): RMS = lr.
    opt = _tiny_optimizers(muon_active=False)
    for g in opt.optimizers[0].param_groups:
        g["lr"] = 1e-3
    before = opt.snapshot()
    opt.step()
    rms = opt.update_rms(before)
    assert set(rms) == {"embedding", "matrix", "norm"}
    assert all(r == pytest.approx(1e-3, rel=1e-4) for r in rms.values())
    # Muon: with lr 1 its update is 0.2 sqrt(max(rows, cols)) O, of RMS ~0.2 (RECIPE §2); the
    # measurement is the RMS over all its matrices of what the step changed.
    opt = _tiny_optimizers(muon_active=True)
    matrices = [p for g in opt.optimizers[1].param_groups for p in g["params"]]
    for g in opt.optimizers[1].param_groups:
        g["lr"] = 1.0
    before, copies = opt.snapshot(), [p.detach().clone() for p in matrices]
    opt.step()
    deltas = [p.detach() - c for p, c in zip(matrices, copies)]
    total = math.sqrt(sum(d.square().sum().item() for d in deltas) / sum(d.numel() for d in deltas))
    rms = opt.update_rms(before)
    assert rms["matrix"] == pytest.approx(total, rel=1e-4) and 0.1 < rms["matrix"] < 0.25
    assert rms["embedding"] == rms["norm"] == 0.0  # AdamW's groups kept lr 0


def test_muon_matched_adamw_rms_scales_muons_update():
    rms = {}
    for scale in (0.2, 0.8):  # the recipe's, and 4x
        opt = _tiny_optimizers(muon_active=True, muon_matched_adamw_rms=scale)
        for g in opt.optimizers[1].param_groups:
            g["lr"] = 1.0
        before = opt.snapshot()
        opt.step()
        rms[scale] = opt.update_rms(before)["matrix"]
    assert rms[0.8] == pytest.approx(4 * rms[0.2], rel=1e-3)


def test_update_rms_is_logged_around_any_step_asked(dataset, tmp_path):
    # An AdamW-only run (the decay's control arm) logs the same per-role figures as the
    # Muon arm does around its switch, so the two compare step by step.
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=10, update_rms_step=5))
    rms = {r["step"]: r for r in records(out, "update_rms")}
    assert set(rms) == set(range(1, 10)) and all(r["update_rms_matrix"] > 0 for r in rms.values())
    with pytest.raises(train.ConfigError, match="update_rms_step"):
        train.load_config(None, tiny_args(dataset, out, max_steps=10, update_rms_step=10), world_size=1)


def test_optimizers_switch_to_muon_keeps_the_adamw_state_only_when_asked():
    for reset in (True, False):
        opt = _tiny_optimizers(muon_active=False, muon_reset_adamw_state=reset)
        opt.step()
        embed = opt.model.embed.weight
        opt.switch_to_muon()
        assert opt.muon_active and isinstance(opt.optimizers[1], Muon)
        assert (embed in opt.optimizers[0].state) is not reset
        assert not opt.optimizers[1].state  # fresh momentum for the matrices


def test_optimizers_set_lr_scales_only_the_peak_by_each_group_lr_mult():
    # RECIPE §3 (Megatron's get_lr): one absolute warmup start and floor for every group; the
    # µP lr_mult (0.5 for the tiny model's hidden groups) scales the peak only.
    import schedule
    opt = _tiny_optimizers(muon_active=True)
    wsd = schedule.WSD(start_step=0, max_steps=40, learning_rate=1e-2, warmup_steps=4,
                       warmup_init_lr=1e-4, decay_start_step=10, decay_steps=20, min_lr=1e-3)
    groups = [g for o in opt.optimizers for g in o.param_groups]
    assert {g["lr_mult"] for g in groups} != {1.0}  # some group is scaled, or this tests nothing
    for step in (0, 2, 4, 20, 30, 39):
        assert opt.set_lr(wsd, step) == wsd.lr_at(step)
        for g in groups:
            assert g["lr"] == pytest.approx(wsd.lr_at(step, peak=1e-2 * g["lr_mult"],
                                                      warmup_init=1e-4, floor=1e-3)), (step, g["role"])
    opt.set_lr(wsd, 0)
    assert all(g["lr"] == 1e-4 for g in groups)  # warmup start, not 1e-4 x lr_mult
    opt.set_lr(wsd, 35)
    assert all(g["lr"] == 1e-3 for g in groups)  # floor, not 1e-3 x lr_mult
    opt.set_lr(wsd, 6)
    assert sorted({g["lr"] for g in groups}) == sorted({1e-2 * g["lr_mult"] for g in groups})


def test_config_json_is_written_only_after_the_data_and_the_checkpoint_pass(dataset, tmp_path):
    s1, out = tmp_path / "s1", tmp_path / "run"
    with pytest.raises(Exception, match="does not exist"):
        run_inprocess(tiny_args(dataset, out, data={str(tmp_path / "missing"): 1.0}))
    run_inprocess(tiny_args(dataset, s1, max_steps=2))
    with pytest.raises(ValueError, match="does not fit the model"):
        run_inprocess(tiny_args(dataset, out, init_from=str(s1), start_step=2, max_steps=4,
                                model_overrides={"vocab_size": VOCAB, "d_ffn": 192}))
    assert not out.exists()


def test_expected_failures_are_one_line_and_exit_2(dataset, tmp_path, capsys):
    assert train.main(tiny_args(dataset, tmp_path / "run", init_from="resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: init_from='resume' but") and err.count("\n") == 1


def test_logger_and_stop_signal_give_everything_back_when_the_run_fails(tmp_path, monkeypatch):
    finished = []

    class FakeWandb:  # records what the Logger does with its run
        def init(self, **kw):
            return self

        def log(self, *a, **kw):
            pass

        def finish(self):
            finished.append(True)
    monkeypatch.setitem(sys.modules, "wandb", FakeWandb())
    cfg = train.Config(out_dir=str(tmp_path), wandb_log=True)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(OSError):
        with train.StopSignal(), train.Logger(cfg, train.Dist(), 10) as logger:
            assert signal.getsignal(signal.SIGTERM) is not before
            logger.log({"kind": "event", "step": 0})
            raise OSError("disk full")
    assert finished == [True] and signal.getsignal(signal.SIGTERM) is before


def test_accumulated_gradients_equal_the_full_batch_gradients():
    # 4 micro-batches of 2 against 1 of 8: the loss and every gradient are the same (the / accum
    # in train_step; without it the accumulated gradients are 4x too large).
    data = FixedBatch()
    full_loss, full = step_gradients(8, data)
    acc_loss, acc = step_gradients(2, data)
    assert acc_loss == pytest.approx(full_loss, rel=1e-6)
    for n in full:
        torch.testing.assert_close(acc[n], full[n], rtol=1e-5, atol=1e-7, msg=n)


def test_resume_restores_the_rng_that_the_loop_draws_from(dataset, tmp_path, monkeypatch):
    # A component that draws random numbers must continue its stream across a resume: setup()
    # re-seeds for the model init, checkpoint.restore_rng puts the stream back.
    draw_random_numbers_in_the_loss(monkeypatch)
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_inprocess(tiny_args(dataset, full, max_steps=8, ckpt_interval=4))
    run_inprocess(tiny_args(dataset, cut, max_steps=8, ckpt_interval=4))
    shutil.rmtree(cut / "ckpt" / "step_00000008")  # as if stopped after the step-4 checkpoint
    (cut / "ckpt" / "latest").write_text("step_00000004\n")
    run_inprocess(tiny_args(dataset, cut, max_steps=8, ckpt_interval=4, init_from="resume"))
    a, b = losses(full), losses(cut)
    assert a == b  # bitwise, steps 5..8 included


def test_token_loss_reduction_is_the_full_batch_token_mean_across_accumulation():
    # An SFT-like mask: micro-batch 0 keeps 2 tokens, the others most of theirs. 'token' weighs
    # every kept token alike, as one forward over the whole batch does; 'micro_batch' (the
    # default, Megatron's) weighs each micro-batch's mean alike, so it differs here.
    data = FixedBatch(mask=sft_like_mask())
    full_loss, full = step_gradients(8, data)  # one micro-batch: the token mean in both modes
    tok_loss, tok = step_gradients(2, data, loss_reduction="token")
    mb_loss, mb = step_gradients(2, data)
    assert tok_loss == pytest.approx(full_loss, rel=1e-6)
    for n in full:
        torch.testing.assert_close(tok[n], full[n], rtol=1e-5, atol=1e-7, msg=n)
    assert abs(mb_loss - full_loss) > 1e-3  # the test's mask does make the two modes differ
    # Targets < 0 are not counted either (the model's rule).
    data.y[3, :10] = -100
    full_loss, full = step_gradients(8, data)
    tok_loss, tok = step_gradients(2, data, loss_reduction="token")
    assert tok_loss == pytest.approx(full_loss, rel=1e-6)
    torch.testing.assert_close(tok["embed.weight"], full["embed.weight"], rtol=1e-5, atol=1e-7)


def test_token_loss_reduction_is_the_full_batch_token_mean_across_ranks(tmp_path):
    # 2 gloo ranks x 2 micro-batches of 2 (DDP averages the gradients over ranks) against one
    # process with one micro-batch of 8.
    full_loss, full = step_gradients(8, FixedBatch(mask=sft_like_mask()))
    out = tmp_path / "token.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--standalone", os.path.join(ROOT, "tests", "step_harness.py"), str(out),
                        "2", "token"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    loss, grads = torch.load(out)
    assert loss == pytest.approx(full_loss, rel=1e-6)
    for n in full:
        torch.testing.assert_close(grads[n], full[n], rtol=1e-5, atol=1e-7, msg=n)


def _snapshot(out_dir):
    return {p: open(os.path.join(root, p), "rb").read() for root, _, files in os.walk(out_dir) for p in files}


def test_resume_of_a_finished_run_says_nothing_to_do_and_touches_nothing(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=3))
    before = _snapshot(out)
    capsys.readouterr()
    assert train.main(tiny_args(dataset, out, max_steps=3, init_from="resume")) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"[train] {out} is already at step 3 = max_steps: nothing to do (pass a larger "
                       f"--max_steps, e.g. --max_steps=103, to train further)"]
    assert _snapshot(out) == before  # report.md, metrics.jsonl, config.json untouched
    assert train.main(tiny_args(dataset, out, max_steps=2, init_from="resume")) == 2
    assert "past max_steps=2: raise --max_steps above 3" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_a_finished_run_continues_to_a_larger_max_steps_and_marks_the_resumed_window(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=3))
    assert run_inprocess(tiny_args(dataset, out, max_steps=5, init_from="resume"))["step"] == 5
    starts = [(r["step"], r["resumed"]) for r in records(out, "start")]
    assert starts == [(0, False), (3, True)]
    assert sorted(losses(out)) == [1, 2, 3, 4, 5]


def test_first_log_line_comes_after_step_one(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=10, log_interval=5))
    assert sorted(losses(out)) == [1, 5, 10]


def test_a_slow_cpu_run_says_how_long_it_will_take_after_step_one(dataset, tmp_path, capsys, monkeypatch):
    run_inprocess(tiny_args(dataset, tmp_path / "fast", max_steps=2))
    assert "will take about" not in capsys.readouterr().out  # a few seconds: no warning
    monkeypatch.setattr(train, "SLOW_RUN_S", 0.0)  # every run is "long": the line appears once
    run_inprocess(tiny_args(dataset, tmp_path / "slow", max_steps=4))
    lines = [l for l in capsys.readouterr().out.splitlines() if "will take about" in l]
    assert len(lines) == 1 and lines[0].startswith("[train] step 1 took ") and "remaining 3 steps" in lines[0]


def test_save_final_false_writes_no_checkpoint_but_the_metrics(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=4, save_final=False))
    assert not (out / "ckpt").exists() and records(out, "val") and (out / "report.md").exists()
    out2 = tmp_path / "interval"  # ckpt_interval still saves, also at max_steps
    run_inprocess(tiny_args(dataset, out2, max_steps=4, save_final=False, ckpt_interval=2))
    assert (out2 / "ckpt" / "latest").read_text().strip() == "step_00000004"
    with pytest.raises(train.ConfigError, match="save_final"):
        train.load_config(None, tiny_args(dataset, out, save_final=False, eval_tasks={"x": 0}), world_size=1)


def test_val_seed_scores_runs_of_different_seeds_on_the_same_windows(dataset, tmp_path):
    # From one checkpoint at LR 1e-30 (below float32 rounding) the weights stay put, so a run's val loss depends only on
    # which validation windows it scores: val_seed fixes them whatever the seed.
    s1 = tmp_path / "s1"
    run_inprocess(tiny_args(dataset, s1, max_steps=2, eval_steps=1))

    def val(name, **kw):
        out = tmp_path / name
        run_inprocess(tiny_args(dataset, out, init_from=str(s1), load_optimizer=False, start_step=2,
                                max_steps=3, warmup_steps=0, learning_rate=1e-30, min_lr=1e-31,
                                weight_decay=0.0, eval_steps=1, **kw))
        return records(out, "val")[-1]["val_loss"]["plays"]

    assert val("a", seed=2, val_seed=7) == val("b", seed=3, val_seed=7)
    assert val("c", seed=2) != val("d", seed=3)  # by default the seed draws the windows too


def test_fp8_output_trains_with_the_output_layer_in_fp8(dataset, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=6, fp8=True, fp8_emulate=True, fp8_output=True))
    a = losses(out)
    assert all(math.isfinite(v) for v in a.values()) and a[6] < a[1]
    with pytest.raises(train.ConfigError, match="fp8_output=True .* needs fp8=True"):
        train.load_config(None, tiny_args(dataset, out, fp8_output=True), world_size=1)
    with pytest.raises(train.ConfigError, match="needs micro_batch × seq_len to be a multiple of 16"):
        train.load_config(None, tiny_args(dataset, out, fp8=True, fp8_output=True, seq_len=30,
                                          micro_batch=1, global_batch=8), world_size=1)
    with pytest.raises(train.ConfigError, match="needs vocab_size to be a multiple of 16 .*got 50257"):
        train.load_config(None, tiny_args(dataset, out, fp8=True, fp8_output=True,
                                          model_overrides={"vocab_size": 50257}), world_size=1)


def test_compile_mode_reaches_torch_compile_and_cuda_graphs_mark_every_replay(dataset, tmp_path, monkeypatch):
    # aot_eager stands in for inductor (no CUDA graphs on a CPU): what is checked is that the
    # mode reaches torch.compile and that a new replay is marked before every forward
    real_compile, modes, marks = torch.compile, [], []

    def compile_(fn, *args, **kw):
        modes.append(kw.get("mode"))
        return real_compile(fn, backend="aot_eager")
    monkeypatch.setattr(torch, "compile", compile_)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    # the gradients must outlive every replay: allocated once, added to in place, never freed
    real_accumulate, grad_storage = train.accumulate_gradients, []

    def accumulate(run, batches, accum):
        out = real_accumulate(run, batches, accum)
        grad_storage.append([p.grad.data_ptr() for p in run.raw_model.parameters()])
        return out
    monkeypatch.setattr(train, "accumulate_gradients", accumulate)
    out = tmp_path / "graphs"
    try:
        run_inprocess(tiny_args(dataset, out, max_steps=3, compile=True, compile_scope="model",
                                compile_mode="reduce-overhead", eval_interval=3, eval_steps=2))
    finally:
        torch._dynamo.reset()
    # 3 steps x 4 micro-batches, then one evaluation of 2 micro-batches at step 3 (one val set)
    assert modes == ["reduce-overhead"] and len(marks) == 3 * 4 + 2
    assert len(grad_storage) == 3 and grad_storage[0] == grad_storage[1] == grad_storage[2]
    assert all(math.isfinite(v) for v in losses(out).values())
    for bad, message in [(dict(compile_mode="fast"), "compile_mode must be one of"),
                         (dict(compile_mode="reduce-overhead"), "which is off here: set compile=True"),
                         (dict(compile_mode="reduce-overhead", compile=True), "is for one process with compile_scope='model'"),
                         (dict(compile_mode="max-autotune", compile_scope="model", fp8=True, fp8_emulate=True),
                          "without fp8")]:
        with pytest.raises(train.ConfigError, match=message):
            train.load_config(None, tiny_args(dataset, out, **bad), world_size=1)


@pytest.mark.parametrize("scope", ["block", "model"])
def test_compile_scope_compiles_what_it_says_and_trains_the_same(dataset, tmp_path, monkeypatch, scope):
    # aot_eager: the graphs are traced (dynamo + AOTAutograd) but run eagerly, no C++ compiler
    real_compile, compiled = torch.compile, []

    def compile_(fn, *args, **kw):
        compiled.append(type(fn).__name__)
        return real_compile(fn, backend="aot_eager")
    monkeypatch.setattr(torch, "compile", compile_)
    eager, out = tmp_path / "eager", tmp_path / scope
    run_inprocess(tiny_args(dataset, eager, max_steps=3))
    try:
        run_inprocess(tiny_args(dataset, out, max_steps=3, compile=True, compile_scope=scope))
    finally:
        torch._dynamo.reset()
    # model: one call on the whole Xmodel; block: each of the 2 blocks (nn.Module.compile hands
    # torch.compile its bound call) and the loss's chunk loop
    assert compiled == (["Xmodel"] if scope == "model" else ["method", "method", "function"])
    a, b = losses(eager), losses(out)
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)

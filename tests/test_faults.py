"""Fault injection on CPU: a run SIGKILLed at a random step or in the middle of a
checkpoint write, a full disk, SIGINT/SIGTERM inside a step, during its update, in the AdamW ->
Muon switch step or (twice) while saving, a corrupted or truncated shard, ids outside the model's
vocabulary, a missing mixture source, a NaN in a gradient, a loss spike, and configs that cannot
run. Each test injects one fault and checks that nothing was lost: the previous checkpoint loads,
a resume reproduces the uninterrupted run's losses bitwise, or the run stops before any work with
an error naming the culprit and the fix. (SIGTERM to a train.py process, N non-finite steps in a
row, a checkpoint of another model shape and the config checks themselves are in test_train.py /
test_config.py.)"""
import errno
import glob
import json
import math
import os
import random
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
import fp8  # noqa: E402
import prepare  # noqa: E402
import train  # noqa: E402
from tiny_run import draw_random_numbers_in_the_loss, plays, run_inprocess, tiny_args  # noqa: E402

# The reference run every interrupted run is compared with: checkpoints at 4, 8, 12, 16.
RUN = dict(max_steps=16, ckpt_interval=4, eval_interval=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two short plays, a byte-level BPE of 320 ids (as in test_train.py): ~1 s."""
    return plays(tmp_path_factory, "plays", 0, 2)


@pytest.fixture
def own_dataset(dataset, tmp_path):
    """A copy to corrupt."""
    return shutil.copytree(dataset, tmp_path / "plays")


def records(out_dir, kind):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == kind]


def losses(out_dir):
    """step -> train loss; a resumed run appends to the same file, the last record wins."""
    return {r["step"]: r["loss"] for r in records(out_dir, "train")}


def latest(out_dir):
    return (out_dir / "ckpt" / "latest").read_text().strip()


def assert_loadable(out_dir, step):
    """`latest` names a complete step dir: both files load, at the step it claims."""
    assert latest(out_dir) == f"step_{step:08d}"
    assert checkpoint.load_model(str(out_dir)).checkpoint_info["step"] == step
    state = torch.load(out_dir / "ckpt" / f"step_{step:08d}" / "train_state.pt", weights_only=False)
    assert state["step"] == step


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The uninterrupted run: its losses and val losses."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_inprocess(tiny_args(dataset, out, **RUN))
    return losses(out), records(out, "val")


# A subprocess that runs train.py and SIGKILLs itself at a chosen point: a preemption with no
# warning, at a reproducible place (a kill from outside could land after the run had finished).
KILLER = r"""
import io, os, signal, sys
import torch
sys.path.insert(0, os.environ["ROOT"])
import train

kill_step, kill_save = int(os.environ.get("KILL_AT_STEP", "-1")), os.environ.get("KILL_IN_SAVE")
real_batches, real_save = train.micro_batches, torch.save

def micro_batches(mixture, step, *args):
    for i, *batch in real_batches(mixture, step, *args):
        if step == kill_step and i == 1:  # mid-step: one micro-batch's gradients accumulated
            os.kill(os.getpid(), signal.SIGKILL)
        yield (i, *batch)

def save(obj, path, *args, **kw):
    if kill_save and kill_save in str(path) and str(path).endswith("train_state.pt"):
        buf = io.BytesIO()
        real_save(obj, buf)
        with open(path, "wb") as f:  # half of the file on disk, then the kill
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, path, *args, **kw)

train.micro_batches, torch.save = micro_batches, save
sys.exit(train.main(sys.argv[1:]))
"""


def run_killed(args, **env):
    env = {**os.environ, "ROOT": ROOT, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           **{k: str(v) for k, v in env.items()}}
    p = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stdout[-2000:] + p.stderr[-2000:]  # died by SIGKILL
    return p.stdout


# ----------------------------------------------------------------------------- interruptions

def test_sigkill_at_a_random_step_resumes_bitwise_from_the_last_complete_checkpoint(
        dataset, tmp_path, reference):
    kill_at = random.randint(5, 15)  # after the first checkpoint (step 4), before the end
    out = tmp_path / "run"
    run_killed(tiny_args(dataset, out, **RUN), KILL_AT_STEP=kill_at)
    # The kill landed in step kill_at (0-based), after kill_at steps and their checkpoints.
    assert_loadable(out, kill_at // 4 * 4)
    assert not glob.glob(str(out / "ckpt" / ".tmp_*")), f"killed at {kill_at}"
    run_inprocess(tiny_args(dataset, out, init_from="resume", **RUN))
    ref_losses, ref_val = reference
    assert losses(out) == ref_losses, f"killed at step {kill_at}"  # bitwise
    assert records(out, "val")[-1] == ref_val[-1]


def test_sigkill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(
        dataset, tmp_path, reference):
    out = tmp_path / "run"
    run_killed(tiny_args(dataset, out, **RUN), KILL_IN_SAVE=".tmp_step_00000008")
    ckpt = out / "ckpt"
    half = ckpt / ".tmp_step_00000008" / "train_state.pt"
    assert half.exists() and not (ckpt / "step_00000008").exists()  # the torn write stays aside
    assert_loadable(out, 4)
    # Resumed with another ckpt_interval, the run never saves step 8 again: the first save
    # still clears the torn dir (each is a full checkpoint's worth of disk).
    run_inprocess(tiny_args(dataset, out, init_from="resume", **{**RUN, "ckpt_interval": 6}))
    assert losses(out) == reference[0]
    assert not glob.glob(str(ckpt / ".tmp_*"))
    assert_loadable(out, 16)


def test_disk_full_while_saving_is_a_clear_error_and_the_previous_checkpoint_stays(
        dataset, tmp_path, reference, monkeypatch):
    real_save = torch.save

    def save(obj, path, *args, **kw):
        if ".tmp_step_00000008" in str(path) and str(path).endswith("train_state.pt"):
            with open(path, "wb") as f:  # the disk fills part-way through the second file
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kw)
    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"saving checkpoint .*step_00000008 failed \(\[Errno 28\] "
                                           r"No space left on device.*the previous checkpoint is intact"):
        run_inprocess(tiny_args(dataset, out, **RUN))
    ckpt = out / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000004"]  # no partial dir
    assert_loadable(out, 4)
    monkeypatch.setattr(torch, "save", real_save)  # space freed: resume loses nothing
    run_inprocess(tiny_args(dataset, out, init_from="resume", **RUN))
    assert losses(out) == reference[0]


# ----------------------------------------------------------------------------- stop signals

ACCUM = 4  # micro-batches per step in tiny_args (global_batch 8 / micro_batch 2)


def signal_in_forward(monkeypatch, step, sig=signal.SIGINT):
    """Send `sig` to this process once, from the training forward of micro-batch 1 of step
    `step` (0-based): micro-batch 0's gradients are accumulated, the update is not done."""
    real, calls = train.model_lib.Xmodel.forward, []

    def forward(self, *args, **kwargs):
        if self.training:
            calls.append(1)
            if len(calls) == step * ACCUM + 2:
                os.kill(os.getpid(), sig)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(train.model_lib.Xmodel, "forward", forward)


def adamw_steps(out_dir, step):
    """How many updates the AdamW state of checkpoint `step` has seen."""
    state = torch.load(out_dir / "ckpt" / f"step_{step:08d}" / "train_state.pt", weights_only=False)
    return {float(s["step"]) for s in state["optimizers"][0]["state"].values()}


def test_a_sigint_inside_a_step_stops_before_its_update_and_resume_is_exact(
        dataset, tmp_path, monkeypatch, capsys, reference):
    signal_in_forward(monkeypatch, 9)  # during step 10 (1-based)
    out = tmp_path / "run"
    assert run_inprocess(tiny_args(dataset, out, **RUN))["step"] == 9
    assert_loadable(out, 9)
    assert adamw_steps(out, 9) == {9.0} and max(losses(out)) == 9  # step 10's update never ran
    printed = capsys.readouterr().out.splitlines()
    assert ("[train] got SIGINT: stopping now: the unfinished step is discarded, the last completed "
            "one checkpointed (Ctrl-C again aborts now, without a checkpoint)") in printed
    run_inprocess(tiny_args(dataset, out, init_from="resume", **RUN))
    ref_losses, ref_val = reference
    assert losses(out) == ref_losses  # bitwise
    assert records(out, "val")[-1] == ref_val[-1]


def test_a_sigterm_inside_a_step_acts_at_once_and_says_the_partial_step_was_discarded(
        dataset, tmp_path, monkeypatch, capsys):
    signal_in_forward(monkeypatch, 2, signal.SIGTERM)  # preemption: the grace period saves
    real_save = torch.save

    def save(obj, path, *args, **kw):  # SIGTERM again while saving (as sweep.py repeats it)
        if str(path).endswith("train_state.pt"):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(obj, path, *args, **kw)
    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    assert run_inprocess(tiny_args(dataset, out, max_steps=6))["step"] == 2
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("[train] got")] == [
        "[train] got SIGTERM: stopping now: the unfinished step is discarded, the last completed "
        "one checkpointed"]  # one line: the repeated SIGTERM changes nothing
    assert printed[-2:] == [f"step 2: checkpoint {out / 'ckpt' / 'step_00000002'}",
                            "stopped by signal during step 3: that partial step was discarded, the "
                            "checkpoint is step 2; continue with --init_from=resume"]
    assert records(out, "event") == [{"kind": "event", "step": 2, "event": "stopped_by_signal",
                                      "partial_step_discarded": True}]
    assert not (out / "report.md").exists()  # the run is not finished


@pytest.mark.parametrize("reset_adamw", [True, False])
def test_a_sigint_in_the_muon_switch_step_checkpoints_the_switch_and_resume_is_exact(
        dataset, tmp_path, monkeypatch, reset_adamw):
    # The switch is done at the start of step 6, before its micro-batches: the checkpoint of
    # step 5 then holds AdamW+Muon with fresh Muon momentum, which a resume continues from.
    run = dict(max_steps=10, muon_switch_step=5, ckpt_interval=4, muon_reset_adamw_state=reset_adamw)
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_inprocess(tiny_args(dataset, full, **run))
    with monkeypatch.context() as m:
        signal_in_forward(m, 5)
        assert run_inprocess(tiny_args(dataset, cut, **run))["step"] == 5
    state = torch.load(cut / "ckpt" / "step_00000005" / "train_state.pt", weights_only=False)
    assert state["muon_active"] and state["optimizers"][1]["state"] == {}  # switched, no Muon update
    run_inprocess(tiny_args(dataset, cut, init_from="resume", **run))
    assert losses(cut) == losses(full)  # bitwise
    assert [(e["step"], e["event"]) for e in records(cut, "event")] == [(5, "muon_switch"),
                                                                        (5, "stopped_by_signal")]


def test_a_sigint_while_step_1_compiles_stops_at_once(dataset, tmp_path, monkeypatch):
    # torch.compile re-raises an Exception from inside its compiler as its own error; the stop
    # signal's exception must pass through unchanged. aot_eager: no C++ compiler needed.
    real_compile, aot_eager, sent = torch.compile, torch._dynamo.lookup_backend("aot_eager"), []

    def backend(graph, example_inputs):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return aot_eager(graph, example_inputs)
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kw: real_compile(fn, backend=backend))
    out = tmp_path / "run"
    try:
        assert run_inprocess(tiny_args(dataset, out, max_steps=4, compile=True))["step"] == 0
    finally:
        torch._dynamo.reset()  # no half-compiled graphs for the tests after this one
    assert sent and records(out, "event")[-1]["partial_step_discarded"] is True
    assert_loadable(out, 0)


def test_a_dropped_step_gives_back_the_random_numbers_it_drew(dataset, tmp_path, monkeypatch):
    # The forward has drawn for micro-batch 0 when the signal drops the step.
    draw_random_numbers_in_the_loss(monkeypatch)
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_inprocess(tiny_args(dataset, full, max_steps=6))
    with monkeypatch.context() as m:
        signal_in_forward(m, 3)
        assert run_inprocess(tiny_args(dataset, cut, max_steps=6))["step"] == 3
    run_inprocess(tiny_args(dataset, cut, max_steps=6, init_from="resume"))
    assert losses(cut) == losses(full)  # bitwise


def test_a_sigint_during_the_update_lets_it_finish_and_drops_the_next_step(
        dataset, tmp_path, monkeypatch, capsys, reference):
    real, calls = train.Optimizers.step, []

    def step(self):  # the signal lands after the step's stop vote, before its update
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)
        real(self)
    monkeypatch.setattr(train.Optimizers, "step", step)
    out = tmp_path / "run"
    assert run_inprocess(tiny_args(dataset, out, **RUN))["step"] == 7
    assert adamw_steps(out, 7) == {7.0} and len(calls) == 7  # step 7 updated, step 8 dropped
    assert ("[train] got SIGINT: checkpointing after this step (Ctrl-C again aborts now, without a "
            "checkpoint)") in capsys.readouterr().out.splitlines()
    monkeypatch.undo()
    run_inprocess(tiny_args(dataset, out, init_from="resume", **RUN))
    assert losses(out) == reference[0]


def test_an_fp8_step_is_never_dropped_it_finishes_then_stops(dataset, tmp_path, monkeypatch, capsys):
    # FP8's amax histories move in every forward: a dropped step would leave them ahead.
    signal_in_forward(monkeypatch, 2)
    out = tmp_path / "run"
    assert run_inprocess(tiny_args(dataset, out, max_steps=6, fp8=True, fp8_emulate=True))["step"] == 3
    assert adamw_steps(out, 3) == {3.0}
    assert "[train] got SIGINT: checkpointing after this step" in capsys.readouterr().out
    assert records(out, "event")[-1]["partial_step_discarded"] is False


def test_a_second_sigint_while_saving_aborts_in_one_line_and_keeps_the_previous_checkpoint(
        dataset, tmp_path, monkeypatch, capsys, reference):
    signal_in_forward(monkeypatch, 6)  # the first: step 7 dropped, step 6 being saved ...
    real_save = torch.save

    def save(obj, path, *args, **kw):
        if ".tmp_step_00000006" in str(path) and str(path).endswith("train_state.pt"):
            os.kill(os.getpid(), signal.SIGINT)  # ... when the second comes
        return real_save(obj, path, *args, **kw)
    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    assert train.main(tiny_args(dataset, out, **RUN)) == 130
    assert capsys.readouterr().err == ("[train] aborted by a second SIGINT: nothing saved since the "
                                       "last checkpoint\n")
    assert_loadable(out, 4)
    monkeypatch.undo()
    run_inprocess(tiny_args(dataset, out, init_from="resume", **RUN))
    assert losses(out) == reference[0]
    assert not glob.glob(str(out / "ckpt" / ".tmp_*"))


# ----------------------------------------------------------------------------- bad data

def test_truncated_shard_stops_before_training_naming_shard_and_fix(own_dataset, tmp_path):
    shard = own_dataset / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    out = tmp_path / "run"
    with pytest.raises(prepare.PrepareError, match=r"train_000000\.bin has .* bytes.*truncated or "
                                                   r"corrupt.*re-run prepare\.py"):
        run_inprocess(tiny_args(dataset=str(own_dataset), out_dir=out))
    assert not (out / "ckpt").exists() and not (out / "metrics.jsonl").exists()


def test_shard_corrupted_in_place_is_caught_by_verify_and_by_the_reader(own_dataset, tmp_path, capsys):
    meta = json.loads((own_dataset / "meta.json").read_text())
    for s in meta["splits"]["train"]["shards"]:  # same size: only sha256 or the ids show it
        path = own_dataset / s["file"]
        path.write_bytes(b"\xff" * path.stat().st_size)
    assert prepare.main(["--verify", str(own_dataset)]) == 1
    assert re.search(r"train_000000\.bin fails its sha256 check.*re-run prepare\.py",
                     capsys.readouterr().err)
    with pytest.raises(prepare.PrepareError, match=r"train_000000\.bin fails its sha256"):
        prepare.Mixture({str(own_dataset): 1.0}, "train", 32, 0, verify="full")
    # train.py checks sizes only (hashing terabytes at every start is too slow); the reader
    # stops at the first corrupt id, before the embedding sees it, naming shard and command.
    out = tmp_path / "run"
    with pytest.raises(prepare.PrepareError, match=r"train_000000\.bin holds token id 65535 >= "
                                                   r"vocab_size 320.*python prepare\.py --verify"):
        run_inprocess(tiny_args(str(own_dataset), out))
    assert not (out / "ckpt").exists() and records(out, "train") == []


def test_token_ids_beyond_the_model_vocabulary_stop_before_training(dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(prepare.PrepareError, match=r"has 320 ids but the model's vocab_size is 256: "
                                                   r"set vocab_size >= 320"):
        run_inprocess(tiny_args(dataset, out, model_overrides={"vocab_size": 256}))
    assert not (out / "ckpt").exists() and not (out / "metrics.jsonl").exists()


def test_data_from_another_tokenizer_than_the_checkpoint_stops_before_training(
        dataset, tmp_path, tmp_path_factory):
    other = plays(tmp_path_factory, "other_plays", 2, 2)  # same vocab size, other merges
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    run_inprocess(tiny_args(dataset, s1, max_steps=2))
    with pytest.raises(prepare.PrepareError, match=r"tokenizer mismatch.*--tokenizer <checkpoint dir>"):
        run_inprocess(tiny_args(other, s2, init_from=str(s1), start_step=2, max_steps=4))
    assert not (s2 / "ckpt").exists() and not (s2 / "metrics.jsonl").exists()


@pytest.mark.parametrize("key", ["data", "val_data"])
def test_missing_mixture_source_names_the_path_and_the_prepare_command(dataset, tmp_path, key):
    missing = str(tmp_path / "web")
    out = tmp_path / "run"
    mix = {dataset: 1.0, missing: 0.5} if key == "data" else {missing: 1.0}
    with pytest.raises(prepare.PrepareError, match=re.escape(
            f"{missing} does not exist; build it with `python prepare.py --input FILES... --out {missing}`")):
        run_inprocess(tiny_args(dataset, out, **{key: mix}))
    assert not (out / "ckpt").exists()


# ----------------------------------------------------------------------------- numerics

def poison_gradients(monkeypatch, when):
    """NaN into one real gradient entry at the optimizer steps (1-based calls) `when` picks."""
    real = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip(params, max_norm):
        calls.append(1)
        if when(len(calls)):
            with torch.no_grad():
                params[0].grad.view(-1)[0] = float("nan")
        return real(params, max_norm)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)


def test_a_single_nan_gradient_skips_one_update_and_training_goes_on(dataset, tmp_path, monkeypatch):
    poison_gradients(monkeypatch, lambda call: call == 3)
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=12))
    assert [r["step"] for r in records(out, "nonfinite")] == [2]
    assert all(math.isfinite(v) for v in losses(out).values()) and len(losses(out)) == 12
    # The NaN reached neither the weights nor the optimizer: 11 AdamW updates, finite moments.
    state = torch.load(out / "ckpt" / "step_00000012" / "train_state.pt", weights_only=False)
    adamw = state["optimizers"][0]["state"]
    assert {float(s["step"]) for s in adamw.values()} == {11.0}
    assert all(torch.isfinite(s["exp_avg"]).all() and torch.isfinite(s["exp_avg_sq"]).all()
               for s in adamw.values())
    assert all(torch.isfinite(v).all() for v in checkpoint.load_model(str(out)).state_dict().values())
    assert "| skipped (non-finite) updates | 1 |" in (out / "report.md").read_text()


def test_nonfinite_reloads_resume_from_the_last_checkpoint_and_lose_nothing(
        dataset, tmp_path, monkeypatch, reference):
    """A transient fault: steps 9-11 go NaN once; after 3 in a row the run reloads step 8."""
    poison_gradients(monkeypatch, lambda call: call in (10, 11, 12))
    out = tmp_path / "run"
    result = run_inprocess(tiny_args(dataset, out, max_nonfinite_in_a_row=3, nonfinite_reloads=1, **RUN))
    assert result["step"] == 16
    assert [r["step"] for r in records(out, "nonfinite")] == [9, 10, 11]
    assert [r["step"] for r in records(out, "start")] == [0, 8]  # the reload resumed step 8
    assert losses(out) == reference[0]  # bitwise the uninterrupted run


def test_nonfinite_reloads_run_out_when_the_nan_comes_back(dataset, tmp_path, monkeypatch):
    poison_gradients(monkeypatch, lambda call: call >= 10)  # reproducible: the data or the weights
    out = tmp_path / "run"
    with pytest.raises(train.NonFiniteError, match=r"3 non-finite steps in a row at step 10: stopping"):
        run_inprocess(tiny_args(dataset, out, max_nonfinite_in_a_row=3, nonfinite_reloads=1, **RUN))
    assert [r["step"] for r in records(out, "nonfinite")] == [9, 10, 11, 8, 9, 10]
    assert_loadable(out, 8)


def test_loss_spike_is_logged_with_step_and_data_position(dataset, tmp_path, monkeypatch):
    spike_step, seen = 23, {}  # spikes are judged against >= 20 recent losses
    real_batches, real_forward = train.micro_batches, train.model_lib.Xmodel.forward

    def batches(mixture, step, *args):
        for i, x, y, mask in real_batches(mixture, step, *args):
            seen["step"] = step
            if step == spike_step:
                seen.setdefault("x", []).append(x)
            yield i, x, y, mask

    def forward(self, *args, **kw):  # a bad batch: 10x the loss at one step
        loss = real_forward(self, *args, **kw)
        return loss * 10 if self.training and seen.get("step") == spike_step else loss
    monkeypatch.setattr(train, "micro_batches", batches)
    monkeypatch.setattr(train.model_lib.Xmodel, "forward", forward)
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=26, seed=5))
    spikes = records(out, "spike")
    assert [r["step"] for r in spikes] == [spike_step]
    assert spikes[0]["data_position"] == {"step": spike_step, "seed": 5}
    assert all(math.isfinite(v) for v in losses(out).values())  # and training went on
    # The position is enough to fetch the very batches again for inspection.
    mixture = prepare.Mixture({dataset: 1.0}, "train", 32, spikes[0]["data_position"]["seed"])
    again = [mixture.get_batch(spike_step, 0, i, 2)[0] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(again, seen["x"]))


# ----------------------------------------------------------------------------- configs that cannot run

def test_impossible_configs_stop_before_any_work(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_args(dataset, out, start_step=20, max_steps=10, global_batch=12,
                                micro_batch=8, seq_len=128, max_seq_len=64)) == 2
    err = capsys.readouterr().err
    for message in (r"start_step \(20\) must be < max_steps \(10\)",
                    r"global_batch = 12 is not divisible by micro_batch x world_size",
                    r"seq_len \(128\) exceeds max_seq_len \(64\)"):
        assert re.search(message, err), err
    assert not out.exists()


def test_fp8_on_cpu_without_emulation_stops_before_any_work(dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(fp8.FP8UnsupportedError, match=r"(?s)device is 'cpu'.*Set fp8=False"):
        run_inprocess(tiny_args(dataset, out, fp8=True))
    assert not out.exists()  # no config.json, no checkpoint: failed before the data and the model


def test_a_failed_run_gives_the_signal_handlers_back(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    cfg = train.load_config(overrides=[f"--out_dir={tmp_path / 'run'}",
                                       f"--data={{'{tmp_path / 'missing'}': 1.0}}"])
    with pytest.raises(Exception, match="missing"):
        train.train(cfg)  # fails opening the data, after its SIGTERM/SIGINT handlers went in
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_missing_previous_phase_names_the_config_to_run_first_and_writes_nothing(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_args(dataset, out, init_from="out/stable_s2", start_step=2, max_steps=4)
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err == ("error: init_from='out/stable_s2': no checkpoint there (no model.pt, ckpt/latest or "
                   "latest): run config/stable_s2.py first, or set init_from to an existing checkpoint\n")
    assert not out.exists()


def test_a_second_run_into_a_finished_out_dir_says_how_to_continue_or_start_anew(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=2))
    before = sorted(os.listdir(out)), (out / "config.json").read_text()
    assert train.main(tiny_args(dataset, out, max_steps=4, learning_rate=5e-3)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init_from=resume" in err and "--max_steps" in err and "--out_dir=" in err
    assert (sorted(os.listdir(out)), (out / "config.json").read_text()) == before

"""checkpoint.py: where checkpoints are, model.pt for the readers, the atomic save with
`latest` and keep_last, starting a phase from a checkpoint. (Whole runs that save, get killed
and resume are in test_train.py and test_faults.py.)"""
import dataclasses
import os
import random

import numpy as np
import pytest
import torch

import checkpoint
import prepare
import train
from model import Xmodel, model_config


def tiny(**overrides):
    torch.manual_seed(0)
    return Xmodel(model_config("tiny", **overrides))


def tokens(batch, length, vocab=512, seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A dataset-like folder holding a tokenizer.json (a 300-id byte-level BPE)."""
    folder = tmp_path_factory.mktemp("tok")
    tok = prepare.train_bpe(["To be, or not to be, that is the question. " * 20], 300)
    tok.save(folder)
    return folder, tok


def test_load_model_reads_run_dir_step_dir_and_model_file(tmp_path):
    model = tiny()
    step_dir = tmp_path / "run" / "ckpt" / "step_00000010"
    step_dir.mkdir(parents=True)
    torch.save({"model_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                "tokenizer": {"kind": "hf", "vocab_size": 512}, "step": 10, "config": {}},
               step_dir / "model.pt")
    (tmp_path / "run" / "ckpt" / "latest").write_text("step_00000010\n")
    x = tokens(1, 8)
    with torch.no_grad():
        expected = model(x)
        for path in (tmp_path / "run", step_dir, step_dir / "model.pt"):
            loaded = checkpoint.load_model(str(path))
            assert loaded.config == model.config and loaded.checkpoint_info["step"] == 10
            torch.testing.assert_close(loaded(x), expected)
            assert checkpoint.model_file(str(path)) == str(step_dir / "model.pt")
            assert checkpoint.step_dir(str(path)) == str(step_dir)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_model(str(tmp_path))


def test_start_dir_is_found_or_refused_before_any_work(tmp_path):
    cfg = train.Config(out_dir=str(tmp_path / "run"))
    assert checkpoint.start_dir(cfg) is None
    with pytest.raises(checkpoint.CheckpointError, match="nothing to resume"):
        checkpoint.start_dir(dataclasses.replace(cfg, init_from="resume"))
    step = tmp_path / "run" / "ckpt" / "step_00000004"
    step.mkdir(parents=True)
    (step / "model.pt").write_bytes(b"")
    (tmp_path / "run" / "ckpt" / "latest").write_text("step_00000004\n")
    with pytest.raises(checkpoint.CheckpointError, match="--init_from=resume"):
        checkpoint.start_dir(cfg)  # from scratch into a run dir with checkpoints
    assert checkpoint.start_dir(dataclasses.replace(cfg, init_from="resume")) == str(step)
    other = dataclasses.replace(cfg, out_dir=str(tmp_path / "next"), init_from=str(tmp_path / "run"))
    assert checkpoint.start_dir(other) == str(step)


def test_load_weights_names_every_tensor_that_does_not_fit():
    model, sd = tiny(), tiny(d_ffn=192).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["norm.weight"]
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load_weights(model, sd, "ckpt/step_1")
    msg = str(e.value)
    assert "missing: norm.weight" in msg and "unexpected: extra.weight" in msg
    assert "blocks.0.mlp.gate_up.weight: checkpoint (384, 64) vs model (320, 64)" in msg


def _saver(tmp_path, tokenizer_dir, keep_last=2):
    cfg = train.Config(out_dir=str(tmp_path / "run"), keep_last=keep_last,
                       data={str(tokenizer_dir): 1.0})
    model = tiny()
    return cfg, model, train.Optimizers(model, cfg, torch.device("cpu"), muon_active=False)


def test_save_writes_complete_step_dirs_moves_latest_and_keeps_the_last_n(tmp_path, tokenizer_dir):
    folder, tok = tokenizer_dir
    cfg, model, opt = _saver(tmp_path, folder)
    ckpt = tmp_path / "run" / "ckpt"
    for step in (1, 2, 3):
        path = checkpoint.save(cfg, step, model, model, opt, train.Dist(), False, tok.meta())
        assert path == str(ckpt / f"step_{step:08d}")
        assert (ckpt / "latest").read_text() == f"step_{step:08d}\n"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert {p.name for p in (ckpt / "step_00000003").iterdir()} == {"model.pt", "train_state.pt", "tokenizer.json"}
    state = torch.load(ckpt / "step_00000003" / "train_state.pt", weights_only=False)
    assert state["step"] == 3 and state["muon_active"] is False and len(state["optimizers"]) == 1
    assert state["data_position"] == {"step": 3, "seed": cfg.seed} and state["world_size"] == 1
    # Leftovers of killed saves go at the next save; re-saving a step replaces it whole.
    (ckpt / ".tmp_step_00000009").mkdir()
    (ckpt / ".step_00000003.old-12345").mkdir()
    with torch.no_grad():
        model.norm.weight.fill_(2.0)
    checkpoint.save(cfg, 3, model, model, opt, train.Dist(), False, tok.meta())
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert (checkpoint.load_model(str(tmp_path / "run")).norm.weight == 2.0).all()


def test_load_start_resumes_or_chains_and_checks_the_parallel_mode(tmp_path, tokenizer_dir, capsys):
    folder, tok = tokenizer_dir
    cfg, model, opt = _saver(tmp_path, folder)
    checkpoint.save(cfg, 7, model, model, opt, train.Dist(), False, tok.meta())
    step_dir = checkpoint.step_dir(str(tmp_path / "run"))
    fresh = tiny(vocab_size=512)
    resume = dataclasses.replace(cfg, init_from="resume", learning_rate=2e-2)
    step, state = checkpoint.load_start(step_dir, fresh, resume, tok.meta(), False, True)
    assert step == 7 and state["step"] == 7
    out = capsys.readouterr().out
    assert "changed settings (checkpoint -> now): {'learning_rate': (0.01, 0.02)}" in out
    assert "model's settings differ" not in out
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    # same weights, other model settings (a default that changed since): loaded, and said
    checkpoint.load_start(step_dir, tiny(vocab_size=512, residual_in_compute_dtype=False), resume,
                          tok.meta(), False, True)
    assert ("the model's settings differ from " + step_dir + "'s (checkpoint -> now): "
            "{'residual_in_compute_dtype': (True, False)}") in capsys.readouterr().out
    chain = dataclasses.replace(cfg, out_dir=str(tmp_path / "next"), init_from=step_dir, start_step=7)
    assert checkpoint.load_start(step_dir, tiny(), chain, tok.meta(), False, True) == (7, None)
    with pytest.raises(checkpoint.CheckpointError, match="holds single/DDP optimizer state but this run is FSDP"):
        checkpoint.load_start(step_dir, tiny(), resume, tok.meta(), True, True)
    other = dict(tok.meta(), sha256="0" * 64, name="other")
    with pytest.raises(prepare.PrepareError, match="tokenizer mismatch"):
        checkpoint.load_start(step_dir, tiny(), chain, other, False, True)


def test_optimizer_state_from_another_optimizer_count_is_refused(tmp_path, tokenizer_dir):
    folder, tok = tokenizer_dir
    cfg, model, opt = _saver(tmp_path, folder)
    checkpoint.save(cfg, 1, model, model, opt, train.Dist(), False, tok.meta())
    step_dir = checkpoint.step_dir(cfg.out_dir)
    state = torch.load(os.path.join(step_dir, "train_state.pt"), weights_only=False)
    with_muon = train.Optimizers(model, cfg, torch.device("cpu"), muon_active=True)
    with pytest.raises(checkpoint.CheckpointError, match="has 1 optimizer"):
        checkpoint.load_optimizer_state(step_dir, model, with_muon, state, False)


def test_write_model_is_read_back_with_its_tokenizer(tmp_path, tokenizer_dir):
    folder, tok = tokenizer_dir
    model = tiny(vocab_size=320).eval()
    path = checkpoint.write_model(model, tmp_path / "imported", tok.meta(), 5, {"imported_from": "x"},
                                  folder / "tokenizer.json")
    assert path == tmp_path / "imported" / "model.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt", "tokenizer.json"]  # no temp files
    loaded, tok2, model_pt = checkpoint.load_model_and_tokenizer(tmp_path / "imported")
    assert model_pt == path and loaded.checkpoint_info["step"] == 5 and not loaded.training
    assert tok2.encode("To be, or not") == tok.encode("To be, or not")
    x = tokens(1, 8, vocab=320)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert checkpoint.write_model(model, tmp_path / "one.pt") == tmp_path / "one.pt"
    assert checkpoint.load_model(tmp_path / "one.pt").checkpoint_info["step"] == 0


def test_rng_state_round_trips_python_numpy_and_torch():
    state = checkpoint.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a

"""mup.py: the µP rules of RECIPE §1 (multipliers, init, LR groups) and the coordinate check
that shows them working: activations flat in width under µP, growing under SP."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mup
from model import ModelConfig, Xmodel, model_config

ROOT = Path(__file__).resolve().parents[1]


def test_multipliers_are_the_recipe_values_for_the_full_model():
    m = mup.multipliers(model_config("xmodel-2.5"))
    assert m["input_scale"] == 12.0
    assert m["output_mult"] == pytest.approx(1 / 6)             # output_scale / (1536/256)
    assert m["residual_mult"] == pytest.approx(1.4 / math.sqrt(48))
    assert m["attn_scale"] == pytest.approx(1 / 64)             # 1/head_dim, not 1/8


def test_sp_switches_every_multiplier_off():
    m = mup.multipliers(model_config("xmodel-2.5", mup=False))
    assert m == {"input_scale": 1.0, "output_mult": 1.0, "residual_mult": 1.0,
                 "attn_scale": pytest.approx(1 / 8)}


def test_init_stds_scale_input_side_with_width_and_output_side_with_depth():
    cfg = model_config("xmodel-2.5")
    assert mup.init_std(cfg, "embedding") == 0.1
    assert mup.init_std(cfg, "qkv") == mup.init_std(cfg, "gate_up") == pytest.approx(0.1 / math.sqrt(6))
    assert mup.init_std(cfg, "out") == mup.init_std(cfg, "down") == pytest.approx(0.1 / math.sqrt(96))
    assert mup.init_std(cfg, "norm") == 1.0
    sp = model_config("xmodel-2.5", mup=False)
    assert mup.init_std(sp, "qkv") == 0.02 and mup.init_std(sp, "down") == pytest.approx(0.02 / math.sqrt(96))


def test_param_groups_carry_recipe_lr_multipliers_and_weight_decay():
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5"))
    groups = {g["role"]: g for g in mup.param_groups(model, weight_decay=0.1)}
    assert set(groups) == {"embedding", "matrix", "norm"}
    assert groups["embedding"]["names"] == ["embed.weight"]
    assert (groups["embedding"]["lr_mult"], groups["embedding"]["weight_decay"]) == (1.0, 0.1)
    # RECIPE §1: hidden matrices AND norms at base/width_mult; no decay on norms only.
    assert groups["matrix"]["lr_mult"] == pytest.approx(1 / 6) and groups["matrix"]["weight_decay"] == 0.1
    assert groups["norm"]["lr_mult"] == pytest.approx(1 / 6) and groups["norm"]["weight_decay"] == 0.0
    assert len(groups["matrix"]["names"]) == 48 * 4 and len(groups["norm"]["names"]) == 48 * 2 + 1
    # every parameter exactly once (the tied output layer is the embedding)
    listed = [p for g in groups.values() for p in g["params"]]
    assert len({id(p) for p in listed}) == len(listed) == len(list(model.parameters()))
    with torch.device("meta"):
        sp = Xmodel(model_config("xmodel-2.5", mup=False))
    assert all(g["lr_mult"] == 1.0 for g in mup.param_groups(sp, 0.1))


def test_untied_lm_head_gets_the_embedding_lr_and_weight_decay():
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5", tie_embeddings=False))
    groups = {g["role"]: g for g in mup.param_groups(model, weight_decay=0.1)}
    # µP readout with logits x 1/width_mult: vector-like, base LR (see mup.param_role)
    assert groups["embedding"]["names"] == ["embed.weight", "lm_head.weight"]
    assert (groups["embedding"]["lr_mult"], groups["embedding"]["weight_decay"]) == (1.0, 0.1)
    listed = [p for g in groups.values() for p in g["params"]]
    assert len({id(p) for p in listed}) == len(listed) == len(list(model.parameters()))
    assert mup.param_role("_orig_mod.lm_head.weight", torch.empty(4, 4)) == "embedding"


def test_param_role_sees_through_wrapper_prefixes():
    w2, w1 = torch.empty(4, 4), torch.empty(4)
    assert mup.param_role("_orig_mod.embed.weight", w2) == "embedding"
    assert mup.param_role("module.blocks.0.attn.qkv.weight", w2) == "matrix"
    assert mup.param_role("_orig_mod.blocks.0.attn_norm.weight", w1) == "norm"


# Coordinate check, calibrated on real runs (Shakespeare bytes, 2 layers, 6 steps of AdamW at
# base LR 3e-3, widths 64..512 = 8x). Measured max/min across width at the last step —
# µP: embedding 1.02, attn_out 1.63, mlp_out 1.58, logits 1.29;
# SP: embedding 1.14, attn_out 34, mlp_out 242, logits 4.0. Breaking µP fails the bound:
# hidden LR not divided by width_mult -> attn_out 7.3, mlp_out 8.5; no 1/width_mult on the
# logits -> logits 3.1.
MUP_BOUND = 2.0      # µP: every layer type within 2x across an 8x width range
SP_MIN_GROWTH = 8.0  # SP: the hidden branch outputs grow by far more


def coord_check_models(mup_on):
    return lambda width: Xmodel(ModelConfig(**mup.coord_check_shape(width, 256, mup=mup_on)))


def test_coord_check_mup_is_flat_in_width_and_sp_is_not():
    batches = mup.shakespeare_byte_batches(seq_len=64, batch_size=8, steps=6)
    kw = dict(widths=(64, 128, 256, 512), steps=6, lr=3e-3)
    spread_mup = mup.width_spread(mup.coord_check(coord_check_models(True), batches, **kw))
    spread_sp = mup.width_spread(mup.coord_check(coord_check_models(False), batches, **kw))
    assert max(spread_mup.values()) < MUP_BOUND, spread_mup
    assert min(spread_sp["attn_out"], spread_sp["mlp_out"]) > SP_MIN_GROWTH, spread_sp


def test_coord_check_cli_prints_a_table_and_writes_a_png(tmp_path):
    png = tmp_path / "cc.png"
    out = subprocess.run([sys.executable, str(ROOT / "mup.py"), "coord_check", "--widths", "32,64",
                          "--steps", "2", "--data", "bytes", "--out", str(png)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "logits" in out and "max/min" in out
    assert png.stat().st_size > 10_000


def test_coord_check_summary_shows_the_init_spread_at_step_0_and_the_last_step_spread():
    # The recipe's width-independent out/down init makes attn_out/mlp_out at step 0 grow like
    # sqrt(width) (RECIPE §1): ~2x across 32 -> 128. A summary of the last step alone hid it.
    widths = (32, 128)
    batches = mup.shakespeare_byte_batches(seq_len=32, batch_size=4, steps=3)
    res = mup.coord_check(coord_check_models(True), batches, widths=widths, steps=3, lr=3e-3)
    text = mup.coord_check_summary(res, widths)
    first, last = mup.width_spread(res, 0), mup.width_spread(res, -1)
    assert first["attn_out"] > 1.5 and first["mlp_out"] > 1.5, first
    for step, spread in ((0, first), (2, last)):
        line = next(l for l in text.splitlines() if l.startswith(f"max/min across widths at step {step}:"))
        assert line.endswith(" ".join(f"{t}={v:.2f}" for t, v in spread.items())), line
    rows0 = text.split("step 0 (")[1].split("step 2 (")[0].splitlines()
    assert f"{res['attn_out'][1][0]:10.4f}" in next(r for r in rows0 if r.split()[:1] == ["128"])
    assert "sqrt(128/32) = 2.00x" in text


def test_coord_check_cli_prints_both_steps_and_writes_its_png_under_out(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "mup.py"), "coord_check", "--widths", "32,64",
                          "--steps", "2", "--data", "bytes"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "max/min across widths at step 0:" in out and "max/min across widths at step 1:" in out
    assert (tmp_path / "out" / "coord_check_mup.png").stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing in the working folder itself

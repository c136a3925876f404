"""schedule.py: LR and batch as functions of the global step, checked against closed forms."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from schedule import WSD, batch_at  # noqa: E402

# A phase that does not start at 0, so global-vs-local step mistakes show up.
PHASE = dict(learning_rate=1e-2, start_step=1000, max_steps=2000, warmup_steps=200,
             warmup_init_lr=1e-4, decay_start_step=1500, decay_steps=400, min_lr=1e-3)
# RECIPE §3 decay phase: restart at 6.25e-4, 500 steps linear from 1e-6, linear to 1e-5 over 10k.
DECAY = dict(learning_rate=6.25e-4, start_step=530_000, max_steps=550_000, warmup_steps=500,
             warmup_init_lr=1e-6, decay_start_step=530_500, decay_steps=10_000, min_lr=1e-5,
             decay_shape="linear")


def lr_at(step, **kw):
    return WSD(**kw).lr_at(step)


def closed_form(step, shape, learning_rate, start_step, max_steps, warmup_steps, warmup_init_lr,
                decay_start_step, decay_steps, min_lr, decay_shape=None):
    peak_lr = learning_rate
    if step < start_step + warmup_steps:
        return warmup_init_lr + (peak_lr - warmup_init_lr) * (step - start_step) / warmup_steps
    if step < decay_start_step:
        return peak_lr
    p = min(1.0, (step - decay_start_step) / decay_steps)
    f = min_lr / peak_lr
    return peak_lr * {"linear": f + (1 - f) * (1 - p),
                      "cosine": f + (1 - f) * (1 + math.cos(math.pi * p)) / 2,
                      "1-sqrt": f + (1 - f) * (1 - math.sqrt(p)),
                      "exponential": f ** p}[shape]


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt", "exponential"])
def test_lr_matches_closed_form_at_and_around_every_boundary(shape):
    s = PHASE
    warm_end, dec_start, dec_end = 1200, s["decay_start_step"], 1900
    steps = {1000, 1001, 1100, 1199, 1200, 1201, 1499, 1500, 1501, 1600, 1700, 1899, 1900, 1901, 5000}
    for step in sorted(steps):
        got = lr_at(step, **s, decay_shape=shape)
        assert got == pytest.approx(closed_form(step, shape, **s), rel=1e-12, abs=0), (shape, step)
    kw = dict(**s, decay_shape=shape)
    assert lr_at(1000, **kw) == s["warmup_init_lr"]          # warmup starts at warmup_init_lr
    assert lr_at(warm_end, **kw) == s["learning_rate"]       # peak exactly at warmup end
    assert lr_at(dec_start - 1, **kw) == s["learning_rate"]  # still constant before the decay
    assert lr_at(dec_start, **kw) == pytest.approx(s["learning_rate"])
    assert lr_at(dec_end, **kw) == s["min_lr"]               # floor reached, then held
    assert lr_at(10**7, **kw) == s["min_lr"]


def test_decay_shapes_differ_at_midpoint_as_expected():
    mid = {sh: lr_at(1700, **PHASE, decay_shape=sh) for sh in ["linear", "cosine", "1-sqrt", "exponential"]}
    f = PHASE["min_lr"] / PHASE["learning_rate"]
    assert mid["linear"] == pytest.approx(mid["cosine"])     # cosine crosses linear at p = 1/2
    assert mid["1-sqrt"] < mid["linear"]                     # 1-sqrt drops faster early
    assert mid["exponential"] == pytest.approx(PHASE["learning_rate"] * math.sqrt(f))  # geometric mean
    q = {sh: lr_at(1600, **PHASE, decay_shape=sh) for sh in mid}  # p = 1/4
    assert q["cosine"] > q["linear"] > q["1-sqrt"]


def test_recipe_decay_phase_numbers():
    assert lr_at(530_000, **DECAY) == 1e-6
    assert lr_at(530_250, **DECAY) == pytest.approx(1e-6 + (6.25e-4 - 1e-6) / 2)
    assert lr_at(530_500, **DECAY) == 6.25e-4
    assert lr_at(535_500, **DECAY) == pytest.approx((6.25e-4 + 1e-5) / 2)
    assert lr_at(540_499, **DECAY) == pytest.approx(1e-5 + (6.25e-4 - 1e-5) / 10_000)
    assert lr_at(540_500, **DECAY) == 1e-5
    assert lr_at(549_999, **DECAY) == 1e-5
    # hidden matrices run at base / width_mult (RECIPE §1/§3): 6.25e-4 / 6 = 1.041667e-4
    assert lr_at(530_500, **DECAY) / 6 == pytest.approx(1.041667e-4, rel=1e-6)


def test_no_warmup_and_no_decay_phase_is_constant():
    kw = dict(learning_rate=1e-5, start_step=550_000, max_steps=560_000, warmup_steps=0,
              warmup_init_lr=0.0, decay_start_step=553_000, decay_steps=0, min_lr=1e-5)
    assert [lr_at(s, **kw) for s in (550_000, 551_000, 552_999, 553_000, 600_000)] == [1e-5] * 5


@pytest.mark.parametrize("change, message", [
    (dict(decay_start_step=1100), "before the end of warmup"),
    (dict(min_lr=2e-2), "min_lr"),
    (dict(warmup_init_lr=-1.0), "warmup_init_lr"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(decay_shape="step"), "decay_shape"),
    (dict(decay_shape="exponential", min_lr=0.0), "exponential"),
    (dict(warmup_steps=-5), "warmup_steps"),
    (dict(decay_steps=1.5), "decay_steps"),
    (dict(max_steps=1800), r"the decay ends at decay_start_step \+ decay_steps = 1900, after max_steps"),
])
def test_schedule_lists_inconsistent_arguments(change, message):
    assert WSD(**PHASE).problems() == []
    problems = WSD(**{**PHASE, **change}).problems()
    assert any(re.search(message, p) for p in problems), problems


def test_every_problem_is_listed_at_once():
    problems = WSD(**{**PHASE, "min_lr": 2e-2, "decay_shape": "step", "warmup_steps": 2000}).problems()
    assert len(problems) == 4, problems  # min_lr, decay_shape, warmup past max_steps, decay in warmup


def test_segments_name_the_part_of_the_phase():
    wsd = WSD(**PHASE)
    assert [wsd.segment(s) for s in (1000, 1199, 1200, 1499, 1500, 1899, 1900, 1999)] == \
        ["warmup", "warmup", "stable", "stable", "decay", "decay", "min_lr", "min_lr"]
    no_decay = WSD(**{**PHASE, "decay_start_step": None, "decay_steps": 0})
    assert [no_decay.segment(s) for s in (1000, 1200, 1999)] == ["warmup", "stable", "stable"]
    assert no_decay.lr_at(1999) == PHASE["learning_rate"]


def test_a_group_curve_shares_the_boundaries_with_its_own_peak_warmup_start_and_floor():
    # Per-group LRs (a group's peak = base x lr_mult) with one absolute warmup start and floor.
    wsd, peak = WSD(**PHASE), PHASE["learning_rate"] / 6
    assert wsd.lr_at(1000, peak=peak) == PHASE["warmup_init_lr"]  # the schedule's own start
    assert wsd.lr_at(1100, peak=peak) == pytest.approx((PHASE["warmup_init_lr"] + peak) / 2)
    assert wsd.lr_at(1300, peak=peak) == peak
    assert wsd.lr_at(1700, peak=peak, floor=1e-4) == pytest.approx((peak + 1e-4) / 2)
    assert wsd.lr_at(1950, peak=peak, floor=1e-4) == 1e-4
    assert wsd.lr_at(1000, warmup_init=0.0) == 0.0 and wsd.lr_at(1950) == PHASE["min_lr"]


def test_group_lr_scales_the_peak_only():
    wsd = WSD(**DECAY)
    assert wsd.group_lr_at(530_000, 1 / 6) == 1e-6                       # warmup start: absolute
    assert wsd.group_lr_at(530_500, 1 / 6) == pytest.approx(6.25e-4 / 6)  # peak: scaled
    assert wsd.group_lr_at(535_500, 1 / 6) == pytest.approx((6.25e-4 / 6 + 1e-5) / 2)
    assert wsd.group_lr_at(540_500, 1 / 6) == 1e-5                        # floor: absolute
    assert wsd.group_lr_at(535_500, 1.0) == wsd.lr_at(535_500)


def test_lr_rejects_step_before_phase_start():
    with pytest.raises(ValueError, match="before this phase's start_step"):
        lr_at(999, **PHASE)


def test_batch_ramp_is_piecewise_constant_in_global_steps():
    ramp = ((270_000, 960), (400_000, 1920))
    assert batch_at(0, 480, ramp) == 480
    assert batch_at(269_999, 480, ramp) == 480
    assert batch_at(270_000, 480, ramp) == 960
    assert batch_at(399_999, 480, ramp) == 960
    assert batch_at(400_000, 480, ramp) == 1920
    assert batch_at(10**9, 480, ramp) == 1920
    assert batch_at(123, 480) == 480


@pytest.mark.parametrize("ramp, message", [
    (((200, 960), (100, 1920)), "strictly increasing"),
    (((100, 960), (100, 1920)), "strictly increasing"),
    (((100, 0),), "global_batch"),
    (((100,),), "pairs"),
])
def test_batch_ramp_rejects_bad_entries(ramp, message):
    with pytest.raises(ValueError, match=message):
        batch_at(0, 480, ramp)


def test_batch_rejects_nonpositive_global_batch():
    with pytest.raises(ValueError, match="global_batch"):
        batch_at(0, 0)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_matches_transformers_wsd_schedule(shape):
    # Cross-check against an independent implementation (RECIPE §3). transformers is not a
    # runtime dependency: skip only this test when it is missing.
    transformers = pytest.importorskip("transformers", reason="transformers not installed: "
                                       "cross-check against get_wsd_schedule skipped")
    import torch
    peak, warm, stable, decay, ratio = 1e-3, 20, 30, 40, 0.1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = transformers.get_wsd_schedule(opt, num_warmup_steps=warm, num_decay_steps=decay,
                                          num_stable_steps=stable, min_lr_ratio=ratio,
                                          decay_type=shape)
    # transformers warms up from min_lr_ratio * peak (not from 0): same warmup_init_lr here.
    kw = dict(learning_rate=peak, start_step=0, max_steps=warm + stable + decay, warmup_steps=warm,
              warmup_init_lr=ratio * peak, decay_start_step=warm + stable, decay_steps=decay,
              min_lr=ratio * peak, decay_shape=shape)
    for step in range(warm + stable + decay + 5):
        assert sched.get_last_lr()[0] == pytest.approx(lr_at(step, **kw), rel=1e-9, abs=1e-15), step
        opt.step()
        sched.step()


def test_cli_prints_phase_table_and_writes_png(tmp_path):
    s1 = tmp_path / "s1.py"
    s1.write_text("start_step = 0\nmax_steps = 5000\nlearning_rate = 1e-2\nwarmup_steps = 200\n"
                  "warmup_init_lr = 0.0\ndecay_start_step = 5000\nmin_lr = 1e-2\n"
                  "global_batch = 480\nbatch_ramp = ((2500, 960),)\nseq_len = 3712\n")
    dec = tmp_path / "decay.py"
    dec.write_text("start_step = 5000\nmax_steps = 7000\nlearning_rate = 6.25e-4\nwarmup_steps = 50\n"
                   "warmup_init_lr = 1e-6\ndecay_start_step = 5050\ndecay_steps = 1000\nmin_lr = 1e-5\n"
                   "decay_shape = 'linear'\nglobal_batch = 960\nseq_len = 8192\nmax_seq_len = 8192\n")
    png = tmp_path / "sched.png"
    # Config files read (and validated) by train.load_config, run from another directory.
    r = subprocess.run([sys.executable, str(ROOT / "schedule.py"), str(s1), str(dec), "--out", str(png)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [l.split() for l in lines if l.split() and l.split()[0].split(":")[0] in ("warmup", "stable", "decay", "min_lr")]
    assert [row[1] for row in rows] == ["0-200", "200-2500", "2500-5000", "5000-5050", "5050-6050", "6050-7000"]
    assert rows[2][-1] == "960" and rows[0][-1] == "480"
    # total tokens: 2500*480*3712 + 2500*960*3712 + 2000*960*8192
    total = 2500 * 480 * 3712 + 2500 * 960 * 3712 + 2000 * 960 * 8192
    assert f"total tokens {total / 1e9:.4g}B" in r.stdout
    assert png.stat().st_size > 1000


def test_cli_on_the_recipe_decay_config_through_train_load_config(tmp_path):
    # The repository's own phase file, read through train.load_config (validated config).
    png = tmp_path / "decay.png"
    r = subprocess.run([sys.executable, "schedule.py", "config/decay_muon.py", "config/long_context.py",
                        "--out", str(png)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # columns: segment, first-end step, n steps, tokens, lr@first, lr@last, batch
    rows = {}  # the decay phase's rows: the first of each name (long context has a min_lr row)
    for l in r.stdout.splitlines():
        if l.startswith(("warmup", "decay:", "min_lr")):
            rows.setdefault(l.split()[0], l.split())
    assert rows["warmup"][2] == "500" and rows["warmup"][4] == "1e-06"  # RECIPE §3
    assert rows["decay:linear"][2] == "10000" and rows["decay:linear"][4] == "0.000625"
    assert rows["min_lr"][4] == "1e-05" and rows["min_lr"][-1] == "960"
    # Per-group LRs (RECIPE §3): the µP lr_mult (1/6) scales the peak only; the warmup start
    # and the 1e-5 floor are shared by every group, in the decay and in long context.
    groups = {int(l.split()[1]): (float(l.split()[3]), float(l.split()[5]))
              for l in r.stdout.splitlines() if l.startswith("  step ")}
    assert groups[530_000] == (1e-6, 1e-6)
    assert groups[530_500] == pytest.approx((6.25e-4, 6.25e-4 / 6), rel=1e-3)
    assert groups[540_500] == groups[549_999] == (1e-5, 1e-5)
    assert groups[550_000] == groups[559_999] == (1e-5, 1e-5)  # long context
    assert png.exists()


def test_cli_reports_an_invalid_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("start_step = 10\nmax_steps = 5\n")
    r = subprocess.run([sys.executable, str(ROOT / "schedule.py"), str(bad)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: invalid config") and "start_step (10) must be < max_steps (5)" in r.stderr


def test_cli_orders_phases_by_init_from_and_separates_configs_that_are_not_one_chain(tmp_path):
    # Given out of order, with an unrelated run and an ablation branch: the recipe chain comes
    # out in training order (tokens accumulate along it), the others as their own chains.
    common = "learning_rate = 1e-2\nwarmup_steps = 0\nglobal_batch = 16\nseq_len = 64\nmax_seq_len = 64\n"
    files = {"a_decay.py": "out_dir = 'out/dec'\ninit_from = 'out/s1'\nstart_step = 100\nmax_steps = 150\n",
             "b_ablation.py": "out_dir = 'out/abl'\ninit_from = 'out/s1'\nstart_step = 100\nmax_steps = 150\n",
             "c_long.py": "out_dir = 'out/long'\ninit_from = 'out/dec'\nstart_step = 150\nmax_steps = 160\n",
             "d_other.py": "out_dir = 'out/other'\nstart_step = 0\nmax_steps = 10\n",
             "s1.py": "out_dir = 'out/s1'\nstart_step = 0\nmax_steps = 100\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text + common)
    r = subprocess.run([sys.executable, str(ROOT / "schedule.py"), *sorted(files), "--out", "s.png"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(
        "3 separate chains (each its own token axis; a branch starts where its parent phase ends): "
        "d_other.py; s1.py -> a_decay.py -> c_long.py; b_ablation.py")
    per_step = 16 * 64
    assert f"total tokens {_fmt(160 * per_step)} (chain 2)" in r.stdout  # s1 -> decay -> long
    assert "chain 3: b_ablation.py (branch: starts from s1.py)" in r.stdout
    assert f"total tokens {_fmt(150 * per_step)} (chain 3)" in r.stdout  # after s1's 100 steps


def _fmt(n):
    from schedule import _fmt_tokens
    return _fmt_tokens(n)


def test_a_shorter_phase_is_told_to_move_decay_start_step_too():
    # The quick start's max_steps=200, decay 150 + 50, cut to --max_steps=30: shortening
    # decay_steps alone cannot fit, the decay's start must move too.
    wsd = WSD(start_step=0, max_steps=30, learning_rate=1e-2, warmup_steps=20,
              decay_start_step=150, decay_steps=50, min_lr=1e-3)
    [problem] = [p for p in wsd.problems() if p.startswith("the decay ends")]
    assert "raise max_steps to >= 200" in problem
    assert problem.endswith("e.g. --decay_start_step=20 --decay_steps=10")  # 20 + 10 = 30
    assert WSD(**{**wsd.__dict__, "decay_start_step": 20, "decay_steps": 10}).problems() == []

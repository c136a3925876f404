"""experiments.py end to end on CPU at its toy size (tiny models, a few steps): each experiment
writes its table, PNG and JSON; a second call skips finished runs and a partly finished sweep
runs only what is missing; the Muon decays start from the one stable checkpoint as the recipe's
decay does; bad input is one error line before anything is written; the default sizes fit one
10-minute H200 call by the measured cost model, and --full follows the protocol."""
import ast
import json
import math
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
import experiments  # noqa: E402
import train  # noqa: E402
from tiny_run import plays  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def from_the_repository_root():
    """Config and data paths are relative to the repository root, as for train.py; workers
    with one thread (two each on two shared cores spin-wait, see conftest.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return repr({plays(tmp_path_factory): 1.0})


def run(capsys, *args):
    rc = experiments.main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def metrics(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def test_mup_writes_table_png_json_and_a_second_call_skips_finished_runs(data, tmp_path, capsys):
    out = tmp_path / "mup"
    args = ["mup", "--toy", "--data", data, "--out", str(out), "--workers", "2"]
    rc, stdout, err = run(capsys, *args)
    assert rc == 0, err
    report = (out / "report.md").read_text()
    for width in (32, 64):
        assert f"| µP | {width} |" in report and f"| SP | {width} |" in report
    assert "| µP depth | 2 |" in report and "| µP depth | 3 |" in report and "## Verdict" in report
    assert (out / "mup.png").read_bytes()[:8] == PNG
    results = json.loads((out / "results.json").read_text())["runs"]
    assert len(results) == 2 * 2 * 3 + 3  # widths x (µP, SP) x LRs, + the 3-layer depth runs
    assert all(r["val"] is not None and r["steps"] == 3 for r in results)
    cfg = json.loads((out / "runs" / "w64_L2_sp_lr7.812e-03_s1" / "config.json").read_text())
    assert cfg["mup"] is False and cfg["learning_rate"] == 2 ** -7
    assert cfg["model_overrides"] == {"vocab_size": 320, "d_model": 64, "n_layer": 2, "n_head": 4,
                                      "n_kv_head": 1, "d_ffn": 160}

    def mtimes():
        return {p: os.path.getmtime(p) for p in out.glob("runs/*/result.json")}
    before = mtimes()
    rc, stdout, _ = run(capsys, *args)
    assert rc == 0 and "15 runs, 15 finished, 0 to run" in stdout and mtimes() == before
    # A run killed before it finished: no result, no checkpoint. Only it runs again.
    killed = out / "runs" / "w32_L2_mup_lr1.562e-02_s1"
    os.remove(killed / "result.json")
    rc, stdout, _ = run(capsys, *args)
    assert rc == 0 and "14 finished, 1 to run" in stdout and "1/1 w32_L2_mup_lr1.562e-02_s1" in stdout
    assert {p: t for p, t in mtimes().items() if "w32_L2_mup_lr1.562e-02" not in str(p)} == \
        {p: t for p, t in before.items() if "w32_L2_mup_lr1.562e-02" not in str(p)}


def test_muon_decays_start_from_one_stable_checkpoint_as_the_recipe_does(data, tmp_path, capsys):
    out = tmp_path / "muon"
    rc, stdout, err = run(capsys, "muon", "--toy", "--data", data, "--out", str(out))
    assert rc == 0, err
    runs = out / "runs"
    assert (runs / "stable" / "ckpt" / "latest").exists()  # shared by every decay: kept
    for arm in ("adamw", "muon"):
        for seed in (1, 2):
            run_dir = runs / f"lr16_{arm}_s{seed}"
            cfg = json.loads((run_dir / "config.json").read_text())
            assert cfg["init_from"] == str(runs / "stable") and cfg["load_optimizer"] is False
            assert (cfg["start_step"], cfg["max_steps"], cfg["warmup_steps"], cfg["decay_steps"]) == (4, 8, 1, 2)
            assert math.isclose(cfg["learning_rate"], 1e-2 / 16) and cfg["warmup_init_lr"] == 1e-6
            assert cfg["min_lr"] == 1e-5 and cfg["seed"] == seed and not (run_dir / "ckpt").exists()
            start = metrics(run_dir, "start")[0]  # Muon on the hidden matrices from the first step
            assert start["step"] == 4 and start["muon_active"] == (arm == "muon")
            assert cfg["muon_switch_step"] == (4 if arm == "muon" else None)
    # Muon alone at 4x the update scale, paired with lr16's AdamW arm (no second copy of it)
    rms_cfg = json.loads((runs / "lr16_rms0.8_muon_s1" / "config.json").read_text())
    assert rms_cfg["muon_matched_adamw_rms"] == 0.8 and rms_cfg["learning_rate"] == cfg["learning_rate"]
    assert not (runs / "lr16_rms0.8_adamw_s1").exists()
    report = (out / "report.md").read_text()
    assert "| lr16 | mix | " in report and "Shared stable phase (AdamW, 4 steps): val" in report
    assert "| lr16_rms0.8 | mix | " in report and "update scaled to 0.8 RMS" in report
    assert "| lr16 | 4 | " in report  # update RMS of both optimizers at the first decay step
    results = json.loads((out / "results.json").read_text())["runs"]
    muon_run = next(r for r in results if r["name"] == "lr16_muon_s1")
    assert {"update_rms_matrix", "update_rms_embedding"} <= set(muon_run["update_rms"][0])
    adamw_run = next(r for r in results if r["name"] == "lr16_adamw_s1")
    assert adamw_run["update_rms"] and "matrices, AdamW arm" in report  # the control arm logs them too
    assert (out / "muon.png").read_bytes()[:8] == PNG


def test_fp8_reports_the_gap_against_the_seed_spread(data, tmp_path, capsys):
    out = tmp_path / "fp8"
    rc, stdout, err = run(capsys, "fp8", "--toy", "--data", data, "--out", str(out))
    assert rc == 0, err
    fp8_cfg = json.loads((out / "runs" / "w32_fp8_emulated_s1" / "config.json").read_text())
    bf16_cfg = json.loads((out / "runs" / "w32_bf16_s1" / "config.json").read_text())
    assert fp8_cfg["fp8"] and fp8_cfg["fp8_emulate"] and not bf16_cfg["fp8"]
    assert bf16_cfg["dtype"] == fp8_cfg["dtype"] == "bfloat16"
    # both end in the same cooldown: constant LR, then linear to the 1e-5 floor over the last half
    for cfg in (fp8_cfg, bf16_cfg):
        assert (cfg["decay_start_step"], cfg["decay_steps"], cfg["min_lr"], cfg["warmup_steps"]) == (2, 2, 1e-5, 0)
    lrs = [r["lr"] for r in metrics(out / "runs" / "w32_bf16_s1", "train")]
    assert lrs[:3] == [1e-2] * 3 and 1e-5 < lrs[3] < 1e-2  # the decay starts at step 2: peak there
    report = (out / "report.md").read_text()
    assert "| 32 | fp8_emulated | " in report and "seed-to-seed std" in report
    assert (out / "fp8.png").read_bytes()[:8] == PNG
    # --report-only rewrites the outputs from the finished runs (copied from a GPU machine,
    # say) without running anything, even where the settings of today's code moved on
    for name in ("report.md", "fp8.png", "results.json"):
        (out / name).unlink()
    run_json = out / "runs" / "w32_bf16_s1" / "run.json"
    run_json.write_text(run_json.read_text().replace('"save_final": false', '"save_final": true'))
    rc, stdout, err = run(capsys, "fp8", "--toy", "--data", data, "--out", str(out), "--report-only")
    assert rc == 0, err
    assert (out / "report.md").read_text().split("## ")[1:] == report.split("## ")[1:]
    assert (out / "fp8.png").read_bytes()[:8] == PNG and "[sweep]" not in stdout
    rc, _, err = run(capsys, "fp8", "--toy", "--out", str(tmp_path / "empty"), "--report-only")
    assert rc == 2 and err.startswith("error: --report-only: no runs under")


def test_muon_decays_on_the_recipes_sft_share_train_on_chat_under_its_loss_mask(data, tmp_path, capsys):
    """--decay-sft: the decays (not the stable phase) train on SHARE of an SFT dataset and the
    stable mix scaled into the rest, as the recipe's decay mix (RECIPE §5)."""
    import prepare
    stable = ast.literal_eval(data)
    folder = next(iter(stable))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"What says the king in act {i}?"},
        {"role": "assistant", "content": f"My lord, in act {i} he speaks of the crown."}]}) + "\n" for i in range(300)))
    sft = str(tmp_path / "sft")
    prepare.prepare([str(chat)], sft, tokenizer=folder, sft=True, progress=False, log=lambda *a: None)
    out = tmp_path / "muon_sft"
    rc, stdout, err = run(capsys, "muon", "--toy", "--data", data, "--decay-sft", "0.6687", "--sft-data", sft,
                          "--out", str(out))
    assert rc == 0, err
    runs = out / "runs"
    assert json.loads((runs / "stable" / "config.json").read_text())["data"] == stable
    for name in ("lr16_adamw_s1", "lr16_muon_s2", "lr16_rms0.8_muon_s1"):
        assert json.loads((runs / name / "config.json").read_text())["data"] == {sft: 0.6687, folder: 0.3313}
    results = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert len(results["stable"]["val_by_source"]) == 1 and len(results["lr16_muon_s1"]["val_by_source"]) == 2
    assert "Decay data: {" in (out / "report.md").read_text()


def test_the_proxy_decays_commented_sft_mix_is_the_one_decay_sft_builds():
    text = open(os.path.join(ROOT, "config", "proxy_decay_muon.py")).read()
    block = text[text.index("# data = {"):text.index("# }") + 3]
    written = ast.literal_eval("\n".join(line[2:] for line in block.splitlines()).split("=", 1)[1])
    built = experiments.sft_mix(train.load_config(experiments.PROXY).data, 0.6687)
    assert written.keys() == built.keys()
    assert all(math.isclose(written[k] / 100, built[k], abs_tol=1e-6) for k in built)


@pytest.mark.parametrize("args, message", [
    (["mup", "--toy", "--data", "{'nowhere/x': 1.0}"], "error: data not prepared: nowhere/x"),
    (["mup", "--toy", "--data", "[1]"], "error: --data must be a Python dict"),
    (["mup", "--toy", "--set", "learning_rate=0.1"], "error: --set learning_rate: this experiment sets"),
    (["mup", "--toy", "--set", "learnig_rate=0.1"], "did you mean 'learning_rate'?"),
    (["fp8"], "error: fp8=True needs an NVIDIA GPU"),  # this CPU: no FP8 arm
    (["muon", "--toy", "--decay-sft", "1.5"], "error: --decay-sft is the decay mix's SFT share"),
    (["mup", "--toy", "--decay-sft", "0.5"], "error: --decay-sft is for the muon experiment"),
    (["muon", "--toy", "--sft-data", "data/sft"], "error: --sft-data is the data of --decay-sft SHARE"),
    (["muon", "--toy", "--decay-sft", "0.5", "--sft-data", "nowhere/chat"], "error: data not prepared: nowhere/chat"),
    (["fp8", "--toy", "--seeds", "0"], "error: --seeds must be >= 1, got 0"),
    (["muon", "--toy", "--only", "lr16_muon_*,lr99_*"], "error: --only 'lr16_muon_*,lr99_*': 'lr99_*' matches no run"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(args, message, data, tmp_path, capsys):
    if "--data" not in args:
        args = args + ["--data", data]
    rc, stdout, err = run(capsys, *args, "--out", str(tmp_path / "exp"))
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "exp").exists()


def test_default_sizes_fit_one_10_minute_h200_call_and_full_follows_the_protocol(capsys):
    for name in ("mup", "muon", "fp8"):
        rc, stdout, _ = run(capsys, name, "--plan")
        seconds = float(stdout.split("predicted on one H200: ")[1].split(" s")[0])
        assert rc == 0 and seconds < 540, (name, seconds)  # margin under 600 s for the start
    full = experiments.MUP_SIZES["full"]
    assert full["widths"] == (256, 512, 1024, 2048) and len(full["seeds"]) >= 2
    for lrs in (full["lrs_mup"], full["lrs_sp"]):
        assert len(lrs) >= 8 and all(math.isclose(b / a, 2) for a, b in zip(lrs, lrs[1:]))
    assert min(full["depths"]) == 4 and max(full["depths"]) == 16
    assert all(len(s["seeds"]) >= 3 for k, s in experiments.MUON_SIZES.items() if k != "toy")
    assert all(len(s["seeds"]) >= 2 for k, s in experiments.FP8_SIZES.items() if k != "toy")


def test_the_proxy_decay_files_follow_the_runners_decay_shape():
    """config/proxy_decay_*.py by hand and experiments.decay_keys agree: one shape."""
    muon = train.load_config("config/proxy_decay_muon.py")
    adamw = train.load_config("config/proxy_decay_adamw.py")
    keys = experiments.decay_keys(500, 200)
    assert {k: getattr(muon, k) for k in keys} == keys and muon.start_step == train.load_config("config/proxy.py").max_steps
    assert muon.learning_rate == train.load_config("config/proxy.py").learning_rate / 16
    assert muon.muon_switch_step == muon.start_step and adamw.muon_switch_step is None
    diff = {k for k in train.FIELDS if getattr(muon, k) != getattr(adamw, k)}
    assert diff == {"out_dir", "phase_name", "muon_switch_step"}


def test_statistics():
    m, h = experiments.t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(h, 4.303 / math.sqrt(3))
    assert experiments.t_interval([1.0]) == (1.0, None)
    stats = pytest.importorskip("scipy.stats")
    assert all(math.isclose(t, stats.t.ppf(0.975, df), abs_tol=5e-4) for df, t in enumerate(experiments.T975, 1))
    o = experiments.optimum([1, 2, 4, 8], [3.0, 1.0, 2.0, 4.0])
    assert (o["index"], o["lr"], o["edge"]) == (1, 2, False)
    assert math.isclose(math.log2(o["lr_fit"]), 1 + (3 - 2) / (2 * 3))  # the parabola's vertex
    assert experiments.optimum([1, 2, 4], [1.0, 2.0, 3.0])["edge"]
    inf = math.inf  # a diverged run: worse than any loss, so it brackets the optimum
    o = experiments.optimum([1, 2, 4, 8], [inf, 2.0, 1.0, inf])  # diverged neighbour: no fit
    assert (o["lr"], o["lr_fit"], o["edge"]) == (4, 4, False)
    # a neighbour not run yet brackets nothing: the optimum is a bound only
    assert experiments.optimum([1, 2, 4, 8], [3.0, 2.0, 1.0, None])["edge"]
    assert experiments.optimum([1, 2, 4, 8], [None, 1.0, 2.0, 3.0])["edge"]
    assert experiments.optimum([1, 2], [None, None]) is None
    assert experiments.optimum([1, 2], [inf, inf]) is None


def test_fp8_parity_is_one_sided_and_shown_only_by_the_intervals_upper_end():
    bound = math.log(1.005)  # the paper: FP8 at most 0.5% worse in perplexity
    assert experiments.parity_bound(-0.0054, 0.11) == ("yes", "no")  # better on average, seeds too few
    assert experiments.parity_bound(0.9 * bound, 0.05 * bound) == ("yes", "yes")
    assert experiments.parity_bound(1.1 * bound, 0.01) == ("no", "no")
    assert experiments.parity_bound(-0.01, None) == ("yes", "-")  # one seed: nothing shown


def test_only_runs_the_matching_runs_and_what_they_wait_for(data, tmp_path, capsys):
    out = tmp_path / "muon"
    rc, stdout, err = run(capsys, "muon", "--toy", "--data", data, "--out", str(out), "--only", "lr16_muon_s1")
    assert rc == 0, err
    assert sorted(os.listdir(out / "runs")) == ["lr16_muon_s1", "stable"]  # the decay's stable phase too
    # a second subset: the report covers both calls' runs; nothing finished is run again
    rc, stdout, err = run(capsys, "muon", "--toy", "--data", data, "--out", str(out), "--only", "lr16_adamw_s1")
    assert rc == 0, err
    assert "1 finished, 1 to run" in stdout  # the stable phase skipped
    report = (out / "report.md").read_text()
    assert "runs finished: 3 of 7" in report and "| lr16 | mix | " in report  # the pair of seed 1


def test_seeds_sets_every_arms_seeds(data, capsys):
    rc, stdout, _ = run(capsys, "fp8", "--toy", "--data", data, "--seeds", "3", "--plan")
    assert rc == 0 and stdout.startswith("fp8 (toy): 6 runs")  # 2 arms x seeds 1, 2, 3 (toy: 1, 2)
    rc, stdout, _ = run(capsys, "muon", "--toy", "--data", data, "--seeds", "1", "--plan")
    assert rc == 0 and stdout.startswith("muon (toy): 4 runs")  # stable + 3 decays of seed 1


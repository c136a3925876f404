"""sweep.py on CPU with tiny train.py runs: runs finish in worker processes and a second call
skips them; a time limit stops a run with a checkpoint and the next call resumes it; a diverged
run is a result, a failed one is retried and blocks the runs after it; a folder made with other
settings, a missing dataset or a bad config key stop the sweep before any run starts."""
import json
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
import sweep  # noqa: E402
from tiny_run import VOCAB, plays  # noqa: E402

CONFIG = os.path.join(ROOT, "config", "proxy.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return plays(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Workers (and the server they fork from) with one thread, as conftest.py sets for this
    process: two threads each on two shared cores spin-wait (tiny runs 5-10x slower)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def run(name, dataset, **kw):
    o = dict(model_preset="tiny", data={dataset: 1.0}, model_overrides={"vocab_size": VOCAB},
             seq_len=32, max_seq_len=64, global_batch=4, micro_batch=4, max_steps=3, warmup_steps=0,
             log_interval=1, eval_interval=0, eval_steps=1, ckpt_interval=0, keep_last=1)
    o.update(kw)
    return sweep.Run(name, CONFIG, o, info={"name": name})


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):
    """Two runs through two workers, started as on a GPU machine (spawn: fresh interpreters;
    the other tests use the CPU's forkserver), shared by the tests below."""
    root = tmp_path_factory.mktemp("sweep")
    runs = [run("a", dataset, learning_rate=1e-2), run("b", dataset, learning_rate=3e-3)]
    results, unfinished, _ = sweep.run_all(runs, str(root), workers=2, log=lambda *a: None,
                                           start_method="spawn")
    return root, runs, results, unfinished


def test_runs_finish_in_workers_with_one_result_each(finished):
    root, runs, results, unfinished = finished
    assert unfinished == {} and set(results) == {"a", "b"}
    for name in "ab":
        r = results[name]
        assert r["steps"] == 3 and 0 < r["val"] < 10 and not r["diverged"]
        assert r["overrides"]["learning_rate"] == {"a": 1e-2, "b": 3e-3}[name]
        assert not (root / "runs" / name / "ckpt").exists()  # dropped once the result is safe
        assert "[sweep] python train.py" in (root / "runs" / name / "train.log").read_text()
    assert results["a"]["val"] != results["b"]["val"]


def test_a_second_call_skips_finished_runs(finished):
    root, runs, results, _ = finished
    mtimes = {n: os.path.getmtime(root / "runs" / n / "result.json") for n in "ab"}
    lines = []
    again, unfinished, _ = sweep.run_all(runs, str(root), workers=2, log=lines.append)
    assert unfinished == {} and again == results
    assert lines == [f"[sweep] {root}: 2 runs, 2 finished, 0 to run"]
    assert {n: os.path.getmtime(root / "runs" / n / "result.json") for n in "ab"} == mtimes


def test_a_folder_run_with_other_settings_is_refused_before_any_work(finished, dataset):
    root = finished[0]
    before = (root / "runs" / "a" / "result.json").read_text()
    with pytest.raises(sweep.SweepError, match="runs/a was run with other settings"):
        sweep.run_all([run("a", dataset, learning_rate=5e-3)], str(root), log=lambda *a: None)
    assert (root / "runs" / "a" / "result.json").read_text() == before


def test_a_time_limit_stops_a_run_with_a_checkpoint_and_the_next_call_resumes_it(dataset, tmp_path):
    runs = [run("long", dataset, max_steps=400)]  # a few seconds on a CPU
    results, unfinished, interrupted = sweep.run_all(runs, str(tmp_path), time_limit=0.5, log=lambda *a: None)
    run_dir = tmp_path / "runs" / "long"
    assert unfinished == {"long": "stopped"} and results == {} and not interrupted
    assert (run_dir / "ckpt" / "latest").exists() and not (run_dir / "result.json").exists()
    results, unfinished, _ = sweep.run_all(runs, str(tmp_path), log=lambda *a: None)
    assert unfinished == {} and results["long"]["steps"] == 400
    starts = [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["kind"] == "start"]
    assert len(starts) == 2 and 0 < starts[1]["step"] < 400  # resumed, not started over


def test_diverged_is_a_result_failed_is_retried_and_blocks_the_runs_after_it(dataset, tmp_path):
    hot = run("hot", dataset, learning_rate=1e4, grad_clip=0.0, max_steps=12)  # NaN by step 6
    bad = run("bad", dataset, init_from=str(tmp_path / "nowhere"))
    child = run("child", dataset)
    child.after = ("bad",)
    results, unfinished, _ = sweep.run_all([hot, bad, child], str(tmp_path), log=lambda *a: None)
    assert set(results) == {"hot"} and results["hot"]["diverged"] and results["hot"]["val"] is None
    assert unfinished == {"bad": "failed", "child": "blocked"}
    assert "nowhere" in (tmp_path / "runs" / "bad" / "train.log").read_text()
    # The next call: the diverged run is done; the failed one (no checkpoint) starts afresh.
    assert sweep._check([hot, bad, child], str(tmp_path)) == {"hot": "finished", "bad": "fresh",
                                                               "child": "fresh"}


def test_missing_data_and_bad_keys_are_one_error_before_anything_is_written(dataset, tmp_path):
    runs = [run("x", str(tmp_path / "no_data_1")), run("y", str(tmp_path / "no_data_2")),
            run("z", dataset, learnig_rate=1e-3)]
    with pytest.raises(sweep.SweepError) as e:
        sweep.run_all(runs, str(tmp_path / "sweep"), log=lambda *a: None)
    msg = str(e.value)
    assert "\n" not in msg and "no_data_1" in msg and "no_data_2" in msg
    assert "unknown config key 'learnig_rate'; did you mean 'learning_rate'?" in msg
    assert not (tmp_path / "sweep").exists()

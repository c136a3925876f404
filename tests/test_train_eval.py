"""train.py's downstream scores during a phase (eval_tasks): written beside the loss at each
checkpoint, equal to eval_reasoning scoring that checkpoint on its own; a task whose data is not
here stops the run before anything is written."""
import json
import os

import pytest

import eval_reasoning
import train
from tiny_run import plays, run_inprocess, tiny_args, write_mc_task

pytestmark = pytest.mark.skipif(not eval_reasoning.HAVE_LM_EVAL,
                                reason=f"lm-eval is optional: pip install {eval_reasoning.LM_EVAL_PIN}")

QUESTIONS = [  # answers are arbitrary: the two scorings need only agree
    {"question": "To be, or not to", "choices": [" be", " sea", " arms"], "answer": 0},
    {"question": "the slings and arrows of", "choices": [" fortune", " troubles"], "answer": 1},
    {"question": "whether 'tis nobler in the ", "choices": ["mind", "sea"], "answer": 0},
    {"question": "Good night, good night! parting is", "choices": [" such", " so"], "answer": 0},
]
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return plays(tmp_path_factory)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_mc_task(tmp_path_factory.mktemp("tasks"), "tiny_train_mc", QUESTIONS)


def test_eval_tasks_are_scored_at_each_checkpoint_and_reported(dataset, task_dir, tmp_path):
    out = tmp_path / "run"
    run_inprocess(tiny_args(dataset, out, max_steps=4, ckpt_interval=2, eval_tasks={"tiny_train_mc": 0},
                            eval_tasks_include_path=str(task_dir)))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    scored = {r["step"]: r["eval/tiny_train_mc"] for r in records if r["kind"] == "eval_tasks"}
    ckpts = {r["step"]: r["path"] for r in records if r["kind"] == "checkpoint"}
    assert sorted(scored) == sorted(ckpts) == [2, 4]
    for step, path in ckpts.items():  # the same number as scoring that checkpoint by itself
        alone = eval_reasoning.score_checkpoint(path, None, {"tiny_train_mc": 0}, include_path=str(task_dir))
        assert scored[step] == pytest.approx(alone["tiny_train_mc"])
    assert f"| tiny_train_mc (step 4, 50 items/task) | {scored[4]:.2f} |" in (out / "report.md").read_text()


def test_an_unavailable_eval_task_stops_before_anything_is_written(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "run"
    rc = train.main(tiny_args(dataset, out, eval_tasks={"gsm8k": 8}))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: eval_tasks:") and "gsm8k" in err[0]
    assert not os.path.exists(out / "config.json")

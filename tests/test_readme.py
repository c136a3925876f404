"""README.md's "Using it" block, pasted in order as a new user would, after the quick start:
every command exits 0 (or, where it cannot succeed here, with its documented one-line message).

It runs in a copy of the repository's scripts and configs in a temporary folder, with two
substitutions of tiny sizes: config/quickstart.py keeps its keys and schedule (200 steps,
warmup 20, decay 150 + 50) but trains the tiny model (model_preset 'tiny-8k', 2 sequences of
16 tokens per step), and the coordinate check gets its documented `--widths 32,64 --steps 2`. The user's own inputs (corpus.jsonl, chats.jsonl, some.txt) are written by the test;
`pip install X==V` is checked against the installed version instead of run (no network in
tests); the hub is off (HF_HUB_OFFLINE=1, an empty HF_HOME), so the lm-eval line must end in
its offline message.
"""
import glob
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

TINY_QUICKSTART = """
# tests/test_readme.py: the quick start's keys and schedule, the tiny model's sizes.
model_preset = "tiny-8k"
model_overrides = {}
seq_len = 16
max_seq_len = 64
global_batch = 2
micro_batch = 2
eval_steps = 1
log_interval = 50
"""

# Documented flags appended to a command, for tiny sizes (the command as written: 44 s).
TINY_FLAGS = {"python mup.py coord_check": ["--widths", "32,64", "--steps", "2"]}

# Outcomes other than a silent exit 0: the command as written -> its return code and a regex
# its documented message must match.
EXPECTED = {
    "python train.py config/quickstart.py --init_from=resume": (0, r"nothing to do"),
    "python eval_reasoning.py out/quickstart --tasks arc_easy --limit 50": (
        1, r"^error: task data not available here: arc_easy: .*not cached, hub out of reach"),
}


def using_it_commands():
    """The README's "Using it" bash block -> [argv, ...], comments dropped, `&&` split."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Using it\s+```bash\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


def workspace(tmp_path):
    """The scripts, configs and offline tasks of the repository, the user's own input files."""
    for path in glob.glob(os.path.join(ROOT, "*.py")):
        shutil.copy(path, tmp_path)
    for folder in ("config", "tasks"):
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder)
    with open(tmp_path / "config" / "quickstart.py", "a") as f:
        f.write(TINY_QUICKSTART)
    lines = [line for line in open(os.path.join(ROOT, "README.md")) if len(line.split()) > 6]
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"Document {i}. " + lines[i % len(lines)]}) + "\n")
    with open(tmp_path / "chats.jsonl", "w") as f:
        for i in range(100):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                             {"role": "assistant", "content": f"{i + 1}."}]}) + "\n")
    (tmp_path / "some.txt").write_text("".join(lines[:40]))


def run(argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MPLBACKEND": "Agg", "HF_HOME": str(cwd / "hf_home")}  # no hub cache of the machine
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_every_using_it_command_works_in_order_after_the_quick_start(tmp_path):
    workspace(tmp_path)
    commands = using_it_commands()
    assert commands[0] == ["python", "prepare.py"]  # builds data/default, which the quick start needs
    first, rest = commands[0], commands[1:]
    quick_start = [["python", "train.py", "config/quickstart.py"]]  # the README's fresh-machine command
    for argv in [first, *quick_start, *rest]:
        shown = " ".join(argv)
        if argv[:2] == ["pip", "install"]:  # what it would install is what the tests have
            for spec in argv[2:]:
                name, version = spec.split("==")
                assert importlib.metadata.version(name) == version, shown
            continue
        t0 = time.time()
        r = run(argv + TINY_FLAGS.get(shown, []), tmp_path)
        print(f"{time.time() - t0:5.1f}s  {shown}")
        out = r.stdout + r.stderr
        code, message = EXPECTED.get(shown, (0, None))
        assert r.returncode == code, f"{shown}\n{out[-3000:]}"
        assert "Traceback" not in out, f"{shown}\n{out[-3000:]}"
        if message:
            assert re.search(message, out, re.M), f"{shown}\n{out[-3000:]}"
    # What the block promises, checked once at the end.
    ckpt = open(tmp_path / "out" / "quickstart" / "ckpt" / "latest").read().strip()
    assert ckpt.endswith("step_00000300")  # trained further, to step 300
    assert (tmp_path / "out" / "lr5e-3" / "report.md").exists()  # the new run beside it
    assert (tmp_path / "hf" / "xmodel" / "config.json").exists()


def test_each_scripts_help_says_which_flag_style_it_takes(capsys, monkeypatch):
    # train.py takes config keys as --key=value; every other script argparse --hyphen-words.
    import pytest
    sys.path.insert(0, ROOT)
    import bench
    import bench_prepare
    import convert_hf
    import eval_reasoning
    import experiments
    import mup
    import prepare
    import sample
    import train
    note = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    monkeypatch.setattr(sys, "argv", ["x", "--help"])  # for the mains that read sys.argv
    for main in (prepare.main, sample.main, convert_hf.main, eval_reasoning.main, experiments.main,
                 bench.parse_args, bench_prepare.main, mup._main):
        with pytest.raises(SystemExit):
            main(["--help"]) if main not in (bench_prepare.main, mup._main) else main()
        assert note in " ".join(capsys.readouterr().out.split()), main.__module__
    assert train.main(["--help"]) == 0
    assert "each given as --key=value" in capsys.readouterr().out


def test_a_wrong_checkpoint_path_is_one_line_for_sample_and_eval(tmp_path):
    import pytest
    sys.path.insert(0, ROOT)
    import eval_reasoning
    import sample
    text = tmp_path / "some.txt"
    text.write_text("hello")
    for main, argv in ((sample.main, [str(tmp_path / "none")]),
                       (eval_reasoning.main, [str(tmp_path / "none"), "--perplexity", str(text)])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert str(e.value).startswith(f"error: no model.pt, ckpt/latest or latest under "
                                       f"{str(tmp_path / 'none')!r}: give a run dir")
    assert sorted(os.listdir(tmp_path)) == ["some.txt"]  # nothing written

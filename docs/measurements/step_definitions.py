"""
How many of a tree's own definitions one plain training step touches: the functions and
methods in the tree's .py files whose call count grows with the number of steps.

    python docs/measurements/step_definitions.py [TREE]     # TREE: a checkout (default: this one)

It runs `train.py config/quickstart.py` (tiny model, one micro-batch per step, AdamW at a
constant LR, no eval, no checkpoint before the end) for 3 and for 6 steps in the tree, each in a fresh
process under sys.setprofile, and lists every definition called more often in the longer run,
by file. Needs data/default in the tree (`python prepare.py`). CPU only, ~1 minute.
"""
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import collections, json, os, runpy, sys
tree, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = collections.Counter()
def prof(frame, event, arg):
    if event == "call":
        f = frame.f_code.co_filename
        if f.startswith(tree) and "/.venv/" not in f and "/tests/" not in f:
            counts[(os.path.relpath(f, tree), frame.f_code.co_qualname)] += 1
os.chdir(tree)
sys.path.insert(0, tree)
sys.argv = ["train.py", "config/quickstart.py", f"--max_steps={steps}", "--warmup_steps=0",
            "--decay_start_step=None", "--decay_steps=0", "--eval_interval=0", "--log_interval=1000",
            f"--out_dir={out}/run"]
sys.setprofile(prof)
try:
    runpy.run_path(os.path.join(tree, "train.py"), run_name="__main__")
except SystemExit as e:
    sys.setprofile(None)
    if e.code not in (None, 0):
        raise
sys.setprofile(None)
json.dump([[f, q, n] for (f, q), n in counts.items()], open(f"{out}/counts.json", "w"))
"""


def counts(tree, steps):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, "-c", CHILD, tree, str(steps), tmp], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        return {(f, q): n for f, q, n in json.load(open(f"{tmp}/counts.json"))}


def main():
    tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    short, long = counts(tree, 3), counts(tree, 6)
    per_step = sorted(k for k, n in long.items() if n > short.get(k, 0))
    by_file = {}
    for f, q in per_step:
        by_file.setdefault(f, []).append(q)
    print(f"{tree}: {len(per_step)} definitions in {len(by_file)} files are called in every step")
    for f, names in sorted(by_file.items()):
        print(f"  {f} ({len(names)}): {', '.join(names)}")


if __name__ == "__main__":
    main()

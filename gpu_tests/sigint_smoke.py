"""The first SIGINT on one CUDA GPU (single process, torch.compile on, bf16): sent while step 1
compiles, then in the middle of a later step of 8 micro-batches. Each interrupted run must
exit 0 at once with a checkpoint of its last completed step and the line saying how to
continue; the resumed run must then end like an uninterrupted one, within the GPU's run-to-run
noise (train_smoke.sh measures it: 1.7e-4). Prints the seconds from each SIGINT to the exit.

    python prepare.py                      # data/default, on a CPU machine; carry data/ along
    python gpu_tests/sigint_smoke.py       # ~4 min on one H100/H200
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "out", "gpu_sigint")
ARGS = ["config/proxy.py", "--data={'data/default': 1.0}", "--model_overrides={'vocab_size': 8192}",
        "--global_batch=96", "--micro_batch=12", "--max_steps=40", "--muon_switch_step=10",
        "--log_interval=1", "--eval_interval=0"]


def train(out, *extra):
    subprocess.run([sys.executable, "train.py", *ARGS, f"--out_dir={out}", *extra], cwd=ROOT, check=True)


def interrupt(out, wait_for, delay, *extra):
    """Run train.py until a line starting with `wait_for`, `delay` s more, SIGINT -> (s, lines)."""
    p = subprocess.Popen([sys.executable, "train.py", *ARGS, f"--out_dir={out}", *extra], cwd=ROOT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if line.startswith(wait_for):
            break
    time.sleep(delay)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    lines += p.stdout.readlines()
    code = p.wait()
    seconds = time.time() - sent
    assert code == 0, "".join(lines[-20:])
    assert lines[-1].startswith("stopped by signal") and "--init_from=resume" in lines[-1], lines[-3:]
    return seconds, lines


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if r.get("kind") == "train"}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    full, cut = os.path.join(OUT, "full"), os.path.join(OUT, "cut")
    train(full)
    # 5 s after the start line the first step is compiling (tens of seconds): inside the tracer.
    s1, lines = interrupt(cut, "[train] ", 5.0)
    print(f"SIGINT while step 1 compiles: exit after {s1:.1f} s; {lines[-1].strip()}", flush=True)
    s2, lines = interrupt(cut, "step 15/", 0.05, "--init_from=resume")
    print(f"SIGINT in step 16: exit after {s2:.1f} s; {lines[-1].strip()}", flush=True)
    train(cut, "--init_from=resume")
    a, b = losses(full), losses(cut)
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(f"interrupted twice and resumed vs uninterrupted: largest relative loss difference {worst:.2e}")


if __name__ == "__main__":
    main()

"""How long the first Ctrl-C takes to act: start `python train.py <config> [overrides]`, wait
for its first step line and `--delay` seconds more, send SIGINT (as `kill -INT` does), and
time until the run says it got the signal, until it has written its checkpoint, and until the
process has exited. Prints one summary line per repeat, then the run's last lines.

    python prepare.py   # the quick start's data (data/default)
    python docs/measurements/sigint_latency.py config/quickstart.py
    python docs/measurements/sigint_latency.py config/quickstart.py --global_batch=256
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def measure(config, overrides, delay):
    out_dir = tempfile.mkdtemp(prefix="sigint_latency_", dir=os.path.join(ROOT, "out"))
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), config, f"--out_dir={out_dir}", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:  # the first step line: the model is built and the loop runs
        lines.append(line)
        if line.startswith("step "):
            break
    time.sleep(delay)
    sent = time.time()
    p.send_signal(signal.SIGINT)
    got = saved = None
    for line in p.stdout:
        lines.append(line)
        if got is None and "got SIGINT" in line:
            got = time.time() - sent
        if saved is None and ": checkpoint " in line:
            saved = time.time() - sent
    code = p.wait()
    exited = time.time() - sent
    shutil.rmtree(out_dir, ignore_errors=True)
    return got, saved, exited, code, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds after the first step line")
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()
    os.makedirs(os.path.join(ROOT, "out"), exist_ok=True)
    fmt = lambda s: "-" if s is None else f"{s:.1f}s"  # noqa: E731
    for i in range(args.repeats):
        got, saved, exited, code, lines = measure(args.config, overrides, args.delay)
        print(f"repeat {i + 1}: SIGINT -> 'got SIGINT' {fmt(got)}, -> checkpoint written {fmt(saved)}, "
              f"-> exit {fmt(exited)} (exit code {code})", flush=True)
    print("last run's last lines:\n" + "".join(lines[-6:]), end="")


if __name__ == "__main__":
    main()

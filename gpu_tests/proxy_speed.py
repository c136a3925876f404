"""
The µP proxy's whole training step (width 256, 4 layers, the real 129,280 vocabulary, seq 2048,
micro-batch 12), side by side with transformers' Llama: train.py's compile path (each block plus
the loss), the whole model compiled, CUDA graphs (mode reduce-overhead), the fused loss backends,
max-autotune, and the small-vocabulary proxy (8,192). Each case is one `bench.py --one` process
(the same step, timing and counters as bench.py: host ms, host syncs, GPU busy from the profiler);
cases run in priority order and a case starts only while --deadline-s leaves it room, so the
slow-compiling ones at the end are the ones cut.

    python gpu_tests/proxy_speed.py --deadline-s 300 --out out/proxy_speed
    python gpu_tests/proxy_speed.py --cases block,hf,model_graphs
    python gpu_tests/proxy_speed.py --cases hf,model,model_liger,hf_graphs
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from gpu_tests.common import require_cuda  # noqa: E402
PROXY = ["--preset", "proxy", "--seq-len", "2048", "--micro-batch", "12", "--steps", "20", "--warmup", "5"]
PROFILE = ["--kernel-time"]  # GPU kernel time per step: a few seconds of profiler per case

# (key, label, bench.py variant, extra arguments, room it needs to start in s), priority order
CASES = [
    ("block", "ours: each block + loss compiled (train.py)", "ours", PROFILE, 40),
    ("hf", "hf: Llama compiled whole", "hf", PROFILE, 40),
    ("model", "ours: whole model compiled", "ours", ["--compile-scope", "model"] + PROFILE, 40),
    ("model_graphs", "ours: whole model, CUDA graphs", "ours",
     ["--compile-scope", "model", "--compile-mode", "reduce-overhead"] + PROFILE, 40),
    ("model_liger", "ours: whole model, loss liger-kernel", "ours",
     ["--compile-scope", "model", "--loss-impl", "liger"] + PROFILE, 40),
    ("hf_graphs", "hf: Llama compiled whole, CUDA graphs", "hf", ["--hf-compile-mode", "reduce-overhead"] + PROFILE, 40),
    ("block_liger", "ours: blocks compiled, loss liger-kernel", "ours", ["--loss-impl", "liger"], 30),
    ("block_v8k", "ours: blocks + loss compiled, vocab 8192", "ours", ["--vocab-size", "8192"] + PROFILE, 30),
    ("hf_v8k", "hf: compiled whole, vocab 8192", "hf", ["--vocab-size", "8192"] + PROFILE, 40),
    ("block_cce", "ours: blocks compiled, loss cut-cross-entropy", "ours", ["--loss-impl", "cce"], 30),
    ("block_graphs", "ours: blocks + loss compiled, CUDA graphs", "ours",
     ["--compile-mode", "reduce-overhead"], 40),
    ("model_autotune", "ours: whole model, max-autotune-no-cudagraphs", "ours",
     ["--compile-scope", "model", "--compile-mode", "max-autotune-no-cudagraphs"], 90),
]


def run_case(key, label, variant, extra, timeout_s, log):
    cmd = [sys.executable, os.path.join(ROOT, "bench.py")] + PROXY + extra + ["--one", variant]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = f"timed out after {timeout_s:.0f} s", None
    wall = time.time() - t0
    log.write(f"\n===== {key}: {' '.join(cmd)} (rc {rc}, {wall:.0f} s)\n{out[-4000:]}\n{err[-4000:]}\n")
    log.flush()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if rc != 0 or not lines:
        tail = " ".join((err or out).split())[-300:]
        return dict(case=key, label=label, wall_s=wall, error=tail or f"rc {rc}")
    r = json.loads(lines[-1][len("RESULT "):])
    return dict(case=key, label=label, wall_s=wall, **r)


def table(results):
    hf = {r["vocab_size"]: r["tokens_per_s_per_gpu"] for r in results if r["case"] in ("hf", "hf_v8k") and "vocab_size" in r}
    block = {r["vocab_size"]: r["tokens_per_s_per_gpu"] for r in results
             if r["case"] in ("block", "block_v8k") and "vocab_size" in r}
    lines = ["| case | tok/s | vs hf | vs block | step ms | host ms | syncs | GPU busy | launches | "
             "peak GiB | 1st step s | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['label']} | {r.get('skipped') or 'failed: ' + r['error'][-120:]} "
                         f"| | | | | | | | | | {r.get('wall_s', 0):.0f} |")
            continue
        tps, v = r["tokens_per_s_per_gpu"], r["vocab_size"]
        vs_hf = f"{tps / hf[v]:.2f}x" if v in hf else "-"
        vs_block = f"{tps / block[v]:.2f}x" if v in block else "-"
        busy = f"{r['gpu_busy']:.0%}" if r.get("gpu_busy") else "-"
        launches = f"{r['kernel_launches_per_step']:.0f}" if r.get("kernel_launches_per_step") else "-"
        lines.append(f"| {r['label']} | {tps:,.0f} | {vs_hf} | {vs_block} | {1e3 * r['step_s']:.1f} | "
                     f"{1e3 * r['host_s']:.1f} | {r['host_syncs']} | {busy} | {launches} | "
                     f"{r['peak_mem_gib']:.1f} | {r['first_step_s']:.0f} | {r['wall_s']:.0f} |")
    ok = [r for r in results if "error" not in r and "skipped" not in r]
    if ok:
        r = ok[0]
        lines.append(f"\n{r['device']}, proxy, seq {r['seq_len']}, micro-batch {r['micro_batch']}; "
                     f"bf16 matmul peak {r['matmul_peak_tflops']:.0f} TFLOP/s. vs hf: same vocabulary. "
                     f"host ms: CPU time to issue one step (~ step ms: launch-bound); syncs: host syncs "
                     f"in one step; GPU busy: kernel time / step time; 1st step: compile + first run.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(c[0] for c in CASES))
    p.add_argument("--deadline-s", type=float, default=330, help="no case starts, or runs, past this")
    p.add_argument("--out", default="out/proxy_speed")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    wanted = args.cases.split(",")
    results = []
    with open(os.path.join(args.out, "proxy_speed_cases.log"), "w") as log:
        for key, label, variant, extra, room in CASES:
            if key not in wanted:
                continue
            left = args.deadline_s - (time.time() - start)
            if left < room:
                results.append(dict(case=key, label=label, skipped=f"not started: {left:.0f} s left"))
                print(f"{key}: skipped ({left:.0f} s left, needs {room})", flush=True)
                continue
            r = run_case(key, label, variant, extra, left, log)
            results.append(r)
            if "error" in r:
                print(f"{key}: FAILED after {r['wall_s']:.0f} s: {r['error'][-300:]}", flush=True)
            else:
                print(f"{key}: {r['tokens_per_s_per_gpu']:,.0f} tok/s, step {1e3 * r['step_s']:.1f} ms, "
                      f"host {1e3 * r['host_s']:.1f} ms, syncs {r['host_syncs']}, "
                      f"busy {r.get('gpu_busy') or 0:.0%}, {r['wall_s']:.0f} s", flush=True)
    text = f"\n## Proxy training step ({time.time() - start:.0f} s)\n\n" + table(results)
    print(text, flush=True)
    with open(os.path.join(args.out, "proxy_table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "proxy_speed.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    require_cuda("proxy_speed.py")
    main()

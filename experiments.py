"""The paper's three claims, reproduced at proxy scale: one command each, on one GPU.

    python experiments.py mup   # µP: the best LR stays put across widths 256-1024; SP's drifts; a depth check
    python experiments.py muon  # AdamW -> Muon at the decay vs AdamW, from one shared stable checkpoint
    python experiments.py fp8   # FP8 vs bf16: the final val gap against bf16's seed-to-seed spread
    python experiments.py mup --plan     # the runs and their predicted H200 time; nothing runs
    python experiments.py mup --full     # the full protocol (hours: run it again to continue)
    python experiments.py muon --decay-sft 0.6687   # the decays on the recipe's SFT share (chat source)

Each experiment's DEFAULT size fits one 10-minute call on one H200; `--full` is the complete
protocol, in as many calls as it takes (`--time-limit` stops a call cleanly, the next resumes).
Every training run is ordinary train.py training (sweep.py launches it). Output in --out
(default out/exp_NAME): report.md (tables and verdicts), NAME.png, results.json (every run's
final metrics) and runs/ (each run's train.py folder). docs/EXPERIMENTS.md has the protocols.
"""
import argparse
import ast
import fnmatch
import math
import os
import subprocess
import sys
import time

import sweep

PROXY = "config/proxy.py"
SFT_DATA = "data/proxy/chat-en"  # the proxy corpus's chat source (docs/CORPUS.md): the decay's SFT share


# ---------------------------------------------------------------------------------------
# Sizes. `train` holds train.py keys every run of the size shares.

MUP_SIZES = {
    # 3 widths x (µP, SP) x 6 LRs + a depth check, 1 seed, 250 steps x 8 x 1024 tokens
    # (2.0M tokens per run): ~6.5 min on one H200 (--plan). The µP grid is centred on an earlier
    # 300-step measurement's optima (3e-3 .. 1e-2 at widths 256-1024), SP's on its 1e-3 -> 3e-4.
    "default": dict(widths=(256, 512, 1024), n_layer=4, head_dim=64, seeds=(1,),
                    lrs_mup=[2.0 ** k for k in range(-10, -4)], lrs_sp=[2.0 ** k for k in range(-13, -7)],
                    depth_width=256, depths=(4, 8, 16),
                    train=dict(max_steps=250, global_batch=8, micro_batch=8, seq_len=1024)),
    # The full protocol: 4 widths to 2048, 8 LRs each, 2 seeds, depths 4-16, at the default's
    # 2.0M tokens per run: ~40 min on one H200, in parts (--time-limit). The proxy's HPO budget
    # (500 steps x 24 x 2048, 24.6M tokens per run, RECIPE §1) is 12x that: add --set max_steps=500
    # --set global_batch=24 --set micro_batch=12 --set seq_len=2048 (~3 h).
    "full": dict(widths=(256, 512, 1024, 2048), n_layer=4, head_dim=64, seeds=(1, 2),
                 lrs_mup=[2.0 ** k for k in range(-11, -3)], lrs_sp=[2.0 ** k for k in range(-15, -7)],
                 depth_width=256, depths=(4, 8, 12, 16),
                 train=dict(max_steps=250, global_batch=8, micro_batch=8, seq_len=1024)),
    # Seconds on a CPU (tests): 2 widths, 3 LRs, 3 steps.
    "toy": dict(widths=(32, 64), n_layer=2, head_dim=16, seeds=(1,),
                lrs_mup=[2.0 ** k for k in range(-7, -4)], lrs_sp=[2.0 ** k for k in range(-7, -4)],
                depth_width=32, depths=(2, 3),
                train=dict(model_preset="tiny", seq_len=32, log_interval=1, max_steps=3, global_batch=4, micro_batch=4,
                           eval_steps=1)),
}

# Muon alone with its update scaled to 0.8 instead of 0.2 (4x), at each restart LR; its control
# is that LR's AdamW arm (adamw_from), not a second copy of it.
MUON_RMS_ARMS = [dict(name=f"lr{k}_rms0.8", lr_divisor=k, decay_steps=200, muon_rms=0.8, adamw_from=f"lr{k}")
                 for k in (16, 4)]

MUON_SIZES = {
    # Width 512, a 600-step stable phase, 200-step decays (as an earlier 2-seed measurement), at
    # the recipe's restart 16x below the stable LR and at 4x below, 3 seeds; and the 0.8 arms: at
    # 0.2 Muon moved the hidden matrices ~0.2 of an AdamW group's update RMS in the first decay
    # steps of a 2026-12-01 H200 run (docs/EXPERIMENTS.md). ~7.5 min.
    "default": dict(width=512, n_layer=4, head_dim=64, stable_steps=600, seeds=(1, 2, 3),
                    conditions=[dict(name="lr16", lr_divisor=16, decay_steps=200),
                                dict(name="lr4", lr_divisor=4, decay_steps=200), *MUON_RMS_ARMS],
                    train=dict(global_batch=24, micro_batch=12)),
    # Longer stable phase, decays of 200 and 800 steps at both restart LRs, Muon at 0.8 RMS, 5 seeds.
    "full": dict(width=512, n_layer=4, head_dim=64, stable_steps=1000, seeds=(1, 2, 3, 4, 5),
                 conditions=[dict(name="lr16", lr_divisor=16, decay_steps=200),
                             dict(name="lr16_long", lr_divisor=16, decay_steps=800),
                             dict(name="lr4", lr_divisor=4, decay_steps=200),
                             dict(name="lr4_long", lr_divisor=4, decay_steps=800), *MUON_RMS_ARMS],
                 train=dict(global_batch=24, micro_batch=12)),
    "toy": dict(width=32, n_layer=2, head_dim=16, stable_steps=4, seeds=(1, 2),
                conditions=[dict(name="lr16", lr_divisor=16, decay_steps=4),
                            dict(name="lr16_rms0.8", lr_divisor=16, decay_steps=4, muon_rms=0.8, adamw_from="lr16")],
                train=dict(model_preset="tiny", seq_len=32, log_interval=1, global_batch=4, micro_batch=4, eval_steps=1)),
}

FP8_SIZES = {
    # The proxy and width 1024, bf16 vs native FP8, 3 seeds, 300 steps x 24 x 2048: ~7 min.
    # Each run ends in a linear decay to the recipe's 1e-5 floor over its last fifth (cooldown):
    # the final loss is then read at a low LR, as the recipe's models are, instead of at the
    # constant 1e-2. It did not narrow the per-seed gaps (±0.04 nats at width 1024 on one
    # H200): resolving a 0.5% gap takes many seeds (--seeds; docs/EXPERIMENTS.md).
    "default": dict(widths=(256, 1024), n_layer=4, head_dim=64, seeds=(1, 2, 3), precisions=("bf16", "fp8"),
                    cooldown=0.2, train=dict(max_steps=300, global_batch=24, micro_batch=12)),
    # 500 steps (the proxy's), 4 seeds: ~14 min. Add --fp8-backends native,te for TransformerEngine.
    "full": dict(widths=(256, 1024), n_layer=4, head_dim=64, seeds=(1, 2, 3, 4), precisions=("bf16", "fp8"),
                 cooldown=0.2, train=dict(max_steps=500, global_batch=24, micro_batch=12)),
    # On a CPU FP8 cannot run: the toy's FP8 arm is fp8.py's emulated path (fp8_emulate, for
    # tests), so the runner and the report are exercised, not FP8 numerics.
    "toy": dict(widths=(32,), n_layer=2, head_dim=16, seeds=(1, 2), precisions=("bf16", "fp8_emulated"),
                cooldown=0.5, train=dict(model_preset="tiny", seq_len=32, log_interval=1, max_steps=4, global_batch=4,
                                         micro_batch=4, eval_steps=1)),
}

PRECISIONS = {  # train.py keys of each arm of the FP8 experiment (RECIPE §4)
    "bf16": dict(dtype="bfloat16", fp8=False),
    "fp8": dict(dtype="bfloat16", fp8=True, fp8_backend="native"),
    "fp8_te": dict(dtype="bfloat16", fp8=True, fp8_backend="te"),
    "fp8_out": dict(dtype="bfloat16", fp8=True, fp8_backend="native", fp8_output=True),  # + the output layer
    "fp8_emulated": dict(dtype="bfloat16", fp8=True, fp8_backend="native", fp8_emulate=True),
}

# Every size: only the final val pass unless a run says otherwise, one log line per 10 steps,
# no checkpoint unless stopped part-way (the result is in metrics.jsonl; at width 2048 a final
# checkpoint is 5.8 GB and ~17 s), except the stable phase the decays start from. Every run
# scores the same validation windows (val_seed): seeds vary the init and data order only.
COMMON = dict(eval_interval=0, log_interval=10, ckpt_interval=0, keep_last=1, save_final=False, val_seed=1)


def shape(width, n_layer, head_dim):
    """model_overrides of a width: head dim fixed, KV heads = heads / 4, FFN 2.5 x width (RECIPE §1)."""
    n_head = width // head_dim
    return dict(d_model=width, n_layer=n_layer, n_head=n_head, n_kv_head=max(1, n_head // 4),
                d_ffn=5 * width // 2)


# ---------------------------------------------------------------------------------------
# Cost model: one H200, train.py compiled, bf16, the 129,280-id vocabulary, seq 2048, measured
# (docs/measurements/2026-12-01_h200_experiments_calibration.txt). A step costs STEP_S plus
# its tokens x US_PER_TOKEN. One compiled proxy process already keeps the GPU busy (eight side
# by side: 880k tokens/s together, 920k alone), so runs side by side share this throughput; a
# second worker only hides the other's start, compile, final val and checkpoint.

STEP_S = 4.2e-3
US_PER_TOKEN = {(256, 4): 1.005, (512, 4): 1.463, (1024, 4): 2.472, (2048, 4): 5.149,
                (256, 8): 1.200, (256, 16): 1.595}  # (width, layers) -> microseconds per token
FP8_FACTOR = {256: 1.11, 1024: 0.98}  # native FP8 / bf16 per-token time (830k vs 920k, 400k vs 391k)
MUON_STEP_S = 13.6e-3  # AdamW+Muon minus AdamW per step at width 512 (548k vs 646k tokens/s)
COMPILE_S = 30  # torch.compile of a new shape in a worker: 5-40 s measured
RUN_S = 1.5  # a run's config, data, model, final val and report
CKPT_BYTES_PER_S = 350e6  # final checkpoint (fp32 weights + Adam moments), fsynced: 5.2 GB in 15 s


def us_per_token(width, n_layer, vocab=129_280, head_dim=64, seq_len=2048):
    if (width, n_layer) in US_PER_TOKEN and vocab == 129_280:
        return US_PER_TOKEN[(width, n_layer)]
    # Elsewhere the fit through the 4-layer widths: 0.61 us/token of vocabulary-sized
    # element-wise work (the loss) plus the FLOPs at 616 TFLOP/s.
    d, n_head = width, width // head_dim
    n_kv, ffn = max(1, n_head // 4), 5 * width // 2
    params = vocab * d + n_layer * (d * (n_head + 2 * n_kv) * head_dim + d * d + 3 * d * ffn + 2 * d) + d
    flops = 6 * params + 12 * n_layer * d * seq_len
    return 0.61 * vocab / 129_280 + flops / 616e6


def predict(run, n_sources):
    """(GPU seconds of compute, seconds of overhead) of one run on one H200."""
    o = run.overrides
    mo = o.get("model_overrides", {})
    width, n_layer = mo.get("d_model", 256), mo.get("n_layer", 4)
    vocab, seq = mo.get("vocab_size", 129_280), o.get("seq_len", 2048)
    us = us_per_token(width, n_layer, vocab, seq_len=seq) * (FP8_FACTOR.get(width, 1.0) if o.get("fp8") else 1.0)
    steps = o["max_steps"] - o.get("start_step", 0)
    step_s = STEP_S + o["global_batch"] * seq * us * 1e-6
    if o.get("muon_switch_step") is not None:
        step_s += MUON_STEP_S
    evals = steps // o["eval_interval"] if o.get("eval_interval") else 1
    eval_s = evals * n_sources * o.get("eval_steps", 8) * o["micro_batch"] * seq * us * 1e-6 / 3
    params = vocab * width + n_layer * 13 * width * width  # close enough for the checkpoint size
    ckpt_s = 12 * params / CKPT_BYTES_PER_S if o.get("save_final", True) else 0.0
    return steps * step_s + eval_s, RUN_S + ckpt_s


def plan(runs, workers, n_sources):
    """Predicted wall seconds of a sweep on one H200, and a line per model shape."""
    groups = {}
    for run in runs:
        compute, overhead = predict(run, n_sources)
        g = groups.setdefault(run.compile_key(), [0, 0.0, 0.0, run])
        g[0] += 1
        g[1] += compute
        g[2] += overhead
    compute = sum(g[1] for g in groups.values())
    overhead = sum(g[2] for g in groups.values()) + COMPILE_S * len(groups)
    hidden = 0.75 if workers > 1 else 0.0  # another worker's GPU work covers most of it
    total = 15 + COMPILE_S + compute + (1 - hidden) * overhead  # + worker start and first compile
    lines = []
    for n, c, _, run in groups.values():
        mo = run.overrides.get("model_overrides", {})
        what = ", ".join(f"{k}={run.overrides[k]}" for k in ("mup", "fp8", "muon_switch_step")
                         if k in run.overrides)
        lines.append(f"  {n:4d} runs  width {mo.get('d_model', 256)}, {mo.get('n_layer', 4)} layers"
                     f"{', ' + what if what else ''}: {c:7.0f} s of GPU compute")
    return total, compute, lines


# ---------------------------------------------------------------------------------------
# Statistics.

# Two-sided 95% quantiles of Student's t, df 1..30 (scipy.stats.t.ppf(0.975, df)).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_std(xs):
    n = len(xs)
    if n == 0:
        return None, None
    m = sum(xs) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else None)


def t_interval(xs):
    """(mean, half-width of its 95% t-interval); half-width None below 2 values."""
    m, s = mean_std(xs)
    if s is None:
        return m, None
    t = T975[len(xs) - 2] if len(xs) - 1 <= len(T975) else 1.96
    return m, t * s / math.sqrt(len(xs))


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def pm(xs, digits=4):
    m, s = mean_std(xs)
    return "-" if m is None else fmt(m, digits) + (f" ± {s:.{digits}f}" if s is not None else "")


def _sci(xs):
    m, s = mean_std(xs)
    return "-" if m is None else f"{m:.3e}" + (f" ± {s:.1e}" if s is not None else "")


def optimum(lrs, losses):
    """Best LR of one curve: the grid point, and a parabola's vertex through it and its two
    neighbours in log2(LR) (within half a grid step). losses[i]: math.inf = diverged (worse than
    any finite loss, so it brackets an optimum), None = not run yet (brackets nothing)."""
    pts = [(i, v) for i, v in enumerate(losses) if v is not None and v != math.inf]
    if not pts:
        return None
    i, best = min(pts, key=lambda p: p[1])
    x = math.log2(lrs[i])
    # Bracketed: a worse (or diverged) run on each side. At the grid's end, or next to a run not
    # done yet, the optimum's position is a bound only.
    edge = i in (0, len(lrs) - 1) or losses[i - 1] is None or losses[i + 1] is None
    if not edge and losses[i - 1] != math.inf and losses[i + 1] != math.inf:
        ym, yp = losses[i - 1], losses[i + 1]
        curvature = ym - 2 * best + yp
        if curvature > 0:
            x += (ym - yp) / (2 * curvature)
    return {"index": i, "lr": lrs[i], "lr_fit": 2.0 ** x, "loss": best, "edge": edge}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------------------------------
# 1. µP learning-rate transfer, and the depth check.

def mup_runs(size, common, root):
    runs = {}

    def add(width, n_layer, mup_on, lr, seed):
        name = f"w{width}_L{n_layer}_{'mup' if mup_on else 'sp'}_lr{lr:.3e}_s{seed}"
        runs[name] = sweep.Run(name, PROXY, {
            **common, "model_overrides": {**common.get("model_overrides", {}),
                                          **shape(width, n_layer, size["head_dim"])},
            "mup": mup_on, "learning_rate": lr, "seed": seed},
            info=dict(width=width, n_layer=n_layer, mup=mup_on, lr=lr, seed=seed))
    for mup_on in (True, False):
        for width in size["widths"]:
            for lr in size["lrs_mup" if mup_on else "lrs_sp"]:
                for seed in size["seeds"]:
                    add(width, size["n_layer"], mup_on, lr, seed)
    for n_layer in size["depths"]:  # the depth check reuses the width runs at the proxy's depth
        for lr in size["lrs_mup"]:
            for seed in size["seeds"]:
                add(size["depth_width"], n_layer, True, lr, seed)
    return list(runs.values())


def _curve(results, lrs, **match):
    """Mean val over seeds at each LR of the runs matching `match`: math.inf if any seed
    diverged, None if not run yet."""
    out = []
    for lr in lrs:
        vals = [r["val"] for r in results if r["info"]["lr"] == lr
                and all(r["info"][k] == v for k, v in match.items())]
        out.append(None if not vals else math.inf if any(v is None for v in vals) else sum(vals) / len(vals))
    return out


def _cell(x):
    return "diverged" if x == math.inf else fmt(x)


def mup_report(size, results, root):
    res = list(results.values())
    rows, verdicts, curves = [], [], {}
    panels = [("µP", True, "width", size["widths"], size["lrs_mup"]),
              ("SP", False, "width", size["widths"], size["lrs_sp"]),
              ("µP depth", True, "n_layer", size["depths"], size["lrs_mup"])]
    for title, mup_on, axis, values, lrs in panels:
        opts = {}
        for v in values:
            match = dict(mup=mup_on, width=v, n_layer=size["n_layer"]) if axis == "width" else \
                dict(mup=mup_on, width=size["depth_width"], n_layer=v)
            curve = _curve(res, lrs, **match)
            curves[(title, v)] = (lrs, curve)
            opts[v] = optimum(lrs, curve)
            o = opts[v]
            rows.append(f"| {title} | {v} | " + (" | ".join([
                f"{o['lr']:.3g}", f"{o['lr_fit']:.3g}", fmt(o["loss"]), "yes: widen the grid" if o["edge"] else "no"])
                if o else "- | - | - | -") + " |")
        found = [v for v in values if opts[v]]
        if len(found) < 2:
            verdicts.append(f"- {title}: fewer than two {axis} values have results yet")
            continue
        grid = [math.log2(opts[v]["lr"]) for v in found]
        fit = [math.log2(opts[v]["lr_fit"]) for v in found]
        spread = max(grid) - min(grid)
        drift = fit[-1] - fit[0]
        lo, hi = found[0], found[-1]
        if title == "SP":
            verdicts.append(f"- SP: the best LR moves {grid[-1] - grid[0]:+.0f} grid points from {axis} {lo} "
                            f"to {hi} ({drift:+.2f} fitted); published SP drifts by >= 2: "
                            f"{'yes' if abs(grid[-1] - grid[0]) >= 2 else 'no'}")
            continue
        losses = [opts[v]["loss"] for v in found]
        falls = all(b < a for a, b in zip(losses, losses[1:]))
        verdicts.append(f"- {title}: the best LR spans {spread:.0f} grid point(s) over {axis} {lo}..{hi} "
                        f"(fitted drift {drift:+.2f}); transfer (within one grid point): "
                        f"{'yes' if spread <= 1 else 'no'}"
                        + (f"; loss at the optimum falls as width grows: {'yes' if falls else 'no'} "
                           f"({' -> '.join(fmt(x, 3) for x in losses)})" if axis == "width" else ""))
        if any(opts[v]["edge"] for v in found):
            verdicts.append(f"  - {title}: an optimum sits at the grid's edge, so its position is a bound only")

    grids = []
    for title, mup_on, axis, values, lrs in panels:
        grids += [f"### {title}: val loss by learning rate ({axis} per row; - = not run yet)", "",
                  f"| {axis} | " + " | ".join(f"{lr:.3g}" for lr in lrs) + " |",
                  "|" + " --- |" * (len(lrs) + 1)]
        grids += [f"| {v} | " + " | ".join(_cell(x) for x in curves[(title, v)][1]) + " |" for v in values]
        grids.append("")

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (title, mup_on, axis, values, lrs) in zip(axes, panels):
        finite = [x for v in values for x in curves[(title, v)][1] if x not in (None, math.inf)]
        for j, v in enumerate(values):
            lrs_v, curve = curves[(title, v)]
            color = plt.cm.viridis(0.85 * j / max(1, len(values) - 1))  # the last stays visible on white
            pts = [(lr, x) for lr, x in zip(lrs_v, curve) if x not in (None, math.inf)]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=f"{axis} {v}")
                best = min(pts, key=lambda p: p[1])
                ax.plot(*best, marker="*", ms=14, color=color)
            if finite:  # diverged runs: an x at the top of the panel
                top = min(max(finite), min(finite) + 3)
                bad = [lr for lr, x in zip(lrs_v, curve) if x == math.inf]
                ax.plot(bad, [top] * len(bad), "x", color=color)
        ax.set_xscale("log", base=2)
        if finite:
            ax.set_ylim(min(finite) - 0.05, min(max(finite), min(finite) + 3) + 0.1)
        ax.set_xlabel("learning rate (µP base = embedding LR)" if mup_on else "learning rate")
        ax.set_ylabel("final val loss")
        ax.set_title(title + (f" (width {size['depth_width']})" if axis == "n_layer" else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(root, "mup.png"), dpi=110)
    plt.close(fig)
    return (["## Optimum per width (and per depth)", "",
             "| parameterization | width / layers | best LR (grid) | best LR (fitted) | val loss there | at the grid's edge |",
             "| --- | --- | --- | --- | --- | --- |", *rows, "", "## Verdict", "", *verdicts, "",
             "![val loss against learning rate](mup.png)", "", *grids], verdicts)


# ---------------------------------------------------------------------------------------
# 2. AdamW -> Muon at the decay boundary, from one stable checkpoint.

def decay_keys(start, length):
    """The recipe's decay phase shape at any length (RECIPE §3: of 20k steps, a 500-step warmup
    from 1e-6, a 10k-step linear decay to the floor, the floor for the rest)."""
    warmup = max(1, round(length / 40))
    return dict(start_step=start, max_steps=start + length, warmup_steps=warmup,
                decay_start_step=start + warmup, decay_steps=length // 2)


def muon_runs(size, common, root):
    mo = {**common.get("model_overrides", {}), **shape(size["width"], size["n_layer"], size["head_dim"])}
    import train
    stable_lr = train.load_config(PROXY).learning_rate  # the stable phase runs config/proxy.py's
    stable = sweep.Run("stable", PROXY, {**common, "model_overrides": mo, "max_steps": size["stable_steps"],
                                         "save_final": True,
                                         "eval_interval": max(1, size["stable_steps"] // 4)},
                       info=dict(phase="stable"), keep_checkpoint=True)  # the decays start from it
    runs = [stable]
    start = size["stable_steps"]
    for cond in size["conditions"]:
        length = cond["decay_steps"]
        # A condition with adamw_from varies Muon only: its control is that condition's AdamW arm.
        for arm in ("muon",) if cond.get("adamw_from") else ("adamw", "muon"):
            for seed in size["seeds"]:
                keys = {**common, "model_overrides": mo, "init_from": os.path.join(root, "runs", "stable"),
                        "learning_rate": stable_lr / cond["lr_divisor"], "seed": seed,
                        "eval_interval": max(1, length // 2), **decay_keys(start, length)}
                keys["update_rms_step"] = start  # both arms log their update RMS per role there
                if arm == "muon":
                    keys["muon_switch_step"] = start  # Muon from the first decay step
                    if "muon_rms" in cond:
                        keys["muon_matched_adamw_rms"] = cond["muon_rms"]
                if size.get("decay_data"):
                    keys["data"] = size["decay_data"]
                runs.append(sweep.Run(f"{cond['name']}_{arm}_s{seed}", f"config/proxy_decay_{arm}.py", keys,
                                      info=dict(condition=cond["name"], arm=arm, seed=seed, **cond),
                                      after=("stable",)))
    return runs


def paired(a, b, src=None):
    """Per-seed differences a - b (dicts seed -> result) of the mix val, or of one source's."""
    def value(r):
        return r["val"] if src is None else r["val_by_source"].get(src)
    return {s: value(a[s]) - value(b[s]) for s in sorted(set(a) & set(b))
            if value(a[s]) is not None and value(b[s]) is not None}


def muon_report(size, results, root):
    res = [r for r in results.values() if r["info"].get("arm")]
    stable = results.get("stable")
    sources = sorted({s for r in res for s in r["val_by_source"]})
    table = ["## Final val loss per arm (mean ± std over seeds)", "",
             (f"Shared stable phase (AdamW, {size['stable_steps']} steps): val {fmt(stable['val'])}."
              if stable else "The stable phase has not finished yet.")
             + (f" Decay data: {size['decay_data']}; the decays' val mix is theirs, so compare the arms "
                f"with each other, not with the stable phase's val." if size.get("decay_data") else
                " The decays train on the stable phase's mix."), "",
             "| condition | arm | seeds | val (mix) | " + " | ".join(sources) + " |",
             "|" + " --- |" * (4 + len(sources))]
    diffs = ["## Muon - AdamW (paired by seed: same data order from the same checkpoint; 95% t-interval)", "",
             "| condition | source | Muon - AdamW | 95% interval | seeds |", "| --- | --- | --- | --- | --- |"]
    verdicts, rms_rows, per_condition = [], [], []
    for cond in size["conditions"]:
        by_arm = {arm: {r["info"]["seed"]: r for r in res if r["info"]["arm"] == arm and r["info"]["condition"]
                        == (cond.get("adamw_from", cond["name"]) if arm == "adamw" else cond["name"])}
                  for arm in ("adamw", "muon")}
        for arm, runs in by_arm.items():
            if arm == "adamw" and cond.get("adamw_from"):
                continue  # its AdamW arm is the row of the condition it names
            table.append(f"| {cond['name']} | {arm} | {len(runs)} | "
                         + pm([r["val"] for r in runs.values() if r["val"] is not None]) + " | "
                         + " | ".join(pm([r["val_by_source"][s] for r in runs.values() if s in r["val_by_source"]])
                                      for s in sources) + " |")
        for src in [None] + sources:
            d = paired(by_arm["muon"], by_arm["adamw"], src)
            m, h = t_interval(list(d.values()))
            ci = f"[{m - h:+.4f}, {m + h:+.4f}]" if h is not None else "-"
            diffs.append(f"| {cond['name']} | {src or 'mix'} | " + (f"{m:+.4f}" if m is not None else "-")
                         + f" | {ci} | {len(d)} |")
            if src is None:
                per_condition.append((cond, d, m, h))
                if m is not None:
                    better = ("Muon better" if h is not None and m + h < 0 else
                              "AdamW better" if h is not None and m - h > 0 else "no difference resolved")
                    rms = f", Muon's update scaled to {cond['muon_rms']} RMS" if "muon_rms" in cond else ""
                    verdicts.append(f"- {cond['name']} (decay LR = stable / {cond['lr_divisor']}, "
                                    f"{cond['decay_steps']} steps{rms}): Muon - AdamW = {m:+.4f} nats {ci} over "
                                    f"{len(d)} seeds: {better}")
        steps = sorted({u["step"] for runs in by_arm.values() for r in runs.values() for u in r["update_rms"]})
        for step in steps:
            cells = []
            for key in ("update_rms_matrix", "update_rms_embedding"):
                for arm in ("adamw", "muon"):
                    cells.append(_sci([u[key] for r in by_arm[arm].values() for u in r["update_rms"]
                                       if u["step"] == step and key in u]))
            rms_rows.append(f"| {cond['name']} | {step} | " + " | ".join(cells) + " |")
    lines = table + [""] + diffs + [
        "", "## Verdict", "", *verdicts, "",
        "## Update RMS in the first decay steps (mean ± std over seeds)", "",
        "train.py logs the update RMS of each parameter role, whichever optimizer holds it, for 5 "
        "steps on each side of `update_rms_step`, here the decay's first step in both arms (only "
        "the steps after it fall in this phase). Hidden matrices: AdamW in one arm, Muon in the other; "
        "the embedding is on AdamW in both.", "",
        "| condition | step | matrices, AdamW arm | matrices, Muon arm | embedding, AdamW arm | embedding, Muon arm |",
        "| --- | --- | --- | --- | --- | --- |", *rms_rows, "", "![decay curves](muon.png)", ""]

    plt = _plt()
    fig, (ax_c, ax_d) = plt.subplots(1, 2, figsize=(12, 4.2))
    if stable:
        pts = [(s, v) for s, v in stable["val_curve"] if v is not None]
        ax_c.plot(*zip(*pts), "o-", color="gray", label="stable (shared)")
    styles = ["-", "--", ":", "-."]
    for ci, (cond, d, m, h) in enumerate(per_condition):
        for arm, color in (("adamw", "tab:blue"), ("muon", "tab:red")):
            runs = sorted((r for r in res if r["info"]["condition"] == cond["name"] and r["info"]["arm"] == arm),
                          key=lambda r: r["info"]["seed"])
            for k, r in enumerate(runs):
                pts = [(s, v) for s, v in r["val_curve"] if v is not None]
                if pts:
                    ax_c.plot(*zip(*pts), styles[ci % 4], color=color, alpha=0.6,
                              label=f"{cond['name']} {arm}" if k == 0 else None)
        if d:
            ax_d.plot([ci] * len(d), list(d.values()), "o", color="tab:purple", alpha=0.6)
            if h is not None:
                ax_d.errorbar([ci + 0.15], [m], yerr=[h], fmt="s", color="black", capsize=4)
    ax_c.set_xlabel("global step")
    ax_c.set_ylabel("val loss (mix)")
    ax_c.legend(fontsize=7)
    ax_d.axhline(0, color="gray", lw=0.8)
    ax_d.set_xticks(range(len(per_condition)), [c["name"] for c, *_ in per_condition])
    ax_d.set_xlim(-0.5, len(per_condition) - 0.5)
    ax_d.set_ylabel("final val, Muon - AdamW (< 0: Muon better)")
    ax_d.set_title("per seed (dots), mean and 95% interval (square)")
    fig.tight_layout()
    fig.savefig(os.path.join(root, "muon.png"), dpi=110)
    plt.close(fig)
    return lines, verdicts


# ---------------------------------------------------------------------------------------
# 3. FP8 vs bf16.

def cooldown_keys(max_steps, fraction):
    """Constant LR, then a linear decay to the recipe's floor (1e-5, RECIPE §3) over the last
    `fraction` of the steps: a one-run WSD."""
    start = max_steps - max(1, round(max_steps * fraction))
    return dict(decay_start_step=start, decay_steps=max_steps - start, min_lr=1e-5, decay_shape="linear")


def fp8_runs(size, common, root):
    runs = []
    cooldown = cooldown_keys(common["max_steps"], size["cooldown"]) if size.get("cooldown") else {}
    for width in size["widths"]:
        mo = {**common.get("model_overrides", {}), **shape(width, size["n_layer"], size["head_dim"])}
        for precision in size["precisions"]:
            for seed in size["seeds"]:
                runs.append(sweep.Run(f"w{width}_{precision}_s{seed}", PROXY, {
                    **common, "model_overrides": mo, "seed": seed, **cooldown, **PRECISIONS[precision]},
                    info=dict(width=width, precision=precision, seed=seed)))
    return runs


PARITY_NATS = math.log(1.005)  # the paper's bound: FP8 at most 0.5% worse in perplexity


def parity_bound(mean, half_width):
    """The paper's claim is one-sided (FP8 no more than 0.5% worse), so a gap in FP8's favour
    meets it. Returns (the mean gap meets it, the 95% interval's upper end meets it) as yes/no;
    only the second says the seeds show it."""
    small = "yes" if mean <= PARITY_NATS else "no"
    shown = "-" if half_width is None else ("yes" if mean + half_width <= PARITY_NATS else "no")
    return small, shown


def fp8_report(size, results, root):
    res = list(results.values())
    base = size["precisions"][0]
    lines = ["## Final val loss (mix), mean ± std over seeds", "",
             "| width | " + " | ".join(size["precisions"]) + " |", "|" + " --- |" * (1 + len(size["precisions"]))]
    gaps = [f"## Gap to {base} (paired by seed: same init and data)", "",
            f"| width | arm | mean gap (nats) | 95% interval | perplexity gap | {base} seed std | within the seed spread "
            "| mean ≤ +0.5% | shown ≤ +0.5% (interval) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for width in size["widths"]:
        by = {p: {r["info"]["seed"]: r["val"] for r in res if r["info"]["width"] == width
                  and r["info"]["precision"] == p and r["val"] is not None} for p in size["precisions"]}
        lines.append(f"| {width} | " + " | ".join(pm(list(by[p].values())) for p in size["precisions"]) + " |")
        _, spread = mean_std(list(by[base].values()))
        for p in size["precisions"][1:]:
            seeds = sorted(set(by[p]) & set(by[base]))
            d = [by[p][s] - by[base][s] for s in seeds]
            m, h = t_interval(d)
            if m is None:
                gaps.append(f"| {width} | {p} | - | - | - | - | - | - | - |")
                continue
            ppl = math.exp(m) - 1
            within = "-" if spread is None else ("yes" if abs(m) <= spread else "no")
            ci = f"[{m - h:+.4f}, {m + h:+.4f}]" if h is not None else "-"
            small, shown = parity_bound(m, h)
            gaps.append(f"| {width} | {p} | {m:+.4f} | {ci} | {ppl:+.2%} | {fmt(spread)} | {within} | {small} | {shown} |")
            verdicts.append(f"- width {width}, {p}: val {m:+.4f} nats {ci} vs {base} ({ppl:+.2%} perplexity) "
                            f"over {len(d)} seeds; {base}'s seed-to-seed std {fmt(spread)}; within the "
                            f"spread: {within}; mean at most 0.5% worse: {small}; shown at most 0.5% "
                            f"worse (the interval's upper end): {shown}")
    plt = _plt()
    n = len(size["widths"])
    fig, axes = plt.subplots(1, 2 * n, figsize=(5.5 * 2 * n, 4), squeeze=False)
    colors = dict(zip(size["precisions"], ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for ax, width in zip(axes[0][n:], size["widths"]):  # final val per seed, one line per seed
        for seed in size["seeds"]:
            pts = [(k, r["val"]) for k, p in enumerate(size["precisions"]) for r in res
                   if r["info"]["width"] == width and r["info"]["precision"] == p
                   and r["info"]["seed"] == seed and r["val"] is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", color="gray", alpha=0.7)
                ax.annotate(f"seed {seed}", pts[-1], textcoords="offset points", xytext=(6, 0), fontsize=7)
        ax.set_xticks(range(len(size["precisions"])), size["precisions"])
        ax.set_xlim(-0.4, len(size["precisions"]) - 0.4)
        ax.set_title(f"width {width}: final val, paired by seed")
        ax.set_ylabel("final val loss (mix)")
    for ax, width in zip(axes[0][:n], size["widths"]):
        for p in size["precisions"]:
            runs = [r for r in res if r["info"]["width"] == width and r["info"]["precision"] == p]
            for k, r in enumerate(runs):
                pts = [(s, v) for s, v in r["train_curve"] if v is not None]
                if pts:
                    ax.plot(*zip(*pts), ".-", color=colors[p], alpha=0.6, label=p if k == 0 else None)
        ax.set_title(f"width {width}")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(root, "fp8.png"), dpi=110)
    plt.close(fig)
    return lines + [""] + gaps + ["", "## Verdict", "", *verdicts, "", "![train loss, and final val per seed](fp8.png)", ""], verdicts


EXPERIMENTS = {
    "mup": (MUP_SIZES, mup_runs, mup_report, "µP learning-rate transfer across width, and a depth check"),
    "muon": (MUON_SIZES, muon_runs, muon_report, "AdamW -> Muon at the decay boundary vs AdamW"),
    "fp8": (FP8_SIZES, fp8_runs, fp8_report, "FP8 vs bf16 parity"),
}


# ---------------------------------------------------------------------------------------
# Command line.

def _data_vocab(data):
    """The first source's tokenizer size (the toy's embedding matches it); None if unknown."""
    try:
        meta = sweep.read_json(os.path.join(next(iter(data)), "meta.json"))
        return int(meta["tokenizer"]["vocab_size"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


def _mix(flag, text):
    """A --data style option: a Python dict of prepared folders to weights, or None."""
    if text is None:
        return None
    try:
        mix = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        mix = None
    if not isinstance(mix, dict) or not mix:
        raise ValueError(f"{flag} must be a Python dict of prepared folders to weights, e.g. "
                         f"\"{{'data/default': 1.0}}\", got {text!r}")
    return mix


def sft_mix(stable, share, sft_data=SFT_DATA):
    """The decay phase's mix as the recipe builds it (RECIPE §5: 66.87% SFT, the rest the
    pretraining sources): `share` on the chat data, the stable mix scaled into the rest."""
    total = sum(stable.values())
    return {sft_data: share, **{k: round(w / total * (1 - share), 6) for k, w in stable.items()}}


def build(args):
    """-> (size name, size dict, runs, root, data dict or None); raises ValueError on bad input."""
    import train  # --set values are parsed and checked as train.py's own --key=value
    sizes, make_runs, _, _ = EXPERIMENTS[args.experiment]
    size_name = "full" if args.full else "toy" if args.toy else "default"
    size = sizes[size_name]
    root = os.path.normpath(args.out or os.path.join(
        "out", f"exp_{args.experiment}" + ("" if size_name == "default" else f"_{size_name}")
        + ("_sft" if args.decay_sft is not None else "")))  # other decay data: another sweep
    common = {**COMMON, **size["train"]}
    data = _mix("--data", args.data)
    if data:
        common["data"] = data
    if args.decay_data is not None:
        if args.experiment != "muon":
            raise ValueError("--decay-data is for the muon experiment (the data of its decay phase)")
        size = {**size, "decay_data": _mix("--decay-data", args.decay_data)}
    if args.sft_data is not None and args.decay_sft is None:
        raise ValueError("--sft-data is the data of --decay-sft SHARE: give the share too")
    if args.decay_sft is not None:
        if args.experiment != "muon" or args.decay_data is not None:
            raise ValueError("--decay-sft is for the muon experiment, in place of --decay-data")
        if not 0 < args.decay_sft < 1:
            raise ValueError(f"--decay-sft is the decay mix's SFT share, between 0 and 1 (the recipe's "
                             f"0.6687), got {args.decay_sft}")
        size = {**size, "decay_data": sft_mix(data or train.load_config(PROXY).data, args.decay_sft,
                                              args.sft_data or SFT_DATA)}
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        size = {**size, "seeds": tuple(range(1, args.seeds + 1))}  # runs of seeds 1..N: the first are shared
    if size_name == "toy":  # the tiny model's embedding sized to the data's tokenizer
        vocab = _data_vocab(data or {})
        if vocab:
            common["model_overrides"] = {"vocab_size": vocab}
    extra = {}
    for item in args.set:
        try:
            key, value = train.parse_override("--" + item)
        except train.ConfigError as e:
            raise ValueError(f"--set {item!r}: {e}; write it as KEY=VALUE") from None
        extra[key] = value
    common.update(extra)
    if args.experiment == "fp8" and args.fp8_backends:
        backends = args.fp8_backends.split(",")
        arms = {"native": "fp8", "te": "fp8_te", "native_out": "fp8_out"}
        bad = [b for b in backends if b not in arms]
        if bad:
            raise ValueError(f"--fp8-backends: unknown backend(s) {bad}; choose from {', '.join(arms)}")
        size = {**size, "precisions": (size["precisions"][0],) + tuple(arms[b] for b in backends)}
    runs = make_runs(size, common, root)
    for run in runs:  # the sweep starts the longest runs first, so the last one to end is short
        run.cost_s = sum(predict(run, len(common.get("data") or {"": 1})))
    clashes = sorted({k for r in runs for k in extra if r.overrides[k] != extra[k]})
    if clashes:
        raise ValueError(f"--set {', '.join(clashes)}: this experiment sets that per run; "
                         f"change the size in experiments.py instead")
    return size_name, size, runs, root, common.get("data")


def precheck(runs):
    """FP8 arms need an FP8 GPU, the te backend TransformerEngine: say so before any run starts."""
    fp8_runs = [r for r in runs if r.overrides.get("fp8") and not r.overrides.get("fp8_emulate")]
    if not fp8_runs:
        return
    import importlib.util
    import torch
    import fp8
    device = fp8_runs[0].overrides.get("device", "auto")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        fp8.check_fp8_supported(device)
    except fp8.FP8UnsupportedError as e:
        raise ValueError(f"{e} (on a CPU, --toy runs the FP8 arm emulated)") from None
    if any(r.overrides.get("fp8_backend") == "te" for r in fp8_runs) and \
            importlib.util.find_spec("transformer_engine") is None:
        raise ValueError("--fp8-backends te needs TransformerEngine installed "
                         "(gpu_tests/te_carry.sh brings it onto an offline GPU machine)")


def select_runs(runs, patterns):
    """The runs whose names match one of the comma-separated shell patterns (`--only`), with
    the runs they wait for (a decay's stable phase), in the sweep's order. Each pattern must
    match a run."""
    wanted = [p for p in patterns.split(",") if p]
    unmatched = [p for p in wanted if not any(fnmatch.fnmatchcase(r.name, p) for r in runs)]
    if not wanted or unmatched:
        names = ", ".join(r.name for r in runs[:12]) + (", ..." if len(runs) > 12 else "")
        raise ValueError(f"--only {patterns!r}: {', '.join(map(repr, unmatched)) or 'no pattern'} "
                         f"matches no run of this sweep; its runs: {names} (--plan lists them all)")
    chosen = {r.name for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in wanted)}
    by_name = {r.name: r for r in runs}
    todo = list(chosen)
    while todo:
        for dep in by_name[todo.pop()].after:
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return [r for r in runs if r.name in chosen]


def finished_results(runs, root):
    """{name: result} of the runs with a result.json in root, as the sweep wrote them. With
    --report-only the settings are not compared with today's: each result carries its own."""
    if not os.path.isdir(os.path.join(root, "runs")):
        raise ValueError(f"--report-only: no runs under {root}/runs: give --out the sweep folder")
    return sweep.finished_results(runs, root)


def _git_commit():
    """The checkout's commit, marked when tracked files differ from it. XMODEL_COMMIT wins: a
    tree copied onto another machine (gpu_tests/) can carry a .git that is not its own."""
    if os.environ.get("XMODEL_COMMIT"):
        return os.environ["XMODEL_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + (" + uncommitted changes" if dirty else "")) if head else "unknown"


def write_outputs(args, size_name, size, runs, root, results, unfinished, seconds):
    """report.md, NAME.png, results.json in root; returns the verdict lines."""
    _, _, make_report, title = EXPERIMENTS[args.experiment]
    os.makedirs(root, exist_ok=True)
    body, verdicts = make_report(size, results, root)
    devices = sorted({r["device"] for r in results.values()})
    gpu_s = sum(r["seconds"] for r in results.values())
    command = sweep.shell_join(["python", "experiments.py", *args.argv])
    head = [f"# {title} ({size_name} size)", "",
            f"- command: `{command}`",
            f"- machine: {', '.join(devices) or '-'}; commit {_git_commit()}; "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
            f"- runs finished: {len(results)} of {len(runs)}"
            + (f" ({len(unfinished)} not: run the same command again to continue)" if unfinished else ""),
            f"- this call {seconds:.0f} s; the finished runs' own time {gpu_s:.0f} s (several run at once)",
            f"- every run: {', '.join(f'`{c}`' for c in sorted({r.config for r in runs}))} + its "
            f"overrides (results.json, runs/NAME/run.json); its train.py log in runs/NAME/train.log", ""]
    with open(os.path.join(root, "report.md"), "w") as f:
        f.write("\n".join(head + body) + "\n")
    keep = ("name", "config", "overrides", "info", "steps", "val", "val_by_source", "train_loss",
            "diverged", "tokens_per_s", "seconds", "device", "update_rms")
    sweep.write_json(os.path.join(root, "results.json"), {
        "experiment": args.experiment, "size": size_name, "command": command,
        "runs": [{k: results[r.name].get(k) for k in keep} for r in runs if r.name in results],
        "unfinished": unfinished})
    return verdicts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the full protocol (runs for hours; resumable)")
    size.add_argument("--toy", action="store_true", help="a seconds-long CPU version (tests, a first look)")
    p.add_argument("--out", default=None, help="sweep folder (default out/exp_NAME[_full|_toy])")
    p.add_argument("--data", default=None, help="data mix for every run, e.g. \"{'data/default': 1.0}\" "
                   "(default: config/proxy.py's)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default 2 on a GPU, 1 on a CPU)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly after this long (running runs checkpoint; the next call resumes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a train.py key for every run, e.g. --set compile=False (repeatable)")
    p.add_argument("--decay-data", default=None, help="muon only: the decay phase's mix, e.g. with a "
                   "chat source for the recipe's SFT share (default: the stable phase's)")
    p.add_argument("--decay-sft", type=float, default=None, metavar="SHARE",
                   help="muon only: the decays train on SHARE of --sft-data (loss on the replies) and "
                   "the rest on the stable mix, as the recipe's decay mix (0.6687)")
    p.add_argument("--sft-data", default=None, help=f"with --decay-sft: a prepared SFT dataset "
                   f"(default {SFT_DATA}, built by `python prepare.py --corpus proxy`)")
    p.add_argument("--fp8-backends", default=None, help="fp8 only: e.g. native,te,native_out (default native; "
                   "native_out: the output layer in FP8 too)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds 1..N for every arm instead of the size's (more seeds: narrower "
                   "intervals; the runs of the seeds already finished are reused)")
    p.add_argument("--only", default=None, metavar="PATTERNS",
                   help="run only the runs whose names match these comma-separated shell patterns "
                   "(and the runs they wait for), e.g. --only 'lr16_long_*'; the report covers "
                   "every finished run of the sweep")
    p.add_argument("--plan", action="store_true", help="list the runs and the predicted H200 time; run nothing")
    p.add_argument("--report-only", action="store_true", help="rewrite report.md, the PNG and results.json "
                   "from the runs already finished in --out (e.g. copied from a GPU machine); run nothing")
    args = p.parse_args(argv)
    args.argv = argv
    try:
        size_name, size, runs, root, data = build(args)
        todo = select_runs(runs, args.only) if args.only is not None else runs
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.time_limit is not None and args.time_limit <= 0:
            raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
        explicit_workers = args.workers is not None
        if args.workers is None:
            import torch
            args.workers = 2 if torch.cuda.is_available() else 1
        if args.plan:
            import train
            n_sources = len(data or train.load_config(PROXY).data)
            workers = args.workers if explicit_workers else 2  # what a GPU machine would use
            total, compute, lines = plan(todo, workers, n_sources)
            print(f"{args.experiment} ({size_name}): {len(todo)} runs, {workers} worker(s); predicted on one "
                  f"H200: {total:.0f} s ({total / 60:.1f} min), of which {compute:.0f} s GPU compute")
            print("\n".join(lines))
            return 0
        t0 = time.time()
        if args.report_only:
            results, interrupted = finished_results(runs, root), False
            unfinished = {r.name: "not run" for r in runs if r.name not in results}
        else:
            precheck(todo)
            results, unfinished, interrupted = sweep.run_all(todo, root, args.workers, args.time_limit)
            if todo is not runs:  # the report: every run of the sweep finished so far
                results = {**sweep.finished_results(runs, root), **results}
    except (ValueError, sweep.SweepError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verdicts = write_outputs(args, size_name, size, runs, root, results, unfinished, time.time() - t0)
    print(f"[experiments] wrote {root}/report.md, {root}/{args.experiment}.png, {root}/results.json")
    print("\n".join(verdicts))
    failed = sorted(n for n, s in unfinished.items() if s == "failed")
    if failed:
        print(f"[experiments] {len(failed)} run(s) failed: {', '.join(failed[:5])}"
              f"{' ...' if len(failed) > 5 else ''} (see their train.log)", file=sys.stderr)
        return 1
    if unfinished:
        print(f"[experiments] {len(unfinished)} run(s) not finished: run the same command again to continue")
    return 130 if interrupted else 3 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())

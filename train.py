"""
Train Xmodel-2.5 phase by phase: one readable loop for one CPU, one GPU or many GPUs.

    python train.py config/quickstart.py                       # CPU quick start
    python train.py config/proxy.py --learning_rate=2e-2       # any key: --key=value
    torchrun --nproc_per_node=8 train.py config/decay_muon.py  # DDP (parallel='ddp')
    torchrun --nproc_per_node=8 train.py config/decay_muon.py --init_from=resume

Settings: the `Config` dataclass below holds every knob with its default (a tiny CPU run).
A config file (Python, nanoGPT style: `name = value` lines) overrides the defaults, then
`--key=value` arguments override the file. Unlike nanoGPT, the result is validated before
any work: unknown keys (with the closest key suggested), wrong types and inconsistent
values stop the run with a message naming the key. The resolved config is written to
out_dir/config.json, and that JSON file is itself a valid config file for train.py.

The phases of the recipe (RECIPE §3) are the files in config/, in order:
stable_s1 -> stable_s2 -> decay_muon (or decay_adamw, the ablation) -> long_context.
A phase starts from scratch, from a previous phase's checkpoint (`init_from=<path>`, with or
without its optimizer state), or resumes itself (`init_from='resume'`).

Batches are a pure function of (seed, global step, micro-batch index): see `micro_batches`.
A resumed run, and a run on a different number of GPUs with the same micro_batch, see
exactly the same tokens.
"""
import ast
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import typing
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import numpy as np
import torch
import torch.distributed as dist

import fp8
import model as model_lib
import muon
import mup
import prepare
import schedule


@dataclass
class Config:
    # ---- run -------------------------------------------------------------------------
    out_dir: str = "out/tiny"  # checkpoints, config.json, metrics.jsonl, report.md
    run_name: str = ""  # for logs and wandb; "" = the name of out_dir
    phase_name: str = ""  # shown in every log line, e.g. 'stable_s1'
    init_from: str = "scratch"  # 'scratch' | 'resume' (latest checkpoint in out_dir) |
    #                             a previous phase's checkpoint: run dir, step dir or model.pt
    load_optimizer: bool = False  # with a checkpoint path: also load its optimizer state
    #                               (S1->S2 carries it; the decay does not: RECIPE §2 --no-load-optim)
    seed: int = 1337  # model init and data order
    device: str = "auto"  # 'auto' (cuda if available) | 'cpu' | 'cuda'
    # ---- model (model.py) ------------------------------------------------------------
    model_preset: str = "tiny"  # model.PRESETS: 'xmodel-2.5' | 'proxy' | 'tiny'
    model_overrides: dict[str, Union[int, float, bool]] = field(default_factory=dict)
    #   any ModelConfig field, e.g. dict(vocab_size=8192, n_layer=4)
    mup: bool = True  # False = standard parameterization (SP), for comparison (RECIPE §1)
    # ---- data (prepare.py) -----------------------------------------------------------
    data: dict[str, float] = field(default_factory=lambda: {"data/default": 1.0})
    #   mixture: prepared dataset dir -> weight (weights are normalised; RECIPE §5)
    val_data: Optional[dict[str, float]] = None  # None = the val splits of `data`'s sources
    seq_len: int = 256  # tokens per sequence (RECIPE §3: 3712 stable, 8192 decay, 16K long)
    max_seq_len: int = 4096  # upper bound on seq_len; also the initial RoPE cache length
    # ---- batch -----------------------------------------------------------------------
    global_batch: int = 16  # sequences per optimizer step, over all ranks and micro-steps
    batch_ramp: tuple[tuple[int, int], ...] = ()  # ((global step, global_batch), ...) changes
    micro_batch: int = 8  # sequences per forward/backward on one rank; gradient accumulation
    #                       = global_batch // (micro_batch * world_size)
    # ---- schedule (schedule.py; every step is a GLOBAL step so phases chain) -------------
    start_step: int = 0  # global step this phase starts at (the previous phase's max_steps)
    max_steps: int = 60  # global step this phase ends at (exclusive)
    learning_rate: float = 1e-2  # µP base LR = the embedding's LR; other groups x lr_mult
    warmup_steps: int = 6  # linear warmup length from start_step
    warmup_init_lr: float = 0.0  # LR at start_step
    decay_start_step: Optional[int] = None  # global step the decay starts; None = no decay
    decay_steps: int = 0  # decay length; min_lr from decay_start_step + decay_steps on
    min_lr: float = 0.0  # LR floor at the end of the decay
    decay_shape: str = "linear"  # 'linear' (the recipe's) | 'cosine' | '1-sqrt' | 'exponential'
    # ---- optimizer (RECIPE §2) -------------------------------------------------------
    weight_decay: float = 0.1  # decoupled, on 2-D weights (mup.param_groups), none on norms
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global grad-norm clip; 0 = off
    muon_switch_step: Optional[int] = None  # global step AdamW hands the hidden matrices to
    #                                         Muon; None = AdamW throughout (RECIPE §2: decay start)
    muon_momentum: float = 0.95  # Nesterov momentum of Muon (RECIPE §2)
    muon_reset_adamw_state: bool = True  # at the switch AdamW (embedding, norms) restarts
    #                                      with fresh state: the decay's --no-load-optim
    muon_split_fused: bool = False  # ablation: orthogonalize q/k/v and gate/up separately
    #                                 (the recipe keeps the fused matrices whole, RECIPE §2)
    # ---- systems ---------------------------------------------------------------------
    dtype: str = "auto"  # 'auto' = bfloat16 on CUDA, float32 on CPU | 'bfloat16' | 'float32'
    fp8: bool = False  # FP8 block Linears via fp8.py (RECIPE §4); needs an SM89+ GPU
    fp8_backend: str = "auto"  # 'auto' (TransformerEngine if installed, else native) | 'te' | 'native'
    fp8_emulate: bool = False  # tests only: run the native FP8 path emulated on a CPU
    parallel: str = "ddp"  # under torchrun: 'ddp' | 'fsdp' (FSDP2 fully_shard per block)
    compile: Union[bool, str] = "auto"  # torch.compile: 'auto' = on for CUDA, off on CPU
    activation_checkpointing: Union[bool, int] = False  # recompute blocks in backward:
    #   True = every block (16K context); N = every N-th block only, a selective trade of
    #   ~1 GiB of activations per block (full model, 16K tokens) for ~1/3 of its compute
    # ---- logging, evaluation, checkpoints ----------------------------------------------
    log_interval: int = 5  # steps between log lines (the only host syncs besides the skip test)
    eval_interval: int = 30  # steps between validation passes; 0 = only at the end
    eval_steps: int = 4  # micro-batches per source and rank in a validation pass
    ckpt_interval: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # checkpoints kept in out_dir/ckpt; 0 = all
    peak_tflops: Optional[float] = None  # for MFU; None = datasheet bf16 dense peak of a
    #                                      known GPU (H100/H200: 989), no MFU on CPU.
    #                                      bench.py measures the real peak (RECIPE §4: 786)
    wandb_log: bool = False
    wandb_project: str = "xmodel-2.5"
    wandb_mode: str = "online"  # 'online' | 'offline' | 'disabled'
    # ---- reliability -----------------------------------------------------------------
    max_nonfinite_in_a_row: int = 5  # skip an update with non-finite grads; stop after N in a row
    nonfinite_reloads: int = 0  # instead of stopping, resume from the last checkpoint up to this
    #                             many times per run (helps with a transient fault, e.g. a bad host)
    spike_factor: float = 6.0  # log a loss spike when loss > mean + factor * std of the last 100


# ---------------------------------------------------------------------------------------
# Config: load, type-check, validate.

class ConfigError(ValueError):
    pass


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
FIELD_TYPES = typing.get_type_hints(Config)


def _type_name(tp):
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


def _coerce(value, tp):
    """`value` as type `tp` (int accepted for float, list for tuple), or raise TypeError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        for arm in args:
            try:
                return _coerce(value, arm)
            except TypeError:
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError
        if not args:
            return dict(value)
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    if origin is tuple or tp is tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise TypeError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    raise TypeError


def _set_key(values, key, value, where):
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: unknown config key {key!r}{hint}")
    tp = FIELD_TYPES[key]
    try:
        values[key] = _coerce(value, tp)
    except TypeError:
        raise ConfigError(f"{where}: config key {key!r} expects {_type_name(tp)}, "
                          f"got {type(value).__name__} {value!r}") from None


def parse_override(arg):
    """'--key=value' -> (key, value); value via ast.literal_eval, else the raw string."""
    if not arg.startswith("--") or "=" not in arg:
        raise ConfigError(f"command-line override {arg!r} must look like --key=value")
    key, raw = arg[2:].split("=", 1)
    key = key.replace("-", "_")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if FIELD_TYPES.get(key) is str and not isinstance(value, str):
        value = raw  # --run_name=123 is the string '123'
    return key, value


def load_config(path=None, overrides=(), world_size=None) -> Config:
    """Defaults <- config file (Python or a written config.json) <- --key=value overrides,
    type-checked and validated for `world_size` (default: $WORLD_SIZE or 1)."""
    values = {}
    if path is not None:
        with open(path) as f:
            source = f.read()
        if path.endswith(".json"):
            namespace = json.loads(source)
        else:
            # A fresh namespace: nothing leaks in or out (unlike nanoGPT's exec). __file__ lets
            # a config build on another one (config/decay_adamw.py execs decay_muon.py).
            namespace = {"__file__": os.path.abspath(path)}
            exec(compile(source, path, "exec"), namespace)
        for key, value in namespace.items():
            # Names starting with '_' are the file's own helpers; imports are not settings.
            if key.startswith("_") or isinstance(value, type(os)) or callable(value):
                continue
            _set_key(values, key, value, path)
    if isinstance(overrides, dict):
        overrides = [f"--{k}={v!r}" for k, v in overrides.items()]
    for arg in overrides:
        key, value = parse_override(arg)
        _set_key(values, key, value, "command line")
    cfg = Config(**values)
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    validate(cfg, world_size)
    return cfg


def validate(cfg: Config, world_size: int = 1):
    """Every inconsistency at once, each naming the key and the fix; before any work."""
    errors = []

    def need(ok, msg):
        if not ok:
            errors.append(msg)

    for key in ("max_steps", "global_batch", "micro_batch", "seq_len", "max_seq_len",
                "log_interval", "eval_steps", "max_nonfinite_in_a_row"):
        need(getattr(cfg, key) > 0, f"{key} must be > 0, got {getattr(cfg, key)}")
    for key in ("start_step", "warmup_steps", "decay_steps", "eval_interval", "ckpt_interval",
                "keep_last", "nonfinite_reloads"):
        need(getattr(cfg, key) >= 0, f"{key} must be >= 0, got {getattr(cfg, key)}")
    # Phase boundaries, in global steps.
    need(cfg.start_step < cfg.max_steps,
         f"start_step ({cfg.start_step}) must be < max_steps ({cfg.max_steps}): max_steps is "
         f"the global step the phase ends at, not its length")
    warm_end = cfg.start_step + cfg.warmup_steps
    need(warm_end <= cfg.max_steps,
         f"warmup ends at start_step + warmup_steps = {warm_end}, after max_steps "
         f"({cfg.max_steps}): shorten warmup_steps")
    if cfg.decay_start_step is not None:
        need(cfg.decay_start_step >= warm_end,
             f"decay_start_step ({cfg.decay_start_step}) must be >= start_step + warmup_steps "
             f"({warm_end}): the decay cannot start inside the warmup")
        need(cfg.decay_start_step + cfg.decay_steps <= cfg.max_steps,
             f"the decay ends at decay_start_step + decay_steps = "
             f"{cfg.decay_start_step + cfg.decay_steps}, after max_steps ({cfg.max_steps}): "
             f"shorten decay_steps or raise max_steps")
    else:
        need(cfg.decay_steps == 0, f"decay_steps = {cfg.decay_steps} needs decay_start_step "
             f"(None means this phase has no decay)")
    need(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    need(0 <= cfg.warmup_init_lr <= cfg.learning_rate,
         f"warmup_init_lr ({cfg.warmup_init_lr}) must be in [0, learning_rate={cfg.learning_rate}]")
    need(0 <= cfg.min_lr <= cfg.learning_rate,
         f"min_lr ({cfg.min_lr}) must be in [0, learning_rate={cfg.learning_rate}]")
    need(cfg.decay_shape in schedule.DECAY_SHAPES,
         f"decay_shape must be one of {schedule.DECAY_SHAPES}, got {cfg.decay_shape!r}")
    # Batch: every ramp point must split evenly over ranks and micro-batches.
    ramp_ok = True
    try:
        schedule.check_batch_ramp(cfg.global_batch, cfg.batch_ramp)
    except ValueError as e:
        ramp_ok = False
        errors.append(f"batch_ramp: {e}")
    if ramp_ok and cfg.micro_batch > 0:
        per_step = cfg.micro_batch * world_size
        for where, batch in [("global_batch", cfg.global_batch),
                             *((f"batch_ramp at step {s}", b) for s, b in cfg.batch_ramp)]:
            need(batch % per_step == 0,
                 f"{where} = {batch} is not divisible by micro_batch x world_size = "
                 f"{cfg.micro_batch} x {world_size} = {per_step}: pick a global batch that is a "
                 f"multiple of {per_step}, or change micro_batch")
    need(cfg.seq_len <= cfg.max_seq_len,
         f"seq_len ({cfg.seq_len}) exceeds max_seq_len ({cfg.max_seq_len}): raise max_seq_len "
         f"if the model should see longer sequences")
    if cfg.muon_switch_step is not None:
        need(0 <= cfg.muon_switch_step < cfg.max_steps,
             f"muon_switch_step ({cfg.muon_switch_step}) must be in [0, max_steps="
             f"{cfg.max_steps}); a value <= start_step ({cfg.start_step}) runs Muon from the "
             f"phase start; None keeps AdamW throughout")
    # Data mixture.
    need(len(cfg.data) > 0, "data is empty: give at least one {dataset_dir: weight}")
    for name, mix in (("data", cfg.data), ("val_data", cfg.val_data or {})):
        for path, w in mix.items():
            need(w > 0, f"{name}[{path!r}] weight must be > 0, got {w} (drop the source instead)")
    # Choices.
    need(not cfg.load_optimizer or cfg.init_from != "scratch",
         "load_optimizer=True needs init_from to name a checkpoint (or 'resume')")
    need(cfg.parallel in ("ddp", "fsdp"), f"parallel must be 'ddp' or 'fsdp', got {cfg.parallel!r}")
    need(cfg.dtype in ("auto", "bfloat16", "float32"),
         f"dtype must be 'auto', 'bfloat16' or 'float32', got {cfg.dtype!r}")
    need(cfg.compile in (True, False, "auto"), f"compile must be True, False or 'auto', got {cfg.compile!r}")
    need(cfg.device in ("auto", "cpu", "cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    need(cfg.wandb_mode in ("online", "offline", "disabled"),
         f"wandb_mode must be 'online', 'offline' or 'disabled', got {cfg.wandb_mode!r}")
    need(cfg.model_preset in model_lib.PRESETS,
         f"model_preset {cfg.model_preset!r} unknown; choose from {sorted(model_lib.PRESETS)}")
    mc_fields = {f.name for f in dataclasses.fields(model_lib.ModelConfig)}
    for key in cfg.model_overrides:
        close = difflib.get_close_matches(key, mc_fields, n=1)
        need(key in mc_fields, f"model_overrides key {key!r} is not a ModelConfig field"
             + (f"; did you mean {close[0]!r}?" if close else ""))
    for key in ("mup", "max_seq_len"):
        need(key not in cfg.model_overrides, f"model_overrides[{key!r}]: set the top-level key "
             f"{key!r} instead")
    need(cfg.grad_clip >= 0, f"grad_clip must be >= 0, got {cfg.grad_clip}")
    need(isinstance(cfg.activation_checkpointing, bool) or cfg.activation_checkpointing >= 1,
         f"activation_checkpointing must be True/False or N >= 1 (every N-th block), "
         f"got {cfg.activation_checkpointing}")
    need(cfg.spike_factor > 0, f"spike_factor must be > 0, got {cfg.spike_factor}")
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))


def write_resolved_config(cfg):
    """out_dir/config.json: the run's single source of truth (itself loadable by train.py)."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
        json.dump(asdict(cfg), f, indent=2)


# ---------------------------------------------------------------------------------------
# Distributed set-up (torchrun's environment; a plain `python train.py` is world size 1).

@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def master(self):
        return self.rank == 0


def setup_distributed(cfg) -> Dist:
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ:
        return Dist(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():  # a nonfinite_reloads restart keeps the process group
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return Dist(rank, local_rank, world_size, device)


def all_reduce(t, op=dist.ReduceOp.SUM):
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


# ---------------------------------------------------------------------------------------
# Model: build, load weights, then each transformation applied from outside the model.

def build_model(cfg, device):
    mcfg = model_lib.model_config(cfg.model_preset, mup=cfg.mup, max_seq_len=cfg.max_seq_len,
                                  **cfg.model_overrides)
    torch.manual_seed(cfg.seed)  # same init on every rank (and DDP broadcasts rank 0's anyway)
    with torch.device(device):
        model = model_lib.Xmodel(mcfg)  # µP init happens in the constructor (mup.init_std)
    return model


def resolve_checkpoint(path):
    """A run dir (-> its latest), a step dir, or a model.pt -> the step dir."""
    return os.path.dirname(os.path.abspath(model_lib.resolve_checkpoint(path)))


def load_model_weights(model, state_dict, source):
    """Copy a consolidated state dict in, naming every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = ([f"missing: {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) + shapes
        raise ValueError(f"checkpoint {source} does not fit the model (check model_preset / "
                         f"model_overrides):\n  " + "\n  ".join(lines))
    model.load_state_dict(state_dict)


def apply_activation_checkpointing(model, every=1):
    """Recompute every `every`-th block in backward (every=1: all of them). Wrapping
    `forward` (not the module) keeps the parameter names, so checkpoints and mup routing
    are unchanged."""
    from torch.utils.checkpoint import checkpoint

    def checkpointed(forward, *args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    for i, block in enumerate(model.blocks):
        if i % every == 0:
            block.forward = functools.partial(checkpointed, block.forward)


def apply_fsdp(model, device):
    """FSDP2: each block its own all-gather unit, then the root (embedding, final norm).
    On GPU: bf16 compute copies of the fp32 master params, fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if device.type == "cuda" else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


# ---------------------------------------------------------------------------------------
# Optimizers: AdamW over every µP group; after muon_switch_step, Muon over the matrices.

def build_optimizers(model, cfg, device, muon_active):
    groups = mup.param_groups(model, cfg.weight_decay)
    fused = device.type == "cuda"
    adamw_kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)
    for g in groups:
        g["lr"] = 0.0  # set every step from the schedule
    if not muon_active:
        return [torch.optim.AdamW(groups, **adamw_kw)]
    adamw_groups, muon_groups = muon.split_groups_for_muon(groups)  # matrices -> Muon
    if cfg.muon_split_fused:  # ablation: q|k|v and gate|up orthogonalized block by block
        muon.add_fused_row_splits(muon_groups, model.config)
    return [torch.optim.AdamW(adamw_groups, **adamw_kw),
            muon.Muon(muon_groups, momentum=cfg.muon_momentum)]


def switch_to_muon(model, cfg, device, optimizers):
    """RECIPE §2: at the decay boundary the hidden matrices move to Muon with fresh momentum;
    the embedding and norms stay on AdamW, with fresh state by default (--no-load-optim)."""
    new = build_optimizers(model, cfg, device, muon_active=True)
    if not cfg.muon_reset_adamw_state:
        old_state = optimizers[0].state
        for g in new[0].param_groups:
            for p in g["params"]:
                if p in old_state:
                    new[0].state[p] = old_state[p]
    return new


def set_lr(optimizers, lr):
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def update_rms(optimizers, before):
    """RMS of the last update per optimizer (the switch's failure signature is a jump here)."""
    out = []
    for opt, snap in zip(optimizers, before):
        stats = torch.zeros(2, dtype=torch.float64, device=snap[0].device if snap else "cpu")
        params = [p for g in opt.param_groups for p in g["params"]]
        for p, b in zip(params, snap):
            d = (_local(p.detach()).float() - b.float())
            stats[0] += d.pow(2).sum().double()
            stats[1] += d.numel()
        if any(hasattr(p, "to_local") for p in params):
            all_reduce(stats)  # FSDP: shards -> the full sum
        sq, n = stats.tolist()
        out.append(math.sqrt(sq / max(n, 1)))
    return out


def snapshot_params(optimizers):
    return [[_local(p.detach()).clone() for g in opt.param_groups for p in g["params"]]
            for opt in optimizers]


# ---------------------------------------------------------------------------------------
# Data: a batch is a pure function of (seed, step, global micro-batch index).

def micro_batches(mixture, step, d, accum, micro_batch, device):
    """Yield this rank's `accum` micro-batches of global step `step`.

    The global micro-batch index rank*accum + i (not (rank, i)) keeps the global batch
    identical whatever the world size: 1 process x 4 micro-steps sees the same sequences as
    2 processes x 2 micro-steps. That makes DDP == single process and lets an FSDP run
    resume on a different number of GPUs without changing its data."""
    for i in range(accum):
        x, y, mask, src = mixture.get_batch(step, 0, d.rank * accum + i, micro_batch)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mask is not None:
            mask = mask.to(device, non_blocking=True)
        yield i, x, y, mask


@torch.no_grad()
def evaluate(model, val_sets, cfg, d, autocast):
    """Mean val loss per source (each rank its own batches, then averaged over ranks)."""
    model.eval()
    out = {}
    for name, mixture in val_sets.items():
        total = torch.zeros((), device=d.device)
        for i in range(cfg.eval_steps):
            x, y, mask, _ = mixture.get_batch(0, d.rank, i, cfg.micro_batch)
            x, y = x.to(d.device), y.to(d.device)
            mask = mask.to(d.device) if mask is not None else None
            with autocast():
                total += model(x, y, loss_mask=mask).float()
        total = all_reduce(total) / (cfg.eval_steps * d.world_size)
        out[name] = total.item()
    model.train()
    return out


# ---------------------------------------------------------------------------------------
# Checkpoints: write into a temp dir, fsync, rename; `latest` names the newest complete one.

def _fsync_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        prepare.fsync_dir(dirpath)


def _rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def consolidated_state_dict(model, raw_model, cfg):
    """fp32 state dict with the contract's names; under FSDP gathered onto rank 0's CPU."""
    if cfg.parallel == "fsdp" and dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = raw_model.state_dict()
    sd = fp8.strip_fp8_state(sd)  # model.pt holds plain weights; FP8 scaling state is training state
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in sd.items()}


def save_checkpoint(step, model, raw_model, optimizers, muon_active, cfg, d, data_meta, data_dirs):
    """All ranks call this (collectives under FSDP). Raises on failure on every rank; the
    previous checkpoint is untouched (the new one is only renamed in once complete)."""
    ckpt_dir = os.path.join(cfg.out_dir, "ckpt")
    name = f"step_{step:08d}"
    final, tmp = os.path.join(ckpt_dir, name), os.path.join(ckpt_dir, f".tmp_{name}")
    fsdp = cfg.parallel == "fsdp" and dist.is_initialized()
    if d.master:
        os.makedirs(ckpt_dir, exist_ok=True)
        # Stale temp dirs from killed saves: not only this step's, since a resumed run may
        # never save that step again (another ckpt_interval) and each holds a full checkpoint.
        for stale in os.listdir(ckpt_dir):
            if stale.startswith(".tmp_step_"):
                shutil.rmtree(os.path.join(ckpt_dir, stale), ignore_errors=True)
        os.makedirs(tmp)
    if dist.is_initialized():
        dist.barrier()
    model_sd = consolidated_state_dict(model, raw_model, cfg)  # collective under FSDP
    rng = [None] * d.world_size
    if dist.is_initialized():
        dist.all_gather_object(rng, _rng_state())
    else:
        rng = [_rng_state()]
    error = None
    try:
        if fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict
            msd, osd = get_state_dict(model, optimizers)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(tmp, "dcp"))
        if d.master:
            torch.save({"model_config": asdict(raw_model.config), "model": model_sd,
                        "tokenizer": data_meta, "step": step, "config": asdict(cfg)},
                       os.path.join(tmp, "model.pt"))
            torch.save({"step": step, "data_position": {"step": step, "seed": cfg.seed},
                        "muon_active": muon_active, "world_size": d.world_size, "rng": rng,
                        "optimizers": None if fsdp else [o.state_dict() for o in optimizers],
                        "fp8": None if fsdp else fp8.fp8_state(raw_model),
                        "config": asdict(cfg)}, os.path.join(tmp, "train_state.pt"))
            tok = os.path.join(data_dirs[0], "tokenizer.json")
            if os.path.exists(tok):
                shutil.copyfile(tok, os.path.join(tmp, "tokenizer.json"))
            _fsync_tree(tmp)
    except Exception as e:  # e.g. disk full: report on every rank below
        error = e
    ok = torch.tensor([0.0 if error else 1.0], device=d.device)
    all_reduce(ok, dist.ReduceOp.MIN)
    if ok.item() < 1:
        if d.master:
            shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"saving checkpoint {final} failed ({error or 'on another rank'}); "
                           f"the previous checkpoint is intact") from error
    if d.master:
        if os.path.exists(final):  # re-saving the same step (e.g. a resumed run's end)
            trash = os.path.join(ckpt_dir, f".old_{name}")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
        prepare.write_atomic(os.path.join(ckpt_dir, "latest"), (name + "\n").encode())
        prepare.fsync_dir(ckpt_dir)
        if cfg.keep_last > 0:
            steps = sorted(n for n in os.listdir(ckpt_dir) if n.startswith("step_"))
            for old in steps[:-cfg.keep_last]:
                if old != name:
                    shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return final


def load_optimizer_state(ckpt, model, optimizers, cfg, d, train_state):
    """Optimizer state from a checkpoint: train_state.pt (single/DDP) or dcp/ (FSDP)."""
    fsdp = cfg.parallel == "fsdp" and dist.is_initialized()
    has_dcp = os.path.isdir(os.path.join(ckpt, "dcp"))
    if fsdp != has_dcp:
        raise ValueError(f"{ckpt} holds {'FSDP (dcp/)' if has_dcp else 'single/DDP'} optimizer "
                         f"state but this run is {'FSDP' if fsdp else 'single/DDP'}; use the same "
                         f"parallel mode, or load_optimizer=False")
    if fsdp:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        msd, osd = get_state_dict(model, optimizers)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=os.path.join(ckpt, "dcp"))
        set_state_dict(model, optimizers, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
    else:
        saved = train_state["optimizers"]
        if len(saved) != len(optimizers):
            raise ValueError(f"{ckpt} has {len(saved)} optimizer(s), this run builds "
                             f"{len(optimizers)}: muon_switch_step disagrees with the checkpoint")
        for opt, sd in zip(optimizers, saved):
            # The config's weight decay and group LR multipliers win over the saved ones.
            keep = [{k: g[k] for k in ("weight_decay", "lr_mult")} for g in opt.param_groups]
            opt.load_state_dict(sd)
            for g, k in zip(opt.param_groups, keep):
                g.update(k)


# ---------------------------------------------------------------------------------------
# Logging: console (+ tqdm on a TTY), metrics.jsonl, wandb; the end-of-run report.

def default_peak_tflops(device):
    if device.type != "cuda":
        return None  # no meaningful CPU peak
    name = torch.cuda.get_device_name(device)
    # bf16 dense datasheet peak of H100/H200 SXM; bench.py measures the real one (RECIPE §4).
    return 989.0 if ("H100" in name or "H200" in name) else None


class Logger:
    def __init__(self, cfg, d, total_steps):
        self.cfg, self.master = cfg, d.master
        self.path = os.path.join(cfg.out_dir, "metrics.jsonl")
        self.wandb = None
        self.bar = None
        if not self.master:
            return
        if cfg.wandb_log:
            import wandb  # lazy: only runs that ask for it need the package
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.run_name or None,
                                    config=asdict(cfg), mode=cfg.wandb_mode, dir=cfg.out_dir)
        if sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, dynamic_ncols=True, leave=False)

    def log(self, record, line=None):
        if not self.master:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                           step=record.get("step"))
        if line:
            (self.bar.write if self.bar is not None else print)(line)

    def advance(self, n=1, loss=None):
        if self.bar is not None:
            self.bar.update(n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def write_report(cfg, summary):
    """out_dir/report.md and loss.png: the run at a glance (nanochat's report card)."""
    records = []
    with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
        for line in f:
            records.append(json.loads(line))
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    png = "loss.png"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot(*zip(*train), label="train")
        for src in sorted({k for r in val for k in r.get("val_loss", {})}):
            pts = [(r["step"], r["val_loss"][src]) for r in val if src in r.get("val_loss", {})]
            ax.plot(*zip(*pts), marker="o", label=f"val {src}")
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(cfg.out_dir, png), dpi=110)
        plt.close(fig)
    except Exception as e:  # a report without a plot is still a report
        png = None
        print(f"[train] loss plot skipped: {e}")
    rows = [("phase", cfg.phase_name or "-"), ("steps", f"{summary['first_step']} -> {summary['last_step']}"),
            ("final train loss", f"{summary['train_loss']:.4f}" if summary["train_loss"] is not None else "-")]
    for src, v in (val[-1]["val_loss"].items() if val else []):
        rows.append((f"final val loss {src}", f"{v:.4f}"))
    rows += [("tokens this run", f"{summary['tokens']:,}"),
             ("throughput", f"{summary['tokens_per_s']:,.0f} tokens/s"),
             ("MFU", f"{summary['mfu']:.1%}" if summary.get("mfu") else "-"),
             ("wall time", _fmt_time(summary["seconds"])),
             ("skipped (non-finite) updates", str(summary["skipped"])),
             ("model", f"{summary['params']:,} parameters ({cfg.model_preset})"),
             ("world size / parallel", f"{summary['world_size']} / "
                                       f"{cfg.parallel if summary['world_size'] > 1 else 'single process'}"),
             ("device", summary["device"])]
    lines = [f"# Run report: {cfg.run_name or os.path.basename(os.path.abspath(cfg.out_dir))}", "",
             "| metric | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    if png:
        lines += [f"![loss]({png})", ""]
    with open(os.path.join(cfg.out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------
# The loop.

class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits 0.
    A second SIGINT interrupts at once."""

    def __init__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def close(self):  # train() called in-process (tests) gives the handlers back
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"[train] got {signal.Signals(signum).name}: checkpointing after this step", flush=True)


class NonFiniteError(RuntimeError):
    pass


def train(cfg: Config):
    """Train one phase. With nonfinite_reloads > 0, a run stopped by max_nonfinite_in_a_row
    non-finite steps restarts from its last checkpoint through the ordinary, exact resume path
    (not a second reload path to keep in sync with it). That cures a transient fault; a NaN
    that the weights and data reproduce comes back, and the run stops once reloads run out."""
    # A run that fails (bad data, disk full) must not leave its SIGTERM/SIGINT handlers behind
    # when train() is called in-process (tests, notebooks): they would swallow signals.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for reloads in range(cfg.nonfinite_reloads + 1):
            try:
                return _train_once(cfg)
            except NonFiniteError as e:
                if reloads == cfg.nonfinite_reloads or not os.path.exists(
                        os.path.join(cfg.out_dir, "ckpt", "latest")):
                    raise
                print(f"[train] {e}\n[train] nonfinite_reloads: resuming from the last checkpoint "
                      f"({reloads + 1} of {cfg.nonfinite_reloads})", flush=True)
            cfg = dataclasses.replace(cfg, init_from="resume")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _train_once(cfg: Config):
    t_start = time.time()
    d = setup_distributed(cfg)
    validate(cfg, d.world_size)  # again, now with the real world size
    # Everything that can fail cheaply fails here, before any work.
    ckpt = None
    if cfg.init_from == "resume":
        if not os.path.exists(os.path.join(cfg.out_dir, "ckpt", "latest")):
            raise FileNotFoundError(f"init_from='resume' but {cfg.out_dir}/ckpt/latest does not exist: "
                                    f"nothing to resume (use init_from='scratch' or a checkpoint path)")
        ckpt = resolve_checkpoint(cfg.out_dir)
    elif cfg.init_from != "scratch":
        ckpt = resolve_checkpoint(cfg.init_from)
    elif os.path.exists(os.path.join(cfg.out_dir, "ckpt", "latest")):
        raise ValueError(f"{cfg.out_dir} already holds checkpoints: pass --init_from=resume to "
                         f"continue that run, or choose another out_dir")
    if cfg.wandb_log and d.master:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ImportError("wandb_log=True needs `pip install wandb` (wandb_mode='offline' works "
                              "without an account)") from None
    if cfg.fp8:  # here, not at the first forward: before out_dir, data, model and compile
        fp8.check_fp8_supported(d.device, emulate=cfg.fp8_emulate)
    stop = StopSignal()
    os.makedirs(cfg.out_dir, exist_ok=True)
    if d.master:
        write_resolved_config(cfg)
    cuda = d.device.type == "cuda"
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and cuda) else torch.float32
    fsdp = cfg.parallel == "fsdp" and dist.is_initialized()  # torchrun, even with 1 process
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data (opened first: a bad source or tokenizer fails before the model is built)
    train_data = prepare.Mixture(cfg.data, "train", cfg.seq_len, cfg.seed)
    data_meta = train_data.tokenizer_meta
    val_sets = {os.path.basename(os.path.normpath(p)): prepare.Mixture({p: 1.0}, "val", cfg.seq_len, cfg.seed)
                for p in (cfg.val_data or cfg.data)}

    # ---- model
    raw_model = build_model(cfg, d.device)
    prepare.check_vocab(data_meta, raw_model.config.vocab_size)  # ids must fit the embedding
    step, train_state = cfg.start_step, None
    if ckpt is not None:
        payload = torch.load(os.path.join(ckpt, "model.pt"), map_location="cpu", weights_only=False)
        load_model_weights(raw_model, payload["model"], ckpt)
        # Phase chaining: the data must come from the checkpoint's tokenizer.
        prepare.check_vocab(data_meta, raw_model.config.vocab_size, payload.get("tokenizer"))
        train_state = torch.load(os.path.join(ckpt, "train_state.pt"), map_location="cpu", weights_only=False)
        if cfg.init_from == "resume":
            step = train_state["step"]
            changed = {k: (v, getattr(cfg, k)) for k, v in train_state["config"].items()
                       if k != "init_from" and k in FIELDS and v != getattr(cfg, k)}
            if changed and d.master:
                print(f"[train] resuming with changed settings (checkpoint -> now): {changed}")
        elif payload["step"] != cfg.start_step and d.master:
            print(f"[train] warning: {ckpt} is at step {payload['step']}, this phase starts at "
                  f"start_step={cfg.start_step}")
        del payload
    fp8_report = None
    if cfg.fp8:  # after the weights are in, before compile/DDP/FSDP and the optimizers
        fp8_report = fp8.convert_to_fp8(raw_model, backend=cfg.fp8_backend, emulate=cfg.fp8_emulate)
        if train_state is not None and (cfg.init_from == "resume" or cfg.load_optimizer):
            fp8.load_fp8_state(raw_model, train_state.get("fp8"))  # delayed-scaling histories
        if d.master:
            print(f"[train] {fp8_report}")

    def autocast():
        """bf16 autocast (under FSDP2 its MixedPrecisionPolicy casts instead) + TE's FP8 autocast."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(d.device.type, dtype=dtype,
                                           enabled=dtype != torch.float32 and not fsdp))
        stack.enter_context(fp8.fp8_autocast_context(fp8_report))
        return stack
    if cfg.activation_checkpointing:
        every = 1 if cfg.activation_checkpointing is True else cfg.activation_checkpointing
        apply_activation_checkpointing(raw_model, every)
    use_compile = cfg.compile is True or (cfg.compile == "auto" and cuda)
    if use_compile:
        # Block by block plus the loss (Xmodel.compile_by_block): as fast as one whole-model
        # compile on an H100 (42,355 vs 42,583 tokens/s) in 74 s instead of 180 s, the FP8
        # model in 74 s instead of over 420 s (docs/PERFORMANCE.md); same graphs for DDP/FSDP2.
        raw_model.compile_by_block()
    model = raw_model
    if fsdp:
        model = apply_fsdp(raw_model, d.device)
    elif d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(raw_model, device_ids=[d.local_rank] if cuda else None)

    # ---- optimizers (a resume rebuilds exactly what the checkpoint holds; the switch
    # below then happens at the same step as in an uninterrupted run)
    def want_muon(s):
        return cfg.muon_switch_step is not None and s >= cfg.muon_switch_step
    if train_state is not None and (cfg.init_from == "resume" or cfg.load_optimizer):
        muon_active = train_state["muon_active"]  # AdamW-only state switches in the loop
        if muon_active and not want_muon(step):
            raise ValueError(f"the checkpoint's optimizer state is AdamW+Muon but this phase keeps "
                             f"AdamW only at step {step}: set muon_switch_step <= {step}, or "
                             f"load_optimizer=False for a fresh AdamW")
        optimizers = build_optimizers(raw_model, cfg, d.device, muon_active)
        load_optimizer_state(ckpt, model, optimizers, cfg, d, train_state)
        if cfg.init_from == "resume":
            if train_state.get("world_size") == d.world_size:
                _set_rng_state(train_state["rng"][d.rank])
            elif d.master:
                print("[train] world size changed since the checkpoint: RNG states not restored")
    else:
        muon_active = want_muon(step)
        optimizers = build_optimizers(raw_model, cfg, d.device, muon_active)
    train_state = None

    # ---- logging
    run_name = cfg.run_name or os.path.basename(os.path.normpath(cfg.out_dir))
    flops_per_token = raw_model.flops_per_token(cfg.seq_len)
    peak = cfg.peak_tflops or default_peak_tflops(d.device)
    logger = Logger(cfg, d, cfg.max_steps - step)
    n_params = raw_model.num_params()
    if d.master:
        print(f"[train] {run_name}: {n_params:,} params ({cfg.model_preset}), steps {step} -> "
              f"{cfg.max_steps}, world {d.world_size} ({cfg.parallel if d.world_size > 1 else 'single'}), "
              f"{d.device}, {dtype}, compile={use_compile}, fp8={cfg.fp8}, "
              f"optimizer {'AdamW+Muon' if muon_active else 'AdamW'}, init_from={cfg.init_from}")
        logger.log({"kind": "start", "step": step, "world_size": d.world_size, "device": str(d.device),
                    "params": n_params, "torch": torch.__version__, "muon_active": muon_active})

    sched = dict(peak_lr=cfg.learning_rate, start_step=cfg.start_step, warmup_steps=cfg.warmup_steps,
                 warmup_init_lr=cfg.warmup_init_lr, decay_steps=cfg.decay_steps, min_lr=cfg.min_lr,
                 decay_shape=cfg.decay_shape,
                 decay_start_step=cfg.decay_start_step if cfg.decay_start_step is not None
                 else max(cfg.max_steps, cfg.start_step + cfg.warmup_steps))

    def segment(s):
        if s < cfg.start_step + cfg.warmup_steps:
            return "warmup"
        if s < sched["decay_start_step"]:
            return "stable"
        return "decay" if s < sched["decay_start_step"] + cfg.decay_steps else "min_lr"

    first_step = step
    recent = deque(maxlen=100)  # losses for spike detection
    nonfinite_in_a_row, skipped = 0, 0
    tokens_run, t_log, tokens_log = 0, time.time(), 0
    last_loss, last_val, mfu = None, None, None
    interval_losses = []  # the logged loss is the mean over the log interval
    step_times = deque(maxlen=20)
    rms_window = 5  # log update RMS for this many steps on each side of the switch

    model.train()
    while step < cfg.max_steps:
        t0 = time.time()
        if want_muon(step) and not muon_active:
            optimizers = switch_to_muon(raw_model, cfg, d.device, optimizers)
            muon_active = True
            logger.log({"kind": "event", "step": step, "event": "muon_switch"},
                       f"step {step}: AdamW -> Muon for the hidden matrices "
                       f"(fresh momentum; AdamW state {'reset' if cfg.muon_reset_adamw_state else 'kept'})")
        lr = schedule.lr_at(step, **sched)
        set_lr(optimizers, lr)
        global_batch = schedule.batch_at(step, cfg.global_batch, cfg.batch_ramp)
        accum = global_batch // (cfg.micro_batch * d.world_size)

        loss_sum = torch.zeros((), device=d.device)
        for i, x, y, mask in micro_batches(train_data, step, d, accum, cfg.micro_batch, d.device):
            last = i == accum - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            if fsdp:
                model.set_requires_gradient_sync(last)
                sync = contextlib.nullcontext()
            else:
                sync = model.no_sync() if (d.world_size > 1 and not last) else contextlib.nullcontext()
            with sync:
                with autocast():
                    loss = model(x, y, loss_mask=mask)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
        # Gradient norm over all parameters (DTensor-aware under FSDP); clip at grad_clip.
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        # One small all-reduce (mean loss over ranks + "stop requested anywhere") and one
        # host sync per step: deciding to skip a non-finite update needs the value on the host.
        stats = torch.stack([loss_sum / accum, torch.tensor(float(stop.requested), device=d.device)])
        all_reduce(stats)
        loss_val, stop_votes, gnorm = torch.cat([stats, grad_norm.float().reshape(1)]).tolist()
        loss_val /= d.world_size

        near_switch = cfg.muon_switch_step is not None and abs(step - cfg.muon_switch_step) < rms_window
        before = snapshot_params(optimizers) if near_switch else None
        if math.isfinite(gnorm) and math.isfinite(loss_val):
            for opt in optimizers:
                opt.step()
            nonfinite_in_a_row = 0
        else:
            nonfinite_in_a_row += 1
            skipped += 1
            logger.log({"kind": "nonfinite", "step": step, "loss": loss_val, "grad_norm": gnorm},
                       f"step {step}: non-finite loss/grad (loss {loss_val}, grad norm {gnorm}): "
                       f"update skipped ({nonfinite_in_a_row} in a row)")
            if nonfinite_in_a_row >= cfg.max_nonfinite_in_a_row:
                logger.close()
                stop.close()  # give the signal handlers back: train() may restart (nonfinite_reloads)
                raise NonFiniteError(f"{nonfinite_in_a_row} non-finite steps in a row at step {step}: "
                                     f"stopping. Resume from the last checkpoint with "
                                     f"--init_from=resume (perhaps with a lower learning_rate), or "
                                     f"set nonfinite_reloads to do that automatically")
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if fp8_report is not None and d.world_size > 1:
            fp8.sync_amax_history(raw_model)  # ranks share one delayed-scaling state (TE does too)
        if before is not None:
            rms = update_rms(optimizers, before)
            names = ["adamw", "muon"][:len(rms)]
            logger.log({"kind": "update_rms", "step": step, **{f"update_rms_{n}": r for n, r in zip(names, rms)}},
                       f"step {step}: update RMS " + ", ".join(f"{n} {r:.3e}" for n, r in zip(names, rms)))

        if math.isfinite(loss_val) and len(recent) >= 20:
            mean = sum(recent) / len(recent)
            std = math.sqrt(sum((v - mean) ** 2 for v in recent) / len(recent))
            if loss_val > mean + cfg.spike_factor * max(std, 1e-3):
                logger.log({"kind": "spike", "step": step, "loss": loss_val, "mean": mean, "std": std,
                            "data_position": {"step": step, "seed": cfg.seed}},
                           f"step {step}: loss spike {loss_val:.4f} (recent mean {mean:.4f}, std {std:.4f}); "
                           f"data: Mixture.get_batch(step={step}, micro_step=0..{accum * d.world_size - 1})")
        if math.isfinite(loss_val):
            recent.append(loss_val)
            interval_losses.append(loss_val)

        step += 1
        tokens = global_batch * cfg.seq_len
        tokens_run += tokens
        tokens_log += tokens
        step_times.append(time.time() - t0)
        logger.advance(1, loss_val)

        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            dt = time.time() - t_log
            tok_s = tokens_log / max(dt, 1e-9)
            mfu = flops_per_token * tok_s / (peak * 1e12 * d.world_size) if peak else None
            eta = (cfg.max_steps - step) * sum(step_times) / len(step_times)
            mem = torch.cuda.max_memory_allocated(d.device) / 2**30 if cuda else None
            if interval_losses:
                last_loss = sum(interval_losses) / len(interval_losses)
            interval_losses = []
            rec = {"kind": "train", "step": step, "phase": cfg.phase_name, "segment": segment(step - 1),
                   "loss": last_loss, "lr": lr, "grad_norm": gnorm, "global_batch": global_batch,
                   "tokens_per_s": tok_s, "mfu": mfu, "mem_gib": mem, "eta_s": eta,
                   "muon_active": muon_active, "time": time.time() - t_start}
            logger.log(rec, f"step {step}/{cfg.max_steps} {cfg.phase_name + ' ' if cfg.phase_name else ''}"
                            f"{segment(step - 1)} | loss {last_loss if last_loss is not None else math.nan:.4f} | lr {lr:.3e} | gnorm {gnorm:.3f} | "
                            f"{tok_s:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "")
                            + (f" | mem {mem:.1f}GiB" if mem is not None else "") + f" | eta {_fmt_time(eta)}")
            t_log, tokens_log = time.time(), 0
        stopping = stop_votes > 0
        t_extra = time.time()  # evaluation and checkpoint time stays out of tokens/s
        if (cfg.eval_interval and step % cfg.eval_interval == 0) or step == cfg.max_steps:
            if not stopping:
                last_val = evaluate(model, val_sets, cfg, d, autocast)
                logger.log({"kind": "val", "step": step, "val_loss": last_val},
                           f"step {step}: val " + ", ".join(f"{k} {v:.4f}" for k, v in last_val.items()))
        if stopping or step == cfg.max_steps or (cfg.ckpt_interval and step % cfg.ckpt_interval == 0):
            path = save_checkpoint(step, model, raw_model, optimizers, muon_active, cfg, d, data_meta,
                                   list(cfg.data))
            logger.log({"kind": "checkpoint", "step": step, "path": path},
                       f"step {step}: checkpoint {path}")
        t_log += time.time() - t_extra
        if stopping:
            logger.log({"kind": "event", "step": step, "event": "stopped_by_signal"},
                       f"stopped by signal after step {step}; continue with --init_from=resume")
            break

    logger.close()
    stop.close()
    seconds = time.time() - t_start
    if d.master and step == cfg.max_steps:
        write_report(cfg, {"first_step": first_step, "last_step": step, "train_loss": last_loss,
                           "tokens": tokens_run, "tokens_per_s": tokens_run / max(seconds, 1e-9),
                           "mfu": mfu, "seconds": seconds, "skipped": skipped, "params": n_params,
                           "world_size": d.world_size, "device": str(d.device)})
    if dist.is_initialized():
        dist.destroy_process_group()
    return {"step": step, "train_loss": last_loss, "val_loss": last_val}


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("Config keys (default):")
        for f in dataclasses.fields(Config):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            print(f"  --{f.name}={default!r}")
        return 0
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) > 1:
        raise SystemExit(f"at most one config file, got {paths}")
    try:
        cfg = load_config(paths[0] if paths else None, [a for a in argv if a.startswith("--")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

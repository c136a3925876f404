"""
Train Xmodel-2.5 phase by phase: one readable loop for one CPU, one GPU or many GPUs.

    python train.py config/quickstart.py                       # CPU quick start
    python train.py config/proxy.py --learning_rate=2e-2       # any key: --key=value
    torchrun --nproc_per_node=8 train.py config/decay_muon.py  # DDP (parallel='ddp')
    torchrun --nproc_per_node=8 train.py config/decay_muon.py --init_from=resume

Settings: the `Config` dataclass below holds every knob with its default (a tiny CPU run).
A config file (Python, nanoGPT style: `name = value` lines) overrides the defaults, then
`--key=value` arguments override the file. A config file may start from another one:
`include("stable_s1.py")` takes all of its settings, `include("stable_s1.py", "data")` only
the keys named (paths relative to the including file). Unlike nanoGPT, the result is
validated before any work: unknown keys (with the closest key suggested), wrong types and
inconsistent values stop the run with a message naming the key. The resolved config is
written to out_dir/config.json, and that JSON file is itself a valid config file.

The phases of the recipe (RECIPE §3) are the files in config/, in order:
stable_s1 -> stable_s2 -> decay_muon (or decay_adamw, the ablation) -> long_context.
A phase starts from scratch, from a previous phase's checkpoint (`init_from=<path>`, with or
without its optimizer state), or resumes itself (`init_from='resume'`); checkpoint.py owns
the format.

Reading order: Config, then the loop (`train`, `run_phase`, `train_step`), then `setup` and
the pieces it builds. Batches are a pure function of (seed, global step, micro-batch index):
see `micro_batches`. A resumed run, and a run on a different number of GPUs with the same
micro_batch, see exactly the same tokens.
"""
import ast
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import signal
import sys
import time
import typing
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import NamedTuple, Optional, Union

import torch
import torch.distributed as dist

import checkpoint
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
    val_seed: Optional[int] = None  # which validation windows are scored; None = seed. Fix it to
    #                                 compare runs of different seeds on the same windows
    device: str = "auto"  # 'auto' (cuda if available) | 'cpu' | 'cuda'
    # ---- model (model.py) ------------------------------------------------------------
    model_preset: str = "tiny-8k"  # model.PRESETS: 'xmodel-2.5' | 'proxy' | 'tiny' | 'tiny-8k'
    #                                (tiny with data/default's 8,192-id BPE)
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
    loss_reduction: str = "micro_batch"  # 'micro_batch': the step's loss is the mean of the
    #   micro-batches' token means (Megatron's default; the launch scripts do not set
    #   --calculate-per-token-loss) | 'token': one token mean over the whole global batch, so
    #   tokens of sparsely masked (SFT) micro-batches do not weigh more
    # ---- schedule (schedule.WSD; every step is a GLOBAL step so phases chain) -----------
    # Positions: start_step, decay_start_step, max_steps. Lengths: warmup_steps, decay_steps.
    start_step: int = 0  # global step this phase starts at (the previous phase's max_steps)
    max_steps: int = 60  # global step this phase ENDS at (exclusive): a position, not a length
    learning_rate: float = 1e-2  # µP base LR = the embedding's; other groups x lr_mult
    warmup_steps: int = 6  # length of the linear warmup, from start_step
    warmup_init_lr: float = 0.0  # LR at start_step
    decay_start_step: Optional[int] = None  # global step the decay starts; None = no decay
    decay_steps: int = 0  # length of the decay; min_lr from decay_start_step + decay_steps on
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
    muon_matched_adamw_rms: float = 0.2  # Muon's update is scaled to this RMS x its LR:
    #                                      0.2·sqrt(max(rows, cols)) (RECIPE §2, the launch flag)
    muon_reset_adamw_state: bool = True  # at the switch AdamW (embedding, norms) restarts
    #                                      with fresh state: the decay's --no-load-optim
    muon_split_fused: bool = False  # ablation: orthogonalize q/k/v and gate/up separately
    #                                 (the recipe keeps the fused matrices whole, RECIPE §2)
    update_rms_step: Optional[int] = None  # log each parameter role's update RMS for 5 steps on
    #                                        each side of this step; None = muon_switch_step
    # ---- systems ---------------------------------------------------------------------
    dtype: str = "auto"  # 'auto' = bfloat16 on CUDA, float32 on CPU | 'bfloat16' | 'float32'
    fp8: bool = False  # FP8 block Linears via fp8.py (RECIPE §4); needs an SM89+ GPU
    fp8_backend: str = "auto"  # 'auto' (TransformerEngine if installed, else native) | 'te' | 'native'
    fp8_output: bool = False  # also the output layer's GEMMs in the chunked loss (native FP8;
    #                           an experiment: the recipe keeps it in high precision, RECIPE §4)
    loss_impl: str = "chunked"  # output layer + loss: 'chunked' (model.py) | 'liger' | 'cce' (optional
    #                             CUDA packages; docs/PERFORMANCE.md: liger 1.45-1.68x the chunked loss at the
    #                             proxy's shape; with compile_scope='model' the proxy step 1.39x transformers)
    fp8_emulate: bool = False  # tests only: run the native FP8 path emulated on a CPU
    parallel: str = "ddp"  # under torchrun: 'ddp' | 'fsdp' (FSDP2 fully_shard per block)
    compile: Union[bool, str] = "auto"  # torch.compile: 'auto' = on for CUDA, off on CPU
    compile_scope: str = "block"  # 'block': each block and the loss alone (any parallel mode);
    #   'model': the whole model in one graph (one process or DDP): on one H200 the proxy ran
    #   956k vs 899k tokens/s with bench.py (docs/PERFORMANCE.md), the full model equal
    compile_mode: str = "default"  # torch.compile's mode. 'reduce-overhead' replays each step
    #   as CUDA graphs, for steps the host cannot launch fast enough: the proxy at vocabulary
    #   8192 takes 5-9 ms a step and the host as long to issue it (one H200, docs/PERFORMANCE.md).
    #   One process, compile_scope='model', no FP8 (its scaling state changes in every forward)
    recompute_elementwise: bool = False  # torch.compile recomputes the blocks' element-wise
    #   outputs that backward GEMMs read (RMSNorm, SwiGLU, bf16 weight casts) instead of keeping
    #   them: 48.6 -> 32.1 KB of activations per token and block and no bf16 weight copies (45.8
    #   MiB per block) at full width (CPU count: docs/measurements/saved_activations.py); full
    #   model, micro-batch 4, one H200: 63.5 -> 48.9 GiB at 0.98x the speed (docs/PERFORMANCE.md)
    recompute_swiglu: bool = False  # keep the gate|up output only and recompute the SwiGLU
    #   output from it in backward: 48.6 -> 41.1 KB per token and block at full width, i.e.
    #   -5.6 GiB at micro-batch 4 (CPU count: docs/measurements/saved_activations.py); full
    #   model, micro-batch 4, one H200: 63.5 -> 57.8 GiB at 0.987x the speed (docs/PERFORMANCE.md)
    activation_checkpointing: Union[bool, int] = False  # recompute blocks in backward:
    #   True = every block (16K context); N = every N-th block only, a selective trade of
    #   ~1 GiB of activations per block (full model, 16K tokens) for ~1/3 of its compute
    # ---- logging, evaluation, checkpoints ----------------------------------------------
    log_interval: int = 5  # steps between log lines (the only host syncs besides the skip test)
    eval_interval: int = 30  # steps between validation passes; 0 = only at the end
    eval_steps: int = 4  # micro-batches per val source AND per rank in a validation pass: each
    #                      source is scored on eval_steps x micro_batch x world_size sequences
    eval_tasks: dict[str, int] = field(default_factory=dict)  # downstream tasks scored on each
    #   checkpoint (and the last), beside the loss: {lm-eval task: shots, -1 = its default}, e.g.
    #   {"mmlu_offline": 0}; `python eval_reasoning.py --list` shows what runs here (RECIPE §6)
    eval_tasks_limit: int = 50  # items per task (per subtask of a group such as MMLU); 0 = all
    eval_tasks_include_path: str = ""  # a folder of extra lm-eval task YAMLs (local data)
    ckpt_interval: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 3  # checkpoints kept in out_dir/ckpt; 0 = all
    save_final: bool = True  # False: none at max_steps unless ckpt_interval lands there (a sweep
    #                          keeps only the metrics); a stop signal still saves one
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
        if key in {f.name for f in dataclasses.fields(model_lib.ModelConfig)}:
            hint = (f"; {key!r} is a model setting: put it in model_overrides, e.g. "
                    f"--model_overrides=\"{{'{key}': {value!r}}}\" (or model_overrides = "
                    f"dict({key}={value!r}) in a config file)")
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


def read_config_file(path, _including=()):
    """A config file's settings as {key: value}: a written config.json, or a Python file run in
    a fresh namespace (nothing leaks in or out, unlike nanoGPT's exec) that provides
    include(name, *keys): the settings of another config file, all or only `keys`."""
    with open(path) as f:
        source = f.read()
    if path.endswith(".json"):
        return json.loads(source)
    path = os.path.abspath(path)
    if path in _including:
        chain = " -> ".join(os.path.basename(p) for p in (*_including, path))
        raise ConfigError(f"{path}: config files include each other ({chain})")
    namespace = {"__file__": path}

    def include(name, *keys):
        other = read_config_file(os.path.join(os.path.dirname(path), name), (*_including, path))
        missing = [k for k in keys if k not in other]
        if missing:
            raise ConfigError(f"{path}: include({name!r}) names {missing}, which {name} does not set")
        namespace.update({k: other[k] for k in keys} if keys else other)
    namespace["include"] = include
    exec(compile(source, path, "exec"), namespace)
    # Names starting with '_' are the file's own helpers; imports and functions are not settings.
    return {k: v for k, v in namespace.items()
            if not (k.startswith("_") or isinstance(v, type(os)) or callable(v))}


def load_config(path=None, overrides=(), world_size=None) -> Config:
    """Defaults <- config file (Python or a written config.json) <- --key=value overrides,
    type-checked and validated for `world_size` (default: $WORLD_SIZE or 1)."""
    values = {}
    if path is not None:
        for key, value in read_config_file(path).items():
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
    errors = schedule.WSD.from_config(cfg).problems()  # the LR schedule's own rules

    def need(ok, msg):
        if not ok:
            errors.append(msg)

    for key in ("global_batch", "micro_batch", "seq_len", "max_seq_len", "log_interval",
                "eval_steps", "max_nonfinite_in_a_row"):
        need(getattr(cfg, key) > 0, f"{key} must be > 0, got {getattr(cfg, key)}")
    for key in ("eval_interval", "ckpt_interval", "keep_last", "nonfinite_reloads"):
        need(getattr(cfg, key) >= 0, f"{key} must be >= 0, got {getattr(cfg, key)}")
    # Batch: every ramp point must split evenly over ranks and micro-batches.
    try:
        schedule.check_batch_ramp(cfg.global_batch, cfg.batch_ramp)
        ramp_ok = True
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
    need(cfg.save_final or not cfg.eval_tasks,
         "eval_tasks are scored on the final checkpoint: set save_final=True, or drop eval_tasks")
    need(cfg.muon_matched_adamw_rms > 0,
         f"muon_matched_adamw_rms must be > 0 (RECIPE §2: 0.2), got {cfg.muon_matched_adamw_rms}")
    if cfg.update_rms_step is not None:
        need(cfg.start_step <= cfg.update_rms_step < cfg.max_steps,
             f"update_rms_step ({cfg.update_rms_step}) must be in this phase's steps [start_step="
             f"{cfg.start_step}, max_steps={cfg.max_steps}), or None for muon_switch_step")
    # Data mixture.
    need(len(cfg.data) > 0, "data is empty: give at least one {dataset_dir: weight}")
    for name, mix in (("data", cfg.data), ("val_data", cfg.val_data or {})):
        for path, w in mix.items():
            need(w > 0, f"{name}[{path!r}] weight must be > 0, got {w} (drop the source instead)")
    # Choices.
    need(not cfg.load_optimizer or cfg.init_from != "scratch",
         "load_optimizer=True needs init_from to name a checkpoint (or 'resume')")
    need(cfg.parallel in ("ddp", "fsdp"), f"parallel must be 'ddp' or 'fsdp', got {cfg.parallel!r}")
    need(cfg.loss_reduction in ("micro_batch", "token"),
         f"loss_reduction must be 'micro_batch' or 'token', got {cfg.loss_reduction!r}")
    need(cfg.dtype in ("auto", "bfloat16", "float32"),
         f"dtype must be 'auto', 'bfloat16' or 'float32', got {cfg.dtype!r}")
    need(cfg.compile in (True, False, "auto"), f"compile must be True, False or 'auto', got {cfg.compile!r}")
    need(cfg.compile_scope in ("block", "model"), f"compile_scope must be 'block' or 'model', got {cfg.compile_scope!r}")
    need(cfg.compile_scope == "block" or cfg.parallel != "fsdp" or world_size == 1,
         "compile_scope='model' is for one process or DDP; FSDP2 compiles block by block (compile_scope='block')")
    need(cfg.compile_mode in COMPILE_MODES,
         f"compile_mode must be one of {', '.join(map(repr, COMPILE_MODES))}, got {cfg.compile_mode!r}")
    need(cfg.compile_mode == "default" or compile_on(cfg, cuda_wanted(cfg)),
         f"compile_mode={cfg.compile_mode!r} is torch.compile's, which is off here: set compile=True "
         f"(compile='auto' means off on a CPU)")
    need(not cuda_graphs(cfg) or (cfg.compile_scope == "model" and world_size == 1 and not cfg.fp8),
         f"compile_mode={cfg.compile_mode!r} (CUDA graphs) is for one process with "
         f"compile_scope='model' and without fp8: set compile_scope='model', or compile_mode='default'")
    need(cfg.device in ("auto", "cpu", "cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    need(not cfg.recompute_elementwise or compile_on(cfg, cuda_wanted(cfg)),
         "recompute_elementwise=True works through torch.compile, which is off here: set "
         "compile=True (compile='auto' means off on a CPU)")
    try:
        model_lib.check_loss_impl(cfg.loss_impl)
    except ValueError as e:
        errors.append(str(e))
    need(cfg.loss_impl == "chunked" or cuda_wanted(cfg),
         f"loss_impl={cfg.loss_impl!r} runs Triton kernels, which need a GPU: use loss_impl='chunked' on a CPU")
    need(cfg.fp8_backend in ("auto", "te", "native"),  # fp8.convert_to_fp8's backends
         f"fp8_backend must be 'auto', 'te' or 'native', got {cfg.fp8_backend!r}")
    need(not cfg.fp8_output or (cfg.fp8 and cfg.loss_impl == "chunked"),
         "fp8_output=True puts the chunked loss's GEMMs in FP8: it needs fp8=True and loss_impl='chunked'")
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
    model_keys_ok = (cfg.model_preset in model_lib.PRESETS
                     and set(cfg.model_overrides) <= mc_fields - {"mup", "max_seq_len"})
    if cfg.fp8_output and not cfg.fp8_emulate and model_keys_ok:
        # _scaled_mm needs every dimension of the output layer's GEMMs divisible by 16; otherwise
        # fp8.fp8_output_gemms falls back to emulated products, several times slower
        mc = model_lib.model_config(cfg.model_preset, **cfg.model_overrides)
        for name, n in (("micro_batch × seq_len", cfg.micro_batch * cfg.seq_len),
                        ("d_model", mc.d_model), ("vocab_size", mc.vocab_size)):
            need(n % fp8.FP8_DIM_MULTIPLE == 0, f"fp8_output=True needs {name} to be a multiple of "
                 f"{fp8.FP8_DIM_MULTIPLE} (its FP8 GEMMs), got {n}")
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
# The loop, and what one step calls.

class NonFiniteError(RuntimeError):
    pass


class NothingToDo(Exception):
    """A resumed run that is already at max_steps: say so, touch nothing, exit 0."""


def phase_config_writing(path):
    """The config/*.py whose out_dir is `path` (for 'run it first' advice), or None."""
    if path in ("scratch", "resume"):
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(os.path.join(here, "config"))):
        try:
            out_dir = read_config_file(os.path.join(here, "config", name)).get("out_dir") \
                if name.endswith(".py") else None
        except Exception:  # advice only: a config that does not load is not the one
            continue
        if out_dir and os.path.normpath(out_dir) == os.path.normpath(path):
            return f"config/{name}"
    return None


def train(cfg: Config):
    """Train one phase. With nonfinite_reloads > 0, a run stopped by max_nonfinite_in_a_row
    non-finite steps restarts from its last checkpoint through the ordinary, exact resume path
    (not a second reload path to keep in sync with it). That cures a transient fault; a NaN
    that the weights and data reproduce comes back, and the run stops once reloads run out."""
    for reloads in range(cfg.nonfinite_reloads + 1):
        try:
            return run_phase(cfg)
        except NonFiniteError as e:
            if reloads == cfg.nonfinite_reloads or not checkpoint.has_checkpoint(cfg.out_dir):
                raise
            print(f"[train] {e}\n[train] nonfinite_reloads: resuming from the last checkpoint "
                  f"({reloads + 1} of {cfg.nonfinite_reloads})", flush=True)
        cfg = dataclasses.replace(cfg, init_from="resume")


def run_phase(cfg: Config):
    """From setup to max_steps, or until a SIGTERM/SIGINT (checkpointed: see StopSignal)."""
    with StopSignal() as stop:
        run = setup(cfg, stop)
        d, step, last_val = run.d, run.start_step, None
        meter = Meter(run.raw_model.flops_per_token(cfg.seq_len),
                      cfg.peak_tflops or default_peak_tflops(d.device), d.world_size)
        with run.logger as logger:
            log_start(run)
            run.model.train()
            while step < cfg.max_steps:
                t0 = time.time()
                try:
                    result = train_step(run, step)
                except StepInterrupted:  # a signal in the micro-batch loop: this step never happened
                    save_checkpoint(run, step)
                    logger.log({"kind": "event", "step": step, "event": "stopped_by_signal",
                                "partial_step_discarded": True},
                               f"stopped by signal during step {step + 1}: that partial step was "
                               f"discarded, the checkpoint is step {step}; continue with --init_from=resume")
                    break
                step += 1
                meter.add(result.loss, result.global_batch * cfg.seq_len, time.time() - t0)
                logger.advance(1, result.loss)
                # The first step logs at once: on a CPU, log_interval steps can take minutes.
                if step % cfg.log_interval == 0 or step == cfg.max_steps or step == run.start_step + 1:
                    log_train(run, step, result, meter)
                if step == run.start_step + 1:
                    warn_if_slow(run, step, time.time() - t0)
                end = step == cfg.max_steps
                with meter.paused():  # evaluation and checkpoint time stays out of tokens/s
                    if ((cfg.eval_interval and step % cfg.eval_interval == 0) or end) \
                            and not result.stop_requested:
                        last_val = evaluate(run)
                        logger.log({"kind": "val", "step": step, "val_loss": last_val}, f"step {step}: val "
                                   + ", ".join(f"{k} {v:.4f}" for k, v in last_val.items()))
                    if result.stop_requested or (end and cfg.save_final) or \
                            (cfg.ckpt_interval and step % cfg.ckpt_interval == 0):
                        path = save_checkpoint(run, step)
                        if cfg.eval_tasks and not result.stop_requested:
                            scores = score_tasks(run, path)
                            logger.log({"kind": "eval_tasks", "step": step,
                                        **{f"eval/{k}": v for k, v in scores.items()}},
                                       f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
                if result.stop_requested:
                    logger.log({"kind": "event", "step": step, "event": "stopped_by_signal",
                                "partial_step_discarded": False},
                               f"stopped by signal after step {step}; continue with --init_from=resume")
                    break
    if d.master and step == cfg.max_steps:
        write_report(cfg, run, meter, step)
    if dist.is_initialized():
        dist.destroy_process_group()
    return {"step": step, "train_loss": meter.last_loss, "val_loss": last_val}


def save_checkpoint(run, step):
    """Checkpoint `step` (steps done) through checkpoint.save, logged -> the step dir."""
    path = checkpoint.save(run.cfg, step, run.model, run.raw_model, run.opt, run.d, run.fsdp,
                           run.data.tokenizer_meta)
    run.logger.log({"kind": "checkpoint", "step": step, "path": path}, f"step {step}: checkpoint {path}")
    return path


class StepResult(NamedTuple):
    loss: float  # over micro-batches and ranks, as loss_reduction weighs them
    lr: float  # the schedule's base LR (groups run at lr x lr_mult)
    grad_norm: float  # before clipping
    global_batch: int
    stop_requested: bool  # a SIGTERM/SIGINT reached some rank


def train_step(run, step) -> StepResult:
    """Optimizer step `step` (global): the AdamW -> Muon switch when due, the LR, gradient
    accumulation over this rank's micro-batches, clipping, and the update unless the loss or
    the gradient norm is non-finite. One host sync: the .tolist() below. A stop signal in a
    single process's micro-batch loop raises StepInterrupted, with the step undone."""
    cfg, d, opt, log = run.cfg, run.d, run.opt, run.logger.log
    if muon_wanted(cfg, step) and not opt.muon_active:
        opt.switch_to_muon()
        log({"kind": "event", "step": step, "event": "muon_switch"},
            f"step {step}: AdamW -> Muon for the hidden matrices "
            f"(fresh momentum; AdamW state {'reset' if cfg.muon_reset_adamw_state else 'kept'})")
    lr = opt.set_lr(run.lr_schedule, step)
    global_batch = schedule.batch_at(step, cfg.global_batch, cfg.batch_ramp)
    accum = global_batch // (cfg.micro_batch * d.world_size)
    batches = micro_batches(run.data, step, d, accum, cfg.micro_batch, d.device)
    if cfg.loss_reduction == "token":  # its weights need every micro-batch's token count first
        batches = list(batches)
    # Otherwise a generator: the host reads micro-batch i+1 while the GPU runs micro-batch i.
    # Until opt.step() one process changes nothing but the gradients and the RNG streams, so a
    # stop signal in the micro-batch loop drops the step at once (StopSignal): on a CPU a step
    # of many micro-batches takes minutes. Not under FSDP2 (its hooks shard and unshard
    # mid-step), nor with FP8, whose delayed scaling moves the amax histories in every forward.
    droppable = d.world_size == 1 and not run.fsdp and run.fp8_report is None
    rng = checkpoint.rng_state() if droppable else None  # 0.1 ms on a CPU
    try:
        with run.stop.droppable_step(droppable):
            loss_sum = accumulate_gradients(run, batches, accum)
    except StepInterrupted:
        opt.zero_grad()  # the partial gradients
        checkpoint.set_rng_state(rng)  # as the step found it: the checkpoint continues from there
        raise
    grad_norm = opt.clip_grad_norm(cfg.grad_clip)
    # One small all-reduce (mean loss over ranks + "stop requested anywhere") and one host
    # sync per step: deciding to skip a non-finite update needs the value on the host.
    stop_vote = torch.tensor(float(run.stop.requested), device=d.device)
    stats = all_reduce(torch.stack([loss_sum, stop_vote]))
    loss, stop_votes, gnorm = torch.cat([stats, grad_norm.float().reshape(1)]).tolist()
    loss /= d.world_size
    before = opt.snapshot() if opt.near_switch(step) else None
    if run.monitor.finite(loss, gnorm):
        opt.step()
    else:
        log({"kind": "nonfinite", "step": step, "loss": loss, "grad_norm": gnorm},
            f"step {step}: non-finite loss/grad (loss {loss}, grad norm {gnorm}): "
            f"update skipped ({run.monitor.in_a_row} in a row)")
        if run.monitor.must_stop:
            raise NonFiniteError(f"{run.monitor.in_a_row} non-finite steps in a row at step {step}: "
                                 f"stopping. Resume from the last checkpoint with --init_from=resume "
                                 f"(perhaps with a lower learning_rate), or set nonfinite_reloads to "
                                 f"do that automatically")
    opt.zero_grad()
    if before is not None:
        rms = opt.update_rms(before)
        log({"kind": "update_rms", "step": step, **{f"update_rms_{n}": r for n, r in rms.items()}},
            f"step {step}: update RMS " + ", ".join(f"{n} {r:.3e}" for n, r in rms.items()))
    spike = run.monitor.spike(loss)
    if spike is not None:
        mean, std = spike
        log({"kind": "spike", "step": step, "loss": loss, "mean": mean, "std": std,
             "data_position": {"step": step, "seed": cfg.seed}},
            f"step {step}: loss spike {loss:.4f} (recent mean {mean:.4f}, std {std:.4f}); "
            f"data: Mixture.get_batch(step={step}, micro_step=0..{accum * d.world_size - 1})")
    return StepResult(loss, lr, gnorm, global_batch, stop_votes > 0)


def accumulate_gradients(run, batches, accum):
    """Forward and backward over this rank's `accum` micro-batches -> the sum of their weighted
    losses."""
    d, loss_sum = run.d, torch.zeros((), device=run.d.device)
    graphs = cuda_graphs(run.cfg)
    for (i, x, y, mask), weight in zip(batches, loss_weights(run.cfg, d, batches, accum)):
        if graphs:  # a new replay may reuse the last one's outputs: only loss_sum outlives it
            torch.compiler.cudagraph_mark_step_begin()
        with grad_sync(run, last=i == accum - 1):
            with autocast(run):
                loss = run.model(x, y, loss_mask=mask) * weight
            loss.backward()
        if run.fp8_report is not None and d.world_size > 1:
            # Native FP8: ranks share one delayed-scaling state from each micro-batch on, as TE
            # reduces the amaxes at every (outermost) FP8 autocast exit; one small all-reduce.
            fp8.sync_amax_history(run.raw_model)
        loss_sum += loss.detach().float()
    return loss_sum


# ---------------------------------------------------------------------------------------
# Data: a batch is a pure function of (seed, step, global micro-batch index).

def loss_weights(cfg, d, batches, accum):
    """The factor on each micro-batch's token-mean loss. Gradients are averaged over ranks
    (DDP, FSDP2), so the weights of one rank sum to 1 on average. 'micro_batch': 1 / accum,
    every micro-batch alike (Megatron's default). 'token': its valid-token count x world_size /
    the global batch's (one small all-reduce), which makes the step's loss the token mean."""
    if cfg.loss_reduction == "micro_batch":
        return [1 / accum] * accum
    # The model's rule for a counted position: target >= 0 and loss mask 1.
    counts = torch.stack([((y >= 0) & (True if m is None else m.bool())).sum() for _, _, y, m in batches])
    total = all_reduce(counts.sum().float()).clamp(min=1)
    return list(counts.float() * d.world_size / total)


def micro_batches(mixture, step, d, accum, micro_batch, device):
    """Yield this rank's `accum` micro-batches of global step `step`.

    The global micro-batch index rank*accum + i (not (rank, i)) keeps the global batch
    identical whatever the world size: 1 process x 4 micro-steps sees the same sequences as
    2 processes x 2 micro-steps. That makes DDP == single process and lets an FSDP run
    resume on a different number of GPUs without changing its data."""
    for i in range(accum):
        x, y, mask = mixture.get_batch(step, 0, d.rank * accum + i, micro_batch)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mask is not None:
            mask = mask.to(device, non_blocking=True)
        yield i, x, y, mask


# ---------------------------------------------------------------------------------------
# Gradient sync, autocast, the all-reduce.

def grad_sync(run, last):
    """Gradients are all-reduced once per optimizer step, on the last micro-batch."""
    if run.fsdp:
        run.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    return run.model.no_sync() if (run.d.world_size > 1 and not last) else contextlib.nullcontext()


def autocast(run):
    """bf16 autocast (single process, DDP and FSDP2 alike: apply_fsdp keeps fp32 params) + TE's
    FP8 autocast."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(run.d.device.type, dtype=run.dtype,
                                       enabled=run.dtype != torch.float32))
    stack.enter_context(fp8.fp8_autocast_context(run.fp8_report))
    return stack


def all_reduce(t, op=dist.ReduceOp.SUM):
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


# ---------------------------------------------------------------------------------------
# Optimizers: AdamW over every µP group; from muon_switch_step on, Muon over the matrices.

UPDATE_RMS_WINDOW = 5  # steps on each side of the switch whose update RMS is logged


def muon_wanted(cfg, step):
    return cfg.muon_switch_step is not None and step >= cfg.muon_switch_step


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


class Optimizers:
    """AdamW and, after the switch, Muon (RECIPE §2), behind one object: the loop calls
    set_lr, step and zero_grad once; checkpoint.py saves and loads it."""

    def __init__(self, model, cfg, device, muon_active):
        self.model, self.cfg, self.device = model, cfg, device
        self.muon_active = muon_active
        self.optimizers = self._build(muon_active)
        # CUDA graphs: a replay reuses its outputs' memory, and autograd keeps a parameter's
        # first gradient of a step as .grad without a copy when .grad is None, so with two
        # micro-batches the next replay overwrote it (one H200, docs/PERFORMANCE.md). Gradients
        # that live outside the graphs, zeroed instead of freed, are added to in place.
        self.keep_grads = cuda_graphs(cfg)
        if self.keep_grads:
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)

    def _build(self, muon_active):
        cfg = self.cfg
        groups = mup.param_groups(self.model, cfg.weight_decay)
        adamw_kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=self.device.type == "cuda")
        for g in groups:
            g["lr"] = 0.0  # set every step from the schedule
        if not muon_active:
            return [torch.optim.AdamW(groups, **adamw_kw)]
        adamw_groups, muon_groups = muon.split_groups_for_muon(groups)  # matrices -> Muon
        if cfg.muon_split_fused:  # ablation: q|k|v and gate|up orthogonalized block by block
            muon.add_fused_row_splits(muon_groups, self.model.config)
        return [torch.optim.AdamW(adamw_groups, **adamw_kw),
                muon.Muon(muon_groups, momentum=cfg.muon_momentum,
                          matched_adamw_rms=cfg.muon_matched_adamw_rms)]

    def switch_to_muon(self):
        """RECIPE §2: at the decay boundary the hidden matrices move to Muon with fresh momentum;
        the embedding and norms stay on AdamW, with fresh state by default (--no-load-optim)."""
        new = self._build(muon_active=True)
        if not self.cfg.muon_reset_adamw_state:
            old_state = self.optimizers[0].state
            for g in new[0].param_groups:
                for p in g["params"]:
                    if p in old_state:
                        new[0].state[p] = old_state[p]
        self.optimizers, self.muon_active = new, True

    def set_lr(self, lr_schedule, step):
        """Every group's LR at `step` -> the schedule's base LR (for the log). µP scales each
        group's peak by its lr_mult; warmup start and floor are absolute (RECIPE §3)."""
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr_schedule.group_lr_at(step, g["lr_mult"])
        return lr_schedule.lr_at(step)

    def clip_grad_norm(self, max_norm):
        """Gradient norm over all parameters (DTensor-aware under FSDP2); clipped at max_norm > 0."""
        params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=not self.keep_grads)

    def state_dict(self):
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, saved):
        for opt, sd in zip(self.optimizers, saved):
            # The config's weight decay and group LR multipliers win over the saved ones.
            keep = [{k: g[k] for k in ("weight_decay", "lr_mult")} for g in opt.param_groups]
            opt.load_state_dict(sd)
            for g, k in zip(opt.param_groups, keep):
                g.update(k)

    def near_switch(self, step):
        s = self.cfg.update_rms_step if self.cfg.update_rms_step is not None else self.cfg.muon_switch_step
        return s is not None and abs(step - s) < UPDATE_RMS_WINDOW

    def snapshot(self):
        """This rank's copy of every parameter, for update_rms()."""
        return [[_local(p.detach()).clone() for g in opt.param_groups for p in g["params"]]
                for opt in self.optimizers]

    def update_rms(self, before):
        """{role: RMS} of the update applied since snapshot(), LR included, per parameter role
        (embedding, matrix, norm: mup.param_groups), whichever optimizer holds it, so the hidden
        matrices under AdamW and under Muon compare directly. RECIPE §2 names a loss spike right
        after the switch as a Muon failure mode; its signature is a jump here."""
        sums, device = {}, None
        for opt, snap in zip(self.optimizers, before):
            params = [(g["role"], p) for g in opt.param_groups for p in g["params"]]
            for (role, p), b in zip(params, snap):
                delta = _local(p.detach()).float() - b.float()
                acc = sums.setdefault(role, torch.zeros(2, dtype=torch.float64, device=b.device))
                acc[0] += delta.pow(2).sum().double()
                acc[1] += delta.numel()
        roles = sorted(sums)
        stats = torch.stack([sums[r] for r in roles])
        if any(hasattr(p, "to_local") for opt in self.optimizers for g in opt.param_groups for p in g["params"]):
            all_reduce(stats)  # FSDP2: shards -> the full sums
        return {r: math.sqrt(sq / max(n, 1)) for r, (sq, n) in zip(roles, stats.tolist())}


# ---------------------------------------------------------------------------------------
# Watching the run: non-finite steps and loss spikes; throughput.

class Monitor:
    """A non-finite loss or gradient norm skips the update, max_nonfinite_in_a_row of them in a
    row stop the run; a finite loss above mean + spike_factor x std of the last 100 (judged
    once 20 are in) is a spike, logged with its data position."""

    def __init__(self, cfg):
        self.max_in_a_row, self.spike_factor = cfg.max_nonfinite_in_a_row, cfg.spike_factor
        self.recent = deque(maxlen=100)
        self.in_a_row = self.skipped = 0

    def finite(self, loss, grad_norm):
        if math.isfinite(grad_norm) and math.isfinite(loss):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        return False

    @property
    def must_stop(self):
        return self.in_a_row >= self.max_in_a_row

    def spike(self, loss):
        """(mean, std) of the recent losses when `loss` spikes above them, else None."""
        if not math.isfinite(loss):
            return None
        out = None
        if len(self.recent) >= 20:
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((v - mean) ** 2 for v in self.recent) / len(self.recent))
            if loss > mean + self.spike_factor * max(std, 1e-3):
                out = (mean, std)
        self.recent.append(loss)
        return out


class Meter:
    """What a train log line reports over its interval: the mean finite loss, tokens/s, MFU
    and the ETA; plus the run's totals for the report."""

    def __init__(self, flops_per_token, peak_tflops, world_size):
        self.flops_per_token, self.peak, self.world_size = flops_per_token, peak_tflops, world_size
        self.tokens_run, self.tokens, self.t_log = 0, 0, time.time()
        self.losses, self.last_loss, self.mfu = [], None, None
        self.step_times = deque(maxlen=20)

    def add(self, loss, tokens, seconds):
        if math.isfinite(loss):
            self.losses.append(loss)
        self.tokens_run += tokens
        self.tokens += tokens
        self.step_times.append(seconds)

    def interval(self, steps_left):
        """-> (mean loss, tokens/s, MFU or None, ETA seconds) since the last call."""
        tok_s = self.tokens / max(time.time() - self.t_log, 1e-9)
        self.mfu = self.flops_per_token * tok_s / (self.peak * 1e12 * self.world_size) if self.peak else None
        eta = steps_left * sum(self.step_times) / len(self.step_times)
        if self.losses:
            self.last_loss = sum(self.losses) / len(self.losses)
        self.losses, self.tokens, self.t_log = [], 0, time.time()
        return self.last_loss, tok_s, self.mfu, eta

    @contextlib.contextmanager
    def paused(self):
        t = time.time()
        yield
        self.t_log += time.time() - t


# ---------------------------------------------------------------------------------------
# Setup: what one phase trains with.

@dataclass
class Run:
    cfg: Config
    d: "Dist"
    model: torch.nn.Module  # what a step calls: raw_model, or its DDP / FSDP2 wrapper
    raw_model: model_lib.Xmodel
    opt: "Optimizers"
    lr_schedule: schedule.WSD
    data: prepare.Mixture
    val_sets: dict  # val source name -> Mixture
    dtype: torch.dtype  # autocast dtype (float32: autocast off)
    fsdp: bool
    use_compile: bool
    fp8_report: Optional[fp8.FP8Report]
    start_step: int  # the first step this run trains
    t_start: float
    monitor: "Monitor"
    logger: "Logger"  # entered by the loop
    stop: "StopSignal"


def setup(cfg: Config, stop) -> Run:
    """Everything that can fail cheaply fails first and before anything is written: the config
    for the real world size, the checkpoint to start from, FP8 support, the data, the model
    and the checkpoint's fit to both. Then config.json, FP8, compile, DDP/FSDP2, optimizers."""
    t_start = time.time()
    d = setup_distributed(cfg)
    validate(cfg, d.world_size)  # again, now with the real world size
    start = checkpoint.start_dir(cfg, writer=phase_config_writing(cfg.init_from))
    if cfg.wandb_log and d.master:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("wandb_log=True needs `pip install wandb` (wandb_mode='offline' works "
                              "without an account)") from None
    if cfg.fp8:  # here, not at the first forward: before out_dir, data, model and compile
        fp8.check_fp8_supported(d.device, emulate=cfg.fp8_emulate)
    # Data first: a bad source or tokenizer fails before the model is built.
    data = prepare.Mixture(cfg.data, "train", cfg.seq_len, cfg.seed)
    val_seed = cfg.seed if cfg.val_seed is None else cfg.val_seed
    val_sets = {os.path.basename(os.path.normpath(p)): prepare.Mixture({p: 1.0}, "val", cfg.seq_len, val_seed)
                for p in (cfg.val_data or cfg.data)}
    raw_model = build_model(cfg, d.device)
    prepare.check_vocab(data.tokenizer_meta, raw_model.config.vocab_size)  # ids must fit the embedding
    fsdp = cfg.parallel == "fsdp" and dist.is_initialized()  # torchrun, even with 1 process
    step, train_state = cfg.start_step, None
    if start is not None:
        step, train_state = checkpoint.load_start(start, raw_model, cfg, data.tokenizer_meta, fsdp, d.master)
    if step >= cfg.max_steps:  # a finished run resumed: nothing to train, nothing to write
        if step > cfg.max_steps:
            raise checkpoint.CheckpointError(f"{start} is at step {step}, past max_steps={cfg.max_steps}: "
                                             f"raise --max_steps above {step} to train further")
        raise NothingToDo(f"{cfg.out_dir} is already at step {step} = max_steps: nothing to do "
                          f"(pass a larger --max_steps, e.g. --max_steps={step + 100}, to train further)")
    # Optimizers: a resume rebuilds exactly what the checkpoint holds (an AdamW-only state then
    # switches to Muon in the loop, at the same step as an uninterrupted run would).
    muon_active = muon_wanted(cfg, step) if train_state is None else train_state["muon_active"]
    if muon_active and not muon_wanted(cfg, step):
        raise checkpoint.CheckpointError(
            f"the checkpoint's optimizer state is AdamW+Muon but this phase keeps AdamW only at "
            f"step {step}: set muon_switch_step <= {step}, or load_optimizer=False for a fresh AdamW")
    if cfg.eval_tasks:
        check_eval_tasks(cfg)
    os.makedirs(cfg.out_dir, exist_ok=True)
    if d.master:
        write_resolved_config(cfg)
    cuda = d.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    fp8_report = convert_fp8(raw_model, cfg, train_state, d.master)
    use_compile = compile_on(cfg, cuda)
    model = wrap_model(raw_model, cfg, d, fsdp, use_compile)
    opt = Optimizers(raw_model, cfg, d.device, muon_active)
    if train_state is not None:
        checkpoint.load_optimizer_state(start, model, opt, train_state, fsdp)
        if cfg.init_from == "resume":
            checkpoint.restore_rng(train_state, d)
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and cuda) else torch.float32
    return Run(cfg=cfg, d=d, model=model, raw_model=raw_model, opt=opt,
               lr_schedule=schedule.WSD.from_config(cfg), data=data, val_sets=val_sets, dtype=dtype,
               fsdp=fsdp, use_compile=use_compile, fp8_report=fp8_report, start_step=step,
               t_start=t_start, monitor=Monitor(cfg), logger=Logger(cfg, d, cfg.max_steps - step),
               stop=stop)


@dataclass
class Dist:
    """torchrun's environment; a plain `python train.py` is rank 0 of world size 1."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def master(self):
        return self.rank == 0


def cuda_wanted(cfg):
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that record CUDA graphs


def cuda_graphs(cfg):
    """Whether compile_mode records CUDA graphs."""
    return cfg.compile_mode in CUDA_GRAPH_MODES


def compile_kwargs(mode):
    """torch.compile's keyword arguments for a compile mode (its default passes none)."""
    return {} if mode == "default" else {"mode": mode}


def compile_on(cfg, cuda):
    """Whether this run uses torch.compile: compile=True, or 'auto' on CUDA."""
    return cfg.compile is True or (cfg.compile == "auto" and cuda)


def setup_distributed(cfg) -> Dist:
    use_cuda = cuda_wanted(cfg)
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


# ---------------------------------------------------------------------------------------
# Model: build, then each transformation applied from outside the model.

def build_model(cfg, device):
    mcfg = model_lib.model_config(cfg.model_preset, mup=cfg.mup, max_seq_len=cfg.max_seq_len,
                                  **cfg.model_overrides)
    torch.manual_seed(cfg.seed)  # same init on every rank (and DDP broadcasts rank 0's anyway)
    with torch.device(device):
        model = model_lib.Xmodel(mcfg)  # µP init happens in the constructor (mup.init_std)
    model.loss_impl = cfg.loss_impl
    return model


def convert_fp8(raw_model, cfg, train_state, master):
    """FP8 block Linears (RECIPE §4), after the weights are in and before compile, DDP/FSDP2
    and the optimizers (TE makes new Parameters). None when fp8=False."""
    if not cfg.fp8:
        return None
    report = fp8.convert_to_fp8(raw_model, backend=cfg.fp8_backend, emulate=cfg.fp8_emulate,
                                output_layer=cfg.fp8_output)
    if train_state is not None:
        fp8.load_fp8_state(raw_model, train_state["fp8"])  # delayed-scaling histories
    if master:
        print(f"[train] {report}")
    return report


def apply_activation_checkpointing(model, every=1):
    """Recompute every `every`-th block in backward (every=1: all of them). Wrapping
    `forward` (not the module) keeps the parameter names, so checkpoints and mup routing
    are unchanged."""
    from torch.utils.checkpoint import checkpoint as recompute

    def checkpointed(forward, *args, **kwargs):
        return recompute(forward, *args, use_reentrant=False, **kwargs)
    for i, block in enumerate(model.blocks):
        if i % every == 0:
            block.forward = functools.partial(checkpointed, block.forward)


def apply_swiglu_recompute(model):
    """Each MLP's SwiGLU under torch.utils.checkpoint: its output (the down projection's input)
    is not kept for backward but recomputed there from the gate|up output, which the SwiGLU
    backward reads anyway. No GEMM runs twice."""
    from torch.utils.checkpoint import checkpoint as recompute
    for block in model.blocks:
        block.mlp.act = functools.partial(recompute, model_lib.swiglu, use_reentrant=False)


def apply_fsdp(model):
    """FSDP2: each block its own all-gather unit, then the root (embedding, final norm).
    Same numerics as one process and DDP: fp32 parameters, bf16 matmuls from autocast (and the
    residual stream in bf16 or fp32 as model.residual_in_compute_dtype says, in every mode), fp32
    gradient reduction. A bf16 param_dtype would halve the all-gathers but round the weights
    to bf16 before the embedding and the norms in this mode only."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    # cast_forward_inputs=False: FSDP2 would otherwise cast each block's input to param_dtype,
    # fp32, and so undo the bf16 residual stream (residual_in_compute_dtype) from block 0 on.
    mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                              cast_forward_inputs=False)
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def set_elementwise_recompute(on):
    """torch.compile's partitioner keeps, by default, every tensor a backward GEMM reads: the
    RMSNorm outputs (for the qkv and gate|up weight gradients), the SwiGLU output (down's) and
    the bf16 casts of the weights. on=True lets it recompute those element-wise ops in backward
    from what it keeps anyway (the fp32 residual, the GEMM outputs, the fp32 weights). A process
    setting, read when a graph is compiled, so every run sets it (and a run in the same process
    after one that changed it gets its own)."""
    torch._functorch.config.ban_recompute_materialized_backward = not on


def wrap_model(raw_model, cfg, d, fsdp, use_compile):
    """Activation checkpointing, torch.compile, then FSDP2 or DDP -> the module a step calls."""
    set_elementwise_recompute(cfg.recompute_elementwise)
    if cfg.recompute_swiglu:
        apply_swiglu_recompute(raw_model)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(raw_model, 1 if cfg.activation_checkpointing is True
                                       else cfg.activation_checkpointing)
    mode = compile_kwargs(cfg.compile_mode)
    if use_compile and cfg.compile_scope == "block":
        # Block by block plus the loss (Xmodel.compile_by_block): as fast as one whole-model
        # compile on an H100 (42,355 vs 42,583 tokens/s) in 74 s instead of 180 s, the FP8
        # model in 74 s instead of over 420 s (docs/PERFORMANCE.md); same graphs for DDP/FSDP2.
        raw_model.compile_by_block(**mode)
    if fsdp:
        return apply_fsdp(raw_model)
    model = raw_model
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(raw_model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if use_compile and cfg.compile_scope == "model":
        model = torch.compile(model, **mode)  # around DDP: its bucketed all-reduce splits the graph
    return model


# ---------------------------------------------------------------------------------------
# Evaluation, logging (console + tqdm on a TTY, metrics.jsonl, wandb), the end-of-run report.

@torch.no_grad()
def evaluate(run):
    """Mean val loss per source over eval_steps micro-batches per rank, averaged over ranks."""
    cfg, d = run.cfg, run.d
    run.model.eval()
    out = {}
    for name, mixture in run.val_sets.items():
        total = torch.zeros((), device=d.device)
        for i in range(cfg.eval_steps):
            x, y, mask = mixture.get_batch(0, d.rank, i, cfg.micro_batch)
            x, y = x.to(d.device), y.to(d.device)
            mask = mask.to(d.device) if mask is not None else None
            if cuda_graphs(cfg):
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(run):
                total += run.model(x, y, loss_mask=mask).float()
        total = all_reduce(total) / (cfg.eval_steps * d.world_size)
        out[name] = total.item()
    run.model.train()
    return out


def check_eval_tasks(cfg):
    """Before anything is written: every task of eval_tasks is known and its data is here."""
    import eval_reasoning  # lazy: lm-eval loads only in runs that score tasks
    if not eval_reasoning.HAVE_LM_EVAL:
        raise ConfigError(f"eval_tasks needs lm-eval: pip install {eval_reasoning.LM_EVAL_PIN}")
    try:
        eval_reasoning.check_tasks(list(cfg.eval_tasks), cfg.eval_tasks_include_path or None)
    except eval_reasoning.TaskDataError as e:
        raise ConfigError(f"eval_tasks: {e}") from None


def score_tasks(run, path):
    """Scores (percent) of the checkpoint just written. Rank 0 loads its consolidated model.pt,
    so one path serves a single process, DDP and FSDP2 alike; the other ranks wait."""
    cfg, scores = run.cfg, {}
    if run.d.master:
        import eval_reasoning
        scores = eval_reasoning.score_checkpoint(
            path, tasks={k: (None if v < 0 else v) for k, v in cfg.eval_tasks.items()},
            limit=cfg.eval_tasks_limit or None, include_path=cfg.eval_tasks_include_path or None)
    if dist.is_initialized():
        dist.barrier()
    return scores


def _mfu_text(cfg, run, meter):
    """Both attention counts and which peak, so the figure compares with published ones."""
    if not meter.mfu:
        return "-"
    causal = meter.mfu * run.raw_model.flops_per_token(cfg.seq_len, causal=True) / meter.flops_per_token
    source = "peak_tflops" if cfg.peak_tflops else "datasheet dense bf16"
    return f"{meter.mfu:.1%} / {causal:.1%} of {meter.peak:g} TFLOP/s ({source})"


def default_peak_tflops(device):
    if device.type != "cuda":
        return None  # no meaningful CPU peak
    name = torch.cuda.get_device_name(device)
    # bf16 dense datasheet peak of H100/H200 SXM; bench.py measures the real one (RECIPE §4).
    return 989.0 if ("H100" in name or "H200" in name) else None


class Logger:
    """Rank 0 writes; the others ignore log(). A context manager: the progress bar and the
    wandb run are closed however the run ends."""

    def __init__(self, cfg, d, total_steps):
        self.cfg, self.master, self.total_steps = cfg, d.master, total_steps
        self.path = os.path.join(cfg.out_dir, "metrics.jsonl")
        self.wandb = self.bar = None

    def __enter__(self):
        if self.master and self.cfg.wandb_log:
            import wandb  # lazy: only runs that ask for it need the package
            self.wandb = wandb.init(project=self.cfg.wandb_project, name=self.cfg.run_name or None,
                                    config=asdict(self.cfg), mode=self.cfg.wandb_mode, dir=self.cfg.out_dir)
        if self.master and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total_steps, dynamic_ncols=True, leave=False)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.bar = self.wandb = None

    def log(self, record, line=None):
        if not self.master:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                           step=record.get("step"))
        if line:
            self.say(line)

    def say(self, line):
        """A console line above the progress bar (never into it)."""
        if self.master:
            if self.bar is not None:
                self.bar.write(line)
            else:
                print(line, flush=True)

    def advance(self, n=1, loss=None):
        if self.bar is not None:
            self.bar.update(n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")


def log_start(run):
    """The start record opens each run's window of metrics.jsonl (a resumed run appends a new
    window: "resumed": true, from "step")."""
    cfg, d, step = run.cfg, run.d, run.start_step
    n_params = run.raw_model.num_params()
    resumed = cfg.init_from == "resume"
    run.logger.log(
        {"kind": "start", "step": step, "resumed": resumed, "init_from": cfg.init_from,
         "world_size": d.world_size, "device": str(d.device), "params": n_params,
         "torch": torch.__version__, "muon_active": run.opt.muon_active},
        f"[train] {cfg.run_name or os.path.basename(os.path.normpath(cfg.out_dir))}: {n_params:,} "
        f"params ({cfg.model_preset}), steps {step} -> {cfg.max_steps}"
        + (f" (resumed at step {step})" if resumed else "") + f", world {d.world_size} "
        f"({cfg.parallel if d.world_size > 1 else 'single'}), {d.device}, {run.dtype}, "
        f"compile={run.use_compile}, fp8={cfg.fp8}, optimizer "
        f"{'AdamW+Muon' if run.opt.muon_active else 'AdamW'}, init_from={cfg.init_from}")


SLOW_STEP_S, SLOW_RUN_S = 10.0, 600.0  # a CPU run slower than this says so after step 1


def warn_if_slow(run, step, seconds):
    """On a CPU, after the first step: one line with the run's estimated duration when a step
    takes > SLOW_STEP_S or the run > SLOW_RUN_S, so a slow run does not look hung. (On a GPU
    the first step is dominated by compile and says nothing of the rest.)"""
    total = seconds * (run.cfg.max_steps - step)
    if run.d.device.type == "cpu" and (seconds > SLOW_STEP_S or total > SLOW_RUN_S):
        run.logger.say(f"[train] step {step} took {seconds:.1f}s on the CPU: the remaining "
                       f"{run.cfg.max_steps - step} steps will take about {_fmt_time(total)} "
                       f"(a GPU, a smaller model_preset or fewer max_steps is faster)")


def log_train(run, step, result, meter):
    """The train record after `step` steps, and its console line."""
    cfg, d = run.cfg, run.d
    loss, tok_s, mfu, eta = meter.interval(cfg.max_steps - step)
    mem = torch.cuda.max_memory_allocated(d.device) / 2**30 if d.device.type == "cuda" else None
    segment = run.lr_schedule.segment(step - 1)
    run.logger.log(
        {"kind": "train", "step": step, "phase": cfg.phase_name, "segment": segment, "loss": loss,
         "lr": result.lr, "grad_norm": result.grad_norm, "global_batch": result.global_batch,
         "tokens_per_s": tok_s, "mfu": mfu, "mem_gib": mem, "eta_s": eta,
         "muon_active": run.opt.muon_active, "time": time.time() - run.t_start},
        f"step {step}/{cfg.max_steps} {cfg.phase_name + ' ' if cfg.phase_name else ''}{segment} | "
        f"loss {loss if loss is not None else math.nan:.4f} | lr {result.lr:.3e} | "
        f"gnorm {result.grad_norm:.3f} | {tok_s:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "")
        + (f" | mem {mem:.1f}GiB" if mem is not None else "") + f" | eta {_fmt_time(eta)}")


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _loss_plot(cfg, train, val):
    """out_dir/loss.png -> its name, or None when matplotlib cannot draw it."""
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
        fig.savefig(os.path.join(cfg.out_dir, "loss.png"), dpi=110)
        plt.close(fig)
        return "loss.png"
    except Exception as e:  # a report without a plot is still a report
        print(f"[train] loss plot skipped: {e}")
        return None


def write_report(cfg, run, meter, last_step):
    """out_dir/report.md and loss.png: the run at a glance (nanochat's report card)."""
    with open(os.path.join(cfg.out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    png = _loss_plot(cfg, train, val)
    seconds, world = time.time() - run.t_start, run.d.world_size
    rows = [("phase", cfg.phase_name or "-"), ("steps", f"{run.start_step} -> {last_step}"),
            ("final train loss", f"{meter.last_loss:.4f}" if meter.last_loss is not None else "-")]
    for src, v in (val[-1]["val_loss"].items() if val else []):
        rows.append((f"final val loss {src}", f"{v:.4f}"))
    tasks = [r for r in records if r.get("kind") == "eval_tasks"]
    for key, v in (tasks[-1].items() if tasks else []):
        if key.startswith("eval/"):
            rows.append((f"{key[5:]} (step {tasks[-1]['step']}, {cfg.eval_tasks_limit or 'all'} items/task)", f"{v:.2f}"))
    rows += [("tokens this run", f"{meter.tokens_run:,}"),
             ("throughput", f"{meter.tokens_run / max(seconds, 1e-9):,.0f} tokens/s"),
             ("MFU, last log interval (attention full / causal-only)", _mfu_text(cfg, run, meter)),
             ("wall time", _fmt_time(seconds)),
             ("skipped (non-finite) updates", str(run.monitor.skipped)),
             ("model", f"{run.raw_model.num_params():,} parameters ({cfg.model_preset})"),
             ("world size / parallel", f"{world} / {cfg.parallel if world > 1 else 'single process'}"),
             ("device", str(run.d.device))]
    lines = [f"# Run report: {cfg.run_name or os.path.basename(os.path.abspath(cfg.out_dir))}", "",
             "| metric | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    if png:
        lines += [f"![loss]({png})", ""]
    with open(os.path.join(cfg.out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------
# Signals and the command line.

class StopSignal:
    """While entered, the first SIGTERM or SIGINT stops the run with a checkpoint of the last
    completed step, one line saying how to continue, and exit 0; a second SIGINT aborts at
    once without one (Aborted, exit 130). On exit the previous handlers are back, however the
    run ended (train() called in-process: tests, notebooks).

    When the first signal acts:
    - inside a droppable_step() (a single process's micro-batch loop, see train_step): at
      once. The handler raises StepInterrupted, and run_phase checkpoints the step before,
      as a resumed run must redo this one whole. A signal that came earlier, after the loop
      (optimizer update, eval, checkpoint writing), drops the next step as it starts.
    - anywhere else, and always under several processes (DDP, FSDP2): it sets `requested`;
      the step in progress ends with its update and the run stops after it. The ranks agree
      on that at the step's end (train_step's all-reduce): one rank cannot leave the others
      waiting inside a collective.
    SIGTERM acts as SIGINT does: a preemption's grace period is better spent saving than
    finishing a step. Python runs a handler between bytecodes only, so inside one long C++
    call (a big backward) the signal waits until the call returns."""

    def __init__(self):
        self.requested = False
        self.drop_step = False  # in a droppable_step(): the handler raises StepInterrupted
        self.previous = {}

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def droppable_step(self, droppable=True):
        """Around work that a signal may abandon (droppable=False: nothing changes)."""
        if droppable and self.requested:
            raise StepInterrupted
        self.drop_step = droppable
        try:
            yield
        finally:
            self.drop_step = False

    def _handle(self, signum, frame):
        if self.requested:
            if signum == signal.SIGINT:
                raise Aborted("aborted by a second SIGINT: nothing saved since the last checkpoint")
            return  # SIGTERM again (sweep.py repeats it every 0.5 s): already stopping
        self.requested, now, self.drop_step = True, self.drop_step, False
        from tqdm import tqdm  # tqdm.write: above a progress bar, never inside it
        tqdm.write(f"[train] got {signal.Signals(signum).name}: "
                   + ("stopping now: the unfinished step is discarded, the last completed one "
                      "checkpointed" if now else "checkpointing after this step")
                   + (" (Ctrl-C again aborts now, without a checkpoint)" if signum == signal.SIGINT else ""))
        sys.stdout.flush()
        if now:
            raise StepInterrupted


# BaseException, as KeyboardInterrupt: raised from a signal handler at any line, they must
# pass unchanged through code that catches Exception: checkpoint.save turns it into "saving
# failed", torch.compile into its own error (an InductorError traceback for a Ctrl-C while
# step 1 compiled, when StepInterrupted was an Exception).
class StepInterrupted(BaseException):
    """The first stop signal inside a droppable step: drop the step, checkpoint the one before."""


class Aborted(BaseException):
    """A second SIGINT (or one before the loop started): stop at once, one line, exit 130."""


# Failures of the input (config, data, checkpoint, hardware) and a run stopped by non-finite
# steps: one line naming the problem and the fix, no traceback.
EXPECTED_ERRORS = (ConfigError, checkpoint.CheckpointError, prepare.PrepareError,
                   fp8.FP8UnsupportedError, NonFiniteError)


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("Config keys (default), each given as --key=value (underscores, a Python literal); "
              "the other scripts (prepare.py, sample.py, ...) take --hyphen-words flags instead:")
        for f in dataclasses.fields(Config):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            print(f"  --{f.name}={default!r}")
        return 0
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) > 1:
        raise SystemExit(f"at most one config file, got {paths}")
    try:
        train(load_config(paths[0] if paths else None, [a for a in argv if a.startswith("--")]))
    except EXPECTED_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NothingToDo as e:
        print(f"[train] {e}")
    except (Aborted, KeyboardInterrupt) as e:  # KeyboardInterrupt: Ctrl-C before the loop
        print(f"[train] {e or 'interrupted by SIGINT'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The checkpoint format, in one place: train.py saves, resumes and chains phases through it;
sample.py, eval_reasoning.py and convert_hf.py read (and convert_hf.py writes) model.pt.

    out_dir/ckpt/step_00000040/   one complete checkpoint, a "step dir"
        model.pt          consolidated fp32 weights under model.py's parameter names, no FP8
                          scaling state: {"model_config", "model", "tokenizer" (prepare.py's
                          meta), "step", "config"}; loads with torch.load(weights_only=True)
        train_state.pt    {"step", "data_position", "muon_active", "world_size", "rng" (one
                          per rank), "optimizers", "fp8", "config"}; optimizers and fp8 are
                          None under FSDP2, whose state is in dcp/
        dcp/              FSDP2 only: model and optimizer state through
                          torch.distributed.checkpoint, which reshards onto any number of GPUs
        tokenizer.json    the data's tokenizer, when it is a tokenizers-library one
    out_dir/ckpt/latest   the name of the newest complete step dir

A path handed to a reader is a run dir (its latest step), a step dir or a model.pt file.
Nothing saved is lost: a checkpoint is written into .tmp_step_N, fsynced and renamed into
place; `latest` is replaced atomically after it; a failure on any rank fails the save on
every rank and leaves the previous checkpoint as it was.
"""
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import fp8
import prepare
from model import ModelConfig, Xmodel


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the fix."""


# ---------------------------------------------------------------------------------------
# Where checkpoints are.

def has_checkpoint(out_dir) -> bool:
    return os.path.exists(os.path.join(out_dir, "ckpt", "latest"))


def model_file(path) -> str:
    """The model.pt of a run dir (its ckpt/latest), of a step dir, or the file itself."""
    if os.path.isfile(path):
        return path
    for latest in (os.path.join(path, "ckpt", "latest"), os.path.join(path, "latest")):
        if os.path.isfile(latest):
            name = open(latest).read().strip()
            if not os.path.isabs(name):
                name = os.path.join(os.path.dirname(latest), os.path.basename(name))
            return model_file(name)
    if os.path.isfile(os.path.join(path, "model.pt")):
        return os.path.join(path, "model.pt")
    raise FileNotFoundError(f"no model.pt, ckpt/latest or latest under {path!r}: give a run dir "
                            f"(out_dir of a finished train.py run), a step dir or a model.pt")


def step_dir(path) -> str:
    """The step dir of model_file(path): train_state.pt and dcp/ sit beside model.pt."""
    return os.path.dirname(os.path.abspath(model_file(path)))


def start_dir(cfg, writer=None):
    """The step dir a phase starts from (None: from scratch), found before any work.
    cfg: train.Config (init_from, out_dir); writer: the config file that writes init_from, if
    known, for the error message."""
    if cfg.init_from == "resume":
        if not has_checkpoint(cfg.out_dir):
            raise CheckpointError(f"init_from='resume' but {cfg.out_dir}/ckpt/latest does not exist: "
                                  f"nothing to resume (use init_from='scratch' or a checkpoint path)")
        return step_dir(cfg.out_dir)
    if cfg.init_from != "scratch":
        try:
            return step_dir(cfg.init_from)
        except FileNotFoundError:
            raise CheckpointError(f"init_from={cfg.init_from!r}: no checkpoint there (no model.pt, "
                                  f"ckpt/latest or latest): run {writer or 'the phase that writes it'} "
                                  f"first, or set init_from to an existing checkpoint") from None
    if has_checkpoint(cfg.out_dir):
        raise CheckpointError(f"{cfg.out_dir} already holds checkpoints: pass --init_from=resume to "
                              f"continue that run (with a larger --max_steps to train it further), or "
                              f"--out_dir=<a new folder> for a new run")
    return None


# ---------------------------------------------------------------------------------------
# model.pt for the readers (sample.py, eval_reasoning.py, convert_hf.py).

def load_model(path, device="cpu") -> Xmodel:
    """The model of a checkpoint, in eval mode on `device`. Its other model.pt entries are in
    model.checkpoint_info: tokenizer, step, config, and the path of model.pt."""
    path = model_file(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = Xmodel(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.checkpoint_info = {k: ckpt.get(k) for k in ("tokenizer", "step", "config")}
    model.checkpoint_info["path"] = path
    return model.to(device).eval()


def load_tokenizer(model_pt, meta=None):
    """The checkpoint's tokenizer: tokenizer.json beside model.pt (train.py copies it there),
    else rebuilt from the "tokenizer" meta in model.pt (deepseek-v3, tiktoken)."""
    step = Path(model_pt).parent
    if not (step / "tokenizer.json").is_file():
        if meta is None:
            raise ValueError(f"{model_pt} has no tokenizer meta and no tokenizer.json beside it")
        return prepare.load_tokenizer(meta)
    tok = prepare.load_tokenizer(str(step))
    if meta and meta.get("eos_id") is not None and tok.eos_id != meta["eos_id"]:
        # load_tokenizer guesses EOS from a list of common names; the meta records the real one
        tok.eos_id, tok.eos_token = int(meta["eos_id"]), tok.decode([int(meta["eos_id"])])
    if meta and meta.get("sha256") not in (None, tok.sha256):
        print(f"warning: {step / 'tokenizer.json'} differs from the tokenizer the model was "
              f"trained with ({meta.get('name')})")
    return tok


def load_model_and_tokenizer(path, device="cpu"):
    """Run dir, step dir or model.pt -> (model in eval mode, tokenizer, path of model.pt)."""
    model = load_model(path, device)
    info = model.checkpoint_info
    return model, load_tokenizer(info["path"], info["tokenizer"]), Path(info["path"])


def _model_payload(model_config, weights, tokenizer, step, config):
    return {"model_config": asdict(model_config), "model": weights, "tokenizer": tokenizer,
            "step": step, "config": config}


def write_model(model, out, tokenizer=None, step=0, config=None, tokenizer_json=None, tokenizer_text=None) -> Path:
    """`model` as a consolidated model.pt (fp32) -> its path. `out` ending in .pt is the file;
    otherwise a step dir that gets model.pt (+ tokenizer.json: a copy of the file tokenizer_json,
    or the string tokenizer_text). Atomic per file."""
    out = Path(out)
    model_pt = out if out.suffix == ".pt" else out / "model.pt"
    model_pt.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.float() for k, v in model.state_dict().items()}
    tmp = model_pt.with_name(model_pt.name + ".tmp")
    torch.save(_model_payload(model.config, weights, tokenizer, step, config or {}), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, model_pt)
    if tokenizer_json is not None:
        prepare.write_atomic(model_pt.parent / "tokenizer.json", Path(tokenizer_json).read_bytes())
    elif tokenizer_text is not None:
        prepare.write_atomic(model_pt.parent / "tokenizer.json", tokenizer_text.encode("utf-8"))
    prepare.fsync_dir(model_pt.parent)
    return model_pt


# ---------------------------------------------------------------------------------------
# Saving a training checkpoint. d: train.Dist; optimizers: train.Optimizers (its torch
# optimizers in .optimizers, state_dict(), load_state_dict(), muon_active).

def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def consolidated_state_dict(model, raw_model, fsdp):
    """fp32 weights under model.py's names (under FSDP2 a collective gathering them onto CPU).
    FP8 scaling state is training state: train_state.pt, not model.pt."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = raw_model.state_dict()
    sd = fp8.strip_fp8_state(sd)
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in sd.items()}


def _fsync_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        prepare.fsync_dir(dirpath)


def save(cfg, step, model, raw_model, optimizers, d, fsdp, tokenizer_meta) -> str:
    """Checkpoint `step` into cfg.out_dir/ckpt -> the step dir. Every rank calls it (collectives
    under FSDP2). Raises on every rank if any rank fails; the previous checkpoint stays."""
    ckpt_dir = os.path.join(cfg.out_dir, "ckpt")
    name = f"step_{step:08d}"
    final, tmp = os.path.join(ckpt_dir, name), os.path.join(ckpt_dir, f".tmp_{name}")
    if d.master:
        os.makedirs(ckpt_dir, exist_ok=True)
        # Leftovers of killed saves: not only this step's, since a resumed run may never save
        # that step again (another ckpt_interval) and each holds a full checkpoint.
        for stale in os.listdir(ckpt_dir):
            if stale.startswith(".tmp_step_") or (stale.startswith(".step_") and ".old-" in stale):
                shutil.rmtree(os.path.join(ckpt_dir, stale), ignore_errors=True)
        os.makedirs(tmp)
    if dist.is_initialized():
        dist.barrier()
    weights = consolidated_state_dict(model, raw_model, fsdp)  # collective under FSDP2
    rng = [None] * d.world_size
    if dist.is_initialized():
        dist.all_gather_object(rng, rng_state())
    else:
        rng = [rng_state()]
    error = None
    try:
        if fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict
            msd, osd = get_state_dict(model, optimizers.optimizers)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(tmp, "dcp"))
        if d.master:
            torch.save(_model_payload(raw_model.config, weights, tokenizer_meta, step, asdict(cfg)),
                       os.path.join(tmp, "model.pt"))
            torch.save({"step": step, "data_position": {"step": step, "seed": cfg.seed},
                        "muon_active": optimizers.muon_active, "world_size": d.world_size, "rng": rng,
                        "optimizers": None if fsdp else optimizers.state_dict(),
                        "fp8": None if fsdp else fp8.fp8_state(raw_model),
                        "config": asdict(cfg)}, os.path.join(tmp, "train_state.pt"))
            tok = os.path.join(next(iter(cfg.data)), "tokenizer.json")  # every source shares it
            if os.path.exists(tok):
                shutil.copyfile(tok, os.path.join(tmp, "tokenizer.json"))
            _fsync_tree(tmp)
    except Exception as e:  # e.g. disk full: reported on every rank below
        error = e
    ok = torch.tensor([0.0 if error else 1.0], device=d.device)
    if dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if ok.item() < 1:
        if d.master:
            shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"saving checkpoint {final} failed ({error or 'on another rank'}); "
                           f"the previous checkpoint is intact") from error
    if d.master:
        prepare.swap_into_place(tmp, final)  # re-saving a step (a resumed run's end) replaces it
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


# ---------------------------------------------------------------------------------------
# Starting a phase from a checkpoint: resume (init_from='resume') or chain (a path).

def load_weights(model, state_dict, source):
    """Copy a consolidated state dict in, naming every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = ([f"missing: {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) + shapes
        raise CheckpointError(f"checkpoint {source} does not fit the model (check model_preset / "
                              f"model_overrides):\n  " + "\n  ".join(lines))
    model.load_state_dict(state_dict)


def load_start(step_dir, raw_model, cfg, tokenizer_meta, fsdp, master):
    """Weights of step_dir into raw_model, checked against the model and against the data's
    tokenizer (phase chaining must keep the tokenizer) -> (the step this run starts at,
    train_state.pt if its optimizer, FP8 and RNG state are wanted, i.e. on resume or with
    load_optimizer; else None). The wanted optimizer state must be of this parallel mode."""
    payload = torch.load(os.path.join(step_dir, "model.pt"), map_location="cpu", weights_only=False)
    load_weights(raw_model, payload["model"], step_dir)
    prepare.check_vocab(tokenizer_meta, raw_model.config.vocab_size, payload["tokenizer"])
    # Weights of the same shapes can come from a model of other settings (a default that changed
    # since, e.g. the residual stream's dtype): said once, not refused. max_seq_len is a phase's.
    now = asdict(raw_model.config)
    differ = {k: (v, now[k]) for k, v in payload["model_config"].items()
              if k != "max_seq_len" and k in now and v != now[k]}
    if differ and master:
        print(f"[train] the model's settings differ from {step_dir}'s (checkpoint -> now): {differ}")
    resume = cfg.init_from == "resume"
    if not resume and payload["step"] != cfg.start_step and master:
        print(f"[train] warning: {step_dir} is at step {payload['step']}, this phase starts at "
              f"start_step={cfg.start_step}")
    if not (resume or cfg.load_optimizer):
        return cfg.start_step, None
    train_state = torch.load(os.path.join(step_dir, "train_state.pt"), map_location="cpu", weights_only=False)
    has_dcp = os.path.isdir(os.path.join(step_dir, "dcp"))
    if fsdp != has_dcp:
        raise CheckpointError(f"{step_dir} holds {'FSDP (dcp/)' if has_dcp else 'single/DDP'} optimizer "
                              f"state but this run is {'FSDP' if fsdp else 'single/DDP'}; use the same "
                              f"parallel mode, or load_optimizer=False")
    if not resume:
        return cfg.start_step, train_state
    now = asdict(cfg)
    changed = {k: (v, now[k]) for k, v in train_state["config"].items()
               if k != "init_from" and k in now and v != now[k]}
    if changed and master:
        print(f"[train] resuming with changed settings (checkpoint -> now): {changed}")
    return train_state["step"], train_state


def load_optimizer_state(step_dir, model, optimizers, train_state, fsdp):
    """Optimizer state of a checkpoint (checked by load_start): dcp/ (FSDP2) or train_state.pt."""
    if fsdp:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        msd, osd = get_state_dict(model, optimizers.optimizers)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=os.path.join(step_dir, "dcp"))
        set_state_dict(model, optimizers.optimizers, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        return
    saved = train_state["optimizers"]
    if len(saved) != len(optimizers.optimizers):
        raise CheckpointError(f"{step_dir} has {len(saved)} optimizer(s), this run builds "
                              f"{len(optimizers.optimizers)}: muon_switch_step disagrees with the checkpoint")
    optimizers.load_state_dict(saved)


def restore_rng(train_state, d):
    """A resumed run continues the RNG streams of its ranks (same world size only)."""
    if train_state["world_size"] == d.world_size:
        set_rng_state(train_state["rng"][d.rank])
    elif d.master:
        print("[train] world size changed since the checkpoint: RNG states not restored")

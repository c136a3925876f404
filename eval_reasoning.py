"""The Xmodel-2.5 reasoning suite (RECIPE §6) through lm-evaluation-harness, plus perplexity.

    python eval_reasoning.py out/run                          # the 11 non-code tasks
    python eval_reasoning.py out/run --tasks arc_challenge,gsm8k --limit 100
    python eval_reasoning.py out/run --code-tasks             # + humaneval, mbpp (runs model code)
    python eval_reasoning.py out/run --include-path my_tasks --tasks my_jsonl_task   # offline
    python eval_reasoning.py out/run --perplexity wiki.test.raw   # no lm-eval needed
    python eval_reasoning.py hf/some-llama ...                 # a HF Llama dir (convert_hf import)

lm-eval is an optional install for this file only: `pip install lm-eval==0.4.13`.
`XmodelLM` wraps model.py directly (no export): batched log-likelihoods, rolling windows of
the model's context length, KV-cache generation with stop strings. Tasks download their data
through `datasets` unless given as local task files (--include-path, `dataset_path: json`).
Writes <out>.json (every score) and <out>.md (a table beside the paper's Xmodel-2.5 figures).
"""
import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


# RECIPE §6: the launch repo's experiments/eval/config.yaml. Filters are not in RECIPE:
# gsm8k's "strict-match" and bbh's "get-answer" (its only one) are inferred; the JSON keeps
# every filter's value.
SUITE = [
    SuiteTask("arc_challenge", 25, "acc_norm", paper=46.16),
    SuiteTask("arc_easy", 25, "acc_norm"),
    SuiteTask("piqa", 0, "acc_norm"),
    SuiteTask("hellaswag", 10, "acc_norm"),
    SuiteTask("winogrande", 5, "acc"),
    SuiteTask("bbh", 3, "exact_match", "get-answer"),
    SuiteTask("mmlu", 5, "acc", paper=49.98),
    SuiteTask("gsm8k", 8, "exact_match", "strict-match", paper=56.56),
    SuiteTask("minerva_math", 4, "math_verify"),
    SuiteTask("humaneval", 0, "pass@1", "create_test", code=True),
    SuiteTask("mbpp", 3, "pass_at_1", code=True),
    SuiteTask("cmmlu", 5, "acc_norm", paper=44.29),
    SuiteTask("ceval-valid", 5, "acc_norm", paper=43.16),
]
SUITE_BY_NAME = {t.name: t for t in SUITE}
PAPER_AVERAGE = 52.49  # RECIPE §6: plain mean of the 13 numbers


# ----------------------------------------------------------------------------------------
# scoring with model.py (no lm-eval)

@torch.no_grad()
def score_continuations(model, requests, max_length, batch_size=16, max_batch_tokens=8192):
    """requests: (context_ids, continuation_ids) with a non-empty context ->
    [(sum of log p(continuation | context), continuation is the greedy decode)].

    Sequences longer than max_length + 1 keep their last tokens. Rows are sorted by length
    (longest first) and right-padded: with causal attention padding never reaches the
    scored positions. A batch holds at most max_batch_tokens positions, since model.py
    returns fp32 logits for every position ([B, T, V]: 4 GiB at 8192 x 129,280).
    """
    device = next(model.parameters()).device
    rows = []
    for ctx, cont in requests:
        assert ctx and cont, "needs a non-empty context (use EOS) and continuation"
        seq = (list(ctx) + list(cont))[-(max_length + 1):]
        rows.append((seq[:-1], seq[-len(cont):]))  # inputs, targets (the last len(cont))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    results = [None] * len(rows)
    start = 0
    while start < len(order):
        longest = len(rows[order[start]][0])
        n = max(1, min(batch_size, max_batch_tokens // longest))
        batch = order[start:start + n]
        start += n
        x = torch.zeros(len(batch), longest, dtype=torch.long)
        for r, i in enumerate(batch):
            x[r, :len(rows[i][0])] = torch.tensor(rows[i][0])
        logits = model(x.to(device))
        for r, i in enumerate(batch):
            inp, tgt = rows[i]
            sl = logits[r, len(inp) - len(tgt):len(inp)].float()
            logp = F.log_softmax(sl, dim=-1)
            t = torch.tensor(tgt, device=logp.device)
            results[i] = (logp.gather(1, t[:, None]).sum().item(), bool((sl.argmax(-1) == t).all()))
    return results


def rolling_windows(tokens, prefix_id, max_length):
    """Split a document for perplexity -> [(context_ids, continuation_ids)].

    Every token is scored exactly once; windows are disjoint chunks of max_length targets,
    the first conditioned on prefix_id (EOS: the document separator), the last given as much
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
    windows = rolling_windows(tokens, tokenizer.eos_id, max_length)
    logprob = sum(lp for lp, _ in score_continuations(model, windows, max_length, batch_size,
                                                       max_batch_tokens))
    n_words, n_bytes = len(re.split(r"\s+", text.strip())), len(text.encode("utf-8"))
    return {"tokens": len(tokens), "windows": len(windows), "max_length": max_length,
            "nll_sum": -logprob, "token_perplexity": math.exp(-logprob / len(tokens)),
            "word_perplexity": math.exp(-logprob / n_words),   # lm-eval wikitext's headline
            "byte_perplexity": math.exp(-logprob / n_bytes),
            "bits_per_byte": -logprob / n_bytes / math.log(2)}


# ----------------------------------------------------------------------------------------
# the lm-eval adapter

class XmodelLM(TemplateLM):
    """lm-eval model over an Xmodel. TemplateLM (an lm_eval.api.model.LM) supplies the
    standard context/continuation tokenization (trailing spaces move to the continuation,
    empty contexts get EOS), the same as lm-eval's HF backend."""

    def __init__(self, model, tokenizer, max_length=None, batch_size=16, max_batch_tokens=8192,
                 max_gen_toks=256):
        if not HAVE_LM_EVAL:
            raise ImportError(f"lm-eval is not installed: pip install {LM_EVAL_PIN}")
        super().__init__()
        self.model, self.tokenizer = model.eval(), tokenizer
        self._device = next(model.parameters()).device
        self.max_length = max_length or model.config.max_seq_len
        self.batch_size, self.max_batch_tokens, self.max_gen_toks = batch_size, max_batch_tokens, max_gen_toks

    @property
    def eot_token_id(self):
        return self.tokenizer.eos_id

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        return self.tokenizer.encode(string)  # no BOS: documents start after EOS in training

    def tok_decode(self, tokens, **kwargs):
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        res = score_continuations(self.model, [(ctx, cont) for _, ctx, cont in requests],
                                  self.max_length, self.batch_size, self.max_batch_tokens)
        for (key, _, _), r in zip(requests, res):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, r)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
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


def run_lm_eval(lm, tasks, limit=None, include_path=None, code_tasks=False, num_fewshot=None,
                bootstrap_iters=1000, log=print):
    """Run tasks (names) one by one with their suite few-shot counts -> {task: entry}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    if code_tasks:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # HF `evaluate`'s code_eval refuses without it
    manager = None
    if include_path:  # indexing lm-eval's ~15k built-in task files takes seconds: skip when unneeded
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if not set(tasks) <= set(manager.all_tasks):
            manager = None
    manager = manager or TaskManager(include_path=include_path)
    scores = {}
    for name in tasks:
        suite = SUITE_BY_NAME.get(name)
        shots = num_fewshot if num_fewshot is not None else (suite.shots if suite else None)
        t0 = time.time()
        out = simple_evaluate(model=lm, tasks=[name], num_fewshot=shots, limit=limit,
                              task_manager=manager, bootstrap_iters=bootstrap_iters,
                              log_samples=False, confirm_run_unsafe_code=code_tasks)
        res = out["results"]
        entry = {"shots": shots, "results": {t: {k: v for k, v in r.items() if k != "alias"}
                                             for t, r in res.items()}}
        if suite:
            s = pick_score(res.get(name, {}), suite.metric, suite.filter)
            entry.update(metric=suite.metric, score=None if s is None else 100 * s)
        log(f"{name}: {entry.get('score', res.get(name))} ({time.time() - t0:.0f}s)")
        scores[name] = entry
    return scores


def markdown_table(scores):
    lines = ["| task | shots | metric | this model | Xmodel-2.5 (paper) |",
             "| --- | ---: | --- | ---: | ---: |"]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"
    done = []
    for t in SUITE:
        e = scores.get(t.name)
        s = e.get("score") if e else None
        if s is not None:
            done.append(s)
        lines.append(f"| {t.name} | {t.shots} | {t.metric} | {fmt(s)} | {fmt(t.paper)} |")
    avg = f"{sum(done) / len(done):.2f} ({len(done)} of {len(SUITE)} tasks)" if done else "—"
    lines.append(f"| **average** | | | {avg} | {PAPER_AVERAGE:.2f} |")
    for name, e in scores.items():  # tasks outside the suite (e.g. local JSONL tasks)
        if name not in SUITE_BY_NAME:
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
    ap.add_argument("checkpoint", help="run dir, step dir, model.pt, or a HF Llama directory")
    ap.add_argument("--tasks", help="comma-separated lm-eval task names (default: the suite, "
                    "without code tasks unless --code-tasks)")
    ap.add_argument("--limit", type=float, help="documents per task (or a fraction if < 1)")
    ap.add_argument("--num-fewshot", type=int, help="override the suite's few-shot counts")
    ap.add_argument("--include-path", help="folder of extra lm-eval task yamls (local JSONL, offline)")
    ap.add_argument("--code-tasks", action="store_true",
                    help="also run humaneval and mbpp: they EXECUTE model-written code")
    ap.add_argument("--perplexity", help="text file: rolling perplexity (no lm-eval needed)")
    ap.add_argument("--max-length", type=int, help="context length (default: model max_seq_len)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    ap.add_argument("--bootstrap-iters", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto = bfloat16 on GPU, float32 on CPU")
    ap.add_argument("--out", help="output prefix (default: <checkpoint dir>/eval_reasoning)")
    args = ap.parse_args(argv)

    if args.tasks:
        tasks = [t for t in args.tasks.split(",") if t]
    elif args.perplexity:
        tasks = []  # perplexity alone
    else:
        tasks = [t.name for t in SUITE if args.code_tasks or not t.code]
    blocked = [t for t in tasks if t in SUITE_BY_NAME and SUITE_BY_NAME[t].code and not args.code_tasks]
    if blocked:
        sys.exit(f"{blocked} execute model-written code: add --code-tasks to run them")
    if tasks and not HAVE_LM_EVAL:
        print(f"lm-eval is not installed; the task suite needs it:  pip install {LM_EVAL_PIN}"
              + ("\n(running --perplexity first)" if args.perplexity else ""), file=sys.stderr)

    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device.startswith("cuda") else "float32")
    model, tokenizer = load_model(args.checkpoint, args.device, getattr(torch, dtype))
    max_length = args.max_length or model.config.max_seq_len
    report = {"checkpoint": str(args.checkpoint), "dtype": dtype, "max_length": max_length,
              "tasks": {}, "perplexity": None}
    if args.perplexity:
        report["perplexity"] = {"file": args.perplexity, **perplexity(
            model, tokenizer, Path(args.perplexity).read_text(encoding="utf-8"), max_length,
            args.batch_size, args.max_batch_tokens)}
        print(json.dumps(report["perplexity"], indent=2))
    if tasks and HAVE_LM_EVAL:
        lm = XmodelLM(model, tokenizer, max_length, args.batch_size, args.max_batch_tokens)
        report["tasks"] = run_lm_eval(lm, tasks, args.limit, args.include_path, args.code_tasks,
                                      args.num_fewshot, args.bootstrap_iters)
        report["table"] = markdown_table(report["tasks"])
        print(report["table"])

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt.parent if ckpt.is_file() else ckpt) / "eval_reasoning"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if report.get("table"):
        out.with_suffix(".md").write_text(report["table"] + "\n")
    print(f"wrote {out.with_suffix('.json')}")
    if tasks and not HAVE_LM_EVAL:
        sys.exit(2)


if __name__ == "__main__":
    main()

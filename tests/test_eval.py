"""eval_reasoning.py: the lm-eval adapter over model.py, the suite table, perplexity."""
import json
import math
import os
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

# offline: the local task reads its JSONL through `datasets`; nothing may touch the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import eval_reasoning
from eval_reasoning import SUITE, markdown_table, perplexity, rolling_windows, score_continuations
from model import Xmodel, model_config

needs_lm_eval = pytest.mark.skipif(
    not eval_reasoning.HAVE_LM_EVAL,
    reason=f"lm-eval is not installed (optional): pip install {eval_reasoning.LM_EVAL_PIN}")

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
        "天下大势，分久必合，合久必分。") * 4

QUESTIONS = [  # a tiny multiple-choice task; answers are arbitrary, the scores need only agree
    {"question": "To be, or not to", "choices": [" be", " sea", " arms"], "answer": 0},
    {"question": "the slings and arrows of", "choices": [" fortune", " troubles"], "answer": 0},
    {"question": "天下大势，", "choices": ["分久必合", "合久必分", "不知道"], "answer": 1},
    {"question": "whether 'tis nobler in the ", "choices": ["mind", "sea"], "answer": 0},
]
TASK_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
num_fewshot: 0
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """-> (run dir, model, tokenizer) for a tiny µP model with a byte-level BPE."""
    from prepare import load_tokenizer, train_bpe
    root = tmp_path_factory.mktemp("eval")
    tok = train_bpe([TEXT], vocab_size=320, name="test-bpe")
    torch.manual_seed(0)
    model = Xmodel(model_config("tiny", input_scale=3.0, output_scale=2.0, residual_scale=1.7)).eval()
    step = root / "run" / "ckpt" / "step_00000010"
    step.mkdir(parents=True)
    tok.save(step)
    torch.save({"model_config": asdict(model.config), "model": model.state_dict(),
                "tokenizer": tok.meta(), "step": 10, "config": {}}, step / "model.pt")
    (root / "run" / "ckpt" / "latest").write_text("step_00000010\n")
    return root / "run", model, load_tokenizer(str(step))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    (d / "tiny_mc.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS))
    (d / "tiny_mc.yaml").write_text(TASK_YAML.format(data=d / "tiny_mc.jsonl", cache=d / "hf_cache"))
    return d


def direct_logprob(model, ctx_ids, cont_ids):
    seq = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logp = F.log_softmax(model(seq[:, :-1])[0, -len(cont_ids):], dim=-1)
    return logp.gather(1, torch.tensor(cont_ids)[:, None]).sum().item()


def instances(kind, args):
    from lm_eval.api.instance import Instance
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


# ---- the suite -------------------------------------------------------------------------

def test_suite_is_recipe_section_6():
    assert [(t.name, t.shots, t.metric) for t in SUITE] == [
        ("arc_challenge", 25, "acc_norm"), ("arc_easy", 25, "acc_norm"), ("piqa", 0, "acc_norm"),
        ("hellaswag", 10, "acc_norm"), ("winogrande", 5, "acc"), ("bbh", 3, "exact_match"),
        ("mmlu", 5, "acc"), ("gsm8k", 8, "exact_match"), ("minerva_math", 4, "math_verify"),
        ("humaneval", 0, "pass@1"), ("mbpp", 3, "pass_at_1"), ("cmmlu", 5, "acc_norm"),
        ("ceval-valid", 5, "acc_norm")]
    assert {t.name for t in SUITE if t.code} == {"humaneval", "mbpp"}
    paper = {t.name: t.paper for t in SUITE if t.paper is not None}
    assert paper == {"arc_challenge": 46.16, "mmlu": 49.98, "gsm8k": 56.56, "ceval-valid": 43.16,
                     "cmmlu": 44.29}


def test_markdown_table_sets_scores_beside_the_paper():
    scores = {"arc_challenge": {"shots": 25, "score": 40.0, "results": {}},
              "mmlu": {"shots": 5, "score": 30.0, "results": {}},
              "tiny_mc": {"shots": 0, "results": {"tiny_mc": {"acc,none": 0.5, "acc_stderr,none": 0.1}}}}
    table = markdown_table(scores)
    assert "| arc_challenge | 25 | acc_norm | 40.00 | 46.16 |" in table
    assert "| piqa | 0 | acc_norm | — | — |" in table
    assert "35.00 (2 of 13 tasks)" in table and "52.49" in table
    assert "tiny_mc" in table and "acc,none 0.5000" in table and "stderr" not in table


# ---- scoring without lm-eval -----------------------------------------------------------

def test_score_continuations_equals_a_direct_computation_in_any_batch_size(ckpt):
    _, model, tok = ckpt
    reqs = [(tok.encode(TEXT[:a]), tok.encode(TEXT[a:b])) for a, b in ((5, 30), (40, 44), (1, 90))]
    reqs.append(([tok.eos_id], tok.encode("To be")))
    want = [direct_logprob(model, c, x) for c, x in reqs]
    for batch_size in (1, 16):
        got = [lp for lp, _ in score_continuations(model, reqs, 64, batch_size)]
        assert got == pytest.approx(want, abs=1e-4)


def test_rolling_windows_score_every_token_once_with_lm_eval_windows():
    tokens = list(range(100, 110))
    windows = rolling_windows(tokens, 0, 4)
    assert [c for _, c in windows] == [tokens[0:4], tokens[4:8], tokens[8:10]]
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 4 and len(ctx) >= 1
    assert windows[-1][0] == tokens[5:8]  # the last window is given a full context
    if eval_reasoning.HAVE_LM_EVAL:  # the same windows as lm-eval's loglikelihood_rolling
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, 4, 1)]
        assert [tuple(map(list, w)) for w in theirs] == [tuple(map(list, w)) for w in windows]


def test_perplexity_is_exp_of_the_mean_token_nll(ckpt):
    _, model, tok = ckpt
    text = TEXT[:120]
    ids = tok.encode(text)
    seq = torch.tensor([[tok.eos_id] + ids])
    with torch.no_grad():
        nll = F.cross_entropy(model(seq[:, :-1])[0], seq[0, 1:]).item()
    one_window = perplexity(model, tok, text, max_length=64)
    assert one_window["windows"] == 1 and one_window["tokens"] == len(ids)
    assert one_window["token_perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert one_window["bits_per_byte"] == pytest.approx(
        nll * len(ids) / len(text.encode()) / math.log(2), rel=1e-4)
    # shorter windows: every token still scored once, with less context
    short = perplexity(model, tok, text, max_length=16)
    assert short["windows"] == math.ceil(len(ids) / 16) and short["tokens"] == len(ids)


def test_eval_cli_runs_perplexity_without_lm_eval_and_exits_2_for_tasks(ckpt, tmp_path, monkeypatch, capsys):
    run, _, _ = ckpt
    (tmp_path / "wiki.txt").write_text(TEXT)
    monkeypatch.setattr(eval_reasoning, "HAVE_LM_EVAL", False)
    eval_reasoning.main([str(run), "--perplexity", str(tmp_path / "wiki.txt"), "--out", str(tmp_path / "r")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["perplexity"]["token_perplexity"] > 1 and report["tasks"] == {}
    with pytest.raises(SystemExit) as e:
        eval_reasoning.main([str(run), "--tasks", "arc_easy", "--out", str(tmp_path / "r2")])
    assert e.value.code == 2
    assert f"pip install {eval_reasoning.LM_EVAL_PIN}" in capsys.readouterr().err


def test_code_tasks_need_explicit_opt_in(ckpt):
    with pytest.raises(SystemExit, match="--code-tasks"):
        eval_reasoning.main([str(ckpt[0]), "--tasks", "humaneval"])


# ---- the lm-eval adapter ---------------------------------------------------------------

@needs_lm_eval
def test_adapter_loglikelihoods_equal_a_direct_computation(ckpt):
    _, model, tok = ckpt
    lm = eval_reasoning.XmodelLM(model, tok, batch_size=3)
    pairs = [("To be, or not", " to be"), ("whether 'tis ", "nobler in"), ("", "To be"),
             ("天下大势，", "分久必合")]
    got = lm.loglikelihood(instances("loglikelihood", pairs))
    for (ctx, cont), (lp, _) in zip(pairs, got):
        if ctx == "":  # an empty context is conditioned on EOS
            c_ids, cont_ids = [tok.eos_id], tok.encode(cont)
        else:  # lm-eval moves a context's trailing spaces into the continuation
            n = len(ctx) - len(ctx.rstrip())
            ctx, cont = ctx.rstrip(), ctx[len(ctx) - n:] + cont
            c_ids = tok.encode(ctx)
            cont_ids = tok.encode(ctx + cont)[len(c_ids):]
        assert lp == pytest.approx(direct_logprob(model, c_ids, cont_ids), abs=1e-4)
    # is_greedy: a continuation that is the model's own greedy output
    ids = tok.encode("To be")
    seq = torch.tensor([ids])
    greedy = []
    with torch.no_grad():
        for _ in range(3):
            greedy.append(model(seq)[0, -1].argmax().item())
            seq = torch.cat([seq, torch.tensor([[greedy[-1]]])], 1)
    (_, is_greedy), = lm._loglikelihood_tokens([(None, ids, greedy)])
    assert is_greedy
    rolling, = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(TEXT[:100],)]))
    assert -rolling / len(tok.encode(TEXT[:100])) == pytest.approx(
        math.log(perplexity(model, tok, TEXT[:100], 64)["token_perplexity"]), rel=1e-5)


@needs_lm_eval
def test_generate_until_stops_at_stop_strings(ckpt):
    _, model, tok = ckpt
    lm = eval_reasoning.XmodelLM(model, tok)
    free, = lm.generate_until(instances("generate_until", [("To be, or not", {"until": ["never-seen"], "max_gen_toks": 30})]))
    assert len(tok.encode(free)) >= 20  # a random model rarely emits EOS this early
    stop = free[6:9]
    first = free.index(stop)
    cut, capped = lm.generate_until(instances("generate_until", [
        ("To be, or not", {"until": [stop, "never-seen"], "max_gen_toks": 30}),
        ("To be, or not", {"until": "never-seen", "max_gen_toks": 5})]))
    assert cut == free[:first]
    assert free.startswith(capped) and len(tok.encode(capped)) <= 5


@needs_lm_eval
def test_local_multiple_choice_task_scores_the_same_through_the_adapter_and_hf_backend(ckpt, task_dir, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="lm-eval's hf backend needs it: pip install 'lm-eval[hf]'")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from convert_hf import export_hf
    run, model, tok = ckpt
    hf_dir = export_hf(run, tmp_path / "hf")
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    common = dict(tasks=["tiny_mc"], task_manager=manager, num_fewshot=0, bootstrap_iters=0, log_samples=True)
    ours = simple_evaluate(model=eval_reasoning.XmodelLM(model, tok, batch_size=4), **common)
    theirs = simple_evaluate(model="hf", model_args={"pretrained": str(hf_dir), "dtype": "float32",
                                                     "device": "cpu"}, batch_size=4, **common)
    ll = lambda out: [r[0][0] for s in out["samples"]["tiny_mc"] for r in s["resps"]]
    assert len(ll(ours)) == sum(len(q["choices"]) for q in QUESTIONS)
    assert ll(ours) == pytest.approx(ll(theirs), abs=1e-4)
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["tiny_mc"][metric] == theirs["results"]["tiny_mc"][metric]


@needs_lm_eval
def test_eval_cli_runs_a_local_task_and_writes_json_and_markdown(ckpt, task_dir, tmp_path):
    run, _, _ = ckpt
    eval_reasoning.main([str(run), "--tasks", "tiny_mc", "--include-path", str(task_dir),
                         "--limit", "2", "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report.json").read_text())
    acc = report["tasks"]["tiny_mc"]["results"]["tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    assert "tiny_mc" in (tmp_path / "report.md").read_text()

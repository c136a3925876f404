"""Writes the per-subject task files and the two groups from lm-eval's own MMLU task files
(subject, description, category), so the prompts stay lm-eval's. Run once per lm-eval
version: python tasks/mmlu/make_tasks.py"""
from pathlib import Path

import lm_eval
import yaml

HERE = Path(__file__).parent
LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
CATEGORIES = ["stem", "other", "social_sciences", "humanities"]  # lm-eval's group order
VARIANTS = {  # our group -> (lm-eval folder, template, task-name suffix)
    "mmlu_offline": ("default", "_default_template_yaml", ""),
    "mmlu_offline_continuation": ("continuation", "_continuation_template_yaml", "_continuation"),
}


def write(name, config):
    (HERE / name).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100))


def main():
    for old in HERE.glob("mmlu_offline*.yaml"):
        old.unlink()
    for group, (folder, template, suffix) in VARIANTS.items():
        theirs = sorted((LM_EVAL_MMLU / folder).glob("mmlu_*.yaml"))
        assert len(theirs) == 57, theirs
        for f in theirs:
            c = yaml.safe_load(f.read_text())
            subject = c["dataset_name"]
            category = next(k for k in CATEGORIES if c["tag"] == f"mmlu_{k}{suffix or '_tasks'}")
            write(f"{group}_{subject}.yaml", {
                "include": template, "task": f"{group}_{subject}", "task_alias": subject,
                "tag": f"{group}_{category}_tasks", "dataset_kwargs": {"subject": subject},
                "description": c["description"]})
        write(f"_{group}.yaml", {
            "group": group,
            "task": [{"group": f"{group}_{k}", "group_alias": k.replace("_", " "),
                      "task": [f"{group}_{k}_tasks"],
                      "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}
                     for k in CATEGORIES],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": 2}})


if __name__ == "__main__":
    main()

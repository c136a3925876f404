"""MFU four ways from recorded bench.py results (JSON lists, one dict per variant): against the
matmul peak measured in that run and against the datasheet's dense bf16 peak, with attention
counted over the full T x T square and causal-only. CPU only (the model is built on meta).

    python docs/measurements/mfu_both_ways.py docs/measurements/2026-11-23c_h100_bench_ours_fp8_hf.json
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import torch  # noqa: E402

from bench import datasheet_peak_tflops  # noqa: E402
from model import Xmodel, model_config  # noqa: E402


def main(paths):
    print("| file | variant | tokens/s | measured peak | MFU measured, full / causal | MFU datasheet, full / causal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in paths:
        for r in json.load(open(path)):
            if "error" in r:
                continue
            overrides = {"vocab_size": r["vocab_size"]} if r.get("vocab_size") else {}
            with torch.device("meta"):
                model = Xmodel(model_config(r["preset"], **overrides))
            tok_s, T = r["tokens_per_s_per_gpu"], r["seq_len"]
            full, causal = model.flops_per_token(T), model.flops_per_token(T, causal=True)
            sheet = datasheet_peak_tflops(r["device"])
            m = [f * tok_s / (p * 1e12) for p in (r["matmul_peak_tflops"], sheet) for f in (full, causal)]
            print(f"| {os.path.basename(path)} | {r['variant']} | {tok_s:,.0f} | {r['matmul_peak_tflops']:.0f} | "
                  f"{m[0]:.1%} / {m[1]:.1%} | {m[2]:.1%} / {m[3]:.1%} (of {sheet:.0f}) |")


if __name__ == "__main__":
    main(sys.argv[1:])

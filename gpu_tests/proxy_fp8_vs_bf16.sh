#!/usr/bin/env bash
# The µP proxy (config/proxy.py shape) trained STEPS steps on the embedded default data in
# bf16 and in FP8 (native backend unless FP8_BACKEND says otherwise), same seed and batches; prints the final val losses.
# Usage: bash gpu_tests/proxy_fp8_vs_bf16.sh [STEPS] [OUT_DIR]   (FP8_BACKEND=te for TransformerEngine)
set -euo pipefail
steps=${1:-300}
out=${2:-out/gpu_fp8_check}
common=(config/proxy.py --data="{'data/default': 1.0}" --model_overrides="{'vocab_size': 8192}"
        --max_steps=$steps --eval_interval=$steps --eval_steps=16 --log_interval=50)
for mode in bf16 fp8; do
  fp8=False; [ $mode = fp8 ] && fp8=True
  rm -rf "$out/$mode"
  python train.py "${common[@]}" --fp8=$fp8 --fp8_backend=${FP8_BACKEND:-native} --out_dir="$out/$mode"
done
python - "$out" <<'PY'
import json, sys
def final_val(path):
    rows = [json.loads(l) for l in open(f"{path}/metrics.jsonl")]
    return [r for r in rows if r.get("kind") == "val"][-1]["val_loss"]
out = sys.argv[1]
b, f = final_val(f"{out}/bf16"), final_val(f"{out}/fp8")
for src in b:
    gap = (f[src] - b[src]) / b[src]
    print(f"final val loss on {src}: bf16 {b[src]:.4f}  fp8 {f[src]:.4f}  gap {gap:+.2%}  (target within 1%)")
PY

#!/usr/bin/env bash
# train.py on one CUDA GPU: compile, bf16 autocast, fused AdamW, the AdamW->Muon switch at
# step 20, a checkpoint at step 20, then a resume to step 40 that must repeat the losses of
# the uninterrupted run. Uses the proxy shape on the embedded default data.
set -euo pipefail
out=${1:-out/gpu_smoke}
common=(config/proxy.py --data="{'data/default': 1.0}" --model_overrides="{'vocab_size': 8192}"
        --muon_switch_step=20 --log_interval=1 --eval_interval=0 --ckpt_interval=20)
rm -rf "$out"
python train.py "${common[@]}" --max_steps=40 --out_dir="$out/full"
python train.py "${common[@]}" --max_steps=20 --out_dir="$out/resumed"
python train.py "${common[@]}" --max_steps=40 --out_dir="$out/resumed" --init_from=resume
python - "$out" <<'PY'
import json, sys
def losses(p):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{p}/metrics.jsonl")) if r.get("kind") == "train"}
a, b = losses(f"{sys.argv[1]}/full"), losses(f"{sys.argv[1]}/resumed")
common = sorted(set(a) & set(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in common)
print(f"steps compared: {len(common)}, largest relative loss difference after resume: {worst:.2e}")
PY

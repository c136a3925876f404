#!/usr/bin/env bash
# train.py on one CUDA GPU: compile, bf16 autocast, fused AdamW, the AdamW->Muon switch at
# step 10, a checkpoint at step 20 (Muon already active), then a resume to step 40 that must repeat the losses of
# the uninterrupted run. Uses the proxy shape on the embedded default data.
set -euo pipefail
out=${1:-out/gpu_smoke}
common=(config/proxy.py --data="{'data/default': 1.0}" --model_overrides="{'vocab_size': 8192}"
        --muon_switch_step=10 --log_interval=1 --eval_interval=0 --ckpt_interval=20)
rm -rf "$out"
python train.py "${common[@]}" --max_steps=40 --out_dir="$out/full"
python train.py "${common[@]}" --max_steps=20 --out_dir="$out/resumed"
python train.py "${common[@]}" --max_steps=40 --out_dir="$out/resumed" --init_from=resume
python - "$out" <<'PY'
import json, sys
def losses(p):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{p}/metrics.jsonl")) if r.get("kind") == "train"}
a, b = losses(f"{sys.argv[1]}/full"), losses(f"{sys.argv[1]}/resumed")
rel = lambda s: abs(a[s] - b[s]) / abs(a[s])  # noqa: E731
# Steps 1-20 are two identical runs from scratch: their difference is the GPU's run-to-run
# noise (non-deterministic GPU kernels); steps 21-40 compare the resume with the uninterrupted run.
before = max(rel(s) for s in sorted(set(a) & set(b)) if s <= 20)
after = max(rel(s) for s in sorted(set(a) & set(b)) if s > 20)
print(f"largest relative loss difference: two runs from scratch (steps 1-20) {before:.2e}; "
      f"resumed vs uninterrupted (steps 21-40) {after:.2e}")
PY

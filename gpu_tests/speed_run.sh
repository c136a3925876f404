#!/usr/bin/env bash
# The proxy-speed questions in one GPU call of about 8 minutes (one H200): the output layer +
# loss alone (chunked vs liger-kernel vs cut-cross-entropy: time, memory, numerics), SDPA's
# attention backends alone at the proxy's and the full model's shape, then the proxy's whole
# training step under every compile scope / mode / loss backend, against transformers.
# Needs the wheels of gpu_tests/speed_carry.sh in .whl/speed/ (carried); without them the two
# packages' cases report themselves skipped.
#
#   bash gpu_tests/speed_run.sh [out_dir] [total_seconds]     # defaults: $OUT or out/speed, 470
#   LOSS_BUDGET=220 bash gpu_tests/speed_run.sh "$OUT" 560     # room for the max-autotune cases
#
# Output: run.log (everything), loss_table.md + loss_bench.json, proxy_table.md +
# proxy_speed.json + proxy_speed_cases.log (each bench.py process's own output); the short
# tables are printed again at the end.
set -uo pipefail
out=${1:-${OUT:-out/speed}}
total=${2:-470}
loss_budget=${LOSS_BUDGET:-150}  # loss_bench.py's optional cases must end inside this
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$out/run.log"
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  if ls .whl/speed/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/speed/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    python3 -c "import liger_kernel.transformers.functional, cut_cross_entropy; print('liger-kernel and cut-cross-entropy import')"
  fi
  echo "== [${SECONDS}s] loss alone"
  timeout $((loss_budget + 90)) python3 gpu_tests/loss_bench.py --budget-s "$loss_budget" \
    --json "$out/loss_bench.json" --table "$out/loss_table.md"
  echo "== [${SECONDS}s] attention alone"
  timeout 40 python3 gpu_tests/step_profile.py --attention-only --preset proxy --seq-len 2048 --micro-batch 12
  timeout 40 python3 gpu_tests/step_profile.py --attention-only --preset xmodel-2.5 --seq-len 4096 --micro-batch 4
  echo "== [${SECONDS}s] proxy training step"
  python3 gpu_tests/proxy_speed.py --deadline-s $((total - SECONDS - 5)) --out "$out"
  echo "== [${SECONDS}s] done"
} 2>&1 | tee "$log"
# the short tables last (the call returns the end of the output)
cat "$out/loss_table.md" 2>/dev/null
grep -A12 "^## SDPA alone" "$log" | grep "^|\|^##"
cat "$out/proxy_table.md" 2>/dev/null

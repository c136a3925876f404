#!/usr/bin/env bash
# fused_loss.py (loss_impl = "triton") on one GPU, in two device calls, with liger-kernel's wheels
# (gpu_tests/speed_carry.sh) carried as .whl/speed for the side-by-side cases:
#
#   bash gpu_tests/fused_loss_run.sh kernels [SHAPES]   # each kernel's tiles, the whole loss per chunk
#                                       # size, then loss_bench.py: chunked / liger / triton (~6 min for
#                                       # proxy,full; ~3 min for proxy alone)
#   bash gpu_tests/fused_loss_run.sh proxy 330      # the proxy's whole step against transformers (~5 min)
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-out/fused_loss}
mkdir -p "$out"
if ls .whl/speed/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/speed/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case "${1:-}" in
kernels)
  shapes=${2:-proxy,full}
  python3 gpu_tests/fused_loss_tune.py --shapes "$shapes" --json "$out/tune.json" > "$out/tune.log" 2>&1
  echo "tune rc $?"; sed -n '/^## /,$p' "$out/tune.log"; grep -i "error\|Traceback" "$out/tune.log" | head -5
  python3 gpu_tests/loss_bench.py --shapes "$shapes" --cases chunked,liger,triton --json "$out/loss.json" --table "$out/loss.md" \
    > "$out/loss.log" 2>&1
  echo "loss_bench rc $?"; cat "$out/loss.md"
  ;;
proxy)
  python3 gpu_tests/proxy_speed.py --deadline-s "${2:-330}" --out "$out/proxy" \
    --cases "${3:-hf,model,model_liger,model_triton,model_triton_graphs,block_triton,hf_graphs}"
  ;;
*)
  sed -n 2,8p "$0"; exit 2
  ;;
esac

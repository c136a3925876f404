#!/usr/bin/env bash
# train.py's own proxy throughput under each compile scope, loss backend and compile mode, in one call:
# `python train.py config/proxy.py --max_steps=200` per case, each alone on the GPU, rounds
# alternating the cases; per run the median tokens/s of its log lines after step 30. bench.py
# (gpu_tests/proxy_speed.py) times the same model's step against transformers; this is the
# path a user runs. Needs data/proxy (gpu_tests/corpus_carry.sh) and, for the liger cases, the
# wheels of gpu_tests/speed_carry.sh carried in .whl/speed (without them those cases fail fast).
#
#   bash gpu_tests/proxy_train_speed.sh [rounds]     # default 2; output in $OUT or out/proxy_train_speed
set -uo pipefail
out=${OUT:-out/proxy_train_speed}
rounds=${1:-2}
mkdir -p "$out"
if ls .whl/speed/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/speed/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# scope, loss, compile mode, micro-batch (config/proxy.py's 12: two a step; 24: one);
# CASES="..." picks some
IFS='|' read -r -a cases <<< "${CASES:-block chunked default 12|model chunked default 12|block liger default 12|model liger default 12|model chunked reduce-overhead 12|model chunked default 24|model chunked reduce-overhead 24}"
for round in $(seq "$rounds"); do
  for case in "${cases[@]}"; do
    set -- $case
    name="$1_$2_$3_mb$4"
    log="$out/${name}_$round.log"
    rm -rf out/proxy_speed_check
    python3 train.py config/proxy.py --max_steps=200 --eval_interval=0 --log_interval=10 \
      --compile_scope="'$1'" --loss_impl="'$2'" --compile_mode="'$3'" --micro_batch=$4 --out_dir=out/proxy_speed_check > "$log" 2>&1
    echo "$name $round rc $?: median $(bash gpu_tests/median_tok_s.sh "$log") tok/s"
  done
done

#!/usr/bin/env bash
# Does the bf16 residual stream (model.residual_in_compute_dtype = True, the launch code's and
# the default) cost loss against an fp32 stream? The Muon experiment's `--full` stable phase
# (width 512, 4 layers, 1,000 AdamW steps at 1e-2 on the proxy corpus), once per seed and
# stream, all runs side by side on one GPU; the same seed gives both streams the same init and
# batches, so the gaps are paired. Prints each run's final val (the mix, weighted as the
# training mix) and the bf16 - fp32 gap with its 95% t-interval. Needs data/proxy
# (gpu_tests/corpus_carry.sh). ~7 min on one H200 at the defaults.
#
#   bash gpu_tests/residual_ab.sh [SEEDS] [STEPS]     # default 3 seeds, 1000 steps; output in $OUT
set -uo pipefail
seeds=${1:-3}
steps=${2:-1000}
out=${OUT:-out/residual_ab}
mkdir -p "$out"
shape="'d_model': 512, 'n_layer': 4, 'n_head': 8, 'n_kv_head': 2, 'd_ffn': 1280"
for seed in $(seq "$seeds"); do
  for stream in bf16 fp32; do
    flag=True; [ $stream = fp32 ] && flag=False
    dir=out/residual_ab/${stream}_s$seed
    rm -rf "$dir"
    python3 train.py config/proxy.py --max_steps=$steps --eval_interval=$steps --log_interval=50 \
      --save_final=False --ckpt_interval=0 --val_seed=1 --seed=$seed --out_dir="$dir" \
      --model_overrides="{$shape, 'residual_in_compute_dtype': $flag}" > "$out/${stream}_s$seed.log" 2>&1 &
  done
done
wait
python3 - "$seeds" <<'PY'
import sys
sys.path.insert(0, ".")
import experiments, sweep
seeds = range(1, int(sys.argv[1]) + 1)
val = {}
for stream in ("bf16", "fp32"):
    for s in seeds:
        r = sweep.read_result(f"out/residual_ab/{stream}_s{s}")
        val[stream, s] = None if r is None else r["val"]
        shown = "did not finish" if r is None else f"{r['val']:.4f}"
        print(f"{stream} stream, seed {s}: val {shown}")
gaps = [val["bf16", s] - val["fp32", s] for s in seeds if None not in (val["bf16", s], val["fp32", s])]
m, h = experiments.t_interval(gaps)
if m is None:
    print("no seed finished in both streams")
else:
    print(f"bf16 - fp32 stream: {m:+.4f} nats" + (f" [{m - h:+.4f}, {m + h:+.4f}]" if h is not None else "")
          + f" over {len(gaps)} seed(s)")
PY

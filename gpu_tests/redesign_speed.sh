#!/usr/bin/env bash
# train.py's own loop on the proxy corpus in several trees, side by side in one call:
# config/proxy.py for 200 steps in each tree carried as .whl/trees/NAME.tar (git archive) and in
# the current tree, rounds alternating the trees, each run alone on the GPU; per run the median
# tokens/s of its log lines after step 30 (compile and warm-up out). Needs data/proxy.
#
#   here:   mkdir -p .whl/trees && for c in 97f6a94 22a5baf 697ed2f; do git archive $c -o .whl/trees/$c.tar; done
#   there:  bash gpu_tests/redesign_speed.sh [rounds]   (carrying .whl/trees)
# 97f6a94 is the tree before the checkpoint.py / schedule.WSD redesign, 22a5baf the redesign
# merged, 697ed2f this round's numerics merged; bisecting further is one more tar.
set -uo pipefail
out=${OUT:-out/redesign_speed}
rounds=${1:-2}
mkdir -p "$out"
trees=()
for tar in .whl/trees/*.tar; do
  name=$(basename "$tar" .tar)
  mkdir -p "/tmp/trees/$name" && tar xf "$tar" -C "/tmp/trees/$name" && ln -sfn "$PWD/data" "/tmp/trees/$name/data"
  trees+=("/tmp/trees/$name")
done
trees+=("$PWD")
args="config/proxy.py --max_steps=200 --eval_interval=0 --log_interval=10"
for round in $(seq "$rounds"); do
  for dir in "${trees[@]}"; do
    name=$(basename "$dir"); [ "$dir" = "$PWD" ] && name=current
    log="$out/${name}_$round.log"
    (cd "$dir" && rm -rf out/redesign_check && python3 train.py $args --out_dir=out/redesign_check) > "$log" 2>&1
    echo "$name $round rc $?: median $(bash gpu_tests/median_tok_s.sh "$log") tok/s"
  done
done

#!/usr/bin/env bash
# train.py before the redesign around checkpoint.py and schedule.WSD (commit 97f6a94, carried
# as .whl/before.tar) and the current tree, side by side in one call on the proxy corpus:
# config/proxy.py for 200 steps, runs alternated A B A B, each alone on the GPU; per run the
# median tokens/s of its log lines after step 30 (compile and warm-up out). Needs data/proxy.
#
#   here:   git archive 97f6a94 -o .whl/before.tar
#   there:  bash gpu_tests/redesign_speed.sh   (carrying .whl/before.tar)
set -uo pipefail
out=${OUT:-out/redesign_speed}
mkdir -p "$out" /tmp/before
tar xf .whl/before.tar -C /tmp/before && ln -sfn "$PWD/data" /tmp/before/data
args="config/proxy.py --max_steps=200 --eval_interval=0 --log_interval=10"
for round in 1 2; do
  for tree in before after; do
    dir=$PWD; [ $tree = before ] && dir=/tmp/before
    (cd "$dir" && rm -rf out/redesign_check && python3 train.py $args --out_dir=out/redesign_check) \
      > "$out/${tree}_$round.log" 2>&1
    echo "$tree $round rc $?: median $(grep -E '^step ' "$out/${tree}_$round.log" | awk '{split($2,a,"/"); if (a[1] > 30) print}' \
      | grep -oE '[0-9,]+ tok/s' | tr -d , | awk '{print $1}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}') tok/s"
  done
done

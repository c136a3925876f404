#!/usr/bin/env bash
# The median tokens/s of a train.py log's step lines after step 30 (compile and warm-up out).
#   bash gpu_tests/median_tok_s.sh LOG
grep -E '^step ' "$1" | awk '{split($2, a, "/"); if (a[1] > 30) print}' | grep -oE '[0-9,]+ tok/s' \
  | tr -d , | awk '{print $1}' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'

#!/usr/bin/env bash
# One H200 call: build the proxy corpus there (its archives stashed by an earlier call, the last
# part carried), train config/proxy.py for its 500 steps, and run the µP transfer experiment
# (default size) side by side, within a time limit. Everything comes back in $OUT.
#
#   call 1, carrying .whl/p1:   bash gpu_tests/corpus_carry.sh stash
#   call 2, carrying .whl/p2:   bash gpu_tests/science_run.sh [mup_time_limit_s]
set -uo pipefail
export PYTHONUNBUFFERED=1
limit=${1:-330}
out=${OUT:-out/science}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$SECONDS
bash gpu_tests/corpus_carry.sh stash >/dev/null && bash gpu_tests/corpus_carry.sh build > "$out/corpus_build.log" 2>&1
tail -14 "$out/corpus_build.log"
echo "== [$((SECONDS - t0)) s] corpus built"
python3 train.py config/proxy.py > "$out/proxy_train.log" 2>&1 &
proxy=$!
python3 experiments.py mup --time-limit "$limit" > "$out/exp_mup.log" 2>&1
echo "== [$((SECONDS - t0)) s] mup sweep stopped (rc $?)"
wait $proxy
echo "== [$((SECONDS - t0)) s] proxy run ended (rc $?)"
tar czf "$out/runs.tgz" out/proxy/*.md out/proxy/*.json out/proxy/*.jsonl out/exp_mup/*.md out/exp_mup/*.json \
  out/exp_mup/*.png out/exp_mup/runs/*/metrics.jsonl out/exp_mup/runs/*/result.json 2>/dev/null
cp out/exp_mup/report.md "$out/exp_mup_report.md" 2>/dev/null; cp out/exp_mup/*.png "$out/" 2>/dev/null
grep -E "^step (1|100|200|300|400|499|500)[ /]|val|tok/s" "$out/proxy_train.log" | tail -25
tail -40 out/exp_mup/report.md 2>/dev/null || tail -30 "$out/exp_mup.log"

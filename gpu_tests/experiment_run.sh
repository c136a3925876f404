#!/usr/bin/env bash
# One H200 call per experiment: the proxy corpus built first if this machine lacks it (its
# archives stashed by an earlier call, the last part carried), then
# `python3 experiments.py EXP --time-limit LIMIT [FLAGS]`; the report, PNG, results.json and
# every run's metrics and train.log come back in $OUT as one runs_EXP.tgz beside exp_EXP.log (the
# device tool returns at most 8 files a call: two per experiment let several share a call). A
# second call with the same EXP resumes the sweep while the machine is still warm (its out/ is
# kept between calls).
#
#   call 1, carrying .whl/p1:  bash gpu_tests/corpus_carry.sh stash
#   call 2, carrying .whl/p2:  XMODEL_COMMIT=$(git rev-parse --short HEAD) bash gpu_tests/experiment_run.sh muon 480
#   call 3 (warm):             XMODEL_COMMIT=... bash gpu_tests/experiment_run.sh fp8 540
#   the full protocol, in parts: XMODEL_COMMIT=... bash gpu_tests/experiment_run.sh mup 540 --full
#   the decays on the recipe's SFT share:   ... bash gpu_tests/experiment_run.sh muon 540 --decay-sft 0.6687
set -uo pipefail
export PYTHONUNBUFFERED=1
exp=$1
limit=${2:-540}
shift 2 || shift $#
out=${OUT:-out/gpu_$exp}
mkdir -p "$out"
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -f data/proxy/code/meta.json ]; then
  bash gpu_tests/corpus_carry.sh stash >/dev/null && bash gpu_tests/corpus_carry.sh build > "$out/corpus_build.log" 2>&1
  tail -4 "$out/corpus_build.log"
  echo "== [$((SECONDS - t0)) s] corpus built"
fi
python3 experiments.py "$exp" --time-limit "$limit" "$@" > "$out/exp_$exp.log" 2>&1
echo "== [$((SECONDS - t0)) s] $exp sweep stopped (rc $?)"
root=out/exp_$exp
case " $* " in *" --full "*) root=out/exp_${exp}_full ;; esac
case " $* " in *" --decay-sft "*) root=${root}_sft ;; esac
prev=
for a in "$@"; do  # an explicit --out DIR / --out=DIR names the sweep folder itself
  case "$a" in --out=*) root=${a#--out=} ;; esac
  [ "$prev" = --out ] && root=$a
  prev=$a
done
tar czf "$out/runs_$exp.tgz" $root/report.md $root/results.json $root/*.png $root/runs/*/run.json \
  $root/runs/*/result.json $root/runs/*/metrics.jsonl $root/runs/*/train.log $root/runs/*/report.md 2>/dev/null
tail -25 "$out/exp_$exp.log"
echo "-- report"
sed -n '/## /,$p' $root/report.md 2>/dev/null | grep -v '^!\[' | head -60

#!/usr/bin/env bash
# Re-measures experiments.py's cost model (US_PER_TOKEN, FP8_FACTOR, MUON_STEP_S, ...) on this GPU:
# train.py at every shape the experiments use, compiled and eager, one run after another in one
# process (as sweep.py's workers run them) and several processes side by side. ~11 min on one
# H200 in two parts: `bash gpu_tests/experiments_calibration.sh 1`, then `... 2`. The data is
# synthetic (random words, BPE 1024) under the real 129,280-id embedding: real throughput,
# meaningless losses. Last run: docs/measurements/2026-12-01_h200_experiments_calibration.txt.
set -euo pipefail
part=${1:-1}
export PYTHONUNBUFFERED=1
python - <<'PY'
import random, sys
sys.path.insert(0, ".")
import prepare

def documents(stats):
    r = random.Random(0)
    words = ["".join(r.choice("abcdefghijklmnop") for _ in range(r.randint(2, 7))) for _ in range(3000)]
    for _ in range(3000):
        yield " ".join(r.choice(words) for _ in range(500))
prepare.prepare([], "data/synth", "bpe:1024", documents=documents, progress=False)
PY
# One process, several train.main calls in sequence; an argument starting with "R " resets
# torch.compile's caches first (sweep.py does that when the model shape changes).
in_one_process() { python - "$@" <<'PY'
import sys, time
sys.path.insert(0, ".")
import torch, train
for spec in sys.argv[1:]:
    argv = spec.split()
    if argv[0] == "R":
        torch._dynamo.reset()
        argv = argv[1:]
    t = time.time()
    try:
        train.main(argv)
    except Exception as e:
        print("EXC", e)
    print("WALL", argv[-1], round(time.time() - t, 1), flush=True)
PY
}
common="config/proxy.py --data={'data/synth':1.0} --eval_interval=0 --eval_steps=1 --log_interval=20"
width() { echo "--model_overrides={'d_model':$1,'n_head':$(($1/64)),'n_kv_head':$(($1/256)),'d_ffn':$(($1*5/2))}"; }
out=out/calib$part
rm -rf "$out" && mkdir -p "$out"
run() { echo "$common --max_steps=$1 $2 --out_dir=$out/$3"; }  # steps, extra keys, name
side_by_side() { for i in $(seq "$1"); do in_one_process "$(run "$2" "$3" "$4$i")" > "$out/$4$i.log" 2>&1 & done; wait; }
b8="--global_batch=8 --micro_batch=8"
fp8="--fp8=True --fp8_backend=native"
if [ "$part" = 1 ]; then
  in_one_process "$(run 60 '' a)" "$(run 60 '' b)" "$(run 60 --compile=False c)" "R $(run 60 "$b8" d)"
  side_by_side 8 80 "" k
  side_by_side 8 100 "$b8" s
  side_by_side 8 30 --compile=False e
  in_one_process "$(run 30 "$(width 2048)" x)" "$(run 30 "$(width 2048) --compile=False" y)" "R $(run 40 "$(width 1024)" z)"
  side_by_side 3 30 "$(width 2048)" X
else
  in_one_process "$(run 60 "$(width 512)" a2)" "$(run 60 "$(width 512) --muon_switch_step=0" b2)" \
      "R $(run 60 "$fp8" f1)" "R $(run 40 "$(width 1024) $fp8" f2)" "R $(run 40 "$(width 1024) $b8" g)" \
      "R $(run 60 "--model_overrides={'n_layer':16}" h)" "R $(run 60 "--model_overrides={'n_layer':8}" i)"
fi
python - "$out" <<'PY'
import glob, json, os, sys
for d in sorted(glob.glob(os.path.join(sys.argv[1], "*/"))):
    if not os.path.exists(os.path.join(d, "metrics.jsonl")):
        print(os.path.basename(d.rstrip("/")), "did not start: see its log above")
        continue
    recs = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    train = [r for r in recs if r["kind"] == "train"]
    if train:
        print(os.path.basename(d.rstrip("/")), "s to step 20:", round(train[0]["time"], 1),
              "tokens/s after:", [int(r["tokens_per_s"]) for r in train[1:]], "peak GiB:", train[-1]["mem_gib"])
PY

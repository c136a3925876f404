# The µP proxy (RECIPE §1, the launch code's `hpo/` scripts): width 256 = the µP base width
# (width_mult 1), 4 layers, 4 heads / 1 KV head, FFN 640, the real 129,280-id vocabulary,
# seq 2048, batch 24, constant LR, ~500 steps (data ~10x the non-embedding parameters).
# Hyper-parameters found here transfer to the full width through µP (mup.py): sweep
#     python train.py config/proxy.py --learning_rate=2e-2 --out_dir=out/proxy_lr2e-2
# One small GPU is enough. Data: the proxy corpus (docs/CORPUS.md), built offline by
#     bash gpu_tests/corpus_carry.sh fetch && python prepare.py --corpus proxy
out_dir = "out/proxy"
phase_name = "proxy"
init_from = "scratch"

model_preset = "proxy"

# The proxy corpus: English, Chinese, code, math and es/fr encyclopedic text, each its own
# dataset with its own val split (train.py reports a val loss per source). 500 steps x 24 x
# 2048 = 24.6M tokens; each text source is weighted to 0.9 epochs of its training tokens in
# that run, code takes the rest (68.3%, 0.40 epochs), so no token is due twice (docs/CORPUS.md
# has the counts). The recipe's 41% English / 20% Chinese would show the English sources 2.7
# times and the Chinese 2.0 times: the registries hold 4.1M English and 2.7M Chinese tokens.
data = {
    "data/proxy/wiki-en": 3.85,
    "data/proxy/recipes-en": 2.64,
    "data/proxy/shakespeare": 4.92,
    "data/proxy/kjv": 3.71,
    "data/proxy/peoples-daily": 4.12,
    "data/proxy/reviews-zh": 5.77,
    "data/proxy/wiki-es-fr": 6.39,
    "data/proxy/math": 0.28,
    "data/proxy/code": 68.32,
}
# The recipe's stable-phase mix (RECIPE §5) instead, taken from stable_s1.py so the two cannot
# drift apart (include(), provided by train.load_config, takes only the keys named: nothing
# else of S1). Its 13 datasets must be prepared first. To train on it, uncomment:
# include("stable_s1.py", "data")

seq_len = 2048
max_seq_len = 2048

global_batch = 24
micro_batch = 12

start_step = 0
max_steps = 500
learning_rate = 1e-2  # the value the sweep found and the stable phases use (RECIPE §3)
warmup_steps = 0  # constant LR throughout, as the HPO scripts run it
decay_start_step = None

log_interval = 10
eval_interval = 100
eval_steps = 8
ckpt_interval = 0

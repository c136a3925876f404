# Quick start on a CPU: the embedded default data (`python prepare.py` builds data/default:
# Shakespeare + People's Daily, a BPE of 8,192 ids) and the µP proxy's shape (RECIPE §1:
# width 256 = the µP base width, 4 layers, 4 heads / 1 KV head, FFN 640), with the
# vocabulary cut to the default BPE's 8,192. A miniature of the recipe's WSD schedule
# (RECIPE §3): linear warmup, constant stable LR at the µP base LR 1e-2, linear decay.
# Measured on 2 CPU cores: 4m19s (~4,000 tokens/s), train loss 10.2 (mean of steps 1-10) -> 5.5 at
# step 200, val loss 6.41 (step 50) -> 5.19 (step 200); ln(8192) = 9.0 is chance.
#     python prepare.py && python train.py config/quickstart.py
out_dir = "out/quickstart"
phase_name = "quickstart"
init_from = "scratch"

model_preset = "proxy"
model_overrides = dict(vocab_size=8192)  # the default BPE (prepare.py)

data = {"data/default": 1.0}
seq_len = 256
max_seq_len = 256

global_batch = 16  # 16 x 256 = 4,096 tokens per step
micro_batch = 16  # one micro-batch per step: the fastest on a CPU

start_step = 0
max_steps = 200
learning_rate = 1e-2  # µP base LR of the stable phases (RECIPE §3); width_mult 1 here
warmup_steps = 20
warmup_init_lr = 0.0
decay_start_step = 150  # the last 25% decays linearly, as the recipe's decay phase does
decay_steps = 50
min_lr = 1e-3

log_interval = 10
eval_interval = 50
eval_steps = 4
ckpt_interval = 0  # one checkpoint, at the end (out/quickstart/ckpt/): sample.py reads it

# The µP proxy (RECIPE §1, the launch code's `hpo/` scripts): width 256 = the µP base width
# (width_mult 1), 4 layers, 4 heads / 1 KV head, FFN 640, the real 129,280-id vocabulary,
# seq 2048, batch 24, constant LR, ~500 steps (data ~10x the non-embedding parameters).
# Hyper-parameters found here transfer to the full width through µP (mup.py): sweep
#     python train.py config/proxy.py --learning_rate=2e-2 --out_dir=out/proxy_lr2e-2
# One small GPU is enough. The data is the stable-phase mix (RECIPE §5); for a first try on
# the embedded default use --data="{'data/default': 1.0}".
out_dir = "out/proxy"
phase_name = "proxy"
init_from = "scratch"

model_preset = "proxy"

# The stable-phase mix (RECIPE §5), taken from stable_s1.py so the two cannot drift apart;
# nothing else of S1 (include(), provided by train.load_config, takes only the keys named).
include("stable_s1.py", "data")

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

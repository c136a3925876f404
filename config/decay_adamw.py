# Phase 3 of 4, ablation baseline: the same decay as config/decay_muon.py with AdamW kept
# for every parameter (muon_switch_step = None). The paper reports +4.58 points on the
# 13-task average for Muon over this run (RECIPE §2, §6). Everything else is identical.
#     torchrun --nproc_per_node=8 train.py config/decay_adamw.py
out_dir = "out/decay_adamw"
phase_name = "decay_adamw"
init_from = "out/stable_s2"
load_optimizer = False

model_preset = "xmodel-2.5"

data = {  # RECIPE §5, decay mix (percent as published; they sum to 100.01, the reader normalises)
    "data/sft-mixed": 66.87,
    "data/ultrafineweb-en": 18.73,
    "data/ultrafineweb-zh": 3.72,
    "data/starcoder": 2.21,
    "data/megawika": 1.80,
    "data/algebraic-stack": 1.72,
    "data/open-web-math": 1.72,
    "data/wiki": 1.15,
    "data/stackexchange": 0.90,
    "data/reddit": 0.90,
    "data/books": 0.29,
}
seq_len = 8192
max_seq_len = 8192

global_batch = 960
micro_batch = 2

start_step = 530_000
max_steps = 550_000
learning_rate = 6.25e-4
warmup_steps = 500
warmup_init_lr = 1e-6
decay_start_step = 530_500
decay_steps = 10_000
min_lr = 1e-5
decay_shape = "linear"

muon_switch_step = None  # the only difference from decay_muon.py
fp8 = True

log_interval = 10
eval_interval = 500
eval_steps = 20
ckpt_interval = 500
keep_last = 3

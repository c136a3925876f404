# Phase 3 of 4, decay with Muon (RECIPE §2, §3, §5): the paper's headline change. From S2's
# final weights with a FRESH optimizer (load_optimizer = False: the decay script's
# --no-load-optim). At the decay boundary, global step 530k, the hidden matrices (fused QKV,
# out, fused gate|up, down) move from AdamW to Muon; the embedding and norms stay on AdamW;
# every other hyper-parameter is unchanged. The LR restarts 16x below the stable LR:
# 500 steps linear from 1e-6 to 6.25e-4 (hidden 1.041667e-4), then linear to 1e-5 over 10k
# steps, then 1e-5 to the end (20k steps, model card). 960 x 8192 tokens per step (7.9M).
# Data: the decay mix, two-thirds SFT. The ablation baseline is config/decay_adamw.py.
#     torchrun --nproc_per_node=8 train.py config/decay_muon.py
out_dir = "out/decay_muon"
phase_name = "decay_muon"
init_from = "out/stable_s2"  # its latest checkpoint: step 530,000
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
micro_batch = 2  # 960 = 2 x 8 GPUs x 60 accumulation steps

start_step = 530_000
max_steps = 550_000
learning_rate = 6.25e-4  # µP base LR of the decay (embedding); hidden 1.041667e-4
warmup_steps = 500
warmup_init_lr = 1e-6
decay_start_step = 530_500
decay_steps = 10_000
min_lr = 1e-5
decay_shape = "linear"

muon_switch_step = 530_000  # = the decay boundary: Muon from the first step of this phase
muon_reset_adamw_state = True  # fresh state everywhere (--no-load-optim)
fp8 = True  # train_decay_fp8_1117.sh

log_interval = 10
eval_interval = 500
eval_steps = 20
ckpt_interval = 500
keep_last = 3

# Phase 1 of 4, stable S1 (RECIPE §3): from scratch, 2k-step linear warmup from 0, then the
# constant µP LR: 1e-2 for the tied embedding, 1e-2 / width_mult(6) = 1.6667e-3 for the
# hidden matrices and norms (mup.param_groups). 480 x 3712 tokens per step (1.78M) up to
# global step 270k (~0.48T tokens). AdamW (0.9, 0.95), eps 1e-8, wd 0.1, clip 1.0 (§2).
# FP8 as in the launch script train_s1_fp8_0921.sh (§4). Data: the 13-source stable mix (§5).
#     torchrun --nproc_per_node=8 train.py config/stable_s1.py
out_dir = "out/stable_s1"
phase_name = "stable_s1"
init_from = "scratch"

model_preset = "xmodel-2.5"  # 48 layers, d 1536, 24/8 heads, FFN 3840, vocab 129,280 (§1)

data = {  # RECIPE §5, stable phases S1 and S2 (weights in percent; normalised by the reader)
    "data/ultrafineweb-en": 41.0,
    "data/ultrafineweb-zh": 20.0,
    "data/starcoder": 26.0,
    "data/reddit": 3.91,
    "data/pes2o": 2.85,
    "data/arxiv": 1.33,
    "data/books": 1.0,
    "data/wiki": 1.0,
    "data/stackexchange": 0.9,
    "data/tulu-flan": 0.78,
    "data/algebraic-stack": 0.5,
    "data/open-web-math": 0.5,
    "data/megawika": 0.23,
}
seq_len = 3712
max_seq_len = 4096

global_batch = 480
micro_batch = 4  # 480 = 4 x 8 GPUs x 15 accumulation steps

start_step = 0
max_steps = 270_000
learning_rate = 1e-2  # µP base LR (embedding); hidden matrices 1.6667e-3
warmup_steps = 2_000
warmup_init_lr = 0.0
decay_start_step = None  # no decay in this phase: constant after the warmup

muon_switch_step = None  # AdamW throughout the stable phases
fp8 = True

log_interval = 10
eval_interval = 1_000
eval_steps = 20
ckpt_interval = 1_000
keep_last = 3

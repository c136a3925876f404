# Phase 2 of 4, stable S2 (RECIPE §3): continues S1 as if it were one run. Same constant
# LR (1e-2 / 1.6667e-3), same mix, same optimizer: the weights AND the AdamW state of S1's
# final checkpoint (load_optimizer = True), so S1 -> S2 behaves like a resume with a larger
# batch. The global batch doubles to 960 x 3712 (3.56M tokens per step) from step 270k to
# 530k (~0.93T tokens); no LR rescaling at the batch change (the recipe does none, §3).
#     torchrun --nproc_per_node=8 train.py config/stable_s2.py
out_dir = "out/stable_s2"
phase_name = "stable_s2"
init_from = "out/stable_s1"  # its latest checkpoint: step 270,000
load_optimizer = True

model_preset = "xmodel-2.5"

data = {  # RECIPE §5: the same 13-source mix as S1
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

global_batch = 960
micro_batch = 4  # 960 = 4 x 8 GPUs x 30 accumulation steps

start_step = 270_000
max_steps = 530_000
learning_rate = 1e-2
warmup_steps = 0  # no re-warmup: the optimizer state carries over
decay_start_step = None

muon_switch_step = None
fp8 = True

log_interval = 10
eval_interval = 1_000
eval_steps = 20
ckpt_interval = 1_000
keep_last = 3

# Phase 2 of 4, stable S2 (RECIPE §3): continues S1 as if it were one run. Same constant
# LR (1e-2 / 1.6667e-3), same mix, same optimizer: the weights AND the AdamW state of S1's
# final checkpoint (load_optimizer = True), so S1 -> S2 behaves like a resume with a larger
# batch. The global batch doubles to 960 x 3712 (3.56M tokens per step) from step 270k to
# 530k (~0.93T tokens); no LR rescaling at the batch change (the recipe does none, §3).
# Everything not set below is S1's: this file takes all of stable_s1.py's settings
# (include(), provided by train.load_config) and changes what differs.
#     torchrun --nproc_per_node=8 train.py config/stable_s2.py
include("stable_s1.py")

out_dir = "out/stable_s2"
phase_name = "stable_s2"
init_from = "out/stable_s1"  # its latest checkpoint: step 270,000
load_optimizer = True

global_batch = 960
micro_batch = 4  # 960 = 4 x 8 GPUs x 30 accumulation steps

start_step = 270_000
max_steps = 530_000
warmup_steps = 0  # no re-warmup: the optimizer state carries over

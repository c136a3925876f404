# Phase 4 of 4, long context (RECIPE §3): from the decay checkpoint, 16K sequences (the
# paper; its public script uses 32,768), constant LR 1e-5 (the decay's floor), no warmup,
# wd 0.1, activation checkpointing so 16K fits. Paper: 10k steps at 16K (public script: 3k).
# Inferred (the sources do not say): the decay's optimizer, Muon + AdamW, continues with its
# state (load_optimizer = True, so no warmup is needed); ~3.9M tokens per step, the public
# script's 15 x 32,768 x 8 GPUs, here 240 x 16,384; the data is long documents (>= 16K
# tokens) prepared into data/long-context.
#     torchrun --nproc_per_node=8 train.py config/long_context.py
out_dir = "out/long_context"
phase_name = "long_context"
init_from = "out/decay_muon"  # its latest checkpoint: step 550,000
load_optimizer = True

model_preset = "xmodel-2.5"

data = {"data/long-context": 1.0}
seq_len = 16_384
max_seq_len = 16_384

global_batch = 240
micro_batch = 1  # 240 = 1 x 8 GPUs x 30 accumulation steps
activation_checkpointing = True

start_step = 550_000
max_steps = 560_000
learning_rate = 1e-5
warmup_steps = 0
# Every group at the absolute 1e-5 (RECIPE §3 gives one value): the phase is the decay's
# floor held, so a zero-length decay at its start puts all µP groups at min_lr; a plain
# constant 1e-5 would be the embedding's peak, and the hidden groups would get 1e-5/6.
decay_start_step = 550_000
decay_steps = 0
min_lr = 1e-5

muon_switch_step = 530_000  # Muon since the decay boundary: stays on
fp8 = False  # the long-context script is not an FP8 one

log_interval = 10
eval_interval = 500
eval_steps = 10
ckpt_interval = 500
keep_last = 3

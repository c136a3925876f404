# Phase 3 of 4, ablation baseline: the same decay as config/decay_muon.py with AdamW kept
# for every parameter (muon_switch_step = None). The paper reports +4.58 points on the
# 13-task average for Muon over this run (RECIPE §2, §6). Everything else is identical by
# construction: this file takes all of decay_muon.py's settings (include(), provided by
# train.load_config) and changes three.
#     torchrun --nproc_per_node=8 train.py config/decay_adamw.py
include("decay_muon.py")

out_dir = "out/decay_adamw"
phase_name = "decay_adamw"
muon_switch_step = None  # the only difference in training from decay_muon.py

# The proxy decay's ablation baseline, as config/decay_adamw.py is at full size: the same
# decay as config/proxy_decay_muon.py with AdamW kept for every parameter
# (muon_switch_step = None). This file runs proxy_decay_muon.py and changes three names.
#     python train.py config/proxy.py && python train.py config/proxy_decay_adamw.py
include("proxy_decay_muon.py")  # all of proxy_decay_muon.py's settings (include(): train.load_config)

out_dir = "out/proxy_decay_adamw"
phase_name = "proxy_decay_adamw"
muon_switch_step = None  # the only difference in training from proxy_decay_muon.py

# The recipe's decay phase (config/decay_muon.py) at proxy scale: the stable phase is
# config/proxy.py (constant LR 1e-2, its checkpoint at step 500), then, as at full size
# (RECIPE §2, §3): a FRESH optimizer (load_optimizer = False), the hidden matrices on Muon from
# the first decay step (embedding and norms stay on AdamW), the LR restarted 16x below the
# stable LR with a short linear warmup from 1e-6, a linear decay to the 1e-5 floor, then the
# floor. The lengths keep the recipe's proportions: of its 20k decay steps, 500 warm up (2.5%)
# and 10k decay (50%). Everything not set here is config/proxy.py's (model, data, batch).
# The ablation baseline is config/proxy_decay_adamw.py; `python experiments.py muon` runs both
# over several seeds from one shared stable checkpoint.
#     python train.py config/proxy.py && python train.py config/proxy_decay_muon.py
include("proxy.py")  # all of proxy.py's settings (include(): train.load_config)

out_dir = "out/proxy_decay_muon"
phase_name = "proxy_decay_muon"
init_from = "out/proxy"  # its latest checkpoint: step 500
load_optimizer = False

start_step = 500
max_steps = 700  # a 200-step decay phase
learning_rate = 6.25e-4  # 1e-2 / 16, as 6.25e-4 after the recipe's 1e-2 stable phase
warmup_steps = 5  # 2.5% of the phase (500 of 20k)
warmup_init_lr = 1e-6
decay_start_step = 505
decay_steps = 100  # 50% of the phase (10k of 20k); the floor for the rest
min_lr = 1e-5
decay_shape = "linear"

# The data: proxy.py's stable mix. The recipe's decay mix is two-thirds SFT (RECIPE §5); the
# proxy corpus's chat source stands in for it (docs/CORPUS.md). For that decay, uncomment (the
# stable mix scaled into the other 33.13%, as `experiments.py muon --decay-sft 0.6687` builds it):
# data = {
#     "data/proxy/chat-en": 66.87,
#     "data/proxy/wiki-en": 1.2755,
#     "data/proxy/recipes-en": 0.8746,
#     "data/proxy/shakespeare": 1.63,
#     "data/proxy/kjv": 1.2291,
#     "data/proxy/peoples-daily": 1.365,
#     "data/proxy/reviews-zh": 1.9116,
#     "data/proxy/wiki-es-fr": 2.117,
#     "data/proxy/math": 0.0928,
#     "data/proxy/code": 22.6344,
# }

muon_switch_step = 500  # = start_step: Muon from the first step of this phase
muon_reset_adamw_state = True  # fresh state everywhere (--no-load-optim)

eval_interval = 50

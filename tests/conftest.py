import os
import sys

import torch

# Tests import the top-level modules (model.py, train.py, ...) from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The test models are tiny: one thread is faster than two fighting over 2 cores (OpenMP
# spin-waits made tiny matmuls ~100x slower under load), and results do not depend on it.
torch.set_num_threads(1)

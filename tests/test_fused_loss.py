"""fused_loss.py: the output layer + cross-entropy in three Triton kernels (loss_impl = "triton").
Their numerics are checked under Triton's CPU interpreter (tests/fused_loss_interpreted.py, in a
process of its own); the GPU speed and numerics at full size: gpu_tests/loss_bench.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def test_kernels_under_the_triton_interpreter():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(HERE / "fused_loss_interpreted.py")], cwd=HERE.parent,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1] and "failed" not in proc.stdout.splitlines()[-1]


def test_triton_loss_on_a_cpu_tensor_outside_the_interpreter_is_one_line():
    import fused_loss
    assert not fused_loss.INTERPRETED
    h, w = torch.randn(8, 16), torch.randn(32, 16)
    with pytest.raises(ValueError) as err:
        fused_loss.ce_chunks(h, w, torch.zeros(8, dtype=torch.long), torch.full((8,), 1 / 8), 1.0, 64,
                             torch.float32, True)
    assert "\n" not in str(err.value) and "loss_impl='chunked'" in str(err.value)


def test_default_chunk_rows_bound_the_logits_to_two_gib():
    import fused_loss
    assert fused_loss.default_chunk_rows(129_280) == 8192  # 2^30 bf16 logits, a multiple of 128 rows
    assert fused_loss.default_chunk_rows(8192) * 8192 == 2**30

"""bench.py: what can be checked without a GPU (its measurements need one: gpu_tests/)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bench.main() as the command line runs it, with the package made unimportable as if missing
RUN_WITHOUT = ("import sys; sys.modules[{module!r}] = None; sys.argv = ['bench.py'] + {argv!r}; "
               "sys.path.insert(0, {root!r}); import bench; bench.main()")


def run_bench(argv, hide="liger_kernel.transformers.functional"):
    code = RUN_WITHOUT.format(module=hide, argv=argv, root=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_missing_loss_package_stops_with_one_line_before_any_gpu_work():
    # On this CPU-only machine the check must come first: any CUDA call would fail with a traceback.
    proc = run_bench(["--preset", "proxy", "--variants", "ours", "--loss-impl", "liger"])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: loss_impl='liger' needs the package liger-kernel")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_unknown_loss_backend_is_named_with_the_choices():
    proc = run_bench(["--loss-impl", "fused"])
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: loss_impl='fused' is not one of 'chunked', 'liger', 'cce'"


def test_datasheet_peak_is_known_for_the_gpus_it_reports_against():
    sys.path.insert(0, str(ROOT))
    import bench
    assert bench.datasheet_peak_tflops("NVIDIA H200") == 989.0
    assert bench.datasheet_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.datasheet_peak_tflops("NVIDIA A10G") is None  # unknown: no datasheet MFU, not a guess

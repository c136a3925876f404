"""fp8.py on CPU: scaling arithmetic, FP8 rounding bounds, module swapping, checkpoints, and the
emulated FP8 linear (same scaling code as the GPU path; only the GEMM is done in fp32)."""
import os
import sys

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import fp8  # noqa: E402
from fp8 import E4M3, E5M2, GRAD_OUTPUT, INPUT, WEIGHT  # noqa: E402


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def cpu_scaled_mm_works():
    try:
        a = torch.ones(16, 16).to(E4M3)
        torch._scaled_mm(a, a.t(), scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.float32)
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------- a model with model.py's names


class Attn(nn.Module):
    def __init__(self, d, qkv_out):
        super().__init__()
        self.qkv = nn.Linear(d, qkv_out, bias=False)
        self.out = nn.Linear(d, d, bias=False)


class MLP(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_up = nn.Linear(d, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)


class Block(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d)
        self.attn = Attn(d, 2 * d)
        self.mlp_norm = nn.RMSNorm(d)
        self.mlp = MLP(d, ffn)

    def forward(self, x):
        a = self.attn.qkv(self.attn_norm(x))
        x = x + self.attn.out(a[..., : x.shape[-1]])
        gate, up = self.mlp.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.mlp.down(nn.functional.silu(gate) * up)


class TinyLM(nn.Module):
    """Same parameter names as model.Xmodel; block 1 has an FFN of 40 (not a multiple of 16)."""

    def __init__(self, vocab=64, d=32, ffns=(48, 40)):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, f) for f in ffns)
        self.norm = nn.RMSNorm(d)
        self.probe = nn.Linear(d, 16, bias=False)  # some other Linear: must be left alone

    def forward(self, idx):
        x = self.embed(idx)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.embed.weight.t()


def make_lm(seed=0):
    torch.manual_seed(seed)
    return TinyLM()


# --------------------------------------------------------------------------- scaling arithmetic


def test_delayed_scale_is_fp8_max_over_history_max_times_two_to_margin():
    hist = torch.tensor([2.0, 8.0, 4.0, 0.0, 0.0])
    now = torch.tensor(1000.0)  # delayed: this step's amax must not matter
    assert fp8.delayed_scale(hist, now, E4M3).item() == 448.0 / 8.0
    assert fp8.delayed_scale(hist, now, E4M3, margin=1).item() == 448.0 / 16.0
    assert fp8.delayed_scale(hist, now, E5M2).item() == 57344.0 / 8.0
    assert fp8.delayed_scale(hist, now, E4M3, algo="most_recent").item() == 448.0 / 2.0


def test_empty_history_scales_with_the_current_amax_only_when_given():
    hist = torch.zeros(128)
    assert fp8.delayed_scale(hist, torch.tensor(3.5), E4M3).item() == 128.0
    assert fp8.delayed_scale(hist, None, E4M3).item() == 1.0  # steady state: history alone
    hist[5] = 7.0
    assert fp8.delayed_scale(hist, torch.tensor(3.5), E4M3).item() == 64.0


def test_zero_or_nonfinite_amax_gives_unit_scale():
    assert fp8.amax_to_scale(torch.tensor(0.0), E4M3).item() == 1.0
    assert fp8.amax_to_scale(torch.tensor(float("nan")), E4M3).item() == 1.0
    assert fp8.amax_to_scale(torch.tensor(1e-45), E4M3).item() == 1.0  # 448/1e-45 overflows


def test_tensor_amax_is_the_largest_magnitude_whatever_the_sign_dtype_or_rank():
    g = torch.Generator().manual_seed(3)
    for shape in [(64, 48), (2, 16, 48), (1, 7)]:
        for dtype in (torch.float32, torch.bfloat16):
            t = torch.randn(shape, generator=g).to(dtype)
            t.view(-1)[5] = -9.0  # the largest magnitude is negative, in one row only
            amax = fp8.tensor_amax(t)
            assert amax.dtype == torch.float32 and amax.shape == ()
            assert amax.item() == 9.0 == t.float().abs().max().item()


def test_record_amax_pushes_newest_first_and_drops_the_oldest():
    hist = torch.zeros(4)
    for v in [1.0, 2.0, 3.0, 4.0, 5.0]:
        fp8.record_amax(hist, torch.tensor(v))
    assert hist.tolist() == [5.0, 4.0, 3.0, 2.0]
    fp8.record_amax(hist, torch.tensor(float("inf")))  # an overflowing step is not remembered
    assert hist.tolist() == [0.0, 5.0, 4.0, 3.0]


def test_history_window_forgets_an_amax_after_its_length():
    hist = torch.zeros(3)
    fp8.record_amax(hist, torch.tensor(100.0))
    for _ in range(2):
        fp8.record_amax(hist, torch.tensor(1.0))
    assert fp8.delayed_scale(hist, torch.tensor(1.0), E4M3).item() == pytest.approx(448.0 / 100.0)
    fp8.record_amax(hist, torch.tensor(1.0))
    assert fp8.delayed_scale(hist, torch.tensor(1.0), E4M3).item() == 448.0


# --------------------------------------------------------------------------- FP8 rounding


@pytest.mark.parametrize("dtype,mantissa_bits", [(E4M3, 3), (E5M2, 2)])
def test_quantize_roundtrip_error_is_within_half_an_ulp(dtype, mantissa_bits):
    torch.manual_seed(0)
    x = torch.randn(4096) * torch.logspace(-2, 2, 4096)  # four decades of magnitudes
    scale = fp8.amax_to_scale(x.abs().max(), dtype)
    q = fp8.quantize(x, scale, dtype)
    assert q.dtype == dtype
    back = fp8.dequantize(q, scale)
    # round-to-nearest with m mantissa bits: relative error <= 2**-(m+1) for normal numbers
    normal = (x * scale).abs() >= torch.finfo(dtype).smallest_normal
    rel = ((back - x).abs() / x.abs())[normal]
    assert rel.max().item() <= 2.0 ** -(mantissa_bits + 1) + 1e-7
    # subnormals: absolute error at most half the subnormal spacing (in scaled units)
    sub_spacing = torch.finfo(dtype).smallest_normal * 2.0 ** -mantissa_bits
    if (~normal).any():
        assert ((back - x).abs() * scale)[~normal].max().item() <= sub_spacing / 2 + 1e-12
    # the amax lands exactly on the format's largest value
    assert q.float().abs().max().item() == torch.finfo(dtype).max


@pytest.mark.parametrize("dtype", [E4M3, E5M2])
def test_quantize_saturates_instead_of_producing_nan(dtype):
    x = torch.tensor([1e6, -1e6, 1.0])
    q = fp8.quantize(x, torch.tensor(1.0), dtype).float()
    assert torch.isfinite(q).all()
    assert q.tolist()[:2] == [torch.finfo(dtype).max, -torch.finfo(dtype).max]


# --------------------------------------------------------------------------- the FP8 linear


def emulated_reference(x, w, x_scale, w_scale):
    xq = fp8.dequantize(fp8.quantize(x, x_scale, E4M3), x_scale)
    wq = fp8.dequantize(fp8.quantize(w, w_scale, E4M3), w_scale)
    return xq @ wq.t()


def test_forward_equals_quantize_dequantize_then_matmul_with_delayed_scales():
    torch.manual_seed(0)
    m = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False), emulate=True)
    x1 = torch.randn(16, 32)
    m(x1)  # first step: empty history, just-in-time scales; records amax(x1)
    x2 = torch.randn(16, 32) * 3  # larger than the history says: delayed scale saturates
    y2 = m(x2)
    x_scale = 448.0 / x1.abs().max()
    w_scale = 448.0 / m.weight.detach().abs().max()
    expected = emulated_reference(x2, m.weight.detach(), x_scale, w_scale)
    torch.testing.assert_close(y2, expected, rtol=1e-5, atol=1e-5)
    assert m.fp8_amax_history[INPUT, :2].tolist() == [x2.abs().max().item(), x1.abs().max().item()]


def test_training_step_records_input_weight_and_grad_amax_but_eval_records_nothing():
    torch.manual_seed(0)
    m = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False), amax_history_len=8, emulate=True)
    x = torch.randn(2, 8, 32, requires_grad=True)
    g = torch.randn(2, 8, 48)
    m(x).backward(g)
    h = m.fp8_amax_history
    assert h.shape == (3, 8)
    assert h[INPUT, 0].item() == x.abs().max().item()
    assert h[WEIGHT, 0].item() == m.weight.abs().max().item()
    assert h[GRAD_OUTPUT, 0].item() == g.abs().max().item()
    assert (h[:, 1:] == 0).all()
    before = h.clone()
    m.eval()
    with torch.no_grad():
        m(torch.randn(4, 32) * 50)
    assert torch.equal(m.fp8_amax_history, before)


def test_emulated_forward_and_backward_close_to_fp32_within_fp8_error():
    torch.manual_seed(0)
    ref = nn.Linear(64, 96, bias=False)
    m = fp8.Float8Linear.from_linear(nn.Linear(64, 96, bias=False), emulate=True)
    m.weight.data.copy_(ref.weight.data)
    for _ in range(3):  # fill the history so the delayed scales are in use
        x = torch.randn(4, 32, 64)
        g = torch.randn(4, 32, 96)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = m(xa), ref(xb)
        ya.backward(g)
        yb.backward(g)
    # E4M3 rounds with relative error <= 2**-4 per element, E5M2 <= 2**-3; errors of random
    # operands add in quadrature, so these are far from the bounds but far from exact too.
    fwd = rel_err(ya, yb)
    dx = rel_err(xa.grad, xb.grad)
    dw = rel_err(m.weight.grad, ref.weight.grad)
    assert 1e-3 < fwd < 2 * 2.0 ** -4, fwd
    assert 1e-3 < dx < 2 * 2.0 ** -3, dx
    assert 1e-3 < dw < 2 * 2.0 ** -3, dw


def test_output_and_grads_follow_autocast_and_master_weight_dtypes():
    m = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False), emulate=True)
    x = torch.randn(16, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and m.weight.grad.dtype == torch.float32
    xb = torch.randn(16, 32, dtype=torch.bfloat16, requires_grad=True)
    yb = m(xb)
    assert yb.dtype == torch.bfloat16
    yb.sum().backward()
    assert xb.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not cpu_scaled_mm_works(), reason="this torch has no CPU torch._scaled_mm for float8")
@pytest.mark.parametrize("tokens,autocast", [(32, False), (5, False), (32, True)])
def test_scaled_mm_path_matches_the_emulation(monkeypatch, tokens, autocast):
    """Runs the GPU code path (torch._scaled_mm: scale reciprocals, column-major operands,
    E5M2 x E4M3 in backward) through the CPU kernel, against the emulation."""
    monkeypatch.setattr(fp8, "check_fp8_supported", lambda *a, **k: None)
    torch.manual_seed(0)
    a = fp8.Float8Linear.from_linear(nn.Linear(64, 96, bias=False), emulate=False)
    b = fp8.Float8Linear.from_linear(nn.Linear(64, 96, bias=False), emulate=True)
    b.weight.data.copy_(a.weight.data)
    for _ in range(2):
        x = torch.randn(tokens, 64)
        g = torch.randn(tokens, 96)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ya, yb = a(xa), b(xb)
        ya.backward(g.to(ya.dtype))
        yb.backward(g.to(yb.dtype))
        torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.weight.grad, b.weight.grad, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.fp8_amax_history, b.fp8_amax_history)
    # a transposed (non-contiguous) input and an expanded grad_output (from .sum()) are laid
    # out row-major before the GEMMs
    xt = torch.randn(64, tokens).t().requires_grad_()
    a(xt).sum().backward()
    assert torch.isfinite(xt.grad).all()


def test_scaled_matmul_rejects_layouts_cublas_cannot_take():
    a = torch.randn(32, 64).to(E4M3)
    b = torch.randn(64, 48).to(E4M3)  # row-major second operand: wrong
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="column-major"):
        fp8.scaled_matmul(a, one, b, one, torch.float32)
    with pytest.raises(ValueError, match="row-major"):
        fp8.scaled_matmul(fp8.column_major(a), one, fp8.column_major(b), one, torch.float32)


def test_torch_compile_matches_eager_including_the_backward_history_update():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False), emulate=True)
    comp = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False), emulate=True)
    comp.weight.data.copy_(eager.weight.data)
    # aot_eager runs AOTAutograd's functionalization (where buffer mutations could be lost)
    # without a C++ compiler; fullgraph=True fails on any graph break (.item(), host sync).
    compiled = torch.compile(comp, backend="aot_eager", fullgraph=True)
    for i in range(3):
        x = torch.randn(16, 32) * (i + 1)
        g = torch.randn(16, 48)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = compiled(xa), eager(xb)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(ya, yb)
        torch.testing.assert_close(xa.grad, xb.grad)
    assert torch.equal(comp.fp8_amax_history, eager.fp8_amax_history)
    assert (comp.fp8_amax_history[:, :3] > 0).all()


# --------------------------------------------------------------------------- module swapping


def test_convert_swaps_block_linears_only_and_reports_the_rest():
    model = make_lm()
    qkv_weight = model.blocks[0].attn.qkv.weight
    report = fp8.convert_to_fp8(model, emulate=True)
    assert report.backend == "native" and "emulate" in report.reason
    assert report.converted == ["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.0.mlp.gate_up",
                                "blocks.0.mlp.down", "blocks.1.attn.qkv", "blocks.1.attn.out",
                                "blocks.1.mlp.gate_up", "blocks.1.mlp.down"][:len(report.converted)]
    kept = dict(report.kept)
    # block 1's FFN is 40 wide: gate_up is 80x32 (fine), down is 32x40 (40 % 16 != 0)
    assert set(kept) == {"blocks.1.mlp.down", "probe", "output layer"}
    assert "not divisible by 16" in kept["blocks.1.mlp.down"] and kept["probe"] == "not a block Linear"
    assert len(report.converted) == 7
    assert isinstance(model.blocks[0].attn.qkv, fp8.Float8Linear)
    assert type(model.blocks[1].mlp.down) is nn.Linear
    assert type(model.probe) is nn.Linear
    assert isinstance(model.embed, nn.Embedding) and isinstance(model.norm, nn.RMSNorm)
    assert model.blocks[0].attn.qkv.weight is qkv_weight  # same Parameter: optimizer refs stay valid
    assert "blocks.1.mlp.down" in str(report) and "native" in str(report)
    assert report.to_dict()["converted"] == report.converted


def test_converted_model_trains_a_step_on_cpu_emulation():
    model = make_lm()
    fp8.convert_to_fp8(model, emulate=True)
    idx = torch.randint(0, 64, (2, 8))
    logits = model(idx)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 64), idx.reshape(-1))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for n, p in model.named_parameters() if not n.startswith("probe"))


def test_backend_choice_is_explained_and_te_without_te_fails_clearly():
    ok, _ = fp8.te_available()
    chosen, reason = fp8._choose_backend("auto", emulate=False)
    assert chosen == ("te" if ok else "native")
    assert "transformer_engine" in reason
    if not ok:
        with pytest.raises(ImportError, match="backend='native'"):
            fp8.convert_to_fp8(make_lm(), backend="te")
    with pytest.raises(ValueError):
        fp8.convert_to_fp8(make_lm(), backend="te", emulate=True)
    with pytest.raises(ValueError):
        fp8.convert_to_fp8(make_lm(), backend="bf16")


def test_native_backend_needs_no_autocast_context():
    report = fp8.convert_to_fp8(make_lm(), backend="native", emulate=True)
    with fp8.fp8_autocast_context(report):
        pass
    assert fp8.fp8_autocast_context(None) is not None


def test_convert_the_real_model_when_it_exists():
    model_mod = pytest.importorskip("model")
    model = model_mod.Xmodel(model_mod.model_config("tiny"))
    n_layer = len(model.blocks)
    report = fp8.convert_to_fp8(model, emulate=True)
    block_kept = [n for n, _ in report.kept if n.startswith("blocks.")]
    assert len(report.converted) + len(block_kept) == 4 * n_layer
    assert not any(n.startswith("embed") or "norm" in n for n in report.converted)
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss) and model.blocks[0].attn.qkv.fp8_amax_history[:, 0].gt(0).all()


# --------------------------------------------------------------------------- fp8=True on a machine without FP8


def test_fp8_on_cpu_stops_with_a_clear_error():
    with pytest.raises(fp8.FP8UnsupportedError, match=r"(?s)'cpu'.*fp8=False"):
        fp8.check_fp8_supported("cpu")
    fp8.check_fp8_supported("cpu", emulate=True)  # the test-only escape hatch
    m = fp8.Float8Linear.from_linear(nn.Linear(32, 48, bias=False))  # emulate=False
    with pytest.raises(fp8.FP8UnsupportedError, match="fp8=False"):
        m(torch.randn(16, 32))


# --------------------------------------------------------------------------- checkpoints


def trained_fp8_model(steps=2):
    model = make_lm()
    fp8.convert_to_fp8(model, emulate=True)
    for i in range(steps):
        model(torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(i))).sum().backward()
    return model


def test_bf16_checkpoint_loads_into_fp8_model_with_empty_histories():
    plain = make_lm(seed=1)
    model = trained_fp8_model()
    assert model.blocks[0].attn.qkv.history_started
    model.load_state_dict(plain.state_dict())  # strict: the load hook fills the histories
    assert torch.equal(model.blocks[0].attn.qkv.weight, plain.blocks[0].attn.qkv.weight)
    assert (model.blocks[0].attn.qkv.fp8_amax_history == 0).all()
    assert not model.blocks[0].attn.qkv.history_started  # next step scales just-in-time


def test_fp8_state_dict_loads_into_bf16_model_after_strip():
    model = trained_fp8_model()
    sd = model.state_dict()
    assert "blocks.0.attn.qkv.fp8_amax_history" in sd
    plain = make_lm(seed=1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        plain.load_state_dict(sd)
    plain.load_state_dict(fp8.strip_fp8_state(sd))
    assert set(plain.state_dict()) == set(fp8.strip_fp8_state(sd))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, sd[k])


def test_resumed_fp8_run_continues_exactly():
    model = trained_fp8_model(steps=3)
    weights, scaling = fp8.strip_fp8_state(model.state_dict()), fp8.fp8_state(model)
    assert all(k.endswith("fp8_amax_history") for k in scaling) and len(scaling) == 7
    resumed = make_lm(seed=5)
    fp8.convert_to_fp8(resumed, emulate=True)
    resumed.load_state_dict(weights)  # as model.pt
    assert not resumed.blocks[0].attn.qkv.history_started
    assert fp8.load_fp8_state(resumed, scaling) == []  # as train_state.pt
    assert resumed.blocks[0].attn.qkv.history_started
    model.zero_grad()
    idx = torch.randint(0, 64, (2, 8))
    a, b = model(idx), resumed(idx)
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(a, b)
    for (n, p), (_, q) in zip(model.named_parameters(), resumed.named_parameters()):
        if not n.startswith("probe"):  # unused in forward
            assert torch.equal(p.grad, q.grad), n
    assert all(torch.equal(model.state_dict()[k], resumed.state_dict()[k]) for k in scaling)


def test_missing_fp8_state_starts_empty_and_is_reported():
    model = trained_fp8_model()
    fresh = fp8.load_fp8_state(model, None)
    assert len(fresh) == 7 and (model.blocks[0].mlp.gate_up.fp8_amax_history == 0).all()


def test_history_of_another_length_is_resized_newest_first():
    a = fp8.Float8Linear(32, 48, amax_history_len=4, emulate=True)
    a.fp8_amax_history.copy_(torch.arange(12.0).view(3, 4))
    b = fp8.Float8Linear(32, 48, amax_history_len=2, emulate=True)
    b.load_state_dict(a.state_dict())
    assert b.fp8_amax_history.tolist() == [[0, 1], [4, 5], [8, 9]]
    c = fp8.Float8Linear(32, 48, amax_history_len=6, emulate=True)
    c.load_state_dict(a.state_dict())
    assert c.fp8_amax_history[:, 4:].eq(0).all() and c.fp8_amax_history[2, :4].tolist() == [8, 9, 10, 11]


def test_sync_amax_history_takes_the_max_over_ranks(tmp_path):
    import torch.distributed as dist
    model = trained_fp8_model()
    fp8.sync_amax_history(model)  # no process group: no-op
    before = fp8.fp8_state(model)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        fp8.sync_amax_history(model)
    finally:
        dist.destroy_process_group()
    after = fp8.fp8_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ddp_ranks_quantize_every_micro_batch_with_the_same_scales(tmp_path):
    # 2 gloo ranks x 2 micro-batches x 2 steps, native FP8 emulated. The amax histories are
    # all-reduced after every micro-batch (TE reduces at every FP8 autocast exit), so each
    # forward and backward on both ranks starts from the same scaling state; syncing once per
    # optimizer step left micro-batch 2's forward and backward on rank-local scales.
    import subprocess
    out = tmp_path / "fp8.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--standalone", os.path.join(ROOT, "tests", "step_harness.py"), str(out),
                        "2", "micro_batch", "fp8"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (loss0, _, hist0), (loss1, _, hist1) = (torch.load(f"{out}.rank{k}") for k in (0, 1))
    assert len(hist0) == len(hist1) == 2 * 2 * 2  # steps x micro-batches x (forward, backward)
    assert hist0[2].abs().sum() > 0  # the states compared are real, not empty histories
    for i, (a, b) in enumerate(zip(hist0, hist1)):
        assert torch.equal(a, b), f"rank-local scaling state at {['forward', 'backward'][i % 2]} {i // 2}"
    assert loss0 == loss1


# --------------------------------------------------------------------------- the output layer in FP8

def _loss_inputs(n=64, d=32, vocab=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = torch.randn(n, d, generator=g), torch.randn(vocab, d, generator=g) * 0.1
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[::7] = -1  # ignored rows: weight 0, as chunked_cross_entropy passes them
    valid = (targets >= 0).float()
    return h, w, targets.clamp(min=0), valid / valid.sum()


def fp8_chunks(*args, emulate):
    """model._ce_chunks with the FP8 products, as convert_to_fp8(output_layer=True) sets it up."""
    import functools
    import model
    return model._ce_chunks(*args, gemms=functools.partial(fp8.fp8_output_gemms, emulate=emulate))


@pytest.mark.parametrize("emulate", [True, False])
def test_fp8_output_layer_matches_the_chunked_loss_within_fp8_error(emulate):
    import model
    if not emulate and not cpu_scaled_mm_works():
        pytest.skip("this torch has no CPU torch._scaled_mm for float8")
    h, w, targets, weights = _loss_inputs()
    ref = model._ce_chunks(h, w, targets, weights, 0.5, 16, torch.float32, True)
    out = fp8_chunks(h, w, targets, weights, 0.5, 16, torch.float32, True, emulate=emulate)
    # the mean loss averages the rounding out; each gradient carries E4M3/E5M2's few percent
    assert rel_err(out[0], ref[0]) < 1e-3
    assert 1e-3 < rel_err(out[1], ref[1]) < 0.06 and 1e-3 < rel_err(out[2], ref[2]) < 0.06
    # one chunk or four: the same quantization of W, per-chunk scales for h
    whole = fp8_chunks(h, w, targets, weights, 0.5, 64, torch.float32, True, emulate=emulate)
    assert rel_err(whole[0], out[0]) < 1e-3 and rel_err(whole[2], out[2]) < 0.06
    # without gradients: the loss alone, the same value
    alone = fp8_chunks(h, w, targets, weights, 0.5, 16, torch.float32, False, emulate=emulate)
    assert alone[1] is None and torch.equal(alone[0], out[0])


def test_fp8_gradient_scale_is_the_exact_bound_so_nothing_saturates():
    # |softmax - onehot| <= 1: with row weights 1 and output_mult 2, |g| <= 2, and at the
    # targets (softmax ~1/128 here) g is ~ -2, at the bound: a tighter scale would clip them.
    h, w, targets, _ = _loss_inputs(n=16)
    weights = torch.ones(16)
    out = fp8_chunks(h, w, targets, weights, 2.0, 16, torch.float32, True, emulate=True)
    ref = __import__("model")._ce_chunks(h, w, targets, weights, 2.0, 16, torch.float32, True)
    assert rel_err(out[1], ref[1]) < 0.06 and rel_err(out[2], ref[2]) < 0.06
    g_scale = fp8.amax_to_scale(torch.tensor(2.0), E5M2)
    assert fp8.quantize(torch.tensor([-2.0, 2.0]), g_scale, E5M2).float().abs().max() / g_scale == 2.0


def test_convert_with_output_layer_trains_the_real_model_a_step(tmp_path):
    import model
    m = model.Xmodel(model.model_config("tiny"))
    report = fp8.convert_to_fp8(m, backend="native", emulate=True, output_layer=True)
    assert any("output layer" in c for c in report.converted) and m.ce_chunks is not model._ce_chunks
    x = torch.randint(0, m.config.vocab_size, (2, 16))
    loss = m(x, x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(m.output_weight.grad).all()
    plain = model.Xmodel(model.model_config("tiny"))
    plain.load_state_dict(fp8.strip_fp8_state(m.state_dict()))
    assert abs(plain(x, x).item() - loss.item()) < 0.05 * loss.item()  # same function, FP8 rounding
    assert "output layer" in dict(fp8.convert_to_fp8(plain, backend="native", emulate=True).kept)


def test_output_gemms_fit_scaled_mm_with_the_default_chunks():
    from model import default_chunk_rows
    rows, d, vocab = 12 * 2048, 1024, 129280  # the FP8 experiment's width-1024 micro-batch
    assert fp8.output_gemm_shapes_fit(rows, d, vocab, default_chunk_rows(vocab))
    assert not fp8.output_gemm_shapes_fit(rows, d, vocab, 4152)  # the old default: emulated
    assert not fp8.output_gemm_shapes_fit(rows - 8, d, vocab, 4144)


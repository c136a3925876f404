"""fused_loss.py's kernels under Triton's CPU interpreter: the same kernels, indexing, masks and
vocabulary split as on a GPU (only the interpreter's dot takes fp32 copies of bf16 operands).
Run by tests/test_fused_loss.py in a process of its own with TRITON_INTERPRET=1, which Triton
reads when it is imported: the rest of the suite keeps the variable unset."""
import pytest
import torch
import torch.nn.functional as F

from model import Xmodel, model_config


@pytest.fixture
def fused():
    import fused_loss
    assert fused_loss.INTERPRETED, "run with TRITON_INTERPRET=1 (tests/test_fused_loss.py does)"
    return fused_loss


def problem(dtype, n=100, vocab=300, d=48, seed=0):
    """Sizes that no tile divides; ~20% of rows ignored (weight 0); µP-like logit multiplier."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype)
    w = (0.3 * torch.randn(vocab, d, generator=g)).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=g)
    valid = torch.rand(n, generator=g) > 0.2
    return h, w, targets, valid.float() / valid.sum(), 0.5


def float64_reference(h, w, targets, weights, mult):
    h, w = h.double().requires_grad_(), w.double().requires_grad_()
    loss = (F.cross_entropy(mult * h @ w.t(), targets, reduction="none") * weights.double()).sum()
    loss.backward()
    return loss.detach(), h.grad, w.grad


def rel(x, ref):
    return ((x.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("split", [1, 3])
def test_kernels_compute_the_loss_and_both_gradients_of_cross_entropy(fused, dtype, bound, split):
    h, w, targets, weights, mult = problem(dtype)
    loss_ref, gh_ref, gw_ref = float64_reference(h, w, targets, weights, mult)
    logits, lse = fused.logits_and_lse(h, w, mult)
    assert logits.dtype == dtype  # the rounded logits both gradient kernels read
    assert rel(lse, torch.logsumexp(mult * h.double() @ w.double().t(), 1)) < bound / 10
    t32, row_scale = targets.int(), weights * mult
    assert rel(fused.grad_h(logits, lse, t32, row_scale, w, split=split), gh_ref) < bound
    assert rel(fused.grad_w(logits, lse, t32, row_scale, h), gw_ref) < bound
    loss, gh, gw = fused.loss_and_grads(h, w, targets, weights, mult)
    assert abs(loss.item() - loss_ref.item()) / loss_ref.item() < bound
    assert rel(gh, gh_ref) < bound and rel(gw, gw_ref) < bound
    ignored = weights == 0
    assert ignored.any() and (gh[ignored] == 0).all()  # an ignored row gets no gradient at all


def test_kernels_are_not_the_reference_when_the_targets_differ(fused):
    # The checks above can fail: a gradient of the wrong targets is far off.
    h, w, targets, weights, mult = problem(torch.float32)
    _, gh_ref, _ = float64_reference(h, w, targets, weights, mult)
    _, gh, _ = fused.loss_and_grads(h, w, (targets + 1) % w.shape[0], weights, mult)
    assert rel(gh, gh_ref) > 0.1


def test_triton_loss_in_the_model_equals_the_chunked_loss(fused):
    # Through Xmodel: masks, negative targets, the µP logit scale and several row chunks.
    torch.manual_seed(0)
    chunked = Xmodel(model_config("tiny"))
    triton_model = Xmodel(model_config("tiny"))
    triton_model.load_state_dict(chunked.state_dict())
    triton_model.loss_impl, triton_model.loss_chunk_rows = "triton", 13  # 32 rows: 3 chunks
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 512, (2, 16), generator=g), torch.randint(0, 512, (2, 16), generator=g)
    y[0, 2:4], y[1, 9] = -1, -100
    mask = torch.ones(2, 16, dtype=torch.uint8)
    mask[1, :5] = 0
    losses = [m(x, y, loss_mask=mask) for m in (chunked, triton_model)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-6)
    for name in ("embed.weight", "norm.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.down.weight"):
        torch.testing.assert_close(triton_model.get_parameter(name).grad, chunked.get_parameter(name).grad,
                                   atol=1e-6, rtol=1e-4)

"""muon.py: orthogonalization quality, the 0.2 RMS rule, routing, state, and distributed
runs (DDP-style and FSDP2, 2 processes on gloo) equal to one process."""
import copy
import math
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import muon  # noqa: E402
from muon import Muon, add_fused_row_splits, newton_schulz, split_groups_for_muon  # noqa: E402
from gpu_tests.muon_bench import newton_schulz_textbook  # noqa: E402  (the form before, and torch.optim.Muon's)


def well_conditioned(m, n, cond, seed):
    """G = U diag(s) V^T with singular values log-spaced in [1/cond, 1]; returns (G, U V^T)."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -math.log10(cond), k, dtype=torch.float64)
    return U @ torch.diag(s) @ V.T, U @ V.T


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (128, 128)])
def test_newton_schulz_is_close_to_the_polar_factor(shape):
    G, polar = well_conditioned(*shape, cond=100, seed=0)
    O = newton_schulz(G).double()  # bf16, as in training
    sv = torch.linalg.svdvals(O)
    rel_err = ((O - polar).norm() / polar.norm()).item()
    cos = ((O * polar).sum() / (O.norm() * polar.norm())).item()
    print(f"{shape}: singular values [{sv.min():.3f}, {sv.max():.3f}], "
          f"relative error vs U V^T {rel_err:.3f}, cosine {cos:.4f}")
    # The 5-step quintic does not converge to 1; it lands in ~[0.68, 1.20] (measured), a
    # Frobenius error of ~0.19 against the exact polar factor, with the direction kept.
    assert 0.66 < sv.min() and sv.max() < 1.22
    assert rel_err < 0.21 and cos > 0.98
    # bf16 costs little next to that: the same iteration in float64 (measured 0.02-0.04).
    O64 = newton_schulz(G, dtype=torch.float64)
    bf16_err = ((O - O64).norm() / O64.norm()).item()
    print(f"{shape}: bf16 vs float64 NS relative difference {bf16_err:.3f}")
    assert bf16_err < 0.05


def test_newton_schulz_works_on_the_short_side_for_tall_matrices():
    # A tall matrix is multiplied from the right (A = X^T X, 32 x 32): the same math as the
    # wide one transposed, up to bf16 rounding, and returned contiguous (nothing transposed)
    G, _ = well_conditioned(96, 32, cond=10, seed=1)
    O, O_wide = newton_schulz(G), newton_schulz(G.T)
    assert O.shape == (96, 32) and O.is_contiguous()
    assert ((O.double() - O_wide.T.double()).norm() / O.double().norm()).item() < 0.01


def _gradient_like(shape, seed):
    """Gaussian noise plus a rank-8 part, a stack of 1."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = shape
    return (torch.randn(1, rows, cols, generator=g)
            + torch.randn(1, rows, 8, generator=g) @ torch.randn(1, 8, cols, generator=g) * 2 / 3)


@pytest.mark.parametrize("coefficients", [muon.NS_COEFFICIENTS, (2.0, -1.5, 0.5)])
def test_newton_schulz_is_the_quintic_in_float64(coefficients):
    # the completed square c*(A + h*I)^2 + k*I, scaled through the GEMMs' alpha, is
    # a*I + b*A + c*A^2 exactly: in float64 it equals the textbook form to rounding
    for shape in [(48, 16), (16, 40), (24, 24)]:
        G = _gradient_like(shape, seed=3).double()
        ours = newton_schulz(G, coefficients=coefficients, dtype=torch.float64)
        ref = newton_schulz_textbook(G, coefficients=coefficients, dtype=torch.float64)
        assert torch.allclose(ours, ref, rtol=0, atol=1e-12), (shape, (ours - ref).abs().max())


@pytest.mark.parametrize("shape", [(256, 512), (512, 256)])
def test_newton_schulz_in_bf16_is_as_accurate_as_the_textbook_form(shape):
    # bf16 against float64 of the same quintic: the error of the textbook form (baddbmm with
    # beta, one rounding per GEMM) and no drift of the output's scale. Adding h, k or a to a
    # bf16 diagonal (instead of 1 and alphas) rounds every diagonal element the same way:
    # measured here 1.8-1.95x the textbook error and an RMS drift of -0.3% (-0.9% at 384 x 768).
    G = _gradient_like(shape, seed=0)
    ref = newton_schulz_textbook(G.double(), dtype=torch.float64).double()
    ours, before = newton_schulz(G).double(), newton_schulz_textbook(G).double()
    err, err_before = ((ours - ref).norm() / ref.norm()).item(), ((before - ref).norm() / ref.norm()).item()
    drift = (ours.square().mean().sqrt() / ref.square().mean().sqrt()).item() - 1
    to_before = ((ours - before).norm() / before.norm()).item()
    print(f"{shape}: vs float64 {err:.4f} (textbook form {err_before:.4f}), RMS drift {drift:+.4f}, "
          f"vs the textbook form in bf16 {to_before:.4f}")
    assert err < 1.25 * err_before  # measured 0.0128 vs 0.0114, 0.0130 vs 0.0116
    assert abs(drift) < 0.002       # measured -0.0003, +0.0001
    assert to_before < 0.02         # measured 0.015


class _OpLog(TorchDispatchMode):
    """Every ATen op run inside it: (name, args, kwargs)."""
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func._schema.name.split("::")[1], args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def test_newton_schulz_copies_nothing():
    # baddbmm(X, B, X, beta=a) copies its input X into the result before the product, and
    # X.mT of a tall matrix is copied transposed: 29 + 3 GB a step at full size. Here: every
    # GEMM has beta=0 (its input is neither read nor copied), nothing is copied, and the only
    # long-side element-wise op is the normalisation.
    for shape in [(3, 96, 32), (3, 32, 80), (96, 32)]:
        G = torch.randn(*shape).bfloat16()
        with _OpLog() as log:
            newton_schulz(G, steps=2)
        names = [n for n, _, _ in log.ops]
        assert not {"copy_", "clone", "_to_copy", "contiguous"} & set(names), names
        gemms = [(n, kw) for n, _, kw in log.ops if n in ("mm", "bmm", "addmm", "baddbmm")]
        assert len(gemms) == 2 * 3 and all(n in ("addmm", "baddbmm") and kw["beta"] == 0 for n, kw in gemms)
        assert names.count("div") == 1


def test_rejects_coefficients_whose_square_cannot_be_completed():
    for bad in [(1.5, -0.5, 0.0), (3.0, 0.0, 1.0), (1.0, -2.0, 1.0)]:  # c = 0, b = 0, k = 0
        with pytest.raises(ValueError, match="ns_coefficients"):
            Muon(_params([(8, 4)]), ns_coefficients=bad)
        with pytest.raises(ValueError, match="ns_coefficients"):
            newton_schulz(torch.randn(8, 4), coefficients=bad)


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]


def _grads(params, step, seed=100):
    g = torch.Generator().manual_seed(seed + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def test_step_orthogonalizes_matrices_of_one_shape_as_one_stack(monkeypatch):
    # 3 + 2 matrices of two shapes: two newton_schulz calls, and the same bits as one call per
    # matrix (on a CPU; muon_bench.py measured the same on an H100)
    shapes = [(32, 16)] * 3 + [(16, 48)] * 2
    calls, ns = [], muon.newton_schulz
    monkeypatch.setattr(muon, "newton_schulz", lambda G, *a, **k: (calls.append(tuple(G.shape)), ns(G, *a, **k))[1])
    params = _params(shapes)
    for p, g in zip(params, _grads(params, 0)):
        p.grad = g
    expected = [p.detach() * (1 - 0.02 * 0.1) - 0.02 * muon.update_scale(*p.shape) * ns(
        p.grad + 0.95 * p.grad).float() for p in params]  # first step: momentum buffer = grad
    Muon(params, lr=0.02).step()
    assert sorted(calls) == [(2, 16, 48), (3, 32, 16)]
    assert all(torch.allclose(p.detach(), e, rtol=0, atol=1e-7) for p, e in zip(params, expected))


def test_step_writes_the_ns_input_into_the_stacks_and_updates_from_contiguous_o():
    # one pass per matrix writes g + mu*buf in bf16 into its stack slot (no bf16 tensor copied
    # in afterwards), and the update adds a contiguous O (a transposed one is read strided)
    params = _params([(32, 16), (32, 16), (16, 48)])
    opt = Muon(params, lr=0.02)
    for step in range(2):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        with _OpLog() as log:
            opt.step()
    names = [n for n, _, _ in log.ops]
    assert "copy_" not in names and "_to_copy" not in names, names
    writes = [kw["out"] for n, _, kw in log.ops if n == "add" and "out" in kw]
    assert [w.dtype for w in writes].count(torch.bfloat16) == len(params)  # Nesterov, into slots
    assert all(w._base is not None for w in writes if w.dtype == torch.bfloat16)  # views of a stack
    updates = [a[1] for n, a, _ in log.ops if n == "add_" and a[0].dtype == torch.float32
               and isinstance(a[1], torch.Tensor) and a[1].dtype == torch.bfloat16]
    assert len(updates) == len(params) and all(o.is_contiguous() for o in updates)


def test_newton_schulz_on_a_stack_equals_each_matrix_alone():
    for shape in [(3, 48, 16), (3, 16, 40)]:
        G = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        stacked = newton_schulz(G)
        # equal on CPU; a GPU may pick other kernels for the batched product (bf16 rounding)
        assert torch.allclose(stacked.float(), torch.stack([newton_schulz(g) for g in G]).float(),
                              rtol=0, atol=1e-2)
    with pytest.raises(ValueError, match="2-D matrix or a 3-D stack"):
        newton_schulz(torch.zeros(2, 2, 4, 4))


def test_update_rms_is_about_0_2():
    shapes = [(96, 32), (32, 96), (64, 64)]
    params = _params(shapes)
    before = [p.detach().clone() for p in params]
    opt = Muon(params, lr=1.0, weight_decay=0.0)
    for i, p in enumerate(params):
        p.grad = well_conditioned(*p.shape, cond=100, seed=i)[0].float()
    opt.step()
    deltas = [p.detach() - b for p, b in zip(params, before)]
    for d in deltas:
        # An orthogonal m x n matrix has RMS 1/sqrt(max(m, n)), so 0.2*sqrt(max) * O has
        # RMS 0.2 * RMS(singular values of O) ~ 0.2, AdamW's typical update RMS (RECIPE §2).
        # (A raw Gaussian square gradient has many tiny singular values that 5 NS steps do not
        # lift all the way: ~0.16 there.)
        rms = d.square().mean().sqrt().item()
        print(f"{tuple(d.shape)}: update RMS {rms:.4f}")
        assert 0.18 < rms < 0.23


def _step_both(a, ours, b, ref, steps):
    """Step optimizer a (on ours) and b (on ref) with the same gradients, `steps` times."""
    for step in range(steps):
        for p, q, g in zip(ours, ref, _grads(ours, step)):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()


def _against_torch_muon(steps, ours_kw, torch_kw):
    """Muon(**ours_kw) and torch.optim.Muon(**torch_kw), both lr 0.02 and weight decay 0.1 on
    the same two matrices and gradients for `steps` steps -> (ours, torch's optimizer, its
    parameters, per matrix: distance to torch.optim.Muon / distance moved)."""
    ours, ref = _params([(48, 16), (16, 40)]), _params([(48, 16), (16, 40)])
    start = [p.detach().clone() for p in ours]
    a = Muon(ours, lr=0.02, weight_decay=0.1, **ours_kw)
    b = torch.optim.Muon(ref, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", **torch_kw)
    _step_both(a, ours, b, ref, steps=steps)
    rels = []
    for p, q, s in zip(ours, ref, start):
        rels.append(((p - q).norm() / (q - s).norm()).item())
        print(f"{tuple(p.shape)}: distance to torch.optim.Muon / distance moved = {rels[-1]:.4f}")
    return (a, ours), (b, ref), rels


def test_matches_torch_optim_muon_without_momentum_up_to_bf16_rounding():
    # momentum 0 removes the EMA vs summed-momentum difference; what is left is bf16 rounding:
    # torch.optim.Muon rounds a*X + B@X through baddbmm's beta, newton_schulz p(A) X.
    _, _, rels = _against_torch_muon(3, dict(momentum=0.0), dict(momentum=0.0, nesterov=True))
    for rel in rels:
        assert rel < 0.03  # measured 0.020 and 0.017


def test_matches_torch_optim_muon_with_momentum_up_to_bf16_rounding():
    # torch keeps B' = (1-mu) B, so its Nesterov input is (1-mu) times ours at every step;
    # NS normalizes by the Frobenius norm, so only bf16 rounding of the scaled input differs.
    (a, ours), (b, ref), rels = _against_torch_muon(5, {}, dict(momentum=0.95, nesterov=True))
    for p, q, rel in zip(ours, ref, rels):
        assert (a.state[p]["momentum_buffer"] * 0.05).allclose(b.state[q]["momentum_buffer"], rtol=1e-5, atol=1e-6)
        assert rel < 0.03  # measured 0.013; bf16 NS itself differs from float64 by 0.02-0.04


def test_without_nesterov_matches_torch_optim_muon_up_to_bf16_rounding():
    # nesterov=False: the stacks get the momentum buffer itself (cast to bf16 into its slot)
    _, _, rels = _against_torch_muon(4, dict(nesterov=False), dict(momentum=0.95, nesterov=False))
    for rel in rels:
        assert rel < 0.03  # measured 0.015 and 0.011; the gradient instead of the buffer: 0.59


def test_leaves_grad_untouched():
    params = _params([(32, 16)])
    params[0].grad = _grads(params, 0)[0]
    g = params[0].grad.clone()
    opt = Muon(params, lr=0.1)
    opt.step()
    opt.step()
    assert torch.equal(params[0].grad, g)


def test_rejects_non_matrices_and_bad_row_splits():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(8))])
    with pytest.raises(ValueError, match="do not sum"):
        Muon([{"params": _params([(12, 4)]), "row_splits": [(5, 5)]}])


def test_routing_keeps_embedding_and_norms_on_adamw():
    emb, qkv, norm = torch.zeros(100, 16), torch.zeros(48, 16), torch.zeros(16)
    groups = [
        {"params": [emb], "names": ["embed.weight"], "role": "embedding", "lr_mult": 1.0, "weight_decay": 0.1},
        {"params": [qkv], "names": ["blocks.0.attn.qkv.weight"], "role": "matrix", "lr_mult": 1 / 6, "weight_decay": 0.1},
        {"params": [norm], "names": ["blocks.0.attn_norm.weight"], "role": "norm", "lr_mult": 1 / 6, "weight_decay": 0.0},
    ]
    adamw, muon_groups = split_groups_for_muon(groups)
    assert [g["role"] for g in adamw] == ["embedding", "norm"]
    assert [g["role"] for g in muon_groups] == ["matrix"] and muon_groups[0]["params"][0] is qkv
    assert muon_groups[0]["lr_mult"] == 1 / 6  # group options travel with the group
    assert not muon.is_muon_param("embed.weight", emb)  # 2-D, yet never Muon (RECIPE §2)
    assert muon.is_muon_param("blocks.3.mlp.down.weight", qkv)
    assert not muon.is_muon_param("norm.weight", norm)
    bad = [{"params": [emb], "names": ["embed.weight"], "role": "matrix", "weight_decay": 0.1}]
    with pytest.raises(ValueError, match="must not go to Muon"):
        split_groups_for_muon(bad)
    with pytest.raises(ValueError, match="unknown param group role"):
        split_groups_for_muon([{"params": [qkv], "role": "other"}])


def test_routing_keeps_an_untied_lm_head_on_adamw():
    import mup
    from model import Xmodel, model_config
    model = Xmodel(model_config("tiny", tie_embeddings=False))
    adamw, muon_groups = split_groups_for_muon(mup.param_groups(model, weight_decay=0.1))
    on_adamw = [n for g in adamw for n in g["names"]]
    assert "lm_head.weight" in on_adamw and "embed.weight" in on_adamw
    assert not any("lm_head" in n or "embed" in n for g in muon_groups for n in g["names"])
    assert not muon.is_muon_param("lm_head.weight", model.lm_head.weight)


def test_split_fused_ablation_equals_separate_matrices():
    cfg = SimpleNamespace(n_head=4, n_kv_head=2, d_model=32, head_dim=8, d_ffn=40)
    fused = _params([(64, 32), (80, 32)])  # qkv: 32+16+16 rows; gate_up: 40+40 rows
    groups = add_fused_row_splits([{"params": fused, "names": ["blocks.0.attn.qkv.weight",
                                                               "blocks.0.mlp.gate_up.weight"]}], cfg)
    assert groups[0]["row_splits"] == [(32, 16, 16), (40, 40)]
    parts = [torch.nn.Parameter(t.detach().clone()) for p, s in zip(fused, [(32, 16, 16), (40, 40)])
             for t in p.split(s)]
    whole = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    opts = [Muon(groups, lr=0.02), Muon(parts, lr=0.02), Muon(whole, lr=0.02)]
    for step in range(3):
        grads = _grads(fused, step)
        for p, g in zip(fused, grads):
            p.grad = g.clone()
        for p, g in zip(parts, [t for g, s in zip(grads, [(32, 16, 16), (40, 40)]) for t in g.split(s)]):
            p.grad = g.clone()
        for p, g in zip(whole, grads):
            p.grad = g.clone()
        for o in opts:
            o.step()
    torch.testing.assert_close(torch.cat([p.detach() for p in fused]),
                               torch.cat([p.detach() for p in parts]), rtol=0, atol=1e-7)
    assert (fused[0] - whole[0]).abs().max() > 1e-4  # the default (whole) really differs


def test_state_dict_round_trip_resumes_identically():
    shapes = [(48, 16), (16, 40)]
    params = _params(shapes)
    opt = Muon([{"params": params[:1], "lr": 0.02}, {"params": params[1:], "lr": 0.01, "lr_mult": 0.5}])
    for step in range(3):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    saved = copy.deepcopy((opt.state_dict(), [p.detach().clone() for p in params]))
    for step in range(3, 6):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    resumed = [torch.nn.Parameter(t.clone()) for t in saved[1]]
    opt2 = Muon([{"params": resumed[:1], "lr": 1.0}, {"params": resumed[1:], "lr": 1.0}])
    opt2.load_state_dict(saved[0])  # restores lr, lr_mult and the momentum buffers
    assert opt2.param_groups[1]["lr_mult"] == 0.5
    for step in range(3, 6):
        for p, g in zip(resumed, _grads(resumed, step)):
            p.grad = g
        opt2.step()
    for p, q in zip(params, resumed):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------
# Two processes on gloo.

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ns_work_is_split_evenly_by_flops():
    # The full model's 48 x 4 hidden matrices (RECIPE §1): qkv, out, gate_up, down.
    shapes = [(2560, 1536), (1536, 1536), (7680, 1536), (1536, 3840)] * 48
    assert muon.ns_flops(1536, 7680) == muon.ns_flops(7680, 1536) == 5 * (4 * 1536**2 * 7680 + 2 * 1536**3)
    costs = [muon.ns_flops(r, c) for r, c in shapes]
    for world in (1, 2, 4, 8):
        owner, load = muon.assign_blocks(costs, world)
        assert sorted(set(owner)) == list(range(world))
        assert [sum(c for c, o in zip(costs, owner) if o == r) for r in range(world)] == load
        # the busiest rank does at most 3% more than an even share
        assert max(load) <= 1.03 * sum(costs) / world, (world, max(load) * world / sum(costs))
    assert muon.assign_blocks(costs, 4) == muon.assign_blocks(list(costs), 4)  # deterministic


def _init(rank, world, port):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


DDP_SHAPES = [(64, 32), (32, 80), (48, 48), (24, 16), (40, 40)]
DDP_SPLITS = [(32, 16, 16), None, None, None, (20, 20)]


def _ddp_worker(rank, world, port):
    _init(rank, world, port)
    calls = []
    ns = muon.newton_schulz
    # matrices orthogonalized (a stack of one shape counts each of its matrices)
    muon.newton_schulz = lambda G, *a, **k: (calls.append(G.shape[0] if G.ndim == 3 else 1), ns(G, *a, **k))[1]
    writes, write = [], Muon._write_ns_input  # Nesterov inputs written (a spawned process: patch freely)
    Muon._write_ns_input = lambda self, *a: (writes.append(1), write(self, *a))[1]

    def groups(ps):
        return [{"params": ps[:3], "lr": 0.02, "row_splits": DDP_SPLITS[:3]},
                {"params": ps[3:], "lr": 0.005, "weight_decay": 0.0, "row_splits": DDP_SPLITS[3:]}]
    shared, local = _params(DDP_SHAPES), _params(DDP_SHAPES)
    opt_d, opt_l = Muon(groups(shared)), Muon(groups(local), distributed=False)
    for step in range(4):
        # DDP leaves the same all-reduced gradient on every rank: same seed on both ranks.
        for p, q, g in zip(shared, local, _grads(shared, step)):
            p.grad, q.grad = g.clone(), g.clone()
        calls.clear()
        writes.clear()
        opt_d.step()
        mine = sum(calls)
        assert len(writes) == mine  # only the blocks this rank orthogonalizes get an NS input
        opt_l.step()
    for p, q in zip(shared, local):
        assert torch.equal(p, q), "DDP Muon differs from the single-process run"
        assert torch.equal(opt_d.state[p]["momentum_buffer"], opt_l.state[q]["momentum_buffer"])
    n_blocks = sum(len(s) if s else 1 for s in DDP_SPLITS)
    counts = [torch.tensor([mine]) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([mine]))
    assert sum(c.item() for c in counts) == n_blocks and 0 < mine < n_blocks  # NS split, none repeated
    # every rank holds the full, identical state: any rank's state_dict is the checkpoint
    ref = [opt_d.state[p]["momentum_buffer"].clone() for p in shared]
    for t in ref:
        dist.broadcast(t, src=0)
    assert all(torch.equal(t, opt_d.state[p]["momentum_buffer"]) for t, p in zip(ref, shared))
    dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process():
    mp.spawn(_ddp_worker, args=(2, _free_port()), nprocs=2, join=True)


def _fsdp_worker(rank, world, port):
    _init(rank, world, port)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    torch.manual_seed(0)
    # 13 and 25 rows: uneven shards (7/6, 13/12) exercise FSDP2's padding.
    model = torch.nn.Sequential(torch.nn.Linear(16, 25, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(25, 13, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(13, 16, bias=False))
    ref = copy.deepcopy(model)
    mesh = init_device_mesh("cpu", (world,))
    for layer in model[::2]:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    splits = [(10, 15), None, None]

    def make(m, **kw):
        ps = [m[i].weight for i in (0, 2, 4)]
        return Muon([{"params": ps, "lr": 0.05, "row_splits": splits}], **kw), ps
    opt_s, sharded = make(model)
    opt_r, plain = make(ref, distributed=False)
    assert all(isinstance(p, DTensor) for p in sharded)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    for step in range(3):
        # every rank uses the same batch, so the averaged gradient equals one process's
        for m, o in ((model, opt_s), (ref, opt_r)):
            o.zero_grad()
            (m(x) * (step + 1)).square().mean().backward()
            o.step()
    for p, q in zip(sharded, plain):
        full = p.full_tensor()
        assert torch.equal(full, q.detach()), f"max diff {(full - q).abs().max()}"
        assert torch.equal(opt_s.state[p]["momentum_buffer"].full_tensor(), opt_r.state[q]["momentum_buffer"])
    dist.destroy_process_group()


def _fsdp2_cpu_skip_reason():
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
        from torch.distributed.tensor import distribute_tensor  # noqa: F401
    except ImportError as e:
        return f"FSDP2 unavailable in torch {torch.__version__}: {e}"
    if not dist.is_gloo_available():
        return "gloo backend unavailable"
    return None


@pytest.mark.skipif(_fsdp2_cpu_skip_reason() is not None, reason=str(_fsdp2_cpu_skip_reason()))
def test_fsdp2_two_processes_equal_one_process():
    # FSDP2 (fully_shard) runs on CPU with gloo in torch 2.13: checked here directly.
    mp.spawn(_fsdp_worker, args=(2, _free_port()), nprocs=2, join=True)

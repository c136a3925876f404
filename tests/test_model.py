"""model.py: the Xmodel-2.5 network — shapes and counts of RECIPE §1, causality, KV-cache
decoding, the chunked loss (values, gradients, mask, memory), compile."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, Xmodel, model_config

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides):
    torch.manual_seed(0)
    return Xmodel(model_config("tiny", **overrides))


def tokens(batch, length, vocab=512, seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_full_preset_has_exactly_the_recipe_parameter_count_and_names():
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5"))
    assert model.num_params() == 1_350_059_520  # RECIPE §1, tied embedding counted once
    assert model.num_params(exclude_embeddings=True) == 1_350_059_520 - 129_280 * 1536
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["embed.weight"] == (129_280, 1536)
    assert shapes["blocks.0.attn.qkv.weight"] == (2560, 1536)  # fused q|k|v, RECIPE §2
    assert shapes["blocks.0.attn.out.weight"] == (1536, 1536)
    assert shapes["blocks.47.mlp.gate_up.weight"] == (7680, 1536)  # fused gate|up
    assert shapes["blocks.47.mlp.down.weight"] == (1536, 3840)
    assert shapes["norm.weight"] == (1536,)
    assert len(shapes) == 1 + 48 * 6 + 1
    assert not any(n.endswith("bias") for n in shapes)
    assert "rope_cos" not in model.state_dict()  # derived, never checkpointed


def test_untied_full_preset_adds_one_output_layer_and_counts_it_as_compute():
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5", tie_embeddings=False))
    head = 129_280 * 1536
    assert model.lm_head.weight.shape == (129_280, 1536)
    assert model.num_params() == 1_350_059_520 + head
    assert model.num_params(exclude_embeddings=True) == 1_350_059_520  # lm_head stays in
    # N counts the output matmul once, tied or not; the input lookup never
    assert model.flops_per_token(3712) == 6 * 1_350_059_520 + 12 * 48 * 1536 * 3712


def test_proxy_preset_is_the_hpo_proxy_at_base_width():
    cfg = model_config("proxy")
    assert (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.d_ffn) == (256, 4, 4, 1, 640)
    assert cfg.width_mult == 1.0 and cfg.vocab_size == 129_280
    with torch.device("meta"):
        assert Xmodel(cfg).num_params(exclude_embeddings=True) == 2_623_744


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValueError):
        model_config("tiny", n_layers=3)


def test_changing_a_future_token_never_changes_an_earlier_logit():
    model = tiny()
    x = tokens(2, 24)
    y = x.clone()
    y[:, 15] = (y[:, 15] + 1) % 512
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_kv_cache_decoding_equals_the_full_forward():
    model = tiny().eval()
    x = tokens(2, 30)
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(2, 30)
        parts = [model(x[:, :9], kv_cache=cache)]          # prefill
        parts.append(model(x[:, 9:14], kv_cache=cache))    # a multi-token step at offset 9
        for t in range(14, 30):                            # then token by token
            parts.append(model(x[:, t:t + 1], kv_cache=cache))
    assert cache.pos == 30
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_untied_kv_cache_and_last_only_equal_the_full_forward():
    model = tiny(tie_embeddings=False).eval()
    assert "lm_head.weight" in model.state_dict()
    x = tokens(2, 20)
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(2, 20)
        parts = [model(x[:, :7], kv_cache=cache)] + [model(x[:, t:t + 1], kv_cache=cache)
                                                     for t in range(7, 20)]
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, last_only=True), full[:, -1:], atol=1e-5, rtol=1e-5)
        # the logits come from lm_head, not the embedding
        model.embed.weight.copy_(torch.randn_like(model.embed.weight) * 0.1)
        model.lm_head.weight.zero_()
        assert torch.count_nonzero(model(x)) == 0


def test_untied_model_trains_lm_head_and_embedding_separately():
    model = tiny(tie_embeddings=False)
    assert model.lm_head.weight is not model.embed.weight
    assert abs(model.lm_head.weight.std().item() / 0.1 - 1) < 0.05  # the embedding's std
    x, y = tokens(4, 16), tokens(4, 16, seed=2)
    model.loss_chunk_rows = 7
    loss = model(x, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    head, emb = grads["lm_head.weight"], grads["embed.weight"]
    assert torch.count_nonzero(head) > 0 and torch.count_nonzero(emb) > 0
    # the embedding's gradient only reaches the rows of tokens in x; lm_head's reaches all
    unseen = torch.ones(512, dtype=torch.bool)
    unseen[x.unique()] = False
    assert torch.count_nonzero(emb[unseen]) == 0 and torch.count_nonzero(head[unseen]) > 0
    model.zero_grad()
    plain_loss(model, x, y).backward()  # the chunked path equals plain cross-entropy here too
    torch.testing.assert_close(model.lm_head.weight.grad, head, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.embed.weight.grad, emb, atol=1e-6, rtol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_last_only_logits_equal_the_last_row_of_the_full_logits():
    model, idx = tiny().eval(), tokens(2, 12)
    with torch.no_grad():
        full, last = model(idx), model(idx, last_only=True)
    assert last.shape == (2, 1, 512)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)  # other GEMM shape: rounding


def test_rope_cache_grows_for_sequences_longer_than_max_seq_len():
    short, long_ = tiny(max_seq_len=8), tiny(max_seq_len=64)
    long_.load_state_dict(short.state_dict())
    x = tokens(1, 40)
    with torch.no_grad():
        torch.testing.assert_close(short(x), long_(x))
    assert short.rope_cos.shape[0] >= 40


def test_model_built_on_meta_is_complete_after_to_empty_and_reset_parameters():
    with torch.device("meta"):
        meta = Xmodel(model_config("tiny"))
    meta.to_empty(device="cpu")  # parameters and RoPE tables are now uninitialised memory
    meta.reset_parameters()
    assert torch.equal(meta.norm.weight, torch.ones(64))
    assert abs(meta.embed.weight.std().item() / 0.1 - 1) < 0.05
    ref = tiny()
    meta.load_state_dict(ref.state_dict())  # same weights: equal outputs iff RoPE was rebuilt
    x = tokens(1, 12)
    with torch.no_grad():
        torch.testing.assert_close(meta(x), ref(x))


def test_rope_tables_stay_fp32_in_a_bf16_model():
    model = tiny().to(torch.bfloat16)
    with torch.no_grad():
        logits = model(tokens(1, 12))
    assert model.rope_cos.dtype == torch.float32 and torch.isfinite(logits).all()


def test_init_follows_recipe_stds():
    # Width 512, 8 layers, base width 128 -> width_mult 4: embedding 0.1, qkv and gate_up
    # 0.1/sqrt(4) = 0.05, out and down 0.1/sqrt(16) = 0.025, norms 1 (RECIPE §1).
    torch.manual_seed(0)
    model = Xmodel(ModelConfig(vocab_size=1000, n_layer=8, d_model=512, n_head=8, n_kv_head=2,
                               d_ffn=1024, mup_base_width=128))
    b = model.blocks[3]
    for w, std in ((model.embed.weight, 0.1), (b.attn.qkv.weight, 0.05), (b.mlp.gate_up.weight, 0.05),
                   (b.attn.out.weight, 0.025), (b.mlp.down.weight, 0.025)):
        assert abs(w.std().item() / std - 1) < 0.02
    assert torch.equal(b.attn_norm.weight, torch.ones(512))


def plain_loss(model, x, y, mask=None):
    logits = model(x)  # fp32 logits with the µP output multiplier applied
    target = y.masked_fill(y < 0, -1)  # F.cross_entropy ignores one index; the model every negative
    target = target.masked_fill(mask == 0, -1) if mask is not None else target
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])  # uneven, even, a single chunk
def test_chunked_loss_equals_plain_cross_entropy_with_gradients(chunk_rows):
    model = tiny()
    model.loss_chunk_rows = chunk_rows
    x, y = tokens(4, 16), tokens(4, 16, seed=2)
    y[1, 3:6] = -1  # ignored targets: this trainer's marker ...
    y[2, 0:4] = -100  # ... and F.cross_entropy's default ignore_index (not clamped to class 0)
    grads = []
    losses = []
    for fn in (lambda: model(x, y), lambda: plain_loss(model, x, y)):
        model.zero_grad()
        loss = fn()
        loss.backward()
        losses.append(loss)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the eval path (no gradients computed) gives the same value
        torch.testing.assert_close(model(x, y), losses[1], atol=1e-6, rtol=1e-6)


def test_chunked_loss_under_bf16_autocast_matches_plain_within_bf16_error():
    model = tiny()
    model.loss_chunk_rows = 10
    x, y = tokens(2, 32), tokens(2, 32, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, y)
        ref = plain_loss(model, x, y)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-2
    loss.backward()
    assert model.embed.weight.grad.dtype == torch.float32


def test_the_residual_stream_is_bf16_under_autocast_by_default_and_fp32_on_request():
    # the default keeps the stream in the compute dtype, as the launch code (RECIPE §1);
    # residual_in_compute_dtype=False keeps it fp32, as the fp32 embedding gives it
    x, y = tokens(2, 32), tokens(2, 32, seed=2)
    results = {}
    for flag in (True, False):
        torch.manual_seed(0)
        model = tiny() if flag else tiny(residual_in_compute_dtype=False)
        seen = []
        for block in model.blocks:
            block.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x, y)
        loss.backward()
        results[flag] = (loss.item(), model.embed.weight.grad.clone())
        assert seen == [torch.bfloat16 if flag else torch.float32] * len(model.blocks)
        assert model.embed.weight.grad.dtype == torch.float32  # the master weights stay fp32
    (a, ga), (b, gb) = results[False], results[True]
    assert abs(a - b) < 2e-2 and a != b  # the same model, bf16 rounding between the blocks
    assert (ga - gb).norm() / ga.norm() < 0.05
    with torch.no_grad():  # without autocast the compute dtype is fp32: the flag changes nothing
        assert torch.equal(tiny()(x, y), tiny(residual_in_compute_dtype=False)(x, y))


def test_loss_mask_trains_only_on_masked_in_positions():
    model = tiny()
    x, y = tokens(2, 16), tokens(2, 16, seed=2)
    mask = torch.zeros(2, 16, dtype=torch.uint8)
    mask[0, 5:] = 1
    mask[1, 10:14] = 1
    loss = model(x, y, loss_mask=mask)
    torch.testing.assert_close(loss, plain_loss(model, x, y, mask), atol=1e-6, rtol=1e-6)
    y2 = y.clone()
    y2[mask == 0] = 0  # targets outside the mask are irrelevant
    torch.testing.assert_close(model(x, y2, loss_mask=mask), loss)
    model.zero_grad()
    model(x, y, loss_mask=torch.zeros_like(mask)).backward()  # nothing to train on: zero, no NaN
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


MEMORY_PROBE = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    sys.path.insert(0, {root!r})
    from model import chunked_cross_entropy
    torch.set_num_threads(1)
    N, V, D = 2048, 16384, 64   # one fp32 [N, V] logits tensor = 128 MiB
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g, requires_grad=True)
    w = (0.1 * torch.randn(V, D, generator=g)).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    def run(mode, h, w, t):
        if mode == "plain":
            F.cross_entropy((h @ w.t()).float(), t).backward()
        else:
            chunked_cross_entropy(h, w, t, chunk_rows=128).backward()
    # warm-up on small shapes first: the first backward pages in library code (tens of MiB)
    for mode in ("plain", "chunked"):
        run(mode, h[:8].detach().requires_grad_(), w[:64].detach().requires_grad_(), t[:8] % 64)
    def high_water_mib():  # VmHWM: this address space's peak RSS. (ru_maxrss would not do:
        # Linux carries it across exec, so a child of a big pytest process starts at its peak.)
        line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    before = high_water_mib()
    run(sys.argv[1], h, w, t)
    print(high_water_mib() - before)
""")


def test_chunked_loss_peak_memory_is_far_below_the_full_logits():
    # Peak resident memory (the kernel's high-water mark, VmHWM) of a fresh process that
    # computes one loss + backward, so other tests cannot pollute it.
    code = MEMORY_PROBE.format(root=str(ROOT))
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m], stdout=subprocess.PIPE, text=True)
             for m in ("plain", "chunked")}
    peak = {m: float(p.communicate(timeout=120)[0].strip()) for m, p in procs.items()}
    # plain holds logits + log-softmax (+ their gradient) at 128 MiB each
    assert peak["plain"] > 200, peak
    # chunked: 128-row chunks of 8 MiB, the [V, D] weight gradient (4 MiB) and allocator slack
    assert peak["chunked"] < 0.2 * peak["plain"], peak


def test_compiles_with_fullgraph_for_loss_forward_and_backward():
    # backend="aot_eager" traces the whole graph (dynamo, fullgraph) and its backward (AOT
    # autograd) like inductor does, but skips C++ codegen (~60 s on 2 busy cores).
    model = tiny()
    model.loss_chunk_rows = 24  # several chunks: the loop must trace too
    x, y = tokens(2, 32), tokens(2, 32, seed=2)
    mask = (torch.arange(32) > 4).expand(2, 32)
    ref = model(x, y, loss_mask=mask)
    ref.backward()
    ref_grad = model.blocks[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(x, y, loss_mask=mask)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight.grad, ref_grad)


def test_compile_by_block_matches_eager_loss_and_gradients():
    # train.py compiles each block and the loss on their own; the compiled model must give
    # the eager loss and the same gradients to the blocks, the final norm and the tied
    # output weight (the embedding), masked rows and a short last loss chunk included.
    eager, compiled = tiny(), tiny()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_by_block(fullgraph=True, backend="aot_eager")
    assert compiled.ce_chunks is not eager.ce_chunks
    for m in (eager, compiled):
        m.loss_chunk_rows = 24  # 64 rows: chunks of 24, 24, 16
    x, y = tokens(2, 32), tokens(2, 32, seed=2)
    mask = (torch.arange(32) > 4).expand(2, 32)
    losses = [m(x, y, loss_mask=mask) for m in (eager, compiled)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0])
    for name in ("embed.weight", "norm.weight", "blocks.1.mlp.down.weight"):
        torch.testing.assert_close(compiled.get_parameter(name).grad, eager.get_parameter(name).grad)
    with torch.no_grad():  # the evaluation path (no gradients) goes through it too
        torch.testing.assert_close(compiled(x, y), eager(x, y))


def test_flops_per_token_is_6n_plus_the_attention_term():
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5"))
    # 6 · 1,350,059,520 + 12 · 48 layers · 24 heads · 64 · 3712 tokens
    assert model.flops_per_token(3712) == 6 * 1_350_059_520 + 12 * 48 * 1536 * 3712
    # causal-only: query i sees i + 1 keys, (T + 1) / 2 on average
    assert model.flops_per_token(3712, causal=True) == 6 * 1_350_059_520 + 12 * 48 * 1536 * 3713 / 2


class FakeFusedLoss:
    """Stands in for liger-kernel's / cut-cross-entropy's fused linear + cross-entropy (Triton,
    CUDA only): the plain mean CE of x @ wᵀ over targets != -100, the function both packages
    document. Records what model.py passed, so the tests see the adapter's mapping of masks and scales."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, w, targets, ignore_index=-100, **kwargs):
        self.calls.append(dict(targets=targets.clone(), dtype=x.dtype, **kwargs))
        return F.cross_entropy((x @ w.t()).float(), targets, ignore_index=ignore_index)


@pytest.fixture
def fake_loss_packages(monkeypatch):
    import types
    fake = FakeFusedLoss()
    liger = types.ModuleType("liger_kernel.transformers.functional")
    liger.liger_fused_linear_cross_entropy = fake
    cce = types.ModuleType("cut_cross_entropy")
    cce.linear_cross_entropy = fake
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", liger)
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", cce)
    return fake


@pytest.mark.parametrize("impl", ["liger", "cce"])
def test_external_loss_backends_get_masks_ignores_and_the_mup_logit_scale(impl, fake_loss_packages):
    # The adapter must hand the package the chunked loss's function: masked-out and negative targets
    # ignored, logits x output_mult (0.5 in the tiny preset: width 64 over base 32).
    chunked, external = tiny(), tiny()
    external.load_state_dict(chunked.state_dict())
    external.loss_impl = impl
    assert chunked.mult["output_mult"] == 0.5
    x, y = tokens(2, 16), tokens(2, 16, seed=2)
    y[0, 2:4] = -1
    y[0, 9:12] = -100  # every negative target is ignored, -100 included
    mask = torch.ones(2, 16, dtype=torch.uint8)
    mask[1, :5] = 0
    losses = [m(x, y, loss_mask=mask) for m in (chunked, external)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-6)
    for name in ("embed.weight", "norm.weight", "blocks.0.attn.qkv.weight"):
        torch.testing.assert_close(external.get_parameter(name).grad, chunked.get_parameter(name).grad,
                                   atol=1e-6, rtol=1e-5)
    call = fake_loss_packages.calls[-1]
    assert (call["targets"] == -100).sum() == 2 + 3 + 5
    if impl == "liger":  # fp32 accumulation of the weight gradient, chunks of the chunked loss's size
        assert call["accum_dtype"] == torch.float32 and call["chunk_mem_const"] >= 1
    else:  # exact gradients, not CCE's default soft-max filter
        assert call["filter_eps"] is None


def test_external_loss_runs_in_the_autocast_dtype(fake_loss_packages):
    model = tiny()
    model.loss_impl = "liger"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens(2, 8), tokens(2, 8, seed=2))
    assert fake_loss_packages.calls[-1]["dtype"] == torch.bfloat16


def test_default_loss_is_the_chunked_one_and_calls_no_package(fake_loss_packages):
    model = tiny()
    assert model.loss_impl == "chunked"
    model(tokens(2, 8), tokens(2, 8, seed=2)).backward()
    assert fake_loss_packages.calls == []


def test_liger_chunk_mem_const_gives_chunks_of_the_chunked_loss_size():
    import math
    from model import liger_chunk_mem_const

    def liger_rows(n, d, vocab, c):  # liger-kernel 0.8.5's rule for its chunk rows
        return min(n, 2 ** math.ceil(math.log2(-(-n // -(-vocab // (c * d))))))
    assert liger_rows(24576, 256, 129280, 1) == 64  # its default at the proxy's shape
    for n, d in ((24576, 256), (16384, 1536)):  # the proxy's and the full model's micro-batch
        assert liger_rows(n, d, 129280, liger_chunk_mem_const(n, d, 129280, 4144)) == 4096


def test_default_loss_chunks_are_a_multiple_of_16_rows():
    from model import default_chunk_rows
    assert default_chunk_rows(129280) == 4144  # 2^29 // 129,280 = 4,152, rounded down
    assert default_chunk_rows(8192) == 2 ** 16 and default_chunk_rows(2 ** 26) == 8  # < 16: as is


def test_missing_or_unknown_loss_backend_is_one_line_with_the_fix(monkeypatch):
    from model import check_loss_impl
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)  # as if not installed
    with pytest.raises(ValueError) as err:
        check_loss_impl("cce")
    msg = str(err.value)
    assert "\n" not in msg and "pip install cut-cross-entropy==25.1.1" in msg and "'chunked'" in msg
    model = tiny()
    model.loss_impl = "cce"
    with pytest.raises(ValueError, match="pip install cut-cross-entropy"):
        model(tokens(1, 8), tokens(1, 8, seed=2))
    with pytest.raises(ValueError, match="not one of 'chunked', 'liger', 'cce'"):
        check_loss_impl("fused")

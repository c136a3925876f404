"""Xmodel-2.5: a decoder-only transformer with µP, as RECIPE §1 specifies.

Pre-RMSNorm blocks, grouped-query attention through scaled_dot_product_attention, RoPE,
SwiGLU, tied input/output embeddings (untied as an option, for imported Llamas), no biases,
no dropout. The µP multipliers and init stds come from mup.py. A plain nn.Module: FSDP,
torch.compile and FP8 are applied from outside (train.py, fp8.py); checkpoint.py reads
and writes it.
"""
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import mup


@dataclass
class ModelConfig:
    vocab_size: int = 129_280
    n_layer: int = 48
    d_model: int = 1536
    n_head: int = 24
    n_kv_head: int = 8
    d_ffn: int = 3840
    rope_base: float = 500_000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 4096      # initial RoPE cache length; the cache grows on demand
    mup: bool = True             # False = standard parameterization (SP), for comparison
    mup_base_width: int = 256
    input_scale: float = 12.0
    output_scale: float = 1.0
    residual_scale: float = 1.4
    init_std: float = 0.1
    # RECIPE §1 ties the output layer to the input embedding. False adds a separate lm_head
    # (many public Llama-architecture checkpoints have one; convert_hf.import_hf sets it).
    tie_embeddings: bool = True
    # True (the default): the residual stream in the compute dtype from the embedding on, bf16
    # under autocast, as the launch code keeps it (`--bf16` without Megatron-LM's
    # --fp32-residual-connection; RECIPE §1). Against the fp32 stream (False: what the
    # fp32 embedding gives under autocast, as transformers' Llama with fp32 weights does) it
    # halves the bytes of each block's saved input and of every residual read and write: on one
    # H200, full model, micro-batch 4, 63.5 -> 61.2 GiB and +1.5% tokens/s (docs/PERFORMANCE.md).
    # Without autocast the compute dtype is the weights' (fp32): nothing changes.
    residual_in_compute_dtype: bool = True

    @property
    def head_dim(self):
        return self.d_model // self.n_head

    @property
    def width_mult(self):
        return mup.width_mult(self)


PRESETS = {
    # RECIPE §1: 1,350,059,520 parameters with the embedding counted once (tied).
    "xmodel-2.5": dict(),
    # The µP proxy of the launch code's HPO scripts (RECIPE §1): width 256 = base width
    # (width_mult 1), 4 layers, 4/1 heads, FFN 640, the real 129,280 vocabulary. Counted:
    # 35,719,424 parameters in all = 33,095,680 (tied embedding) + 2,623,744 (blocks and
    # final norm); with 12 layers (some searches) 40,966,400 / 7,870,720. None of these is
    # the paper's "~20M". One count that fits (an inference, not a source): the same 4-layer
    # proxy with a 65,280-token vocabulary (Xmodel-2's) has 19,335,424. The HPO data budget,
    # 500 steps x 24 x 2048 = 24.6M tokens, is ~10x the non-embedding count (RECIPE §1).
    "proxy": dict(n_layer=4, d_model=256, n_head=4, n_kv_head=1, d_ffn=640),
    # For tests: seconds on a CPU.
    "tiny": dict(vocab_size=512, n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ffn=160,
                 max_seq_len=64, mup_base_width=32),
}
# train.py's default model (a bare `python train.py`): tiny, with the vocabulary of the
# default data's BPE (`python prepare.py` builds data/default with 8,192 ids).
PRESETS["tiny-8k"] = {**PRESETS["tiny"], "vocab_size": 8192}


def model_config(preset: str, **overrides) -> ModelConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    known = {f.name for f in fields(ModelConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown ModelConfig keys {sorted(bad)}")
    return ModelConfig(**{**PRESETS[preset], **overrides})


def rms_norm(x, weight, eps):
    # In fp32 whatever the autocast dtype: the mean of squares is where bf16 loses precision.
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def apply_rope(x, cos, sin):
    # "rotate half" layout (Megatron's non-interleaved default, also HF Llama's): dims i and
    # i + head_dim/2 form a pair, so checkpoints convert to LlamaForCausalLM without permuting.
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


class KVCache:
    """Keys/values of the tokens seen so far, per layer: [B, n_kv_head, max_len, head_dim]."""

    def __init__(self, n_layer, batch_size, n_kv_head, max_len, head_dim, device, dtype):
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos = 0  # number of cached positions; the next token's position

    @property
    def max_len(self):
        return self.k[0].shape[2]


class Attention(nn.Module):
    def __init__(self, cfg, mult):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        # One fused matrix, rows q | k | v: RECIPE §2's Muon orthogonalizes it as a whole.
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        self.scale = mult["attn_scale"]

    def forward(self, x, cos, sin, cache=None, layer=0):
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.qkv(x).split([self.n_head * hd, self.n_kv_head * hd, self.n_kv_head * hd], -1)
        q = apply_rope(q.view(B, T, self.n_head, hd).transpose(1, 2), cos, sin)
        k = apply_rope(k.view(B, T, self.n_kv_head, hd).transpose(1, 2), cos, sin)
        v = v.view(B, T, self.n_kv_head, hd).transpose(1, 2)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                               enable_gqa=True)
        else:
            p = cache.pos
            cache.k[layer][:, :, p:p + T] = k.to(cache.k[layer].dtype)
            cache.v[layer][:, :, p:p + T] = v.to(cache.v[layer].dtype)
            k, v = cache.k[layer][:, :, :p + T].to(q.dtype), cache.v[layer][:, :, :p + T].to(q.dtype)
            # New token i sits at position p + i and sees keys 0..p+i. (is_causal would align
            # the mask top-left, which is wrong once p > 0.)
            mask = torch.ones(T, p + T, dtype=torch.bool, device=x.device).tril(diagonal=p)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                               enable_gqa=True)
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_head * hd))


def swiglu(gate_up):
    """silu(gate) * up, on the fused gate | up output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        # One fused matrix, rows gate | up (RECIPE §2: Muon sees the fused [2·ffn, d] matrix).
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)
        self.act = swiglu  # train.apply_swiglu_recompute swaps in a recomputed one

    def forward(self, x):
        return self.down(self.act(self.gate_up(x)))


class Block(nn.Module):
    def __init__(self, cfg, mult):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, mult)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.residual_mult = mult["residual_mult"]  # µP: 1.4/sqrt(n_layers), mup.py

    def forward(self, x, cos, sin, cache=None, layer=0):
        x = x + self.residual_mult * self.attn(self.attn_norm(x), cos, sin, cache, layer)
        return x + self.residual_mult * self.mlp(self.mlp_norm(x))


# Rows of hidden states per cross-entropy chunk: each chunk's fp32 logits hold about
# LOSS_CHUNK_ELEMENTS numbers (2^29 = 2 GiB: 4,144 rows of the 129,280 vocabulary, so a
# 16K-token micro-batch takes 4 chunks), rounded down to a multiple of 16 rows: FP8's GEMMs
# (fp8.fp8_output_gemms) need every dimension divisible by 16, and 4,152 rows sent them down
# their emulated path. Smaller chunks save memory but cost time: every
# chunk adds one read-modify-write of the fp32 [V, d] weight gradient (794 MB at full
# size). The H100 figures in docs/PERFORMANCE.md were taken with 4,096-row chunks.
LOSS_CHUNK_ELEMENTS = 2 ** 29
CHUNK_ROW_MULTIPLE = 16


def default_chunk_rows(vocab_size):
    """Rows per loss chunk: LOSS_CHUNK_ELEMENTS of logits, a multiple of CHUNK_ROW_MULTIPLE."""
    rows = LOSS_CHUNK_ELEMENTS // vocab_size
    return max(1, rows // CHUNK_ROW_MULTIPLE * CHUNK_ROW_MULTIPLE or rows)


def output_gemms(h, weight, dtype, need_grads, chunk_rows):
    """The output layer's three products for _ce_chunks, in `dtype` (the autocast dtype): the
    default. -> (logits_of(h_c) -> (fp32 logits, h_c as the products take it), grads_of(g, h_in,
    row_scale) -> (d/dh_c, d/dweight of the chunk)). fp8.fp8_output_gemms is the FP8 one."""
    w = weight.to(dtype)  # cast once, not per chunk

    def logits_of(h_c):
        h_in = h_c.to(dtype)
        return (h_in @ w.t()).float(), h_in

    def grads_of(g, h_in, row_scale):
        g = g.to(dtype)
        return (g @ w).to(h.dtype), (g.t() @ h_in).float()
    return logits_of, grads_of


def _ce_chunks(h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, need_grads,
               gemms=output_gemms):
    """Sum over rows of loss_weights · CE(output_mult · h @ weightᵀ, targets), one chunk of rows
    at a time; with need_grads also d(sum)/dh and d(sum)/dweight, computed in the same pass
    so that no chunk's logits have to be kept (or recomputed) for the backward. gemms: how
    the output layer's products are done (output_gemms; fp8.py passes FP8 ones)."""
    logits_of, grads_of = gemms(h, weight, dtype, need_grads, chunk_rows)
    loss = h.new_zeros((), dtype=torch.float32)
    grad_h = torch.empty_like(h) if need_grads else None
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_grads else None
    for s in range(0, h.shape[0], chunk_rows):
        t_c, a_c = targets[s:s + chunk_rows], loss_weights[s:s + chunk_rows]
        # In-place below (no autograd records here): one chunk of logits is the only big buffer.
        logits, h_in = logits_of(h[s:s + chunk_rows])
        logits = logits.mul_(output_mult)
        lse = torch.logsumexp(logits, dim=-1)
        loss = loss + (a_c * (lse - logits.gather(1, t_c[:, None]).squeeze(1))).sum()
        if need_grads:
            # d CE / d logits = softmax − onehot, times the row weight and the output multiplier.
            g = logits.sub_(lse[:, None]).exp_()
            g.scatter_add_(1, t_c[:, None], -torch.ones_like(lse[:, None]))
            row_scale = a_c * output_mult
            grad_h[s:s + chunk_rows], grad_w_c = grads_of(g.mul_(row_scale[:, None]), h_in, row_scale)
            grad_w += grad_w_c
    return loss, grad_h, grad_w


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Fused output layer + cross-entropy: the forward also computes both gradients chunk by
    chunk and stores only them ([N, d] and [V, d]); the backward just scales them. Peak
    memory for the output layer is one chunk of logits instead of several [N, V] fp32
    tensors, at the cost of the matmuls of the backward (same count as unfused)."""

    @staticmethod
    def forward(ctx, h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, ce_chunks):
        loss, grad_h, grad_w = ce_chunks(h, weight, targets, loss_weights, output_mult,
                                         chunk_rows, dtype, need_grads=True)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None, None, None, None, None


def chunked_cross_entropy(h, weight, targets, loss_mask=None, output_mult=1.0, chunk_rows=None,
                          ce_chunks=_ce_chunks):
    """Mean CE of logits = output_mult · h @ weightᵀ over positions with loss_mask 1 and
    target >= 0 (every negative target is ignored: -1, this trainer's marker, and -100,
    F.cross_entropy's default ignore_index); never materialises the full [N, V] logits.
    h: [..., d]; targets: [...].
    ce_chunks: _ce_chunks itself, or a torch.compile'd copy (Xmodel.compile_by_block)."""
    h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    valid = targets >= 0  # any negative target is "no target", never class 0 after the clamp
    if loss_mask is not None:
        valid = valid & loss_mask.reshape(-1).bool()
    # Normalising the row weights up front makes the result (and its gradient) a mean.
    loss_weights = valid.float() / valid.sum().clamp(min=1)
    targets = targets.clamp(min=0)  # ignored rows have weight 0; any valid index will do
    chunk_rows = chunk_rows or default_chunk_rows(weight.shape[0])
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _ChunkedCrossEntropy.apply(h, weight, targets, loss_weights, output_mult,
                                          chunk_rows, dtype, ce_chunks)
    return ce_chunks(h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, False)[0]


# The output layer + loss by backend (Xmodel.loss_impl). "chunked" is the default above; the
# other two are well-kept fused linear + cross-entropy kernels (Triton, CUDA only) from optional
# packages, compared with it in gpu_tests/loss_bench.py (speed, memory, and loss and both
# gradients against F.cross_entropy in fp32). Each value: (module to import, pinned package).
LOSS_IMPLS = {
    "chunked": None,
    "liger": ("liger_kernel.transformers.functional", "liger-kernel==0.8.5"),
    "cce": ("cut_cross_entropy", "cut-cross-entropy==25.1.1"),  # Apple's Cut Cross-Entropy
}
EXTERNAL_IGNORE_INDEX = -100  # what both packages skip (every negative target is mapped to it)


def check_loss_impl(impl):
    """One-line ValueError, with the fix, for an unknown backend or one whose package does not
    import here; cheap, so callers run it before any expensive work."""
    import importlib
    if impl not in LOSS_IMPLS:
        raise ValueError(f"loss_impl={impl!r} is not one of {', '.join(map(repr, LOSS_IMPLS))}")
    if LOSS_IMPLS[impl] is not None:
        module, package = LOSS_IMPLS[impl]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"loss_impl={impl!r} needs the package {package}, which does not import "
                             f"here ({e}): pip install {package}, or use loss_impl='chunked'") from None


def liger_chunk_mem_const(rows, d, vocab, chunk_rows):
    """liger-kernel sizes its chunks as next_pow2(rows / ceil(vocab / (c·d))) rows; its default
    c = 1 gives 64-row chunks at the proxy's shape and 256-row ones at full size. This c gives
    chunks of about chunk_rows rows, like the chunked loss (4,096 at both shapes for 4,144)."""
    return max(1, -(-chunk_rows * vocab // (rows * d)))


@torch.compiler.disable  # their Triton launches and host reads (.item(), nonzero) stay eager
def external_cross_entropy(impl, h, weight, targets, loss_mask=None, output_mult=1.0, chunk_rows=None,
                           options=None):
    """chunked_cross_entropy's mean loss through liger-kernel or cut-cross-entropy: ignored and
    masked-out rows get the packages' ignore index; the µP output multiplier is folded into h
    ((output_mult·h) @ Wᵀ is the same product: neither package takes a logit scale); operands in
    the autocast dtype, as the chunked loss casts them. options: keyword arguments for the
    package's function that replace the choices below (loss_bench.py times its defaults too)."""
    check_loss_impl(impl)
    h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    ignored = targets < 0  # as the chunked loss: every negative target, not only -1
    if loss_mask is not None:
        ignored = ignored | ~loss_mask.reshape(-1).bool()
    targets = targets.masked_fill(ignored, EXTERNAL_IGNORE_INDEX)
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    x, w = (h * output_mult).to(dtype), weight.to(dtype)
    if impl == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        chunk_rows = chunk_rows or default_chunk_rows(weight.shape[0])
        # accum_dtype fp32: the weight gradient sums over chunks in fp32 (default: in w's bf16)
        kwargs = dict(accum_dtype=torch.float32,
                      chunk_mem_const=liger_chunk_mem_const(x.shape[0], x.shape[1], w.shape[0], chunk_rows))
        return liger_fused_linear_cross_entropy(x, w, targets, ignore_index=EXTERNAL_IGNORE_INDEX,
                                                **{**kwargs, **(options or {})})
    from cut_cross_entropy import linear_cross_entropy
    # filter_eps=None: exact gradients (its default skips blocks of soft-max values below
    # 2^-12, an approximation; loss_bench.py measures both)
    return linear_cross_entropy(x, w, targets, ignore_index=EXTERNAL_IGNORE_INDEX,
                                **{"filter_eps": None, **(options or {})})


class Xmodel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.d_model % config.n_head == 0 and config.n_head % config.n_kv_head == 0
        assert config.head_dim % 2 == 0, "RoPE rotates pairs of dimensions"
        self.config = config
        self.mult = mup.multipliers(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList([Block(config, self.mult) for _ in range(config.n_layer)])
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = (None if config.tie_embeddings else
                        nn.Linear(config.d_model, config.vocab_size, bias=False))
        self.loss_chunk_rows = None  # None: default_chunk_rows(vocab_size) rows per chunk
        self.ce_chunks = _ce_chunks  # the loss's chunk loop; compile_by_block() swaps in a compiled one
        self.loss_impl = "chunked"  # or "liger" / "cce": LOSS_IMPLS, optional packages
        # Non-persistent: derived from the config, so never stored in checkpoints.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.reset_parameters()

    def _build_rope(self, length, device=None):
        hd = self.config.head_dim
        inv_freq = 1.0 / self.config.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd)
        angles = torch.outer(torch.arange(length, dtype=torch.float64, device=device), inv_freq)
        self.rope_cos, self.rope_sin = angles.cos().float(), angles.sin().float()  # [T, hd/2]

    @torch.no_grad()
    def reset_parameters(self):
        """µP (or SP) init from mup.init_std, RECIPE §1. Also (re)builds the RoPE tables, so a
        model created on the meta device is complete after to_empty(device) + this call."""
        cfg = self.config
        self._build_rope(max(cfg.max_seq_len, self.rope_cos.shape[0]), self.embed.weight.device)
        nn.init.normal_(self.embed.weight, std=mup.init_std(cfg, "embedding"))
        if self.lm_head is not None:
            # The embedding's std (0.1; SP 0.02), width-independent: with logits x 1/width_mult
            # the readout is vector-like (microsoft/mup's MuReadout), so this is µP-valid and
            # the logits at init have the tied model's scale. (mup's readout_zero_init = 0 is
            # the other µP choice; it would zero every other gradient at step 0.)
            nn.init.normal_(self.lm_head.weight, std=mup.init_std(cfg, "embedding"))
        for block in self.blocks:
            for role, lin in (("qkv", block.attn.qkv), ("out", block.attn.out),
                              ("gate_up", block.mlp.gate_up), ("down", block.mlp.down)):
                nn.init.normal_(lin.weight, std=mup.init_std(cfg, role))
            block.attn_norm.weight.fill_(1.0)
            block.mlp_norm.weight.fill_(1.0)
        self.norm.weight.fill_(1.0)

    @property
    def output_weight(self):
        """[V, d]: the output layer's weight, the embedding itself when tied."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, idx, targets=None, loss_mask=None, kv_cache=None, last_only=False):
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        # Grow the RoPE tables for a longer sequence than ever seen; rebuild them in fp32 if
        # model.to(bf16) cast them (bf16 keeps ~3 digits: too coarse for rotations at long range).
        length = self.rope_cos.shape[0]
        if start + T > length or self.rope_cos.dtype != torch.float32:
            self._build_rope(max(start + T, 2 * length if start + T > length else length), idx.device)
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.embed(idx) * self.mult["input_scale"]  # µP: ×12, RECIPE §1
        if self.config.residual_in_compute_dtype and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, kv_cache, i)
        h = self.norm(x)
        if kv_cache is not None:
            kv_cache.pos += T
        if targets is None:
            if last_only:  # sampling needs one row of [T, V] logits, not all of them
                h = h[:, -1:]
            # µP: logits × output_scale / width_mult (RECIPE §1).
            return F.linear(h, self.output_weight).float() * self.mult["output_mult"]
        assert kv_cache is None, "the loss is for training/eval on whole sequences"
        if self.loss_impl != "chunked":
            return external_cross_entropy(self.loss_impl, h, self.output_weight, targets, loss_mask,
                                          self.mult["output_mult"], self.loss_chunk_rows)
        return chunked_cross_entropy(h, self.output_weight, targets, loss_mask,
                                     self.mult["output_mult"], self.loss_chunk_rows, self.ce_chunks)

    def compile_by_block(self, **compile_kwargs):
        """torch.compile each block on its own (the identical blocks share one compiled graph;
        in place, so parameter names do not change) and the output layer + cross-entropy chunk
        loop on their own (left eager, the loss's element-wise passes over each [rows × 129,280]
        chunk of fp32 logits would run as separate kernels: ~10% of an H100 step). How train.py
        and bench.py compile: on one H100 as fast as one whole-model torch.compile, compiled in
        under half the time (docs/PERFORMANCE.md), and the same graphs under DDP and FSDP2."""
        for block in self.blocks:
            block.compile(**compile_kwargs)
        self.ce_chunks = torch.compile(self.ce_chunks, **compile_kwargs)  # FP8's too (fp8.py)
        return self

    def new_kv_cache(self, batch_size, max_len, device=None, dtype=None) -> KVCache:
        p = self.embed.weight
        return KVCache(self.config.n_layer, batch_size, self.config.n_kv_head, max_len,
                       self.config.head_dim, device or p.device, dtype or p.dtype)

    def num_params(self, exclude_embeddings=False) -> int:
        """exclude_embeddings drops the input embedding only; an untied lm_head stays counted
        (it is a [d × V] matmul per token, like any hidden matrix)."""
        n = sum(p.numel() for p in self.parameters())  # the tied weight is listed once
        return n - self.embed.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, seq_len, causal=False) -> float:
        """Training FLOPs per token, PaLM (arXiv 2204.02311, App. B) / nanoGPT style:
        6N with N = every parameter that does a matmul: the tied embedding included once
        because it is the [d × V] output layer; untied, lm_head counted and the input
        embedding not (a lookup costs nothing). Norm weights are counted (a negligible
        0.007%). Plus 12·n_layer·n_head·head_dim·T for QKᵀ and AV. causal=False counts the
        full T×T square, as PaLM, nanoGPT and torchtitan do; causal=True only the pairs the
        mask keeps, (T+1)/2 keys per query on average, as Megatron and FlashAttention count."""
        cfg = self.config
        n = self.num_params(exclude_embeddings=not cfg.tie_embeddings)
        keys = (seq_len + 1) / 2 if causal else seq_len
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * keys

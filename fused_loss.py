"""The output layer and its cross-entropy as three Triton kernels (model.py's loss_impl = "triton").

Why a kernel of our own when liger-kernel exists (docs/PERFORMANCE.md, "The output layer in three
kernels"): at a narrow width (the proxy's d = 256) the [N, V] logits are the whole cost, and
liger moves them five times through memory (GEMM writes them; its soft-max reads them twice
and writes the gradient in place; the two gradient GEMMs read it). Here they move three times:

  1. logits:  L = bf16(output_mult · h @ Wᵀ), and per (row, vocabulary tile) the maximum and
              Σ exp of the tile, in the GEMM's epilogue: the log-sum-exp needs no extra pass.
  2. grad h:  dh = G @ W, where G = row_scale · (softmax(L) − onehot) is computed tile by tile
              from L in the GEMM's prologue and never stored.
  3. grad W:  dW = Gᵀ @ h, the same prologue, the loop over rows instead of the vocabulary.

The soft-max is that of the bf16 logits, as in the chunked loss (which also rounds the product
to the autocast dtype first) and in liger. The row scale (row weight × output_mult) folds the
mean over valid rows and µP's logit multiplier into G, as model._ce_chunks does.

CUDA only; on a CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1), which is
how tests/test_fused_loss.py checks them against F.cross_entropy.
"""
import os

import torch
import triton
import triton.language as tl

# Triton's CPU interpreter (3.9) multiplies bf16 operands of tl.dot wrongly (it reads their
# bits as integers: a 16×16 product off by 1e10), so under it the dots take fp32 copies.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    if UPCAST:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, acc)


@triton.jit
def _logits_kernel(H, W, L, PMAX, PSUM, N, V, D, mult, stride_h, stride_w, stride_l, stride_p,
                   BM: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr):
    # Row tiles vary fastest: the CTAs running at once share one vocabulary tile of W (read
    # from memory once) and sweep h, which is small enough to stay in L2.
    n_m = tl.cdiv(N, BM)
    pid_m, pid_v = tl.program_id(0) % n_m, tl.program_id(0) // n_m
    rm = pid_m * BM + tl.arange(0, BM)
    rv = pid_v * BV + tl.arange(0, BV)
    rk = tl.arange(0, BK)
    row_ok, col_ok = rm < N, rv < V
    rm64, rv64 = rm.to(tl.int64), rv.to(tl.int64)  # N·V passes 2³¹ at the proxy's shape
    acc = tl.zeros((BM, BV), dtype=tl.float32)
    for k in range(0, D, BK):
        k_ok = (k + rk) < D
        h = tl.load(H + rm64[:, None] * stride_h + (k + rk)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W + rv64[None, :] * stride_w + (k + rk)[:, None],
                    mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        acc = _dot(h, w, acc, UPCAST)
    z = (acc * mult).to(L.dtype.element_ty)
    tl.store(L + rm64[:, None] * stride_l + rv64[None, :], z, mask=row_ok[:, None] & col_ok[None, :])
    # The tile's share of the log-sum-exp, from the rounded logits the gradient kernels read.
    zf = tl.where(col_ok[None, :], z.to(tl.float32), float("-inf"))
    tile_max = tl.max(zf, axis=1)
    tile_sum = tl.sum(tl.exp(zf - tile_max[:, None]), axis=1)
    tl.store(PMAX + rm64 * stride_p + pid_v, tile_max, mask=row_ok)
    tl.store(PSUM + rm64 * stride_p + pid_v, tile_sum, mask=row_ok)


@triton.jit
def _softmax_grad(L, LSE, T, RS, rm, rv, N, V, stride_l):
    """G = row_scale · (softmax − onehot) of the [len(rm), len(rv)] tile of the logits."""
    row_ok, col_ok = rm < N, rv < V
    lse = tl.load(LSE + rm, mask=row_ok, other=0.0)
    target = tl.load(T + rm, mask=row_ok, other=-1)
    row_scale = tl.load(RS + rm, mask=row_ok, other=0.0)
    z = tl.load(L + rm.to(tl.int64)[:, None] * stride_l + rv.to(tl.int64)[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=float("-inf")).to(tl.float32)
    p = tl.exp(z - lse[:, None])  # 0 outside the matrix: exp(-inf)
    p = tl.where(rv[None, :] == target[:, None], p - 1.0, p)
    return p * row_scale[:, None]


@triton.jit
def _grad_h_kernel(L, LSE, T, RS, W, GH, N, V, D, stride_l, stride_w, stride_split, stride_gh,
                   BM: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr, SPLIT: tl.constexpr,
                   UPCAST: tl.constexpr):
    pid_m, pid_d, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rd = pid_d * BD + tl.arange(0, BD)
    d_ok = rd < D
    span = tl.cdiv(tl.cdiv(V, SPLIT), BV) * BV  # this CTA's part of the vocabulary
    acc = tl.zeros((BM, BD), dtype=tl.float32)
    for v in range(pid_s * span, tl.minimum(pid_s * span + span, V), BV):
        rv = v + tl.arange(0, BV)
        g = _softmax_grad(L, LSE, T, RS, rm, rv, N, V, stride_l)
        w = tl.load(W + rv.to(tl.int64)[:, None] * stride_w + rd[None, :],
                    mask=(rv < V)[:, None] & d_ok[None, :], other=0.0)
        acc = _dot(g.to(W.dtype.element_ty), w, acc, UPCAST)
    tl.store(GH + pid_s * stride_split + rm.to(tl.int64)[:, None] * stride_gh + rd[None, :], acc,
             mask=(rm < N)[:, None] & d_ok[None, :])


@triton.jit
def _grad_w_kernel(L, LSE, T, RS, H, GW, N, V, D, stride_l, stride_h, stride_gw,
                   BM: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr, UPCAST: tl.constexpr):
    pid_v, pid_d = tl.program_id(0), tl.program_id(1)
    rv = pid_v * BV + tl.arange(0, BV)
    rd = pid_d * BD + tl.arange(0, BD)
    d_ok = rd < D
    acc = tl.zeros((BV, BD), dtype=tl.float32)
    for m in range(0, N, BM):
        rm = m + tl.arange(0, BM)
        g = _softmax_grad(L, LSE, T, RS, rm, rv, N, V, stride_l)
        h = tl.load(H + rm.to(tl.int64)[:, None] * stride_h + rd[None, :],
                    mask=(rm < N)[:, None] & d_ok[None, :], other=0.0)
        acc = _dot(tl.trans(g.to(H.dtype.element_ty)), h, acc, UPCAST)
    tl.store(GW + rv.to(tl.int64)[:, None] * stride_gw + rd[None, :], acc,
             mask=(rv < V)[:, None] & d_ok[None, :])


# Tile sizes the autotuner chooses from on the GPU, per (N, V, d): (rows, vocabulary, width or K
# step, warps, pipeline stages). Triton's Hopper matrix instructions need 4 or 8 warps and tiles of
# 64+ rows; which of these wins at the proxy's and the full model's shapes is measured by
# gpu_tests/fused_loss_tune.py (docs/PERFORMANCE.md).
LOGITS_CONFIGS = [triton.Config(dict(BM=bm, BV=bv, BK=bk), num_warps=nw, num_stages=ns) for bm, bv, bk, nw, ns in
                  ((128, 256, 64, 8, 3), (128, 128, 64, 4, 4), (128, 128, 64, 8, 4), (256, 128, 64, 8, 3),
                   (64, 256, 64, 4, 4))]
GRAD_H_CONFIGS = [triton.Config(dict(BM=bm, BV=bv, BD=bd), num_warps=nw, num_stages=ns) for bm, bv, bd, nw, ns in
                  ((128, 64, 256, 8, 3), (128, 32, 256, 8, 4), (64, 64, 256, 4, 4), (128, 128, 128, 8, 3),
                   (64, 128, 128, 4, 3))]
GRAD_W_CONFIGS = [triton.Config(dict(BM=bm, BV=bv, BD=bd), num_warps=nw, num_stages=ns) for bm, bv, bd, nw, ns in
                  ((64, 128, 256, 8, 3), (32, 128, 256, 8, 4), (64, 256, 128, 8, 3), (64, 128, 128, 4, 4),
                   (128, 128, 128, 8, 3))]
# Under the interpreter (CPU tests) one small tile each: several tiles per dimension at test sizes.
INTERPRETER_TILES = dict(logits=dict(BM=16, BV=32, BK=16), grad_h=dict(BM=16, BV=32, BD=32),
                         grad_w=dict(BM=16, BV=32, BD=32))
_tuned = {}


def _launcher(name, kernel, configs, tiles):
    """(kernel to index with a grid, its tile keyword arguments): the given tiles, the
    interpreter's, or the autotuned kernel (which supplies its own)."""
    if tiles is None and INTERPRETED:
        tiles = INTERPRETER_TILES[name]
    if tiles is not None:
        launch = {k: tiles[k] for k in ("num_warps", "num_stages") if k in tiles}
        return kernel, {**{k: v for k, v in tiles.items() if k not in launch}, **launch}
    if name not in _tuned:
        _tuned[name] = triton.autotune(configs, key=["N", "V", "D"])(kernel)
    return _tuned[name], {}


def split_for(n_tiles):
    """Parts of the vocabulary for grad_h: at least two waves of CTAs on the GPU's multiprocessors
    (a chunk of 8,192 rows is only 64 row tiles), at most 8."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count if torch.cuda.is_available() else 4
    return max(1, min(8, -(-2 * sms // max(1, n_tiles))))


def logits_and_lse(h, w, output_mult, tiles=None):
    """-> (logits [N, V] = output_mult · h @ wᵀ rounded to w's dtype, fp32 log-sum-exp [N] of them).
    h [N, d] and w [V, d] contiguous, in the same dtype."""
    kernel, t = _launcher("logits", _logits_kernel, LOGITS_CONFIGS, tiles)
    N, D = h.shape
    V = w.shape[0]
    smallest_bv = t["BV"] if t else min(c.kwargs["BV"] for c in LOGITS_CONFIGS)
    n_v_max = triton.cdiv(V, smallest_bv)  # room for the partial results of any config's tiles
    logits = torch.empty(N, V, device=h.device, dtype=w.dtype)
    pmax = torch.empty(N, n_v_max, device=h.device, dtype=torch.float32)
    psum = torch.empty_like(pmax)

    def grid(meta):
        return (triton.cdiv(N, meta["BM"]) * triton.cdiv(V, meta["BV"]),)
    kernel[grid](h, w, logits, pmax, psum, N, V, D, float(output_mult),
                 h.stride(0), w.stride(0), logits.stride(0), pmax.stride(0), UPCAST=INTERPRETED, **t)
    # Only the columns of the tiles that ran last: the autotuner's trials of other tile widths
    # leave theirs behind.
    n_v = triton.cdiv(V, t["BV"] if t else kernel.best_config.kwargs["BV"])
    pmax, psum = pmax[:, :n_v], psum[:, :n_v]
    m = pmax.max(dim=1).values
    lse = m + torch.log((psum * torch.exp(pmax - m[:, None])).sum(dim=1))
    return logits, lse


def grad_h(logits, lse, targets, row_scale, w, tiles=None, split=None):
    """dh [N, d] fp32 = G @ w, G = row_scale · (softmax(logits) − onehot(targets))."""
    kernel, t = _launcher("grad_h", _grad_h_kernel, GRAD_H_CONFIGS, tiles)
    N, V = logits.shape
    D = w.shape[1]
    split = split or split_for(triton.cdiv(N, 128) * triton.cdiv(D, 256))
    parts = torch.empty(split, N, D, device=w.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(N, meta["BM"]), triton.cdiv(D, meta["BD"]), split)
    kernel[grid](logits, lse, targets, row_scale, w, parts, N, V, D,
                 logits.stride(0), w.stride(0), parts.stride(0), parts.stride(1),
                 SPLIT=split, UPCAST=INTERPRETED, **t)
    return parts.sum(dim=0) if split > 1 else parts[0]


def grad_w(logits, lse, targets, row_scale, h, tiles=None):
    """dW [V, d] fp32 = Gᵀ @ h, G as in grad_h."""
    kernel, t = _launcher("grad_w", _grad_w_kernel, GRAD_W_CONFIGS, tiles)
    N, V = logits.shape
    D = h.shape[1]
    out = torch.empty(V, D, device=h.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(V, meta["BV"]), triton.cdiv(D, meta["BD"]))
    kernel[grid](logits, lse, targets, row_scale, h, out, N, V, D,
                 logits.stride(0), h.stride(0), out.stride(0), UPCAST=INTERPRETED, **t)
    return out


def loss_and_grads(h, w, targets, loss_weights, output_mult, need_grads=True):
    """model._ce_chunks' contract, in one piece: Σ loss_weights · CE(output_mult · h @ wᵀ, targets)
    and, with need_grads, d/dh (h's dtype) and d/dw (fp32). h [N, d], w [V, d] in the compute dtype;
    targets [N] in [0, V) (ignored rows carry weight 0)."""
    h, w = h.contiguous(), w.contiguous()
    targets = targets.to(torch.int32).contiguous()
    logits, lse = logits_and_lse(h, w, output_mult)
    target_logit = logits.gather(1, targets[:, None].long()).squeeze(1).float()
    loss = (loss_weights * (lse - target_logit)).sum()
    if not need_grads:
        return loss, None, None
    row_scale = (loss_weights * output_mult).float().contiguous()
    gh = grad_h(logits, lse, targets, row_scale, w)
    gw = grad_w(logits, lse, targets, row_scale, h)
    return loss, gh, gw


# Rows per chunk: 2³⁰ bf16 logits (2 GiB) bound the memory; 8,192 rows at the 129,280 vocabulary.
CHUNK_ELEMENTS = 2**30


def default_chunk_rows(vocab_size):
    return max(128, CHUNK_ELEMENTS // vocab_size // 128 * 128)


def ce_chunks(h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, need_grads):
    """model._ce_chunks with each chunk of rows in the three kernels (what chunked_cross_entropy
    calls for loss_impl = "triton"): -> (loss, d/dh in h's dtype, d/dweight in fp32)."""
    if h.device.type != "cuda" and not INTERPRETED:
        raise ValueError("loss_impl='triton' runs Triton kernels on a GPU: use loss_impl='chunked' "
                         "on a CPU (or TRITON_INTERPRET=1, Triton's slow interpreter, for tests)")
    w = weight.to(dtype).contiguous()  # cast once, not per chunk
    loss = h.new_zeros((), dtype=torch.float32)
    grad_h = torch.empty_like(h) if need_grads else None
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_grads else None
    for s in range(0, h.shape[0], chunk_rows):
        h_c = h[s:s + chunk_rows].to(dtype)
        loss_c, gh, gw = loss_and_grads(h_c, w, targets[s:s + chunk_rows], loss_weights[s:s + chunk_rows],
                                        output_mult, need_grads)
        loss = loss + loss_c
        if need_grads:
            grad_h[s:s + chunk_rows] = gh
            grad_w += gw
    return loss, grad_h, grad_w

"""
FP8 training for the block Linears (RECIPE §4): format HYBRID (E4M3 forward, E5M2 backward),
delayed per-tensor scaling, amax history 128, amax algorithm "max".

Applied from outside the model, after init and before DDP/FSDP2/compile/optimizers:

    report = convert_to_fp8(model, backend="auto")       # swaps attn.qkv/out, mlp.gate_up/down
    with fp8_autocast_context(report):                   # TE needs it; nullcontext for native
        loss = model(x, y)

Two backends with the same recipe:
- "te": TransformerEngine's te.Linear under te.fp8_autocast/te.autocast(DelayedScaling(HYBRID)),
  the paper's implementation.
- "native": Float8Linear below, built on torch._scaled_mm, for machines without TE.
"auto" picks TE when `import transformer_engine.pytorch` works, else native, and says so.
The embedding/output layer and the norms stay in high precision by default (the tied
129,280-vocab output feeds the loss directly and shares its weight with the embedding; RECIPE
§4's measured anchor converts the decoder Linears only, too). `output_layer=True` also runs the
output layer's three GEMMs inside the chunked loss in FP8 (`fp8_output_gemms`, native GEMMs
whatever the blocks' backend): ~10% of the full model's FLOPs and most of the proxy's, an
experiment until the FP8 parity runs show its accuracy (docs/EXPERIMENTS.md).

Delayed scaling, as TE defines it: the scale used at step t comes from the amaxes of the
previous steps, scale = fp8_max / (max(amax_history) * 2**margin); the amax seen at step t is
then pushed into the history (newest first, oldest dropped). Every update is a tensor op on a
buffer (no .item(), no host sync), so torch.compile traces it. Because the scale does not
depend on the tensor being quantized, the amax reduction and the cast read the tensor
independently (the point of delayed scaling): Inductor fuses both into the kernel that
produces the tensor (measured on an H100: tensor_amax below, docs/PERFORMANCE.md).
One exception: while a module's history is empty (fresh run, or a bf16 checkpoint resumed in
FP8) it scales with the current amax (just-in-time) instead of TE's scale 1, which would
saturate E4M3 or flush small gradients to zero in E5M2. That is a Python flag
(`history_started`), so under torch.compile the first training step and the rest are two
graphs: one recompile, after step 1.

Checkpoints (native): each Float8Linear keeps `weight` (same name and shape as nn.Linear) and
one buffer `fp8_amax_history` [3, L] (rows: input, weight, grad_output). The scales are a pure
function of that history, so the history is the whole scaling state and a resumed run
continues exactly. What the trainer does:
- model.pt (read by sample/eval/convert): `strip_fp8_state(model.state_dict())`, plain keys;
- train_state.pt: `fp8_state(model)`; on resume `load_fp8_state(model, state.get("fp8"))`;
- a bf16 checkpoint loads into an FP8 model with plain `load_state_dict` (a load hook fills the
  missing histories with zeros = empty), and an FP8 state dict into a bf16 model after
  `strip_fp8_state`. Under FSDP2 + torch.distributed.checkpoint the histories are part of the
  model's state dict; switching bf16 <-> FP8 there needs DefaultLoadPlanner(allow_partial_load=True).
Meta-device init (FSDP2): after model.to_empty(...), call load_fp8_state(model, None) (or load
a checkpoint) so the histories start empty instead of uninitialised memory.
Activation checkpointing recomputes the forward, which records the input/weight amax a second
time and may quantize with a scale one step newer; gradients stay consistent with the
recomputed forward, only bit-exact resume across that boundary is lost.
Data parallel: each rank records its own input/grad amaxes; call `sync_amax_history(model)`
after each micro-batch's backward (one all-reduce MAX, as TE's amax reduction at every FP8
autocast exit) so ranks quantize every micro-batch with the same scales.
"""
import contextlib
import functools
import importlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

E4M3 = torch.float8_e4m3fn  # forward tensors: 3 mantissa bits, max 448 (precision over range)
E5M2 = torch.float8_e5m2    # gradients: 2 mantissa bits, max 57344 (range over precision)
BLOCK_LINEARS = ("attn.qkv", "attn.out", "mlp.gate_up", "mlp.down")  # names fixed by model.py
HISTORY = "fp8_amax_history"
INPUT, WEIGHT, GRAD_OUTPUT = 0, 1, 2  # rows of the history buffer
# cuBLASLt FP8 GEMMs need every matrix dimension divisible by 16 (torch._scaled_mm checks it).
FP8_DIM_MULTIPLE = 16


class FP8UnsupportedError(RuntimeError):
    pass


def check_fp8_supported(device, emulate=False):
    """Stop before training when `fp8=True` cannot run here. emulate=True (CPU tests) passes."""
    if emulate:
        return
    device = torch.device(device)
    fix = "Set fp8=False to train in bf16, or run on an FP8-capable GPU (H100/H200, L4/L40, RTX 4090)."
    if device.type != "cuda":
        raise FP8UnsupportedError(
            f"fp8=True needs an NVIDIA GPU with FP8 tensor cores (compute capability >= 8.9), "
            f"but the device is '{device}'. {fix}")
    if not torch.cuda.is_available():
        raise FP8UnsupportedError(f"fp8=True: device '{device}' requested but CUDA is not available. {fix}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):  # FP8 tensor cores arrived with Ada (8.9) and Hopper (9.0)
        name = torch.cuda.get_device_name(device)
        raise FP8UnsupportedError(
            f"fp8=True needs compute capability >= 8.9, but '{device}' is {name} "
            f"(compute capability {major}.{minor}). {fix}")


# --------------------------------------------------------------------------- scaling


def amax_to_scale(amax, fp8_dtype, margin=0):
    """Quantization scale that maps amax onto the format's largest value, backed off by 2**margin.
    amax 0 (all-zero tensor) or non-finite gives scale 1, like TE keeps a usable scale."""
    amax = amax.float()
    scale = torch.finfo(fp8_dtype).max / (amax * 2.0 ** margin)
    return torch.where((amax > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))


def delayed_scale(history, current_amax, fp8_dtype, margin=0, algo="max"):
    """Scale for this step from the history of earlier amaxes (newest at index 0).
    With current_amax given, an empty history (all zeros) falls back to it (first step);
    current_amax=None is the steady state: the scale depends on the history alone."""
    if algo == "max":
        amax = history.max()
    elif algo == "most_recent":
        amax = history[0]
    else:
        raise ValueError(f"amax_compute_algo must be 'max' or 'most_recent', not {algo!r}")
    if current_amax is not None:
        amax = torch.where(amax > 0, amax, current_amax.float())
    return amax_to_scale(amax, fp8_dtype, margin)


def record_amax(history, amax):
    """Push this step's amax in front of the history, dropping the oldest (in place).
    A non-finite amax (an overflowing step) is recorded as 0 so it cannot poison 128 steps."""
    amax = amax.float()
    amax = torch.where(torch.isfinite(amax), amax, torch.zeros_like(amax))
    history.copy_(torch.cat([amax.reshape(1), history[:-1]]))


def tensor_amax(t):
    """max |t| as an fp32 scalar, taken as the maximum of the row maxima: a reduction over
    the last dimension has the shape of the kernels that produce these tensors (RMSNorm,
    SwiGLU and their backwards reduce or loop over rows), so torch.compile can fold it into
    them instead of reading the whole tensor once more for a separate full reduction."""
    return t.abs().amax(dim=-1).amax().float()


def quantize(x, scale, fp8_dtype):
    """x * scale, saturated to the format's range (a plain cast would turn overflow into NaN
    for E4M3FN, which has no infinity), rounded to nearest in the FP8 dtype."""
    fp8_max = torch.finfo(fp8_dtype).max
    return (x.float() * scale).clamp(-fp8_max, fp8_max).to(fp8_dtype)


def dequantize(x_fp8, scale, dtype=torch.float32):
    return (x_fp8.float() / scale).to(dtype)


def scaled_matmul(a, a_scale, b, b_scale, out_dtype, emulate=False, use_fast_accum=False):
    """(a / a_scale) @ (b / b_scale) for FP8 a [M, K] (row-major) and b [K, N] (column-major).

    torch._scaled_mm takes the *dequantization* scales (reciprocals of ours) as fp32 scalar
    tensors, wants mat1 row-major and mat2 column-major, and rejects E5M2 x E5M2 (we never
    ask for it: gradients are E5M2, the other operand is always E4M3). emulate=True does the
    same product by dequantizing to fp32 (CPU tests, and token counts not divisible by 16)."""
    if emulate:
        with torch.autocast(a.device.type, enabled=False):
            out = (a.float() * a_scale.reciprocal()) @ (b.float() * b_scale.reciprocal())
        return out.to(out_dtype)
    # cuBLASLt's layout contract, checked here so the CPU tests (whose kernel is lenient) catch a
    # layout slip before a GPU does; strides are static, so this costs nothing under compile.
    if a.stride(1) != 1 or b.stride(0) != 1:
        raise ValueError(f"scaled_matmul needs a row-major and b column-major, got strides "
                         f"{a.stride()} and {b.stride()}")
    # Autocast must stay out: CPU autocast casts _scaled_mm's fp32 scales to bf16 (measured:
    # 0.3% output error); the output dtype is chosen explicitly instead.
    with torch.autocast(a.device.type, enabled=False):
        return torch._scaled_mm(a, b, scale_a=a_scale.reciprocal(), scale_b=b_scale.reciprocal(),
                                out_dtype=out_dtype, use_fast_accum=use_fast_accum)


def column_major(t):
    """Same values, column-major storage (what _scaled_mm wants for its second operand)."""
    return t.t().contiguous().t()


# --------------------------------------------------------------------------- native backend


class _Float8LinearFunction(torch.autograd.Function):
    """y = x @ w.T with x, w in E4M3 (scales given), backward with grad_output in E5M2.

    The grad_output scale is delayed too: computed in backward from row GRAD_OUTPUT of the
    history, which backward then updates in place (a buffer mutation torch.compile supports)."""

    @staticmethod
    def forward(ctx, x, weight, x_scale, w_scale, history, margin, algo, out_dtype, emulate, first_step):
        x_fp8 = quantize(x, x_scale, E4M3).contiguous()  # row-major whatever x's strides were
        w_fp8 = quantize(weight, w_scale, E4M3).contiguous()
        # Forward GEMM with fast accumulation, backward GEMMs without: the split torchao and
        # TE use (gradients are summed over all tokens and need the full-precision accumulator).
        y = scaled_matmul(x_fp8, x_scale, w_fp8.t(), w_scale, out_dtype, emulate, use_fast_accum=True)
        ctx.save_for_backward(x_fp8, w_fp8, x_scale, w_scale, history)
        ctx.margin, ctx.algo, ctx.emulate, ctx.first_step = margin, algo, emulate, first_step
        ctx.x_dtype, ctx.w_dtype = x.dtype, weight.dtype
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x_fp8, w_fp8, x_scale, w_scale, history = ctx.saved_tensors
        g_amax = tensor_amax(grad_out)
        g_scale = delayed_scale(history[GRAD_OUTPUT], g_amax if ctx.first_step else None, E5M2,
                                ctx.margin, ctx.algo)
        record_amax(history[GRAD_OUTPUT], g_amax)
        g_fp8 = quantize(grad_out, g_scale, E5M2).contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # [M, N] @ [N, K]: E5M2 x E4M3
            grad_x = scaled_matmul(g_fp8, g_scale, column_major(w_fp8), w_scale, ctx.x_dtype, ctx.emulate)
        if ctx.needs_input_grad[1]:  # [N, M] @ [M, K]: E5M2 x E4M3
            grad_w = scaled_matmul(g_fp8.t().contiguous(), g_scale, column_major(x_fp8), x_scale,
                                   ctx.w_dtype, ctx.emulate)
        return grad_x, grad_w, None, None, None, None, None, None, None, None


class Float8Linear(nn.Module):
    """Drop-in for nn.Linear(bias=False) with FP8 GEMMs (native backend).

    `weight` keeps nn.Linear's name, shape and dtype (the fp32 master weight, or the bf16
    unsharded weight FSDP2 hands in), and is read through self.weight in forward so DDP and
    FSDP2 hooks see it as usual. The weight is quantized every call (no FP8 weight cache)."""

    def __init__(self, in_features, out_features, amax_history_len=128, amax_compute_algo="max",
                 margin=0, emulate=False, device=None, dtype=None):
        super().__init__()
        if amax_compute_algo not in ("max", "most_recent"):
            raise ValueError(f"amax_compute_algo must be 'max' or 'most_recent', not {amax_compute_algo!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.register_parameter("bias", None)
        self.amax_compute_algo, self.margin, self.emulate = amax_compute_algo, margin, emulate
        self.register_buffer(HISTORY, torch.zeros(3, amax_history_len, device=device, dtype=torch.float32))
        self.history_started = False  # False: scale just-in-time (module docstring); set by training/loading
        self._register_load_state_dict_pre_hook(_fill_missing_history, with_module=True)

    @classmethod
    def from_linear(cls, linear, **kwargs):
        m = cls(linear.in_features, linear.out_features, device=linear.weight.device, **kwargs)
        m.weight = linear.weight  # the same Parameter object: nothing copied, references stay valid
        return m

    def forward(self, x):
        weight, history = self.weight, self.fp8_amax_history
        if not self.emulate and x.device.type != "cuda":
            check_fp8_supported(x.device)  # raises the clear error
        if torch.is_autocast_enabled(x.device.type):
            out_dtype = torch.get_autocast_dtype(x.device.type)  # as nn.Linear under autocast
        else:
            out_dtype = x.dtype
        x2d = x.reshape(-1, self.in_features)
        # _scaled_mm needs the token count divisible by 16 too; odd counts (sampling one token
        # at a time) take the emulated product with the same quantization instead.
        emulate = self.emulate or x2d.shape[0] % FP8_DIM_MULTIPLE != 0
        with torch.no_grad():
            x_amax = tensor_amax(x2d)
            w_amax = tensor_amax(weight)
            first_step = not self.history_started
            x_scale = delayed_scale(history[INPUT], x_amax if first_step else None, E4M3,
                                    self.margin, self.amax_compute_algo)
            w_scale = delayed_scale(history[WEIGHT], w_amax if first_step else None, E4M3,
                                    self.margin, self.amax_compute_algo)
            if self.training:  # eval/validation must not move the training state
                record_amax(history[INPUT], x_amax)
                record_amax(history[WEIGHT], w_amax)
        y = _Float8LinearFunction.apply(x2d, weight, x_scale, w_scale, history, self.margin,
                                        self.amax_compute_algo, out_dtype, emulate, first_step)
        if self.training and torch.is_grad_enabled():
            self.history_started = True
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias=False, "
                f"amax_history_len={self.fp8_amax_history.shape[1]}, algo={self.amax_compute_algo}, "
                f"margin={self.margin}, emulate={self.emulate}")


def _resize_history(saved, length):
    """A saved history for another amax_history_len: keep the newest entries, pad with empty."""
    out = torch.zeros(3, length, dtype=torch.float32)
    n = min(length, saved.shape[1])
    out[:, :n] = saved[:, :n].float().cpu()
    return out


def _fill_missing_history(module, state_dict, prefix, *args):
    """Load hook: a bf16 checkpoint has no history (start empty); another length is resized."""
    key = prefix + HISTORY
    length = module.fp8_amax_history.shape[1]
    if key not in state_dict:
        state_dict[key] = torch.zeros(3, length)
    elif state_dict[key].shape[1] != length:
        state_dict[key] = _resize_history(state_dict[key], length)
    if state_dict[key].device.type != "meta":  # at load time only, so a host read is fine
        module.history_started = bool(state_dict[key].any())


# --------------------------------------------------------------------------- conversion


@dataclass
class FP8Report:
    backend: str                  # "native" | "te"
    reason: str                   # why that backend
    converted: list = field(default_factory=list)  # module names now in FP8
    kept: list = field(default_factory=list)       # (module name, why it stays high precision)
    emulate: bool = False
    amax_history_len: int = 128
    amax_compute_algo: str = "max"
    margin: int = 0

    def __str__(self):
        kept = "; ".join(f"{n} ({why})" for n, why in self.kept) or "none"
        return (f"FP8 backend={self.backend} ({self.reason}); {len(self.converted)} Linears in FP8; "
                f"kept in high precision: {kept}; embedding/output and norms stay high precision by design")

    def to_dict(self):
        return {"backend": self.backend, "reason": self.reason, "converted": list(self.converted),
                "kept": [list(k) for k in self.kept], "emulate": self.emulate,
                "amax_history_len": self.amax_history_len, "amax_compute_algo": self.amax_compute_algo,
                "margin": self.margin}


def te_available():
    try:
        importlib.import_module("transformer_engine.pytorch")
        return True, "transformer_engine.pytorch imports"
    except Exception as e:  # ImportError, or a broken install failing at load time
        return False, f"transformer_engine.pytorch does not import ({type(e).__name__}: {e})"


def _choose_backend(backend, emulate):
    if backend not in ("auto", "native", "te"):
        raise ValueError(f"fp8 backend must be 'auto', 'native' or 'te', not {backend!r}")
    if emulate:
        if backend == "te":
            raise ValueError("emulate=True is a native-backend test mode; TE has no CPU emulation")
        return "native", "emulate=True: CPU emulation of the native backend (tests only)"
    if backend == "native":
        return "native", "requested"
    ok, why = te_available()
    if backend == "te":
        if not ok:
            raise ImportError(f"fp8 backend 'te' requested but {why}; use backend='native' or 'auto'")
        return "te", "requested"
    return ("te", f"auto: {why}") if ok else ("native", f"auto: {why}; using torch._scaled_mm")


def _fp8_shape_problem(linear):
    if type(linear) is not nn.Linear:
        return f"not a plain nn.Linear ({type(linear).__name__})"
    if linear.bias is not None:
        return "has a bias"
    bad = [d for d in (linear.in_features, linear.out_features) if d % FP8_DIM_MULTIPLE]
    if bad:
        return f"shape {linear.out_features}x{linear.in_features} not divisible by {FP8_DIM_MULTIPLE}"
    return None


def _to_te_linear(te, linear):
    w = linear.weight
    if w.device.type not in ("cuda", "meta"):
        raise FP8UnsupportedError("the TE backend needs the model on a CUDA (or meta) device before "
                                  f"convert_to_fp8, but the weights are on {w.device}")
    m = te.Linear(linear.in_features, linear.out_features, bias=False, params_dtype=w.dtype, device=w.device)
    if w.device.type != "meta":
        with torch.no_grad():
            m.weight.copy_(w)
    # TE adds `<name>._extra_state` (its FP8 metadata) to the state dict; a bf16 checkpoint has
    # none, and TE's set_extra_state(None) means "nothing saved": fill it so strict loads work.
    m._register_load_state_dict_pre_hook(_fill_missing_te_extra_state, with_module=True)
    return m


def _fill_missing_te_extra_state(module, state_dict, prefix, *args):
    state_dict.setdefault(prefix + "_extra_state", None)


def convert_to_fp8(model, backend="auto", amax_history_len=128, amax_compute_algo="max", margin=0,
                   emulate=False, output_layer=False):
    """Swap the block Linears (names ending in attn.qkv, attn.out, mlp.gate_up, mlp.down) for FP8
    ones, in place; with output_layer, the chunked loss's GEMMs too (model.ce_chunks). Call
    after init and before DDP/FSDP2/torch.compile and before building the optimizers (TE makes
    new Parameters). Returns an FP8Report; print or log it."""
    chosen, reason = _choose_backend(backend, emulate)
    report = FP8Report(chosen, reason, emulate=emulate, amax_history_len=amax_history_len,
                       amax_compute_algo=amax_compute_algo, margin=margin)
    te = importlib.import_module("transformer_engine.pytorch") if chosen == "te" else None
    targets = [(name, m) for name, m in model.named_modules()
               if name.endswith(BLOCK_LINEARS) and isinstance(m, nn.Linear)]
    for name, linear in targets:
        problem = _fp8_shape_problem(linear)
        if problem:
            report.kept.append((name, problem))
            continue
        if chosen == "te":
            new = _to_te_linear(te, linear)
        else:
            new = Float8Linear.from_linear(linear, amax_history_len=amax_history_len,
                                           amax_compute_algo=amax_compute_algo, margin=margin, emulate=emulate)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        report.converted.append(name)
    other = [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in dict(report.kept)]
    report.kept += [(n, "not a block Linear") for n in other]
    if output_layer:
        chunks = model.ce_chunks  # model._ce_chunks: its loop, with FP8 products

        def output_chunks(h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, need_grads):
            return chunks(h, weight, targets, loss_weights, output_mult, chunk_rows, dtype, need_grads,
                          gemms=functools.partial(fp8_output_gemms, emulate=emulate))
        model.ce_chunks = output_chunks  # compile_by_block compiles whichever loop is there
        report.converted.append("output layer (the chunked loss's GEMMs, native)")
    else:
        report.kept.append(("output layer", "high precision (output_layer=False)"))
    return report


# --------------------------------------------------------------------------- the output layer

def output_gemm_shapes_fit(rows, d, vocab, chunk_rows):
    """Whether the output layer's FP8 GEMMs can run on _scaled_mm: it needs every GEMM
    dimension divisible by 16 (rows and chunk_rows multiples of 16 make every chunk one).
    Otherwise fp8_output_gemms does the same quantization with emulated products, for CPU
    tests and odd token counts; on a GPU that is several times slower (train.py refuses the
    shapes that would take it; model.default_chunk_rows keeps the chunks fitting)."""
    return not any(x % FP8_DIM_MULTIPLE for x in (rows, d, vocab, min(chunk_rows, rows)))


def fp8_output_gemms(h, weight, dtype, need_grads, chunk_rows, emulate=False):
    """model.output_gemms in FP8, for model._ce_chunks: logits = h·Wᵀ in E4M3 x E4M3, and g·W
    and gᵀ·h with g = d loss / d logits in E5M2. Scaling is current, not delayed: the weight's
    amax once per call, each chunk's h amax (Inductor folds both into their producers). g needs
    no amax at all: |softmax − onehot| <= 1, so |g| <= max |row weight x output_mult| bounds it
    exactly. The logits come out of the GEMM in fp32. `dtype` (the autocast dtype) is unused:
    every GEMM input is FP8."""
    n, d = h.shape
    emulate = emulate or not output_gemm_shapes_fit(n, d, weight.shape[0], chunk_rows)
    w_scale = amax_to_scale(tensor_amax(weight), E4M3)
    w_fp8 = quantize(weight, w_scale, E4M3)  # [V, d] row-major: .t() is the column-major [d, V]
    w_fp8_cm = column_major(w_fp8) if need_grads else None  # [V, d] column-major, for g·W

    def logits_of(h_c):
        h_scale = amax_to_scale(tensor_amax(h_c), E4M3)
        h_fp8 = quantize(h_c, h_scale, E4M3)
        logits = scaled_matmul(h_fp8, h_scale, w_fp8.t(), w_scale, torch.float32, emulate, use_fast_accum=True)
        return logits, (h_fp8, h_scale)

    def grads_of(g, h_in, row_scale):
        h_fp8, h_scale = h_in
        g_scale = amax_to_scale(row_scale.abs().max(), E5M2)
        g_fp8 = quantize(g, g_scale, E5M2)
        return (scaled_matmul(g_fp8, g_scale, w_fp8_cm, w_scale, h.dtype, emulate),
                scaled_matmul(g_fp8.t().contiguous(), g_scale, column_major(h_fp8), h_scale,
                              torch.float32, emulate))
    return logits_of, grads_of


def fp8_autocast_context(report, group=None):
    """Context manager around the forward pass: TE's FP8 autocast with the recipe's
    DelayedScaling for the TE backend (amax reduced over `group`), nullcontext for native."""
    if report is None or report.backend != "te":
        return contextlib.nullcontext()
    import transformer_engine.pytorch as te
    from transformer_engine.common.recipe import DelayedScaling, Format
    recipe = DelayedScaling(fp8_format=Format.HYBRID, amax_history_len=report.amax_history_len,
                            amax_compute_algo=report.amax_compute_algo, margin=report.margin)
    if hasattr(te, "autocast"):  # TE >= 2.8 renamed fp8_autocast(fp8_recipe=, fp8_group=)
        return te.autocast(enabled=True, recipe=recipe, amax_reduction_group=group)
    return te.fp8_autocast(enabled=True, fp8_recipe=recipe, fp8_group=group)


# --------------------------------------------------------------------------- checkpoints


def is_fp8_state_key(key):
    return key.endswith("." + HISTORY) or key == HISTORY or key.endswith("._extra_state")


def strip_fp8_state(state_dict):
    """The state dict without FP8 scaling state: loads into a plain bf16 model (and is what
    model.pt holds). The weight keys are identical for nn.Linear, Float8Linear and te.Linear."""
    return {k: v for k, v in state_dict.items() if not is_fp8_state_key(k)}


def fp8_state(model):
    """All FP8 scaling state, keyed like the model's state dict (for train_state.pt)."""
    return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
            for k, v in model.state_dict().items() if is_fp8_state_key(k)}


def load_fp8_state(model, state):
    """Restore fp8_state(); modules without saved state start empty. Returns the names that
    started empty (a bf16 run resumed in FP8 lists them all)."""
    state = state or {}
    fresh = []
    for name, m in model.named_modules():
        key = f"{name}.{HISTORY}" if name else HISTORY
        if isinstance(m, Float8Linear):
            with torch.no_grad():
                if key in state:
                    m.fp8_amax_history.copy_(_resize_history(state[key], m.fp8_amax_history.shape[1]))
                else:
                    m.fp8_amax_history.zero_()
                    fresh.append(name)
                m.history_started = bool(m.fp8_amax_history.any())
        elif hasattr(m, "set_extra_state") and hasattr(m, "fp8_meta"):  # a TE module
            te_key = f"{name}._extra_state"
            if state.get(te_key) is not None:
                m.set_extra_state(state[te_key])
            else:
                fresh.append(name)
    return fresh


def sync_amax_history(model, group=None):
    """All-reduce MAX of every Float8Linear history (one collective), so data-parallel ranks
    share one scaling state, as TE's amax reduction does. No-op without torch.distributed."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    histories = [m.fp8_amax_history for m in model.modules() if isinstance(m, Float8Linear)]
    if not histories:
        return
    flat = torch.cat([h.reshape(-1) for h in histories])
    dist.all_reduce(flat, op=dist.ReduceOp.MAX, group=group)
    with torch.no_grad():
        for h, new in zip(histories, flat.split([h.numel() for h in histories])):
            h.copy_(new.view_as(h))

"""
Muon's optimizer step on one GPU at the full model's shapes (RECIPE §1: 48 blocks of qkv
2560x1536, out 1536x1536, gate_up 7680x1536, down 1536x3840), against fused AdamW, and the
Newton–Schulz work one rank does when the step is split over W data-parallel ranks.

    python gpu_tests/muon_bench.py
    python gpu_tests/muon_bench.py --profile    # also Muon.step's GPU kernels, largest first
    python gpu_tests/muon_bench.py --bytes      # on a CPU: Muon.step's memory traffic by pass
    python gpu_tests/muon_bench.py --numerics   # on a CPU: Newton–Schulz forms vs float64

Rows:
- AdamW (fused) over every parameter: the optimizer train.py runs before the switch.
- AdamW for embedding/norms + Muon for the hidden matrices: the optimizers after the switch.
- Newton–Schulz of the busiest rank for W = 1, 2, 4, 8: the blocks muon.assign_blocks gives
  that rank, run on this one GPU. This is the compute part of the distributed step; the
  all_gather that shares the results (2 bytes per matrix element, ~2.3 GB over all ranks
  together) is not in it: that needs the several-GPU machine.
- Newton–Schulz by shape in the textbook form (baddbmm with beta, tall matrices as transposed
  views: muon.py before its non-GEMM passes were removed) and as muon.newton_schulz runs it
  now, on the same bf16 stacks, one after the other in this run; each against an fp32
  evaluation of the textbook form.
Times are medians of CUDA-event timings after warm-up; gradients are random (never zeros).
"""
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_tests.common import kernel_times, median_ms  # noqa: E402
from model import Xmodel, model_config  # noqa: E402
from mup import param_groups  # noqa: E402
from muon import (NS_COEFFICIENTS, Muon, assign_blocks, newton_schulz, ns_flops,  # noqa: E402
                  split_groups_for_muon)


def _wide_and_normalised(G, dtype, eps):
    """G in dtype, tall matrices transposed (the quintic's textbook orientation), divided by
    its Frobenius norm -> (X, transposed)."""
    X = G.to(dtype)
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    return X / (X.norm(dim=(-2, -1), keepdim=True) + eps), transposed


def newton_schulz_textbook(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7, dtype=torch.bfloat16):
    """muon.newton_schulz before (and torch.optim.Muon's form): baddbmm(X, B, X, beta=a) copies X,
    baddbmm(A, A, A, beta=b) copies A, and a tall X.mT is copied transposed at the first step.
    tests/test_muon.py checks the current form against it in float64."""
    a, b, c = coefficients
    X, transposed = _wide_and_normalised(G, dtype, eps)
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    return X.mT if transposed else X


def newton_schulz_separate_ops(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7):
    """The reference implementation's form (Keller Jordan's Muon): every op rounds to bf16."""
    a, b, c = coefficients
    X, transposed = _wide_and_normalised(G, torch.bfloat16, eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if transposed else X


def newton_schulz_rounded_constants(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7):
    """Rejected: the completed square with h and k added to bf16 diagonals (no copies either)."""
    a, b, c = coefficients
    h, k = b / (2 * c), a - b * b / (4 * c)
    X = G.bfloat16()
    tall = X.size(-2) > X.size(-1)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X.mT @ X if tall else X @ X.mT
        A.diagonal(dim1=-2, dim2=-1).add_(h)
        P = torch.baddbmm(A, A, A, beta=0, alpha=c)
        P.diagonal(dim1=-2, dim2=-1).add_(k)
        X = X @ P if tall else P @ X
    return X


def print_numerics():
    """--numerics (a CPU): each bf16 form against float64 of the same quintic."""
    forms = (("textbook (baddbmm with beta; before)", newton_schulz_textbook),
             ("completed square, unit diagonals (now)", newton_schulz),
             ("separate element-wise ops (reference implementation)", newton_schulz_separate_ops),
             ("completed square, h and k on bf16 diagonals (rejected)", newton_schulz_rounded_constants))
    cases = [("gradient-like", (2, 256, 512)), ("gradient-like", (2, 512, 256)),
             ("Gaussian", (4, 192, 64)), ("Gaussian", (2, 384, 384))]
    print("bf16 Newton–Schulz vs float64 of the same quintic: worst relative Frobenius difference "
          "over the stack, and output RMS / float64's - 1\n")
    print("| form | " + " | ".join(f"{kind} {tuple(shape)}" for kind, shape in cases) + " |")
    print("|---|" + "---|" * len(cases))
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for kind, (n, rows, cols) in cases:
        G = torch.randn(n, rows, cols, generator=gen)
        if kind == "gradient-like":  # plus a rank-8 part
            G = G + torch.randn(n, rows, 8, generator=gen) @ torch.randn(n, 8, cols, generator=gen) * 2 / 3
        ref = newton_schulz_textbook(G.double(), dtype=torch.float64)
        inputs.append((G, ref))
    for label, ns in forms:
        cells = []
        for G, ref in inputs:
            O = ns(G).double()
            err = ((O - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max().item()
            drift = (O.square().mean() / ref.square().mean()).sqrt().item() - 1
            cells.append(f"{err:.4f}, {drift:+.2%}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def _is_gemm(kernel_name):
    return any(k in kernel_name for k in ("nvjet", "gemm", "cutlass", "xmma"))


def main():
    torch.manual_seed(0)
    model = Xmodel(model_config("xmodel-2.5")).cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    groups = param_groups(model, weight_decay=0.1)
    adamw_all = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    adamw_groups, muon_groups = split_groups_for_muon(param_groups(model, weight_decay=0.1))
    adamw_rest = torch.optim.AdamW(adamw_groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    muon = Muon(muon_groups, lr=1e-4)
    matrices = [p for g in muon_groups for p in g["params"]]
    total_flops = sum(ns_flops(*p.shape) for p in matrices)

    rows = []
    t_adamw = median_ms(adamw_all.step)
    rows.append(("AdamW (fused), all parameters", t_adamw, ""))
    t_rest = median_ms(adamw_rest.step)
    t_muon = median_ms(muon.step)
    rows.append(("AdamW (embedding, norms) + Muon (hidden matrices)", t_rest + t_muon,
                 f"Muon alone {t_muon:.1f} ms; {t_muon / t_adamw:.1f}x AdamW's whole step"))
    grads = [p.grad for p in matrices]
    ns_all = None
    for world in (1, 2, 4, 8):
        owner, load = assign_blocks([ns_flops(*g.shape) for g in grads], world)
        busiest = max(range(world), key=lambda r: load[r])
        mine = [g for g, o in zip(grads, owner) if o == busiest]
        t = median_ms(lambda: [newton_schulz(g) for g in mine])
        ns_all = ns_all or t
        rows.append((f"Newton–Schulz of the busiest rank, {world} rank(s)", t,
                     f"{len(mine)} matrices, {load[busiest] / t / 1e9:.0f} TFLOP/s, "
                     f"{ns_all / t:.2f}x faster than 1 rank (ideal {world})"))
    # Same-shape matrices stacked into one batched product per shape (fewer, larger kernels;
    # newton_schulz takes a stack), as Muon.step does it, against the per-matrix loop above.
    by_shape = {}
    for g in grads:
        by_shape.setdefault(tuple(g.shape), []).append(g)
    gs = next(iter(by_shape.values()))
    stacked, alone = newton_schulz(torch.stack(gs)).float(), [newton_schulz(g).float() for g in gs]
    diff = max(((s - o).norm() / o.norm()).item() for s, o in zip(stacked, alone))
    t = median_ms(lambda: [newton_schulz(torch.stack(gs)) for gs in by_shape.values()])
    rows.append(("Newton–Schulz batched by shape, 1 rank (as Muon.step)", t,
                 f"{len(by_shape)} batches, {total_flops / t / 1e9:.0f} TFLOP/s, {ns_all / t:.2f}x the per-matrix loop; "
                 f"relative difference to it {diff:.1e}"))
    # The two Newton–Schulz forms on the same stacks (the inputs Muon.step builds: bf16, by shape)
    stacks = [torch.stack(gs).bfloat16() for gs in by_shape.values()]
    forms = (("textbook form (before)", newton_schulz_textbook), ("completed square (now)", newton_schulz))
    torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 reference
    refs = [newton_schulz_textbook(st.float(), dtype=torch.float32) for st in stacks]
    t_forms = {}
    for label, ns in forms:
        outs = [ns(st) for st in stacks]
        err = max(((o.float() - r).flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)).max().item()
                  for o, r in zip(outs, refs))
        rms = sum(o.float().square().sum().item() for o in outs) / sum(r.square().sum().item() for r in refs)
        del outs
        t_forms[label] = t = median_ms(lambda: [ns(st) for st in stacks])
        rows.append((f"Newton–Schulz by shape on bf16 stacks, {label}", t,
                     f"{total_flops / t / 1e9:.0f} TFLOP/s; vs fp32: worst relative difference {err:.4f}, "
                     f"RMS ratio {rms ** 0.5:.4f}"))
    del refs
    t_b, t_n = t_forms.values()
    rows.append(("  the completed square's gain", t_b - t_n, f"{t_b / t_n:.3f}x"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {len(matrices)} Muon matrices, "
          f"Newton–Schulz {total_flops / 1e12:.1f} TFLOP per step (5 steps, bf16)\n")
    print("| what | median ms | notes |\n|---|---|---|")
    for what, ms, note in rows:
        print(f"| {what} | {ms:.1f} | {note} |")
    if "--profile" in sys.argv[1:]:
        # Where Muon.step's time goes beyond Newton–Schulz (momentum, stack copies, update)
        kernels = kernel_times(muon.step, warmup=3, iters=5)
        total = sum(k[1] for k in kernels)
        print(f"\nMuon.step, GPU kernel time {total / 1e3:.1f} ms per step (wall {t_muon:.1f} ms)\n")
        print("| kernel | ms per step | launches per step | share |\n|---|---|---|---|")
        for name, us, count in kernels[:20]:
            print(f"| {name[:90]} | {us / 1e3:.2f} | {count:.0f} | {us / total:.1%} |")
        # The two Newton–Schulz forms: GEMM kernels vs everything else (copies, element-wise)
        print("\nNewton–Schulz by shape (4 stacks), GPU kernel time per call\n")
        print("| form | GEMM ms | other ms | other launches |\n|---|---|---|---|")
        for label, ns in forms:
            kernels = kernel_times(lambda: [ns(st) for st in stacks], warmup=2, iters=5)
            gemm = sum(us for name, us, _ in kernels if _is_gemm(name)) / 1e3
            other = sum(us for name, us, _ in kernels if not _is_gemm(name)) / 1e3
            launches = sum(n for name, _, n in kernels if not _is_gemm(name))
            print(f"| {label} | {gemm:.2f} | {other:.2f} | {launches:.0f} |")


# ---------------------------------------------------------------------------------------
# --bytes (runs on a CPU): the memory traffic of one Muon.step at the full model's shapes,
# pass by pass, counted on the meta device (shapes and dtypes, no data, no arithmetic).
# Each PyTorch op is charged what it must read and write at least: element-wise ops their
# inputs and outputs; a GEMM its operands and result; and a baddbmm/addmm with beta != 0 also
# the copy of its input into the new result it makes before the GEMM (PyTorch's baddbmm does
# `result.copy_(input)` when beta != 0), which a plain tensor-level count would miss.

def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for y in x for t in _tensors(y)]
    return []


def _nbytes(ts):
    return sum(t.numel() * t.element_size() for t in ts)


def _pass_name(name, reads, writes):
    """A readable name for one op of Muon.step (the ops its code issues, old and new)."""
    out = writes[0] if writes else None
    small = out is not None and out.numel() < 1e5
    if name == "add.out":
        return "momentum buf <- g + mu*buf (fp32)" if out.dtype == torch.float32 else \
            "Nesterov input g + mu*buf -> bf16"
    if name == "copy_.default":
        return "copy into a stack (bf16)"
    if name in ("linalg_vector_norm.default",):
        return "Frobenius norm (read)"
    if name == "div.Tensor":
        return "normalisation X / (norm + eps)"
    if name in ("bmm.default", "mm.default", "baddbmm.default", "addmm.default"):
        return "Newton-Schulz GEMMs (operands + results)"
    if name in ("add_.Tensor", "sub_.Tensor") and out.dtype == torch.bfloat16:
        return "Newton-Schulz: diagonal add (m elements per matrix)"
    if name == "_foreach_mul_.Scalar":
        return "decay W *= 1 - lr*wd (foreach)"
    if name in ("_foreach_add_.List", "add_.Tensor"):
        strided = any(not t.is_contiguous() for t in reads)
        return "update W -= lr*scale*O" + (", O a transposed view (strided reads)" if strided else "")
    return name + (" (small)" if small else "")


class _TrafficCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.passes = {}  # name -> [bytes, ops]

    def _charge(self, name, nbytes, ops=1):
        entry = self.passes.setdefault(name, [0, 0])
        entry[0] += nbytes
        entry[1] += ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        schema = func._schema
        if schema.returns and all(r.alias_info is not None and not r.alias_info.is_write
                                  for r in schema.returns):
            return result  # a view: no memory traffic
        name = f"{schema.name.split('::')[1]}.{func._overloadname}"
        if name.startswith(("empty", "new_empty", "_unsafe_view", "_record_function")):
            return result  # an allocation, a view, or the profiler's marker
        reads, writes = [], []
        given = dict(zip([a.name for a in schema.arguments if not a.kwarg_only], args), **kwargs)
        for a in schema.arguments:
            ts = _tensors(given.get(a.name))
            if a.alias_info is not None and a.alias_info.is_write:  # out=, or in place
                writes += ts
                if a.name != "out" and name != "copy_.default":
                    reads += ts  # add_, mul_: read, then written
            else:
                reads += ts
        writes = writes or _tensors(result)
        kernels = 1
        if name.startswith("_foreach"):
            kernels = len(_tensors(args[0]))
            if len({t.dtype for t in reads + writes}) > 1:
                name = "add_.Tensor"  # mixed dtypes: foreach runs one add_ per tensor
            else:
                kernels = 1  # one multi-tensor launch per few dozen tensors; counted as one
        self._charge(_pass_name(name, reads, writes), _nbytes(reads) + _nbytes(writes), kernels)
        if name in ("baddbmm.default", "addmm.default") and kwargs.get("beta", 1) != 0:
            what = "a strided (transposing) copy" if not args[0].is_contiguous() else "a copy"
            self._charge(f"Newton-Schulz: baddbmm's input, {what} into its result",
                         2 * _nbytes(_tensors(result)))
        return result


def traffic_by_pass():
    """{pass: (bytes, ops)} of one Muon.step at the full model's shapes, counted on meta."""
    with torch.device("meta"):
        model = Xmodel(model_config("xmodel-2.5"))
    _, muon_groups = split_groups_for_muon(param_groups(model, weight_decay=0.1))
    for g in muon_groups:
        for p in g["params"]:
            p.grad = torch.empty_like(p)
    opt = Muon(muon_groups, lr=1e-4)
    opt.step()  # creates the momentum buffers; the second step is the steady state
    with _TrafficCounter() as counter:
        opt.step()
    return counter.passes


def print_traffic():
    passes = traffic_by_pass()
    total = sum(b for b, _ in passes.values())
    print("Muon.step at the full model's shapes: memory traffic by pass (meta device; GB = 1e9 B)\n")
    print("| pass | GB | ops |\n|---|---|---|")
    for name, (b, n) in sorted(passes.items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {b / 1e9:.2f} | {n} |")
    gemm = passes.get("Newton-Schulz GEMMs (operands + results)", (0, 0))[0]
    print(f"| all | {total / 1e9:.2f} | {sum(n for _, n in passes.values())} |")
    print(f"\nnon-GEMM traffic: {(total - gemm) / 1e9:.2f} GB")


if __name__ == "__main__":
    flags = set(sys.argv[1:])
    if flags & {"-h", "--help"}:
        sys.exit(print(__doc__))
    if flags - {"--profile", "--bytes", "--numerics"}:
        sys.exit(f"muon_bench.py: unknown flag(s) {' '.join(sorted(flags - {'--profile', '--bytes', '--numerics'}))}; "
                 f"it takes --profile, --bytes or --numerics (--help)")
    if "--bytes" in flags:
        print_traffic()
    elif "--numerics" in flags:
        print_numerics()
    elif not torch.cuda.is_available():
        sys.exit("muon_bench.py times Muon on a GPU and this machine has none: run it on a GPU "
                 "machine, or use --bytes / --numerics here")
    else:
        main()

"""Muon for the hidden matrices, as the recipe's decay phase uses it (RECIPE §2).

Per Muon parameter W (2-D, shape rows x cols), with gradient G and group lr, weight_decay:
    B  <- mu*B + G                        summed momentum, mu = 0.95 (the fork / Moonlight)
    U  <- G + mu*B                        Nesterov
    O  <- NS5(U)                          Newton–Schulz quintic, 5 steps, coefficients
                                          (3.4445, -4.7750, 2.0315), on U/(||U||_F + 1e-7),
                                          on the short side (rows > cols: from the right),
                                          in bf16
    W  <- W * (1 - lr*weight_decay)       decoupled decay with the unadjusted LR
    W  <- W - lr * 0.2*sqrt(max(rows, cols)) * O
The 0.2*sqrt(max) factor gives O the RMS of a typical AdamW update (~0.2; Moonlight, arXiv
2502.16982), so the group LRs and weight decay of AdamW (including µP's lr_mult) are reused
unchanged: train.py sets group["lr"] = schedule_lr * group["lr_mult"] for both optimizers.

torch.optim.Muon(adjust_lr_fn="match_rms_adamw") is the same rule except for the momentum:
it keeps an EMA, B' = mu*B' + (1-mu)*G, so B' = (1-mu)*B and its U' = (1-mu)*U at every
step; the Frobenius normalisation removes that constant factor (up to bf16 rounding of the
scaled input). Its Newton–Schulz rounds a*X + B@X through baddbmm's beta, ours p(A) X with
p(A) built on the small side (newton_schulz): equal up to bf16 rounding, not bit for bit.
tests/test_muon.py uses it as the oracle.

bf16: the NS iteration runs in `ns_dtype` (default bf16, as the fork) on CPU too, so CPU
tests see the numerics of a GPU run; pass ns_dtype=torch.float32 for an exact-math variant.
Output singular values land in about [0.7, 1.2], not exactly 1 (the quintic trades
convergence for slope at 0); see tests/test_muon.py for the measured error vs the polar factor.

Fused matrices: model.py keeps QKV fused [(n_head + 2*n_kv_head)*head_dim, d] and gate|up
fused [2*d_ffn, d]. By default (the recipe) each fused matrix is orthogonalized whole and the
0.2*sqrt(max) factor uses the fused shape. Ablation: a group may carry
"row_splits" = [sizes or None per param]; a param with sizes (e.g. (q, k, v) rows) has each
row block orthogonalized separately with its own 0.2*sqrt(max(block_rows, cols)).
`add_fused_row_splits(groups, model_config)` fills it from the parameter names.

Distributed (chosen automatically when torch.distributed is initialized with world > 1;
distributed=False forces the local path). Assumes what DDP and FSDP2 guarantee: every rank
steps the same parameters with the same (all-reduced) gradients, in the same order.
- Plain tensors (DDP): every rank holds the same all-reduced gradient, so every rank updates
  the momentum of every matrix (cheap, element-wise; keeps optimizer state identical on all
  ranks, so any rank's state_dict is the checkpoint). The Newton–Schulz work (the expensive
  part) is split: matrices (or row blocks) go to ranks greedily by their NS FLOPs
  (assign_blocks), each rank writes the Nesterov input of its own blocks and orthogonalizes
  them, and one all_gather of a flat bf16 buffer shares the results. Every rank then applies
  identical bits: the same result as one process.
- DTensors (FSDP2 fully_shard): momentum lives on the local shard (element-wise, so the shard
  of the full-matrix momentum exactly; the state is sharded like the parameter, which
  torch.distributed.checkpoint saves and reshards). The Nesterov input is cast to ns_dtype
  (NS casts first anyway, so this is exact) and gathered with full_tensor(); from there the
  DDP path runs (owner computes NS, all_gather); each rank slices its own shard of O with
  distribute_tensor(..., src_data_rank=None) (a local slice, no communication).
  Transient memory: the full bf16 update of every Muon matrix on every rank.
Newton–Schulz runs one stacked product per matrix shape (the 48 blocks' gate_up matrices at
once, and so on): fewer, larger kernels, the same bits, and a transient of a few stacks of one
shape (~4 GB for the full model's gate_up, while the step's activations are already freed).
Each matrix's Nesterov input is written by one kernel straight into its slot of the stack.
"""
import math

import torch
import torch.distributed as dist

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic, Keller Jordan; the fork uses the same


def _is_dtensor(t):
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return False
    return isinstance(t, DTensor)


def _scaled_matmul(x, y, alpha):
    """alpha * (x @ y) for matrices or stacks, alpha applied in the GEMM's fp32 epilogue
    (exact; no element-wise pass). beta=0: baddbmm then neither reads nor copies its input."""
    matmul = torch.addmm if x.ndim == 2 else torch.baddbmm
    return matmul(x.new_empty(()), x, y, beta=0, alpha=alpha)


def newton_schulz(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7, dtype=torch.bfloat16):
    """Approximate orthogonal polar factor U V^T of the 2-D matrix G (G = U S V^T), or of each
    matrix of a stack [batch, rows, cols]. Returns a contiguous tensor of `dtype`, shaped like G.
    Works on the short side: A = X X^T is min(rows, cols)^2; wide matrices are multiplied from
    the left, tall ones from the right (A = X^T X), so nothing is transposed in memory.

    Each step is X <- p(A) X, p(A) = a*I + b*A + c*A^2. The textbook form, B = b*A + c*A@A
    then X = a*X + B@X as baddbmm with beta (torch.optim.Muon), makes baddbmm copy its input
    (X, the whole stack, and A) into each new result first: 29 of the 90 GB of non-GEMM
    traffic of a full-model step (docs/PERFORMANCE.md, "Muon's non-GEMM passes"). Here p(A)
    is built on the m x m side with the square completed, p(A) = c*(A + h*I)^2 + k*I
    (h = b/2c, k = a - b^2/4c), and written as k*(Q + I) with Q = (c/(k*s^2)) * (s*A - I)^2,
    s = -1/h: every constant is a GEMM's alpha (exact, fp32) or an identity added to a
    diagonal (1 is exact in bf16). Measured on a CPU against float64 of the same quintic
    (gpu_tests/muon_bench.py --numerics, tests/test_muon.py): 1.1-1.4x the textbook form's
    error, half that of the reference implementation's separate element-wise ops, and no
    drift of the output's scale. Adding h and k to bf16 diagonals instead rounds every
    diagonal element the same way: 1.9-2.7x the error and an output up to 2.1% smaller.
    On one H200 at the full model's stacks: 67.5 ms against the textbook form's 80.5, the
    GEMMs unchanged (62.5 ms), the other kernels 15.9 -> 4.6 ms (docs/PERFORMANCE.md)."""
    if G.ndim not in (2, 3):
        raise ValueError(f"newton_schulz needs a 2-D matrix or a 3-D stack, got shape {tuple(G.shape)}")
    check_ns_coefficients(coefficients)
    a, b, c = coefficients
    h, k = b / (2 * c), a - b * b / (4 * c)
    s = -1 / h
    X = G.to(dtype)
    tall = X.size(-2) > X.size(-1)
    # spectral norm <= Frobenius norm <= 1: inside NS's basin
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        S = _scaled_matmul(X.mT, X, s) if tall else _scaled_matmul(X, X.mT, s)   # s*A
        S.diagonal(dim1=-2, dim2=-1).sub_(1)                                     # s*(A + h*I)
        Q = _scaled_matmul(S, S, c / (k * s * s))                               # (c/k)*(A + h*I)^2
        Q.diagonal(dim1=-2, dim2=-1).add_(1)                                     # p(A) / k
        X = _scaled_matmul(X, Q, k) if tall else _scaled_matmul(Q, X, k)         # p(A) X
    return X


def check_ns_coefficients(coefficients):
    """The completed square needs b, c and k = a - b^2/4c non-zero (the recipe's quintic:
    h = -1.18, k = 0.64). Raises ValueError naming the problem otherwise."""
    if len(coefficients) != 3:
        raise ValueError(f"ns_coefficients must be (a, b, c), got {tuple(coefficients)}")
    a, b, c = coefficients
    if b == 0 or c == 0 or a == b * b / (4 * c):
        raise ValueError(f"ns_coefficients {tuple(coefficients)}: newton_schulz needs b != 0, "
                         f"c != 0 and a != b^2/4c (a quintic whose square can be completed)")


def ns_flops(rows, cols, steps=5):
    """Matmul FLOPs of newton_schulz on a rows x cols matrix (m = short side, n = long side):
    per step A = X X^T (2m^2 n), the m x m square (2m^3), p(A) X (2m^2 n)."""
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m ** 3)


def assign_blocks(costs, world):
    """Owner rank of each Newton–Schulz block: largest cost first onto the least-loaded rank.
    Deterministic, so every rank derives the same assignment without communicating.
    Returns (owner per block, total cost per rank)."""
    owner, load = [0] * len(costs), [0] * world
    for j in sorted(range(len(costs)), key=lambda j: -costs[j]):
        r = min(range(world), key=lambda r: load[r])
        owner[j] = r
        load[r] += costs[j]
    return owner, load


def update_scale(rows, cols, matched_adamw_rms=0.2):
    """0.2*sqrt(max(rows, cols)) (RECIPE §2, `--muon-matched-adamw-rms 0.2`): an orthogonal
    rows x cols matrix has RMS 1/sqrt(max(rows, cols)); this brings it to ~0.2."""
    return matched_adamw_rms * math.sqrt(max(rows, cols))


class Muon(torch.optim.Optimizer):
    """Muon for 2-D hidden matrices. Param groups carry lr and weight_decay (as for AdamW;
    extra keys such as lr_mult, names, role are kept and ignored), optionally row_splits."""

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_steps=5, ns_coefficients=NS_COEFFICIENTS, eps=1e-7, matched_adamw_rms=0.2,
                 ns_dtype=torch.bfloat16, distributed=None, process_group=None):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(f"bad Muon hyper-parameters lr={lr} weight_decay={weight_decay} "
                             f"momentum={momentum}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients), eps=eps,
                        matched_adamw_rms=matched_adamw_rms, row_splits=None)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        self.distributed = distributed    # None: auto (dist initialized and world > 1)
        self.process_group = process_group
        for group in self.param_groups:
            check_ns_coefficients(group["ns_coefficients"])  # the default's, or the group's own
            splits = group["row_splits"]
            if splits is not None and len(splits) != len(group["params"]):
                raise ValueError("row_splits must have one entry (sizes or None) per param")
            for i, p in enumerate(group["params"]):
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got shape {tuple(p.shape)}"
                                     f"{_name_hint(group, i)}; route others to AdamW")
                if splits is not None and splits[i] is not None and sum(splits[i]) != p.shape[0]:
                    raise ValueError(f"row_splits {tuple(splits[i])} do not sum to {p.shape[0]} "
                                     f"rows{_name_hint(group, i)}")

    def _world(self):
        use = self.distributed
        if use is None:
            use = dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1
        if not use:
            return 0, 1
        return dist.get_rank(self.process_group), dist.get_world_size(self.process_group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # 1. Momentum, in place on the state (never on p.grad): buf <- g + mu*buf, one kernel
        # per matrix that reads g and buf once (fp32, as large as the matrices: 1.15B at full size).
        items = []  # (group index, param, gathered Nesterov input or None, [(row0, row1), ...])
        for gi, group in enumerate(self.param_groups):
            mu = group["momentum"]
            splits = group["row_splits"] or [None] * len(group["params"])
            for p, sizes in zip(group["params"], splits):
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                torch.add(g, buf, alpha=mu, out=buf)
                gathered = None
                if _is_dtensor(g):  # FSDP2: every rank gathers every whole matrix (a collective)
                    U = torch.add(g, buf, alpha=mu, out=torch.empty_like(g, dtype=self.ns_dtype)) \
                        if group["nesterov"] else buf.to(self.ns_dtype)
                    gathered = U.full_tensor()
                edges = [0]
                for n in (sizes or [p.shape[0]]):
                    edges.append(edges[-1] + n)
                items.append((gi, p, gathered, list(zip(edges, edges[1:]))))

        # 2. Newton–Schulz, split over ranks when distributed. The Nesterov input is written
        # where Newton–Schulz reads it, in the stacks (_newton_schulz_by_shape).
        blocks = [(k, r0, r1) for k, (_, _, _, spans) in enumerate(items) for r0, r1 in spans]
        results = self._orthogonalize(items, blocks)

        # 3. Decoupled weight decay and the scaled update, identical on every rank; the decay
        # as one foreach per group and update scale (the matrices of one shape).
        whole = {}  # (group index, scale) -> ([param or its local shard], [its part of O])
        for k, (gi, p, _, spans) in enumerate(items):
            group = self.param_groups[gi]
            lr, cols = group["lr"], p.shape[1]
            scales = [update_scale(r1 - r0, cols, group["matched_adamw_rms"]) for r0, r1 in spans]
            outs = [results[(k, r0)] for r0, _ in spans]
            O = outs[0] if len(outs) == 1 else torch.cat(outs)
            local = p.to_local() if _is_dtensor(p) else p
            if len(spans) == 1:
                # (the fork and torch.optim.Muon: p.add_(O, alpha=-adjusted_lr))
                params, updates = whole.setdefault((gi, scales[0]), ([], []))
                params.append(local)
                updates.append(_local_part(O, p))
            else:  # split ablation: one scale per row block
                local.mul_(1 - lr * group["weight_decay"])
                row_scale = torch.cat([torch.full((r1 - r0, 1), s, dtype=torch.float32)
                                       for (r0, r1), s in zip(spans, scales)]).to(O.device)
                scaled = O.to(torch.float32) * row_scale
                local.add_(_local_part(scaled, p).to(local.dtype), alpha=-lr)
        for (gi, scale), (params, updates) in whole.items():
            group = self.param_groups[gi]
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            # One add_ per matrix: torch._foreach_add_ runs this same loop (its fused kernel
            # needs one dtype; these are fp32 weights and a bf16 O: the H200 profile's 192
            # per-matrix add kernels). O is contiguous (newton_schulz transposes nothing), so
            # each add_ reads it in order; a transposed O was read strided (docs/PERFORMANCE.md).
            for w, O in zip(params, updates):
                w.add_(O, alpha=-group["lr"] * scale)
        return loss

    def _orthogonalize(self, items, blocks):
        """{(item, row0): O} for every block; each rank computes only the blocks it owns."""
        rank, world = self._world()
        if world == 1:
            return self._newton_schulz_by_shape(items, blocks)
        cols = [items[k][1].shape[1] for k, _, _ in blocks]
        sizes = [(r1 - r0) * c for (_, r0, r1), c in zip(blocks, cols)]
        owner, _ = assign_blocks([ns_flops(r1 - r0, c) for (_, r0, r1), c in zip(blocks, cols)], world)
        elements = [0] * world
        for j, r in enumerate(owner):
            elements[r] += sizes[j]
        device = items[0][1].device if items else torch.device("cpu")
        flat = torch.zeros(max(elements), dtype=self.ns_dtype, device=device)
        mine = self._newton_schulz_by_shape(items, [b for b, r in zip(blocks, owner) if r == rank])
        offset = 0
        for j, (k, r0, r1) in enumerate(blocks):
            if owner[j] == rank:
                flat[offset:offset + sizes[j]] = mine[(k, r0)].reshape(-1)
                offset += sizes[j]
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat, group=self.process_group)
        results, offsets = {}, [0] * world
        for j, (k, r0, r1) in enumerate(blocks):
            r = owner[j]
            results[(k, r0)] = gathered[r][offsets[r]:offsets[r] + sizes[j]].view(r1 - r0, cols[j])
            offsets[r] += sizes[j]
        return results

    def _newton_schulz_by_shape(self, items, blocks):
        """{(item, row0): O} for blocks [(item, row0, row1)]. Blocks of one shape (and NS
        settings) go through newton_schulz as one stack: one batched product per shape instead
        of one per matrix (48 of each of 4 shapes at full size; 1.13x on an H100, same bits:
        muon_bench.py). Each block's Newton–Schulz input is written straight into its slot."""
        by_shape = {}
        for k, r0, r1 in blocks:
            gi, p = items[k][:2]
            g = self.param_groups[gi]
            setting = ((r1 - r0, p.shape[1]), g["ns_steps"], g["ns_coefficients"], g["eps"])
            by_shape.setdefault(setting, []).append((k, r0, r1))
        out = {}
        for (shape, steps, coefficients, eps), members in by_shape.items():
            device = items[members[0][0]][1].device
            stack = torch.empty((len(members), *shape), dtype=self.ns_dtype, device=device)
            for i, (k, r0, r1) in enumerate(members):
                self._write_ns_input(stack[i], items[k], r0, r1)
            for (k, r0, _), o in zip(members, newton_schulz(stack, steps, coefficients, eps, self.ns_dtype)):
                out[(k, r0)] = o
        return out

    def _write_ns_input(self, out, item, r0, r1):
        """Rows r0:r1 of the Nesterov input g + mu*buf (or of buf, without Nesterov), written
        in ns_dtype into `out`, a slot of a stack: one pass that reads g and buf and writes bf16,
        instead of a bf16 tensor copied into the stack afterwards (4.6 GB less a step at the full
        model's shapes; docs/PERFORMANCE.md, "Muon's non-GEMM passes")."""
        gi, p, gathered, _ = item
        if gathered is not None:  # FSDP2: already whole, in ns_dtype
            out.copy_(gathered[r0:r1])
            return
        group = self.param_groups[gi]
        buf = self.state[p]["momentum_buffer"][r0:r1]
        if group["nesterov"]:
            torch.add(p.grad[r0:r1], buf, alpha=group["momentum"], out=out)
        else:
            out.copy_(buf)


def _local_part(full, p):
    """This rank's part of a full-shape tensor for parameter p (itself for plain tensors)."""
    if not _is_dtensor(p):
        return full
    from torch.distributed.tensor import distribute_tensor
    # src_data_rank=None: every rank already holds `full`; just slice, no communication.
    return distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local()


def _name_hint(group, i):
    names = group.get("names")
    return f" ({names[i]})" if names and i < len(names) else ""


# ---------------------------------------------------------------------------------------
# Routing: which parameters Muon gets (RECIPE §2).

def is_muon_param(name, param):
    """Hidden matrices only. The tied embedding/output is 2-D but stays on AdamW: a plain
    `ndim == 2` filter putting it under Muon is a known failure mode (RECIPE §2)."""
    return param.ndim == 2 and name.split(".")[0] not in ("embed", "lm_head", "output")


def split_groups_for_muon(groups):
    """mup.param_groups dicts -> (adamw_groups, muon_groups): role 'matrix' goes to Muon,
    'embedding' and 'norm' stay on AdamW. Returns shallow copies (same tensors)."""
    adamw, muon = [], []
    for g in groups:
        role = g.get("role")
        if role == "matrix":
            names = g.get("names") or [""] * len(g["params"])
            for name, p in zip(names, g["params"]):
                if not is_muon_param(name or "blocks.", p):
                    raise ValueError(f"group role 'matrix' holds {name or 'a tensor'} of shape "
                                     f"{tuple(p.shape)}, which must not go to Muon")
            muon.append(dict(g))
        elif role in ("embedding", "norm"):
            adamw.append(dict(g))
        else:
            raise ValueError(f"unknown param group role {role!r} (expected embedding|matrix|norm)")
    return adamw, muon


def fused_row_splits(name, n_head, n_kv_head, head_dim, d_ffn):
    """Logical row blocks of a fused matrix (for the split ablation), else None."""
    if name.endswith("attn.qkv.weight"):
        return (n_head * head_dim, n_kv_head * head_dim, n_kv_head * head_dim)  # q | k | v
    if name.endswith("mlp.gate_up.weight"):
        return (d_ffn, d_ffn)  # gate | up
    return None


def add_fused_row_splits(groups, model_config):
    """Set group["row_splits"] from group["names"]: the per-logical-matrix ablation."""
    c = model_config
    for g in groups:
        g["row_splits"] = [fused_row_splits(n, c.n_head, c.n_kv_head, c.head_dim, c.d_ffn)
                           for n in g["names"]]
    return groups

"""Multi-resolution hash encoding (Instant-NGP) in pure PyTorch, with a tinycudann backend.

Conventions follow tinycudann so parameters are interchangeable with its `HashGrid`:
level l has scale s_l = base_resolution * per_level_scale**l - 1, a point x in [0,1]^3 sits at
grid position x * s_l + 0.5, the level has ceil(s_l) + 1 vertices per axis, and is stored
densely when that many vertices fit in the table (2**log2_hashmap_size entries), else hashed
with the primes (1, 2654435761, 805459861) xor-combined. All levels live in ONE parameter
tensor `table [F, total_entries]` (feature-major; each level at its own column offset; the
transpose of tcnn's layout).

Speed on CPU comes from memory behaviour: levels are processed in groups (by default one
level each: its block of the table stays in cache while every point visits it; measured faster
than one gather over all levels), points in chunks (the
[Lg,8,n] corner tensors are reused by the allocator instead of page-faulted afresh),
corner-major layouts (every elementwise op runs over a long contiguous point axis), and a
backward that recomputes corners instead of saving [N,L,8] tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from einops import rearrange

from gen3d.config import ranged

PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    n_levels: int = ranged(12, ge=1, le=64)
    n_features_per_level: int = ranged(2, ge=1, le=64)
    log2_hashmap_size: int = ranged(16, ge=1, le=30)
    base_resolution: int = ranged(16, ge=1)
    # growth factor between levels; <= 0 means "derive it from max_resolution"
    per_level_scale: float = 0.0
    max_resolution: int = ranged(256, ge=1)

    def level_scale(self) -> float:
        if self.per_level_scale > 0:
            return float(self.per_level_scale)
        if self.n_levels <= 1:
            return 1.0
        return math.exp(math.log(self.max_resolution / self.base_resolution) / (self.n_levels - 1))


@dataclass
class _Group:
    """Consecutive levels of one kind (dense or hashed) processed together.

    Per-level constants are [Lg,1,1] tensors (cached per device/dtype) so one elementwise op
    covers every level of the group."""

    start: int  # first level
    stop: int  # one past the last level
    dense: bool
    col0: int  # first column of the group's block of the table
    cols: int  # columns in the block
    scales: list  # python floats s_l
    res: list  # vertices per axis
    rel_offsets: list  # level offsets inside the block
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def consts(self, device, dtype):
        """(scales, res, rel_offsets) as [Lg,1,1] tensors."""
        key = (device, dtype)
        if key not in self._cache:
            col = lambda v, t: torch.tensor(v, dtype=t, device=device).view(-1, 1, 1)
            self._cache[key] = (col(self.scales, dtype), col(self.res, torch.long), col(self.rel_offsets, torch.long))
        return self._cache[key]


class _LevelPlan:
    """Per-level constants (scale s_l, vertices per axis, table columns and offset, dense or
    hashed) and their grouping: a group holds at most `group_entries` table entries so its block
    stays cache-resident while all points visit it. Measured on 2 CPU cores, one level per
    group (the default, 1) was as fast or faster than larger groups at every size tried."""

    def __init__(self, cfg: HashGridConfig, group_entries: int = 1):
        T = 2**cfg.log2_hashmap_size
        b = cfg.level_scale()
        self.n_levels = cfg.n_levels
        self.hash_mask = T - 1
        self.scales, self.res, self.sizes, self.dense, self.offsets = [], [], [], [], []
        offset = 0
        for l in range(cfg.n_levels):
            s = cfg.base_resolution * b**l - 1.0
            r = int(math.ceil(s)) + 1
            size = min(-(-(r**3) // 8) * 8, T)  # dense levels rounded to a multiple of 8, like tcnn
            self.scales.append(s)
            self.res.append(r)
            self.sizes.append(size)
            self.dense.append(r**3 <= size)
            self.offsets.append(offset)
            offset += size
        self.total = offset
        self.groups: list[_Group] = []
        l = 0
        while l < self.n_levels:
            m = l + 1
            while (
                m < self.n_levels
                and self.dense[m] == self.dense[l]
                and self.offsets[m] + self.sizes[m] - self.offsets[l] <= group_entries
            ):
                m += 1
            o = self.offsets[l]
            self.groups.append(
                _Group(
                    l,
                    m,
                    self.dense[l],
                    o,
                    self.offsets[m - 1] + self.sizes[m - 1] - o,
                    self.scales[l:m],
                    self.res[l:m],
                    [x - o for x in self.offsets[l:m]],
                )
            )
            l = m


def _group_corners(xt: torch.Tensor, g: _Group, hash_mask: int):
    """Corners of the cells holding each point at every level of group g (corner-major layout,
    so every elementwise op runs over the long contiguous point axis).

    xt [3,n] in [0,1] -> idx [Lg,8,n] (columns of the group's block of the table, corner order
    (bx,by,bz) with z fastest) and frac [Lg,3,n] (trilinear coordinates inside the cell).
    """
    scales, res, rel = g.consts(xt.device, xt.dtype)
    pos = xt[None] * scales + 0.5  # [Lg,3,n]
    cell = torch.floor(pos)
    frac = pos - cell
    c0 = cell.long()
    c = torch.stack([c0, c0 + 1], dim=1)  # [Lg,2,3,n]: level, bit, axis, point
    Lg, n = c.shape[0], c.shape[-1]
    if g.dense:  # x + y*r + z*r^2; clamp (tcnn wraps) for points on the far faces
        r = res[:, :, :, None]
        c = torch.minimum(c.clamp_min(0), r - 1)
        yz = (c[:, :, 1] * res)[:, :, None] + (c[:, :, 2] * (res * res))[:, None, :]  # [Lg,2,2,n]
        idx = (c[:, :, 0] + rel)[:, :, None, None] + yz[:, None]
    else:  # (x*p0 ^ y*p1 ^ z*p2) & mask; the mask distributes over xor
        m = hash_mask
        yz = ((c[:, :, 1] * PRIMES[1]) & m)[:, :, None] ^ ((c[:, :, 2] * PRIMES[2]) & m)[:, None, :]
        idx = (c[:, :, 0] & m)[:, :, None, None] ^ yz[:, None]
        if g.stop - g.start > 1:
            idx = idx + rel[..., None, None]
    return idx.view(Lg, 8, n), frac


def _axis_weights(frac: torch.Tensor) -> torch.Tensor:
    """frac [Lg,3,n] -> per-axis linear weights [Lg,3,2,n] (1 - f, f)."""
    return torch.stack([1.0 - frac, frac], dim=2)


def _trilinear_weights(frac: torch.Tensor) -> torch.Tensor:
    """frac [Lg,3,n] -> weights [Lg,8,n] in the corner order of `_group_corners`."""
    wx, wy, wz = _axis_weights(frac).unbind(1)  # [Lg,2,n] each
    return (wx[:, :, None, None] * (wy[:, :, None] * wz[:, None])[:, None]).flatten(1, 3)


def _work(plan: _LevelPlan, table: torch.Tensor, n: int, corner_rows: int = 2**20):
    """(group, the group's block [F,cols] of the table, start, end), group-major: a block stays
    in cache while all points visit it; point chunks keep [Lg,8,n] tensors at a few MB."""
    for g in plan.groups:
        block = table[:, g.col0 : g.col0 + g.cols]
        chunk = max(1024, corner_rows // (8 * (g.stop - g.start)))
        for s in range(0, n, chunk):
            yield g, block, s, min(s + chunk, n)


def _gather(block: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """block [F,cols], idx [...] -> [F,...]."""
    return torch.stack([b.index_select(0, idx.reshape(-1)) for b in block]).view(block.shape[0], *idx.shape)


class _HashEncode(torch.autograd.Function):
    """Group-major, chunked encoding with a hand-written backward.

    The backward recomputes corners instead of saving [N,L,8] tensors, and is written in
    differentiable ops, so `create_graph=True` (analytic normals) still propagates to the table
    and the upstream gradient (second derivatives in x itself are not tracked).
    """

    @staticmethod
    def forward(ctx, x, table, plan):
        N, F_ = x.shape[0], table.shape[0]
        xt = x.t().contiguous()
        out = x.new_empty(F_, plan.n_levels, N)
        for g, block, s, e in _work(plan, table, N):
            idx, frac = _group_corners(xt[:, s:e], g, plan.hash_mask)
            out[:, g.start : g.stop, s:e] = (_gather(block, idx) * _trilinear_weights(frac)).sum(2)
        ctx.save_for_backward(xt, table)
        ctx.plan = plan
        return rearrange(out, "f l n -> n (l f)")

    @staticmethod
    def backward(ctx, grad_out):
        xt, table = ctx.saved_tensors
        plan, F_, N = ctx.plan, table.shape[0], xt.shape[1]
        want_x, want_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_all = rearrange(grad_out, "n (l f) -> f l n", f=F_).contiguous()
        grad_table = torch.zeros_like(table) if want_table else None
        grad_x = {}  # chunk start -> [3,n], summed over levels
        for grp, block, s, e in _work(plan, table, N):
            with torch.no_grad():
                idx, frac = _group_corners(xt[:, s:e], grp, plan.hash_mask)
            g = g_all[:, grp.start : grp.stop, None, s:e]  # [F,Lg,1,n]
            if want_table:
                contrib = (g * _trilinear_weights(frac)).view(F_, -1)
                grad_table[:, grp.col0 : grp.col0 + grp.cols].index_add_(1, idx.view(-1), contrib)
            if want_x:  # d out / d frac through the trilinear weights, times s_l
                gc = (_gather(block, idx) * g).sum(0).view(-1, 2, 2, 2, e - s)  # dLoss/dweight per corner
                wx, wy, wz = _axis_weights(frac).unbind(1)  # [Lg,2,n] each
                dfx = ((gc[:, 1] - gc[:, 0]) * wy[:, :, None] * wz[:, None]).sum((1, 2))
                dfy = ((gc[:, :, 1] - gc[:, :, 0]) * wx[:, :, None] * wz[:, None]).sum((1, 2))
                dfz = ((gc[:, :, :, 1] - gc[:, :, :, 0]) * wx[:, :, None] * wy[:, None]).sum((1, 2))
                scales = grp.consts(xt.device, xt.dtype)[0][:, :, 0]  # [Lg,1]
                d = (torch.stack([dfx, dfy, dfz], dim=1) * scales[:, :, None]).sum(0)  # [3,n]
                grad_x[s] = grad_x[s] + d if s in grad_x else d
        grad_x = torch.cat([grad_x[s] for s in sorted(grad_x)], dim=1).t() if want_x else None
        return grad_x, grad_table, None


def _reference_encode(x: torch.Tensor, table: torch.Tensor, plan: _LevelPlan) -> torch.Tensor:
    """The same maths under plain autograd, one level at a time (the reference for tests)."""
    outs = []
    for l in range(plan.n_levels):
        g = _Group(l, l + 1, plan.dense[l], plan.offsets[l], plan.sizes[l], [plan.scales[l]], [plan.res[l]], [0])
        idx, frac = _group_corners(x.t(), g, plan.hash_mask)
        feats = table[:, idx[0] + g.col0]  # [F,8,N]
        outs.append(torch.einsum("fcn,cn->nf", feats, _trilinear_weights(frac)[0]))
    return torch.cat(outs, dim=-1)


def hash_encode(x: torch.Tensor, table: torch.Tensor, plan: _LevelPlan, fused: bool = True) -> torch.Tensor:
    """Encode x [N,3] in [0,1] with `table [F, plan.total]` -> [N, L*F].

    fused=False runs the same maths under plain autograd (reference for tests).
    """
    if fused:
        return _HashEncode.apply(x, table, plan)
    return _reference_encode(x, table, plan)


class HashGrid(nn.Module):
    """Pure-PyTorch hash encoding: forward(x [N,3] in [0,1]) -> [N, n_levels * F]."""

    def __init__(self, cfg: HashGridConfig, fused: bool = True):
        super().__init__()
        self.cfg = cfg
        self.fused = fused
        self.plan = _LevelPlan(cfg)
        self.n_input_dims = 3
        self.n_output_dims = cfg.n_levels * cfg.n_features_per_level
        self.table = nn.Parameter(torch.empty(cfg.n_features_per_level, self.plan.total).uniform_(-1e-4, 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.table.dtype)
        return hash_encode(x, self.table, self.plan, self.fused)


class _TcnnHashGrid(nn.Module):
    """tinycudann's HashGrid behind the same interface (float32 output)."""

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        import tinycudann as tcnn  # lazy: CUDA only

        self.cfg = cfg
        self.encoding = tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": cfg.n_levels,
                "n_features_per_level": cfg.n_features_per_level,
                "log2_hashmap_size": cfg.log2_hashmap_size,
                "base_resolution": cfg.base_resolution,
                "per_level_scale": cfg.level_scale(),
            },
        )
        self.n_input_dims = 3
        self.n_output_dims = self.encoding.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x).float()


def table_entries(cfg: HashGridConfig) -> int:
    """Entries of the table all levels share (each holds n_features_per_level parameters): no allocation."""
    return _LevelPlan(cfg).total


def make_hash_encoding(cfg: HashGridConfig, backend: str = "auto", device=None) -> nn.Module:
    """`tcnn` (tinycudann, CUDA), `torch` (HashGrid) or `auto` (tcnn when on CUDA and importable)."""
    if backend not in ("auto", "torch", "tcnn"):
        raise ValueError(f"unknown hash encoding backend {backend!r} (use auto, torch or tcnn)")
    on_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if backend == "tcnn" or (backend == "auto" and on_cuda):
        try:
            return _TcnnHashGrid(cfg)
        except ImportError:
            if backend == "tcnn":
                raise
    return HashGrid(cfg)

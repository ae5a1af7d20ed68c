"""Differentiable triangle rasterization: one interface, two backends.

`rasterize` finds the nearest triangle under every pixel centre ("torch": vectorised pure
PyTorch; "nvdiffrast": CUDA, imported lazily) and returns perspective-correct barycentrics
that are differentiable w.r.t. the clip-space vertices (recomputed from the winning face, the
same maths for both backends). `interpolate` gathers vertex attributes with them and
`antialias` blends colours across silhouette edges so silhouettes get gradients (nvdiffrast's
analytic antialiasing; the torch version handles object/background silhouettes only).

Image convention: row 0 is the TOP of the image (NDC y = +1), column 0 the left (NDC x = -1),
pixel (i, j) has its centre at NDC ((2i + 1) / W - 1, 1 - (2j + 1) / H), matching `get_rays`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

BACKENDS = ("auto", "torch", "nvdiffrast")
_MAX_PAIRS = 1 << 22  # candidate (face, pixel) pairs per chunk in the torch rasterizer
_W_EPS = 1e-6  # faces with a vertex at w <= this (behind the camera) are not drawn


class Raster(NamedTuple):
    """face_id [B,H,W] long (-1 = empty); bary [B,H,W,3] perspective-correct, differentiable;
    depth [B,H,W] view-space depth (clip w, = -z_camera), 0 where empty, differentiable."""

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


def _nvdiffrast_ready(device: torch.device) -> bool:
    return device.type == "cuda" and _nvdiffrast_importable()


@functools.lru_cache(maxsize=1)
def _nvdiffrast_importable() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401  (lazy: CUDA only)
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'nvdiffrast' on CUDA when importable, else 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r} (use one of {BACKENDS})")
    if backend == "auto":
        return "nvdiffrast" if _nvdiffrast_ready(torch.device(device)) else "torch"
    if backend == "nvdiffrast" and not _nvdiffrast_ready(torch.device(device)):
        raise ValueError("rasterizer backend 'nvdiffrast' needs CUDA tensors and the nvdiffrast package")
    return backend


_CONTEXTS: dict = {}


def _nvdiffrast_context(device: torch.device):
    import nvdiffrast.torch as dr

    key = str(device)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = dr.RasterizeCudaContext(device=device)
    return _CONTEXTS[key]


# -- pure-PyTorch coverage ----------------------------------------------------------------------
def _face_planes(tri: torch.Tensor, height: int, width: int):
    """Per-face screen-affine functions of the pixel position (X = column, Y = row, pixel units).

    tri [N,3,4] clip-space vertices -> (coef [N,5,3]: rows b0, b1, b2, 1/w, z/w, each as
    (a, b, c) of a*X + b*Y + c; bbox [N,4] long (x0, x1, y0, y1) inclusive; ok [N] bool).
    """
    w = tri[..., 3]
    ok = (w > _W_EPS).all(-1)
    w = torch.where(ok[:, None], w, torch.ones_like(w))
    sx = (tri[..., 0] / w + 1.0) * (0.5 * width) - 0.5
    sy = (1.0 - tri[..., 1] / w) * (0.5 * height) - 0.5
    x0, x1, x2 = sx.unbind(-1)
    y0, y1, y2 = sy.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok &= area.abs() > 1e-10
    inv = 1.0 / torch.where(ok, area, torch.ones_like(area))
    # b_i = (x_j y_k - x_k y_j + X (y_j - y_k) + Y (x_k - x_j)) / area, (i, j, k) cyclic
    xs, ys = torch.stack([x1, x2, x0], -1), torch.stack([y1, y2, y0], -1)  # j
    xk, yk = torch.stack([x2, x0, x1], -1), torch.stack([y2, y0, y1], -1)  # k
    bary = torch.stack([ys - yk, xk - xs, xs * yk - xk * ys], -1) * inv[:, None, None]  # [N,3(i),3]
    inv_w, z_w = 1.0 / w, tri[..., 2] / w
    extra = torch.stack([torch.einsum("nic,ni->nc", bary, inv_w), torch.einsum("nic,ni->nc", bary, z_w)], 1)
    coef = torch.cat([bary, extra], dim=1)
    bbox = torch.stack([sx.amin(-1).ceil(), sx.amax(-1).floor(), sy.amin(-1).ceil(), sy.amax(-1).floor()], -1)
    bbox = torch.stack(
        [
            bbox[:, 0].clamp_min(0),
            bbox[:, 1].clamp_max(width - 1),
            bbox[:, 2].clamp_min(0),
            bbox[:, 3].clamp_max(height - 1),
        ],
        -1,
    )
    ok &= (bbox[:, 1] >= bbox[:, 0]) & (bbox[:, 3] >= bbox[:, 2]) & torch.isfinite(coef).all(-1).all(-1)
    return coef, bbox.long(), ok


@torch.no_grad()
def _coverage_torch(verts_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest face per pixel centre -> face_id [B,H,W] long (-1 = empty).

    Every face enumerates the pixel centres of its screen bounding box (in chunks of at most
    _MAX_PAIRS pairs); pairs inside the triangle and the [-1,1] depth range compete through
    scatter_reduce('amin') on a packed int64 key: float bits of w (monotonic for w > 0) in the
    high 32 bits, the face index in the low 32 bits (ties go to the lower index).
    """
    B, F = verts_clip.shape[0], faces.shape[0]
    HW = height * width
    best = torch.full((B * HW,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=verts_clip.device)
    if F > 0:
        tri = verts_clip.float()[:, faces].reshape(B * F, 3, 4)  # [B*F,3,4]
        coef, bbox, ok = _face_planes(tri, height, width)
        sel = ok.nonzero()[:, 0]
        coef, bbox = coef[sel].reshape(-1, 15), bbox[sel]
        bw = bbox[:, 1] - bbox[:, 0] + 1
        count = bw * (bbox[:, 3] - bbox[:, 2] + 1)
        ends = torch.cumsum(count, 0)
        start_face = 0
        while start_face < len(sel):  # chunks of whole faces, each with <= _MAX_PAIRS pairs
            base = int(ends[start_face - 1]) if start_face > 0 else 0
            stop = int(torch.searchsorted(ends, base + _MAX_PAIRS, right=True))
            stop = max(stop, start_face + 1)
            _scatter_chunk(best, sel, coef, bbox, bw, count, start_face, stop, F, height, width)
            start_face = stop
    face = best & 0xFFFFFFFF
    face = torch.where(best == torch.iinfo(torch.int64).max, torch.full_like(face, -1), face)
    return face.view(B, height, width)


def _scatter_chunk(best, sel, coef, bbox, bw, count, s, e, F, height, width):
    """Inside + depth test of faces sel[s:e] against their bounding-box pixels; min-reduce into best."""
    cnt = count[s:e]
    local = torch.repeat_interleave(torch.arange(s, e, device=best.device), cnt)  # pair -> face row
    first = torch.cumsum(cnt, 0) - cnt
    k = torch.arange(int(cnt.sum()), device=best.device) - torch.repeat_interleave(first, cnt)
    bwl = bw[local]
    X = bbox[local, 0] + k % bwl
    Y = bbox[local, 2] + k // bwl
    c = coef[local].view(-1, 5, 3)
    val = c[..., 0] * X[:, None].float() + c[..., 1] * Y[:, None].float() + c[..., 2]  # [n,5]
    inside = (val[:, :3] >= -1e-6).all(-1) & (val[:, 4].abs() <= 1.0) & (val[:, 3] > 0)
    flat_face = sel[local[inside]]  # index into B*F
    b_idx, f_idx = flat_face // F, flat_face % F
    pix = b_idx * (height * width) + Y[inside] * width + X[inside]
    w = (1.0 / val[inside, 3]).float()
    key = (w.view(torch.int32).long() << 32) | f_idx
    best.scatter_reduce_(0, pix, key, reduce="amin")


# -- differentiable barycentrics from the winning faces -----------------------------------------
def pixel_ndc(height: int, width: int, device, dtype=torch.float32) -> torch.Tensor:
    """NDC (x, y) of the pixel centres [H,W,2] (row 0 at the top, y = +1)."""
    j, i = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([(2.0 * i + 1.0) / width - 1.0, 1.0 - (2.0 * j + 1.0) / height], -1)


def _gather_faces(verts: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor):
    """verts [B,V,C], face_id [B,H,W] -> (flat covered pixel index [n], their face verts [n,3,C])."""
    B, V, C = verts.shape
    flat = face_id.reshape(-1)
    pix = (flat >= 0).nonzero()[:, 0]
    b = pix // (face_id.shape[1] * face_id.shape[2])
    vid = faces[flat[pix]] + (b * V)[:, None]  # [n,3] into B*V
    return pix, verts.reshape(B * V, C)[vid]


def perspective_bary(tri: torch.Tensor, ndc: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics [n,3] of points at NDC ndc [n,2] on triangles tri [n,3,4].

    A surface point is sum_i b_i p_i in clip space (clip space is linear in world space); its
    projection is at ndc, so sum_i b_i (x_i - px w_i) = sum_i b_i (y_i - py w_i) = 0 and
    sum_i b_i = 1: b is the cross product of those two 3-vectors, normalised.
    """
    a = tri[..., 0] - ndc[:, :1] * tri[..., 3]
    c = tri[..., 1] - ndc[:, 1:] * tri[..., 3]
    b = torch.cross(a, c, dim=-1)
    s = b.sum(-1, keepdim=True)
    s = torch.where(s.abs() < 1e-20, torch.full_like(s, 1e-20), s)
    return b / s


def _to_batched(verts_clip: torch.Tensor) -> torch.Tensor:
    return verts_clip[None] if verts_clip.dim() == 2 else verts_clip


def rasterize(verts_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int, backend: str = "auto") -> Raster:
    """Rasterize triangles faces [F,3] (int) with clip-space vertices verts_clip [B,V,4] or [V,4].

    Returns Raster(face_id [B,H,W] long, -1 = empty; bary [B,H,W,3]; depth [B,H,W] = view depth w).
    bary and depth are differentiable w.r.t. verts_clip; face_id is not.
    """
    verts_clip = _to_batched(verts_clip)
    faces = faces.long()
    backend = resolve_backend(backend, verts_clip.device)
    if backend == "nvdiffrast":
        face_id = _coverage_nvdiffrast(verts_clip, faces, height, width)
    else:
        face_id = _coverage_torch(verts_clip, faces, height, width)
    B = verts_clip.shape[0]
    pix, tri = _gather_faces(verts_clip, faces, face_id)
    ndc = pixel_ndc(height, width, verts_clip.device, tri.dtype).reshape(-1, 2)
    b = perspective_bary(tri, ndc[pix % (height * width)])
    depth = (b * tri[..., 3]).sum(-1)
    bary = verts_clip.new_zeros(B * height * width, 3).index_copy(0, pix, b.to(verts_clip.dtype))
    dflat = verts_clip.new_zeros(B * height * width).index_copy(0, pix, depth.to(verts_clip.dtype))
    return Raster(face_id, bary.view(B, height, width, 3), dflat.view(B, height, width))


def _nvdiffrast_pos(verts_clip: torch.Tensor) -> torch.Tensor:
    """nvdiffrast's row 0 is NDC y = -1: flip y so its row 0 is our top row."""
    return (verts_clip * verts_clip.new_tensor([1.0, -1.0, 1.0, 1.0])).float().contiguous()


@torch.no_grad()
def _coverage_nvdiffrast(verts_clip, faces, height, width) -> torch.Tensor:
    import nvdiffrast.torch as dr

    rast, _ = dr.rasterize(
        _nvdiffrast_context(verts_clip.device), _nvdiffrast_pos(verts_clip), faces.int().contiguous(), (height, width)
    )
    return rast[..., 3].long() - 1


# -- attributes and antialiasing ----------------------------------------------------------------
def interpolate(attr: torch.Tensor, face_id: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Vertex attributes attr [V,C] or [B,V,C] at the pixels -> [B,H,W,C] (0 where empty).

    Differentiable w.r.t. attr and (through bary) the vertex positions.
    """
    B, H, W = face_id.shape
    attr = attr[None].expand(B, *attr.shape) if attr.dim() == 2 else attr
    pix, vals = _gather_faces(attr, faces.long(), face_id)  # [n,3,C]
    b = bary.reshape(-1, 3)[pix].to(vals.dtype)
    out = torch.einsum("ni,nic->nc", b, vals)
    return attr.new_zeros(B * H * W, attr.shape[-1]).index_copy(0, pix, out).view(B, H, W, -1)


def _screen(verts_clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip [...,4] -> pixel-unit screen positions [...,2] (X = column, Y = row, centres at ints)."""
    w = verts_clip[..., 3:].clamp_min(_W_EPS)
    return torch.cat(
        [
            (verts_clip[..., :1] / w + 1.0) * (0.5 * width) - 0.5,
            (1.0 - verts_clip[..., 1:2] / w) * (0.5 * height) - 0.5,
        ],
        -1,
    )


def _edge_crossing(tri2d: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Where the segment p -> q [n,2] leaves triangles tri2d [n,3,2]: t in [0,1] (p inside)."""

    def bary2d(x):
        e = tri2d[:, [1, 2, 0]] - x[:, None]
        f = tri2d[:, [2, 0, 1]] - x[:, None]
        return e[..., 0] * f[..., 1] - e[..., 1] * f[..., 0]  # signed sub-areas [n,3]

    bp, bq = bary2d(p), bary2d(q)
    flip = bp.sum(-1, keepdim=True) < 0  # orientation: make sub-areas positive inside
    bp, bq = torch.where(flip, -bp, bp), torch.where(flip, -bq, bq)
    leaving = (bq < 0) & (bq < bp)  # this sub-area falls below zero on the way to q
    t = torch.where(leaving, bp / torch.where(leaving, bp - bq, torch.ones_like(bp)), torch.ones_like(bp))
    return t.amin(-1).clamp(0.0, 1.0)


def _antialias_torch(color, face_id, verts_clip, faces):
    """Blend colour across object/background pixel pairs at the silhouette edge crossing."""
    B, H, W, C = color.shape
    V = verts_clip.shape[1]
    scr = _screen(verts_clip, H, W).reshape(B * V, 2)
    flat_col = color.reshape(B * H * W, C)
    delta = torch.zeros_like(flat_col)
    fid = face_id.reshape(-1)
    idx = torch.arange(B * H * W, device=color.device).view(B, H, W)
    for a, b in ((idx[:, :, :-1], idx[:, :, 1:]), (idx[:, :-1], idx[:, 1:])):
        a, b = a.reshape(-1), b.reshape(-1)
        fa, fb = fid[a] >= 0, fid[b] >= 0
        m = fa ^ fb
        if not bool(m.any()):
            continue
        a, b, fa = a[m], b[m], fa[m]
        p, q = torch.where(fa, a, b), torch.where(fa, b, a)  # p: object pixel, q: background
        bidx = p // (H * W)
        tri2d = scr[faces[fid[p]] + (bidx * V)[:, None]]  # [n,3,2]
        xy = lambda k: torch.stack([(k % W).to(scr.dtype), ((k // W) % H).to(scr.dtype)], -1)
        d = _edge_crossing(tri2d, xy(p), xy(q)) - 0.5  # > 0: edge beyond the midpoint
        diff = flat_col[p] - flat_col[q]
        dq = torch.where(d[:, None] > 0, d[:, None] * diff, torch.zeros_like(diff))
        dp = torch.where(d[:, None] < 0, d[:, None] * diff, torch.zeros_like(diff))
        delta = delta.index_add(0, q, dq).index_add(0, p, dp)
    return (flat_col + delta).view(B, H, W, C)


def antialias(
    color: torch.Tensor, raster: Raster, verts_clip: torch.Tensor, faces: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Antialias color [B,H,W,C] at silhouettes; differentiable w.r.t. colour and verts_clip.

    For each horizontal / vertical pixel pair across a silhouette, the edge crossing t along
    the segment between their centres blends the two colours by |t - 1/2| (nvdiffrast's
    analytic antialiasing). The torch backend treats object/background silhouettes only (not
    self-occlusion boundaries inside the object).
    """
    verts_clip = _to_batched(verts_clip)
    faces = faces.long()
    if resolve_backend(backend, color.device) == "nvdiffrast":
        import nvdiffrast.torch as dr

        pos = _nvdiffrast_pos(verts_clip)
        rast = nvdiffrast_rast(raster, verts_clip, faces)
        return dr.antialias(color.float().contiguous(), rast, pos, faces.int().contiguous())
    return _antialias_torch(color, raster.face_id, verts_clip, faces)


def nvdiffrast_rast(raster: Raster, verts_clip: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Our Raster as nvdiffrast's rast tensor [B,H,W,4] = (u, v, z/w, face_id + 1)."""
    z = interpolate(_to_batched(verts_clip)[..., 2:3], raster.face_id, raster.bary, faces)[..., 0]
    zw = torch.where(raster.face_id >= 0, z / raster.depth.clamp_min(_W_EPS), torch.zeros_like(z))
    return (
        torch.stack([raster.bary[..., 0], raster.bary[..., 1], zw, (raster.face_id + 1).to(zw.dtype)], -1)
        .float()
        .contiguous()
    )

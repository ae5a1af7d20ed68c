"""Texture baking: rasterise the UV layout, colour every texel's surface point, pad the seams.

Texel ``(row, col)`` has its centre at ``u = (col + 0.5) / W``, ``v = 1 - (row + 0.5) / H``
(v up, first row on top; see ``uv.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

ColourFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(points [N,3], unit normals [N,3]) -> colours [N,3]`` in [0, 1]."""

_MAX_CANDIDATES = 1 << 22  # (triangle, texel) pairs tested per vectorised batch


def uv_to_pixel(uv: np.ndarray, size: int) -> np.ndarray:
    """``uv [N,2]`` -> continuous ``(col, row)`` ``[N,2]``; texel centres at integers."""
    return np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5], axis=-1)


def rasterize_uv(uv: np.ndarray, faces_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Find, for every texel, the triangle it belongs to and its barycentrics.

    Two passes: texels whose centre lies inside a triangle; then, for texels still empty,
    any triangle within half a texel diagonal (conservative rasterisation), with the
    barycentrics clamped onto the triangle. The second pass gives every chart, even a
    sliver that contains no texel centre, its own texels along its border.

    Args:
        uv: ``[T, 2]`` UV coordinates; faces_uv: ``[F, 3]`` indices into ``uv``.
    Returns:
        tri_id ``[size, size]`` int64 (-1 where no triangle is near the texel) and
        bary ``[size, size, 3]`` float32 barycentric weights (>= 0, sum 1).
    """
    tri = uv_to_pixel(uv, size)[faces_uv].astype(np.float64)  # [F, 3, 2] (col, row)
    tri_id = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float32)
    for margin in (0.0, 0.5 * np.sqrt(2.0)):
        lo = np.clip(np.ceil(tri.min(axis=1) - margin - 1e-9), 0, size - 1).astype(np.int64)
        hi = np.clip(np.floor(tri.max(axis=1) + margin + 1e-9), 0, size - 1).astype(np.int64)
        extent = np.maximum(hi - lo + 1, 0)  # [F, 2]
        counts = extent[:, 0] * extent[:, 1]
        ends = np.cumsum(counts)
        start = 0
        while start < len(faces_uv):
            limit = ends[start] - counts[start] + _MAX_CANDIDATES
            stop = max(int(np.searchsorted(ends, limit, side="right")), start + 1)
            f = np.repeat(np.arange(start, stop), counts[start:stop])
            k = np.arange(len(f)) - np.repeat(ends[start:stop] - counts[start:stop], counts[start:stop])
            col = lo[f, 0] + k % extent[f, 0]
            row = lo[f, 1] + k // extent[f, 0]
            _write_hits(tri[f], f, row, col, margin, tri_id, bary)
            start = stop
    return tri_id, bary


def _write_hits(tri, f, row, col, margin, tri_id, bary) -> None:
    """Test texels ``(row, col)`` against triangles ``tri [M,3,2]`` (ids ``f``); write hits.

    A texel hits when its centre is at most ``margin`` texels outside the triangle; with
    a margin > 0 only empty texels are written.
    """
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.abs(area) > 1e-12
    area = np.where(ok, area, 1.0)
    pq = [(b, c), (c, a), (a, b)]  # the edge opposite each corner
    # signed distance of the texel centre to each edge line, positive inside
    cross = (
        np.stack(
            [(q[:, 0] - p[:, 0]) * (row - p[:, 1]) - (q[:, 1] - p[:, 1]) * (col - p[:, 0]) for p, q in pq],
            axis=-1,
        )
        * np.sign(area)[:, None]
    )
    length = np.stack([np.hypot(*(q - p).T) for p, q in pq], axis=-1)
    inside = ok & (cross >= -margin * length - 1e-9 * np.abs(area)[:, None]).all(axis=-1)
    if margin > 0:
        inside &= tri_id[row, col] < 0
    w = np.clip(cross[inside] / np.abs(area[inside])[:, None], 0.0, None)
    w /= np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
    tri_id[row[inside], col[inside]] = f[inside]
    bary[row[inside], col[inside]] = w


def pad_texture(image: np.ndarray, mask: np.ndarray, padding: int) -> np.ndarray:
    """Dilate baked texels outwards so bilinear lookups near seams never hit background.

    Every empty texel within ``padding`` texels (Euclidean) of a baked one takes the colour
    of its nearest baked texel; texels further away get the mean baked colour.

    Args:
        image: ``[H, W, C]`` float; mask: ``[H, W]`` bool, True where baked.
    Returns:
        padded image ``[H, W, C]``.
    """
    if not mask.any():
        return image
    dist, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
    out = np.where((dist <= padding)[..., None], image[ri, ci], image[mask].mean(axis=0))
    out[mask] = image[mask]
    return out


def bake_albedo(
    vertices: np.ndarray,
    normals: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    faces_uv: np.ndarray,
    colour_fn: ColourFn,
    size: int,
    padding: int,
) -> tuple[np.ndarray, float]:
    """Bake ``colour_fn`` into a ``[size, size, 3]`` float32 texture in [0, 1].

    Args:
        vertices: ``[V, 3]`` world positions; normals: ``[V, 3]`` unit vertex normals;
        faces: ``[F, 3]`` into ``vertices``.
        uv: ``[T, 2]``; faces_uv: ``[F, 3]`` into ``uv`` (face i of both is the same triangle).
        colour_fn: called once with every texel's surface point and interpolated unit normal.
    Returns:
        (texture, coverage) where coverage is the fraction of texels inside a triangle.
    """
    tri_id, bary = rasterize_uv(uv, faces_uv, size)
    mask = tri_id >= 0
    weights = bary[mask].astype(np.float64)
    corners = faces[tri_id[mask]]
    points = np.einsum("mk,mkd->md", weights, vertices[corners])
    point_normals = np.einsum("mk,mkd->md", weights, normals[corners])
    point_normals /= np.maximum(np.linalg.norm(point_normals, axis=1, keepdims=True), 1e-12)
    colors = np.clip(colour_fn(points, point_normals), 0.0, 1.0)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"albedo_fn must return [N,3], got {list(colors.shape)}")
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[mask] = colors
    return pad_texture(image, mask, padding).astype(np.float32), float(mask.mean())

"""Edge-preserving clean-up of the baked albedo, on the surface rather than in the texture image.

A NeRF's albedo carries speckles a few texels wide (single texels, or clusters of them, tinted away from
the object's colour), which a baked texture keeps and shows under any light. A median over
each texel's neighbours removes specks smaller than half its window and keeps colour edges (a median
does not blur a step). The neighbours are taken on the surface: the texels' 3D points within
``radius`` texel spacings whose normals agree (so a thin part's other side is not mixed in), which
crosses UV seams the same way on both sides of a seam and never reads the gutter between charts.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

_MIN_COS = 0.5  # neighbours whose normal is more than 60 degrees away are left out


def texel_spacing(points: np.ndarray, tree: cKDTree | None = None) -> float:
    """Median distance from a texel's surface point to its nearest other one (the texel size on the surface);
    tree: a cKDTree of the points already built."""
    if len(points) < 2:
        return 0.0
    dist, _ = (tree or cKDTree(points)).query(points, k=2)
    return float(np.median(dist[:, 1]))


def surface_median(
    points: np.ndarray, normals: np.ndarray, colours: np.ndarray, radius: float, chunk: int = 8192
) -> np.ndarray:
    """Per-channel median of ``colours [N,3]`` over each point's surface neighbourhood.

    Args:
        points: ``[N,3]`` the texels' surface points; normals: ``[N,3]`` their unit normals.
        radius: window radius in texel spacings (``texel_spacing``); <= 0 returns ``colours`` unchanged.
    Returns:
        ``[N,3]`` filtered colours (float32).
    """
    colours = np.asarray(colours, dtype=np.float32)
    if radius <= 0 or len(points) < 2:
        return colours
    tree = cKDTree(points)
    spacing = texel_spacing(points, tree)
    k = int(np.ceil(np.pi * (radius + 0.5) ** 2)) + 1  # about the texels of a disc of that radius
    out = np.empty_like(colours)
    padded = np.concatenate([colours, np.full((1, 3), np.nan, dtype=np.float32)])
    unit = np.concatenate([normals, np.zeros((1, 3))]).astype(np.float32)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        _, idx = tree.query(p, k=min(k, len(points)), distance_upper_bound=radius * spacing + 1e-12)
        # missing neighbours come back as index N: the NaN row
        agree = np.einsum("nd,nkd->nk", unit[start : start + len(p)], unit[idx]) >= _MIN_COS
        window = np.where(agree[..., None], padded[idx], np.nan)
        out[start : start + chunk] = _nanmedian(window)  # the point itself always agrees
    return out


def _nanmedian(window: np.ndarray) -> np.ndarray:
    """``np.nanmedian(window, axis=1)`` for ``[N, K, C]`` with at least one value per row (sorting puts
    the NaNs last; several times faster than numpy's)."""
    ordered = np.sort(window, axis=1)
    count = (~np.isnan(window[..., 0])).sum(axis=1)
    lo, hi = (count - 1) // 2, count // 2
    rows = np.arange(len(window))
    return 0.5 * (ordered[rows, lo] + ordered[rows, hi])

"""Isosurface extraction: density grid -> threshold -> marching cubes -> clean mesh.

The grid has ``res`` samples per axis at ``-R + i * 2R / (res - 1)``, i = 0..res-1, indexed
``[ix, iy, iz]``. Marching cubes runs on the grid padded by one "empty" sample on each side,
so the surface is closed even where the object touches the box, and vertices come out in
padded index units: ``world = -R + (index - 1) * 2R / (res - 1)``.
"""

from __future__ import annotations

from typing import Union

import mcubes
import numpy as np
import trimesh

from .grid_clean import signed_field
from .query import Device, FieldFn, query_field


def grid_points(resolution: int, radius: float) -> np.ndarray:
    """World sample points of the extraction grid, ``[res, res, res, 3]`` (x, y, z)."""
    axis = np.linspace(-radius, radius, resolution, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def sample_density_grid(
    density_fn: FieldFn, resolution: int, radius: float, chunk_size: int, device: Device = None
) -> np.ndarray:
    """Density on the grid, ``[res, res, res]`` float32 indexed ``[ix, iy, iz]``."""
    pts = grid_points(resolution, radius).reshape(-1, 3)
    dens = query_field(density_fn, pts, chunk_size, device)
    if dens.shape[1] != 1:
        raise ValueError(f"density_fn must return [N] or [N,1], got [N,{dens.shape[1]}]")
    return dens.reshape(resolution, resolution, resolution)


def _to_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _from_log(t: float) -> float:
    return float(np.sign(t) * np.expm1(abs(t)))


def auto_threshold(density: np.ndarray, n_bins: int = 256) -> float:
    """Pick the isosurface level separating empty space from the object.

    Otsu's method on the histogram of ``sign(d) * log1p(|d|)``: the split maximising the
    between-class variance of "empty" and "occupied" samples. The log scale keeps a few
    very dense voxels (typical of NeRF densities) from dominating, and works both for soft
    blobs (a level on the falloff) and sharp surfaces (a level inside the jump). The level
    is a histogram edge strictly between the grid's minimum and maximum, so at least one
    sample lies on each side and the mesh is never empty.

    Args:
        density: any-shaped array of densities (higher = more inside).
    Raises:
        ValueError: if the field is empty (max <= 0) or constant.
    """
    d = np.asarray(density, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    _check_not_empty(d)
    t = _to_log(d)
    hist, edges = np.histogram(t, bins=n_bins, range=(t.min(), t.max()))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = hist.sum() - w0
    s0 = np.cumsum(hist * centers)[:-1]
    s1 = (hist * centers).sum() - s0
    valid = (w0 > 0) & (w1 > 0)
    m0 = np.where(valid, s0 / np.maximum(w0, 1), 0.0)
    m1 = np.where(valid, s1 / np.maximum(w1, 1), 0.0)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1.0)
    k = int(np.argmax(between))
    return _from_log(edges[k + 1])


def _check_not_empty(d: np.ndarray) -> None:
    if d.size == 0:
        raise ValueError("density field has no finite samples on the export grid")
    lo, hi = float(d.min()), float(d.max())
    if hi <= 0.0:
        raise ValueError(
            f"density field is empty: max density on the export grid is {hi:g} (<= 0); "
            "nothing to extract (was the model trained, and is `radius` right?)"
        )
    if hi - lo <= 1e-7 * max(1.0, abs(hi)):
        raise ValueError(f"density field is constant ({hi:g}) on the export grid; no surface")


def resolve_threshold(density: np.ndarray, threshold: Union[float, str]) -> float:
    """``threshold`` as a float (``"auto"`` -> ``auto_threshold``); checks it cuts the field."""
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold must be a number or 'auto', got {threshold!r}")
        return auto_threshold(density)
    level = float(threshold)
    d = density[np.isfinite(density)]
    _check_not_empty(d)
    lo, hi = float(d.min()), float(d.max())
    if not lo < level < hi:
        raise ValueError(
            f"threshold {level:g} gives an empty surface: the density on the export grid "
            f"lies in [{lo:g}, {hi:g}]; use a level inside that range or threshold='auto'"
        )
    return level


def marching_cubes(density: np.ndarray, level: float, radius: float) -> trimesh.Trimesh:
    """Closed isosurface ``{density = level}`` in world coordinates, normals outward.

    Args:
        density: ``[res, res, res]`` grid from ``sample_density_grid``.
    Returns:
        Mesh with merged vertices, degenerate faces removed, vertices inside [-R, R]^3.
    """
    res = density.shape[0]
    vol = np.nan_to_num(density.astype(np.float64), nan=-np.inf)
    fill = min(float(vol[np.isfinite(vol)].min()), level) - 1.0
    vol = np.pad(np.where(np.isfinite(vol), vol, fill), 1, constant_values=fill)
    verts, faces = mcubes.marching_cubes(vol, level)
    step = 2.0 * radius / (res - 1)
    verts = np.clip(-radius + (verts - 1.0) * step, -radius, radius)
    # PyMCubes winds faces counter-clockwise seen from the low-value (outside) side, so
    # normals already point out of the object; the index -> world map is a positive
    # scaling plus a shift, which keeps the winding. Check anyway on closed meshes.
    mesh = trimesh.Trimesh(verts, faces, process=True, validate=True)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh


def remove_floaters(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Keep connected components whose area is >= ``min_fraction`` x the largest's."""
    if min_fraction <= 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    areas = np.array([p.area for p in parts])
    keep = [p for p, a in zip(parts, areas) if a >= min_fraction * areas.max()]
    return trimesh.util.concatenate(keep)


def extract_mesh(
    density_fn: FieldFn,
    radius: float,
    resolution: int,
    threshold: Union[float, str],
    chunk_size: int,
    min_component_fraction: float,
    device: Device = None,
    close_radius: int = 2,
    smooth_sigma: float = 1.0,
    plug_radius: int = 0,
) -> tuple[trimesh.Trimesh, float]:
    """Field -> cleaned isosurface mesh; returns ``(mesh, level_used)``.

    With ``close_radius``, ``smooth_sigma`` or ``plug_radius`` > 0 the occupancy is cleaned first
    (``grid_clean.signed_field``: smoothed, largest region, cavities filled, narrow dents and tunnels
    closed without raising the genus); with all 0 the isosurface of the raw grid is taken.
    """
    density = sample_density_grid(density_fn, resolution, radius, chunk_size, device)
    level = resolve_threshold(density, threshold)
    if close_radius > 0 or smooth_sigma > 0 or plug_radius > 0:
        field = signed_field(density, level, close_radius, smooth_sigma, plug_radius)
        mesh = marching_cubes(field, 0.0, radius)
    else:
        mesh = marching_cubes(density, level, radius)
    mesh = remove_floaters(mesh, min_component_fraction)
    if len(mesh.faces) == 0:
        raise ValueError(f"isosurface at level {level:g} has no faces")
    return mesh, level

"""Clean the occupancy of a density grid before marching cubes, so the surface has the right topology.

A NeRF density is noisy: floaters, inner cavities, and small tunnels through the object (each one a
handle of the isosurface, raising its genus). On the occupancy ``density > level`` (of the smoothed
field) this keeps the largest 6-connected region, fills its cavities, closes dents and tunnels narrower
than about ``2 * close_radius`` voxels and plugs tunnels narrower than about ``2 * plug_radius``
(``remove_small_handles``: the pieces of morphological closings, each kept only where it does not
raise the genus; beyond ``close_radius`` only where it lowers it; a torus' hole, wider, stays). The
result is a signed field for marching cubes at level 0 whose sign is exactly the cleaned occupancy, so
the surface has its topology: the clipped log-density difference, smoothed with a Gaussian of ``smooth_sigma`` voxels,
and a small value of the right sign where the cleaning changed the side of a sample.
"""

from __future__ import annotations

import mcubes
import numpy as np
from scipy import ndimage

_CLIP = 2.0  # |log-density difference| kept before smoothing: the surface, not the interior, matters
_FLIP = 0.25  # value given to voxels whose side the cleaning changed
_MARGIN = 2  # samples around a plug whose marching-cubes cells it can change (and one more)


def _ball(radius: float) -> np.ndarray:
    n = int(np.floor(radius))
    r = np.arange(-n, n + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius * radius + 1e-9


def surface_euler(solid: np.ndarray) -> int:
    """Euler characteristic V - E + F of the marching-cubes surface of a boolean grid (padded empty:
    closed), ``2 * (surfaces) - 2 * (their summed genus)``. PyMCubes shares the vertices of adjacent
    cells, so on the closed surface E = 3F / 2."""
    verts, faces = mcubes.marching_cubes(np.pad(solid, 1).astype(np.float32), 0.5)
    return int(len(verts) - len(faces) // 2)


def _euler_gain(solid: np.ndarray, piece: np.ndarray, crop: tuple[slice, ...]) -> int:
    """Change of the surface's Euler characteristic when ``piece`` (a mask on ``crop``) is added to
    ``solid``. Marching cubes is local, so it is the change on the crop around the piece."""
    before = solid[crop]
    return surface_euler(before | piece) - surface_euler(before)


def _crop(box: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - _MARGIN, 0), s.stop + _MARGIN) for s in box)


def _pieces(mask: np.ndarray):
    """(crop, piece mask on the crop) of each 26-connected piece of ``mask``."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        crop = _crop(box)
        yield crop, labels[crop] == index


def close_guarded(solid: np.ndarray, radius: float, fill_dents: bool) -> np.ndarray:
    """Add the pieces that a closing with a ball of ``radius`` voxels fills in, one at a time, where that
    lowers the genus of the marching-cubes surface (a plugged tunnel; or a closed cavity, which the fill
    then removes) or, with ``fill_dents``, leaves it unchanged (a filled dent); a piece that would
    bridge a gap into a new handle is left out. Cavities are filled at the end (in place; returns ``solid``)."""
    pad = int(np.ceil(radius)) + 1
    closed = ndimage.binary_closing(np.pad(solid, pad), structure=_ball(radius))[pad:-pad, pad:-pad, pad:-pad]
    least = 0 if fill_dents else 1
    for crop, piece in _pieces(closed & ~solid):
        if _euler_gain(solid, piece, crop) >= least:
            solid[crop] |= piece
    solid[...] = ndimage.binary_fill_holes(solid)
    return solid


def remove_small_handles(solid: np.ndarray, close_radius: int, plug_radius: int) -> np.ndarray:
    """Close a solid without raising its genus: dents and tunnels up to ``close_radius``, tunnels only up
    to ``plug_radius`` (voxels).

    For each ball radius sqrt(k), k = 1 .. max(close_radius, plug_radius)^2, in turn
    (``close_guarded``): the pieces a morphological closing with that ball adds that lower the genus, and
    up to ``close_radius`` also those that leave it unchanged (a smoother surface, as a plain closing
    gives); so the genus never rises, and beyond ``close_radius`` the shape changes where a tunnel is
    plugged only. A torus' hole, wider than the ball, stays.
    """
    out = solid.copy()
    for k in range(1, int(max(close_radius, plug_radius)) ** 2 + 1):
        close_guarded(out, float(np.sqrt(k)), fill_dents=k <= close_radius**2)
    return out


def clean_occupancy(occupied: np.ndarray, close_radius: int, plug_radius: int = 0) -> np.ndarray:
    """Largest 6-connected occupied region, cavities filled, dents and tunnels closed up to ``close_radius``
    and tunnels plugged up to ``plug_radius`` voxels, never raising the genus (bool, same shape)."""
    labels, n = ndimage.label(occupied)
    if n == 0:
        return occupied.copy()
    sizes = np.bincount(labels.ravel())[1:]
    out = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    return remove_small_handles(out, close_radius, plug_radius) if max(close_radius, plug_radius) > 0 else out


def signed_field(
    density: np.ndarray, level: float, close_radius: int, smooth_sigma: float, plug_radius: int = 0
) -> np.ndarray:
    """Field > 0 inside the cleaned object, < 0 outside, zero on its surface (float64). Its sign is the
    cleaned occupancy of the smoothed field, so marching cubes gives that occupancy's topology."""
    d = np.nan_to_num(np.asarray(density, dtype=np.float64), nan=-np.inf, neginf=-1e30, posinf=1e30)
    log = np.sign(d) * np.log1p(np.abs(d)) - np.sign(level) * np.log1p(abs(level))
    field = np.clip(log, -_CLIP, _CLIP)
    if smooth_sigma > 0:
        field = ndimage.gaussian_filter(field, smooth_sigma, mode="nearest")
    keep = clean_occupancy(field > 0, close_radius, plug_radius)
    field = np.where(keep & (field <= 0), _FLIP, field)
    return np.where(~keep & (field >= 0), -_FLIP, field)

"""Texture and UV figures of a textured mesh: albedo read through the UVs at area-uniform samples.

Purity: the share of samples whose chromaticity ``rgb / (r + g + b)`` is more than
``CHROMA_TOL`` (Euclidean) from the median's, or whose brightness ``(r + g + b) / 3`` is below
``DARK`` or above ``BRIGHT`` times the median brightness. Near black, both are read against a floor,
``FLOOR`` (a brightness of 0.05): the chromaticity's denominator is at least ``3 * FLOOR``, and the
brightness ratios take both the sample's and the median's brightness as at least ``FLOOR``. Without it, a uniformly black texture (median
exactly 0) had every sample "brighter than 1.6x the median" and scored 100% stray, and the chromaticity
of a sample at 0.001 is noise. Colour distances are CIE76 Delta E in CIELAB (the colours taken as sRGB).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from kornia.color import rgb_to_lab
from scipy import sparse

from gen3d.export.uv import uv_coverage

from .primitives import surface_samples

CHROMA_TOL, DARK, BRIGHT, FLOOR = 0.08, 0.5, 1.6, 0.05


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``image [H,W,C]`` (first row = top, values in [0,1]) at ``uv [N,2]`` (v up)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def surface_albedo(
    mesh: trimesh.Trimesh, image: np.ndarray, uv: np.ndarray, n: int = 20000, seed: int = 0
) -> np.ndarray:
    """Albedo ``[n, 3]`` in [0,1] at ``n`` area-uniform points, read through the per-vertex ``uv``."""
    _, face, bary = surface_samples(mesh, n, seed)
    point_uv = np.einsum("nk,nkd->nd", bary, uv[mesh.faces[face]])
    return sample_texture(image, point_uv)


def texture_purity(albedo: np.ndarray) -> dict:
    """Share of stray samples (see the module docstring) and the median colour of ``albedo [N,3]``."""
    albedo = np.asarray(albedo, dtype=np.float64)
    total = albedo.sum(axis=1)
    chroma = albedo / np.maximum(total, 3 * FLOOR)[:, None]
    median = np.median(albedo, axis=0)
    med_chroma = median / max(median.sum(), 3 * FLOOR)
    off_chroma = np.linalg.norm(chroma - med_chroma, axis=1) > CHROMA_TOL
    bright, med_bright = np.maximum(total, 3 * FLOOR), max(median.sum(), 3 * FLOOR)
    off_bright = (bright < DARK * med_bright) | (bright > BRIGHT * med_bright)
    stray = off_chroma | off_bright
    return {
        "stray_fraction": float(stray.mean()),
        "chroma_fraction": float(off_chroma.mean()),
        "brightness_fraction": float(off_bright.mean()),
        "median_albedo": median.tolist(),
    }


def colour_distance(a, b) -> float:
    """CIE76 Delta E between two sRGB colours in [0, 1] (2.3 is just noticeable; > 10 reads as another shade)."""
    rgb = torch.tensor(np.clip([a, b], 0.0, 1.0), dtype=torch.float32).reshape(2, 3, 1, 1)
    lab = rgb_to_lab(rgb).reshape(2, 3)
    return float((lab[0] - lab[1]).norm())


def uv_layout(faces: np.ndarray, uv: np.ndarray) -> dict:
    """UV charts (faces connected through shared UV vertices) and coverage (UV area, no overlaps assumed)."""
    n = len(uv)
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = sparse.csgraph.connected_components(graph, directed=False)
    charts = len(np.unique(label[faces[:, 0]]))
    return {"charts": int(charts), "coverage": min(uv_coverage(uv, faces), 1.0)}

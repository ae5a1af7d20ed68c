"""Albedo as the volume renderer sees it: composited along a short ray through the surface.

A NeRF's colour is not taken at its isosurface: the renderer weights the albedo of every sample
along the ray by ``w_k = T_k (1 - exp(-sigma_k delta))``, and where the density rises slowly those
weights sit inside the level set, where the field's colour has settled. Baking exactly on the
isosurface therefore gives a colour the turntable never showed (often darker, or tinted). Here
each texel's point lies on a ray along its inward normal, from ``depth`` outside to ``inside``
inside (``depth`` when not given), sampled ``n_samples`` times, and its colour is the weighted mean of the albedos
(the innermost sample's albedo where the ray stays empty).
"""

from __future__ import annotations

import numpy as np

from .query import Device, FieldFn, query_field


def ray_albedo(
    points: np.ndarray,
    normals: np.ndarray,
    density_fn: FieldFn,
    albedo_fn: FieldFn,
    depth: float,
    n_samples: int,
    chunk_size: int,
    device: Device = None,
    inside: float | None = None,
) -> np.ndarray:
    """Volume-rendered albedo ``[N, 3]`` of rays through ``points [N,3]`` along ``-normals [N,3]``."""
    inside = depth if inside is None else inside
    offsets = np.linspace(depth, -inside, n_samples)  # outside -> inside
    delta = (depth + inside) / max(n_samples - 1, 1)
    out = np.empty((len(points), 3), dtype=np.float32)
    step = max(1, chunk_size // n_samples)
    for start in range(0, len(points), step):
        p, n = points[start : start + step], normals[start : start + step]
        samples = (p[:, None, :] + offsets[None, :, None] * n[:, None, :]).reshape(-1, 3)
        sigma = np.maximum(query_field(density_fn, samples, chunk_size, device)[:, 0], 0.0).reshape(len(p), -1)
        albedo = query_field(albedo_fn, samples, chunk_size, device).reshape(len(p), n_samples, -1)
        tau = sigma * delta
        transmittance = np.exp(-(np.cumsum(tau, axis=1) - tau))
        weights = transmittance * -np.expm1(-tau)  # [n, K]
        total = weights.sum(axis=1, keepdims=True)
        mixed = (weights[..., None] * albedo).sum(axis=1) / np.maximum(total, 1e-12)
        out[start : start + step] = np.where(total > 1e-3, mixed, albedo[:, -1])
    return out

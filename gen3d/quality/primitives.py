"""The builtin world's true shapes as meshes: marching cubes of the prior's own SDFs.

`gen3d.prior.data` renders the prior's training images by sphere tracing these signed distance
functions (sizes included), so they are the exact ground truth of what a prompt asks for.
"""

from __future__ import annotations

from functools import cache

import mcubes
import numpy as np
import torch
import trimesh

from gen3d.prior.data import _sdf
from gen3d.prior.tokenizer import SHAPES

EXTENT = 0.8  # every shape fits in [-0.8, 0.8]^3 (cube half side 0.42, torus radius 0.65, ...)
# true genus of each shape (closed, one component)
GENUS = {"cube": 0, "sphere": 0, "cylinder": 0, "cone": 0, "torus": 1}


@cache
def primitive_mesh(shape: str, resolution: int = 128) -> trimesh.Trimesh:
    """The zero level set of the shape's SDF in world units (Y-up, centred), watertight."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    axis = torch.linspace(-EXTENT, EXTENT, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sdf = _sdf(shape, grid).reshape(resolution, resolution, resolution).numpy().astype(np.float64)
    verts, faces = mcubes.marching_cubes(-sdf, 0.0)  # inside positive
    verts = -EXTENT + verts * (2 * EXTENT / (resolution - 1))
    mesh = trimesh.Trimesh(verts, faces, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


@cache
def primitive_samples(shape: str, n: int, seed: int = 1) -> np.ndarray:
    """``n`` area-uniform surface points of the true shape, ``[n, 3]``, not normalised."""
    return surface_samples(primitive_mesh(shape), n, seed)[0]


def surface_samples(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-uniform samples: (points [n,3], face index [n], barycentric weights [n,3])."""
    rng = np.random.default_rng(seed)
    area = mesh.area_faces
    face = rng.choice(len(area), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=-1)
    points = np.einsum("nk,nkd->nd", bary, mesh.vertices[mesh.faces[face]])
    return points, face, bary

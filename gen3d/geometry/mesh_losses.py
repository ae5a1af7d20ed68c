"""Mesh regularisers: normal consistency over edges and uniform Laplacian smoothing.

Topology (unique edges, face pairs across edges) depends only on the faces: compute it once
with `mesh_topology(faces)` and pass it to the losses every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class MeshTopology(NamedTuple):
    """edges [E,2] unique vertex pairs (i < j); face_pairs [P,2] faces sharing an edge."""

    edges: torch.Tensor
    face_pairs: torch.Tensor


def mesh_topology(faces: torch.Tensor) -> MeshTopology:
    """faces [F,3] long -> unique edges and the pairs of faces across each edge (non-manifold
    edges with k faces give the k - 1 consecutive pairs)."""
    faces = faces.long()
    Fn = faces.shape[0]
    e = torch.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 1).reshape(-1, 2)  # [3F,2]
    e = e.sort(-1).values
    n = int(faces.max()) + 1 if Fn else 1
    keys, inverse = torch.unique(e[:, 0] * n + e[:, 1], return_inverse=True)  # 1-D: much faster than dim=0
    edges = torch.stack([keys // n, keys % n], -1)
    face_of = torch.arange(Fn, device=faces.device).repeat_interleave(3)
    order = torch.argsort(inverse, stable=True)
    inv_sorted, face_sorted = inverse[order], face_of[order]
    same = inv_sorted[1:] == inv_sorted[:-1]
    pairs = torch.stack([face_sorted[:-1][same], face_sorted[1:][same]], -1)
    return MeshTopology(edges, pairs)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """verts [V,3], faces [F,3] -> normals [F,3] (unnormalised: length = 2 x area)."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return F.normalize(n, dim=-1, eps=1e-12) if normalize else n


def normal_consistency(verts: torch.Tensor, faces: torch.Tensor, topology: MeshTopology) -> torch.Tensor:
    """Mean over interior edges of 1 - cos(angle between the normals of the two faces)."""
    if topology.face_pairs.shape[0] == 0:
        return verts.new_zeros(())
    n = face_normals(verts, faces)
    p = topology.face_pairs
    return (1.0 - (n[p[:, 0]] * n[p[:, 1]]).sum(-1)).mean()


def uniform_laplacian(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Uniform Laplacian of per-vertex values x [V,C]: mean of the neighbours minus x (isolated
    vertices give 0)."""
    i, j = edges[:, 0], edges[:, 1]
    total = x.new_zeros(x.shape).index_add(0, i, x[j]).index_add(0, j, x[i])
    deg = x.new_zeros(x.shape[0]).index_add(0, i, x.new_ones(i.shape)).index_add(0, j, x.new_ones(j.shape))
    mean = total / deg.clamp_min(1.0)[:, None]
    return torch.where(deg[:, None] > 0, mean - x, torch.zeros_like(x))


def laplacian_smoothing(x: torch.Tensor, topology: MeshTopology) -> torch.Tensor:
    """Mean over vertices of the squared norm of the uniform Laplacian of x [V,C]
    (vertex positions or offsets)."""
    if x.shape[0] == 0:
        return x.new_zeros(())
    return uniform_laplacian(x, topology.edges).square().sum(-1).mean()

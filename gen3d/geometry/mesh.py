"""Explicit mesh geometry for the mesh stages (Magic3D / ProlificDreamer refinement).

A fixed triangle mesh (e.g. marching cubes of the coarse NeRF's density) with learnable
per-vertex offsets and a texture field: an `ImplicitVolume` whose albedo head is queried at
surface points (so the coarse stage's field can be copied into it as the starting texture).
Topology (faces) and the base vertices are buffers in the state dict: loading a checkpoint
into any MeshGeometry (even an empty one) restores the mesh, so resume and export-only work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gen3d.config import ranged
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.geometry.mesh_losses import (
    MeshTopology,
    face_normals,
    laplacian_smoothing,
    mesh_topology,
    normal_consistency,
)

if TYPE_CHECKING:
    import trimesh

OFFSET_TYPES = ("free", "normal", "none")


@dataclass
class MeshGeometryConfig:
    """The mesh stage's own settings. Its texture field has the previous stage's field architecture
    (`from_implicit`), the extraction box is that field's [-R, R]^3: neither is configured here."""

    offset_type: str = ranged(
        "free", choices=OFFSET_TYPES
    )  # free: [V,3] offsets; normal: [V,1] along the base normals; none: fixed
    # from_field defaults: marching-cubes grid, density level ("auto" = Otsu), floater removal
    resolution: int = ranged(96, ge=8, le=1024)
    threshold: Union[float, str] = "auto"
    min_component_fraction: float = ranged(0.05, ge=0, le=1)
    chunk_size: int = ranged(65536, ge=1)
    # occupancy clean-up before marching cubes, as the exporter's (export.close_radius / plug_radius /
    # smooth_sigma): dents and tunnels up to 2x close_radius voxels closed, tunnels up to 2x plug_radius
    # plugged, never raising the genus; the signed field smoothed over smooth_sigma voxels; 0 = off
    close_radius: int = ranged(2, ge=0)
    plug_radius: int = ranged(3, ge=0)
    smooth_sigma: float = ranged(1.0, ge=0)
    # Taubin smoothing passes on the extracted surface (volume-preserving; removes the marching-cubes
    # bumps of a noisy NeRF density before the mesh stage refines it); 0 = off
    smooth_iterations: int = ranged(50, ge=0)
    # texture smoothness term (weight `loss.albedo_smooth`): |albedo(x) - albedo(x + t)| at this many
    # area-uniform surface points a step, t a random tangent of length albedo_smooth_jitter (world units);
    # 0 points = off
    albedo_smooth_points: int = ranged(0, ge=0, le=1 << 20)
    albedo_smooth_jitter: float = ranged(0.02, gt=0, le=1)


class TexturedSurface(nn.Module):
    """What the mesh renderer and the mesh stages' terms read of a surface geometry: `surface()` ->
    (vertices [V,3], faces [F,3]) differentiable w.r.t. its parameters, and an albedo field `texture` (an
    ImplicitVolume). MeshGeometry (a fixed topology) and DMTetGeometry (gen3d.geometry.dmtet: the level set
    of a tetrahedral SDF grid) are the two."""

    cfg: MeshGeometryConfig
    texture: ImplicitVolume

    def surface(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def topology_of(self, faces: torch.Tensor) -> MeshTopology:
        """Edges and adjacent face pairs of these faces (the terms below)."""
        return mesh_topology(faces)

    def vertex_normals(self) -> torch.Tensor:
        """Area-weighted unit vertex normals [V,3] of the current surface (differentiable)."""
        return vertex_normals(*self.surface())

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """Albedo [N,3] in [0,1] at world points [N,3]."""
        return self.texture.albedo(points)

    def albedo_smoothness(self, n_points: int, jitter: float) -> torch.Tensor:
        """Mean L1 difference of the albedo at n_points area-uniform surface points and at the points
        moved `jitter` along a random tangent (the texture's speckle; 0 on a constant texture)."""
        points, normals = self.surface_points(n_points)
        tangent = torch.randn_like(points)
        tangent = F.normalize(tangent - (tangent * normals).sum(-1, keepdim=True) * normals, dim=-1, eps=1e-12)
        albedo = self.albedo(torch.cat([points, points + jitter * tangent]))
        return (albedo[:n_points] - albedo[n_points:]).abs().sum(-1).mean()

    @torch.no_grad()
    def surface_points(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n area-uniform points on the current surface [n,3] and their unit face normals [n,3] (no grad)."""
        verts, faces = self.surface()
        normals = face_normals(verts, faces, normalize=False)
        face = torch.multinomial(normals.norm(dim=-1) + 1e-12, n, replacement=True)
        u, v = torch.rand(2, n, 1, device=verts.device)
        flip = (u + v) > 1
        u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
        a, b, c = verts[faces[face]].unbind(1)
        return a + u * (b - a) + v * (c - a), F.normalize(normals[face], dim=-1, eps=1e-12)

    def normal_consistency(self) -> torch.Tensor:
        verts, faces = self.surface()
        return normal_consistency(verts, faces, self.topology_of(faces))

    def laplacian_smoothing(self) -> torch.Tensor:
        verts, faces = self.surface()
        return laplacian_smoothing(verts, self.topology_of(faces))

    @torch.no_grad()
    def to_trimesh(self) -> trimesh.Trimesh:
        """The current mesh (CPU, float64) for export_trimesh."""
        import trimesh

        verts, faces = self.surface()
        return trimesh.Trimesh(verts.detach().double().cpu().numpy(), faces.cpu().numpy(), process=False)


class MeshGeometry(TexturedSurface):
    """Mesh with learnable vertex offsets and an albedo field.

    vertices() [V,3], faces [F,3] long, vertex_normals() [V,3], albedo(points [N,3]) -> [N,3].
    texture: the texture field's config (an ImplicitVolume's; its density head is unused).
    """

    def __init__(
        self,
        cfg: MeshGeometryConfig = MeshGeometryConfig(),
        vertices: torch.Tensor | np.ndarray | None = None,
        faces: torch.Tensor | np.ndarray | None = None,
        texture: ImplicitVolumeConfig = ImplicitVolumeConfig(),
    ):
        super().__init__()
        if cfg.offset_type not in OFFSET_TYPES:
            raise ValueError(f"offset_type must be one of {OFFSET_TYPES}, got {cfg.offset_type!r}")
        self.cfg = cfg
        v = torch.as_tensor(np.zeros((0, 3)) if vertices is None else vertices, dtype=torch.float32)
        f = torch.as_tensor(np.zeros((0, 3)) if faces is None else faces).long()
        self.register_buffer("base_vertices", v.clone())
        self.register_buffer("faces", f.clone())
        self.offsets = nn.Parameter(torch.zeros(v.shape[0], self._offset_dim()))
        self.texture = ImplicitVolume(texture)
        self._topology: MeshTopology | None = None
        self._base_normals: torch.Tensor | None = None

    def _offset_dim(self) -> int:
        return {"free": 3, "normal": 1, "none": 0}[self.cfg.offset_type]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_field(
        cls,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        cfg: MeshGeometryConfig = MeshGeometryConfig(),
        resolution: int | None = None,
        threshold: float | str | None = None,
        radius: float = 1.0,
        device=None,
        texture: ImplicitVolumeConfig = ImplicitVolumeConfig(),
    ) -> MeshGeometry:
        """Marching cubes of density_fn (points [N,3] -> [N] or [N,1]) in [-radius, radius]^3 with the
        exporter's extraction."""
        from gen3d.export.extract import extract_mesh  # trimesh, PyMCubes: imported when a mesh is made

        mesh, _ = extract_mesh(
            density_fn,
            radius,
            cfg.resolution if resolution is None else resolution,
            cfg.threshold if threshold is None else threshold,
            cfg.chunk_size,
            cfg.min_component_fraction,
            device,
            cfg.close_radius,
            cfg.smooth_sigma,
            cfg.plug_radius,
        )
        if cfg.smooth_iterations > 0:
            import trimesh

            trimesh.smoothing.filter_taubin(mesh, iterations=cfg.smooth_iterations)
        return cls(cfg, mesh.vertices, mesh.faces, texture)

    @classmethod
    def from_implicit(
        cls, volume: ImplicitVolume, cfg: MeshGeometryConfig = MeshGeometryConfig(), **kwargs
    ) -> MeshGeometry:
        """Start the mesh stage from a trained ImplicitVolume: its density's isosurface inside its box,
        and its weights as the initial texture field (which has the volume's architecture)."""
        device = next(volume.parameters()).device
        geo = cls.from_field(volume.density, cfg, radius=volume.cfg.radius, device=device, texture=volume.cfg, **kwargs)
        geo.texture.load_state_dict(volume.state_dict())
        return geo.to(device)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def topology(self) -> MeshTopology:
        """Edges and adjacent face pairs (computed once per topology)."""
        if self._topology is None or self._topology.edges.device != self.faces.device:
            self._topology = mesh_topology(self.faces)
        return self._topology

    def base_normals(self) -> torch.Tensor:
        if (
            self._base_normals is None
            or self._base_normals.shape[0] != self.base_vertices.shape[0]
            or self._base_normals.device != self.base_vertices.device
        ):
            self._base_normals = vertex_normals(self.base_vertices, self.faces)
        return self._base_normals

    def vertices(self) -> torch.Tensor:
        """Current vertex positions [V,3] (differentiable w.r.t. the offsets)."""
        if self.cfg.offset_type == "free":
            return self.base_vertices + self.offsets
        if self.cfg.offset_type == "normal":
            return self.base_vertices + self.offsets * self.base_normals()
        return self.base_vertices

    def surface(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vertices(), self.faces

    def topology_of(self, faces: torch.Tensor) -> MeshTopology:
        return self.topology  # fixed faces: computed once

    # -- checkpoints: shapes come from the checkpoint -------------------------------------------
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name in ("base_vertices", "faces"):
            if prefix + name in state_dict:
                src = state_dict[prefix + name]
                setattr(
                    self,
                    name,
                    torch.empty(src.shape, dtype=getattr(self, name).dtype, device=getattr(self, name).device),
                )
        if prefix + "offsets" in state_dict:
            self.offsets.data = torch.empty_like(state_dict[prefix + "offsets"], device=self.offsets.device)
        self._topology = self._base_normals = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [V,3] of verts [V,3], faces [F,3]."""
    fn = face_normals(verts, faces, normalize=False)  # length = 2 x area
    acc = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-12)

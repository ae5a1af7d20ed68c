"""DMTet geometry (Shen et al. 2021; the surface of the real Magic3D's refine stage): an SDF value and a
bounded deformation at every vertex of a tetrahedral grid over the field's box, and the triangle mesh of
the SDF's zero level set by marching tetrahedra (gen3d.geometry.tets), so the surface can change its
topology while it is refined, which vertex offsets on a fixed mesh cannot.

It starts from a previous stage's field (`from_field`): the density sampled on the grid's vertices, the
occupancy cleaned as the exporter's (gen3d.export.grid_clean: largest region, cavities filled, narrow
tunnels plugged), and its signed distance (an exact Euclidean distance transform of that occupancy,
smoothed over `smooth_sigma` cells) as the start SDF: a clean surface, not the density's lumpy isosurface.

Only the tetrahedra near the surface are searched (`band` cells, refreshed whenever the SDF has moved
far enough since the last search to change a sign outside it), and the surface is cached per training
step (`update_step`), so the renderer and the mesh terms share one extraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from gen3d.config import ranged
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.geometry.mesh import MeshGeometryConfig, TexturedSurface
from gen3d.geometry.mesh_losses import MeshTopology
from gen3d.geometry.tets import cube_tets, marching_tets


@dataclass
class DMTetSettings:
    """`parts.dmtet` settings of the `dmtet` representation."""

    resolution: int = ranged(0, ge=0, le=512)  # grid points per axis; 0: the stage's `mesh.resolution`
    deform: float = ranged(0.25, ge=0, lt=0.5)  # the largest vertex move, in cells (tanh-bounded)
    smooth_sigma: float = ranged(1.0, ge=0)  # smoothing of the start SDF, in cells
    lr_sdf: float = ranged(1e-3, ge=0)  # world units: the surface moves about this far a step at most
    lr_deform: float = ranged(1e-2, ge=0)
    band: int = ranged(3, ge=1)  # cells around the surface searched for the level set


def start_sdf(occupancy: np.ndarray, cell: float, smooth_sigma: float) -> np.ndarray:
    """Signed distance (world units, < 0 inside) of a boolean occupancy grid, its surface halfway between
    an inside and an outside sample, smoothed over `smooth_sigma` cells."""
    from scipy import ndimage

    if not occupancy.any() or occupancy.all():
        raise ValueError("the start occupancy has no surface (all inside or all outside)")
    outside = ndimage.distance_transform_edt(~occupancy)  # to the nearest inside sample
    inside = ndimage.distance_transform_edt(occupancy)
    sdf = np.where(occupancy, 0.5 - inside, outside - 0.5) * cell
    if smooth_sigma > 0:
        sdf = ndimage.gaussian_filter(sdf, smooth_sigma, mode="nearest")
    return sdf.astype(np.float32)


class DMTetGeometry(TexturedSurface):
    """surface() -> (vertices [E,3], faces [F,3]) of the SDF's zero level set; albedo from `texture`."""

    def __init__(
        self,
        settings: DMTetSettings,
        resolution: int,
        radius: float = 1.0,
        cfg: MeshGeometryConfig = MeshGeometryConfig(),
        texture: ImplicitVolumeConfig = ImplicitVolumeConfig(),
    ):
        super().__init__()
        self.settings, self.cfg, self.radius, self.resolution = settings, cfg, radius, resolution
        grid, tets = cube_tets(resolution)
        self.cell = 2.0 * radius / (resolution - 1)
        self.register_buffer("grid", grid * radius, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.register_buffer("boundary", (grid.abs() > 1 - 1e-6).any(-1), persistent=False)
        self.sdf = nn.Parameter(torch.full((grid.shape[0],), self.cell))  # empty until from_field / a checkpoint
        self.deformation = nn.Parameter(torch.zeros(grid.shape[0], 3))
        self.texture = ImplicitVolume(texture)
        self._band: torch.Tensor | None = None
        self._band_sdf: torch.Tensor | None = None
        self._cache: tuple | None = None

    @classmethod
    def from_field(
        cls,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        level: float | str,
        settings: DMTetSettings,
        resolution: int,
        radius: float,
        cfg: MeshGeometryConfig = MeshGeometryConfig(),
        texture: ImplicitVolumeConfig = ImplicitVolumeConfig(),
        device=None,
    ) -> DMTetGeometry:
        """Start from a field's density (points [N,3] -> [N] or [N,1]) at `level` ("auto": Otsu), the
        occupancy cleaned with `cfg`'s close / plug / smoothing radii (the mesh stage's)."""
        from gen3d.export.extract import resolve_threshold, sample_density_grid
        from gen3d.export.grid_clean import signed_field

        density = sample_density_grid(density_fn, resolution, radius, cfg.chunk_size, device)
        field = signed_field(
            density, resolve_threshold(density, level), cfg.close_radius, cfg.smooth_sigma, cfg.plug_radius
        )
        geo = cls(settings, resolution, radius, cfg, texture)
        sdf = start_sdf(field > 0, geo.cell, settings.smooth_sigma)
        geo.sdf.data = torch.from_numpy(sdf.reshape(-1))
        return geo.to(device) if device is not None else geo

    # -- the surface -------------------------------------------------------------------------
    def sdf_values(self) -> torch.Tensor:
        """The SDF at the grid's vertices [V]; the box's boundary is kept outside, so the surface is closed."""
        return torch.where(self.boundary, self.sdf.clamp(min=0.5 * self.cell), self.sdf)

    def vertices_of_grid(self) -> torch.Tensor:
        """The deformed grid [V,3]: each vertex within `deform` cells of its place (the boundary fixed)."""
        move = self.settings.deform * self.cell * torch.tanh(self.deformation)
        return self.grid + move * (~self.boundary)[:, None]

    @torch.no_grad()
    def _search_band(self, sdf: torch.Tensor) -> torch.Tensor:
        """The tetrahedra near the surface; a tetrahedron outside has every vertex on one side, at least
        `band` cells from zero, so a sign there can only change once the SDF has moved that far."""
        if self._band is None or (sdf - self._band_sdf).abs().max() >= self.settings.band * self.cell:
            values = sdf[self.tets]
            near = (values.abs().min(-1).values < self.settings.band * self.cell) | (
                (values < 0).any(-1) & (values >= 0).any(-1)
            )
            self._band, self._band_sdf = self.tets[near], sdf.detach().clone()
        return self._band

    def surface(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.sdf._version, self.deformation._version, torch.is_grad_enabled())
        if self._cache is None or self._cache[0] != key:
            sdf = self.sdf_values()
            verts, faces = marching_tets(self.vertices_of_grid(), self._search_band(sdf.detach()), sdf, self.grid)
            self._cache = (key, verts, faces, None)
        return self._cache[1], self._cache[2]

    def topology_of(self, faces: torch.Tensor) -> MeshTopology:
        """The current surface's edges and face pairs, computed once per extraction."""
        if self._cache is None or self._cache[2] is not faces:
            return super().topology_of(faces)
        if self._cache[3] is None:
            self._cache = (*self._cache[:3], super().topology_of(faces))
        return self._cache[3]

    def update_step(self, step: int) -> None:
        """A new training step: the next surface() extracts again (its graph is the new step's)."""
        self._cache = None

    def _forget(self) -> None:
        self._band = self._band_sdf = self._cache = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._forget()

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .float(): new tensors, nothing cached is theirs
        self._forget()
        return super()._apply(fn, *args, **kwargs)

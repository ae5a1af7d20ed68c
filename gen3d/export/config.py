"""Configuration of the mesh exporter (merged from YAML with ``OmegaConf.structured``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from gen3d.config import ranged
from gen3d.errors import UserError

PLACEMENTS = ("center", "ground", "field")
BAKE_MODES = ("ray", "surface")


@dataclass
class ExportConfig:
    """Settings for ``export_mesh`` / ``export_trimesh``.

    Axis convention (fixed, not configurable): the world is Y-up, right-handed, with the
    object's front facing +Z. Both files are written in that frame without conversion:
    glTF is Y-up by specification, and Blender's OBJ importer defaults (forward -Z, up Y)
    map the OBJ to Blender's Z-up the same way its glTF importer does.
    """

    resolution: int = ranged(128, ge=8, le=1024)
    """Marching-cubes grid samples per axis over [-radius, radius] (inclusive ends)."""
    threshold: Union[float, str] = "auto"
    """Isosurface density level, or "auto" (Otsu split of the log-density histogram)."""
    chunk_size: int = ranged(65536, ge=1)
    """Points per call of ``density_fn`` / ``albedo_fn``."""
    min_component_fraction: float = ranged(1.0, ge=0, le=1)
    """Keep connected components with surface area >= this fraction of the largest's (1 = the largest only)."""
    close_radius: int = ranged(2, ge=0)
    """Occupancy clean-up before marching cubes: dents and tunnels narrower than about 2x this many voxels
    are closed (the pieces of morphological closings that do not raise the genus, ``grid_clean``),
    cavities filled, only the largest region kept; 0 = off."""
    plug_radius: int = ranged(3, ge=0)
    """Occupancy clean-up: tunnels narrower than about 2x this many voxels are plugged where that lowers
    the genus (nothing else changes beyond ``close_radius``); 0 = off."""
    smooth_sigma: float = ranged(1.0, ge=0)
    """Gaussian smoothing (voxels) of the signed field before the clean-up and marching cubes; 0 = off."""
    smooth_iterations: int = ranged(10, ge=0)
    """Taubin smoothing passes on the extracted surface; 0 = off."""
    target_faces: int = ranged(6000, ge=0)
    """Quadric decimation to about this many faces before UV unwrapping; 0 = keep all."""
    uv_attempts: int = ranged(3, ge=1)
    """xatlas option sets tried (``uv.UV_CANDIDATES``); the layout covering most texture is kept."""
    texture_size: int = ranged(512, ge=8, le=16384)
    """Width and height of the square albedo texture in texels."""
    padding: int = ranged(4, ge=0)
    """Texels between UV charts and width of the seam dilation around them."""
    bake: str = ranged("ray", choices=BAKE_MODES)
    """"ray": albedo composited along a short ray through the surface with the renderer's weights
    (fields with a density); "surface": the albedo at the surface point (always used for meshes)."""
    bake_depth: float = ranged(0.05, gt=0)
    """Ray bake: the ray starts this far outside the surface (world units)."""
    bake_inside: float = ranged(0.05, gt=0)
    """Ray bake: the ray ends this far inside the surface (world units)."""
    bake_samples: int = ranged(16, ge=1)
    """Ray bake: samples per ray."""
    texture_median: float = ranged(0.0, ge=0)
    """Edge-preserving clean-up of the baked albedo: per-channel median over each texel's surface
    neighbours within this many texel spacings (``texture_filter.surface_median``); 0 = off."""
    placement: str = ranged("center", choices=PLACEMENTS)
    """Where the written mesh sits: "center" (bounding-box centre at the origin), "ground" (centred in
    x and z, lowest point at y = 0, for scene assembly), "field" (the training frame, unchanged)."""
    write_obj: bool = True
    """Write ``<name>.obj`` + ``<name>.mtl`` (+ the shared ``<name>.png``)."""
    write_glb: bool = True
    """Write ``<name>.glb`` with the texture embedded."""

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise UserError(f"export.placement must be one of {', '.join(PLACEMENTS)} (got {self.placement!r})")
        if self.bake not in BAKE_MODES:
            raise UserError(f"export.bake must be one of {', '.join(BAKE_MODES)} (got {self.bake!r})")

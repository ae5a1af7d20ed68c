"""Configuration of the mesh exporter (merged from YAML with ``OmegaConf.structured``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass
class ExportConfig:
    """Settings for ``export_mesh`` / ``export_trimesh``.

    Axis convention (fixed, not configurable): the world is Y-up, right-handed, with the
    object's front facing +Z. Both files are written in that frame without conversion:
    glTF is Y-up by specification, and Blender's OBJ importer defaults (forward -Z, up Y)
    map the OBJ to Blender's Z-up the same way its glTF importer does.
    """

    resolution: int = 128
    """Marching-cubes grid samples per axis over [-radius, radius] (inclusive ends)."""
    threshold: Union[float, str] = "auto"
    """Isosurface density level, or "auto" (Otsu split of the log-density histogram)."""
    chunk_size: int = 65536
    """Points per call of ``density_fn`` / ``albedo_fn``."""
    min_component_fraction: float = 0.05
    """Drop connected components with surface area below this fraction of the largest."""
    texture_size: int = 512
    """Width and height of the square albedo texture in texels."""
    padding: int = 4
    """Texels between UV charts and width of the seam dilation around them."""
    write_obj: bool = True
    """Write ``<name>.obj`` + ``<name>.mtl`` (+ the shared ``<name>.png``)."""
    write_glb: bool = True
    """Write ``<name>.glb`` with the texture embedded."""

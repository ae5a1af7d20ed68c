"""Mesh export: implicit field -> marching cubes -> UVs -> baked albedo -> OBJ/MTL/PNG + GLB."""

from .config import ExportConfig
from .extract import auto_threshold, extract_mesh
from .pipeline import export_mesh, export_trimesh

__all__ = ["ExportConfig", "auto_threshold", "extract_mesh", "export_mesh", "export_trimesh"]

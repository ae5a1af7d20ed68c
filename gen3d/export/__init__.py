"""Mesh export: implicit field -> marching cubes -> UVs -> baked albedo -> OBJ/MTL/PNG + GLB.

The exporter's modules (trimesh, PyMCubes, xatlas) are imported on first use, so that reading a config
(`ExportConfig`) stays light.
"""

from importlib import import_module

from .config import ExportConfig

_LAZY = {
    "auto_threshold": ".extract",
    "extract_mesh": ".extract",
    "export_mesh": ".pipeline",
    "export_trimesh": ".pipeline",
}
__all__ = ["ExportConfig", "auto_threshold", "extract_mesh", "export_mesh", "export_trimesh"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

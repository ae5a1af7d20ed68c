"""Quality of an exported asset, measured on the GLB itself against the builtin world's true shapes.

Geometry (Chamfer distance to the true primitive after normalisation and alignment), topology
(components, watertightness, genus), texture purity and colour, UV layout. See docs/quality.md.
"""

from .asset import evaluate_asset, load_asset
from .geometry import chamfer_to_primitive, nearest_primitive, topology
from .texture import colour_distance, texture_purity, uv_layout

__all__ = [
    "evaluate_asset",
    "load_asset",
    "chamfer_to_primitive",
    "nearest_primitive",
    "topology",
    "texture_purity",
    "colour_distance",
    "uv_layout",
]

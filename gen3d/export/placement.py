"""Where the written mesh sits in the world: centred on the origin, resting on the ground, or as trained."""

from __future__ import annotations

import numpy as np


def placement_offset(vertices: np.ndarray, placement: str) -> np.ndarray:
    """Translation ``[3]`` to add to ``vertices [V,3]`` (Y-up).

    center: the bounding box's centre goes to the origin; ground: centred in x and z, the lowest
    point at y = 0; field: no change (the training frame).
    """
    if placement == "field" or len(vertices) == 0:
        return np.zeros(3)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    offset = -(lo + hi) / 2.0
    if placement == "ground":
        offset[1] = -lo[1]
    elif placement != "center":
        raise ValueError(f"unknown placement {placement!r} (center, ground or field)")
    return offset

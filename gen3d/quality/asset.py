"""All quality figures of one exported GLB (and, given its turntable, the colour fidelity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from gen3d.prior.data import COLOUR_RGB
from gen3d.prior.tokenizer import SHAPES

from .geometry import chamfer_to_primitive, mesh_samples, topology
from .primitives import GENUS
from .texture import colour_distance, surface_albedo, texture_purity, uv_layout
from .turntable import turntable_colour


def load_asset(path: Path) -> tuple[trimesh.Trimesh, np.ndarray, np.ndarray]:
    """A GLB as (mesh with its vertices as stored, texture [H,W,3] in [0,1], per-vertex UV [V,2], v up)."""
    scene = trimesh.load(str(path), force="scene", process=False)
    meshes = list(scene.dump()) if hasattr(scene, "dump") else [scene]
    if len(meshes) != 1:
        raise ValueError(f"{path}: expected one mesh, found {len(meshes)}")
    mesh = meshes[0]
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        raise ValueError(f"{path}: the mesh has no base colour texture")
    texture = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    return mesh, texture, np.asarray(mesh.visual.uv, dtype=np.float64)


def evaluate_asset(
    glb: Path, shape: str | None = None, colour: str | None = None, turntable: Path | None = None
) -> dict:
    """Quality figures of an exported GLB; with the prompt's ``shape`` / ``colour`` the targets too.

    Keys: chamfer (to ``shape``), chamfer_all (each primitive), nearest, components, watertight,
    genus, stray_fraction, median_albedo, charts, coverage, centre (bounding box), and with a
    turntable ``turntable_colour`` and ``colour_delta_e``; with ``colour`` ``prompt_delta_e``.
    """
    mesh, texture, uv = load_asset(glb)
    points = mesh_samples(mesh)
    chamfer_all = {s: chamfer_to_primitive(points, s)["chamfer"] for s in SHAPES}
    out: dict = {"chamfer_all": chamfer_all, "nearest": min(chamfer_all, key=chamfer_all.get)}
    if shape is not None:
        out["chamfer"] = chamfer_all[shape]
        out["true_genus"] = GENUS[shape]
    out.update(topology(mesh))
    purity = texture_purity(surface_albedo(mesh, texture, uv))
    out.update(purity)
    out.update(uv_layout(np.asarray(mesh.faces), uv))
    lo, hi = mesh.bounds
    out["centre"] = ((lo + hi) / 2).tolist()
    out["min_y"] = float(lo[1])
    if turntable is not None and Path(turntable).is_file():
        out["turntable_colour"] = turntable_colour(turntable)
        out["colour_delta_e"] = colour_distance(purity["median_albedo"], out["turntable_colour"])
    if colour is not None:
        out["prompt_delta_e"] = colour_distance(purity["median_albedo"], COLOUR_RGB[colour])
    return out

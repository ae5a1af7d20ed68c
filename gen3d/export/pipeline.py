"""Public entry points: field -> textured mesh files, and mesh -> textured mesh files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from .bake import bake_albedo
from .config import ExportConfig
from .extract import extract_mesh
from .query import Device, FieldFn
from .uv import collapse_slivers, unwrap_uv
from .writers import TexturedMesh, to_uint8, write_textured_mesh


def texture_mesh(
    mesh: trimesh.Trimesh, albedo_fn: FieldFn, cfg: ExportConfig, device: Device = None
) -> tuple[TexturedMesh, float]:
    """Unwrap ``mesh`` and bake ``albedo_fn`` on it; returns (textured mesh, texel coverage)."""
    mesh = collapse_slivers(mesh)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    layout = unwrap_uv(vertices, faces, cfg.texture_size, cfg.padding)
    image, coverage = bake_albedo(
        vertices, faces, layout.uv, layout.faces_uv, albedo_fn,
        cfg.texture_size, cfg.padding, cfg.chunk_size, device,
    )
    textured = TexturedMesh(
        vertices=vertices,
        normals=np.asarray(mesh.vertex_normals, dtype=np.float64),
        faces=layout.vmapping[layout.faces_uv],
        uv=layout.uv,
        vmapping=layout.vmapping,
        faces_uv=layout.faces_uv,
        texture=to_uint8(image),
    )
    return textured, coverage


def export_trimesh(
    mesh: trimesh.Trimesh,
    albedo_fn: FieldFn,
    out_dir: Path,
    cfg: ExportConfig,
    name: str = "model",
    device: Device = None,
) -> dict[str, Any]:
    """Texture an existing Y-up mesh with ``albedo_fn`` and write it to ``out_dir``.

    Args:
        mesh: triangle mesh in world coordinates, faces wound counter-clockwise from outside.
        albedo_fn: ``points [N,3] -> [N,3]`` in [0, 1] (called in chunks, no grad).
    Returns:
        dict with paths (``texture``, ``obj``, ``mtl``, ``glb`` as written) and stats
        ``n_vertices`` (geometric), ``n_uv_vertices`` (split at UV seams, = GLB vertex
        count), ``n_faces``, ``texel_coverage``.
    """
    if len(mesh.faces) == 0:
        raise ValueError("cannot export a mesh without faces")
    textured, coverage = texture_mesh(mesh, albedo_fn, cfg, device)
    out: dict[str, Any] = dict(write_textured_mesh(textured, Path(out_dir), name, cfg.write_obj, cfg.write_glb))
    out.update(
        n_vertices=len(textured.vertices),
        n_uv_vertices=len(textured.uv),
        n_faces=len(textured.faces),
        texel_coverage=coverage,
    )
    return out


def export_mesh(
    density_fn: FieldFn,
    albedo_fn: FieldFn,
    out_dir: Path,
    cfg: ExportConfig,
    radius: float = 1.0,
    name: str = "model",
    device: Device = None,
) -> dict[str, Any]:
    """Extract the isosurface of ``density_fn`` in [-radius, radius]^3, texture it, write it.

    Args:
        density_fn: ``points [N,3] -> [N]`` or ``[N,1]``, higher = more inside.
        albedo_fn: ``points [N,3] -> [N,3]`` in [0, 1].
        device: where query points are sent (default CPU).
    Returns:
        ``export_trimesh``'s dict plus ``threshold`` (the density level used).
    Raises:
        ValueError: if the field is empty or constant, or a fixed threshold misses it.
    """
    mesh, level = extract_mesh(
        density_fn, radius, cfg.resolution, cfg.threshold,
        cfg.chunk_size, cfg.min_component_fraction, device,
    )
    out = export_trimesh(mesh, albedo_fn, out_dir, cfg, name=name, device=device)
    out["threshold"] = level
    return out

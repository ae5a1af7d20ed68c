"""Public entry points: field -> textured mesh files, and mesh -> textured mesh files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from .bake import ColourFn, bake_albedo
from .config import ExportConfig
from .extract import extract_mesh
from .placement import placement_offset
from .query import Device, FieldFn, query_field
from .ray_bake import ray_albedo
from .remesh import clean_surface
from .texture_filter import surface_median
from .uv import collapse_slivers, unwrap_uv
from .writers import TexturedMesh, to_uint8, write_textured_mesh


def colour_function(
    albedo_fn: FieldFn, cfg: ExportConfig, device: Device = None, density_fn: FieldFn | None = None
) -> ColourFn:
    """What a texel shows: the ray-composited albedo (``bake: ray`` with a density), else the
    albedo at the surface point; then, with ``texture_median`` > 0, its surface median."""
    if cfg.bake == "ray" and density_fn is not None:

        def colour(p, n):
            return ray_albedo(
                p, n, density_fn, albedo_fn, cfg.bake_depth, cfg.bake_samples, cfg.chunk_size, device, cfg.bake_inside
            )
    else:

        def colour(p, n):
            return query_field(albedo_fn, p, cfg.chunk_size, device)

    if cfg.texture_median <= 0:
        return colour
    return lambda p, n: surface_median(p, n, colour(p, n), cfg.texture_median)


def texture_mesh(
    mesh: trimesh.Trimesh,
    albedo_fn: FieldFn,
    cfg: ExportConfig,
    device: Device = None,
    density_fn: FieldFn | None = None,
) -> tuple[TexturedMesh, float, np.ndarray]:
    """Clean, unwrap and bake ``mesh``, then place it; returns (textured mesh, texel coverage,
    the translation applied to the field's frame)."""
    mesh = collapse_slivers(clean_surface(mesh, cfg.smooth_iterations, cfg.target_faces))
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    layout = unwrap_uv(vertices, faces, cfg.texture_size, cfg.padding, cfg.uv_attempts)
    image, coverage = bake_albedo(
        vertices,
        normals,
        faces,
        layout.uv,
        layout.faces_uv,
        colour_function(albedo_fn, cfg, device, density_fn),
        cfg.texture_size,
        cfg.padding,
    )
    offset = placement_offset(vertices, cfg.placement)
    textured = TexturedMesh(
        vertices=vertices + offset,
        normals=normals,
        faces=layout.vmapping[layout.faces_uv],
        uv=layout.uv,
        vmapping=layout.vmapping,
        faces_uv=layout.faces_uv,
        texture=to_uint8(image),
    )
    return textured, coverage, offset


def export_trimesh(
    mesh: trimesh.Trimesh,
    albedo_fn: FieldFn,
    out_dir: Path,
    cfg: ExportConfig,
    name: str = "model",
    device: Device = None,
    density_fn: FieldFn | None = None,
) -> dict[str, Any]:
    """Texture an existing Y-up mesh with ``albedo_fn`` and write it to ``out_dir``.

    Args:
        mesh: triangle mesh in world coordinates, faces wound counter-clockwise from outside.
        albedo_fn: ``points [N,3] -> [N,3]`` in [0, 1] (called in chunks, no grad).
        density_fn: the field's density, for ``cfg.bake == "ray"`` (None: albedo at the surface).
    Returns:
        dict with paths (``texture``, ``obj``, ``mtl``, ``glb`` as written) and stats
        ``n_vertices`` (geometric), ``n_uv_vertices`` (split at UV seams, = GLB vertex
        count), ``n_faces``, ``texel_coverage``, ``offset`` (the translation from the field's
        frame to the written one, ``cfg.placement``).
    """
    if len(mesh.faces) == 0:
        raise ValueError("cannot export a mesh without faces")
    textured, coverage, offset = texture_mesh(mesh, albedo_fn, cfg, device, density_fn)
    out: dict[str, Any] = dict(write_textured_mesh(textured, Path(out_dir), name, cfg.write_obj, cfg.write_glb))
    out.update(
        n_vertices=len(textured.vertices),
        n_uv_vertices=len(textured.uv),
        n_faces=len(textured.faces),
        texel_coverage=coverage,
        offset=offset.tolist(),
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
        density_fn,
        radius,
        cfg.resolution,
        cfg.threshold,
        cfg.chunk_size,
        cfg.min_component_fraction,
        device,
        cfg.close_radius,
        cfg.smooth_sigma,
        cfg.plug_radius,
    )
    out = export_trimesh(mesh, albedo_fn, out_dir, cfg, name=name, device=device, density_fn=density_fn)
    out["threshold"] = level
    return out

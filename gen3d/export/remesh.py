"""Surface clean-up between extraction and UV unwrapping: one component, smoothed, decimated.

Marching cubes gives tens of thousands of voxel-sized triangles with a staircase; a UV unwrap of
that is thousands of tiny charts. Taubin smoothing (volume-preserving) removes the staircase,
quadric decimation (the ``fast-simplification`` package, through trimesh) brings the mesh to
``target_faces`` triangles with the flat faces of the shape kept flat, and only the largest
connected component is kept.
"""

from __future__ import annotations

import numpy as np
import trimesh


def largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The connected component with the largest area (the mesh itself if it has one)."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return parts[int(np.argmax([p.area for p in parts]))]


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric edge-collapse decimation to about ``target_faces`` faces (no-op if already fewer)."""
    if target_faces <= 0 or len(mesh.faces) <= target_faces:
        return mesh
    out = mesh.simplify_quadric_decimation(face_count=int(target_faces))
    out = trimesh.Trimesh(out.vertices, out.faces, process=True, validate=True)
    # keep the decimated mesh only if it stayed a closed surface when the input was one
    if mesh.is_watertight and not out.is_watertight:
        return mesh
    return out


def clean_surface(mesh: trimesh.Trimesh, smooth_iterations: int, target_faces: int) -> trimesh.Trimesh:
    """Largest component -> Taubin smoothing -> decimation; normals outward on closed meshes."""
    mesh = largest_component(mesh)
    if smooth_iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, iterations=int(smooth_iterations))
    mesh = decimate(mesh, target_faces)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh

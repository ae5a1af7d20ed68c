"""UV unwrapping with xatlas.

UV convention used throughout the exporter (the OBJ / Blender one): u goes right, v goes
*up*, the texture's first image row is the top, so texel ``(row, col)`` of an ``H x W``
image has its centre at ``u = (col + 0.5) / W``, ``v = 1 - (row + 0.5) / H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
import xatlas
from scipy import sparse


@dataclass
class UVLayout:
    """A mesh cut into UV charts.

    Attributes:
        vmapping: ``[T]`` index of the original vertex for each UV vertex (seams duplicate).
        faces_uv: ``[F, 3]`` faces indexing UV vertices, same order and winding as the input.
        uv: ``[T, 2]`` float32 coordinates in [0, 1] (v up, see module docstring).
    """

    vmapping: np.ndarray
    faces_uv: np.ndarray
    uv: np.ndarray


def collapse_slivers(mesh: trimesh.Trimesh, rel_area: float = 1e-5) -> trimesh.Trimesh:
    """Weld the corners of near-zero-area faces into one vertex and drop degenerate faces.

    Marching cubes makes tiny triangles where the surface passes near a grid sample;
    xatlas silently leaves faces below its area epsilon out of every chart (UVs at 0), which
    would sample a wrong texel. Faces with area < ``rel_area`` x the median face area are
    collapsed to their centroid (connected slivers collapse together).
    """
    areas = mesh.area_faces
    small = areas < rel_area * np.median(areas)
    if not small.any():
        return mesh
    f = mesh.faces[small]
    n = len(mesh.vertices)
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = sparse.csgraph.connected_components(graph, directed=False)
    counts = np.bincount(label)
    verts = np.zeros((counts.size, 3))
    np.add.at(verts, label, mesh.vertices)
    verts /= counts[:, None]
    out = trimesh.Trimesh(verts, label[mesh.faces], process=True, validate=True)
    out.remove_unreferenced_vertices()
    return out


# xatlas option sets tried in turn (chart growth limit, chart-growing iterations, brute-force packing, rotate
# charts to their axis); the layout with the most texture covered wins. Measured on the exported DreamFusion
# cube, torus and cone (6000 faces, 32 option sets; docs/methods.md, "Export levers"): brute-force packing covers 2.5 points
# more on average and one chart-growing iteration 1 point more than four; which set is best varies by mesh.
UV_CANDIDATES = ((2.0, 1, True, True), (4.0, 1, True, True), (4.0, 1, True, False))


def uv_coverage(uv: np.ndarray, faces_uv: np.ndarray) -> float:
    """Share of the unit UV square covered by the (non-overlapping) triangles."""
    d1, d2 = uv[faces_uv[:, 1]] - uv[faces_uv[:, 0]], uv[faces_uv[:, 2]] - uv[faces_uv[:, 0]]
    return float(0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]).sum())


def _xatlas(
    vertices: np.ndarray,
    faces: np.ndarray,
    texture_size: int,
    padding: int,
    max_cost: float,
    iterations: int,
    brute_force: bool,
    rotate_to_axis: bool = True,
):
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    pack.bruteForce = bool(brute_force)
    pack.rotate_charts_to_axis = bool(rotate_to_axis)
    charts = xatlas.ChartOptions()
    charts.max_cost = float(max_cost)
    charts.max_iterations = int(iterations)
    atlas.generate(charts, pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the mesh into {atlas.atlas_count} atlases, expected 1")
    return atlas[0]


def unwrap_uv(
    vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int, attempts: int = len(UV_CANDIDATES)
) -> UVLayout:
    """Cut and pack ``vertices [V,3]``, ``faces [F,3]`` into one square atlas.

    xatlas picks the chart scale itself (``texture_size`` is a hint: its atlas typically
    comes out 0-40% larger and the normalised UVs are then baked at ``texture_size``), so the
    ``padding`` texel gutter between charts shrinks by that factor; it stays >= 2 texels for
    ``padding >= 3``, enough for bilinear lookups with the seam dilation of
    ``bake.pad_texture``. The first ``attempts`` option sets of ``UV_CANDIDATES`` are tried and
    the layout covering most of the texture is kept. Faces far below the median area must be
    collapsed first (``collapse_slivers``), otherwise this raises.
    """
    # xatlas drops faces below an absolute area epsilon: work at unit median face area.
    edges = vertices[faces[:, 1:]] - vertices[faces[:, :1]]
    median_area = np.median(0.5 * np.linalg.norm(np.cross(edges[:, 0], edges[:, 1]), axis=-1))
    scale = 1.0 / np.sqrt(max(median_area, 1e-30))
    verts = np.ascontiguousarray((vertices - vertices.mean(0)) * scale, dtype=np.float32)
    tris = np.ascontiguousarray(faces, dtype=np.uint32)
    layouts = [
        _xatlas(verts, tris, texture_size, padding, *options) for options in UV_CANDIDATES[: max(1, int(attempts))]
    ]
    vmapping, faces_uv, uv = max(layouts, key=lambda layout: uv_coverage(layout[2], layout[1]))
    d1, d2 = uv[faces_uv[:, 1]] - uv[faces_uv[:, 0]], uv[faces_uv[:, 2]] - uv[faces_uv[:, 0]]
    uv_area = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    if (uv_area == 0).any():
        raise RuntimeError(
            f"xatlas left {(uv_area == 0).sum()} faces without UVs (degenerate faces?); "
            "clean the mesh with collapse_slivers first"
        )
    return UVLayout(
        vmapping=vmapping.astype(np.int64),
        faces_uv=faces_uv.astype(np.int64),
        uv=np.clip(uv, 0.0, 1.0).astype(np.float32),
    )

"""Writers for textured meshes: PNG, OBJ + MTL, GLB. Every file goes through ``atomic``.

Frame: Y-up, right-handed, front = +Z, written as is in both formats (glTF is Y-up; the OBJ
matches Blender's OBJ importer defaults, forward -Z / up Y).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from ..utils.atomic import write_bytes_atomic, write_text_atomic


@dataclass
class TexturedMesh:
    """A triangle mesh with a UV layout and an albedo texture.

    Attributes:
        vertices: ``[V, 3]`` world positions (Y-up); normals: ``[V, 3]`` unit, outward.
        faces: ``[F, 3]`` counter-clockwise seen from outside, into ``vertices``.
        uv: ``[T, 2]`` in [0, 1], v up (OBJ convention); vmapping: ``[T]`` vertex of each.
        faces_uv: ``[F, 3]`` into ``uv`` (``vmapping[faces_uv] == faces``).
        texture: ``[H, W, 3]`` uint8, first row = top of the image (v = 1).
    """

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    vmapping: np.ndarray
    faces_uv: np.ndarray
    texture: np.ndarray


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] -> uint8 with rounding."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """``[H, W, 3]`` uint8 -> PNG file contents."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _rows(prefix: str, array: np.ndarray, fmt: str, n_groups: int) -> str:
    """One line per row of ``array [N, K]``: ``prefix fmt fmt ...`` (``n_groups`` times)."""
    buf = io.StringIO()
    np.savetxt(buf, array, fmt=f"{prefix} " + " ".join([fmt] * n_groups))
    return buf.getvalue()


def obj_text(mesh: TexturedMesh, mtl_name: str, material: str = "material_0") -> str:
    """OBJ contents: one ``v``/``vn`` per geometric vertex, one ``vt`` per UV vertex.

    Faces are ``f v/vt/vn`` so UV seams do not split the geometry (Blender's importer
    keeps ``V`` vertices). ``vt`` is written as stored (v up, as OBJ expects).
    """
    f_geo = mesh.faces + 1
    f_uv = mesh.faces_uv + 1
    corners = np.stack([f_geo, f_uv, f_geo], axis=-1).reshape(len(f_geo), 9)
    return "".join(
        [
            "# gen3d export: Y-up, right-handed, front +Z (Blender OBJ import: forward -Z, up Y)\n",
            f"mtllib {mtl_name}\n",
            "o mesh\n",
            _rows("v", mesh.vertices, "%.6f", 3),
            _rows("vt", mesh.uv, "%.6f", 2),
            _rows("vn", mesh.normals, "%.6f", 3),
            f"usemtl {material}\n",
            "s 1\n",
            _rows("f", corners, "%d/%d/%d", 3),
        ]
    )


def mtl_text(texture_name: str, material: str = "material_0") -> str:
    """MTL contents: white diffuse modulated by ``map_Kd texture_name``, no specular."""
    return (
        f"newmtl {material}\n"
        "Ka 1.000000 1.000000 1.000000\n"
        "Kd 1.000000 1.000000 1.000000\n"
        "Ks 0.000000 0.000000 0.000000\n"
        "d 1.0\n"
        "illum 1\n"
        f"map_Kd {texture_name}\n"
    )


def glb_bytes(mesh: TexturedMesh) -> bytes:
    """GLB contents: one primitive, vertices split at UV seams, texture embedded as PNG.

    The material is PBR (metallic 0, roughness 1) with ``baseColorTexture``; trimesh flips v
    to glTF's top-left UV origin on export.
    """
    material = trimesh.visual.material.PBRMaterial(
        name="material_0",
        baseColorTexture=Image.fromarray(mesh.texture),
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )
    tm = trimesh.Trimesh(
        vertices=mesh.vertices[mesh.vmapping],
        faces=mesh.faces_uv,
        vertex_normals=mesh.normals[mesh.vmapping],
        visual=trimesh.visual.TextureVisuals(uv=mesh.uv, material=material),
        process=False,
    )
    return trimesh.exchange.gltf.export_glb(trimesh.Scene(tm), include_normals=True)


def write_textured_mesh(
    mesh: TexturedMesh, out_dir: Path, name: str, write_obj: bool, write_glb: bool
) -> dict[str, Path]:
    """Write ``<name>.png`` and, as requested, ``<name>.obj/.mtl`` and ``<name>.glb``."""
    out_dir = Path(out_dir)
    paths = {"texture": write_bytes_atomic(out_dir / f"{name}.png", png_bytes(mesh.texture))}
    if write_obj:
        paths["mtl"] = write_text_atomic(out_dir / f"{name}.mtl", mtl_text(f"{name}.png"))
        paths["obj"] = write_text_atomic(out_dir / f"{name}.obj", obj_text(mesh, f"{name}.mtl"))
    if write_glb:
        paths["glb"] = write_bytes_atomic(out_dir / f"{name}.glb", glb_bytes(mesh))
    return paths

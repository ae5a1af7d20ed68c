"""Files a report needs next to it (`<run>/report_files/`): the viewer scripts, each GLB as a classic
script (file:// pages may not fetch files), a thumbnail; and mesh statistics read from a GLB's JSON chunk."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np

from gen3d.utils.atomic import atomic_path, write_bytes_atomic, write_text_atomic

HERE = Path(__file__).parent
VIEWER_FILES = (HERE / "vendor" / "three-viewer.min.js", HERE / "static" / "viewer.js")
FILES_DIR = "report_files"


def copy_viewer(files: Path) -> list[str]:
    """Copy the viewer scripts into files/ (when changed); their names relative to the run."""
    names = []
    for src in VIEWER_FILES:
        dst = files / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size or dst.read_bytes() != src.read_bytes():
            write_bytes_atomic(dst, src.read_bytes())
        names.append(f"{FILES_DIR}/{src.name}")
    return names


def glb_script(glb: Path, files: Path, key: str) -> str:
    """model.glb -> files/<key>.js storing its base64 bytes in window.GEN3D_GLB[key]; the relative name."""
    b64 = base64.b64encode(glb.read_bytes()).decode("ascii")
    write_text_atomic(
        files / f"{key}.js", f'window.GEN3D_GLB=window.GEN3D_GLB||{{}};window.GEN3D_GLB[{json.dumps(key)}]="{b64}";\n'
    )
    return f"{FILES_DIR}/{key}.js"


def glb_stats(glb: Path) -> dict:
    """Vertex and triangle counts, texture size and file size of a GLB, from its JSON chunk."""
    data = glb.read_bytes()
    magic, _, _ = struct.unpack_from("<4sII", data, 0)
    length, kind = struct.unpack_from("<I4s", data, 12)
    if magic != b"glTF" or kind != b"JSON":
        raise ValueError(f"{glb} is not a GLB file")
    doc = json.loads(data[20 : 20 + length])
    accessors = doc.get("accessors", [])
    vertices = faces = 0
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            vertices += accessors[prim["attributes"]["POSITION"]]["count"]
            if "indices" in prim:
                faces += accessors[prim["indices"]]["count"] // 3
    return {"vertices": vertices, "faces": faces, "images": len(doc.get("images", [])), "bytes": len(data)}


def first_frame(video: Path) -> np.ndarray:
    """The first frame of an mp4 / gif as uint8 [H,W,3]."""
    import imageio.v3 as iio

    for frame in iio.imiter(video):
        return np.asarray(frame)[..., :3]
    raise ValueError(f"{video} has no frames")


def write_thumbnail(image: np.ndarray, files: Path, size: int = 128) -> str:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((size * 4, size))
    with atomic_path(files / "thumb.png") as tmp:
        im.save(tmp, format="PNG")
    return f"{FILES_DIR}/thumb.png"


def remove_stale(files: Path, keep: set[str]) -> None:
    """Drop model scripts of particles that no longer exist (a re-export with fewer particles)."""
    for path in files.glob("model-*.js"):
        if f"{FILES_DIR}/{path.name}" not in keep:
            path.unlink()

"""Open exported OBJ and GLB files in Blender (headless) and check what it sees.

Needs the ``blender`` executable (Debian: ``apt-get install -y blender python3-numpy``);
skipped when it is not on PATH. Blender runs ``tests/blender_import.py``.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gen3d.export import ExportConfig, export_mesh

BLENDER = shutil.which("blender")
pytestmark = pytest.mark.skipif(BLENDER is None, reason="blender not on PATH")
SCRIPT = Path(__file__).with_name("blender_import.py")
TEXTURE = 128


def run_blender(model: Path, out_dir: Path) -> dict:
    report = out_dir / f"{model.suffix[1:]}_report.json"
    cmd = [
        BLENDER,
        "-b",
        "--factory-startup",
        "--python-exit-code",
        "1",
        "--python",
        str(SCRIPT),
        "--",
        str(model),
        str(report),
    ]
    # Blender embeds the system Python and locates its standard library through PATH: put
    # Blender's own directory first so a pyenv/venv interpreter running pytest is not used.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(BLENDER).resolve().parent), os.environ["PATH"]]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("blender")
    cfg = ExportConfig(resolution=32, texture_size=TEXTURE, chunk_size=8192)
    density = lambda p: 10.0 * torch.sigmoid(40.0 * (0.6 - p.norm(dim=-1)))  # noqa: E731
    albedo = lambda p: (p > 0).float()  # noqa: E731  r: x > 0, g: y > 0, b: z > 0
    return export_mesh(density, albedo, out, cfg), out


@pytest.mark.parametrize("fmt", ["obj", "glb"])
def test_blender_imports_mesh_with_texture(exported, fmt):
    result, out = exported
    seen = run_blender(result[fmt], out)
    assert seen["n_objects"] == 1 and seen["n_faces"] == result["n_faces"]
    # OBJ: Blender keeps one vertex per `v` line; UV seams live on face corners.
    # GLB: glTF duplicates vertices along UV seams and Blender's importer keeps them
    # (its "merge vertices" option is off by default); merging by distance undoes that.
    expected = result["n_vertices"] if fmt == "obj" else result["n_uv_vertices"]
    assert seen["n_vertices"] == expected
    assert seen["n_vertices_merged"] == result["n_vertices"]
    assert seen["has_texture"] and seen["image_size"] == [TEXTURE, TEXTURE]

    # Both importers turn our Y-up frame into Blender's Z-up one: (x, y, z) -> (x, -z, y).
    pos_b = np.array([s["position"] for s in seen["samples"]])
    pos = np.stack([pos_b[:, 0], pos_b[:, 2], -pos_b[:, 1]], axis=1)
    assert np.isclose(pos_b[:, 2].max(), np.abs(pos).max(), atol=0.05)  # top is Blender +Z
    color = np.array([s["color"] for s in seen["samples"]])
    away = (np.abs(pos) > 0.05).all(axis=1)
    assert away.sum() > 200
    assert np.abs(color[away] - (pos[away] > 0)).max() < 0.02

"""Export clean-up (gen3d/export): topology, decimation, UV charts, ray-weighted baking, placement."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gen3d.export import ExportConfig, export_mesh, extract_mesh
from gen3d.export.ray_bake import ray_albedo
from gen3d.export.remesh import clean_surface
from gen3d.quality import load_asset, topology, uv_layout

torch.set_num_threads(1)
RES = 48


def clean_extract(density_fn, res=RES):
    return extract_mesh(density_fn, 1.0, res, 0.5, 1 << 16, 1.0)[0]


def cube_with_defects(p: torch.Tensor) -> torch.Tensor:
    """A box with a thin tunnel through it, an inner cavity and a floater (1 inside, 0 outside)."""
    box = (p.abs() < 0.5).all(dim=-1)
    tunnel = (p[:, 0].square() + p[:, 1].square()).sqrt() < 0.04  # ~1 voxel wide, along z
    cavity = (p - torch.tensor([0.25, 0.25, 0.0])).norm(dim=-1) < 0.12
    floater = (p - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) < 0.08
    return ((box & ~tunnel & ~cavity) | floater).float()


def test_raw_isosurface_has_the_defects():
    raw = extract_mesh(cube_with_defects, 1.0, RES, 0.5, 1 << 16, 0.0, close_radius=0, smooth_sigma=0.0)[0]
    t = topology(raw)
    assert t["components"] == 3 and t["genus"] == 1  # box with a tunnel, cavity shell, floater


def test_clean_extraction_is_one_closed_genus_0_surface():
    t = topology(clean_extract(cube_with_defects))
    assert (t["components"], t["watertight"], t["genus"]) == (1, True, 0)


def test_torus_hole_is_kept():
    torus = lambda p: (0.2 - ((p[:, [0, 2]].norm(dim=-1) - 0.5).square() + p[:, 1].square()).sqrt() > 0).float()  # noqa: E731
    t = topology(clean_extract(torus))
    assert (t["components"], t["watertight"], t["genus"]) == (1, True, 1)


def test_clean_surface_decimates_and_stays_closed():
    mesh = clean_extract(lambda p: (p.norm(dim=-1) < 0.6).float(), res=64)
    assert len(mesh.faces) > 8000
    small = clean_surface(mesh, smooth_iterations=10, target_faces=2000)
    assert len(small.faces) <= 2100 and small.is_watertight and small.volume > 0
    radius = np.linalg.norm(small.vertices, axis=1)
    assert abs(radius.mean() - 0.6) < 0.03


def test_ray_bake_reads_the_colour_behind_a_displaced_surface():
    """The density (and the colour the renderer shows) starts 0.03 inside the points; outside it the
    albedo is blue, inside red: the ray bake gives red, the surface value blue."""
    pts = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1).numpy() * 0.6
    density = lambda p: 200.0 * (p.norm(dim=-1) < 0.57).float()  # noqa: E731
    albedo = lambda p: torch.where(
        (p.norm(dim=-1) < 0.585)[:, None],
        torch.tensor([0.9, 0.1, 0.1]),  # noqa: E731
        torch.tensor([0.1, 0.1, 0.9]),
    )
    out = ray_albedo(pts, pts / 0.6, density, albedo, depth=0.05, n_samples=16, chunk_size=4096)
    assert np.allclose(out, [0.9, 0.1, 0.1], atol=1e-4)
    assert np.allclose(albedo(torch.from_numpy(pts).float()).numpy(), [0.1, 0.1, 0.9])


@pytest.mark.parametrize("placement", ["center", "ground", "field"])
def test_placement(placement, tmp_path: Path):
    centre = torch.tensor([0.2, 0.3, -0.1])
    density = lambda p: 20.0 * torch.sigmoid(40.0 * (0.4 - (p - centre).norm(dim=-1)))  # noqa: E731
    cfg = ExportConfig(resolution=RES, texture_size=512, write_obj=False, placement=placement, target_faces=2000)
    result = export_mesh(density, lambda p: torch.full_like(p, 0.5), tmp_path, cfg)
    mesh, _, uv = load_asset(result["glb"])
    lo, hi = mesh.bounds
    mid = (lo + hi) / 2
    expected = {"center": [0, 0, 0], "ground": [0, (hi - lo)[1] / 2, 0], "field": centre.tolist()}[placement]
    assert np.allclose(mid, expected, atol=1e-6 if placement != "field" else 0.02)
    assert np.allclose(mid - np.asarray(result["offset"]), centre, atol=0.02)  # offset: field frame -> file
    if placement == "ground":
        assert abs(lo[1]) < 1e-6
    layout = uv_layout(np.asarray(mesh.faces), uv)
    assert layout["charts"] <= 100 and layout["coverage"] >= 0.5 and len(mesh.faces) <= 2100

"""Export clean-up (gen3d/export): topology, decimation, UV charts, ray-weighted baking, placement."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gen3d.export import ExportConfig, export_mesh, extract_mesh
from gen3d.export.ray_bake import ray_albedo
from gen3d.export.remesh import clean_surface
from gen3d.export.texture_filter import surface_median
from gen3d.quality import load_asset, topology, uv_layout
from gen3d.quality.texture import surface_albedo, texture_purity

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


def test_ray_bake_inside_reaches_a_deeper_colour():
    """The density starts 0.08 inside the points and the colour settles to red only there: a ray from
    0.05 outside to 0.05 inside sees no density (its innermost albedo, blue); one that goes on to 0.1
    inside (``inside``) composites the red."""
    pts = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1).numpy() * 0.6
    density = lambda p: 200.0 * (p.norm(dim=-1) < 0.52).float()  # noqa: E731
    albedo = lambda p: torch.where(  # noqa: E731
        (p.norm(dim=-1) < 0.53)[:, None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
    )
    short = ray_albedo(pts, pts / 0.6, density, albedo, depth=0.05, n_samples=16, chunk_size=4096)
    deep = ray_albedo(pts, pts / 0.6, density, albedo, depth=0.05, n_samples=24, chunk_size=4096, inside=0.1)
    assert np.allclose(short, [0.1, 0.1, 0.9], atol=1e-4)
    assert np.allclose(deep, [0.9, 0.1, 0.1], atol=1e-4)


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


def _plane(z: float, normal_z: float, n: int = 40, spacing: float = 0.01):
    u = np.arange(n) * spacing
    x, y = np.meshgrid(u, u, indexing="ij")
    points = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=-1)
    return points, np.tile([0.0, 0.0, normal_z], (len(points), 1))


def test_surface_median_removes_specks_and_keeps_edges():
    points, normals = _plane(0.0, 1.0)
    red, green, blue = np.eye(3)
    colours = np.where((points[:, 0] < 0.195)[:, None], red, green)  # a colour edge down the middle
    specks = np.random.default_rng(0).choice(len(points), 40, replace=False)
    colours[specks] = blue  # single-texel specks
    out = surface_median(points, normals, colours, radius=2.0)
    truth = np.where((points[:, 0] < 0.195)[:, None], red, green)
    assert np.allclose(out, truth)  # specks gone, the edge as sharp as before
    assert np.allclose(surface_median(points, normals, colours, radius=0.0), colours)  # 0 = off


def test_surface_median_does_not_mix_the_two_sides_of_a_thin_part():
    top, top_n = _plane(0.004, 1.0)
    bottom, bottom_n = _plane(0.0, -1.0)  # 0.4 texels below, facing away
    points, normals = np.concatenate([top, bottom]), np.concatenate([top_n, bottom_n])
    colours = np.concatenate([np.tile([1.0, 0, 0], (len(top), 1)), np.tile([0, 0, 1.0], (len(bottom), 1))])
    colours[: len(top) // 2] = [0, 0, 1.0]  # half the top blue: without the normal test the median would flip
    out = surface_median(points, normals, colours, radius=3.0)
    assert np.allclose(out[len(top) :], [0, 0, 1.0])
    assert (out[len(top) // 2 + 3 * 40 : len(top)] == [1.0, 0, 0]).all()


def test_texture_median_option_cleans_a_speckled_export(tmp_path: Path):
    """A sphere whose albedo has random blue specks about a texel wide (10% of them): the exported
    texture's stray share drops from clearly above 5% to about 0 with ``texture_median``."""
    density = lambda p: 20.0 * torch.sigmoid(40.0 * (0.5 - p.norm(dim=-1)))  # noqa: E731

    def speckled(p):
        cell = torch.floor(p * 100.0).long()
        h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
        speck = (h % 10 == 0)[:, None]
        return torch.where(speck, torch.tensor([0.2, 0.2, 0.9]), torch.tensor([0.8, 0.1, 0.1]))

    strays = {}
    for radius in (0.0, 2.0):
        cfg = ExportConfig(
            resolution=RES, texture_size=256, write_obj=False, target_faces=2000, bake="surface", texture_median=radius
        )
        result = export_mesh(density, speckled, tmp_path / str(radius), cfg)
        mesh, texture, uv = load_asset(result["glb"])
        strays[radius] = texture_purity(surface_albedo(mesh, texture, uv))["stray_fraction"]
    assert strays[0.0] > 0.05 and strays[2.0] < 0.01

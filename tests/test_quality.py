"""The asset quality metrics (gen3d/quality) on shapes with known answers."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from gen3d.export import ExportConfig, export_trimesh
from gen3d.quality import chamfer_to_primitive, colour_distance, evaluate_asset, texture_purity, topology, uv_layout
from gen3d.quality.geometry import mesh_samples
from gen3d.quality.primitives import primitive_mesh

torch.set_num_threads(1)


def test_true_primitive_scores_like_a_resampling():
    cube = mesh_samples(primitive_mesh("cube"), seed=5)  # another sampling than the reference's
    assert 0.015 < chamfer_to_primitive(cube, "cube")["chamfer"] < 0.045


def test_sphere_against_the_cube_is_far():
    sphere = primitive_mesh("sphere")
    far = chamfer_to_primitive(sphere, "cube")["chamfer"]
    assert 0.08 < far < 0.13
    assert chamfer_to_primitive(sphere, "sphere")["chamfer"] < 0.045


def test_alignment_undoes_yaw_and_tilt():
    cube = primitive_mesh("cube").copy()
    rot = trimesh.transformations.euler_matrix(np.radians(8), np.radians(33), 0, "rxyz")
    cube.apply_transform(rot)
    cube.apply_translation([0.3, -0.2, 0.1])
    cube.apply_scale(1.7)
    result = chamfer_to_primitive(cube, "cube")
    assert result["chamfer"] < 0.045


def test_topology_counts_components_and_genus():
    torus = topology(primitive_mesh("torus", resolution=64))
    assert torus == {"components": 1, "watertight": True, "euler": 0, "genus": 1}
    two = trimesh.util.concatenate(
        [trimesh.creation.icosphere(2), trimesh.creation.icosphere(2).apply_translation([3, 0, 0])]
    )
    assert topology(two)["components"] == 2 and topology(two)["genus"] == 0
    open_box = trimesh.creation.box()
    open_box.update_faces(np.arange(len(open_box.faces)) > 0)
    assert topology(open_box)["watertight"] is False and topology(open_box)["genus"] is None


def test_purity_of_uniform_and_speckled_textures():
    rng = np.random.default_rng(0)
    red = np.tile([0.8, 0.1, 0.1], (5000, 1)) + rng.normal(0, 0.005, (5000, 3))
    assert texture_purity(red)["stray_fraction"] < 0.01
    speckled = red.copy()
    speckled[rng.random(5000) < 0.3] = [0.4, 0.1, 0.7]  # purple speckles
    dark = red.copy()
    dark[rng.random(5000) < 0.2] *= 0.3  # dark blotches: same hue, brightness below half
    assert 0.25 < texture_purity(speckled)["stray_fraction"] < 0.35
    assert texture_purity(dark)["brightness_fraction"] > 0.15


def test_purity_of_black_textures():
    """A uniformly black texture (the median exactly 0, as a black export's is) is pure, and so is black
    with noise just above 0; grey or red speckles on it are stray (the near-black floor, FLOOR)."""
    rng = np.random.default_rng(0)
    black = np.zeros((5000, 3))
    assert texture_purity(black)["stray_fraction"] == 0
    noisy = np.clip(rng.normal(0.002, 0.002, (5000, 3)), 0, 1)
    assert texture_purity(noisy)["stray_fraction"] < 0.01
    grey, red = noisy.copy(), noisy.copy()
    grey[rng.random(5000) < 0.2] = [0.3, 0.3, 0.3]
    red[rng.random(5000) < 0.2] = [0.5, 0.05, 0.05]
    assert 0.15 < texture_purity(grey)["stray_fraction"] < 0.25
    assert 0.15 < texture_purity(red)["stray_fraction"] < 0.25


def test_colour_distance():
    assert colour_distance([0.8, 0.1, 0.1], [0.8, 0.1, 0.1]) < 1e-4
    assert colour_distance([0.8, 0.1, 0.1], [0.1, 0.2, 0.9]) > 50
    assert 1 < colour_distance([0.8, 0.1, 0.1], [0.77, 0.1, 0.1]) < 5


def test_uv_layout_counts_charts_and_area():
    uv = np.array([[0, 0], [0.5, 0], [0, 0.5], [0.6, 0.6], [1, 0.6], [0.6, 1]], dtype=float)
    layout = uv_layout(np.array([[0, 1, 2], [3, 4, 5]]), uv)
    assert layout["charts"] == 2 and np.isclose(layout["coverage"], 0.125 + 0.08)


@pytest.fixture(scope="module")
def red_cube_glb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cube")
    cfg = ExportConfig(texture_size=128, write_obj=False, placement="ground")
    export_trimesh(
        primitive_mesh("cube", resolution=64), lambda p: torch.tensor([[0.85, 0.08, 0.08]]).expand(len(p), 3), out, cfg
    )
    return out / "model.glb"


def test_evaluate_asset_of_a_true_red_cube(red_cube_glb):
    q = evaluate_asset(red_cube_glb, "cube", "red")
    assert q["nearest"] == "cube" and q["chamfer"] < 0.045
    assert (q["components"], q["watertight"], q["genus"]) == (1, True, 0)
    assert q["stray_fraction"] < 0.01 and q["prompt_delta_e"] < 2
    assert q["charts"] <= 100 and q["coverage"] >= 0.5
    assert abs(q["min_y"]) < 1e-6 and abs(q["centre"][0]) < 1e-6  # placement=ground


def test_fit_to_primitive_gives_the_true_occupancy_and_colour():
    """The fixed-point diagnostic's start (bench/bench_fixed_point.py): a small field fitted to the true cube
    agrees with its occupancy almost everywhere and has the prompt's colour on the surface."""
    from gen3d.geometry.hashgrid import HashGridConfig
    from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
    from gen3d.prior.data import COLOUR_RGB, _sdf
    from gen3d.quality.fit import STEP, fit_to_primitive

    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=6, log2_hashmap_size=14, base_resolution=8, max_resolution=64)
    field = ImplicitVolume(ImplicitVolumeConfig(hash_grid=grid, mlp_hidden=32, encoding_backend="torch"))
    fit_to_primitive(field, "cube", "red", steps=300, points=4096)
    p = torch.rand(20000, 3) * 2 - 1
    with torch.no_grad():
        out = field(p)
    inside = (1 - torch.exp(-out["density"][:, 0] * STEP)) > 0.5
    truth = _sdf("cube", p) < 0
    assert (inside == truth).float().mean() > 0.97
    shell = _sdf("cube", p).abs() < 0.03
    assert (out["albedo"][shell] - torch.tensor(COLOUR_RGB["red"])).abs().mean() < 0.05

"""Marching tetrahedra, the DMTet geometry, and the `dmtet` representation in the mesh stages."""

import math

import numpy as np
import pytest
import torch
import trimesh

import launch
from gen3d.cli import run_from_args
from gen3d.geometry.dmtet import DMTetGeometry, DMTetSettings, start_sdf
from gen3d.geometry.tets import cube_tets, marching_tets
from tests.test_launch import assert_one_closed_component
from tests.test_methods import TINY


def _mesh(verts, faces):
    return trimesh.Trimesh(verts.detach().double().numpy(), faces.numpy(), process=False)


def _sphere(v, r=0.6):
    return v.norm(dim=-1) - r


def _torus(v, big=0.5, small=0.2):
    x, y, z = v.unbind(-1)
    return torch.sqrt((torch.sqrt(x**2 + z**2) - big) ** 2 + y**2) - small


def test_cube_tets_fill_the_box_without_overlap():
    verts, tets = cube_tets(5)
    assert verts.shape == (125, 3) and tets.shape == (6 * 64, 4)
    p = verts[tets]
    volume = torch.linalg.det(p[:, 1:] - p[:, :1]).abs().sum() / 6
    assert torch.isclose(volume, torch.tensor(8.0), rtol=1e-5)  # the tetrahedra tile [-1, 1]^3 exactly
    with pytest.raises(ValueError):
        cube_tets(1)


@pytest.mark.parametrize(
    "shape, genus, volume", [(_sphere, 0, 4 / 3 * math.pi * 0.6**3), (_torus, 1, 2 * math.pi**2 * 0.5 * 0.04)]
)
def test_marching_tets_gives_a_closed_outward_mesh_of_the_right_genus(shape, genus, volume):
    verts, tets = cube_tets(40)
    v, f = marching_tets(verts, tets, shape(verts))
    m = _mesh(v, f)
    assert m.is_watertight and m.is_winding_consistent
    assert m.euler_number == 2 - 2 * genus
    assert m.volume == pytest.approx(volume, rel=0.03)  # positive: wound counter-clockwise from outside


def test_marching_tets_is_differentiable_and_empty_off_the_surface():
    verts, tets = cube_tets(12)
    sdf = _sphere(verts).requires_grad_(True)
    v, f = marching_tets(verts, tets, sdf)
    v.norm(dim=-1).sum().backward()  # growing the sphere = lowering the SDF near it
    assert sdf.grad is not None and (sdf.grad < 0).sum() > 0 and sdf.grad.abs().max() > 0
    assert (sdf.grad.abs() > 0).sum() < len(verts) / 2  # only the vertices next to the surface
    v, f = marching_tets(verts, tets, torch.ones(len(verts)))
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_start_sdf_is_a_signed_distance():
    n, r = 41, 0.5
    axis = np.linspace(-1, 1, n)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    sdf = start_sdf(np.linalg.norm(pts, axis=-1) < r, 2 / (n - 1), 0.0)
    truth = np.linalg.norm(pts, axis=-1) - r
    near = np.abs(truth) < 0.3
    assert np.abs(sdf - truth)[near].max() < 0.06  # about a cell (0.05)
    with pytest.raises(ValueError):
        start_sdf(np.zeros((4, 4, 4), bool), 0.5, 0.0)


def _geometry(res=32, **settings):
    def density(p):
        return 10.0 * (0.6 - p.norm(dim=-1)).clamp(min=0)

    return DMTetGeometry.from_field(density, 3.0, DMTetSettings(**settings), res, 1.0)


def test_dmtet_starts_from_a_field_and_caches_one_surface_a_step():
    geo = _geometry()
    v, f = geo.surface()
    m = _mesh(v, f)
    assert m.is_watertight and m.euler_number == 2
    radius = v.norm(dim=-1)  # density 3 at |x| = 0.3
    assert (radius - 0.3).abs().max() < 1.5 * geo.cell
    assert geo.surface()[0] is v  # the renderer and the mesh terms share one extraction
    geo.update_step(1)
    assert geo.surface()[0] is not v


def test_dmtet_band_follows_the_sdf():
    geo = _geometry(band=2)
    geo.surface()
    with torch.no_grad():
        geo.sdf -= 5 * geo.cell  # past the band: the surface grows by 5 cells, the search must follow
    v, f = geo.surface()
    full_v, full_f = marching_tets(geo.vertices_of_grid(), geo.tets, geo.sdf_values())
    assert len(f) == len(full_f) and torch.allclose(v.norm(dim=-1).mean(), full_v.norm(dim=-1).mean())
    assert v.norm(dim=-1).mean() > 0.3 + 4 * geo.cell


def test_dmtet_deformation_is_bounded_and_the_boundary_stays_outside():
    geo = _geometry(res=16, deform=0.25)
    with torch.no_grad():
        geo.deformation.fill_(100.0)
        geo.sdf.fill_(-1.0)  # everything inside: the boundary is clamped outside, the surface stays closed
    move = (geo.vertices_of_grid() - geo.grid).abs()
    assert move.max() <= 0.25 * geo.cell + 1e-6 and move[geo.boundary].max() == 0
    m = _mesh(*geo.surface())
    assert m.is_watertight


def test_dmtet_checkpoint_round_trip():
    geo = _geometry(res=20)
    with torch.no_grad():
        geo.deformation.normal_()
    other = DMTetGeometry(DMTetSettings(), 20, 1.0)
    other.load_state_dict(geo.state_dict())
    assert torch.allclose(other.surface()[0], geo.surface()[0])


def _args(tiny_pipeline, out, stages):
    model = ["--model", str(tiny_pipeline), "--output", str(out)]
    return [*"--config magic3d.yaml --prompt".split(), "a red cube", *model, stages]


def _run(tiny_pipeline, out, stages):
    return run_from_args(launch.parse_args([*_args(tiny_pipeline, out, stages), *TINY]))


REFINE = (
    "{name: refine, overrides: {representation: dmtet, camera: {height: 48, width: 48}, "
    "loss: {normal_consistency: 10.0, laplacian: 10.0}, parts: {dmtet: {resolution: 32}}, trainer: {max_steps: 3}}}"
)


def _refined(run_dir):
    sd = torch.load(run_dir / "ckpts" / "refine" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return {k.rsplit(".", 1)[-1]: v for k, v in sd.items() if k.endswith(("geometry.sdf", "geometry.deformation"))}


def test_magic3d_refine_on_dmtet(tiny_pipeline, tmp_path):
    _run(tiny_pipeline, tmp_path, f"stages=[{{name: coarse, overrides: {{trainer: {{max_steps: 6}}}}}}, {REFINE}]")
    run_dir = tmp_path / "magic3d" / "a-red-cube"
    assert_one_closed_component(run_dir / "export" / "model.glb")
    refined = _refined(run_dir)
    assert refined["sdf"].shape == (32**3,)
    assert refined["deformation"].abs().max() > 0  # the renders' gradients reach the grid
    # export-only rebuilds the grid from the config and reloads it
    before = (run_dir / "export" / "model.glb").read_bytes()
    assert launch.main(["--resume", str(run_dir), "--export-only"]) == 0
    assert_one_closed_component(run_dir / "export" / "model.glb")
    assert len((run_dir / "export" / "model.glb").read_bytes()) == pytest.approx(len(before), rel=0.01)


def test_a_mesh_stage_after_a_dmtet_stage(tiny_pipeline, tmp_path):
    stages = (
        f"stages=[{{name: coarse, overrides: {{trainer: {{max_steps: 6}}}}}}, {REFINE}, "
        "{name: texture, overrides: {representation: mesh, train_geometry: false, trainer: {max_steps: 2}}}]"
    )
    _run(tiny_pipeline, tmp_path, stages)
    run_dir = tmp_path / "magic3d" / "a-red-cube"
    assert (run_dir / "ckpts" / "texture" / "last.ckpt").is_file()
    assert_one_closed_component(run_dir / "export" / "model.glb")


def test_dmtet_cannot_start_a_method(tiny_pipeline, tmp_path, capsys):
    stages = "stages=[{name: a, overrides: {representation: dmtet}}]"
    code = launch.main(_args(tiny_pipeline, tmp_path, stages))
    err = capsys.readouterr().err
    assert code == 2 and "cannot use representation 'dmtet'" in err and not any(tmp_path.iterdir())

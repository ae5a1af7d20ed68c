"""The `sdf` representation: VolSDF density, eikonal term, sphere initialisation, beta kept across a
checkpoint, coarse-to-fine levels, the mesh stage starting from its zero level set, and a tiny run."""

import numpy as np
import pytest
import torch

import launch
from gen3d.cli import run_from_args
from gen3d.config import build_config
from gen3d.errors import UserError
from gen3d.geometry.hashgrid import HashGridConfig
from gen3d.geometry.implicit import ImplicitVolumeConfig
from gen3d.geometry.sdf import SDFField, SDFSettings, laplace_density
from gen3d.quality import load_asset, topology
from gen3d.render.background import BackgroundConfig, SolidBackground
from gen3d.representations import representation
from gen3d.systems.config import Text3DConfig

SMALL = ImplicitVolumeConfig(hash_grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=32))


def test_density_falls_as_the_sdf_rises_with_half_the_maximum_on_the_surface():
    sdf = torch.linspace(-1, 1, 201)
    for beta in (0.02, 0.1):
        d = laplace_density(-sdf, beta)
        assert torch.all(d[1:] <= d[:-1]) and torch.all(d > 0)
        assert d[100] == pytest.approx(0.5 / beta, rel=1e-4) and d[0] == pytest.approx(1 / beta, rel=1e-4)
    assert torch.isfinite(laplace_density(torch.tensor([1e4, -1e4]), 1e-3)).all()


def test_untrained_field_is_an_exact_sphere_with_zero_eikonal_term():
    torch.manual_seed(0)
    field = SDFField(SMALL, SDFSettings(sphere_radius=0.4))
    pts = torch.rand(512, 3) * 1.6 - 0.8
    sdf = field.sdf(pts)[:, 0]
    assert torch.allclose(sdf, pts.norm(dim=-1) - 0.4, atol=1e-6)
    assert float(field.eikonal(pts).detach()) < 1e-8
    with torch.no_grad():  # a field that is no distance any more (2x the sphere's SDF): the term sees it
        field.mlp[-1].weight[0].normal_(0, 1.0)
        field.encoding.table.normal_(0, 1.0)
    assert float(field.eikonal(pts).detach()) > 1e-2
    normal = field.normal(torch.tensor([[0.3, 0.0, 0.0]]))  # outward: + grad sdf
    assert normal[0, 0] > 0.5


def _shell_points(n: int, radius: float) -> torch.Tensor:
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    return d * (radius + 0.02 * torch.randn(n, 1))


def test_normal_smoothness_is_near_zero_on_a_sphere_and_large_on_a_bumpy_field():
    torch.manual_seed(0)
    field = SDFField(SMALL, SDFSettings(sphere_radius=0.5))
    pts = _shell_points(1024, 0.5)
    smooth = float(field.normal_smoothness(pts, 0.01).detach())
    assert smooth < 2e-3  # about 2 (0.01 / 0.5)^2 = 8e-4
    with torch.no_grad():  # high-frequency bumps: random hash-grid features read by the SDF row
        field.encoding.table.normal_(0, 1.0)
        field.mlp[-1].weight[0].normal_(0, 1.0)
    assert float(field.normal_smoothness(pts, 0.01).detach()) > 20 * smooth


def _first_and_trained(term, pts):
    """A term on a bumpy field [N,3] -> value, before and after 30 Adam steps on it alone."""
    torch.manual_seed(0)
    field = SDFField(SMALL)
    with torch.no_grad():
        field.encoding.table.normal_(0, 0.5)
        field.mlp[-1].weight[0].normal_(0, 0.5)
    opt = torch.optim.Adam(field.parameters(), lr=0.01)
    first = float(term(field, pts).detach())
    for _ in range(30):
        opt.zero_grad()
        term(field, pts).backward()
        opt.step()
    return first, float(term(field, pts).detach())


def test_normal_smoothness_term_smooths_a_bumpy_field_and_is_off_by_default():
    first, trained = _first_and_trained(lambda f, p: f.normal_smoothness(p, 0.01), _shell_points(1024, 0.5))
    assert trained < 0.5 * first
    assert SDFSettings().normal_smooth_points == 0
    with pytest.raises(UserError, match="'parts.sdf.normal_smooth_jitter' must be > 0"):
        settings(normal_smooth_jitter=0.0)
    with pytest.raises(UserError, match="'parts.sdf.normal_smooth_points' must be >= 0"):
        settings(normal_smooth_points=-1)


def test_eikonal_term_trains_the_field_towards_a_distance():
    first, trained = _first_and_trained(lambda f, p: f.eikonal(p), torch.rand(1024, 3) * 2 - 1)
    assert trained < 0.5 * first


def settings(**values):
    """parts.sdf as the representation builds it (gen3d.config: types, ranges, schedules)."""
    return build_config(SDFSettings, values, prefix="parts.sdf.")


def test_settings_are_checked():
    with pytest.raises(UserError, match="parts.sdf.beta"):
        settings(beta=[0, 0.1])
    with pytest.raises(UserError, match="'parts.sdf.beta' must be > 0"):
        settings(beta={"milestones": [10], "values": [0.1, 0.0]})
    with pytest.raises(UserError, match="'parts.sdf.sphere_radius' must be > 0"):
        settings(sphere_radius=0.0)
    assert settings(levels={"milestones": [10], "values": [4, 8]}).levels == {"milestones": [10], "values": [4, 8]}


def _cfg(**parts):
    return build_config(
        Text3DConfig,
        {
            "representation": "sdf",
            "geometry": {"hash_grid": {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 32}},
            "renderer": {"num_samples_per_ray": 16, "use_nerfacc": "never"},
            "mesh": {"resolution": 48, "smooth_iterations": 0},
            "parts": {"sdf": parts},
        },
    )


def test_beta_and_levels_follow_the_step_and_survive_a_checkpoint():
    cfg = _cfg(beta=[0, 0.1, 0.02, 100], levels=[0, 1, 4, 100])
    rep = representation("sdf")
    scene = rep.build(cfg, SolidBackground(BackgroundConfig()))
    assert scene.geometry.beta == pytest.approx(0.1) and scene.geometry.active_levels == 1
    scene.update_step(100)
    assert scene.geometry.beta == pytest.approx(0.02) and scene.geometry.active_levels == 4
    fresh = rep.build(cfg, SolidBackground(BackgroundConfig()))
    fresh.load_state_dict(scene.state_dict())
    assert fresh.geometry.beta == pytest.approx(0.02) and fresh.geometry.active_levels == 4


def test_the_normal_smoothness_term_is_a_regulariser_only_when_it_has_points():
    rep = representation("sdf")
    out = {"opacity": torch.full((1, 4, 4, 1), 0.5), "points": _shell_points(64, 0.5)}
    off = rep.regularisers(rep.build(_cfg(), SolidBackground(BackgroundConfig())), out)
    assert "normal_smooth" not in off and "eikonal" in off
    on = rep.regularisers(rep.build(_cfg(normal_smooth_points=128), SolidBackground(BackgroundConfig())), out)
    assert 0.0 <= float(on["normal_smooth"].detach()) < 0.01 and on["normal_smooth"].requires_grad


def test_coarse_levels_mask_the_fine_features():
    torch.manual_seed(0)
    field = SDFField(SMALL, SDFSettings(levels=[0, 1, 4, 10]))
    with torch.no_grad():
        field.encoding.table.normal_(0, 1.0)
        field.mlp[-1].weight.normal_(0, 1.0)
    pts = torch.rand(64, 3) - 0.5
    coarse = field.sdf(pts)
    field.set_step(10)
    assert not torch.allclose(coarse, field.sdf(pts))


def test_mesh_stage_starts_from_the_zero_level_set():
    cfg = _cfg(sphere_radius=0.5, beta=0.05)
    previous = representation("sdf").build(cfg, SolidBackground(BackgroundConfig()))
    mesh_rep = representation("mesh")
    scene = mesh_rep.build(cfg, SolidBackground(BackgroundConfig()))
    mesh_rep.from_previous(scene, previous, cfg)
    radii = scene.geometry.vertices().norm(dim=-1)
    assert len(radii) > 100 and float((radii - 0.5).abs().max()) < 0.02
    # its texture field is the SDF field's albedo
    pts = torch.rand(16, 3) - 0.5
    assert torch.allclose(scene.geometry.albedo(pts), previous.geometry.albedo(pts), atol=1e-6)


TINY = [
    "camera.height=16",
    "camera.width=16",
    "renderer.num_samples_per_ray=16",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=16",
    "trainer.preview_every=0",
    "trainer.max_steps=3",
    "prompt_processor.cache_dir=null",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
]


def test_a_method_with_the_sdf_representation_exports_one_watertight_component(tiny_pipeline, tmp_path):
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    out = tmp_path / "out"
    run_from_args(
        launch.parse_args([*args, "--output", str(out), *TINY, "representation=sdf", "loss.other.eikonal=0.1"])
    )
    mesh, _, _ = load_asset(out / "dreamfusion" / "a-red-cube" / "export" / "model.glb")
    t = topology(mesh)
    assert (t["components"], t["watertight"], t["genus"]) == (1, True, 0)
    radii = np.linalg.norm(mesh.vertices - mesh.vertices.mean(0), axis=1)
    assert 0.3 < radii.mean() < 0.7  # about the initial sphere after 3 steps


def test_bad_sdf_settings_are_one_line_errors_before_anything_is_written(tmp_path, capsys):
    base = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--output", str(tmp_path), "representation=sdf"]
    assert launch.main([*base, "parts.sdf.beta=[0,1]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'parts.sdf.beta'") and err.count("\n") == 1
    assert launch.main([*base, "parts.sdf.radius=1"]) == 2
    assert "did you mean 'parts.sdf.sphere_radius'?" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gen3d.geometry.hashgrid import HashGridConfig
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.render.background import BackgroundConfig, make_background
from gen3d.render.cameras import get_rays, make_cameras
from gen3d.render.occupancy import ray_aabb
from gen3d.render.shading import shade
from gen3d.render.volume import RendererConfig, VolumeRenderer

SMALL_GRID = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8, max_resolution=32)


class SphereField(nn.Module):
    """Constant density sigma inside a sphere of radius r, zero outside; counts queries."""

    def __init__(self, sigma: float, r: float, radius: float = 1.0):
        super().__init__()
        self.cfg = SimpleNamespace(radius=radius)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.color = nn.Parameter(torch.tensor([0.2, 0.5, 0.8]))
        self.r = r
        self.n_queries = 0

    def density(self, points):
        self.n_queries += points.shape[0]
        inside = (points.norm(dim=-1, keepdim=True) < self.r).to(points.dtype)
        return inside * self.log_sigma.exp()

    def forward(self, points, with_normal=False):
        out = {"density": self.density(points), "albedo": self.color.expand(points.shape[0], 3)}
        if with_normal:
            out["normal"] = F.normalize(points, dim=-1)
        return out


def _camera(distance=3.0, h=24, w=24, fovy=40.0, az=30.0, el=20.0):
    one = torch.ones(1)
    return make_cameras(one * el, one * az, one * distance, one * fovy, h, w)


def _renderer(field, samples=256, bg=(1.0, 1.0, 1.0), **kw):
    cfg = RendererConfig(num_samples_per_ray=samples, **{"use_nerfacc": "never", **kw})
    r = VolumeRenderer(cfg, field, make_background(BackgroundConfig(type="solid", color=bg)))
    return r.eval()


def _chords(cams, r):
    """Closed form per pixel: chord length through the sphere and entry distance."""
    o, d = get_rays(cams)
    o, d = o.reshape(-1, 3).double(), d.reshape(-1, 3).double()
    tc = -(o * d).sum(-1)  # distance to closest approach
    b2 = (o + tc[:, None] * d).square().sum(-1)
    half = (r * r - b2).clamp_min(0).sqrt()
    return 2 * half, tc - half, b2 < r * r


def test_ray_aabb():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    t0, t1, hit = ray_aabb(o, d, 1.0)
    assert hit.tolist() == [True, False]
    assert t0[0].item() == pytest.approx(2.0) and t1[0].item() == pytest.approx(4.0)


def test_opacity_matches_closed_form():
    sigma, r = 2.0, 0.6
    field = SphereField(sigma, r)
    cams = _camera()
    with torch.no_grad():
        out = _renderer(field)(cams)
    chord, _, _ = _chords(cams, r)
    expected = 1 - torch.exp(-sigma * chord)
    got = out["opacity"].reshape(-1).double()
    assert expected.max() > 0.8 and (expected == 0).any()
    assert (got - expected).abs().max() < 0.04
    assert (got - expected).abs().mean() < 0.005


def test_depth_matches_closed_form_for_opaque_sphere():
    field = SphereField(300.0, 0.5)
    cams = _camera()
    with torch.no_grad():
        out = _renderer(field)(cams)
    _, t_in, inside = _chords(cams, 0.5)
    opacity = out["opacity"].reshape(-1)
    solid = opacity > 0.99
    assert solid.sum() > 20 and (solid <= inside).all()
    depth = out["depth"].reshape(-1).double()
    assert (depth[solid] - t_in[solid]).abs().max() < 0.03
    # empty pixels show the background
    empty = opacity < 1e-6
    assert empty.any() and torch.allclose(out["comp_rgb"].reshape(-1, 3)[empty], torch.ones(int(empty.sum()), 3))


@pytest.mark.parametrize("dilate", [0, 1])
def test_occupancy_grid_skips_empty_space(dilate):
    field = SphereField(2.0, 0.5)
    cams = _camera()
    r = _renderer(field, samples=128, grid_resolution=32, occ_dilate=dilate)
    with torch.no_grad():
        full = r(cams)
        n_full = field.n_queries
        for step in range(0, 8 * r.cfg.occ_update_every, r.cfg.occ_update_every):
            r.update_step(step)  # several refreshes so the EMA catches thin boundary cells
        field.n_queries = 0
        skipped = r(cams)
    assert r.occupancy.binary.float().mean() < 0.2
    assert field.n_queries < 0.5 * n_full
    diff = (skipped["opacity"] - full["opacity"]).abs()
    # a hard-edged sphere is the worst case: one random point per cell can miss a barely
    # touched boundary cell; dilation closes that gap
    assert diff.mean() < 0.005 and diff.max() < (0.2 if dilate == 0 else 1e-4)


def test_shapes_and_shading_modes():
    field = SphereField(5.0, 0.5)
    cams = make_cameras(
        torch.tensor([10.0, 40.0]),
        torch.tensor([0.0, 90.0]),
        torch.tensor([2.5, 3.0]),
        torch.tensor([45.0, 50.0]),
        16,
        20,
    )
    r = _renderer(field, samples=64, bg=(0.0, 0.0, 0.0))
    for mode in ("albedo", "lambertian", "textureless"):
        with torch.no_grad():
            out = r(cams, mode)
        for k, c in (("comp_rgb", 3), ("opacity", 1), ("depth", 1), ("comp_normal", 3), ("comp_rgb_bg", 3)):
            assert out[k].shape == (2, 16, 20, c), (mode, k)
        assert 0 <= out["comp_rgb"].min() and out["comp_rgb"].max() <= 1 + 1e-5
        if mode == "albedo":
            assert out["comp_normal"].abs().max() == 0
        else:
            assert out["normal"].shape == (out["n_samples"], 3) and out["comp_normal"].abs().max() > 0.5
    # the lit side of a textureless render is brighter than its unlit ambient floor
    assert out["comp_rgb"].max() > 0.5


def test_lambertian_and_textureless_shading():
    albedo = torch.tensor([[0.5, 0.2, 1.0], [0.5, 0.2, 1.0]])
    normal = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    points = torch.zeros(2, 3)
    light = torch.tensor([[0.0, 0.0, 5.0]]).expand(2, 3)
    lit = shade("lambertian", albedo, normal, points, light, ambient=0.1)
    torch.testing.assert_close(lit[0], albedo[0])
    torch.testing.assert_close(lit[1], 0.1 * albedo[1])
    tl = shade("textureless", albedo, normal, points, light, ambient=0.1)
    torch.testing.assert_close(tl, torch.tensor([[1.0] * 3, [0.1] * 3]))
    assert shade("albedo", albedo, None, points, light) is albedo
    with pytest.raises(ValueError):
        shade("phong", albedo, normal, points, light)


def test_gradients_reach_field_and_background():
    torch.manual_seed(0)
    geo = ImplicitVolume(ImplicitVolumeConfig(hash_grid=SMALL_GRID, mlp_hidden=16))
    r = VolumeRenderer(
        RendererConfig(num_samples_per_ray=32, use_nerfacc="never"), geo, make_background(BackgroundConfig(type="mlp"))
    )
    r.update_step(0)
    out = r(_camera(h=16, w=16), "lambertian")
    loss = out["comp_rgb"].mean() + out["orient_loss"] + out["opacity"].mean()
    loss.backward()
    assert geo.encoding.table.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in geo.mlp.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in r.background.parameters())
    assert out["weights"].shape == (out["n_samples"], 1) and out["ray_indices"].max() < 16 * 16


def test_sphere_field_sigma_gradient_sign():
    """More density -> more opacity: d(mean opacity)/d(log sigma) > 0."""
    field = SphereField(1.0, 0.5)
    out = _renderer(field, samples=64).train()(_camera(h=12, w=12))
    out["opacity"].mean().backward()
    assert field.log_sigma.grad > 0


@pytest.mark.parametrize("normal_type", ["finite_difference", "finite_difference_forward", "analytic"])
def test_implicit_volume_blob_and_normals(normal_type):
    torch.manual_seed(0)
    geo = ImplicitVolume(ImplicitVolumeConfig(hash_grid=SMALL_GRID, normal_type=normal_type, mlp_hidden=16))
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95], [0.3, 0.0, 0.0], [0.0, -0.3, 0.0]])
    out = geo(pts, with_normal=True)
    assert out["density"][0] > 5.0 and out["density"][1] < 1e-3  # a soft ball before training
    assert out["albedo"].shape == (4, 3) and ((out["albedo"] > 0) & (out["albedo"] < 1)).all()
    assert out["normal"][2, 0] > 0.95 and out["normal"][3, 1] < -0.95  # outward-facing
    torch.testing.assert_close(geo.normal(pts[2:]), out["normal"][2:], atol=1e-4, rtol=0)
    torch.testing.assert_close(geo.density(pts), out["density"])
    out["normal"].sum().backward()  # normals are differentiable w.r.t. the field
    assert geo.encoding.table.grad.abs().sum() > 0


def test_weights_agree_with_nerfacc_dense_and_cpu_backend():
    from gen3d.render.occupancy import RaySamples, TorchOccupancyGrid
    from gen3d.render.volume import render_weights

    nerfacc = pytest.importorskip("nerfacc")
    torch.manual_seed(0)
    R, S = 5, 16
    t0 = torch.sort(torch.rand(R, S) * 3, dim=1).values
    t1 = torch.cat([t0[:, 1:], t0[:, -1:] + 0.1], dim=1)
    sigmas = torch.rand(R, S) * 4
    keep = torch.rand(R, S) > 0.3
    sigmas = sigmas * keep  # dropped samples have zero density, so their weights are zero
    idx = keep.view(-1).nonzero().squeeze(1)
    samples = RaySamples(idx // S, t0.view(-1)[idx], t1.view(-1)[idx], R, S, idx, R)
    ref, _, _ = nerfacc.render_weight_from_density(t0, t1, sigmas)  # dense layout: pure torch in nerfacc
    torch.testing.assert_close(render_weights(samples, sigmas.view(-1)[idx]), ref.view(-1)[idx])
    if not torch.cuda.is_available():
        assert isinstance(_renderer(SphereField(1.0, 0.5), use_nerfacc="auto").occupancy, TorchOccupancyGrid)


def test_depth_variance_is_small_on_an_opaque_surface_and_large_in_a_translucent_ball():
    """z-variance (loss.other.z_variance): a near-opaque sphere's rays stop in a thin layer; a translucent
    ball spreads each ray's weight over its chord. Rays that miss (opacity <= 0.5) do not count."""
    from gen3d.render.volume import depth_variance

    cams = _camera()
    values = {}
    for sigma in (300.0, 3.0):
        field = SphereField(sigma, 0.5)
        out = _renderer(field, samples=128).train()(cams)  # a training render keeps the per-sample outputs
        values[sigma] = float(depth_variance(out).detach())
    assert values[300.0] < 1e-3 < 0.01 < values[3.0]
    # a ray's own variance by hand: two samples of equal weight 0.4 at depths 1 and 2 -> 0.25
    out = {
        "weights": torch.tensor([[0.4], [0.4], [0.1]]),
        "ray_indices": torch.tensor([0, 0, 1]),
        "t_mid": torch.tensor([1.0, 2.0, 1.5]),
        "opacity": torch.tensor([[0.8], [0.1]]),
        "depth": torch.tensor([[1.2], [0.15]]),
    }
    assert float(depth_variance(out)) == pytest.approx(0.25)

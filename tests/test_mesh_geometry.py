"""Mesh stage geometry: regularisers, extraction from a field, rendering and checkpoints."""

import pytest
import torch

from gen3d.geometry.hashgrid import HashGridConfig
from gen3d.geometry.implicit import ImplicitVolumeConfig
from gen3d.geometry.mesh import MeshGeometry, MeshGeometryConfig
from gen3d.geometry.mesh_losses import laplacian_smoothing, mesh_topology, normal_consistency, uniform_laplacian
from gen3d.render.background import BackgroundConfig, make_background
from gen3d.render.cameras import make_cameras
from gen3d.render.mesh_renderer import MESH_SHADING_MODES, MeshRenderer, MeshRendererConfig


def _grid(n=6):
    """Regular n x n vertex grid in the XY plane, two triangles per cell -> (verts [n*n,3], faces)."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    verts = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(-1, 3) / (n - 1)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return verts, faces


TEX = ImplicitVolumeConfig(
    hash_grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=64),
    encoding_backend="torch",
    mlp_hidden=16,
)


def _small_cfg(**kw):
    return MeshGeometryConfig(**kw)


def test_normal_consistency_flat_vs_bent():
    verts, faces = _grid()
    topo = mesh_topology(faces)
    assert topo.face_pairs.shape[0] == 3 * 25 - 2 * 5  # interior edges of a 5x5-cell grid
    assert normal_consistency(verts, faces, topo).item() == pytest.approx(0.0, abs=1e-6)
    bent = verts.clone()
    bent[:, 2] = (bent[:, 0] - 0.5).clamp_min(0.0)  # fold along x = 0.5
    assert normal_consistency(bent, faces, topo).item() > 1e-3


def test_laplacian_grid_vs_noisy():
    verts, faces = _grid()
    topo = mesh_topology(faces)
    lap = uniform_laplacian(verts, topo.edges).norm(dim=-1).view(6, 6)
    assert lap[1:-1, 1:-1].max().item() < 1e-6  # regular interior: mean of neighbours = vertex
    assert lap[0, 0].item() > 0  # corners are not
    assert laplacian_smoothing(verts[:, 2:], topo).item() == pytest.approx(0.0, abs=1e-12)  # flat in z
    noisy = verts + 0.01 * torch.randn(verts.shape, generator=torch.Generator().manual_seed(0))
    assert laplacian_smoothing(noisy[:, 2:], topo).item() > 1e-6


def test_from_field_sphere_and_render():
    geo = MeshGeometry.from_field(
        lambda p: 0.5 - p.norm(dim=-1), _small_cfg(), resolution=32, threshold=0.0, texture=TEX
    )
    mesh = geo.to_trimesh()
    assert mesh.is_watertight and mesh.volume > 0
    radii = geo.vertices().norm(dim=-1)
    assert (radii - 0.5).abs().max().item() < 0.02
    normals = geo.vertex_normals()
    assert (normals * geo.vertices() / radii[:, None]).sum(-1).min().item() > 0.95  # outward, unit

    renderer = MeshRenderer(MeshRendererConfig(backend="torch"), geo, make_background(BackgroundConfig(type="solid")))
    cams = make_cameras(
        torch.tensor([0.0, 30.0]), torch.tensor([0.0, 90.0]), torch.full((2,), 2.0), torch.full((2,), 40.0), 32, 32
    )
    for mode in MESH_SHADING_MODES:
        out = renderer(cams, mode)
        for key, c in (("comp_rgb", 3), ("opacity", 1), ("depth", 1), ("comp_normal", 3)):
            assert out[key].shape == (2, 32, 32, c), (mode, key)
            assert torch.isfinite(out[key]).all()
        assert out["opacity"][:, 16, 16].min().item() == 1.0 and out["opacity"][:, 0, 0].max().item() == 0.0
        assert out["depth"][0, 16, 16, 0].item() == pytest.approx(1.5, abs=0.03)
        assert torch.allclose(out["comp_rgb"][:, 0, 0], torch.ones(2, 3))  # white background
        loss = out["comp_rgb"].square().mean() + out["opacity"].mean()
        geo.zero_grad()
        loss.backward()
        assert torch.isfinite(geo.offsets.grad).all() and geo.offsets.grad.abs().sum() > 0, mode
        tex_grad = geo.texture.encoding.table.grad
        if mode in ("albedo", "lambertian"):
            assert tex_grad is not None and torch.isfinite(tex_grad).all() and tex_grad.abs().sum() > 0
    # normal mode shows (n + 1) / 2: the centre of the front view faces +Z
    out = renderer(cams[0], "normal")
    assert out["comp_rgb"][0, 16, 16, 2].item() > 0.95
    renderer.update_step(10)  # no-op


def test_offsets_along_normals_and_losses():
    geo = MeshGeometry.from_field(
        lambda p: 0.5 - p.norm(dim=-1), _small_cfg(offset_type="normal"), resolution=24, threshold=0.0, texture=TEX
    )
    assert geo.offsets.shape == (geo.base_vertices.shape[0], 1)
    with torch.no_grad():
        geo.offsets.fill_(0.1)
    assert geo.vertices().norm(dim=-1).mean().item() == pytest.approx(0.6, abs=0.02)
    reg = geo.normal_consistency() + geo.laplacian_smoothing()
    reg.backward()
    assert torch.isfinite(geo.offsets.grad).all()


def test_state_dict_restores_topology():
    geo = MeshGeometry.from_field(
        lambda p: 0.5 - p.norm(dim=-1), _small_cfg(), resolution=20, threshold=0.0, texture=TEX
    )
    with torch.no_grad():
        geo.offsets.normal_(0.0, 0.01)
    empty = MeshGeometry(_small_cfg(), texture=TEX)
    assert empty.faces.shape == (0, 3)
    empty.load_state_dict(geo.state_dict())
    assert torch.equal(empty.faces, geo.faces)
    assert torch.equal(empty.vertices(), geo.vertices())
    assert empty.topology.edges.shape == geo.topology.edges.shape
    pts = torch.rand(5, 3) - 0.5
    assert torch.allclose(empty.albedo(pts), geo.albedo(pts))


def test_from_implicit_copies_the_texture():
    from gen3d.geometry.implicit import ImplicitVolume

    cfg = _small_cfg()
    volume = ImplicitVolume(TEX)
    geo = MeshGeometry.from_implicit(volume, cfg, resolution=24)
    assert geo.faces.shape[0] > 100 and geo.to_trimesh().is_watertight
    pts = torch.rand(7, 3) - 0.5
    assert torch.allclose(geo.albedo(pts), volume.albedo(pts))


def test_extraction_smoothing_removes_bumps_and_keeps_the_size():
    """A bumpy sphere density: Taubin smoothing of the extracted surface lowers the normal-consistency
    loss and keeps the mean radius (no shrinking)."""

    def bumpy(p):
        r = p.norm(dim=-1)
        bumps = 0.03 * torch.sin(40 * p[:, 0]) * torch.sin(40 * p[:, 1]) * torch.sin(40 * p[:, 2])
        return (0.6 + bumps - r).clamp_min(0) * 50

    cfg = dict(resolution=64, threshold=1.0, min_component_fraction=0.0)
    rough = MeshGeometry.from_field(bumpy, MeshGeometryConfig(**cfg, smooth_iterations=0))
    smooth = MeshGeometry.from_field(bumpy, MeshGeometryConfig(**cfg, smooth_iterations=10))
    assert smooth.normal_consistency() < 0.7 * rough.normal_consistency()
    r_rough, r_smooth = rough.vertices().norm(dim=-1).mean(), smooth.vertices().norm(dim=-1).mean()
    assert abs(float(r_smooth - r_rough)) < 0.01


def test_albedo_smoothness_sees_speckle_and_trains():
    """loss.albedo_smooth's term: 0 on a constant texture, larger on a speckled than on a smooth one,
    with gradients into the texture field; returned by the mesh representation only when switched on."""
    from gen3d.representations import representation

    sphere = lambda p: 0.5 - p.norm(dim=-1)  # noqa: E731
    geo = MeshGeometry.from_field(sphere, _small_cfg(), resolution=24, threshold=0.0, texture=TEX)
    points, normals = geo.surface_points(500)
    assert (points.norm(dim=-1) - 0.5).abs().max().item() < 0.04  # flat faces: inside the sphere
    assert (normals * points / points.norm(dim=-1, keepdim=True)).sum(-1).min().item() > 0.9
    geo.texture.albedo = lambda p: torch.full_like(p, 0.3)
    assert geo.albedo_smoothness(256, 0.02).item() == 0.0
    geo.texture.albedo = lambda p: torch.sigmoid(p[:, :1] * 2).expand(-1, 3)  # smooth ramp
    smooth = geo.albedo_smoothness(2048, 0.02).item()
    geo.texture.albedo = lambda p: torch.sigmoid(torch.sin(p[:, :1] * 300) * 5).expand(-1, 3)  # speckle
    assert geo.albedo_smoothness(2048, 0.02).item() > 10 * smooth > 0
    del geo.texture.albedo  # back to the field
    rep, scene = representation("mesh"), type("Scene", (), {"geometry": geo})()
    assert "albedo_smooth" not in rep.regularisers(scene, {})
    geo.cfg = _small_cfg(albedo_smooth_points=128)
    term = rep.regularisers(scene, {})["albedo_smooth"]
    term.backward()
    assert geo.texture.encoding.table.grad.abs().sum() > 0
    # a few Adam steps on the term alone take the speckle of a noisy texture field down
    torch.manual_seed(0)
    with torch.no_grad():
        geo.texture.encoding.table.normal_(0.0, 1.0)
    opt = torch.optim.Adam(geo.texture.parameters(), lr=0.05)
    before = geo.albedo_smoothness(2048, 0.02).item()
    for _ in range(30):
        opt.zero_grad()
        geo.albedo_smoothness(512, 0.02).backward()
        opt.step()
    assert geo.albedo_smoothness(2048, 0.02).item() < 0.5 * before

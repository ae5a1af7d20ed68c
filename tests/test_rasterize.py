"""Rasterizer: analytic silhouette and depth, perspective-correct interpolation, gradients,
and agreement with nvdiffrast on CUDA."""

import math

import pytest
import torch
import trimesh

from gen3d.render.cameras import get_rays, make_cameras
from gen3d.render.mesh_renderer import world_to_clip
from gen3d.render.rasterize import antialias, interpolate, rasterize


def _camera(size=64, fovy=40.0, distance=3.0, elevation=0.0, azimuth=0.0):
    one = torch.ones(1)
    return make_cameras(one * elevation, one * azimuth, one * distance, one * fovy, size, size)


def _cube():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces, dtype=torch.long)


def test_cube_silhouette_and_depth():
    size, fovy = 64, 40.0
    verts, faces = _cube()
    cams = _camera(size, fovy)
    r = rasterize(world_to_clip(verts, cams, 0.1, 100.0), faces, size, size, backend="torch")
    assert r.face_id.shape == (1, size, size) and r.bary.shape == (1, size, size, 3)
    focal = 0.5 * size / math.tan(math.radians(fovy) / 2)
    half = 0.5 / (3.0 - 0.5) * focal  # front face at distance 2.5
    covered = r.face_id[0] >= 0
    # a centred square: pixel centres c + 0.5 with |c + 0.5 - size / 2| <= half
    centres = torch.arange(size) + 0.5 - size / 2
    inside_1d = centres.abs() <= half
    expected = inside_1d[:, None] & inside_1d[None, :]
    assert (covered ^ expected).sum() == 0
    assert abs(int(covered[size // 2].sum()) - 2 * half) <= 1.0
    assert r.depth[0, size // 2, size // 2].item() == pytest.approx(2.5, abs=1e-4)
    assert (r.depth[0][~covered] == 0).all()
    # barycentrics are a partition of unity on covered pixels
    assert torch.allclose(r.bary[0][covered].sum(-1), torch.ones(int(covered.sum())), atol=1e-5)


def test_nearest_face_wins():
    """Two overlapping triangles: the closer one covers the overlap, whatever the order."""
    tri = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    verts = torch.cat([tri + torch.tensor([0.0, 0.0, -0.5]), tri + torch.tensor([0.0, 0.0, 0.5])])
    cams = _camera(32)
    for faces, near_face in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 1), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 0)):
        r = rasterize(world_to_clip(verts, cams, 0.1, 100.0), faces, 32, 32, backend="torch")
        assert r.face_id[0, 16, 16].item() == near_face
        assert r.depth[0, 16, 16].item() == pytest.approx(2.5, abs=1e-4)


def test_perspective_correct_interpolation():
    """A slanted quad: interpolated world positions lie on each pixel's ray (an affine,
    screen-space interpolation would not), and UVs match the ray-plane intersection."""
    size = 32
    verts = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cams = _camera(size, fovy=60.0, distance=4.0)
    r = rasterize(world_to_clip(verts, cams, 0.1, 100.0), faces, size, size, backend="torch")
    pos = interpolate(verts, r.face_id, r.bary, faces)
    uvs = interpolate(uv, r.face_id, r.bary, faces)
    rays_o, rays_d = get_rays(cams)
    # plane x = z: t such that (o + t d).x == (o + t d).z
    o, d = rays_o[0], rays_d[0]
    t = (o[..., 2] - o[..., 0]) / (d[..., 0] - d[..., 2])
    hit = o + t[..., None] * d
    covered = r.face_id[0] >= 0
    assert covered.sum() > 100
    assert torch.allclose(pos[0][covered], hit[covered], atol=1e-4)
    assert torch.allclose(
        uvs[0][covered], torch.stack([(hit[..., 0] + 1) / 2, (hit[..., 1] + 1) / 2], -1)[covered], atol=1e-4
    )
    # the affine screen-space alternative (barycentrics of the projected 2D triangle) is off
    clip = world_to_clip(verts, cams, 0.1, 100.0)[0]
    flat = torch.cat([clip[:, :2] / clip[:, 3:], torch.zeros(4, 1), torch.ones(4, 1)], -1)
    affine = interpolate(uv, r.face_id, rasterize(flat, faces, size, size, backend="torch").bary, faces)
    assert (affine[0][covered] - uvs[0][covered]).abs().max() > 1e-2


def test_gradients_reach_vertices():
    verts, faces = _cube()
    verts = verts.clone().requires_grad_(True)
    cams = _camera(32, azimuth=30.0, elevation=20.0)
    clip = world_to_clip(verts, cams, 0.1, 100.0)
    r = rasterize(clip, faces, 32, 32, backend="torch")
    colour = interpolate(verts * 0.5 + 0.5, r.face_id, r.bary, faces)
    (g_interp,) = torch.autograd.grad(colour.sum() + r.depth.sum(), verts, retain_graph=True)
    assert torch.isfinite(g_interp).all() and g_interp.abs().sum() > 0
    # through the positions alone (constant attribute values per vertex change with bary)
    attr = torch.arange(8, dtype=torch.float32)[:, None]
    (g_bary,) = torch.autograd.grad(interpolate(attr, r.face_id, r.bary, faces).sum(), verts, retain_graph=True)
    assert g_bary.abs().sum() > 0
    # soft silhouette: coverage mask gets gradients only via the antialiasing
    mask = (r.face_id >= 0).float()[..., None]
    soft = antialias(mask, r, clip, faces, backend="torch")
    assert ((soft > 0) & (soft < 1)).any()
    (g_sil,) = torch.autograd.grad(soft.sum(), verts)
    assert torch.isfinite(g_sil).all() and g_sil.abs().sum() > 0


def test_soft_silhouette_area_and_gradient_match_analytic():
    """Front view of a cube scaled by s: antialiased coverage sums to the analytic square's
    area (2 h)^2, h = 0.5 s / (3 - 0.5 s) * focal, and d(area)/ds matches too."""
    verts, faces = _cube()
    cams = _camera(64, 40.0)
    focal = 0.5 * 64 / math.tan(math.radians(20.0))
    half = lambda s: 0.5 * s / (3.0 - 0.5 * s) * focal  # noqa: E731
    for s0 in (1.0, 1.05):
        scale = torch.tensor(s0, requires_grad=True)
        clip = world_to_clip(verts * scale, cams, 0.1, 100.0)
        r = rasterize(clip, faces, 64, 64, backend="torch")
        area = antialias((r.face_id >= 0).float()[..., None], r, clip, faces, backend="torch").sum()
        area.backward()
        d_half = (half(s0 + 1e-4) - half(s0 - 1e-4)) / 2e-4
        assert area.item() == pytest.approx((2 * half(s0)) ** 2, abs=4.0)
        assert scale.grad.item() == pytest.approx(8 * half(s0) * d_half, rel=0.1)


def test_batched_and_empty():
    verts, faces = _cube()
    cams = make_cameras(
        torch.zeros(2), torch.tensor([0.0, 90.0]), torch.full((2,), 3.0), torch.full((2,), 40.0), 16, 16
    )
    r = rasterize(world_to_clip(verts, cams, 0.1, 100.0), faces, 16, 16, backend="torch")
    assert r.face_id.shape == (2, 16, 16)
    assert torch.equal(r.face_id[0] >= 0, r.face_id[1] >= 0)  # a cube looks the same from the side
    assert not torch.equal(r.face_id[0], r.face_id[1])  # ... through different faces
    r0 = rasterize(world_to_clip(verts, cams, 0.1, 100.0), faces[:0], 16, 16, backend="torch")
    assert (r0.face_id == -1).all() and (r0.bary == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvdiffrast needs CUDA")
def test_agrees_with_nvdiffrast():
    pytest.importorskip("nvdiffrast.torch")
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32, device="cuda")
    faces = torch.tensor(sphere.faces, dtype=torch.long, device="cuda")
    cams = make_cameras(
        torch.tensor([10.0, 40.0]), torch.tensor([0.0, 120.0]), torch.full((2,), 2.5), torch.full((2,), 45.0), 64, 64
    ).to("cuda")
    clip = world_to_clip(verts, cams, 0.1, 100.0)
    rt = rasterize(clip, faces, 64, 64, backend="torch")
    rn = rasterize(clip, faces, 64, 64, backend="nvdiffrast")
    assert (rt.face_id == rn.face_id).float().mean() > 0.99
    same = (rt.face_id == rn.face_id) & (rt.face_id >= 0)
    assert torch.allclose(rt.bary[same], rn.bary[same], atol=1e-4)
    assert torch.allclose(rt.depth[same], rn.depth[same], atol=1e-4)
    col = interpolate(verts * 0.5 + 0.5, rn.face_id, rn.bary, faces)
    at = antialias(col, rn, clip, faces, backend="torch")
    an = antialias(col, rn, clip, faces, backend="nvdiffrast")
    assert (at - an).abs().mean() < 1e-2

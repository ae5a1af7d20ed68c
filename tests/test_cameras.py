import torch

from gen3d.diffusion.views import VIEWS, view_index
from gen3d.render.cameras import CameraConfig, CameraSampler, get_rays, look_at, make_cameras, turntable


def _sample(n=256, **kw):
    cfg = CameraConfig(**kw)
    return cfg, CameraSampler(cfg).sample(n, generator=torch.Generator().manual_seed(0))


def test_sampler_ranges():
    cfg, cams = _sample(
        elevation_range=(-10.0, 45.0), azimuth_range=(-90.0, 120.0), distance_range=(2.0, 3.0), fovy_range=(30.0, 50.0)
    )
    assert len(cams) == 256
    for values, (lo, hi) in (
        (cams.elevation, cfg.elevation_range),
        (cams.azimuth, cfg.azimuth_range),
        (cams.distance, cfg.distance_range),
        (torch.rad2deg(cams.fovy), cfg.fovy_range),
    ):
        assert values.min() >= lo - 1e-4 and values.max() <= hi + 1e-4
        assert values.max() - values.min() > 0.5 * (hi - lo)  # actually spread over the range
    assert torch.allclose(cams.c2w[:, :3, 3].norm(dim=-1), cams.distance, atol=1e-5)


def test_c2w_orthonormal_and_looks_at_origin():
    _, cams = _sample(64)
    R = cams.c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.det(R), torch.ones(64), atol=1e-5)  # right-handed
    eye = cams.c2w[:, :3, 3]
    forward = -R[:, :, 2]  # OpenGL: the camera looks down -Z
    torch.testing.assert_close(forward, -eye / eye.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
    assert (cams.c2w[:, 3] == torch.tensor([0.0, 0.0, 0.0, 1.0])).all()


def test_front_camera_on_plus_z_and_y_up():
    one = torch.ones(1)
    cams = make_cameras(one * 0.0, one * 0.0, one * 2.0, one * 40.0, 8, 8)
    torch.testing.assert_close(cams.c2w[0, :3, 3], torch.tensor([0.0, 0.0, 2.0]))
    torch.testing.assert_close(cams.c2w[0, :3, 1], torch.tensor([0.0, 1.0, 0.0]))
    side = make_cameras(one * 0.0, one * 90.0, one * 2.0, one * 40.0, 8, 8)
    assert side.c2w[0, 0, 3] > 1.99  # positive azimuth turns towards +X
    top = look_at(torch.tensor([[0.0, 3.0, 0.0]]))  # degenerate up vector still gives a rotation
    assert torch.isfinite(top).all() and torch.allclose(torch.det(top[0, :3, :3]), torch.tensor(1.0), atol=1e-5)


def test_turntable_covers_full_circle():
    cams = turntable(8, elevation_deg=20.0, distance=2.5)
    assert len(cams) == 8 and cams.azimuth[0] == 0
    az = torch.sort(cams.azimuth % 360).values
    gaps = torch.diff(torch.cat([az, az[:1] + 360]))
    torch.testing.assert_close(gaps, torch.full((8,), 45.0))
    assert torch.allclose(cams.elevation, torch.full((8,), 20.0))


def test_get_rays_centre_passes_origin():
    _, cams = _sample(4, height=33, width=33)  # odd size: a pixel sits exactly on the axis
    o, d = get_rays(cams)
    assert o.shape == (4, 33, 33, 3) and d.shape == (4, 33, 33, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(4, 33, 33), atol=1e-5, rtol=0)
    oc, dc = o[:, 16, 16], d[:, 16, 16]
    closest = oc - (oc * dc).sum(-1, keepdim=True) * dc  # point on the ray nearest the origin
    assert closest.norm(dim=-1).max() < 1e-4
    # top-left pixel ray points up and left in camera space
    cam_d = torch.einsum("bji,bj->bi", cams.c2w[:, :3, :3], d[:, 0, 0])
    assert (cam_d[:, 0] < 0).all() and (cam_d[:, 1] > 0).all() and (cam_d[:, 2] < 0).all()


def test_view_index_front_side_back_overhead():
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 80.0, 10.0])
    az = torch.tensor([0.0, 90.0, 180.0, -170.0, 0.0, -60.0])
    names = [VIEWS[i] for i in view_index(el, az)]
    assert names == ["front", "side", "back", "back", "overhead", "side"]

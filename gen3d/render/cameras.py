"""Cameras: random sampling for training, turntable paths for videos, and ray generation.

World frame is Y-up; cameras follow OpenGL (look down -Z, +Y up). Azimuth 0 deg puts the
camera on +Z ("front"); positive azimuth rotates towards +X. See docs/architecture.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gen3d.config import ranged


@dataclass
class CameraConfig:
    """Ranges the training camera sampler draws from (degrees and world units)."""

    elevation_range: tuple[float, float] = ranged((-10.0, 60.0), ge=-90, le=90)
    azimuth_range: tuple[float, float] = ranged((-180.0, 180.0), ge=-360, le=360)
    distance_range: tuple[float, float] = ranged((2.0, 2.6), gt=0)
    fovy_range: tuple[float, float] = ranged((40.0, 60.0), gt=0, lt=180)
    # render size in pixels (the prior's VAE works at 1/8 of it); each may be a schedule (gen3d.utils.schedule),
    # e.g. threestudio's ProlificDreamer {milestones: [5000], values: [64, 512]}
    height: Any = ranged(64, ge=8, le=8192)
    width: Any = ranged(64, ge=8, le=8192)
    # point light placed around the camera direction, at this distance range from the origin
    light_distance_range: tuple[float, float] = ranged((1.5, 3.0), gt=0)
    light_jitter: float = ranged(0.5, ge=0)
    SCHEDULES = ("height", "width")


@dataclass
class Cameras:
    """A batch of pinhole cameras.

    c2w: [B, 4, 4] camera-to-world; fovy: [B] radians; elevation, azimuth: [B] degrees;
    distance: [B]; light_position: [B, 3].
    """

    c2w: torch.Tensor
    fovy: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor
    distance: torch.Tensor
    light_position: torch.Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device) -> Cameras:
        kw = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Cameras(**kw)

    def __getitem__(self, idx) -> Cameras:
        kw = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        if kw["c2w"].dim() == 2:
            kw = {k: (v[None] if torch.is_tensor(v) else v) for k, v in kw.items()}
        return Cameras(**kw)


def spherical_to_position(
    elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, distance: torch.Tensor
) -> torch.Tensor:
    """Camera centre [B,3] on a sphere around the origin (Y-up, azimuth 0 on +Z)."""
    el = torch.deg2rad(elevation_deg)
    az = torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el), distance * torch.cos(el) * torch.cos(az)],
        dim=-1,
    )


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
    """OpenGL camera-to-world [B,4,4] looking from eye [B,3] at target (default origin)."""
    if target is None:
        target = torch.zeros_like(eye)
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = F.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up, dim=-1)
    # straight above/below: pick any right vector
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device), right)
    right = F.normalize(right, dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    return c2w


def make_cameras(elevation, azimuth, distance, fovy_deg, height: int, width: int, light_position=None) -> Cameras:
    """Cameras looking at the origin from spherical coordinates (all [B] tensors, degrees)."""
    eye = spherical_to_position(elevation, azimuth, distance)
    if light_position is None:
        light_position = eye * 1.0
    return Cameras(
        c2w=look_at(eye),
        fovy=torch.deg2rad(fovy_deg),
        elevation=elevation,
        azimuth=azimuth,
        distance=distance,
        light_position=light_position,
        height=height,
        width=width,
    )


def _uniform(lo_hi, n, generator, device):
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


class CameraSampler:
    """Draws random training cameras from the ranges of a CameraConfig."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device="cpu",
        height: int | None = None,
        width: int | None = None,
    ) -> Cameras:
        c = self.cfg
        # elevation uniform on the sphere's band, not in angle, so views are not biased to the poles
        s0, s1 = (math.sin(math.radians(e)) for e in c.elevation_range)
        elevation = torch.rad2deg(torch.asin(_uniform((s0, s1), batch_size, generator, device)))
        azimuth = _uniform(c.azimuth_range, batch_size, generator, device)
        distance = _uniform(c.distance_range, batch_size, generator, device)
        fovy = _uniform(c.fovy_range, batch_size, generator, device)
        eye = spherical_to_position(elevation, azimuth, distance)
        light_dir = F.normalize(
            eye + c.light_jitter * torch.randn(batch_size, 3, generator=generator, device=device), dim=-1
        )
        light = light_dir * _uniform(c.light_distance_range, batch_size, generator, device)[:, None]
        return make_cameras(elevation, azimuth, distance, fovy, height or c.height, width or c.width, light)


def turntable(
    n_views: int,
    elevation_deg: float = 15.0,
    distance: float = 2.3,
    fovy_deg: float = 50.0,
    height: int = 64,
    width: int = 64,
) -> Cameras:
    """n_views cameras on a full circle at fixed elevation, starting from the front."""
    az = torch.linspace(0.0, 360.0, n_views + 1)[:-1]
    az = (az + 180.0) % 360.0 - 180.0
    ones = torch.ones(n_views)
    return make_cameras(ones * elevation_deg, az, ones * distance, ones * fovy_deg, height, width)


def get_rays(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres: (rays_o [B,H,W,3], rays_d [B,H,W,3] unit)."""
    H, W = cameras.height, cameras.width
    device, dtype = cameras.c2w.device, cameras.c2w.dtype
    focal = 0.5 * H / torch.tan(0.5 * cameras.fovy)  # [B]
    j, i = torch.meshgrid(
        torch.arange(H, device=device, dtype=dtype), torch.arange(W, device=device, dtype=dtype), indexing="ij"
    )
    x = (i + 0.5 - 0.5 * W)[None] / focal[:, None, None]
    y = -(j + 0.5 - 0.5 * H)[None] / focal[:, None, None]
    dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B,H,W,3] camera space
    rays_d = torch.einsum("bij,bhwj->bhwi", cameras.c2w[:, :3, :3], dirs)
    rays_d = F.normalize(rays_d, dim=-1)
    rays_o = cameras.c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def projection_matrix(cameras: Cameras, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """OpenGL perspective projection [B,4,4] (for rasterizers)."""
    B = len(cameras)
    aspect = cameras.width / cameras.height
    f = 1.0 / torch.tan(0.5 * cameras.fovy)
    P = torch.zeros(B, 4, 4, dtype=cameras.c2w.dtype, device=cameras.c2w.device)
    P[:, 0, 0] = f / aspect
    P[:, 1, 1] = f
    P[:, 2, 2] = -(far + near) / (far - near)
    P[:, 2, 3] = -2.0 * far * near / (far - near)
    P[:, 3, 2] = -1.0
    return P

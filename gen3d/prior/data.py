"""Training data for the builtin prior: simple coloured shapes rendered by gen3d itself.

Five shapes (cube, sphere, cylinder, cone, torus) in eight colours, seen from random cameras of
`gen3d.render.cameras.CameraSampler` (Y-up world, OpenGL cameras), sphere-traced signed distance
functions, Lambertian shading with the camera's point light plus ambient, plain light backgrounds.
Captions: "[a photo of | a DSLR photo of | a 3D render of] a {colour} {shape}[, {view} view]" with
DreamFusion's view suffix from `gen3d.diffusion.views`. Images are 64x64, in [0, 1], channels first.
Everything is seeded: the same config gives the same images and captions.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen3d.diffusion.views import VIEWS, ViewConfig, view_index, view_prompt
from gen3d.render.cameras import CameraConfig, CameraSampler, get_rays

from .tokenizer import COLOURS, PREFIXES, SHAPES

# linear-ish albedos for the colour names
COLOUR_RGB = {
    "red": (0.85, 0.08, 0.08),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.20, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "white": (0.95, 0.95, 0.95),
    "black": (0.07, 0.07, 0.07),
}


@dataclass
class PriorDataConfig:
    n_images: int = 16000
    seed: int = 0
    image_size: int = 64
    supersample: int = 2  # render at supersample x size, then average (anti-aliasing)
    elevation_range: tuple[float, float] = (-10.0, 80.0)  # about 10% above 60 deg: "overhead"
    distance_range: tuple[float, float] = (2.0, 2.6)
    fovy_range: tuple[float, float] = (40.0, 60.0)
    scale_range: tuple[float, float] = (0.85, 1.1)  # object size jitter
    tilt_deg: float = 15.0  # random tilt around X and Z; yaw is uniform
    p_view_suffix: float = 0.6
    p_prefix: float = 0.5
    cache_dir: str = ".cache/prior_data"


# ---------------------------------------------------------------- signed distance functions


def _sdf(shape: str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance (a lower bound for the cone) of a unit-ish shape centred at the origin, Y up."""
    x, y, z = p.unbind(-1)
    if shape == "sphere":
        return p.norm(dim=-1) - 0.6
    if shape == "cube":
        q = p.abs() - 0.42
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
    rxz = torch.sqrt(x * x + z * z + 1e-12)
    if shape == "cylinder":
        d = torch.stack([rxz - 0.42, y.abs() - 0.5], -1)
        return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)
    if shape == "cone":  # base radius r at y = -h, apex at y = +h: intersection of two half-spaces
        h, r = 0.5, 0.58
        slant = (2 * h * rxz + r * (y - h)) / math.sqrt(4 * h * h + r * r)
        return torch.maximum(-(y + h), slant)
    if shape == "torus":  # lying in the XZ plane
        return torch.sqrt((rxz - 0.45) ** 2 + y * y + 1e-12) - 0.2
    raise ValueError(f"unknown shape {shape!r}")


def _rotation(yaw: torch.Tensor, tilt_x: torch.Tensor, tilt_z: torch.Tensor) -> torch.Tensor:
    """[B,3,3] object-to-world rotations R = Rz Rx Ry (radians)."""

    def rot(axis, a):
        c, s = torch.cos(a), torch.sin(a)
        o, z = torch.ones_like(a), torch.zeros_like(a)
        if axis == "x":
            m = [o, z, z, z, c, -s, z, s, c]
        elif axis == "y":
            m = [c, z, s, z, o, z, -s, z, c]
        else:
            m = [c, -s, z, s, c, z, z, z, o]
        return torch.stack(m, -1).view(-1, 3, 3)

    return rot("z", tilt_z) @ rot("x", tilt_x) @ rot("y", yaw)


def sphere_trace(
    shape: str,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    rot: torch.Tensor,
    scale: torch.Tensor,
    n_steps: int = 64,
    eps: float = 1e-3,
):
    """Trace rays [B,N,3] against a rotated, scaled shape. Returns (hit [B,N], points [B,N,3], normals [B,N,3])."""
    B, N, _ = rays_o.shape
    o_obj = torch.einsum("bji,bnj->bni", rot, rays_o) / scale[:, None, None]  # R^T (x / s)
    d_obj = torch.einsum("bji,bnj->bni", rot, rays_d)
    o, d = o_obj.reshape(-1, 3), d_obj.reshape(-1, 3)
    # start on the bounding sphere of radius 1 (all shapes fit inside)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1.0
    disc = b * b - c
    t = (-b - torch.sqrt(disc.clamp(min=0))).clamp(min=0)
    t_far = -b + torch.sqrt(disc.clamp(min=0))
    active = torch.nonzero(disc > 0).squeeze(-1)
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    for _ in range(n_steps):
        if active.numel() == 0:
            break
        ta = t[active]
        dist = _sdf(shape, o[active] + ta[:, None] * d[active])
        done = dist < eps
        hit[active[done]] = True
        ta = ta + dist
        t[active] = ta
        active = active[~done & (ta < t_far[active])]
    x = o + t[:, None] * d
    # normals from central differences of the SDF, in object space, then rotated to world
    e = 1e-3
    offs = torch.eye(3) * e
    grad = torch.stack([_sdf(shape, x + offs[i]) - _sdf(shape, x - offs[i]) for i in range(3)], -1)
    n_obj = F.normalize(grad, dim=-1).view(B, N, 3)
    normals = torch.einsum("bij,bnj->bni", rot, n_obj)
    points = torch.einsum("bij,bnj->bni", rot, x.view(B, N, 3)) * scale[:, None, None]
    return hit.view(B, N), points, normals


# ---------------------------------------------------------------- scenes, rendering, captions


def sample_scenes(cfg: PriorDataConfig, n: int, generator: torch.Generator) -> dict:
    """Random labels, cameras and object poses for n images."""
    cam_cfg = CameraConfig(
        elevation_range=cfg.elevation_range,
        distance_range=cfg.distance_range,
        fovy_range=cfg.fovy_range,
        height=cfg.image_size,
        width=cfg.image_size,
    )
    cams = CameraSampler(cam_cfg).sample(n, generator=generator)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=generator)  # noqa: E731
    tilt = math.radians(cfg.tilt_deg)
    bg_kind = torch.randint(0, 3, (n,), generator=generator)  # white / light grey / light tint
    grey = u(0.82, 0.97)[:, None].expand(n, 3)
    tint = 0.85 + 0.15 * torch.rand(n, 3, generator=generator)
    bg = torch.where(bg_kind[:, None] == 0, torch.ones(n, 3), torch.where(bg_kind[:, None] == 1, grey, tint))
    return dict(
        shape=torch.randint(0, len(SHAPES), (n,), generator=generator),
        colour=torch.randint(0, len(COLOURS), (n,), generator=generator),
        cameras=cams,
        rotation=_rotation(u(-math.pi, math.pi), u(-tilt, tilt), u(-tilt, tilt)),
        scale=u(*cfg.scale_range),
        albedo_jitter=0.06 * torch.randn(n, 3, generator=generator),
        ambient=u(0.25, 0.45),
        background=bg,
    )


def render_scenes(cfg: PriorDataConfig, scenes: dict) -> torch.Tensor:
    """Render scenes from sample_scenes: images [B,3,H,W] in [0,1]."""
    cams = scenes["cameras"]
    n, S, H = len(cams), cfg.supersample, cfg.image_size
    cams_hr = type(cams)(**{**cams.__dict__, "height": H * S, "width": H * S})
    rays_o, rays_d = get_rays(cams_hr)
    rays_o, rays_d = rays_o.reshape(n, -1, 3), rays_d.reshape(n, -1, 3)
    rgb = scenes["background"][:, None, :].expand(n, rays_o.shape[1], 3).clone()
    albedo_all = torch.tensor([COLOUR_RGB[c] for c in COLOURS])
    for s, shape in enumerate(SHAPES):
        idx = torch.nonzero(scenes["shape"] == s).squeeze(-1)
        if idx.numel() == 0:
            continue
        hit, pts, nrm = sphere_trace(shape, rays_o[idx], rays_d[idx], scenes["rotation"][idx], scenes["scale"][idx])
        light = F.normalize(cams.light_position[idx][:, None, :] - pts, dim=-1)
        lam = (nrm * light).sum(-1, keepdim=True).clamp(min=0)
        amb = scenes["ambient"][idx][:, None, None]
        albedo = (albedo_all[scenes["colour"][idx]] + scenes["albedo_jitter"][idx]).clamp(0, 1)[:, None, :]
        shaded = albedo * (amb + (1 - amb) * lam)
        rgb[idx] = torch.where(hit[..., None], shaded, rgb[idx])
    img = rgb.view(n, H * S, H * S, 3).permute(0, 3, 1, 2)
    if S > 1:
        img = F.avg_pool2d(img, S)
    return img.clamp(0, 1)


def make_caption(
    shape: str,
    colour: str,
    elevation: float,
    azimuth: float,
    rng: random.Random,
    p_view_suffix: float = 0.6,
    p_prefix: float = 0.5,
    view_cfg: ViewConfig = ViewConfig(),
) -> str:
    """'[prefix ]a {colour} {shape}[, {view} view]' with random prefix/suffix (rng decides)."""
    text = f"a {colour} {shape}"
    if rng.random() < p_prefix:
        text = f"{rng.choice(PREFIXES)} {text}"
    if rng.random() < p_view_suffix:
        view = VIEWS[int(view_index(torch.tensor([elevation]), torch.tensor([azimuth]), view_cfg)[0])]
        text = view_prompt(text, view)
    return text


def _cache_path(cfg: PriorDataConfig) -> Path:
    d = asdict(cfg)
    d.pop("cache_dir")
    key = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"shapes-{key}.npz"


def render_dataset(cfg: PriorDataConfig, chunk: int = 256, use_cache: bool = True, verbose: bool = False) -> dict:
    """The whole dataset as numpy arrays: images uint8 [N,H,W,3], shape, colour [N] (int),
    elevation, azimuth [N] (degrees). Cached as .npz under cfg.cache_dir."""
    path = _cache_path(cfg)
    if use_cache and path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    g = torch.Generator().manual_seed(cfg.seed)
    out = {k: [] for k in ("images", "shape", "colour", "elevation", "azimuth")}
    for start in range(0, cfg.n_images, chunk):
        n = min(chunk, cfg.n_images - start)
        scenes = sample_scenes(cfg, n, g)
        img = render_scenes(cfg, scenes)
        out["images"].append((img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
        out["shape"].append(scenes["shape"].numpy())
        out["colour"].append(scenes["colour"].numpy())
        out["elevation"].append(scenes["cameras"].elevation.numpy())
        out["azimuth"].append(scenes["cameras"].azimuth.numpy())
        if verbose:
            print(f"rendered {start + n}/{cfg.n_images}", flush=True)
    data = {k: np.concatenate(v) for k, v in out.items()}
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
    return data


def image_tensors(images: np.ndarray) -> torch.Tensor:
    """Rendered images uint8 [N,H,W,3] (render_dataset's "images") -> float [N,3,H,W] in [0,1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


class CaptionedImages(torch.utils.data.Dataset):
    """(image [3,H,W] float in [0,1] or a precomputed latent, caption) pairs; the caption's random
    prefix/suffix is redrawn every time an item is read (seeded by epoch-independent item rng)."""

    def __init__(self, data: dict, cfg: PriorDataConfig, latents: torch.Tensor | None = None, seed: int = 0):
        self.data, self.cfg, self.latents, self.seed = data, cfg, latents, seed
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.data["shape"])

    def caption(self, i: int, rng: random.Random | None = None) -> str:
        d = self.data
        return make_caption(
            SHAPES[int(d["shape"][i])],
            COLOURS[int(d["colour"][i])],
            float(d["elevation"][i]),
            float(d["azimuth"][i]),
            rng or self.rng,
            self.cfg.p_view_suffix,
            self.cfg.p_prefix,
        )

    def image(self, i: int) -> torch.Tensor:
        return image_tensors(self.data["images"][i : i + 1])[0]

    def __getitem__(self, i: int):
        x = self.latents[i] if self.latents is not None else self.image(i)
        return x, self.caption(i)

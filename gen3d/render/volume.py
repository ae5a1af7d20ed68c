"""Volume renderer: cameras -> rays -> occupancy-skipped samples -> field -> shading -> composite.

Compositing (per ray, samples in order): alpha_k = 1 - exp(-sigma_k * delta_k),
T_k = prod_{j<k} (1 - alpha_j), w_k = T_k * alpha_k; rgb = sum w_k c_k + (1 - sum w_k) * bg.
The torch sampler keeps a dense [rays, samples] layout, so this is a cumsum; nerfacc's packed
samples use nerfacc's CUDA scan (imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from einops import rearrange

from gen3d.config import ranged
from gen3d.render.cameras import Cameras, get_rays
from gen3d.render.occupancy import RaySamples, make_occupancy_grid
from gen3d.render.shading import ShadingConfig, ambient_level, needs_normal, shade


@dataclass
class RendererConfig:
    # over the longest chord of the box; nerfacc's step size derives from it
    num_samples_per_ray: int = ranged(64, ge=1, le=4096)
    grid_resolution: int = ranged(32, ge=1, le=1024)  # occupancy grid cells per axis
    occ_threshold: float = ranged(0.01, ge=0)  # on density * step_size
    occ_update_every: int = ranged(16, ge=1)  # steps between occupancy refreshes
    occ_ema_decay: float = ranged(0.95, ge=0, le=1)
    occ_dilate: int = ranged(0, ge=0)  # grow occupied cells by this many cells (torch grid only; safer, slower)
    stratified: bool = True  # random per-ray offset of the samples while training
    use_nerfacc: str = ranged("auto", choices=("auto", "always", "never"))  # auto: nerfacc on CUDA when it imports
    eval_chunk_rays: int = ranged(16384, ge=1)  # rays per chunk when rendering without gradients
    # normals only where the (detached) weight exceeds this (others get 0); 0 = everywhere
    normal_weight_threshold: float = ranged(1e-4, ge=0)
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    STEPPED = ("stratified", "eval_chunk_rays", "normal_weight_threshold")  # read per render (gen3d.config)


def render_weights(samples: RaySamples, sigmas: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights [n] of packed samples with densities sigmas [n]."""
    if samples.dense_index is None:
        import nerfacc  # lazy: CUDA scan over packed samples

        w, _, _ = nerfacc.render_weight_from_density(
            samples.t_starts, samples.t_ends, sigmas, ray_indices=samples.ray_indices, n_rays=samples.n_rays
        )
        return w
    R, S = samples.n_dense_rays, samples.n_per_ray
    tau = sigmas * (samples.t_ends - samples.t_starts)  # optical depth of each sample
    dense = torch.zeros(R * S, dtype=tau.dtype, device=tau.device).index_put((samples.dense_index,), tau)
    dense = dense.view(R, S)
    before = torch.cumsum(dense, dim=1) - dense  # exclusive sum
    w = torch.exp(-before) * -torch.expm1(-dense)
    return w.view(-1)[samples.dense_index]


def accumulate(ray_indices: torch.Tensor, values: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Sum of per-sample values [n,C] over each ray -> [n_rays,C]."""
    return values.new_zeros(n_rays, values.shape[1]).index_add(0, ray_indices, values)


def depth_variance(out: dict) -> torch.Tensor:
    """Mean, over the rays that hit (opacity > 0.5), of the variance of the sample depths along the ray under
    the rendering weights (threestudio's z-variance): small when each ray's weight sits on one thin
    surface, large in a translucent shell. Needs a training render's per-sample outputs."""
    w, ri, t = out["weights"], out["ray_indices"], out["t_mid"][:, None]
    opacity = out["opacity"].reshape(-1, 1)
    norm = opacity.clamp_min(1e-6)
    mean = out["depth"].reshape(-1, 1) / norm
    var = accumulate(ri, w * (t - mean[ri]).square(), opacity.shape[0]) / norm
    hit = opacity.detach()[:, 0] > 0.5
    return var[hit].mean() if bool(hit.any()) else var.sum() * 0.0


class VolumeRenderer(nn.Module):
    """forward(cameras, shading) -> dict of images [B,H,W,C] and per-sample terms for losses."""

    def __init__(self, cfg: RendererConfig, geometry: nn.Module, background: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.geometry = geometry
        self.background = background
        backend = {"auto": "auto", "always": "nerfacc", "never": "torch"}.get(cfg.use_nerfacc)
        if backend is None:
            raise ValueError(f"use_nerfacc must be auto, always or never, got {cfg.use_nerfacc!r}")
        self.occupancy = make_occupancy_grid(
            backend,
            "cuda" if torch.cuda.is_available() else "cpu",
            radius=geometry.cfg.radius,
            resolution=cfg.grid_resolution,
            threshold=cfg.occ_threshold,
            ema_decay=cfg.occ_ema_decay,
            update_every=cfg.occ_update_every,
            n_samples_per_ray=cfg.num_samples_per_ray,
            dilate=cfg.occ_dilate,
        )

    @torch.no_grad()
    def update_step(self, step: int) -> None:
        """Refresh the occupancy grid from the field's density (every `occ_update_every` steps)."""
        self.occupancy.update(step, self.geometry.density)

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        light: torch.Tensor,
        shading: str,
        with_normal: bool,
        ambient: float,
    ) -> dict[str, torch.Tensor]:
        """rays_o, rays_d, light [R,3] -> per-ray (comp_rgb, opacity, depth, comp_normal, comp_rgb_bg)
        and per-sample (weights, ray_indices, points, normal, orient) outputs."""
        R = rays_o.shape[0]
        samples = self.occupancy.sample(rays_o, rays_d, stratified=self.training and self.cfg.stratified)
        ri = samples.ray_indices
        t_mid = 0.5 * (samples.t_starts + samples.t_ends)
        points = rays_o[ri] + rays_d[ri] * t_mid[:, None]
        selective = with_normal and self.cfg.normal_weight_threshold > 0 and hasattr(self.geometry, "normal")
        field_out = self.geometry(points, with_normal=with_normal and not selective)
        w = render_weights(samples, field_out["density"][:, 0])[:, None]  # [n,1]
        normal = field_out.get("normal")
        if selective:  # normals cost several field evaluations: only where they are visible
            sel = (w.detach()[:, 0] > self.cfg.normal_weight_threshold).nonzero().squeeze(1)
            normal = points.new_zeros(points.shape[0], 3).index_put((sel,), self.geometry.normal(points[sel]))
        rgb = shade(shading, field_out["albedo"], normal, points, light[ri], ambient)
        out = {
            "opacity": accumulate(ri, w, R),
            "depth": accumulate(ri, w * t_mid[:, None], R),
            "comp_rgb_fg": accumulate(ri, w * rgb, R),
            "weights": w,
            "ray_indices": ri,
            "points": points,
            "t_mid": t_mid,
        }
        out["comp_rgb_bg"] = self.background(rays_d)
        out["comp_rgb"] = out["comp_rgb_fg"] + (1.0 - out["opacity"]) * out["comp_rgb_bg"]
        if normal is not None:
            out["normal"] = normal
            out["comp_normal"] = accumulate(ri, w * normal, R)
            # orientation loss term (Ref-NeRF / DreamFusion): normals facing away from the camera
            out["orient"] = w.detach() * (normal * rays_d[ri]).sum(-1, keepdim=True).clamp_min(0.0) ** 2
        else:
            out["comp_normal"] = rays_o.new_zeros(R, 3)
        return out

    def forward(self, cameras: Cameras, shading: str = "albedo", with_normal: bool | None = None) -> dict:
        """Render a batch of cameras.

        Returns images comp_rgb, comp_rgb_fg, comp_rgb_bg [B,H,W,3], opacity [B,H,W,1],
        depth [B,H,W,1] (sum of w*t, not divided by opacity), comp_normal [B,H,W,3] (world-space
        normals weighted by w, zeros unless normals were computed); when rendering with gradients
        also the packed per-sample weights [n,1], ray_indices [n] (into B*H*W), points [n,3],
        t_mid [n], normal [n,3] and orient [n,1], plus the scalar orient_loss (sum of orient over
        rays with opacity > 0) and n_samples.
        Normals are computed when the shading mode needs them or with_normal=True.
        """
        B, H, W = len(cameras), cameras.height, cameras.width
        want_normal = needs_normal(shading) if with_normal is None else (with_normal or needs_normal(shading))
        ambient = ambient_level(self.cfg.shading) if self.training else self.cfg.shading.ambient
        rays_o, rays_d = get_rays(cameras)
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        light = cameras.light_position.to(rays_o)[:, None].expand(B, H * W, 3).reshape(-1, 3)
        R = rays_o.shape[0]
        chunk = R if torch.is_grad_enabled() else self.cfg.eval_chunk_rays
        parts = [
            self.render_rays(
                rays_o[s : s + chunk], rays_d[s : s + chunk], light[s : s + chunk], shading, want_normal, ambient
            )
            for s in range(0, R, chunk)
        ]
        image_keys = ("comp_rgb", "comp_rgb_fg", "comp_rgb_bg", "opacity", "depth", "comp_normal")
        out = {
            k: rearrange(torch.cat([p[k] for p in parts]), "(b h w) c -> b h w c", b=B, h=H, w=W) for k in image_keys
        }
        if len(parts) == 1:
            p = parts[0]
            out.update({k: v for k, v in p.items() if k not in image_keys})
            if "orient" in p:
                n_fg = (out["opacity"] > 0).sum().clamp_min(1)
                out["orient_loss"] = p["orient"].sum() / n_fg
        out["n_samples"] = sum(p["weights"].shape[0] for p in parts)
        return out

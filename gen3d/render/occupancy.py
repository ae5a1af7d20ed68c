"""Empty-space skipping: an occupancy grid over the scene box and a ray sampler that uses it.

Two backends with one interface (`update(step, density_fn)`, `sample(rays_o, rays_d, stratified)
-> RaySamples`):
- `TorchOccupancyGrid`: pure PyTorch (CPU or CUDA). Marches a fixed number of stratified samples
  per ray inside the box and drops the ones in empty cells BEFORE the field is queried.
- `NerfaccOccupancyGrid`: nerfacc's `OccGridEstimator` (CUDA kernels, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # points [N,3] -> density [N,1] or [N]


@dataclass
class RaySamples:
    """Packed samples: sample k lies on ray `ray_indices[k]` over [t_starts[k], t_ends[k]].

    Samples are sorted by ray. The torch sampler also says where each one sits in the dense
    [n_rays, n_per_ray] grid (`dense_index`), which lets compositing use plain cumsums.
    """

    ray_indices: torch.Tensor  # [n] long
    t_starts: torch.Tensor  # [n]
    t_ends: torch.Tensor  # [n]
    n_rays: int
    n_per_ray: Optional[int] = None
    dense_index: Optional[torch.Tensor] = None  # [n] long into [n_dense_rays * n_per_ray]
    n_dense_rays: Optional[int] = None  # rows of the dense layout (only rays with samples)


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float):
    """Slab test against [-radius, radius]^3.

    rays_o, rays_d [R,3] -> t_near [R] (>= 0), t_far [R], hit [R] bool.
    """
    inv = 1.0 / torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (-radius - rays_o) * inv
    t1 = (radius - rays_o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far, t_far > t_near


def stratified_t(
    t_near: torch.Tensor, t_far: torch.Tensor, n: int, stratified: bool, generator: torch.Generator | None = None
):
    """n equal intervals per ray over [t_near, t_far] ([R] each), shifted by a random fraction
    of an interval per ray when stratified. -> t_starts, t_ends [R,n]."""
    k = torch.arange(n, dtype=t_near.dtype, device=t_near.device)
    u = (
        torch.rand(t_near.shape[0], 1, generator=generator, dtype=t_near.dtype, device=t_near.device)
        if stratified
        else 0.5
    )
    step = ((t_far - t_near) / n)[:, None]
    t_starts = t_near[:, None] + (k[None] + u - 0.5) * step
    return t_starts, t_starts + step


class TorchOccupancyGrid(nn.Module):
    """Binary grid [G,G,G] over [-R,R]^3, refreshed from the field with an EMA (as nerfacc does):
    occ = max(decay * occ, density(random point in the cell) * step_size); a cell is occupied
    when occ > min(mean(occ), threshold), optionally dilated by `dilate` cells (conservative: a
    random point per cell can miss thin or barely-touched cells). All cells count as occupied
    before the first update."""

    def __init__(
        self,
        radius: float,
        resolution: int = 32,
        threshold: float = 0.01,
        ema_decay: float = 0.95,
        update_every: int = 16,
        n_samples_per_ray: int = 64,
        dilate: int = 0,
    ):
        super().__init__()
        self.dilate = int(dilate)
        self.radius, self.G = float(radius), int(resolution)
        self.threshold, self.ema_decay, self.update_every = threshold, ema_decay, update_every
        self.n_samples_per_ray = n_samples_per_ray
        self.step_size = 2.0 * math.sqrt(3.0) * radius / n_samples_per_ray  # longest chord / samples
        self.register_buffer("occs", torch.zeros(self.G**3))
        self.register_buffer("binary", torch.ones(self.G, self.G, self.G, dtype=torch.bool))

    def cell_index(self, points: torch.Tensor):
        """points [...,3] -> (flat cell index [...] long, inside-box mask [...])."""
        u = (points + self.radius) / (2.0 * self.radius) * self.G
        inside = ((u >= 0) & (u < self.G)).all(-1)
        ijk = u.long().clamp(0, self.G - 1)
        return (ijk[..., 0] * self.G + ijk[..., 1]) * self.G + ijk[..., 2], inside

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """points [...,3] -> bool [...]: inside the box and in an occupied cell."""
        flat, inside = self.cell_index(points)
        return self.binary.view(-1)[flat] & inside

    @torch.no_grad()
    def refresh(self, density_fn: DensityFn, chunk: int = 65536) -> None:
        """Evaluate the density at one random point in every cell and update the EMA."""
        G, dev = self.G, self.occs.device
        ijk = torch.stack(torch.meshgrid(*[torch.arange(G, device=dev)] * 3, indexing="ij"), -1).view(-1, 3)
        pts = ((ijk + torch.rand(ijk.shape, device=dev)) / G * 2.0 - 1.0) * self.radius
        vals = torch.cat([density_fn(pts[s : s + chunk]).reshape(-1) for s in range(0, pts.shape[0], chunk)])
        self.occs.copy_(torch.maximum(self.occs * self.ema_decay, vals.float() * self.step_size))
        thre = min(float(self.occs.mean()), self.threshold)
        binary = (self.occs > thre).view(G, G, G)
        if self.dilate > 0:
            k = 2 * self.dilate + 1
            binary = F.max_pool3d(binary[None, None].float(), k, stride=1, padding=self.dilate)[0, 0] > 0
        self.binary.copy_(binary)

    def update(self, step: int, density_fn: DensityFn) -> None:
        if step % self.update_every == 0:
            self.refresh(density_fn)

    def sample(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        stratified: bool = True,
        generator: torch.Generator | None = None,
    ) -> RaySamples:
        """rays_o, rays_d [R,3] -> RaySamples of the samples that fall in occupied cells.

        Only rays crossing the box are marched; the dense layout keeps only rays with samples.
        """
        R, S, G = rays_o.shape[0], self.n_samples_per_ray, self.G
        t_near, t_far, hit = ray_aabb(rays_o, rays_d, self.radius)
        rows = hit.nonzero().squeeze(1)
        o, d, t_far = rays_o[rows], rays_d[rows], t_far[rows]
        t0, t1 = stratified_t(t_near[rows], t_far, S, stratified, generator)
        mid = 0.5 * (t0 + t1)
        scale = G / (2.0 * self.radius)
        u = torch.addcmul((o * scale + 0.5 * G)[:, None, :], (d * scale)[:, None, :], mid[..., None])  # grid coords
        cell = u.floor_().clamp_(0, G - 1).view(-1, 3)
        flat = torch.mv(cell, torch.tensor([G * G, G, 1.0], dtype=cell.dtype, device=cell.device)).long()
        keep = self.binary.view(-1)[flat].view(-1, S) & (mid < t_far[:, None])  # [Rh,S]
        used = keep.any(1).nonzero().squeeze(1)
        keep, t0, t1 = keep[used], t0[used], t1[used]
        dense_index = keep.view(-1).nonzero().squeeze(1)
        return RaySamples(
            ray_indices=rows[used][torch.div(dense_index, S, rounding_mode="floor")],
            t_starts=t0.view(-1)[dense_index],
            t_ends=t1.view(-1)[dense_index],
            n_rays=R,
            n_per_ray=S,
            dense_index=dense_index,
            n_dense_rays=used.shape[0],
        )


class NerfaccOccupancyGrid(nn.Module):
    """nerfacc's OccGridEstimator behind the same interface (CUDA; nerfacc imported lazily)."""

    def __init__(
        self,
        radius: float,
        resolution: int = 32,
        threshold: float = 0.01,
        ema_decay: float = 0.95,
        update_every: int = 16,
        n_samples_per_ray: int = 64,
        dilate: int = 0,
    ):
        super().__init__()  # (nerfacc's grid has no dilation; `dilate` is ignored)
        import nerfacc  # lazy: its sampling kernels need CUDA

        self.radius, self.threshold, self.ema_decay, self.update_every = (
            float(radius),
            threshold,
            ema_decay,
            update_every,
        )
        self.step_size = 2.0 * math.sqrt(3.0) * radius / n_samples_per_ray
        aabb = torch.tensor([-radius] * 3 + [radius] * 3, dtype=torch.float32)
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=1)

    def update(self, step: int, density_fn: DensityFn) -> None:
        self.estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=lambda x: density_fn(x).reshape(-1) * self.step_size,
            occ_thre=self.threshold,
            ema_decay=self.ema_decay,
            n=self.update_every,
        )

    def sample(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        stratified: bool = True,
        generator: torch.Generator | None = None,
    ) -> RaySamples:
        ray_indices, t_starts, t_ends = self.estimator.sampling(
            rays_o,
            rays_d,
            render_step_size=self.step_size,
            stratified=stratified,
        )
        return RaySamples(ray_indices=ray_indices.long(), t_starts=t_starts, t_ends=t_ends, n_rays=rays_o.shape[0])


def make_occupancy_grid(backend: str, device, **kwargs) -> nn.Module:
    """backend "auto" | "torch" | "nerfacc"; auto picks nerfacc on CUDA when it imports."""
    if backend not in ("auto", "torch", "nerfacc"):
        raise ValueError(f"unknown occupancy backend {backend!r} (use auto, torch or nerfacc)")
    on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    if backend == "nerfacc" or (backend == "auto" and on_cuda):
        try:
            return NerfaccOccupancyGrid(**kwargs)
        except (ImportError, RuntimeError):
            if backend == "nerfacc":
                raise
    return TorchOccupancyGrid(**kwargs)

"""Signed-distance field with a VolSDF density: the NeRF's hash grid + MLP, read as a surface.

`SDFField` is an `ImplicitVolume` (same encoding, MLP and albedo head, hence the same state dict, so
a mesh stage's texture field can copy it) whose first output channel is minus a signed distance:
``-sdf(x) = (r0 - |x|) + mlp(x)[0]`` (geometric initialisation: the density row of the last layer
starts at zero, so an untrained field is exactly the sphere of radius ``r0``, |grad sdf| = 1).

Density (VolSDF, Yariv et al. 2021): ``sigma(x) = Psi_beta(-sdf(x)) / beta``, Psi_beta the CDF of a
Laplace distribution of scale beta: half the maximum density on the zero level set, rising to
``1 / beta`` inside and falling off as ``exp(-d / beta)`` outside. beta follows a schedule
(`SDFSettings.beta`): a soft surface early, when the shape still moves, a sharp one later.
Normals (the renderer's, via ``-grad raw``) are ``grad sdf``, outward.

Coarse to fine (`SDFSettings.levels`): the hash grid's finer levels are masked to zero until the
schedule unmasks them (threestudio's / Neuralangelo's progressive levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gen3d.config import ranged
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.utils.schedule import schedule_value


@dataclass
class SDFSettings:
    """`parts.sdf` settings of the `sdf` representation."""

    sphere_radius: float = ranged(0.5, gt=0)  # geometric initialisation: the zero level set starts as this sphere
    beta: Any = ranged(factory=lambda: [0, 0.1, 0.02, 400], gt=0)  # schedule of the Laplace scale
    # number of active hash-grid levels, a schedule (None: all levels from the start)
    levels: Any = ranged(None, ge=1)
    eikonal_points: int = ranged(2048, ge=0)  # points per step for the eikonal term (rendered samples + uniform)
    # points per step for the normal-smoothness term (weight `loss.other.normal_smooth`; 0: not computed)
    normal_smooth_points: int = ranged(0, ge=0)
    normal_smooth_jitter: float = ranged(0.01, gt=0)  # the jitter (world units, Gaussian std) between the pairs
    SCHEDULES = ("beta", "levels")  # checked, with the ranges, by gen3d.config when `parts.sdf` is built


def laplace_density(neg_sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """VolSDF density Psi_beta(-sdf) / beta, computed without overflow on either side."""
    half_tail = 0.5 * torch.exp(-neg_sdf.abs() / beta)
    return torch.where(neg_sdf > 0, 1.0 - half_tail, half_tail) / beta


class SDFField(ImplicitVolume):
    """forward(points, with_normal) -> density [N,1] (VolSDF), albedo, normal; sdf(points) -> [N,1]."""

    def __init__(
        self,
        cfg: ImplicitVolumeConfig = ImplicitVolumeConfig(),
        settings: SDFSettings = SDFSettings(),
        latent_channels: int | None = None,
    ):
        super().__init__(cfg, latent_channels)
        self.settings = settings
        last = self.mlp[-1]
        with torch.no_grad():  # an exact sphere at step 0
            last.weight[0].zero_()
            last.bias[0].zero_()
        self.beta = 0.1
        self.active_levels = cfg.hash_grid.n_levels
        self.set_step(0)

    def set_step(self, step: int) -> None:
        """beta and the active hash-grid levels at a training step (plain attributes: no state)."""
        self.beta = float(schedule_value(self.settings.beta, step))
        n = self.cfg.hash_grid.n_levels
        levels = schedule_value(self.settings.levels, step)
        self.active_levels = n if levels is None else max(1, min(n, int(round(levels))))

    # -- the ImplicitVolume hooks ------------------------------------------------------------
    def density_bias(self, points: torch.Tensor) -> torch.Tensor:
        """Minus the SDF of the initial sphere [N,1]."""
        r = points.square().sum(-1, keepdim=True).add(1e-12).sqrt()
        return self.settings.sphere_radius - r

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return laplace_density(raw, self.beta)

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        features = self.encoding(self.normalize(points)).float()
        n_active = self.active_levels * self.cfg.hash_grid.n_features_per_level
        if n_active < features.shape[1]:  # coarse to fine: finer levels masked (level-major layout)
            mask = torch.zeros_like(features[:1])
            mask[:, :n_active] = 1.0
            features = features * mask
        out = self.mlp(features)
        return torch.cat([out[:, :1] + self.density_bias(points), out[:, 1:]], dim=-1)

    # -- the surface -------------------------------------------------------------------------
    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance [N,1] (negative inside)."""
        return -self._raw(points)[:, :1]

    def surface_density(self) -> float:
        """The density on the zero level set (Psi = 1/2): a density isosurface at this level is the surface."""
        return 0.5 / self.beta

    def sdf_grad(self, points: torch.Tensor) -> torch.Tensor:
        """grad sdf [N,3] at points (differentiable w.r.t. the field)."""
        with torch.enable_grad():
            pts = points.detach().requires_grad_(True)
            return torch.autograd.grad(self.sdf(pts).sum(), pts, create_graph=True)[0]

    def eikonal(self, points: torch.Tensor) -> torch.Tensor:
        """Mean (|grad sdf| - 1)^2 over points [N,3] (differentiable w.r.t. the field)."""
        return (self.sdf_grad(points).norm(dim=-1) - 1.0).square().mean()

    def normal_smoothness(self, points: torch.Tensor, jitter: float) -> torch.Tensor:
        """Mean |n(x) - n(x + e)|^2 over points [N,3], n the unit grad sdf, e Gaussian of std `jitter`:
        near zero on a smooth surface (on a sphere of radius r about 2 (jitter / r)^2), large on a bumpy one."""
        pts = points.detach()
        pair = torch.cat([pts, pts + torch.randn_like(pts) * jitter])
        n = torch.nn.functional.normalize(self.sdf_grad(pair), dim=-1, eps=1e-6)
        return (n[: len(pts)] - n[len(pts) :]).square().sum(-1).mean()


def eikonal_points(field: SDFField, samples: torch.Tensor | None, n: int) -> torch.Tensor:
    """n points for the eikonal term: half from the renderer's samples (where the surface is seen),
    the rest (all when there are none) uniform in the field's box."""
    radius = field.cfg.radius
    device = next(field.parameters()).device
    picked = []
    if samples is not None and samples.shape[0] > 0:
        idx = torch.randint(0, samples.shape[0], (n // 2,), device=samples.device)
        picked.append(samples.detach()[idx])
    n_uniform = n - sum(p.shape[0] for p in picked)
    picked.append((torch.rand(n_uniform, 3, device=device) * 2.0 - 1.0) * radius)
    return torch.cat(picked)

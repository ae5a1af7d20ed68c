"""Density + albedo field (DreamFusion's NeRF): hash grid -> small MLP, with a density blob.

Points live in the world box [-R, R]^3 (R = `radius`); they are mapped to [0,1]^3 for the hash
grid. The raw density gets a radial bias (the "blob") so an untrained field is a soft ball.
With `latent_channels=C` (rgb_as_latents) the albedo head outputs C unbounded channels of the
prior's latent space instead of RGB in [0,1] (Latent-NeRF).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from gen3d.config import ranged
from gen3d.geometry.hashgrid import HashGridConfig, make_hash_encoding

DENSITY_BIASES = ("blob_magic3d", "blob_dreamfusion", "none")
NORMAL_TYPES = ("finite_difference", "finite_difference_forward", "analytic")


@dataclass
class ImplicitVolumeConfig:
    radius: float = ranged(1.0, gt=0)
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    encoding_backend: str = ranged("auto", choices=("auto", "torch", "tcnn"))
    mlp_hidden: int = ranged(64, ge=1, le=4096)
    n_hidden_layers: int = ranged(1, ge=0, le=64)
    density_activation: str = ranged("softplus", choices=("softplus", "exp"))
    # blob_magic3d: scale * (1 - |x| / std); blob_dreamfusion: scale * exp(-|x|^2 / (2 std^2)); none
    density_bias: str = ranged("blob_magic3d", choices=DENSITY_BIASES)
    density_blob_scale: float = 10.0
    density_blob_std: float = ranged(0.5, gt=0)
    # finite_difference: central (6 extra density evaluations per point);
    # finite_difference_forward: 3 extra; analytic: autograd of the density (double backward)
    normal_type: str = ranged("finite_difference", choices=NORMAL_TYPES)
    finite_difference_eps: float = ranged(0.01, gt=0)


class ImplicitVolume(nn.Module):
    """forward(points [N,3], with_normal) -> dict(density [N,1], albedo [N,A], normal [N,3]?), with
    A = 3 (RGB in [0,1], sigmoid) or A = latent_channels (latents, no activation)."""

    def __init__(self, cfg: ImplicitVolumeConfig = ImplicitVolumeConfig(), latent_channels: int | None = None):
        super().__init__()
        if cfg.density_bias not in DENSITY_BIASES:
            raise ValueError(f"density_bias must be one of {DENSITY_BIASES}, got {cfg.density_bias!r}")
        if cfg.normal_type not in NORMAL_TYPES:
            raise ValueError(f"normal_type must be one of {NORMAL_TYPES}, got {cfg.normal_type!r}")
        if cfg.density_activation not in ("softplus", "exp"):
            raise ValueError(f"density_activation must be softplus or exp, got {cfg.density_activation!r}")
        self.cfg = cfg
        self.latent_channels = latent_channels
        self.encoding = make_hash_encoding(cfg.hash_grid, cfg.encoding_backend)
        layers, width = [], self.encoding.n_output_dims
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(width, cfg.mlp_hidden), nn.ReLU(inplace=True)]
            width = cfg.mlp_hidden
        layers.append(nn.Linear(width, 1 + (latent_channels or 3)))  # raw density, albedo logits (or latents)
        self.mlp = nn.Sequential(*layers)

    # -- building blocks ------------------------------------------------------------------
    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """World [N,3] in [-R,R] -> [0,1] (clamped)."""
        return ((points + self.cfg.radius) / (2.0 * self.cfg.radius)).clamp(0.0, 1.0)

    def density_bias(self, points: torch.Tensor) -> torch.Tensor:
        """Radial bias [N,1] added to the raw density."""
        c = self.cfg
        if c.density_bias == "blob_magic3d":
            r = points.square().sum(-1, keepdim=True).add(1e-12).sqrt()
            return c.density_blob_scale * (1.0 - r / c.density_blob_std)
        if c.density_bias == "blob_dreamfusion":
            r2 = points.square().sum(-1, keepdim=True)
            return c.density_blob_scale * torch.exp(-0.5 * r2 / c.density_blob_std**2)
        return points.new_zeros(points.shape[0], 1)

    def activate_albedo(self, raw_albedo: torch.Tensor) -> torch.Tensor:
        """RGB: sigmoid; latents: unchanged."""
        return raw_albedo if self.latent_channels else torch.sigmoid(raw_albedo)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        if self.cfg.density_activation == "exp":
            return torch.exp(raw.clamp(max=15.0))
        return F.softplus(raw)

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        """points [N,3] -> MLP output [N,1+A] with the blob already added to channel 0."""
        out = self.mlp(self.encoding(self.normalize(points)).float())
        return torch.cat([out[:, :1] + self.density_bias(points), out[:, 1:]], dim=-1)

    # -- public API ----------------------------------------------------------------------
    def forward(self, points: torch.Tensor, with_normal: bool = False) -> dict[str, torch.Tensor]:
        if not with_normal:
            raw = self._raw(points)
            return {"density": self.activate(raw[:, :1]), "albedo": self.activate_albedo(raw[:, 1:])}
        raw, normal = self._raw_and_normal(points)
        return {"density": self.activate(raw[:, :1]), "albedo": self.activate_albedo(raw[:, 1:]), "normal": normal}

    def _raw_and_normal(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> raw MLP output [N,1+A] and normal = -grad(raw density), normalised [N,3] (differentiable)."""
        c = self.cfg
        n = points.shape[0]
        if c.normal_type == "analytic":
            with torch.enable_grad():
                pts = points if points.requires_grad else points.detach().requires_grad_(True)
                raw = self._raw(pts)
                grad = torch.autograd.grad(raw[:, 0].sum(), pts, create_graph=True)[0]
            return raw, F.normalize(-grad, dim=-1, eps=1e-6)
        # evaluate the points and their offsets in ONE pass through encoding + MLP
        central = c.normal_type == "finite_difference"
        raw_all = self._raw(torch.cat([points, self._shifted(points, central)]))
        return raw_all[:n], self._fd_normal(raw_all[n:, 0], raw_all[:n, 0], central)

    def _shifted(self, points: torch.Tensor, central: bool) -> torch.Tensor:
        """points [N,3] -> [N*K,3] shifted by +eps (and -eps if central) along x, y, z (K = 6 or 3)."""
        eye = torch.eye(3, dtype=points.dtype, device=points.device) * self.cfg.finite_difference_eps
        offsets = torch.cat([eye, -eye]) if central else eye
        shifted = (points[:, None, :] + offsets[None]).clamp(-self.cfg.radius, self.cfg.radius)
        return rearrange(shifted, "n k d -> (n k) d")

    def _fd_normal(self, d_shifted: torch.Tensor, d_centre: torch.Tensor | None, central: bool) -> torch.Tensor:
        """Raw densities at the shifted points [N*K] (and centres [N]) -> unit normals [N,3]."""
        d = rearrange(d_shifted, "(n k) -> n k", k=6 if central else 3)
        grad = d[:, :3] - d[:, 3:] if central else d - d_centre[:, None]  # direction only: scale dropped
        return F.normalize(-grad, dim=-1, eps=1e-9)

    def normal(self, points: torch.Tensor) -> torch.Tensor:
        """Unit normals [N,3] = -grad density (finite differences or analytic, per the config)."""
        if self.cfg.normal_type == "finite_difference":  # central differences need no centre value
            return self._fd_normal(self._raw(self._shifted(points, True))[:, 0], None, True)
        return self._raw_and_normal(points)[1]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Activated density [N,1]."""
        return self.activate(self._raw(points)[:, :1])

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """Albedo [N,3] in [0,1] (rgb_as_latents: latents [N,C])."""
        return self.activate_albedo(self._raw(points)[:, 1:])

"""Backgrounds: colour as a function of the view direction, composited behind the object
(or, with rgb_as_latents, the prior's latent channels: MLP background only)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from gen3d.config import ranged


@dataclass
class BackgroundConfig:
    type: str = ranged("mlp", choices=("mlp", "solid"))
    color: tuple[float, float, float] = ranged((1.0, 1.0, 1.0), ge=0, le=1)  # solid colour
    n_frequencies: int = ranged(2, ge=0, le=32)  # sin/cos frequencies of the direction encoding (mlp)
    hidden: int = ranged(16, ge=1)
    n_hidden_layers: int = ranged(1, ge=0)
    # while training, with this probability the whole batch gets a random solid colour instead
    # (discourages the field from painting the object into the background)
    random_aug_prob: float = ranged(0.0, ge=0, le=1)


def encode_direction(dirs: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """Unit dirs [...,3] -> [..., 3 + 6 * n_frequencies] (identity + sin/cos(2^k pi d))."""
    feats = [dirs]
    for k in range(n_frequencies):
        a = (2.0**k * math.pi) * dirs
        feats += [torch.sin(a), torch.cos(a)]
    return torch.cat(feats, dim=-1)


class _RandomAug(nn.Module):
    def __init__(self, prob: float):
        super().__init__()
        self.random_aug_prob = prob

    def maybe_random(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.training and self.random_aug_prob > 0 and torch.rand(()) < self.random_aug_prob:
            return torch.rand(rgb.shape[-1], dtype=rgb.dtype, device=rgb.device).expand_as(rgb)
        return rgb


class SolidBackground(_RandomAug):
    """forward(dirs [...,3]) -> the constant colour [...,3]."""

    def __init__(self, cfg: BackgroundConfig):
        super().__init__(cfg.random_aug_prob)
        self.register_buffer("color", torch.tensor(cfg.color, dtype=torch.float32), persistent=False)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        return self.maybe_random(self.color.to(dirs.dtype).expand(*dirs.shape[:-1], 3))


class MLPBackground(_RandomAug):
    """forward(dirs [...,3]) -> sigmoid(MLP(encode(dirs))) [...,3]; latent_channels=C: MLP(encode(dirs))
    [...,C] without activation (latents)."""

    def __init__(self, cfg: BackgroundConfig, latent_channels: int | None = None):
        super().__init__(cfg.random_aug_prob)
        self.cfg, self.latent_channels = cfg, latent_channels
        layers, width = [], 3 + 6 * cfg.n_frequencies
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU(inplace=True)]
            width = cfg.hidden
        layers.append(nn.Linear(width, latent_channels or 3))
        self.mlp = nn.Sequential(*layers)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        out = self.mlp(encode_direction(dirs, self.cfg.n_frequencies))
        return self.maybe_random(out if self.latent_channels else torch.sigmoid(out))


def make_background(cfg: BackgroundConfig = BackgroundConfig(), latent_channels: int | None = None) -> nn.Module:
    """RGB background, or one of latent_channels channels (rgb_as_latents; mlp only)."""
    if cfg.type == "mlp":
        return MLPBackground(cfg, latent_channels)
    if latent_channels:
        raise ValueError(f"background type {cfg.type!r} is an RGB colour; latents need the mlp background")
    if cfg.type == "solid":
        return SolidBackground(cfg)
    raise ValueError(f"unknown background type {cfg.type!r} (use mlp or solid)")

"""Per-sample shading: albedo, lambertian (point light), textureless (white lambertian)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gen3d.config import ranged

SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass
class ShadingConfig:
    ambient: float = ranged(0.1, ge=0, le=1)  # ambient light; diffuse light = 1 - ambient
    # soft shading (Magic3D/threestudio): draw ambient uniformly from ambient_range each call
    soft_shading: bool = False
    ambient_range: tuple[float, float] = ranged((0.1, 0.9), ge=0, le=1)
    # training-time choice of mode: albedo only for the first `albedo_only_steps` steps, then
    # random with these probabilities for (albedo, lambertian, textureless)
    albedo_only_steps: int = ranged(0, ge=0)
    mode_probs: tuple[float, float, float] = ranged((1.0, 0.0, 0.0), ge=0)
    # read per render / per step: each may be a step schedule (gen3d.config)
    STEPPED = ("ambient", "soft_shading", "ambient_range", "albedo_only_steps", "mode_probs")


def needs_normal(mode: str) -> bool:
    if mode not in SHADING_MODES:
        raise ValueError(f"unknown shading mode {mode!r} (use one of {SHADING_MODES})")
    return mode != "albedo"


def ambient_level(cfg: ShadingConfig) -> float:
    """The ambient light for this render (random under soft shading)."""
    if cfg.soft_shading:
        lo, hi = cfg.ambient_range
        return lo + (hi - lo) * random.random()
    return cfg.ambient


def shade(
    mode: str,
    albedo: torch.Tensor,
    normal: torch.Tensor | None,
    points: torch.Tensor,
    light_position: torch.Tensor,
    ambient: float = 0.1,
) -> torch.Tensor:
    """Colour [N,3] of N samples.

    albedo [N,3] in [0,1]; normal [N,3] unit (needed unless mode == "albedo"); points [N,3]
    world; light_position [N,3] (the camera's point light, one row per sample).
    rgb = albedo * (ambient + (1 - ambient) * max(0, n . l)); textureless uses albedo = 1.
    """
    if not needs_normal(mode):
        return albedo
    light_dir = F.normalize(light_position - points, dim=-1)
    diffuse = (normal * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    lit = ambient + (1.0 - ambient) * diffuse
    if mode == "textureless":
        return lit.expand(-1, 3)
    return albedo * lit


def pick_shading(step: int, cfg: ShadingConfig, generator: random.Random | None = None) -> str:
    """Shading mode for a training step (DreamFusion: albedo early, then a random mix)."""
    if step < cfg.albedo_only_steps:
        return "albedo"
    rng = generator or random
    return rng.choices(SHADING_MODES, weights=cfg.mode_probs, k=1)[0]

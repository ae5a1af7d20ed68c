"""Pieces shared by SDS and VSD: timestep sampling, the weighting table, gradient clipping,
the NaN guard, and the reparameterised loss whose gradient is a given tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gen3d.errors import UserError

WEIGHTINGS = ("sds", "uniform", "fantasia")


def timestep_range(min_percent: float, max_percent: float, num_train_timesteps: int) -> tuple[int, int]:
    """Integer [min_step, max_step] from fractions of the training schedule."""
    lo = int(round(min_percent * num_train_timesteps))
    hi = int(round(max_percent * num_train_timesteps))
    lo, hi = max(0, min(lo, num_train_timesteps - 1)), max(0, min(hi, num_train_timesteps - 1))
    return min(lo, hi), max(lo, hi)


def sample_timesteps(batch: int, min_step: int, max_step: int, device, generator=None) -> torch.Tensor:
    """t ~ U{min_step..max_step}, [B] long."""
    return torch.randint(min_step, max_step + 1, (batch,), device=device, generator=generator)


def weighting(alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """w(t) as [B,1,1,1]: 'sds' = 1 - a_t (DreamFusion), 'uniform' = 1, 'fantasia' = sqrt(a_t)(1 - a_t)."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    if kind == "sds":
        return 1.0 - a
    if kind == "uniform":
        return torch.ones_like(a)
    if kind == "fantasia":
        return a.sqrt() * (1.0 - a)
    raise UserError(f"unknown guidance weighting '{kind}' (choose from {', '.join(WEIGHTINGS)})")


def clip_gradient(grad: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Element-wise clamp to [-clip, clip] (None or <= 0: unchanged)."""
    if clip is None or clip <= 0:
        return grad
    return grad.clamp(-clip, clip)


def nan_guard(grad: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Replace non-finite entries by 0; also return the share of entries replaced (0.0: none)."""
    share = float((~torch.isfinite(grad)).float().mean()) if grad.numel() else 0.0
    return (torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0) if share else grad), share


def loss_with_gradient(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Scalar whose gradient w.r.t. latents equals grad / B (B = batch size).

    0.5 * ||latents - (latents - grad)||^2 / B, with the target detached.
    """
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents.float(), target.float(), reduction="sum") / latents.shape[0]

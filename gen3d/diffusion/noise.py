"""The forward-diffusion maths, in one place: noising, training targets and conversion to epsilon.

Every formula reads the schedule's cumulative alphas a_t (`alphas_cumprod` [T], float32) and works
on batches [B,C,h,w] with one timestep per sample (t [B] long). They are the same formulas as
diffusers' `DDPMScheduler.add_noise` / `get_velocity` (tests/test_noise.py checks that):

    x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps                      (add_noise)
    v   = sqrt(a_t) eps - sqrt(1 - a_t) x_0                      (velocity)
    eps = sqrt(a_t) v + sqrt(1 - a_t) x_t   (v-prediction)       (to_epsilon)
    eps = (x_t - sqrt(a_t) x_0) / sqrt(1 - a_t)   (sample prediction)

Used by the guidances (SDS, VSD), the VSD LoRA's loss, the builtin prior's and ControlNet's
training, and the video fine-tuning.
"""

from __future__ import annotations

import torch

from gen3d.errors import UserError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def alpha_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a_t as [B,1,1,1] on t's device."""
    return alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)


def add_noise(
    alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(a_t) x + sqrt(1 - a_t) eps (forward diffusion), in float32."""
    a = alpha_at(alphas_cumprod, t)
    return a.sqrt() * latents.float() + (1 - a).sqrt() * noise.float()


def velocity(alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a_t) eps - sqrt(1 - a_t) x (the v-prediction target)."""
    a = alpha_at(alphas_cumprod, t)
    return a.sqrt() * noise - (1 - a).sqrt() * latents


def training_target(
    prediction_type: str, alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What a UNet of this prediction type is trained to output for x_t = add_noise(latents, noise, t).

    latents (x0) / noise [B,C,h,w], t [B] -> [B,C,h,w]: eps, v, or x0.
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(alphas_cumprod, latents, noise, t)
    if prediction_type == "sample":
        return latents
    raise UserError(f"unsupported prediction_type '{prediction_type}' (known: {', '.join(PREDICTION_TYPES)})")


def to_epsilon(
    prediction_type: str,
    alphas_cumprod: torch.Tensor,
    model_out: torch.Tensor,
    latents_noisy: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """A UNet output of this prediction type -> the epsilon prediction at x_t."""
    if prediction_type == "epsilon":
        return model_out
    a = alpha_at(alphas_cumprod, t)
    if prediction_type == "v_prediction":
        return a.sqrt() * model_out + (1 - a).sqrt() * latents_noisy
    if prediction_type == "sample":
        return (latents_noisy - a.sqrt() * model_out) / (1 - a).sqrt()
    raise UserError(f"unsupported prediction_type '{prediction_type}' (known: {', '.join(PREDICTION_TYPES)})")

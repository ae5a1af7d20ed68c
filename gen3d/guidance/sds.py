"""Score distillation sampling (DreamFusion).

grad = w(t) * (eps_hat(x_t; y, t) - eps),  x_t = sqrt(a_t) x + sqrt(1 - a_t) eps,
with eps_hat the classifier-free guided prediction of the frozen prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from gen3d.config import ranged
from gen3d.diffusion.noise import add_noise
from gen3d.diffusion.prior import Prior
from gen3d.errors import UserError
from gen3d.guidance import GUIDANCES, GuidanceType, common
from gen3d.utils.schedule import schedule_max, schedule_value


@dataclass
class GuidanceConfig:
    """SDS's config; other guidance types extend it (VSDConfig). `type` names the registered type."""

    type: str = "sds"  # a registered guidance type (gen3d.guidance.GUIDANCES): sds | vsd | ...
    guidance_scale: float = ranged(100.0, ge=0)
    min_step_percent: Any = ranged(0.02, ge=0, le=1)  # schedule
    max_step_percent: Any = ranged(0.98, ge=0, le=1)  # schedule
    weighting: str = ranged("sds", choices=common.WEIGHTINGS)  # sds | uniform | fantasia
    grad_clip: Any = ranged(None, gt=0)  # schedule; element-wise clamp of the gradient (None: off)
    # diffusers' guidance_rescale: the guided eps brought towards the conditional eps' std (0: off)
    guidance_rescale: float = ranged(0.0, ge=0, le=1)
    # HiFA's image-space term (SDS on RGB renders): the weight of mean |render - D(x0_hat)|^2, D the VAE decoder
    # and x0_hat the clean latents the guided prediction implies; 0: off (docs/methods.md, "Texture")
    image_weight: Any = ranged(0.0, ge=0)  # schedule
    # renders are resized to this many pixels before the VAE encoder (None: the prior's native size, e.g.
    # 768 for SD 2.1); 512 or 256 cut the encoder's activation memory, at the cost of detail (docs/methods.md)
    resolution: Optional[int] = None
    SCHEDULES = ("min_step_percent", "max_step_percent", "grad_clip", "image_weight")
    STEPPED = ("guidance_scale", "weighting")  # read at every step: may be step schedules (gen3d.config)


def sds_gradient(
    prior: Prior,
    latents: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    weighting: str = "sds",
    guided_eps: Callable | None = None,
) -> torch.Tensor:
    """SDS gradient w.r.t. latents [B,C,h,w] for timesteps t [B] and noise [B,C,h,w]. No autograd.
    guided_eps(x_t, t) -> the guided epsilon; None: classifier-free guidance of cond over uncond."""
    residual = sds_residual(prior, latents, t, noise, cond, uncond, guidance_scale, guided_eps)
    return common.weighting(prior.alphas_cumprod, t, weighting) * residual


def sds_residual(prior, latents, t, noise, cond, uncond, guidance_scale, guided_eps=None) -> torch.Tensor:
    """eps_hat(x_t) - eps [B,C,h,w] (no autograd): SDS's gradient before the weighting w(t)."""
    with torch.no_grad():
        noisy = add_noise(prior.alphas_cumprod, latents.detach(), noise, t)
        eps_hat = (guided_eps or cfg_eps(prior, cond, uncond, guidance_scale))(noisy, t)
        return eps_hat - noise.float()


def predicted_clean(prior: Prior, latents: torch.Tensor, t: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t) = x - sqrt((1 - a_t) / a_t) (eps_hat - eps)."""
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1).float()
    return latents.detach().float() - ((1.0 - a) / a).sqrt() * residual


def image_term(prior: Prior, images: torch.Tensor, clean_latents: torch.Tensor) -> torch.Tensor:
    """HiFA's image-space loss: mean |images - D(x0_hat)|^2, the decoded target at the renders' size
    (gradient to the renders only)."""
    with torch.no_grad():
        target = prior.decode_latents(clean_latents)
        if target.shape[-2:] != images.shape[-2:]:
            target = F.interpolate(target, images.shape[-2:], mode="bilinear", align_corners=False)
    return (images.float() - target).square().mean()


def cfg_eps(
    prior: Prior, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> Callable:
    """(x_t, t) -> the classifier-free guided epsilon of the frozen prior (the default pretrained score)."""
    return lambda noisy, t: prior.predict_noise(
        noisy, t, cond, uncond, guidance_scale, guidance_rescale=guidance_rescale
    )


class SDSGuidance:
    """Turns rendered images into a loss whose gradient is the SDS gradient (not an nn.Module)."""

    def __init__(self, prior: Prior, cfg: GuidanceConfig, latents: bool = False):
        """latents: `guide` gets the prior's latents (rgb_as_latents), not images for the VAE encoder."""
        self.prior, self.cfg = prior, cfg
        self._guide = self.loss_from_latents if latents else self

    def timesteps(self, batch: int, step: int, generator=None) -> torch.Tensor:
        lo, hi = common.timestep_range(
            schedule_value(self.cfg.min_step_percent, step),
            schedule_value(self.cfg.max_step_percent, step),
            self.prior.num_train_timesteps,
        )
        return common.sample_timesteps(batch, lo, hi, self.prior.device, generator)

    def finish(self, latents: torch.Tensor, grad: torch.Tensor, step: int) -> dict:
        """NaN guard, clipping and the reparameterised loss, shared by SDS and VSD."""
        grad, nan_share = common.nan_guard(grad)
        grad = common.clip_gradient(grad, schedule_value(self.cfg.grad_clip, step))
        loss = common.loss_with_gradient(latents, grad)
        return {"loss": loss, "grad_norm": grad.norm().detach(), "nan": nan_share > 0, "nan_share": nan_share}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the guidance itself trains (none for SDS; VSD's LoRA)."""
        return []

    def pretrained_eps(self, cond: torch.Tensor, uncond: torch.Tensor, cameras) -> Callable:
        """(x_t, t) -> the pretrained branch's guided epsilon: CFG here; Perp-Neg types override it
        (gen3d.guidance.perpneg)."""
        return cfg_eps(self.prior, cond, uncond, self.cfg.guidance_scale, self.cfg.guidance_rescale)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] -> latents, at `resolution` when set (else the prior's native size)."""
        size = self.cfg.resolution
        if size and images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.prior.encode_images(images, resize=not size)

    # ----- the Guidance interface (gen3d.guidance) ------------------------------------------------
    def guide(self, renders: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, cameras, step: int) -> dict:
        """renders (images, or latents when built with latents=True), cameras: gen3d.render.cameras.Cameras."""
        return self._guide(renders, cond, uncond, step, c2w=cameras.c2w, cameras=cameras)

    def parameter_groups(self) -> list[dict]:
        return []

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    def __call__(
        self,
        images: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        step: int,
        generator=None,
        c2w: torch.Tensor | None = None,
        cameras=None,
    ) -> dict:
        """images [B,3,H,W] in [0,1] -> the prior's VAE encoder (`encode`) -> `loss_from_latents`, plus the
        image-space term when `image_weight` is on."""
        out = self.loss_from_latents(
            self.encode(images), cond, uncond, step, generator=generator, c2w=c2w, cameras=cameras
        )
        weight = schedule_value(self.cfg.image_weight, step)
        if weight:
            out["loss"] = out["loss"] + weight * image_term(self.prior, images, out["clean_latents"])
        return out

    def loss_from_latents(
        self,
        latents: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        step: int,
        generator=None,
        c2w: torch.Tensor | None = None,
        cameras=None,
    ) -> dict:
        """latents [B,C,h,w] (encoded images, or a field that renders latents: rgb_as_latents; resized
        to the UNet's size) -> dict(loss, grad_norm, t, nan). c2w is accepted (and unused) so systems
        can call SDS and VSD alike with keywords; cameras: for guidances that need the views (Perp-Neg)."""
        latents = self.prior.resize_latents(latents)
        t = self.timesteps(latents.shape[0], step, generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator)
        guided = self.pretrained_eps(cond, uncond, cameras)
        residual = sds_residual(self.prior, latents, t, noise, cond, uncond, self.cfg.guidance_scale, guided)
        grad = common.weighting(self.prior.alphas_cumprod, t, self.cfg.weighting) * residual
        out = {**self.finish(latents, grad, step), "t": t}
        if schedule_value(self.cfg.image_weight, step):
            out["clean_latents"] = predicted_clean(self.prior, latents, t, residual)
        return out


def check_image_term(cfg: Any, available: bool = True) -> None:
    """guidance.image_weight compares RGB renders with the decoded prediction: SDS types on RGB renders only
    (available=False: the type has no image term, e.g. VSD)."""
    if not schedule_max(cfg.guidance.image_weight):
        return
    if not available:
        raise UserError(
            f"guidance.image_weight is not available with guidance type '{cfg.guidance.type}' (use an SDS type)"
        )
    if cfg.rgb_as_latents:
        raise UserError("guidance.image_weight needs RGB renders: it is not available with rgb_as_latents=true")


def check_sds(cfg: Any) -> None:
    """Before anything is written: the resolution and the image term."""
    check_resolution(cfg)
    check_image_term(cfg)


def check_resolution(cfg: Any) -> None:
    """guidance.resolution: None or a positive multiple of 8 (the VAE's downsampling)."""
    size = cfg.guidance.resolution
    if size is not None and (size < 8 or size % 8):
        raise UserError(f"guidance.resolution must be a multiple of 8 (e.g. 512 or 256), got {size}")


GUIDANCES.register(
    "sds",
    GuidanceType(GuidanceConfig, lambda prior, cfg, ctx: SDSGuidance(prior, cfg, latents=ctx.latents), check=check_sds),
)

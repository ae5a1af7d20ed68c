"""Variational score distillation (ProlificDreamer).

grad = w(t) * (eps_pretrained_CFG(x_t; y, t) - eps_phi(x_t; y, t, c)),  x_t = sqrt(a_t) x + sqrt(1 - a_t) eps,
with eps_phi the prior's UNet + a camera-conditioned LoRA (`gen3d.diffusion.lora.VSDLoRA`), trained
every step with the diffusion loss on the detached rendered latents. Timesteps, CFG, weighting,
NaN guard, clipping and the reparameterised loss are SDS's (`SDSGuidance`, `gen3d.guidance.common`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gen3d.config import ranged
from gen3d.diffusion.lora import VSDLoRA
from gen3d.diffusion.noise import add_noise, training_target
from gen3d.diffusion.prior import Prior, cfg_combine
from gen3d.errors import UserError
from gen3d.guidance import GUIDANCES, GuidanceContext, GuidanceType, common
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance


@dataclass
class VSDConfig(GuidanceConfig):
    type: str = "vsd"
    guidance_scale: float = ranged(7.5, ge=0)
    # schedule: the paper's t_max drop from 0.98 to 0.5 after 5000 steps
    max_step_percent: Any = ranged(factory=lambda: [5000, 0.98, 0.5, 5001], ge=0, le=1)
    lora_rank: int = ranged(4, ge=1, le=1024)  # 16 for Stable Diffusion
    lora_alpha: float | None = ranged(None, gt=0)  # None: = lora_rank (LoRA scale 1)
    lora_lr: float = ranged(1e-3, ge=0)
    camera_condition_dropout: float = ranged(0.1, ge=0, le=1)  # p(camera -> zeros) while training the LoRA
    lora_guidance_scale: float = 1.0  # CFG between camera-conditioned and camera-dropped eps_phi
    lora_n_timestamp_samples: int = ranged(1, ge=1, le=64)  # timesteps per image for the LoRA loss


def lora_eps(
    prior: Prior,
    lora: VSDLoRA,
    latents_noisy: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    c2w: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """eps_phi [B,C,h,w] (float32, epsilon whatever the prior predicts) for x_t [B,C,h,w], t [B],
    cond [B,L,D], c2w [B,4,4]. scale != 1: cfg_combine(camera dropped, camera given, scale)."""
    cam = c2w.reshape(c2w.shape[0], 16)
    with lora.active() as unet:
        if scale == 1.0:
            return prior.unet_eps(latents_noisy, t, cond, unet=unet, class_labels=cam).float()
        eps_c, eps_u = (
            prior.unet_eps(
                torch.cat([latents_noisy] * 2),
                torch.cat([t, t]),
                torch.cat([cond, cond]),
                unet=unet,
                class_labels=torch.cat([cam, torch.zeros_like(cam)]),
            )
            .float()
            .chunk(2)
        )
    return cfg_combine(eps_u, eps_c, scale)


def vsd_gradient(
    prior: Prior,
    lora: VSDLoRA,
    latents: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    c2w: torch.Tensor,
    guidance_scale: float,
    lora_guidance_scale: float = 1.0,
    weighting: str = "sds",
) -> torch.Tensor:
    """VSD gradient w.r.t. latents [B,C,h,w] for t [B], noise [B,C,h,w], c2w [B,4,4]. No autograd."""
    with torch.no_grad():
        noisy = add_noise(prior.alphas_cumprod, latents.detach(), noise, t)
        eps_pretrained = prior.predict_noise(noisy, t, cond, uncond, guidance_scale)
        eps_phi = lora_eps(prior, lora, noisy, t, cond, c2w, lora_guidance_scale)
        return common.weighting(prior.alphas_cumprod, t, weighting) * (eps_pretrained - eps_phi)


def lora_loss(
    prior: Prior,
    lora: VSDLoRA,
    latents: torch.Tensor,
    cond: torch.Tensor,
    c2w: torch.Tensor,
    dropout: float = 0.1,
    n_samples: int = 1,
    generator=None,
) -> torch.Tensor:
    """Diffusion loss of eps_phi on DETACHED latents [B,C,h,w] (t over the whole schedule, camera
    zeroed per sample with probability `dropout`); the target matches the prior's prediction type."""
    x0 = latents.detach().float().repeat(n_samples, 1, 1, 1)
    cond, cam = cond.repeat(n_samples, 1, 1), c2w.reshape(-1, 16).repeat(n_samples, 1)
    keep = torch.rand(cam.shape[0], 1, device=cam.device, generator=generator) >= dropout
    t = common.sample_timesteps(x0.shape[0], 0, prior.num_train_timesteps - 1, x0.device, generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator)
    noisy = add_noise(prior.alphas_cumprod, x0, noise, t)
    target = training_target(prior.prediction_type, prior.alphas_cumprod, x0, noise, t)
    with lora.active() as unet:
        out = unet(noisy.to(prior.dtype), t, encoder_hidden_states=cond, class_labels=cam * keep).sample
    return F.mse_loss(out.float(), target.float())


class VSDGuidance(SDSGuidance):
    """Rendered images -> loss for the 3D parameters + diffusion loss for the LoRA (not an nn.Module;
    `self.lora` is, and owns only the trainable LoRA + camera-embedding parameters)."""

    def __init__(self, prior: Prior, cfg: VSDConfig, lora: VSDLoRA | None = None, latents: bool = False):
        """lora: continue an existing VSDLoRA on this prior's UNet (e.g. the next stage); None: a new one."""
        super().__init__(prior, cfg, latents)
        if lora is not None and lora.unet is not prior.unet:
            raise UserError("the VSD LoRA passed in sits on another UNet than this prior's")
        self.lora = lora if lora is not None else VSDLoRA(prior.unet, rank=cfg.lora_rank, alpha=cfg.lora_alpha)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.lora.parameters())

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": self.cfg.lora_lr}]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vsd_lora": self.lora}  # checkpointed as vsd_lora.*

    def state(self) -> dict[str, Any]:
        return {"vsd_lora": self.lora}  # later VSD stages on this prior continue the same LoRA

    def loss_from_latents(
        self,
        latents: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        step: int,
        generator=None,
        c2w: torch.Tensor | None = None,
    ) -> dict:
        """latents [B,C,h,w] (from `__call__`'s images [B,3,H,W], or rendered: rgb_as_latents),
        cond/uncond [B,L,D], c2w [B,4,4] (required) ->
        dict(loss (3D params), loss_lora (LoRA params), grad_norm, t, nan)."""
        if c2w is None:
            raise ValueError("VSD needs the cameras (c2w) of the rendered views")
        cfg = self.cfg
        latents = self.prior.resize_latents(latents)
        t = self.timesteps(latents.shape[0], step, generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator)
        grad = vsd_gradient(
            self.prior,
            self.lora,
            latents,
            t,
            noise,
            cond,
            uncond,
            c2w,
            cfg.guidance_scale,
            cfg.lora_guidance_scale,
            cfg.weighting,
        )
        loss_lora = lora_loss(
            self.prior,
            self.lora,
            latents,
            cond,
            c2w,
            cfg.camera_condition_dropout,
            cfg.lora_n_timestamp_samples,
            generator,
        )
        return {**self.finish(latents, grad, step), "loss_lora": loss_lora, "t": t}


def _build(prior: Prior, cfg: VSDConfig, ctx: GuidanceContext) -> VSDGuidance:
    return VSDGuidance(prior, cfg, lora=ctx.state.get("vsd_lora"), latents=ctx.latents)


GUIDANCES.register("vsd", GuidanceType(VSDConfig, _build, holds_modules=True))

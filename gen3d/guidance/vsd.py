"""Variational score distillation (ProlificDreamer).

grad = w(t) * (eps_pretrained_CFG(x_t; y, t) - eps_phi(x_t; y, t, c)),  x_t = sqrt(a_t) x + sqrt(1 - a_t) eps,
with eps_phi the prior's UNet + a camera-conditioned LoRA (`gen3d.diffusion.lora.VSDLoRA`), trained
every step with the diffusion loss on the detached rendered latents. Timesteps, CFG, weighting,
NaN guard, clipping and the reparameterised loss are SDS's (`SDSGuidance`, `gen3d.guidance.common`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from gen3d.config import ranged
from gen3d.diffusion.lora import VSDLoRA
from gen3d.diffusion.noise import add_noise, training_target
from gen3d.diffusion.prior import Prior, cfg_combine, latent_signature, load_prior
from gen3d.errors import UserError
from gen3d.guidance import GUIDANCES, GuidanceContext, GuidanceType, common
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance, cfg_eps, check_image_term, check_resolution


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
    # the model the LoRA (eps_phi) sits on: None = the prior's own UNet (shared, threestudio's low-memory
    # mode); a hub id or folder = a second model, e.g. stabilityai/stable-diffusion-2-1 (the paper's)
    lora_model: Optional[str] = None
    STEPPED = GuidanceConfig.STEPPED + ("lora_guidance_scale", "camera_condition_dropout", "lora_n_timestamp_samples")


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
    guided_eps: Callable | None = None,
    lora_prior: Prior | None = None,
    lora_cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """VSD gradient w.r.t. latents [B,C,h,w] for t [B], noise [B,C,h,w], c2w [B,4,4]. No autograd.
    guided_eps(x_t, t): the pretrained branch (None: CFG of cond over uncond); lora_prior: the model the
    LoRA sits on (None: `prior`); lora_cond: the LoRA branch's text embeddings (None: cond)."""
    with torch.no_grad():
        noisy = add_noise(prior.alphas_cumprod, latents.detach(), noise, t)
        eps_pretrained = (guided_eps or cfg_eps(prior, cond, uncond, guidance_scale))(noisy, t)
        lora_cond = cond if lora_cond is None else lora_cond
        eps_phi = lora_eps(lora_prior or prior, lora, noisy, t, lora_cond, c2w, lora_guidance_scale)
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

    def __init__(
        self,
        prior: Prior,
        cfg: VSDConfig,
        lora: VSDLoRA | None = None,
        latents: bool = False,
        lora_prior: Prior | None = None,
    ):
        """lora: continue an existing VSDLoRA (e.g. the next stage's) on lora_prior's UNet; None: a new one.
        lora_prior: the model the LoRA sits on (`guidance.lora_model`); None: this prior (shared UNet)."""
        super().__init__(prior, cfg, latents)
        self.lora_prior = lora_prior or prior  # a plain attribute: its frozen weights stay out of checkpoints
        if lora is not None and lora.unet is not self.lora_prior.unet:
            raise UserError("the VSD LoRA passed in sits on another UNet than the LoRA model's")
        self.lora = (
            lora if lora is not None else VSDLoRA(self.lora_prior.unet, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.lora.parameters())

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.trainable_parameters(), "lr": self.cfg.lora_lr}]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vsd_lora": self.lora}  # checkpointed as vsd_lora.*

    def state(self) -> dict[str, Any]:
        # later VSD stages continue the same LoRA on the same model
        return {"vsd_lora": self.lora, "vsd_lora_prior": self.lora_prior}

    def lora_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The text embeddings of the LoRA branch: the pretrained branch's (Perp-Neg: the plain prompt)."""
        return cond

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
        """latents [B,C,h,w] (from `__call__`'s images [B,3,H,W], or rendered: rgb_as_latents),
        cond/uncond [B,L,D], c2w [B,4,4] (required) ->
        dict(loss (3D params), loss_lora (LoRA params), grad_norm, t, nan)."""
        if c2w is None:
            raise ValueError("VSD needs the cameras (c2w) of the rendered views")
        cfg = self.cfg
        latents = self.prior.resize_latents(latents)
        t = self.timesteps(latents.shape[0], step, generator)
        noise = torch.randn(latents.shape, device=latents.device, generator=generator)
        lora_cond = self.lora_cond(cond)
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
            guided_eps=self.pretrained_eps(cond, uncond, cameras),
            lora_prior=self.lora_prior,
            lora_cond=lora_cond,
        )
        loss_lora = lora_loss(
            self.lora_prior,
            self.lora,
            latents,
            lora_cond,
            c2w,
            cfg.camera_condition_dropout,
            cfg.lora_n_timestamp_samples,
            generator,
        )
        return {**self.finish(latents, grad, step), "loss_lora": loss_lora, "t": t}


def lora_prior_of(prior: Prior, cfg: VSDConfig, ctx: GuidanceContext) -> Prior:
    """The model the LoRA sits on: the one an earlier stage's LoRA sits on, else `guidance.lora_model`
    loaded like the prior (its text encoder and VAE dropped: the LoRA branch takes the prior's embeddings
    and latents), else the prior itself (shared)."""
    if ctx.state.get("vsd_lora") is not None:
        return ctx.state.get("vsd_lora_prior") or prior
    if cfg.lora_model is None:
        return prior
    second = load_prior(cfg.lora_model, device=prior.device, dtype=prior.dtype)
    second.text_encoder = second.vae = None
    return second


def _build(prior: Prior, cfg: VSDConfig, ctx: GuidanceContext) -> VSDGuidance:
    lora_prior = lora_prior_of(prior, cfg, ctx)
    return VSDGuidance(prior, cfg, lora=ctx.state.get("vsd_lora"), latents=ctx.latents, lora_prior=lora_prior)


def check_lora_model(cfg: Any) -> None:
    """Before anything is written: `guidance.lora_model` (when set) denoises the prior's latents with the
    prior's text embeddings: same latent channels and VAE downsampling, same cross-attention width, same
    number of training timesteps."""
    check_resolution(cfg)
    check_image_term(cfg, available=False)
    if getattr(cfg.guidance, "lora_model", None) is None:
        return
    main, second = latent_signature(cfg.model), latent_signature(cfg.guidance.lora_model)
    for key, what in (
        ("latent", "latent shape (channels, VAE downsampling)"),
        ("text", "text-embedding width"),
        ("timesteps", "number of training timesteps"),
    ):
        if main[key] != second[key]:
            raise UserError(
                f"guidance.lora_model '{cfg.guidance.lora_model}' does not fit the prior '{cfg.model}': its "
                f"{what} is {second[key]}, the prior's {main[key]}"
            )


GUIDANCES.register("vsd", GuidanceType(VSDConfig, _build, holds_modules=True, check=check_lora_model))

"""Perp-Neg guidance types (a Janus remedy for Stable Diffusion): `sds-perpneg` and `vsd-perpneg`.

The pretrained branch's epsilon is Perp-Neg's (`gen3d.diffusion.perpneg.perp_neg_eps`): the positive
embedding interpolated between neighbouring view prompts by the camera's azimuth, the other views as
negatives used only through their component perpendicular to the positive direction:

    sds-perpneg:  grad = w(t) (eps_perpneg(x_t; views, camera, t) - eps)
    vsd-perpneg:  grad = w(t) (eps_perpneg(x_t; views, camera, t) - eps_phi(x_t; y, t, c))

For VSD only the pretrained branch is Perp-Neg's: the LoRA branch (eps_phi, and its diffusion loss)
takes the view-independent prompt y and the camera c (threestudio does not offer this: its issue #135).
Everything else (timesteps, weighting, clipping, the LoRA) is SDS's / VSD's. Needs view-dependent
prompts (`prompt_processor.view_dependent: true`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gen3d.diffusion.perpneg import PerpNegConfig, perp_neg_eps, perp_neg_inputs
from gen3d.diffusion.prompts import cached_text_embeddings
from gen3d.errors import UserError
from gen3d.guidance import GUIDANCES, GuidanceContext, GuidanceType
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance, check_sds
from gen3d.guidance.vsd import VSDConfig, VSDGuidance, check_lora_model, lora_prior_of


@dataclass
class SDSPerpNegConfig(GuidanceConfig):
    type: str = "sds-perpneg"
    perp_neg: PerpNegConfig = field(default_factory=PerpNegConfig)  # the weight functions' constants


@dataclass
class VSDPerpNegConfig(VSDConfig):
    type: str = "vsd-perpneg"
    perp_neg: PerpNegConfig = field(default_factory=PerpNegConfig)


class PerpNegViews:
    """What Perp-Neg needs from the prompts: every view's embedding [V,L,D], the view thresholds and the
    view-independent prompt's embedding [1,L,D]."""

    def __init__(self, prior, prompts, guidance_type: str):
        if prompts is None or not prompts.cfg.view_dependent:
            raise UserError(f"guidance type '{guidance_type}' needs prompt_processor.view_dependent=true")
        self.view_emb, self.views = prompts.cond, prompts.cfg.views
        self.plain = cached_text_embeddings(prior, [prompts.prompt], prompts.cfg.cache_dir)

    def eps(
        self, prior, uncond: torch.Tensor, cameras, scale: float, cfg: PerpNegConfig, rescale: float = 0.0
    ) -> Callable:
        """(x_t, t) -> Perp-Neg's guided epsilon for these cameras (elevation, azimuth [B])."""
        if cameras is None:
            raise ValueError("Perp-Neg needs the cameras of the rendered views")
        pos, negs, weights = perp_neg_inputs(self.view_emb, uncond, cameras.elevation, cameras.azimuth, self.views, cfg)
        return lambda noisy, t: perp_neg_eps(prior, noisy, t, pos, uncond, negs, weights, scale, rescale=rescale)


class SDSPerpNegGuidance(SDSGuidance):
    def __init__(self, prior, cfg: SDSPerpNegConfig, views: PerpNegViews, latents: bool = False):
        super().__init__(prior, cfg, latents)
        self.views = views

    def pretrained_eps(self, cond, uncond, cameras) -> Callable:
        return self.views.eps(
            self.prior, uncond, cameras, self.cfg.guidance_scale, self.cfg.perp_neg, self.cfg.guidance_rescale
        )


class VSDPerpNegGuidance(VSDGuidance):
    def __init__(self, prior, cfg: VSDPerpNegConfig, views: PerpNegViews, **kwargs):
        super().__init__(prior, cfg, **kwargs)
        self.views = views

    def pretrained_eps(self, cond, uncond, cameras) -> Callable:
        return self.views.eps(
            self.prior, uncond, cameras, self.cfg.guidance_scale, self.cfg.perp_neg, self.cfg.guidance_rescale
        )

    def lora_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return self.views.plain.expand(cond.shape[0], -1, -1)  # the view-independent prompt


def _build_sds(prior, cfg: SDSPerpNegConfig, ctx: GuidanceContext) -> SDSPerpNegGuidance:
    return SDSPerpNegGuidance(prior, cfg, PerpNegViews(prior, ctx.prompts, cfg.type), latents=ctx.latents)


def _build_vsd(prior, cfg: VSDPerpNegConfig, ctx: GuidanceContext) -> VSDPerpNegGuidance:
    views = PerpNegViews(prior, ctx.prompts, cfg.type)
    lora, lora_prior = ctx.state.get("vsd_lora"), lora_prior_of(prior, cfg, ctx)
    return VSDPerpNegGuidance(prior, cfg, views, lora=lora, latents=ctx.latents, lora_prior=lora_prior)


def _check_views(cfg) -> None:
    if not cfg.prompt_processor.view_dependent:
        raise UserError(f"guidance type '{cfg.guidance.type}' needs prompt_processor.view_dependent=true")
    check_sds(cfg)


def _check_vsd(cfg) -> None:
    _check_views(cfg)
    check_lora_model(cfg)  # (checks the resolution too)


GUIDANCES.register("sds-perpneg", GuidanceType(SDSPerpNegConfig, _build_sds, check=_check_views))
GUIDANCES.register("vsd-perpneg", GuidanceType(VSDPerpNegConfig, _build_vsd, holds_modules=True, check=_check_vsd))

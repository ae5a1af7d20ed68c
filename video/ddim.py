"""DDIM inversion of video latents and DDIM sampling from them (diffusers' schedulers).

`make_eps(prior, model, cond, uncond, scale)` gives eps(latents [F,C,h,w], t) for one video
(frames folded into the batch, `n_frames` passed to the frame-aware attention); classifier-free
guidance goes through `Prior.predict_noise` (the project's one CFG convention). The schedulers
are built from the prior's scheduler config with prediction_type "epsilon", since the prior
already converts v-prediction outputs to epsilon.

`ddim_edit` samples an edit from the inverted latents together with a source branch (the source
caption, no CFG: it retraces the inversion back to the source video) whose spatial self-attention
weights the edit reuses during the first steps (`video.attention`, source attention).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from gen3d.diffusion.prior import cfg_combine

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_eps(prior, model: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor | None = None,
             guidance_scale: float = 1.0) -> EpsFn:
    """cond / uncond: text embeddings [1,L,D]. Without uncond (or scale 1) no CFG batch is run."""

    def eps(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        f = latents.shape[0]
        tt = t.reshape(1).expand(f).to(latents.device)
        kw = {"cross_attention_kwargs": {"n_frames": f}}
        c = cond.expand(f, -1, -1)
        if uncond is None or guidance_scale == 1.0:
            return prior.unet_eps(latents, tt, c, unet=model, **kw).float()
        return prior.predict_noise(latents, tt, c, uncond.expand(f, -1, -1), guidance_scale, unet=model, **kw)

    return eps


def _scheduler(scheduler_cls, prior, steps: int, device):
    sched = scheduler_cls.from_config({**prior.scheduler.config, "prediction_type": "epsilon", "clip_sample": False})
    sched.set_timesteps(steps, device=device)
    return sched


@torch.no_grad()
def _denoise_loop(scheduler_cls, eps: EpsFn, latents: torch.Tensor, prior, steps: int) -> torch.Tensor:
    sched = _scheduler(scheduler_cls, prior, steps, latents.device)
    x = latents.float()
    for t in sched.timesteps:
        x = sched.step(eps(x, t), t, x).prev_sample
    return x


def ddim_invert(eps: EpsFn, latents: torch.Tensor, prior, steps: int) -> torch.Tensor:
    """Clean latents [F,C,h,w] -> noisy latents at the last of `steps` DDIM timesteps."""
    return _denoise_loop(DDIMInverseScheduler, eps, latents, prior, steps)


def ddim_sample(eps: EpsFn, latents: torch.Tensor, prior, steps: int) -> torch.Tensor:
    """Noisy latents [F,C,h,w] (e.g. from ddim_invert with the same steps) -> clean latents (eta 0)."""
    return _denoise_loop(DDIMScheduler, eps, latents, prior, steps)


@torch.no_grad()
def ddim_edit(prior, model: torch.nn.Module, latents: torch.Tensor, source: torch.Tensor, cond: torch.Tensor,
              uncond: torch.Tensor, guidance_scale: float, steps: int, source_attention: float) -> torch.Tensor:
    """DDIM sampling of one edit from inverted latents [F,C,h,w] with source attention.

    source / cond / uncond: text embeddings [1,L,D] of the source caption, the edit prompt and the negative
    prompt. For the first round(source_attention * steps) steps the UNet runs on three videos at once,
    [source branch, edit (cond), edit (uncond)], the source branch being denoised with the source caption
    and no CFG from the same latents, and the conditional edit uses its spatial self-attention weights
    (the unconditional one keeps its own, as in Prompt-to-Prompt); the remaining steps are plain CFG
    sampling (as `ddim_sample`). source_attention 0 equals `ddim_sample`.
    """
    sched = _scheduler(DDIMScheduler, prior, steps, latents.device)
    n_shared = round(source_attention * len(sched.timesteps))
    f = latents.shape[0]
    x_src = x = latents.float()
    plain = make_eps(prior, model, cond, uncond, guidance_scale)
    for i, t in enumerate(sched.timesteps):
        if i < n_shared:
            emb = torch.cat([source, cond, uncond]).repeat_interleave(f, dim=0)
            batch = torch.cat([x_src, x, x])
            kw = {"cross_attention_kwargs": {"n_frames": f, "source_group": 2}}
            e_src, e_c, e_u = prior.unet_eps(batch, t.reshape(1).expand(3 * f), emb, unet=model, **kw).float().chunk(3)
            x_src = sched.step(e_src, t, x_src).prev_sample  # DDIMScheduler.step keeps no state: two chains are fine
            eps = cfg_combine(e_u, e_c, guidance_scale)
        else:
            eps = plain(x, t)
        x = sched.step(eps, t, x).prev_sample
    return x

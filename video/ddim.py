"""DDIM inversion of video latents and DDIM sampling from them (diffusers' schedulers).

`make_eps(prior, model, cond, uncond, scale)` gives eps(latents [F,C,h,w], t) for one video
(frames folded into the batch, `n_frames` passed to the frame-aware attention); classifier-free
guidance goes through `Prior.predict_noise` (the project's one CFG convention). The schedulers
are built from the prior's scheduler config with prediction_type "epsilon", since the prior
already converts v-prediction outputs to epsilon.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

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


@torch.no_grad()
def _denoise_loop(scheduler_cls, eps: EpsFn, latents: torch.Tensor, prior, steps: int) -> torch.Tensor:
    sched = scheduler_cls.from_config({**prior.scheduler.config, "prediction_type": "epsilon", "clip_sample": False})
    sched.set_timesteps(steps, device=latents.device)
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

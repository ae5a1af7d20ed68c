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

import contextlib
import math
from collections.abc import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from gen3d.diffusion.prior import cfg_combine
from video.attention import reweight_cross_attention

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_eps(
    prior, model: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor | None = None, guidance_scale: float = 1.0
) -> EpsFn:
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
def _denoise_loop(
    scheduler_cls, eps: EpsFn, latents: torch.Tensor, prior, steps: int, trajectory: list | None = None
) -> torch.Tensor:
    sched = _scheduler(scheduler_cls, prior, steps, latents.device)
    x = latents.float()
    for t in sched.timesteps:
        if trajectory is not None:
            trajectory.append(x)
        x = sched.step(eps(x, t), t, x).prev_sample
    if trajectory is not None:
        trajectory.append(x)
    return x


def ddim_invert(eps: EpsFn, latents: torch.Tensor, prior, steps: int, trajectory: list | None = None) -> torch.Tensor:
    """Clean latents [F,C,h,w] -> noisy latents at the last of `steps` DDIM timesteps. trajectory: a list that
    receives the latents before every step and the result (steps + 1 entries, clean first)."""
    return _denoise_loop(DDIMInverseScheduler, eps, latents, prior, steps, trajectory)


def ddim_sample(eps: EpsFn, latents: torch.Tensor, prior, steps: int) -> torch.Tensor:
    """Noisy latents [F,C,h,w] (e.g. from ddim_invert with the same steps) -> clean latents (eta 0)."""
    return _denoise_loop(DDIMScheduler, eps, latents, prior, steps)


@torch.no_grad()
def ddim_edit(
    prior,
    model: torch.nn.Module,
    latents: torch.Tensor,
    source: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    steps: int,
    source_attention: float,
    trajectory: list | None = None,
    correct: bool = False,
    blend=None,
    reweight: tuple[list[int], float] | None = None,
    early_uncond: torch.Tensor | None = None,
    early_steps: float = 0.0,
    renoise: float = 0.0,
    renoise_seed: int = 0,
) -> torch.Tensor:
    """DDIM sampling of one edit from inverted latents [F,C,h,w] with a source branch.

    source / cond / uncond: text embeddings [1,L,D] of the source caption, the edit prompt and the
    unconditional prompt of CFG (negative-prompt inversion passes the source caption here). The UNet runs
    on three videos at once, [source branch, edit (cond), edit (uncond)], the source branch being denoised
    with the source caption and no CFG from the same latents. For the first round(source_attention * steps)
    steps the conditional edit uses the source branch's spatial self-attention weights (the unconditional
    one keeps its own, as in Prompt-to-Prompt).

    trajectory: the inversion's latents (`ddim_invert(..., trajectory=...)`, clean first); the source branch
    then follows it exactly, and correct=True adds the inversion's per-step error (the inversion's next
    latents minus the source branch's DDIM step) to the edit as well: an edit equal to the source caption
    then returns the source latents exactly. blend (`video.blend`): after every step the edit's latents
    outside blend.mask() are replaced by the source's (the trajectory, else the source branch).
    reweight (tokens, scale): the conditional edit's cross-attention probabilities of these tokens are
    multiplied by scale inside blend.mask() (everywhere without a blend; `video.attention`, Prompt-to-Prompt's
    re-weighting). early_uncond: CFG's unconditional embedding during the first round(early_steps * steps)
    steps (uncond afterwards). renoise r (with a blend): inside blend.mask() as it is before the first step
    the edit starts from sqrt(1 - r) * latents + sqrt(r) * fresh noise (seeded by renoise_seed; Blended Latent
    Diffusion's start), and the inversion's per-step error is not added there (it belongs to the inverted
    latents). Without source attention, trajectory and blend, this is plain CFG sampling (`ddim_sample`).
    """
    sched = _scheduler(DDIMScheduler, prior, steps, latents.device)
    n = len(sched.timesteps)
    n_shared = round(source_attention * n)
    if trajectory is not None and len(trajectory) != n + 1:
        raise ValueError(f"the trajectory has {len(trajectory)} latents, {n + 1} needed for {n} steps")
    f = latents.shape[0]
    x_src = x = latents.float()
    fresh = torch.zeros_like(x[:, :1])  # where the edit starts from fresh noise
    if renoise > 0 and blend is not None:
        fresh = blend.mask().to(x)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(renoise_seed)).to(x)
        x = x + fresh * (math.sqrt(1 - renoise) * x + math.sqrt(renoise) * noise - x)
    plain = make_eps(prior, model, cond, uncond, guidance_scale)
    emb = torch.cat([source, cond, uncond]).repeat_interleave(f, dim=0)
    n_early = round(early_steps * n) if early_uncond is not None else 0
    early = torch.cat([source, cond, early_uncond]).repeat_interleave(f, dim=0) if n_early else emb
    branches = n_shared > 0 or trajectory is not None or blend is not None or reweight is not None or n_early > 0
    with contextlib.ExitStack() as reweighting:
        set_region = None  # the re-weighting's region setter: its processors are found once, the region moves each step
        if reweight is not None:
            unet = getattr(model, "unet", model)
            set_region = reweighting.enter_context(reweight_cross_attention(unet, slice(f, 2 * f), *reweight))
        for i, t in enumerate(sched.timesteps):
            if not branches:
                x = sched.step(plain(x, t), t, x).prev_sample
                continue
            if trajectory is not None:
                x_src = trajectory[n - i].float()
            kw = {"cross_attention_kwargs": {"n_frames": f, "source_group": 2 if i < n_shared else 0}}
            with contextlib.ExitStack() as stack:
                if blend is not None:
                    stack.enter_context(blend.capture(model))
                if set_region is not None:
                    set_region(blend.mask() if blend is not None else None)
                e = early if i < n_early else emb
                out = prior.unet_eps(torch.cat([x_src, x, x]), t.reshape(1).expand(3 * f), e, unet=model, **kw)
            e_src, e_c, e_u = out.float().chunk(3)
            src_next = sched.step(e_src, t, x_src).prev_sample  # DDIMScheduler.step keeps no state: two chains are fine
            x = sched.step(cfg_combine(e_u, e_c, guidance_scale), t, x).prev_sample
            reference = src_next
            if trajectory is not None:
                reference = trajectory[n - i - 1].float()
                if correct:
                    x = x + (1 - fresh) * (reference - src_next)
            if blend is not None:
                m = blend.mask().to(x)
                x = m * x + (1 - m) * reference
            x_src = src_next
    return x

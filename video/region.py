"""Where an edit acts, from the model's noise predictions (DiffEdit, Couairon et al. 2022).

`noise_difference(prior, model, latents, source, edit)`: the clean latents [F,C,h,w] are noised at a few
timesteps with a few noise draws; the UNet (the fine-tuned video model, with its ControlNets) predicts
the noise once with the source caption and once with the edit prompt from the same noisy latents. Where
the two predictions differ is where the prompts disagree: the old object (the source's words are
explained there) and the new one (the edit's words would be drawn there). The map is the mean over
draws, timesteps and channels of |eps_edit - eps_source| at the latent resolution [F,1,h,w], normalised
by its largest value in the video, so a frame where nothing differs stays dark.

`hysteresis(map, low, seed)` keeps the parts of `map > low` that reach `seed` times the frame's largest
value (Canny's hysteresis on connected regions): the noise difference also lights up small spots where the
edit prompt would draw something else, weaker than the object.

`refine(mask, frames, band)` snaps a coarse mask (latent cells upsampled to the frame size) to the edges
of the source frames: the mask eroded by `band` pixels is kept, what lies more than `band` pixels
outside it is dropped, and the band in between is decided by a guided filter (He et al. 2010, kornia's
`guided_blur`) with the frames as the guide, iterated with those two regions held fixed: a band pixel
joins the region when its colour is more like the region's inside than its outside.

`appearance_split(mask, core, frames)` drops the parts of a region that look like what lies outside it:
the noise difference also lights up places next to the object where the edit prompt would draw something
new (the prior's usual place for an object, patches of a textured backdrop in the edit's colour). A
region pixel stays when its source colour is nearer (mean distance to its k nearest samples) to the
colours of the region's core (the cells where the difference peaks, pooled over all frames) than to the
colours outside the region; an opening then drops specks (a colour-model trimap, as in Bayesian matting
and GrabCut, with the noise difference giving the trimap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import guided_blur

from gen3d.diffusion.noise import add_noise


@torch.no_grad()
def noise_difference(
    prior,
    model: torch.nn.Module,
    latents: torch.Tensor,
    source: torch.Tensor,
    edit: torch.Tensor,
    strengths: tuple[float, ...] = (0.5,),
    draws: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """latents [F,C,h,w]; source / edit: text embeddings [1,L,D]; strengths: timesteps as fractions of the
    training schedule. -> [F,1,h,w] in [0, 1] (1 at the video's largest difference)."""
    f = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    alphas = prior.scheduler.alphas_cumprod
    n_train = prior.scheduler.config.num_train_timesteps
    emb = torch.cat([source, edit]).repeat_interleave(f, dim=0).repeat(draws, 1, 1)  # [(draws 2 f), L, D]
    total = torch.zeros(f, 1, *latents.shape[-2:])
    for s in strengths:
        t = torch.full((2 * draws * f,), min(int(s * n_train), n_train - 1), dtype=torch.long)
        noise = torch.randn((draws, *latents.shape), generator=g)
        x = add_noise(alphas, latents.float().cpu()[None].expand(draws, -1, -1, -1, -1), noise, t[:1])
        x = x.repeat_interleave(2, dim=0).flatten(0, 1).to(latents.device)  # [(draws 2 f), C, h, w]
        eps = prior.unet_eps(
            x, t.to(latents.device), emb.to(latents.device), unet=model, cross_attention_kwargs={"n_frames": f}
        )
        eps = eps.float().cpu().reshape(draws, 2, f, *eps.shape[1:])
        total += (eps[:, 1] - eps[:, 0]).abs().mean(2, keepdim=True).mean(0)
    return total / total.amax().clamp(min=1e-12)


def _grow(m: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(m, 2 * px + 1, stride=1, padding=px) if px > 0 else m


def peaks(m: torch.Tensor, seed: float) -> torch.Tensor:
    """m [F,1,h,w] -> {0, 1}: the cells where m reaches `seed` times its largest value in the frame."""
    return (m >= seed * m.amax(dim=(2, 3), keepdim=True)).float()


def cells_to_pixels(cells: torch.Tensor, size) -> torch.Tensor:
    """A latent-grid mask [F,1,h,w] -> [F,1,*size] in {0, 1} (nearest: each cell covers its pixels)."""
    return (F.interpolate(cells.float(), size=size, mode="nearest") > 0.5).float()


def hysteresis(m: torch.Tensor, low: float, seed: float, seeds: torch.Tensor | None = None) -> torch.Tensor:
    """m [F,1,h,w] -> {0, 1}: the 8-connected parts of m > low holding a cell where `seeds` (default: m)
    is >= seed * its largest value in the frame."""
    keep = (m > low).float()
    s = m if seeds is None else seeds
    grown = keep * peaks(s, seed)
    while True:
        nxt = _grow(grown, 1) * keep
        if torch.equal(nxt, grown):
            return grown
        grown = nxt


def refine(mask: torch.Tensor, frames: torch.Tensor, band: int, iterations: int = 4, eps: float = 1e-3) -> torch.Tensor:
    """mask [F,1,H,W] in {0,1} (coarse), frames [F,3,H,W] in [0,1] -> [F,1,H,W] in [0,1] (soft at the edges)."""
    hard = (mask > 0.5).float()
    core, outer = -_grow(-hard, band), _grow(hard, band)
    x = 0.5 * (core + outer)
    guide = frames.float().to(mask.device)
    for _ in range(iterations):
        x = guided_blur(guide, x, 3 * band + 1, eps).clamp(0, 1)
        x = torch.maximum(x, core) * outer
    return x


def _knn_distance(x: torch.Tensor, samples: torch.Tensor, k: int, chunk: int = 8192) -> torch.Tensor:
    """x [N,C], samples [M,C] -> [N]: the mean distance of each x to its k nearest samples (in chunks of x:
    a 512 px clip has hundreds of thousands of region pixels)."""
    k = min(k, samples.shape[0])
    parts = [torch.cdist(c, samples).topk(k, dim=1, largest=False).values.mean(1) for c in x.split(chunk)]
    return torch.cat(parts) if parts else x.new_zeros(0)


def _subsample(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[0] <= n else x[torch.linspace(0, x.shape[0] - 1, n).long()]


def _colour_likeness(
    mask: torch.Tensor, core: torch.Tensor, frames: torch.Tensor, margin: int, k: int, samples: int, where: torch.Tensor
) -> torch.Tensor | None:
    """[F,1,H,W] in {0,1}: the pixels of `where` whose source colour is nearer (mean distance to the k nearest
    samples) to the colours of the region's core than to the colours outside the region `mask` (0 elsewhere);
    None without core or outside samples."""
    hard, seed = (mask > 0.5).float(), (core > 0.5).float() * (mask > 0.5).float()
    inner = -_grow(-seed, margin // 2)
    inner = torch.where(inner.flatten(1).any(1)[:, None, None, None], inner, seed)  # thin cores stay whole
    outer = _grow(hard, margin)
    pixels = frames.float().permute(0, 2, 3, 1)  # [F,H,W,3]
    inside, outside = pixels[inner[:, 0] > 0.5], pixels[outer[:, 0] < 0.5]
    if inside.shape[0] == 0 or outside.shape[0] == 0:
        return None
    inside, outside = _subsample(inside, samples), _subsample(outside, samples)
    candidates = where[:, 0] > 0.5
    x = pixels[candidates]
    like = torch.zeros_like(hard[:, 0])
    like[candidates] = (_knn_distance(x, inside, k) <= _knn_distance(x, outside, k)).float()
    return like[:, None]


def appearance_split(
    mask: torch.Tensor, core: torch.Tensor, frames: torch.Tensor, margin: int, k: int = 8, samples: int = 4096
) -> torch.Tensor:
    """mask / core [F,1,H,W] in {0,1} (core within mask), frames [F,3,H,W] in [0,1] -> [F,1,H,W] in {0,1}:
    the mask without its pixels whose colour is nearer to the outside's than to the core's (module
    docstring). The colour models pool all frames (the object looks alike across frames, the places where
    the difference strays do not); the outside is what lies more than `margin` pixels outside the mask, the
    core is eroded by `margin // 2` pixels (edge pixels mix the object with the backdrop; a frame whose core
    erodes away keeps it whole). Without core or outside samples the mask is returned as it is."""
    hard = (mask > 0.5).float()
    like = _colour_likeness(mask, core, frames, margin, k, samples, hard)
    if like is None:
        return hard
    return _grow(-_grow(-(like * hard), 1), 1)  # an opening: specks thinner than 3 pixels go


def colour_grow(
    region: torch.Tensor, core: torch.Tensor, frames: torch.Tensor, cells: int, k: int = 8, samples: int = 4096
) -> torch.Tensor:
    """region / core [F,1,h,w] in {0,1} at the latent grid, frames [F,3,H,W] -> [F,1,h,w] in {0,1}: the
    region with the cells within `cells` of it where most source pixels look like the region's core (the
    colour models of appearance_split, at the frame size). Completes the region where the noise
    difference is weak on part of the object (an object leaving the picture, a frame far from the key
    frame). cells 0, or no colour samples: the region as it is."""
    hard = (region > 0.5).float()
    if cells <= 0:
        return hard
    band, size = max(frames.shape[-1] // region.shape[-1], 1), frames.shape[-2:]
    big, ring = cells_to_pixels(hard, size), _grow(hard, cells) * (1 - hard)
    like = _colour_likeness(
        big, cells_to_pixels(core, size) * big, frames.to(region.device), band, k, samples, cells_to_pixels(ring, size)
    )
    if like is None:
        return hard
    return torch.maximum(hard, ring * (F.avg_pool2d(like, band) >= 0.5).float())

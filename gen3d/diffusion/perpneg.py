"""Perp-Neg (Armandpour et al. 2023): negative view prompts, used only through their component
perpendicular to the positive direction, as a Janus remedy for view-dependent prompting.

For a camera at azimuth phi (0 = front) the positive embedding interpolates between neighbouring view
prompts and the two other views act as negatives:

    |phi| < 90:  r = 1 - |phi|/90,  pos = r front + (1-r) side,  negatives (front, side),
                 weights (-f_fs(r), -f_sf(1-r))
    |phi| >= 90: r = 2 - |phi|/90,  pos = r side + (1-r) back,   negatives (side, front),
                 weights (-f_sb(r), -f_fsb(r))
    overhead:    pos = overhead,  negatives unused (weight 0)

with f(r) = a exp(-b r) + c (the constants of the paper's code as threestudio and stable-dreamfusion
use them). With e_pos = eps(pos) - eps(uncond) and e_i = eps(neg_i) - eps(uncond):

    eps_perpneg = eps(uncond) + s (e_pos + sum_i w_i perp(e_i, e_pos)),   perp(x, y) = x - <x,y>/|y|^2 y

One UNet batch of 4B (positive, unconditional, two negatives). The guidance layer turns it into SDS's
gradient (w(t) (eps_perpneg - eps)) or VSD's pretrained branch (w(t) (eps_perpneg - eps_phi)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gen3d.diffusion.prior import cfg_rescale
from gen3d.diffusion.views import VIEWS, ViewConfig, view_index


@dataclass
class PerpNegConfig:
    """a, b, c of the weight functions f(r) = a exp(-b r) + c."""

    f_sb: list[float] = field(default_factory=lambda: [1.0, 0.5, -0.606])
    f_fsb: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.967])
    f_fs: list[float] = field(default_factory=lambda: [4.0, 0.5, -2.426])
    f_sf: list[float] = field(default_factory=lambda: [4.0, 0.5, -2.426])


def decay(abc, r: torch.Tensor) -> torch.Tensor:
    a, b, c = abc
    return a * torch.exp(-b * r) + c


def perpendicular(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Component of x [B,...] perpendicular to y [B,...], per sample."""
    xf, yf = x.flatten(1), y.flatten(1)
    coef = (xf * yf).sum(1) / yf.square().sum(1).clamp_min(1e-12)
    return x - coef.view(-1, *[1] * (x.dim() - 1)) * y


def perp_neg_inputs(
    view_emb: torch.Tensor,
    uncond: torch.Tensor,
    elevation: torch.Tensor,
    azimuth: torch.Tensor,
    views: ViewConfig = ViewConfig(),
    cfg: PerpNegConfig = PerpNegConfig(),
):
    """view_emb [V,L,D] (VIEWS order), uncond [B,L,D], cameras [B] (degrees) ->
    (pos [B,L,D], negs [B,2,L,D], weights [B,2])."""
    front, side, back = (view_emb[VIEWS.index(v)] for v in ("front", "side", "back"))
    phi = ((azimuth.float() + 180.0) % 360.0 - 180.0).abs().to(view_emb.device)
    frontal = (phi < 90).view(-1, 1, 1)
    r = torch.where(phi < 90, 1 - phi / 90, 2 - phi / 90)
    rr = r.view(-1, 1, 1).to(view_emb.dtype)
    pos = torch.where(frontal, rr * front + (1 - rr) * side, rr * side + (1 - rr) * back)
    negs = torch.stack(
        [torch.where(frontal, front, side).expand_as(pos), torch.where(frontal, side, front).expand_as(pos)], 1
    )
    weights = torch.stack(
        [
            torch.where(phi < 90, -decay(cfg.f_fs, r), -decay(cfg.f_sb, r)),
            torch.where(phi < 90, -decay(cfg.f_sf, 1 - r), -decay(cfg.f_fsb, r)),
        ],
        1,
    )
    overhead = view_index(elevation.cpu(), azimuth.cpu(), views).to(view_emb.device) == VIEWS.index("overhead")
    pos = torch.where(overhead.view(-1, 1, 1), view_emb[VIEWS.index("overhead")].expand_as(pos), pos)
    negs = torch.where(overhead.view(-1, 1, 1, 1), uncond.unsqueeze(1).expand_as(negs), negs)
    weights = torch.where(overhead.view(-1, 1), torch.zeros_like(weights), weights)
    return pos, negs, weights


def perp_neg_combine(
    eps_uncond: torch.Tensor, eps_pos: torch.Tensor, eps_negs: torch.Tensor, weights: torch.Tensor, scale: float
) -> torch.Tensor:
    """eps_u + s (e_pos + sum_i w_i perp(e_i, e_pos)); eps_negs [B,K,...], weights [B,K]."""
    e_pos = eps_pos - eps_uncond
    acc = torch.zeros_like(e_pos)
    for i in range(eps_negs.shape[1]):
        acc = acc + weights[:, i].view(-1, *[1] * (e_pos.dim() - 1)) * perpendicular(eps_negs[:, i] - eps_uncond, e_pos)
    return eps_uncond + scale * (e_pos + acc)


def perp_neg_eps(
    prior,
    latents_noisy: torch.Tensor,
    t: torch.Tensor,
    pos: torch.Tensor,
    uncond: torch.Tensor,
    negs: torch.Tensor,
    weights: torch.Tensor,
    scale: float,
    unet=None,
    rescale: float = 0.0,
) -> torch.Tensor:
    """The Perp-Neg guided epsilon [B,C,h,w] (float32) from one UNet batch of (2 + K) B; rescale > 0:
    diffusers' guidance rescale towards the positive prompt's eps (gen3d.diffusion.prior.cfg_rescale)."""
    b, k = latents_noisy.shape[0], negs.shape[1]
    emb = torch.cat([pos, uncond, negs.transpose(0, 1).reshape(k * b, *negs.shape[2:])])
    eps = prior.unet_eps(torch.cat([latents_noisy] * (2 + k)), torch.cat([t] * (2 + k)), emb, unet=unet).float()
    eps_pos, eps_u, eps_n = eps[:b], eps[b : 2 * b], eps[2 * b :].reshape(k, b, *eps.shape[1:]).transpose(0, 1)
    return cfg_rescale(perp_neg_combine(eps_u, eps_pos, eps_n, weights, scale), eps_pos, rescale)

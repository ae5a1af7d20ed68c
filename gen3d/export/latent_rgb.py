"""A linear map from a prior's latent space to RGB, fitted by least squares.

A field trained with rgb_as_latents stores latents, not colours, and a VAE decoder is not a
per-point function: it mixes neighbouring latent pixels. The mesh texture needs one RGB value per
surface point, so the exporter approximates the decoder by ``rgb = latent @ weight + bias``, fitted
on pairs (rendered latent pixel, the same views decoded by the VAE and averaged over the latent
pixel's footprint). This is an approximation (Latent-NeRF uses the same kind of linear map to
preview latents): fine colour detail that the decoder creates from neighbouring latents is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LinearMap:
    """rgb [N,3] = latents [N,C] @ weight [C,3] + bias [3]."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(latents.device, latents.dtype), self.bias.to(latents.device, latents.dtype)
        return latents @ w + b


def fit_linear_map(latents: torch.Tensor, rgb: torch.Tensor) -> LinearMap:
    """Least-squares fit of ``rgb [N,3] ~ latents [N,C] @ W + b`` (float64; min-norm if underdetermined)."""
    if latents.ndim != 2 or rgb.ndim != 2 or latents.shape[0] != rgb.shape[0]:
        raise ValueError(f"need latents [N,C] and rgb [N,3], got {tuple(latents.shape)} and {tuple(rgb.shape)}")
    x = torch.cat([latents.double(), latents.new_ones(latents.shape[0], 1).double()], dim=1).cpu()
    solution = torch.linalg.lstsq(x, rgb.double().cpu(), driver="gelsd").solution  # [C+1, 3]
    return LinearMap(weight=solution[:-1].float(), bias=solution[-1].float())


def pixel_pairs(
    latents: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor | None = None, min_pairs: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs from views rendered as latents and decoded to RGB.

    Args:
        latents: ``[B,h,w,C]``; rgb: ``[B,h*f,w*f,3]`` (f = the VAE's downsampling factor);
        mask: ``[B,h,w]`` bool (e.g. opacity > 0.5) or None. Where it selects fewer than
        ``min_pairs`` pixels, every pixel is used.
    Returns:
        latents ``[N,C]`` and RGB ``[N,3]`` (each latent pixel's footprint averaged).
    """
    b, h, w, c = latents.shape
    if rgb.shape[1] % h or rgb.shape[2] % w or rgb.shape[1] // h != rgb.shape[2] // w:
        raise ValueError(
            f"decoded views {tuple(rgb.shape)} are not a whole multiple of the latents {tuple(latents.shape)}"
        )
    factor = rgb.shape[1] // h
    pooled = F.avg_pool2d(rgb.permute(0, 3, 1, 2).float(), factor).permute(0, 2, 3, 1)  # [B,h,w,3]
    flat_latents, flat_rgb = latents.reshape(-1, c), pooled.reshape(-1, 3)
    if mask is not None and int(mask.sum()) >= min_pairs:
        keep = mask.reshape(-1)
        return flat_latents[keep], flat_rgb[keep]
    return flat_latents, flat_rgb

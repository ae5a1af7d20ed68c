"""Training losses of the builtin prior (and its ControlNet): VAE reconstruction, diffusion MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gen3d.diffusion.noise import add_noise, training_target
from gen3d.diffusion.prior import encode_text


def vae_loss(vae, images: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """L1 + MSE reconstruction of images [B,3,H,W] in [0,1] plus kl_weight * KL per pixel."""
    x = images * 2 - 1
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    loss = l1 + mse + kl_weight * kl
    return loss, {"loss": loss, "l1": l1, "kl": kl}


def diffusion_loss(
    unet, text_encoder, tokenizer, alphas_cumprod, latents, captions, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """MSE to the training target (epsilon for the builtin prior) at uniformly drawn timesteps
    (latents already scaled). `unet` is any callable (sample, t, encoder_hidden_states=) -> .sample."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, len(alphas_cumprod), (latents.shape[0],), device=latents.device)
    noisy = add_noise(alphas_cumprod, latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=encode_text(text_encoder, tokenizer, captions)).sample
    return F.mse_loss(pred, training_target(prediction_type, alphas_cumprod, latents, noise, t))

"""Sampling a diffusers text-to-image pipeline with DDIM, and saving image grids (previews, evaluation)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from .model import make_pipeline


@torch.no_grad()
def sample_images(
    pipe, prompts: list[str], n_per_prompt: int = 4, steps: int = 25, guidance_scale: float = 7.5, seed: int = 0
) -> torch.Tensor:
    """[len(prompts) * n_per_prompt, 3, H, W] in [0,1] with DDIM, prompt-major order."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = make_pipeline(
        dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet, scheduler=sched)
    )
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    out = pipe(
        prompts,
        num_images_per_prompt=n_per_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=g,
        output_type="pt",
    )
    return out.images.clamp(0, 1)


def save_grid(images: torch.Tensor, path: str | Path, n_cols: int) -> Path:
    """Save images [N,3,H,W] in [0,1] as one PNG, n_cols per row (atomic write)."""
    n, _, h, w = images.shape
    n_rows = (n + n_cols - 1) // n_cols
    grid = torch.ones(n_rows * n_cols, 3, h, w)
    grid[:n] = images.detach().float().cpu()
    grid = grid.view(n_rows, n_cols, 3, h, w).permute(0, 3, 1, 4, 2).reshape(n_rows * h, n_cols * w, 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    iio.imwrite(tmp, (grid.numpy() * 255).round().astype(np.uint8))
    tmp.replace(path)
    return path

"""The dataset in the VAE's latent space: posterior mean/std of every render, cached in the run folder,
and the dataset of (latent posterior, caption or image) the UNet, decoder and ControlNet stages train on."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data import CaptionedImages


class CachedLatents(torch.utils.data.Dataset):
    """((latent mean, latent std), target) where target is a freshly drawn caption ("caption") or
    the image [3,H,W] in [0,1] ("image")."""

    def __init__(self, captions: CaptionedImages, mean: torch.Tensor, std: torch.Tensor, target: str = "caption"):
        self.captions, self.mean, self.std, self.target = captions, mean, std, target

    def __len__(self):
        return len(self.mean)

    def __getitem__(self, i):
        y = self.captions.caption(i) if self.target == "caption" else self.captions.image(i)
        return (self.mean[i], self.std[i]), y


@torch.no_grad()
def encode_dataset(vae, data: dict, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std [N,4,h,w] of every image (unscaled)."""
    vae.eval()
    means, stds = [], []
    for i in range(0, len(data["images"]), batch_size):
        x = torch.from_numpy(data["images"][i : i + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def cached_latents(comps: dict, data: dict, run_dir: Path, resume: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean/std of the whole dataset under the trained VAE (comps["vae"]), cached in run_dir."""
    lat_path = run_dir / "latents.safetensors"
    if resume and lat_path.exists():
        lat = load_file(str(lat_path))
        return lat["mean"], lat["std"]
    mean, std = encode_dataset(comps["vae"], data)
    save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(lat_path))
    return mean, std

"""Architecture of the builtin prior: a tiny Stable-Diffusion-shaped latent diffusion model.

64x64x3 images <-> 16x16x4 latents (AutoencoderKL, factor 4); a small CLIP text encoder over the
caption vocabulary; a small UNet2DConditionModel; SD's DDPM noise schedule. Everything is stored
as a plain diffusers StableDiffusionPipeline folder, so the rest of gen3d loads it exactly like a
user's Stable Diffusion checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from gen3d.utils.atomic import atomic_folder

from .tokenizer import BOS, EOS, MODEL_MAX_LENGTH, build_tokenizer, save_tokenizer

IMAGE_SIZE = 64


@dataclass
class PriorArchConfig:
    """Sizes of the three networks (defaults = the shipped builtin prior)."""

    image_size: int = IMAGE_SIZE
    latent_channels: int = 4
    vae_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # 3 levels -> factor 4
    vae_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    unet_groups: int = 16
    unet_layers_per_block: int = 1
    unet_heads: int = 4


def vae_factor(arch: PriorArchConfig) -> int:
    return 2 ** (len(arch.vae_channels) - 1)


def make_vae(arch: PriorArchConfig) -> AutoencoderKL:
    n = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(arch.vae_channels),
        layers_per_block=1,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.vae_groups,
        sample_size=arch.image_size,
        scaling_factor=1.0,
    )


def make_text_encoder(arch: PriorArchConfig, vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=arch.text_hidden,
        intermediate_size=4 * arch.text_hidden,
        projection_dim=arch.text_hidden,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(cfg)


def make_unet(arch: PriorArchConfig) -> UNet2DConditionModel:
    n = len(arch.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=arch.image_size // vae_factor(arch),
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(arch.unet_channels),
        layers_per_block=arch.unet_layers_per_block,
        norm_num_groups=arch.unet_groups,
        cross_attention_dim=arch.text_hidden,
        attention_head_dim=arch.unet_heads,
    )


def make_scheduler() -> DDPMScheduler:
    """Stable Diffusion's training schedule (DDIM/PNDM/... can be built from its config)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def build_components(arch: PriorArchConfig | None = None, seed: int = 0) -> dict:
    """Fresh random-weight components: dict(vae, text_encoder, tokenizer, unet, scheduler)."""
    arch = arch or PriorArchConfig()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    return dict(
        vae=make_vae(arch),
        text_encoder=make_text_encoder(arch, len(vocab), vocab[BOS], vocab[EOS]),
        tokenizer=tokenizer,
        unet=make_unet(arch),
        scheduler=make_scheduler(),
    )


def make_pipeline(components: dict) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline_atomic(pipe: StableDiffusionPipeline, out_dir: str | Path) -> Path:
    """save_pretrained into a temporary sibling folder, then swap it into place."""
    with atomic_folder(out_dir) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(
            tmp / "tokenizer"
        )  # classic vocab.json/merges.txt next to tokenizer.json, for older transformers
    return Path(out_dir).resolve()


def build_random_pipeline(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a complete random-weight StableDiffusionPipeline folder with the builtin architecture.

    Loadable with `StableDiffusionPipeline.from_pretrained(out_dir)`; meant for tests and for code
    that needs a prior without the trained weights.
    """
    return save_pipeline_atomic(make_pipeline(build_components(seed=seed)), out_dir)

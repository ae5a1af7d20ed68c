"""A pretrained 2D diffusion prior in diffusers format, frozen, used by 3D guidance and video.

`load_prior("builtin" | local folder | hub id)` gives a `Prior` holding the
UNet, the VAE (None for pixel-space priors), the text encoder, tokenizer and noise schedule.
The Prior is deliberately NOT an nn.Module: systems hold it as a plain attribute, so its
frozen weights never enter checkpoints, optimizers or DDP wrappers.

Classifier-free guidance has ONE convention everywhere (diffusers'):
    eps = eps_uncond + s * (eps_cond - eps_uncond)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gen3d.diffusion import noise
from gen3d.diffusion.layout import WEIGHTED, check_pipeline_folder, folder_weights, read_index
from gen3d.errors import UserError
from gen3d.resources import extern_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_PRIOR = extern_dir() / "builtin-prior"  # the checkout's extern/, the installed copy or $GEN3D_EXTERN


def resolve_model(name: str) -> Path | str:
    """Map --model to a local folder: 'builtin', a diffusers folder, or a hub id (the Hugging Face cache,
    downloaded on first use: gen3d.diffusion.hub)."""
    if not name:
        raise UserError("--model is empty: pass 'builtin', a local diffusers folder or a hub id")
    if name == "builtin":
        if not (BUILTIN_PRIOR / "model_index.json").is_file():
            raise UserError(
                f"the builtin prior is missing at {BUILTIN_PRIOR}; train it with "
                "`python launch.py --config builtin-prior.yaml`"
            )
        check_pipeline_folder(BUILTIN_PRIOR, name)
        return BUILTIN_PRIOR
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(f"model folder '{path}' has no model_index.json (expected a diffusers pipeline folder)")
        check_pipeline_folder(path, name)
        return path.resolve()
    from gen3d.diffusion.hub import fetch, is_hub_id

    if not is_hub_id(name):
        raise UserError(
            f"model '{name}' not found: neither a local folder nor a hub id (org/name); "
            "pass a diffusers folder, a hub id such as stabilityai/stable-diffusion-2-1-base, "
            "or --model builtin"
        )
    folder = fetch(name)
    check_pipeline_folder(folder, name)
    return folder


def has_vae(path: Path, index: dict) -> bool:
    """Whether the pipeline folder `path` (its parsed model_index.json: `index`) has a VAE, i.e. is a
    latent diffusion model; pixel-space priors have none."""
    entry = index.get("vae")
    return bool(entry) and entry[0] is not None and (Path(path) / "vae").is_dir()


@dataclass
class ModelInfo:
    """What a pipeline folder says about itself without loading any weights."""

    path: Path
    has_vae: bool
    latent_channels: int  # channels the UNet denoises (4 for Stable Diffusion and the builtin prior)
    latent_size: int  # the UNet's sample size (latent pixels)


def model_info(name: str) -> ModelInfo:
    """--model -> ModelInfo from its model_index.json and unet/config.json (no weights loaded)."""
    path = Path(resolve_model(name))
    index = read_index(path)
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        raise UserError(f"model '{name}' has no 'unet' component ({unet_config} is missing)")
    unet = json.loads(unet_config.read_text())
    return ModelInfo(
        path=path,
        has_vae=has_vae(path, index),
        latent_channels=int(unet.get("in_channels", 4)),
        latent_size=int(unet.get("sample_size", 64)),
    )


def latent_signature(name: str) -> dict:
    """What a second model needs in common with a prior to denoise the prior's latents with the prior's
    text embeddings (VSD's `guidance.lora_model`), read without loading weights: latent (channels, VAE
    downsampling), text (cross-attention width), timesteps (training schedule length)."""
    info = model_info(name)
    vae = info.path / "vae" / "config.json"
    down = 2 ** (len(json.loads(vae.read_text()).get("block_out_channels", [0])) - 1) if info.has_vae else 1
    unet = json.loads((info.path / "unet" / "config.json").read_text())
    scheduler = info.path / "scheduler" / "scheduler_config.json"
    steps = json.loads(scheduler.read_text()).get("num_train_timesteps", 1000) if scheduler.is_file() else 1000
    return {"latent": (info.latent_channels, down), "text": unet.get("cross_attention_dim"), "timesteps": steps}


@dataclass
class Prior:
    """Frozen components of a text-to-image diffusion model."""

    unet: torch.nn.Module
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    path: Path
    device: torch.device
    dtype: torch.dtype

    # ----- schedule -----------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """[T] float32 on the prior's device."""
        if getattr(self, "_alphas", None) is None or self._alphas.device != self.device:
            self._alphas = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        return self._alphas

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    # ----- images <-> latents ------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Native image resolution of the prior (pixels)."""
        if self.vae is None:
            return int(self.unet.config.sample_size)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * factor

    @property
    def latent_size(self) -> int:
        """Side of the latents the UNet denoises (= image_size for pixel-space priors)."""
        return int(self.unet.config.sample_size)

    def resize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B,C,h,w] -> [B,C,s,s] at the UNet's size s (bilinear; unchanged when already s x s).
        Differentiable. C must be the UNet's input channels."""
        channels = getattr(self.unet.config, "in_channels", None)
        if channels is not None and latents.shape[1] != channels:
            raise ValueError(f"latents have {latents.shape[1]} channels, the prior's UNet takes {channels}")
        size = self.latent_size
        if latents.shape[-2:] == (size, size):
            return latents
        return F.interpolate(latents, (size, size), mode="bilinear", align_corners=False)

    def encode_images(self, images: torch.Tensor, sample: bool = True, resize: bool = True) -> torch.Tensor:
        """images [B,3,H,W] in [0,1] -> latents [B,C,h,w] (scaled like the UNet expects).

        resize: first resize to the prior's native resolution. sample: draw from the VAE posterior
        (False: its mean, deterministic). Differentiable. The one image -> latent path of the project.
        """
        size = self.image_size
        if resize and images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        x = images.to(self.dtype) * 2.0 - 1.0
        if self.vae is None:
            return x
        posterior = self.vae.encode(x).latent_dist
        return (posterior.sample() if sample else posterior.mean) * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B,C,h,w] -> images [B,3,H,W] in [0,1]."""
        if self.vae is None:
            x = latents
        else:
            x = self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor).sample
        return (x.float() * 0.5 + 0.5).clamp(0.0, 1.0)

    # ----- text -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> text embeddings [B, L, D] (last hidden state, as Stable Diffusion uses)."""
        return encode_text(self.text_encoder, self.tokenizer, prompts).to(self.dtype)

    # ----- noise prediction --------------------------------------------------------------------
    def unet_eps(
        self,
        latents_noisy: torch.Tensor,
        t: torch.Tensor,
        text_embeddings: torch.Tensor,
        unet: torch.nn.Module | None = None,
        **unet_kwargs,
    ) -> torch.Tensor:
        """The UNet's output converted to an epsilon prediction (handles v-prediction priors)."""
        unet = unet or self.unet
        out = unet(latents_noisy.to(self.dtype), t, encoder_hidden_states=text_embeddings, **unet_kwargs).sample
        return self.to_epsilon(out, latents_noisy, t)

    def to_epsilon(self, model_out: torch.Tensor, latents_noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's output (of the scheduler's prediction type) -> epsilon."""
        return noise.to_epsilon(self.prediction_type, self.alphas_cumprod, model_out, latents_noisy, t)

    def predict_noise(
        self,
        latents_noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: float,
        unet: torch.nn.Module | None = None,
        guidance_rescale: float = 0.0,
        **unet_kwargs,
    ) -> torch.Tensor:
        """Classifier-free guided epsilon [B,C,h,w]: eps_u + s (eps_c - eps_u), one UNet batch of 2B;
        guidance_rescale > 0: brought towards eps_c's standard deviation (`cfg_rescale`)."""
        x = torch.cat([latents_noisy, latents_noisy])
        tt = torch.cat([t, t])
        emb = torch.cat([cond, uncond])
        kwargs = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in unet_kwargs.items()}
        eps_c, eps_u = self.unet_eps(x, tt, emb, unet=unet, **kwargs).float().chunk(2)
        return cfg_rescale(cfg_combine(eps_u, eps_c, guidance_scale), eps_c, guidance_rescale)

    def to(self, device) -> Prior:
        self.device = torch.device(device)
        for m in (self.unet, self.vae, self.text_encoder):
            if m is not None:
                m.to(self.device)
        return self


def encode_text(text_encoder: torch.nn.Module, tokenizer, prompts: list[str]) -> torch.Tensor:
    """Prompt embeddings [B, max_length, hidden] exactly as StableDiffusionPipeline computes them
    (differentiable: the builtin prior's training calls it on its trainable text encoder)."""
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The project's single classifier-free guidance formula."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def cfg_rescale(guided: torch.Tensor, eps_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """diffusers' guidance rescale (Lin et al. 2023, section 3.4; `guidance_rescale` of its pipelines): the
    guided prediction scaled to the conditional one's per-sample standard deviation, mixed in by phi
    (0: unchanged), against the over-saturation of a large guidance scale."""
    if not phi:
        return guided
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    return rescale_noise_cfg(guided, eps_cond, guidance_rescale=phi)


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def load_prior(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Prior:
    """Load a diffusers text-to-image pipeline folder as a frozen Prior."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    path = Path(resolve_model(name))
    index = read_index(path)  # resolve_model has checked the folder's components
    weights = {
        c: folder_weights(path, c, prefer_fp16=dtype != torch.float32).load_kwargs()
        for c in WEIGHTED
        if c != "vae" or has_vae(path, index)
    }
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **weights["unet"])
        vae = None
        if has_vae(path, index):
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **weights["vae"])
        text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", torch_dtype=dtype, **weights["text_encoder"]
        )
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model '{name}' from {path}: {str(err).splitlines()[0]}") from None
    prior = Prior(
        unet=_freeze(unet),
        vae=_freeze(vae) if vae is not None else None,
        text_encoder=_freeze(text_encoder),
        tokenizer=tokenizer,
        scheduler=scheduler,
        path=path,
        device=torch.device("cpu"),
        dtype=dtype,
    )
    return prior.to(device)

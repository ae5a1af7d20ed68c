"""Train the builtin prior in two Lightning stages and save it as a diffusers pipeline folder.

Stage 1 (`vae`): AutoencoderKL on the rendered shapes (L1 + MSE reconstruction, tiny KL).
Stage 2 (`unet`): UNet2DConditionModel + CLIP text encoder on cached VAE latents (epsilon-prediction
MSE, caption dropped to "" with probability `p_uncond` for classifier-free guidance, EMA weights).
Both stages checkpoint with ModelCheckpoint and resume from `last.ckpt`. The final pipeline is
written atomically into `cfg.output_dir` (default `extern/builtin-prior`).

No horizontal flips: the renderer already draws every azimuth, and a flip of the *latent* is not
exactly the latent of the flipped image.

Stage 3 (`decoder`, optional, off by default): fine-tune the VAE decoder alone on the frozen
encoder's latents (the UNet's latent space does not move).

The pieces live in their own modules: `losses` (VAE, diffusion), `modules` (one LightningModule per
stage), `latents` (the cached latent dataset), `fitting` (trainer, checkpoints, loader), `sampling`.

Run: `python launch.py --config configs/builtin-prior.yaml` or `python -m gen3d.prior.train [run_dir]`
(`--resume` to continue, `--export` to write the pipeline from the latest checkpoints).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from .data import CaptionedImages, PriorDataConfig, render_dataset
from .fitting import ckpt_dir, fit_stage, make_loader
from .latents import CachedLatents, cached_latents
from .model import PriorArchConfig, build_components, make_pipeline, save_pipeline_atomic
from .modules import DecoderModule, DiffusionModule, SamplePreview, VAEModule


@dataclass
class PriorTrainConfig:
    system: str = "builtin-prior"
    seed: int = 0
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    arch: PriorArchConfig = field(default_factory=PriorArchConfig)
    # 1, not 2: on a shared, oversubscribed 2-core machine two OpenMP threads were ~9x slower
    # than one (each op waits for the descheduled thread). Use 2+ on an idle machine.
    num_threads: int = 1
    # stage 1: VAE
    vae_steps: int = 3000
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_max_minutes: float = 25.0
    # stage 2: UNet + text encoder
    unet_steps: int = 15000
    unet_batch_size: int = 32
    unet_lr: float = 1e-3
    unet_warmup_steps: int = 100
    unet_max_minutes: float = 60.0
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    # stage 3: fine-tune the VAE decoder alone on the frozen encoder's latents (sharper, truer
    # colours; the latent space the UNet learned does not move)
    decoder_steps: int = 0  # off by default (the VAE stage alone reached L1 0.015)
    decoder_batch_size: int = 8
    decoder_lr: float = 5e-4
    decoder_max_minutes: float = 15.0
    sample_every_n_steps: int = 500  # preview grid under run_dir/unet/samples (0: never)
    # checkpoints and output
    ckpt_every_minutes: float = 3.0
    output_dir: str = "extern/builtin-prior"
    progress_bar: bool = True


def _reuse_stage(final: Path, vae, resume: bool) -> bool:
    """When resuming a finished stage, load its saved VAE weights instead of training again."""
    if resume and final.exists():
        vae.load_state_dict(load_file(str(final)))
        return True
    return False


def train_vae(cfg: PriorTrainConfig, comps: dict, data: dict, run_dir: Path, resume: bool):
    stage = run_dir / "vae"
    final = stage / "vae.safetensors"
    if _reuse_stage(final, comps["vae"], resume):
        return comps["vae"]
    ds = CaptionedImages(data, cfg.data, seed=cfg.seed)
    module = VAEModule(comps["vae"], cfg.vae_lr, cfg.vae_kl_weight, cfg.vae_steps)
    fit_stage(
        cfg, module, make_loader(ds, cfg.vae_batch_size, cfg.seed), stage, cfg.vae_steps, cfg.vae_max_minutes, resume
    )
    save_file(comps["vae"].state_dict(), str(final))
    return comps["vae"]


def train_decoder(cfg: PriorTrainConfig, comps: dict, data: dict, run_dir: Path, resume: bool):
    stage = run_dir / "decoder"
    final = stage / "vae.safetensors"
    if _reuse_stage(final, comps["vae"], resume) or cfg.decoder_steps <= 0:
        return comps["vae"]
    mean, std = cached_latents(comps, data, run_dir, resume)
    ds = CachedLatents(CaptionedImages(data, cfg.data, seed=cfg.seed), mean, std, target="image")
    fit_stage(
        cfg,
        DecoderModule(comps["vae"], cfg.decoder_lr),
        make_loader(ds, cfg.decoder_batch_size, cfg.seed + 2),
        stage,
        cfg.decoder_steps,
        cfg.decoder_max_minutes,
        resume,
    )
    comps["vae"].requires_grad_(False)
    save_file(comps["vae"].state_dict(), str(final))
    return comps["vae"]


def train_unet(cfg: PriorTrainConfig, comps: dict, data: dict, run_dir: Path, resume: bool):
    stage = run_dir / "unet"
    mean, std = cached_latents(comps, data, run_dir, resume)
    scale = float(1.0 / mean.std())
    comps["vae"].register_to_config(scaling_factor=scale)
    ds = CachedLatents(CaptionedImages(data, cfg.data, seed=cfg.seed), mean, std)
    module = DiffusionModule(comps["unet"], comps["text_encoder"], comps["tokenizer"], comps["scheduler"], cfg)
    module.vae_scale = scale
    cbs = (
        [SamplePreview(cfg.sample_every_n_steps, stage / "samples", comps["vae"], cfg)]
        if cfg.sample_every_n_steps
        else []
    )
    fit_stage(
        cfg,
        module,
        make_loader(ds, cfg.unet_batch_size, cfg.seed + 1),
        stage,
        cfg.unet_steps,
        cfg.unet_max_minutes,
        resume,
        cbs,
    )
    return module


def export_pipeline(cfg: PriorTrainConfig, run_dir: Path, out_dir: str | Path | None = None) -> Path:
    """Assemble the pipeline from run_dir's stage outputs (also from an unfinished UNet stage):
    VAE from decoder/ (if that stage ran) or vae/, scaling_factor = 1/std of the cached latents,
    the EMA UNet and text encoder from unet/ckpts/last.ckpt. Written atomically to out_dir."""
    run_dir = Path(run_dir)
    comps = build_components(cfg.arch, seed=cfg.seed)
    vae_file = run_dir / "decoder" / "vae.safetensors"
    comps["vae"].load_state_dict(load_file(str(vae_file if vae_file.exists() else run_dir / "vae" / "vae.safetensors")))
    comps["vae"].register_to_config(
        scaling_factor=float(1.0 / load_file(str(run_dir / "latents.safetensors"))["mean"].std())
    )
    state = torch.load(ckpt_dir(run_dir / "unet") / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for name in ("unet", "text_encoder"):
        prefix = f"ema_{name}."
        comps[name].load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return save_pipeline_atomic(make_pipeline(comps), out_dir or cfg.output_dir)


def main(cfg: PriorTrainConfig, run_dir: Path, resume=False, export_only: bool = False) -> Path:
    """Train the stages under run_dir (checkpoints, logs, previews) and write cfg.output_dir.

    resume: truthy (True or a checkpoint path from launch.py) to continue; a run_dir that already
    holds stage checkpoints is resumed too. export_only: just write the pipeline from run_dir.
    """
    run_dir = Path(run_dir)
    if export_only:
        return export_pipeline(cfg, run_dir)
    resume = bool(resume) or (run_dir / "ckpts").is_dir()
    torch.set_num_threads(cfg.num_threads)
    L.seed_everything(cfg.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    (run_dir / ".config.yaml.tmp").write_text(cfg_text)
    (run_dir / ".config.yaml.tmp").replace(run_dir / "config.yaml")
    t0 = time.time()
    data = render_dataset(cfg.data, verbose=True)
    print(f"[prior] data: {len(data['shape'])} images in {time.time() - t0:.0f}s", flush=True)
    comps = build_components(cfg.arch, seed=cfg.seed)
    t1 = time.time()
    train_vae(cfg, comps, data, run_dir, resume)
    print(f"[prior] vae stage done in {time.time() - t1:.0f}s", flush=True)
    t2 = time.time()
    train_unet(cfg, comps, data, run_dir, resume)
    print(f"[prior] unet stage done in {time.time() - t2:.0f}s", flush=True)
    t3 = time.time()
    train_decoder(cfg, comps, data, run_dir, resume)
    print(f"[prior] decoder stage done in {time.time() - t3:.0f}s", flush=True)
    out = export_pipeline(cfg, run_dir)
    print(f"[prior] saved {out} (total {time.time() - t0:.0f}s)", flush=True)
    return out


if __name__ == "__main__":
    # python -m gen3d.prior.train [run_dir] [--resume | --export]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run = Path(args[0]) if args else Path(".cache/prior_run")
    if "--export" in sys.argv:  # write extern/builtin-prior from the run's latest checkpoints
        print(main(PriorTrainConfig(), run, export_only=True))
    else:
        main(PriorTrainConfig(), run, resume="--resume" in sys.argv)

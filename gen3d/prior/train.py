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

Run: `python launch.py --config configs/builtin-prior.yaml` or `python -m gen3d.prior.train [run_dir]`
(`--resume` to continue, `--export` to write the pipeline from the latest checkpoints).
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from .data import CaptionedImages, PriorDataConfig, render_dataset
from .model import PriorArchConfig, build_components, make_pipeline, save_pipeline_atomic


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


# ---------------------------------------------------------------- losses


def vae_loss(vae, images: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """L1 + MSE reconstruction of images [B,3,H,W] in [0,1] plus kl_weight * KL per pixel."""
    x = images * 2 - 1
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    loss = l1 + mse + kl_weight * kl
    return loss, {"loss": loss, "l1": l1, "kl": kl}


def encode_text(text_encoder, tokenizer, captions) -> torch.Tensor:
    """Prompt embeddings [B, max_length, hidden] exactly as StableDiffusionPipeline computes them."""
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


def diffusion_loss(unet, text_encoder, tokenizer, alphas_cumprod, latents, captions) -> torch.Tensor:
    """Epsilon-prediction MSE at uniformly drawn timesteps (latents already scaled)."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, len(alphas_cumprod), (latents.shape[0],), device=latents.device)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    pred = unet(noisy, t, encoder_hidden_states=encode_text(text_encoder, tokenizer, captions)).sample
    return F.mse_loss(pred, noise)


# ---------------------------------------------------------------- Lightning modules


def _warmup_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


class VAEModule(L.LightningModule):
    def __init__(self, vae, lr: float, kl_weight: float, total_steps: int):
        super().__init__()
        self.vae, self.lr, self.kl_weight, self.total_steps = vae, lr, kl_weight, total_steps

    def training_step(self, batch, batch_idx):
        loss, logs = vae_loss(self.vae, batch[0], self.kl_weight)
        self.log_dict(logs, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        cos = lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, self.total_steps))))  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_lambda(100)(s) * cos(s))
        return [opt], [{"scheduler": sched, "interval": "step"}]


class DiffusionModule(L.LightningModule):
    """UNet + text encoder trained jointly; EMA copies kept as frozen submodules (checkpointed)."""

    def __init__(self, unet, text_encoder, tokenizer, scheduler, cfg: PriorTrainConfig):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.tokenizer, self.noise_scheduler, self.cfg = tokenizer, scheduler, cfg
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False)
        self.ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False)
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone(), persistent=False)

    def training_step(self, batch, batch_idx):
        (mean, std), captions = batch
        latents = (mean + std * torch.randn_like(mean)) * self.vae_scale
        captions = ["" if torch.rand(()) < self.cfg.p_uncond else c for c in captions]
        loss = diffusion_loss(self.unet, self.text_encoder, self.tokenizer, self.alphas_cumprod, latents, captions)
        self.log("loss", loss, prog_bar=True)
        return loss

    vae_scale: float = 1.0

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = min(self.cfg.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        for ema, net in ((self.ema_unet, self.unet), (self.ema_text_encoder, self.text_encoder)):
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - d)

    def configure_optimizers(self):
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        opt = torch.optim.AdamW(params, lr=self.cfg.unet_lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_lambda(self.cfg.unet_warmup_steps))
        return [opt], [{"scheduler": sched, "interval": "step"}]


class DecoderModule(L.LightningModule):
    """Decoder-only fine-tuning: L1 + MSE of decode(latent sample) against the image."""

    def __init__(self, vae, lr: float):
        super().__init__()
        self.vae, self.lr = vae, lr
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
        vae.post_quant_conv.requires_grad_(True)

    def training_step(self, batch, batch_idx):
        (mean, std), images = batch
        rec = self.vae.decode(mean + std * torch.randn_like(mean)).sample
        x = images * 2 - 1
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        self.log_dict({"loss": l1 + mse, "l1": l1}, prog_bar=True)
        return l1 + mse

    def configure_optimizers(self):
        params = list(self.vae.decoder.parameters()) + list(self.vae.post_quant_conv.parameters())
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)


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


class SamplePreview(Callback):
    """Every n steps, sample a few prompts with the EMA weights into run_dir/unet/samples/."""

    PROMPTS = ("a red cube", "a green sphere", "a blue cylinder", "a yellow cone", "a purple torus",
               "a orange cube, side view", "a white cone", "a black torus")

    def __init__(self, every: int, out_dir: Path, vae, mod_cfg):
        self.every, self.out_dir, self.vae = every, out_dir, vae

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every and step % self.every == 0 and step > 0:
            from .evaluate import save_grid

            pipe = make_pipeline(dict(vae=self.vae, text_encoder=pl_module.ema_text_encoder,
                                      tokenizer=pl_module.tokenizer, unet=pl_module.ema_unet,
                                      scheduler=pl_module.noise_scheduler))
            imgs = sample_images(pipe, list(self.PROMPTS), n_per_prompt=4, seed=0)
            save_grid(imgs, self.out_dir / f"step{step:06d}.png", n_cols=4)


# ---------------------------------------------------------------- helpers


@torch.no_grad()
def sample_images(pipe, prompts: list[str], n_per_prompt: int = 4, steps: int = 25, guidance_scale: float = 7.5,
                  seed: int = 0) -> torch.Tensor:
    """[len(prompts) * n_per_prompt, 3, H, W] in [0,1] with DDIM, prompt-major order."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = make_pipeline(dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                              unet=pipe.unet, scheduler=sched))
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    out = pipe(prompts, num_images_per_prompt=n_per_prompt, num_inference_steps=steps,
               guidance_scale=guidance_scale, generator=g, output_type="pt")
    return out.images.clamp(0, 1)


def _trainer(cfg: PriorTrainConfig, stage_dir: Path, max_steps: int, max_minutes: float, callbacks=()) -> L.Trainer:
    ckpt = ModelCheckpoint(dirpath=_ckpt_dir(stage_dir), save_last=True, save_top_k=0,
                           train_time_interval=__import__("datetime").timedelta(minutes=cfg.ckpt_every_minutes))
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, max_time={"minutes": max_minutes},
        callbacks=[ckpt, *callbacks], logger=CSVLogger(str(stage_dir), name="logs", version=0),
        log_every_n_steps=25, enable_progress_bar=cfg.progress_bar, enable_model_summary=False,
        default_root_dir=str(stage_dir), num_sanity_val_steps=0,
    )


def _ckpt_dir(stage_dir: Path) -> Path:
    """<run_dir>/ckpts/<stage>/: all checkpoints under the run's ckpts/ (as launch.py expects)."""
    return stage_dir.parent / "ckpts" / stage_dir.name


def _fit(cfg: PriorTrainConfig, module, loader, stage_dir: Path, max_steps: int, max_minutes: float, resume: bool,
         callbacks=()) -> None:
    """Fit one stage (resuming from its last.ckpt), then checkpoint its final state as last.ckpt."""
    trainer = _trainer(cfg, stage_dir, max_steps, max_minutes, callbacks)
    trainer.fit(module, loader, ckpt_path=_last_ckpt(stage_dir, resume), weights_only=True)
    trainer.save_checkpoint(str(_ckpt_dir(stage_dir) / "last.ckpt"), weights_only=False)  # full state, to resume


def _last_ckpt(stage_dir: Path, resume: bool) -> str | None:
    p = _ckpt_dir(stage_dir) / "last.ckpt"
    return str(p) if resume and p.exists() else None


def _loader(ds, batch_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g,
                                       num_workers=0)


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
    _fit(cfg, module, _loader(ds, cfg.vae_batch_size, cfg.seed), stage, cfg.vae_steps, cfg.vae_max_minutes, resume)
    save_file(comps["vae"].state_dict(), str(final))
    return comps["vae"]


@torch.no_grad()
def encode_dataset(vae, data: dict, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std [N,4,h,w] of every image (unscaled)."""
    vae.eval()
    means, stds = [], []
    for i in range(0, len(data["images"]), batch_size):
        x = torch.from_numpy(data["images"][i:i + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
        post = vae.encode(x).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def cached_latents(comps: dict, data: dict, run_dir: Path, resume: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean/std of the whole dataset under the trained VAE, cached in run_dir."""
    lat_path = run_dir / "latents.safetensors"
    if resume and lat_path.exists():
        lat = load_file(str(lat_path))
        return lat["mean"], lat["std"]
    mean, std = encode_dataset(comps["vae"], data)
    save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(lat_path))
    return mean, std


def train_decoder(cfg: PriorTrainConfig, comps: dict, data: dict, run_dir: Path, resume: bool):
    stage = run_dir / "decoder"
    final = stage / "vae.safetensors"
    if _reuse_stage(final, comps["vae"], resume) or cfg.decoder_steps <= 0:
        return comps["vae"]
    mean, std = cached_latents(comps, data, run_dir, resume)
    ds = CachedLatents(CaptionedImages(data, cfg.data, seed=cfg.seed), mean, std, target="image")
    _fit(cfg, DecoderModule(comps["vae"], cfg.decoder_lr), _loader(ds, cfg.decoder_batch_size, cfg.seed + 2), stage,
         cfg.decoder_steps, cfg.decoder_max_minutes, resume)
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
    cbs = [SamplePreview(cfg.sample_every_n_steps, stage / "samples", comps["vae"], cfg)] if cfg.sample_every_n_steps else []
    _fit(cfg, module, _loader(ds, cfg.unet_batch_size, cfg.seed + 1), stage, cfg.unet_steps, cfg.unet_max_minutes,
         resume, cbs)
    return module


def export_pipeline(cfg: PriorTrainConfig, run_dir: Path, out_dir: str | Path | None = None) -> Path:
    """Assemble the pipeline from run_dir's stage outputs (also from an unfinished UNet stage):
    VAE from decoder/ (if that stage ran) or vae/, scaling_factor = 1/std of the cached latents,
    the EMA UNet and text encoder from unet/ckpts/last.ckpt. Written atomically to out_dir."""
    run_dir = Path(run_dir)
    comps = build_components(cfg.arch, seed=cfg.seed)
    vae_file = run_dir / "decoder" / "vae.safetensors"
    comps["vae"].load_state_dict(load_file(str(vae_file if vae_file.exists() else run_dir / "vae" / "vae.safetensors")))
    comps["vae"].register_to_config(scaling_factor=float(1.0 / load_file(str(run_dir / "latents.safetensors"))["mean"].std()))
    state = torch.load(_ckpt_dir(run_dir / "unet") / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for name in ("unet", "text_encoder"):
        prefix = f"ema_{name}."
        comps[name].load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
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

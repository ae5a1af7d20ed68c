"""The builtin prior's Lightning modules, one per training stage (see gen3d.prior.train), and the
sample-preview callback of the UNet stage."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from .fitting import warmup_lambda
from .losses import diffusion_loss, vae_loss
from .model import make_pipeline
from .sampling import sample_images, save_grid


class VAEModule(L.LightningModule):
    """The VAE stage: L1 + MSE reconstruction + tiny KL, warm-up then cosine learning rate."""

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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_lambda(100)(s) * cos(s))
        return [opt], [{"scheduler": sched, "interval": "step"}]


class DiffusionModule(L.LightningModule):
    """UNet + text encoder trained jointly; EMA copies kept as frozen submodules (checkpointed).
    cfg: a PriorTrainConfig (p_uncond, ema_decay, unet_lr, unet_warmup_steps)."""

    def __init__(self, unet, text_encoder, tokenizer, scheduler, cfg):
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
        loss = diffusion_loss(
            self.unet,
            self.text_encoder,
            self.tokenizer,
            self.alphas_cumprod,
            latents,
            captions,
            self.noise_scheduler.config.prediction_type,
        )
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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(self.cfg.unet_warmup_steps))
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


class SamplePreview(Callback):
    """Every n steps, sample a few prompts with the EMA weights into run_dir/unet/samples/."""

    PROMPTS = (
        "a red cube",
        "a green sphere",
        "a blue cylinder",
        "a yellow cone",
        "a purple torus",
        "a orange cube, side view",
        "a white cone",
        "a black torus",
    )

    def __init__(self, every: int, out_dir: Path, vae, mod_cfg):
        self.every, self.out_dir, self.vae = every, out_dir, vae

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every and step % self.every == 0 and step > 0:
            pipe = make_pipeline(
                dict(
                    vae=self.vae,
                    text_encoder=pl_module.ema_text_encoder,
                    tokenizer=pl_module.tokenizer,
                    unet=pl_module.ema_unet,
                    scheduler=pl_module.noise_scheduler,
                )
            )
            imgs = sample_images(pipe, list(self.PROMPTS), n_per_prompt=4, seed=0)
            save_grid(imgs, self.out_dir / f"step{step:06d}.png", n_cols=4)

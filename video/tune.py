"""Fine-tune the inflated UNet on one video (Tune-A-Video / ControlVideo) with Lightning.

One training step: the video's latents [F,C,h,w] -> one timestep t for the whole video ->
noised latents -> inflated UNet (with ControlNet residuals for ControlVideo) on the source
caption -> MSE to the prior's training target (`gen3d.diffusion.noise`: the noise, v or x0).
Only the parameters chosen by `inflation.trainable` get gradients and optimizer state, and only
they go into checkpoints (the frozen 2D weights are re-read from the prior's folder on resume).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from gen3d.diffusion.noise import add_noise, training_target
from gen3d.utils.distributed import exclude_from_ddp, log_parameter_sync, parallel_trainer_kwargs
from gen3d.utils.loggers import ExperimentLogs
from gen3d.utils.progress import stage_callbacks
from video.config import VideoEditConfig

log = logging.getLogger("gen3d.steps")  # log.txt; the console only with --verbose (the bar shows the loss)


class VideoTuner(L.LightningModule):
    """model: inflated UNet or ControlledUNet; latents [F,C,h,w]; text [1,L,D] (source caption)."""

    def __init__(
        self,
        model: torch.nn.Module,
        latents: torch.Tensor,
        text: torch.Tensor,
        noise_scheduler,
        lr: float,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("latents", latents.detach().float().clone(), persistent=False)
        self.register_buffer("text", text.detach().clone(), persistent=False)
        self.noise_scheduler = noise_scheduler  # plain attribute (DDPMScheduler)
        self.lr, self.weight_decay = lr, weight_decay
        self.strict_loading = False  # checkpoints hold the trainable parameters only
        self.first_loss = self.last_loss = None

    def trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def setup(self, stage: str) -> None:  # Lightning hook, before DDP wraps this module
        """Frozen weights (the prior's UNet, the ControlNets) and the fixed inputs are identical on every
        rank: DDP neither broadcasts nor all-reduces them, only the fine-tuned parameters."""
        frozen = [n for n, p in self.named_parameters() if not p.requires_grad]
        exclude_from_ddp(self, frozen + [n for n, _ in self.named_buffers()])

    def training_step(self, batch, batch_idx):
        x0 = self.latents
        f = x0.shape[0]
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (1,), device=x0.device).expand(f)
        alphas = self.noise_scheduler.alphas_cumprod
        xt = add_noise(alphas, x0, noise, t)
        target = training_target(self.noise_scheduler.config.prediction_type, alphas, x0, noise, t)
        emb = self.text.expand(f, -1, -1)
        out = self.model(xt.to(emb.dtype), t, encoder_hidden_states=emb, cross_attention_kwargs={"n_frames": f}).sample
        loss = F.mse_loss(out.float(), target.float())
        value = float(loss.detach())
        self.first_loss = value if self.first_loss is None else self.first_loss
        self.last_loss = value
        self.log("loss", loss, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_train_end(self) -> None:
        log_parameter_sync(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}


class StepLog(Callback):
    """Rank 0: a log line every `every` steps."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and self.every and (step % self.every == 0 or step == trainer.max_steps):
            log.info("fine-tune step %d loss=%.4g", step, module.last_loss)


class _Steps(torch.utils.data.Dataset):
    """Item i is just i: each step reads the one video held by the module."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def make_trainer(cfg: VideoEditConfig, run_dir: Path, accelerator: str) -> L.Trainer:
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "ckpts",
        filename="step-{step:06d}",
        every_n_train_steps=t.checkpoint_every,
        save_top_k=-1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        accelerator=accelerator,
        **parallel_trainer_kwargs(t.devices),
        precision=t.precision,
        callbacks=[ckpt, StepLog(t.log_every), *stage_callbacks("fine-tune", run_dir)],
        logger=ExperimentLogs(cfg.logger, run_dir, "main").trainer_logger(),
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
    )


def fine_tune(
    tuner: VideoTuner, cfg: VideoEditConfig, run_dir: Path, accelerator: str, resume: Path | None
) -> L.Trainer:
    """Run the Lightning fit (resumable from a checkpoint written by it)."""
    if cfg.trainer.gradient_checkpointing:
        for m in tuner.modules():
            if hasattr(m, "enable_gradient_checkpointing") and hasattr(m, "_supports_gradient_checkpointing"):
                if m._supports_gradient_checkpointing:
                    m.enable_gradient_checkpointing()
    trainer = make_trainer(cfg, run_dir, accelerator)
    loader = torch.utils.data.DataLoader(_Steps(max(cfg.trainer.max_steps, 1) * trainer.world_size), batch_size=1)
    trainer.fit(tuner, loader, ckpt_path=str(resume) if resume else None)
    return trainer


def load_trainable(tuner: VideoTuner, ckpt: Path) -> None:
    """Load the fine-tuned parameters of a checkpoint (export-only runs)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    missing = tuner.trainable_names() - set(state)
    if missing:
        from gen3d.errors import UserError

        raise UserError(
            f"checkpoint '{ckpt}' lacks {len(missing)} fine-tuned parameters (e.g. {sorted(missing)[0]}); "
            "was it written with the same inflation settings?"
        )
    tuner.load_state_dict(state, strict=False)

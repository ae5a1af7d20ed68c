"""Fine-tune the inflated UNet on one video (Tune-A-Video / ControlVideo) with Lightning.

One training step: the video's latents [F,C,h,w] -> one timestep t for the whole video ->
noised latents -> inflated UNet (with ControlNet residuals for ControlVideo) on the source
caption -> MSE to the prior's training target (`gen3d.diffusion.noise`: the noise, v or x0).
Only the parameters chosen by `inflation.trainable` get gradients and optimizer state, and only
they go into checkpoints (the frozen 2D weights are re-read from the prior's folder on resume).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from gen3d.diffusion.noise import add_noise, training_target
from gen3d.errors import UserError
from gen3d.reliability.checkpoint_io import AtomicCheckpointIO, load_checkpoint_or_fail
from gen3d.reliability.checkpoints import RunCheckpoints, State
from gen3d.reliability.interrupt import StopRequest
from gen3d.reliability.lineage import fits
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


def make_trainer(cfg: VideoEditConfig, checkpoints: RunCheckpoints, accelerator: str) -> L.Trainer:
    """checkpoints: the run's checkpoint callback (last: the RNG state it saves is the one after the others)."""
    t, run_dir = cfg.trainer, checkpoints.dir.parent
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        accelerator=accelerator,
        **parallel_trainer_kwargs(t.devices),
        precision=t.precision,
        callbacks=[StepLog(t.log_every), *stage_callbacks("fine-tune", run_dir), checkpoints],  # checkpoints last
        plugins=[AtomicCheckpointIO()],
        logger=ExperimentLogs(cfg.logger, run_dir, "main").trainer_logger(),
        enable_checkpointing=False,  # RunCheckpoints: one lineage, the newest `keep_checkpoints` files
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
    )


def checkpoint_megabytes(tuner: VideoTuner) -> float:
    """About the size of one checkpoint: the fine-tuned weights and AdamW's two moments."""
    trainable = [p for p in tuner.parameters() if p.requires_grad]
    return sum(p.numel() * (p.element_size() + 2 * 4) for p in trainable) / 2**20


def fine_tune(
    tuner: VideoTuner, cfg: VideoEditConfig, run_dir: Path, accelerator: str, resume: State | None
) -> L.Trainer:
    """Run the Lightning fit (resumable from a checkpoint written by it). Ctrl-C: save, then Interrupted."""
    if cfg.trainer.gradient_checkpointing:
        for m in tuner.modules():
            if hasattr(m, "enable_gradient_checkpointing") and hasattr(m, "_supports_gradient_checkpointing"):
                if m._supports_gradient_checkpointing:
                    m.enable_gradient_checkpointing()
    t = cfg.trainer
    stop = StopRequest(run_dir)
    checkpoints = RunCheckpoints(run_dir / "ckpts", t.checkpoint_every, t.keep_checkpoints, stop)
    log.info(
        "checkpoints: about %.1f MB each, the newest %s kept",
        checkpoint_megabytes(tuner),
        t.keep_checkpoints if t.keep_checkpoints > 0 else "all",
    )
    trainer = make_trainer(cfg, checkpoints, accelerator)
    loader = torch.utils.data.DataLoader(_Steps(max(t.max_steps, 1) * trainer.world_size), batch_size=1)
    with stop.installed(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(tuner, loader, ckpt_path=str(resume.path) if resume is not None else None, weights_only=True)
    if checkpoints.interrupted_at is not None:
        raise stop.interrupted(checkpoints.interrupted_at, checkpoints.last_saved)
    return trainer


def check_trainable(tuner: VideoTuner, state: State) -> None:
    """UserError unless a checkpoint holds every fine-tuned parameter, with this config's shapes."""
    missing = tuner.trainable_names() - set(state.checkpoint["state_dict"])
    if missing:
        raise UserError(
            f"checkpoint '{state.path}' lacks {len(missing)} fine-tuned parameters (e.g. {sorted(missing)[0]}); "
            "was it written with the same inflation settings?"
        )
    fits({k: v for k, v in tuner.state_dict().items() if k in tuner.trainable_names()}, state, "this video run")


def load_trainable(tuner: VideoTuner, state: State) -> None:
    """Load the fine-tuned parameters of a checkpoint (export-only runs)."""
    check_trainable(tuner, state)
    tuner.load_state_dict(load_checkpoint_or_fail(state.path)["state_dict"], strict=False)

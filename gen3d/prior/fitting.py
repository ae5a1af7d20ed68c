"""Shared Lightning plumbing of the builtin prior's and ControlNet's training stages.

A stage lives in `<run_dir>/<stage>/` (logs, previews) with its checkpoints in
`<run_dir>/ckpts/<stage>/` (as launch.py expects). `fit_stage` resumes from the stage's
`last.ckpt` and writes its final full state there. The `cfg` these functions take is a training
config with `ckpt_every_minutes` and `progress_bar` (PriorTrainConfig, ControlNetTrainConfig).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from gen3d.reliability.checkpoint_io import AtomicCheckpointIO
from gen3d.utils.console import quiet_libraries


def warmup_lambda(warmup: int):
    """LambdaLR factor: linear warm-up over `warmup` steps, then 1."""
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


def ckpt_dir(stage_dir: Path) -> Path:
    """<run_dir>/ckpts/<stage>/: all checkpoints under the run's ckpts/ (as launch.py expects)."""
    return stage_dir.parent / "ckpts" / stage_dir.name


def last_ckpt(stage_dir: Path, resume: bool) -> str | None:
    """The stage's last.ckpt when resuming and it exists, else None (train from scratch)."""
    p = ckpt_dir(stage_dir) / "last.ckpt"
    return str(p) if resume and p.exists() else None


def stage_trainer(cfg, stage_dir: Path, max_steps: int, max_minutes: float, callbacks=()) -> L.Trainer:
    """A CPU Lightning Trainer with time-based checkpoints (written atomically: a temporary file, then a rename,
    so an interrupted write never leaves a torn last.ckpt) and a CSV log under stage_dir/logs."""
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir(stage_dir),
        save_last=True,
        save_top_k=0,
        train_time_interval=timedelta(minutes=cfg.ckpt_every_minutes),
    )
    quiet_libraries()  # `import lightning` gave its logger a console handler of its own: lines printed twice
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_time={"minutes": max_minutes},
        callbacks=[ckpt, *callbacks],
        plugins=[AtomicCheckpointIO()],
        logger=CSVLogger(str(stage_dir), name="logs", version=0),
        log_every_n_steps=25,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(stage_dir),
        num_sanity_val_steps=0,
    )


def fit_stage(
    cfg, module, loader, stage_dir: Path, max_steps: int, max_minutes: float, resume: bool, callbacks=()
) -> None:
    """Fit one stage (resuming from its last.ckpt), then checkpoint its final state as last.ckpt."""
    trainer = stage_trainer(cfg, stage_dir, max_steps, max_minutes, callbacks)
    trainer.fit(module, loader, ckpt_path=last_ckpt(stage_dir, resume), weights_only=True)
    trainer.save_checkpoint(str(ckpt_dir(stage_dir) / "last.ckpt"), weights_only=False)  # full state, to resume


def make_loader(ds, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """Shuffled (seeded), full batches only, in-process."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g, num_workers=0
    )

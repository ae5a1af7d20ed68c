"""Runs a text-to-3D system with Lightning: training (resumable), previews, turntable, export."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from gen3d.config import to_yaml
from gen3d.errors import UserError
from gen3d.export import export_mesh
from gen3d.systems.text3d import RandomCameraDataset, Text3DConfig, Text3DSystem, check_config
from gen3d.utils.atomic import write_text_atomic
from gen3d.utils.media import image_grid, save_image, write_video

log = logging.getLogger("gen3d")


class PreviewAndLog(Callback):
    """Rank 0 only: a preview grid every `preview_every` steps and a log line every `log_every`."""

    def __init__(self, run_dir: Path, preview_every: int, log_every: int, size: int):
        self.run_dir, self.preview_every, self.log_every, self.size = run_dir, preview_every, log_every, size

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self.log_every and step % self.log_every == 0:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        if self.preview_every and (step % self.preview_every == 0 or step == trainer.max_steps):
            views = system.render_views(system.preview_cameras(self.size))
            grid = torch.cat([image_grid(views["rgb"], 4), image_grid(views["normal"], 4)], dim=0)
            save_image(self.run_dir / "previews" / f"step-{step:06d}.png", grid)


def resolve_accelerator(cfg: Text3DConfig) -> str:
    want = cfg.device if cfg.device != "auto" else cfg.trainer.accelerator
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this machine has no CUDA device (use --device cpu)")
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if want not in ("cpu", "cuda", "gpu"):
        raise UserError(f"unknown device '{want}' (use cpu or cuda)")
    return want


def make_trainer(cfg: Text3DConfig, run_dir: Path) -> L.Trainer:
    t = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=run_dir / "ckpts", filename="step-{step:06d}", every_n_train_steps=t.checkpoint_every,
                           save_top_k=-1, save_last=True, auto_insert_metric_name=False)
    preview = PreviewAndLog(run_dir, t.preview_every, t.log_every, cfg.camera.height)
    return L.Trainer(
        max_steps=t.max_steps, max_epochs=-1, accelerator=resolve_accelerator(cfg), devices=t.devices,
        precision=t.precision, callbacks=[ckpt, preview, TQDMProgressBar(refresh_rate=10)],
        logger=False, default_root_dir=str(run_dir), num_sanity_val_steps=0, limit_val_batches=0,
        enable_model_summary=False, log_every_n_steps=t.log_every,
    )


def load_weights(system: Text3DSystem, ckpt_path: Path) -> None:
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    system.load_state_dict(state["state_dict"])


def finalize(system: Text3DSystem, run_dir: Path) -> dict:
    """Turntable video and textured mesh export (call on rank 0)."""
    cfg = system.cfg
    views = system.render_views(system.turntable_cameras(), shading=cfg.turntable.shading)
    write_video(run_dir / "video" / "turntable.mp4", views["rgb"], fps=cfg.turntable.fps)
    with torch.no_grad():
        result = export_mesh(system.density_fn, system.albedo_fn, run_dir / "export", cfg.export,
                             radius=cfg.geometry.radius)
    log.info("exported %s", result)
    return result


def run_text3d(cfg: Text3DConfig, run_dir: Path, resume: Path | None = None, export_only: bool = False) -> dict:
    check_config(cfg)
    rank = int(os.environ.get("RANK", 0))
    L.seed_everything(cfg.seed + rank, workers=True, verbose=False)
    torch.manual_seed(cfg.seed + rank)
    system = Text3DSystem(cfg, run_dir)
    trainer = make_trainer(cfg, run_dir)
    if trainer.is_global_zero:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    if export_only:
        if resume is None:
            raise UserError("--export-only needs --resume PATH (a run directory or a checkpoint)")
        load_weights(system, resume)
    else:
        world = trainer.world_size
        data = RandomCameraDataset(cfg.camera, length=max(cfg.trainer.max_steps, 1) * cfg.trainer.batch_size * world,
                                   seed=cfg.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=cfg.trainer.batch_size, shuffle=False, num_workers=0)
        trainer.fit(system, loader, ckpt_path=str(resume) if resume else None)
    result = {"run_dir": str(run_dir), "first_loss": system.first_loss, "last_loss": system.last_loss}
    if trainer.is_global_zero:
        system.to("cuda" if trainer.accelerator.__class__.__name__.lower().startswith("cuda") else "cpu")
        result.update(finalize(system, run_dir))
    return result

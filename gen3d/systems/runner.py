"""Runs a text-to-3D method with Lightning: its stages in order (each resumable), previews,
then the turntable video and the textured-mesh export of every particle.

Layout: single-stage methods keep `ckpts/` and `previews/` flat; multi-stage methods use
`ckpts/<stage>/` and `previews/<stage>/`. A stage whose last checkpoint reached its max_steps is
complete and is loaded, not retrained, when a run is resumed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from gen3d.config import to_yaml
from gen3d.errors import UserError
from gen3d.systems.config import Text3DConfig
from gen3d.systems.data import RandomCameraDataset
from gen3d.systems.text3d import Text3DSystem
from gen3d.systems.validate import start_point
from gen3d.utils.atomic import write_text_atomic
from gen3d.utils.device import resolve_accelerator, run_device
from gen3d.utils.distributed import global_rank, parallel_trainer_kwargs
from gen3d.utils.loggers import ExperimentLogs
from gen3d.utils.media import image_grid, save_image, write_video
from gen3d.utils.progress import stage_callbacks
from gen3d.utils.schedule import schedule_max

log = logging.getLogger("gen3d")
step_log = logging.getLogger("gen3d.steps")  # log.txt; the console only with --verbose (the bar shows them)


class PreviewAndLog(Callback):
    """Rank 0 only: a preview grid every `preview_every` steps (a PNG and an image in the experiment
    logs) and a log line every `log_every`."""

    def __init__(self, preview_dir: Path, preview_every: int, log_every: int, size: int, stage: str, logs=None):
        self.dir, self.preview_every, self.log_every, self.size, self.stage = (
            preview_dir,
            preview_every,
            log_every,
            size,
            stage,
        )
        self.logs = logs

    def on_train_batch_end(self, trainer, system, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self.log_every and step % self.log_every == 0:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            step_log.info(
                "[%s] step %d %s", self.stage, step, " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            )
        if self.preview_every and (step % self.preview_every == 0 or step == trainer.max_steps):
            views = system.render_views(system.preview_cameras(self.size), shading=system.cfg.force_shading or "albedo")
            grid = torch.cat([image_grid(views["rgb"], 4), image_grid(views["normal"], 4)], dim=0)
            save_image(self.dir / f"step-{step:06d}.png", grid)
            if self.logs is not None:
                self.logs.log_image(f"preview/{self.stage}", grid, step)


def make_trainer(cfg: Text3DConfig, ckpt_dir: Path, preview_dir: Path, stage: str, run_dir: Path) -> L.Trainer:
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="step-{step:06d}",
        every_n_train_steps=t.checkpoint_every,
        save_top_k=-1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    logs = ExperimentLogs(cfg.logger, run_dir, stage)
    preview = PreviewAndLog(preview_dir, t.preview_every, t.log_every, cfg.turntable.resolution, stage, logs)
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        accelerator=resolve_accelerator(cfg),
        **parallel_trainer_kwargs(t.devices),
        precision=t.precision,
        callbacks=[ckpt, preview, *stage_callbacks(stage, run_dir)],
        logger=logs.trainer_logger(),
        default_root_dir=str(ckpt_dir.parent),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
    )


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", 0))


def load_system(cfg: Text3DConfig, ckpt: Path, prior=None, guidance_state: dict | None = None) -> Text3DSystem:
    """A stage's system with the weights of a checkpoint (its guidance's modules built first, when it
    holds any: e.g. VSD's LoRA, on the prior loaded for it)."""
    system = Text3DSystem(cfg, prior=prior, guidance_state=guidance_state)
    system.prepare_to_load()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    system.load_state_dict(state["state_dict"])
    return system


def finalize(system: Text3DSystem, run_dir: Path) -> dict:
    """Turntable video and textured mesh export of every particle (call on rank 0 with all particles)."""
    cfg, n = system.cfg, system.cfg.particles
    results = {}
    for i in range(n):
        suffix = "" if n == 1 else f"-{i}"
        views = system.render_views(system.turntable_cameras(), particle=i, shading=cfg.turntable.shading)
        write_video(run_dir / "video" / f"turntable{suffix}.mp4", views["rgb"], fps=cfg.turntable.fps)
        with torch.no_grad():
            results[f"export{suffix}"] = system.export_particle(
                i, run_dir / "export" / (f"particle-{i}" if n > 1 else "")
            )
        log.debug("exported particle %d: %s", i, ", ".join(f"{k} {v}" for k, v in results[f"export{suffix}"].items()))
    return results


def run_text3d(
    cfg: Text3DConfig,
    run_dir: Path,
    resume: Path | None = None,
    export_only: bool = False,
    stage: str | None = None,
    from_run: Path | None = None,
) -> dict:
    stages, first, prev_ckpt = start_point(cfg, run_dir, stage, from_run)
    multi = bool(cfg.stages)
    rank = global_rank()
    L.seed_everything(cfg.seed + rank, workers=True, verbose=False)
    if rank == 0:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))

    prev = load_system(stages[first - 1][1], prev_ckpt) if prev_ckpt else None
    prior = prev.prior if prev is not None else None
    state = prev.guidance_state() if prev is not None else {}  # e.g. VSD's LoRA, continued by later VSD stages
    system = None
    for name, scfg in stages[first:]:
        sub = name if multi else ""
        ckpt_dir, preview_dir = run_dir / "ckpts" / sub, run_dir / "previews" / sub
        last = resume if (resume is not None and Path(resume).parent == ckpt_dir) else ckpt_dir / "last.ckpt"
        have = last.is_file()
        done_steps = checkpoint_step(last) if have else 0  # one read of the checkpoint
        if have and (export_only or done_steps >= scfg.trainer.max_steps):
            log.info("stage %s: complete, loading %s", name, last)
            system = load_system(scfg, last, prior, state)
        elif export_only:
            raise UserError(f"--export-only: stage '{name}' has no checkpoint in {ckpt_dir}")
        else:
            system = Text3DSystem(scfg, prior=prior, guidance_state=state)
            if prev is not None and not have:
                system.init_from(prev)
            log.info("stage %s: %s for %d steps", name, "resuming" if have else "training", scfg.trainer.max_steps)
            trainer = make_trainer(scfg, ckpt_dir, preview_dir, name, run_dir)
            world = trainer.world_size
            batch = schedule_max(scfg.trainer.batch_size)  # each step takes its own share (cameras_at_step)
            data = RandomCameraDataset(
                scfg.camera, seed=scfg.seed, length=max(scfg.trainer.max_steps, 1) * batch * world
            )
            loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=0)
            t0 = time.perf_counter()
            trainer.fit(system, loader, ckpt_path=str(last) if have else None)
            log.info(
                "stage %s: trained %d steps in %.2f s", name, trainer.global_step - done_steps, time.perf_counter() - t0
            )
        prior, state = system.prior or prior, system.guidance_state()
        prev, final_ckpt = system, ckpt_dir / "last.ckpt"
    result = {"run_dir": str(run_dir), "first_loss": system.first_loss, "last_loss": system.last_loss}
    if rank != 0:  # previews, videos, exports and checkpoints are rank 0's
        return result
    if len(system.scenes) < cfg.particles:  # particles were spread over ranks: the checkpoint holds them all
        system = load_system(stages[-1][1], final_ckpt, prior, state)
    # Lightning's teardown leaves a trained module on the CPU; render and export where it trained
    system.to(run_device(cfg))
    result.update(finalize(system, run_dir))
    return result

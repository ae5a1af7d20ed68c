"""Runs a text-to-3D method with Lightning: its stages in order (each resumable), previews,
then the turntable video and the textured-mesh export of every particle.

Layout: single-stage methods keep `ckpts/` and `previews/` flat; multi-stage methods use
`ckpts/<stage>/` and `previews/<stage>/`. A stage whose last checkpoint reached its max_steps is
complete and is loaded, not retrained, when a run is resumed. Checkpoints, resume and Ctrl-C:
`gen3d.reliability` (each stage continues its newest loadable checkpoint; see README "Reliability").
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from gen3d.config import to_yaml
from gen3d.reliability import lineage
from gen3d.reliability.checkpoint_io import AtomicCheckpointIO, load_checkpoint_or_fail
from gen3d.reliability.checkpoints import RunCheckpoints
from gen3d.reliability.interrupt import StopRequest
from gen3d.systems.config import Text3DConfig
from gen3d.systems.data import RandomCameraDataset
from gen3d.systems.stages import resume_plan
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


def make_trainer(
    cfg: Text3DConfig, checkpoints: RunCheckpoints, preview_dir: Path, stage: str, run_dir: Path
) -> L.Trainer:
    """checkpoints: the run's checkpoint callback (last in the list: it saves the RNG state after the others)."""
    t = cfg.trainer
    logs = ExperimentLogs(cfg.logger, run_dir, stage)
    preview = PreviewAndLog(preview_dir, t.preview_every, t.log_every, cfg.turntable.resolution, stage, logs)
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        accelerator=resolve_accelerator(cfg),
        **parallel_trainer_kwargs(t.devices),
        precision=t.precision,
        callbacks=[preview, *stage_callbacks(stage, run_dir), checkpoints],
        plugins=[AtomicCheckpointIO()],
        logger=logs.trainer_logger(),
        enable_checkpointing=False,  # RunCheckpoints instead of ModelCheckpoint (one lineage, no -v1 files)
        default_root_dir=str(checkpoints.dir.parent),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
    )


def load_system(cfg: Text3DConfig, ckpt: Path, prior=None, guidance_state: dict | None = None) -> Text3DSystem:
    """A stage's system with the weights of a checkpoint (its guidance's modules built first, when it
    holds any: e.g. VSD's LoRA, on the prior loaded for it)."""
    system = Text3DSystem(cfg, prior=prior, guidance_state=guidance_state)
    system.prepare_to_load()
    system.load_state_dict(load_checkpoint_or_fail(ckpt)["state_dict"])
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


def _train_stage(name, scfg, system, state, ckpt_dir: Path, preview_dir: Path, run_dir: Path) -> None:
    """Trainer.fit of one stage, from `state` (a State) or from its start; Ctrl-C: save, then Interrupted."""
    t = scfg.trainer
    stop = StopRequest(run_dir)
    checkpoints = RunCheckpoints(ckpt_dir, t.checkpoint_every, t.keep_checkpoints, stop, t.max_bad_steps)
    trainer = make_trainer(scfg, checkpoints, preview_dir, name, run_dir)
    world, done = trainer.world_size, state.step if state is not None else 0
    batch = schedule_max(t.batch_size)  # each step takes its own share (cameras_at_step)
    # the cameras continue where the resumed state stopped (item i of the run is camera i)
    data = RandomCameraDataset(
        scfg.camera,
        seed=scfg.seed,
        length=max(t.max_steps, 1) * batch * world,
        start=done * batch * world,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=0)
    t0 = time.perf_counter()
    with stop.installed(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(system, loader, ckpt_path=str(state.path) if state is not None else None, weights_only=True)
    if checkpoints.interrupted_at is not None:
        raise stop.interrupted(checkpoints.interrupted_at, checkpoints.last_saved, name)
    log.info("stage %s: trained %d steps in %.2f s", name, trainer.global_step - done, time.perf_counter() - t0)


def run_text3d(
    cfg: Text3DConfig,
    run_dir: Path,
    resume: Path | None = None,
    export_only: bool = False,
    stage: str | None = None,
    from_run: Path | None = None,
) -> dict:
    stages, first, prev_ckpt = start_point(cfg, run_dir, stage, from_run)
    dirs, states, archive, prev_state = resume_plan(cfg, stages, first, prev_ckpt, run_dir, resume, export_only)
    rank = global_rank()
    L.seed_everything(cfg.seed + rank, workers=True, verbose=False)
    if rank == 0:  # every check passed: only now is the run changed
        lineage.tidy(dirs)
        lineage.archive_files(run_dir, archive, states)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))

    prev = load_system(stages[first - 1][1], prev_state.path) if prev_state else None
    prior = prev.prior if prev is not None else None
    state = prev.guidance_state() if prev is not None else {}  # e.g. VSD's LoRA, continued by later VSD stages
    system = None
    for (name, scfg), (_, ckpt_dir) in zip(stages[first:], dirs):
        preview_dir = run_dir / "previews" / ckpt_dir.relative_to(run_dir / "ckpts")
        saved = states[name]
        if saved is not None and (export_only or saved.step >= scfg.trainer.max_steps):
            log.info("stage %s: complete, loading %s", name, saved.path)
            system = load_system(scfg, saved.path, prior, state)
        else:
            system = Text3DSystem(scfg, prior=prior, guidance_state=state)
            if prev is not None and saved is None:
                system.init_from(prev)
            log.info("stage %s: %s for %d steps", name, "resuming" if saved else "training", scfg.trainer.max_steps)
            _train_stage(name, scfg, system, saved, ckpt_dir, preview_dir, run_dir)
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

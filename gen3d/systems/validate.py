"""Checks of a text-to-3D run done before anything is written, and where a run starts (--stage/--from)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from gen3d.config import read_yaml
from gen3d.diffusion.prior import resolve_model
from gen3d.diffusion.prompts import check_vocabulary
from gen3d.errors import UserError
from gen3d.guidance import guidance_type
from gen3d.methods import system_of
from gen3d.representations import REPRESENTATIONS, representation
from gen3d.systems import latent_mode
from gen3d.systems.config import Text3DConfig
from gen3d.systems.memory import check_memory
from gen3d.systems.particles import particles_of_rank
from gen3d.systems.stages import resume_plan, stage_configs, stage_index
from gen3d.utils.device import prior_dtype, resolve_accelerator
from gen3d.utils.distributed import world_size
from gen3d.utils.schedule import check_positive_ints, check_schedule


def check_config(cfg: Text3DConfig) -> None:
    """One stage's cross-field checks that types alone cannot express (UserError on failure)."""
    if not cfg.prompt or not cfg.prompt.strip():
        raise UserError('the prompt is empty: pass --prompt "a red cube"')
    prior_dtype(cfg.model_dtype, torch.device("cpu"))  # UserError for an unknown model_dtype
    representation(cfg.representation).check(cfg)  # UserError for an unknown one (naming the known ones)
    check_guidance = guidance_type(cfg.guidance.type).check
    if check_guidance is not None:
        check_guidance(cfg)  # e.g. VSD's lora_model against the prior
    for key, spec in (("camera.height", cfg.camera.height), ("camera.width", cfg.camera.width)):
        check_positive_ints(spec, key)
    check_positive_ints(cfg.trainer.batch_size, "trainer.batch_size")
    for term, spec in cfg.loss.other.items():
        check_schedule(spec, f"loss.other.{term}")
    latent_mode.check_config(cfg)


def check_stages(stages: list[tuple[str, Text3DConfig]]) -> None:
    """Across stages: the first one must start a method; latent mode the same throughout."""
    name, first = stages[0]
    if not representation(first.representation).can_start:
        starters = ", ".join(REPRESENTATIONS.where(lambda r: r.can_start))
        raise UserError(
            f"the first stage ('{name}') cannot use representation '{first.representation}': it starts "
            f"from a previous stage's particles (a method starts with one of: {starters})"
        )
    latent_mode.check_stages([stage_cfg for _, stage_cfg in stages])  # rgb_as_latents: VAE etc.


def _flat(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_from_run(from_run: Path, cfg: Text3DConfig, stages, first: int) -> Path:
    saved = from_run / "config.yaml"
    if not saved.is_file():
        raise UserError(f"--from: '{from_run}' is not a gen3d run (no config.yaml)")
    other = read_yaml(saved)
    if system_of(other.get("system")) != system_of(cfg.system) or other.get("name") != cfg.name:
        raise UserError(f"--from: '{from_run}' is a '{other.get('name')}' run, not '{cfg.name}'")
    theirs = {"particles": other.get("particles", 1), **_flat(other.get("geometry") or {}, "geometry.")}
    mine = {
        "particles": cfg.particles,
        **_flat(OmegaConf.to_container(OmegaConf.structured(cfg.geometry)), "geometry."),
    }
    for key in sorted(set(theirs) & set(mine)):  # what the checkpoint's tensors are shaped by
        if theirs[key] != mine[key]:
            raise UserError(
                f"--from: '{from_run}' was trained with {key}={theirs[key]!r}, this run has {mine[key]!r}: its "
                f"checkpoint cannot start this run (use the same {key}, or start at the first stage)"
            )
    prev_name = stages[first - 1][0]
    ckpt = from_run / "ckpts" / prev_name / "last.ckpt"
    if not ckpt.is_file():
        raise UserError(f"--from: '{from_run}' has no checkpoint of stage '{prev_name}' ({ckpt})")
    return ckpt


def start_point(
    cfg: Text3DConfig, run_dir: Path | None, stage: str | None = None, from_run: Path | None = None
) -> tuple[list, int, Path | None]:
    """(the stages' configs, index of the first stage to run, checkpoint of the stage before it or
    None); UserError when a stage's config or --stage / --from do not fit."""
    stages = stage_configs(cfg)
    for _, stage_cfg in stages:
        check_config(stage_cfg)
    check_stages(stages)
    if from_run is not None and stage is None:
        raise UserError("--from needs --stage (the stage to start at)")
    first = stage_index(stages, stage) if stage else 0
    if first == 0 and from_run is not None:
        raise UserError(
            f"--from: stage '{stages[0][0]}' is the first stage and starts from scratch: drop --from "
            "(or name a later --stage)"
        )
    if first == 0:
        return stages, 0, None
    if from_run is not None:
        return stages, first, _check_from_run(Path(from_run), cfg, stages, first)
    prev = stages[first - 1][0]
    prev_ckpt = run_dir / "ckpts" / prev / "last.ckpt" if run_dir is not None else None
    if prev_ckpt is None or not prev_ckpt.is_file():
        raise UserError(
            f"--stage {stage}: needs the checkpoint of stage '{prev}': pass --from RUN_DIR (or --resume RUN_DIR)"
        )
    return stages, first, prev_ckpt


def validate(
    cfg: Text3DConfig,
    run_dir: Path | None = None,
    stage: str | None = None,
    from_run: Path | None = None,
    resume: Path | None = None,
    export_only: bool = False,
) -> None:
    """Checks done before anything is written: every stage's config, --stage/--from, the checkpoints a
    resume continues (they load and fit the config), the processes, the model and the prompt."""
    device = resolve_accelerator(cfg)  # UserError for an unknown device, or CUDA on a machine without
    stages, first, prev_ckpt = start_point(cfg, run_dir, stage, from_run)
    resume_plan(cfg, stages, first, prev_ckpt, run_dir, resume, export_only)
    world = world_size(cfg.trainer.devices)
    particles_of_rank(cfg.particles, 0, world)  # they must divide over the processes
    for _, stage_cfg in stages:
        check_memory(stage_cfg, device, world)
    check_vocabulary(resolve_model(cfg.model), cfg.prompt)

"""Multi-stage methods: each stage is the base config with its own overrides (typed and checked).

`--steps N` (`with_steps`) is the total of a run: a staged method splits N over its stages in
proportion to the stages' configured `trainer.max_steps` (each stage at least 1 step), and writes
each share into that stage's overrides, so config.yaml (and a later --resume) holds the plan.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from gen3d.config import build_config, literal, plain_config, stage_position
from gen3d.errors import UserError


def stage_configs(cfg) -> list[tuple[str, object]]:
    """[(stage name, full config of that stage)]; a config without `stages` is one stage 'main'."""
    if not cfg.stages:
        return [("main", cfg)]
    base = literal(plain_config(cfg))  # resolved: its strings are data; step schedules in place
    base["stages"] = []
    out, seen = [], set()
    for i, stage in enumerate(cfg.stages):
        if stage.name in seen:
            raise UserError(f"stage name '{stage.name}' is used twice")
        seen.add(stage.name)
        try:  # typed sections (guidance) are retyped when a stage changes their type
            out.append((stage.name, build_config(type(cfg), base, dict(stage.overrides))))
        except UserError as err:
            raise UserError(f"stages[{i}] ('{stage.name}') overrides: {err}") from None
    return out


def stage_index(stages: list[tuple[str, object]], name: str) -> int:
    return stage_position([n for n, _ in stages], name)


def split_steps(total: int, configured: list[int]) -> list[int]:
    """`total` steps over stages in proportion to their configured steps (largest remainders; each >= 1)."""
    weights = configured if sum(configured) > 0 else [1] * len(configured)
    exact = [total * w / sum(weights) for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return [max(1, n) for n in shares]


def with_steps(cfg, total: int):
    """The config with `--steps total` applied: trainer.max_steps, or split over the stages."""
    if not getattr(cfg, "stages", None):
        return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=total))
    configured = [stage_cfg.trainer.max_steps for _, stage_cfg in stage_configs(cfg)]
    stages = []
    for stage, n in zip(cfg.stages, split_steps(total, configured)):
        overrides = dict(stage.overrides)
        overrides["trainer"] = {**(overrides.get("trainer") or {}), "max_steps": n}
        stages.append(dataclasses.replace(stage, overrides=overrides))
    return dataclasses.replace(cfg, stages=stages)


def _particles_in(state_dict: dict) -> int:
    return len({k.split(".")[1] for k in state_dict if k.startswith("scenes.")})


def check_stage_checkpoint(cfg, state, what: str) -> None:
    """UserError unless a checkpoint (a gen3d.reliability State) fits a stage built from cfg: its particle
    count and every weight's shape (built on the meta device where possible: nothing is allocated or loaded)."""
    import torch

    from gen3d.reliability.lineage import fits
    from gen3d.systems.text3d import Text3DSystem

    held = _particles_in(state.checkpoint["state_dict"])
    if held and held != cfg.particles:
        raise UserError(
            f"{what}: checkpoint '{state.path}' holds {held} particle(s), this config has {cfg.particles} "
            f"(--particles {held} continues it)"
        )
    try:
        with torch.device("meta"):
            model = Text3DSystem(cfg).state_dict()
    except (NotImplementedError, RuntimeError):  # a part that needs real values to build
        model = Text3DSystem(cfg).state_dict()
    fits(model, state, what)


def resume_plan(cfg, stages, first: int, prev_ckpt, run_dir, resume=None, export_only: bool = False):
    """Which checkpoint every stage continues, checked against its config before anything is written:
    (stage folders, {stage: State or None}, files to archive, the previous stage's State or None)."""
    multi = bool(cfg.stages)
    dirs = [(name, Path(run_dir) / "ckpts" / (name if multi else "")) for name, _ in stages[first:]] if run_dir else []
    if not dirs and prev_ckpt is None:  # a fresh run: nothing to check (and torch need not be imported yet)
        return dirs, {}, [], None
    from gen3d.reliability import lineage
    from gen3d.reliability.checkpoints import newest_state

    states, archive = lineage.plan(dirs, Path(resume) if resume else None, export_only)
    cfgs = dict(stages)
    for name, state in states.items():
        if state is not None:
            check_stage_checkpoint(cfgs[name], state, f"stage '{name}'" if multi else "this run")
        elif export_only:
            raise UserError(f"--export-only: stage '{name}' has no checkpoint in {dict(dirs)[name]}")
    prev = None
    if prev_ckpt is not None:  # --stage/--from: the newest loadable state of the previous stage
        prev_name, prev_cfg = stages[first - 1]
        prev = newest_state(Path(prev_ckpt).parent)
        if prev is None or prev.step < prev_cfg.trainer.max_steps:
            raise UserError(
                f"stage '{prev_name}' of '{Path(prev_ckpt).parent}' is not complete (no checkpoint at its last step)"
            )
        check_stage_checkpoint(prev_cfg, prev, f"stage '{prev_name}'")
    return dirs, states, archive, prev

"""Multi-stage methods: each stage is the base config with its own overrides (typed and checked)."""

from __future__ import annotations

from omegaconf import OmegaConf

from gen3d.config import build_config
from gen3d.errors import UserError


def stage_configs(cfg) -> list[tuple[str, object]]:
    """[(stage name, full config of that stage)]; a config without `stages` is one stage 'main'."""
    if not cfg.stages:
        return [("main", cfg)]
    base = OmegaConf.to_container(OmegaConf.structured(cfg))
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
    names = [n for n, _ in stages]
    if name not in names:
        raise UserError(f"unknown stage '{name}' (this config's stages: {', '.join(names)})")
    return names.index(name)

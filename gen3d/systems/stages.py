"""Multi-stage methods: each stage is the base config with its own overrides (typed and checked)."""
from __future__ import annotations

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gen3d.config import to_dataclass
from gen3d.errors import UserError


def stage_configs(cfg) -> list[tuple[str, object]]:
    """[(stage name, full config of that stage)]; a config without `stages` is one stage 'main'."""
    if not cfg.stages:
        return [("main", cfg)]
    base = OmegaConf.structured(cfg)
    base.stages = []
    out, seen = [], set()
    for i, stage in enumerate(cfg.stages):
        if stage.name in seen:
            raise UserError(f"stage name '{stage.name}' is used twice")
        seen.add(stage.name)
        try:
            merged = OmegaConf.merge(base, OmegaConf.create(dict(stage.overrides)))
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", "?")
            raise UserError(f"stages[{i}] ('{stage.name}') overrides: bad key or value '{key}': "
                            f"{str(err).splitlines()[0]}") from None
        out.append((stage.name, to_dataclass(merged)))
    return out


def stage_index(stages: list[tuple[str, object]], name: str) -> int:
    names = [n for n, _ in stages]
    if name not in names:
        raise UserError(f"unknown stage '{name}' (this config's stages: {', '.join(names)})")
    return names.index(name)

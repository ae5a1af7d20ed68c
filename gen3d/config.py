"""Typed configs: dataclass schemas merged with YAML files and `key=value` overrides (OmegaConf).

Unknown keys and wrong value types are UserErrors that name the full key and, for unknown
keys, suggest the nearest valid one. Values that change with the step use the schedule type
of `gen3d.utils.schedule` (fields annotated `Any` and named in the schema's `SCHEDULES`).
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from gen3d.errors import UserError
from gen3d.utils.schedule import check_schedule

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str) -> Path:
    """A path as given, or a bare file name inside configs/ (with or without .yaml)."""
    candidates = [Path(name), CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"config file '{name}' not found (looked in . and configs/; available: {known})")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"config file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys, not {type(data).__name__}")
    return data


def _valid_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and child._metadata.object_type not in (None, dict):
            keys.extend(_valid_keys(child, full + "."))
    return keys


def _explain(err: OmegaConfBaseException, schema: DictConfig) -> str:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        valid = _valid_keys(schema)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        if not near:  # match the last component alone ("guidance.scale" -> "guidance.guidance_scale")
            leaf = key.rsplit(".", 1)[-1]
            siblings = [k for k in valid if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0] or "." not in key]
            near = [k for k in siblings if leaf in k.rsplit(".", 1)[-1]][:1]
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return f"unknown config key '{key}'{hint}"
    first = str(err).splitlines()[0]
    return f"config key '{key}': {first}"


def _check_schedules(cfg: Any, prefix: str = "") -> None:
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in getattr(cfg, "SCHEDULES", ()):
            check_schedule(value, prefix + f.name)
        _check_schedules(value, prefix + f.name + ".")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_config(schema_cls: type, *layers: dict | list[str]) -> Any:
    """Merge layers (dicts, or lists of 'a.b=value' strings) onto the schema; return a dataclass."""
    schema = OmegaConf.structured(schema_cls)
    merged = schema
    for layer in layers:
        raw = layer
        if isinstance(layer, list):
            for item in layer:
                if "=" not in item:
                    raise UserError(f"override '{item}' must look like key=value")
            try:
                layer = OmegaConf.from_dotlist(layer)
            except OmegaConfBaseException as err:
                raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise UserError(_explain(err, schema)) from None
        except (TypeError, ValueError) as err:  # e.g. indexing into a list field: stages[1].x=...
            keys = " ".join(raw) if isinstance(raw, list) else "the config"
            raise UserError(f"cannot apply {keys}: {err} (a list such as 'stages' is replaced whole: "
                            "stages=[{name: ..., overrides: {...}}, ...])") from None
    return to_dataclass(merged)


def to_dataclass(conf: DictConfig) -> Any:
    """A structured DictConfig as its dataclass, with plain lists/dicts inside `Any` fields."""
    cfg = OmegaConf.to_object(conf)
    _to_plain_schedules(cfg)
    _check_schedules(cfg)
    return cfg


def _to_plain_schedules(cfg: Any) -> None:
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _to_plain_schedules(value)
        else:
            setattr(cfg, f.name, _plain(value))


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (what runs write to config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

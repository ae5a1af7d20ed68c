"""Typed configs: dataclass schemas merged with YAML files and `key=value` overrides (OmegaConf).

Unknown keys and wrong value types are UserErrors that name the full key and, for unknown
keys, suggest the nearest valid one. Values that change with the step use the schedule type
of `gen3d.utils.schedule` (fields annotated `Any` and named in the schema's `SCHEDULES`). Any typed
field a schema names in `STEPPED` (a value its part reads when it is used, not once when the part is
built) may also be a step schedule `{milestones: [...], values: [...]}`: each value is type- and
range-checked as the field itself, the built config holds the schedule, and `step_schedules` /
`apply_step` give a run the value of every such key at its step. A step schedule on any other typed
field is a UserError that names the keys of that section that can follow one.

A section whose schema depends on a name inside it (`guidance: {type: vsd, ...}`) is a field
declared with `typed_section(schema_of)`: it is merged as a mapping, then checked against the
dataclass `schema_of(value["type"])`. When a later layer changes its `type`, the keys of earlier
layers that the new type does not have are dropped (a stage switching from VSD to SDS keeps the
shared keys); keys a layer sets itself must belong to its type. A schema may name keys that
moved (`MOVED_KEYS = {"old.key": "new.key"}`): using the old one is an error that names the new one.

A field's valid values are declared with it: `height: int = ranged(64, ge=8)`, `precision: str =
ranged("32-true", choices=PRECISIONS)`, `name: str = ranged("x", pattern=NAME, doc="...")`. Every
built config is checked against them (the values inside a schedule too), and no float anywhere may be
NaN or infinite; the error names the key, the valid range and the value. User strings (--prompt, a
saved config) are data: `literal()` escapes them so that OmegaConf never interpolates `${...}` in them.

A list is replaced whole by a later layer. In a `key=value` layer of a schema with `stages`,
`stages.NAME.key=value` instead sets one key in the overrides of the stage named NAME.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from gen3d.errors import UserError
from gen3d.resources import configs_dir
from gen3d.utils.schedule import check_schedule, check_step_schedule, is_step_schedule, schedule_value, schedule_values

CONFIG_DIR = configs_dir()  # the checkout's configs/, or the installed copy
# Lightning precision names (text-to-3D and video trainers)
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64")
DEVICES = ("auto", "cpu", "cuda", "gpu")  # a config's `device` (gpu: Lightning's name for cuda)
# a run-directory component: no path separator, not '.' or '..', not hidden (the config's `name`)
NAME = r"[A-Za-z0-9_][A-Za-z0-9._+-]*"
NAME_DOC = "a folder name of letters, digits, '_', '-', '+' and '.' (no '/' and not starting with '.')"


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a config field accepts: bounds (ge, gt, le, lt), choices, or a regular expression."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    pattern: str | None = None
    doc: str | None = None  # how the pattern reads in an error

    def accepts(self, v: Any) -> bool:
        if self.choices is not None:
            return v in self.choices
        if self.pattern is not None:
            return isinstance(v, str) and re.fullmatch(self.pattern, v) is not None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return True  # the type check is OmegaConf's
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.pattern is not None:
            return self.doc or f"matching {self.pattern}"
        lo = (">=", self.ge) if self.ge is not None else (">", self.gt) if self.gt is not None else None
        hi = ("<=", self.le) if self.le is not None else ("<", self.lt) if self.lt is not None else None
        if lo and hi:
            return f"in {'[' if lo[0] == '>=' else '('}{lo[1]}, {hi[1]}{']' if hi[0] == '<=' else ')'}"
        op, bound = lo or hi or ("any", "value")
        return f"{op} {bound}"


def ranged(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A dataclass field with its valid values (`Range` keywords): `ranged(64, ge=8)`. For a list or
    tuple value (a pair of bounds) the rule applies to each element; for a schedule, to its values."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"range": Range(**rule)})
    return dataclasses.field(default=default, metadata={"range": Range(**rule)})


def _first_non_finite(value: Any, key: str) -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    if dataclasses.is_dataclass(value):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for name, item in items:
        sub = f"{key}{name}" if str(name).startswith("[") or not key else f"{key}.{name}"
        found = _first_non_finite(item, sub)
        if found:
            return found
    return None


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """UserError for the first field outside its declared `Range`, or any NaN / infinite float."""
    found = _first_non_finite(cfg, prefix.rstrip("."))
    if found:
        raise UserError(f"config key '{found[0]}' must be a finite number (got {found[1]})")
    _check_declared(cfg, prefix)


def _check_declared(cfg: Any, prefix: str) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_declared(value, f"{prefix}{f.name}.")
            continue
        rule = f.metadata.get("range")
        if rule is None or value is None:
            continue
        scheduled = f.name in getattr(cfg, "SCHEDULES", ()) or (
            f.name in getattr(cfg, "STEPPED", ()) and is_step_schedule(value)
        )
        values = schedule_values(value) if scheduled else [value]
        values = [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
        for v in values:
            if v is not None and not rule.accepts(v):
                raise UserError(f"config key '{prefix}{f.name}' must be {rule.describe()} (got {v!r})")


def literal(value: Any) -> Any:
    """User data (strings, or dicts / lists of them) escaped so that OmegaConf keeps `${...}` as text."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(literal(v) for v in value)
    return value


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"config file '{path}' is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise UserError(f"cannot read config file '{path}': {err.strerror or err}") from None
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


def typed_section(schema_of: Callable[[str], type], default: str, type_key: str = "type") -> Any:
    """A dataclass field (annotate it `Any`) holding a section typed by its own `type_key` entry:
    schema_of(name) -> the section's dataclass (UserError for an unknown name)."""
    return dataclasses.field(
        default_factory=lambda: {type_key: default}, metadata={"schema_of": schema_of, "type_key": type_key}
    )


def _typed_sections(schema_cls: type) -> list[dataclasses.Field]:
    if not dataclasses.is_dataclass(schema_cls):
        return []
    return [f for f in dataclasses.fields(schema_cls) if "schema_of" in f.metadata]


def _as_mapping(layer: Any) -> dict:
    if isinstance(layer, (DictConfig, ListConfig)):
        return OmegaConf.to_container(layer, resolve=False)
    return layer if isinstance(layer, dict) else {}


def _retype(merged: DictConfig, layer: Any, schema_cls: type) -> None:
    """Before merging `layer`: drop the keys of a typed section that a new `type` in the layer lacks."""
    layer = _as_mapping(layer)
    for f in _typed_sections(schema_cls):
        section, key = layer.get(f.name), f.metadata["type_key"]
        if not isinstance(section, dict) or key not in section:
            continue
        current = _as_mapping(merged[f.name])
        if current.get(key) == section[key]:
            continue
        allowed = {g.name for g in dataclasses.fields(f.metadata["schema_of"](section[key]))}
        merged[f.name] = {k: v for k, v in current.items() if k in allowed}


def _explain(err: OmegaConfBaseException, schema: DictConfig, prefix: str = "") -> str:
    key = getattr(err, "full_key", None) or "?"
    moved = getattr(schema._metadata.object_type, "MOVED_KEYS", {})
    if key in moved:
        return f"config key '{prefix}{key}' is now '{prefix}{moved[key]}'"
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        valid = _valid_keys(schema)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        if not near:  # match the last component alone ("guidance.scale" -> "guidance.guidance_scale")
            leaf = key.rsplit(".", 1)[-1]
            siblings = [k for k in valid if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0] or "." not in key]
            near = [k for k in siblings if leaf in k.rsplit(".", 1)[-1]][:1]
        hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
        return f"unknown config key '{prefix}{key}'{hint}"
    first = str(err).splitlines()[0]
    return f"config key '{prefix}{key}': {first}"


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


@functools.cache
def _hints(schema_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(schema_cls)


def _lift_step_schedules(layer: Any, schema_cls: type, prefix: str, path: str, found: dict, whole: list) -> Any:
    """The layer with every step schedule on a typed (non-`Any`) field replaced by its first value, for
    OmegaConf's type check; the schedules go into `found` by dotted key (a later layer's plain value for the
    same key removes it). A schedule on a field not in its schema's `STEPPED` is a UserError. `whole` gets
    the keys of `SCHEDULES` fields the layer sets to a list or mapping: they replace, not merge (a ramp
    list after a step-schedule mapping or the other way round)."""
    if not isinstance(layer, dict) or not dataclasses.is_dataclass(schema_cls):
        return layer
    names = {f.name for f in dataclasses.fields(schema_cls)}
    schedules, stepped = getattr(schema_cls, "SCHEDULES", ()), getattr(schema_cls, "STEPPED", ())
    out = {}
    for key, value in layer.items():
        full, hint = path + str(key), _hints(schema_cls).get(key) if key in names else None
        if dataclasses.is_dataclass(hint):
            out[key] = _lift_step_schedules(value, hint, prefix, full + ".", found, whole)
            continue
        if key in schedules and isinstance(value, (dict, list)):
            whole.append(full)
        if hint is None or hint is Any or key in schedules or not is_step_schedule(value):
            found.pop(full, None)
            out[key] = _widen_int(value, hint)
            continue
        check_step_schedule(value, prefix + full)
        if key not in stepped:
            section = f"'{(prefix + path).rstrip('.')}'" if prefix or path else "the top level"
            can = ", ".join(sorted(stepped + schedules)) or "none"
            raise UserError(
                f"config key '{prefix}{full}' cannot follow a schedule: it is read once, when the stage's "
                f"parts are built (keys of {section} that can: {can})"
            )
        found[full] = value
        out[key] = value["values"][0]
    return out


def _widen_int(value: Any, hint: Any) -> Any:
    """An int given to a float-or-text field (`export.threshold=10`, a Union OmegaConf will not widen)
    as a float; anything else unchanged."""
    args = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else ()
    if float in args and int not in args and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _owner(cfg: Any, key: str) -> tuple[Any, str]:
    """The (section dataclass, field name) a dotted key of a built config names."""
    *parents, leaf = key.split(".")
    return functools.reduce(getattr, parents, cfg), leaf


def _place_step_schedules(cfg: Any, found: dict, prefix: str) -> None:
    """Put each lifted schedule back into the built config with its values converted to the field's type
    (OmegaConf's check), then check them as the field (`check_ranges`: its range, finite)."""
    for key, spec in found.items():
        owner, leaf = _owner(cfg, key)
        probe, values = OmegaConf.structured(type(owner)), []
        for v in spec["values"]:
            try:
                OmegaConf.update(probe, leaf, v, merge=False)
            except OmegaConfBaseException as err:
                raise UserError(
                    f"config key '{prefix}{key}': schedule value {v!r}: {str(err).splitlines()[0]}"
                ) from None
            v = _plain(probe[leaf])
            values.append(tuple(v) if isinstance(getattr(owner, leaf), tuple) else v)
        setattr(owner, leaf, {"milestones": list(spec["milestones"]), "values": values})
    if found:
        check_ranges(cfg, prefix)


def step_schedules(cfg: Any, prefix: str = "") -> dict[str, dict]:
    """{dotted key: schedule} of the `STEPPED` fields of a built config that hold a step schedule."""
    out: dict[str, dict] = {}
    if not dataclasses.is_dataclass(cfg):
        return out
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(step_schedules(value, f"{prefix}{f.name}."))
        elif f.name in getattr(cfg, "STEPPED", ()) and is_step_schedule(value):
            out[prefix + f.name] = value
    return out


def apply_step(cfg: Any, schedules: dict[str, dict], step: int) -> dict[str, Any]:
    """Set each scheduled key of a (live, resolved) config to its value at `step`, in place; returns the
    keys whose value changed, with their new values. The parts read these fields when they use them."""
    changed = {}
    for key, spec in schedules.items():
        owner, leaf = _owner(cfg, key)
        value = schedule_value(spec, step)
        if getattr(owner, leaf) != value:
            setattr(owner, leaf, value)
            changed[key] = value
    return changed


def plain_config(cfg: Any) -> dict:
    """A built config as plain dicts and lists, step schedules in place (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


STAGE_ITEM = re.compile(r"stages\.([^.=\[\]]+)\.([^=]+)=(.*)", re.S)


def stage_position(names: list[str], name: str) -> int:
    """The index of the stage called `name` among `names`; a UserError naming the known ones otherwise."""
    if name not in names:
        known = ", ".join(names) if names else "none: this config has one stage"
        raise UserError(f"unknown stage '{name}' (this config's stages: {known})")
    return names.index(name)


def _parse_dotlist(items: list[str]) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as err:
        raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None


def _override_stage(merged: DictConfig, item: str) -> None:
    """`stages.NAME.key=value`: set one key in the overrides of the stage named NAME (the rest of the list
    stays as the earlier layers made it). The stage's config is type-checked when the stages are built."""
    name, key, value = STAGE_ITEM.match(item).groups()
    try:
        stage = merged.stages[stage_position([stage.name for stage in merged.stages], name)]
    except UserError as err:
        raise UserError(f"{item}: {err}") from None
    stage.overrides = OmegaConf.merge(stage.overrides, _parse_dotlist([f"{key}={value}"]))


def build_config(schema_cls: type, *layers: dict | list[str], prefix: str = "") -> Any:
    """Merge layers (dicts, or lists of 'a.b=value' strings) onto the schema; return a dataclass.
    prefix: where this schema sits in a bigger config, for messages ("guidance.")."""
    schema = OmegaConf.structured(schema_cls)
    merged, lifted = schema, {}
    for layer in layers:
        raw, by_stage = layer, []
        if isinstance(layer, list):
            for item in layer:
                if "=" not in item:
                    raise UserError(f"override '{item}' must look like key=value")
            if "stages" in schema:
                by_stage = [item for item in layer if STAGE_ITEM.match(item)]
                layer = [item for item in layer if item not in by_stage]
            layer = _parse_dotlist(layer)
        whole: list[str] = []
        layer = _lift_step_schedules(_as_mapping(layer), schema_cls, prefix, "", lifted, whole)
        try:
            for key in whole:
                OmegaConf.update(merged, key, None, merge=False)
            _retype(merged, layer, schema_cls)
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            raise UserError(_explain(err, schema, prefix)) from None
        except (TypeError, ValueError) as err:  # e.g. indexing into a list field: stages[1].x=...
            keys = " ".join(raw) if isinstance(raw, list) else "the config"
            raise UserError(
                f"cannot apply {keys}: {err} (a list such as 'stages' is replaced whole: "
                "stages=[{name: ..., overrides: {...}}, ...]; one stage's key: stages.NAME.key=value)"
            ) from None
        for item in by_stage:
            _override_stage(merged, item)
    try:
        cfg = to_dataclass(merged, prefix)
    except OmegaConfBaseException as err:  # e.g. ${nosuch} in a YAML value or an override
        raise UserError(_explain(err, schema, prefix)) from None
    _place_step_schedules(cfg, lifted, prefix)
    return cfg


def to_dataclass(conf: DictConfig, prefix: str = "") -> Any:
    """A structured DictConfig as its dataclass, with plain lists/dicts inside `Any` fields and typed
    sections (`typed_section`) as their dataclasses."""
    cfg = OmegaConf.to_object(conf)
    _to_plain_schedules(cfg)
    _check_schedules(cfg, prefix)
    for f in _typed_sections(type(cfg)):
        value = _plain(getattr(cfg, f.name))
        if dataclasses.is_dataclass(value):
            continue
        value = dict(value or {})
        default = f.default_factory()[f.metadata["type_key"]]
        schema = f.metadata["schema_of"](value.get(f.metadata["type_key"], default))
        setattr(cfg, f.name, build_config(schema, value, prefix=f"{prefix}{f.name}."))
    check_ranges(cfg, prefix)
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
    return OmegaConf.to_yaml(OmegaConf.create(plain_config(cfg)))

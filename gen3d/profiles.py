"""Prior profiles: the settings that depend on the prior, applied on top of a method's paper-scale config.

A method config (configs/dreamfusion.yaml, ...) holds the method at paper scale on Stable Diffusion, with
threestudio's settings as the reference (docs/methods.md cites each value). A profile is a set of
overrides per method, `configs/profiles/<profile>/<method name>.yaml`, merged right after the method
config and before the command line (schema defaults < method YAML < profile < --flags < key=value):

- `sd`: Stable Diffusion, the method config as it is (no overrides);
- `builtin`: the project's tiny builtin prior on a CPU: the quickstart's sizes and step counts.

`profile: auto` (the default) picks the first registered profile that claims the run's `--model`:
`builtin` claims the builtin prior and pipelines of its kind (its closed-vocabulary tokenizer, e.g.
random-weight copies of it), `sd` every other model. `profile=builtin` / `profile=sd` force one.
The resolved config.yaml names the profile in force, and so does the run's first log lines.

A run resumed from its own config.yaml (no --config) is already resolved: no profile is applied again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen3d.config import CONFIG_DIR, build_config, read_yaml
from gen3d.registry import Registry

PROFILE_DIR = CONFIG_DIR / "profiles"
BUILTIN_MAX_LENGTH = 16  # the builtin tokenizer's model_max_length (gen3d.prior.tokenizer.MODEL_MAX_LENGTH)


@dataclass(frozen=True)
class Profile:
    claims: Callable[[str], bool]  # --model -> whether auto picks this profile for it
    about: str  # one phrase for the log line


PROFILES: Registry[Profile] = Registry("prior profile")


def is_builtin_kind(model: str) -> bool:
    """The builtin prior, or a local pipeline folder with its closed-vocabulary tokenizer (no download, and
    no transformers import on the validation path)."""
    if model == "builtin":
        return True
    config = Path(str(model)).expanduser() / "tokenizer" / "tokenizer_config.json"
    try:
        return json.loads(config.read_text()).get("model_max_length") == BUILTIN_MAX_LENGTH
    except (OSError, ValueError):
        return False


PROFILES.register("builtin", Profile(is_builtin_kind, "the builtin prior's CPU settings over the method config"))
PROFILES.register("sd", Profile(lambda model: True, "the method config as it is: paper scale, Stable Diffusion"))
AUTO_ORDER = ("builtin", "sd")  # auto: the first that claims the model


def profile_name(requested: str, model: str) -> str:
    """The profile in force: `requested`, or for `auto` the first one claiming `model`."""
    if requested != "auto":
        PROFILES.get(requested, key="profile")  # UserError for an unknown name, naming the known ones
        return requested
    return next(name for name in AUTO_ORDER if PROFILES.get(name).claims(model))


def profile_file(profile: str, method: str) -> Path:
    return PROFILE_DIR / profile / f"{method}.yaml"


def profile_layer(profile: str, method: str) -> dict:
    """The overrides of `profile` for `method` (empty when it has none for that method, or when the method
    name is no plain file name: `check_name` rejects it next)."""
    path = profile_file(profile, method)
    plain = Path(method).name == method and method not in ("", ".", "..")
    return read_yaml(path) if plain and path.is_file() else {}


def build_with_profile(schema_cls: type, method_cfg: dict, *later: Any, resolved: bool = False) -> Any:
    """The typed config of method_cfg + its prior profile + the later layers (flags, key=value).
    Schemas without a `profile` field, and configs already resolved (a run's own config.yaml), get none."""
    cfg = build_config(schema_cls, method_cfg, *later)
    if resolved or "profile" not in {f.name for f in dataclasses.fields(cfg)}:
        return cfg
    name = profile_name(cfg.profile, cfg.model)
    cfg = build_config(schema_cls, method_cfg, profile_layer(name, cfg.name), *later)
    return dataclasses.replace(cfg, profile=name)


def profile_line(cfg: Any) -> str | None:
    """What the run log says about the profile in force (None: the config has no profile)."""
    name = getattr(cfg, "profile", None)
    if name is None:
        return None
    if name not in PROFILES:  # a run's own config.yaml written before profiles existed: used as it is
        return f"profile: {name} (the run's config.yaml as it is)"
    method = getattr(cfg, "name", "")
    path = profile_file(name, method)
    where = f" ({path.relative_to(CONFIG_DIR.parent)})" if profile_layer(name, method) else ""
    return f"profile: {name}{where}: {PROFILES.get(name).about}"

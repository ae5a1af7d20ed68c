"""Which ControlNet each ControlVideo control uses, checked against the prior before anything is written.

`--controlnet` (config key `controlnet`: one string or a list) names them. Each entry is a folder or a hub
id, `kind=PATH`, or several `kind=PATH` joined by commas:

    --control canny --controlnet /models/sd-controlnet-canny
    --control canny --control depth --controlnet canny=/m/canny --controlnet depth=/m/depth
    --control canny --control depth --controlnet canny=/m/canny,depth=/m/depth
    --control canny --control depth --controlnet /m/canny --controlnet /m/depth    (in --control order)

Entries without a kind go, in order, to the controls no entry names. With the builtin prior, canny falls
back to the shipped `extern/builtin-controlnet-canny`. A hub id is fetched into the Hugging Face cache on
first use (`gen3d.diffusion.hub`). Every ControlNet must be a diffusers `ControlNetModel` (its config.json
says so) built for the prior: the same latent channels, cross-attention width and block channels as the
prior's UNet, whose residuals it adds to; anything else is one UserError line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from gen3d.diffusion.control import CONTROLNET_DIR
from gen3d.diffusion.layout import folder_weights
from gen3d.errors import UserError
from gen3d.resources import shipped_path

BUILTIN_CONTROLNETS = {"canny": shipped_path(CONTROLNET_DIR)}
_NAMED = re.compile(r"^([A-Za-z_]+)=(.+)$")
# unet/config.json keys a ControlNet must share with the prior's UNet (its residuals are added to it)
MATCHING_KEYS = ("in_channels", "cross_attention_dim", "block_out_channels", "layers_per_block")


def controlnet_entries(spec) -> list[str]:
    """The config value (None, a string, a list of strings) -> one entry per ControlNet."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        item = str(item).strip()
        parts = [p.strip() for p in item.split(",")]
        out += parts if all(_NAMED.match(p) for p in parts) else [item]  # a path may hold a comma
    return [e for e in out if e]


def assign_controlnets(spec, kinds: list[str], builtin_model: bool) -> dict[str, str]:
    """kind -> the folder or hub id named for it (see module doc); UserError when they do not pair up."""
    named, unnamed = {}, []
    for entry in controlnet_entries(spec):
        m = _NAMED.match(entry)
        if m and not Path(entry).expanduser().exists():
            kind = m.group(1).lower()
            if kind not in kinds:
                raise UserError(
                    f"--controlnet names a '{kind}' ControlNet but no --control {kind} is given "
                    f"(controls: {', '.join(kinds) or 'none'})"
                )
            if kind in named:
                raise UserError(f"--controlnet names the '{kind}' ControlNet twice")
            named[kind] = m.group(2).strip()
        else:
            unnamed.append(entry)
    if unnamed and not kinds:
        raise UserError("--controlnet is given but no --control: ControlNets need a control (e.g. --control canny)")
    free = [k for k in kinds if k not in named]
    if len(unnamed) > len(free):
        raise UserError(
            f"{len(unnamed) + len(named)} ControlNets for {len(kinds)} controls ({', '.join(kinds)}): "
            "give one per --control, e.g. --controlnet canny=PATH --controlnet depth=PATH"
        )
    out = {**named, **dict(zip(free, unnamed))}
    for kind in kinds:
        if kind not in out and builtin_model and kind in BUILTIN_CONTROLNETS:
            out[kind] = str(BUILTIN_CONTROLNETS[kind])
        if kind not in out:
            raise UserError(
                f"control '{kind}' needs a ControlNet: pass --controlnet PATH (a diffusers ControlNetModel "
                f"folder or hub id, e.g. lllyasviel/sd-controlnet-{kind})"
            )
    return {k: out[k] for k in kinds}


def _locate(name: str, kind: str) -> Path:
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    from gen3d.diffusion.hub import fetch, is_hub_id

    if not is_hub_id(name):
        raise UserError(f"ControlNet '{name}' for control '{kind}' not found: neither a local folder nor a hub id")
    return fetch(name)


def _config(path: Path, what: str) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{what} '{path}' has no readable config.json") from None


def check_controlnet(path: Path, kind: str, unet_config: dict, model: str) -> None:
    """UserError unless `path` is a ControlNetModel folder with weights that fits the prior's UNet."""
    if not path.is_dir():
        raise UserError(f"ControlNet '{path}' for control '{kind}' is not a folder (a diffusers ControlNetModel)")
    cfg = _config(path, f"ControlNet for control '{kind}'")
    cls = cfg.get("_class_name")
    if cls != "ControlNetModel":
        raise UserError(
            f"'{path}' (--controlnet for '{kind}') is not a ControlNet: its config.json names "
            f"{cls or 'no _class_name'}, expected ControlNetModel"
        )
    for key in MATCHING_KEYS:
        theirs, ours = cfg.get(key), unet_config.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            raise UserError(
                f"ControlNet '{path}' for '{kind}' does not fit the prior '{model}': its {key} is {theirs}, "
                f"the prior's UNet has {ours} (a ControlNet made for another model, e.g. SD 1.5 vs 2.x?)"
            )
    folder_weights(path, "", prefer_fp16=False)  # UserError when there are no usable weights


def resolve_controlnets(spec, kinds: list[str], model_path: Path, model: str, builtin_model: bool) -> dict[str, Path]:
    """kind -> checked ControlNet folder, for the prior folder `model_path` (named `model` in messages)."""
    unet_config = _config(Path(model_path) / "unet", f"model '{model}' unet")
    out = {}
    for kind, name in assign_controlnets(spec, kinds, builtin_model).items():
        out[kind] = _locate(name, kind)
        check_controlnet(out[kind], kind, unet_config, model)
    return out


def load_controlnets(paths: dict[str, Path], dtype: torch.dtype = torch.float32):
    """Frozen ControlNetModels, in the order of `paths` (checked folders: `resolve_controlnets`)."""
    from diffusers import ControlNetModel

    nets = []
    for kind, path in paths.items():
        weights = folder_weights(path, "", prefer_fp16=dtype != torch.float32).load_kwargs()
        try:
            net = ControlNetModel.from_pretrained(path, torch_dtype=dtype, **weights)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load ControlNet '{path}' for '{kind}': {str(err).splitlines()[0]}") from None
        nets.append(net.eval().requires_grad_(False))
    return nets

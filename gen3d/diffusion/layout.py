"""Which files of a diffusers pipeline (a local folder or a hub repository) a prior needs, and how to load them.

Pure file-name logic, no weights and no network: used by the hub download (which files to fetch) and by
`load_prior` (which variant / format to ask `from_pretrained` for). Real pipelines hold several copies of
each weight (`diffusion_pytorch_model.safetensors`, `.fp16.safetensors`, `.bin`, `.non_ema.bin`, root-level
`.ckpt` files); a prior uses one per component:

    safetensors before .bin; the fp16 variant first when downloading (half the bytes; upcast on load
    when the run is float32), the full-precision file first when loading a folder that holds both in
    float32. Other variants (non_ema, ema) and formats (flax, onnx, ckpt) are never used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gen3d.errors import UserError

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what a Prior loads
REQUIRED = ("unet", "text_encoder", "tokenizer", "scheduler")  # the VAE is absent from pixel-space priors
WEIGHTED = ("unet", "vae", "text_encoder")  # components that hold weights
WEIGHT_EXTS = (
    ".safetensors",
    ".bin",
    ".ckpt",
    ".pt",
    ".pth",
    ".msgpack",
    ".h5",
    ".onnx",
    ".onnx_data",
    ".pb",
    ".gguf",
    ".onnx.data",
)
FORMATS = ("safetensors", "bin")  # what from_pretrained reads (in order of preference)
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


@dataclass(frozen=True)
class WeightChoice:
    """The weight files of one component that a load reads."""

    format: str  # safetensors | bin
    variant: str | None  # fp16 | None
    files: tuple[str, ...]  # names inside the component folder (shards and their index included)

    def load_kwargs(self) -> dict:
        """Keyword arguments for diffusers' / transformers' from_pretrained."""
        return {"variant": self.variant, "use_safetensors": self.format == "safetensors"}


def weight_kind(name: str) -> tuple[str, str | None] | None:
    """(format, variant) of a weight file or shard index name; None for other files (configs, vocab).

    'diffusion_pytorch_model.fp16.safetensors' -> ('safetensors', 'fp16');
    'model.safetensors.index.fp16.json' -> ('safetensors', 'fp16'); 'v1-5-pruned.ckpt' -> ('ckpt', None).
    """
    base = name.rsplit("/", 1)[-1]
    for fmt in FORMATS:
        marker = f".{fmt}.index"
        if marker in base and base.endswith(".json"):
            stem, rest = base.split(marker, 1)
            tags = [t for t in (stem.split(".")[1:] + rest.split(".")[:-1]) if t]
            return fmt, tags[-1] if tags else None
    ext = next((e for e in sorted(WEIGHT_EXTS, key=len, reverse=True) if base.endswith(e)), None)
    if ext is None:
        return None
    stem = _SHARD.sub("", base[: -len(ext)])
    tags = stem.split(".")[1:]
    return ext[1:], tags[-1] if tags else None


def choose_weights(names: list[str], prefer_fp16: bool) -> WeightChoice | None:
    """The one group of weight files to load among a component folder's file names (None: no usable weights)."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for name in names:
        kind = weight_kind(name)
        if kind is not None:
            groups.setdefault(kind, []).append(name)
    variants = ("fp16", None) if prefer_fp16 else (None, "fp16")
    for fmt in FORMATS:
        for variant in variants:
            if (fmt, variant) in groups:
                return WeightChoice(fmt, variant, tuple(sorted(groups[(fmt, variant)])))
    return None


def _components(index: dict) -> list[str]:
    """Components named in model_index.json that a prior loads (entries such as [null, null] are absent)."""
    return [c for c in COMPONENTS if isinstance(index.get(c), list) and index[c] and index[c][0] is not None]


def needed_files(repo: str, repo_files: list[str], index: dict | None, prefer_fp16: bool = True) -> list[str]:
    """The exact files of a hub repository to download for a prior (index: its model_index.json, None for a
    single-model repository such as a ControlNet: config.json and one set of weights at the root)."""
    if index is None:
        root = [f for f in repo_files if "/" not in f]
        if "config.json" not in root:
            raise UserError(
                f"hub repository '{repo}' has neither model_index.json nor config.json: "
                "not a diffusers pipeline or model"
            )
        return _component_files(repo, "", root, prefer_fp16)
    comps = _components(index)
    missing = [c for c in REQUIRED if c not in comps or not any(f.startswith(c + "/") for f in repo_files)]
    if missing:
        raise UserError(
            f"hub repository '{repo}' has no '{missing[0]}' component: not a text-to-image "
            "diffusers pipeline (a prior needs unet, text_encoder, tokenizer, scheduler)"
        )
    out = ["model_index.json"]
    for comp in comps:
        inside = [f[len(comp) + 1 :] for f in repo_files if f.startswith(comp + "/")]
        out += [f"{comp}/{f}" for f in _component_files(repo, comp, inside, prefer_fp16)]
    return out


def _component_files(repo: str, comp: str, names: list[str], prefer_fp16: bool) -> list[str]:
    plain = [n for n in names if weight_kind(n) is None]
    if comp and comp not in WEIGHTED:
        return sorted(plain)
    choice = choose_weights(names, prefer_fp16)
    if choice is None:
        where = f"{comp}/" if comp else "its root"
        raise UserError(f"hub repository '{repo}' has no safetensors or .bin weights in {where}")
    return sorted(plain) + list(choice.files)


def read_index(path: Path) -> dict:
    """model_index.json of a pipeline folder as a dict (UserError when unreadable)."""
    return read_json(Path(path) / "model_index.json")


def read_json(file: Path) -> dict:
    """A JSON config file (a mapping) as a dict; UserError when it is missing, unreadable or corrupt."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"cannot read {file}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read {file}: expected a JSON object, got {type(data).__name__}")
    return data


def folder_weights(path: Path, comp: str, prefer_fp16: bool) -> WeightChoice:
    """The weights a load of component `comp` of a local pipeline folder reads ('' for a single-model folder)."""
    folder = Path(path) / comp if comp else Path(path)
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    choice = choose_weights(names, prefer_fp16)
    if choice is None:
        label = f"'{comp}' component ({folder})" if comp else f"folder {folder}"
        raise UserError(f"no safetensors or .bin weights in the {label}")
    return choice


def check_pipeline_folder(path: Path, name: str) -> list[str]:
    """UserError unless `path` holds a loadable text-to-image pipeline; returns the components it has."""
    index = read_index(path)
    comps = _components(index)
    for comp in REQUIRED:
        if comp not in comps:
            raise UserError(
                f"model '{name}': model_index.json has no '{comp}' entry (found: "
                f"{', '.join(sorted(k for k in index if not k.startswith('_')))})"
            )
        if not (Path(path) / comp).is_dir():
            raise UserError(
                f"model '{name}': the folder {path} has no {comp}/ (model_index.json lists it); "
                "the download or copy is incomplete"
            )
    for comp in WEIGHTED:
        if comp in comps and (Path(path) / comp).is_dir():
            if not (Path(path) / comp / "config.json").is_file():
                raise UserError(f"model '{name}': {Path(path) / comp / 'config.json'} is missing")
            read_json(Path(path) / comp / "config.json")  # opened, not loaded: no weights are read
            choice = folder_weights(path, comp, prefer_fp16=False)
            if choice.format == "safetensors":
                for f in choice.files:
                    if f.endswith(".safetensors"):
                        check_safetensors(Path(path) / comp / f)
    if "scheduler" in comps:
        read_json(Path(path) / "scheduler" / "scheduler_config.json")
    tokenizer = Path(path) / "tokenizer"
    if "tokenizer" in comps and not any(p.is_file() for p in tokenizer.iterdir()):
        raise UserError(f"model '{name}': the tokenizer folder {tokenizer} is empty")
    return comps


def check_safetensors(file: Path) -> None:
    """UserError unless `file` has a readable safetensors header and is as long as the header says
    (a truncated or corrupt download); reads the header only, never the tensors."""
    try:
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            size = f.seek(0, 2)
            if not 2 <= n <= size - 8:
                raise ValueError("no safetensors header")
            f.seek(8)
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise UserError(f"weight file {file} is corrupt: {str(err).splitlines()[0] if str(err) else err}") from None
    if size < 8 + n + end:
        raise UserError(f"weight file {file} is truncated ({size} of {8 + n + end} bytes): download or copy it again")


def incomplete_components(path: Path) -> list[str]:
    """Components of a cached pipeline snapshot that are missing or have no weights (empty: complete)."""
    try:
        comps = _components(read_index(path))
    except UserError:
        return ["model_index.json"]
    out = [c for c in REQUIRED if c not in comps]
    for comp in comps:
        folder = Path(path) / comp
        if not folder.is_dir() or (
            comp in WEIGHTED
            and (
                not (folder / "config.json").is_file()
                or choose_weights([p.name for p in folder.iterdir() if p.is_file()], True) is None
            )
        ):
            out.append(comp)
    return out

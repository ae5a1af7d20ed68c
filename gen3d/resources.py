"""Where the files shipped beside the code are: `configs/` (the method YAML files) and `extern/` (the
builtin prior, shape/colour classifier and canny ControlNet).

In a checkout they are the repository's own folders. An installed gen3d (`pip install .`) carries
copies as package data in `gen3d/_data/` (setup.py copies them into the wheel), so it runs from any
directory. `$GEN3D_EXTERN` points `extern/` elsewhere (e.g. one shared copy of retrained builtin models).
"""

from __future__ import annotations

import os
from pathlib import Path

CODE = Path(__file__).resolve().parent
CHECKOUT = CODE.parent  # the repository, when this is a checkout (it then has pyproject.toml)
PACKAGED = CODE / "_data"
SHIPPED = ("configs", "extern")


def _shipped(name: str) -> Path:
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / name).is_dir():
        return CHECKOUT / name
    if (PACKAGED / name).is_dir():
        return PACKAGED / name
    return CHECKOUT / name  # neither: errors name the checkout's folder


def configs_dir() -> Path:
    return _shipped("configs")


def extern_dir() -> Path:
    env = os.environ.get("GEN3D_EXTERN")
    return Path(env).expanduser() if env else _shipped("extern")


def shipped_path(path: str | Path) -> Path:
    """A path a config names: absolute as given; `extern/...` and `configs/...` where those folders are
    (above); any other relative path relative to the checkout."""
    path = Path(path)
    if path.is_absolute():
        return path
    head, *rest = path.parts or ("",)
    if head == "extern":
        return extern_dir().joinpath(*rest)
    if head == "configs":
        return configs_dir().joinpath(*rest)
    return CHECKOUT / path

"""Start-up check of the torch version (cheap: reads the installed package's metadata, imports nothing)."""

from __future__ import annotations

import re
from importlib import metadata

from gen3d.errors import UserError

MIN_TORCH = (2, 6)  # torch.load defaults to weights_only=True from 2.6 on (a hostile pickle cannot run code)


def check_torch_version(installed: str | None = None) -> None:
    """UserError unless the installed torch is at least MIN_TORCH."""
    if installed is None:
        try:
            installed = metadata.version("torch")
        except metadata.PackageNotFoundError:
            raise UserError("torch is not installed (pip install 'torch>=2.6')") from None
    m = re.match(r"(\d+)\.(\d+)", installed)
    if m is None or (int(m.group(1)), int(m.group(2))) < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise UserError(
            f"torch {installed} is too old: gen3d needs torch >= {need} (checkpoints load with weights_only=True); "
            f"pip install 'torch>={need}'"
        )

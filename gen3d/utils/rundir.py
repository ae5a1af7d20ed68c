"""Run directories: outputs/<method>/<prompt-slug>[-N]/, never reusing one that exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from gen3d.errors import UserError


def slugify(text: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


def check_writable(root: Path) -> None:
    """UserError unless root (or its first existing parent) is a writable directory."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory '{root}' is not writable")


def new_run_dir(root: Path, method: str, prompt: str) -> Path:
    """Create and return a fresh run directory; appends -1, -2, ... when the name is taken."""
    base = Path(root) / method
    check_writable(base)
    slug = slugify(prompt)
    for n in range(10_000):
        candidate = base / (slug if n == 0 else f"{slug}-{n}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"cannot create run directory '{candidate}': {err.strerror}") from None
    raise UserError(f"too many runs named '{slug}' under {base}")

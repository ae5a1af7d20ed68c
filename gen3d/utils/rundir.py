"""Run directories: outputs/<method>/<prompt-slug>[-<hash>][-N]/, never reusing one that exists.

Prompts whose slugs collide (they differ past 60 characters, or only in case or punctuation) get
distinct directories: a run directory belongs to the prompt saved in its config.yaml, and a prompt
whose slug directory belongs to another prompt gets `<slug>-<8 hex digits of its hash>` instead.
`--resume` without a path continues only runs whose saved prompt is exactly this prompt.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import yaml

from gen3d.errors import UserError


def slugify(text: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]


def saved_prompt(run_dir: Path) -> str | None:
    """The prompt in a run directory's config.yaml (None: no readable config.yaml)."""
    try:
        saved = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return str(saved.get("prompt", "")) if isinstance(saved, dict) else None


def check_writable(root: Path) -> None:
    """UserError unless root (or its first existing parent) is a writable directory."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory '{root}' is not writable")


def _slug_for(base: Path, prompt: str) -> str:
    slug = slugify(prompt)
    owner = saved_prompt(base / slug)
    return slug if owner is None or owner == prompt else f"{slug}-{prompt_hash(prompt)}"


def new_run_dir(root: Path, method: str, prompt: str) -> Path:
    """Create and return a fresh run directory; appends -1, -2, ... when the name is taken."""
    base = Path(root) / method
    check_writable(base)
    slug = _slug_for(base, prompt)
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


def runs_of_prompt(base: Path, prompt: str) -> list[Path]:
    """The run directories under base whose saved prompt is exactly `prompt`."""
    if not Path(base).is_dir():
        return []
    return [d for d in Path(base).glob(f"{slugify(prompt)}*") if d.is_dir() and saved_prompt(d) == prompt]


def refuse_links_outside(run_dir: Path) -> None:
    """UserError when a symbolic link inside run_dir points outside it: a resumed run would write
    through it (log.txt, export/, ckpts/, ...)."""
    root = Path(run_dir).resolve()
    for parent, dirs, files in os.walk(root):  # does not descend into linked folders
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    raise UserError(
                        f"'{path}' is a symbolic link to '{target}', outside the run directory: "
                        "refusing to write through it (remove the link)"
                    )


def holds_results(run_dir: Path) -> bool:
    """Whether run_dir holds anything a run produced: a checkpoint, an export, a video."""
    return any(
        next(Path(run_dir).rglob(pattern), None) is not None for pattern in ("*.ckpt", "*.mp4", "*.glb", "*.obj")
    )


def discard_if_empty(run_dir: Path) -> bool:
    """Remove a run directory this invocation created when its run failed before producing anything
    (a model that fails while its weights load): a later plain --resume must not pick it. Returns
    whether it was removed."""
    if holds_results(run_dir):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not Path(run_dir).exists()

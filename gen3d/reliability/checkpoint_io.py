"""Checkpoint files: written atomically beside their final name, read with weights_only=True.

A checkpoint is written to a temporary file in its own directory (so the final rename never crosses
a filesystem, unlike Lightning's default, which stages it elsewhere), flushed and fsynced, renamed onto
its name, and the directory is fsynced. A kill or a full disk at any point leaves either the previous
file or the complete new one under the final name, plus at most a hidden temporary file that the next
resume removes. Reading never unpickles code: `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gen3d.errors import UserError
from gen3d.utils.atomic import atomic_path

log = logging.getLogger("gen3d")

# Called as hook(temporary_path, open_file) after the checkpoint's bytes went into the temporary file and
# before it is fsynced and renamed. For fault-injection tests (bench/fault_kills.py kills the process here).
SAVE_HOOKS: list[Callable[[Path, Any], None]] = []


class CheckpointUnreadable(Exception):
    """A checkpoint file that does not load (empty, truncated, garbage, or not a weights-only file)."""


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """torch.save `checkpoint` to `path` atomically; a failed write (e.g. a full disk) is a UserError
    naming the file, and leaves the files already there untouched."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                for hook in SAVE_HOOKS:
                    hook(tmp, f)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:  # torch's zip writer turns a failed write into a RuntimeError
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise UserError(
            f"cannot write checkpoint '{path}': {cause.strerror or cause} (the checkpoints written before are intact)"
        ) from None
    return path


def _os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError an exception is, or was raised while handling (None: not an I/O failure)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """The checkpoint at `path` (weights only); CheckpointUnreadable when it does not load or is not a
    Lightning checkpoint. mmap=True maps the tensors instead of reading them (a cheap look at a file)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointUnreadable("the file is empty")
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except CheckpointUnreadable:
        raise
    except Exception as err:  # truncated zip, garbage bytes, a pickle that is not weights only, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointUnreadable(f"{type(err).__name__}: {first[:160]}") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointUnreadable("not a gen3d checkpoint (it has no state_dict)")
    return state


def load_checkpoint_or_fail(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """read_checkpoint, with a UserError (one line) for a file that does not load."""
    try:
        return read_checkpoint(path, map_location)
    except CheckpointUnreadable as err:
        raise UserError(f"checkpoint '{path}' does not load ({err})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin (Trainer(plugins=[AtomicCheckpointIO()])): atomic same-directory
    writes, weights-only reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        write_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_or_fail(path, map_location if map_location is not None else "cpu")

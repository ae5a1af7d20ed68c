"""The checkpoints of one training run: `step-NNNNNN.ckpt` files plus `last.ckpt`, the newest of them.

`RunCheckpoints` is the run's one checkpoint callback (instead of Lightning's ModelCheckpoint, which
writes `last-v1.ckpt` / `step-*-v1.ckpt` beside existing files and so forks a resumed run). It saves every
`every` steps, at the last step and after a Ctrl-C, always under the step's own name (an atomic overwrite);
`last.ckpt` is then a hard link to (or copy of) that file. `keep` > 0 keeps only the newest `keep` step
files. The RNG states (torch CPU/CUDA, Python's) of every rank go into the checkpoint and are restored
before the first step after a resume, so a resumed run draws what the uninterrupted run would have.

`newest_state(dir)` is what a resume continues: the loadable checkpoint with the highest step
(unloadable files are skipped with a warning).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from gen3d.errors import UserError
from gen3d.reliability.bad_steps import BadSteps, is_bad
from gen3d.reliability.checkpoint_io import CheckpointUnreadable, fsync_dir, read_checkpoint
from gen3d.reliability.interrupt import StopRequest

log = logging.getLogger("gen3d")
STEP_FILE = re.compile(r"^step-(\d+)(?:-v\d+)?\.ckpt$")
LAST = "last.ckpt"


@dataclass
class State:
    """A loadable checkpoint: its path, training step and (memory-mapped) content."""

    path: Path
    step: int
    checkpoint: dict


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The checkpoint files directly in ckpt_dir (hidden temporary files excluded)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob("*.ckpt") if p.is_file() and not p.name.startswith("."))


def remove_partial_writes(ckpt_dir: Path) -> None:
    """Temporary files left by a write that was killed (they never carry a final name)."""
    for p in ckpt_dir.glob(".*.tmp*") if ckpt_dir.is_dir() else []:
        p.unlink(missing_ok=True)


def open_state(path: Path) -> State:
    """A State for one file; UserError when it does not load."""
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except CheckpointUnreadable as err:
        raise UserError(f"checkpoint '{path}' does not load ({err})") from None
    return State(Path(path), int(ckpt.get("global_step", 0)), ckpt)


def newest_state(ckpt_dir: Path) -> State | None:
    """The loadable checkpoint of ckpt_dir with the highest step (ties: the newest file); None when
    the folder has none; UserError when it has checkpoint files but none loads."""
    files, best = checkpoint_files(ckpt_dir), None
    for path in files:
        try:
            state = open_state(path)
        except UserError as err:
            log.warning("skipping %s", err)
            continue
        key = (state.step, path.stat().st_mtime, path.name != LAST)
        if best is None or key > best[0]:
            best = (key, state)
    if files and best is None:
        raise UserError(f"no checkpoint in '{ckpt_dir}' loads ({len(files)} tried; see the warnings above)")
    return best[1] if best else None


def step_of_name(path: Path) -> int | None:
    m = STEP_FILE.match(path.name)
    return int(m.group(1)) if m else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunCheckpoints(Callback):
    """Checkpoints of one Trainer.fit into ckpt_dir; also where Ctrl-C and the NaN stop take effect.

    Put it last in the Trainer's callbacks: the RNG state it saves is the one after every other
    callback's end-of-step work."""

    def __init__(self, ckpt_dir: Path, every: int, keep: int = 0, stop: StopRequest | None = None, max_bad: int = 0):
        self.dir, self.every, self.keep, self.stop = Path(ckpt_dir), every, keep, stop
        self.bad = BadSteps(max_bad)
        self.saved_step: int = -1
        self.last_saved: Path | None = None
        self.interrupted_at: int | None = None
        self._pending_rng: list | None = None

    # ----- what a step decides ----------------------------------------------------------------------
    def _flags(self, trainer, module, outputs) -> tuple[bool, bool, float]:
        """(bad step, Ctrl-C requested, NaN share), decided over all ranks with one collective."""
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        share = float(getattr(module, "nan_share", 0.0))
        flags = torch.tensor(
            [float(is_bad(share, float(loss) if loss is not None else 0.0)), float(bool(self.stop and self.stop.flag))]
        )
        if trainer.world_size > 1:
            flags = trainer.strategy.all_gather(flags.to(trainer.strategy.root_device)).reshape(-1, 2).amax(0).cpu()
        return bool(flags[0]), bool(flags[1]), share

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self._pending_rng is not None:  # first step after a resume: continue the saved random streams
            states, self._pending_rng = self._pending_rng, None
            _set_rng_state(states[trainer.global_rank] if len(states) == trainer.world_size else states[0])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        bad, stop, share = self._flags(trainer, module, outputs)
        self.bad.update(bad, step, share, str(self.last_saved) if self.last_saved else None)
        due = (self.every > 0 and step % self.every == 0) or step >= trainer.max_steps or stop
        if due and not self.bad.streak:
            self.save(trainer)
        if stop:
            self.interrupted_at = step
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        if trainer.global_step > 0 and trainer.global_step != self.saved_step and not self.bad.streak:
            self.save(trainer)  # stopped early by something else (e.g. another callback)

    # ----- writing --------------------------------------------------------------------------------
    def save(self, trainer) -> Path:
        path = self.dir / f"step-{trainer.global_step:06d}.ckpt"
        trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes (AtomicCheckpointIO)
        if trainer.is_global_zero:
            link_last(path)
            self._prune()
        self.saved_step, self.last_saved = trainer.global_step, path
        return path

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        steps = sorted((step_of_name(p), p) for p in checkpoint_files(self.dir) if step_of_name(p) is not None)
        for _, path in steps[: -self.keep]:
            path.unlink(missing_ok=True)

    # ----- the RNG state in the checkpoint (Lightning's callback state) -------------------------------
    def state_dict(self) -> dict:
        states = [_rng_state()]
        trainer = getattr(self, "_trainer_ref", None)
        if trainer is not None and trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list = [None] * trainer.world_size
            dist.all_gather_object(gathered, _rng_state())
            states = gathered
        return {"rng": states}

    def setup(self, trainer, module, stage: str) -> None:
        self._trainer_ref = trainer

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_rng = state_dict.get("rng")


def link_last(path: Path) -> Path:
    """Point last.ckpt at `path` atomically: a hard link (no second copy), else a copy."""
    last = path.with_name(LAST)
    tmp = path.with_name(f".{LAST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, last)
    fsync_dir(path.parent)
    return last

"""One lineage per run: which checkpoint each stage of a resumed run continues.

- `--resume RUN`: every stage continues its newest loadable checkpoint (`newest_state`).
- `--resume RUN/ckpts/[stage/]step-N.ckpt` where newer states exist (newer step files of that stage, or
  checkpoints of later stages, which were trained from those newer states): the run branches at step N.
  The newer states are moved to `RUN/archive/<UTC time>/` (logged), `last.ckpt` points at step N, and
  training continues from there, so the run again has one history and `--resume RUN` continues it.
  With `--export-only` that is refused: an export is always of the run's newest state.
- Checks against the config (`fits`) run before config.yaml is rewritten: a failed resume changes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from gen3d.errors import UserError
from gen3d.reliability.checkpoints import (
    LAST,
    State,
    checkpoint_files,
    link_last,
    newest_state,
    open_state,
    remove_partial_writes,
    step_of_name,
)

log = logging.getLogger("gen3d")


def _step(path: Path) -> int | None:
    step = step_of_name(path)
    if step is None:  # last.ckpt or another name: read its step (None when it does not load)
        try:
            step = open_state(path).step
        except UserError:
            return None
    return step


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def plan(stage_dirs: list[tuple[str, Path]], explicit: Path | None, export_only: bool = False):
    """({stage: State or None}, [files to archive]) for the stages to run, in order. explicit: the
    checkpoint given to --resume (in one of the stage folders; elsewhere only for a one-stage run)."""
    if explicit is not None and not any(_same(Path(explicit).parent, d) for _, d in stage_dirs):
        if len(stage_dirs) == 1:  # a checkpoint from elsewhere starts this run's lineage (nothing archived)
            return {stage_dirs[0][0]: open_state(Path(explicit))}, []
        where = ", ".join(str(d) for _, d in stage_dirs)
        raise UserError(f"--resume {explicit}: this run's checkpoints live in {where}")
    states: dict[str, State | None] = {}
    archive: list[Path] = []
    branched_at = None
    for name, ckpt_dir in stage_dirs:
        if branched_at is not None:  # trained from the newer states: not part of the branch
            archive += checkpoint_files(ckpt_dir)
            states[name] = None
            continue
        if explicit is None or not _same(Path(explicit).parent, ckpt_dir):
            states[name] = newest_state(ckpt_dir)
            continue
        state = states[name] = open_state(Path(explicit))
        newer = [p for p in checkpoint_files(ckpt_dir) if not _same(p, state.path) and (_step(p) or 0) > state.step]
        later = [p for _, d in stage_dirs[[n for n, _ in stage_dirs].index(name) + 1 :] for p in checkpoint_files(d)]
        if newer or later:
            branched_at = state
            archive += newer
    if branched_at is not None and export_only:
        raise UserError(
            f"--export-only exports the newest state of the run, and {branched_at.path} is older: "
            f"drop --export-only to continue training from it (the newer states are then archived)"
        )
    return states, archive


def archive_files(run_dir: Path, files: list[Path], states: dict[str, State | None]) -> Path | None:
    """Move files out of the run's checkpoints into RUN/archive/<time>/ (rank 0, after every check
    passed); point each resumed stage's last.ckpt at the state it continues."""
    if not files:
        return None
    dest = run_dir / "archive" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for path in files:
        target = dest / path.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for state in states.values():
        if state is not None and state.path.name != LAST:
            link_last(state.path)
    log.warning("resuming from an older checkpoint: %d newer checkpoint file(s) moved to %s", len(files), dest)
    return dest


def tidy(stage_dirs: list[tuple[str, Path]]) -> None:
    """Remove temporary files left by killed checkpoint writes (rank 0)."""
    for _, ckpt_dir in stage_dirs:
        remove_partial_writes(ckpt_dir)


def fits(model_state: dict, state: State, what: str) -> None:
    """UserError unless the checkpoint's weights fit a model built from this config: shared keys with
    the same shapes, and none of the model's keys under `required` prefixes missing."""
    saved = state.checkpoint["state_dict"]
    shared = [k for k in saved if k in model_state]
    if not shared:
        raise UserError(
            f"checkpoint '{state.path}' holds none of the weights of {what} (a checkpoint of another method?)"
        )
    for key in shared:
        a, b = tuple(saved[key].shape), tuple(model_state[key].shape)
        if a != b and model_state[key].numel() > 0:  # an empty tensor is sized from the data (a mesh's)
            raise UserError(
                f"checkpoint '{state.path}' does not fit {what}: '{key}' has shape {list(a)} there but "
                f"{list(b)} with this config (resume with the run's own config.yaml settings)"
            )

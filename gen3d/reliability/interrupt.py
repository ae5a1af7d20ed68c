"""Ctrl-C during training: finish the current step, save a checkpoint, exit 130 with the resume command.

`StopRequest.installed()` replaces the SIGINT handler while a Trainer fits (Lightning's own handler
exits 1 and loses the steps since the last checkpoint). The first Ctrl-C only sets a flag, which
`RunCheckpoints` reads after each step; a second Ctrl-C stops at once without saving (exit 130; the
checkpoints already written are complete, as every write is atomic).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("gen3d")


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after saving; str() is the one line to print (launch.py exits 130)."""


def resume_command(run_dir: Path) -> str:
    return f"python launch.py --resume {shlex.quote(str(run_dir))}"


class StopRequest:
    def __init__(self, run_dir: Path):
        self.run_dir, self.flag = Path(run_dir), False

    def _handle(self, signum, frame) -> None:
        if self.flag:
            print(
                f"interrupted again: stopped without saving the current step; resume with: {resume_command(self.run_dir)}",
                file=sys.stderr,
                flush=True,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(130)
        self.flag = True
        log.warning("Ctrl-C: saving a checkpoint after this step (Ctrl-C again stops at once, without saving)")

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT while the block runs (main thread only; elsewhere the flag is never set)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def interrupted(self, step: int, saved: Path | None, stage: str = "") -> Interrupted:
        """The exception to raise once the trainer stopped after a Ctrl-C."""
        where = f"stage {stage} " if stage and stage != "main" else ""
        kept = f"saved {saved}" if saved is not None else "no checkpoint saved"
        return Interrupted(f"interrupted at {where}step {step} ({kept}); resume with: {resume_command(self.run_dir)}")

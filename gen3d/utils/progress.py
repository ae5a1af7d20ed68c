"""One progress bar per stage (steps, ETA, loss and t) and the stage's time, recorded in the run's
stages.json (read by the report and the end-of-run summary). Rank 0 only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from gen3d.utils.atomic import write_text_atomic
from gen3d.utils.console import progress_enabled

SHOWN = ("loss", "t")


def record_stage_time(run_dir: Path, stage: str, steps: int, seconds: float) -> None:
    """Add a stage's trained steps and seconds to run_dir/stages.json (summed over resumes)."""
    path = Path(run_dir) / "stages.json"
    stages = json.loads(path.read_text()) if path.is_file() else {}
    entry = stages.setdefault(stage, {"steps": 0, "seconds": 0.0})
    entry["steps"] += int(steps)
    entry["seconds"] = round(entry["seconds"] + float(seconds), 3)
    write_text_atomic(path, json.dumps(stages, indent=1))


class StageProgress(Callback):
    def __init__(self, stage: str, run_dir: Path | None = None, shown: tuple = SHOWN):
        self.stage, self.run_dir, self.shown = stage, run_dir, shown
        self.bar, self.t0, self.start = None, 0.0, 0

    def on_train_start(self, trainer, module):
        self.t0, self.start = time.perf_counter(), trainer.global_step
        if trainer.is_global_zero and progress_enabled():
            from tqdm.auto import tqdm

            tty = sys.stderr.isatty()
            self.bar = tqdm(
                total=trainer.max_steps,
                initial=trainer.global_step,
                desc=self.stage or "train",
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5 if tty else 5.0,
                file=sys.stderr,
            )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.bar is None:
            return
        self.bar.update(trainer.global_step - self.bar.n)
        metrics = trainer.callback_metrics
        shown = {k: f"{float(metrics[k]):.4g}" for k in self.shown if k in metrics}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if trainer.is_global_zero and self.run_dir is not None:
            record_stage_time(
                self.run_dir, self.stage or "main", trainer.global_step - self.start, time.perf_counter() - self.t0
            )

"""What a stage adds to its Lightning Trainer for the console and the run directory (rank 0 only):

- `StageProgressBar`: Lightning's TQDM bar, one per stage, over the stage's steps (not per epoch), named
  after the stage, with ETA, loss and t; on stderr (stdout keeps gen3d's lines and the summary), and
  refreshed rarely when stderr is not a terminal (logs of batch jobs). Disabled by --quiet.
- `StageEnd`: at the end of the stage's fit, its trained steps and seconds go to the run's stages.json
  (summed over resumes; read by the report and the end-of-run summary) and report.html is rewritten.

    callbacks=[..., *stage_callbacks(stage, run_dir)]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from gen3d.utils.atomic import write_text_atomic
from gen3d.utils.console import progress_enabled, quiet_libraries

quiet_libraries()  # `import lightning` has just given its logger a second console handler: removed

SHOWN = ("loss", "t")


def record_stage_time(run_dir: Path, stage: str, steps: int, seconds: float) -> None:
    """Add a stage's trained steps and seconds to run_dir/stages.json (summed over resumes)."""
    path = Path(run_dir) / "stages.json"
    stages = json.loads(path.read_text()) if path.is_file() else {}
    entry = stages.setdefault(stage, {"steps": 0, "seconds": 0.0})
    entry["steps"] += int(steps)
    entry["seconds"] = round(entry["seconds"] + float(seconds), 3)
    write_text_atomic(path, json.dumps(stages, indent=1))


class StageProgressBar(TQDMProgressBar):
    def __init__(self, stage: str, shown: tuple = SHOWN):
        tty = sys.stderr.isatty()
        super().__init__(refresh_rate=1 if tty else 50)
        self.stage, self.shown, self.tty = stage, shown, tty
        if not progress_enabled():
            self.disable()

    def init_train_tqdm(self):
        return Tqdm(
            desc=self.stage,
            total=self.trainer.max_steps,
            initial=self.trainer.global_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
            unit="step",
            mininterval=0.2 if self.tty else 10.0,
        )

    def on_train_epoch_start(self, trainer, *_):
        if self.train_progress_bar is None or self.train_progress_bar.disable:
            return
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = bar.n = trainer.global_step  # a resumed stage starts where it stopped

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, module))

    def on_train_epoch_end(self, trainer, module):
        pass  # the bar spans the stage: it closes in on_train_end

    def get_metrics(self, trainer, module) -> dict:
        metrics = trainer.callback_metrics
        return {k: f"{float(metrics[k]):.4g}" for k in self.shown if k in metrics}


class StageEnd(Callback):
    def __init__(self, stage: str, run_dir: Path):
        self.stage, self.run_dir = stage, Path(run_dir)
        self.t0, self.start = 0.0, 0

    def on_train_start(self, trainer, module):
        self.t0, self.start = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, module):
        if not trainer.is_global_zero:
            return
        record_stage_time(self.run_dir, self.stage, trainer.global_step - self.start, time.perf_counter() - self.t0)
        from gen3d.report import update_report

        update_report(self.run_dir)


def stage_callbacks(stage: str, run_dir: Path) -> list:
    """The progress bar and the stage-end bookkeeping of one stage ('' = the method's only stage)."""
    return [StageProgressBar(stage or "train"), StageEnd(stage or "main", run_dir)]

"""Experiment logs with Lightning's own loggers, chosen by the `logger` setting of every 3D and video
config: a name or a list of `tensorboard`, `csv`, `wandb` (`logger=wandb`, `logger=[tensorboard,wandb]`,
also "tensorboard,csv"), or `none`; default [tensorboard, csv].

Files go under the run directory: `logs/tensorboard/<stage>/version_N/events.*`,
`logs/csv/<stage>/version_N/metrics.csv` (`<stage>` is the stage's name, `main` for single-stage
methods and video fine-tuning); wandb runs (project gen3d) are named after the run directory and
stage, online or offline as wandb itself is set up (WANDB_MODE). Preview images go to every logger
that takes images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gen3d.errors import UserError


def _tensorboard(run_dir: Path, stage: str):
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir / "logs"), name=f"tensorboard/{stage}", default_hp_metric=False)


def _csv(run_dir: Path, stage: str):
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=str(run_dir / "logs"), name=f"csv/{stage}")


def _wandb(run_dir: Path, stage: str):
    from lightning.pytorch.loggers import WandbLogger

    class StageRun(WandbLogger):
        """One wandb run per stage: finished when its fit ends (Lightning's own WandbLogger leaves the run
        open, and the next stage's logger would then log into it)."""

        def finalize(self, status: str) -> None:
            super().finalize(status)
            if self._experiment is not None:
                self._experiment.finish(exit_code=0 if status == "success" else 1)

    return StageRun(save_dir=str(run_dir / "logs"), name=f"{run_dir.name}/{stage}", project="gen3d", group=run_dir.name)


def _tensorboard_image(logger, tag: str, image, step: int) -> None:
    logger.experiment.add_image(tag, image, step, dataformats="HWC")


def _wandb_image(logger, tag: str, image, step: int) -> None:
    logger.log_image(key=tag, images=[image], step=step)


@dataclass(frozen=True)
class LoggerKind:
    make: Callable
    image: Callable | None = None
    package: str | None = None  # what must be importable, and the hint when it is not
    hint: str = ""


KINDS = {
    "tensorboard": LoggerKind(
        _tensorboard, _tensorboard_image, "tensorboard", "pip install tensorboard, or logger=csv"
    ),
    "csv": LoggerKind(_csv),
    "wandb": LoggerKind(_wandb, _wandb_image, "wandb", "pip install wandb"),
}


def logger_names(setting) -> list[str]:
    """'wandb', ['tensorboard', 'csv'] or 'tensorboard,csv' -> a list of names; UserError naming the
    known ones for anything else."""
    items = setting if isinstance(setting, (list, tuple)) else [setting or "none"]
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise UserError(
            f"logger: unknown logger '{unknown[0]}' (use a comma-separated list of {', '.join(KINDS)}, or none)"
        )
    return names


def check_loggers(setting) -> None:
    """Before anything is written: the names are known and their packages importable."""
    import importlib.util

    for name in logger_names(setting):
        package = KINDS[name].package
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"logger={name}: {package} is not installed ({KINDS[name].hint})")


class ExperimentLogs:
    """The Lightning loggers of one stage (for `Trainer(logger=...)`) and their image writers."""

    def __init__(self, setting, run_dir: Path, stage: str):
        check_loggers(setting)
        self.loggers, self._images = [], []
        for name in logger_names(setting):
            kind = KINDS[name]
            logger = kind.make(Path(run_dir), stage or "main")
            self.loggers.append(logger)
            if kind.image is not None:
                self._images.append((logger, kind.image))

    def trainer_logger(self):
        return self.loggers or False

    def log_image(self, tag: str, image, step: int) -> None:
        """image [H,W,3]: floats in [0,1] or uint8."""
        if not self._images:
            return
        import numpy as np

        from gen3d.utils.media import to_uint8

        arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
        for logger, write in self._images:
            write(logger, tag, arr, step)

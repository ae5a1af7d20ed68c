"""Experiment logs through Lightning's loggers: TensorBoard (scalars + preview images) and CSV under the
run directory, for a tiny 3D run and a tiny video fine-tuning; wandb asked for but not installed is one
line and exit 2 before anything is written."""

import csv
import importlib.util
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import launch
from gen3d.utils.loggers import logger_names
from tests.tiny_runs import TINY_3D
from video.demo import moving_shape


def _events(run_dir, stage):
    (path,) = (run_dir / "logs" / "tensorboard" / stage).glob("version_*/events.out.tfevents.*")
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _csv_rows(run_dir, stage):
    (path,) = (run_dir / "logs" / "csv" / stage).glob("version_*/metrics.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_3d_run_writes_tensorboard_and_csv(tiny_pipeline, tmp_path):
    out = tmp_path / "out"
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    assert launch.main([*args, "--steps", "4", "--output", str(out), *TINY_3D]) == 0
    run_dir = out / "dreamfusion" / "a-red-cube"
    acc = _events(run_dir, "main")
    losses = acc.Scalars("loss")
    assert [e.step for e in losses] == [0, 1, 2, 3] and all(e.value > 0 for e in losses)
    assert "t" in acc.Tags()["scalars"]
    images = acc.Images("preview/main")  # preview_every=2 of 4 steps
    assert [e.step for e in images] == [2, 4] and images[0].width > 0
    rows = _csv_rows(run_dir, "main")
    assert len([r for r in rows if r["loss"]]) == 4
    assert abs(float(rows[-1]["loss"]) - losses[-1].value) < 1e-3 * abs(losses[-1].value)


def test_video_fine_tuning_writes_tensorboard_and_csv(tiny_pipeline, tmp_path):
    from gen3d.utils.media import write_video

    clip = write_video(tmp_path / "clip.gif", moving_shape(3, 64).permute(0, 2, 3, 1), fps=5)
    out = tmp_path / "out"
    args = ["--config", "tuneavideo.yaml", "--prompt", "a blue sphere", "--edit", "a red sphere"]
    code = launch.main(
        [
            *args,
            *("--model", str(tiny_pipeline), "--video", str(clip), "--frames", "3", "--output", str(out)),
            "trainer.max_steps=3",
            "trainer.log_every=1",
            "sampling.steps=2",
            "sampling.inversion_steps=2",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert code == 0
    (run_dir,) = (out / "tuneavideo").iterdir()
    assert [e.step for e in _events(run_dir, "main").Scalars("loss")] == [0, 1, 2]
    assert len([r for r in _csv_rows(run_dir, "main") if r["loss"]]) == 3
    assert (run_dir / "report.html").is_file()
    stages = json.loads((run_dir / "stages.json").read_text())  # time per stage, for the report and summary
    assert stages["fine-tune"]["steps"] == 3 and stages["edit"]["steps"] == 2 and stages["edit"]["seconds"] > 0


def test_logger_setting_forms():
    assert logger_names(["tensorboard", "csv"]) == ["tensorboard", "csv"]
    assert logger_names("tensorboard,csv") == ["tensorboard", "csv"]
    assert logger_names("wandb") == ["wandb"]
    assert logger_names("none") == [] and logger_names([]) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [("logger=wandb", "logger=wandb: wandb is not installed"), ("logger=[csv,mlflow]", "unknown logger 'mlflow'")],
)
def test_bad_logger_is_one_line_before_anything_is_written(
    override, message, tmp_path, capsys, monkeypatch, tiny_pipeline
):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "out"
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    code = launch.main([*args, "--output", str(out), override])  # (the config's default model is a hub id)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_wandb_offline_runs_one_per_stage(tiny_pipeline, tmp_path, monkeypatch):
    """logger=wandb with wandb installed (skipped otherwise): offline, each stage of a two-stage run is its
    own finished wandb run under <run>/logs/wandb, with its history and the preview images."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    args = ["--config", "magic3d.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    assert launch.main([*args, "--steps", "4", "--output", str(out), *TINY_3D, "logger=wandb"]) == 0
    runs = sorted((out / "magic3d" / "a-red-cube" / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one per stage (coarse, refine): the first stage's run was finished
    for run in runs:
        assert (run / f"run-{run.name.rsplit('-', 1)[1]}.wandb").stat().st_size > 0
        assert any((run / "files" / "media" / "images").rglob("*.png"))

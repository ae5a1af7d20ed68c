"""What a tiny run prints: gen3d's lines once each and a short summary on stdout, one progress bar on
stderr, no library banners, advertisements or deprecation warnings; --quiet prints nothing but warnings.
Also the console's filter and the CPU thread policy on their own."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gen3d.utils import console, threads
from tests.tiny_runs import TINY_3D as TINY

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("GPU available", "TPU available", "litlogger", "LeafSpec", "Training:", "PosixPath", "INFO:", "Epoch 0")


def _launch(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("console")
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline), "--steps", "4"]
    proc = _launch(*args, "--output", str(out), *TINY, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out / "dreamfusion" / "a-red-cube"


def test_stdout_has_each_line_once_and_no_noise(tiny_run):
    proc, run_dir = tiny_run
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), proc.stdout
    everything = proc.stdout + proc.stderr
    assert not [word for word in NOISE if word in everything], everything
    assert "DeprecationWarning" not in everything and "deprecated" not in everything.lower(), everything
    assert "step 1 " not in proc.stdout  # per-step lines go to log.txt (and the bar), not the console
    assert "[main] step 1 " in (run_dir / "log.txt").read_text()


def test_summary_names_results_and_stage_times(tiny_run):
    proc, run_dir = tiny_run
    out = proc.stdout
    assert "done: dreamfusion 'a red cube'" in out
    for part in ("export/model.glb", "video/turntable.mp4", "report.html", "(4 steps)", "vertices", "triangles"):
        assert part in out, (part, out)
    assert (run_dir / "report.html").is_file() and (run_dir / "stages.json").is_file()


def test_one_progress_bar_with_loss_and_t(tiny_run):
    proc, _ = tiny_run
    updates = [u for u in proc.stderr.replace("\r", "\n").splitlines() if "step/s" in u or "?step" in u]
    assert updates and all(u.startswith("main:") for u in updates), proc.stderr
    assert "4/4" in updates[-1] and "loss=" in updates[-1] and "t=" in updates[-1]


def test_quiet_export_prints_nothing_and_updates_the_report(tiny_run):
    _, run_dir = tiny_run
    report = run_dir / "report.html"
    os.utime(report, (0, 0))
    proc = _launch("--resume", str(run_dir), "--export-only", "--quiet", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "" and "step/s" not in proc.stderr
    assert report.stat().st_mtime > 0 and "Time per stage" in report.read_text()


def test_console_filter(capsys):
    console.setup_console("normal")
    try:
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        logging.getLogger("gen3d").info("run directory: x")
        logging.getLogger("gen3d.steps").info("[main] step 1 loss=1")
        for _ in range(3):
            warnings.warn("the CPU is busy", UserWarning, stacklevel=1)
        console.setup_console("verbose")
        logging.getLogger("lightning.pytorch").info("TPU available: False")
        logging.getLogger("lightning.pytorch").info("try litlogger")
        logging.getLogger("fsspec.local").debug("open file: x")  # library DEBUG: never
        logging.getLogger("gen3d").debug("torch intra-op threads: 1")
    finally:  # the handler writes to this test's captured stdout: gone with it
        console.setup_console("normal")
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, console._ConsoleHandler)]:
            root.removeHandler(handler)
    out = capsys.readouterr().out.splitlines()
    assert out == ["run directory: x", "warning: the CPU is busy", "TPU available: False", "torch intra-op threads: 1"]


def test_thread_policy(monkeypatch, caplog):
    assert threads.auto_threads(1, busy=0.1, cores=2) == (2, False)  # quiet machine: every core
    assert threads.auto_threads(1, busy=1.0, cores=2) == (1, False)  # one busy process: the free core
    assert threads.auto_threads(2, busy=0.0, cores=2) == (1, False)  # two ranks share the cores
    assert threads.auto_threads(1, busy=2.5, cores=2) == (1, True)  # oversubscribed
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.apply_thread_policy(3) == 3 == torch.get_num_threads()  # an explicit number wins
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "busy_cores", lambda: 8.0)
        with caplog.at_level(logging.WARNING, logger="gen3d"):
            assert threads.apply_thread_policy(0) == 1
        assert "num_threads=N" in caplog.text
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting is kept by auto
        assert threads.apply_thread_policy(0) == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(threads.UserError, match="num_threads"):
        threads.apply_thread_policy(-1)

"""`pip install .` in a fresh virtual environment (reusing this Python's packages: nothing is downloaded),
then the `gen3d` command from another directory: --help, a tiny run on the builtin prior (found in the
installed package data, not in the checkout) and the gallery. Skipped when the environment cannot be
made (no venv module, no pip)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "camera.height=32",
    "camera.width=32",
    "renderer.num_samples_per_ray=16",
    "export.resolution=32",
    "export.texture_size=32",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "trainer.preview_every=2",
]


def _tracked_copy(dst: Path) -> Path:
    """The checkout's tracked files (the build writes build/ and *.egg-info into its source tree)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    return dst


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tmp = tmp_path_factory.mktemp("pkg")
    env_dir = tmp / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)], capture_output=True
    )
    python = env_dir / "bin" / "python"
    if made.returncode or not python.is_file():
        pytest.skip(f"cannot create a virtual environment: {made.stderr.decode()[-300:]}")
    src = _tracked_copy(tmp / "src")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", str(src)],
        capture_output=True,
        text=True,
    )
    if install.returncode and "No module named pip" in install.stderr:
        pytest.skip("pip is not available")
    assert install.returncode == 0, install.stderr[-3000:]
    return env_dir


def _run(venv, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GEN3D_EXTERN")}
    return subprocess.run(
        [str(venv / "bin" / "gen3d"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_installed_command(venv, tmp_path):
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gen3d, video; print(gen3d.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0 and Path(found.stdout.strip()).is_relative_to(venv), found
    help_ = _run(venv, "--help", cwd=tmp_path)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: gen3d") and "--quiet" in help_.stdout

    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", "builtin", "--steps", "2"]
    proc = _run(venv, *args, *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "dreamfusion" / "a-red-cube"
    assert (run_dir / "export" / "model.glb").stat().st_size > 0 and (run_dir / "report.html").is_file()
    assert "done: dreamfusion" in proc.stdout

    gallery = _run(venv, "report", "outputs", cwd=tmp_path)
    assert gallery.returncode == 0 and (tmp_path / "outputs" / "index.html").is_file(), gallery.stderr

    missing = _run(venv, "--config", "nosuch.yaml", cwd=tmp_path)  # the shipped configs are listed
    assert missing.returncode == 2 and "dreamfusion.yaml" in missing.stderr

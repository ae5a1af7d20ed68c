"""Multi-process runs on CPU (DDP over gloo), as CI can run them: `--device cpu --devices 2`."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import launch

ROOT = Path(launch.__file__).parent
TINY = ["camera.height=32", "camera.width=32", "export.resolution=40", "export.texture_size=64",
        "turntable.n_views=2", "turntable.resolution=32", "mesh.resolution=40", "trainer.preview_every=0"]
PD_STAGES = ("stages=[{name: nerf, overrides: {trainer: {max_steps: 6}}}, "
             "{name: geometry, overrides: {representation: mesh, force_shading: normal, train_texture: false, "
             "guidance: {type: sds}, trainer: {max_steps: 3}}}, "
             "{name: texture, overrides: {representation: mesh, train_geometry: false, trainer: {max_steps: 3}}}]")


def launch_procs(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GEN3D_RUN_DIR", None)
    proc = subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_dreamfusion_two_processes_then_resume_with_one(tiny_pipeline, tmp_path):
    common = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline),
              "--output", str(tmp_path), *TINY]
    launch_procs(*common, "--device", "cpu", "--devices", "2", "--steps", "6")
    runs = list((tmp_path / "dreamfusion").iterdir())
    assert [r.name for r in runs] == ["a-red-cube"]  # exactly one run directory
    run_dir = runs[0]
    log = (run_dir / "log.txt").read_text()
    assert "ddp: parameters identical across 2 ranks" in log
    assert (run_dir / "export" / "model.glb").is_file() and (run_dir / "ckpts" / "last.ckpt").is_file()
    # resume the 2-process run with 1 process, then with 2 again
    launch_procs("--resume", str(run_dir), "--device", "cpu", "--devices", "1", "--steps", "9")
    launch_procs("--resume", str(run_dir), "--device", "cpu", "--devices", "2", "--steps", "12")
    import torch

    assert torch.load(run_dir / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert (run_dir / "log.txt").read_text().count("ddp: parameters identical across 2 ranks") == 2


def test_prolificdreamer_particles_over_two_processes(tiny_pipeline, tmp_path):
    launch_procs("--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline),
                 "--output", str(tmp_path), "--device", "cpu", "--devices", "2", "--particles", "2", *TINY, PD_STAGES)
    runs = list((tmp_path / "prolificdreamer").iterdir())
    assert len(runs) == 1
    log = (runs[0] / "log.txt").read_text()
    assert log.count("ddp: parameters identical across 2 ranks") == 3  # one line per stage
    for i in range(2):
        assert (runs[0] / "export" / f"particle-{i}" / "model.glb").is_file()


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0,1"], "--gpus needs CUDA"),
    (["--devices", "0"], "--devices must be at least 1"),
])
def test_device_errors(args, message, capsys, tmp_path):
    if "--gpus" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code = launch.main(["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--output", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_tuneavideo_two_processes(tiny_pipeline, tmp_path):
    from video.demo import moving_shape
    from gen3d.utils.media import write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_shape(8, 64, "sphere", "blue").permute(0, 2, 3, 1), fps=8)
    launch_procs("--config", "tuneavideo.yaml", "--video", str(clip), "--prompt", "a blue sphere", "--edit", "a red sphere",
                 "--model", str(tiny_pipeline), "--output", str(tmp_path / "out"), "--device", "cpu", "--devices", "2",
                 "trainer.max_steps=4", "sampling.steps=3", "sampling.inversion_steps=3")
    runs = list((tmp_path / "out" / "tuneavideo").iterdir())
    assert len(runs) == 1
    assert "ddp: parameters identical across 2 ranks" in (runs[0] / "log.txt").read_text()
    assert (runs[0] / "edit-0.mp4").is_file()

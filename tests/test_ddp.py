"""Multi-process runs on CPU (DDP over gloo), as CI can run them: `--device cpu --devices 2`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import launch

ROOT = Path(launch.__file__).parent
TINY = [
    "camera.height=32",
    "camera.width=32",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "mesh.resolution=40",
    "trainer.preview_every=0",
]
PD_STAGES = (
    "stages=[{name: nerf, overrides: {trainer: {max_steps: 6}}}, "
    "{name: geometry, overrides: {representation: mesh, force_shading: normal, train_texture: false, "
    "guidance: {type: sds}, trainer: {max_steps: 3}}}, "
    "{name: texture, overrides: {representation: mesh, train_geometry: false, trainer: {max_steps: 3}}}]"
)


def launch_procs(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GEN3D_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_dreamfusion_two_processes_then_resume_with_one(tiny_pipeline, tmp_path):
    common = [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        *TINY,
    ]
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
    import torch

    launch_procs(
        "--config",
        "prolificdreamer.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        "--device",
        "cpu",
        "--devices",
        "2",
        "--particles",
        "2",
        *TINY,
        PD_STAGES,
    )
    runs = list((tmp_path / "prolificdreamer").iterdir())
    assert len(runs) == 1
    log = (runs[0] / "log.txt").read_text()
    assert log.count("ddp: parameters identical across 2 ranks") == 3  # shared parameters, one line per stage
    assert log.count("ddp: particles per rank [[0], [1]]") == 3  # each particle lives on its own rank
    state = torch.load(runs[0] / "ckpts" / "texture" / "last.ckpt", map_location="cpu", weights_only=True)
    assert {k.split(".")[1] for k in state["state_dict"] if k.startswith("scenes.")} == {"0", "1"}  # all gathered
    assert len(state["gen3d_rank_optimizer_states"]) == 2
    for i in range(2):
        assert (runs[0] / "export" / f"particle-{i}" / "model.glb").is_file()


def test_particles_resume_on_another_number_of_processes(tiny_pipeline, tmp_path):
    import torch

    common = [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        "--particles",
        "2",
        *TINY,
    ]
    launch_procs(*common, "--device", "cpu", "--devices", "2", "--steps", "4")
    run_dir = next((tmp_path / "dreamfusion").iterdir())
    before = torch.load(run_dir / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    proc = launch_procs("--resume", str(run_dir), "--device", "cpu", "--devices", "1", "--steps", "6")
    assert "optimizer moments restart" in proc.stderr + (run_dir / "log.txt").read_text()
    after = torch.load(run_dir / "ckpts" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 6
    for i in range(2):  # one process now trains both particles, each starting from its rank's weights
        key = next(k for k in before if k.startswith(f"scenes.{i}.geometry"))
        assert not torch.equal(before[key], after["state_dict"][key])
        assert (run_dir / "export" / f"particle-{i}" / "model.glb").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0,1"], "--gpus needs CUDA"),
        (["--devices", "0"], "--devices must be at least 1"),
        (
            ["--config", "prolificdreamer.yaml", "--device", "cpu", "--devices", "2", "--particles", "3"],
            "--particles 3 does not divide over 2 processes",
        ),
    ],
)
def test_device_errors(args, message, capsys, tmp_path):
    if "--gpus" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code = launch.main(["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--output", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("method", ["tuneavideo", "controlvideo"])
def test_video_two_processes(tiny_pipeline, controlnet, tmp_path, method):
    from gen3d.utils.media import write_video
    from video.demo import moving_shape

    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_shape(8, 64, "sphere", "blue").permute(0, 2, 3, 1), fps=8)
    extra = ["--control", "canny", f"controlnet={controlnet}"] if method == "controlvideo" else []
    launch_procs(
        "--config",
        f"{method}.yaml",
        "--video",
        str(clip),
        "--prompt",
        "a blue sphere",
        "--edit",
        "a red sphere",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--devices",
        "2",
        "trainer.max_steps=4",
        "sampling.steps=3",
        "sampling.inversion_steps=3",
        *extra,
    )
    runs = list((tmp_path / "out" / method).iterdir())
    assert len(runs) == 1
    assert "ddp: parameters identical across 2 ranks" in (runs[0] / "log.txt").read_text()
    assert (runs[0] / "edit-0.mp4").is_file()


def test_magic3d_two_processes(tiny_pipeline, tmp_path):
    from tests.test_methods import M3_STAGES

    launch_procs(
        "--config",
        "magic3d.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        "--device",
        "cpu",
        "--devices",
        "2",
        *TINY,
        M3_STAGES,
    )
    runs = list((tmp_path / "magic3d").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "log.txt").read_text().count("ddp: parameters identical across 2 ranks") == 2
    assert (runs[0] / "export" / "model.glb").is_file()


def test_slurm_tasks_share_one_run(tiny_pipeline, tmp_path):
    """What `srun --ntasks-per-node 2 python launch.py ... --devices 2` starts: two tasks with SLURM's
    rank variables; Lightning's SLURM environment connects them and they write one run directory."""
    import random

    job = str(random.randint(1000, 9999))
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "SLURM_JOB_ID": job,
            "SLURM_JOB_NAME": "gen3d",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NNODES": "1",
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NODELIST": "localhost",
            "SLURM_STEP_NODELIST": "localhost",
        }
        env.pop("GEN3D_RUN_DIR", None)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "launch.py",
                    "--config",
                    "dreamfusion.yaml",
                    "--prompt",
                    "a red cube",
                    "--model",
                    str(tiny_pipeline),
                    "--output",
                    str(tmp_path),
                    "--device",
                    "cpu",
                    "--devices",
                    "2",
                    "--steps",
                    "4",
                    *TINY,
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    runs = [d for d in (tmp_path / "dreamfusion").iterdir() if not d.name.startswith(".")]
    assert [r.name for r in runs] == ["a-red-cube"]
    assert "ddp: parameters identical across 2 ranks" in (runs[0] / "log.txt").read_text()
    assert (runs[0] / "export" / "model.glb").is_file()

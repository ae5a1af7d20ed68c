"""Kill a tiny text-to-3D run at several points, resume it, and compare with an uninterrupted run.

    OMP_NUM_THREADS=1 python -m bench.fault_kills WORKDIR      # prints "kills survived: S/T"

`run_kills(workdir) -> (survived, tried)` (bench/bench_faults.py reports it). A kill point is survived
when, after the kill, `launch.py --resume RUN` exits 0 and the run ends with the same weights (every
tensor of the final checkpoint equal) and the same exported mesh (model.obj byte for byte) as a run
of the same seed that was never interrupted. Kill points (SIGKILL, in a child process):
  - mid-step: inside the training step after the first checkpoint;
  - inside a checkpoint save: the temporary file truncated to half, then SIGKILL (a disk-level crash);
  - inside the last save of the run (before the export);
  - Ctrl-C (SIGINT) mid-step: must exit 130 with the resume command, having saved that step.
`python -m bench.fault_kills child SPEC_JSON` is the child process that installs one kill point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 6, 2
TINY = [
    "camera.height=16",
    "camera.width=16",
    "renderer.num_samples_per_ray=16",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=10",
    "export.resolution=24",
    "export.texture_size=32",
    "turntable.n_views=2",
    "turntable.resolution=16",
    "trainer.preview_every=0",
    f"trainer.checkpoint_every={EVERY}",
    "prompt_processor.cache_dir=null",
]
# (name, kill spec, exit status expected from the killed process)
KILLS = [
    ("mid-step", {"kind": "step", "at": 3}, -signal.SIGKILL),
    ("inside a checkpoint save", {"kind": "save", "at": 2}, -signal.SIGKILL),
    ("inside the final save", {"kind": "save", "at": STEPS // EVERY}, -signal.SIGKILL),
    ("Ctrl-C mid-step", {"kind": "sigint", "at": 3}, 130),
]


def run_args(model: str, output: Path, steps: int = STEPS, extra: tuple = ()) -> list[str]:
    return [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        model,
        "--seed",
        "3",
        "--steps",
        str(steps),
        "--output",
        str(output),
        *TINY,
        *extra,
    ]


def launch(argv: list[str], kill: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """launch.py in a child process (with one kill point installed when kill is given)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench.fault_kills", "child", json.dumps({"argv": argv, "kill": kill})]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _install(kill: dict) -> None:
    if kill["kind"] == "save":
        from gen3d.reliability import checkpoint_io

        count = [0]

        def hook(tmp: Path, f) -> None:
            count[0] += 1
            if count[0] == kill["at"]:
                f.flush()
                os.truncate(tmp, os.path.getsize(tmp) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint_io.SAVE_HOOKS.append(hook)
        return
    from gen3d.systems.text3d import Text3DSystem

    step = Text3DSystem.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == kill["at"]:
            os.kill(os.getpid(), signal.SIGKILL if kill["kind"] == "step" else signal.SIGINT)
        return step(self, batch, batch_idx)

    Text3DSystem.training_step = training_step


def _child(spec: dict) -> int:
    import launch as launcher

    if spec.get("kill"):
        _install(spec["kill"])
    return launcher.main(spec["argv"])


def final_state(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "ckpts" / "last.ckpt", map_location="cpu", weights_only=True)


def same_result(run_dir: Path, ref_dir: Path) -> tuple[bool, str]:
    """(equal, what differs) for the final weights and the exported mesh of two runs."""
    import torch

    a, b = final_state(run_dir), final_state(ref_dir)
    if a["global_step"] != b["global_step"]:
        return False, f"final step {a['global_step']} != {b['global_step']}"
    diff = [
        k
        for k in b["state_dict"]
        if k not in a["state_dict"] or not torch.equal(a["state_dict"][k], b["state_dict"][k])
    ]
    if diff:
        return False, f"{len(diff)} tensors differ (e.g. {diff[0]})"
    obj = "export/model.obj"
    if (run_dir / obj).read_bytes() != (ref_dir / obj).read_bytes():
        return False, "the exported meshes differ"
    return True, ""


def tiny_model(workdir: Path) -> str:
    path = workdir / "tiny-pipeline"
    if not (path / "model_index.json").is_file():
        from gen3d.prior.model import build_random_pipeline

        build_random_pipeline(path, seed=0)
    return str(path)


def reference(workdir: Path, model: str) -> Path:
    out = workdir / "reference"
    ref = out / "dreamfusion" / "a-red-cube"
    if not (ref / "export" / "model.obj").is_file():
        proc = launch(run_args(model, out))
        if proc.returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed:\n{proc.stderr[-2000:]}")
    return ref


def try_kill(workdir: Path, model: str, ref: Path, name: str, kill: dict, expect: int) -> tuple[bool, str]:
    out = workdir / name.replace(" ", "-")
    run_dir = out / "dreamfusion" / "a-red-cube"
    proc = launch(run_args(model, out), kill)
    if proc.returncode != expect:
        return False, f"exit {proc.returncode} instead of {expect}: {proc.stderr[-600:]}"
    if expect == 130:
        line = proc.stderr.strip().splitlines()[-1]
        if f"resume with: python launch.py --resume {run_dir}" not in line:
            return False, f"no resume command on Ctrl-C: {line!r}"
    resumed = launch(["--resume", str(run_dir)])
    if resumed.returncode != 0:
        return False, f"--resume exit {resumed.returncode}: {resumed.stderr[-600:]}"
    return same_result(run_dir, ref)


def run_kills(workdir, verbose: bool = False) -> tuple[int, int]:
    """(kill points survived, kill points tried); see the module docstring."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = tiny_model(workdir)
    ref = reference(workdir, model)
    survived = 0
    for name, kill, expect in KILLS:
        ok, why = try_kill(workdir, model, ref, name, kill, expect)
        survived += ok
        if verbose:
            print(f"{name}: {'survived' if ok else 'FAILED: ' + why}", flush=True)
    return survived, len(KILLS)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child(json.loads(sys.argv[2])))
    s, t = run_kills(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gen3d-fault-kills", verbose=True)
    print(f"kills survived: {s}/{t}")

"""Data-parallel scaling: iterations per second per process and scaling efficiency.

    python bench/bench_ddp.py [--model builtin] [--steps 100] [--procs 1 2] [--device cpu]

Each process renders its own cameras (batch 1), so G processes train on G images per step.
Time per step is read from the run's log ("stage main: trained N steps in S s"), which leaves
out start-up and export. Efficiency = (images/s with G processes) / (G * images/s with 1 process).
On GPUs use --device cuda --procs 1 2 4.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seconds_per_step(args: list[str], steps: int, procs: int, device: str) -> float:
    out = Path(tempfile.mkdtemp(prefix="gen3d-ddp-"))
    subprocess.run(
        [
            sys.executable,
            "launch.py",
            *args,
            "--steps",
            str(steps),
            "--output",
            str(out),
            "--device",
            device,
            "--devices",
            str(procs),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = next(out.glob("*/*/log.txt")).read_text()
    n, secs = re.findall(r"trained (\d+) steps in ([\d.]+) s", log)[-1]
    return float(secs) / int(n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="builtin")
    p.add_argument("--config", default="dreamfusion.yaml")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--procs", type=int, nargs="*", default=[1, 2])
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    args = [
        "--config",
        a.config,
        "--prompt",
        "a red cube",
        "--model",
        a.model,
        "export.resolution=32",
        "turntable.n_views=2",
        "trainer.preview_every=0",
        "trainer.checkpoint_every=100000",
    ]
    base = None
    for g in a.procs:
        per_step = seconds_per_step(args, a.steps, g, a.device)
        images_per_s = g / per_step
        base = base or images_per_s / g
        print(
            f"{g} process(es): {1 / per_step:.2f} it/s per process, {images_per_s:.2f} images/s, "
            f"scaling efficiency {images_per_s / (g * base):.2f}"
        )


if __name__ == "__main__":
    main()

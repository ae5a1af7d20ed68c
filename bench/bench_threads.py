"""CPU thread policy: the quickstart's training speed with one competing busy process against without,
for the auto policy (num_threads=0, the default) and for torch's default of one thread per core.

    nice -n 10 python bench/bench_threads.py --steps 100
    nice -n 10 python bench/bench_threads.py --steps 60 --policy auto   # the target only (torch's default
                                                                        # can take many minutes when busy)

Each line is one fresh `launch.py` run (DreamFusion on the builtin prior, the quickstart's settings,
a small export); it/s is the training stage's own (stages.json), so start-up and export are not
counted. The target is a slowdown (quiet it/s / busy it/s) of at most 2 for the auto policy. The
machine's own load is printed: on a shared machine "quiet" means "without the extra busy process".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_EXPORT = [
    "turntable.n_views=2",
    "export.resolution=48",
    "export.texture_size=64",
    "trainer.preview_every=0",
    "trainer.checkpoint_every=100000",
    "logger=none",
]


def _spin() -> None:
    while True:
        pass


def train_speed(num_threads: int, steps: int, out: Path) -> float:
    before = set(out.rglob("stages.json"))
    cmd = [
        sys.executable,
        str(ROOT / "launch.py"),
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        "builtin",
        "--steps",
        str(steps),
        "--output",
        str(out),
        "--quiet",
        f"num_threads={num_threads}",
        *SMALL_EXPORT,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    (stages,) = set(out.rglob("stages.json")) - before
    main = json.loads(stages.read_text())["main"]
    return main["steps"] / main["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--policy", choices=["auto", "default", "both"], default="both")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    policies = {"auto": 0, f"torch default ({cores} threads)": cores}
    if args.policy != "both":
        policies = dict([list(policies.items())[args.policy == "default"]])
    print(f"{cores} cores; load average {os.getloadavg()[0]:.2f} before the runs")
    speeds: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("quiet", "one busy process"):
            spinner = mp.Process(target=_spin, daemon=True) if load != "quiet" else None
            if spinner:
                spinner.start()
            try:
                for name, n in policies.items():
                    speeds[load, name] = train_speed(n, args.steps, Path(tmp))
                    print(
                        f"{load:17s} {name:26s} {speeds[load, name]:6.2f} it/s (load average {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
            finally:
                if spinner:
                    spinner.terminate()
                    spinner.join()
    for name in policies:
        print(
            f"slowdown with one busy process, {name}: {speeds['quiet', name] / speeds['one busy process', name]:.2f}x"
        )


if __name__ == "__main__":
    main()

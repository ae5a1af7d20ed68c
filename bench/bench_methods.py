"""Wall time of whole runs to exported meshes, per stage, for each method on this machine.

    python bench/bench_methods.py [--model builtin] [--prompt "a red cube"] [--methods dreamfusion magic3d prolificdreamer]

Runs `launch.py` as a user would and reads the stage start times from the run's log.txt.
Targets on 2 CPU cores with the builtin prior: DreamFusion < 5 min, Magic3D < 8 min,
ProlificDreamer (3 stages) < 15 min.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"dreamfusion": 300, "magic3d": 480, "prolificdreamer": 900}


def stage_times(log: str, end: float) -> list[tuple[str, float]]:
    marks = []
    for line in log.splitlines():
        m = re.match(r"(\S+ \S+) stage (\S+): (training|resuming)", line)
        if m:
            marks.append((m.group(2), datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()))
    marks.append(("export", end))
    return [(name, marks[i + 1][1] - t) for i, (name, t) in enumerate(marks[:-1])]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="builtin")
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--methods", nargs="*", default=list(TARGETS))
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="gen3d-bench-"))
    for method in a.methods:
        t0 = time.time()
        subprocess.run(
            [
                sys.executable,
                "launch.py",
                "--config",
                f"{method}.yaml",
                "--prompt",
                a.prompt,
                "--model",
                a.model,
                "--output",
                str(out),
                *a.overrides,
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        total = time.time() - t0
        log_file = next((out / method).glob("*/log.txt"))
        parts = stage_times(log_file.read_text(), log_file.stat().st_mtime)
        detail = ", ".join(f"{n} {s:.0f}s" for n, s in parts)
        print(
            f"{method:<16} total {total:6.0f} s (target {TARGETS.get(method, 0)} s, "
            f"ratio {total / TARGETS.get(method, total):.2f})  [{detail}]  -> {log_file.parent}"
        )


if __name__ == "__main__":
    main()

"""Start-up time: seconds from starting `python launch.py` to its first training step (a fresh
process each time; median of --repeat runs), for DreamFusion (the quickstart) and Tune-A-Video.

    python bench/bench_startup.py                       # this checkout
    python bench/bench_startup.py --repo /tmp/gen3d-old # another checkout (e.g. before a change)
    python bench/bench_startup.py --importtime          # also the slowest imports of a run (python -X importtime)

Also prints the size of the report viewer files shipped in gen3d/report/ (three.js subset + viewer).

Timings move with the machine's load: compare checkouts within one invocation (--repo A --repo B).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "dreamfusion": ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", "builtin"],
    "tuneavideo": [
        "--config",
        "tuneavideo.yaml",
        "--prompt",
        "a blue sphere",
        "--edit",
        "a red sphere",
        "--model",
        "builtin",
        "--frames",
        "4",
    ],
}


def first_step_seconds(repo: Path, args: list[str], out: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "first-step"
        env = {**os.environ, "GEN3D_FIRST_STEP_FILE": str(stamp)}
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, str(HERE / "_first_step.py"), str(repo), *args, "--output", str(out)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        if not stamp.is_file():
            raise SystemExit(
                f"no training step reached (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        return float(stamp.read_text()) - t0


RUN_MODULES = "launch, gen3d.cli, gen3d.systems.runner, gen3d.diffusion.prior"  # what a 3D run imports


def slowest_imports(repo: Path, n: int = 12) -> list[tuple[float, str]]:
    code = f"import sys; sys.path.insert(0, {str(repo)!r}); import {RUN_MODULES}"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", action="append", type=Path, help="checkout(s) to time (default: this one)")
    p.add_argument("--case", choices=list(CASES), action="append")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--importtime", action="store_true")
    args = p.parse_args()
    repos = args.repo or [HERE.parent]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as out:
        for case in args.case or list(CASES):
            if case == "tuneavideo":
                video = Path(out) / "clip.gif"
                if not video.is_file():
                    subprocess.run(
                        [sys.executable, "-m", "video.demo", str(video), "--frames", "4"],
                        cwd=repos[0],
                        check=True,
                        capture_output=True,
                    )
                extra = ["--video", str(video)]
            else:
                extra = []
            for repo in repos:
                times = [first_step_seconds(repo, CASES[case] + extra, Path(out) / "runs") for _ in range(args.repeat)]
                print(
                    f"{case:12s} {str(repo):40s} first training step after {statistics.median(times):6.2f} s "
                    f"(median of {len(times)}: {' '.join(f'{t:.2f}' for t in times)})"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    report = HERE.parent / "gen3d" / "report"  # what a report copies next to it (report_files/) or links
    viewer = [*(report / "vendor").glob("*.min.js"), *(report / "static").glob("*")]
    for path in sorted(viewer):
        print(f"shipped viewer file {path.relative_to(HERE.parent)}: {path.stat().st_size / 1024:.1f} KiB")
    print(f"shipped viewer files in all: {sum(p.stat().st_size for p in viewer) / 1024:.1f} KiB")
    if args.importtime:
        for repo in repos:
            print(f"slowest imports of `import {RUN_MODULES}` in {repo} (cumulative s):")
            for sec, name in slowest_imports(repo):
                print(f"  {sec:6.2f}  {name}")


if __name__ == "__main__":
    main()

"""Reliability figures: the bad-input table (tests/fault_inputs.py) and, when bench/fault_kills.py is
present, runs killed and resumed; plus the wall time of one error path before and after the checks
moved ahead of the heavy imports.

    python bench/bench_faults.py                      # table + kills + error-path time vs a14df71
    python bench/bench_faults.py --baseline ''        # no baseline checkout (no ratio)
    python bench/bench_faults.py --no-kills           # skip the kill runs

Printed: bad inputs tried, the share that end with exactly one `error:` line and exit code 2 (no
traceback), the share that wrote nothing, kills survived / kills tried, and the error path's median
wall time per checkout with their ratio. Times move with the machine's load (printed with them):
compare within one invocation only.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fault_inputs import CASES, cuda_available, make_fixtures, run_case  # noqa: E402

ERROR_PATH = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "camera.height=0"]


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def bad_inputs(work: Path) -> tuple[int, int, int, list[str]]:
    """(tried, one error line + exit 2, nothing written, ids of the failures)."""
    paths = make_fixtures(work)
    tried = one = clean = 0
    failures = []
    for case in CASES:
        if case.needs_no_cuda and cuda_available():
            continue
        out = run_case(case, paths, work)
        tried += 1
        one += out.one_line
        clean += not out.written
        if not (out.one_line and not out.written):
            failures.append(
                f"{case.id}: exit {out.code}, {len(out.stderr.splitlines())} stderr lines, wrote {out.written[:3]}"
            )
    return tried, one, clean, failures


def kill_runner():
    """bench/fault_kills.py's run_kills(workdir) -> (survived, tried), or None where that module is absent."""
    try:
        from bench.fault_kills import run_kills
    except ModuleNotFoundError as err:
        if err.name in ("bench", "bench.fault_kills"):
            return None
        raise
    return run_kills


def error_path_seconds(repo: Path, out: Path) -> tuple[float, int]:
    """Wall time of `python launch.py ... camera.height=0` in a fresh process, and its exit code."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "launch.py", *ERROR_PATH, "--output", str(out), "--device", "cpu"],
        cwd=repo,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return time.perf_counter() - t0, proc.returncode


def checkout(rev: str, dest: Path) -> Path:
    """The tree of `rev` exported to dest (git archive: no worktree, no checkout of this one)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", default="a14df71", help="revision to compare the error path with ('': none)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-kills", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="gen3d-faults-") as tmp:
        tmp = Path(tmp)
        print(f"machine: {os.cpu_count()} CPUs, {load()}")
        tried, one, clean, failures = bad_inputs(tmp / "table")
        print(f"bad inputs tried: {tried}")
        print(f"one error line and exit 2: {one}/{tried} ({100 * one / tried:.0f}%)")
        print(f"nothing written: {clean}/{tried} ({100 * clean / tried:.0f}%)")
        for line in failures:
            print("  failed:", line)
        run_kills = None if args.no_kills else kill_runner()
        if run_kills is None:
            print("kills: not measured")
        else:
            survived, killed = run_kills(tmp / "kills")
            print(f"kills survived: {survived}/{killed}")

        repos = {"this checkout": REPO}
        if args.baseline:
            repos[f"before ({args.baseline})"] = checkout(args.baseline, tmp / "baseline")
        times: dict[str, list[float]] = {name: [] for name in repos}
        for i in range(args.repeat):  # interleaved, so that both see the same load
            for k, (name, repo) in enumerate(repos.items()):
                seconds, code = error_path_seconds(repo, tmp / f"out-{k}-{i}")
                times[name].append(seconds)
                if i == 0:
                    print(f"error path ({' '.join(ERROR_PATH[4:])}) in {name}: exit {code}")
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name, m in medians.items():
            print(f"error path wall time, {name}: median {m:.2f} s of {args.repeat} ({load()})")
        if len(medians) == 2:
            now, before = medians.values()
            print(f"error path: {before / now:.1f}x faster than before")


if __name__ == "__main__":
    main()

"""Quality of the exported assets, per method and prompt, measured on the GLB (gen3d/quality).

    python bench/bench_quality.py [--methods dreamfusion magic3d prolificdreamer] [--prompts "a red cube" ...]
                                  [--out bench-quality] [--model builtin] [key=value ...]

Runs `launch.py --config METHOD.yaml --prompt PROMPT --model builtin` (the default command) for every
method and prompt, then measures the export: Chamfer distance to the prompted primitive (normalised,
aligned over yaw and small tilts) and the nearest primitive, components / watertight / genus, texture
purity (stray share), colour (Delta E of the median albedo to the turntable's median object colour and
to the prompt's colour), UV charts and coverage, and the run's wall time. Each run's figures are one
JSON file under --out (<method>/<prompt-slug>.json): a rerun skips runs already measured, so a long
bench can be stopped and resumed (--remeasure measures the cached runs' exports again, keeping their run
times). Prints one row per run, then the mean and the worst per method.
Targets (issue 11): nearest = prompted shape, Chamfer <= 0.05, 1 watertight component of the true
genus, stray <= 5%, Delta E to the turntable <= 10, charts <= 100, coverage >= 50%, time within
DreamFusion 5 min, Magic3D 8 min, ProlificDreamer 15 min.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen3d.quality import evaluate_asset  # noqa: E402
from gen3d.utils.atomic import write_text_atomic  # noqa: E402

TARGETS = {"dreamfusion": 300, "magic3d": 480, "prolificdreamer": 900}
# all five shapes, six colours (white is left out: on the white background it has no silhouette)
PROMPTS = [
    "a red cube",
    "a blue sphere",
    "a green torus",
    "a yellow cone",
    "a purple cylinder",
    "a orange cube",
    "a green sphere",
    "a red torus",
    "a blue cone",
    "a black cylinder",
]
COLUMNS = [
    ("chamfer", "chamfer", "{:.3f}"),
    ("nearest", "nearest", "{}"),
    ("components", "comp", "{}"),
    ("watertight", "closed", "{}"),
    ("genus", "genus", "{}"),
    ("stray_fraction", "stray", "{:.1%}"),
    ("colour_delta_e", "dE_tt", "{:.1f}"),
    ("prompt_delta_e", "dE_prompt", "{:.1f}"),
    ("charts", "charts", "{}"),
    ("coverage", "cover", "{:.0%}"),
    ("seconds", "time_s", "{:.0f}"),
]
WORST = {
    "chamfer": max,
    "components": max,
    "stray_fraction": max,
    "colour_delta_e": max,
    "prompt_delta_e": max,
    "charts": max,
    "coverage": min,
    "seconds": max,
}


def slug(prompt: str) -> str:
    return "-".join(prompt.lower().split())


def run_one(method: str, prompt: str, out: Path, model: str, overrides: list[str], remeasure: bool = False) -> dict:
    """Train + export one run (its own output folder), measure it, cache the figures. remeasure: measure a
    cached run's export again (after a change to the metrics), keeping its run time and load."""
    result_file = out / method / f"{slug(prompt)}.json"
    cached = json.loads(result_file.read_text()) if result_file.is_file() else None
    if cached is not None and not remeasure:
        return cached
    runs = out / "runs"
    run_dir = runs / method / slug(prompt)
    if not (run_dir / "export" / "model.glb").is_file():
        if run_dir.exists():  # an interrupted run: continue it
            cmd = ["--resume", str(run_dir)]
        else:
            cmd = ["--config", f"{method}.yaml", "--prompt", prompt, "--model", model, "--output", str(runs)]
        t0 = time.time()
        log = out / method / f"{slug(prompt)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            subprocess.run([sys.executable, "launch.py", *cmd, *overrides], cwd=ROOT, check=True, stdout=fh, stderr=fh)
        seconds = time.time() - t0
    else:
        seconds = float("nan")
    words = prompt.split()
    figures = evaluate_asset(
        run_dir / "export" / "model.glb", words[-1], words[-2], run_dir / "video" / "turntable.mp4"
    )
    figures.update(
        method=method,
        prompt=prompt,
        seconds=seconds,
        target_s=TARGETS.get(method),
        load=os.getloadavg()[0],
        run_dir=str(run_dir),
    )
    if cached is not None:  # remeasured: the run's own time and load
        figures.update({k: cached[k] for k in ("seconds", "load") if k in cached})
    write_text_atomic(result_file, json.dumps(figures, indent=1))
    return figures


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if spec == "{}" and isinstance(value, float):
        return f"{value:.1f}"
    return spec.format(value)


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<16} {'prompt':<20} " + " ".join(f"{h:>9}" for _, h, _ in COLUMNS))
    for r in rows:
        print(f"{r['method']:<16} {r['prompt']:<20} " + " ".join(f"{fmt(r.get(k), s):>9}" for k, _, s in COLUMNS))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        for label, pick in (("mean", None), ("worst", WORST)):
            cells = []
            for key, _, spec in COLUMNS:
                vals = [
                    r[key]
                    for r in mine
                    if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and r[key] == r[key]
                ]
                if not vals or (pick is not None and key not in pick):
                    cells.append("-")
                else:
                    cells.append(fmt(sum(vals) / len(vals) if pick is None else pick[key](vals), spec))
            print(f"{method:<16} {label:<20} " + " ".join(f"{c:>9}" for c in cells))
        ok = sum(r["nearest"] == r["prompt"].split()[-1] for r in mine)
        good = sum(r["watertight"] and r["components"] == 1 and r["genus"] == r["true_genus"] for r in mine)
        print(
            f"{method:<16} {'targets':<20} nearest = prompted shape {ok}/{len(mine)}, "
            f"one watertight component of the true genus {good}/{len(mine)}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="*", default=list(TARGETS))
    p.add_argument("--prompts", nargs="*", default=PROMPTS)
    p.add_argument("--out", default="bench-quality", help="folder for the runs and the cached figures")
    p.add_argument("--model", default="builtin")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="measure cached runs' exports again instead of skipping them (keeps their run times)",
    )
    p.add_argument("overrides", nargs="*", help="config overrides passed to every run")
    a = p.parse_args()
    out = Path(a.out).resolve()
    print("prompts:", "; ".join(a.prompts), flush=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)", flush=True)
    rows = []
    for method in a.methods:
        for prompt in a.prompts:
            rows.append(run_one(method, prompt, out, a.model, a.overrides, a.remeasure))
            r = rows[-1]
            print(
                f"done {method} '{prompt}': chamfer {r['chamfer']:.3f} ({r['nearest']}), "
                f"{fmt(r['seconds'], '{:.0f}')} s",
                flush=True,
            )
    print_table(rows)


if __name__ == "__main__":
    main()

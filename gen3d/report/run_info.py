"""Everything a report shows about one run directory, read from the files the run wrote.

Sources, in order of preference: `stages.json` (time per stage, written by the console's progress
callback), the CSV logs (`logs/csv/**/metrics.csv`, Lightning's CSVLogger), `log.txt` (older runs:
"[stage] step N k=v" and "stage X: trained N steps in T s" lines), `config.yaml`, `previews/`,
`video/`, `export/`, `metrics.json` (video runs).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STEP_LINE = re.compile(r"\[(?P<stage>[^\]]+)\] step (?P<step>\d+) (?P<rest>.*)$")
STAGE_TIME_LINE = re.compile(r"stage (?P<stage>\S+): trained (?P<steps>\d+) steps in (?P<sec>[\d.]+) s")
PREVIEW_NAME = re.compile(r"step-(\d+)\.png$")


@dataclass
class Model:
    """One exported mesh (a particle)."""

    label: str
    glb: Path
    turntable: Path | None


@dataclass
class RunInfo:
    run_dir: Path
    config: dict
    stages: dict = field(default_factory=dict)  # stage -> {"steps": int, "seconds": float}
    curves: dict = field(default_factory=dict)  # stage -> metric -> [(step, value)]
    previews: list = field(default_factory=list)  # [(stage, step, Path)] in step order
    models: list = field(default_factory=list)  # [Model]
    video: dict | None = None  # metrics.json of a video run

    @property
    def method(self) -> str:
        return str(self.config.get("name") or self.config.get("system") or "?")

    @property
    def prompt(self) -> str:
        return str(self.config.get("prompt") or "")

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "")

    @property
    def total_seconds(self) -> float:
        return sum(s.get("seconds", 0.0) for s in self.stages.values())

    def last_value(self, metric: str = "loss") -> float | None:
        for stage in reversed(list(self.curves)):
            points = self.curves[stage].get(metric)
            if points:
                return points[-1][1]
        return None


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def read_run(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    info = RunInfo(run_dir=run_dir, config=config)
    log_text = (run_dir / "log.txt").read_text(errors="replace") if (run_dir / "log.txt").is_file() else ""
    info.stages = _read_stages(run_dir, log_text)
    info.curves = _read_csv_curves(run_dir) or _read_log_curves(log_text)
    order = [s.get("name") for s in config.get("stages") or [] if isinstance(s, dict)]
    info.previews = _read_previews(run_dir, order)
    info.models = _read_models(run_dir)
    if (run_dir / "metrics.json").is_file():
        info.video = json.loads((run_dir / "metrics.json").read_text())
    return info


def _read_stages(run_dir: Path, log_text: str) -> dict:
    path = run_dir / "stages.json"
    if path.is_file():
        return json.loads(path.read_text())
    stages: dict = {}
    for m in STAGE_TIME_LINE.finditer(log_text):
        s = stages.setdefault(m["stage"], {"steps": 0, "seconds": 0.0})
        s["steps"] += int(m["steps"])
        s["seconds"] += float(m["sec"])
    return stages


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_csv_curves(run_dir: Path) -> dict:
    """CSVLogger files: logs/csv/<stage>/version_*/metrics.csv (the stage is the logger's name)."""
    curves: dict = {}
    for path in sorted((run_dir / "logs" / "csv").glob("*/version_*/metrics.csv")):
        stage = path.parent.parent.name
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = _number(row.get("step"))
                if step is None:
                    continue
                for key, text in row.items():
                    value = _number(text)
                    if key in ("step", "epoch") or value is None:
                        continue
                    curves.setdefault(stage, {}).setdefault(key, []).append((int(step), value))
    for metrics in curves.values():
        for key, points in metrics.items():
            metrics[key] = sorted(dict(points).items())  # a resumed run re-logs a step: keep the last
    return curves


def _read_log_curves(log_text: str) -> dict:
    curves: dict = {}
    for line in log_text.splitlines():
        m = STEP_LINE.search(line)
        if not m:
            continue
        for pair in m["rest"].split():
            key, _, text = pair.partition("=")
            value = _number(text)
            if value is not None:
                curves.setdefault(m["stage"], {}).setdefault(key, []).append((int(m["step"]), value))
    return curves


def _read_previews(run_dir: Path, stage_order: list) -> list:
    out = []
    for path in (run_dir / "previews").rglob("step-*.png") if (run_dir / "previews").is_dir() else []:
        rel = path.parent.relative_to(run_dir / "previews")
        out.append((str(rel) if str(rel) != "." else "", int(PREVIEW_NAME.search(path.name)[1]), path))
    rank = {name: i for i, name in enumerate(stage_order)}
    return sorted(out, key=lambda p: (rank.get(p[0], len(rank)), p[0], p[1]))


def _read_models(run_dir: Path) -> list:
    export, video = run_dir / "export", run_dir / "video"
    if (export / "model.glb").is_file():
        return [Model("model", export / "model.glb", _existing(video / "turntable.mp4"))]
    models = []
    for path in sorted(export.glob("particle-*/model.glb"), key=lambda p: int(p.parent.name.split("-")[1])):
        i = path.parent.name.split("-")[1]
        models.append(Model(f"particle {i}", path, _existing(video / f"turntable-{i}.mp4")))
    return models


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None

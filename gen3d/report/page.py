"""report.html of one run directory: what was asked, how long it took, how training went, what came out.

Opens offline from file://; every path in the page is relative to the run directory, so the run
folder can be moved or copied as a whole.
"""

from __future__ import annotations

import importlib
import json
import time
from html import escape
from pathlib import Path

import yaml

from gen3d.report import assets
from gen3d.report.html import duration, page, table
from gen3d.report.run_info import RunInfo, read_run
from gen3d.report.svg import curves_svg
from gen3d.utils.atomic import write_text_atomic

MAX_PREVIEWS = 24
# the report part a system adds, by the run's `system:` ("module:function(info, files) -> html"; named, not
# imported, so gen3d does not depend on the video package)
SYSTEM_SECTIONS = {name: "video.report:section" for name in ("video", "tuneavideo", "controlvideo")}
VIEWER_SIZE = 480


def _rel(info: RunInfo, path: Path) -> str:
    return escape(path.relative_to(info.run_dir).as_posix(), quote=True)


def _header(info: RunInfo) -> str:
    rows = [
        ["prompt", info.prompt],
        ["method", info.method],
        ["model", info.model],
        ["seed", info.seed],
        ["run directory", str(info.run_dir)],
        ["report written", time.strftime("%Y-%m-%d %H:%M:%S")],
    ]
    if info.video:
        rows.insert(1, ["edits", "; ".join(str(e) for e in info.config.get("edit") or [])])
    return f"<h1>{escape(info.prompt or info.method)}</h1>" + table(None, [r for r in rows if r[1] is not None])


def _stages(info: RunInfo) -> str:
    if not info.stages:
        return ""
    rows = [
        [
            name,
            s.get("steps", ""),
            duration(s.get("seconds", 0.0)),
            (s.get("steps", 0) / s["seconds"]) if s.get("seconds") else "",
        ]
        for name, s in info.stages.items()
    ]
    rows.append(["total", sum(s.get("steps", 0) for s in info.stages.values()), duration(info.total_seconds), ""])
    return "<h2>Time per stage</h2>" + table(["stage", "steps trained", "time", "it/s"], rows)


def _curves(info: RunInfo) -> str:
    charts = curves_svg(info.curves)
    return '<h2>Training curves</h2><div class="row">' + "".join(charts) + "</div>" if charts else ""


def _previews(info: RunInfo) -> str:
    previews = info.previews
    if not previews:
        return ""
    if len(previews) > MAX_PREVIEWS:  # evenly spaced, always with the last one
        step = (len(previews) - 1) / (MAX_PREVIEWS - 1)
        previews = [previews[round(i * step)] for i in range(MAX_PREVIEWS)]
    figs = "".join(
        f'<figure><img class="pixel" src="{_rel(info, p)}" width="384" loading="lazy">'
        f"<figcaption>{escape(stage + ' ' if stage else '')}step {step}</figcaption></figure>"
        for stage, step, p in previews
    )
    return '<h2>Previews over the steps</h2><div class="row">' + figs + "</div>"


def videos_section(info: RunInfo, paths: list[tuple[str, Path]], title: str) -> str:
    if not paths:
        return ""
    figs = "".join(
        f'<figure><video src="{_rel(info, p)}" controls loop muted autoplay playsinline width="256"></video>'
        f"<figcaption>{escape(label)}</figcaption></figure>"
        for label, p in paths
    )
    return f'<h2>{escape(title)}</h2><div class="row">{figs}</div>'


def _viewer(info: RunInfo, files: Path) -> str:
    if not info.models:
        return ""
    scripts = assets.copy_viewer(files)
    models, stat_rows = [], []
    for i, m in enumerate(info.models):
        key = f"model-{i}"
        models.append({"label": m.label, "key": key, "src": assets.glb_script(m.glb, files, key)})
        s = assets.glb_stats(m.glb)
        stat_rows.append(
            [m.label, s["vertices"], s["faces"], s["images"], f"{s['bytes'] / 1e6:.2f} MB", _rel(info, m.glb)]
        )
    assets.remove_stale(files, {m["src"] for m in models})
    tt = info.config.get("turntable") or {}
    bg = (info.config.get("background") or {}).get("color") or [1.0, 1.0, 1.0]
    data = {
        "models": models,
        "fovy": tt.get("fovy", 50.0),
        "elevation": tt.get("elevation", 15.0),
        "distance": tt.get("distance", 2.3),
        "background": [float(c) for c in bg[:3]],
    }
    options = "".join(f'<option value="{i}">{escape(m["label"])}</option>' for i, m in enumerate(models))
    hidden = "" if len(models) > 1 else ' style="display:none"'
    lit = "" if tt.get("shading", "albedo") == "albedo" else " checked"
    return (
        "<h2>Exported mesh</h2>"
        f'<div class="controls"><select id="viewer-model"{hidden}>{options}</select> '
        f'<label><input type="checkbox" id="viewer-lit"{lit}> lit</label>'
        '<span id="viewer-status">loading…</span></div>'
        f'<canvas id="viewer" width="{VIEWER_SIZE}" height="{VIEWER_SIZE}"></canvas>'
        '<p class="meta">Drag to orbit, scroll to zoom, right-drag to pan. Unlit (albedo) shading matches '
        "the turntable; the view starts at the turntable's first camera.</p>"
        + table(["model", "vertices", "triangles", "textures", "GLB size", "file"], stat_rows)
        + f'<script type="application/json" id="gen3d-viewer-data">{json.dumps(data)}</script>'
        + "".join(f'<script src="{s}"></script>' for s in scripts)
    )


def _system_section(info: RunInfo, files: Path) -> str:
    ref = SYSTEM_SECTIONS.get(str(info.config.get("system")))
    if ref is None:
        return ""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)(info, files)


def _thumbnail(info: RunInfo, files: Path) -> None:
    try:
        if info.models and info.models[0].turntable:
            image = assets.first_frame(info.models[0].turntable)
        elif info.video and (info.run_dir / "edit-0.mp4").is_file():
            image = assets.first_frame(info.run_dir / "edit-0.mp4")
        elif info.previews:
            import imageio.v3 as iio

            image = iio.imread(info.previews[-1][2])[..., :3]
        else:
            return
    except (OSError, ValueError):
        return
    assets.write_thumbnail(image, files)


def render(info: RunInfo) -> str:
    files = info.run_dir / assets.FILES_DIR
    files.mkdir(exist_ok=True)
    _thumbnail(info, files)
    turntables = [(m.label, m.turntable) for m in info.models if m.turntable]
    body = "".join(
        [
            _header(info),
            _stages(info),
            _curves(info),
            videos_section(info, turntables, "Turntable"),
            _viewer(info, files),
            _system_section(info, files),
            _previews(info),
            "<h2>Config</h2><details><summary>config.yaml</summary><pre>"
            + escape(yaml.safe_dump(info.config, sort_keys=False))
            + "</pre></details>",
        ]
    )
    return page(f"gen3d: {info.prompt or info.method}", body)


def write_report(run_dir: Path) -> Path:
    """Write <run_dir>/report.html (and report_files/) from what the run has written so far."""
    info = read_run(Path(run_dir))
    return write_text_atomic(info.run_dir / "report.html", render(info))

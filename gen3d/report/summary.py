"""The few lines printed at the end of a run: where its results are, how long each stage took, how big
the meshes are (read from the run directory, like the report)."""

from __future__ import annotations

import os
from pathlib import Path

from gen3d.report import assets
from gen3d.report.html import duration
from gen3d.report.run_info import read_run


def _short(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def summary_text(run_dir: Path, report: Path | None = None) -> str:
    info = read_run(Path(run_dir))
    lines = [f"done: {info.method} '{info.prompt}' in {_short(info.run_dir)}"]
    if info.stages:
        parts = [
            f"{name} {duration(s.get('seconds', 0.0))} ({s.get('steps', 0)} steps)" for name, s in info.stages.items()
        ]
        lines.append(f"  time       {', '.join(parts)}; total {duration(info.total_seconds)}")
    loss = info.last_value("loss")
    if loss is not None:
        lines.append(f"  last loss  {loss:.4g}")
    for m in info.models:
        s = assets.glb_stats(m.glb)
        lines.append(
            f"  mesh       {_short(m.glb)} (+ .obj .mtl .png): {s['vertices']} vertices, {s['faces']} "
            f"triangles, {s['bytes'] / 1e6:.2f} MB"
        )
        if m.turntable:
            lines.append(f"  turntable  {_short(m.turntable)}")
    for i, edit in enumerate((info.video or {}).get("edits", [])):
        files = edit.get("files", {})
        lines.append(
            f"  edit {i}     {_short(Path(files.get('mp4', info.run_dir / f'edit-{i}.mp4')))}  "
            f"'{edit.get('prompt', '')}'"
        )
    if report is not None:
        lines.append(
            f"  report     {_short(report)}  (all runs: python -m gen3d.report {_short(info.run_dir.parent.parent)})"
        )
    return "\n".join(lines)


def finish_run(run_dir: Path) -> Path | None:
    """End of a run (rank 0): rewrite report.html, then print the summary (not with --quiet)."""
    from gen3d.report import update_report
    from gen3d.utils.console import verbosity

    report = update_report(run_dir)
    if verbosity() != "quiet":
        print(summary_text(Path(run_dir), report), flush=True)
    return report

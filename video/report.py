"""The video-run part of a run's report.html (gen3d.report.page calls it for `system: video` runs):
source and edits side by side, their frames over their foreground masks, and the metrics table."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import torch

from gen3d.report.assets import FILES_DIR
from gen3d.report.html import flatten, table
from gen3d.report.page import videos_section
from gen3d.report.run_info import RunInfo
from gen3d.utils.media import save_image
from video.metrics import silhouette_masks


def read_frames(run_dir: Path, name: str) -> np.ndarray | None:
    """A video run's frames [F,H,W,3] uint8: 'source' (source.mp4) or 'edit-i' (frames/edit-i/*.png)."""
    import imageio.v3 as iio

    folder = run_dir / "frames" / name
    if folder.is_dir():
        return np.stack([iio.imread(p)[..., :3] for p in sorted(folder.glob("*.png"))])
    video = run_dir / f"{name}.mp4"
    return np.stack([np.asarray(f)[..., :3] for f in iio.imiter(video)]) if video.is_file() else None


def frame_strip(run_dir: Path, names: list[str], files: Path, max_frames: int = 8) -> str | None:
    """One PNG: per clip a row of frames and a row of its foreground masks (the silhouette masks the
    metrics use); its name relative to the run, or None without frames."""
    rows = []
    for name in names:
        frames = read_frames(run_dir, name)
        if frames is None or len(frames) == 0:
            continue
        pick = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
        x = torch.from_numpy(frames[pick]).permute(0, 3, 1, 2).float() / 255.0
        masks = silhouette_masks(x).float()[..., None].expand(-1, -1, -1, 3)
        row = torch.cat(list(x.permute(0, 2, 3, 1)), dim=1)
        if rows and rows[0].shape != row.shape:
            continue
        rows += [row, torch.cat(list(masks), dim=1)]
    if not rows:
        return None
    save_image(files / "video-strip.png", torch.cat(rows, dim=0))
    return f"{FILES_DIR}/video-strip.png"


def section(info: RunInfo, files: Path) -> str:
    if not info.video:
        return ""
    edits = info.video.get("edits", [])
    clips = [("source", info.run_dir / "source.mp4")] + [
        (f"edit {i}: {e.get('prompt', '')}", info.run_dir / f"edit-{i}.mp4") for i, e in enumerate(edits)
    ]
    out = videos_section(info, [(label, p) for label, p in clips if p.is_file()], "Source and edits")
    names = ["source"] + [f"edit-{i}" for i in range(len(edits))]
    strip = frame_strip(info.run_dir, names, files)
    if strip:
        labels = " / ".join(f"{n} and its mask" for n in names)
        out += (
            f'<h2>Frames and foreground masks</h2><p class="meta">rows: {escape(labels)}</p>'
            f'<img class="pixel" src="{strip}" id="video-strip" style="max-width:100%" '
            'onload="this.width = Math.min(2 * this.naturalWidth, 1000)">'
        )
    rows = {"source": flatten(info.video.get("source", {}))}
    rows.update({f"edit {i}": flatten(e) for i, e in enumerate(edits)})
    keys = sorted({k for r in rows.values() for k in r})
    if keys:
        out += "<h2>Metrics</h2>" + table(
            ["metric", *rows], [[k, *(r.get(k, "") for r in rows.values())] for k in keys]
        )
    return out

"""index.html over every run found under a folder: a thumbnail per run with its prompt, method, seed,
time and metrics, in a table sorted by clicking a column and filtered by text."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from gen3d.report import assets
from gen3d.report.html import duration, flatten, page
from gen3d.report.page import write_report
from gen3d.report.run_info import RunInfo, is_run_dir, read_run
from gen3d.utils.atomic import write_text_atomic

SCRIPT = """
<script>
(function () {
  const table = document.getElementById("runs"), filter = document.getElementById("filter");
  const rows = () => Array.from(table.tBodies[0].rows);
  filter.addEventListener("input", function () {
    const q = filter.value.toLowerCase();
    rows().forEach(r => { r.style.display = r.textContent.toLowerCase().includes(q) ? "" : "none"; });
    document.getElementById("shown").textContent = rows().filter(r => r.style.display !== "none").length;
  });
  Array.from(table.tHead.rows[0].cells).forEach(function (th, col) {
    if (!th.classList.contains("sortable")) return;
    th.addEventListener("click", function () {
      const dir = th.dataset.dir === "asc" ? "desc" : "asc";
      Array.from(table.tHead.rows[0].cells).forEach(c => delete c.dataset.dir);
      th.dataset.dir = dir;
      const key = r => r.cells[col].dataset.sort ?? r.cells[col].textContent;
      const sorted = rows().sort(function (a, b) {
        const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return dir === "asc" ? c : -c;
      });
      sorted.forEach(r => table.tBodies[0].appendChild(r));
    });
  });
})();
</script>
"""


def find_runs(root: Path) -> list[Path]:
    """Run directories (holding a config.yaml) under root, not descending into a run."""
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        path = Path(dirpath)
        if is_run_dir(path):
            runs.append(path)
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(runs)


def run_metrics(info: RunInfo) -> dict:
    """The few numbers a gallery row shows: final loss, mesh size, or a video run's edit metrics."""
    out = {}
    loss = info.last_value("loss")
    if loss is not None:
        out["loss"] = loss
    if info.models:
        out["triangles"] = assets.glb_stats(info.models[0].glb)["faces"]
    for i, edit in enumerate((info.video or {}).get("edits", [])):
        flat = flatten(edit)
        for key in (
            "classifier.colour_accuracy",
            "classifier.shape_accuracy",
            "source_agreement.silhouette_iou",
            "text_alignment_clip",
        ):
            if key in flat:
                out[f"edit{i}.{key.split('.')[-1]}"] = flat[key]
    return out


def _row(info: RunInfo, root: Path) -> str:
    rel = info.run_dir.relative_to(root).as_posix()
    thumb = info.run_dir / assets.FILES_DIR / "thumb.png"
    img = f'<img src="{escape(rel, quote=True)}/{assets.FILES_DIR}/thumb.png" height="96">' if thumb.is_file() else ""
    metrics = run_metrics(info)
    text = "<br>".join(
        f"{escape(k)}={v:.4g}" if isinstance(v, float) else f"{escape(k)}={v}" for k, v in metrics.items()
    )
    cells = [
        f'<td><a href="{escape(rel, quote=True)}/report.html">{img}</a></td>',
        f'<td><a href="{escape(rel, quote=True)}/report.html">{escape(info.prompt)}</a></td>',
        f"<td>{escape(info.method)}</td>",
        f'<td class="num" data-sort="{info.seed if isinstance(info.seed, int) else ""}">{escape(str(info.seed))}</td>',
        f'<td class="num" data-sort="{info.total_seconds:.3f}">{duration(info.total_seconds)}</td>',
        f'<td data-sort="{metrics.get("loss", "")}">{text}</td>',
        f"<td>{escape(rel)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def write_gallery(root: Path, refresh: bool = False) -> Path:
    """Write root/index.html; runs without a report.html (or all, with refresh) get one first."""
    root = Path(root)
    infos = []
    for run in find_runs(root):
        if refresh or not (run / "report.html").is_file():
            write_report(run)
        infos.append(read_run(run))
    header = "".join(
        f'<th class="sortable">{h}</th>' if h else "<th></th>"
        for h in ["", "prompt", "method", "seed", "time", "metrics", "run"]
    )
    body = (
        f"<h1>gen3d runs in {escape(str(root))}</h1>"
        f'<input id="filter" type="search" placeholder="filter: prompt, method, seed…"> '
        f'<span class="meta"><span id="shown">{len(infos)}</span> of {len(infos)} runs; click a column to sort</span>'
        f'<table id="runs"><thead><tr>{header}</tr></thead><tbody>'
        + "".join(_row(info, root) for info in infos)
        + "</tbody></table>"
        + SCRIPT
    )
    return write_text_atomic(root / "index.html", page(f"gen3d runs: {root}", body))

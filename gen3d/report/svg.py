"""Loss curves as inline SVG (no plotting library, no JavaScript)."""

from __future__ import annotations

import math
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_chart(
    series: dict[str, list[tuple[float, float]]], title: str, width: int = 420, height: int = 220, log_y: bool = False
) -> str:
    """series: label -> [(x, y)] -> an <svg> element with axes, ticks and a legend."""
    series = {k: [(x, y) for x, y in v if not log_y or y > 0] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    tf = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    xs = [x for v in series.values() for x, _ in v]
    ys = [tf(y) for v in series.values() for _, y in v]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, right, top, bottom = 52, 10, 22, 28
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (tf(y) - y0) / (y1 - y0)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(x0, x1):
        out.append(f'<text x="{px(t):.1f}" y="{height - 12}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1):
        y = top + (1 - (t - y0) / (y1 - y0)) * ph
        label = _fmt(10**t) if log_y else _fmt(t)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{label}</text>'
        )
    out.append(f'<text x="{left + pw / 2}" y="{height - 1}" text-anchor="middle">step</text>')
    for i, (label, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        if len(series) > 1:
            out.append(
                f'<text x="{left + pw - 4}" y="{top + 12 + 12 * i}" text-anchor="end" fill="{colour}">'
                f"{escape(label)}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def curves_svg(curves: dict) -> list[str]:
    """RunInfo.curves (stage -> metric -> points) -> one chart per metric, stages as series;
    the loss is drawn on a log scale when it spans more than a decade."""
    metrics: dict = {}
    for stage, per_metric in curves.items():
        for name, points in per_metric.items():
            metrics.setdefault(name, {})[stage or name] = points
    charts = []
    for name in sorted(metrics, key=lambda m: (not m.startswith("loss"), m)):
        values = [y for pts in metrics[name].values() for _, y in pts]
        log_y = name.startswith("loss") and min(values) > 0 and max(values) / min(values) > 10
        charts.append(line_chart(metrics[name], name + (" (log)" if log_y else ""), log_y=log_y))
    return [c for c in charts if c]

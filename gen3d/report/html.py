"""Small HTML helpers shared by the run report and the gallery."""

from __future__ import annotations

from html import escape
from pathlib import Path

CSS = (Path(__file__).parent / "static" / "report.css").read_text()


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(header: list[str] | None, rows: list[list], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header or [])
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{fmt(c)}</td>' if isinstance(c, (int, float)) else f"<td>{fmt(c)}</td>" for c in row
        )
        + "</tr>"
        for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table{attrs}>{thead}<tbody>{body}</tbody></table>"


def flatten(tree, prefix: str = "") -> dict:
    """Nested dict -> {"a.b": number} for its numeric leaves (lists are skipped)."""
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix[:-1]] = tree
    return out


def duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"

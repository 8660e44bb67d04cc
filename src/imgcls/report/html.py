"""One self-contained HTML file (figures embedded as base64 PNG) plus the PNG files, so a
report can be mailed as one file and its figures reused in slides or a README."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure

from imgcls.tracking.io import atomic_write, atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #ddd; } h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; font-size: 14px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; margin: 0.5em 0; } .note { color: #555; } li { margin: 0.3em 0; }
"""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text, escaped on output
    table: list[dict[str, str]] | None = None
    figures: list[tuple[str, Figure]] = field(default_factory=list)  # (file stem, figure)
    bullets: list[str] = field(default_factory=list)


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p class='note'>(no rows)</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(folder: Path, title: str, sections: list[Section]) -> Path:
    """Writes folder/report.html and folder/<stem>.png for every figure; returns the HTML."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>generated {datetime.now():%Y-%m-%d %H:%M} by imgcls report</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.table is not None:
            parts.append(_table(section.table))
        if section.bullets:
            parts.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>"
                                          for b in section.bullets) + "</ul>")
        for stem, fig in section.figures:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", bbox_inches="tight")
            plt.close(fig)
            png = buffer.getvalue()
            atomic_write(folder / f"{stem}.png", lambda f, png=png: f.write(png))
            data = base64.b64encode(png).decode()
            parts.append(f"<img alt='{html.escape(stem)}' src='data:image/png;base64,{data}'>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = folder / "report.html"
    atomic_write_text(path, page)
    return path

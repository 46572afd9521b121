"""A report built from blocks (headings, text, tables, figures) and written as Markdown and HTML side by side.

Figures are matplotlib figures saved as PNG next to the report; the HTML embeds them by file name, so the folder can
be copied or served as it is.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from frugalnet.utils.io import atomic_write_text
from frugalnet.utils.plotting import pyplot


def format_value(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    return str(v)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


@dataclass
class _Block:
    kind: str
    payload: Any


@dataclass
class Report:
    title: str
    blocks: list[_Block] = field(default_factory=list)
    _figures: dict[str, Any] = field(default_factory=dict)

    def heading(self, text: str, level: int = 2) -> "Report":
        self.blocks.append(_Block("heading", (level, text)))
        return self

    def text(self, markdown: str) -> "Report":
        """A paragraph (inline Markdown is kept as plain text in HTML)."""
        self.blocks.append(_Block("text", markdown))
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> "Report":
        self.blocks.append(_Block("table", ([str(h) for h in headers], [[format_value(c) for c in r] for r in rows],
                                           caption)))
        return self

    def figure(self, fig, name: str, caption: str = "") -> "Report":
        """Add a matplotlib figure; it is saved as <name>.png when the report is written."""
        fname = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) + ".png"
        self._figures[fname] = fig
        self.blocks.append(_Block("figure", (fname, caption)))
        return self

    # --- output -------------------------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                level, text = b.payload
                out += ["#" * level + " " + text, ""]
            elif b.kind == "text":
                out += [b.payload, ""]
            elif b.kind == "table":
                headers, rows, caption = b.payload
                if caption:
                    out += [f"*{caption}*", ""]
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("")
            elif b.kind == "figure":
                fname, caption = b.payload
                out += [f"![{caption or fname}]({fname})", ""]
                if caption:
                    out += [f"*{caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        esc = html.escape
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
                 "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
                 "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
                 "img{max-width:100%}figcaption,.cap{color:#555;font-style:italic}</style></head><body>",
                 f"<h1>{esc(self.title)}</h1>"]
        for b in self.blocks:
            if b.kind == "heading":
                level, text = b.payload
                parts.append(f"<h{level}>{esc(text)}</h{level}>")
            elif b.kind == "text":
                parts.append(f"<p>{esc(b.payload)}</p>")
            elif b.kind == "table":
                headers, rows, caption = b.payload
                cap = f"<caption class='cap'>{esc(caption)}</caption>" if caption else ""
                head = "".join(f"<th>{esc(h)}</th>" for h in headers)
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "figure":
                fname, caption = b.payload
                parts.append(f"<figure><img src='{esc(fname)}' alt='{esc(caption or fname)}'>"
                             f"<figcaption>{esc(caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, folder: str | Path) -> Path:
        """Save figures, report.md and report.html into `folder`; return the Markdown path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for fname, fig in self._figures.items():
            fig.savefig(folder / fname, dpi=110, bbox_inches="tight")
            pyplot().close(fig)
        self._figures.clear()
        atomic_write_text(folder / "report.md", self.to_markdown())
        atomic_write_text(folder / "report.html", self.to_html())
        return folder / "report.md"

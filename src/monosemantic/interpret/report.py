"""One self-contained HTML report: metrics tables, images and text, in sections.

The file has inline CSS, images embedded as base64 data URIs and no JavaScript, so it can be
moved, mailed or opened anywhere. All text is HTML-escaped. Other tools add their own sections
(eigenvector grids, feature browsers) by building ``ReportSection`` objects.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from monosemantic.config import check
from monosemantic.files import atomic_write_bytes

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       background: #f6f7f9; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.25em; margin: 0 0 0.6em; }
nav ol { margin: 0.4em 0 1.2em; padding-left: 1.4em; color: #4a5568; }
nav a { color: #2457a6; text-decoration: none; }
section { background: #fff; border: 1px solid #e2e5ea; border-radius: 8px; padding: 18px 22px;
          margin: 18px 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.93em; }
th, td { border-bottom: 1px solid #e8eaee; padding: 4px 12px; text-align: left; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
         font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceef2; }
figcaption { color: #6b7280; font-size: 0.85em; }
""".strip()


@dataclass
class ReportSection:
    """One section: a heading, then paragraphs, a table and images, in that order.

    ``table`` is either one record (``{name: value}``, shown as a two-column table) or a list of
    records (one row each; columns are the union of keys in order of first appearance). Blank
    lines in ``text`` separate paragraphs. ``html`` is trusted markup that library code built
    and escaped itself (e.g. highlighted tokens); it is inserted as is after the images.
    """

    title: str
    table: dict[str, Any] | list[dict[str, Any]] | None = None
    images: list[Path] = field(default_factory=list)
    text: str = ""
    html: str = ""

    def __post_init__(self) -> None:
        check(bool(self.title.strip()), "title", self.title, "a non-empty section title")
        self.images = [Path(p) for p in self.images]


def format_value(value: Any) -> str:
    """A table cell as text: integers with thousands separators, floats to 4 significant digits
    (scientific notation when very small or large), arrays/tensors as their shape."""
    if hasattr(value, "shape") and hasattr(value, "item"):  # torch / numpy
        if math.prod(value.shape) != 1:
            return f"{type(value).__name__} of shape {list(value.shape)}"
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number) or number == 0:
            return str(number)
        if 1e-3 <= abs(number) < 1e5:
            return f"{number:.4g}"
        return f"{number:.3e}"
    return str(value)


def _is_number(value: Any) -> bool:
    if hasattr(value, "shape") and hasattr(value, "item"):
        return math.prod(value.shape) == 1
    return isinstance(value, Real) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    css = ' class="num"' if _is_number(value) else ""
    return f"<td{css}>{html.escape(format_value(value))}</td>"


def _table(table: dict[str, Any] | list[dict[str, Any]]) -> str:
    if isinstance(table, dict):
        rows = [f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in table.items()]
        return "<table>" + "".join(rows) + "</table>"
    columns = list(dict.fromkeys(key for record in table for key in record))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = [
        "<tr>" + "".join(_cell(r[c]) if c in r else "<td></td>" for c in columns) + "</tr>"
        for r in table
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _paragraphs(text: str) -> Iterable[str]:
    for block in text.split("\n\n"):
        if block.strip():
            yield f"<p>{html.escape(block.strip())}</p>"


def _image(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(
            f"cannot embed image {path}: suffix {path.suffix!r} is not one of "
            f"{sorted(IMAGE_TYPES)}; save the figure as PNG"
        )
    if not path.is_file():
        raise FileNotFoundError(f"report image {path} does not exist; write the figure first")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{name}">'
        f"<figcaption>{name}</figcaption></figure>"
    )


def _section(index: int, section: ReportSection) -> str:
    parts = [f'<section id="s{index}"><h2>{html.escape(section.title)}</h2>']
    parts.extend(_paragraphs(section.text))
    if section.table is not None:
        parts.append(_table(section.table))
    parts.extend(_image(p) for p in section.images)
    parts.append(section.html)
    parts.append("</section>")
    return "\n".join(parts)


def render_report(*, title: str, sections: list[ReportSection]) -> str:
    """The report as an HTML string (see ``write_report``)."""
    check(bool(title.strip()), "title", title, "a non-empty report title")
    escaped = html.escape(title)
    toc = "".join(
        f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)
    )
    body = "\n".join(_section(i, s) for i, s in enumerate(sections))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escaped}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escaped}</h1>\n<nav><ol>{toc}</ol></nav>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_report(path: Path, *, title: str, sections: list[ReportSection]) -> Path:
    """Write one self-contained HTML file (inline CSS, embedded images) atomically; return it."""
    path = Path(path)
    atomic_write_bytes(path, render_report(title=title, sections=sections).encode("utf-8"))
    return path

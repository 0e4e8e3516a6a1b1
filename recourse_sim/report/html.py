"""Render a report as one self-contained HTML file.

Figures are embedded as base64 ``data:`` URIs and the style sheet is inline, so the page needs no
other file and no network: it opens offline in any browser, and can be mailed or archived alone.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from recourse_sim.report.document import (
    Bullets,
    Document,
    Heading,
    Image,
    Link,
    Paragraph,
    Table,
    format_cell,
    is_numeric,
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-top: 1.3em; }
.subtitle { color: #666; margin-top: 0; font-size: 0.95em; word-break: break-all; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.88em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e3e3e3; text-align: left;
         vertical-align: top; }
th { background: #f2f4f7; border-bottom: 2px solid #ccd; }
td:first-child { white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.group td { border-top: 2px solid #b9c0cc; }
.caption { color: #555; font-size: 0.9em; margin-bottom: 0.2em; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
ul.reading li { margin-bottom: 0.35em; }
details summary { cursor: pointer; color: #345; margin: 0.4em 0; }
"""


def _data_uri(path: Path) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


def _cell(value) -> str:
    text = escape(format_cell(value))
    if isinstance(value, Link):
        text = f'<a href="{escape(value.href, quote=True)}">{text}</a>'
    css = ' class="n"' if is_numeric(value) else ""
    return f"<td{css}>{text}</td>"


def _table(table: Table) -> str:
    columns = list(table.frame.columns)
    head = "".join(f"<th>{escape(table.headers.get(c, str(c)))}</th>" for c in columns)
    group = columns.index(table.group) if table.group in columns else None
    lines, previous = [], None
    for i, row in enumerate(table.frame.itertuples(index=False, name=None)):
        css = ""
        if group is not None:
            css = ' class="group"' if i > 0 and row[group] != previous else ""
            previous = row[group]
        lines.append(f"<tr{css}>" + "".join(_cell(value) for value in row) + "</tr>")
    rows = "\n".join(lines)
    html = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
    caption = f'<p class="caption">{escape(table.caption)}</p>\n' if table.caption else ""
    if table.collapsed:
        summary = f"{escape(table.caption or 'table')} ({len(table.frame)} rows)"
        return f"<details><summary>{summary}</summary>\n{html}\n</details>"
    return caption + html


def _block(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "\n".join(f"<li>{escape(item)}</li>" for item in block.items)
        return f'<ul class="reading">\n{items}\n</ul>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        alt = escape(block.caption, quote=True)
        return (
            f'<figure><img src="{_data_uri(block.path)}" alt="{alt}">'
            f"<figcaption>{escape(block.caption)}</figcaption></figure>"
        )
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(document: Document) -> str:
    """The whole report as one HTML page (no external resources)."""
    body = "\n".join(_block(block) for block in document.blocks)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(document.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(document.title)}</h1>
<p class="subtitle">{escape(document.subtitle)}</p>
{body}
</body>
</html>
"""


def write_html(document: Document, path: str | Path) -> Path:
    """Render ``document`` and write it to ``path``."""
    path = Path(path)
    path.write_text(render_html(document), encoding="utf-8")
    return path

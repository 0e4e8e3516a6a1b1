"""Render a report as Markdown (GitHub-flavoured tables; figures linked as ``figures/*.png``)."""

from __future__ import annotations

import os
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


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(value) -> str:
    text = _escape(format_cell(value))
    if isinstance(value, Link):
        return f"[{text}]({value.href})"
    return text


def _table(table: Table) -> str:
    columns = list(table.frame.columns)
    rows = list(table.frame.itertuples(index=False, name=None))
    numeric = [bool(rows) and all(is_numeric(row[i]) for row in rows) for i in range(len(columns))]
    head = "| " + " | ".join(_escape(table.headers.get(c, str(c))) for c in columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    caption = [f"*{_escape(table.caption)}*", ""] if table.caption else []
    return "\n".join([*caption, head, rule, *body])


def _block(block, directory: Path) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        target = Path(os.path.relpath(block.path, directory)).as_posix()
        return f"![{block.caption}]({target})\n\n*{block.caption}*"
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(document: Document, directory: str | Path) -> str:
    """The whole report as Markdown; image links are relative to ``directory``."""
    directory = Path(directory)
    parts = [f"# {document.title}", document.subtitle]
    parts += [_block(block, directory) for block in document.blocks]
    return "\n\n".join(parts) + "\n"


def write_markdown(document: Document, path: str | Path) -> Path:
    """Render ``document`` and write it to ``path`` (figures linked relative to it)."""
    path = Path(path)
    path.write_text(render_markdown(document, path.parent), encoding="utf-8")
    return path

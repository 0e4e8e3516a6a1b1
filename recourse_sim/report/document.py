"""A report as a list of plain blocks, rendered to HTML or Markdown by the renderers.

Building the content once and rendering it twice keeps ``report.html`` and ``report.md`` in step:
they show the same tables with the same number formatting.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    """A section heading (level 2 is a section, 3 a subsection)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list of plain-text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """A link inside a table cell (``href`` relative to the report)."""

    text: str
    href: str


@dataclass
class Table:
    """A table; cells are formatted with :func:`format_cell`.

    Attributes:
        frame: The data; column names become the header (see ``headers``).
        caption: A line shown above the table.
        headers: Display names of columns (by column name); other columns show their name.
        collapsed: Long tables the HTML report folds away (Markdown shows them in full).
        group: A column whose changes the HTML report marks with a rule (e.g. ``metric``).
    """

    frame: pd.DataFrame
    caption: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    collapsed: bool = False
    group: str | None = None


@dataclass(frozen=True)
class PValue:
    """A permutation p-value in a table cell, formatted by :func:`format_p_value`.

    Attributes:
        value: The p-value (NaN or None: none).
        n_permutations: ``P``, the permutations it was computed from (None when unknown).
    """

    value: float | None
    n_permutations: int | None = None


@dataclass(frozen=True)
class Image:
    """A figure: a PNG file and its caption."""

    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


@dataclass
class Document:
    """A whole report: its title, a subtitle line and the blocks in order."""

    title: str
    subtitle: str
    blocks: list[Block] = field(default_factory=list)


MISSING = "–"


def format_number(value: float) -> str:
    """A number with 4 significant digits (integers in full), ``–`` for missing values."""
    if value is None:
        return MISSING
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    return MISSING if math.isnan(value) else f"{value:.4g}"


def p_value_bound(n_permutations: int | None) -> str:
    """The bound for a permutation p-value of 0: ``< 1/P`` (``< 0.01`` for ``P = 100``).

    With ``b`` of ``P`` permutations reaching the observed value the reference form is
    ``b / P``, so 0 only says that the p-value is below ``1/P``, not that it is 0.
    """
    if not n_permutations:
        return "< 1/P"
    return f"< {format_number(1.0 / n_permutations)}"


def format_p_value(value: float | None, n_permutations: int | None = None) -> str:
    """A p-value with 4 significant digits; 0 as ``< 1/P``; ``–`` when there is none."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(float(value))):
        return MISSING
    if float(value) == 0.0:
        return p_value_bound(n_permutations)
    return format_number(float(value))


def format_cell(value) -> str:
    """The text of a table cell: numbers via :func:`format_number`, anything else as text."""
    if isinstance(value, Link):
        return value.text
    if isinstance(value, PValue):
        return format_p_value(value.value, value.n_permutations)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Number) or value is None:
        return format_number(value)
    if value is pd.NA:
        return MISSING
    return str(value)


def is_numeric(value) -> bool:
    """Whether a cell holds a number (right-aligned in tables)."""
    if isinstance(value, PValue):
        return True
    return isinstance(value, numbers.Number) and not isinstance(value, bool)

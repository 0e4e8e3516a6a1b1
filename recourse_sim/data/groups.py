"""Groups of individuals for fairness comparisons, taken from one raw column.

A column of text, booleans or categories, or of integers with at most :data:`MAX_LEVELS`
distinct values, gives one group per level (``SEX=0``, ``SEX=1``). Any other numeric column is
cut into ``bins`` quantile bins (``AGE<=34``, ``AGE>34``). The cut points are values of the
column itself, so every bin holds at least one row; ties can leave fewer bins than asked for.

Computing groups draws no random numbers, so a data set with groups has the same rows, in the
same order, as the same data set without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from numbers import Number

import numpy as np
import pandas as pd

from recourse_sim import checks
from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError

#: The most levels a text or integer column may have to be used level by level.
MAX_LEVELS = 10
#: Default number of quantile bins of a numeric group column.
DEFAULT_BINS = 2


def check_group(group: object, columns: Sequence[str], what: str) -> str | None:
    """``group`` as a column name of ``columns``, or ``None`` for no groups.

    Args:
        group: The configured ``data.group``.
        columns: The columns it may name.
        what: How the message describes ``columns`` (``"a column of the raw table"``).

    Raises:
        ConfigError: On ``data.group`` if ``group`` is neither ``None`` nor one of ``columns``.
    """
    if group is None:
        return None
    allowed = f"{what}: {', '.join(columns)}; or null (no groups)"
    if not isinstance(group, str) or group not in columns:
        raise ConfigError("data.group", group, allowed)
    return group


def check_bins(group_bins: object) -> int:
    """``data.group_bins``: an integer >= 2 (checked whether or not a group is chosen)."""
    return checks.integer("data.group_bins", group_bins, minimum=2)


def group_codes(
    values: pd.Series | np.ndarray, column: str, bins: int = DEFAULT_BINS
) -> tuple[np.ndarray, tuple[str, ...], tuple[float, ...]]:
    """Group code of every value, readable level names, and the cut points of binned columns.

    Args:
        values: The raw column, one value per row, without missing values.
        column: Its name, used in the level names and messages.
        bins: How many quantile bins a numeric column is cut into (ignored for columns used
            level by level).

    Returns:
        ``(codes, levels, edges)``: int64 codes indexing ``levels``; ``edges`` are the upper
        ends of every bin but the last (a value ``v`` is in bin ``i`` when
        ``edges[i-1] < v <= edges[i]``), empty when the column's levels are the groups.

    Raises:
        ConfigError: On ``data.group`` if the column holds missing values, fewer than two
            distinct values, or text with more than :data:`MAX_LEVELS` levels.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if series.isna().any():
        raise ConfigError("data.group", column, "a column without missing values")
    if _by_level(series):
        return _level_codes(series, column)
    return _bin_codes(series.to_numpy(dtype=np.float64), column, bins)


def code_values(
    values: np.ndarray, column: str, levels: Sequence[str], edges: Sequence[float]
) -> np.ndarray:
    """Codes of new values under an existing grouping (its ``levels`` and ``edges``).

    Raises:
        ValueError: If a value of a column grouped by level is not one of ``levels``.
    """
    values = np.asarray(values)
    if edges:
        return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left").astype(
            np.int64
        )
    index = {name: code for code, name in enumerate(levels)}
    names = [f"{column}={level_name(v)}" for v in values.tolist()]
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ValueError(f"values outside the group levels {list(levels)}: {unknown}")
    return np.array([index[n] for n in names], dtype=np.int64)


def is_text(column: pd.Series) -> bool:
    """Whether a column holds text-like values (text, booleans, categories), not numbers."""
    dtype = column.dtype
    return (
        pd.api.types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or not pd.api.types.is_numeric_dtype(dtype)
    )


def _by_level(series: pd.Series) -> bool:
    """Whether the column's levels are its groups (text, or integers with few levels)."""
    if is_text(series):
        return True
    if series.nunique() > MAX_LEVELS:
        return False
    if pd.api.types.is_integer_dtype(series.dtype):
        return True
    numbers = series.to_numpy(dtype=np.float64)
    return bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))


def _level_codes(
    series: pd.Series, column: str
) -> tuple[np.ndarray, tuple[str, ...], tuple[float, ...]]:
    observed = sorted(pd.unique(series), key=level_sort_key)
    if len(observed) > MAX_LEVELS:
        raise ConfigError(
            "data.group",
            column,
            f"a numeric column or one with at most {MAX_LEVELS} levels; {column!r} holds "
            f"{len(observed)} distinct values (choose a coarser column)",
        )
    _require_two(len(observed), column)
    levels = tuple(f"{column}={level_name(v)}" for v in observed)
    if len(set(levels)) < len(levels):
        raise ConfigError("data.group", column, "a column whose levels print differently")
    codes = np.empty(len(series), dtype=np.int64)
    for code, level in enumerate(observed):
        codes[(series == level).to_numpy()] = code
    return codes, levels, ()


def _bin_codes(
    values: np.ndarray, column: str, bins: int
) -> tuple[np.ndarray, tuple[str, ...], tuple[float, ...]]:
    if not np.all(np.isfinite(values)):
        raise ConfigError("data.group", column, "a column of finite numbers")
    distinct = np.unique(values)
    _require_two(len(distinct), column)
    fractions = np.arange(1, bins) / bins
    # Cut points are values of the column, so every bin holds its own cut point. A cut point at
    # the maximum would leave the top bin empty: it moves down to the next lower value.
    cuts = np.quantile(values, fractions, method="inverted_cdf")
    cuts = np.unique(np.minimum(cuts, distinct[-2]))
    codes = np.searchsorted(cuts, values, side="left").astype(np.int64)
    text = _edge_texts(cuts)
    if len(cuts) == 1:
        levels = (f"{column}<={text[0]}", f"{column}>{text[0]}")
    else:
        inner = [f"{low}<{column}<={high}" for low, high in pairwise(text)]
        levels = (f"{column}<={text[0]}", *inner, f"{column}>{text[-1]}")
    return codes, levels, tuple(float(c) for c in cuts)


def _require_two(count: int, column: str) -> None:
    if count < 2:
        raise ConfigError(
            "data.group",
            column,
            "a column with at least two distinct values (a single group compares nothing)",
        )


def _edge_texts(cuts: np.ndarray) -> list[str]:
    """Short readable cut points (``34``, ``0.4312``), exact where the short ones would clash."""
    short = [_short_number(float(c)) for c in cuts]
    if len(set(short)) == len(short):
        return short
    return [repr(float(c)) for c in cuts]


def _short_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def level_sort_key(value: object) -> tuple[int, object]:
    """Sort key of a categorical level: numbers first, by value, then text."""
    if isinstance(value, Number) and not isinstance(value, bool | np.bool_):
        return (0, float(value))  # type: ignore[arg-type]
    return (1, str(value))


def level_name(value: object) -> str:
    """A level as text in column and group names (``1.0`` prints as ``1``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def with_feature_groups(data: Dataset, group: str | None, bins: int) -> Dataset:
    """``data`` with groups from its own feature ``group`` (unchanged when ``group`` is None)."""
    if group is None:
        return data
    column = data.X[:, data.feature_names.index(group)]
    codes, levels, edges = group_codes(column, group, bins)
    return replace(data, groups=codes, group_levels=levels, group_column=group, group_edges=edges)

"""Preprocessing of real-world tables into a :class:`Dataset`, and a loader for any CSV file.

The steps follow the reference study's real-world preprocessing
(``sections/data_preprocessing/real_world_data.qmd`` of the paper repository): categorical
columns are one-hot encoded without dropping a level (MLJ's ``ContinuousEncoder``), the full
table is balanced by random undersampling of the majority class, the remaining columns are
standardised on that balanced table (MLJ's ``Standardizer``: sample standard deviation), and
only then is the experiment's sample of ``n_samples`` rows (half per class) drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Number
from pathlib import Path

import numpy as np
import pandas as pd

from recourse_sim.data._checks import as_names, check_count, check_rng
from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError


def prepare_table(
    frame: pd.DataFrame,
    target: str,
    *,
    rng: np.random.Generator,
    positive_label: object = 1,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    levels: Mapping[str, Sequence[object]] | None = None,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    standardize: bool = True,
    balance: bool = False,
    n_samples: int | None = None,
    dropna: bool = False,
    name: str = "data",
    source: str = "",
) -> Dataset:
    """Validate, encode, balance, standardise and subsample a table.

    Args:
        frame: The raw table, one row per individual. It is not modified.
        target: The binary target column.
        rng: Source of all randomness (balancing and subsampling).
        positive_label: The target value of the favourable outcome (label 1). Matched
            leniently, so ``1``, ``"1"`` and ``1.0`` are the same label.
        features: Feature columns in output order; ``None`` takes every column but the target.
        categorical: Feature columns to one-hot encode; ``None`` takes the text, category and
            boolean columns. Every other feature must be numeric.
        levels: Per categorical column, its levels in column order (a level absent from the
            data still gets a column); by default the sorted distinct values.
        immutable: Features (or one-hot group prefixes) that recourse must leave unchanged.
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        standardize: Z-score the columns that are not one-hot.
        balance: Undersample the majority class at random to the size of the minority class.
        n_samples: Rows to keep at random (half per class when ``balance``); ``None`` keeps
            all.
        dropna: Drop rows with a missing value in a used column instead of refusing them.
        name: Name of the data set.
        source: Provenance and attribution.

    Returns:
        The data set in model space; a categorical column ``C`` with levels ``a, b`` becomes the
        one-hot group ``C_a, C_b`` in the place of ``C``.

    Raises:
        ConfigError: On an unknown column, a target that is not binary or lacks
            ``positive_label``, missing values, text in a non-categorical feature, or an
            ``n_samples`` larger than the data allows.
    """
    rng = check_rng(rng)
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    target = str(target)
    listing = ", ".join(columns)
    if target not in columns:
        raise ConfigError("data.target", target, f"a column of the table: {listing}")
    features = _feature_list(features, columns, target)
    table = frame[[*features, target]]

    missing = {c: int(n) for c, n in table.isna().sum().items() if n}
    if missing and dropna:
        table = table.dropna()
    elif missing:
        key = "data.target" if list(missing) == [target] else "data.features"
        raise ConfigError(
            key,
            missing,
            "columns without missing values; these columns hold that many missing cells "
            "(fill or drop those rows, or leave the columns out of data.features)",
        )
    if table.empty:
        raise ConfigError("data", name, "a table with at least one complete row")

    y = _labels(table[target], target, positive_label)
    counts = np.bincount(y, minlength=2)
    n_keep = _sample_size(n_samples, counts, balance)

    X, names, groups = _encode(table, features, categorical, levels)

    if balance:
        minority = int(counts.min())
        keep = np.concatenate(
            [_draw(np.flatnonzero(y == label), minority, rng) for label in (0, 1)]
        )
        keep = rng.permutation(keep)
        X, y = X[keep], y[keep]
    if standardize:
        continuous = np.ones(X.shape[1], dtype=bool)
        for group in groups:
            continuous[list(group)] = False
        X[:, continuous] = _zscore(X[:, continuous])
    if n_keep is not None:
        if balance:
            parts = [_draw(np.flatnonzero(y == label), n_keep // 2, rng) for label in (0, 1)]
            keep = rng.permutation(np.concatenate(parts))
        else:
            keep = rng.choice(len(y), size=n_keep, replace=False)
        X, y = X[keep], y[keep]

    data = Dataset(X, y, names, name=name, categorical_groups=groups, source=source)
    return data.with_mutability(
        as_names(immutable, "data.immutable") or (),
        as_names(increase_only, "data.increase_only") or (),
        as_names(decrease_only, "data.decrease_only") or (),
    )


def load_csv(
    path: str | Path,
    target: str,
    positive_label: object = 1,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    immutable: Sequence[str] = (),
    increase_only: Sequence[str] = (),
    decrease_only: Sequence[str] = (),
    standardize: bool = True,
    balance: bool = False,
    n_samples: int | None = None,
    name: str | None = None,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Load a user's CSV file (optionally compressed) as a binary classification data set.

    Args:
        path: The CSV file, with a header row.
        target: The binary target column.
        positive_label: The target value of the favourable outcome (label 1).
        features: Feature columns to use; ``None`` takes every column but the target.
        categorical: Columns to one-hot encode; ``None`` takes the text columns.
        immutable: Features (or one-hot group prefixes) that recourse must leave unchanged.
        increase_only: Features that may only increase.
        decrease_only: Features that may only decrease.
        standardize: Z-score the columns that are not one-hot.
        balance: Undersample the majority class to the size of the minority class.
        n_samples: Rows to keep at random (half per class when ``balance``); ``None`` keeps
            all.
        name: Name of the data set; by default the file name without extensions.
        rng: Source of all randomness.

    Returns:
        The preprocessed data set (see :func:`prepare_table`).

    Raises:
        ConfigError: If the file is missing or unreadable, or on any invalid column choice.
    """
    frame = read_table(path)
    return prepare_table(
        frame,
        target,
        rng=rng,
        positive_label=positive_label,
        features=features,
        categorical=categorical,
        immutable=immutable,
        increase_only=increase_only,
        decrease_only=decrease_only,
        standardize=standardize,
        balance=balance,
        n_samples=n_samples,
        name=name or Path(str(path)).name.split(".")[0],
        source=f"user file {Path(str(path)).expanduser().resolve()}",
    )


def read_table(path: str | Path | None, what: str = "an existing CSV file") -> pd.DataFrame:
    """Read a CSV file; a missing or unreadable file is a :class:`ConfigError` on ``data.path``.

    Args:
        path: The file (``~`` is expanded; a relative path is taken from the working directory).
        what: Description of the expected file for the error message.

    Returns:
        The table, with pandas' default missing-value markers (``NA``, empty, ...) as NaN.
    """
    if path is None or str(path) == "":
        raise ConfigError("data.path", path, what)
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError("data.path", str(path), f"{what} (no file at {file.resolve()})")
    try:
        return pd.read_csv(file)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError("data.path", str(path), f"{what}; reading it failed: {error}") from None


def _feature_list(features: object, columns: list[str], target: str) -> list[str]:
    names = as_names(features, "data.features")
    if names is None:
        names = [c for c in columns if c != target]
    unknown = [c for c in names if c not in columns]
    if unknown:
        raise ConfigError("data.features", unknown, f"columns of the table: {', '.join(columns)}")
    if target in names:
        raise ConfigError("data.features", target, "feature columns other than the target")
    if not names:
        raise ConfigError("data.features", names, "at least one feature column")
    return names


def _labels(column: pd.Series, target: str, positive_label: object) -> np.ndarray:
    values = list(pd.unique(column))
    if len(values) != 2:
        shown = ", ".join(map(repr, values[:10])) + (", ..." if len(values) > 10 else "")
        raise ConfigError(
            "data.target",
            target,
            f"a binary column; it holds {len(values)} distinct values: {shown}",
        )
    positive = _match_label(values, positive_label)
    if positive is None:
        raise ConfigError(
            "data.positive_label",
            positive_label,
            f"one of the values of column {target!r}: {', '.join(map(repr, values))}",
        )
    return (column == positive).to_numpy(dtype=np.int64)


def _match_label(values: list[object], label: object) -> object | None:
    exact = [v for v in values if type(v) is type(label) and v == label]
    if exact:
        return exact[0]
    # YAML, CSV parsing and pandas dtypes disagree on 1 / "1" / 1.0 / True; compare loosely.
    loose = [v for v in values if _label_key(v) == _label_key(label)]
    return loose[0] if len(loose) == 1 else None


def _label_key(value: object) -> object:
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).casefold()
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).strip().casefold()


def _sample_size(n_samples: object, counts: np.ndarray, balance: bool) -> int | None:
    if n_samples is None:
        return None
    n = check_count("data.n_samples", n_samples, minimum=2, even=balance)
    available = 2 * int(counts.min()) if balance else int(counts.sum())
    if n > available:
        detail = (
            f"the balanced data has {available // 2} rows per class"
            if balance
            else f"the data has {available} rows"
        )
        raise ConfigError("data.n_samples", n_samples, f"at most {available} ({detail})")
    return n


def _encode(
    table: pd.DataFrame,
    features: list[str],
    categorical: object,
    levels: Mapping[str, Sequence[object]] | None,
) -> tuple[np.ndarray, tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """One-hot encode the categorical features in place; the rest become float columns."""
    text = [c for c in features if _is_text(table[c])]
    chosen = as_names(categorical, "data.categorical")
    if chosen is None:
        chosen = text
    unknown = [c for c in chosen if c not in features]
    if unknown:
        raise ConfigError("data.categorical", unknown, f"features: {', '.join(features)}")
    unencoded = [c for c in text if c not in chosen]
    if unencoded:
        raise ConfigError(
            "data.categorical",
            chosen,
            f"a list that includes every non-numeric feature; {unencoded} hold text "
            "(add them, or leave them out of data.features)",
        )
    levels = dict(levels or {})
    blocks, names, groups = [], [], []
    for column in features:
        values = table[column]
        if column not in chosen:
            blocks.append(values.to_numpy(dtype=np.float64)[:, None])
            names.append(column)
            continue
        observed = list(pd.unique(values))
        order = list(levels.get(column, sorted(observed, key=_level_sort_key)))
        extra = [v for v in observed if v not in order]
        if extra:
            raise ConfigError(f"data.categorical[{column}]", extra, f"one of the levels {order}")
        start = len(names)
        blocks.append(np.column_stack([(values == level).to_numpy() for level in order]))
        names.extend(f"{column}_{_level_name(level)}" for level in order)
        groups.append(tuple(range(start, len(names))))
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            "data.categorical", clashes, "one-hot column names that clash with no other column"
        )
    X = np.hstack(blocks).astype(np.float64)
    return X, tuple(names), tuple(groups)


def _is_text(column: pd.Series) -> bool:
    dtype = column.dtype
    return (
        pd.api.types.is_bool_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or not pd.api.types.is_numeric_dtype(dtype)
    )


def _level_sort_key(value: object) -> tuple[int, object]:
    if isinstance(value, Number) and not isinstance(value, bool | np.bool_):
        return (0, float(value))  # type: ignore[arg-type]
    return (1, str(value))


def _level_name(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _draw(members: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(members, size=size, replace=False)


def _zscore(X: np.ndarray) -> np.ndarray:
    """Centre each column and divide by its sample standard deviation (constant: by 1)."""
    if X.shape[1] == 0:
        return X
    mean = X.mean(axis=0)
    std = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return (X - mean) / std

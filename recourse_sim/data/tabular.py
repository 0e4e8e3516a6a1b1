"""Preprocessing of real-world tables into a :class:`Dataset`, and a loader for any CSV file.

The steps follow the reference study's real-world preprocessing
(``sections/data_preprocessing/real_world_data.qmd`` of the paper repository): categorical
columns are one-hot encoded without dropping a level (MLJ's ``ContinuousEncoder``), the full
table is balanced by random undersampling of the majority class, the remaining columns are
standardised on that balanced table (MLJ's ``Standardizer``: sample standard deviation), and
only then is the experiment's sample of ``n_samples`` rows (half per class) drawn. The data set
records the means, standard deviations and one-hot levels (its
:class:`~recourse_sim.data.encoding.Encoding`), so its rows can be read in the table's units again.

Every value of a used column must be a finite number that stays finite through standardisation
(and within float32, in which the classifiers compute); a column that breaks this is refused by
name. User files (:func:`load_csv` and the loaders of :mod:`recourse_sim.data.external`) get
default bounds, ``bounds="observed"``: the observed ``[min, max]`` of each feature in the loaded
data (model space), ``[0, 1]`` for one-hot columns, as DiCE's permitted range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recourse_sim import checks
from recourse_sim.data._checks import check_rng, check_sample_count
from recourse_sim.data.base import Dataset
from recourse_sim.data.encoding import Encoding, OneHot
from recourse_sim.data.groups import (
    DEFAULT_BINS,
    check_bins,
    check_group,
    group_codes,
    is_text,
    level_name,
    level_sort_key,
)
from recourse_sim.errors import ConfigError

#: Values of ``data.bounds``: observed [min, max] per feature in model space, or unbounded.
BOUNDS = ("observed", "none")
#: The largest magnitude a model-space value may have (the classifiers compute in float32).
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    bounds: str = "none",
    name: str = "data",
    source: str = "",
    columns_key: str = "data.features",
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
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
        bounds: ``"observed"`` bounds every feature at its observed ``[min, max]`` in the
            returned data (model space; one-hot columns at ``[0, 1]``); ``"none"`` leaves
            every feature unbounded.
        name: Name of the data set.
        source: Provenance and attribution.
        columns_key: The config key named when a column's values are unusable (missing,
            non-finite, too large): ``data.features`` where the user chooses the columns,
            ``data.path`` where the loader fixes them.
        group: A column of the raw table (a feature or not, but not the target) whose levels or
            quantile bins are the groups of fairness comparisons (see
            :mod:`recourse_sim.data.groups`); ``None``: no groups. The groups are computed on the
            whole table (after dropping incomplete rows, before balancing), so their levels do
            not depend on the seed, and draw no random numbers. A feature used as the group
            stays a feature.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).

    Returns:
        The data set in model space; a categorical column ``C`` with levels ``a, b`` becomes the
        one-hot group ``C_a, C_b`` in the place of ``C``. Its ``encoding`` maps it back to the
        table's columns and units.

    Raises:
        ConfigError: On an unknown column, a target that is not binary or lacks
            ``positive_label``, missing or non-finite values (or values that overflow when
            standardised), text in a non-categorical feature, an ``n_samples`` larger than the
            data allows, a ``bounds`` other than :data:`BOUNDS`, or a ``group`` that is not a
            usable column of the table.
    """
    rng = check_rng(rng)
    checks.check_choice("data.bounds", bounds, BOUNDS)
    standardize = checks.flag("data.standardize", standardize)
    balance = checks.flag("data.balance", balance)
    dropna = checks.flag("data.dropna", dropna)
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    target = str(target)
    listing = ", ".join(columns)
    if target not in columns:
        raise ConfigError("data.target", target, f"a column of the table: {listing}")
    features = _feature_list(features, columns, target)
    group = _group_column(group, columns, target)
    bins = check_bins(group_bins)
    extra = [group] if group is not None and group not in features else []
    table = frame[[*features, target, *extra]]

    missing = {c: int(n) for c, n in table.isna().sum().items() if n}
    if missing and dropna:
        table = table.dropna()
    elif missing:
        key = (
            "data.target"
            if list(missing) == [target]
            else "data.group"
            if list(missing) == extra
            else columns_key
        )
        raise ConfigError(
            key,
            missing,
            "columns without missing values; these columns hold that many missing cells "
            "(fill or drop those rows, or leave the columns out of data.features)",
        )
    if table.empty:
        raise ConfigError("data", name, "a table with at least one complete row")

    y = _labels(table[target], target, positive_label)
    # The groups follow their rows through balancing and subsampling below.
    codes, group_levels, group_edges = (
        (None, (), ()) if group is None else group_codes(table[group], group, bins)
    )
    counts = np.bincount(y, minlength=2)
    n_keep = _sample_size(n_samples, counts, balance)

    X, names, groups, orders = _encode(table, features, categorical, levels)
    continuous = np.ones(X.shape[1], dtype=bool)
    for onehot in groups:
        continuous[list(onehot)] = False
    # Checked on the whole table, so that whether a file is usable never depends on the seed.
    _require_usable(X, names, continuous, standardize, columns_key)

    if balance:
        minority = int(counts.min())
        keep = np.concatenate(
            [_draw(np.flatnonzero(y == label), minority, rng) for label in (0, 1)]
        )
        keep = rng.permutation(keep)
        X, y = X[keep], y[keep]
        codes = None if codes is None else codes[keep]
    mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    if standardize:
        X[:, continuous], finite, mean[continuous], scale[continuous] = _zscore(X[:, continuous])
        overflow = np.zeros(X.shape[1], dtype=bool)
        overflow[np.flatnonzero(continuous)[~finite]] = True
        _refuse(names, overflow, columns_key, _OVERFLOW)
    if n_keep is not None:
        if balance:
            parts = [_draw(np.flatnonzero(y == label), n_keep // 2, rng) for label in (0, 1)]
            keep = rng.permutation(np.concatenate(parts))
        else:
            keep = rng.choice(len(y), size=n_keep, replace=False)
        X, y = X[keep], y[keep]
        codes = None if codes is None else codes[keep]

    lower = upper = None
    if bounds == "observed":
        lower, upper = X.min(axis=0), X.max(axis=0)
        lower[~continuous], upper[~continuous] = 0.0, 1.0
    data = Dataset(
        X,
        y,
        names,
        name=name,
        lower=lower,
        upper=upper,
        categorical_groups=groups,
        source=source,
        groups=codes,
        group_levels=group_levels,
        group_column="" if group is None else group,
        group_edges=group_edges,
        encoding=Encoding(
            names,
            features,
            mean,
            scale,
            tuple(
                OneHot(column, onehot, order)
                for (column, order), onehot in zip(orders.items(), groups, strict=True)
            ),
        ),
    )
    return data.with_mutability(
        checks.names("data.immutable", immutable) or (),
        checks.names("data.increase_only", increase_only) or (),
        checks.names("data.decrease_only", decrease_only) or (),
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
    bounds: str = "observed",
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
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
        bounds: ``"observed"``: each feature bounded at its observed ``[min, max]`` in the
            loaded data (model space; one-hot columns ``[0, 1]``); ``"none"``: unbounded.
        group: A column of the file (before one-hot encoding and standardisation) whose levels
            or quantile bins are the groups of fairness comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of a numeric ``group`` column (>= 2).
        rng: Source of all randomness.

    Returns:
        The preprocessed data set (see :func:`prepare_table`).

    Raises:
        ConfigError: If the file is missing or unreadable, names a column twice, holds
            non-finite values, or on any invalid column choice.
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
        bounds=bounds,
        group=group,
        group_bins=group_bins,
        name=Path(str(path)).name.split(".")[0] if name is None else checks.text("data.name", name),
        source=f"user file {Path(str(path)).expanduser().resolve()}",
    )


def read_table(path: str | Path | None, what: str = "an existing CSV file") -> pd.DataFrame:
    """Read a CSV file; a missing or unreadable file is a :class:`ConfigError` on ``data.path``.

    Args:
        path: The file (``~`` is expanded; a relative path is taken from the working directory).
        what: Description of the expected file for the error message.

    Returns:
        The table, with pandas' default missing-value markers (``NA``, empty, ...) as NaN.

    Raises:
        ConfigError: On ``data.path`` if the file is missing or unreadable, or if its header
            names a column more than once (pandas would silently rename the copies).
    """
    if path is None or str(path) == "":
        raise ConfigError("data.path", path, what)
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError("data.path", str(path), f"{what} (no file at {file.resolve()})")
    try:
        frame = pd.read_csv(file)
        # The header as written: pandas renames a repeated name ``x`` to ``x.1`` in ``frame``.
        header = pd.read_csv(file, header=None, nrows=1, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError("data.path", str(path), f"{what}; reading it failed: {error}") from None
    written = [str(c) for c in header.iloc[0]] if len(header) else []
    # Empty header cells (e.g. an unnamed index column) are pandas' "Unnamed: i", not repeats.
    repeated = sorted({c for c in written if c and written.count(c) > 1})
    if repeated:
        raise ConfigError(
            "data.path",
            str(path),
            f"{what} whose header names each column once; the header names "
            f"{', '.join(map(repr, repeated))} more than once (rename or drop the copies)",
        )
    return frame


def _feature_list(features: object, columns: list[str], target: str) -> list[str]:
    names = checks.names("data.features", features)
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


def _group_column(group: object, columns: list[str], target: str) -> str | None:
    """The checked ``data.group``: a raw column other than the target, or None."""
    if group is not None and group == target:
        raise ConfigError(
            "data.group", group, "a column other than the target (the outcome is not a group)"
        )
    others = [c for c in columns if c != target]
    return check_group(group, others, "a column of the raw table (before one-hot encoding)")


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
    n = check_sample_count("data.n_samples", n_samples, minimum=2, even=balance)
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
) -> tuple[np.ndarray, tuple[str, ...], tuple[tuple[int, ...], ...], dict[str, tuple[object, ...]]]:
    """One-hot encode the categorical features in place; the rest become float columns.

    Returns the columns, their names, the column indices of each one-hot group and, per
    categorical feature (in feature order), its levels in column order.
    """
    text = [c for c in features if is_text(table[c])]
    chosen = checks.names("data.categorical", categorical)
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
    blocks, names, groups, orders = [], [], [], {}
    for column in features:
        values = table[column]
        if column not in chosen:
            blocks.append(values.to_numpy(dtype=np.float64)[:, None])
            names.append(column)
            continue
        observed = list(pd.unique(values))
        order = list(levels.get(column, sorted(observed, key=level_sort_key)))
        extra = [v for v in observed if v not in order]
        if extra:
            raise ConfigError(f"data.categorical[{column}]", extra, f"one of the levels {order}")
        start = len(names)
        blocks.append(np.column_stack([(values == level).to_numpy() for level in order]))
        names.extend(f"{column}_{level_name(level)}" for level in order)
        groups.append(tuple(range(start, len(names))))
        orders[column] = tuple(order)
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            "data.categorical", clashes, "one-hot column names that clash with no other column"
        )
    X = np.hstack(blocks).astype(np.float64)
    return X, tuple(names), tuple(groups), orders


def _draw(members: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(members, size=size, replace=False)


def _zscore(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre each column and divide by its sample standard deviation (constant: by 1).

    Returns the standardised columns; per column, whether its mean, standard deviation and
    standardised values are all finite (a huge value can overflow the standard deviation); and
    the means and standard deviations used (1 where the column is constant or not finite).
    """
    if X.shape[1] == 0:
        return X, np.ones(0, dtype=bool), np.zeros(0), np.ones(0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X.mean(axis=0)
        std = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
        finite = np.isfinite(mean) & np.isfinite(std)
        std = np.where(finite & (std > 0), std, 1.0)
        Z = (X - mean) / std
    return Z, finite & np.isfinite(Z).all(axis=0), mean, std


_OVERFLOW = (
    "values so large that standardising them overflows (the standard deviation of a column "
    "holding 1e300 is infinite)"
)


def _require_usable(
    X: np.ndarray,
    names: tuple[str, ...],
    continuous: np.ndarray,
    standardize: bool,
    key: str,
) -> None:
    """Refuse, by name under ``key``, the columns whose values the models cannot use.

    Every value must be finite and, if its column is standardised, stay finite through the
    standardisation; an unstandardised value must lie within the float32 range the classifiers
    compute in.
    """
    _refuse(names, ~np.isfinite(X).all(axis=0), key, "NaN or infinite values")
    if standardize:
        overflow = np.zeros(X.shape[1], dtype=bool)
        overflow[np.flatnonzero(continuous)[~_zscore(X[:, continuous])[1]]] = True
        _refuse(names, overflow, key, _OVERFLOW)
    else:
        too_large = (np.abs(X) > _FLOAT32_MAX).any(axis=0)
        _refuse(names, too_large, key, "values beyond the float32 range of the classifiers")


def _refuse(names: tuple[str, ...], bad: np.ndarray, key: str, problem: str) -> None:
    """Raise :class:`ConfigError` under ``key`` naming the columns flagged ``bad``, if any."""
    if not bad.any():
        return
    columns = [names[j] for j in np.flatnonzero(bad)]
    raise ConfigError(
        key,
        columns,
        f"columns of finite numbers; {', '.join(map(repr, columns))} "
        f"{'holds' if len(columns) == 1 else 'hold'} {problem} "
        "(fix or rescale them, or leave them out of the features)",
    )

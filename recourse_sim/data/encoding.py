"""The way back from model space to the data's original units.

A table's features reach the classifier standardised (continuous columns) and one-hot encoded
(categorical columns); synthetic data reach it raw. An :class:`Encoding` records what was done,
so that a population in model space can be read in the units of the original table again:
continuous columns un-scaled (``x * sd + mean``), each one-hot group collapsed back into one
column holding the level of its largest entry, binary indicators as 0/1.

It holds plain values only (names, floats, levels), so a data set that carries one pickles to
worker processes like any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recourse_sim.errors import ConfigError

#: Significant digits kept when un-scaling a standardised column, counted at the larger of its
#: mean and standard deviation: every digit the data can hold, none of the float noise of
#: ``z * sd + mean`` (20000.000000000004 is 20000 again).
PRECISION = 13


@dataclass(frozen=True)
class OneHot:
    """A categorical column of the original table, one-hot encoded in model space.

    Attributes:
        feature: The original column's name.
        columns: The model-space columns of its levels, in level order.
        levels: The original values, one per column (``"own"``, ``"rent"``; or codes ``0, 1``).
    """

    feature: str
    columns: tuple[int, ...]
    levels: tuple[object, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature", str(self.feature))
        object.__setattr__(self, "columns", tuple(int(j) for j in self.columns))
        object.__setattr__(self, "levels", tuple(_plain(level) for level in self.levels))
        if not self.columns or len(self.columns) != len(self.levels):
            raise ConfigError(
                f"data.encoding[{self.feature}]", self.levels, "one level per one-hot column"
            )


@dataclass(frozen=True)
class Encoding:
    """How the model-space columns of a data set map back to its original columns.

    Every model-space column belongs to exactly one original feature: a continuous or binary
    feature keeps its name and has one column, a categorical feature is a :class:`OneHot`
    group.

    Attributes:
        columns: The model-space column names (the data set's ``feature_names``).
        features: The original column names, in the original order.
        mean: Per model-space column, the mean subtracted when standardising (0 if not).
        scale: Per model-space column, the standard deviation divided by (1 if not).
        onehot: The categorical features.
        binary: Model-space columns holding a single 0/1 indicator (decoded as 0 or 1).
    """

    columns: tuple[str, ...]
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    onehot: tuple[OneHot, ...] = ()
    binary: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        columns = tuple(str(c) for c in self.columns)
        features = tuple(str(f) for f in self.features)
        mean = tuple(float(m) for m in self.mean)
        scale = tuple(float(s) for s in self.scale)
        onehot = tuple(self.onehot)
        binary = tuple(int(j) for j in self.binary)
        d = len(columns)
        key = "data.encoding"
        if len(mean) != d or len(scale) != d:
            raise ConfigError(key, (len(mean), len(scale)), f"a mean and a scale per column ({d})")
        if not all(math.isfinite(m) for m in mean) or not all(
            math.isfinite(s) and s > 0 for s in scale
        ):
            raise ConfigError(key, (mean, scale), "finite means and positive finite scales")
        if len(set(features)) < len(features):
            raise ConfigError(key, features, "original feature names that are distinct")
        groups = {group.feature: group for group in onehot}
        if len(groups) < len(onehot) or not set(groups) <= set(features):
            raise ConfigError(key, tuple(groups), "one one-hot group per categorical feature")
        covered = []
        for feature in features:
            if feature in groups:
                covered.extend(groups[feature].columns)
            elif feature in columns:
                covered.append(columns.index(feature))
            else:
                raise ConfigError(key, feature, f"a column of the model space: {columns}")
        if sorted(covered) != list(range(d)):
            raise ConfigError(
                key, features, "original features that own every model-space column exactly once"
            )
        if any(j not in covered or columns[j] not in features for j in binary):
            raise ConfigError(key, binary, "binary columns that are features of their own")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "onehot", onehot)
        object.__setattr__(self, "binary", binary)

    @classmethod
    def identity(cls, columns: Sequence[str], binary: Sequence[int] = ()) -> Encoding:
        """The encoding of raw features: every column is an original feature as it is."""
        names = tuple(str(c) for c in columns)
        return cls(names, names, (0.0,) * len(names), (1.0,) * len(names), (), tuple(binary))

    @property
    def continuous(self) -> tuple[str, ...]:
        """The original features decoded as numbers on a scale (neither one-hot nor binary)."""
        grouped = {group.feature for group in self.onehot}
        binary = {self.columns[j] for j in self.binary}
        return tuple(f for f in self.features if f not in grouped and f not in binary)

    def column_of(self, feature: str) -> int:
        """The model-space column of a continuous or binary original feature."""
        return self.columns.index(feature)

    def group_of(self, feature: str) -> OneHot | None:
        """The one-hot group of a categorical original feature (None for the others)."""
        return next((group for group in self.onehot if group.feature == feature), None)

    def decimals(self, column: int) -> int | None:
        """Decimals an un-scaled value of ``column`` is rounded to (None: left exact).

        A standardised column keeps :data:`PRECISION` significant digits of the larger of its
        mean and standard deviation; a column that was not standardised stays exact.
        """
        mean, scale = self.mean[column], self.scale[column]
        if mean == 0.0 and scale == 1.0:
            return None
        return PRECISION - 1 - math.floor(math.log10(max(abs(mean), scale)))

    def decode(self, X: np.ndarray) -> pd.DataFrame:
        """The rows of ``X`` (model space) in the original units, one column per feature.

        Continuous columns are un-scaled (``x * sd + mean``, rounded to :meth:`decimals` where
        standardised), each one-hot group becomes one column holding the level of its largest
        entry (the first on ties), binary columns are 0 or 1 (``x >= 0.5``). Columns come in
        the original order.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            raise ValueError(f"decode: rows of {len(self.columns)} columns, got shape {X.shape}")
        decoded: dict[str, object] = {}
        for feature in self.features:
            group = self.group_of(feature)
            if group is not None:
                chosen = X[:, list(group.columns)].argmax(axis=1) if len(X) else []
                decoded[feature] = pd.Series([group.levels[i] for i in chosen], dtype=_dtype(group))
                continue
            j = self.column_of(feature)
            if j in self.binary:
                decoded[feature] = (X[:, j] >= 0.5).astype(np.int64)
            else:
                decoded[feature] = self._unscale(X[:, j] * self.scale[j] + self.mean[j], j)
        return pd.DataFrame(decoded, columns=list(self.features))

    def delta(self, initial: np.ndarray, final: np.ndarray) -> pd.DataFrame:
        """Per continuous original feature, ``final - initial`` in the original units.

        Computed as ``(final - initial) * sd`` (no cancellation of the mean) and rounded like
        :meth:`decode`, so a change too small to show in the original units is exactly 0; a
        column that was not standardised gives its plain difference.
        """
        initial = np.asarray(initial, dtype=np.float64)
        final = np.asarray(final, dtype=np.float64)
        if initial.shape != final.shape:
            raise ValueError(f"delta: rows of one shape, got {initial.shape} and {final.shape}")
        changes = {}
        for feature in self.continuous:
            j = self.column_of(feature)
            decimals = self.decimals(j)
            change = (final[:, j] - initial[:, j]) * self.scale[j]
            if decimals is not None:
                change = np.round(change, decimals)
            changes[feature] = change + 0.0  # no -0.0
        return pd.DataFrame(changes, columns=list(self.continuous), index=range(len(final)))

    def _unscale(self, values: np.ndarray, column: int) -> np.ndarray:
        decimals = self.decimals(column)
        return values if decimals is None else np.round(values, decimals) + 0.0


def _plain(level: object) -> object:
    """A level as a plain Python value (numpy scalars pickle and print as their numbers)."""
    return level.item() if isinstance(level, np.generic) else level


def _dtype(group: OneHot) -> str | None:
    """A column dtype for a group's levels: integers stay integers, text stays text."""
    levels = group.levels
    if all(isinstance(v, bool) for v in levels):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "int64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels):
        return "float64"
    return "object"

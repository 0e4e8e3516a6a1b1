"""The tabular data set every part of the simulation works on, with its actionability metadata.

Features live in model space (what the classifier sees: standardised for the real-world data, raw
for the synthetic data, as in the reference study). Per-feature mutability and bounds travel with
the data, so every generator respects them without extra configuration; so does the way back to
the data's original units (:class:`~recourse_sim.data.encoding.Encoding`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from recourse_sim.data.encoding import Encoding
from recourse_sim.errors import ConfigError

#: Allowed mutability of a feature: free, increase-only, decrease-only, immutable.
MUTABILITY = ("both", "increase", "decrease", "none")


@dataclass(frozen=True)
class Dataset:
    """A binary classification data set with feature metadata.

    Attributes:
        X: Features, shape ``(n, d)``, float64, finite.
        y: Labels, shape ``(n,)``, int64 in {0, 1}; 1 is the favourable outcome (the recourse
            target).
        feature_names: One name per column of ``X``.
        name: Short name of the data set (used in outputs).
        mutability: Per feature, one of :data:`MUTABILITY`.
        lower: Per-feature lower bound in model space (``-inf`` for none).
        upper: Per-feature upper bound in model space (``+inf`` for none).
        categorical_groups: Column indices of each one-hot group (exactly one 1 per row); the
            counterfactual engine projects each group back to a valid one-hot vector.
        binary_features: Columns holding a single 0/1 indicator (rounded on decoding).
        source: Provenance and attribution of the data.
        groups: Optional group of every row for fairness comparisons: int64 codes, one per row,
            indexing ``group_levels``; ``None`` when the data set has no groups.
        group_levels: Readable name of each group (``"SEX=1"``, ``"AGE<=34"``).
        group_column: The raw column the groups come from.
        group_edges: For a numeric column cut into quantile bins, the upper end of every bin
            but the last, in the raw column's units (bin ``i`` holds ``edges[i-1] < v <=
            edges[i]``), so that new rows can be coded alike; empty when the column's levels
            are the groups.
        encoding: How the columns map back to the original table's units and columns
            (standardisation, one-hot groups); ``None``: the features are raw, and decode as
            they are. Every data set derived from this one (subsets, splits, arrivals) keeps it.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    name: str = "data"
    mutability: tuple[str, ...] = ()
    lower: np.ndarray = field(default=None)  # type: ignore[assignment]
    upper: np.ndarray = field(default=None)  # type: ignore[assignment]
    categorical_groups: tuple[tuple[int, ...], ...] = ()
    binary_features: tuple[int, ...] = ()
    source: str = ""
    groups: np.ndarray | None = None
    group_levels: tuple[str, ...] = ()
    group_column: str = ""
    group_edges: tuple[float, ...] = ()
    encoding: Encoding | None = None

    def __post_init__(self) -> None:
        X = np.asarray(self.X, dtype=np.float64)
        y = np.asarray(self.y)
        if X.ndim != 2:
            raise ConfigError("data.X", X.shape, "a 2-D feature matrix")
        n, d = X.shape
        if y.shape != (n,):
            raise ConfigError("data.y", y.shape, f"one label per row, shape ({n},)")
        names = tuple(str(c) for c in self.feature_names)
        if len(names) != d:
            raise ConfigError("data.feature_names", len(names), f"{d} names, one per column")
        bad = [names[j] for j in range(d) if not np.all(np.isfinite(X[:, j]))]
        if bad:
            raise ConfigError("data", bad, "features must be finite; these columns hold NaN/inf")
        labels = set(np.unique(y).tolist())
        if not labels <= {0, 1}:
            raise ConfigError("data.y", sorted(labels), "binary labels 0/1 (1 = favourable)")
        mutability = tuple(self.mutability) or ("both",) * d
        if len(mutability) != d:
            raise ConfigError("data.mutability", len(mutability), f"{d} entries")
        for j, m in enumerate(mutability):
            if m not in MUTABILITY:
                raise ConfigError(f"data.mutability[{names[j]}]", m, f"one of {MUTABILITY}")
        lower = np.full(d, -np.inf) if self.lower is None else np.asarray(self.lower, float)
        upper = np.full(d, np.inf) if self.upper is None else np.asarray(self.upper, float)
        if lower.shape != (d,) or upper.shape != (d,) or np.any(lower > upper):
            raise ConfigError(
                "data.bounds", (lower, upper), "one (lower <= upper) pair per feature"
            )
        X.setflags(write=False)
        y = y.astype(np.int64)
        y.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "mutability", mutability)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        groups = tuple(tuple(int(i) for i in g) for g in self.categorical_groups)
        object.__setattr__(self, "categorical_groups", groups)
        object.__setattr__(self, "binary_features", tuple(int(i) for i in self.binary_features))
        self._set_groups(n)
        if self.encoding is not None and self.encoding.columns != names:
            raise ConfigError(
                "data.encoding", self.encoding.columns, f"the model-space columns {names}"
            )

    def _set_groups(self, n: int) -> None:
        """Validate the group fields and store them in canonical form."""
        levels = tuple(str(level) for level in self.group_levels)
        edges = tuple(float(e) for e in self.group_edges)
        column = str(self.group_column)
        if self.groups is None:
            if levels or edges or column:
                raise ConfigError(
                    "data.groups", None, "group codes whenever group levels or a column are given"
                )
            return
        codes = np.asarray(self.groups)
        if codes.size == 0:
            codes = codes.astype(np.int64)
        if codes.shape != (n,) or codes.dtype.kind not in "iu":
            raise ConfigError(
                "data.groups", codes.shape, f"one integer group code per row, shape ({n},)"
            )
        if not levels or len(set(levels)) < len(levels):
            raise ConfigError("data.group_levels", levels, "one distinct name per group")
        if codes.size and (codes.min() < 0 or codes.max() >= len(levels)):
            raise ConfigError(
                "data.groups",
                (int(codes.min()), int(codes.max())),
                f"codes from 0 to {len(levels) - 1}, one per group level",
            )
        if edges and len(edges) != len(levels) - 1:
            raise ConfigError("data.group_edges", edges, f"{len(levels) - 1} cut points")
        codes = codes.astype(np.int64)
        codes.setflags(write=False)
        object.__setattr__(self, "groups", codes)
        object.__setattr__(self, "group_levels", levels)
        object.__setattr__(self, "group_column", column)
        object.__setattr__(self, "group_edges", edges)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return self.X.shape[1]

    @property
    def continuous_features(self) -> np.ndarray:
        """Boolean mask of the columns that are neither one-hot nor binary indicators."""
        mask = np.ones(self.n_features, dtype=bool)
        for group in self.categorical_groups:
            mask[list(group)] = False
        mask[list(self.binary_features)] = False
        return mask

    @property
    def decoding(self) -> Encoding:
        """The :attr:`encoding`, or the identity for raw features."""
        return Encoding.identity(self.feature_names) if self.encoding is None else self.encoding

    def decode(self, X: np.ndarray | None = None) -> pd.DataFrame:
        """Rows of model space (by default this data set's own) in the original units.

        See :meth:`~recourse_sim.data.encoding.Encoding.decode`.
        """
        return self.decoding.decode(self.X if X is None else X)

    def subset(self, index: Sequence[int] | np.ndarray) -> Dataset:
        """The rows ``index`` as a new data set with the same metadata (and their groups)."""
        index = np.asarray(index)
        if index.size == 0:
            index = index.astype(np.intp)  # an empty list arrives as float64
        groups = None if self.groups is None else self.groups[index]
        return replace(self, X=self.X[index], y=self.y[index], groups=groups)

    def with_mutability(
        self,
        immutable: Sequence[str] = (),
        increase_only: Sequence[str] = (),
        decrease_only: Sequence[str] = (),
        key: str = "data",
    ) -> Dataset:
        """Return a copy with the named features (or one-hot group prefixes) constrained.

        A name matches a column exactly, or every column of a one-hot group whose columns start
        with ``name + "_"`` (so ``EDUCATION`` covers ``EDUCATION_0 .. EDUCATION_6``).
        """
        mutability = list(self.mutability)
        claimed: dict[int, str] = {}
        for option, names, value in (
            ("immutable", immutable, "none"),
            ("increase_only", increase_only, "increase"),
            ("decrease_only", decrease_only, "decrease"),
        ):
            # A bare string from the config means one feature, not a list of characters.
            for name in [names] if isinstance(names, str) else names or ():
                for j in self.columns_of(str(name), key=f"{key}.{option}"):
                    if claimed.get(j, option) != option:
                        raise ConfigError(
                            f"{key}.{option}",
                            name,
                            f"features not also listed in {key}.{claimed[j]} "
                            f"({self.feature_names[j]} is in both)",
                        )
                    claimed[j] = option
                    mutability[j] = value
        return replace(self, mutability=tuple(mutability))

    def columns_of(self, name: str, key: str = "data.features") -> list[int]:
        """Column indices of feature ``name`` or of the one-hot group prefixed ``name_``."""
        if name in self.feature_names:
            return [self.feature_names.index(name)]
        # A prefix names a whole one-hot group, never unrelated columns that happen to share it
        # (PAY must not match PAY_AMT1).
        prefixed = [
            j
            for group in self.categorical_groups
            if all(self.feature_names[j].startswith(f"{name}_") for j in group)
            for j in group
        ]
        if not prefixed:
            raise ConfigError(
                key, name, f"a column of {self.name}: {', '.join(self.feature_names)}"
            )
        return prefixed


def train_test_split(
    data: Dataset, test_size: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """Stratified split: ``floor(test_size * n_c)`` test rows drawn from each class ``c``.

    This is the reference implementation's rule (AlgorithmicRecourseDynamics.jl
    ``train_test_split``); on balanced data it gives exactly ``test_size`` of each class.
    """
    allowed = "a fraction strictly between 0 and 1"
    try:
        fraction = float(test_size)
    except (TypeError, ValueError):
        raise ConfigError("data.test_size", test_size, allowed) from None
    if not 0.0 < fraction < 1.0:
        raise ConfigError("data.test_size", test_size, allowed)
    test_parts = []
    for label in (0, 1):
        members = np.flatnonzero(data.y == label)
        n_test = int(np.floor(fraction * len(members)))
        if n_test == 0 or n_test == len(members):
            raise ConfigError(
                "data.test_size",
                test_size,
                f"a split that leaves both train and test rows of class {label} "
                f"(the data has {len(members)} rows of that class)",
            )
        test_parts.append(rng.choice(members, size=n_test, replace=False))
    test_index = np.sort(np.concatenate(test_parts))
    train_mask = np.ones(data.n_samples, dtype=bool)
    train_mask[test_index] = False
    return data.subset(np.flatnonzero(train_mask)), data.subset(test_index)

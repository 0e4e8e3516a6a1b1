"""Where the new arrivals of a time-based simulation come from.

A data set with a generating process (the synthetic makers, marked :func:`generative`) can draw
as many fresh individuals as the rounds need: :func:`draw_fresh`. A table has a fixed number of
rows, so arrivals are held back from it before the simulation starts: :func:`hold_back`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from recourse_sim import checks
from recourse_sim.data._checks import check_rng
from recourse_sim.data.base import Dataset
from recourse_sim.data.groups import code_values
from recourse_sim.errors import ConfigError

#: The config key of the number of arrivals per round, named in errors about it.
ARRIVALS_KEY = "dynamics.arrivals.per_round"
#: Rows that :func:`hold_back` leaves in the starting population at the least.
MIN_REMAINING = 4
#: Keys of a data config node that are not arguments of its maker.
_NOT_ARGUMENTS = ("_target_", "test_size")
#: Keys whose grouping :func:`draw_fresh` takes from ``like`` rather than from the fresh rows.
_GROUP_ARGUMENTS = ("group", "group_bins")
_MARK = "__recourse_sim_generative__"

F = TypeVar("F", bound=Callable[..., Dataset])


@dataclass(frozen=True)
class SampleSizes:
    """The sizes a generative maker accepts: at least ``minimum``, and even when ``even``."""

    minimum: int = 1
    even: bool = False

    def admissible(self, n: int) -> int:
        """The smallest accepted size of at least ``n`` rows."""
        size = max(n, self.minimum)
        return size + 1 if self.even and size % 2 else size


def generative(
    function: F | None = None, *, minimum: int = 1, even: bool = False
) -> F | Callable[[F], F]:
    """Mark a data maker as able to draw fresh points from its generating process.

    Use as ``@generative`` or ``@generative(minimum=4, even=True)``. The maker is returned
    itself (same signature), only marked; ``minimum`` and ``even`` state which ``n_samples``
    it accepts, so that :func:`draw_fresh` can ask for an admissible size.
    """
    sizes = SampleSizes(minimum=int(minimum), even=bool(even))

    def mark(maker: F) -> F:
        setattr(maker, _MARK, sizes)
        return maker

    return mark if function is None else mark(function)


def is_generative(target: Callable[..., Any] | str) -> bool:
    """Whether ``target`` (a callable, or a ``_target_`` import path) draws fresh points.

    A path that does not import is not generative (hydra reports it when instantiating).
    """
    return _sizes(_resolve(target)) is not None


def draw_fresh(
    make: Callable[..., Dataset] | str,
    kwargs: Mapping[str, Any],
    n: int,
    rng: np.random.Generator,
    *,
    like: Dataset | None = None,
) -> Dataset:
    """Exactly ``n`` fresh rows from a generative maker.

    The maker is called with its configured arguments and the smallest admissible
    ``n_samples`` of at least ``n`` (even, >= 4 for the two-class makers); its rows come
    shuffled, so the first ``n`` are a random draw. ``n = 0`` returns an empty data set with the
    maker's metadata and draws nothing from ``rng`` (the metadata come from a throwaway sample,
    so its observed bounds, if any, mean nothing).

    Args:
        make: A maker marked :func:`generative`, or its ``_target_`` import path.
        kwargs: The maker's arguments, e.g. the data config; ``n_samples`` is replaced, and
            ``_target_`` and ``test_size`` are ignored.
        n: Number of rows, >= 0.
        rng: Source of the draw.
        like: The data set the fresh rows join. They then take its metadata (name, bounds,
            mutability, group levels), and their group codes follow its grouping rule (its
            quantile cut points), not cut points of their own. Required when ``kwargs`` name a
            ``group``.

    Returns:
        The fresh rows.

    Raises:
        ConfigError: On ``data._target_`` if ``make`` is not generative (a table has no
            generating process: hold its arrivals back with :func:`hold_back`), or on
            :data:`ARRIVALS_KEY` if ``n`` is not an integer >= 0.
        ValueError: If ``kwargs`` name a group and ``like`` is missing, or if ``like`` has other
            features than the fresh rows.
    """
    maker = _resolve(make)
    sizes = _sizes(maker)
    if sizes is None:
        raise ConfigError(
            "data._target_",
            make if isinstance(make, str) else getattr(make, "__name__", repr(make)),
            "a generative data set (overlapping, linearly_separable, circles, moons, "
            "independent_normal) to draw fresh arrivals from; hold a table's arrivals back "
            "from its rows instead",
        )
    n = checks.integer(ARRIVALS_KEY, n, minimum=0)
    rng = check_rng(rng)
    arguments = {k: v for k, v in kwargs.items() if k not in _NOT_ARGUMENTS}
    group = arguments.get("group")
    if group is not None and like is None:
        raise ValueError(
            f"draw_fresh: the data config names group={group!r}; pass like=<the starting data "
            "set> so that fresh rows are coded with its group levels"
        )
    if like is not None:
        # Binning a small batch by its own quantiles would give it other groups than the
        # population's; the codes come from ``like`` below.
        arguments = {k: v for k, v in arguments.items() if k not in _GROUP_ARGUMENTS}
    arguments["n_samples"] = sizes.admissible(n)
    # An empty draw must leave ``rng`` untouched; only its metadata are used.
    source = rng if n else np.random.default_rng(0)
    fresh = maker(**arguments, rng=source).subset(np.arange(n))
    return fresh if like is None else _join(fresh, like, group)


def hold_back(
    data: Dataset, n: int, rng: np.random.Generator, *, per_round: object = None
) -> tuple[Dataset, Dataset]:
    """Split a random pool of exactly ``n`` rows off ``data`` (not stratified).

    Args:
        data: The data set (e.g. a table, which cannot draw fresh rows).
        n: Rows the arrivals of all rounds need together, >= 0.
        rng: Source of the draw (nothing is drawn when ``n`` is 0).
        per_round: The configured arrivals per round, shown in the error message (defaults
            to ``n``).

    Returns:
        ``(rest, pool)``: the other rows in their original order, and the pool in the random
        order of the draw (take arrivals from its front).

    Raises:
        ConfigError: On :data:`ARRIVALS_KEY` if ``n`` is not an integer >= 0, or if fewer than
            :data:`MIN_REMAINING` rows would remain (holding back nothing always works); the
            message says how many rows the rounds need and how many the data set has.
    """
    shown = n if per_round is None else per_round
    count = checks.integer(ARRIVALS_KEY, n, minimum=0)
    if count == 0:
        return data, data.subset(np.arange(0))
    rows = data.n_samples
    if count > rows - MIN_REMAINING:
        raise ConfigError(
            ARRIVALS_KEY,
            shown,
            f"arrivals that fit the data: the configured rounds need {count} arriving rows, "
            f"but the data set {data.name} has {rows} rows and at least {MIN_REMAINING} must "
            f"stay in the starting population (at most {max(rows - MIN_REMAINING, 0)} can "
            "arrive); raise data.n_samples where the data set allows, or lower "
            f"{ARRIVALS_KEY} or the number of rounds",
        )
    chosen = check_rng(rng).choice(rows, size=count, replace=False)
    remaining = np.ones(rows, dtype=bool)
    remaining[chosen] = False
    return data.subset(np.flatnonzero(remaining)), data.subset(chosen)


def _join(fresh: Dataset, like: Dataset, group: object) -> Dataset:
    """The fresh rows with the metadata and grouping rule of ``like``."""
    if fresh.feature_names != like.feature_names:
        raise ValueError(
            f"draw_fresh: the fresh rows have the features {fresh.feature_names}, the data "
            f"set they join {like.feature_names}"
        )
    if group is not None and group != like.group_column:
        raise ValueError(
            f"draw_fresh: the data config names group={group!r}, the data set the rows join "
            f"is grouped by {like.group_column or 'nothing'!r}"
        )
    codes = None
    if like.groups is not None:
        if like.group_column not in like.feature_names:
            raise ValueError(
                f"draw_fresh: the group column {like.group_column!r} is not a feature, so "
                "fresh rows cannot be coded"
            )
        column = fresh.X[:, like.feature_names.index(like.group_column)]
        codes = code_values(column, like.group_column, like.group_levels, like.group_edges)
    return replace(like, X=fresh.X, y=fresh.y, groups=codes)


def _resolve(target: Callable[..., Any] | str) -> Any:
    """The object a ``_target_`` path names (``None`` if it does not import), or ``target``."""
    if not isinstance(target, str):
        return target
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                found = getattr(found, name)
        except AttributeError:
            return None
        return found
    return None


def _sizes(target: object) -> SampleSizes | None:
    sizes = getattr(target, _MARK, None)
    return sizes if isinstance(sizes, SampleSizes) else None

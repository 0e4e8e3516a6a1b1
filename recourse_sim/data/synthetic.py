"""Two-dimensional synthetic data sets of the reference study.

The semantics follow MLJBase's generators (``src/data/datasets_synthetic.jl``) as the reference
study called them: 1000 points, exactly half per class, raw (unstandardised) features, every
feature mutable and unbounded. They differ from scikit-learn's generators of the same names:
angles are drawn at random rather than on a grid, and the second moon is shifted by
``(1.0, 0.3)`` rather than ``(1.0, -0.5)``.

Every maker is :func:`~recourse_sim.data.arrivals.generative` (it can draw fresh arrivals) and
accepts an optional ``group``: a feature whose quantile bins define groups for fairness
comparisons (see :mod:`recourse_sim.data.groups`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recourse_sim import checks
from recourse_sim.data._checks import check_rng, check_sample_count
from recourse_sim.data.arrivals import generative
from recourse_sim.data.base import Dataset
from recourse_sim.data.encoding import Encoding
from recourse_sim.data.groups import DEFAULT_BINS, check_bins, check_group, with_feature_groups
from recourse_sim.errors import ConfigError

_SOURCE = "synthetic ({}; MLJBase semantics as used by Altmeyer et al., SaTML 2023)"
_NAMES = ("x1", "x2")


@generative(minimum=4, even=True)
def make_linearly_separable(
    n_samples: int = 1000,
    centers: Sequence[Sequence[float]] | None = ((0.523, -0.094), (-0.191, 0.815)),
    cluster_std: float = 0.1,
    center_box: Sequence[float] = (-2.0, 2.0),
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Two tight Gaussian blobs that a straight line separates.

    The reference study drew both centres uniformly from ``center_box`` under its global seed;
    the default ``centers`` are the class means of the very points its experiments loaded,
    recovered from the vector plot of that data in the paper repository
    (pat-alt/endogenous-macrodynamics-in-algorithmic-recourse@a3bd055,
    ``_freeze/sections/data_preprocessing/index/figure-html/cell-5-output-1.svg``: 500 points per
    class, mapped to data coordinates through the plot's grid lines). Pass ``centers=None`` to
    draw fresh centres from ``rng`` instead.

    Args:
        n_samples: Total number of points, an even integer >= 4 (half per class).
        centers: Centre of class 0 and centre of class 1, or ``None`` to draw both.
        cluster_std: Standard deviation of each coordinate around its centre.
        center_box: ``(low, high)`` range of the drawn centres' coordinates.
        group: A feature (``x1`` or ``x2``) whose quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of ``group`` (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``linearly_separable`` (blob 1 is class 0, blob 2 is class 1).
    """
    return _blobs(
        "linearly_separable", n_samples, centers, cluster_std, center_box, group, group_bins, rng
    )


@generative(minimum=4, even=True)
def make_overlapping(
    n_samples: int = 1000,
    centers: Sequence[Sequence[float]] | None = ((0.433, -0.314), (1.976, 0.162)),
    cluster_std: float = 0.5,
    center_box: Sequence[float] = (-2.0, 2.0),
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Two wide Gaussian blobs whose tails overlap, so no line separates them.

    As for :func:`make_linearly_separable`, the default ``centers`` are the class means of the
    reference study's own points (its seed drew the centres uniformly from ``center_box``).

    Args:
        n_samples: Total number of points, an even integer >= 4 (half per class).
        centers: Centre of class 0 and centre of class 1, or ``None`` to draw both.
        cluster_std: Standard deviation of each coordinate around its centre.
        center_box: ``(low, high)`` range of the drawn centres' coordinates.
        group: A feature (``x1`` or ``x2``) whose quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of ``group`` (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``overlapping`` (blob 1 is class 0, blob 2 is class 1).
    """
    return _blobs(
        "overlapping", n_samples, centers, cluster_std, center_box, group, group_bins, rng
    )


@generative(minimum=4, even=True)
def make_circles(
    n_samples: int = 1000,
    noise: float = 0.15,
    factor: float = 0.01,
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """An inner circle (class 0) inside the unit circle (class 1), with Gaussian noise.

    With the reference's ``factor=0.01`` the inner circle collapses to a noisy blob at the
    origin, so class 0 is surrounded by class 1.

    Args:
        n_samples: Total number of points, an even integer >= 4 (half per class).
        noise: Standard deviation of the Gaussian noise added to both coordinates.
        factor: Radius of the inner circle, in ``[0, 1)``.
        group: A feature (``x1`` or ``x2``) whose quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of ``group`` (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``circles``.
    """
    rng = check_rng(rng)
    n = check_sample_count("data.n_samples", n_samples, minimum=4, even=True)
    noise = checks.real("data.noise", noise, minimum=0.0)
    factor = checks.real("data.factor", factor, minimum=0.0, maximum=1.0, high_open=True)
    group, bins = _group(group, group_bins)
    y = np.repeat([0, 1], n // 2)
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = np.where(y == 0, factor, 1.0)
    X = radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    X = X + rng.normal(0.0, noise, X.shape)
    return with_feature_groups(_shuffled("circles", X, y, rng), group, bins)


@generative(minimum=4, even=True)
def make_moons(
    n_samples: int = 1000,
    noise: float = 0.1,
    x_shift: float = 1.0,
    y_shift: float = 0.3,
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Two interleaving half circles: the upper moon is class 0, the shifted lower one class 1.

    Args:
        n_samples: Total number of points, an even integer >= 4 (half per class).
        noise: Standard deviation of the Gaussian noise added to both coordinates.
        x_shift: Horizontal shift of the lower moon.
        y_shift: Vertical shift of the lower moon (MLJBase's default 0.3).
        group: A feature (``x1`` or ``x2``) whose quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of ``group`` (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``moons``.
    """
    rng = check_rng(rng)
    n = check_sample_count("data.n_samples", n_samples, minimum=4, even=True)
    noise = checks.real("data.noise", noise, minimum=0.0)
    x_shift = checks.real("data.x_shift", x_shift)
    y_shift = checks.real("data.y_shift", y_shift)
    group, bins = _group(group, group_bins)
    y = np.repeat([0, 1], n // 2)
    angle = rng.uniform(0.0, np.pi, n)
    lower = y == 1
    X = np.column_stack([np.cos(angle), np.where(lower, -1.0, 1.0) * np.sin(angle)])
    X[lower] += (x_shift, y_shift)
    X = X + rng.normal(0.0, noise, X.shape)
    return with_feature_groups(_shuffled("moons", X, y, rng), group, bins)


def _blobs(
    name: str,
    n_samples: object,
    centers: object,
    cluster_std: object,
    center_box: object,
    group: object,
    group_bins: object,
    rng: np.random.Generator,
) -> Dataset:
    rng = check_rng(rng)
    n = check_sample_count("data.n_samples", n_samples, minimum=4, even=True)
    std = checks.real("data.cluster_std", cluster_std, minimum=0.0)
    low, high = _box(center_box)
    group, bins = _group(group, group_bins)
    # Without given centres, MLJBase draws every centre coordinate independently from the box.
    means = rng.uniform(low, high, size=(2, 2)) if centers is None else _centers(centers)
    y = np.repeat([0, 1], n // 2)
    X = means[y] + rng.normal(0.0, std, (n, 2))
    return with_feature_groups(_shuffled(name, X, y, rng), group, bins)


def _group(group: object, group_bins: object) -> tuple[str | None, int]:
    """The checked ``data.group`` (a feature or None) and ``data.group_bins``."""
    return check_group(group, _NAMES, "a feature of the data"), check_bins(group_bins)


def _centers(centers: object) -> np.ndarray:
    allowed = "two centres [[x, y] of class 0, [x, y] of class 1] with finite coordinates, or null"
    try:
        rows = [[checks.real("data.centers", v) for v in c] for c in centers]
    except (ConfigError, TypeError):
        raise ConfigError("data.centers", centers, allowed) from None
    if len(rows) != 2 or any(len(row) != 2 for row in rows):
        raise ConfigError("data.centers", centers, allowed)
    return np.array(rows, dtype=np.float64)


def _box(center_box: object) -> tuple[float, float]:
    allowed = "a pair [low, high] of finite numbers with low < high"
    try:
        low, high = (checks.real("data.center_box", v) for v in center_box)
    except (ConfigError, TypeError, ValueError):
        raise ConfigError("data.center_box", center_box, allowed) from None
    if not low < high:
        raise ConfigError("data.center_box", center_box, allowed)
    return low, high


def _shuffled(name: str, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Dataset:
    # Generated class by class; shuffle so that row order carries no label information.
    order = rng.permutation(len(y))
    return Dataset(
        X[order],
        y[order],
        _NAMES,
        name=name,
        source=_SOURCE.format(name),
        encoding=Encoding.identity(_NAMES),  # raw features: model space is the original space
    )

"""Features without signal: the synthetic data of Fonseca et al. (EAAMO 2023).

"Setting the Right Expectations: Algorithmic Recourse Over Time" simulated agents whose features
are independent draws from N(0.5, (1/3)²) and whose labels are fair coin flips, independent of
the features (their code: recgame's ``generate_synthetic_data``). A classifier finds no signal in
such data, so any structure the simulation shows comes from the recourse dynamics. Their
actions were bounded by the agents' observed minimum and maximum of each feature.
"""

from __future__ import annotations

import numpy as np

from recourse_sim import checks
from recourse_sim.data._checks import check_rng, check_sample_count
from recourse_sim.data.arrivals import generative
from recourse_sim.data.base import Dataset
from recourse_sim.data.encoding import Encoding
from recourse_sim.data.groups import DEFAULT_BINS, check_bins, check_group, with_feature_groups
from recourse_sim.data.tabular import BOUNDS

#: The fewest rows: both classes must be present for the runner's stratified split.
MIN_SAMPLES = 4
_SOURCE = (
    "synthetic (independent_normal: every feature N({mean:g}, {std:g}^2), labels fair coin flips "
    "independent of the features; Fonseca et al., EAAMO 2023, recgame generate_synthetic_data)"
)


@generative(minimum=MIN_SAMPLES)
def make_independent_normal(
    n_samples: int = 125,
    n_features: int = 2,
    mean: float = 0.5,
    std: float = 1 / 3,
    bounds: str = "observed",
    group: str | None = None,
    group_bins: int = DEFAULT_BINS,
    *,
    rng: np.random.Generator,
) -> Dataset:
    """Independent normal features and labels drawn independently of them.

    Every feature of every row is drawn from N(``mean``, ``std``²), then every label uniformly
    from {0, 1}. If all labels come out equal (probability ``2 ** (1 - n_samples)``), the labels
    are drawn again until both classes occur, so that the data can be split by class. Features
    stay raw (not standardised) and every feature is mutable.

    Fewer than 4 rows are refused. Both classes are then present, but the runner's stratified
    train/test split needs more: at ``test_size=0.2`` each class needs at least 5 rows (the
    split names ``data.test_size`` otherwise), so use a few dozen rows at the least. The
    default 125 rows give 100 training agents, as in the paper.

    Args:
        n_samples: Number of rows, an integer >= 4.
        n_features: Number of features ``x1 .. xd``, >= 1.
        mean: Mean of every feature.
        std: Standard deviation of every feature, > 0.
        bounds: ``"observed"``: each feature bounded at its observed ``[min, max]`` in the
            drawn sample (the agents' action bounds in the paper); ``"none"``: unbounded.
        group: A feature (``x1`` .. ``xd``) whose quantile bins are the groups of fairness
            comparisons; ``None``: no groups.
        group_bins: Number of quantile bins of ``group`` (>= 2).
        rng: Source of all randomness.

    Returns:
        The data set ``independent_normal``.
    """
    rng = check_rng(rng)
    n = check_sample_count("data.n_samples", n_samples, minimum=MIN_SAMPLES)
    d = checks.integer("data.n_features", n_features, minimum=1)
    mean = checks.real("data.mean", mean)
    std = checks.real("data.std", std, minimum=0.0, low_open=True)
    checks.check_choice("data.bounds", bounds, BOUNDS)
    names = tuple(f"x{j + 1}" for j in range(d))
    group = check_group(group, names, "a feature of the data")
    bins = check_bins(group_bins)

    X = rng.normal(mean, std, size=(n, d))
    y = rng.integers(0, 2, size=n)
    while y.min() == y.max():
        y = rng.integers(0, 2, size=n)
    lower = upper = None
    if bounds == "observed":
        lower, upper = X.min(axis=0), X.max(axis=0)
    data = Dataset(
        X,
        y,
        names,
        name="independent_normal",
        lower=lower,
        upper=upper,
        source=_SOURCE.format(mean=mean, std=std),
        encoding=Encoding.identity(names),  # raw features: model space is the original space
    )
    return with_feature_groups(data, group, bins)

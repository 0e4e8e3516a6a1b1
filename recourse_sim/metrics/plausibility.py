"""Plausibility of implemented recourse: how far the moved individuals lie from the target class.

Altmeyer et al., "Counterfactual Training" (IEEE SaTML 2026), §5: the implausibility ``IP`` (mean
distance of a counterfactual to target-class samples, as in the ECCCo paper's implementation,
Altmeyer et al., AAAI 2024, which averages over the nearest samples) and its distributional
version ``IP*`` (squared MMD between the counterfactuals and the target-class samples, Gaussian
kernel with length scale 5). Here the counterfactuals are the rows of the individuals that moved
on advice since the previous evaluation round (``EvaluationContext.moved``), and the target-class
samples are the other rows of the system's current training data labelled with the target class.
Both work in z-score space (features divided by ``EvaluationContext.scale``).
"""

from __future__ import annotations

import math

import numpy as np

from recourse_sim import checks
from recourse_sim.metrics.base import EvaluationContext, MetricResult, non_finite_reason
from recourse_sim.metrics.domain import check_bandwidth, mmd_with_p_value
from recourse_sim.metrics.mmd import subsample

#: Norms of :class:`ImplausibilityDistance`.
NORMS = ("l1", "l2")

#: Most moved rows whose distances are computed at once.
CHUNK_ROWS = 512

#: Memory for one chunk's distance matrix (bytes); fewer rows per chunk when samples are many.
CHUNK_BYTES = 32 * 2**20


def _sides(context: EvaluationContext) -> tuple[np.ndarray, np.ndarray] | str:
    """``(moved rows, target-class samples)`` in z-score space, or why they are not available.

    The moved rows may be empty; the samples are the current rows of the target class that did
    not move since the previous evaluation.
    """
    if context.moved is None:
        return (
            "who moved on advice is not known (no previous evaluation to count moves from, "
            "e.g. at round 0)"
        )
    X = np.asarray(context.train_X, dtype=np.float64)
    y = np.asarray(context.train_y)
    moved = np.asarray(context.moved, dtype=bool)
    if moved.shape != (len(X),):
        raise ValueError(f"moved must be a mask of shape ({len(X)},), not {moved.shape}")
    scale = np.ones(X.shape[1]) if context.scale is None else np.asarray(context.scale, float)
    if scale.shape != (X.shape[1],):
        raise ValueError(f"scale must have shape ({X.shape[1]},), not {scale.shape}")
    counterfactuals = X[moved]
    samples = X[(y == context.target) & ~moved]
    reason = non_finite_reason(
        moved_rows=counterfactuals, target_class_samples=samples, feature_scales=scale
    )
    if reason:
        return reason
    return counterfactuals / scale, samples / scale


def _nobody_moved() -> MetricResult:
    return MetricResult.missing("nobody moved on advice since the previous evaluation")


def _no_samples(target: int) -> MetricResult:
    return MetricResult.missing(
        f"no row of class {target} that did not move since the previous evaluation to compare with"
    )


def mean_neighbour_distance(x: np.ndarray, samples: np.ndarray, k: int, norm: str) -> np.ndarray:
    """Each row's mean distance to its ``k`` nearest samples.

    Args:
        x: ``(m, d)`` points.
        samples: ``(n, d)`` points, ``n >= 1``.
        k: How many nearest samples to average over (capped at ``n``).
        norm: ``"l1"`` or ``"l2"``.

    Returns:
        The ``(m,)`` mean distances. Rows are processed in chunks (at most :data:`CHUNK_ROWS`,
        within :data:`CHUNK_BYTES`), one feature at a time, so memory stays bounded.
    """
    n = len(samples)
    k = min(int(k), n)
    rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // (8 * n)))
    means = np.empty(len(x))
    for start in range(0, len(x), rows):
        chunk = x[start : start + rows]
        dist = np.zeros((len(chunk), n))
        for j in range(x.shape[1]):
            diff = chunk[:, j, None] - samples[None, :, j]
            dist += np.abs(diff, out=diff) if norm == "l1" else np.square(diff, out=diff)
        if norm == "l2":
            np.sqrt(dist, out=dist)
        if k < n:
            dist = np.partition(dist, k - 1, axis=1)[:, :k]
        means[start : start + len(chunk)] = dist.mean(1)
    return means


class ImplausibilityDistance:
    """Mean distance of the moved individuals to their nearest target-class samples (``IP``).

    For each individual that moved on advice since the previous evaluation (its row is the
    counterfactual it implemented), the mean distance to its ``min(n_neighbours, n)`` nearest
    samples among the ``n`` current rows of the target class that did not move since then; the
    value is the mean over the moved individuals. Features are divided by the z-score scale.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        n_neighbours: How many nearest target-class samples each distance averages over (all
            of them when fewer are available).
        norm: ``"l1"`` (sum of absolute differences) or ``"l2"`` (Euclidean).
    """

    scope = "plausibility"

    def __init__(
        self, name: str = "implausibility_distance", n_neighbours: int = 1000, norm: str = "l1"
    ):
        self.name = name
        self.n_neighbours = checks.integer(f"metrics.{name}.n_neighbours", n_neighbours, minimum=1)
        checks.check_choice(f"metrics.{name}.norm", norm, NORMS)
        self.norm = norm

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """The implausibility of the moves since the previous evaluation.

        Missing (NaN, with the reason) at round 0 (``moved`` is None), when nobody moved, when
        no target-class sample is left to compare with, or when the inputs hold NaN or inf.
        """
        sides = _sides(context)
        if isinstance(sides, str):
            return MetricResult.missing(sides)
        moved, samples = sides
        if not len(moved):
            return _nobody_moved()
        if not len(samples):
            return _no_samples(context.target)
        value = float(mean_neighbour_distance(moved, samples, self.n_neighbours, self.norm).mean())
        if not math.isfinite(value):
            return MetricResult.missing("the implausibility distance is not finite")
        return MetricResult(value)


class ImplausibilityMMD:
    """Squared MMD between the moved individuals and the target-class samples (``IP*``).

    The unbiased estimate with the permutation p-value, as :class:`~.domain.DomainMMD`, between
    the target-class samples (``x``: the current rows of the target class that did not move since
    the previous evaluation) and the moved individuals' rows (``y``), both in z-score space. With
    ``n = min(|x|, n_samples)``, each side larger than ``n`` is reduced to ``n`` random rows; the
    samples come first so that a handful of moves is compared with up to ``n_samples`` samples.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        n_samples: Cap on each side's size; ``None`` uses all rows.
        length_scale: ℓ of the Gaussian kernel ``exp(−‖x − y‖² / (2ℓ²))`` (with
            ``bandwidth="fixed"``).
        bandwidth: ``"fixed"`` (``length_scale``) or ``"median"`` (the median heuristic of the
            compared rows at each evaluation, Gretton et al., JMLR 2012; see
            :func:`~recourse_sim.metrics.mmd.median_heuristic`).
    """

    scope = "plausibility"

    def __init__(
        self,
        name: str = "implausibility_mmd",
        n_samples: int | None = 1000,
        length_scale: float = 5.0,
        bandwidth: str = "fixed",
    ):
        self.name = name
        self.n_samples = checks.integer(
            f"metrics.{name}.n_samples", n_samples, minimum=2, optional=True, none_means="all rows"
        )
        self.length_scale = checks.real(
            f"metrics.{name}.length_scale", length_scale, minimum=0, low_open=True
        )
        self.bandwidth = check_bandwidth(name, bandwidth)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """The distributional implausibility of the moves since the previous evaluation.

        Missing (NaN, no p-value, with the reason) at round 0 (``moved`` is None), when either
        side has fewer than two rows, or when the inputs or the estimate are not finite.
        """
        sides = _sides(context)
        if isinstance(sides, str):
            return MetricResult.missing(sides)
        moved, samples = sides
        if len(moved) == 0:  # the same reason as the distance's: one warning for both
            return _nobody_moved()
        if len(moved) < 2 or len(samples) < 2:
            return MetricResult.missing(
                f"fewer than two rows to compare (moved since the previous evaluation: "
                f"{len(moved)}, unmoved rows of class {context.target}: {len(samples)})"
            )
        x, y = subsample(samples, moved, self.n_samples, context.rng)
        return mmd_with_p_value(x, y, context, self.length_scale, self.bandwidth)

"""Domain shift: MMD between the initial and the current population.

Paper §IV-B ("domain shifts"); reference code ``mmd_domain`` (AlgorithmicRecourseDynamics.jl
v0.1.2, ``src/evaluation/domain_shifts.jl``). With ``target_only`` (the reference's default),
``x`` = rows of the initial data (training and test rows at round 0) whose round-0 label is the
target class, and ``y`` = the system's current training rows whose *current* label is the target
(original positives plus the individuals that were moved and labelled positive). The paper speaks
of round-0 labels on both sides; the code, followed here, uses current labels for ``y``.
"""

from __future__ import annotations

import math

import numpy as np

from recourse_sim import checks
from recourse_sim.metrics.base import (
    EvaluationContext,
    KernelCheck,
    MetricResult,
    non_finite_reason,
)
from recourse_sim.metrics.mmd import (
    BANDWIDTHS,
    Bandwidth,
    choose_bandwidth,
    median_heuristic,
    mmd2_linear,
    mmd2_unbiased,
    mmd_permutation_test,
    subsample,
)


def check_bandwidth(name: str, value: object) -> str:
    """Return ``value`` if it is one of :data:`~recourse_sim.metrics.mmd.BANDWIDTHS`."""
    checks.check_choice(f"metrics.{name}.bandwidth", value, BANDWIDTHS)
    return str(value)


class DomainMMD:
    """Squared MMD between the initial and the current (target-class) data.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        target_only: Compare only target-class rows (round-0 labels on the initial side, current
            labels on the current side); ``False`` compares all rows of both sets.
        n_samples: Cap on each side's size: ``n = min(|x|, n_samples)`` and each side larger
            than ``n`` is reduced to ``n`` random rows; ``None`` uses all rows.
        length_scale: ℓ of the Gaussian kernel (with ``bandwidth="fixed"``).
        estimator: ``"unbiased"`` (the reference's quadratic-time estimator, with a
            permutation p-value over ``context.n_permutations`` splits of the subsampled sets) or
            ``"linear"`` (Gretton et al. 2012, Lemma 14; O(n), for very large populations; no
            p-value).
        bandwidth: ``"fixed"`` (``length_scale``, the reference) or ``"median"`` (the median
            heuristic of the compared rows at each evaluation, Gretton et al., JMLR 2012; see
            :func:`~recourse_sim.metrics.mmd.median_heuristic`). Both estimators honour it.
    """

    scope = "domain"

    def __init__(
        self,
        name: str = "mmd_domain",
        target_only: bool = True,
        n_samples: int | None = 1000,
        length_scale: float = 0.5,
        estimator: str = "unbiased",
        bandwidth: str = "fixed",
    ):
        self.name = name
        self.target_only = checks.flag(f"metrics.{name}.target_only", target_only)
        self.n_samples = checks.integer(
            f"metrics.{name}.n_samples", n_samples, minimum=2, optional=True, none_means="all rows"
        )
        self.length_scale = checks.real(
            f"metrics.{name}.length_scale", length_scale, minimum=0, low_open=True
        )
        checks.check_choice(f"metrics.{name}.estimator", estimator, ("unbiased", "linear"))
        self.estimator = estimator
        self.bandwidth = check_bandwidth(name, bandwidth)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Compare the initial with the current population.

        The value is missing (NaN, no p-value, with the reason) when either side has fewer than
        two rows, where no unbiased estimate exists, or holds NaN or inf; a simulation in that
        state is reported rather than aborted.
        """
        x, y = context.reference_X, context.train_X
        rows = "rows"
        if self.target_only:
            x = x[context.reference_y == context.target]
            y = y[context.train_y == context.target]
            rows = f"rows of class {context.target}"
        if len(x) < 2 or len(y) < 2:
            return MetricResult.missing(
                f"fewer than two {rows} to compare (initial data: {len(x)}, current training "
                f"data: {len(y)})"
            )
        reason = non_finite_reason(initial_data=x, current_training_data=y)
        if reason:
            return MetricResult.missing(reason)
        x, y = subsample(x, y, self.n_samples, context.rng)
        if self.estimator == "linear":
            # The estimator pairs consecutive rows, so the rows must be in random order; the
            # current training set is ordered (moved individuals sit at their original slots).
            x = x[context.rng.permutation(len(x))]
            y = y[context.rng.permutation(len(y))]
            scale = median_heuristic(x, y) if self.bandwidth == "median" else self.length_scale
            value = mmd2_linear(x, y, scale)
            if not math.isfinite(value):
                return MetricResult.missing("the linear MMD estimate is not finite")
            return MetricResult(value)
        return mmd_with_p_value(x, y, context, self.length_scale, self.bandwidth)


def kernel_check(x, y, chosen: Bandwidth) -> KernelCheck | None:
    """The check of an evaluation at ``chosen``, or None when its kernel is not degenerate.

    When degenerate, the unbiased estimate at the median heuristic's ℓ is computed (an estimate
    only: no permutations, no random numbers).
    """
    if not chosen.degenerate:
        return None
    return KernelCheck(
        length_scale=chosen.length_scale,
        median_kernel=chosen.median_kernel,
        median_length_scale=chosen.median_length_scale,
        value_at_median=mmd2_unbiased(x, y, chosen.median_length_scale),
    )


def mmd_with_p_value(
    x, y, context: EvaluationContext, length_scale: float, bandwidth: str = "fixed"
) -> MetricResult:
    """The unbiased squared MMD of ``x`` and ``y`` with the context's permutation p-value.

    ℓ is ``length_scale`` (``bandwidth="fixed"``) or the median heuristic of the pooled sample
    (``"median"``). Either way the result carries a :class:`KernelCheck` when the kernel is
    degenerate at that ℓ (computed without random numbers, so the value and p-value are those of
    an evaluation without the check).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return MetricResult.missing("the MMD estimate is not finite")
    chosen = choose_bandwidth(x, y, bandwidth, length_scale)
    value, p_value = mmd_permutation_test(
        x,
        y,
        context.n_permutations,
        context.rng,
        chosen.length_scale,
        p_value_form=context.p_value_form,
    )
    if not math.isfinite(value):
        return MetricResult.missing("the MMD estimate is not finite")
    return MetricResult(value, p_value, kernel=kernel_check(x, y, chosen))

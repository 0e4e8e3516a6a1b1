"""Domain shift: MMD between the initial and the current positive class.

Altmeyer et al., SaTML 2023, §IV-B; reference code ``mmd_domain`` (AlgorithmicRecourseDynamics.jl
v0.1.2): ``x`` = rows of the initial data (training and test) whose round-0 label is the target,
``y`` = the system's current training rows whose *current* label is the target (original
positives plus individuals moved and labelled positive). With ``target_only=False`` all rows of
both sets are compared.
"""

from __future__ import annotations

from recourse_sim.errors import ConfigError, check_choice
from recourse_sim.metrics.base import EvaluationContext, MetricResult
from recourse_sim.metrics.mmd import (
    check_length_scale,
    check_samples,
    mmd2_linear,
    mmd_permutation_test,
    subsample,
)


class DomainMMD:
    """Squared MMD between initial and current data, with a permutation p-value."""

    scope = "domain"

    def __init__(
        self,
        name: str = "mmd_domain",
        target_only: bool = True,
        n_samples: int | None = 1000,
        length_scale: float = 0.5,
        estimator: str = "unbiased",
    ):
        self.name = name
        self.target_only = bool(target_only)
        self.n_samples = check_samples(f"metrics.{name}.n_samples", n_samples)
        self.length_scale = check_length_scale(f"metrics.{name}.length_scale", length_scale)
        check_choice(f"metrics.{name}.estimator", estimator, ("unbiased", "linear"))
        self.estimator = estimator

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Compare the initial and current (positive) populations."""
        x, y = context.reference_X, context.train_X
        if self.target_only:
            x = x[context.reference_y == context.target]
            y = y[context.train_y == context.target]
        if len(x) < 2 or len(y) < 2:
            raise ConfigError(
                f"metrics.{self.name}",
                "too few rows",
                "at least two target-class rows on each side",
            )
        x, y = subsample(x, y, self.n_samples, context.rng)
        if self.estimator == "linear":
            return MetricResult(mmd2_linear(x, y, self.length_scale))
        value, p_value = mmd_permutation_test(
            x, y, context.n_permutations, context.rng, self.length_scale
        )
        return MetricResult(value, p_value)

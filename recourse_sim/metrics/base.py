"""What a shift metric sees, and what it returns.

Every metric compares the *current* state of one recourse system with its *initial* state (round
0), never consecutive rounds, as in AlgorithmicRecourseDynamics.jl (Altmeyer et al., SaTML 2023).
The plausibility metrics (:mod:`recourse_sim.metrics.plausibility`) are the exception: they
compare the individuals that moved since the previous evaluation with the rest of the current
target class.
Metrics are plain callables configured through ``configs/metrics``; a new metric is one small
class plus one YAML entry.

A metric that cannot be computed (non-finite inputs, an empty set, a model without parameters)
returns :meth:`MetricResult.missing` with the reason: value NaN and no p-value, never a p-value
computed from NaN (which would read as a highly significant shift). The simulation writes such a
value as empty ``value`` and ``p_value`` cells and records the reason (CONVENTIONS rule 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class KernelCheck:
    """A Gaussian-kernel MMD evaluation whose ℓ is too small to see anything.

    At the ℓ used, the median off-diagonal kernel value of the pooled sample is below
    :data:`~recourse_sim.metrics.mmd.DEGENERATE_KERNEL`: almost every pair of points looks
    infinitely far apart, so the estimate is about the same whatever the shift. The check gives
    the estimate at the median heuristic's ℓ (Gretton et al., JMLR 2012) for comparison.

    Attributes:
        length_scale: ℓ of the evaluation.
        median_kernel: The median off-diagonal kernel value of the pooled sample at that ℓ.
        median_length_scale: The median heuristic's ℓ for the same sample.
        value_at_median: The unbiased squared-MMD estimate at ``median_length_scale``.
    """

    length_scale: float
    median_kernel: float
    median_length_scale: float
    value_at_median: float


@dataclass(frozen=True)
class MetricResult:
    """One metric value, with its permutation-test p-value where the metric has one.

    Attributes:
        value: The metric's value; NaN when it cannot be computed.
        p_value: The permutation-test p-value, or None (no test, or a missing value).
        reason: Why the value is missing (None when it is not).
        kernel: For an unbiased MMD estimate whose kernel is degenerate at its ℓ, the check
            (:class:`KernelCheck`); None otherwise.
    """

    value: float
    p_value: float | None = None
    reason: str | None = None
    kernel: KernelCheck | None = None

    @classmethod
    def missing(cls, reason: str) -> MetricResult:
        """A value that cannot be computed: NaN, no p-value, and why."""
        return cls(math.nan, None, reason)

    @property
    def is_missing(self) -> bool:
        """Whether the value is missing (not a finite number)."""
        return not math.isfinite(self.value)


def count_non_finite(values: np.ndarray) -> int:
    """How many entries of ``values`` are NaN or infinite."""
    values = np.asarray(values, dtype=np.float64)
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def non_finite_reason(**arrays: np.ndarray) -> str | None:
    """Why arrays cannot enter a metric: the first one holding NaN or inf, else None.

    Keywords are the arrays' descriptions with spaces as underscores
    (``current_training_data=train_X`` gives "the current training data hold 3 non-finite
    values (NaN or inf)").
    """
    for name, values in arrays.items():
        bad = count_non_finite(values)
        if bad:
            what = name.replace("_", " ")
            noun = "value" if bad == 1 else "values"
            return f"the {what} hold {bad} non-finite {noun} (NaN or inf)"
    return None


@dataclass
class EvaluationContext:
    """Everything a metric may use to compare one system's current state with its initial one.

    Attributes:
        reference_X: The initial data (training and test rows at their round-0 positions),
            shape ``(N, d)``.
        reference_y: Their round-0 labels.
        train_X: The system's current training features (moved individuals included).
        train_y: The system's current training labels (moved individuals carry the label the model
            predicted for their counterfactual).
        test_X: The untouched test features.
        test_y: The test labels.
        proba_initial: Positive-class probabilities of the initial model, ``X -> (n,)``.
        proba_current: Positive-class probabilities of the current model, ``X -> (n,)``.
        params_initial: The initial model's parameter tensors (all ensemble members pooled).
        params_current: The current model's parameter tensors, in the same order.
        rng: The metrics stream of this system and evaluation (subsampling, permutations, grids).
        target: The favourable class.
        n_permutations: Permutations for p-values; 0 means no p-value (e.g. at round 0).
        p_value_form: ``"reference"`` (``#{null >= observed} / P``, the reference code's form,
            the default) or ``"corrected"`` (``(#{null >= observed} + 1) / (P + 1)``); the
            simulation passes ``simulation.p_value``.
        moved: Boolean mask over the rows of ``train_X``: the individuals that moved on advice
            since the previous evaluation round (their row is the counterfactual they
            implemented). ``None`` when unknown (round 0: there is no previous evaluation).
        scale: Per-feature z-score scale ``(d,)`` of the search space (1 for one-hot and binary
            columns); ``None`` means 1 for every feature.
    """

    reference_X: np.ndarray
    reference_y: np.ndarray
    train_X: np.ndarray
    train_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray
    proba_initial: Callable[[np.ndarray], np.ndarray]
    proba_current: Callable[[np.ndarray], np.ndarray]
    params_initial: list[np.ndarray]
    params_current: list[np.ndarray]
    rng: np.random.Generator
    target: int = 1
    n_permutations: int = 0
    p_value_form: str = "reference"
    moved: np.ndarray | None = None
    scale: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def reference_proba_initial(self) -> np.ndarray:
        """Initial model's probabilities on the reference data (shared by several metrics)."""
        return np.asarray(self.proba_initial(self.reference_X), dtype=np.float64)

    @cached_property
    def reference_proba_current(self) -> np.ndarray:
        """Current model's probabilities on the reference data."""
        return np.asarray(self.proba_current(self.reference_X), dtype=np.float64)


class Metric(Protocol):
    """A shift metric: ``name`` and ``scope`` label its rows in ``metrics.csv``."""

    name: str
    scope: str  # "domain", "model" or "plausibility"

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Compare the current with the initial state of one system."""
        ...

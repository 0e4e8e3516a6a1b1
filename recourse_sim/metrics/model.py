"""Model shift: how far the current classifier has moved from the initial one.

Paper §IV-B ("model shifts"); reference code ``src/evaluation/model_shifts.jl`` of
AlgorithmicRecourseDynamics.jl v0.1.2. Every metric compares the current model with the
*initial* (round-0) model, on the initial data (training and test rows at their round-0
positions). Where the paper's formula and the reference code differ (decisiveness,
perturbation), ``form="code"`` (the default, which produced the published figures) and
``form="paper"`` select one.
"""

from __future__ import annotations

import math

import numpy as np

from recourse_sim import checks
from recourse_sim.metrics._checks import check_form
from recourse_sim.metrics.base import EvaluationContext, MetricResult, non_finite_reason
from recourse_sim.metrics.domain import check_bandwidth, mmd_with_p_value
from recourse_sim.metrics.mmd import subsample


def _length_scale(name: str, value: object) -> float:
    return checks.real(f"metrics.{name}.length_scale", value, minimum=0, low_open=True)


def _mmd_result(
    p0: np.ndarray,
    pt: np.ndarray,
    context: EvaluationContext,
    length_scale: float,
    bandwidth: str = "fixed",
):
    """MMD² of two probability samples with its p-value, or missing if they are not finite."""
    reason = non_finite_reason(initial_model_probabilities=p0, current_model_probabilities=pt)
    if reason:
        return MetricResult.missing(reason)
    return mmd_with_p_value(p0, pt, context, length_scale, bandwidth)


def _probabilities_reason(context: EvaluationContext) -> str | None:
    """Why the models' probabilities on the initial data cannot be used (None if they can)."""
    return non_finite_reason(
        initial_model_probabilities=context.reference_proba_initial,
        current_model_probabilities=context.reference_proba_current,
    )


def predicted_labels(probabilities: np.ndarray, tie: int = 0) -> np.ndarray:
    """Hard labels at threshold 0.5.

    Args:
        probabilities: Positive-class probabilities.
        tie: The label of a probability of exactly 0.5.

    Returns:
        Integer labels, 1 above 0.5 and 0 below.
    """
    p = np.asarray(probabilities)
    return np.where(p == 0.5, tie, p > 0.5).astype(np.int64)


class ModelMMD:
    """PP-MMD on samples: squared MMD between the two models' predicted probabilities.

    The reference's ``mmd_model``: the probabilities of the initial and of the current model on
    the initial data, each subsampled independently to ``n_samples``, compared as 1-D samples
    with the Gaussian kernel; p-value by permutation (``context.n_permutations``).

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        n_samples: Cap on each side's size (see :func:`~recourse_sim.metrics.mmd.subsample`);
            ``None`` uses all points.
        length_scale: ℓ of the Gaussian kernel (with ``bandwidth="fixed"``).
        bandwidth: ``"fixed"`` (``length_scale``, the reference) or ``"median"`` (the median
            heuristic of the compared probabilities at each evaluation, Gretton et al., JMLR
            2012; see :func:`~recourse_sim.metrics.mmd.median_heuristic`).
    """

    scope = "model"

    def __init__(
        self,
        name: str = "mmd_model",
        n_samples: int | None = 1000,
        length_scale: float = 0.5,
        bandwidth: str = "fixed",
    ):
        self.name = name
        self.n_samples = checks.integer(
            f"metrics.{name}.n_samples", n_samples, minimum=2, optional=True, none_means="all rows"
        )
        self.length_scale = _length_scale(name, length_scale)
        self.bandwidth = check_bandwidth(name, bandwidth)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """MMD² of the two probability samples, with its p-value (missing if not finite)."""
        reason = _probabilities_reason(context)
        if reason:
            return MetricResult.missing(reason)
        p0, pt = subsample(
            context.reference_proba_initial,
            context.reference_proba_current,
            self.n_samples,
            context.rng,
        )
        return _mmd_result(p0, pt, context, self.length_scale, self.bandwidth)


class ModelMMDGrid:
    """PP-MMD over random lattice points spanning the data (the paper's "mesh grid").

    The reference's ``mmd_model(...; grid_search=true)``: ``n_points`` points whose coordinates
    are drawn independently and uniformly from ``linspace(min_j, max_j, grid_size)`` of each
    feature ``j`` over the initial data (random points of a ``grid_size^d`` lattice over its
    bounding box); the two models' probabilities there are compared as in :class:`ModelMMD`.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        n_points: Lattice points drawn per evaluation.
        grid_size: Lattice values per feature.
        length_scale: ℓ of the Gaussian kernel (with ``bandwidth="fixed"``).
        bandwidth: ``"fixed"`` or ``"median"``, as in :class:`ModelMMD`.
    """

    scope = "model"

    def __init__(
        self,
        name: str = "mmd_model_grid",
        n_points: int = 1000,
        grid_size: int = 100,
        length_scale: float = 0.5,
        bandwidth: str = "fixed",
    ):
        self.name = name
        self.n_points = checks.integer(f"metrics.{name}.n_points", n_points, minimum=2)
        self.grid_size = checks.integer(f"metrics.{name}.grid_size", grid_size, minimum=2)
        self.length_scale = _length_scale(name, length_scale)
        self.bandwidth = check_bandwidth(name, bandwidth)

    def grid(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n_points`` random points of the lattice over the bounding box of ``X``."""
        X = np.asarray(X, dtype=np.float64)
        lattice = np.linspace(X.min(0), X.max(0), self.grid_size)  # (grid_size, d)
        steps = rng.integers(0, self.grid_size, size=(self.n_points, X.shape[1]))
        return np.take_along_axis(lattice, steps, axis=0)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """MMD² of the two models' probabilities on fresh lattice points, with its p-value.

        Missing when the initial data (which the lattice spans) or the probabilities on the
        lattice hold NaN or inf.
        """
        reason = non_finite_reason(initial_data=context.reference_X)
        if reason:
            return MetricResult.missing(f"{reason}, so no grid spans them")
        points = self.grid(context.reference_X, context.rng)
        p0 = np.asarray(context.proba_initial(points), dtype=np.float64)
        pt = np.asarray(context.proba_current(points), dtype=np.float64)
        return _mmd_result(p0, pt, context, self.length_scale, self.bandwidth)


class Disagreement:
    """Share of initial-data points on which the two models' hard labels differ.

    The disagreement pseudo-distance ``Pr(h₀(x) ≠ hₜ(x))`` (Hanneke 2007; paper §IV-B), with
    labels at threshold 0.5. The reference code takes the labels as ``argmax([p, 1 − p])``, so a
    probability of exactly 0.5 gets the same label as one above 0.5; this is followed here (the
    F1 metric's ``argmax([1 − p, p])`` sends such a tie to class 0 instead).

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
    """

    scope = "model"

    def __init__(self, name: str = "disagreement"):
        self.name = name

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """``mean(h₀(x) ≠ hₜ(x))`` over the initial data (missing if a probability isn't finite)."""
        reason = _probabilities_reason(context)
        if reason:
            return MetricResult.missing(reason)
        if not len(context.reference_proba_initial):
            return MetricResult.missing("the initial data are empty")
        initial = predicted_labels(context.reference_proba_initial, tie=1)
        current = predicted_labels(context.reference_proba_current, tie=1)
        return MetricResult(float(np.mean(initial != current)))


class Decisiveness:
    """Change in how confidently the model classifies the initial data.

    ``form="code"`` (reference code ``decisiveness``): ``| ‖p₀ − 0.5‖₂ − ‖pₜ − 0.5‖₂ |`` with the
    norms over all N initial-data points, unsigned and not divided by N.

    ``form="paper"``: the paper defines the decisiveness of *one* model as
    ``(1/N) Σᵢ (p(xᵢ) − 0.5)²``; as a shift metric this reports the current model's value minus
    the initial model's, so a positive value means the model has become more decisive (the
    paper's finding) and 0 means no change.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        form: ``"code"`` or ``"paper"``.
    """

    scope = "model"

    def __init__(self, name: str = "decisiveness", form: str = "code"):
        self.name = name
        self.form = check_form(f"metrics.{name}.form", form)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Decisiveness change in the configured form (missing if a probability is not finite)."""
        reason = _probabilities_reason(context)
        if reason:
            return MetricResult.missing(reason)
        if not len(context.reference_proba_initial):
            return MetricResult.missing("the initial data are empty")
        d0 = context.reference_proba_initial - 0.5
        dt = context.reference_proba_current - 0.5
        if self.form == "code":
            return MetricResult(float(abs(np.linalg.norm(d0) - np.linalg.norm(dt))))
        return MetricResult(float(np.mean(dt**2) - np.mean(d0**2)))


class Perturbation:
    """Distance of the current model's parameters from the initial model's.

    ``form="code"`` (reference code ``perturbation``): the mean over parameter tensors ℓ (each
    weight matrix and bias vector; an ensemble's members pooled) of
    ``‖θₜ^ℓ − θ₀^ℓ‖₂ / numel(θ^ℓ)``.

    ``form="paper"``: the squared Euclidean distance ``‖θₜ − θ₀‖²`` of all parameters
    concatenated. The paper (after ROAR) compares the models before and after one retraining;
    like every metric here this compares with round 0, so the value is cumulative.

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
        form: ``"code"`` or ``"paper"``.
    """

    scope = "model"

    def __init__(self, name: str = "perturbation", form: str = "code"):
        self.name = name
        self.form = check_form(f"metrics.{name}.form", form)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Parameter change in the configured form.

        Missing for a model without parameters (a non-parametric model) and for parameters that
        hold NaN or inf; parameters that do not match raise ``ValueError``.
        """
        initial, current = context.params_initial, context.params_current
        if not initial and not current:
            return MetricResult.missing("the model has no parameters (a non-parametric model)")
        if not initial or len(initial) != len(current):
            raise ValueError(
                f"perturbation needs the same non-zero number of parameter tensors for both "
                f"models, got {len(initial)} and {len(current)}"
            )
        diffs = []
        for before, after in zip(initial, current, strict=True):
            before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
            if before.shape != after.shape:
                raise ValueError(f"parameter shapes differ: {before.shape} and {after.shape}")
            reason = non_finite_reason(
                initial_model_parameters=before, current_model_parameters=after
            )
            if reason:
                return MetricResult.missing(reason)
            diffs.append((after - before).ravel())
        if self.form == "code":
            value = float(
                np.mean([np.linalg.norm(d) / d.size if d.size else math.nan for d in diffs])
            )
        else:
            value = float(sum(d @ d for d in diffs))
        if not math.isfinite(value):
            return MetricResult.missing("the parameter distance is not finite")
        return MetricResult(value)

"""Model shift: how far the current classifier has moved from the initial one.

Definitions of the reference code (AlgorithmicRecourseDynamics.jl v0.1.2, reference-semantics §2),
with the paper's formulas (Altmeyer et al., SaTML 2023, §IV-B) as ``form="paper"``. All compare
the current model with the *initial* model on the initial data (training and test rows at their
round-0 positions).
"""

from __future__ import annotations

import numpy as np

from recourse_sim.errors import check_choice
from recourse_sim.metrics.base import EvaluationContext, MetricResult
from recourse_sim.metrics.mmd import (
    check_length_scale,
    check_samples,
    mmd_permutation_test,
    subsample,
)


def predicted_labels(probabilities: np.ndarray) -> np.ndarray:
    """Hard labels at threshold 0.5; a tie goes to class 0 (argmax of ``[1 − p, p]``)."""
    return (np.asarray(probabilities) > 0.5).astype(np.int64)


class ModelMMD:
    """PP-MMD on samples: squared MMD between the two models' probabilities on the data."""

    scope = "model"

    def __init__(self, name: str = "mmd_model", n_samples: int | None = 1000, length_scale=0.5):
        self.name = name
        self.n_samples = check_samples(f"metrics.{name}.n_samples", n_samples)
        self.length_scale = check_length_scale(f"metrics.{name}.length_scale", length_scale)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """MMD² of the 1-D probability samples, each subsampled independently."""
        p0, pt = subsample(
            context.reference_proba_initial,
            context.reference_proba_current,
            self.n_samples,
            context.rng,
        )
        value, p_value = mmd_permutation_test(
            p0, pt, context.n_permutations, context.rng, self.length_scale
        )
        return MetricResult(value, p_value)


class ModelMMDGrid:
    """PP-MMD over random lattice points spanning the data (the paper's "mesh grid").

    ``n_points`` points, each coordinate drawn uniformly from ``grid_size`` evenly spaced values
    between that feature's minimum and maximum over the initial data.
    """

    scope = "model"

    def __init__(
        self,
        name: str = "mmd_model_grid",
        n_points: int = 1000,
        grid_size: int = 100,
        length_scale: float = 0.5,
    ):
        self.name = name
        self.n_points = check_samples(f"metrics.{name}.n_points", n_points)
        self.grid_size = check_samples(f"metrics.{name}.grid_size", grid_size)
        self.length_scale = check_length_scale(f"metrics.{name}.length_scale", length_scale)

    def grid(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random points of the ``grid_size``^d lattice over the bounding box of ``X``."""
        low, high = X.min(0), X.max(0)
        steps = rng.integers(0, self.grid_size, size=(self.n_points, X.shape[1]))
        return low + steps / (self.grid_size - 1) * (high - low)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """MMD² of the two models' probabilities on the lattice points."""
        points = self.grid(context.reference_X, context.rng)
        value, p_value = mmd_permutation_test(
            context.proba_initial(points),
            context.proba_current(points),
            context.n_permutations,
            context.rng,
            self.length_scale,
        )
        return MetricResult(value, p_value)


class Disagreement:
    """Share of initial-data points on which the two models' hard labels differ (Hanneke 2007)."""

    scope = "model"

    def __init__(self, name: str = "disagreement"):
        self.name = name

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """``mean(label₀(x) ≠ labelₜ(x))`` over the initial data."""
        initial = predicted_labels(context.reference_proba_initial)
        current = predicted_labels(context.reference_proba_current)
        return MetricResult(float(np.mean(initial != current)))


class Decisiveness:
    """Change of the models' confidence on the initial data.

    ``form="code"`` (default, reference code): ``| ‖p₀ − 0.5‖₂ − ‖pₜ − 0.5‖₂ |`` over all N points,
    unsigned and not divided by N. ``form="paper"``: the paper defines a model's decisiveness as
    ``(1/N)·Σ (p(x) − 0.5)²``; reported as current minus initial, so a positive value means the
    classifier became more decisive.
    """

    scope = "model"

    def __init__(self, name: str = "decisiveness", form: str = "code"):
        self.name = name
        check_choice(f"metrics.{name}.form", form, ("code", "paper"))
        self.form = form

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Decisiveness in the configured form."""
        d0 = context.reference_proba_initial - 0.5
        dt = context.reference_proba_current - 0.5
        if self.form == "code":
            return MetricResult(float(abs(np.linalg.norm(d0) - np.linalg.norm(dt))))
        return MetricResult(float(np.mean(dt**2) - np.mean(d0**2)))


class Perturbation:
    """Parameter change of the current model relative to the initial one.

    ``form="code"`` (default): mean over parameter tensors ℓ of ``‖θₜ^ℓ − θ₀^ℓ‖₂ / numel(θ^ℓ)``
    (all ensemble members' tensors pooled). ``form="paper"``: the squared Euclidean distance
    ``‖θₜ − θ₀‖²`` of all parameters; cumulative against round 0 (the paper's ROAR-style
    definition compares consecutive models, which the simulation's "current versus initial" rule
    replaces).
    """

    scope = "model"

    def __init__(self, name: str = "perturbation", form: str = "code"):
        self.name = name
        check_choice(f"metrics.{name}.form", form, ("code", "paper"))
        self.form = form

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Perturbation in the configured form."""
        diffs = [
            np.asarray(t, np.float64) - np.asarray(i, np.float64)
            for i, t in zip(context.params_initial, context.params_current, strict=True)
        ]
        if self.form == "code":
            return MetricResult(float(np.mean([np.linalg.norm(d) / d.size for d in diffs])))
        return MetricResult(float(sum((d**2).sum() for d in diffs)))

"""Wachter et al. counterfactuals with the MAD-weighted L1 distance.

Wachter, Mittelstadt & Russell, "Counterfactual Explanations without Opening the Black Box",
Harvard Journal of Law & Technology 31(2), 2018: the distance is the L1 norm with each feature
scaled by its median absolute deviation (MAD), which makes it robust to outliers and favours sparse
changes. As in CounterfactualExplanations.jl's ``WachterGenerator`` the weight λ is fixed (the
paper's outer loop that raises λ until the prediction flips is not run), the loss is binary
cross-entropy and the distance is averaged over the ``K`` counterfactuals. MADs are computed on
each system's current population; a zero MAD (e.g. a one-hot column) is floored at
``mad_floor``, which makes changing that feature very expensive, as intended.
"""

from __future__ import annotations

import torch

from recourse_sim.errors import ConfigError
from recourse_sim.generators.gradient import GradientGenerator


class WachterGenerator(GradientGenerator):
    """BCE loss plus λ times the MAD-weighted L1 distance, averaged over counterfactuals."""

    def __init__(self, *args, mad_floor: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        if not float(mad_floor) > 0:
            raise ConfigError("generator.mad_floor", mad_floor, "a positive number")
        self.mad_floor = float(mad_floor)

    def setup(self, problem) -> torch.Tensor:
        """Inverse median absolute deviation of every feature in each system's population."""
        X = problem.population_X.to(torch.float64)
        median = X.median(dim=1, keepdim=True).values
        mad = (X - median).abs().median(dim=1).values  # (S, d)
        return 1.0 / mad.clamp_min(self.mad_floor)

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ·mean_k Σ_j |x'_kj − x_j| / MAD_j`` per individual (``state``: the 1/MAD weights)."""
        weights = state[:, None, None, :]
        distance = ((counterfactuals - factuals).abs() * weights).sum(-1).mean(-1)
        return self.cost_weight * distance

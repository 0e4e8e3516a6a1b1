"""Gravitational recourse: pull counterfactuals towards the target class.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, Eq. 7.

The collective cost is the distance of the counterfactuals to a point of the target class,
``‖x̄* − X'‖``: individuals move towards the bulk of the positive class instead of piling up at the
decision boundary. As in the reference code (CounterfactualExplanations.jl v0.1.5), ``x̄*`` is the
mean of ``n_neighbours`` rows drawn with replacement from the system's current positives, once per
individual; ``n_neighbours=None`` uses the mean of all current positives (the paper's wording).
With a ``population_mask`` only the positives present in the population count.
The search continues past validity (``decision_threshold=None``) so the pull can act.
"""

from __future__ import annotations

import torch

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator, frobenius
from recourse_sim.utils import counter_rng

_NEIGHBOUR_STREAM = 0x6A41


class GravitationalGenerator(GenericGenerator):
    """Generic objective plus λ₂ times the Frobenius distance to a target-class centroid."""

    def __init__(
        self, gravity_weight: float = 5.0, n_neighbours: int | None = 50, **search_options
    ):
        # The study searches past validity so that the pull can act.
        search_options.setdefault("decision_threshold", None)
        super().__init__(**search_options)
        self.gravity_weight = checks.real("generator.gravity_weight", gravity_weight, minimum=0)
        self.n_neighbours = checks.integer(
            "generator.n_neighbours",
            n_neighbours,
            minimum=1,
            optional=True,
            none_means="the mean of all current positives",
        )

    def setup(self, problem) -> torch.Tensor:
        """The centroid ``x̄*`` of each individual, ``(S, B, 1, d)``."""
        X = problem.population_X.to(torch.float64)
        positive = problem.population_y == problem.target
        if problem.population_mask is not None:  # agents not in the population do not pull
            positive = positive & problem.population_mask.to(positive.device, torch.bool)
        S, B = problem.individual_ids.shape
        centroids = torch.empty(S, B, 1, X.shape[-1], dtype=torch.float64, device=X.device)
        for s in range(S):
            rows = X[s][positive[s]]
            if len(rows) == 0:  # no positives at all: no pull
                centroids[s] = problem.factuals[s].to(torch.float64).unsqueeze(1)
                continue
            if self.n_neighbours is None:
                centroids[s] = rows.mean(0)
                continue
            u = counter_rng.uniform(
                _NEIGHBOUR_STREAM,
                problem.round_key,
                problem.system_keys[s],
                problem.individual_ids[s].view(B, 1),
                torch.arange(self.n_neighbours, device=X.device).view(1, -1),
            )
            draws = (u * len(rows)).long().clamp_max(len(rows) - 1)  # with replacement
            centroids[s, :, 0] = rows[draws].mean(1)
        return centroids

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F + λ₂·‖x̄* − X'‖_F`` per individual."""
        distance = super().penalty(counterfactuals, factuals, logits, state)
        pull = frobenius(counterfactuals - state)
        return distance + self.gravity_weight * pull

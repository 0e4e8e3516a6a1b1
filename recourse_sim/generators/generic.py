"""Generic gradient counterfactuals: the reference study's baseline ("Wachter" in its figures).

Objective per individual (CounterfactualExplanations.jl v0.1.5 ``GenericGenerator`` as run by
Altmeyer et al., SaTML 2023): ``mean_K BCE(M(x'_k), target) + λ·‖x − X'‖_F``, the Frobenius norm
of the differences of all ``K`` counterfactuals from the factual (model space), with λ=0.1 and
``Descent(0.01)``. The study's conservative mitigation is this generator with
``decision_threshold=0.9``.
"""

from __future__ import annotations

import torch

from recourse_sim.generators.gradient import GradientGenerator


class GenericGenerator(GradientGenerator):
    """BCE loss plus λ times the Frobenius distance of the ``K`` counterfactuals to the factual."""

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ·‖x − X'‖_F`` per individual."""
        diff = (counterfactuals - factuals).flatten(2)
        return self.cost_weight * diff.pow(2).sum(-1).sqrt()

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


def frobenius(diff: torch.Tensor) -> torch.Tensor:
    """``‖diff‖_F`` over all but the first two dimensions, with gradient 0 at zero.

    ``sqrt`` alone has an infinite slope at 0, which makes the gradient NaN (0·∞) for a search
    that starts at the factual (``init_noise=0``) and so never lets it move. Zygote's rule for
    ``norm`` returns 0 there (ChainRules multiplies by ``pinv(‖x‖)``); so does this, and it
    leaves every other value and gradient bit for bit as ``sqrt(Σ diff²)``.
    """
    squared = diff.flatten(2).pow(2).sum(-1)
    positive = squared > 0
    return torch.where(positive, squared, torch.ones_like(squared)).sqrt() * positive


class GenericGenerator(GradientGenerator):
    """BCE loss plus λ times the Frobenius distance of the ``K`` counterfactuals to the factual."""

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ·‖x − X'‖_F`` per individual."""
        return self.cost_weight * frobenius(counterfactuals - factuals)

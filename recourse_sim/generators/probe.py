"""PROBE: probabilistically robust recourse (Pawelczyk et al., AISTATS 2023).

If an individual implements its counterfactual only approximately, ``x' + ε`` with
``ε ~ N(0, σ²I)``, the recourse may be invalidated. PROBE bounds the invalidation rate with its
first-order closed form ``IR(x') = 1 − Φ(logit(x') / (σ·‖∇_x logit(x')‖₂))`` and penalises
``max(0, IR − r)``. The search stops once every counterfactual is valid *and* ``IR < r``.

Differs from the reference code (CounterfactualExplanations.jl): there the invalidation rate was
computed without derivatives, so the hinge term had no gradient; here it is differentiated twice
(through the input gradient), as the paper's method requires.
"""

from __future__ import annotations

import math

import torch

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator

_SQRT2 = math.sqrt(2.0)


class ProbeGenerator(GenericGenerator):
    """Generic objective plus a hinge on the closed-form invalidation rate."""

    def __init__(
        self,
        invalidation_weight: float = 1.0,
        invalidation_target: float = 0.1,
        noise_variance: float = 0.01,
        **search_options,
    ):
        super().__init__(**search_options)
        self.invalidation_weight = checks.real(
            "generator.invalidation_weight", invalidation_weight, minimum=0
        )
        self.invalidation_target = checks.probability(
            "generator.invalidation_target", invalidation_target
        )
        self.noise_variance = checks.real(
            "generator.noise_variance", noise_variance, minimum=0, low_open=True
        )

    def invalidation_rate(self, counterfactuals, logits, create_graph: bool) -> torch.Tensor:
        """Closed-form invalidation rate ``(S, B, K)`` under Gaussian noise on the features."""
        (grad,) = torch.autograd.grad(
            logits.sum(), counterfactuals, create_graph=create_graph, retain_graph=True
        )
        scale = math.sqrt(self.noise_variance) * grad.norm(dim=-1).clamp_min(1e-12)
        z = logits / scale
        return 1.0 - 0.5 * (1.0 + torch.erf(z / _SQRT2))

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F + λ₂·mean_K max(0, IR(x'_k) − r)`` per individual."""
        distance = super().penalty(counterfactuals, factuals, logits, state)
        rate = self.invalidation_rate(counterfactuals, logits, create_graph=True)
        hinge = (rate - self.invalidation_target).clamp_min(0.0).mean(-1)
        return distance + self.invalidation_weight * hinge

    def converged(self, counterfactuals, logits, state) -> torch.Tensor:
        """Every counterfactual's invalidation rate is below the target ``r``."""
        rate = self.invalidation_rate(counterfactuals, logits, create_graph=False)
        return (rate < self.invalidation_target).all(-1)

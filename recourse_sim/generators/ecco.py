"""ECCo: energy-constrained counterfactuals (Altmeyer et al., AAAI 2024).

The counterfactual should be a low-energy point of the target class under the classifier viewed as
an energy-based model, ``E(x' | y*) = −logit_{y*}(x')``: high-confidence, typical target-class
inputs rather than barely valid ones. As CounterfactualExplanations.jl's ``ECCoGenerator`` (the
ECCCo objective without the conformal set-size term), the penalty is
``λ₁·distance + λ₂·φ_t·(mean_K E + ρ·Σ_K E²)`` with the polynomial decay
``φ_t = a·(b + t)^(−0.9)``, ``b = round(T/25)``, ``a = b/10`` (Welling & Teh's schedule), where
``t`` counts search steps. The distance is the generic Frobenius norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator


@dataclass
class _Clock:
    step: int = 1  # t, the current search step (1-based, as CE.jl's iteration_count + 1)


class EccoGenerator(GenericGenerator):
    """Generic objective plus a decaying energy constraint at the counterfactuals."""

    def __init__(
        self, energy_weight: float = 1.0, energy_regularisation: float = 1e-3, **search_options
    ):
        super().__init__(**search_options)
        self.energy_weight = checks.real("generator.energy_weight", energy_weight, minimum=0)
        self.energy_regularisation = checks.real(
            "generator.energy_regularisation", energy_regularisation, minimum=0
        )

    def decay(self, step: int) -> float:
        """``φ_t = a·(b + t)^(−0.9)`` with ``b = round(T/25)`` (at least 1) and ``a = b/10``."""
        b = max(1, round(self.max_iter / 25))
        return (b / 10) * (b + step) ** -0.9

    def setup(self, problem) -> _Clock:
        """A fresh step counter for the decay."""
        return _Clock()

    def penalty(self, counterfactuals, factuals, logits, state: _Clock) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F + λ₂·φ_t·(mean_K E + ρ·Σ_K E²)`` with ``E = −logit_target``."""
        energy = -logits
        constraint = energy.mean(-1) + self.energy_regularisation * energy.pow(2).sum(-1)
        distance = super().penalty(counterfactuals, factuals, logits, state)
        return distance + self.energy_weight * self.decay(state.step) * constraint

    def step(self, grad, n_counterfactuals, state: _Clock) -> torch.Tensor:
        """Plain descent; advances the decay clock."""
        state.step += 1
        return super().step(grad, n_counterfactuals, state)

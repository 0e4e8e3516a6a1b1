"""DiCE: diverse counterfactual explanations (Mothilal, Sharma & Tan, FAT* 2020).

The ``K`` counterfactuals of an individual are searched jointly and rewarded for being different
from each other through the determinant of a DPP kernel, ``K_ij = 1 / (1 + ‖s'_i − s'_j‖)``, over
the search states (z-score space). The objective per individual, as in
CounterfactualExplanations.jl's ``DiCEGenerator`` used by the reference study (λ = [0.1, 1.0]):
``mean_K BCE + λ₁·‖x − X'‖_F − λ₂·det(K_dpp + εI)``. CE.jl adds a small *random* diagonal
jitter; here ``ε`` is a fixed small constant, so the search stays deterministic given its keys.
"""

from __future__ import annotations

import torch

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator


class DiceGenerator(GenericGenerator):
    """Generic objective minus λ₂ times the DPP diversity of the ``K`` counterfactuals."""

    def __init__(self, diversity_weight: float = 1.0, jitter: float = 1e-5, **search_options):
        super().__init__(**search_options)
        self.diversity_weight = checks.real(
            "generator.diversity_weight", diversity_weight, minimum=0
        )
        self.jitter = checks.real("generator.jitter", jitter, minimum=0)

    def setup(self, problem) -> torch.Tensor:
        """The z-score scale, to measure diversity between search states."""
        return problem.space.scale

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F − λ₂·det(K_dpp + εI)`` per individual."""
        distance = super().penalty(counterfactuals, factuals, logits, state)
        states = counterfactuals / state  # z-space up to a shift, which distances ignore
        gaps = (states.unsqueeze(-2) - states.unsqueeze(-3)).pow(2).sum(-1)
        # sqrt has no gradient at 0 (the diagonal): take it on a floor and zero the diagonal.
        eye = torch.eye(states.shape[-2], dtype=states.dtype, device=states.device)
        distances = gaps.clamp_min(1e-12).sqrt() * (1 - eye)
        kernel = 1.0 / (1.0 + distances) + self.jitter * eye
        return distance - self.diversity_weight * torch.linalg.det(kernel)

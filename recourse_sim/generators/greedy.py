"""Greedy (JSMA-style) counterfactuals (Schut et al., AISTATS 2021).

Each step changes only the single most salient feature of each counterfactual, the mutable
feature with the largest absolute gradient of the loss, by a fixed ``step_size`` in z-score space
against the gradient's sign; a feature may change at most ``max_changes`` times, after which the
budget grows (``n ← n + n/passes``) and the counters reset, as CounterfactualExplanations.jl's
``JSMADescent`` (ε = 0.1, n = 10; no distance penalty). Differences from the reference code, which
it calls quirks: features that may not move (immutable, or the wrong direction for increase- or
decrease-only) are excluded *before* the argmax, so the search never stalls on them; every one of
the ``K`` counterfactuals moves each step (CE.jl moved one at random); counters are per individual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recourse_sim import checks
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_BOTH,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
)
from recourse_sim.generators.gradient import GradientGenerator


@dataclass
class _Budget:
    mutability: torch.Tensor  # (d,)
    changes: torch.Tensor | None = None  # (S, B, K, d) times each feature moved
    limit: torch.Tensor | None = None  # (S, B, K, 1) current budget per feature
    passes: torch.Tensor | None = None  # (S, B, K, 1)


class GreedyGenerator(GradientGenerator):
    """One most-salient feature per step, bounded changes per feature."""

    def __init__(self, step_size: float = 0.1, max_changes: int = 10, **search_options):
        # No distance penalty, and the JSMA step replaces gradient descent's learning rate.
        super().__init__(cost_weight=0.0, **search_options)
        self.step_size = checks.real("generator.step_size", step_size, minimum=0, low_open=True)
        self.max_changes = checks.integer("generator.max_changes", max_changes, minimum=1)

    def setup(self, problem) -> _Budget:
        """Fresh change counters for this search.

        In a VAE's latent space (``latent_space=True``) every latent coordinate may move: the
        decoder enforces the features' mutability.
        """
        mutability = problem.space.mutability
        if self.latent_space:
            mutability = torch.full(
                (self.vae.latent_dim,),
                MUTABLE_BOTH,
                dtype=mutability.dtype,
                device=mutability.device,
            )
        return _Budget(mutability=mutability)

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """No distance penalty (the method's plausibility comes from the model's confidence)."""
        return counterfactuals.new_zeros(counterfactuals.shape[:2])

    def step(self, grad: torch.Tensor, n_counterfactuals: int, state: _Budget) -> torch.Tensor:
        """Move the most salient admissible feature of each counterfactual by ``step_size``."""
        if state.changes is None:
            state.changes = torch.zeros_like(grad, dtype=torch.int64)
            shape = (*grad.shape[:-1], 1)
            state.limit = torch.full(shape, float(self.max_changes), device=grad.device)
            state.passes = torch.zeros(shape, device=grad.device)
        mut = state.mutability
        # The step is -step_size * sign(grad): increase-only needs grad < 0, decrease-only > 0.
        admissible = (mut != IMMUTABLE) & (grad != 0)
        admissible &= (mut != MUTABLE_INCREASE) | (grad < 0)
        admissible &= (mut != MUTABLE_DECREASE) | (grad > 0)
        admissible &= state.changes < state.limit
        salience = torch.where(admissible, grad.abs(), torch.full_like(grad, -1.0))
        best = salience.argmax(dim=-1, keepdim=True)
        chosen = torch.zeros_like(admissible).scatter_(-1, best, True) & admissible
        state.changes += chosen.long()
        exhausted = ((state.changes >= state.limit) | (mut == IMMUTABLE)).all(-1, keepdim=True)
        if bool(exhausted.any()):
            state.passes += exhausted.float()
            state.limit = torch.where(
                exhausted, state.limit + state.limit / state.passes.clamp_min(1), state.limit
            )
            state.changes = torch.where(exhausted, torch.zeros_like(state.changes), state.changes)
        return -self.step_size * torch.sign(grad) * chosen

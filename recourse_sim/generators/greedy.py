"""Greedy (JSMA-style) counterfactuals (Schut et al., AISTATS 2021).

Each step changes only the single most salient feature of each counterfactual, the mutable
feature with the largest absolute gradient of the loss (the lowest index on ties), by a fixed
``step_size`` ε in z-score space against the gradient's sign, as CounterfactualExplanations.jl
v0.1.5's ``GreedyGenerator`` (``src/generators/gradient_based/GreedyGenerator.jl``: ε = 0.1,
n = 10, l. 52-54; no distance penalty; the most salient feature per counterfactual, l. 91-111).
Differences from the reference code: features that may not move (immutable, or the wrong
direction for increase- or decrease-only) are excluded *before* the argmax, so the search never
stalls on them; ties go to the lowest index (CE.jl draws at random, l. 100-106).

A feature may change at most ``n = max_changes`` times before it is frozen; ``budget`` says what
counts as a change and when the budget grows:

``"reference"`` (the default), as CE.jl v0.1.5. After every step ``update!``
(``src/counterfactuals/functions.jl`` l. 736-764) counts feature ``j`` as changed when the
*decoded step* is nonzero, ``decode_state(Δs′) .!= 0`` (l. 749-753). Decoding a z-score step adds
the transform's mean back (l. 306-310), so a continuous feature counts iff ``Δ_j·σ_j + μ_j ≠ 0``
(μ, σ: :attr:`FeatureSpace.center` and :attr:`FeatureSpace.scale`), whether or not it moved; a
one-hot group is decoded by ``reconstruct_cat_encoding`` (``src/data_preprocessing/functions.jl``
l. 142-170), which sets the group's argmax entry of ``Δ`` to 1, so exactly one entry per group
counts each step (CE.jl breaks ties at random, here the lowest index); a binary column counts iff
``round(clamp(Δ_j, 0, 1)) ≠ 0``. Counters are cumulative, never reset. ``mutability_constraints``
(``GreedyGenerator.jl`` l. 118-133) freezes every feature whose count has reached ``n``; once
*all* features of the individual (all ``d``, immutable ones included, of all ``K``
counterfactuals: the counter array is ``d × 1 × K``, l. 99-100 of ``functions.jl``) have a count
``≥ n``, ``passes += 1`` and ``n += n/passes`` (10, 20, 30, ...), and nothing is frozen until
counts reach the new ``n``. On purely continuous data with nonzero means every feature counts at
every step, all reach ``n`` together and nothing is ever frozen. (By reading, CE.jl's "restore
initial mutability", l. 127-128, copies an array onto itself, because ``initial_mutability``
aliases ``mutability``, ``functions.jl`` l. 166-167; a feature once frozen would stay frozen.
That only matters when some counts reach ``n`` before others, and it is not reproduced.) In a
VAE's latent space a decoded step is the decoder's output for ``Δz``, nonzero in every feature
(the decoder's output bias), so every feature counts at every step and nothing is frozen: a
latent-space search with this budget moves the most salient latent coordinate without a limit.

``"binding"``: the budget binds per counterfactual: a feature counts only when that
counterfactual's step moved it; when every feature of a counterfactual has moved ``n`` times
(immutable features count as exhausted) ``n`` grows as above and that counterfactual's counters
reset to zero. In latent space the counters are per latent coordinate.

Every one of the ``K`` counterfactuals moves each step (as in v0.1.5, which maps over the ``K``
columns; later versions moved one at random); counters are per individual.
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
    FeatureSpace,
)
from recourse_sim.generators.gradient import GradientGenerator

#: What counts as a change against the per-feature budget (see the module docstring).
BUDGETS = ("reference", "binding")


@dataclass
class _Budget:
    mutability: torch.Tensor  # (d,) or (latent,)
    space: FeatureSpace | None = None  # decodes steps for the reference counting; None: latent
    changes: torch.Tensor | None = None  # (S, B, K, d) times each feature counted as changed
    limit: torch.Tensor | None = None  # current budget n: (S, B, K, 1) binding, (S, B, 1, 1) ref.
    passes: torch.Tensor | None = None  # same shape as limit


class GreedyGenerator(GradientGenerator):
    """One most-salient feature per step, bounded changes per feature.

    Args:
        step_size: ε, the change of the chosen feature per step (z-score units).
        max_changes: n, the initial budget of changes per feature.
        budget: ``"reference"`` (CE.jl v0.1.5's counting of decoded steps) or ``"binding"``
            (only actual moves count, per counterfactual); see the module docstring.
        **search_options: The settings of :class:`GradientGenerator`.
    """

    def __init__(
        self,
        step_size: float = 0.1,
        max_changes: int = 10,
        budget: str = "reference",
        **search_options,
    ):
        # No distance penalty, and the JSMA step replaces gradient descent's learning rate.
        super().__init__(cost_weight=0.0, **search_options)
        self.step_size = checks.real("generator.step_size", step_size, minimum=0, low_open=True)
        self.max_changes = checks.integer("generator.max_changes", max_changes, minimum=1)
        checks.check_choice("generator.budget", budget, BUDGETS)
        self.budget = str(budget)

    def setup(self, problem) -> _Budget:
        """Fresh change counters for this search.

        In a VAE's latent space (``latent_space=True``) every latent coordinate may move: the
        decoder decides what the features do.
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
        return _Budget(mutability=mutability, space=problem.space)

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """No distance penalty (the method's plausibility comes from the model's confidence)."""
        return counterfactuals.new_zeros(counterfactuals.shape[:2])

    def step(self, grad: torch.Tensor, n_counterfactuals: int, state: _Budget) -> torch.Tensor:
        """Move the most salient admissible feature of each counterfactual by ``step_size``."""
        if self.budget == "binding":
            return self._binding_step(grad, state)
        return self._reference_step(grad, state)

    def _salient(self, grad: torch.Tensor, admissible: torch.Tensor, mut: torch.Tensor):
        """The chosen feature (one-hot ``(S, B, K, d)`` or all False) of each counterfactual."""
        # The step is -step_size * sign(grad): increase-only needs grad < 0, decrease-only > 0.
        admissible = admissible & (mut != IMMUTABLE) & (grad != 0)
        admissible &= (mut != MUTABLE_INCREASE) | (grad < 0)
        admissible &= (mut != MUTABLE_DECREASE) | (grad > 0)
        salience = torch.where(admissible, grad.abs(), torch.full_like(grad, -1.0))
        best = salience.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(admissible).scatter_(-1, best, True) & admissible

    def _binding_step(self, grad: torch.Tensor, state: _Budget) -> torch.Tensor:
        if state.changes is None:
            state.changes = torch.zeros_like(grad, dtype=torch.int64)
            shape = (*grad.shape[:-1], 1)
            state.limit = torch.full(shape, float(self.max_changes), device=grad.device)
            state.passes = torch.zeros(shape, device=grad.device)
        mut = state.mutability
        chosen = self._salient(grad, state.changes < state.limit, mut)
        state.changes += chosen.long()
        exhausted = ((state.changes >= state.limit) | (mut == IMMUTABLE)).all(-1, keepdim=True)
        if bool(exhausted.any()):
            state.passes += exhausted.float()
            state.limit = torch.where(
                exhausted, state.limit + state.limit / state.passes.clamp_min(1), state.limit
            )
            state.changes = torch.where(exhausted, torch.zeros_like(state.changes), state.changes)
        return -self.step_size * torch.sign(grad) * chosen

    def _reference_step(self, grad: torch.Tensor, state: _Budget) -> torch.Tensor:
        mut = state.mutability
        if state.space is None:  # latent space: every decoded feature counts, nothing freezes
            chosen = self._salient(grad, torch.ones_like(grad, dtype=torch.bool), mut)
            return -self.step_size * torch.sign(grad) * chosen
        if state.changes is None:
            state.changes = torch.zeros_like(grad, dtype=torch.int64)
            shape = (*grad.shape[:-2], 1, 1)  # one budget per individual, as CE.jl's generator
            state.limit = torch.full(
                shape, float(self.max_changes), dtype=torch.float64, device=grad.device
            )
            state.passes = torch.zeros(shape, dtype=torch.float64, device=grad.device)
        chosen = self._salient(grad, state.changes < state.limit, mut)
        step = -self.step_size * torch.sign(grad) * chosen
        state.changes += reference_changes(step, state.space).long()
        exhausted = (state.changes >= state.limit).flatten(-2).all(-1).view(state.limit.shape)
        if bool(exhausted.any()):
            state.passes += exhausted.to(state.passes.dtype)
            state.limit = torch.where(
                exhausted, state.limit + state.limit / state.passes.clamp_min(1), state.limit
            )
        return step


def reference_changes(step: torch.Tensor, space: FeatureSpace) -> torch.Tensor:
    """Which features CE.jl v0.1.5 counts as changed by a z-score ``step`` ``(..., d)``.

    ``decode_state(Δs′) .!= 0`` (``src/counterfactuals/functions.jl`` l. 749-753): continuous
    ``Δ_j·σ_j + μ_j ≠ 0``; in each one-hot group only the argmax entry of ``Δ`` (the lowest index
    on ties); a binary column iff ``round(clamp(Δ_j, 0, 1)) ≠ 0``.
    """
    decoded = step * space.scale + space.center
    changed = decoded != 0
    for group in space.categorical_groups:
        cols = list(group)
        winner = decoded[..., cols].argmax(dim=-1, keepdim=True)
        changed[..., cols] = torch.zeros_like(changed[..., cols]).scatter_(-1, winner, True)
    for col in space.binary_features:
        changed[..., col] = decoded[..., col].clamp(0.0, 1.0).round() != 0
    return changed

"""Growing Spheres: the nearest enemy found by sampling (Laugel et al., IJCAI-ECAI 2018).

A model-agnostic search that needs no gradients. Points are drawn uniformly from spherical
layers ``{z : a₀ ≤ ‖z − x‖₂ < a₁}`` around the factual (in z-score space, over the features it may
change): first the radius ``η`` of the ball ``[0, η)`` is halved while the ball still holds
"enemies" (points the model puts in the target class), then layers ``[η, 2η), [2η, 3η), ...``
grow outwards until one holds an enemy. The closest enemies of that layer are the candidates;
finally *feature selection* resets, one at a time, the coordinate that changed least back to the
factual's value, as long as the point stays an enemy, which makes the explanation sparse.

Differs from the reference code (CounterfactualExplanations.jl ≤ v1.4.0): that took the *first*
enemy found rather than the closest, normalised the sampled directions by the norm of the whole
sample matrix (so points missed the stated radii) and returned the first point that was no longer
valid after feature selection; here the paper's algorithm is implemented. The ``K``
counterfactuals are the ``K`` nearest enemies of the winning layer. Immutable features are never
sampled; increase- or decrease-only features are sampled in their allowed direction only.
"""

from __future__ import annotations

import torch

from recourse_sim import checks
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
    Generator,
    SearchProblem,
    SearchResult,
)
from recourse_sim.utils import counter_rng

_SAMPLE_STREAM = 0x6500
_SHRINK, _GROW, _DONE = 0, 1, 2


class GrowingSpheresGenerator(Generator):
    """Sample growing spherical layers until an enemy appears; take the nearest; sparsify."""

    needs_gradients = False  # it only queries probabilities

    def __init__(
        self,
        n_samples: int = 100,
        step: float = 0.1,
        max_iter: int = 1000,
        decision_threshold: float = 0.5,
    ):
        self.n_samples = checks.integer("generator.n_samples", n_samples, minimum=1)
        self.step = checks.real("generator.step", step, minimum=0, low_open=True)
        self.max_iter = checks.integer("generator.max_iter", max_iter, minimum=1)
        self.decision_threshold = checks.probability(
            "generator.decision_threshold", decision_threshold
        )

    def search(self, problem: SearchProblem) -> SearchResult:
        """Run the layered sampling for every individual of every system at once."""
        space = problem.space
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K, n = int(problem.n_counterfactuals), self.n_samples
        mutable = space.mutability != IMMUTABLE
        n_free = max(int(mutable.sum()), 1)

        def enemy_proba(points: torch.Tensor) -> torch.Tensor:
            """Target-class probability of model-space points ``(S, B, m, d)``."""
            m = points.shape[2]
            with torch.no_grad():
                logits = problem.model.logits(points.reshape(S, B * m, d)).reshape(S, B, m)
            return torch.sigmoid(logits if problem.target == 1 else -logits).double()

        def to_model_space(offsets: torch.Tensor) -> torch.Tensor:
            points = factuals.unsqueeze(2) + offsets * space.scale
            return space.clamp(space.project(points))

        already = enemy_proba(factuals.unsqueeze(2))[..., 0] >= self.decision_threshold
        phase = torch.where(already, _DONE, _SHRINK)
        device = factuals.device
        eta = torch.full((S, B), self.step, dtype=torch.float64, device=device)
        low = torch.zeros(S, B, dtype=torch.float64, device=device)
        high = eta.clone()
        # z-score offsets of the enemies
        found = torch.zeros(S, B, K, d, dtype=torch.float64, device=device)
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=device)
        keys = (problem.round_key, problem.system_keys.view(S, 1, 1, 1))
        ids = problem.individual_ids.view(S, B, 1, 1)

        for iteration in range(self.max_iter):
            searching = phase != _DONE
            if not bool(searching.any()):
                break
            offsets = self._sample_layer(keys, ids, iteration, low, high, n, d, n_free, space)
            proba = enemy_proba(to_model_space(offsets))
            enemy = proba >= self.decision_threshold
            any_enemy = enemy.any(-1)
            n_iterations += searching.long()
            shrinking = phase == _SHRINK
            # Shrink: halve the ball while it holds enemies; else start growing outside it.
            halve = shrinking & any_enemy & (eta > 1e-12)
            start_growing = shrinking & ~halve
            eta = torch.where(halve, eta / 2, eta)
            low = torch.where(start_growing, eta, torch.where(halve, 0.0, low))
            high = torch.where(start_growing, 2 * eta, torch.where(halve, eta, high))
            phase = torch.where(start_growing, _GROW, phase)
            # Grow: the first layer with an enemy ends the search with its nearest enemies.
            hit = (phase == _GROW) & any_enemy & ~start_growing
            if bool(hit.any()):
                distance = torch.where(enemy, offsets.norm(dim=-1), torch.inf)
                nearest = distance.argsort(dim=-1)[..., :K]
                # Fewer than K enemies: repeat the nearest one.
                n_enemies = enemy.sum(-1, keepdim=True)
                slot = torch.arange(K, device=device).view(1, 1, K)
                nearest = torch.where(slot < n_enemies, nearest, nearest[..., :1])
                chosen = torch.gather(offsets, 2, nearest.unsqueeze(-1).expand(-1, -1, -1, d))
                found = torch.where(hit.view(S, B, 1, 1), chosen, found)
                phase = torch.where(hit, _DONE, phase)
            grow_on = (phase == _GROW) & ~hit & ~start_growing
            low = torch.where(grow_on, high, low)
            high = torch.where(grow_on, high + eta, high)

        converged = phase == _DONE
        found = self._select_features(found, converged & ~already, to_model_space, enemy_proba)
        counterfactuals = to_model_space(found)
        counterfactuals = torch.where(
            (already | ~converged).view(S, B, 1, 1), factuals.unsqueeze(2), counterfactuals
        )
        probabilities = enemy_proba(counterfactuals)
        return SearchResult(counterfactuals, probabilities, converged, n_iterations)

    @staticmethod
    def _sample_layer(keys, ids, iteration, low, high, n, d, n_free, space) -> torch.Tensor:
        """``n`` points per individual, uniform in the layer ``[low, high)`` over mutable axes."""
        S, B = low.shape
        device = low.device
        draw = (*keys, ids, iteration, torch.arange(n, device=device).view(1, 1, n, 1))
        columns = torch.arange(d, device=device).view(1, 1, 1, d)
        direction = counter_rng.normal(_SAMPLE_STREAM, *draw, columns)
        mut = space.mutability
        direction = torch.where(mut == IMMUTABLE, 0.0, direction)
        direction = torch.where(mut == MUTABLE_INCREASE, direction.abs(), direction)
        direction = torch.where(mut == MUTABLE_DECREASE, -direction.abs(), direction)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # Uniform in volume between the radii: r^p is uniform for p free dimensions.
        u = counter_rng.uniform(_SAMPLE_STREAM + 1, *draw).squeeze(-1)
        lo, hi = low.view(S, B, 1) ** n_free, high.view(S, B, 1) ** n_free
        radius = (lo + u * (hi - lo)) ** (1.0 / n_free)
        return direction * radius.unsqueeze(-1)

    def _select_features(self, offsets, searched, to_model_space, enemy_proba) -> torch.Tensor:
        """Reset the least-changed coordinates to the factual while the point stays an enemy."""
        S, B, K, d = offsets.shape
        offsets = offsets.clone()
        active = searched.view(S, B, 1).expand(S, B, K).clone()
        order = torch.where(offsets == 0, torch.inf, offsets.abs()).argsort(dim=-1)
        for position in range(d):
            column = order[..., position : position + 1]
            current = torch.gather(offsets, -1, column)
            active &= (current != 0).squeeze(-1)
            if not bool(active.any()):
                break
            trial = offsets.scatter(-1, column, torch.zeros_like(current))
            still = enemy_proba(to_model_space(trial)) >= self.decision_threshold
            accept = active & still
            offsets = torch.where(accept.unsqueeze(-1), trial, offsets)
            active &= still  # the first reset that breaks validity ends the selection
        return offsets

"""Effort that grows near the threshold (Fonseca et al., EAAMO 2023, the paper's "adaptive" agents).

As the paper's code (recgame 0.1a1) runs it: an agent draws a score gain ``|N(0, σ)|`` with
``σ = adaptation / (10 · exp(5 · (threshold − score)))`` from its score and the threshold of the
last decision, so agents close to the threshold try harder; its target score is
``min(score + gain, 0.999)``; it moves along the line to its counterfactual until the model's
score equals the target exactly (it may overshoot the counterfactual), then is clipped to the
feature bounds. The line search is a vectorised bisection, exact to float precision for any
model whose score rises along the line (a logistic model's does).
"""

from __future__ import annotations

import torch

from recourse_sim.dynamics.behaviours.base import ActionContext, Behaviour

_GAIN = 0xF1E8
_BISECTION_STEPS = 60
_MAX_DOUBLINGS = 30


class ContinuousFlexible(Behaviour):
    """Score gains that grow as the agent nears the threshold (the paper's version)."""

    name = "continuous_flexible"

    def propose(self, context: ActionContext) -> torch.Tensor:
        """Due agents moved to the point where the model gives their target score."""
        sigma = context.adaptation / (10.0 * torch.exp(5.0 * (context.threshold - context.score)))
        gain = (context.normal(_GAIN) * sigma).abs()
        target_score = (context.score + gain).clamp(max=0.999)
        direction = context.target - context.X
        moving = context.due & (direction.abs().sum(-1) > 0) & (target_score > context.score)
        if not bool(moving.any()):
            return context.X.clone()

        def score_at(step: torch.Tensor) -> torch.Tensor:
            return context.proba(context.X + step.unsqueeze(-1) * direction)

        # Bracket the step: double it until the score reaches the target (or give up there).
        high = torch.ones_like(context.score)
        for _ in range(_MAX_DOUBLINGS):
            short = moving & (score_at(high) < target_score)
            if not bool(short.any()):
                break
            high = torch.where(short, high * 2.0, high)
        low = torch.zeros_like(high)
        for _ in range(_BISECTION_STEPS):
            middle = 0.5 * (low + high)
            below = score_at(middle) < target_score
            low = torch.where(below, middle, low)
            high = torch.where(below, high, middle)
        step = torch.where(moving, high, 0.0)
        moved = context.X + step.unsqueeze(-1) * direction
        moved = torch.maximum(torch.minimum(moved, context.upper), context.lower)
        return torch.where(moving.unsqueeze(-1), moved, context.X)

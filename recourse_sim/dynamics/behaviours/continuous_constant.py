"""Steady steps of a personal size (Fonseca et al., EAAMO 2023, recgame ``continuous_constant``).

Each agent draws its effort once, when it enters: ``U(0, 1) · adaptation / 20`` (recgame's
rule); every round with due advice it moves that many z-score units toward its counterfactual,
never past it.
"""

from __future__ import annotations

import torch

from recourse_sim.dynamics.behaviours.base import ActionContext, Behaviour, toward


class ContinuousConstant(Behaviour):
    """Steps of each agent's own constant length toward its counterfactual."""

    name = "continuous_constant"

    def propose(self, context: ActionContext) -> torch.Tensor:
        """Due agents one step closer to their counterfactuals."""
        moved = toward(context.X, context.target, context.effort, context.scale)
        return torch.where(context.due.unsqueeze(-1), moved, context.X)

"""The reference behaviour: advice is implemented at once and entirely (Altmeyer et al. 2023)."""

from __future__ import annotations

import torch

from recourse_sim.dynamics.behaviours.base import ActionContext, Behaviour


class Full(Behaviour):
    """Move to the counterfactual in the round the advice is due."""

    name = "full"

    def propose(self, context: ActionContext) -> torch.Tensor:
        """Due agents at their counterfactuals, the others where they are."""
        return torch.where(context.due.unsqueeze(-1), context.target, context.X)

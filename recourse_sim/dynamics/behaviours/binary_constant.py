"""Act all at once, or not at all (Fonseca et al., EAAMO 2023, recgame ``binary_constant``).

Each round an agent with due advice acts with probability ``adaptation`` and then moves all the
way to its counterfactual; otherwise it waits and tries again next round.
"""

from __future__ import annotations

import torch

from recourse_sim.dynamics.behaviours.base import ActionContext, Behaviour

_ACT = 0xB1C0


class BinaryConstant(Behaviour):
    """Act with probability ``adaptation`` each round, then all the way."""

    name = "binary_constant"

    def propose(self, context: ActionContext) -> torch.Tensor:
        """Due agents that act this round at their counterfactuals."""
        acts = context.due & (context.uniform(_ACT) < context.adaptation)
        return torch.where(acts.unsqueeze(-1), context.target, context.X)

"""The behaviour interface and its registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Behaviour classes by ``dynamics.behaviour`` name, filled as the modules are imported.
BEHAVIOURS: dict[str, type[Behaviour]] = {}


@dataclass
class ActionContext:
    """One stack's agents at the implementation phase of a round (``S`` systems, ``C`` agents).

    Attributes:
        X: Current features ``(S, C, d)``, model space.
        target: Each agent's advised counterfactual ``(S, C, d)``.
        due: Agents whose advice takes effect this round ``(S, C)``; the others must be left
            unchanged.
        score: Each agent's probability of the favourable class at the last decision ``(S, C)``.
        threshold: Each system's threshold at the last decision ``(S, 1)``.
        effort: Each agent's constant effort, drawn once when it entered ``(S, C)``.
        adaptation: ``dynamics.adaptation``.
        scale: Per-feature standard deviation ``(d,)``: distances are measured in z-scores.
        lower, upper: Per-feature bounds ``(d,)``, model space.
        proba: The systems' probabilities at points ``(S, C, d) -> (S, C)``.
        uniform, normal: Keyed draws ``(stream) -> (S, C)``, the same for an agent in every
            system of its repetition (the paired design).
    """

    X: torch.Tensor
    target: torch.Tensor
    due: torch.Tensor
    score: torch.Tensor
    threshold: torch.Tensor
    effort: torch.Tensor
    adaptation: float
    scale: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    proba: Callable[[torch.Tensor], torch.Tensor]
    uniform: Callable[[int], torch.Tensor]
    normal: Callable[[int], torch.Tensor]


class Behaviour:
    """Proposes where agents with due advice move this round."""

    name: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            BEHAVIOURS[cls.name] = cls

    def propose(self, context: ActionContext) -> torch.Tensor:
        """The proposed features ``(S, C, d)``; rows not due must equal ``context.X``."""
        raise NotImplementedError


def toward(X: torch.Tensor, target: torch.Tensor, length: torch.Tensor, scale: torch.Tensor):
    """``X`` moved toward ``target`` by ``length`` z-score units, never past it."""
    offset = target - X
    distance = (offset / scale).pow(2).sum(-1).sqrt()
    fraction = torch.where(distance > 0, length / distance.clamp_min(1e-300), 0.0).clamp(0, 1)
    return X + fraction.unsqueeze(-1) * offset

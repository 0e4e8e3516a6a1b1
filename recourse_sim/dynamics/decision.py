"""Decision policies: who receives the favourable outcome (Fonseca et al., EAAMO 2023).

``threshold``: a probability cut-off (the reference's 0.5; a score exactly on it is rejected, as
Julia's round-half-to-even rejects 0.5). ``top_k``: competition for ``k`` favourable outcomes, the
``k`` highest scores win; the threshold is the lowest winning score. ``quantile``: the same with
``k = round(share · active agents)``. With fewer agents than slots, everyone is favourable
(recgame stops with an error there). Ties at the cut go to the lower agent index.
"""

from __future__ import annotations

import math

import torch

from recourse_sim.dynamics.config import Decision


def decide(
    scores: torch.Tensor, active: torch.Tensor, decision: Decision
) -> tuple[torch.Tensor, torch.Tensor]:
    """Favourable agents ``(S, C)`` and each system's threshold ``(S,)`` (NaN: undefined).

    ``scores`` are probabilities of the favourable class, ``active`` marks the agents present.
    """
    S = scores.shape[0]
    n_active = active.sum(dim=1)
    if decision.policy == "threshold":
        favourable = active & (scores > decision.threshold)
        threshold = torch.full(
            (S,), float(decision.threshold), dtype=torch.float64, device=scores.device
        )
        return favourable, threshold
    if decision.policy == "top_k":
        slots = torch.full_like(n_active, decision.k)
    else:  # quantile; Python's round: half to even
        slots = torch.tensor(
            [round(decision.share * int(n)) for n in n_active.tolist()], device=scores.device
        )
    slots = torch.minimum(slots, n_active)
    ranked = torch.where(active, scores.to(torch.float64), -math.inf)
    # A stable descending sort keeps lower indices first among equal scores.
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    favourable = active & (rank < slots.unsqueeze(1))
    last = (slots - 1).clamp_min(0)
    threshold = torch.gather(ranked, 1, torch.gather(order, 1, last.unsqueeze(1))).squeeze(1)
    threshold = torch.where(slots > 0, threshold, math.nan)
    return favourable, threshold

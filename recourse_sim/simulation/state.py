"""The state of one classifier stack's systems: agents as rows of tensors, with masks.

A stack holds ``S`` systems (one per generator and repetition) and ``C`` agent rows: the initial
agents first, then each repetition's arrivals in order of entry (a repetition with fewer arrivals
pads its rows; they never enter). One Python object per agent would be orders of magnitude
slower; every phase works on whole ``(S, C)`` masks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: ``entered`` of a padding row: later than any round.
NEVER = 2**40


@dataclass
class StackState:
    """Features, labels and per-agent records of the systems of one classifier stack.

    Attributes (``S`` systems, ``C`` agent rows, ``d`` features):
        X: Current features ``(S, C, d)``, model space.
        y: Current labels ``(S, C)``.
        group: Group code of each agent ``(S, C)`` (-1: the data have no groups).
        entered: Round in which each agent enters ``(S, C)`` (0: initial, :data:`NEVER`: padding).
        active: Agents currently in the population ``(S, C)``.
        left: Round in which an agent left (-1: it did not).
        favourable: The last decision's favourable agents ``(S, C)``.
        threshold: The last decision's threshold per system ``(S,)``.
        score: Each agent's probability of the favourable class at the last decision.
        initial_score: The score at the agent's first decision (NaN before it).
        ever_rejected: Whether any decision has rejected the agent.
        favourable_round: The round of the agent's first favourable decision (-1: none yet).
        effort_to_favourable: Distance moved until then (z-scores; NaN while not favourable).
        target: The agent's advised counterfactual ``(S, C, d)``.
        target_proba: The advising model's probability at ``target``.
        advice_round: When the current advice was given (-1: none).
        due: Round from which the advice takes effect.
        pending: Whether the agent has advice it has not finished.
        n_advice: Advice received (the reference's recourse count).
        first_advice, last_advice: Rounds of the first and last advice (-1: none).
        n_adaptations: Rounds in which the agent moved on advice.
        acted_round: The last round in which it moved.
        n_failures: Times it crossed the threshold after acting and was still rejected.
        effort: Distance moved on advice so far (z-scores).
        constant_effort: The agent's personal step size (``continuous_constant``).
        changed_round: The last round its row changed (entry or move): the ``recent`` window.
        retrained_round: Each system's last retraining ``(S,)``.
        changed_since_retraining: Whether the system's rows changed since then ``(S,)``.
        labels_since_retraining: New labels (moves and arrivals) since then ``(S,)``.
    """

    X: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor
    entered: torch.Tensor
    active: torch.Tensor
    left: torch.Tensor
    favourable: torch.Tensor
    threshold: torch.Tensor
    score: torch.Tensor
    initial_score: torch.Tensor
    ever_rejected: torch.Tensor
    favourable_round: torch.Tensor
    effort_to_favourable: torch.Tensor
    target: torch.Tensor
    target_proba: torch.Tensor
    advice_round: torch.Tensor
    due: torch.Tensor
    pending: torch.Tensor
    n_advice: torch.Tensor
    first_advice: torch.Tensor
    last_advice: torch.Tensor
    n_adaptations: torch.Tensor
    acted_round: torch.Tensor
    n_failures: torch.Tensor
    effort: torch.Tensor
    constant_effort: torch.Tensor
    changed_round: torch.Tensor
    retrained_round: torch.Tensor
    changed_since_retraining: torch.Tensor
    labels_since_retraining: torch.Tensor

    @classmethod
    def start(
        cls,
        X: torch.Tensor,
        y: torch.Tensor,
        group: torch.Tensor,
        entered: torch.Tensor,
        constant_effort: torch.Tensor,
    ) -> StackState:
        """Round-0 state: agents with ``entered == 0`` active, nothing decided or advised yet."""
        S, C = y.shape
        device = X.device

        def full(value, dtype=torch.int64, shape=(S, C)):
            return torch.full(shape, value, dtype=dtype, device=device)

        nan = float("nan")
        return cls(
            X=X,
            y=y,
            group=group,
            entered=entered,
            active=entered == 0,
            left=full(-1),
            favourable=full(False, torch.bool),
            threshold=full(nan, torch.float64, (S,)),
            score=full(nan, torch.float64),
            initial_score=full(nan, torch.float64),
            ever_rejected=full(False, torch.bool),
            favourable_round=full(-1),
            effort_to_favourable=full(nan, torch.float64),
            target=X.clone(),
            target_proba=full(nan, torch.float64),
            advice_round=full(-1),
            due=full(-1),
            pending=full(False, torch.bool),
            n_advice=full(0),
            first_advice=full(-1),
            last_advice=full(-1),
            n_adaptations=full(0),
            acted_round=full(-1),
            n_failures=full(0),
            effort=full(0.0, torch.float64),
            constant_effort=constant_effort,
            changed_round=torch.where(entered == 0, 0, -1),
            retrained_round=full(0, shape=(S,)),
            changed_since_retraining=full(False, torch.bool, (S,)),
            labels_since_retraining=full(0, shape=(S,)),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors by name (checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, torch.Tensor]) -> StackState:
        """Rebuild from :meth:`as_dict` (a checkpoint)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def rows_of(self, system: int, round_number: int) -> torch.Tensor | None:
        """Row indices of one system's agents that have entered by ``round_number``.

        ``None`` when that is every row (no copy needed).
        """
        entered = self.entered[system] <= round_number
        if bool(entered.all()):
            return None
        return torch.nonzero(entered).flatten()

"""ClaPROAR: classifier-preserving recourse (Altmeyer et al., IEEE SaTML 2023, Eq. 6).

The collective cost is the classifier's own loss at the counterfactual, ``l(M(x'), y*)``: moving
individuals deep into the target class, rather than onto the decision boundary, leaves less for
retraining to correct and so shifts the model less. As the study notes, the search continues past
validity (``decision_threshold=None``) so that the extra cost can act.

Objective per individual: ``mean_K BCE(M(x'_k), target) + λ₁·‖x − X'‖_F + λ₂·extcost``, with
λ = [0.1, 5.0] and the Frobenius norm (CounterfactualExplanations.jl v0.1.5,
``src/generators/gradient_based/ClapROARGenerator.jl`` l. 36-45 and 80-107: ``complexity = norm``
of ``x − decode_state``). ``gate_on_validity`` decides ``extcost``:

``true`` (the default), the reference code's ``h`` (l. 92-99, ``gradient_penalty`` l. 48-70): the
classifier-loss term is added only while *all* ``K`` counterfactuals of the individual are
predicted in the target class, ``counterfactual_label = round(p)`` at the model's probability
(for a deep ensemble the mean member probability; ``round`` sends 0.5 to 0 in Julia and in torch
alike). The gate is a condition on the current state, evaluated at every step, not
differentiated. The term is the loss at the counterfactuals' predicted label, which equals the
target whenever the gate is open, and for a deep ensemble it is the *mean of the member losses*,
each member's BCE on its own logits (l. 55-67), each averaged over the ``K`` counterfactuals
(Flux's ``logitbinarycrossentropy`` takes the mean). Members see the step's dropout masks, as the
search's own loss does.

``false``: the paper's Eq. 6 without the gate, with a gradient from the first step:
``extcost = mean_K BCE(M(x'_k), target)`` on the model's logit (for a deep ensemble, the mean
member logit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator


@dataclass
class _Gate:
    """What the gated classifier loss needs: the model, the shape, the step's dropout masks."""

    model: object
    target: int
    shape: tuple[int, int, int]  # (S, B, K)
    masks: list[torch.Tensor] | None = None


class ClaproarGenerator(GenericGenerator):
    """Generic objective plus λ₂ times the classifier's loss at the counterfactuals.

    Args:
        classifier_loss_weight: λ₂.
        gate_on_validity: Add the classifier loss only once all ``K`` counterfactuals are
            predicted in the target class, as the reference code (see the module docstring).
        **search_options: The settings of :class:`GradientGenerator`.
    """

    def __init__(
        self,
        classifier_loss_weight: float = 5.0,
        gate_on_validity: bool = True,
        **search_options,
    ):
        # The study searches past validity so that the extra cost can act.
        search_options.setdefault("decision_threshold", None)
        super().__init__(**search_options)
        self.classifier_loss_weight = checks.real(
            "generator.classifier_loss_weight", classifier_loss_weight, minimum=0
        )
        self.gate_on_validity = checks.flag("generator.gate_on_validity", gate_on_validity)

    def setup(self, problem) -> _Gate | None:
        """The gate's view of the model (only with ``gate_on_validity``)."""
        if not self.gate_on_validity:
            return None
        S, B = problem.individual_ids.shape
        return _Gate(problem.model, int(problem.target), (S, B, int(problem.n_counterfactuals)))

    def begin_step(self, state: _Gate | None, masks) -> None:
        """Keep the step's dropout masks for the members' logits."""
        if state is not None:
            state.masks = masks

    def penalty(self, counterfactuals, factuals, logits, state: _Gate | None) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F + λ₂·extcost`` per individual (see the module docstring)."""
        distance = super().penalty(counterfactuals, factuals, logits, state)
        if state is None:
            loss = F.binary_cross_entropy_with_logits(
                logits, torch.ones_like(logits), reduction="none"
            )
            return distance + self.classifier_loss_weight * loss.mean(-1)
        return distance + self.classifier_loss_weight * self.gated_loss(counterfactuals, state)

    def gated_loss(self, counterfactuals: torch.Tensor, state: _Gate) -> torch.Tensor:
        """Mean member loss where all ``K`` are in the target class, else 0: ``(S, B)``."""
        S, B, K = state.shape
        d = counterfactuals.shape[-1]
        members = state.model.member_logits(counterfactuals.reshape(S, B * K, d), state.masks)
        members = members.reshape(S, -1, B, K)  # positive-class logits (S, M, B, K)
        with torch.no_grad():
            label = torch.sigmoid(members).mean(1).round()  # (S, B, K), ties (0.5) to 0
            gate = (label == state.target).all(-1)
        sign = 1.0 if state.target == 1 else -1.0
        target_logits = sign * members  # at an open gate the predicted label is the target
        loss = F.binary_cross_entropy_with_logits(
            target_logits, torch.ones_like(target_logits), reduction="none"
        )
        loss = loss.mean(-1).mean(1)  # mean over K per member, then over members: (S, B)
        return torch.where(gate, loss, torch.zeros_like(loss))

"""ClaPROAR: classifier-preserving recourse (Altmeyer et al., IEEE SaTML 2023, Eq. 6).

The collective cost is the classifier's own loss at the counterfactual, ``l(M(x'), y*)``: moving
individuals deep into the target class, rather than onto the decision boundary, leaves less for
retraining to correct and so shifts the model less. As the study notes, the search continues past
validity (``decision_threshold=None``) so that the extra cost can act.

Differs from the reference code (CounterfactualExplanations.jl v0.1.4/v0.1.5): there the extra
term used the counterfactual's predicted label and was added only once all ``K`` counterfactuals
were valid, and later versions read a cached field so its gradient vanished. Here the paper's
objective is used, with a real gradient from the first step: ``λ₂ · mean_K BCE(M(x'_k), target)``
(for a deep ensemble, on the mean member logit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recourse_sim import checks
from recourse_sim.generators.generic import GenericGenerator


class ClaproarGenerator(GenericGenerator):
    """Generic objective plus λ₂ times the classifier's loss at the counterfactuals."""

    def __init__(self, classifier_loss_weight: float = 5.0, **search_options):
        # The study searches past validity so that the extra cost can act.
        search_options.setdefault("decision_threshold", None)
        super().__init__(**search_options)
        self.classifier_loss_weight = checks.real(
            "generator.classifier_loss_weight", classifier_loss_weight, minimum=0
        )

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ₁·‖x − X'‖_F + λ₂·mean_K BCE(logit(x'_k), target)`` per individual."""
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
        distance = super().penalty(counterfactuals, factuals, logits, state)
        return distance + self.classifier_loss_weight * loss.mean(-1)

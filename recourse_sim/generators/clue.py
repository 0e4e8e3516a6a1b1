"""CLUE: counterfactual latent uncertainty explanations (Antorán et al., ICLR 2021).

CLUE looks for the nearest point, on the data manifold, at which the classifier is *certain*:
it minimises the predictive entropy ``H(p(dec(z)))`` plus ``λ·‖x − dec(z)‖`` over the latent code
of a VAE, starting from the factual's encoding. There is no target-class term, so a CLUE
counterfactual is not always valid recourse: it tells an individual how to become an unambiguous
case, which for a rejected individual may still be a rejection. The search runs for ``max_iter``
steps (CounterfactualExplanations.jl uses a fixed-iteration stop for CLUE, since a decision
threshold need not trigger). For a deep ensemble, ``p`` is the mean member probability, whose
entropy is CLUE's total predictive uncertainty. The reference study named but did not run CLUE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recourse_sim.generators.generic import GenericGenerator


class ClueGenerator(GenericGenerator):
    """Predictive entropy plus distance, searched in a VAE's latent space."""

    #: CLUE does not aim for the target class.
    targeted = False

    def __init__(self, *args, latent_space: bool = True, **kwargs):
        kwargs.setdefault("decision_threshold", None)
        super().__init__(*args, latent_space=latent_space, **kwargs)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary predictive entropy, ``−p log p − (1−p) log(1−p)``, averaged over the ``K``."""
        p = torch.sigmoid(logits)
        return (-(p * F.logsigmoid(logits)) - (1 - p) * F.logsigmoid(-logits)).mean(-1)

    def converged(self, counterfactuals, logits, state) -> torch.Tensor:
        """Never early: run the full ``max_iter`` steps."""
        return torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)

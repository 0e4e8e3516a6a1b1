"""The no-recourse control: the chosen individuals receive nothing and stay where they are.

Not a method of the reference study (Altmeyer et al., SaTML 2023), but the control its design
lacks: the system is retrained every round exactly as the others, on a population nobody moves,
so its shift is what the retraining protocol alone does. Reading a generator's domain and model
shift next to this one's shows what recourse adds beyond retraining.

The simulation treats a generator with ``moves_individuals = False`` specially: it runs no search,
leaves the chosen individuals' features and labels untouched, and keeps the system out of the
candidate intersection, so adding the control never changes another system's candidates, chosen
individuals or results (``CONVENTIONS.md`` rule 7).
"""

from __future__ import annotations

import torch

from recourse_sim.generators.base import Generator, SearchProblem, SearchResult


class NoRecourseGenerator(Generator):
    """Nobody moves: every counterfactual is the factual itself (label ``none``)."""

    #: The simulation implements no counterfactual for this generator (see the module docstring).
    moves_individuals = False
    #: Its "counterfactuals" are the factuals: no random draws.
    deterministic = True
    needs_gradients = False

    def search(self, problem: SearchProblem) -> SearchResult:
        """The factuals, unchanged, after 0 steps (for direct use; the loop never calls this)."""
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K = int(problem.n_counterfactuals)
        counterfactuals = factuals.unsqueeze(2).expand(S, B, K, d).clone()
        with torch.no_grad():
            logits = problem.model.logits(counterfactuals.reshape(S, B * K, d)).reshape(S, B, K)
        sign = 1.0 if problem.target == 1 else -1.0
        probabilities = torch.sigmoid(sign * logits).to(torch.float64)
        converged = torch.zeros(S, B, dtype=torch.bool, device=factuals.device)
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=factuals.device)
        return SearchResult(counterfactuals, probabilities, converged, n_iterations)

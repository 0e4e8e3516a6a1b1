"""NICE: nearest instance counterfactual explanations (Brughmans et al., DMKD 2023).

Brughmans, Leyman and Martens, "NICE: an algorithm for nearest instance counterfactual
explanations", Data Mining and Knowledge Discovery (2023). Gradient-free and model-agnostic: it
only needs the model's probability of the favourable class. For every individual it takes the
*nearest unlike neighbour*, the closest row of the system's current population that the model
puts in the favourable class, and (the paper's ``sparsity`` variant) walks from the factual
towards it: each step copies the one feature *unit* from the neighbour whose copy raises the
favourable probability most, until the point is favourable. A unit is a single column, or a
whole one-hot group (the paper works on the raw categorical feature, which the group encodes).

**Choices.**

* Distance: L2 in z-score space (``/ space.scale``) instead of the paper's HEOM (range-normalised
  L1 plus overlap for categoricals); it is the cost every other generator here uses.
* Candidates: rows of the system's current population (masked-out rows ignored) that the model
  puts in the favourable class (``proba >= decision_threshold``) and, with ``justified`` (the
  paper's ``justified_cf``, its default), whose label is also favourable. Only rows that agree
  with the individual on every immutable feature and lie on the allowed side of every increase-
  or decrease-only feature qualify, so any partial copy keeps mutability; an individual without
  such a row gets no counterfactual (the factual, not converged).
* ``K`` counterfactuals: the ``K`` nearest unlike neighbours (ties: population row order), each
  sparsified on its own; with fewer than ``K`` the last one found repeats.
* Copies are clamped to the feature bounds (neighbours are data, so this rarely acts); a copied
  one-hot group is a valid encoding because the neighbour's is.

**Results.** ``converged``: all ``K`` counterfactuals are favourable; ``n_iterations``: greedy
steps taken (the most over the ``K`` counterfactuals; with ``sparsity: false`` 1 for an individual
with a neighbour); an individual already favourable keeps its exact features (``n_iterations``
0). No random draws: deterministic.
"""

from __future__ import annotations

import torch

from recourse_sim import checks
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_BOTH,
    MUTABLE_INCREASE,
    Generator,
    SearchProblem,
    SearchResult,
    population_rows,
)


class NiceGenerator(Generator):
    """Nearest unlike neighbours, made sparse by greedy unit-by-unit copying.

    Args:
        decision_threshold: Probability of the favourable class that makes a point favourable.
        sparsity: Copy units greedily until favourable (the paper's ``sparsity``); ``False``
            returns the neighbour itself (the paper's ``none``).
        justified: Only rows whose label is favourable too (correctly classified) are neighbours.
    """

    deterministic = True
    needs_gradients = False

    def __init__(
        self, decision_threshold: float = 0.5, sparsity: bool = True, justified: bool = True
    ):
        self.decision_threshold = checks.probability(
            "generator.decision_threshold", decision_threshold
        )
        self.sparsity = checks.flag("generator.sparsity", sparsity)
        self.justified = checks.flag("generator.justified", justified)

    def search(self, problem: SearchProblem) -> SearchResult:
        """Find the neighbours of all systems, then sparsify all of them in lockstep."""
        model, space = problem.model, problem.space
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K = int(problem.n_counterfactuals)
        device = factuals.device
        threshold = self.decision_threshold

        def proba(points: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                p = model.proba(points)
            # as_tensor without a device would land on torch's default device.
            p = p if torch.is_tensor(p) else torch.as_tensor(p, device=device)
            return p.to(device=device, dtype=torch.float64)

        already = proba(factuals) >= threshold
        neighbours, found = self._neighbours(problem, factuals, proba)
        found &= ~already
        searched = found.view(S, B, 1).expand(S, B, K)
        counterfactuals = factuals.unsqueeze(2).repeat(1, 1, K, 1)
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=device)
        if not self.sparsity:
            counterfactuals = torch.where(
                searched.unsqueeze(-1), space.clamp(neighbours), counterfactuals
            )
            n_iterations = found.long()
        elif bool(found.any()):
            counterfactuals, steps = self._sparsify(
                counterfactuals, neighbours, searched, space, proba
            )
            n_iterations = steps.max(-1).values
        probabilities = proba(counterfactuals.reshape(S, B * K, d)).reshape(S, B, K)
        converged = already | (found & (probabilities >= threshold).all(-1))
        return SearchResult(counterfactuals, probabilities, converged, n_iterations)

    def _neighbours(self, problem, factuals, proba) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``K`` nearest admissible unlike neighbours ``(S, B, K, d)``; whether any exists."""
        space = problem.space
        S, B, _ = factuals.shape
        K = int(problem.n_counterfactuals)
        device = factuals.device
        rows = [population_rows(problem, s) for s in range(S)]
        # One proba call for all systems: pad each system's rows to the longest with its first
        # factual (a valid input) and ignore the padding.
        n_rows = max(int(X.shape[0]) for X, _ in rows)
        padded = factuals[:, :1].repeat(1, max(n_rows, 1), 1)
        for s, (X, _) in enumerate(rows):
            padded[s, : X.shape[0]] = X.to(device=device, dtype=torch.float64)
        row_proba = proba(padded)

        neighbours = factuals.unsqueeze(2).repeat(1, 1, K, 1)
        found = torch.zeros(S, B, dtype=torch.bool, device=device)
        mut = space.mutability
        for s, (X, y) in enumerate(rows):
            X = X.to(device=device, dtype=torch.float64)
            unlike = row_proba[s, : X.shape[0]] >= self.decision_threshold
            if self.justified:
                unlike &= y.to(device) == problem.target
            candidates = X[unlike]
            if candidates.shape[0] == 0:
                continue
            distance = torch.cdist(
                factuals[s] / space.scale,
                candidates / space.scale,
                compute_mode="donot_use_mm_for_euclid_dist",  # exact, whatever the batch
            )
            for j in torch.nonzero(mut != MUTABLE_BOTH).flatten().tolist():
                x, c = factuals[s, :, j : j + 1], candidates[:, j].view(1, -1)
                code = int(mut[j])
                if code == IMMUTABLE:
                    allowed = c == x
                elif code == MUTABLE_INCREASE:
                    allowed = c >= x
                else:
                    allowed = c <= x
                distance = torch.where(allowed, distance, torch.inf)
            order = distance.argsort(dim=-1, stable=True)[:, :K]
            n_admissible = torch.isfinite(distance).sum(-1).clamp(max=K)  # (B,)
            # Fewer than K: the last one found repeats.
            slot = torch.arange(order.shape[1], device=device).view(1, -1)
            last = (n_admissible - 1).clamp(min=0).view(B, 1)
            order = torch.gather(order, 1, torch.minimum(slot, last))
            if order.shape[1] < K:
                order = torch.cat([order, order[:, -1:].expand(B, K - order.shape[1])], dim=1)
            neighbours[s] = candidates[order]
            found[s] = n_admissible > 0
        return neighbours, found

    def _sparsify(self, start, neighbours, searched, space, proba):
        """Copy, one unit per step, the unit that raises the probability most; all chains at once.

        ``start`` and ``neighbours`` are ``(S, B, K, d)``; ``searched`` ``(S, B, K)`` marks the
        chains to run. Returns the end points and the steps each chain took.
        """
        S, B, K, d = start.shape
        device = start.device
        units = _units(space)
        U = len(units)
        member = torch.zeros(U, d, dtype=torch.bool, device=device)
        for u, cols in enumerate(units):
            member[u, list(cols)] = True
        flat_start = start.reshape(S, B * K, d)
        target = neighbours.reshape(S, B * K, d)
        current = flat_start.clone()
        differs = (target.unsqueeze(2) != flat_start.unsqueeze(2)) & member  # (S, BK, U, d)
        remaining = differs.any(-1) & searched.reshape(S, B * K, 1)
        running = searched.reshape(S, B * K).clone()
        steps = torch.zeros(S, B * K, dtype=torch.int64, device=device)
        for _ in range(U):
            running &= remaining.any(-1)
            if not bool(running.any()):
                break
            # Evaluate only running chains: gather them to the front of each system; a system
            # with fewer fills up with stopped chains, which stay as they are.
            n_run = int(running.sum(-1).max())
            index = running.long().argsort(dim=-1, descending=True, stable=True)[:, :n_run]
            live = torch.gather(running, 1, index)
            cur = torch.gather(current, 1, index.unsqueeze(-1).expand(-1, -1, d))
            tgt = torch.gather(target, 1, index.unsqueeze(-1).expand(-1, -1, d))
            trials = torch.where(member, tgt.unsqueeze(2), cur.unsqueeze(2))  # (S, n, U, d)
            trials = space.clamp(trials)
            p = proba(trials.reshape(S, n_run * U, d)).reshape(S, n_run, U)
            rem = torch.gather(remaining, 1, index.unsqueeze(-1).expand(-1, -1, U))
            p = torch.where(rem, p, -torch.inf)
            best_p, best = p.max(-1)  # ties: the lowest unit index
            chosen = torch.gather(trials, 2, best.view(S, n_run, 1, 1).expand(-1, -1, 1, d))
            chosen = chosen.squeeze(2)
            new_current = torch.where(live.unsqueeze(-1), chosen, cur)
            current.scatter_(1, index.unsqueeze(-1).expand(-1, -1, d), new_current)
            used = torch.nn.functional.one_hot(best, U).bool() & live.unsqueeze(-1)
            remaining.scatter_(1, index.unsqueeze(-1).expand(-1, -1, U), rem & ~used)
            steps.scatter_add_(1, index, live.long())
            favourable = torch.zeros_like(running)
            favourable.scatter_(1, index, live & (best_p >= self.decision_threshold))
            running &= ~favourable
        return current.reshape(S, B, K, d), steps.reshape(S, B, K)


def _units(space) -> list[tuple[int, ...]]:
    """Feature units in column order: a one-hot group once (at its first column), else a column."""
    group_of = {col: group for group in space.categorical_groups for col in group}
    units, seen = [], set()
    for col in range(space.n_features):
        unit = tuple(group_of.get(col, (col,)))
        if unit not in seen:
            seen.add(unit)
            units.append(unit)
    return units

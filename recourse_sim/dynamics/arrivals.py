"""New agents over time: how many enter each round, and who they are.

Counts are fixed before the run, per repetition, so every system of a repetition sees the same
newcomers (the paired design): ``fixed`` ``per_round`` agents each round; ``relative`` growth,
``round(per_round · agents entered so far)``, which does not depend on who left and therefore is
the same for every system; ``poisson`` counts with mean ``per_round``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recourse_sim.dynamics.config import Arrivals


@dataclass(frozen=True)
class ArrivalBatch:
    """One repetition's newcomers, in order of entry.

    Attributes:
        X: Features ``(A, d)``, model space.
        y: Labels ``(A,)``.
        rounds: The round in which each enters ``(A,)``, non-decreasing, >= 1.
        groups: Group codes ``(A,)`` (-1: no groups).
    """

    X: np.ndarray
    y: np.ndarray
    rounds: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def arrival_counts(
    arrivals: Arrivals, n_initial: int, n_rounds: int, rng: np.random.Generator
) -> np.ndarray:
    """Newcomers per round ``1..n_rounds`` (index 0 is round 1) for one repetition."""
    counts = np.zeros(n_rounds, dtype=np.int64)
    if arrivals.per_round == 0:
        return counts
    entered = n_initial
    for t in range(n_rounds):
        if arrivals.kind == "fixed":
            counts[t] = int(arrivals.per_round)
        elif arrivals.kind == "relative":
            counts[t] = round(arrivals.per_round * entered)
        else:
            counts[t] = rng.poisson(arrivals.per_round)
        entered += counts[t]
    return counts


def entry_rounds(counts: np.ndarray) -> np.ndarray:
    """The entry round of each newcomer, given the counts of rounds 1, 2, ..."""
    return np.repeat(np.arange(1, len(counts) + 1), counts)

"""Wachter et al. counterfactuals with the MAD-weighted L1 distance.

Wachter, Mittelstadt & Russell, "Counterfactual Explanations without Opening the Black Box",
Harvard Journal of Law & Technology 31(2), 2018: the distance is the L1 norm with each feature
scaled by its median absolute deviation (MAD), which makes it robust to outliers and favours sparse
changes. As in CounterfactualExplanations.jl's ``WachterGenerator`` the weight λ is fixed (the
paper's outer loop that raises λ until the prediction flips is not run), the loss is binary
cross-entropy and the distance is averaged over the ``K`` counterfactuals. MADs are computed on
each system's current population (with a ``population_mask``, its present rows only).

**Columns whose MAD is zero.** The reference (CounterfactualExplanations.jl v0.1.5,
``distance_mad``) weights feature ``j`` by ``w_j = 1/(MAD_j + d·1e-5)``; here ``w_j =
1/max(MAD_j, mad_floor)``, the same wherever the MAD is not tiny. A zero MAD makes the weight
``1/mad_floor = 1e5``. For one-hot and binary columns that is intended (changing them is very
expensive). For a continuous column that is zero in most rows but not constant (capital gains,
past-due counts) it is not: the L1 penalty's subgradient, ``η·λ·w_j = 0.01·0.1·1e5 = 100``
z-units per step, flips sign around the factual at every step, so the search moves that column
by about a hundred standard deviations, far outside the data, and the cost explodes. With
``zero_mad="mean_ad"`` (the default) such a column uses instead the fallback of Iglewicz and
Hoaglin's modified z-score (*How to Detect and Handle Outliers*, ASQC 1993): the mean absolute
deviation around the median, put on the MAD's scale, ``MAD_j ≈ MeanAD_j·1.253314/1.4826``
(floored at ``mad_floor``). This keeps the weight finite and faithful to the column's spread; a
column with a positive MAD, a constant column and one-hot or binary columns keep the reference
weight exactly. ``zero_mad="floor"`` restores ``1/max(MAD_j, mad_floor)`` for every column.
"""

from __future__ import annotations

import torch

from recourse_sim import checks
from recourse_sim.generators.base import population_rows
from recourse_sim.generators.gradient import GradientGenerator

#: Rules for a continuous column whose MAD is zero (see the module docstring).
ZERO_MAD_RULES = ("mean_ad", "floor")
#: ``1.253314/1.4826``: a mean absolute deviation expressed on the scale of a MAD (Iglewicz and
#: Hoaglin 1993: ``1.4826·MAD`` and ``1.253314·MeanAD`` both estimate a normal's σ).
MEAN_AD_TO_MAD = 1.253314 / 1.4826


class WachterGenerator(GradientGenerator):
    """BCE loss plus λ times the MAD-weighted L1 distance, averaged over counterfactuals.

    Args:
        mad_floor: Smallest MAD used as a divisor (finite, > 0).
        zero_mad: Weight of a continuous, non-constant column whose MAD is zero: ``"mean_ad"``
            (its mean absolute deviation on the MAD's scale) or ``"floor"`` (``1/mad_floor``,
            the reference rule).
        *args, **kwargs: The settings of :class:`GradientGenerator`.
    """

    def __init__(self, *args, mad_floor: float = 1e-5, zero_mad: str = "mean_ad", **kwargs):
        super().__init__(*args, **kwargs)
        self.mad_floor = checks.real("generator.mad_floor", mad_floor, minimum=0.0, low_open=True)
        checks.check_choice("generator.zero_mad", zero_mad, ZERO_MAD_RULES)
        self.zero_mad = str(zero_mad)

    def setup(self, problem) -> torch.Tensor:
        """Inverse median absolute deviation of every feature in each system's population.

        With a ``population_mask`` each system's MADs are those of its present rows alone (a
        system with none gets unit weights: the plain L1 distance).
        """
        mask = getattr(problem, "population_mask", None)
        if mask is None:
            return self._inverse_mad(problem.population_X.to(torch.float64), problem)
        weights = []
        for s in range(problem.population_X.shape[0]):
            X, _ = population_rows(problem, s)
            if X.shape[0] == 0:
                weights.append(torch.ones(X.shape[-1], dtype=torch.float64, device=X.device))
                continue
            weights.append(self._inverse_mad(X.to(torch.float64).unsqueeze(0), problem)[0])
        return torch.stack(weights)

    def _inverse_mad(self, X: torch.Tensor, problem) -> torch.Tensor:
        """``1/MAD`` ``(S, d)`` of the rows ``X`` ``(S, N, d)`` under the ``zero_mad`` rule."""
        median = X.median(dim=1, keepdim=True).values
        deviation = (X - median).abs()
        mad = deviation.median(dim=1).values  # (S, d)
        if self.zero_mad == "mean_ad" and bool((mad == 0).any()):
            mean_ad = deviation.mean(dim=1) * MEAN_AD_TO_MAD  # 0 only for a constant column
            continuous = _continuous_columns(problem.space, X.shape[-1], X.device)
            mad = torch.where(continuous & (mad == 0), mean_ad, mad)
        return 1.0 / mad.clamp_min(self.mad_floor)

    def penalty(self, counterfactuals, factuals, logits, state) -> torch.Tensor:
        """``λ·mean_k Σ_j |x'_kj − x_j| / MAD_j`` per individual (``state``: the 1/MAD weights)."""
        weights = state[:, None, None, :]
        distance = ((counterfactuals - factuals).abs() * weights).sum(-1).mean(-1)
        return self.cost_weight * distance


def _continuous_columns(space, d: int, device: torch.device) -> torch.Tensor:
    """``(d,)`` mask of the columns that are neither one-hot nor binary indicators."""
    mask = torch.ones(d, dtype=torch.bool, device=device)
    for group in space.categorical_groups:
        mask[list(group)] = False
    mask[list(space.binary_features)] = False
    return mask

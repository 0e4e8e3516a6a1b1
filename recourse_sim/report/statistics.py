"""Statistics of a report: intervals over repetitions, combined and adjusted p-values.

The simulation records one permutation p-value per metric, system, repetition and round
(``metrics.csv``); a report has to say what they mean together without overstating it:

* **Per-repetition counts**: in how many repetitions the test rejected at the 5 % level.
* **A combined test across repetitions**: Fisher's method (Fisher 1932; ``−2 Σ ln pᵢ`` is χ² with
  2k degrees of freedom under the null), valid because repetitions are independent. It needs
  p-values that are never 0, so a reference-form p-value ``b / P`` is first turned into
  ``(b + 1) / (P + 1)`` (Phipson & Smyth 2010), the exact permutation p-value. The mean of the
  p-values, which earlier reports showed, is not a test.
* **Multiple comparisons**: Holm's step-down adjustment (Holm 1979) of the combined p-values over
  every test of one table, which controls the family-wise error rate of a whole grid.
* **Intervals**: a 95 % t interval of the mean over repetitions, ``mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n``;
  with n = 5 a bootstrap interval would be too narrow, and with n = 1 there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95


def exact_p_values(
    p_values: Sequence[float] | np.ndarray, n_permutations: int | None, form: str = "reference"
) -> np.ndarray:
    """Permutation p-values in the form ``(b + 1) / (P + 1)``, which is never 0.

    Args:
        p_values: Recorded p-values (NaN: none).
        n_permutations: ``P``; None when unknown.
        form: How they were recorded: ``"reference"`` (``b / P``) or ``"corrected"`` (already
            ``(b + 1) / (P + 1)``).

    Returns:
        The p-values as floats; NaN where there is none, and where ``P`` is unknown and the
        recorded value is 0 (its exact form cannot be recovered).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if form == "corrected":
        return p.copy()
    if not n_permutations:
        return np.where(p > 0, p, np.nan)
    exceedances = np.rint(p * n_permutations)  # b, the permutations at least as extreme
    return (exceedances + 1.0) / (n_permutations + 1.0)


def fisher_combined(p_values: Sequence[float] | np.ndarray) -> float:
    """Fisher's combined p-value of independent tests (NaN entries are left out).

    Returns:
        The combined p-value; the p-value itself for one test; NaN when there is none.
    """
    p = np.asarray(p_values, dtype=np.float64)
    p = p[np.isfinite(p)]
    if len(p) == 0:
        return math.nan
    if len(p) == 1:
        return float(p[0])
    statistic = -2.0 * np.log(np.clip(p, np.finfo(float).tiny, 1.0)).sum()
    # Never 0: a tail below the smallest float is reported as that float, not as certainty.
    return max(float(stats.chi2.sf(statistic, 2 * len(p))), np.finfo(float).tiny)


def holm_adjusted(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values over the finite entries (NaN stays NaN).

    The ``i``-th smallest of ``m`` p-values becomes ``max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎)``;
    rejecting where the adjusted value is below α controls the family-wise error rate at α.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE):
    """The t interval of the mean of ``values`` (NaN left out): ``(low, high)``.

    NaN bounds when fewer than two values exist; a zero-width interval when they are equal.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return mean - half, mean + half


def round_statistics(
    group: pd.DataFrame, n_permutations: int | None, form: str = "reference"
) -> dict[str, float]:
    """Interval and significance of one metric and system at its final round.

    Args:
        group: Its rows (``value``, ``p_value``), one per repetition (and job of a sweep).
        n_permutations: ``P`` of the p-values.
        form: ``simulation.p_value`` of the run.

    Returns:
        ``ci_low, ci_high`` (95 % t interval of the mean), ``n_tested`` (repetitions with a
        p-value), ``n_significant`` (of those, exact p < 0.05) and ``p_combined``
        (Fisher's method on the exact p-values; NaN without p-values).
    """
    values = group["value"].to_numpy(dtype=np.float64)
    p = group["p_value"].where(group["value"].notna()).to_numpy(dtype=np.float64)
    tested = np.isfinite(p)
    exact = exact_p_values(p[tested], n_permutations, form)
    # With P < 20 even b = 0 gives an exact p-value of 1/(P + 1) > 0.05: no single test can
    # reject, and the count says so (the recorded b/P would count it). Unknown P: as recorded.
    significant = np.where(np.isfinite(exact), exact < ALPHA, p[tested] < ALPHA)
    low, high = t_interval(values)
    return {
        "ci_low": low,
        "ci_high": high,
        "n_tested": int(tested.sum()),
        "n_significant": int(significant.sum()),
        "p_combined": fisher_combined(exact),
    }

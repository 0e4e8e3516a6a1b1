"""Evaluating one system's shift metrics (module level: worker processes run it)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recourse_sim.metrics.base import EvaluationContext, Metric


class CachedProba:
    """One system's probabilities, answering the reference rows from a precomputed vector.

    Several metrics ask for the reference rows; a class rather than a closure, so that a worker
    process can evaluate.
    """

    def __init__(self, reference_X: np.ndarray, reference_proba: np.ndarray, model):
        self.reference_X = reference_X
        self.reference_proba = reference_proba
        self.model = model  # a single-system Classifier (any model kind)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of the favourable class at ``X``."""
        if X is self.reference_X:
            return self.reference_proba
        return self.model.proba(X)[0].cpu().numpy().astype(np.float64)


def evaluate(
    metrics: Mapping[str, Metric],
    context: EvaluationContext,
    streams: Mapping[str, np.random.Generator],
    system,
    round_number: int,
) -> tuple[list[dict], list[dict]]:
    """Every metric of one system: ``metrics.csv`` rows, and why values are missing.

    A value that cannot be computed (the metric says why, or it is not finite) is missing
    (CONVENTIONS rule 2): NaN value and no p-value, i.e. two empty cells in ``metrics.csv``, and
    a ``repetition, round, model, generator, metric, reason`` row for the recorder's
    ``note_missing``. Module level: workers run it.
    """
    rows, missing = [], []
    for metric_name, metric in metrics.items():
        context.rng = streams[metric_name]
        result = metric(context)
        value = float(result.value)
        p_value = None if result.p_value is None else float(result.p_value)
        reason = getattr(result, "reason", None)
        if reason is None and not np.isfinite(value):
            reason = "the value is not finite"
        elif reason is None and p_value is not None and not np.isfinite(p_value):
            reason = "the p-value is not finite"
        system_keys = {
            "repetition": system.repetition,
            "round": round_number,
            "model": system.model,
            "generator": system.generator,
            "metric": metric_name,
        }
        if reason is not None:
            value, p_value = np.nan, None
            missing.append({**system_keys, "reason": reason})
        rows.append(
            {
                **system_keys,
                "scope": metric.scope,
                "value": value,
                "p_value": np.nan if p_value is None else p_value,
            }
        )
    return rows, missing

"""Evaluating one system's shift metrics (module level: worker processes run it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

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
) -> tuple[list[dict], list[dict], list[dict]]:
    """Every metric of one system: ``metrics.csv`` rows, why values are missing, kernel checks.

    Returns ``(rows, missing, kernel)``.

    A value that cannot be computed (the metric says why, or it is not finite) is missing
    (CONVENTIONS rule 2): NaN value and no p-value, i.e. two empty cells in ``metrics.csv``, and
    a ``repetition, round, model, generator, metric, reason`` row for the recorder's
    ``note_missing``. An MMD whose kernel is degenerate at its ℓ (its result carries a
    :class:`~recourse_sim.metrics.base.KernelCheck`) gives a ``repetition, round, model,
    generator, metric, length_scale, median_kernel, median_length_scale, value_at_median`` row
    for the recorder's ``note_kernel_checks``. Module level: workers run it.
    """
    rows, missing, kernel = [], [], []
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
        check = getattr(result, "kernel", None)
        if reason is None and check is not None:
            kernel.append({**system_keys, **{k: float(v) for k, v in asdict(check).items()}})
        rows.append(
            {
                **system_keys,
                "scope": metric.scope,
                "value": value,
                "p_value": np.nan if p_value is None else p_value,
            }
        )
    return rows, missing, kernel

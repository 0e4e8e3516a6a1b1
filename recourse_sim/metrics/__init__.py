"""Shift metrics: each compares a system's current state with its initial one."""

from recourse_sim.metrics.base import EvaluationContext, Metric, MetricResult
from recourse_sim.metrics.domain import DomainMMD
from recourse_sim.metrics.model import (
    Decisiveness,
    Disagreement,
    ModelMMD,
    ModelMMDGrid,
    Perturbation,
)
from recourse_sim.metrics.performance import F1Change

__all__ = [
    "Decisiveness",
    "Disagreement",
    "DomainMMD",
    "EvaluationContext",
    "F1Change",
    "Metric",
    "MetricResult",
    "ModelMMD",
    "ModelMMDGrid",
    "Perturbation",
]

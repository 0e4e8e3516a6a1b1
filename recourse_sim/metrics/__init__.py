"""Shift and plausibility metrics of one system at one evaluation round."""

from recourse_sim.metrics.base import EvaluationContext, KernelCheck, Metric, MetricResult
from recourse_sim.metrics.domain import DomainMMD
from recourse_sim.metrics.model import (
    Decisiveness,
    Disagreement,
    ModelMMD,
    ModelMMDGrid,
    Perturbation,
)
from recourse_sim.metrics.performance import F1Change
from recourse_sim.metrics.plausibility import ImplausibilityDistance, ImplausibilityMMD

__all__ = [
    "Decisiveness",
    "Disagreement",
    "DomainMMD",
    "EvaluationContext",
    "F1Change",
    "ImplausibilityDistance",
    "ImplausibilityMMD",
    "KernelCheck",
    "Metric",
    "MetricResult",
    "ModelMMD",
    "ModelMMDGrid",
    "Perturbation",
]

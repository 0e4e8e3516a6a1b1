"""Counterfactual generators on one batched search engine."""

from recourse_sim.generators.base import FeatureSpace, Generator, SearchProblem, SearchResult
from recourse_sim.generators.generic import GenericGenerator
from recourse_sim.generators.gradient import GradientGenerator
from recourse_sim.generators.wachter import WachterGenerator

__all__ = [
    "FeatureSpace",
    "Generator",
    "GenericGenerator",
    "GradientGenerator",
    "SearchProblem",
    "SearchResult",
    "WachterGenerator",
]

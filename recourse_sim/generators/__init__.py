"""Counterfactual generators on one batched search engine."""

from recourse_sim.generators.base import FeatureSpace, Generator, SearchProblem, SearchResult
from recourse_sim.generators.claproar import ClaproarGenerator
from recourse_sim.generators.clue import ClueGenerator
from recourse_sim.generators.dice import DiceGenerator
from recourse_sim.generators.ecco import EccoGenerator
from recourse_sim.generators.feature_tweak import FeatureTweakGenerator
from recourse_sim.generators.generic import GenericGenerator
from recourse_sim.generators.gradient import GradientGenerator
from recourse_sim.generators.gravitational import GravitationalGenerator
from recourse_sim.generators.greedy import GreedyGenerator
from recourse_sim.generators.growing_spheres import GrowingSpheresGenerator
from recourse_sim.generators.n_feature import NFeatureGenerator
from recourse_sim.generators.nice import NiceGenerator
from recourse_sim.generators.none import NoRecourseGenerator
from recourse_sim.generators.probe import ProbeGenerator
from recourse_sim.generators.revise import ReviseGenerator
from recourse_sim.generators.wachter import WachterGenerator

__all__ = [
    "ClaproarGenerator",
    "ClueGenerator",
    "DiceGenerator",
    "EccoGenerator",
    "FeatureSpace",
    "FeatureTweakGenerator",
    "Generator",
    "GenericGenerator",
    "GradientGenerator",
    "GravitationalGenerator",
    "GreedyGenerator",
    "GrowingSpheresGenerator",
    "NFeatureGenerator",
    "NiceGenerator",
    "NoRecourseGenerator",
    "ProbeGenerator",
    "ReviseGenerator",
    "SearchProblem",
    "SearchResult",
    "WachterGenerator",
]

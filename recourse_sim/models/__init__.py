"""Classifiers behind one interface (:mod:`.base`).

The built-in dense networks trained many-at-once in lockstep, any torch module, and any
scikit-learn-protocol estimator.
"""

from recourse_sim.models.base import Classifier, ModelSpec
from recourse_sim.models.classifier import (
    MLP,
    ClassifierSpec,
    DeepEnsemble,
    LogisticRegression,
    StackedClassifier,
)
from recourse_sim.models.estimators import SklearnModel, StackedEstimators
from recourse_sim.models.network import Architecture, StackedNetworks
from recourse_sim.models.torch_module import StackedModules, TorchModule
from recourse_sim.models.training import (
    TrainingSchedule,
    train_jobs,
    train_lockstep,
    train_stacks,
)

__all__ = [
    "MLP",
    "Architecture",
    "Classifier",
    "ClassifierSpec",
    "DeepEnsemble",
    "LogisticRegression",
    "ModelSpec",
    "SklearnModel",
    "StackedClassifier",
    "StackedEstimators",
    "StackedModules",
    "StackedNetworks",
    "TorchModule",
    "TrainingSchedule",
    "train_jobs",
    "train_lockstep",
    "train_stacks",
]

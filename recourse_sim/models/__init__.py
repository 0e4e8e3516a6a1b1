"""Classifiers (logistic regression, MLP, deep ensemble) trained many-at-once in lockstep."""

from recourse_sim.models.classifier import (
    MLP,
    ClassifierSpec,
    DeepEnsemble,
    LogisticRegression,
    StackedClassifier,
)
from recourse_sim.models.network import Architecture, StackedNetworks
from recourse_sim.models.training import TrainingSchedule, train_lockstep, train_stacks

__all__ = [
    "MLP",
    "Architecture",
    "ClassifierSpec",
    "DeepEnsemble",
    "LogisticRegression",
    "StackedClassifier",
    "StackedNetworks",
    "TrainingSchedule",
    "train_lockstep",
    "train_stacks",
]

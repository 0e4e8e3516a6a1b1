"""Performance change: macro F1 on the untouched test set, current model minus initial model.

Reference code ``fscore`` (AlgorithmicRecourseDynamics.jl v0.1.2,
``src/evaluation/model_shifts.jl``): MLJBase ``MulticlassFScore()``, i.e. β = 1 and the
unweighted mean of the per-class scores over the classes {0, 1}, with hard labels
``argmax([1 − p, p])`` (a probability of exactly 0.5 is class 0).

A class's score is ``2TP / (2TP + FP + FN)``. When that is 0/0 (the class is neither predicted
nor present in the test set) MLJBase's macro average counts it as 0, and so does this module: a
model that predicts one class on a test set holding only that class scores 0.5, not 1. On the
usual test set, which holds both classes, the case cannot arise; a model that predicts a single
class there scores 0 for the other class because it has no true positives.
"""

from __future__ import annotations

import numpy as np

from recourse_sim.metrics.base import EvaluationContext, MetricResult, non_finite_reason
from recourse_sim.metrics.model import predicted_labels


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the F1 scores of classes 0 and 1 (0/0 counts as 0).

    Args:
        y_true: True labels in {0, 1}.
        y_pred: Predicted labels in {0, 1}.

    Returns:
        The macro F1 score in [0, 1].
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for label in (0, 1):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denominator = 2 * tp + fp + fn
        scores.append(0.0 if denominator == 0 else 2 * tp / denominator)
    return float(np.mean(scores))


class F1Change:
    """Macro F1 of the current model minus that of the initial model, on the test set.

    Negative values mean the model got worse (−0.1 = ten percentage points).

    Args:
        name: The metric's key in the configuration and in ``metrics.csv``.
    """

    scope = "model"

    def __init__(self, name: str = "f1_change"):
        self.name = name

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """``F1(current) − F1(initial)``; missing on an empty test set or non-finite probability."""
        y, X = context.test_y, context.test_X
        if not len(y):
            return MetricResult.missing("the test set is empty")
        p0 = np.asarray(context.proba_initial(X), dtype=np.float64)
        pt = np.asarray(context.proba_current(X), dtype=np.float64)
        reason = non_finite_reason(
            initial_model_probabilities_on_the_test_set=p0,
            current_model_probabilities_on_the_test_set=pt,
        )
        if reason:
            return MetricResult.missing(reason)
        initial = macro_f1(y, predicted_labels(p0))
        current = macro_f1(y, predicted_labels(pt))
        return MetricResult(current - initial)

"""Performance change: macro F1 on the untouched test set, current minus initial.

Reference code ``model_performance`` (MLJBase ``MulticlassFScore``: β = 1, macro average over the
classes {0, 1}); hard labels at 0.5 with ties to class 0. The F1 of a class that is neither
predicted nor present is taken as 0 (there is nothing to have got right), so a classifier that
predicts a single class scores at most 0.5 on balanced data.
"""

from __future__ import annotations

import numpy as np

from recourse_sim.metrics.base import EvaluationContext, MetricResult
from recourse_sim.metrics.model import predicted_labels


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the F1 scores of classes 0 and 1."""
    scores = []
    for label in (0, 1):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denominator = 2 * tp + fp + fn
        scores.append(0.0 if denominator == 0 else 2 * tp / denominator)
    return float(np.mean(scores))


class F1Change:
    """Macro F1 of the current model minus that of the initial model, on the test set."""

    scope = "model"

    def __init__(self, name: str = "f1_change"):
        self.name = name

    def __call__(self, context: EvaluationContext) -> MetricResult:
        """``F1(current) − F1(initial)``; negative means the model got worse."""
        initial = macro_f1(context.test_y, predicted_labels(context.proba_initial(context.test_X)))
        current = macro_f1(context.test_y, predicted_labels(context.proba_current(context.test_X)))
        return MetricResult(current - initial)

"""Any scikit-learn-style classifier: an object with ``fit(X, y)`` and ``predict_proba(X)``.

Gradient boosting, random forests, pipelines, or anything else that follows scikit-learn's
protocol (e.g. xgboost's and lightgbm's scikit-learn classes) can be the model of a recourse
simulation. Such a model has no gradients, so only gradient-free generators (Growing Spheres,
FeatureTweak for scikit-learn's tree models, NICE) search on it; the entry point refuses the
others before any work.

Each retraining *refits* a fresh estimator on the system's current population, as the
reference study retrains its networks on it (Altmeyer et al., SaTML 2023); with
``continue_training`` the fitted estimator continues instead, through ``partial_fit`` where it
has one, or ``warm_start``. Every estimator parameter named ``random_state`` (a pipeline's steps
included) is set from the run's keyed random streams, so runs are reproducible. A fitted
estimator cannot go into a checkpoint (CONVENTIONS.md rule 6: tensors only), so a checkpoint
holds each system's last training rows and seed and a resumed run refits on them, which gives
the same estimator; a continued estimator depends on its whole history and cannot resume.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.base import Classifier, ModelSpec
from recourse_sim.models.factory import Factory
from recourse_sim.utils import counter_rng

_SEED_LIMIT = 2**31 - 1  # numpy's RandomState takes seeds below 2**32; keep a margin


class ConstantEstimator:
    """What a system's model is when its training rows hold one class only.

    scikit-learn's classifiers refuse to fit a single class; the simulation's populations can
    reach one (everybody favourable after recourse), and then the only consistent model predicts
    that class everywhere.
    """

    def __init__(self, label: int):
        self.label = int(label)
        self.classes_ = np.array([self.label])

    def predict_proba(self, X) -> np.ndarray:
        """Probability 1 of the one class seen, for every row."""
        return np.ones((len(X), 1))

    def __repr__(self) -> str:
        return f"ConstantEstimator(label={self.label})"


class SklearnModel(ModelSpec):
    """A scikit-learn-protocol classifier, refitted (or continued) each round.

    Args:
        estimator: A mapping with ``_target_`` (the import path of the estimator class or of a
            factory returning one) and its keyword arguments, a factory, or an unfitted
            estimator object (copied for every system).
        continue_training: Continue the fitted estimator each round (``partial_fit``, else
            ``warm_start``) instead of refitting a fresh one. A run with it cannot resume.
    """

    kind = "sklearn"
    differentiable = False
    parametric = False
    pretrain = None
    retrain = None
    trains_together = False  # one fit per system: fit only the systems due

    def __init__(self, estimator: object, continue_training: bool = False):
        self._object = None
        if hasattr(estimator, "fit") and not isinstance(estimator, type):
            self._object, self.factory = estimator, None
        else:
            self.factory = Factory("model.estimator", estimator)
        self.continue_training = checks.flag("model.continue_training", continue_training)
        prototype = self.prototype()
        name = self.estimator_name
        for method in ("fit", "predict_proba"):
            if not callable(getattr(prototype, method, None)):
                raise ConfigError(
                    "model.estimator._target_",
                    name,
                    "a classifier with fit(X, y) and predict_proba(X) (scikit-learn's protocol); "
                    f"{type(prototype).__name__} has no {method}",
                )
        self._check_parameters(prototype)
        if self.continue_training:
            self._check_continuable(prototype)

    @property
    def estimator_name(self) -> str:
        """What the estimator is, for messages."""
        if self.factory is not None:
            return self.factory.name
        return type(self._object).__name__

    def prototype(self):
        """A fresh, unfitted estimator."""
        if self.factory is None:
            return copy.deepcopy(self._object)
        return self.factory()

    def seeded(self, seed: int):
        """A fresh estimator whose every ``random_state`` parameter is ``seed``."""
        estimator = self.prototype()
        get_params = getattr(estimator, "get_params", None)
        if callable(get_params):
            names = [k for k in get_params(deep=True) if k.split("__")[-1] == "random_state"]
            if names:
                estimator.set_params(**dict.fromkeys(names, int(seed)))
        return estimator

    def _check_parameters(self, prototype) -> None:
        """Refuse bad argument values now, not at the first fit (after the run has started).

        scikit-learn checks its estimators' parameters only in ``fit``; its own check
        (``_validate_params``, where the estimator and its nested estimators, e.g. a pipeline's
        steps, declare their constraints) runs here instead.
        """
        get_params = getattr(prototype, "get_params", None)
        nested = list(get_params(deep=True).values()) if callable(get_params) else []
        for part in [prototype, *nested]:
            if isinstance(part, type) or not hasattr(part, "_parameter_constraints"):
                continue  # not a scikit-learn estimator object (a step's name, a number, ...)
            validate = getattr(part, "_validate_params", None)
            if not callable(validate):
                continue
            try:
                validate()
            except (ValueError, TypeError) as error:
                match = re.search(r"The '(\w+)' parameter", str(error))
                name = match.group(1) if match else None
                arguments = self.factory.arguments if self.factory is not None else {}
                if part is prototype and name in arguments:
                    raise ConfigError(
                        f"model.estimator.{name}", arguments[name], f"a valid value: {error}"
                    ) from None
                raise ConfigError(
                    "model.estimator", self.estimator_name, f"valid arguments: {error}"
                ) from None

    def _check_continuable(self, prototype) -> None:
        if callable(getattr(prototype, "partial_fit", None)):
            return
        params = prototype.get_params() if callable(getattr(prototype, "get_params", None)) else {}
        # An ensemble's warm_start (n_estimators, or max_iter of histogram gradient boosting)
        # only adds members when their number grows; a linear model's starts from its last fit.
        ensemble = "n_estimators" in params or type(prototype).__module__.startswith(
            "sklearn.ensemble"
        )
        if "warm_start" in params and not ensemble:
            return
        reason = (
            "its warm_start only adds estimators (or iterations) when their number grows, so it "
            "would not learn from the new rows"
            if "warm_start" in params
            else "it has neither partial_fit nor warm_start"
        )
        raise ConfigError(
            "model.continue_training",
            True,
            f"false for {self.estimator_name}: {reason}; true needs an estimator with "
            "partial_fit (e.g. SGDClassifier) or warm_start (e.g. LogisticRegression)",
        )

    def resume_refusal(self) -> str | None:
        """Continued estimators depend on every earlier fit: they cannot be rebuilt."""
        if self.continue_training:
            return (
                "a run with model.continue_training=true cannot resume: a continued estimator "
                "depends on every earlier round's fit, which the checkpoint does not hold "
                "(fitted estimators are never stored); start the run again"
            )
        return None

    def initialise(self, input_dim, generator, device=None) -> StackedEstimators:
        """One unfitted system (its first training job fits it)."""
        return StackedEstimators(self, [None], [None], torch.device(device or "cpu"))

    def restore(self, input_dim, n_systems, state, device=None) -> StackedEstimators:
        """Refit every system on the rows and seed of its last fit (CONVENTIONS.md rule 6)."""
        refusal = self.resume_refusal()
        if refusal:
            raise ConfigError("resume", True, refusal)
        fits = [
            _Fit(X.cpu().numpy(), y.cpu().numpy(), int(seed))
            for X, y, seed in zip(state["X"], state["y"], state["seed"].tolist(), strict=True)
        ]
        estimators = [_fit(self, None, fit) for fit in fits]
        return StackedEstimators(self, estimators, fits, torch.device(device or "cpu"))

    def __repr__(self) -> str:
        return (
            f"SklearnModel(estimator={self.factory or self._object!r}, "
            f"continue_training={self.continue_training})"
        )


@dataclass
class _Fit:
    """The rows and seed one system's estimator was last fitted on."""

    X: np.ndarray
    y: np.ndarray
    seed: int


def _fit(spec: SklearnModel, previous, fit: _Fit):
    """A fitted estimator (module level, so worker processes can run it)."""
    classes = np.unique(fit.y)
    if len(classes) < 2:
        return ConstantEstimator(classes[0] if len(classes) else 0)
    if (
        spec.continue_training
        and previous is not None
        and not isinstance(previous, ConstantEstimator)
    ):
        if callable(getattr(previous, "partial_fit", None)):
            previous.partial_fit(fit.X, fit.y, classes=np.array([0, 1]))
            return previous
        previous.set_params(warm_start=True)
        return previous.fit(fit.X, fit.y)
    return spec.seeded(fit.seed).fit(fit.X, fit.y)


@dataclass
class StackedEstimators(Classifier):
    """One fitted estimator per system (``estimators[s]``), with the rows each was fitted on."""

    spec: SklearnModel
    estimators: list
    fits: list
    _device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def n_systems(self) -> int:
        """Systems held."""
        return len(self.estimators)

    @property
    def device(self) -> torch.device:
        """Where probabilities are returned (the estimators compute on the CPU)."""
        return self._device

    def proba(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Probability of class 1 ``(n_systems, n)``, float64, from ``predict_proba``."""
        if torch.is_tensor(X):
            X = X.detach().cpu().numpy()
        X = np.asarray(X, dtype=np.float64)
        shared = X.ndim == 2
        out = np.empty((self.n_systems, X.shape[-2]))
        for s, estimator in enumerate(self.estimators):
            if estimator is None:
                raise RuntimeError("the estimator is not fitted yet")
            rows = X if shared else X[s]
            if len(rows) == 0:
                continue
            proba = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
            classes = list(getattr(estimator, "classes_", [0, 1]))
            out[s] = proba[:, classes.index(1)] if 1 in classes else 0.0
        return torch.as_tensor(out, device=self._device)

    def logits(self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The log-odds of :meth:`proba` (not differentiable: these models have no gradients)."""
        return torch.logit(self.proba(X))

    def training_job(self, X, y, schedule, generator, keys=None, space=None) -> _FitJob:
        """Refit (or continue) each system on its rows.

        ``X`` is ``(n_systems, n, d)``, or ``(1, n, d)`` or ``(n, d)``: rows every system shares.
        Each system's ``random_state`` is a hash of one draw of ``generator`` and the system's
        key (``keys``; default: its position), so it does not depend on which other systems
        are fitted in the same job (CONVENTIONS.md rule 7). ``space`` is not needed.
        """
        draw = int(torch.randint(0, 2**31, (1,), generator=generator))
        keys = torch.arange(self.n_systems) if keys is None else torch.as_tensor(keys)
        seeds = (counter_rng.hash_keys(draw, keys) % _SEED_LIMIT).tolist()
        X = torch.as_tensor(X).detach().cpu().numpy().astype(np.float64)
        y = torch.as_tensor(y).detach().cpu().numpy().astype(np.int64)
        if X.ndim == 2:  # rows (n, d) shared by every system
            X, y = X[None], y.reshape(1, -1)
        if X.shape[0] != self.n_systems:  # one shared set of rows
            if X.shape[0] != 1:
                raise ValueError(
                    f"rows for {X.shape[0]} systems given to a classifier of {self.n_systems}"
                )
            X = np.repeat(X, self.n_systems, axis=0)
            y = np.repeat(y, self.n_systems, axis=0)
        fits = [_Fit(X[s], y[s], seeds[s]) for s in range(self.n_systems)]
        return _FitJob(self, fits)

    def fit(self, X, y, schedule=None, generator=None, pool=None) -> StackedEstimators:
        """Fit each system on its own rows, in place; returns self."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.training_job(torch.as_tensor(X), torch.as_tensor(y), schedule, generator).run(pool)
        return self

    def _copy(self, estimator):
        # Refitting replaces estimators, so copies may share them; continuing mutates them.
        return copy.deepcopy(estimator) if self.spec.continue_training else estimator

    def replicate(self, n_systems: int) -> StackedEstimators:
        """``n_systems`` copies of this single system."""
        if self.n_systems != 1:
            raise ValueError("only a single-system classifier can be replicated")
        return StackedEstimators(
            self.spec,
            [self._copy(self.estimators[0]) for _ in range(n_systems)],
            [self.fits[0]] * n_systems,
            self._device,
        )

    def select(self, systems: Sequence[int]) -> StackedEstimators:
        """Copies of the given systems, in that order."""
        return StackedEstimators(
            self.spec,
            [self._copy(self.estimators[s]) for s in systems],
            [self.fits[s] for s in systems],
            self._device,
        )

    def put(self, systems: Sequence[int], part: StackedEstimators) -> None:
        """Overwrite the given systems with the systems of ``part``."""
        for i, s in enumerate(systems):
            self.estimators[s] = part.estimators[i]
            self.fits[s] = part.fits[i]

    def clone(self) -> StackedEstimators:
        """An independent copy of all systems."""
        return self.select(range(self.n_systems))

    def parameters_of(self, system: int) -> list[np.ndarray]:
        """None: these models are not parametric (the perturbation metric is missing)."""
        return []

    def state(self) -> dict:
        """Each system's last training rows and seed (a resumed run refits on them)."""
        if any(f is None for f in self.fits):
            raise RuntimeError("the estimator is not fitted yet: it has no state to store")
        return {
            "X": [torch.as_tensor(f.X) for f in self.fits],
            "y": [torch.as_tensor(f.y) for f in self.fits],
            "seed": torch.tensor([f.seed for f in self.fits], dtype=torch.int64),
        }


@dataclass
class _FitJob:
    """A training job that fits each system's estimator, shared with worker processes."""

    classifier: StackedEstimators
    fits: list

    def run(self, pool=None) -> None:
        """Fit every system (in worker processes where there are any)."""
        classifier = self.classifier
        # A refit starts afresh: the previous estimator is only sent along to be continued.
        continued = classifier.spec.continue_training
        calls = [
            (_fit, (classifier.spec, classifier.estimators[s] if continued else None, fit))
            for s, fit in enumerate(self.fits)
        ]
        if pool is None or pool.processes == 1:
            results = [fn(*args) for fn, args in calls]
        else:
            results = pool.run_all(calls, movable=[True] * len(calls))
        classifier.estimators = list(results)
        classifier.fits = list(self.fits)

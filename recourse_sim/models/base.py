"""What the simulation, the generators and the metrics need of a model, whatever its kind.

A model *specification* (what a YAML file of ``configs/model`` instantiates) builds and restores
*classifiers*: the trained state of every system of one grid column, batched over systems so a
search or an evaluation covers all of them in one call. Three kinds exist:

* the built-in dense networks (:mod:`recourse_sim.models.classifier`), trained in lockstep by
  the hand-written fast path where it covers the architecture and by autograd otherwise;
* any ``torch.nn.Module`` from a user's factory (:mod:`recourse_sim.models.torch_module`),
  trained with autograd, vectorised over systems where ``torch.func.vmap`` can;
* any object with scikit-learn's ``fit``/``predict_proba`` (:mod:`recourse_sim.models.sklearn`):
  no gradients, so only gradient-free generators work on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch


class TrainingTask(Protocol):
    """A training job that is not a lockstep stack: it runs itself, sharing work with ``pool``."""

    def run(self, pool) -> None:
        """Train in place."""


class ModelSpec(ABC):
    """A kind of classifier: how to build, train and restore one column of the system grid."""

    #: Short name of the model family (``mlp``, ``torch_module``, ``sklearn``, ...).
    kind: str = "model"
    #: Whether :meth:`Classifier.logits` is differentiable in its input (gradient generators).
    differentiable: bool = True
    #: Whether the model has parameter tensors (the perturbation metric needs them).
    parametric: bool = True
    #: Independently trained networks per system (deep ensembles); 1 otherwise.
    n_members: int = 1
    #: Dropout probability of the built-in networks' search masks (0: none).
    dropout: float = 0.0
    #: Whether gradient searches draw dropout masks (built-in networks only).
    dropout_in_search: bool = False
    #: Hidden-layer widths of the built-in networks' search masks.
    hidden_sizes: tuple[int, ...] = ()
    #: Whether training all systems at once costs about as much as training a few (vectorised
    #: networks): then a round retrains the whole stack and puts the skipped systems back.
    #: Otherwise only the systems due for retraining are trained.
    trains_together: bool = True

    @abstractmethod
    def initialise(
        self,
        input_dim: int,
        generator: torch.Generator,
        device: str | torch.device | None = None,
    ) -> Classifier:
        """A freshly initialised single system; its random draws come from ``generator``."""

    @abstractmethod
    def restore(
        self,
        input_dim: int,
        n_systems: int,
        state: object,
        device: str | torch.device | None = None,
    ) -> Classifier:
        """The classifier whose :meth:`Classifier.state` was ``state``."""

    def resume_refusal(self) -> str | None:
        """Why a run of this model cannot be resumed from a checkpoint (None: it can)."""
        return None


class Classifier(ABC):
    """The trained state of ``n_systems`` systems of one :class:`ModelSpec`.

    Inputs are batched per system: ``X`` has shape ``(n_systems, n, d)``; a 2-d ``X`` given to
    :meth:`proba` is shared by every system.
    """

    spec: ModelSpec
    n_systems: int

    @property
    def n_members(self) -> int:
        """Networks per system."""
        return self.spec.n_members

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where inputs are moved to."""

    @abstractmethod
    def logits(self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logit of the favourable class ``(n_systems, n)``.

        Differentiable in ``X`` where :attr:`ModelSpec.differentiable` says so.
        """

    def member_logits(
        self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Each member's logit ``(n_systems, n_members, n)`` (one member: the logit itself)."""
        return self.logits(X, masks).unsqueeze(1)

    @abstractmethod
    def proba(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Probability of the favourable class ``(n_systems, n)`` on :attr:`device`."""

    def proba_of(self, system: int, X: torch.Tensor | np.ndarray) -> np.ndarray:
        """Probabilities ``(n,)`` of one system on rows ``X`` ``(n, d)``."""
        return self.select([system]).proba(X)[0].cpu().numpy().astype(np.float64)

    @abstractmethod
    def training_job(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule,
        generator: torch.Generator,
        keys: Sequence[int] | None = None,
        space=None,
    ):
        """A job that trains each system on its own rows ``X[s]``, ``y[s]``, in place.

        ``keys`` are the systems' stable keys, for randomness that must not depend on which
        other systems share the job (None: their positions). ``space`` is the data's
        :class:`~recourse_sim.generators.base.FeatureSpace` (mutability, scaling, bounds), for
        objectives that search counterfactuals while training (None: inferred from ``X``).

        Either a lockstep tuple for :func:`~recourse_sim.models.training.train_stacks` or a
        :class:`TrainingTask`; :func:`~recourse_sim.models.training.train_jobs` runs both.
        """

    @abstractmethod
    def replicate(self, n_systems: int) -> Classifier:
        """``n_systems`` independent copies of this single system."""

    @abstractmethod
    def select(self, systems: Sequence[int]) -> Classifier:
        """Copies of the given systems, in that order."""

    @abstractmethod
    def put(self, systems: Sequence[int], part: Classifier) -> None:
        """Overwrite the given systems (in that order) with the systems of ``part``."""

    @abstractmethod
    def clone(self) -> Classifier:
        """An independent copy of all systems."""

    @abstractmethod
    def parameters_of(self, system: int) -> list[np.ndarray]:
        """Parameter arrays of one system, members pooled (empty for non-parametric models)."""

    def member_keys(self) -> torch.Tensor:
        """Member index of each network, for keyed random draws."""
        return torch.arange(self.n_members, device=self.device).repeat(self.n_systems)

    @abstractmethod
    def state(self) -> object:
        """Tensors and plain containers from which :meth:`ModelSpec.restore` rebuilds this."""

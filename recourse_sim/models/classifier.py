"""The classifiers of the reference study and the stacked state that trains many copies at once.

``LogisticRegression``, ``MLP`` and ``DeepEnsemble`` are *specifications* (what the YAML files in
``configs/model`` instantiate). :class:`StackedClassifier` is the trained state of a whole column of
the system grid: every (generator, repetition) system of one model, each with its own weights,
and for a deep ensemble its members (Lakshminarayanan et al., NeurIPS 2017) inside each system.

Reference semantics (AlgorithmicRecourseDynamics.jl v0.1.2 with CounterfactualExplanations.jl
v0.1.5; reference-semantics §1.2 and §1.6):

* logistic regression is one affine layer emitting a logit;
* an MLP has ReLU hidden layers (synthetic preset: one layer of 32; real-world preset: two of 64
  with dropout 0.1);
* a deep ensemble has 5 independently initialised MLPs, trained independently; its logit (used by
  the counterfactual loss) is the mean member logit and its probability the mean member probability;
* pre-training runs 100 epochs; every retraining continues from the current weights for 10 epochs
  with a fresh Adam(1e-3), batch size 1 and no shuffling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.base import Classifier, ModelSpec
from recourse_sim.models.counterfactual_training import (
    CounterfactualTraining,
    CounterfactualTrainingJob,
    check_training,
    warn_one_logit,
)
from recourse_sim.models.network import (
    Architecture,
    StackedNetworks,
    check_activation,
    check_dropout,
    check_hidden_sizes,
    check_training_path,
)
from recourse_sim.models.training import (
    TrainingJob,
    TrainingSchedule,
    train_jobs,
    train_with_objective,
)
from recourse_sim.utils.workers import WorkerPool


def schedule_from(value: TrainingSchedule | Mapping | None, default: TrainingSchedule, key: str):
    """A checked training schedule from a config mapping; keys left out keep ``default``'s."""
    if value is None:
        return default
    if isinstance(value, TrainingSchedule):
        return value.validate(key)
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a mapping with keys epochs, batch_size, learning_rate")
    unknown = set(value) - {"epochs", "batch_size", "learning_rate"}
    if unknown:
        raise ConfigError(key, sorted(unknown), "keys epochs, batch_size, learning_rate")
    # Keys left out keep the default's values (pre-training: 100 epochs, not the class's 10).
    return replace(default, **dict(value)).validate(key)


class ClassifierSpec(ModelSpec):
    """Architecture and training schedules of one kind of built-in classifier.

    Args:
        hidden_sizes: Widths of the hidden layers (empty for logistic regression).
        activation: Hidden activation, ``relu``, ``tanh`` or ``sigmoid``.
        dropout: Dropout probability after each hidden activation.
        n_members: Independently initialised and trained networks per system (deep ensembles).
        pretrain: Schedule of the initial training (epochs, batch_size, learning_rate).
        retrain: Schedule of each round's warm-start retraining.
        dropout_in_search: Keep dropout active in the counterfactual search's gradient passes, as
            Flux's automatic train mode does in the reference implementation. Off: deterministic
            gradients.
        training_path: ``auto`` (the hand-written fast path where it covers the activation,
            autograd otherwise), ``fast`` or ``autograd`` (same semantics, torch's gradients).
        training: ``standard`` (the classification loss) or ``counterfactual`` (counterfactual
            training, :mod:`~recourse_sim.models.counterfactual_training`, for pre-training and
            every retraining; on the batched fast path or by autograd, as ``training_path``).
        outputs: 1 (one logit, the reference study's networks) or 2 (one logit per class,
            softmax: the counterfactual-training paper's networks; the energy terms then act on
            the target class's own logit, which leaves the other free, so they do not cap the
            model's confidence as they do on a single logit).
        counterfactual_training: Its settings (keys of
            :class:`~recourse_sim.models.counterfactual_training.CounterfactualTraining`, and
            ``search``); keys left out keep the paper's defaults.
    """

    kind = "classifier"

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        n_members: int = 1,
        pretrain: Mapping | TrainingSchedule | None = None,
        retrain: Mapping | TrainingSchedule | None = None,
        dropout_in_search: bool = True,
        training_path: str = "auto",
        training: str = "standard",
        counterfactual_training: Mapping | CounterfactualTraining | None = None,
        outputs: int = 1,
    ):
        self.hidden_sizes = check_hidden_sizes("model.hidden_sizes", hidden_sizes)
        self.outputs = checks.integer("model.outputs", outputs, minimum=1)
        checks.check_choice("model.outputs", self.outputs, (1, 2))
        self.activation = check_activation("model.activation", activation)
        self.dropout = check_dropout("model.dropout", dropout)
        self.n_members = checks.integer("model.n_members", n_members, minimum=1)
        self.pretrain = schedule_from(pretrain, TrainingSchedule(epochs=100), "model.pretrain")
        self.retrain = schedule_from(retrain, TrainingSchedule(epochs=10), "model.retrain")
        self.dropout_in_search = checks.flag("model.dropout_in_search", dropout_in_search)
        self.training_path = check_training_path(
            "model.training_path", training_path, self.activation
        )
        self.training = check_training("model.training", training)
        self.counterfactual_training = CounterfactualTraining.from_config(
            "model.counterfactual_training", counterfactual_training
        )
        if self.training == "counterfactual" and self.outputs == 1:
            warn_one_logit("model.outputs=2")

    def architecture(self, input_dim: int) -> Architecture:
        """The network layout for ``input_dim`` features."""
        return Architecture(
            int(input_dim),
            self.hidden_sizes,
            self.activation,
            self.dropout,
            output_dim=self.outputs,
            training_path=self.training_path,
        )

    def initialise(
        self,
        input_dim: int,
        generator: torch.Generator,
        device: str | torch.device | None = None,
    ) -> StackedClassifier:
        """A freshly initialised single system (all its members) on ``device`` (default: CPU).

        The weights are drawn from ``generator`` and do not depend on ``device``.
        """
        nets = StackedNetworks(self.architecture(input_dim), self.n_members, device=device)
        return StackedClassifier(self, nets.initialise(generator), n_systems=1)

    def restore(
        self,
        input_dim: int,
        n_systems: int,
        state: object,
        device: str | torch.device | None = None,
    ) -> StackedClassifier:
        """The classifier whose :meth:`StackedClassifier.state` (its flat weights) is ``state``."""
        flat = torch.as_tensor(state).to(device=device)
        nets = StackedNetworks(self.architecture(input_dim), n_systems * self.n_members, flat)
        return StackedClassifier(self, nets, n_systems)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hidden_sizes={list(self.hidden_sizes)}, "
            f"activation={self.activation!r}, dropout={self.dropout}, n_members={self.n_members}"
            + (f", outputs={self.outputs}" if self.outputs != 1 else "")
            + (
                f", training=counterfactual [{self.counterfactual_training.describe()}])"
                if self.training == "counterfactual"
                else ")"
            )
        )


class LogisticRegression(ClassifierSpec):
    """Logistic regression: a single affine layer on the features."""

    kind = "logistic"

    def __init__(
        self,
        pretrain=None,
        retrain=None,
        training_path: str = "auto",
        training: str = "standard",
        counterfactual_training: Mapping | None = None,
        outputs: int = 1,
    ):
        super().__init__(
            hidden_sizes=(),
            pretrain=pretrain,
            retrain=retrain,
            training_path=training_path,
            training=training,
            counterfactual_training=counterfactual_training,
            outputs=outputs,
        )


class MLP(ClassifierSpec):
    """Multi-layer perceptron with one logit output."""

    kind = "mlp"

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        pretrain=None,
        retrain=None,
        dropout_in_search: bool = True,
        training_path: str = "auto",
        training: str = "standard",
        counterfactual_training: Mapping | None = None,
        outputs: int = 1,
    ):
        super().__init__(
            hidden_sizes,
            activation,
            dropout,
            1,
            pretrain,
            retrain,
            dropout_in_search,
            training_path,
            training,
            counterfactual_training,
            outputs,
        )


class DeepEnsemble(ClassifierSpec):
    """Deep ensemble of independently trained MLPs (Lakshminarayanan et al., NeurIPS 2017)."""

    kind = "deep_ensemble"

    def __init__(
        self,
        n_members: int = 5,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        pretrain=None,
        retrain=None,
        dropout_in_search: bool = True,
        training_path: str = "auto",
        training: str = "standard",
        counterfactual_training: Mapping | None = None,
        outputs: int = 1,
    ):
        super().__init__(
            hidden_sizes,
            activation,
            dropout,
            n_members,
            pretrain,
            retrain,
            dropout_in_search,
            training_path,
            training,
            counterfactual_training,
            outputs,
        )


@dataclass
class StackedClassifier(Classifier):
    """The weights of ``n_systems`` systems of one classifier spec, ``n_members`` nets each.

    Network ``s * n_members + m`` is member ``m`` of system ``s``. Inputs are batched per system:
    ``X`` has shape ``(n_systems, n, d)``.
    """

    spec: ClassifierSpec
    nets: StackedNetworks
    n_systems: int

    @property
    def n_members(self) -> int:
        """Networks per system."""
        return self.spec.n_members

    def _per_net(self, X: torch.Tensor) -> torch.Tensor:
        return X.repeat_interleave(self.n_members, dim=0) if self.n_members > 1 else X

    def logits(self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean member logit ``(n_systems, n)``; differentiable in ``X``."""
        logits = self.nets.logits(self._per_net(X.to(torch.float32)), masks)
        return logits.view(self.n_systems, self.n_members, -1).mean(dim=1)

    def member_logits(
        self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Each member's logit ``(n_systems, n_members, n)``; differentiable in ``X``."""
        logits = self.nets.logits(self._per_net(X.to(torch.float32)), masks)
        return logits.view(self.n_systems, self.n_members, -1)

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there)."""
        return self.nets.flat.device

    def proba(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Positive-class probability ``(n_systems, n)`` on :attr:`device`: the mean member one."""
        if torch.is_tensor(X):
            X = X.to(device=self.device, dtype=torch.float32)
        else:
            X = torch.tensor(X, dtype=torch.float32, device=self.device)
        if X.ndim == 2:  # the same rows for every system
            X = X.unsqueeze(0).expand(self.n_systems, -1, -1)
        with torch.no_grad():
            probs = torch.sigmoid(self.nets.logits(self._per_net(X)))
        return probs.view(self.n_systems, self.n_members, -1).mean(dim=1)

    def fit(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        generator: torch.Generator,
        pool: WorkerPool | None = None,
    ) -> StackedClassifier:
        """Train each system (each of its members) on its own rows, in place; returns self.

        ``pool`` shares the networks between processes (see :func:`train_lockstep`).
        """
        train_jobs([self.training_job(X, y, schedule, generator)], pool)
        return self

    def training_job(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        generator: torch.Generator,
        keys: Sequence[int] | None = None,
        space=None,
    ) -> TrainingJob | CounterfactualTrainingJob:
        """What :meth:`fit` trains, for :func:`train_jobs` (several classifiers at once).

        ``keys`` (the systems' keys) are not needed: every network's randomness (its dropout
        stream) is drawn in network order from ``generator``. ``space`` (the data's
        :class:`~recourse_sim.generators.base.FeatureSpace`) is what counterfactual training
        searches in; standard training does not need it.
        """
        if self.spec.training == "counterfactual":
            return CounterfactualTrainingJob(
                self, X, y, schedule, generator, space, self._train_with_objective
            )
        return (self.nets, self._per_net(X), self._per_net(y), schedule, generator)

    def _train_with_objective(self, X, y, schedule, generator, objective) -> None:
        """The training loop with ``objective``'s extra terms, every network in this process."""
        seeds = None
        if self.nets.architecture.dropout > 0:
            seeds = torch.randint(0, 2**62, (self.nets.n_nets,), generator=generator).tolist()
        X = self._per_net(X.to(device=self.device, dtype=torch.float32))
        y = self._per_net(y.to(device=self.device))
        train_with_objective(self.nets, X, y, schedule, seeds, objective)

    def replicate(self, n_systems: int) -> StackedClassifier:
        """``n_systems`` independent copies of this single system."""
        if self.n_systems != 1:
            raise ValueError("only a single-system classifier can be replicated")
        order = np.tile(np.arange(self.n_members), n_systems)
        return StackedClassifier(self.spec, self.nets.take(order), n_systems)

    def _nets_of(self, systems: Sequence[int]) -> list[int]:
        m = self.n_members
        return [s * m + j for s in systems for j in range(m)]

    def select(self, systems: Sequence[int]) -> StackedClassifier:
        """Copies of the given systems, in that order."""
        return StackedClassifier(self.spec, self.nets.take(self._nets_of(systems)), len(systems))

    def put(self, systems: Sequence[int], part: StackedClassifier) -> None:
        """Overwrite the given systems (in that order) with the systems of ``part``."""
        if len(systems):
            self.nets.put(self._nets_of(systems), part.nets)

    def state(self) -> torch.Tensor:
        """The flat weights of every network (what :meth:`ClassifierSpec.restore` takes)."""
        return self.nets.flat

    def clone(self) -> StackedClassifier:
        """An independent copy of all systems."""
        return StackedClassifier(self.spec, self.nets.clone(), self.n_systems)

    def parameters_of(self, system: int) -> list[np.ndarray]:
        """Parameter tensors of one system, all members pooled (for perturbation metrics)."""
        tensors = []
        for member in range(self.n_members):
            net = system * self.n_members + member
            tensors.extend(t.detach().cpu().numpy().copy() for t in self.nets.parameters_of(net))
        return tensors

    def member_keys(self) -> torch.Tensor:
        """Member index of each network, for keyed random draws (dropout in the search)."""
        return torch.arange(self.n_members, device=self.device).repeat(self.n_systems)

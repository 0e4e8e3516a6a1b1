"""Bring your own ``torch.nn.Module``: any network a factory builds, trained by autograd.

``model=torch_module`` names a *factory* by import path (``model.torch_module.module._target_``);
the other keys of that node are its keyword arguments, and recourse_sim adds ``n_features``. The
factory returns a module mapping ``(n, d)`` float32 features to one logit per row, ``(n,)`` or
``(n, 1)``. Every system of a grid column holds ``n_members`` such networks (a deep ensemble when
more than one), stored as stacked tensors: network ``s * n_members + m`` is member ``m`` of
system ``s``; one *template* module runs them all through :func:`torch.func.functional_call`.

Semantics (those of the built-in networks' fast path, :mod:`recourse_sim.models.training`):

* Initialisation: each network keeps the module's own default initialisation, drawn by calling
  the factory with torch's global CPU generator seeded from the run's stream (one seed per
  network), on the CPU, then moved to the device: the same weights on every device. The global
  random state is restored afterwards.
* Training: each network sees its own rows in order, no shuffling, batches of ``batch_size``
  (the last one smaller), mean BCE-with-logits per batch, a *fresh* Adam state per ``fit`` call
  (β=(0.9, 0.999), ε=1e-8) warm-starting from the current weights, the module in train mode.
  The losses of all networks are summed before one backward pass, so each network's gradient is
  its own. With the built-in MLP's architecture and weights the result equals the fast path's
  (``tests/test_torch_module.py``).
* Prediction (``logits``, ``proba``, the counterfactual search): the module in eval mode; an
  ensemble's logit is the mean member logit, its probability the mean member probability.

Vectorisation. Where :func:`torch.func.vmap` can run the module (``vectorise: auto``), all networks
run in one call; otherwise they run one after the other in a Python loop. A classifier (with the
copies made from it) decides once per mode, train and eval, by trying vmap on its first pass in
that mode and falling back to the loop if that raises (logged at INFO, once per factory and mode
in a process); ``vectorise: never`` always loops. Both give the same results up to float
rounding. vmap runs with ``randomness="error"``, so a module with random operations
(``nn.Dropout`` in train mode) is always trained by the loop, where each network's forward pass
runs with torch's global random state set to that network's own stream: one seed per network,
drawn from the ``fit``'s generator at its start. A network's dropout masks then depend on its
seed alone, not on the other networks or the process that trains it, and the global random
state is left as it was. Random operations in eval mode (unusual) see a fixed stream per ensemble
member. Buffers (batch-norm statistics) are stacked like the parameters and updated per network
in train mode. Inputs are cast to the module's floating dtype (float32 for torch's defaults);
logits and probabilities come back as float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.base import Classifier, ModelSpec
from recourse_sim.models.classifier import schedule_from
from recourse_sim.models.counterfactual_training import (
    CounterfactualTraining,
    CounterfactualTrainingJob,
    check_training,
    warn_one_logit,
)
from recourse_sim.models.factory import Factory
from recourse_sim.models.training import (
    TrainingObjective,
    TrainingSchedule,
    _step_counts,
    adam_step,
)

log = logging.getLogger(__name__)

__all__ = ["VECTORISE", "StackedModules", "TorchModule", "TorchModuleTraining"]

#: Values of ``model.vectorise``.
VECTORISE = ("auto", "never")
#: What a factory must return.
_CONTRACT = (
    "a factory returning a torch.nn.Module that maps (n, d) features to (n,) or (n, 1) logits"
)
#: Rows of the probe input that checks a new module's output shape.
_PROBE_ROWS = 3
#: (factory name, mode) pairs whose fallback to the loop was logged in this process.
_LOGGED: set[tuple[str, str]] = set()


class TorchModule(ModelSpec):
    """A model kind whose networks come from a user's factory of ``torch.nn.Module`` objects.

    Args:
        module: A mapping with ``_target_`` (the import path of the factory) and its keyword
            arguments, or the factory itself (from Python; it must then pickle, e.g. a
            module-level function). Called as ``factory(n_features=d, **arguments)``.
        n_members: Independently initialised and trained networks per system (an ensemble).
        pretrain: Schedule of the initial training (epochs, batch_size, learning_rate).
        retrain: Schedule of each round's warm-start retraining.
        vectorise: ``auto``: all networks in one :func:`torch.func.vmap` call where the module
            allows it, else one after the other; ``never``: always one after the other.
        training: ``standard`` or ``counterfactual`` (counterfactual training, see
            :mod:`~recourse_sim.models.counterfactual_training`).
        counterfactual_training: Its settings; keys left out keep the paper's defaults.
    """

    kind = "torch_module"
    differentiable = True
    parametric = True
    dropout = 0.0
    dropout_in_search = False  # the search runs the module in eval mode
    hidden_sizes = ()

    def __init__(
        self,
        module: Mapping | Callable,
        n_members: int = 1,
        pretrain: Mapping | TrainingSchedule | None = None,
        retrain: Mapping | TrainingSchedule | None = None,
        vectorise: str = "auto",
        training: str = "standard",
        counterfactual_training: Mapping | CounterfactualTraining | None = None,
    ):
        self.factory = Factory("model.module", module, reserved=("n_features",))
        if not self.factory.accepts("n_features"):
            raise ConfigError(
                "model.module._target_",
                self.factory.name,
                "a factory that takes the keyword argument n_features",
            )
        # A factory's own early check of its arguments (see recourse_sim.models.modules).
        check = getattr(self.factory.target, "recourse_sim_check", None)
        if callable(check) and not isinstance(self.factory.target, type):
            check(**self.factory.arguments)
        self.n_members = checks.integer("model.n_members", n_members, minimum=1)
        self.pretrain = schedule_from(pretrain, TrainingSchedule(epochs=100), "model.pretrain")
        self.retrain = schedule_from(retrain, TrainingSchedule(epochs=10), "model.retrain")
        allowed = "allowed values are " + ", ".join(map(repr, VECTORISE))
        checks.text("model.vectorise", vectorise, allowed)
        checks.check_choice("model.vectorise", vectorise, VECTORISE)
        self.vectorise = vectorise
        self.training = check_training("model.training", training)
        self.counterfactual_training = CounterfactualTraining.from_config(
            "model.counterfactual_training", counterfactual_training
        )
        if self.training == "counterfactual":
            warn_one_logit("a built-in model with outputs=2")

    def build_module(self, input_dim: int, seed: int = 0) -> nn.Module:
        """One module from the factory, on the CPU, its initial weights drawn with ``seed``.

        The factory runs with torch's global CPU generator seeded with ``seed``; the global
        random state is restored afterwards. :class:`ConfigError` (key ``model.module``) if the
        result is not a module mapping ``(n, input_dim)`` to ``(n,)`` or ``(n, 1)`` logits.
        """
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            try:
                module = self.factory(n_features=int(input_dim))
            except ConfigError:
                raise
            except Exception as error:
                raise ConfigError(
                    "model.module", self.factory.name, f"{_CONTRACT}; calling it raised {error!r}"
                ) from error
            if not isinstance(module, nn.Module):
                raise ConfigError(
                    "model.module", self.factory.name, f"{_CONTRACT}; got {type(module).__name__}"
                )
            self._probe(module, int(input_dim))
        return module

    def _probe(self, module: nn.Module, input_dim: int) -> None:
        """Refuse a module whose eval-mode output on ``(3, d)`` zeros is not 3 logits."""
        x = torch.zeros(_PROBE_ROWS, input_dim, dtype=module_dtype(module))
        was_training = module.training
        try:
            module.eval()
            with torch.no_grad():
                out = module(x)
        except Exception as error:
            raise ConfigError(
                "model.module",
                self.factory.name,
                f"{_CONTRACT}; calling it on a ({_PROBE_ROWS}, {input_dim}) input raised {error!r}",
            ) from None
        finally:
            module.train(was_training)
        if not torch.is_tensor(out):
            raise ConfigError(
                "model.module", self.factory.name, f"{_CONTRACT}; got a {type(out).__name__}"
            )
        if tuple(out.shape) not in ((_PROBE_ROWS,), (_PROBE_ROWS, 1)):
            raise ConfigError(
                "model.module",
                self.factory.name,
                f"{_CONTRACT}; got shape {tuple(out.shape)} for a ({_PROBE_ROWS}, {input_dim}) "
                "input",
            )
        if not out.is_floating_point():
            raise ConfigError(
                "model.module", self.factory.name, f"{_CONTRACT}; got {out.dtype} logits"
            )

    def initialise(
        self,
        input_dim: int,
        generator: torch.Generator,
        device: str | torch.device | None = None,
    ) -> StackedModules:
        """A freshly initialised single system: ``n_members`` networks, seeds from ``generator``.

        The modules are built on the CPU and moved, so the weights do not depend on ``device``.
        """
        seeds = torch.randint(0, 2**62, (self.n_members,), generator=generator).tolist()
        modules = [self.build_module(input_dim, seed) for seed in seeds]
        params, buffers = stack_module_state(modules)
        device = torch.device("cpu") if device is None else torch.device(device)
        template = modules[0].to(device)
        return StackedModules(
            self,
            int(input_dim),
            n_systems=1,
            params={k: v.detach().to(device) for k, v in params.items()},
            buffers={k: v.detach().to(device) for k, v in buffers.items()},
            template=template,
        )

    def restore(
        self,
        input_dim: int,
        n_systems: int,
        state: object,
        device: str | torch.device | None = None,
    ) -> StackedModules:
        """The classifier whose :meth:`StackedModules.state` was ``state``."""
        device = torch.device("cpu") if device is None else torch.device(device)
        template = self.build_module(input_dim).to(device)
        n_nets = int(n_systems) * self.n_members
        if not isinstance(state, Mapping) or set(state) != {"params", "buffers"}:
            raise ValueError("a torch_module state is a dict with keys 'params' and 'buffers'")
        parts = {}
        for part, expected in (
            ("params", dict(template.named_parameters())),
            ("buffers", dict(template.named_buffers())),
        ):
            saved = state[part]
            shapes = {k: (n_nets, *v.shape) for k, v in expected.items()}
            found = {k: tuple(v.shape) for k, v in saved.items()}
            if found != shapes:
                raise ConfigError(
                    "model.module",
                    self.factory.name,
                    f"the factory that built the saved model: its {part} have shapes {found}, "
                    f"this factory's {shapes} for {n_nets} networks",
                )
            parts[part] = {
                k: saved[k].to(device=device, dtype=expected[k].dtype).clone() for k in expected
            }
        return StackedModules(self, int(input_dim), int(n_systems), template=template, **parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(module={self.factory!r}, n_members={self.n_members}, "
            f"vectorise={self.vectorise!r}"
            + (
                f", training=counterfactual [{self.counterfactual_training.describe()}])"
                if self.training == "counterfactual"
                else ")"
            )
        )


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter or buffer (float32 if none)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


class StackedModules(Classifier):
    """The networks of ``n_systems`` systems of one :class:`TorchModule`, stacked.

    Attributes:
        spec: The model specification (its factory rebuilds :attr:`template` after unpickling).
        input_dim: Number of features.
        n_systems: Number of systems.
        params: Parameters by name, each ``(n_systems * n_members, ...)``.
        buffers: Buffers by name (e.g. batch-norm statistics), stacked likewise.
        template: The module that :func:`torch.func.functional_call` runs with each network's
            tensors (its own tensors are never used). Never pickled: rebuilt from the factory.
        vectorised: Per mode (``train``, ``eval``) whether all networks run in one vmap call;
            None until the first pass in that mode decides (see the module docstring).
    """

    def __init__(
        self,
        spec: TorchModule,
        input_dim: int,
        n_systems: int,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        template: nn.Module | None = None,
        vectorised: dict[str, bool | None] | None = None,
    ):
        self.spec = spec
        self.input_dim = int(input_dim)
        self.n_systems = int(n_systems)
        # Contiguous: the fused Adam kernel reads parameters and gradients as flat memory.
        self.params = {k: v.contiguous() for k, v in params.items()}
        self.buffers = {k: v.contiguous() for k, v in buffers.items()}
        if template is None:
            template = spec.build_module(self.input_dim).to(self.device)
        self.template = template
        self.dtype = module_dtype(template)
        #: Whether each mode (``train``, ``eval``) runs all networks in one vmap call (None: not
        #: decided yet). Copies made by replicate/select/clone share this dict, and so the decision.
        self.vectorised: dict[str, bool | None] = (
            vectorised if vectorised is not None else dict.fromkeys(("eval", "train"))
        )
        if spec.vectorise == "never":
            self.vectorised.update(eval=False, train=False)

    # --- structure ---------------------------------------------------------------------------

    @property
    def n_nets(self) -> int:
        """Networks in all: ``n_systems * n_members``."""
        return self.n_systems * self.n_members

    @property
    def device(self) -> torch.device:
        """Where the networks' tensors live (inputs are moved there)."""
        for tensor in [*self.params.values(), *self.buffers.values()]:
            return tensor.device
        return torch.device("cpu")

    def _derived(self, params, buffers, n_systems: int) -> StackedModules:
        return StackedModules(
            self.spec,
            self.input_dim,
            n_systems,
            params,
            buffers,
            template=self.template,
            vectorised=self.vectorised,
        )

    def _take(self, nets: Sequence[int], n_systems: int) -> StackedModules:
        index = torch.as_tensor(list(nets), dtype=torch.long, device=self.device)
        params = {k: v[index].clone() for k, v in self.params.items()}
        buffers = {k: v[index].clone() for k, v in self.buffers.items()}
        return self._derived(params, buffers, n_systems)

    def replicate(self, n_systems: int) -> StackedModules:
        """``n_systems`` independent copies of this single system."""
        if self.n_systems != 1:
            raise ValueError("only a single-system classifier can be replicated")
        return self._take(list(range(self.n_members)) * int(n_systems), int(n_systems))

    def select(self, systems: Sequence[int]) -> StackedModules:
        """Copies of the given systems, in that order."""
        m = self.n_members
        systems = [int(s) for s in systems]
        return self._take([s * m + j for s in systems for j in range(m)], len(systems))

    def put(self, systems: Sequence[int], part: Classifier) -> None:
        """Overwrite the given systems (in that order) with the systems of ``part``."""
        if not isinstance(part, StackedModules) or set(part.params) != set(self.params):
            raise ValueError("put needs a StackedModules of the same module")
        systems = [int(s) for s in systems]
        if len(systems) != part.n_systems:
            raise ValueError(f"{len(systems)} systems given for a part of {part.n_systems}")
        m = self.n_members
        index = torch.as_tensor(
            [s * m + j for s in systems for j in range(m)], dtype=torch.long, device=self.device
        )
        with torch.no_grad():
            for mine, theirs in ((self.params, part.params), (self.buffers, part.buffers)):
                for name, tensor in mine.items():
                    tensor[index] = theirs[name].to(tensor.device)

    def clone(self) -> StackedModules:
        """An independent copy of all systems."""
        params = {k: v.clone() for k, v in self.params.items()}
        buffers = {k: v.clone() for k, v in self.buffers.items()}
        return self._derived(params, buffers, self.n_systems)

    def parameters_of(self, system: int) -> list[np.ndarray]:
        """Parameter arrays of one system, members pooled (buffers left out)."""
        arrays = []
        for member in range(self.n_members):
            net = int(system) * self.n_members + member
            arrays.extend(v[net].detach().cpu().numpy().copy() for v in self.params.values())
        return arrays

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{"params": {...}, "buffers": {...}}``: CPU tensors in plain dicts (weights-only)."""
        return {
            "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            "buffers": {k: v.detach().cpu().clone() for k, v in self.buffers.items()},
        }

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("template")  # worker processes rebuild it from the factory, imported by path
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.template = self.spec.build_module(self.input_dim).to(self.device)

    # --- forward passes ----------------------------------------------------------------------

    def _per_net(self, X: torch.Tensor) -> torch.Tensor:
        return X.repeat_interleave(self.n_members, dim=0) if self.n_members > 1 else X

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        return self._per_net(X.to(device=self.device, dtype=self.dtype))

    def _call(self, params, buffers, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _vmapped(self, params, buffers, X: torch.Tensor) -> torch.Tensor:
        return vmap(self._call, randomness="error")(params, buffers, X)

    def _looped(self, params, buffers, X: torch.Tensor, streams: _Streams) -> torch.Tensor:
        outputs = []
        for net in range(X.shape[0]):
            p = {k: v[net] for k, v in params.items()}
            b = {k: v[net] for k, v in buffers.items()}
            outputs.append(streams.run(net, lambda p=p, b=b, x=X[net]: self._call(p, b, x)))
        return torch.stack(outputs)

    def _forward(
        self, mode: str, params, buffers, X: torch.Tensor, streams: _Streams
    ) -> torch.Tensor:
        """Logits ``(n_nets, n)`` of each network on its own rows ``X`` ``(n_nets, n, d)``.

        On the first call of a mode whose vectorisation is undecided, vmap is tried; if it raises,
        ``buffers`` are restored (a train-mode pass may have updated some) and the loop runs.
        """
        n_nets, n = X.shape[:2]
        self.template.train(mode == "train")
        decided = self.vectorised[mode]
        if decided:
            out = self._vmapped(params, buffers, X)
        elif decided is False:
            out = self._looped(params, buffers, X, streams)
        else:
            saved = {k: v.clone() for k, v in buffers.items()}
            try:
                out = self._vmapped(params, buffers, X)
                self.vectorised[mode] = True
            except Exception as error:
                with torch.no_grad():
                    for k, v in buffers.items():
                        v.copy_(saved[k])
                self.vectorised[mode] = False
                if (self.spec.factory.name, mode) not in _LOGGED:
                    _LOGGED.add((self.spec.factory.name, mode))
                    log.info(
                        "torch_module %s: %s-mode passes run network by network "
                        "(torch.func.vmap failed: %s)",
                        self.spec.factory.name,
                        mode,
                        error,
                    )
                out = self._looped(params, buffers, X, streams)
        return out.reshape(n_nets, n)

    def _net_logits(self, X: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits ``(n_nets, n)`` on per-network rows; differentiable in ``X``."""
        if X.shape[0] == 0 or X.shape[1] == 0:
            return X.new_zeros(X.shape[:2]).to(torch.float32)
        if self.vectorised["eval"]:
            self.template.eval()
            out = self._vmapped(self.params, self.buffers, X)
            return out.reshape(X.shape[:2]).to(torch.float32)
        # Eval mode: a module's own random operations (unusual) see a fixed stream per member.
        streams = _Streams(list(range(self.n_members)) * self.n_systems, self.device)
        with streams.forked():
            out = self._forward("eval", self.params, self.buffers, X, streams)
        return out.to(torch.float32)

    def logits(self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean member logit ``(n_systems, n)``; differentiable in ``X``; ``masks`` unused."""
        return self.member_logits(X).mean(dim=1)

    def member_logits(
        self, X: torch.Tensor, masks: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Each member's logit ``(n_systems, n_members, n)``; differentiable in ``X``."""
        logits = self._net_logits(self._inputs(X))
        return logits.view(self.n_systems, self.n_members, X.shape[-2])

    def proba(self, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Positive-class probability ``(n_systems, n)`` (float32): the mean member one."""
        if torch.is_tensor(X):
            X = X.to(device=self.device, dtype=self.dtype)
        else:
            X = torch.tensor(np.asarray(X), dtype=self.dtype, device=self.device)
        if X.ndim == 2:  # the same rows for every system
            X = X.unsqueeze(0).expand(self.n_systems, -1, -1)
        with torch.no_grad():
            probs = torch.sigmoid(self._net_logits(self._per_net(X)))
        return probs.view(self.n_systems, self.n_members, X.shape[-2]).mean(dim=1)

    # --- training ----------------------------------------------------------------------------

    def training_job(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        generator: torch.Generator,
        keys: Sequence[int] | None = None,
        space=None,
    ) -> TorchModuleTraining | CounterfactualTrainingJob:
        """A task training each system on its own rows ``X[s]``, ``y[s]`` (in this process).

        ``keys`` are not needed: each network's random stream is drawn in network order.
        ``space`` is the feature space counterfactual training searches in.

        The per-network seeds of the module's own random operations are drawn from
        ``generator`` here (none when there is nothing to train).
        """
        if self.spec.training == "counterfactual":
            return CounterfactualTrainingJob(
                self, X, y, schedule, generator, space, self._train_with_objective
            )
        return TorchModuleTraining(self, X, y, schedule, generator)

    def _train_with_objective(self, X, y, schedule, generator, objective) -> None:
        """The training loop with ``objective``'s extra terms."""
        if not self.params or self.n_nets == 0:
            return
        seeds = torch.randint(0, 2**62, (self.n_nets,), generator=generator).tolist()
        X = self._per_net(X.to(device=self.device, dtype=self.dtype))
        y = self._per_net(y.to(device=self.device, dtype=self.dtype))
        self._train(X, y, schedule, seeds, objective)

    def fit(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        generator: torch.Generator,
        pool=None,
    ) -> StackedModules:
        """Train each system (each of its members) on its own rows, in place; returns self."""
        self.training_job(X, y, schedule, generator).run(pool)
        return self

    def _train(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        seeds: list[int],
        objective: TrainingObjective | None = None,
    ) -> None:
        """The training loop (see the module docstring), in place.

        Args:
            X: Features ``(n_nets, N, d)`` of each network's own rows.
            y: Labels ``(n_nets, N)`` in {0, 1}.
            schedule: Epochs, batch size and learning rate.
            seeds: One seed per network for the module's own random operations.
            objective: Extra loss terms (counterfactual training); their points are evaluated
                in eval mode, apart from the batch, so they never enter its batch statistics.
        """
        n_rows = X.shape[1]
        batch = int(schedule.batch_size)
        lr = float(schedule.learning_rate)
        n_batches = -(-n_rows // batch)
        class_weight = 1.0 if objective is None else float(objective.class_weight)
        device = self.device
        streams = _Streams(seeds, device)
        leaves = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
        names = list(leaves)
        moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in self.params.items()}
        # As the fast path: Adam's moments flushed to zero once subnormal (~10x faster here).
        torch.set_flush_denormal(True)
        try:
            with streams.forked():
                for epoch in range(int(schedule.epochs)):
                    if objective is not None:
                        objective.start_epoch(epoch, int(schedule.epochs), n_batches)
                    steps = _step_counts(epoch, n_batches, device)
                    batches = enumerate(zip(steps, range(0, n_rows, batch), strict=True))
                    for index, (step, start) in batches:
                        stop = min(start + batch, n_rows)
                        extra = None if objective is None else objective.inputs(index)
                        with torch.enable_grad():
                            logits = self._forward(
                                "train", leaves, self.buffers, X[:, start:stop], streams
                            )
                            losses = F.binary_cross_entropy_with_logits(
                                logits, y[:, start:stop].to(logits.dtype), reduction="none"
                            )
                            total = losses.mean(dim=1)
                            if class_weight != 1.0:
                                total = class_weight * total
                            if extra is not None:
                                at = self._forward(
                                    "eval", leaves, self.buffers, extra.to(self.dtype), streams
                                )
                                at = at.to(total.dtype).unsqueeze(-1)  # one logit per row
                                total = total + objective.loss(index, at)
                            grads = torch.autograd.grad(
                                total.sum(),
                                [leaves[k] for k in names],
                                allow_unused=True,
                            )
                        with torch.no_grad():
                            for name, grad in zip(names, grads, strict=True):
                                param = leaves[name]
                                # vmap's gradients may be laid out otherwise (transposed).
                                grad = torch.zeros_like(param) if grad is None else grad
                                grad = grad.contiguous()
                                exp_avg, exp_avg_sq = moments[name]
                                adam_step(param, grad, exp_avg, exp_avg_sq, step, lr)
        finally:
            torch.set_flush_denormal(False)


class TorchModuleTraining:
    """One ``fit`` of a :class:`StackedModules` (a :class:`~recourse_sim.models.base.TrainingTask`).

    It trains in the calling process; ``pool`` is unused.
    """

    def __init__(
        self,
        classifier: StackedModules,
        X: torch.Tensor,
        y: torch.Tensor,
        schedule: TrainingSchedule,
        generator: torch.Generator,
    ):
        self.classifier = classifier
        self.schedule = schedule
        device, dtype = classifier.device, classifier.dtype
        self.X = classifier._per_net(X.to(device=device, dtype=dtype))
        self.y = classifier._per_net(y.to(device=device, dtype=dtype))
        self.seeds: list[int] = []
        if not self.empty:
            n_nets = classifier.n_nets
            self.seeds = torch.randint(0, 2**62, (n_nets,), generator=generator).tolist()

    @property
    def empty(self) -> bool:
        """Whether there is nothing to train (no epochs, no rows, no networks or parameters)."""
        return (
            int(self.schedule.epochs) == 0
            or self.X.shape[1] == 0
            or self.X.shape[0] == 0
            or not self.classifier.params
        )

    def run(self, pool=None) -> None:
        """Train in place, in this process."""
        if not self.empty:
            self.classifier._train(self.X, self.y, self.schedule, self.seeds)


class _Streams:
    """One random stream per network for a module's own random operations (the loop path).

    :meth:`run` sets torch's global CPU state (and the CUDA one on a CUDA device) to a network's
    stream, runs the pass and keeps the advanced state; :meth:`forked` restores the global
    states around all of it.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        self.seeds = [int(s) for s in seeds]
        self.states: dict[int, tuple] = {}

    def forked(self):
        """A context restoring the global random states on exit."""
        return torch.random.fork_rng(devices=[] if self.cuda is None else [self.cuda])

    def _initial(self, net: int) -> tuple:
        seed = self.seeds[net]
        cpu = torch.Generator().manual_seed(seed).get_state()
        gpu = None
        if self.cuda is not None:
            gpu = torch.Generator(self.cuda).manual_seed(seed).get_state()
        return cpu, gpu

    def run(self, net: int, function: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``function()`` with the global random state set to network ``net``'s stream."""
        cpu, gpu = self.states[net] if net in self.states else self._initial(net)
        torch.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, self.cuda)
        out = function()
        gpu = None if self.cuda is None else torch.cuda.get_rng_state(self.cuda)
        self.states[net] = (torch.get_rng_state(), gpu)
        return out

"""Counterfactual training: models that learn plausible, actionable explanations.

Altmeyer, Buszydlik, van Deursen, Liem, "Counterfactual Training: Teaching Models Plausible and
Actionable Explanations" (IEEE SaTML 2026; reference code CounterfactualTraining.jl). Each epoch
(after a burn-in) searches counterfactuals for ``nce`` sampled training rows with the model being
trained, each towards the class the model does *not* predict, and spreads them over the epoch's
mini-batches. A batch's loss is then

``λ_class·BCE(M(x), y) + λ_div·mean[E(x⁺) − E(x′)] + λ_reg·mean[E(x⁺)² + E(x′)²]
+ λ_adv·mean BCE(M(x′_ε), y_factual)``

with the energy ``E(x) = −logit of the target class at x`` (for this project's one-logit binary
classifiers, the logit ``z`` for target 1 and ``−z`` for target 0, as in the ECCo generator);
``x′`` a *mature* counterfactual (its search converged: target probability ≥ τ), or ``x⁺`` itself
when it did not converge (no divergence penalty); ``x⁺`` one random training row of the target
class; ``x′_ε`` the *nascent* counterfactual, the last search point within ε (∞-norm, z-scores)
of the factual, used as an adversarial example labelled with the factual's true label.

Actionability: for an immutable feature ``x⁺[d] := x′[d]``; for an increase-only feature
``x⁺[d] := max(x′[d], x⁺[d])`` and for a decrease-only one ``min``, so the model gains nothing
from relying on a feature the individual cannot change in the required direction (the code's
``protect_immutable!``).

Where this implementation chooses:

* Counterfactuals come from the project's batched gradient generators (ECCo by default), two
  searches per epoch (targets 1 and 0) over all systems at once. The search starts at the
  factual (``init_noise=0``, the reference's ``initialization=:identity``) and clamps to the data
  config's bounds; an unbounded feature is clamped to the reference's inferred domain
  ``[min(μ−2σ, min x), max(μ+2σ, max x)]`` of the training rows.
* Spreading over batches: ``nce`` is capped at the number of training rows; with
  ``at_least_one_per_batch`` (the reference) it is raised to the number of mini-batches, so with
  batch size 1 (the reference study's retraining) every row of an epoch gets a counterfactual and
  each step carries one. Without it, batch ``b`` of ``n_b`` gets counterfactuals
  ``⌊b·nce/n_b⌋ … ⌊(b+1)·nce/n_b⌋ − 1``: some batches carry none and train on the
  classification loss alone.
* A deep ensemble is searched as one model (its mean logit); every member trains on the same
  counterfactuals with its own logits.
* The extra points are evaluated without dropout (deterministic terms).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.models.network import binary_logit

log = logging.getLogger(__name__)

#: Values of ``model.<name>.training``.
TRAININGS = ("standard", "counterfactual")

#: The training-time search of the paper's experiments (its appendix defaults), for every
#: gradient generator; ``_GENERATOR_DEFAULTS`` adds what only one generator takes.
_SEARCH_DEFAULTS = {
    "learning_rate": 0.25,
    "max_iter": 30,
    "decision_threshold": 0.75,
    "cost_weight": 0.001,
    "init_noise": 0.0,
}
_GENERATOR_DEFAULTS = {"ecco": {"energy_weight": 5.0}}


def check_training(key: str, value: object) -> str:
    """``value`` if it names a training objective of :data:`TRAININGS`."""
    checks.text(key, value, "allowed values are " + ", ".join(map(repr, TRAININGS)))
    checks.check_choice(key, value, TRAININGS)
    return str(value)


_WARNED: set[str] = set()


def warn_one_logit(remedy: str) -> None:
    """Warn (once per remedy) that the energy terms on a single logit cap the model's confidence.

    The paper's networks emit one logit per class: the energy of the target class is its own
    logit, which the ridge keeps small while the other logit stays free. With one logit ``z``
    the target's logit is ``±z`` itself, so divergence and ridge pull the probability of the
    target class towards 0.92 at target-class samples and 0.08 at mature counterfactuals (the
    optimum ``|z| = λ_div / (2·λ_reg) = 2.5`` with the default weights).
    """
    if remedy in _WARNED:
        return
    _WARNED.add(remedy)
    log.warning(
        "counterfactual training of a network with a single logit: its energy terms also cap "
        "the model's confidence; the paper's networks have one logit per class (%s)",
        remedy,
    )


def gradient_generators() -> dict[str, type]:
    """The gradient generators a training-time search can use, by their config name."""
    import recourse_sim.generators as generators
    from recourse_sim.generators.gradient import GradientGenerator

    found = {}
    for name in generators.__all__:
        cls = getattr(generators, name)
        # The engine itself (GradientGenerator) has no penalty: only its subclasses count.
        gradient = isinstance(cls, type) and issubclass(cls, GradientGenerator)
        if gradient and cls is not GradientGenerator:
            found[name.removesuffix("Generator").lower()] = cls
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class CounterfactualTraining:
    """Settings of the counterfactual-training objective (see the module docstring).

    Attributes:
        class_weight: λ_class, weight of the classification loss.
        divergence_weight: λ_div, weight of the energy divergence E(x⁺) − E(x′).
        ridge_weight: λ_reg, weight of the ridge E(x⁺)² + E(x′)² on the energies.
        adversarial_weight: λ_adv, weight of the loss at the nascent counterfactuals.
        counterfactuals_per_epoch: nce, factuals searched per epoch (per system).
        at_least_one_per_batch: Raise nce to the number of mini-batches (the reference).
        burn_in: Fraction of each fit's epochs trained on the classification loss alone.
        adversarial_radius: ε, the ∞-norm radius (z-scores) of nascent counterfactuals.
        search: The training-time generator (a gradient generator).
        generator_name: Its config name.
    """

    class_weight: float = 1.0
    divergence_weight: float = 0.5
    ridge_weight: float = 0.1
    adversarial_weight: float = 0.25
    counterfactuals_per_epoch: int = 1000
    at_least_one_per_batch: bool = True
    burn_in: float = 0.0
    adversarial_radius: float = 0.3
    search: object = None
    generator_name: str = "ecco"

    @classmethod
    def from_config(cls, key: str, value: Mapping | CounterfactualTraining | None):
        """Checked settings from a config mapping; keys left out keep the paper's defaults.

        ``key`` is the node's path (``model.counterfactual_training``); errors name
        ``key.<setting>`` and, for the search, ``key.search.<option>``.
        """
        if isinstance(value, CounterfactualTraining):
            return value
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "a mapping of counterfactual-training settings")
        names = [f for f in cls.__dataclass_fields__ if f not in ("search", "generator_name")]
        unknown = sorted(set(value) - {*names, "search"})
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]}", value[unknown[0]], "one of " + ", ".join([*names, "search"])
            )
        weights = {}
        for name in ("class_weight", "divergence_weight", "ridge_weight", "adversarial_weight"):
            default = cls.__dataclass_fields__[name].default
            weights[name] = checks.real(f"{key}.{name}", value.get(name, default), minimum=0)
        nce = checks.integer(
            f"{key}.counterfactuals_per_epoch",
            value.get("counterfactuals_per_epoch", 1000),
            minimum=1,
        )
        spread = checks.flag(
            f"{key}.at_least_one_per_batch", value.get("at_least_one_per_batch", True)
        )
        burn_in = checks.real(f"{key}.burn_in", value.get("burn_in", 0.0), minimum=0, maximum=1)
        radius = checks.real(
            f"{key}.adversarial_radius", value.get("adversarial_radius", 0.3), minimum=0
        )
        name, search = build_search(f"{key}.search", value.get("search"))
        return cls(
            **weights,
            counterfactuals_per_epoch=nce,
            at_least_one_per_batch=spread,
            burn_in=burn_in,
            adversarial_radius=radius,
            search=search,
            generator_name=name,
        )

    def describe(self) -> str:
        """One line for logs and reprs."""
        return (
            f"λ=({self.class_weight}, div {self.divergence_weight}, reg {self.ridge_weight}, "
            f"adv {self.adversarial_weight}), nce={self.counterfactuals_per_epoch}, "
            f"search={self.generator_name}"
        )


def build_search(key: str, value: Mapping | None):
    """The training-time generator from ``{generator: NAME, option: value, ...}``.

    Options left out take the paper's training-time defaults (learning rate 0.25, 30 steps,
    τ = 0.75, λ_cost = 0.001, start at the factual; ECCo: λ_energy = 5.0), then the generator's
    own. Errors name ``key.<option>``.
    """
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(key, value, "a mapping: generator (a gradient generator) and its options")
    value = {} if value is None else dict(value)
    available = gradient_generators()
    name = value.pop("generator", "ecco")
    checks.text(f"{key}.generator", name, "allowed values are " + ", ".join(map(repr, available)))
    checks.check_choice(f"{key}.generator", name, tuple(available))
    cls = available[name]
    accepted = _accepted(cls)
    options = {k: v for k, v in _SEARCH_DEFAULTS.items() if k in accepted}
    options.update(_GENERATOR_DEFAULTS.get(name, {}))
    for option, setting in value.items():
        if option not in accepted:
            raise ConfigError(
                f"{key}.{option}",
                setting,
                f"an option of generator {name!r}: " + ", ".join(sorted(accepted)),
            )
        options[option] = setting
    try:
        return name, cls(**options)
    except ConfigError as error:
        option = error.key.removeprefix("generator.")
        raise ConfigError(f"{key}.{option}", error.value, error.allowed) from None


def _accepted(cls: type) -> set[str]:
    """Keyword arguments a generator class accepts (through ``**search_options`` too)."""
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        accepted |= {
            p
            for p in parameters
            if p != "self"
            and parameters[p].kind
            not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        }
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            break
    return accepted


def inferred_space(X: torch.Tensor):
    """A feature space for rows ``X`` ``(S, N, d)`` when the caller gives none.

    Every feature mutable in both directions, z-scores from the pooled rows, and the inferred
    domain as bounds.
    """
    from recourse_sim.generators.base import MUTABLE_BOTH, FeatureSpace

    rows = X.reshape(-1, X.shape[-1]).to(torch.float64)
    scale = rows.std(dim=0) if rows.shape[0] > 1 else torch.ones(rows.shape[1])
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    lower, upper = _domain(rows)
    return FeatureSpace(
        scale=scale,
        center=rows.mean(dim=0),
        mutability=torch.full((rows.shape[1],), MUTABLE_BOTH, dtype=torch.int64),
        lower=lower,
        upper=upper,
        categorical_groups=(),
        binary_features=(),
    ).to(X.device)


def _domain(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CounterfactualTraining.jl's ``infer_domain_constraints`` (n = 2 standard deviations)."""
    mean = rows.mean(dim=0)
    std = rows.std(dim=0) if rows.shape[0] > 1 else torch.zeros_like(mean)
    lower = torch.minimum(mean - 2 * std, rows.min(dim=0).values)
    upper = torch.maximum(mean + 2 * std, rows.max(dim=0).values)
    return lower, upper


def _bounded(space, X: torch.Tensor):
    """``space`` with its infinite bounds replaced by the inferred domain of ``X``."""
    rows = X.reshape(-1, X.shape[-1]).to(torch.float64)
    lower, upper = _domain(rows)
    lower, upper = lower.to(space.lower.device), upper.to(space.upper.device)
    return replace(
        space,
        lower=torch.where(torch.isinf(space.lower), lower, space.lower),
        upper=torch.where(torch.isinf(space.upper), upper, space.upper),
    )


def protect(
    neighbours: torch.Tensor, counterfactuals: torch.Tensor, mutability: torch.Tensor
) -> torch.Tensor:
    """``x⁺`` with its actionability-protected features set from ``x′`` (see the docstring)."""
    from recourse_sim.generators.base import IMMUTABLE, MUTABLE_DECREASE, MUTABLE_INCREASE

    protected = torch.where(mutability == IMMUTABLE, counterfactuals, neighbours)
    protected = torch.where(
        mutability == MUTABLE_INCREASE, torch.maximum(counterfactuals, neighbours), protected
    )
    return torch.where(
        mutability == MUTABLE_DECREASE, torch.minimum(counterfactuals, neighbours), protected
    )


def target_logit(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The logit of the target class ``(..., m)`` from outputs ``(..., m, k)``.

    Two outputs are the class logits (the paper's networks): the target's column. One output is
    the logit of class 1, ``z``; the target's logit is then taken as ``z`` for class 1 and ``−z``
    for class 0, as in the ECCo generator.
    """
    if outputs.shape[-1] == 2:
        return outputs.gather(-1, target.to(torch.int64).unsqueeze(-1)).squeeze(-1)
    return (2.0 * target.to(outputs.dtype) - 1.0) * outputs[..., 0]


def objective_terms(
    outputs_cf: torch.Tensor,
    outputs_neighbour: torch.Tensor,
    outputs_nascent: torch.Tensor,
    target: torch.Tensor,
    factual_label: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three extra terms per network, each a mean over its counterfactuals.

    Args:
        outputs_cf: Outputs ``(..., m, k)`` at the mature counterfactuals x′.
        outputs_neighbour: Outputs at the target-class samples x⁺.
        outputs_nascent: Outputs at the nascent counterfactuals x′_ε.
        target: Target class (0 or 1) of each counterfactual ``(..., m)``.
        factual_label: True label of each factual ``(..., m)``.

    Returns:
        ``(divergence, ridge, adversarial)``: mean E(x⁺) − E(x′), mean E(x⁺)² + E(x′)² with
        E = −(logit of the target class), and the mean cross-entropy of x′_ε against the
        factual's label.
    """
    energy_cf = -target_logit(outputs_cf, target)
    energy_neighbour = -target_logit(outputs_neighbour, target)
    divergence = (energy_neighbour - energy_cf).mean(dim=-1)
    ridge = (energy_neighbour.pow(2) + energy_cf.pow(2)).mean(dim=-1)
    adversarial = F.binary_cross_entropy_with_logits(
        binary_logit(outputs_nascent),
        factual_label.to(outputs_nascent.dtype),
        reduction="none",
    ).mean(dim=-1)
    return divergence, ridge, adversarial


class CounterfactualObjective:
    """The extra terms for one fit: searches counterfactuals each epoch, then per batch.

    A :class:`~recourse_sim.models.training.TrainingObjective` of the training loops.

    Args:
        settings: The objective's settings.
        classifier: The system-level classifier being trained (its weights are those the loop
            updates in place, so each epoch searches with the current model).
        X: Each system's training rows ``(S, N, d)``; ``y`` their labels ``(S, N)``.
        space: The feature space (mutability, scaling, bounds).
        seeds: One seed per system for its draws (rows, neighbours).
        round_key: Keys the searches' own random draws.
    """

    def __init__(
        self,
        settings: CounterfactualTraining,
        classifier,
        X: torch.Tensor,
        y: torch.Tensor,
        space,
        seeds: list[int],
        round_key: int,
    ):
        self.settings = settings
        self.class_weight = settings.class_weight
        self.classifier = classifier
        device = classifier.device
        self.X = X.to(device=device, dtype=torch.float64)
        self.y = y.to(device=device, dtype=torch.int64)
        self.space = _bounded(space.to(device), self.X)
        self.streams = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.round_key = int(round_key)
        self.members = int(classifier.n_members)
        #: Outputs per network: 1 (one logit) or 2 (one logit per class).
        self.outputs = int(getattr(getattr(classifier, "spec", None), "outputs", 1))
        self.points: torch.Tensor | None = None  # (n_nets, n, 3, d): x′, x⁺, x′_ε
        self.target: torch.Tensor | None = None  # (n_nets, n)
        self.label: torch.Tensor | None = None  # (n_nets, n)
        self.bounds: list[tuple[int, int]] = []
        #: Per epoch with counterfactuals: how many were searched and the fraction that matured.
        self.history: list[dict] = []

    # --- the TrainingObjective protocol ----------------------------------------------------

    def start_epoch(self, epoch: int, n_epochs: int, n_batches: int) -> None:
        """Search this epoch's counterfactuals with the current weights (after the burn-in)."""
        self.points = None
        if epoch < round(self.settings.burn_in * n_epochs):
            return
        n_rows = self.X.shape[1]
        n = min(self.settings.counterfactuals_per_epoch, n_rows)
        if self.settings.at_least_one_per_batch:
            n = max(n, min(n_batches, n_rows))
        with torch.enable_grad():  # the fast training loop runs under no_grad; searches need it
            self._prepare(epoch, n)
        self.bounds = [(b * n // n_batches, (b + 1) * n // n_batches) for b in range(n_batches)]

    def inputs(self, batch: int) -> torch.Tensor | None:
        """Batch ``batch``'s points ``(n_nets, 3m, d)``, interleaved x′, x⁺, x′_ε per CF."""
        if self.points is None:
            return None
        start, stop = self.bounds[batch]
        if stop == start:
            return None
        part = self.points[:, start:stop]
        return part.reshape(part.shape[0], -1, part.shape[-1])

    def loss(self, batch: int, outputs: torch.Tensor) -> torch.Tensor:
        """``λ_div·divergence + λ_reg·ridge + λ_adv·adversarial`` per network."""
        start, stop = self.bounds[batch]
        outputs = outputs.reshape(outputs.shape[0], stop - start, 3, outputs.shape[-1])
        divergence, ridge, adversarial = objective_terms(
            outputs[:, :, 0],
            outputs[:, :, 1],
            outputs[:, :, 2],
            self.target[:, start:stop],
            self.label[:, start:stop],
        )
        s = self.settings
        return (
            s.divergence_weight * divergence
            + s.ridge_weight * ridge
            + s.adversarial_weight * adversarial
        )

    def output_gradient(self, batch: int, outputs: torch.Tensor) -> torch.Tensor:
        """d(:meth:`loss`)/d(outputs), by hand, for the fast path (see :func:`objective_terms`).

        With ``m`` counterfactuals in the batch, ``t`` the column of the target class's logit
        (``s = ±1`` its sign for one output) and ``z`` the binary logit: divergence ``1/m`` at x′
        and ``−1/m`` at x⁺ (times ``s``), ridge ``2·o_t/m`` at both, adversarial ``(σ(z) − y)/m``
        at x′_ε (times ``−1, 1`` on two outputs).
        """
        start, stop = self.bounds[batch]
        m = stop - start
        k = outputs.shape[-1]
        out = outputs.reshape(outputs.shape[0], m, 3, k)
        # What does not depend on the outputs is made once per epoch (_constant_gradient): a
        # step's tensors are tiny, so its cost is its number of operations.
        grad = torch.addcmul(self._constant[:, start:stop], out, self._slope[:, start:stop])
        nascent = out[:, :, 2]
        z = nascent[..., 0] if k == 1 else nascent[..., 1] - nascent[..., 0]
        grad[:, :, 2].addcmul_(
            torch.sigmoid(z).unsqueeze(-1), self._direction, value=self.settings.adversarial_weight
        )
        if m > 1:
            grad.div_(m)
        return grad.reshape(outputs.shape)

    def _constant_gradient(self) -> None:
        """The output-independent parts of :meth:`output_gradient`, ``(n_nets, n, 3, k)``.

        Per counterfactual: the divergence's ``±λ_div`` on the target logit's column and the
        adversarial ``−λ_adv·y·direction``; ``_slope`` holds ``2λ_reg`` on the target logit's
        column of x′ and x⁺ (the ridge's derivative is ``2λ_reg·o_t``).
        """
        s = self.settings
        k = self.outputs
        n_nets, n = self.target.shape
        device = self.target.device
        if k == 2:
            column = torch.nn.functional.one_hot(self.target.to(torch.int64), 2).to(torch.float32)
            direction = torch.tensor([-1.0, 1.0], device=device)
        else:
            column = (2.0 * self.target.to(torch.float32) - 1.0).unsqueeze(-1)
            direction = torch.ones(1, device=device)
        label = self.label.to(torch.float32).unsqueeze(-1)
        constant = torch.zeros(n_nets, n, 3, k, device=device)
        constant[:, :, 0] = s.divergence_weight * column
        constant[:, :, 1] = -s.divergence_weight * column
        constant[:, :, 2] = -s.adversarial_weight * label * direction
        # d(o_t²)/d(outputs) = 2·o_t on the target column; with one output o_t = s·z, and
        # d(z²)/dz = 2z: the slope is 2λ_reg·|column| either way.
        slope = torch.zeros(n_nets, n, 3, k, device=device)
        slope[:, :, 0] = 2 * s.ridge_weight * column.abs()
        slope[:, :, 1] = 2 * s.ridge_weight * column.abs()
        self._constant, self._slope, self._direction = constant, slope, direction

    # --- the epoch's counterfactuals -------------------------------------------------------

    def _prepare(self, epoch: int, n: int) -> None:
        X, y = self.X, self.y
        S, N, d = X.shape
        device = X.device
        rows = torch.stack([torch.randperm(N, generator=g)[:n] for g in self.streams]).to(device)
        factuals = torch.gather(X, 1, rows.unsqueeze(-1).expand(S, n, d))
        labels = torch.gather(y, 1, rows)
        with torch.no_grad():
            predicted = (self.classifier.proba(factuals) >= 0.5).to(torch.int64)
        target = 1 - predicted
        neighbours, present = self._neighbours(target)
        cf = factuals.clone()
        nascent = factuals.clone()
        matured = torch.zeros(S, n, dtype=torch.bool, device=device)
        for goal in (1, 0):
            self._search(goal, target == goal, factuals, rows, epoch, cf, nascent, matured)
        # A counterfactual that did not mature is replaced by its target-class sample: it adds
        # no divergence (the reference's choice).
        cf = torch.where(matured.unsqueeze(-1), cf, neighbours)
        neighbours = protect(neighbours, cf, self.space.mutability)
        # A system without a row of the target class has no x⁺: the factual stands in for all
        # three points (zero divergence, its own label for the adversarial term).
        absent = ~present.unsqueeze(-1)
        cf = torch.where(absent, factuals, cf)
        neighbours = torch.where(absent, factuals, neighbours)
        nascent = torch.where(absent, factuals, nascent)
        points = torch.stack([cf, neighbours, nascent], dim=2).to(torch.float32)
        self.points = self._per_net(points)
        self.target = self._per_net(target)
        self.label = self._per_net(labels)
        self._constant_gradient()
        share = float(matured.to(torch.float64).mean())
        self.history.append({"epoch": epoch, "counterfactuals": n, "matured": share})
        log.debug(
            "counterfactual training epoch %d: %d searched, %.1f%% matured", epoch, n, 100 * share
        )

    def _neighbours(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random training row of the target class per counterfactual ``(S, n, d)``."""
        X, y = self.X, self.y
        S, n = target.shape
        neighbours = torch.empty(S, n, X.shape[-1], dtype=X.dtype, device=X.device)
        present = torch.ones(S, n, dtype=torch.bool, device=X.device)
        for s, stream in enumerate(self.streams):
            for goal in (0, 1):
                wanted = torch.nonzero(target[s] == goal).flatten()
                pool = torch.nonzero(y[s] == goal).flatten()
                if len(wanted) == 0:
                    continue
                if len(pool) == 0:
                    present[s, wanted] = False
                    neighbours[s, wanted] = X[s, wanted]
                    continue
                pick = torch.randint(0, len(pool), (len(wanted),), generator=stream)
                neighbours[s, wanted] = X[s, pool[pick.to(pool.device)]]
        return neighbours, present

    def _search(self, goal, wanted, factuals, rows, epoch, cf, nascent, matured) -> None:
        """Search the counterfactuals whose target is ``goal``, all systems at once.

        Systems with fewer of them are padded with their first factual (results dropped), so
        the search stays one batch; each individual's search is independent of its batch.
        """
        from recourse_sim.generators.base import SearchProblem

        S, _, d = factuals.shape
        counts = wanted.sum(dim=1)
        width = int(counts.max())
        if width == 0:
            return
        order = torch.argsort((~wanted).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=factuals.device).view(1, -1) < counts.view(-1, 1)
        index = torch.where(valid, order, order[:, :1])
        chosen = torch.gather(factuals, 1, index.unsqueeze(-1).expand(S, width, d))
        problem = SearchProblem(
            factuals=chosen,
            individual_ids=torch.gather(rows, 1, index),
            system_keys=torch.arange(S, device=factuals.device),
            model=self.classifier,
            space=self.space,
            population_X=self.X,
            population_y=self.y,
            n_counterfactuals=1,
            round_key=self.round_key + epoch,
            target=goal,
            nascent_radius=self.settings.adversarial_radius,
        )
        result = self.settings.search.search(problem)
        for s in range(S):
            k = int(counts[s])
            slots = index[s, :k]
            cf[s, slots] = result.counterfactuals[s, :k, 0].to(cf.dtype)
            nascent[s, slots] = result.nascent[s, :k, 0].to(nascent.dtype)
            matured[s, slots] = result.converged[s, :k]

    def _per_net(self, values: torch.Tensor) -> torch.Tensor:
        return values.repeat_interleave(self.members, dim=0) if self.members > 1 else values


class CounterfactualTrainingJob:
    """One ``fit`` with the counterfactual objective (a :class:`~.base.TrainingTask`).

    Its random draws (the objective's per-system seeds, the search key, the classifier's own
    seeds) are taken from ``generator`` when the job is made. It trains in the calling process.

    Args:
        classifier: The classifier to train in place.
        X: Rows ``(S, N, d)``; ``y`` labels ``(S, N)``.
        schedule: Epochs, batch size and learning rate.
        generator: The job's random stream.
        space: The feature space (``None``: inferred from ``X``, every feature mutable).
        train: ``train(X, y, schedule, generator, objective)``, the classifier's training loop.
    """

    def __init__(self, classifier, X, y, schedule, generator, space, train: Callable):
        self.classifier = classifier
        self.X, self.y = X, y
        self.schedule = schedule
        self.space = inferred_space(X) if space is None else space
        self.train = train
        S = int(classifier.n_systems)
        self.seeds = torch.randint(0, 2**62, (S,), generator=generator).tolist()
        self.round_key = int(torch.randint(0, 2**31, (1,), generator=generator))
        self.train_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.history: list[dict] = []

    @property
    def empty(self) -> bool:
        """Whether there is nothing to train."""
        return int(self.schedule.epochs) == 0 or self.X.shape[-2] == 0

    def run(self, pool=None) -> None:
        """Train in place, in this process (``pool`` unused)."""
        if self.empty:
            return
        settings = self.classifier.spec.counterfactual_training
        objective = CounterfactualObjective(
            settings, self.classifier, self.X, self.y, self.space, self.seeds, self.round_key
        )
        generator = torch.Generator().manual_seed(self.train_seed)
        self.train(self.X, self.y, self.schedule, generator, objective)
        self.history = objective.history

"""The counterfactual-generator contract: one batched search for many systems and individuals.

A search receives the chosen individuals of every system that shares one generator and one model
architecture (``S`` systems x ``B`` individuals x ``K`` counterfactuals per individual) and
returns ``K`` counterfactuals per individual with per-individual convergence information, so the
simulation can record success, cost and effort truthfully for any generator.

Randomness is keyed (see :mod:`recourse_sim.utils.counter_rng`) by the system's key and the
individual's id, never by batch position: an individual's counterfactuals do not depend on which
other individuals or systems share its batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError

#: Mutability codes used inside the engine, per feature.
MUTABLE_BOTH, MUTABLE_INCREASE, MUTABLE_DECREASE, IMMUTABLE = 0, 1, 2, 3
_CODES = {"both": MUTABLE_BOTH, "increase": MUTABLE_INCREASE, "decrease": MUTABLE_DECREASE}
#: How gradients pass the projection of one-hot and binary columns (see FeatureSpace.project).
CATEGORICAL_GRADIENTS = ("straight_through", "none")


@dataclass(frozen=True)
class FeatureSpace:
    """Search-space geometry of a data set: scaling, actionability, bounds, encodings.

    The search moves a state in z-score space of the continuous features (the transform is fitted
    once on the initial data and never refitted, as CounterfactualExplanations.jl's
    ``ZScoreTransform``); one-hot and binary columns are searched unscaled and projected back to
    valid encodings on decoding. ``center`` and ``scale`` are that transform's mean and sample
    standard deviation: the search itself only needs ``scale`` (it moves offsets from the factual),
    ``center`` is what CE.jl adds back when it decodes a *step* (Greedy's change counters).
    """

    scale: torch.Tensor  # (d,) float64; 1 for one-hot and binary columns
    center: torch.Tensor  # (d,) float64; mean of each continuous column, 0 for the others
    mutability: torch.Tensor  # (d,) int64 codes
    lower: torch.Tensor  # (d,) float64, model space
    upper: torch.Tensor  # (d,)
    categorical_groups: tuple[tuple[int, ...], ...]
    binary_features: tuple[int, ...]

    @classmethod
    def from_data(cls, data: Dataset) -> FeatureSpace:
        """Fit the scaling on ``data`` (the initial population) and read its metadata."""
        scale = np.ones(data.n_features)
        center = np.zeros(data.n_features)
        continuous = data.continuous_features
        if continuous.any() and data.n_samples > 1:
            std = data.X[:, continuous].std(axis=0, ddof=1)
            scale[continuous] = np.where(std > 0, std, 1.0)
        if continuous.any() and data.n_samples > 0:
            center[continuous] = data.X[:, continuous].mean(axis=0)
        codes = [IMMUTABLE if m == "none" else _CODES[m] for m in data.mutability]
        return cls(
            scale=torch.as_tensor(scale, dtype=torch.float64),
            center=torch.as_tensor(center, dtype=torch.float64),
            mutability=torch.as_tensor(codes, dtype=torch.int64),
            lower=torch.as_tensor(data.lower, dtype=torch.float64),
            upper=torch.as_tensor(data.upper, dtype=torch.float64),
            categorical_groups=data.categorical_groups,
            binary_features=data.binary_features,
        )

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.scale.shape[0])

    def to(self, device: str | torch.device) -> FeatureSpace:
        """This space with its tensors on ``device`` (where the searches run)."""
        return replace(
            self,
            scale=self.scale.to(device),
            center=self.center.to(device),
            mutability=self.mutability.to(device),
            lower=self.lower.to(device),
            upper=self.upper.to(device),
        )

    def mask_step(self, step: torch.Tensor) -> torch.Tensor:
        """Apply per-feature mutability to a step (as CE.jl: to the step, not the gradient)."""
        mut = self.mutability
        step = torch.where(mut == IMMUTABLE, torch.zeros_like(step), step)
        step = torch.where(mut == MUTABLE_INCREASE, step.clamp_min(0.0), step)
        return torch.where(mut == MUTABLE_DECREASE, step.clamp_max(0.0), step)

    def restrict(self, x: torch.Tensor, factuals: torch.Tensor) -> torch.Tensor:
        """Enforce mutability on a proposed point relative to its factual (model space)."""
        mut = self.mutability
        x = torch.where(mut == IMMUTABLE, factuals, x)
        x = torch.where(mut == MUTABLE_INCREASE, torch.maximum(x, factuals), x)
        return torch.where(mut == MUTABLE_DECREASE, torch.minimum(x, factuals), x)

    def project(self, x: torch.Tensor, gradient: str = "straight_through") -> torch.Tensor:
        """Valid encodings: argmax one-hot per group (lowest index on ties), rounded binaries.

        The forward value is always the projected point. ``gradient`` says what flows back to the
        one-hot and binary columns: ``"straight_through"`` treats the projection as the identity,
        so they still receive gradient signal; ``"none"`` gives them the projection's exact
        derivative, zero (it is piecewise constant), so a gradient search never flips a category.
        Continuous columns are untouched either way.
        """
        if not self.categorical_groups and not self.binary_features:
            return x
        projected = x.detach().clone()
        for group in self.categorical_groups:
            cols = list(group)
            winner = x.detach()[..., cols].argmax(dim=-1, keepdim=True)
            onehot = torch.zeros_like(projected[..., cols]).scatter_(-1, winner, 1.0)
            projected[..., cols] = onehot
        for col in self.binary_features:
            projected[..., col] = x.detach()[..., col].clamp(0.0, 1.0).round()
        if gradient == "none":
            return torch.where(self.encoded_columns(x.device), projected, x)
        return x + (projected - x).detach()

    def encoded_columns(self, device: str | torch.device | None = None) -> torch.Tensor:
        """``(d,)`` mask of the one-hot and binary columns."""
        mask = torch.zeros(self.n_features, dtype=torch.bool, device=device)
        for group in self.categorical_groups:
            mask[list(group)] = True
        mask[list(self.binary_features)] = True
        return mask

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp to the per-feature bounds (model space)."""
        return torch.maximum(torch.minimum(x, self.upper), self.lower)


@dataclass
class SearchProblem:
    """The input of one batched search.

    Attributes:
        factuals: Features of the chosen individuals, ``(S, B, d)`` float64 (model space).
        individual_ids: Stable ids ``(S, B)`` of the individuals (their rows in the population).
        system_keys: Stable integer key of each of the ``S`` systems (keys its random draws).
        model: The classifiers of the ``S`` systems (a
            :class:`~recourse_sim.models.base.Classifier`: built-in networks, torch modules or
            scikit-learn estimators; only ``differentiable`` ones have gradients).
        space: The feature space (scaling, mutability, bounds, encodings).
        population_X: Each system's current training features ``(S, N, d)``, for generators that
            look at the data (MAD weights, target-class neighbours, generative models).
        population_y: Each system's current labels ``(S, N)``.
        n_counterfactuals: ``K``, counterfactuals searched jointly per individual.
        round_key: Keys the random draws of this search (e.g. the round number).
        target: The favourable class.
        population_mask: Which rows of ``population_X``/``population_y`` are agents currently in
            the population, ``(S, N)`` bool, or ``None`` (the default): every row is. A
            simulation over time keeps agents that left, or have not arrived yet, as rows; a
            generator that looks at the population ignores the masked-out rows, exactly as if
            they were not there. With ``None`` every row counts, computed as before the mask
            existed.
        threshold: Each system's current decision threshold, ``(S,)`` float64, a probability of
            the target class (with a top-k decision policy it moves from one search to the
            next), or ``None`` (the default): the generator's own threshold applies. Only
            generators that aim at a threshold in closed form read it (``n_feature``).
        nascent_radius: With a radius ε (z-score units, ∞-norm), gradient searches also return
            each counterfactual's *nascent* form: the last point of its search path still
            within ε of the factual (the factual itself if none is). Counterfactual training
            uses these as adversarial examples (Altmeyer et al., SaTML 2026). ``None`` (the
            default): not tracked.
    """

    factuals: torch.Tensor
    individual_ids: torch.Tensor
    system_keys: torch.Tensor
    model: object
    space: FeatureSpace
    population_X: torch.Tensor
    population_y: torch.Tensor
    n_counterfactuals: int = 5
    round_key: int = 0
    target: int = 1
    population_mask: torch.Tensor | None = None
    threshold: torch.Tensor | None = None
    nascent_radius: float | None = None


def population_rows(problem: SearchProblem, system: int) -> tuple[torch.Tensor, torch.Tensor]:
    """System ``system``'s population features ``(N', d)`` and labels ``(N',)``, in row order.

    Without a ``population_mask`` these are all ``N`` rows; with one, only the rows it marks as
    present.
    """
    X, y = problem.population_X[system], problem.population_y[system]
    mask = problem.population_mask
    if mask is None:
        return X, y
    keep = mask[system].to(device=X.device, dtype=torch.bool)
    return X[keep], y[keep]


@dataclass
class SearchResult:
    """The output of one batched search.

    Attributes:
        counterfactuals: ``(S, B, K, d)`` float64, model space: the points the model was shown at
            the end of the search. In feature space, and in latent space with
            ``latent_decode="projected"``, they have valid encodings, lie within bounds and keep
            the factual's immutable features; in latent space with ``latent_decode="raw"`` (the
            reference's behaviour) they are the VAE decoder's output as is, which may break any
            of these. An individual already in the target class keeps its exact features.
        probabilities: ``(S, B, K)`` probability of the target class at each counterfactual.
        converged: ``(S, B)`` whether the generator's convergence criterion held at the end.
        n_iterations: ``(S, B)`` search steps taken.
        nascent: ``(S, B, K, d)`` the nascent counterfactuals when the problem asked for them
            (``nascent_radius``), else ``None``.
    """

    counterfactuals: torch.Tensor
    probabilities: torch.Tensor
    converged: torch.Tensor
    n_iterations: torch.Tensor
    nascent: torch.Tensor | None = None


class Generator(ABC):
    """A counterfactual generator: parameters in ``__init__``, work in :meth:`search`."""

    #: Threshold on the target-class probability that counts a counterfactual as valid.
    decision_threshold: float = 0.5
    #: Whether the generator aims for the target class (CLUE aims for certainty instead).
    targeted: bool = True
    #: Whether the simulation implements its counterfactuals (False: the no-recourse control).
    moves_individuals: bool = True
    #: Whether the counterfactuals are a function of the factuals, the model and the population
    #: alone: no keyed random draws, so the round and system keys do not change them.
    deterministic: bool = False
    #: Whether the search differentiates the model (a model without gradients, such as a
    #: scikit-learn estimator, is refused before any work). Generators that only query
    #: probabilities set it to False.
    needs_gradients: bool = True

    def check_model(self, model: object) -> None:  # noqa: B027
        """Raise :class:`~recourse_sim.errors.ConfigError` if this generator cannot use ``model``.

        ``model`` is a model specification (``configs/model``) or a trained
        :class:`~recourse_sim.models.base.Classifier`. Nothing is refused by default; a
        generator restricted to some kinds of model (``n_feature``: linear ones,
        ``feature_tweak``: scikit-learn's trees) refuses the others here, so a caller can check
        every (model, generator) pair before any work starts; its :meth:`search` refuses them as
        well. Models without gradients are refused by :attr:`needs_gradients`, not here.
        """

    def works_with(self, model: object) -> bool:
        """Whether this generator can search on ``model`` (a specification)."""
        if self.needs_gradients and not getattr(model, "differentiable", True):
            return False
        try:
            self.check_model(model)
        except ConfigError:
            return False
        return True

    @abstractmethod
    def search(self, problem: SearchProblem) -> SearchResult:
        """Find ``K`` counterfactuals for every individual of every system in ``problem``."""

    @property
    def keeps_state(self) -> bool:
        """Whether a search updates state kept across rounds (it then runs in the main process)."""
        return False

    def state_dict(self) -> dict:
        """State kept across rounds (e.g. fitted generative models), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def check_pairs(
    models: Mapping[str, object],
    generators: Mapping[str, Generator],
    working: Callable[[str, object], Sequence[str]] | None = None,
) -> None:
    """Refuse, before any work, a (model, generator) pair that cannot run.

    A generator that follows gradients cannot search on a model without them (a scikit-learn
    estimator); a generator may refuse other models itself (:meth:`Generator.check_model`).
    ``working(model_name, spec)`` names the generators that do work with a model, for the
    message (default: those of ``generators``).
    """
    for model_name, spec in models.items():
        for label, generator in generators.items():
            generator.check_model(spec)  # a generator's own refusal names its key
            if not (generator.needs_gradients and not getattr(spec, "differentiable", True)):
                continue
            if working is None:
                usable = [g for g, gen in generators.items() if gen.works_with(spec)]
            else:
                usable = list(working(model_name, spec))
            kind = getattr(spec, "kind", type(spec).__name__)
            raise ConfigError(
                "generator",
                label,
                f"a generator that needs no gradients: {label} follows the model's gradients, "
                f"and model {model_name} (a {kind} model) has none. Generators that work with "
                f"it: {', '.join(usable) or 'none of those given'}",
            )

"""N-feature recourse: a closed-form move along a linear model's largest coefficients.

After the ``NFeatureRecourse`` of Fonseca et al., "Setting the Right Expectations: Algorithmic
Recourse Over Time" (EAAMO 2023, package ``recgame``). For a model whose target-class logit is
affine in the features, ``f(x) = a·x + c``, the cheapest way to raise the logit by ``g`` along a
fixed set of features ``F`` is the step ``g·a_F/‖a_F‖²``: a move of length ``g/‖a_F‖`` along the
unit vector ``u = a_F/‖a_F‖``. The method:

1. chooses ``F``: the ``n_features`` *usable* features with the largest ``|a_j|`` (ties: the lower
   column index first). A feature is usable if it is mutable and its allowed direction agrees
   with the sign of its coefficient (``increase`` needs ``a_j > 0``, ``decrease`` needs
   ``a_j < 0``, ``both`` takes either), its coefficient is not zero, and it is a continuous column
   (one-hot and binary columns cannot move along a line; the reference leaves categorical
   columns out as well);
2. moves the factual along ``u`` by exactly the length that puts the logit on the target
   ``logit(threshold) + margin``;
3. if that move takes a feature of ``F`` past its bound (:class:`FeatureSpace` ``lower``/
   ``upper``), every such feature is fixed at the bound it crosses and dropped from ``F``; the
   other features of ``F`` stay where they were, and steps 2-3 repeat for the remaining gap
   with the renormalised direction, until no bound is crossed (the target is reached) or ``F`` is
   empty (it cannot be reached: the counterfactual keeps the features fixed at their bounds and
   the individual does not converge). A feature already beyond the bound it moves towards stays
   where it is: the method never moves a feature against its coefficient.

Individuals whose probability already reaches the threshold keep their exact features. The
method is deterministic, so the ``K`` counterfactuals of an individual are identical.

**Which model.** The built-in ``logistic`` model (one affine layer) and deep ensembles of logistic
members (``hidden_sizes: []``): the mean member logit of affine members is affine, with the mean
member coefficients. As for every generator, the probability aimed at and reported is the sigmoid
of the (mean member) logit; for an ensemble this can differ slightly from the ensemble's mean
member probability. Any other model is refused with a :class:`ConfigError` naming
``generator.n_feature``.

**Threshold.** ``problem.threshold[s]`` (a system's current decision threshold, which moves over
time under a top-k policy) when the search problem gives one, else the ``threshold`` parameter.
With ``margin = 0`` the counterfactual lands *on* the threshold; whether a score exactly at the
threshold is favourable is then the decision policy's tie rule (a top-k policy ranks ties by its
own rule, the simulation's labels count a probability of exactly 0.5 as negative). A positive
``margin`` (a logit, well above float32 resolution, e.g. ``1e-3``) lands strictly above it.

**Rounding.** The move is solved in float64 from the model's float32 coefficients; the model
itself evaluates in float32. Where that rounding leaves the model's probability at a solved
counterfactual a hair below the threshold, the final move is lengthened by a few float32 rounding
units of the logit (doubling until the model agrees, within the bounds), so that a converged
counterfactual is valid under the model's own arithmetic.

Result fields: ``probabilities`` are the model's target-class probabilities at the
counterfactuals; ``converged`` says the probability reaches the threshold; ``n_iterations`` counts
the directions solved for (1 without bound crossings, one more per refit; 0 for individuals who
were already there or have no usable feature).
"""

from __future__ import annotations

import math

import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
    Generator,
    SearchProblem,
    SearchResult,
)

#: The key named by errors about the model (the generator's label in ``configs/generator``).
_KEY = "generator.n_feature"
#: At most this many doublings of the float32 correction (see "Rounding" in the module docstring).
_MAX_NUDGES = 60


#: The built-in model kinds, whose weights this generator can read.
_BUILT_IN_KINDS = ("classifier", "logistic", "mlp", "deep_ensemble")


class NFeatureGenerator(Generator):
    """Closed-form recourse along the ``n_features`` largest usable coefficients of a linear model.

    Args:
        n_features: How many features the move may change (the usable ones with the largest
            ``|coefficient|``).
        threshold: Target probability when the search problem carries no per-system threshold.
        margin: Non-negative logit added to the target, to land strictly above the threshold.
    """

    deterministic = True
    needs_gradients = False  # it reads the linear model's weights instead

    def __init__(self, n_features: int = 2, threshold: float = 0.5, margin: float = 0.0):
        self.n_features = checks.integer("generator.n_features", n_features, minimum=1)
        self.threshold = checks.probability("generator.threshold", threshold)
        self.margin = checks.real("generator.margin", margin, minimum=0)

    @property
    def decision_threshold(self) -> float:
        """The probability a counterfactual needs to count as valid (the ``threshold``)."""
        return self.threshold

    def check_model(self, model: object) -> None:
        """Refuse models whose logit is not affine in the features (see the module docstring)."""
        spec = getattr(model, "spec", model)
        if getattr(spec, "kind", None) not in _BUILT_IN_KINDS:
            kind = getattr(spec, "kind", type(spec).__name__)
            raise ConfigError(
                _KEY,
                kind,
                "n_feature needs a linear model: model=logistic, or an ensemble of logistic "
                f"members (a deep_ensemble with hidden_sizes: []); a {kind} model has no "
                "coefficient vector it can read",
            )
        nets = getattr(model, "nets", None)
        if nets is not None:
            hidden = getattr(getattr(nets, "architecture", None), "hidden_sizes", None)
        else:
            hidden = getattr(spec, "hidden_sizes", None)
        if hidden is not None and len(hidden) == 0:
            return
        kind = getattr(spec, "kind", type(model).__name__)
        described = f"{kind} with hidden_sizes={list(hidden)}" if hidden is not None else kind
        raise ConfigError(
            _KEY,
            described,
            "n_feature needs a linear model: model=logistic, or an ensemble of logistic members "
            "(a deep_ensemble with hidden_sizes: []); it moves along the model's coefficient "
            "vector, which a model with hidden layers does not have",
        )

    def search(self, problem: SearchProblem) -> SearchResult:
        """Solve every individual's move in closed form (see the module docstring)."""
        model = problem.model
        self.check_model(model)
        space = problem.space
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K = int(problem.n_counterfactuals)
        device = factuals.device
        sign = 1.0 if problem.target == 1 else -1.0

        def target_logits(points: torch.Tensor) -> torch.Tensor:
            """The model's own target-class logits ``(S, B)`` at points ``(S, B, d)``."""
            with torch.no_grad():
                return sign * model.logits(points)

        weight, bias = self._coefficients(model, S, d, device)
        a, c = sign * weight, sign * bias  # target-class logit a·x + c
        threshold = self._thresholds(problem, S, device)
        goal = (torch.log(threshold) - torch.log1p(-threshold) + self.margin).view(S, 1)

        already = self._reaches(target_logits(factuals), threshold)
        lower, upper = space.lower.to(device), space.upper.to(device)
        free = self._selection(a, space, device).view(S, 1, d) & ~already.view(S, B, 1)
        free &= torch.isfinite(goal).view(S, 1, 1)  # a threshold of 1 cannot be reached
        a = a.view(S, 1, d)
        x = factuals.clone()
        solved = torch.zeros(S, B, dtype=torch.bool, device=device)
        direction = torch.zeros_like(x)
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=device)
        for _ in range(d + 1):  # each refit drops at least one feature
            active = free.any(-1) & ~solved
            if not bool(active.any()):
                break
            # A gap that float64 already sees closed (the model's float32 did not) moves by 0.
            gap = (goal - ((x * a).sum(-1) + c.view(S, 1))).clamp_min(0.0)
            a_free = torch.where(free, a, 0.0)
            norm = a_free.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
            unit = a_free / norm
            length = gap / (unit * a).sum(-1).clamp_min(torch.finfo(torch.float64).tiny)
            candidate = x + length.unsqueeze(-1) * unit  # the move of ``length`` along ``unit``
            over = free & (unit > 0) & (candidate > upper) & (candidate > x)
            under = free & (unit < 0) & (candidate < lower) & (candidate < x)
            crossed = (over | under) & active.unsqueeze(-1)
            lands = active & ~crossed.any(-1)
            x = torch.where(lands.unsqueeze(-1), candidate, x)
            direction = torch.where(lands.unsqueeze(-1), unit, direction)
            # Fix the crossing features at their bounds, never moving one backwards.
            fixed = torch.where(over, torch.maximum(x, upper), torch.minimum(x, lower))
            x = torch.where(crossed, fixed, x)
            free &= ~crossed
            solved |= lands
            n_iterations += active.to(torch.int64)

        x = self._settle(x, solved, direction, a, c, lower, upper, target_logits, threshold)
        x = torch.where(already.unsqueeze(-1), factuals, x)
        counterfactuals = x.unsqueeze(2).expand(S, B, K, d).clone()
        with torch.no_grad():
            logits = model.logits(counterfactuals.reshape(S, B * K, d)).reshape(S, B, K)
        probabilities = torch.sigmoid(sign * logits).to(torch.float64)
        converged = already | (probabilities >= threshold.view(S, 1, 1)).all(-1)
        return SearchResult(counterfactuals, probabilities, converged, n_iterations)

    # --- parts of the search ------------------------------------------------------------------

    @staticmethod
    def _coefficients(model, S: int, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each system's mean member coefficients ``(S, d)`` and intercept ``(S,)``, float64."""
        members = int(model.n_members)
        weight = model.nets.weights[0].detach().to(device=device, dtype=torch.float64)
        bias = model.nets.biases[0].detach().to(device=device, dtype=torch.float64)
        weight = weight.reshape(S, members, d).mean(dim=1)
        bias = bias.reshape(S, members).mean(dim=1)
        return weight, bias

    def _thresholds(self, problem: SearchProblem, S: int, device) -> torch.Tensor:
        """The target probability of each system ``(S,)``: the problem's, else the parameter."""
        if problem.threshold is None:
            return torch.full((S,), self.threshold, dtype=torch.float64, device=device)
        threshold = torch.as_tensor(problem.threshold).to(device=device, dtype=torch.float64)
        if threshold.shape != (S,):
            raise ValueError(f"problem.threshold must have shape ({S},), got {threshold.shape}")
        return threshold

    @staticmethod
    def _reaches(logits: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """Whether target-class logits ``(S, B)`` reach each system's threshold, as reported."""
        probability = torch.sigmoid(logits).to(torch.float64)
        return probability >= threshold.view(-1, 1)

    def _selection(self, a: torch.Tensor, space, device) -> torch.Tensor:
        """``(S, d)`` mask of the ``n_features`` usable features with the largest ``|a_j|``."""
        mutability = space.mutability.to(device)
        usable = (mutability != IMMUTABLE) & (a != 0) & ~space.encoded_columns(device)
        usable &= (mutability != MUTABLE_INCREASE) | (a > 0)
        usable &= (mutability != MUTABLE_DECREASE) | (a < 0)
        strength = torch.where(usable, a.abs(), -1.0)
        order = torch.argsort(strength, dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            -1, order, torch.arange(a.shape[-1], device=device).expand_as(order).contiguous()
        )
        return usable & (rank < self.n_features)

    def _settle(self, x, solved, direction, a, c, lower, upper, target_logits, threshold):
        """Lengthen solved moves that float32 rounding leaves just below the threshold."""
        short = solved & ~self._reaches(target_logits(x), threshold)
        if not bool(short.any()):
            return x
        S = x.shape[0]
        # The float32 rounding scale of the logit at each point, in logit units.
        scale = (x * a).abs().sum(-1) + c.abs().view(S, 1)
        unit_logit = torch.finfo(torch.float32).eps * scale.clamp_min(1.0)
        slope = (direction * a).sum(-1).clamp_min(torch.finfo(torch.float64).tiny)
        # Within the bounds, but never back past where a feature already is.
        ceiling = torch.where(direction > 0, torch.maximum(x, upper), torch.inf)
        floor = torch.where(direction < 0, torch.minimum(x, lower), -torch.inf)
        for doubling in range(_MAX_NUDGES):
            extra = (unit_logit * math.ldexp(1.0, doubling) / slope).unsqueeze(-1) * direction
            trial = torch.minimum(torch.maximum(x + extra, floor), ceiling)
            trial = torch.where(short.unsqueeze(-1), trial, x)
            fixed = short & self._reaches(target_logits(trial), threshold)
            x = torch.where(fixed.unsqueeze(-1), trial, x)
            short &= ~fixed
            if not bool(short.any()):
                break
        return x

"""Batched gradient search: the engine behind every gradient-based generator.

It reproduces the search loop of CounterfactualExplanations.jl v0.1.5 as used by the reference
study (Altmeyer et al., SaTML 2023; reference-semantics §3.1, generators.md §1 and §7), for all
systems and individuals of a round in one tensor of shape ``(S, B, K, d)``:

* the state lives in z-score space; each of the ``K`` copies of a factual starts at the factual
  plus ``N(0, 0.1²)`` noise on its mutable features;
* the objective per individual is ``mean_K BCE(logit(x'_k), target) + penalty(x')``, summed (never
  averaged) over individuals so that each one's gradient is independent of the batch;
* a step is plain gradient descent, multiplied by ``K`` as in the reference, NaNs set to zero,
  masked by mutability, followed by clamping to the feature bounds;
* an individual stops once its convergence rule holds, checked before every step: with a
  ``decision_threshold`` γ, all ``K`` counterfactuals reach ``p(target) >= γ``; with
  ``decision_threshold=None`` they must also be valid at 0.5 *and* the last step must be smaller
  than ``step_tolerance`` in every coordinate (the study's mitigation generators keep moving past
  validity); or after ``max_iter`` steps;
* an individual the model already puts in the target class is returned untouched after 0 steps.

Subclasses supply :meth:`GradientGenerator.penalty`; they may prepare per-search statistics in
:meth:`GradientGenerator.setup` (returned, never stored on the generator, so one generator object
can serve concurrent searches), see each step's dropout masks in
:meth:`GradientGenerator.begin_step` and replace the descent step in :meth:`GradientGenerator.step`.

Two switches decide how a state is decoded into the point the model sees:

``categorical_gradient`` (``straight_through``, the default, or ``none``): one-hot groups and
binary columns are projected to valid encodings on decoding (argmax, rounding); the forward value
is the projected point either way. ``straight_through`` passes the gradient through the projection
as if it were the identity; ``none`` gives those columns the projection's exact derivative, zero,
so the search never changes a category through its gradient. The default follows the reference by
reading its code (CounterfactualExplanations.jl v0.1.5): ``decode_state``
(``src/counterfactuals/functions.jl`` l. 284-318) projects the groups in
``reconstruct_cat_encoding`` (l. 346-361; ``src/data_preprocessing/functions.jl`` l. 142-170) by
in-place assignment inside ``SliceMap.slicemap``; Zygote does not record in-place assignment, so
the cotangent of the projected value reaches the state unchanged: a straight-through estimator,
the same mechanism by which the reference's in-place inverse z-score of the continuous features
(``functions.jl`` l. 306-310) passes its gradient. Caveat: whether the reference study's credit
runs declared the one-hot columns categorical at all is uncertain. AlgorithmicRecourseDynamics.jl's
``load_real_world`` (tag ``camera-ready``, ``src/data/functions.jl`` l. 26-44) builds
``CounterfactualData(X, y)`` without ``features_categorical``, so with it they were neither
projected nor treated specially; but v0.1.2, which the figures used, exports that name without
defining it, and the paper repository's own ``load_real_world`` (``src/utils.jl`` l. 82-101)
loads the ``credit_default.jls`` that ``sections/data_preprocessing/real_world_data.qmd``
(l. 176-192) built *with* ``features_categorical``. To run without any projection, declare no
categorical columns in the data; no switch here does it.

``latent_decode`` (``raw``, the default, or ``projected``), for ``latent_space=True``: ``raw`` takes
the VAE decoder's output as it is, as the reference does (``decode_state`` returns
``map_from_latent`` at once in latent space, l. 294-297, with no categorical projection;
``apply_mutability`` returns the step unchanged in latent space, l. 635-640; the domain clamp,
l. 662-673 called at l. 745, acts on the search state, here the latent code, never on the decoded
point; ``counterfactual`` is ``decode_state``, l. 447-448); ``projected`` restricts the decoded
point to the mutability allowed relative to the factual, projects encodings and clamps to the
bounds. Either way the counterfactuals returned are exactly what the model saw in the search.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from recourse_sim import checks
from recourse_sim.generators.base import (
    CATEGORICAL_GRADIENTS,
    Generator,
    SearchProblem,
    SearchResult,
)
from recourse_sim.generators.vae import VAESettings, VAEStore, vae_settings
from recourse_sim.utils import counter_rng

# Fixed stream keys of the counter-based draws made during a search.
_INIT_STREAM = 0x1A17
_DROPOUT_STREAM = 0xD20F

#: How a latent code becomes the point the model sees (see the module docstring).
LATENT_DECODES = ("raw", "projected")


class GradientGenerator(Generator):
    """Gradient-descent counterfactual search with a generator-specific penalty.

    Args:
        cost_weight: Weight λ of the distance penalty.
        learning_rate: Step size η of plain gradient descent (the study: ``Descent(0.01)``).
        max_iter: Maximum number of steps T.
        decision_threshold: Convergence threshold γ on p(target); ``None`` continues past validity
            until the steps vanish (see ``step_tolerance``).
        step_tolerance: τ, the largest step coordinate that counts as "vanished".
        init_noise: Standard deviation of the initial perturbation in z-score space (0 = start at
            the factual).
        latent_space: Search in the latent space of a VAE fitted on each system's population
            (REVISE's idea, available to every gradient generator).
        vae: Settings of those VAEs (see :class:`recourse_sim.generators.vae.VAESettings`).
        categorical_gradient: ``"straight_through"`` (the reference's behaviour) or ``"none"``:
            the gradient that one-hot and binary columns receive through their projection.
        latent_decode: ``"raw"`` (the reference's behaviour) or ``"projected"``: whether a
            latent-space search uses the decoder's output as is, or restricted to mutability,
            projected to valid encodings and clamped to bounds.
    """

    def __init__(
        self,
        cost_weight: float = 0.1,
        learning_rate: float = 0.01,
        max_iter: int = 100,
        decision_threshold: float | None = 0.5,
        step_tolerance: float = 1e-3,
        init_noise: float = 0.1,
        latent_space: bool = False,
        vae: Mapping | VAESettings | None = None,
        categorical_gradient: str = "straight_through",
        latent_decode: str = "raw",
    ):
        self.decision_threshold = checks.probability(
            "generator.decision_threshold",
            decision_threshold,
            optional=True,
            none_means="search past validity until every step < step_tolerance",
        )
        self.cost_weight = checks.real("generator.cost_weight", cost_weight, minimum=0)
        self.learning_rate = checks.real(
            "generator.learning_rate", learning_rate, minimum=0, low_open=True
        )
        self.max_iter = checks.integer("generator.max_iter", max_iter, minimum=1)
        self.step_tolerance = checks.real(
            "generator.step_tolerance", step_tolerance, minimum=0, low_open=True
        )
        self.init_noise = checks.real("generator.init_noise", init_noise, minimum=0)
        self.latent_space = checks.flag("generator.latent_space", latent_space)
        self.vae = vae_settings(vae)
        self._vaes = VAEStore(self.vae)
        checks.check_choice(
            "generator.categorical_gradient", categorical_gradient, CATEGORICAL_GRADIENTS
        )
        self.categorical_gradient = str(categorical_gradient)
        checks.check_choice("generator.latent_decode", latent_decode, LATENT_DECODES)
        self.latent_decode = str(latent_decode)

    @property
    def validity_threshold(self) -> float:
        """The probability a counterfactual needs to count as valid."""
        return 0.5 if self.decision_threshold is None else self.decision_threshold

    def penalty(
        self,
        counterfactuals: torch.Tensor,
        factuals: torch.Tensor,
        logits: torch.Tensor,
        state: object,
    ) -> torch.Tensor:
        """Penalty per individual, ``(S, B)``, of ``counterfactuals`` ``(S, B, K, d)``.

        ``factuals`` has shape ``(S, B, 1, d)`` (both in model space), ``logits`` ``(S, B, K)`` are
        the target-class logits at the counterfactuals, ``state`` is what :meth:`setup` returned.
        """
        raise NotImplementedError

    def setup(self, problem: SearchProblem) -> object:
        """Per-search preparation (e.g. statistics of the population), passed to the hooks."""
        return None

    def begin_step(self, state: object, masks: list[torch.Tensor] | None) -> None:
        """Called before each evaluation of the objective with that step's dropout masks.

        ``masks`` (``None`` without dropout in the search) are those of the model evaluation that
        produces the ``logits`` passed to :meth:`penalty`; a penalty that evaluates the model
        itself (e.g. per ensemble member) uses them to see the same network.
        """

    def converged(
        self, counterfactuals: torch.Tensor, logits: torch.Tensor, state: object
    ) -> torch.Tensor | None:
        """An extra convergence condition ``(S, B)`` that must hold besides validity, or None.

        Called with gradients enabled (``logits`` still depend on ``counterfactuals``).
        """
        return None

    def step(self, grad: torch.Tensor, n_counterfactuals: int, state: object) -> torch.Tensor:
        """The raw search step from the objective's gradient (masking is applied afterwards).

        Plain gradient descent, multiplied by ``K`` as in CounterfactualExplanations.jl (which
        undoes the mean over the ``K`` counterfactuals in the loss).
        """
        return -self.learning_rate * n_counterfactuals * grad

    # --- the search ------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The prediction loss per individual ``(S, B)``: mean_K BCE towards the target."""
        target = torch.ones_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)

    def search(self, problem: SearchProblem) -> SearchResult:
        """Run the batched search (see the module docstring for the exact semantics)."""
        model = problem.model
        factuals = problem.factuals.to(torch.float64).unsqueeze(2)  # (S, B, 1, d)
        S, B, _, d = factuals.shape
        K = int(problem.n_counterfactuals)
        state = self.setup(problem)
        space = self._search_space(problem, factuals, K)
        sign = 1.0 if problem.target == 1 else -1.0  # logit of the target class

        def target_logits(x_cf: torch.Tensor, masks=None) -> torch.Tensor:
            logits = model.logits(x_cf.reshape(S, B * K, d), masks).reshape(S, B, K)
            return sign * logits

        with torch.no_grad():
            already = torch.sigmoid(target_logits(factuals.expand(S, B, K, d)))[..., 0]
            already = already >= self.validity_threshold
        active = ~already
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=factuals.device)
        last_step_small = torch.zeros(S, B, dtype=torch.bool, device=factuals.device)
        dropout_keys = self._dropout_keys(problem, S, B, K)
        threshold = self.validity_threshold
        position = space.initial
        radius = problem.nascent_radius
        nascent = None

        for iteration in range(self.max_iter + 1):
            position = position.detach().requires_grad_(True)
            x_cf = space.decode(position)
            if radius is not None:  # every point of the path, the initial one included
                nascent = self._nascent(x_cf, factuals, problem, radius, nascent)
            masks = self._dropout_masks(model, dropout_keys, iteration)
            self.begin_step(state, masks)
            logits = target_logits(x_cf, masks)
            extra = self.converged(x_cf, logits, state)
            with torch.no_grad():
                check = logits if masks is None else target_logits(x_cf)
                converged = (torch.sigmoid(check) >= threshold).all(dim=-1)
                if self.decision_threshold is None:
                    converged &= last_step_small
                if extra is not None:
                    converged &= extra
                active &= ~converged
            if iteration == self.max_iter or not bool(active.any()):
                break
            loss = self.loss(logits) + self.penalty(x_cf, factuals, logits, state)
            (grad,) = torch.autograd.grad(loss[active].sum(), position)
            with torch.no_grad():
                step = torch.nan_to_num(self.step(grad, K, state), nan=0.0)
                step = space.admissible(step) * active.view(S, B, 1, 1)
                position = space.move(position, step)
                n_iterations += active.to(torch.int64)
                last_step_small = (step.abs() < self.step_tolerance).flatten(2).all(dim=-1)

        with torch.no_grad():
            counterfactuals = space.finish(position.detach())
            # An individual already in the target class keeps its exact features.
            counterfactuals = torch.where(already.view(S, B, 1, 1), factuals, counterfactuals)
            probabilities = torch.sigmoid(target_logits(counterfactuals)).to(torch.float64)
            # The last check ran on the final state: whoever is still active never converged.
            converged = already | ~active
            if nascent is not None:
                nascent = torch.where(already.view(S, B, 1, 1), factuals, nascent)
        return SearchResult(counterfactuals, probabilities, converged, n_iterations, nascent)

    @staticmethod
    def _nascent(
        x: torch.Tensor,
        factuals: torch.Tensor,
        problem: SearchProblem,
        radius: float,
        previous: torch.Tensor | None,
    ) -> torch.Tensor:
        """The last path point within ``radius`` (∞-norm, z-scores) of the factual.

        CounterfactualTraining.jl keeps the last iterate of the search path inside the ball
        (``get_last_valid_ae``); the path starts at the initial state, so the factual itself
        stands in until a point inside it is seen (an individual that stopped no longer moves).
        """
        with torch.no_grad():
            x = x.detach()
            inside = ((x - factuals) / problem.space.scale).abs().amax(dim=-1) <= radius
            if previous is None:
                previous = factuals.expand_as(x)
            return torch.where(inside.unsqueeze(-1), x, previous)

    def _search_space(self, problem: SearchProblem, factuals: torch.Tensor, K: int):
        """Where the search moves: z-score offsets of the features, or a VAE's latent space."""
        S, B, _, d = factuals.shape
        if self.latent_space:
            vae = self._vaes.for_systems(problem)
            return _LatentSpace(
                problem, factuals, K, vae, self.latent_decode, self.categorical_gradient
            )
        # Offsets from the factual in z-score space; the initial perturbation follows
        # CounterfactualExplanations.jl's :add_perturbation initialisation.
        device = factuals.device
        noise = counter_rng.normal(
            _INIT_STREAM,
            problem.round_key,
            problem.system_keys.view(S, 1, 1, 1),
            problem.individual_ids.view(S, B, 1, 1),
            torch.arange(K, device=device).view(1, 1, K, 1),
            torch.arange(d, device=device).view(1, 1, 1, d),
        )
        return _FeatureOffsets(
            problem.space, factuals, self.init_noise * noise, self.categorical_gradient
        )

    @property
    def keeps_state(self) -> bool:
        """A latent-space search fits and keeps one VAE per system."""
        return self.latent_space

    def state_dict(self) -> dict:
        """State kept across rounds (the latent space's VAEs), for checkpoints."""
        return self._vaes.state_dict() if self.latent_space else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if self.latent_space:
            self._vaes.load_state_dict(state)

    @staticmethod
    def _dropout_keys(problem: SearchProblem, S: int, B: int, K: int) -> torch.Tensor | None:
        model = problem.model
        spec = model.spec
        if not (spec.dropout > 0 and spec.dropout_in_search):
            return None
        members = model.n_members
        device = problem.individual_ids.device
        system = problem.system_keys.repeat_interleave(members).view(-1, 1, 1)
        member = torch.arange(members, device=device).repeat(S).view(-1, 1, 1)
        ids = problem.individual_ids.repeat_interleave(members, dim=0).view(-1, B, 1)
        ks = torch.arange(K, device=device).view(1, 1, K)
        keys = counter_rng.hash_keys(_DROPOUT_STREAM, problem.round_key, system, member, ids, ks)
        return keys.reshape(S * members, B * K)

    @staticmethod
    def _dropout_masks(model, keys: torch.Tensor | None, iteration: int):
        if keys is None:
            return None
        keep = 1.0 - model.spec.dropout
        masks = []
        for layer, width in enumerate(model.spec.hidden_sizes):
            columns = torch.arange(width, device=keys.device)
            u = counter_rng.uniform(keys.unsqueeze(-1), iteration, layer, columns)
            masks.append((u < keep).to(torch.float32) / keep)
        return masks


class _FeatureOffsets:
    """Search positions are offsets from the factual in z-score space."""

    def __init__(self, space, factuals: torch.Tensor, noise: torch.Tensor, gradient: str):
        self.space = space
        self.factuals = factuals
        self.gradient = gradient
        self.initial = self._clamp(space.mask_step(noise))

    def decode(self, offset: torch.Tensor) -> torch.Tensor:
        return self.space.project(self.factuals + offset * self.space.scale, self.gradient)

    def admissible(self, step: torch.Tensor) -> torch.Tensor:
        return self.space.mask_step(step)

    def move(self, offset: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return self._clamp(offset + step)

    def finish(self, offset: torch.Tensor) -> torch.Tensor:
        # Clamp once more: re-encoding the clamped point as an offset can round past a bound.
        return self.space.clamp(self.decode(offset))

    def _clamp(self, offset: torch.Tensor) -> torch.Tensor:
        """Clamp the decoded point to the bounds and re-encode it as an offset."""
        space = self.space
        if torch.isinf(space.lower).all() and torch.isinf(space.upper).all():
            return offset
        x = space.clamp(self.factuals + offset * space.scale)
        return (x - self.factuals) / space.scale


class _LatentSpace:
    """Search positions are latent codes of the system's VAE.

    The start is a reparameterised sample ``μ(x) + σ(x)·ε`` (CounterfactualExplanations.jl).
    With ``decode="raw"`` a code decodes to the decoder's output as is (CE.jl v0.1.5, which applies
    neither mutability, nor encodings, nor bounds to it); with ``decode="projected"`` decoded
    counterfactuals keep immutable features at the factual's values, respect increase- or
    decrease-only directions, have valid encodings and lie within bounds. Unlike CE.jl, the state
    is not re-encoded (stochastically) after every step.
    """

    def __init__(
        self,
        problem: SearchProblem,
        factuals: torch.Tensor,
        K: int,
        vae,
        decode: str = "raw",
        gradient: str = "straight_through",
    ):
        S, B, _, d = factuals.shape
        self.space = problem.space
        self.factuals = factuals
        self.vae = vae
        self.shape = (S, B, K, d)
        self.projected = decode == "projected"
        self.gradient = gradient
        with torch.no_grad():
            mu, log_sigma = vae.encode(factuals[:, :, 0])
        L = mu.shape[-1]
        eps = counter_rng.normal(
            _INIT_STREAM + 1,
            problem.round_key,
            problem.system_keys.view(S, 1, 1, 1),
            problem.individual_ids.view(S, B, 1, 1),
            torch.arange(K, device=mu.device).view(1, 1, K, 1),
            torch.arange(L, device=mu.device).view(1, 1, 1, L),
        )
        self.initial = mu.unsqueeze(2).double() + torch.exp(log_sigma).unsqueeze(2).double() * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        S, B, K, d = self.shape
        raw = self.vae.decode(z.reshape(S, B * K, -1)).reshape(S, B, K, d).to(torch.float64)
        if not self.projected:
            return raw
        restricted = self.space.restrict(raw, self.factuals)
        return self.space.clamp(self.space.project(restricted, self.gradient))

    def admissible(self, step: torch.Tensor) -> torch.Tensor:
        return step

    def move(self, z: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return z + step

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

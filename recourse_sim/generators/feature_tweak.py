"""Feature Tweaking: ε-satisfactory leaf boxes of a tree ensemble (Tolomei et al., KDD 2017).

Tolomei, Silvestri, Haines and Lalmas, "Interpretable Predictions of Tree-based Ensembles via
Actionable Feature Tweaking" (KDD 2017). Gradient-free and specific to tree models. Every
root-to-leaf path of every tree whose leaf votes for the favourable class is a box of split
conditions; the *ε-satisfactory* instance of a path changes the factual only where it violates a
split: ``x_j ← θ − ε`` where the path goes to the ``x_j ≤ θ`` side (scikit-learn goes left when
``x_j <= θ``), ``x_j ← θ + ε`` where it goes to the ``x_j > θ`` side. The candidates are ranked by
cost, and the cheapest ones that the *ensemble* puts in the favourable class are returned.

**Which models.** scikit-learn's ``DecisionTreeClassifier``, ``RandomForestClassifier``,
``ExtraTreesClassifier`` (classifier trees: a leaf votes favourable when the favourable class has
the largest share of its samples, ties included, so a leaf at exactly 0.5 counts with the default
threshold) and binary ``GradientBoostingClassifier``. The paper covers voting ensembles only;
gradient boosting is an extension here: its trees are regression trees on the log-odds of
``classes_[1]``, and a leaf votes favourable when its value pushes the log-odds towards the
favourable class (``value > 0`` when that class is ``classes_[1]``). Any other model is refused
with a :class:`~recourse_sim.errors.ConfigError` naming ``generator.feature_tweak``.

**Paper, not references.** The candidate set is the paper's, checked with the ensemble as in the
paper. CE.jl's version adds its proposal to the state twice (an overshoot) and CARLA's accepts a
candidate when the single tree, not the ensemble, predicts the favourable class; neither is
reproduced. The paper only tweaks trees that currently vote against the favourable class; here
the favourable leaves of *all* trees are candidates (a superset that is independent of the
individual, so the boxes are computed once per fitted estimator and search; the ensemble check
and the cost ranking decide as before). Cost: L2 in z-score space (``/ space.scale``).

**ε units.** ε is applied in the model's input space (the features as the trees split them), as
the paper and CE.jl do; the default 0.1 is therefore in the units of each feature, not a z-score.
Where a leaf's box is narrower than ε on a violated feature (``θ ± ε`` would leave the box on
its other side), the candidate takes the box's midpoint instead, so it still reaches its leaf.
The trees compare float32 copies of the features; the ensemble check is the arbiter, so a
rounding edge case can only cost a candidate, never return an invalid one.

**Encodings.** A one-hot group or a binary column is never set to ``θ ± ε``: it takes the valid
encoding that satisfies the leaf's splits, the factual's own where that already does (the paper
leaves satisfied splits alone), else for a one-hot group the lowest-index category the box allows
and for a binary column the other value. A leaf no valid encoding satisfies gives no candidate.

**Constraints.** Candidates that change an immutable feature, move an increase- (decrease-)only
feature down (up), or leave the feature bounds (``space.lower``/``upper``) are discarded, not
repaired: repairing would take them out of the leaf they were built for.

**Search and results.** Candidates are evaluated cheapest first, ``chunk_size`` per individual at a
time (all individuals of all systems in one ``proba`` call per chunk), until ``K`` distinct valid
ones are found or the candidates run out. Valid: ensemble probability ``>= decision_threshold``.
With fewer than ``K`` valid ones the cheapest is repeated; with none the factual is returned and
the individual has not converged. ``converged``: at least one valid candidate was found;
``n_iterations``: the candidate chunks evaluated for the individual. An individual already
favourable keeps its exact features (``n_iterations`` 0). No random draws: deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

from recourse_sim import checks
from recourse_sim.errors import ConfigError
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
    FeatureSpace,
    Generator,
    SearchProblem,
    SearchResult,
)

#: The key named by errors about the model (the generator's label in ``configs/generator``).
_KEY = "generator.feature_tweak"
_ALLOWED = (
    "feature_tweak needs a scikit-learn tree model: model=sklearn with estimator "
    "DecisionTreeClassifier, RandomForestClassifier, ExtraTreesClassifier or "
    "GradientBoostingClassifier; for other models use growing_spheres or nice"
)
#: Elements of one (individuals x leaves x features) block when costing the candidates; bounds
#: the memory of forests with many leaves.
_BLOCK_ELEMENTS = 1 << 22


def _tree_model_classes() -> tuple[type, ...]:
    try:
        from sklearn.ensemble import (
            ExtraTreesClassifier,
            GradientBoostingClassifier,
            RandomForestClassifier,
        )
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:  # without scikit-learn no model can be a scikit-learn tree model
        return ()
    return (
        DecisionTreeClassifier,
        RandomForestClassifier,
        ExtraTreesClassifier,
        GradientBoostingClassifier,
    )


def _is_boosting(estimator: object) -> bool:
    from sklearn.ensemble import GradientBoostingClassifier

    return isinstance(estimator, GradientBoostingClassifier)


class FeatureTweakGenerator(Generator):
    """ε-satisfactory instances of the favourable leaves of a tree model, cheapest valid first.

    Args:
        epsilon: ε, how far past a split threshold a tweaked feature lands (model units).
        decision_threshold: Ensemble probability of the favourable class a candidate needs.
        chunk_size: Candidates evaluated per individual and ``proba`` call.
    """

    deterministic = True
    needs_gradients = False

    def __init__(self, epsilon: float = 0.1, decision_threshold: float = 0.5, chunk_size: int = 64):
        self.epsilon = checks.real("generator.epsilon", epsilon, minimum=0, low_open=True)
        self.decision_threshold = checks.probability(
            "generator.decision_threshold", decision_threshold
        )
        self.chunk_size = checks.integer("generator.chunk_size", chunk_size, minimum=1)

    # --- which models ---------------------------------------------------------------------

    def check_model(self, model: object) -> None:
        """Refuse anything but a scikit-learn tree model (see the module docstring)."""
        spec = getattr(model, "spec", model)
        kind = getattr(spec, "kind", None)
        estimators = getattr(model, "estimators", None)
        if kind is not None and kind != "sklearn":
            raise ConfigError(_KEY, kind, _ALLOWED)
        if estimators is None:
            prototype = getattr(spec, "prototype", None)
            if kind is None or not callable(prototype):
                raise ConfigError(_KEY, type(model).__name__, _ALLOWED)
            estimators = [prototype()]
        for estimator in estimators:
            self._check_estimator(estimator)

    @staticmethod
    def _check_estimator(estimator: object) -> None:
        classes = _tree_model_classes()
        if not classes or not isinstance(estimator, classes):
            raise ConfigError(_KEY, type(estimator).__name__, _ALLOWED)
        if getattr(estimator, "n_outputs_", 1) != 1:
            raise ConfigError(
                _KEY,
                f"{type(estimator).__name__} with {estimator.n_outputs_} outputs",
                "feature_tweak needs a single-output classifier",
            )
        n_classes = getattr(estimator, "n_classes_", None)
        if _is_boosting(estimator) and n_classes is not None and n_classes != 2:
            raise ConfigError(
                _KEY,
                f"GradientBoostingClassifier with {n_classes} classes",
                "feature_tweak supports gradient boosting for binary classification only",
            )

    # --- search ---------------------------------------------------------------------------

    def search(self, problem: SearchProblem) -> SearchResult:
        """Rank every individual's leaf candidates by cost and check them chunk by chunk."""
        model = problem.model
        self.check_model(model)
        estimators = list(model.estimators)
        space = problem.space
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K, chunk = int(problem.n_counterfactuals), self.chunk_size
        device = factuals.device
        if len(estimators) != S:
            raise ValueError(f"the model has {len(estimators)} estimators for {S} systems")

        def proba(points: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                p = model.proba(points)
            # as_tensor without a device would land on torch's default device.
            p = p if torch.is_tensor(p) else torch.as_tensor(p, device=device)
            return p.to(device=device, dtype=torch.float64)

        already = proba(factuals) >= self.decision_threshold
        # Boxes per fitted estimator: the estimators are refitted every round, so the cache
        # lives for this search only (systems may share an estimator object).
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        boxes, orders, n_candidates = [], [], []
        for s, estimator in enumerate(estimators):
            if id(estimator) not in cache:
                lower, upper = _leaf_boxes(estimator, d, problem.target)
                cache[id(estimator)] = (
                    torch.as_tensor(lower, dtype=torch.float64, device=device),
                    torch.as_tensor(upper, dtype=torch.float64, device=device),
                )
            lower, upper = cache[id(estimator)]
            cost = self._costs(factuals[s], lower, upper, space)
            cost[already[s]] = torch.inf
            boxes.append((lower, upper))
            orders.append(cost.argsort(dim=-1, stable=True))
            n_candidates.append(torch.isfinite(cost).sum(-1))
        n_candidates = torch.stack(n_candidates)  # (S, B)

        # K found slots plus a dump slot for candidates that are not taken.
        found = factuals.unsqueeze(2).repeat(1, 1, K + 1, 1)
        n_found = torch.zeros(S, B, dtype=torch.int64, device=device)
        n_iterations = torch.zeros(S, B, dtype=torch.int64, device=device)
        slot = torch.arange(chunk, device=device)
        earlier = slot.view(1, chunk) < slot.view(chunk, 1)  # [i, j]: j comes before i
        start = 0
        while True:
            active = (n_found < K) & (n_candidates > start)
            if not bool(active.any()):
                break
            # Evaluate only the individuals still searching: gather them to the front of each
            # system; a system with fewer fills up with finished ones, whose rows are ignored.
            n_active = int(active.sum(-1).max())
            who = active.long().argsort(dim=-1, descending=True, stable=True)[:, :n_active]
            live = torch.gather(active, 1, who)
            x = torch.gather(factuals, 1, who.unsqueeze(-1).expand(-1, -1, d))
            points, usable = [], []
            for s in range(S):
                index = orders[s][who[s], start : start + chunk]
                width = index.shape[1]
                lower, upper = boxes[s]
                cand, _ = _candidates(
                    x[s].unsqueeze(1), lower[index], upper[index], self.epsilon, space
                )
                if width < chunk:  # pad with the factual; padding is never usable
                    pad = x[s].unsqueeze(1).expand(n_active, chunk - width, d)
                    cand = torch.cat([cand, pad], dim=1)
                points.append(cand)
                usable.append(
                    (start + slot).view(1, chunk) < n_candidates[s, who[s]].view(n_active, 1)
                )
            points = torch.stack(points)  # (S, n_active, chunk, d)
            usable = torch.stack(usable) & live.unsqueeze(-1)
            p = proba(points.reshape(S, n_active * chunk, d)).reshape(S, n_active, chunk)
            valid = usable & (p >= self.decision_threshold)
            # Distinct counterfactuals: skip repeats within the chunk and of those already found.
            had = torch.gather(n_found, 1, who)
            kept = torch.gather(found, 1, who.view(S, n_active, 1, 1).expand(-1, -1, K + 1, d))
            # One op for both, so that equal points get bitwise equal costs.
            both = torch.cat([points, kept], dim=2)
            cost = ((both - x.unsqueeze(2)) / space.scale).norm(dim=-1)
            cost, kept_cost = cost[..., :chunk], cost[..., chunk:]
            repeated = _matches(points, cost, points, cost, earlier)
            taken = torch.arange(K + 1, device=device).view(1, 1, 1, K + 1) < had.view(
                S, n_active, 1, 1
            )
            seen = _matches(points, cost, kept, kept_cost, taken)
            accept = valid & ~repeated & ~seen
            rank = had.unsqueeze(-1) + accept.long().cumsum(-1) - 1
            target = torch.where(accept & (rank < K), rank, K)
            kept.scatter_(2, target.unsqueeze(-1).expand(-1, -1, -1, d), points)
            found.scatter_(1, who.view(S, n_active, 1, 1).expand(-1, -1, K + 1, d), kept)
            n_found.scatter_(1, who, (had + accept.sum(-1)).clamp(max=K))
            n_iterations.scatter_add_(1, who, live.long())
            start += chunk

        found = found[:, :, :K]
        slot_k = torch.arange(K, device=device).view(1, 1, K, 1)
        found = torch.where(slot_k < n_found.view(S, B, 1, 1), found, found[:, :, :1])
        counterfactuals = torch.where(
            (already | (n_found == 0)).view(S, B, 1, 1), factuals.unsqueeze(2), found
        )
        probabilities = proba(counterfactuals.reshape(S, B * K, d)).reshape(S, B, K)
        converged = already | (n_found > 0)
        return SearchResult(counterfactuals, probabilities, converged, n_iterations)

    def _costs(
        self, factuals: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, space: FeatureSpace
    ) -> torch.Tensor:
        """Cost ``(B, L)`` of every leaf's candidate; ``inf`` where there is none."""
        B, d = factuals.shape
        L = lower.shape[0]
        block = max(1, _BLOCK_ELEMENTS // max(B * d, 1))
        costs = []
        for first in range(0, L, block):
            lo, up = lower[first : first + block], upper[first : first + block]
            cand, feasible = _candidates(factuals.unsqueeze(1), lo, up, self.epsilon, space)
            cost = ((cand - factuals.unsqueeze(1)) / space.scale).norm(dim=-1)
            # A candidate equal to the factual is known to be unfavourable: no point checking.
            costs.append(torch.where(feasible & (cost > 0), cost, torch.inf))
        if not costs:
            return torch.full((B, 0), torch.inf, dtype=torch.float64, device=factuals.device)
        return torch.cat(costs, dim=1)


def _candidates(
    x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, epsilon: float, space: FeatureSpace
) -> tuple[torch.Tensor, torch.Tensor]:
    """ε-satisfactory points of factuals ``x`` ``(B, 1, d)`` for leaf boxes ``(…, m, d)``.

    A box is ``lower < x <= upper`` per feature (scikit-learn goes left when ``x <= θ``). Returns
    the candidates ``(B, m, d)`` and whether each is admissible (a valid encoding exists,
    mutability and bounds hold).
    """
    inside = (lower < x) & (x <= upper)
    tweaked = torch.where(x <= lower, lower + epsilon, upper - epsilon)
    # ε wider than the box would leave it on the other side: the midpoint reaches the leaf.
    reaches = (lower < tweaked) & (tweaked <= upper)
    tweaked = torch.where(reaches, tweaked, (lower + upper) / 2)
    cand = torch.where(inside, x, tweaked)
    feasible = torch.ones(cand.shape[:-1], dtype=torch.bool, device=cand.device)

    for column in space.binary_features:
        lo, up, value = lower[..., column], upper[..., column], x[..., column]
        other = 1.0 - value.clamp(0.0, 1.0).round()
        keep = (lo < value) & (value <= up)
        flip = (lo < other) & (other <= up)
        cand[..., column] = torch.where(keep, value, other).expand_as(cand[..., column])
        feasible &= keep | flip
    for group in space.categorical_groups:
        cols = list(group)
        lo, up = lower[..., cols], upper[..., cols]
        may_be_one = (lo < 1) & (up >= 1)
        may_be_zero = (lo < 0) & (up >= 0)
        must_not_be_zero = (~may_be_zero).long()
        # Category k is a valid encoding in the box when column k may be 1 and all others 0.
        allowed = may_be_one & (must_not_be_zero.sum(-1, keepdim=True) - must_not_be_zero == 0)
        allowed = allowed.expand(*cand.shape[:-1], len(cols))
        current = x[..., cols].argmax(-1, keepdim=True).expand(*cand.shape[:-1], 1)
        keep = allowed.gather(-1, current)
        lowest = allowed.long().argmax(-1, keepdim=True)
        chosen = torch.where(keep, current, lowest)
        cand[..., cols] = torch.zeros_like(cand[..., cols]).scatter_(-1, chosen, 1.0)
        feasible &= allowed.any(-1)

    mut = space.mutability
    base = x.expand_as(cand)
    ok = (mut != IMMUTABLE) | (cand == base)
    ok &= (mut != MUTABLE_INCREASE) | (cand >= base)
    ok &= (mut != MUTABLE_DECREASE) | (cand <= base)
    ok &= (cand >= space.lower) & (cand <= space.upper)
    return cand, feasible & ok.all(-1)


def _matches(
    points: torch.Tensor,
    cost: torch.Tensor,
    others: torch.Tensor,
    other_cost: torch.Tensor,
    pairs: torch.Tensor,
) -> torch.Tensor:
    """Whether each of ``points`` ``(S, n, m, d)`` equals one of ``others`` ``(S, n, o, d)``.

    Only the pairs that ``pairs`` (broadcast to ``(S, n, m, o)``) allows count. Equal points have
    bitwise equal costs, so costs sift the pairs and only those are compared feature by feature.
    """
    S, n, m, _ = points.shape
    maybe = (cost.unsqueeze(-1) == other_cost.unsqueeze(-2)) & pairs
    s, i, a, b = maybe.nonzero(as_tuple=True)
    equal = (points[s, i, a] == others[s, i, b]).all(-1)
    found = torch.zeros(S, n, m, dtype=torch.bool, device=points.device)
    found[s[equal], i[equal], a[equal]] = True
    return found


def _leaf_boxes(estimator: object, d: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``lower, upper`` ``(L, d)`` of the favourable leaves of all trees, deduplicated."""
    classes = list(getattr(estimator, "classes_", []))
    if target not in classes:  # a system trained without favourable examples has no such leaf
        return np.empty((0, d)), np.empty((0, d))
    if _is_boosting(estimator):
        sign = 1.0 if classes.index(target) == 1 else -1.0
        trees = [tree.tree_ for tree in estimator.estimators_[:, 0]]

        def favourable(value: np.ndarray) -> np.ndarray:
            return sign * value[:, 0, 0] > 0

    else:
        column = classes.index(target)
        members = getattr(estimator, "estimators_", None)
        trees = [tree.tree_ for tree in members] if members is not None else [estimator.tree_]

        def favourable(value: np.ndarray) -> np.ndarray:
            return value[:, 0, column] >= value[:, 0, :].max(axis=1)

    lowers, uppers = [], []
    for tree in trees:
        left, right = tree.children_left, tree.children_right
        lower = np.full((tree.node_count, d), -np.inf)
        upper = np.full((tree.node_count, d), np.inf)
        frontier = np.array([0])
        while frontier.size:  # one depth level at a time
            parents = frontier[left[frontier] != -1]
            feature, threshold = tree.feature[parents], tree.threshold[parents]
            for children, side in ((left[parents], upper), (right[parents], lower)):
                lower[children] = lower[parents]
                upper[children] = upper[parents]
                if side is upper:
                    upper[children, feature] = np.minimum(upper[parents, feature], threshold)
                else:
                    lower[children, feature] = np.maximum(lower[parents, feature], threshold)
            frontier = np.concatenate([left[parents], right[parents]])
        keep = (left == -1) & favourable(tree.value)
        lowers.append(lower[keep])
        uppers.append(upper[keep])
    if not lowers:
        return np.empty((0, d)), np.empty((0, d))
    unique = np.unique(np.hstack([np.vstack(lowers), np.vstack(uppers)]), axis=0)
    return unique[:, :d], unique[:, d:]

"""FeatureTweak and NICE: gradient-free generators on scikit-learn models, batched over systems."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.base import clone
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError
from recourse_sim.generators import (
    FeatureSpace,
    FeatureTweakGenerator,
    NiceGenerator,
    SearchProblem,
)
from recourse_sim.models import LogisticRegression as TorchLogistic

CONFIGS = Path(__file__).parents[1] / "recourse_sim" / "configs" / "generator"


class SklearnSpec:
    """Stand-in for the scikit-learn model specification."""

    kind = "sklearn"
    differentiable = False

    def __init__(self, estimator):
        self.estimator = estimator

    def prototype(self):
        return clone(self.estimator)


class Estimators:
    """Stand-in for the trained scikit-learn classifier: one fitted estimator per system."""

    def __init__(self, estimators):
        self.estimators = list(estimators)
        self.n_systems = len(self.estimators)
        self.spec = SklearnSpec(self.estimators[0])

    def proba(self, X):
        X = torch.as_tensor(X, dtype=torch.float64, device="cpu")
        if X.ndim == 2:
            X = X.unsqueeze(0).expand(self.n_systems, -1, -1)
        return torch.stack(
            [
                torch.as_tensor(
                    est.predict_proba(X[s].numpy())[:, list(est.classes_).index(1)],
                    dtype=torch.float64,
                    device="cpu",
                )
                for s, est in enumerate(self.estimators)
            ]
        )


def fitted(estimator, data: Dataset, rows=None):
    rows = slice(None) if rows is None else rows
    return clone(estimator).fit(data.X[rows], data.y[rows])


def problem(data: Dataset, model, rows, K=3, round_key=1, mask=None) -> SearchProblem:
    rows = torch.as_tensor(rows)
    S = model.n_systems
    X = torch.tensor(data.X)
    return SearchProblem(
        factuals=X[rows].unsqueeze(0).repeat(S, 1, 1),
        individual_ids=rows.unsqueeze(0).repeat(S, 1),
        system_keys=torch.arange(S),
        model=model,
        space=FeatureSpace.from_data(data),
        population_X=X.unsqueeze(0).repeat(S, 1, 1),
        population_y=torch.tensor(data.y).unsqueeze(0).repeat(S, 1),
        n_counterfactuals=K,
        round_key=round_key,
        population_mask=mask,
    )


def negatives(model, data: Dataset, n=15) -> np.ndarray:
    """Rows every system puts in the unfavourable class."""
    p = model.proba(torch.tensor(data.X))
    return np.flatnonzero((p < 0.5).all(0).numpy())[:n]


@pytest.fixture(scope="module")
def data():
    return blobs(n_per_class=60, d=2)


@pytest.fixture(scope="module")
def categorical():
    """A continuous column, a 3-level one-hot group and a binary column."""
    rng = np.random.default_rng(0)
    n = 160
    level = rng.integers(0, 3, n)
    flag = rng.integers(0, 2, n)
    x0 = rng.normal(size=n)
    y = ((x0 + 1.5 * (level == 2) + 1.0 * flag) > 1.0).astype(int)
    return Dataset(
        np.column_stack([x0, np.eye(3)[level], flag]),
        y,
        ("x0", "c_0", "c_1", "c_2", "flag"),
        categorical_groups=((1, 2, 3),),
        binary_features=(4,),
        name="categorical",
    )


TREES = {
    "tree": DecisionTreeClassifier(max_depth=3, random_state=0),
    "forest": RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0),
    "extra": ExtraTreesClassifier(n_estimators=5, max_depth=3, random_state=0),
    "boosting": GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0),
}


def cost(cf, factual, space) -> torch.Tensor:
    return ((cf - factual) / space.scale).norm(dim=-1)


# --- FeatureTweak ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TREES))
def test_feature_tweak_valid_cheapest_first(name, data):
    model = Estimators([fitted(TREES[name], data)])
    rows = negatives(model, data)
    result = FeatureTweakGenerator().search(problem(data, model, rows, K=3))
    assert result.counterfactuals.shape == (1, len(rows), 3, 2)
    assert result.counterfactuals.dtype == torch.float64
    assert result.converged.all() and (result.n_iterations > 0).all()
    assert (result.probabilities >= 0.5).all()
    # The reported probabilities are the model's at the counterfactuals.
    torch.testing.assert_close(
        result.probabilities[0],
        model.proba(result.counterfactuals[0].reshape(-1, 2))[0].reshape(len(rows), 3),
    )
    factual = torch.tensor(data.X[rows]).unsqueeze(1)
    cf = result.counterfactuals[0]
    costs = cost(cf, factual, FeatureSpace.from_data(data))
    # Cheapest first; with fewer than K valid candidates the cheapest repeats at the end.
    repeat = (cf[:, 1:] == cf[:, :1]).all(-1)
    assert ((costs[:, 1:] >= costs[:, :-1]) | repeat).all()
    assert torch.equal(costs[:, 0], costs.min(-1).values)
    # Distinct, apart from those trailing repeats.
    same = (cf.unsqueeze(1) == cf.unsqueeze(2)).all(-1)
    for i in range(len(rows)):
        n_distinct = 3 - int(repeat[i].sum())
        assert not repeat[i, : n_distinct - 1].any()
        assert int(same[i, :n_distinct, :n_distinct].sum()) == n_distinct


def test_feature_tweak_stump_is_threshold_minus_epsilon(data):
    stump = fitted(DecisionTreeClassifier(max_depth=1), data)
    feature, theta = int(stump.tree_.feature[0]), float(stump.tree_.threshold[0])
    left = stump.tree_.children_left[0]
    assert stump.tree_.value[left, 0].argmax() == 1  # class 1 lives at -0.5: the x <= θ side
    model = Estimators([stump])
    rows = negatives(model, data, n=5)
    result = FeatureTweakGenerator(epsilon=0.05).search(problem(data, model, rows, K=2))
    expected = torch.tensor(data.X[rows]).unsqueeze(1).repeat(1, 2, 1)
    expected[..., feature] = theta - 0.05
    assert torch.equal(result.counterfactuals[0], expected)
    assert (result.n_iterations == 1).all()


def _brute_force_cheapest(tree, x, epsilon, scale):
    """Cheapest ε-satisfactory point over the favourable leaves, by plain recursion."""
    t = tree.tree_
    best = (np.inf, None)

    def walk(node, point):
        nonlocal best
        if t.children_left[node] == -1:
            if t.value[node, 0, 1] >= t.value[node, 0, 0]:
                c = np.linalg.norm((point - x) / scale)
                if 0 < c < best[0] and tree.predict_proba(point[None])[0, 1] >= 0.5:
                    best = (c, point)
            return
        j, theta = t.feature[node], t.threshold[node]
        go_left = point.copy()
        if go_left[j] > theta:
            go_left[j] = theta - epsilon
        walk(t.children_left[node], go_left)
        go_right = point.copy()
        if go_right[j] <= theta:
            go_right[j] = theta + epsilon
        walk(t.children_right[node], go_right)

    walk(0, x.copy())
    return best


def test_feature_tweak_first_counterfactual_is_the_cheapest():
    data = blobs(n_per_class=80, std=0.4, d=3, seed=1)
    tree = fitted(DecisionTreeClassifier(max_depth=4, random_state=0), data)
    model = Estimators([tree])
    rows = negatives(model, data, n=10)
    space = FeatureSpace.from_data(data)
    result = FeatureTweakGenerator().search(problem(data, model, rows, K=1))
    for i, row in enumerate(rows):
        _, best_point = _brute_force_cheapest(tree, data.X[row], 0.1, space.scale.numpy())
        if best_point is None:
            assert not result.converged[0, i]
            continue
        np.testing.assert_allclose(result.counterfactuals[0, i, 0].numpy(), best_point)


def test_feature_tweak_respects_immutables_and_bounds(data):
    model = Estimators([fitted(TREES["forest"], data)])
    constrained = replace(
        data,
        mutability=("none", "both"),
        lower=np.array([-np.inf, -0.3]),
        upper=np.array([np.inf, np.inf]),
        name="constrained",
    )
    rows = negatives(model, data)
    result = FeatureTweakGenerator().search(problem(constrained, model, rows))
    cf = result.counterfactuals[0]
    factual = torch.tensor(data.X[rows]).unsqueeze(1)
    assert torch.equal(cf[..., 0], factual[..., 0].expand(-1, 3))
    assert (cf[..., 1] >= -0.3).all()
    # Unreached individuals keep their features and are not converged.
    stuck = ~result.converged[0]
    assert torch.equal(cf[stuck], factual[stuck].expand(-1, 3, -1))
    assert (result.probabilities[0][result.converged[0]] >= 0.5).all()


def test_feature_tweak_increase_only_feature_never_decreases(data):
    model = Estimators([fitted(TREES["forest"], data)])
    rows = negatives(model, data)
    increase = replace(data, mutability=("increase", "both"), name="increase")
    cf = FeatureTweakGenerator().search(problem(increase, model, rows)).counterfactuals[0]
    factual = torch.tensor(data.X[rows]).unsqueeze(1)
    assert (cf[..., 0] >= factual[..., 0]).all()


@pytest.mark.parametrize("name", ["tree", "forest", "boosting"])
def test_feature_tweak_keeps_valid_encodings(name, categorical):
    model = Estimators([fitted(TREES[name], categorical)])
    rows = negatives(model, categorical, n=30)
    result = FeatureTweakGenerator().search(problem(categorical, model, rows))
    cf = result.counterfactuals[0]
    group = cf[..., 1:4]
    assert torch.equal(group.sum(-1), torch.ones_like(group.sum(-1)))
    assert set(torch.unique(group).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(cf[..., 4]).tolist()) <= {0.0, 1.0}
    assert result.converged.any()
    factual = torch.tensor(categorical.X[rows]).unsqueeze(1)
    encoded_changed = (cf[..., 1:] != factual[..., 1:]).any(-1)
    assert encoded_changed.any()  # the trees' splits on encodings are used, not just x0
    assert (result.probabilities[0][result.converged[0]] >= 0.5).all()


@pytest.mark.parametrize("generator", [FeatureTweakGenerator, NiceGenerator])
def test_already_positive_untouched(generator, data):
    model = Estimators([fitted(TREES["forest"], data)])
    positives = np.flatnonzero(model.proba(torch.tensor(data.X))[0].numpy() >= 0.5)[:5]
    result = generator().search(problem(data, model, positives))
    factual = torch.tensor(data.X[positives])[None, :, None, :].expand_as(result.counterfactuals)
    assert torch.equal(result.counterfactuals, factual)
    assert result.converged.all() and (result.n_iterations == 0).all()


@pytest.mark.parametrize("generator", [FeatureTweakGenerator, NiceGenerator])
def test_deterministic(generator, data):
    model = Estimators([fitted(TREES["forest"], data)])
    rows = negatives(model, data)
    first = generator().search(problem(data, model, rows))
    second = generator().search(problem(data, model, rows, round_key=7))
    assert generator.deterministic
    assert torch.equal(first.counterfactuals, second.counterfactuals)
    assert torch.equal(first.n_iterations, second.n_iterations)


def _assert_batched_equals_separate(generator, data, estimators, mask=None):
    model = Estimators(estimators)
    rows = np.flatnonzero(data.y == 0)[:12]
    batched = generator.search(problem(data, model, rows, mask=mask))
    for s, estimator in enumerate(estimators):
        single_mask = None if mask is None else mask[s : s + 1]
        single = generator.search(problem(data, Estimators([estimator]), rows, mask=single_mask))
        assert torch.equal(batched.counterfactuals[s], single.counterfactuals[0])
        assert torch.equal(batched.probabilities[s], single.probabilities[0])
        assert torch.equal(batched.converged[s], single.converged[0])
        assert torch.equal(batched.n_iterations[s], single.n_iterations[0])
    return batched


def test_feature_tweak_batched_equals_separate(data):
    estimators = [
        fitted(TREES["forest"], data, rows=slice(0, 80)),
        fitted(RandomForestClassifier(n_estimators=3, random_state=5), data),
    ]
    batched = _assert_batched_equals_separate(FeatureTweakGenerator(chunk_size=4), data, estimators)
    assert not torch.equal(batched.counterfactuals[0], batched.counterfactuals[1])


def test_feature_tweak_batch_company_does_not_matter(data):
    model = Estimators([fitted(TREES["boosting"], data)])
    rows = negatives(model, data, n=12)
    together = FeatureTweakGenerator().search(problem(data, model, rows))
    alone = FeatureTweakGenerator().search(problem(data, model, rows[5:6]))
    assert torch.equal(together.counterfactuals[0, 5], alone.counterfactuals[0, 0])
    assert together.n_iterations[0, 5] == alone.n_iterations[0, 0]


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (SklearnSpec(SkLogistic()), "LogisticRegression"),
        (SklearnSpec(Pipeline([("tree", DecisionTreeClassifier())])), "Pipeline"),
        (TorchLogistic(), "logistic"),
        (Estimators([SkLogistic()]), "LogisticRegression"),
    ],
    ids=["sklearn_logistic", "pipeline", "torch_logistic", "trained_logistic"],
)
def test_feature_tweak_refuses_other_models(model, named):
    with pytest.raises(ConfigError, match=rf"<generator\.feature_tweak=.*{named}") as error:
        FeatureTweakGenerator().check_model(model)
    assert "needs a scikit-learn tree model" in str(error.value)


def test_feature_tweak_search_refuses_other_models(data):
    model = Estimators([fitted(SkLogistic(), data)])
    with pytest.raises(ConfigError, match=r"generator\.feature_tweak"):
        FeatureTweakGenerator().search(problem(data, model, [0, 1]))


def test_feature_tweak_refuses_multiclass_boosting():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), np.arange(60) % 3
    boosting = GradientBoostingClassifier(n_estimators=2).fit(X, y)
    with pytest.raises(ConfigError, match=r"<generator\.feature_tweak=.*3 classes.*binary"):
        FeatureTweakGenerator().check_model(Estimators([boosting]))


def test_feature_tweak_accepts_tree_specs(data):
    for estimator in TREES.values():
        FeatureTweakGenerator().check_model(SklearnSpec(estimator))
        FeatureTweakGenerator().check_model(Estimators([fitted(estimator, data)]))


# --- NICE -----------------------------------------------------------------------------------

NICE_MODELS = {
    "logistic": SkLogistic(),
    "boosting": GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
}


@pytest.mark.parametrize("name", list(NICE_MODELS))
def test_nice_valid_and_sparse(name):
    data = blobs(n_per_class=60, std=0.3, d=4, seed=2)
    model = Estimators([fitted(NICE_MODELS[name], data)])
    rows = negatives(model, data)
    sparse = NiceGenerator().search(problem(data, model, rows, K=3))
    whole = NiceGenerator(sparsity=False).search(problem(data, model, rows, K=3))
    assert sparse.converged.all() and whole.converged.all()
    assert (sparse.probabilities >= 0.5).all()
    assert (sparse.n_iterations > 0).all() and (whole.n_iterations == 1).all()
    factual = torch.tensor(data.X[rows])[None, :, None, :]
    neighbour = whole.counterfactuals
    changed = sparse.counterfactuals != factual
    # Every changed feature takes the neighbour's value, so no more change than it differs in.
    assert torch.equal(sparse.counterfactuals[changed], neighbour[changed])
    assert (changed.sum(-1) <= (neighbour != factual).sum(-1)).all()
    assert (changed.sum(-1) < 4).any()  # the greedy copy does stop early
    # The K neighbours are nearest first, and they are rows of the population.
    space = FeatureSpace.from_data(data)
    distances = cost(neighbour[0], factual[0], space)
    assert (distances[:, 1:] >= distances[:, :-1]).all()
    population = torch.tensor(data.X)
    assert (neighbour[0].unsqueeze(-2) == population).all(-1).any(-1).all()


def test_nice_respects_immutables():
    # The favourable label needs g = 1; g is immutable: g = 0 individuals have no neighbour.
    rng = np.random.default_rng(3)
    n = 200
    x0, g = rng.normal(size=n), rng.integers(0, 2, n)
    y = ((x0 < 0) & (g == 1)).astype(int)
    data = Dataset(
        np.column_stack([x0, g]),
        y,
        ("x0", "g"),
        mutability=("both", "none"),
        binary_features=(1,),
        name="immutable",
    )
    model = Estimators([fitted(SkLogistic(), data)])
    rows = negatives(model, data, n=40)
    result = NiceGenerator().search(problem(data, model, rows))
    factual = torch.tensor(data.X[rows])[None, :, None, :]
    cf = result.counterfactuals
    assert torch.equal(cf[..., 1], factual[..., 1].expand_as(cf[..., 1]))
    group0 = torch.tensor(data.X[rows, 1] == 0)
    assert group0.any() and (~group0).any()
    assert not result.converged[0, group0].any()
    assert torch.equal(cf[0, group0], factual[0, group0].expand(-1, 3, -1))
    assert (result.n_iterations[0, group0] == 0).all()
    assert result.converged[0, ~group0].all()


def test_nice_copies_one_hot_groups_as_units(categorical):
    model = Estimators([fitted(NICE_MODELS["boosting"], categorical)])
    rows = negatives(model, categorical, n=30)
    result = NiceGenerator().search(problem(categorical, model, rows))
    neighbour = NiceGenerator(sparsity=False).search(problem(categorical, model, rows))
    cf = result.counterfactuals
    group = cf[..., 1:4]
    assert torch.equal(group.sum(-1), torch.ones_like(group.sum(-1)))
    factual = torch.tensor(categorical.X[rows])[None, :, None, :]
    group_changed = (group != factual[..., 1:4]).any(-1)
    assert group_changed.any()
    assert torch.equal(group[group_changed], neighbour.counterfactuals[..., 1:4][group_changed])
    assert (result.n_iterations <= 3).all()  # three units: x0, the group, flag
    assert result.converged.all()


def test_nice_ignores_masked_rows(data):
    model = Estimators([fitted(NICE_MODELS["logistic"], data)])
    rows = negatives(model, data, n=5)
    full = NiceGenerator(sparsity=False).search(problem(data, model, rows, K=1))
    nearest = (full.counterfactuals[0, :, 0].unsqueeze(1) == torch.tensor(data.X)).all(-1)
    mask = ~nearest.any(0, keepdim=True)
    masked = NiceGenerator(sparsity=False).search(problem(data, model, rows, K=1, mask=mask))
    assert masked.converged.all()
    assert not (masked.counterfactuals == full.counterfactuals).all(-1).any()


def test_nice_batched_equals_separate(data):
    estimators = [
        fitted(NICE_MODELS["logistic"], data, rows=slice(0, 60)),
        fitted(NICE_MODELS["boosting"], data),
    ]
    mask = torch.ones(2, data.n_samples, dtype=torch.bool)
    mask[1, ::3] = False
    _assert_batched_equals_separate(NiceGenerator(), data, estimators, mask=mask)


def test_nice_batch_company_does_not_matter(data):
    model = Estimators([fitted(NICE_MODELS["boosting"], data)])
    rows = negatives(model, data, n=12)
    together = NiceGenerator().search(problem(data, model, rows))
    alone = NiceGenerator().search(problem(data, model, rows[5:6]))
    assert torch.equal(together.counterfactuals[0, 5], alone.counterfactuals[0, 0])
    assert together.n_iterations[0, 5] == alone.n_iterations[0, 0]


def test_nice_fewer_neighbours_than_k_repeat_the_last(data):
    model = Estimators([fitted(NICE_MODELS["logistic"], data)])
    rows = negatives(model, data, n=4)
    positives = np.flatnonzero(data.y == 1)
    mask = torch.zeros(1, data.n_samples, dtype=torch.bool)
    mask[0, positives[:2]] = True  # two favourable rows only
    result = NiceGenerator(sparsity=False).search(problem(data, model, rows, K=4, mask=mask))
    cf = result.counterfactuals[0]
    assert torch.equal(cf[:, 2], cf[:, 1]) and torch.equal(cf[:, 3], cf[:, 1])
    assert not torch.equal(cf[:, 0], cf[:, 1])


@pytest.mark.parametrize("generator", [FeatureTweakGenerator, NiceGenerator])
def test_search_creates_its_tensors_on_the_problems_device(generator, data):
    # With torch's default device set to "meta", a tensor created without device= lands there
    # and clashes with the problem's CPU tensors: a CPU-only check of what runs on a GPU.
    model = Estimators([fitted(TREES["forest"], data), fitted(TREES["extra"], data)])
    search = problem(data, model, np.flatnonzero(data.y == 0)[:6])
    plain = generator().search(search)
    with torch.device("meta"):
        strict = generator().search(search)
    for name in ("counterfactuals", "probabilities", "converged", "n_iterations"):
        assert getattr(strict, name).device.type == "cpu", name
        assert torch.equal(getattr(strict, name), getattr(plain, name)), name


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generator", "kwargs", "key"),
    [
        (FeatureTweakGenerator, {"epsilon": 0}, "generator.epsilon"),
        (FeatureTweakGenerator, {"epsilon": float("nan")}, "generator.epsilon"),
        (FeatureTweakGenerator, {"decision_threshold": 1.5}, "generator.decision_threshold"),
        (FeatureTweakGenerator, {"chunk_size": 0}, "generator.chunk_size"),
        (FeatureTweakGenerator, {"chunk_size": 2.0}, "generator.chunk_size"),
        (NiceGenerator, {"decision_threshold": 0}, "generator.decision_threshold"),
        (NiceGenerator, {"sparsity": "yes"}, "generator.sparsity"),
        (NiceGenerator, {"justified": 1}, "generator.justified"),
    ],
)
def test_bad_settings_name_their_key(generator, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        generator(**kwargs)


@pytest.mark.parametrize(
    ("option", "cls"), [("feature_tweak", FeatureTweakGenerator), ("nice", NiceGenerator)]
)
def test_yaml_options_instantiate_with_defaults(option, cls):
    (node,) = OmegaConf.load(CONFIGS / f"{option}.yaml").values()
    generator = instantiate(node)
    assert type(generator) is cls
    assert repr(generator) == repr(cls())
    assert cls.needs_gradients is False

"""The closed-form n-feature generator, and the population mask of the search problem."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recourse_sim.errors import ConfigError
from recourse_sim.generators import (
    ClueGenerator,
    FeatureSpace,
    GravitationalGenerator,
    NFeatureGenerator,
    ReviseGenerator,
    SearchProblem,
    WachterGenerator,
)
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_BOTH,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
)
from recourse_sim.models import MLP, DeepEnsemble, LogisticRegression

CONFIG = Path(__file__).parents[1] / "recourse_sim" / "configs" / "generator" / "n_feature.yaml"
INF = math.inf


def linear_model(weights, biases, spec=None):
    """A stack of logistic systems with the given coefficients ``(S, d)`` and intercepts."""
    weights = torch.as_tensor(weights, dtype=torch.float32)
    biases = torch.as_tensor(biases, dtype=torch.float32)
    spec = spec or LogisticRegression()
    model = spec.initialise(weights.shape[-1], torch.Generator().manual_seed(0))
    model = model.replicate(weights.shape[0] // spec.n_members)
    with torch.no_grad():
        model.nets.weights[0][:, :, 0] = weights
        model.nets.biases[0][:, 0] = biases
    return model


def space(d=2, mutability=None, lower=None, upper=None, binary=()):
    codes = mutability or [MUTABLE_BOTH] * d
    return FeatureSpace(
        scale=torch.ones(d, dtype=torch.float64),
        center=torch.zeros(d, dtype=torch.float64),
        mutability=torch.tensor(codes, dtype=torch.int64),
        lower=torch.tensor(lower or [-INF] * d, dtype=torch.float64),
        upper=torch.tensor(upper or [INF] * d, dtype=torch.float64),
        categorical_groups=(),
        binary_features=tuple(binary),
    )


def search_problem(model, factuals, feature_space=None, K=3, threshold=None, target=1):
    """A problem for every system of ``model`` with the same factuals ``(B, d)``."""
    S = model.n_systems
    X = torch.as_tensor(factuals, dtype=torch.float64)
    B, d = X.shape
    return SearchProblem(
        factuals=X.unsqueeze(0).repeat(S, 1, 1),
        individual_ids=torch.arange(B).repeat(S, 1),
        system_keys=torch.arange(S),
        model=model,
        space=feature_space or space(d),
        population_X=X.unsqueeze(0).repeat(S, 1, 1),
        population_y=torch.zeros(S, B, dtype=torch.int64),
        n_counterfactuals=K,
        target=target,
        threshold=threshold,
    )


#: The hand-worked model of the tests below: logit = 2·x1 + x2 − 1.
W, BIAS = [[2.0, 1.0]], [-1.0]


def landing(generator, model, factuals, **kwargs):
    result = generator.search(search_problem(model, factuals, **kwargs))
    return result, result.counterfactuals[..., 0, :]


# --- hand-computed moves --------------------------------------------------------------------


def test_one_feature_moves_along_the_largest_coefficient_only():
    result, cf = landing(NFeatureGenerator(n_features=1), linear_model(W, BIAS), [[0.0, 0.0]])
    # Only x1 (|2| > |1|) moves, until 2·x1 − 1 = 0.
    assert cf[0, 0].tolist() == pytest.approx([0.5, 0.0], abs=1e-7)
    assert result.probabilities[0, 0].tolist() == pytest.approx([0.5] * 3, abs=1e-6)
    assert result.converged.all() and result.n_iterations.tolist() == [[1]]


def test_two_features_move_along_the_normalised_coefficients():
    result, cf = landing(NFeatureGenerator(n_features=2), linear_model(W, BIAS), [[0.0, 0.0]])
    # Along (2, 1)/√5 by 1/√5: the foot of the perpendicular on 2·x1 + x2 = 1.
    assert cf[0, 0].tolist() == pytest.approx([0.4, 0.2], abs=1e-7)
    assert result.converged.all() and result.n_iterations.tolist() == [[1]]
    # More features than the model has: the same move.
    _, more = landing(NFeatureGenerator(n_features=5), linear_model(W, BIAS), [[0.0, 0.0]])
    assert torch.equal(more, cf)


def test_the_k_counterfactuals_are_identical():
    result = NFeatureGenerator().search(
        search_problem(linear_model(W, BIAS), [[0.0, 0.0], [-1.0, 0.5]], K=4)
    )
    cf = result.counterfactuals
    assert cf.shape == (1, 2, 4, 2)
    assert torch.equal(cf, cf[:, :, :1].expand_as(cf))


def test_a_feature_whose_allowed_direction_disagrees_with_its_coefficient_is_left_out():
    model = linear_model([[2.0, -3.0]], BIAS)
    # x2 may only increase, but raising the logit needs it lower: only x1 moves.
    increase_only = space(mutability=[MUTABLE_BOTH, MUTABLE_INCREASE])
    _, cf = landing(
        NFeatureGenerator(n_features=2), model, [[0.0, 0.0]], feature_space=increase_only
    )
    assert cf[0, 0].tolist() == pytest.approx([0.5, 0.0], abs=1e-7)
    # With n_features=1 the usable x1 is chosen although |−3| is the largest coefficient.
    _, one = landing(
        NFeatureGenerator(n_features=1), model, [[0.0, 0.0]], feature_space=increase_only
    )
    assert torch.equal(one, cf)
    # Decrease-only agrees with the negative coefficient: both move, along (2, −3)/√13.
    decrease_only = space(mutability=[MUTABLE_BOTH, MUTABLE_DECREASE])
    _, both = landing(
        NFeatureGenerator(n_features=2), model, [[0.0, 0.0]], feature_space=decrease_only
    )
    assert both[0, 0].tolist() == pytest.approx([2 / 13, -3 / 13], abs=1e-7)
    # An immutable x1 leaves x2, whichever its coefficient's size.
    frozen = space(mutability=[IMMUTABLE, MUTABLE_BOTH])
    _, rest = landing(NFeatureGenerator(n_features=1), model, [[0.0, 0.0]], feature_space=frozen)
    assert rest[0, 0].tolist() == pytest.approx([0.0, -1 / 3], abs=1e-7)


def test_binary_columns_do_not_move():
    encoded = space(binary=(0,))
    _, cf = landing(
        NFeatureGenerator(n_features=2), linear_model(W, BIAS), [[0.0, 0.0]], feature_space=encoded
    )
    assert cf[0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-7)


def test_a_crossed_bound_fixes_the_feature_and_the_rest_closes_the_gap():
    bounded = space(upper=[0.2, INF])
    result, cf = landing(
        NFeatureGenerator(n_features=2), linear_model(W, BIAS), [[0.0, 0.0]], feature_space=bounded
    )
    # (0.4, 0.2) crosses x1 <= 0.2: x1 = 0.2, then x2 alone closes 2·0.2 + x2 − 1 = 0.
    assert cf[0, 0].tolist() == pytest.approx([0.2, 0.6], abs=1e-7)
    assert result.converged.all() and result.n_iterations.tolist() == [[2]]
    # With one feature nothing is left after x1 reaches its bound: not converged.
    result, cf = landing(
        NFeatureGenerator(n_features=1), linear_model(W, BIAS), [[0.0, 0.0]], feature_space=bounded
    )
    assert cf[0, 0].tolist() == pytest.approx([0.2, 0.0], abs=1e-7)
    assert not result.converged.any() and result.n_iterations.tolist() == [[1]]
    assert (result.probabilities < 0.5).all()


def test_a_feature_beyond_its_bound_is_not_moved_back():
    # x1 starts above its upper bound 0.2: it cannot go higher and is not pulled down to 0.2.
    bounded = space(upper=[0.2, INF])
    _, cf = landing(
        NFeatureGenerator(n_features=2),
        linear_model([[2.0, 1.0]], [-2.0]),
        [[0.3, 0.0]],
        feature_space=bounded,
    )
    assert cf[0, 0].tolist() == pytest.approx([0.3, 1.4], abs=1e-7)


def test_an_individual_already_positive_is_unchanged():
    factuals = [[1.0, 1.0], [0.5, 0.0]]  # logit 2 and exactly 0 (probability 0.5)
    result, cf = landing(NFeatureGenerator(), linear_model(W, BIAS), factuals)
    assert torch.equal(cf[0], torch.tensor(factuals, dtype=torch.float64))
    assert result.converged.all() and (result.n_iterations == 0).all()


def test_a_higher_threshold_reaches_its_logit():
    generator = NFeatureGenerator(n_features=1, threshold=0.8)
    result, cf = landing(generator, linear_model(W, BIAS), [[0.0, 0.0]])
    # sigmoid(2·x1 − 1) = 0.8  ⇔  2·x1 − 1 = log 4.
    assert cf[0, 0, 0].item() == pytest.approx((1 + math.log(4)) / 2, abs=1e-6)
    assert result.probabilities[0, 0, 0].item() == pytest.approx(0.8, abs=1e-6)
    assert result.probabilities.min() >= 0.8 and result.converged.all()
    assert generator.decision_threshold == 0.8


def test_the_margin_lands_above_the_threshold():
    _, cf = landing(
        NFeatureGenerator(n_features=1, margin=0.5), linear_model(W, BIAS), [[0.0, 0.0]]
    )
    assert cf[0, 0, 0].item() == pytest.approx(0.75, abs=1e-7)  # 2·x1 − 1 = 0.5


def test_per_system_thresholds_of_a_stack_of_two_systems():
    model = linear_model([[2.0, 1.0], [2.0, 1.0]], [-1.0, -1.0])
    threshold = torch.tensor([0.5, 0.8], dtype=torch.float64)
    # The problem's thresholds override the generator's own (0.9 here).
    generator = NFeatureGenerator(n_features=1, threshold=0.9)
    result, cf = landing(generator, model, [[0.0, 0.0]], threshold=threshold)
    assert cf[0, 0, 0].item() == pytest.approx(0.5, abs=1e-7)
    assert cf[1, 0, 0].item() == pytest.approx((1 + math.log(4)) / 2, abs=1e-6)
    assert result.probabilities[0].max() < 0.8 and result.probabilities[1].min() >= 0.8
    assert result.converged.all()
    # Whoever already reaches its own system's threshold stays: 0.6 > 0.5 but < 0.8.
    x = [[(1 + math.log(1.5)) / 2, 0.0]]  # probability 0.6
    result, cf = landing(generator, model, x, threshold=threshold)
    assert torch.equal(cf[0], torch.tensor(x, dtype=torch.float64))
    assert cf[1, 0, 0].item() == pytest.approx((1 + math.log(4)) / 2, abs=1e-6)
    assert result.n_iterations.tolist() == [[0], [1]]


def test_the_other_target_class_uses_the_negated_coefficients():
    # Target 0: its logit is −(2·x1 + x2 − 1); from (1, 1) x1 decreases to 0.
    _, cf = landing(NFeatureGenerator(n_features=1), linear_model(W, BIAS), [[1.0, 1.0]], target=0)
    assert cf[0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-7)


def test_an_ensemble_of_logistic_members_moves_on_the_mean_coefficients():
    spec = DeepEnsemble(n_members=2, hidden_sizes=())
    model = linear_model([[2.0, 1.0], [4.0, 1.0]], [-1.0, -3.0], spec)
    # Mean member logit: 3·x1 + x2 − 2.
    _, cf = landing(NFeatureGenerator(n_features=1), model, [[0.0, 0.0]])
    assert cf[0, 0].tolist() == pytest.approx([2 / 3, 0.0], abs=1e-7)


def test_an_unreachable_threshold_leaves_the_individual_unconverged():
    result, cf = landing(
        NFeatureGenerator(),
        linear_model(W, BIAS),
        [[0.0, 0.0]],
        threshold=torch.tensor([1.0], dtype=torch.float64),
    )
    assert torch.equal(cf[0], torch.zeros(1, 2, dtype=torch.float64))
    assert not result.converged.any()


def test_converged_counterfactuals_are_valid_under_the_models_float32_arithmetic():
    # Landing exactly on the threshold in float64 leaves the float32 model a rounding error
    # either side of it; the generator lengthens the moves that fell short by a few ulps.
    rng = np.random.default_rng(3)
    d = 5
    weights = rng.normal(size=(4, d))
    model = linear_model(weights, rng.normal(size=4))
    factuals = rng.normal(size=(200, d)) * 3
    threshold = torch.tensor([0.5, 0.3, 0.7, 0.95], dtype=torch.float64)
    result = NFeatureGenerator(n_features=3).search(
        search_problem(model, factuals, threshold=threshold)
    )
    assert result.converged.all()
    assert (result.probabilities >= threshold.view(4, 1, 1)).all()
    # ... and it is still on the threshold, up to float32 rounding of the logit.
    logits = torch.logit(result.probabilities[..., 0])
    moved = result.n_iterations > 0
    target = torch.logit(threshold).view(4, 1).expand_as(logits)
    torch.testing.assert_close(logits[moved], target[moved], rtol=0, atol=1e-4)


def test_nonlinear_models_are_refused_naming_the_generator():
    generator = NFeatureGenerator()
    for spec in (MLP(hidden_sizes=(4,)), DeepEnsemble(n_members=2, hidden_sizes=(4,))):
        with pytest.raises(ConfigError, match=r"<generator\.n_feature=.*needs a linear model"):
            generator.check_model(spec)
        model = spec.initialise(2, torch.Generator().manual_seed(0))
        with pytest.raises(ConfigError, match=r"generator\.n_feature") as error:
            generator.search(search_problem(model, [[0.0, 0.0]]))
        assert "logistic" in error.value.allowed
    generator.check_model(LogisticRegression())
    generator.check_model(DeepEnsemble(n_members=3, hidden_sizes=()))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_features": 0}, "generator.n_features"),
        ({"n_features": 1.5}, "generator.n_features"),
        ({"threshold": 1.0}, "generator.threshold"),
        ({"threshold": 0.0}, "generator.threshold"),
        ({"margin": -0.1}, "generator.margin"),
        ({"margin": INF}, "generator.margin"),
    ],
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match="<" + key.replace(".", r"\.") + "="):
        NFeatureGenerator(**kwargs)


def test_yaml_defaults():
    (node,) = OmegaConf.load(CONFIG).values()
    generator = instantiate(node)
    assert isinstance(generator, NFeatureGenerator)
    assert (generator.n_features, generator.threshold, generator.margin) == (2, 0.5, 0.0)
    assert generator.deterministic and not generator.keeps_state


def test_on_a_trained_logistic_model_of_blobs():
    data = blobs(n_per_class=40)
    spec = LogisticRegression(pretrain={"epochs": 50})
    model = spec.initialise(2, torch.Generator().manual_seed(0))
    model.fit(
        torch.tensor(data.X)[None],
        torch.tensor(data.y)[None],
        spec.pretrain,
        torch.Generator().manual_seed(1),
    )
    negatives = data.X[data.y == 0][:10]
    result = NFeatureGenerator(n_features=1).search(search_problem(model, negatives))
    assert result.converged.all() and (result.probabilities >= 0.5).all()
    moved = result.counterfactuals[0, :, 0] != torch.tensor(negatives)
    assert (moved.sum(-1) == 1).all()  # one feature each, the same for everyone
    assert (moved == moved[:1]).all()


# --- the population mask --------------------------------------------------------------------


def _population_problem(data, model, rows, keep=None, removed=False):
    """A search over ``rows`` of ``data``; ``keep`` masks the population, or removes rows."""
    X, y = torch.tensor(data.X), torch.tensor(data.y)
    mask = None
    if keep is not None and removed:
        X, y = X[keep], y[keep]
    elif keep is not None:
        mask = torch.as_tensor(keep)[None]
    rows = torch.as_tensor(rows)
    return SearchProblem(
        factuals=torch.tensor(data.X)[rows][None],
        individual_ids=rows[None],
        system_keys=torch.tensor([7]),
        model=model,
        space=FeatureSpace.from_data(data),
        population_X=X[None],
        population_y=y[None],
        n_counterfactuals=2,
        round_key=1,
        population_mask=mask,
    )


@pytest.fixture(scope="module")
def tiny():
    data = blobs(n_per_class=15, std=0.3, seed=2)
    spec = MLP(hidden_sizes=(8,), pretrain={"epochs": 30})
    model = spec.initialise(2, torch.Generator().manual_seed(0))
    model.fit(
        torch.tensor(data.X)[None],
        torch.tensor(data.y)[None],
        spec.pretrain,
        torch.Generator().manual_seed(1),
    )
    rng = np.random.default_rng(0)
    keep = rng.random(len(data.y)) < 0.6
    keep[np.flatnonzero(data.y == 0)[:4]] = True  # the searched individuals are present
    return data, model, keep, np.flatnonzero(data.y == 0)[:4]


MASKED_GENERATORS = {
    "wachter_mad": lambda: WachterGenerator(max_iter=20),
    "gravitational": lambda: GravitationalGenerator(max_iter=20, n_neighbours=5),
    "gravitational_all": lambda: GravitationalGenerator(max_iter=20, n_neighbours=None),
    "revise": lambda: ReviseGenerator(max_iter=10, vae={"epochs": 3, "batch_size": 4}),
    "clue": lambda: ClueGenerator(max_iter=10, vae={"epochs": 3, "batch_size": 4}),
}


def _assert_same_result(first, second):
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(second, field.name)
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=field.name)


@pytest.mark.parametrize("name", list(MASKED_GENERATORS))
def test_masked_rows_count_as_removed(name, tiny):
    data, model, keep, rows = tiny
    masked = MASKED_GENERATORS[name]().search(_population_problem(data, model, rows, keep))
    removed = MASKED_GENERATORS[name]().search(
        _population_problem(data, model, rows, keep, removed=True)
    )
    _assert_same_result(masked, removed)
    # ... and the mask matters: the whole population gives another answer.
    whole = MASKED_GENERATORS[name]().search(_population_problem(data, model, rows))
    assert not torch.equal(masked.counterfactuals, whole.counterfactuals)


@pytest.mark.parametrize("name", list(MASKED_GENERATORS))
def test_a_full_mask_computes_as_no_mask(name, tiny):
    data, model, _, rows = tiny
    everyone = np.ones(len(data.y), dtype=bool)
    full = MASKED_GENERATORS[name]().search(_population_problem(data, model, rows, everyone))
    none = MASKED_GENERATORS[name]().search(_population_problem(data, model, rows))
    _assert_same_result(full, none)


def test_masked_statistics_equal_those_of_the_present_rows(tiny):
    data, model, keep, rows = tiny
    masked = _population_problem(data, model, rows, keep)
    removed = _population_problem(data, model, rows, keep, removed=True)
    generator = WachterGenerator()
    assert torch.equal(generator.setup(masked), generator.setup(removed))
    gravity = GravitationalGenerator(n_neighbours=None)
    present_positives = torch.tensor(data.X[keep & (data.y == 1)])
    centroid = gravity.setup(masked)[0, 0, 0]
    assert torch.equal(centroid, present_positives.mean(0))


def test_vaes_of_systems_with_different_present_rows_train_as_if_alone(tiny):
    data, model, keep, rows = tiny
    other = keep.copy()
    other[np.flatnonzero(keep & (data.y == 1))[:3]] = False  # fewer rows in the second system
    two = _population_problem(data, model.replicate(2), rows)
    two = dataclasses.replace(
        two,
        factuals=two.factuals.repeat(2, 1, 1),
        individual_ids=two.individual_ids.repeat(2, 1),
        system_keys=torch.tensor([7, 8]),
        population_X=two.population_X.repeat(2, 1, 1),
        population_y=two.population_y.repeat(2, 1),
        population_mask=torch.tensor(np.stack([keep, other])),
    )
    together = ReviseGenerator(max_iter=5, vae={"epochs": 3, "batch_size": 4})
    together.search(two)
    for s, (present, key) in enumerate(((keep, 7), (other, 8))):
        alone = ReviseGenerator(max_iter=5, vae={"epochs": 3, "batch_size": 4})
        single = _population_problem(data, model, rows, present, removed=True)
        alone.search(dataclasses.replace(single, system_keys=torch.tensor([key])))
        mine = together.state_dict()["systems"][key]
        theirs = alone.state_dict()["systems"][key]
        for a, b in zip(
            mine["encoder"] + mine["decoder"], theirs["encoder"] + theirs["decoder"], strict=True
        ):
            assert torch.equal(a, b), s

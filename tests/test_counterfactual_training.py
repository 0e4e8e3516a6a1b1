"""Counterfactual training (Altmeyer et al., SaTML 2026): loss terms, protection, search, runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import blobs

from recourse_sim.data.base import train_test_split
from recourse_sim.errors import ConfigError
from recourse_sim.generators import GenericGenerator
from recourse_sim.generators.base import (
    IMMUTABLE,
    MUTABLE_BOTH,
    MUTABLE_DECREASE,
    MUTABLE_INCREASE,
    FeatureSpace,
    SearchProblem,
)
from recourse_sim.generators.generic import frobenius
from recourse_sim.models import MLP, DeepEnsemble, LogisticRegression, TorchModule, train_jobs
from recourse_sim.models.counterfactual_training import (
    CounterfactualObjective,
    CounterfactualTraining,
    inferred_space,
    objective_terms,
    protect,
)
from recourse_sim.models.training import TrainingSchedule
from recourse_sim.simulation import Recorder, RecourseSimulation, SimulationConfig
from recourse_sim.utils import RandomStreams


def circle_data(n: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, dtype=torch.float64, generator=generator)
    y = (X.pow(2).sum(-1) < 1.0).to(torch.int64)
    return X, y


def space_of(X: torch.Tensor, mutability=None) -> FeatureSpace:
    space = inferred_space(X[None])
    if mutability is not None:
        space = FeatureSpace(
            scale=space.scale,
            center=space.center,
            mutability=torch.tensor(mutability),
            lower=space.lower,
            upper=space.upper,
            categorical_groups=(),
            binary_features=(),
        )
    return space


# --- the loss terms, by hand ---------------------------------------------------------------


def test_objective_terms_by_hand():
    # Two counterfactuals: target 1 (energy = -z) and target 0 (energy = +z).
    z_cf = torch.tensor([[0.5, -1.0]])
    z_plus = torch.tensor([[2.0, -3.0]])
    z_adv = torch.tensor([[0.2, 0.4]])
    target = torch.tensor([[1, 0]])
    label = torch.tensor([[0, 1]])
    one = [z.unsqueeze(-1) for z in (z_cf, z_plus, z_adv)]  # one output: the logit of class 1
    divergence, ridge, adversarial = objective_terms(*one, target, label)
    # E(x+) - E(x'): target 1: -2.0 - (-0.5) = -1.5; target 0: -3.0 - (-1.0) = -2.0.
    assert divergence.item() == pytest.approx((-1.5 + -2.0) / 2)
    # E(x+)^2 + E(x')^2: 4 + 0.25 and 9 + 1.
    assert ridge.item() == pytest.approx((4.25 + 10.0) / 2)
    # BCE with logits: label 0 at 0.2 -> log(1 + e^0.2); label 1 at 0.4 -> log(1 + e^-0.4).
    expected = (math.log1p(math.exp(0.2)) + math.log1p(math.exp(-0.4))) / 2
    assert adversarial.item() == pytest.approx(expected)


def test_objective_terms_of_class_logits_by_hand():
    # Two outputs (o_0, o_1): the energy is minus the target's own column.
    o_cf = torch.tensor([[[0.0, 0.5], [-1.0, 2.0]]])
    o_plus = torch.tensor([[[1.0, 2.0], [-3.0, 4.0]]])
    o_adv = torch.tensor([[[0.3, 0.5], [1.0, 0.6]]])
    target = torch.tensor([[1, 0]])
    label = torch.tensor([[0, 1]])
    divergence, ridge, adversarial = objective_terms(o_cf, o_plus, o_adv, target, label)
    # target 1: E(x+) - E(x') = -2.0 + 0.5; target 0: -(-3.0) - (-(-1.0)) = 3.0 - 1.0.
    assert divergence.item() == pytest.approx((-1.5 + 2.0) / 2)
    assert ridge.item() == pytest.approx(((4.0 + 0.25) + (9.0 + 1.0)) / 2)
    # Cross-entropy of softmax = BCE of z = o_1 - o_0: 0.2 with label 0, -0.4 with label 1.
    expected = (math.log1p(math.exp(0.2)) + math.log1p(math.exp(0.4))) / 2
    assert adversarial.item() == pytest.approx(expected)


def test_batch_loss_of_a_logistic_model_by_hand():
    """The objective's per-batch loss on a tiny linear model equals the formula worked by hand."""
    spec = LogisticRegression(training="counterfactual")
    classifier = spec.initialise(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        classifier.nets.flat.copy_(torch.tensor([1.0, -2.0, 0.5]))  # w = (1, -2), b = 0.5
    X, y = circle_data(10)
    objective = CounterfactualObjective(
        spec.counterfactual_training, classifier, X[None], y[None], space_of(X), [1], 0
    )
    cf, plus, adv = [0.5, 0.0], [1.0, -1.0], [0.1, 0.2]  # z = 1.0, 3.5, 0.2
    objective.points = torch.tensor([[[cf, plus, adv]]], dtype=torch.float32)
    objective.target = torch.tensor([[1]])
    objective.label = torch.tensor([[0]])
    objective.bounds = [(0, 1)]
    points = objective.inputs(0)
    assert points.shape == (1, 3, 2)
    loss = objective.loss(0, classifier.nets.forward(points))
    divergence = -3.5 - (-1.0)  # E(x+) - E(x') with E = -z
    ridge = 3.5**2 + 1.0**2
    adversarial = math.log1p(math.exp(0.2))  # label 0
    expected = 0.5 * divergence + 0.1 * ridge + 0.25 * adversarial
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_a_training_step_follows_the_hand_written_objective():
    """One step of the loop equals one Adam step on BCE + the three terms, computed by hand."""
    spec = LogisticRegression(training="counterfactual")
    classifier = spec.initialise(2, torch.Generator().manual_seed(0))
    start = torch.tensor([0.3, -0.7, 0.1])
    with torch.no_grad():
        classifier.nets.flat.copy_(start)
    x_batch = torch.tensor([[[0.2, 0.4]]], dtype=torch.float64)
    y_batch = torch.tensor([[1]])
    points = torch.tensor([[[[0.5, 0.0], [1.0, -1.0], [0.1, 0.2]]]], dtype=torch.float32)

    class Fixed(CounterfactualObjective):
        def start_epoch(self, epoch, n_epochs, n_batches):
            self.points, self.bounds = points, [(0, 1)]
            self.target, self.label = torch.tensor([[1]]), torch.tensor([[0]])
            self._constant_gradient()

    objective = Fixed(
        spec.counterfactual_training, classifier, x_batch, y_batch, space_of(x_batch[0]), [0], 0
    )
    schedule = TrainingSchedule(epochs=1, batch_size=1, learning_rate=0.01)
    classifier._train_with_objective(x_batch, y_batch, schedule, torch.Generator(), objective)

    flat = start.clone().requires_grad_(True)

    def z(x):
        x = torch.as_tensor(x, dtype=torch.float32)
        return x @ flat[:2] + flat[2]

    loss = F.binary_cross_entropy_with_logits(z([0.2, 0.4]), torch.tensor(1.0))
    z_cf, z_plus, z_adv = z([0.5, 0.0]), z([1.0, -1.0]), z([0.1, 0.2])
    loss = loss + 0.5 * (-z_plus + z_cf) + 0.1 * (z_plus**2 + z_cf**2)
    loss = loss + 0.25 * F.binary_cross_entropy_with_logits(z_adv, torch.tensor(0.0))
    (grad,) = torch.autograd.grad(loss, flat)
    optimiser = torch.optim.Adam([flat], lr=0.01)
    flat.grad = grad
    optimiser.step()
    torch.testing.assert_close(classifier.nets.flat, flat.detach(), rtol=0, atol=1e-7)


# --- actionability --------------------------------------------------------------------------


def test_protection_follows_each_features_allowed_direction():
    plus = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, 3.0]])
    cf = torch.tensor([[2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    codes = torch.tensor(
        [
            MUTABLE_BOTH,
            IMMUTABLE,
            MUTABLE_INCREASE,
            MUTABLE_DECREASE,
            MUTABLE_INCREASE,
            MUTABLE_DECREASE,
        ]
    )
    protected = protect(plus, cf, codes)
    # both: x+ kept; immutable: x'; increase: max; decrease: min.
    assert protected.tolist() == [[1.0, 2.0, 2.0, 1.0, 3.0, 2.0]]


def test_immutable_features_receive_no_gradient_through_the_protected_term():
    """After a real epoch's search, the divergence's gradient leaves an immutable weight at 0."""
    X, _ = circle_data(80)
    y = (X.sum(-1) > 0).to(torch.int64)  # linearly separable: most searches mature
    spec = LogisticRegression(training="counterfactual")
    classifier = LogisticRegression().initialise(2, torch.Generator().manual_seed(0))
    classifier.fit(X[None], y[None], TrainingSchedule(epochs=30), torch.Generator())
    for immutable in (0, 1):
        codes = [MUTABLE_BOTH, MUTABLE_BOTH]
        codes[immutable] = IMMUTABLE
        objective = CounterfactualObjective(
            spec.counterfactual_training, classifier, X[None], y[None], space_of(X, codes), [3], 0
        )
        objective.start_epoch(0, 1, 1)
        assert objective.history[-1]["matured"] > 0.5
        points = objective.points  # (1, n, 3, 2): x', x+, x'_eps
        assert torch.equal(points[0, :, 0, immutable], points[0, :, 1, immutable])
        flat = classifier.nets.flat.detach().clone().requires_grad_(True)
        outputs = classifier.nets.forward(points[:, :, :2].reshape(1, -1, 2), flat=flat)
        outputs = outputs.reshape(1, -1, 2, 1)
        divergence, _, _ = objective_terms(
            outputs[:, :, 0], outputs[:, :, 1], outputs[:, :, 0], objective.target, objective.label
        )
        (grad,) = torch.autograd.grad(divergence.sum(), flat)
        assert grad[immutable].item() == 0.0
        assert grad[1 - immutable].item() != 0.0


# --- the training-time search -------------------------------------------------------------


def test_searches_starting_at_the_factual_move():
    """Regression: ‖x − x′‖ at x = x′ used to give a NaN gradient, so such searches never moved."""
    X, y = circle_data(60)
    classifier = LogisticRegression().initialise(2, torch.Generator().manual_seed(0))
    classifier.fit(X[None], y[None], TrainingSchedule(epochs=5), torch.Generator())
    rejected = torch.nonzero(classifier.proba(X[None])[0] < 0.5).flatten()[:5]
    problem = SearchProblem(
        factuals=X[rejected][None],
        individual_ids=rejected[None],
        system_keys=torch.tensor([0]),
        model=classifier,
        space=space_of(X),
        population_X=X[None],
        population_y=y[None],
        n_counterfactuals=1,
    )
    result = GenericGenerator(init_noise=0.0, learning_rate=0.5, max_iter=50).search(problem)
    moved = (result.counterfactuals[0, :, 0] - X[rejected]).abs().sum(-1)
    assert bool((moved > 0).all())


def test_frobenius_has_zero_gradient_at_zero_and_matches_sqrt_elsewhere():
    diff = torch.tensor([[[[0.0, 0.0]], [[3.0, 4.0]]]], requires_grad=True)
    value = frobenius(diff)
    assert value.tolist() == [[0.0, 5.0]]
    (grad,) = torch.autograd.grad(value.sum(), diff)
    assert grad[0, 0].tolist() == [[0.0, 0.0]]
    reference = diff.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference[0, 1].pow(2).sum().sqrt(), reference)
    assert torch.equal(grad[0, 1], expected[0, 1])


@pytest.mark.parametrize("radius", [0.0, 0.3, 100.0])
def test_nascent_counterfactuals_are_path_points_within_the_radius(radius):
    X, y = circle_data(60)
    classifier = LogisticRegression().initialise(2, torch.Generator().manual_seed(0))
    classifier.fit(X[None], y[None], TrainingSchedule(epochs=5), torch.Generator())
    rejected = torch.nonzero(classifier.proba(X[None])[0] < 0.5).flatten()[:6]
    space = space_of(X)
    problem = SearchProblem(
        factuals=X[rejected][None],
        individual_ids=rejected[None],
        system_keys=torch.tensor([0]),
        model=classifier,
        space=space,
        population_X=X[None],
        population_y=y[None],
        n_counterfactuals=1,
        nascent_radius=radius,
    )
    generator = GenericGenerator(init_noise=0.0, learning_rate=0.5, max_iter=40)
    result = generator.search(problem)
    nascent = result.nascent[0, :, 0]
    distance = ((nascent - X[rejected]) / space.scale).abs().amax(-1)
    assert bool((distance <= radius + 1e-12).all())
    if radius == 0.0:
        assert torch.equal(nascent, X[rejected])
    if radius == 100.0:  # every path point is inside: the last one is the counterfactual
        torch.testing.assert_close(nascent, result.counterfactuals[0, :, 0])
    # Without a radius nothing is tracked.
    problem.nascent_radius = None
    assert generator.search(problem).nascent is None


# --- spreading over batches, burn-in ------------------------------------------------------


def fitted_objective(settings: dict, n_rows: int = 40):
    X, y = circle_data(n_rows)
    spec = MLP(hidden_sizes=(8,), training="counterfactual", counterfactual_training=settings)
    classifier = spec.initialise(2, torch.Generator().manual_seed(0))
    objective = CounterfactualObjective(
        spec.counterfactual_training, classifier, X[None], y[None], space_of(X), [5], 0
    )
    return objective


def test_at_least_one_counterfactual_per_batch_by_default():
    objective = fitted_objective({"counterfactuals_per_epoch": 3})
    objective.start_epoch(0, 1, n_batches=40)  # batch size 1: 40 batches of one row
    assert objective.points.shape[1] == 40
    assert all(stop - start == 1 for start, stop in objective.bounds)


def test_without_the_minimum_some_batches_carry_none():
    objective = fitted_objective({"counterfactuals_per_epoch": 3, "at_least_one_per_batch": False})
    objective.start_epoch(0, 1, n_batches=40)
    sizes = [stop - start for start, stop in objective.bounds]
    assert sum(sizes) == 3 and max(sizes) == 1
    assert [i for i, s in enumerate(sizes) if s] == [13, 26, 39]  # floor((b+1)·3/40) steps
    assert objective.inputs(0) is None


def test_counterfactuals_per_epoch_are_capped_at_the_rows_and_split_evenly():
    objective = fitted_objective({"counterfactuals_per_epoch": 1000})
    objective.start_epoch(0, 1, n_batches=3)
    assert objective.points.shape[1] == 40
    assert [stop - start for start, stop in objective.bounds] == [13, 13, 14]


def test_burn_in_epochs_train_on_the_classification_loss_alone():
    X, y = circle_data(30)
    spec = MLP(
        hidden_sizes=(8,),
        training="counterfactual",
        counterfactual_training={"burn_in": 0.5, "counterfactuals_per_epoch": 10},
    )
    classifier = spec.initialise(2, torch.Generator().manual_seed(0))
    job = classifier.training_job(
        X[None], y[None], TrainingSchedule(epochs=4, batch_size=10), torch.Generator()
    )
    train_jobs([job])
    assert [h["epoch"] for h in job.history] == [2, 3]


# --- reproducibility and model kinds ------------------------------------------------------


def trained(spec, seed: int = 7, systems: int = 1, batch_size: int = 6):
    X, y = circle_data(60)
    classifier = spec.initialise(2, torch.Generator().manual_seed(0)).replicate(systems)
    Xs = X[None].expand(systems, -1, -1)
    ys = y[None].expand(systems, -1)
    schedule = TrainingSchedule(epochs=3, batch_size=batch_size)
    job = classifier.training_job(Xs, ys, schedule, torch.Generator().manual_seed(seed))
    train_jobs([job])
    return classifier, job


def test_training_is_reproducible_from_the_seed_and_differs_from_standard():
    settings = {"counterfactuals_per_epoch": 20}
    spec = MLP(hidden_sizes=(8,), training="counterfactual", counterfactual_training=settings)
    one, job = trained(spec)
    two, _ = trained(spec)
    other, _ = trained(spec, seed=8)
    assert torch.equal(one.state(), two.state())
    assert not torch.equal(one.state(), other.state())
    assert job.history and all(0.0 <= h["matured"] <= 1.0 for h in job.history)
    standard, _ = trained(MLP(hidden_sizes=(8,), training_path="autograd"))
    assert not torch.equal(one.state(), standard.state())


def test_all_zero_weights_on_the_extra_terms_train_like_standard_autograd():
    """λ = (1, 0, 0, 0): the objective reduces to the classification loss of the autograd path."""
    zero = {"divergence_weight": 0.0, "ridge_weight": 0.0, "adversarial_weight": 0.0}
    ct = MLP(hidden_sizes=(8,), training="counterfactual", counterfactual_training=zero)
    X, y = circle_data(60)
    a = ct.initialise(2, torch.Generator().manual_seed(0))
    b = MLP(hidden_sizes=(8,), training_path="autograd").initialise(
        2, torch.Generator().manual_seed(0)
    )
    schedule = TrainingSchedule(epochs=2, batch_size=6)
    a._train_with_objective(
        X[None],
        y[None],
        schedule,
        torch.Generator(),
        CounterfactualObjective(
            ct.counterfactual_training, a, X[None], y[None], space_of(X), [0], 0
        ),
    )
    b.fit(X[None], y[None], schedule, torch.Generator())
    torch.testing.assert_close(a.state(), b.state(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fast_path_equals_autograd(dropout, batch_size, activation, outputs):
    """The hand-written logit gradients of the three terms agree with autograd's."""
    settings = {"counterfactuals_per_epoch": 15, "at_least_one_per_batch": False}
    options = {
        "hidden_sizes": (8,),
        "activation": activation,
        "dropout": dropout,
        "training": "counterfactual",
        "counterfactual_training": settings,
        "outputs": outputs,
    }
    # (Whether any counterfactual matured varies by case; the ridge and adversarial terms act
    # on every one.)
    fast, _ = trained(MLP(**options, training_path="fast"), systems=2, batch_size=batch_size)
    slow, _ = trained(MLP(**options, training_path="autograd"), systems=2, batch_size=batch_size)
    torch.testing.assert_close(fast.state(), slow.state(), rtol=0, atol=2e-5)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_two_class_logits_train_alike_on_both_paths_and_predict_by_their_difference(batch_size):
    X, _ = circle_data(60)
    fast, _ = trained(MLP(hidden_sizes=(8,), outputs=2), batch_size=batch_size)
    slow, _ = trained(
        MLP(hidden_sizes=(8,), outputs=2, training_path="autograd"), batch_size=batch_size
    )
    torch.testing.assert_close(fast.state(), slow.state(), rtol=0, atol=2e-5)
    outputs = fast.nets.forward(X[None].float())
    torch.testing.assert_close(fast.logits(X[None]), outputs[..., 1] - outputs[..., 0])
    softmax = torch.softmax(outputs, dim=-1)[..., 1]
    torch.testing.assert_close(fast.proba(X[None]), softmax)


def test_deep_ensemble_members_train_on_shared_counterfactuals():
    spec = DeepEnsemble(
        n_members=2,
        hidden_sizes=(4,),
        training="counterfactual",
        counterfactual_training={"counterfactuals_per_epoch": 10},
    )
    classifier, job = trained(spec, systems=2)
    assert classifier.state().shape[0] == 4 * spec.architecture(2).n_parameters
    assert len(job.history) == 3


def test_torch_module_trains_counterfactually():
    settings = {"counterfactuals_per_epoch": 12}
    spec = TorchModule(
        {"_target_": "recourse_sim.models.modules.mlp", "hidden_sizes": [8]},
        training="counterfactual",
        counterfactual_training=settings,
    )
    one, job = trained(spec)
    two, _ = trained(spec)
    standard, _ = trained(
        TorchModule({"_target_": "recourse_sim.models.modules.mlp", "hidden_sizes": [8]})
    )
    for name, value in one.state()["params"].items():
        assert torch.equal(value, two.state()["params"][name])
    assert any(
        not torch.equal(value, standard.state()["params"][name])
        for name, value in one.state()["params"].items()
    )
    assert len(job.history) == 3


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "key", "allowed"),
    [
        ({"training": "adversarial"}, "model.training", "'standard', 'counterfactual'"),
        (
            {"counterfactual_training": {"divergence_weight": -1}},
            "model.counterfactual_training.divergence_weight",
            ">= 0",
        ),
        (
            {"counterfactual_training": {"nce": 10}},
            "model.counterfactual_training.nce",
            "counterfactuals_per_epoch",
        ),
        (
            {"counterfactual_training": {"search": {"generator": "growing_spheres"}}},
            "model.counterfactual_training.search.generator",
            "'ecco'",
        ),
        (
            {"counterfactual_training": {"search": {"generator": "wachter", "energy_weight": 1}}},
            "model.counterfactual_training.search.energy_weight",
            "an option of generator 'wachter'",
        ),
        (
            {"counterfactual_training": {"search": {"max_iter": 0}}},
            "model.counterfactual_training.search.max_iter",
            "1",
        ),
    ],
)
def test_bad_settings_name_the_key_and_the_allowed_values(arguments, key, allowed):
    with pytest.raises(ConfigError) as error:
        MLP(**arguments)
    assert error.value.key == key
    assert allowed in str(error.value)


_BAD_SETTINGS = {
    "class_weight": [-1, _NAN := float("nan"), "abc", True, None],
    "divergence_weight": [-0.5, float("inf"), True],
    "ridge_weight": [-0.1, "0.1"],
    "adversarial_weight": [-1, None],
    "counterfactuals_per_epoch": [0, 2.5, True, "abc", None],
    "at_least_one_per_batch": ["yes", 1, None],
    "burn_in": [-0.1, 1.5, _NAN, "abc"],
    "adversarial_radius": [-0.3, _NAN, True],
    "search": [5, "abc", [1, 2]],
}
_BAD_SEARCH = {
    "generator": ["growing_spheres", "ECCO", 1, None],
    "learning_rate": [0, -0.25, _NAN, "abc"],
    "max_iter": [0, 2.5, True],
    "decision_threshold": [0, 1.5, "abc"],
    "cost_weight": [-1, _NAN],
    "init_noise": [-0.1, "abc"],
    "energy_weight": [-5, True],
}


def _settings_cases():
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load("recourse_sim/configs/model/mlp_ct.yaml"))[
        "mlp_ct"
    ]
    settings = node["counterfactual_training"]
    cases = []
    for key in settings:
        cases += [pytest.param(key, bad, id=f"{key}={bad!r}") for bad in _BAD_SETTINGS[key]]
    for key in [*settings["search"], "energy_weight"]:
        cases += [
            pytest.param(f"search.{key}", bad, id=f"search.{key}={bad!r}")
            for bad in _BAD_SEARCH[key]
        ]
    return settings, cases


@pytest.mark.parametrize(("key", "bad"), _settings_cases()[1])
def test_every_counterfactual_training_setting_is_strict(key, bad):
    settings = _settings_cases()[0]
    settings["search"] = dict(settings["search"])
    if key.startswith("search."):
        settings["search"][key.removeprefix("search.")] = bad
    else:
        settings[key] = bad
    with pytest.raises(ConfigError) as error:
        MLP(training="counterfactual", counterfactual_training=settings)
    assert error.value.key == f"model.counterfactual_training.{key}"
    assert error.value.allowed


def test_defaults_are_the_papers():
    settings = CounterfactualTraining.from_config("model.counterfactual_training", None)
    assert (
        settings.class_weight,
        settings.divergence_weight,
        settings.ridge_weight,
        settings.adversarial_weight,
    ) == (1.0, 0.5, 0.1, 0.25)
    assert settings.adversarial_radius == 0.3 and settings.burn_in == 0.0
    search = settings.search
    assert settings.generator_name == "ecco"
    assert (search.learning_rate, search.max_iter, search.decision_threshold) == (0.25, 30, 0.75)
    assert (search.cost_weight, search.energy_weight, search.init_noise) == (0.001, 5.0, 0.0)
    wachter = CounterfactualTraining.from_config("k", {"search": {"generator": "wachter"}})
    assert wachter.generator_name == "wachter" and wachter.search.learning_rate == 0.25


# --- inside the simulation: resume ---------------------------------------------------------


def make_simulation(recorder):
    data = blobs(n_per_class=30, std=0.4, seed=3)
    train, test = train_test_split(data, 0.2, np.random.default_rng(0))
    ct = {"counterfactuals_per_epoch": 10, "search": {"max_iter": 10}}
    return RecourseSimulation(
        train,
        test,
        models={
            "mlp_ct": MLP(
                hidden_sizes=(4,),
                pretrain={"epochs": 4, "batch_size": 8},
                retrain={"epochs": 1, "batch_size": 4},
                training="counterfactual",
                counterfactual_training=ct,
            )
        },
        generators={"generic": GenericGenerator(max_iter=20)},
        metrics={},
        config=SimulationConfig(
            n_rounds=3, n_repetitions=2, recourse_fraction=0.3, evaluate_every=1, n_permutations=0
        ),
        streams=RandomStreams(0),
        recorder=recorder,
        progress=False,
    )


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full = tmp_path / "full"
    make_simulation(Recorder(full)).run()
    partial = tmp_path / "partial"
    sim = make_simulation(Recorder(partial))
    original = sim._evaluation_phase

    def crash(round_number):
        if round_number == 2:
            raise KeyboardInterrupt("simulated crash")
        original(round_number)

    sim._evaluation_phase = crash
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    make_simulation(Recorder(partial)).run(resume=True)
    for name in ("recourse.csv", "final_population.csv"):
        assert (partial / name).read_bytes() == (full / name).read_bytes(), name
    population = pd.read_csv(full / "final_population.csv")
    assert len(population) > 0


# --- the preset through the real entry point ------------------------------------------------


def test_the_preset_compares_both_trainings_with_the_plausibility_metrics(tmp_path):
    import subprocess
    import sys

    from conftest import TINY

    args = [sys.executable, "-m", "recourse_sim", "+experiment=counterfactual_training", *TINY]
    args += ["model.mlp.pretrain.epochs=5", "model.mlp_ct.pretrain.epochs=5"]
    result = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert set(metrics.model) == {"mlp", "mlp_ct"}
    assert {"implausibility_distance", "implausibility_mmd", "mmd_domain"} <= set(metrics.metric)
    plausibility = metrics[metrics.metric == "implausibility_distance"]
    assert plausibility[plausibility["round"] == 0].value.isna().all()
    assert plausibility[plausibility["round"] > 0].value.notna().any()
    from omegaconf import OmegaConf

    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.model.mlp_ct.training == "counterfactual"
    assert config.model.mlp.training == "standard"
    assert config.model.mlp.outputs == config.model.mlp_ct.outputs == 2

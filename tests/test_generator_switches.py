"""The generator switches that choose between the reference code's behaviour and alternatives.

``generator.greedy.budget``, ``generator.<name>.categorical_gradient``,
``generator.<name>.latent_decode`` and ``generator.claproar.gate_on_validity``: each checked on a
tiny case computed by hand, and each refusing a bad value by name.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from recourse_sim.data.base import Dataset
from recourse_sim.errors import ConfigError
from recourse_sim.generators import (
    ClaproarGenerator,
    ClueGenerator,
    DiceGenerator,
    EccoGenerator,
    FeatureSpace,
    GenericGenerator,
    GradientGenerator,
    GravitationalGenerator,
    GreedyGenerator,
    ProbeGenerator,
    ReviseGenerator,
    SearchProblem,
    WachterGenerator,
)
from recourse_sim.generators.base import IMMUTABLE, MUTABLE_BOTH
from recourse_sim.generators.gradient import _LatentSpace
from recourse_sim.generators.greedy import reference_changes
from recourse_sim.models import DeepEnsemble, LogisticRegression

CONFIGS = Path(__file__).parents[1] / "recourse_sim" / "configs" / "generator"
GRADIENT_CLASSES = [
    ClaproarGenerator,
    ClueGenerator,
    DiceGenerator,
    EccoGenerator,
    GenericGenerator,
    GravitationalGenerator,
    GreedyGenerator,
    ProbeGenerator,
    ReviseGenerator,
    WachterGenerator,
]


def space(scale, center, mutability=None, groups=(), binary=(), lower=None, upper=None):
    d = len(scale)
    return FeatureSpace(
        scale=torch.tensor(scale, dtype=torch.float64),
        center=torch.tensor(center, dtype=torch.float64),
        mutability=torch.tensor(mutability or [MUTABLE_BOTH] * d),
        lower=torch.tensor(lower or [-math.inf] * d, dtype=torch.float64),
        upper=torch.tensor(upper or [math.inf] * d, dtype=torch.float64),
        categorical_groups=groups,
        binary_features=binary,
    )


def linear_model(weights, biases):
    """A logistic regression (one row of weights) or an ensemble of linear members, fixed."""
    weights = torch.tensor(weights, dtype=torch.float32)
    members, d = weights.shape
    spec = LogisticRegression() if members == 1 else DeepEnsemble(members, hidden_sizes=())
    model = spec.initialise(d, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.nets.weights[0][:, :, 0] = weights
        model.nets.biases[0][:, 0] = torch.tensor(biases, dtype=torch.float32)
    return model


def problem_of(data: Dataset, model, rows, K=2, feature_space=None) -> SearchProblem:
    rows = torch.as_tensor(rows)
    X = torch.tensor(data.X)
    return SearchProblem(
        factuals=X[rows][None],
        individual_ids=rows[None],
        system_keys=torch.arange(1),
        model=model,
        space=feature_space or FeatureSpace.from_data(data),
        population_X=X[None],
        population_y=torch.tensor(data.y)[None],
        n_counterfactuals=K,
    )


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- 1. generator.greedy.budget ------------------------------------------------------------


def test_feature_space_carries_the_z_score_mean():
    X = np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 1.0], [5.0, 1.0, 0.0]])
    data = Dataset(X, np.array([0, 1, 0]), ("a", "c_0", "c_1"), categorical_groups=((1, 2),))
    fitted = FeatureSpace.from_data(data)
    torch.testing.assert_close(fitted.center, torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(fitted.scale, torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.equal(fitted.to("cpu").center, fitted.center)


def test_reference_counts_decoded_steps():
    # Continuous (μ=1, σ=2), continuous (μ=0, σ=1), a one-hot group (2, 3, 4), a binary column.
    s = space([2.0] + [1.0] * 5, [1.0] + [0.0] * 5, groups=((2, 3, 4),), binary=(5,))
    steps = torch.tensor(
        [
            # Δ = 0 decodes to (μ, 0, argmax of a tie -> first entry, 0): a and c_0 count.
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            # Δ_a·2 + 1 = 0: no count; b moved; tie of 0s at 2 and 4 -> 2; round(0.6) = 1.
            [-0.5, 0.1, 0.0, -0.1, 0.0, 0.6],
            # The group's positive entry wins; round(0.5) = 0 (ties to even, as Julia's round).
            [0.0, 0.0, 0.0, 0.0, 0.1, 0.5],
        ],
        dtype=torch.float64,
    )
    expected = torch.tensor(
        [
            [True, False, True, False, False, False],
            [False, True, True, False, False, True],
            [True, False, False, False, True, False],
        ]
    )
    assert torch.equal(reference_changes(steps, s), expected)


# The gradient of each of K=2 counterfactuals: CF 0 prefers feature 0, CF 1 feature 1.
_GRAD = torch.tensor([[[[-3.0, 2.0, 1.0], [1.0, -2.0, 0.5]]]], dtype=torch.float64)


def _run_greedy(budget: str, center, steps: int):
    generator = GreedyGenerator(budget=budget)
    state = generator.setup(SimpleNamespace(space=space([2.0, 1.0, 0.5], center)))
    moves, limits = [], []
    for _ in range(steps):
        step = generator.step(_GRAD, 2, state)
        # Exactly one feature per counterfactual, by ε against the gradient's sign.
        assert torch.equal((step != 0).sum(-1), torch.ones(1, 1, 2, dtype=torch.int64))
        torch.testing.assert_close(step.abs().sum(-1), torch.full((1, 1, 2), 0.1).double())
        moves.append(step[0, 0].ne(0).double().argmax(-1).tolist())
        limits.append(state.limit.flatten()[0].item())
    return moves, limits, state


def test_reference_budget_on_continuous_data_never_freezes():
    # μ ≠ 0 everywhere: every feature counts at every step, moved or not.
    moves, limits, state = _run_greedy("reference", [1.0, -3.0, 0.5], 35)
    assert moves == [[0, 1]] * 35  # the most salient feature throughout: nothing is frozen
    assert torch.equal(state.changes, torch.full((1, 1, 2, 3), 35))  # cumulative, never reset
    # n = 10 -> 20 (passes 1) -> 30 (passes 2) -> 40 (passes 3): n += n / passes.
    assert limits[:9] == [10.0] * 9 and limits[9:19] == [20.0] * 10
    assert limits[19:29] == [30.0] * 10 and limits[29:] == [40.0] * 6
    assert state.limit.shape == (1, 1, 1, 1)  # one budget per individual (all K, all d)


def test_reference_budget_freezes_what_counts_without_moving():
    # μ₂ = 0: feature 2 counts only when moved, so not all features reach n = 10 and the limit
    # stays; features 0 and 1 count every step (μ ≠ 0) and are frozen after 10 steps, moved or
    # not, leaving feature 2 to both counterfactuals.
    moves, limits, state = _run_greedy("reference", [1.0, -3.0, 0.0], 12)
    assert moves == [[0, 1]] * 10 + [[2, 2]] * 2
    assert limits == [10.0] * 12
    assert state.changes[0, 0].tolist() == [[12, 12, 2], [12, 12, 2]]


def test_binding_budget_counts_moves_per_counterfactual():
    moves, limits, _ = _run_greedy("binding", [1.0, -3.0, 0.5], 31)
    # CF 0 works down its salience order 0, 1, 2 (|g| = 3, 2, 1); CF 1 order 1, 0, 2.
    expected = [[0, 1]] * 10 + [[1, 0]] * 10 + [[2, 2]] * 10 + [[0, 1]]
    assert moves == expected
    assert limits[:29] == [10.0] * 29 and limits[29:] == [20.0] * 2  # reset, then n = 20


def test_greedy_search_on_continuous_data_moves_one_feature_throughout():
    # Logistic model, constant z-space gradient: feature 0 is always the most salient. The
    # reference budget never freezes it; the binding one moves on after 10 steps.
    rng = np.random.default_rng(0)
    X = rng.normal([1.0, 2.0], [1.0, 1.0], (40, 2))
    data = Dataset(X, (np.arange(40) % 2).astype(float), ("a", "b"), name="line")
    model = linear_model([[1.5, 0.5]], [-9.0])
    rows = [0, 1]
    factual = torch.tensor(X[rows])[None, :, None, :]
    kw = {"init_noise": 0.0, "max_iter": 15}
    reference = GreedyGenerator(**kw).search(problem_of(data, model, rows))
    binding = GreedyGenerator(budget="binding", **kw).search(problem_of(data, model, rows))
    assert (reference.n_iterations == 15).all() and (binding.n_iterations == 15).all()
    scale = FeatureSpace.from_data(data).scale
    moved = (reference.counterfactuals - factual) / scale
    torch.testing.assert_close(moved[..., 0], torch.full_like(moved[..., 0], 1.5))
    assert (moved[..., 1] == 0).all()
    moved = (binding.counterfactuals - factual) / scale
    torch.testing.assert_close(moved[..., 0], torch.full_like(moved[..., 0], 1.0))
    torch.testing.assert_close(moved[..., 1], torch.full_like(moved[..., 1], 0.5))


def test_greedy_reference_budget_in_latent_space_runs():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0.5, 0.1, (20, 2)), rng.normal(-0.5, 0.1, (20, 2))])
    data = Dataset(X, np.r_[np.zeros(20), np.ones(20)], ("a", "b"), name="latent")
    model = linear_model([[-2.0, -2.0]], [0.0])
    for budget in ("reference", "binding"):
        generator = GreedyGenerator(budget=budget, latent_space=True, vae={"epochs": 2})
        result = generator.search(problem_of(data, model, [0, 1]))
        assert torch.isfinite(result.counterfactuals).all()


# --- 2. generator.<name>.categorical_gradient ------------------------------------------------


def _mixed_space() -> FeatureSpace:
    # x0 continuous, (x1, x2) one-hot, x3 binary.
    return space([1.0] * 4, [0.0] * 4, groups=((1, 2),), binary=(3,))


@pytest.mark.parametrize("mode", ["straight_through", "none"])
def test_categorical_gradient_of_a_logistic_loss(mode):
    w = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    x = torch.tensor([0.3, 0.6, 0.4, 0.7], dtype=torch.float64, requires_grad=True)
    projected = _mixed_space().project(x, mode)
    assert projected.tolist() == [0.3, 1.0, 0.0, 1.0]  # the forward value, either way
    loss = torch.nn.functional.softplus(-(w * projected).sum())  # BCE towards the target
    (grad,) = torch.autograd.grad(loss, x)
    # dL/dz = σ(z) − 1 at the projected point, z = 0.3 + 2 + 0 + 0.5 = 2.8.
    dz = 1.0 / (1.0 + math.exp(-2.8)) - 1.0
    if mode == "straight_through":
        expected = [dz * 1.0, dz * 2.0, dz * -1.0, dz * 0.5]
    else:
        expected = [dz * 1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))


def test_categorical_gradient_none_never_flips_a_category():
    rng = np.random.default_rng(0)
    level = rng.integers(0, 2, 60)
    X = np.column_stack([rng.normal(size=60), np.eye(2)[level]])
    data = Dataset(
        X, level.astype(float), ("x0", "c_0", "c_1"), categorical_groups=((1, 2),), name="cat"
    )
    # Only the category matters much: c_1 is the way into the target class.
    model = linear_model([[0.1, -2.0, 2.0]], [-0.5])
    rows = np.flatnonzero(level == 0)[:4]
    results = {
        mode: GenericGenerator(categorical_gradient=mode).search(problem_of(data, model, rows))
        for mode in ("straight_through", "none")
    }
    flipped = results["straight_through"].counterfactuals[..., 1:]
    assert (flipped == torch.tensor([0.0, 1.0], dtype=torch.float64)).all()
    assert results["straight_through"].converged.all()
    kept = results["none"].counterfactuals[..., 1:]
    assert (kept == torch.tensor([1.0, 0.0], dtype=torch.float64)).all()
    assert not results["none"].converged.any()


# --- 3. generator.<name>.latent_decode -------------------------------------------------------


class _LineVAE:
    """A fixed 'VAE' with a one-dimensional latent space: decode(z) = c + z·a (float32)."""

    latent_dim = 1

    def __init__(self):
        self.c = torch.tensor([5.0, 2.0, 0.3, 0.6])
        self.a = torch.tensor([1.0, 1.0, 0.1, -0.1])

    def encode(self, X):
        mu = torch.zeros(*X.shape[:-1], 1)
        return mu, torch.full_like(mu, math.log(0.5))

    def decode(self, Z):
        return self.c + Z.to(torch.float32) * self.a


class _Store:
    def __init__(self, vae):
        self.vae = vae

    def for_systems(self, problem):
        return self.vae


def _latent_data() -> tuple[Dataset, FeatureSpace]:
    # x0 immutable, x1 within [0, 1], (x2, x3) one-hot.
    rng = np.random.default_rng(0)
    level = rng.integers(0, 2, 30)
    X = np.column_stack([rng.normal(size=30), rng.uniform(size=30), np.eye(2)[level]])
    data = Dataset(
        X,
        level.astype(float),
        ("x0", "x1", "c_0", "c_1"),
        categorical_groups=((2, 3),),
        mutability=("none", "both", "both", "both"),
        lower=np.array([-np.inf, 0.0, 0.0, 0.0]),
        upper=np.array([np.inf, 1.0, 1.0, 1.0]),
        name="latent",
    )
    return data, FeatureSpace.from_data(data)


def test_latent_decode_raw_is_the_decoder_output_and_projected_is_actionable():
    data, fitted = _latent_data()
    vae = _LineVAE()
    problem = problem_of(data, None, [0, 1], K=3, feature_space=fitted)
    factuals = problem.factuals.unsqueeze(2).double()
    z = torch.linspace(-2.0, 3.0, 6, dtype=torch.float64).view(1, 2, 3, 1)
    expected = vae.decode(z.reshape(1, 6, 1)).reshape(1, 2, 3, 4).double()
    raw = _LatentSpace(problem, factuals, 3, vae, "raw").decode(z)
    assert torch.equal(raw, expected)  # unclamped, unprojected, immutables free
    assert (raw[..., 1] > 1).any() and (raw[..., 0] != factuals[..., 0]).all()
    projected = _LatentSpace(problem, factuals, 3, vae, "projected").decode(z)
    assert torch.equal(projected[..., 0], factuals[..., 0].expand(-1, -1, 3))
    assert torch.equal(projected[..., 1], expected[..., 1].clamp(0.0, 1.0))
    onehot = (expected[..., 3] > expected[..., 2]).double()
    assert torch.equal(projected[..., 3], onehot) and torch.equal(projected[..., 2], 1 - onehot)


@pytest.mark.parametrize("mode", ["raw", "projected"])
def test_latent_search_returns_what_the_model_saw(mode):
    data, _ = _latent_data()
    model = linear_model([[0.0, 3.0, 0.0, 0.0]], [-4.0])  # wants x1 high: beyond its bound
    generator = ReviseGenerator(latent_decode=mode, max_iter=30)
    generator._vaes = _Store(_LineVAE())
    rows = [0, 1, 2]
    result = generator.search(problem_of(data, model, rows, K=2))
    cf = result.counterfactuals
    with torch.no_grad():
        seen = torch.sigmoid(model.logits(cf.reshape(1, -1, 4))).reshape(cf.shape[:-1])
    torch.testing.assert_close(result.probabilities, seen.double())
    factual = torch.tensor(data.X[rows])[None, :, None, :]
    if mode == "raw":
        # Every counterfactual is c + t·a for one t: the decoder's output, as the model saw it.
        t = (cf[..., 0] - 5.0).float()
        torch.testing.assert_close(cf.float(), (_LineVAE().c + t.unsqueeze(-1) * _LineVAE().a))
        assert (cf[..., 1] > 1.0).any()  # out of bounds
        assert (cf[..., 0] != factual[..., 0]).all()  # the immutable feature changed
        assert not ((cf[..., 2:] == 0) | (cf[..., 2:] == 1)).all()  # not one-hot
    else:
        assert torch.equal(cf[..., 0], factual[..., 0].expand_as(cf[..., 0]))
        assert ((cf[..., 1] >= 0) & (cf[..., 1] <= 1)).all()
        assert torch.equal(cf[..., 2:].sum(-1), torch.ones_like(cf[..., 2]))


# --- 4. generator.claproar.gate_on_validity --------------------------------------------------


def _gate_state(generator, model, K=2):
    problem = SimpleNamespace(
        individual_ids=torch.zeros(1, 1, dtype=torch.int64),
        target=1,
        n_counterfactuals=K,
        model=model,
    )
    state = generator.setup(problem)
    generator.begin_step(state, None)
    return state


def test_claproar_gate_adds_the_mean_member_loss_only_once_all_are_valid():
    # Two linear members: logit_0 = x_a, logit_1 = x_b − 0.5.
    model = linear_model([[1.0, 0.0], [0.0, 1.0]], [0.0, -0.5])
    generator = ClaproarGenerator()  # λ = [0.1, 5.0], gated
    state = _gate_state(generator, model)
    factual = torch.zeros(1, 1, 1, 2, dtype=torch.float64)

    # One invalid counterfactual: (−1, 0) has member logits (−1, −0.5), mean p = 0.32 < 0.5.
    cfs = torch.tensor([[[[2.0, 1.0], [-1.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    penalty = generator.penalty(cfs, factual, None, state)
    assert penalty.item() == pytest.approx(0.1 * math.sqrt(4 + 1 + 1 + 0))
    (grad,) = torch.autograd.grad(penalty.sum(), cfs)
    torch.testing.assert_close(grad, 0.1 * cfs.detach() / math.sqrt(6))  # distance only

    # All valid: member logits (2, 0.5) and (1, 1.5); each member's BCE averaged over K, then
    # averaged over the members.
    cfs = torch.tensor([[[[2.0, 1.0], [1.0, 2.0]]]], dtype=torch.float64)
    member_0 = (softplus(-2.0) + softplus(-1.0)) / 2
    member_1 = (softplus(-0.5) + softplus(-1.5)) / 2
    expected = 0.1 * math.sqrt(4 + 1 + 1 + 4) + 5.0 * (member_0 + member_1) / 2
    assert generator.penalty(cfs, factual, None, state).item() == pytest.approx(expected, 1e-6)

    # Without the gate: from the start, on the mean member logit, both situations.
    ungated = ClaproarGenerator(gate_on_validity=False)
    logits = model.logits(cfs.reshape(1, 2, 2)).reshape(1, 1, 2)  # means 1.25 and 1.25
    mean_logit_loss = softplus(-1.25)
    expected = 0.1 * math.sqrt(10) + 5.0 * mean_logit_loss
    got = ungated.penalty(cfs, factual, logits, ungated.setup(None))
    assert got.item() == pytest.approx(expected, 1e-6)


def test_claproar_gate_reads_the_mean_member_probability():
    # Constant members with logits (−10, 2, 2): the mean logit (−2) says negative, the mean
    # probability (0.587) says positive; the reference's label is round(mean probability).
    model = linear_model([[0.0, 0.0]] * 3, [-10.0, 2.0, 2.0])
    generator = ClaproarGenerator()
    state = _gate_state(generator, model)
    factual = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    cfs = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]], dtype=torch.float64)
    loss = (softplus(10.0) + 2 * softplus(-2.0)) / 3
    expected = 0.1 * 5.0 + 5.0 * loss
    assert generator.penalty(cfs, factual, None, state).item() == pytest.approx(expected, 1e-6)


def test_claproar_gate_is_closed_while_the_factual_is_rejected():
    # One step from rejected factuals: the gate is closed, so λ₂ does not matter; without the
    # gate it does.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0.5, 0.1, (20, 2)), rng.normal(-0.5, 0.1, (20, 2))])
    data = Dataset(X, np.r_[np.zeros(20), np.ones(20)], ("a", "b"), name="blobs")
    model = linear_model([[-3.0, -3.0], [-2.0, -4.0]], [0.0, 0.5])
    rows = [0, 1, 2]

    def one_step(**kw):
        return ClaproarGenerator(max_iter=1, **kw).search(problem_of(data, model, rows, K=3))

    gated = one_step(classifier_loss_weight=5.0).counterfactuals
    assert torch.equal(gated, one_step(classifier_loss_weight=0.0).counterfactuals)
    ungated = one_step(classifier_loss_weight=5.0, gate_on_validity=False).counterfactuals
    assert not torch.equal(gated, ungated)


# --- defaults and bad values -----------------------------------------------------------------


def _yaml(stem: str) -> tuple[type, dict]:
    (node,) = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{stem}.yaml")).values()
    return get_class(node.pop("_target_")), node


def test_every_gradient_yaml_declares_the_reference_defaults():
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.stem in ("none", "wachter"):  # the control; the renamed option's stub
            continue
        cls, options = _yaml(path.stem)
        if not issubclass(cls, GradientGenerator):
            assert "categorical_gradient" not in options and "latent_decode" not in options
            continue
        assert options["categorical_gradient"] == "straight_through", path.stem
        assert options["latent_decode"] == "raw", path.stem
        assert ("budget" in options) == (cls is GreedyGenerator), path.stem
        assert ("gate_on_validity" in options) == (cls is ClaproarGenerator), path.stem
        generator = cls(**options)
        assert generator.categorical_gradient == "straight_through"
        assert generator.latent_decode == "raw"
    assert _yaml("greedy")[1]["budget"] == "reference"
    assert _yaml("claproar")[1]["gate_on_validity"] is True
    assert GreedyGenerator().budget == "reference"
    assert ClaproarGenerator().gate_on_validity is True
    assert GenericGenerator().categorical_gradient == "straight_through"
    assert GenericGenerator().latent_decode == "raw"


_CHOICES = {
    "budget": ("'reference', 'binding'", [GreedyGenerator]),
    "categorical_gradient": ("'straight_through', 'none'", GRADIENT_CLASSES),
    "latent_decode": ("'raw', 'projected'", GRADIENT_CLASSES),
}
_BAD_CHOICES = ["nope", "", None, True, 1, "Reference", "RAW"]


def _choice_cases():
    for key, (allowed, classes) in _CHOICES.items():
        for cls in classes:
            for bad in _BAD_CHOICES:
                yield pytest.param(cls, key, bad, allowed, id=f"{cls.__name__}-{key}={bad!r}")


@pytest.mark.parametrize(("cls", "key", "bad", "allowed"), list(_choice_cases()))
def test_bad_choice_is_refused_naming_its_key(cls, key, bad, allowed):
    with pytest.raises(ConfigError) as error:
        cls(**{key: bad})
    assert error.value.key == f"generator.{key}"
    assert allowed in error.value.allowed


@pytest.mark.parametrize("bad", ["maybe", "true", 1, 0, None])
def test_bad_gate_is_refused_naming_its_key(bad):
    with pytest.raises(ConfigError) as error:
        ClaproarGenerator(gate_on_validity=bad)
    assert error.value.key == "generator.gate_on_validity"
    assert error.value.allowed == "true or false"


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (
            ["generator=greedy", "generator.greedy.budget=nope"],
            "generator.greedy.budget",
            "binding",
        ),
        (
            ["generator=revise", "generator.revise.latent_decode=clamped"],
            "generator.revise.latent_decode",
            "projected",
        ),
        (
            ["generator.generic.categorical_gradient=identity"],
            "generator.generic.categorical_gradient",
            "straight_through",
        ),
        (
            ["generator=claproar", "generator.claproar.gate_on_validity=maybe"],
            "generator.claproar.gate_on_validity",
            "true or false",
        ),
    ],
)
def test_bad_switch_through_the_entry_point(overrides, key, allowed, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from recourse_sim.__main__ import _CONFIG_DIR, execute

    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=smoke", "progress=false", *overrides])
    status = execute(cfg, output_dir=tmp_path / "run")
    message = capsys.readouterr().err
    assert status == 2, message
    assert key in message and allowed in message
    assert "Traceback" not in message


def test_immutable_code_is_what_the_latent_test_relies_on():
    _, fitted = _latent_data()
    assert fitted.mutability.tolist() == [IMMUTABLE, MUTABLE_BOTH, MUTABLE_BOTH, MUTABLE_BOTH]

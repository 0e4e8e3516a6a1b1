"""Contract tests of every generator in configs/generator over every model kind."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs
from hydra.utils import instantiate
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
    GravitationalGenerator,
    GreedyGenerator,
    GrowingSpheresGenerator,
    ProbeGenerator,
    ReviseGenerator,
    SearchProblem,
    WachterGenerator,
)
from recourse_sim.generators.base import check_pairs
from recourse_sim.models import MLP, DeepEnsemble, LogisticRegression, SklearnModel
from recourse_sim.models.torch_module import TorchModule

#: Every generator that searches: the contract tests' subjects. Not the no-recourse control
#: (``none``: nobody moves, tested in test_control.py) nor the ``wachter`` stub that only names
#: its replacements (tested in test_bad_inputs.py).
GENERATOR_CONFIGS = sorted(
    path
    for path in (Path(__file__).parents[1] / "recourse_sim" / "configs" / "generator").glob(
        "*.yaml"
    )
    if path.stem not in ("none", "wachter")
)
MODELS = {
    "logistic": LogisticRegression(pretrain={"epochs": 100}),
    "mlp": MLP(hidden_sizes=(16,), pretrain={"epochs": 100}),
    "deep_ensemble": DeepEnsemble(n_members=3, hidden_sizes=(16,), pretrain={"epochs": 100}),
    # A module with an activation the fast path lacks: trained by the general (autograd) path.
    "torch_module": TorchModule(
        module={
            "_target_": "recourse_sim.models.modules.mlp",
            "hidden_sizes": [16],
            "activation": "silu",
        },
        pretrain={"epochs": 100},
    ),
    # A model without gradients: only the gradient-free generators search on it (other
    # scikit-learn models: tests/test_gradient_free.py, tests/test_sklearn_model.py).
    "sklearn_gbdt": SklearnModel(
        {
            "_target_": "sklearn.ensemble.GradientBoostingClassifier",
            "n_estimators": 20,
            "max_depth": 2,
        }
    ),
}


#: Pairs a refusal would be a bug in.
MUST_WORK = {("n_feature", "logistic"), ("feature_tweak", "sklearn_gbdt")}


def load_generator(path: Path, **overrides):
    """The generator of one YAML option; ``overrides`` of keys it does not declare are left out
    (``max_iter`` means nothing to the closed-form ``n_feature``)."""
    (node,) = OmegaConf.load(path).values()
    return instantiate(node, **{k: v for k, v in overrides.items() if k in node})


def refuses(generator, model) -> bool:
    """Whether ``generator`` refuses ``model`` (``n_feature`` takes linear models only,
    gradient generators models with gradients)."""
    return not generator.works_with(getattr(model, "spec", model))


def skip_if_refused(generator, model) -> None:
    if refuses(generator, model):
        pytest.skip("the generator refuses this model (test_valid_where_reachable checks how)")


_TRAINED: dict = {}


def trained(model_name: str, data: Dataset, n_systems: int = 1):
    key = (model_name, data.name, data.n_samples, data.n_features)
    if key not in _TRAINED:
        spec = MODELS[model_name]
        model = spec.initialise(data.n_features, torch.Generator().manual_seed(0))
        X, y = torch.tensor(data.X)[None], torch.tensor(data.y)[None]
        model.fit(X, y, spec.pretrain, torch.Generator().manual_seed(1))
        _TRAINED[key] = model
    return _TRAINED[key].replicate(n_systems)


def problem(data: Dataset, model, rows, n_systems=1, K=5, round_key=1, system_keys=None):
    rows = torch.as_tensor(rows)
    X = torch.tensor(data.X)
    return SearchProblem(
        factuals=X[rows].unsqueeze(0).repeat(n_systems, 1, 1),
        individual_ids=rows.unsqueeze(0).repeat(n_systems, 1),
        system_keys=torch.arange(n_systems) if system_keys is None else system_keys,
        model=model,
        space=FeatureSpace.from_data(data),
        population_X=X.unsqueeze(0).repeat(n_systems, 1, 1),
        population_y=torch.tensor(data.y).unsqueeze(0).repeat(n_systems, 1),
        n_counterfactuals=K,
        round_key=round_key,
    )


@pytest.fixture(scope="module")
def data():
    return blobs(n_per_class=60)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
class TestContract:
    def test_valid_where_reachable(self, config, model_name, data):
        # A generous step budget makes every threshold reachable on well separated blobs.
        generator = load_generator(config, max_iter=1000)
        model = trained(model_name, data)
        negatives = np.flatnonzero(data.y == 0)[:20]
        if refuses(generator, model):
            # Refused before any work, with a message naming the generator; a generator that
            # refuses a model itself (n_feature: linear models only) refuses its search too.
            with pytest.raises(ConfigError, match=r"<generator(\.\w+)?=") as refusal:
                check_pairs({model_name: model.spec}, {config.stem: generator})
            assert config.stem in str(refusal.value)
            if generator.needs_gradients and not model.spec.differentiable:
                assert "Generators that work with it" in str(refusal.value)
            else:
                with pytest.raises(ConfigError, match=r"<generator\.\w+="):
                    generator.search(problem(data, model, negatives))
            assert (config.stem, model_name) not in MUST_WORK
            assert config.stem not in ("growing_spheres", "nice")  # model-agnostic
            return
        result = generator.search(problem(data, model, negatives))
        if not generator.targeted:  # CLUE seeks certainty, not validity (tested below)
            assert torch.isfinite(result.counterfactuals).all()
            return
        threshold = generator.decision_threshold or 0.5
        valid = (result.probabilities >= threshold).all(-1).double().mean().item()
        assert valid >= 0.9
        if generator.decision_threshold is not None:
            # Without a threshold the search runs until its steps vanish, which non-smooth
            # distance penalties rarely allow: only validity is promised then.
            assert result.converged.double().mean().item() >= 0.9
        assert (result.n_iterations > 0).all()

    def test_immutable_and_bounded_features_respected(self, config, model_name, data):
        # A latent-space search decodes to the raw decoder output by default (the reference's
        # behaviour, which ignores mutability and bounds): promised only with projected decoding.
        (node,) = OmegaConf.load(config).values()
        projected = {"latent_decode": "projected"} if node.get("latent_space") else {}
        generator = load_generator(config, **projected)
        constrained = replace(
            data,
            mutability=("none", "both"),
            lower=np.array([-np.inf, 0.2]),
            upper=np.array([np.inf, np.inf]),
            name="constrained",
        )
        model = trained(model_name, data)
        skip_if_refused(generator, model)
        negatives = np.flatnonzero(data.y == 0)[:15]
        result = generator.search(problem(constrained, model, negatives))
        cf = result.counterfactuals[0]
        factual = torch.tensor(data.X[negatives])
        assert torch.equal(cf[..., 0], factual[:, None, 0].expand(-1, cf.shape[1]))
        assert (cf[..., 1] >= 0.2).all()

    def test_already_positive_individual_untouched(self, config, model_name, data):
        generator = load_generator(config)
        model = trained(model_name, data)
        skip_if_refused(generator, model)
        positives = np.flatnonzero(data.y == 1)[:5]
        result = generator.search(problem(data, model, positives))
        factual = torch.tensor(data.X[positives])[None, :, None, :].expand_as(
            result.counterfactuals
        )
        assert torch.equal(result.counterfactuals, factual)
        assert (result.n_iterations == 0).all() and result.converged.all()

    def test_same_seed_same_result(self, config, model_name, data):
        model = trained(model_name, data)
        skip_if_refused(load_generator(config), model)
        rows = np.flatnonzero(data.y == 0)[:8]
        first = load_generator(config).search(problem(data, model, rows))
        second = load_generator(config).search(problem(data, model, rows))
        assert torch.equal(first.counterfactuals, second.counterfactuals)
        other = load_generator(config).search(problem(data, model, rows, round_key=2))
        # Keyed draws change with the round; a deterministic method's answer does not.
        same = torch.equal(first.counterfactuals, other.counterfactuals)
        assert same == load_generator(config).deterministic

    def test_result_independent_of_batch_company(self, config, model_name, data):
        model = trained(model_name, data)
        skip_if_refused(load_generator(config), model)
        rows = np.flatnonzero(data.y == 0)[:12]
        together = load_generator(config).search(problem(data, model, rows))
        alone = load_generator(config).search(problem(data, model, rows[5:6]))
        torch.testing.assert_close(together.counterfactuals[0, 5], alone.counterfactuals[0, 0])
        assert together.n_iterations[0, 5] == alone.n_iterations[0, 0]


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
def test_batched_systems_equal_separate_searches(config, data):
    rows = np.flatnonzero(data.y == 0)[:6]
    generator = load_generator(config)
    model_name = next(
        m for m in ("mlp", "logistic", "sklearn_gbdt") if not refuses(generator, MODELS[m])
    )
    model = trained(model_name, data, n_systems=3)
    # Make the three systems differ.
    if hasattr(model, "nets"):
        with torch.no_grad():
            noise = torch.randn(model.nets.flat.shape, generator=torch.Generator().manual_seed(3))
            model.nets.flat.add_(noise * 0.05)
    else:  # estimators: fit each system on its own subsample
        draw = np.random.default_rng(3)
        subsets = [draw.permutation(data.n_samples)[:90] for _ in range(3)]
        X = torch.tensor(np.stack([data.X[rows_s] for rows_s in subsets]))
        y = torch.tensor(np.stack([data.y[rows_s] for rows_s in subsets]))
        model.fit(X, y)
    keys = torch.tensor([11, 22, 33])
    batched = load_generator(config).search(problem(data, model, rows, 3, system_keys=keys))
    for s in range(3):
        single = load_generator(config).search(
            problem(data, model.select([s]), rows, 1, system_keys=keys[s : s + 1])
        )
        # float32 model arithmetic may round differently for 3 stacked systems than for 1.
        torch.testing.assert_close(
            batched.counterfactuals[s], single.counterfactuals[0], rtol=1e-5, atol=1e-5
        )


def test_categorical_groups_are_projected_to_one_hot():
    rng = np.random.default_rng(0)
    n = 120
    level = rng.integers(0, 3, n)
    onehot = np.eye(3)[level]
    x0 = rng.normal(size=n)
    y = ((x0 + (level == 2) * 1.5) > 0.5).astype(int)
    data = Dataset(
        np.column_stack([x0, onehot]),
        y,
        ("x0", "c_0", "c_1", "c_2"),
        categorical_groups=((1, 2, 3),),
        name="categorical",
    )
    spec = LogisticRegression(pretrain={"epochs": 30})
    model = spec.initialise(4, torch.Generator().manual_seed(0))
    model.fit(
        torch.tensor(data.X)[None], torch.tensor(data.y)[None], spec.pretrain, torch.Generator()
    )
    negatives = np.flatnonzero(model.proba(data.X)[0].numpy() < 0.5)[:10]
    result = GenericGenerator().search(problem(data, model, negatives))
    group = result.counterfactuals[..., 1:]
    assert torch.equal(group.sum(-1), torch.ones_like(group.sum(-1)))
    assert set(torch.unique(group).tolist()) <= {0.0, 1.0}


def test_penalties_match_hand_computed_values():
    factual = torch.tensor([[[[0.0, 0.0]]]], dtype=torch.float64)  # (S=1, B=1, 1, d=2)
    cfs = torch.tensor([[[[3.0, 4.0], [0.0, 1.0]]]], dtype=torch.float64)  # K=2
    generic = GenericGenerator(cost_weight=0.1)
    # Frobenius norm over both counterfactuals: sqrt(9 + 16 + 0 + 1).
    assert generic.penalty(cfs, factual, None, None).item() == pytest.approx(0.1 * 26**0.5)
    population = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.0]]])
    wachter = WachterGenerator(cost_weight=0.1)
    weights = wachter.setup(SimpleProblem(population))
    # MADs: feature 0 -> median 2, |dev| = 2,1,0,1,2 -> 1; feature 1 -> 2.
    # Mean over K of (|3|/1 + |4|/2) and (0/1 + 1/2) = (5 + 0.5) / 2.
    assert wachter.penalty(cfs, factual, None, weights).item() == pytest.approx(0.1 * 2.75)


class SimpleProblem:
    def __init__(self, population_X):
        self.population_X = population_X


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"decision_threshold": 1.5}, "generator.decision_threshold"),
        ({"learning_rate": 0}, "generator.learning_rate"),
        ({"max_iter": 0}, "generator.max_iter"),
        ({"cost_weight": -1}, "generator.cost_weight"),
    ],
)
def test_bad_generator_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        GenericGenerator(**kwargs)


# --- what makes each generator itself --------------------------------------------------------


def _negatives(data, n=15):
    return np.flatnonzero(data.y == 0)[:n]


def test_greedy_changes_one_feature_per_step():
    data = blobs(n_per_class=60, d=4)
    model = trained("logistic", data)
    rows = _negatives(data, 10)
    factual = torch.tensor(data.X[rows])[None, :, None, :]
    for steps in (1, 2, 3):
        generator = GreedyGenerator(max_iter=steps, init_noise=0.0)
        result = generator.search(problem(data, model, rows))
        changed = (result.counterfactuals != factual).sum(-1)
        assert (changed <= steps).all()
        assert (changed >= 1).all()  # nobody is positive yet, so every CF moved
    # One step moves the chosen feature by exactly step_size in z-score units.
    result = GreedyGenerator(max_iter=1, init_noise=0.0).search(problem(data, model, rows))
    scale = FeatureSpace.from_data(data).scale
    moved = ((result.counterfactuals - factual) / scale).abs()
    assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 0.1))


def test_dice_counterfactuals_more_diverse_than_independent_generic_ones(data):
    model = trained("mlp", data)
    rows = _negatives(data)

    def spread(result):
        cf = result.counterfactuals
        gaps = (cf.unsqueeze(-2) - cf.unsqueeze(-3)).pow(2).sum(-1).sqrt()
        return gaps.mean().item()

    generic = spread(GenericGenerator().search(problem(data, model, rows)))
    spreads = [
        spread(DiceGenerator(diversity_weight=w).search(problem(data, model, rows)))
        for w in (1.0, 3.0, 10.0)
    ]
    # The study's weight (1.0) already spreads them; a larger weight spreads them more.
    assert generic < spreads[0] < spreads[1] < spreads[2]
    assert spreads[2] > 3 * generic


@pytest.mark.parametrize("mitigation", [ClaproarGenerator, GravitationalGenerator])
def test_mitigations_land_closer_to_target_class_than_generic(mitigation, data):
    model = trained("mlp", data)
    rows = _negatives(data)
    positives = torch.tensor(data.X[data.y == 1])

    def distance_to_positives(result):
        cf = result.counterfactuals.reshape(-1, data.n_features)
        return torch.cdist(cf, positives).min(-1).values.mean().item()

    generic = GenericGenerator(max_iter=100).search(problem(data, model, rows))
    mitigated = mitigation(max_iter=100).search(problem(data, model, rows))
    assert distance_to_positives(mitigated) < 0.8 * distance_to_positives(generic)


def test_ecco_reaches_lower_energy_than_generic(data):
    model = trained("mlp", data)
    rows = _negatives(data)
    generic = GenericGenerator().search(problem(data, model, rows))
    ecco = EccoGenerator(energy_weight=20.0).search(problem(data, model, rows))
    # Energy = -logit: ECCo's counterfactuals are more confidently in the target class.
    assert ecco.probabilities.mean() > generic.probabilities.mean()
    assert EccoGenerator(max_iter=100).decay(1) == pytest.approx(0.4 * 5**-0.9)


def test_probe_lowers_the_invalidation_rate(data):
    model = trained("mlp", data)
    rows = _negatives(data)
    probe = ProbeGenerator(invalidation_target=0.05)
    results = {
        name: generator.search(problem(data, model, rows))
        for name, generator in (("generic", GenericGenerator()), ("probe", probe))
    }
    rates = {}
    for name, result in results.items():
        x = result.counterfactuals.clone().requires_grad_(True)
        logits = model.logits(x.reshape(1, -1, 2).float()).reshape(x.shape[:-1])
        rates[name] = probe.invalidation_rate(x, logits, create_graph=False).mean().item()
    assert rates["probe"] < rates["generic"]
    assert results["probe"].converged.double().mean() > 0.5
    # Its convergence includes the rate: every converged individual is below the target.
    converged = results["probe"].converged[0]
    x = results["probe"].counterfactuals[0][converged].clone().requires_grad_(True)
    logits = model.logits(x.reshape(1, -1, 2).float()).reshape(x.shape[:-1])
    assert (probe.invalidation_rate(x, logits, create_graph=False) < 0.05 + 1e-6).all()


def _entropy(p):
    p = p.clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def test_clue_moves_uncertain_individuals_to_where_the_model_is_certain():
    data = blobs(n_per_class=80, std=0.45, seed=5)
    model = trained("mlp", data)
    p = model.proba(data.X)[0].double()
    uncertain = torch.argsort((p - 0.5).abs())[:15].numpy()  # the most ambiguous individuals
    # 160 rows give few VAE updates per epoch: train it longer than the default.
    result = ClueGenerator(vae={"epochs": 300}).search(problem(data, model, uncertain))
    assert _entropy(result.probabilities).mean() < 0.5 * _entropy(p[uncertain]).mean()


def test_revise_stays_closer_to_the_data_manifold_than_generic():
    # Five features on a one-dimensional manifold (a line plus small noise), classes along it.
    rng = np.random.default_rng(0)
    n = 200
    t = np.r_[rng.normal(-1, 0.3, n // 2), rng.normal(1, 0.3, n // 2)]
    X = t[:, None] @ rng.normal(size=(1, 5)) + 0.02 * rng.normal(size=(n, 5))
    y = (np.arange(n) >= n // 2).astype(int)
    data = Dataset(X, y, tuple(f"x{i}" for i in range(5)), name="line")
    model = trained("mlp", data)
    rows = _negatives(data)
    positives = torch.tensor(data.X[data.y == 1])

    def nearest_positive(result):
        cf = result.counterfactuals.reshape(-1, data.n_features)
        return torch.cdist(cf, positives).min(-1).values.mean().item()

    generic = GenericGenerator().search(problem(data, model, rows))
    revise = ReviseGenerator(vae={"latent_dim": 1, "epochs": 200}).search(
        problem(data, model, rows)
    )
    assert (revise.probabilities >= 0.5).all(-1).double().mean() >= 0.9
    assert nearest_positive(revise) < 0.5 * nearest_positive(generic)


def test_latent_search_keeps_its_vae_between_rounds_and_retrains_it():
    data = blobs(n_per_class=40)
    model = trained("logistic", data)
    rows = _negatives(data, 5)
    generator = ReviseGenerator(vae={"epochs": 3, "retrain_epochs": 1})
    generator.search(problem(data, model, rows, round_key=1))
    (first,) = generator.state_dict()["systems"].values()
    snapshot = [t.clone() for t in first["decoder"]]
    generator.search(problem(data, model, rows, round_key=1))  # same round: no training
    assert all(torch.equal(a, b) for a, b in zip(first["decoder"], snapshot, strict=True))
    generator.search(problem(data, model, rows, round_key=2))  # next round: retrained
    (second,) = generator.state_dict()["systems"].values()
    assert second["trained_for_round"] == 2
    assert not all(torch.equal(a, b) for a, b in zip(second["decoder"], snapshot, strict=True))


def test_any_gradient_generator_can_search_in_latent_space():
    data = blobs(n_per_class=40)
    model = trained("mlp", data)
    rows = _negatives(data, 8)
    generator = GravitationalGenerator(latent_space=True, vae={"epochs": 20})
    result = generator.search(problem(data, model, rows))
    assert generator.state_dict()["systems"]
    assert (result.probabilities >= 0.5).all(-1).double().mean() >= 0.5


def test_growing_spheres_returns_the_nearest_enemy_within_one_layer():
    data = blobs(n_per_class=60)
    model = trained("logistic", data)
    rows = _negatives(data, 10)
    generator = GrowingSpheresGenerator(n_samples=400, step=0.05)
    result = generator.search(problem(data, model, rows))
    assert result.converged.all()
    assert (result.probabilities >= 0.5).all()
    # For a linear model the nearest enemy lies on the boundary, |logit(x)| / ‖w·scale‖ away
    # (z-score units); the answer lies beyond it but within one layer (feature selection only
    # shortens it).
    scale = FeatureSpace.from_data(data).scale
    weight = model.nets.weights[0][0, :, 0].double()
    logit = model.logits(torch.tensor(data.X[rows])[None])[0].double()
    boundary = logit.abs() / (weight * scale).norm()
    factual = torch.tensor(data.X[rows])[:, None, :]
    distance = ((result.counterfactuals[0] - factual) / scale).norm(dim=-1)
    assert (distance >= boundary[:, None] - 1e-6).all()
    assert (distance <= boundary[:, None] + 0.05 + 1e-6).all()


def test_growing_spheres_feature_selection_makes_changes_sparse():
    data = blobs(n_per_class=60, d=4)
    model = trained("logistic", data)
    rows = _negatives(data, 10)
    result = GrowingSpheresGenerator().search(problem(data, model, rows))
    changed = (result.counterfactuals[0] != torch.tensor(data.X[rows])[:, None, :]).sum(-1)
    # Sampled points move every feature; after selection most keep some features unchanged.
    assert changed.double().mean() < 4


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
def test_search_creates_its_tensors_on_the_problems_device(config, data):
    # With torch's default device set to "meta", a tensor created without device= lands there
    # and clashes with the problem's CPU tensors: a CPU-only check of what runs on a GPU.
    # Dropout in the search and ensemble members take the keyed-mask paths as well; a
    # generator for linear models gets an ensemble of logistic members.
    # A generator for tree models only gets gradient-boosted trees.
    spec = DeepEnsemble(n_members=2, hidden_sizes=(8,), dropout=0.2, pretrain={"epochs": 5})
    if refuses(load_generator(config), spec):
        spec = DeepEnsemble(n_members=2, hidden_sizes=(), pretrain={"epochs": 5})
    if refuses(load_generator(config), spec):
        spec = MODELS["sklearn_gbdt"]
    model = spec.initialise(data.n_features, torch.Generator().manual_seed(0))
    X, y = torch.tensor(data.X)[None], torch.tensor(data.y)[None]
    model.fit(X, y, spec.pretrain, torch.Generator().manual_seed(1))
    model = model.replicate(2)
    rows = np.flatnonzero(data.y == 0)[:6]
    search = problem(data, model, rows, n_systems=2, K=3)
    search.nascent_radius = 0.3  # counterfactual training's adversarial examples, tracked too
    (node,) = OmegaConf.load(config).values()
    vae = {"vae": {"epochs": 2, "retrain_epochs": 1}} if "vae" in node else {}
    overrides = {"max_iter": 15, **vae}
    plain = load_generator(config, **overrides).search(search)
    generator = load_generator(config, **overrides)
    with torch.device("meta"):
        strict = generator.search(search)
    for field in dataclasses.fields(plain):
        expected, got = getattr(plain, field.name), getattr(strict, field.name)
        if expected is None:  # nascent counterfactuals: only gradient searches track them
            assert got is None, field.name
            continue
        assert got.device.type == "cpu", field.name
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True, msg=field.name)


# --- Wachter on zero-heavy continuous columns ------------------------------------------------

# tests/fixtures/zero_heavy.csv: 300 rows made once with
#   rng = np.random.default_rng(20240509); n = 300
#   income = rng.normal(50.0, 15.0, n).round(1); age = rng.integers(20, 70, n)
#   debt_ratio = rng.uniform(0.0, 1.0, n).round(3)
#   capital_gain = np.where(rng.random(n) < 0.7, 0, rng.lognormal(8.0, 1.0, n).round(0))
#   score = 0.08 (income - 50) - 2.5 (debt_ratio - 0.5) + 0.02 (age - 45)
#           + 0.8 (capital_gain > 0) + rng.normal(0, 0.7, n)
#   approved = score > 0
# capital_gain is 0 in 74 % of the rows, so its MAD is 0 although it is far from constant.
ZERO_HEAVY = Path(__file__).parent / "fixtures" / "zero_heavy.csv"
GAIN = 3  # the column index of capital_gain


def zero_heavy(bounds: str) -> Dataset:
    from recourse_sim.data import load_csv

    return load_csv(ZERO_HEAVY, "approved", bounds=bounds, rng=np.random.default_rng(0))


def wachter_on_zero_heavy(generator, bounds: str, n: int = 30):
    """(data, factuals, counterfactuals) of ``n`` individuals the logistic model rejects."""
    data = zero_heavy(bounds)
    model = trained("logistic", data)
    rows = np.flatnonzero(model.proba(data.X)[0].numpy() < 0.5)[:n]
    result = generator.search(problem(data, model, rows))
    assert (result.probabilities >= 0.5).double().mean() >= 0.9
    return data, torch.tensor(data.X[rows])[:, None, :], result.counterfactuals[0]


def l2_cost(factuals, counterfactuals) -> float:
    return (counterfactuals - factuals).pow(2).sum(-1).sqrt().mean().item()


def test_zero_heavy_fixture():
    import pandas as pd

    frame = pd.read_csv(ZERO_HEAVY)
    assert list(frame.columns) == ["income", "age", "debt_ratio", "capital_gain", "approved"]
    assert len(frame) == 300 and set(frame.approved) == {0, 1}
    assert (frame.capital_gain == 0).mean() >= 0.6 and frame.capital_gain.nunique() > 50


def test_wachter_floor_rule_throws_zero_heavy_columns_out_of_the_data():
    # The observed failure: a zero MAD gives capital_gain the weight 1e5, whose L1 subgradient
    # steps (0.01 * 0.1 * 1e5 = 100 z-units) oscillate around the factual.
    data, factuals, cfs = wachter_on_zero_heavy(WachterGenerator(zero_mad="floor"), "none")
    moved = (cfs - factuals).abs()[..., GAIN]
    assert moved.max() > 50
    assert (cfs[..., GAIN] > data.X[:, GAIN].max() + 10).any()
    generic = l2_cost(*wachter_on_zero_heavy(GenericGenerator(), "none")[1:])
    assert l2_cost(factuals, cfs) > 3 * generic


@pytest.mark.parametrize("zero_mad", ["floor", "mean_ad"])
def test_wachter_counterfactuals_stay_within_observed_bounds(zero_mad):
    data, _, cfs = wachter_on_zero_heavy(WachterGenerator(zero_mad=zero_mad), "observed")
    lower, upper = torch.tensor(data.X.min(0)), torch.tensor(data.X.max(0))
    np.testing.assert_array_equal(data.lower, data.X.min(0))
    assert ((cfs >= lower) & (cfs <= upper)).all()


def test_wachter_mean_ad_cost_is_comparable_to_generic():
    _, factuals, cfs = wachter_on_zero_heavy(WachterGenerator(), "none")
    _, generic_factuals, generic_cfs = wachter_on_zero_heavy(GenericGenerator(), "none")
    torch.testing.assert_close(factuals, generic_factuals)
    assert l2_cost(factuals, cfs) <= 3 * l2_cost(generic_factuals, generic_cfs)
    assert (cfs - factuals).abs()[..., GAIN].max() < 5


def test_wachter_zero_mad_weights():
    rng = np.random.default_rng(0)
    n = 101
    normal = rng.normal(size=n)
    zero_heavy_column = np.where(np.arange(n) < 70, 0.0, rng.exponential(2.0, n))
    constant = np.full(n, 3.0)
    binary = (np.arange(n) < 20).astype(float)
    onehot = np.eye(2)[(np.arange(n) < 10).astype(int)]
    X = np.column_stack([normal, zero_heavy_column, constant, binary, onehot])
    data = Dataset(
        X,
        np.arange(n) % 2,
        ("normal", "zero_heavy", "constant", "binary", "c_0", "c_1"),
        binary_features=(3,),
        categorical_groups=((4, 5),),
    )
    base = problem(data, None, [0])
    floor = WachterGenerator(zero_mad="floor").setup(base)[0]
    mean_ad = WachterGenerator().setup(base)[0]
    mad = np.median(np.abs(normal - np.median(normal)))
    assert floor[0].item() == pytest.approx(1 / mad) and mean_ad[0] == floor[0]
    torch.testing.assert_close(floor[1:], torch.full((5,), 1e5, dtype=torch.float64))
    deviation = np.abs(zero_heavy_column - np.median(zero_heavy_column)).mean()
    assert mean_ad[1].item() == pytest.approx(1 / (deviation * 1.253314 / 1.4826))
    # Constant, binary and one-hot columns keep the reference's 1/mad_floor.
    torch.testing.assert_close(mean_ad[2:], floor[2:])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mad_floor": 0}, "generator.mad_floor"),
        ({"mad_floor": float("inf")}, "generator.mad_floor"),
        ({"mad_floor": float("nan")}, "generator.mad_floor"),
        ({"mad_floor": True}, "generator.mad_floor"),
        ({"mad_floor": "1e-5"}, "generator.mad_floor"),
        ({"zero_mad": "median"}, "generator.zero_mad"),
        ({"zero_mad": None}, "generator.zero_mad"),
    ],
)
def test_bad_wachter_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        WachterGenerator(**kwargs)


def test_wachter_config_defaults_to_mean_ad():
    generator = load_generator(
        Path(__file__).parents[1] / "recourse_sim/configs/generator/wachter_mad.yaml"
    )
    assert generator.zero_mad == "mean_ad" and generator.mad_floor == 1e-5


# --- strict settings of every generator (issue 9, hardening) --------------------------------
# Each YAML option is built directly (no hydra, no search) with one bad value at a time; the
# error must be a ConfigError that names the key as the code writes it (``generator.KEY``; the
# entry point completes it to ``generator.<option>.KEY``).

_NAN, _INF = float("nan"), float("inf")


def _names_key(key: str) -> str:
    """A pattern for the start of a ConfigError message about ``key``."""
    return "<" + key.replace(".", r"\.") + "="


_BAD_VALUES = {
    "non_negative": [_NAN, _INF, "abc", True, -1, None],
    "positive": [_NAN, -_INF, "abc", True, 0, -0.5],
    "count": [2.5, 2.0, True, "abc", _NAN, 0],
    "count_or_null": [2.5, True, "abc", 0],
    "count_or_zero": [2.5, 1.0, True, -1, None],
    "probability": [_NAN, _INF, "abc", True, 0, 1.5, None],
    "probability_or_null": [_NAN, "abc", False, 1, 1.5],
    "flag": ["maybe", "true", 2, 1, None],
    "choice": ["nope", "", None, True, 1],
}
# The range of every numeric or boolean constructor key of the generators.
_GENERATOR_KEYS = {
    "cost_weight": "non_negative",
    "learning_rate": "positive",
    "max_iter": "count",
    "decision_threshold": "probability_or_null",
    "step_tolerance": "positive",
    "init_noise": "non_negative",
    "latent_space": "flag",
    "classifier_loss_weight": "non_negative",
    "diversity_weight": "non_negative",
    "jitter": "non_negative",
    "energy_weight": "non_negative",
    "energy_regularisation": "non_negative",
    "gravity_weight": "non_negative",
    "n_neighbours": "count_or_null",
    "step_size": "positive",
    "max_changes": "count",
    "invalidation_weight": "non_negative",
    "invalidation_target": "probability",
    "noise_variance": "positive",
    "n_samples": "count",
    "step": "positive",
    "categorical_gradient": "choice",
    "latent_decode": "choice",
    "budget": "choice",
    "gate_on_validity": "flag",
    "n_features": "count",
    "threshold": "probability",
    "margin": "non_negative",
    "epsilon": "positive",
    "chunk_size": "count",
    "sparsity": "flag",
    "justified": "flag",
}
# No null threshold for the gradient-free searches: they always stop at γ.
_GRADIENT_FREE_KEYS = {"decision_threshold": "probability"}
_VAE_KEYS = {
    "latent_dim": "count",
    "hidden_dim": "count",
    "batch_size": "count",
    "epochs": "count_or_zero",
    "retrain_epochs": "count_or_zero",
    "learning_rate": "positive",
    "decoder_l2": "non_negative",
}
_OWN_KEYS = {"wachter_mad": {"mad_floor", "zero_mad"}}  # tested with Wachter's own tests


def _yaml_options(path: Path) -> tuple[type, dict]:
    """The class and constructor arguments of one configs/generator option."""
    from hydra.utils import get_class

    (node,) = OmegaConf.to_container(OmegaConf.load(path)).values()
    return get_class(node.pop("_target_")), node


def _is_gradient(cls: type) -> bool:
    from recourse_sim.generators import GradientGenerator

    return issubclass(cls, GradientGenerator)


def _generator_cases():
    cases = []
    for path in GENERATOR_CONFIGS:
        cls, options = _yaml_options(path)
        keys = [k for k in options if k != "vae" and k not in _OWN_KEYS.get(path.stem, ())]
        if _is_gradient(cls) and "latent_space" not in keys:
            keys.append("latent_space")
        for key in keys:
            kinds = _GRADIENT_FREE_KEYS if not cls.needs_gradients else {}
            kind = kinds.get(key, _GENERATOR_KEYS.get(key))
            assert kind is not None, f"{path.stem}: no stated range for {key} in this test"
            cases += [
                pytest.param(path, key, bad, id=f"{path.stem}-{key}={bad!r}")
                for bad in _BAD_VALUES[kind]
            ]
    for stem in ("generic", "revise"):  # VAE settings: declared (revise) or added (generic)
        path = GENERATOR_CONFIGS[[p.stem for p in GENERATOR_CONFIGS].index(stem)]
        for key, kind in _VAE_KEYS.items():
            cases += [
                pytest.param(path, f"vae.{key}", bad, id=f"{stem}-vae.{key}={bad!r}")
                for bad in _BAD_VALUES[kind]
            ]
    return cases


@pytest.mark.parametrize(("config", "key", "bad"), _generator_cases())
def test_every_generator_setting_is_strict_and_names_its_key(config, key, bad):
    cls, options = _yaml_options(config)
    if key.startswith("vae."):
        options["vae"] = {**options.get("vae", {}), key[4:]: bad}
    else:
        options[key] = bad
    with pytest.raises(ConfigError, match=_names_key(f"generator.{key}")) as error:
        cls(**options)
    assert error.value.allowed  # says what is allowed


@pytest.mark.parametrize("bad", ["abc", 3, [1, 2], True])
def test_vae_settings_must_be_a_mapping(bad):
    with pytest.raises(ConfigError, match=_names_key("generator.vae")):
        GenericGenerator(vae=bad)


def test_generator_settings_are_stored_in_their_canonical_types():
    generic = GenericGenerator(cost_weight=0, learning_rate=1, max_iter=np.int64(7), init_noise=0)
    assert generic.cost_weight == 0.0 and type(generic.cost_weight) is float
    assert type(generic.learning_rate) is float and type(generic.max_iter) is int
    assert generic.max_iter == 7 and generic.decision_threshold == 0.5
    assert GenericGenerator(decision_threshold=None).decision_threshold is None
    assert GravitationalGenerator(n_neighbours=None).n_neighbours is None
    vae = GenericGenerator(vae={"learning_rate": 1, "decoder_l2": 0}).vae
    assert type(vae.learning_rate) is float and type(vae.decoder_l2) is float
    assert GenericGenerator(vae={"epochs": 0, "retrain_epochs": 0}).vae.epochs == 0


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
def test_every_gradient_generator_declares_latent_space(config):
    cls, options = _yaml_options(config)
    if not _is_gradient(cls):
        return
    assert isinstance(options["latent_space"], bool)
    assert options["latent_space"] == issubclass(cls, (ReviseGenerator, ClueGenerator))


@pytest.mark.parametrize("config", GENERATOR_CONFIGS, ids=lambda p: p.stem)
def test_every_gradient_generator_searches_in_latent_space(config):
    cls, options = _yaml_options(config)
    if not _is_gradient(cls):
        return
    data = blobs(n_per_class=20, d=3)
    model = trained("logistic", data)
    options.update(latent_space=True, max_iter=5, vae={"epochs": 2})
    result = cls(**options).search(problem(data, model, _negatives(data, 3), K=2))
    assert result.counterfactuals.shape == (1, 3, 2, 3)
    assert torch.isfinite(result.counterfactuals).all()

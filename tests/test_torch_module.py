"""The ``torch_module`` model kind: a user's ``torch.nn.Module`` trained by the general path."""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import SMOKE, blobs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recourse_sim.errors import ConfigError
from recourse_sim.generators import FeatureSpace, GenericGenerator, SearchProblem
from recourse_sim.models import MLP, TrainingSchedule, torch_module
from recourse_sim.models.activations import FAST_ACTIVATIONS
from recourse_sim.models.modules import mlp
from recourse_sim.models.torch_module import StackedModules, TorchModule
from recourse_sim.run import build

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "recourse_sim" / "configs" / "model" / "torch_module.yaml"


def spec_of(
    target: str = "recourse_sim.models.modules.mlp",
    n_members: int = 1,
    vectorise: str = "auto",
    pretrain: dict | None = None,
    **arguments,
) -> TorchModule:
    """A TorchModule of the factory ``target`` with keyword ``arguments``."""
    node = {"_target_": target, **arguments}
    return TorchModule(node, n_members=n_members, pretrain=pretrain, vectorise=vectorise)


def rows(n_systems: int = 3, n: int = 12, d: int = 2, seed: int = 3):
    """Different rows per system, labels of a linear rule."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_systems, n, d, generator=g, dtype=torch.float64)
    return X, (X[..., 0] + 0.3 * X[..., 1] > 0).to(torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same_params(a: StackedModules, b: StackedModules, atol: float = 0.0) -> None:
    assert a.params.keys() == b.params.keys()
    for name in a.params:
        torch.testing.assert_close(a.params[name], b.params[name], atol=atol, rtol=0)
    for name in a.buffers:
        torch.testing.assert_close(a.buffers[name], b.buffers[name], atol=atol, rtol=0)


# --- the general path equals the fast path ---------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("activation", FAST_ACTIVATIONS)
def test_general_path_equals_fast_path(activation, batch_size):
    d = 2
    builtin = MLP(hidden_sizes=(8,), activation=activation).initialise(d, gen(0)).replicate(3)
    weights, biases = builtin.nets.weights, builtin.nets.biases
    # The built-in stack keeps weights as (in, out) per network; nn.Linear as (out, in).
    initial = {
        "0.weight": weights[0].transpose(1, 2).clone(),
        "0.bias": biases[0].clone(),
        "2.weight": weights[1].transpose(1, 2).clone(),
        "2.bias": biases[1].clone(),
    }
    state = {"params": initial, "buffers": {}}
    spec = spec_of(hidden_sizes=[8], activation=activation)
    general = spec.restore(d, 3, state)
    X, y = rows()
    pretrain = TrainingSchedule(epochs=3, batch_size=batch_size, learning_rate=1e-2)
    retrain = TrainingSchedule(epochs=2, batch_size=batch_size, learning_rate=1e-2)
    for schedule in (pretrain, retrain):  # the second fit starts a fresh Adam state
        builtin.fit(X, y, schedule, gen(1))
        general.fit(X, y, schedule, gen(1))
    assert not torch.equal(general.params["0.weight"], initial["0.weight"])  # it trained
    expected = {  # the built-in weights after the same training
        "0.weight": weights[0].transpose(1, 2),
        "0.bias": biases[0],
        "2.weight": weights[1].transpose(1, 2),
        "2.bias": biases[1],
    }
    for name, tensor in expected.items():
        torch.testing.assert_close(general.params[name], tensor, atol=1e-5, rtol=0)
    torch.testing.assert_close(general.proba(X[0]), builtin.proba(X[0]), atol=1e-5, rtol=0)


# --- vectorised and looped passes agree --------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["recourse_sim.models.modules.mlp", "fixtures.modules.with_batch_norm"]
)
def test_vmap_equals_loop(target):
    X, y = rows()
    schedule = TrainingSchedule(epochs=3, batch_size=4, learning_rate=1e-2)
    models = {}
    for vectorise in ("auto", "never"):
        spec = spec_of(target, n_members=2, vectorise=vectorise)
        model = spec.initialise(2, gen(0)).replicate(3)
        model.fit(X, y, schedule, gen(1))
        models[vectorise] = model
    auto, never = models["auto"], models["never"]
    assert auto.vectorised == {"eval": None, "train": True}
    assert never.vectorised == {"eval": False, "train": False}
    assert_same_params(auto, never, atol=1e-6)
    torch.testing.assert_close(auto.proba(X[0]), never.proba(X[0]), atol=1e-6, rtol=0)
    assert auto.vectorised["eval"] is True
    # Deterministic: the same run twice gives the same weights.
    again = spec_of(target, n_members=2).initialise(2, gen(0)).replicate(3)
    again.fit(X, y, schedule, gen(1))
    assert_same_params(auto, again)


# --- modules the fast path cannot train --------------------------------------------------------


def bce(model: StackedModules, X: torch.Tensor, y: torch.Tensor) -> float:
    p = model.proba(X)[0].double().clamp(1e-7, 1 - 1e-7)
    return float(F.binary_cross_entropy(p, y))


def test_new_layers_train_and_gradient_search_runs():
    data = blobs(n_per_class=30)
    spec = spec_of("fixtures.modules.norm_silu", width=8)
    model = spec.initialise(data.n_features, gen(0))
    X, y = torch.tensor(data.X), torch.tensor(data.y, dtype=torch.float64)
    before = bce(model, X, y)
    model.fit(X[None], y[None], TrainingSchedule(epochs=10, batch_size=1), gen(1))
    after = bce(model, X, y)
    assert after < 0.5 * before
    assert model.vectorised == {"eval": True, "train": True}

    negatives = torch.as_tensor(np.flatnonzero(data.y == 0)[:10])
    problem = SearchProblem(
        factuals=X[negatives].unsqueeze(0),
        individual_ids=negatives.unsqueeze(0),
        system_keys=torch.arange(1),
        model=model,
        space=FeatureSpace.from_data(data),
        population_X=X.unsqueeze(0),
        population_y=y.unsqueeze(0),
        n_counterfactuals=3,
        round_key=1,
    )
    result = GenericGenerator(max_iter=500).search(problem)
    valid = (result.probabilities >= 0.5).all(dim=-1)
    assert valid.float().mean() >= 0.8
    assert result.converged.float().mean() >= 0.8


def test_dropout_trains_reproducibly_on_the_loop(caplog):
    X, y = rows()
    schedule = TrainingSchedule(epochs=3, batch_size=2, learning_rate=1e-2)
    spec = spec_of("fixtures.modules.with_dropout", p=0.5, n_members=2)
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    torch_module._LOGGED.discard(("fixtures.modules.with_dropout", "train"))
    with caplog.at_level(logging.INFO, logger="recourse_sim.models.torch_module"):
        first = spec.initialise(2, gen(0)).replicate(3)
        first.fit(X, y, schedule, gen(1))
    assert "train-mode passes run network by network" in caplog.text
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is untouched
    assert first.vectorised["train"] is False
    second = spec.initialise(2, gen(0)).replicate(3)
    torch.manual_seed(99)  # a different global state changes nothing
    second.fit(X, y, schedule, gen(1))
    assert_same_params(first, second)
    # Another seed draws other dropout masks.
    third = spec.initialise(2, gen(0)).replicate(3)
    third.fit(X, y, schedule, gen(2))
    assert not torch.equal(first.params["0.weight"], third.params["0.weight"])
    # Prediction is in eval mode: no dropout, vectorised, deterministic.
    torch.testing.assert_close(first.proba(X[0]), first.proba(X[0]), atol=0, rtol=0)
    assert first.vectorised["eval"] is True


# --- initialisation, ensembles, gradients -------------------------------------------------------


def test_initialise_keeps_global_rng_and_is_seeded():
    spec = spec_of(hidden_sizes=[4], n_members=3)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = spec.initialise(2, gen(0))
    assert torch.equal(torch.get_rng_state(), state)
    b = spec.initialise(2, gen(0))
    assert_same_params(a, b)
    assert not torch.equal(a.params["0.weight"][0], a.params["0.weight"][1])  # own draws
    c = spec.initialise(2, gen(1))
    assert not torch.equal(a.params["0.weight"], c.params["0.weight"])
    # Each member is the factory's own default initialisation under its seed.
    seeds = torch.randint(0, 2**62, (3,), generator=gen(0)).tolist()
    torch.manual_seed(seeds[1])
    reference = mlp(2, hidden_sizes=[4])
    torch.testing.assert_close(a.params["0.weight"][1], reference[0].weight.detach())


def test_ensemble_mean_and_gradient():
    spec = spec_of(hidden_sizes=[4], n_members=3)
    model = spec.initialise(2, gen(0)).replicate(2)
    X = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    members = model.member_logits(X)
    assert members.shape == (2, 3, 5) and members.dtype == torch.float32
    torch.testing.assert_close(model.logits(X), members.mean(dim=1))
    (grad,) = torch.autograd.grad(model.logits(X).sum(), X)
    assert grad.abs().sum() > 0
    proba = model.proba(X.detach())
    assert proba.dtype == torch.float32 and not proba.requires_grad
    torch.testing.assert_close(proba, torch.sigmoid(members.detach()).mean(dim=1))
    shared = model.proba(X[0].detach().numpy())  # a 2-d X goes to every system
    assert shared.shape == (2, 5)
    np.testing.assert_allclose(model.proba_of(1, X[0].detach()), shared[1].numpy(), atol=1e-7)
    assert len(model.parameters_of(1)) == 3 * 4
    assert model.parameters_of(1)[0].shape == (4, 2)


def test_nothing_to_train_is_a_no_op():
    spec = spec_of(hidden_sizes=[4])
    model = spec.initialise(2, gen(0)).replicate(2)
    before = model.clone()
    X, y = rows(2)
    g = gen(7)
    draw = g.get_state()
    model.fit(X, y, TrainingSchedule(epochs=0), g)
    model.fit(X[:, :0], y[:, :0], TrainingSchedule(epochs=3), g)
    assert_same_params(model, before)
    assert torch.equal(g.get_state(), draw)


# --- copies and serialisation ------------------------------------------------------------------


def test_replicate_select_put_clone():
    spec = spec_of(hidden_sizes=[4], n_members=2)
    single = spec.initialise(2, gen(0))
    with pytest.raises(ValueError, match="single-system"):
        single.replicate(2).replicate(2)
    model = single.replicate(3)
    assert model.n_systems == 3 and model.params["0.weight"].shape[0] == 6
    X, y = rows(3)
    model.fit(X, y, TrainingSchedule(epochs=2, batch_size=4, learning_rate=1e-2), gen(1))
    proba = model.proba(X[0])
    assert not torch.equal(proba[0], proba[1])  # own rows, own weights

    picked = model.select([2, 0])
    torch.testing.assert_close(picked.proba(X[0]), proba[[2, 0]], atol=0, rtol=0)
    picked.params["0.weight"].add_(1.0)  # a copy: the original is untouched
    torch.testing.assert_close(model.proba(X[0]), proba, atol=0, rtol=0)

    model.put([1], model.select([2]))
    torch.testing.assert_close(model.proba(X[0])[1], proba[2], atol=0, rtol=0)
    copy = model.clone()
    copy.params["2.bias"].add_(1.0)
    torch.testing.assert_close(model.proba(X[0])[1], proba[2], atol=0, rtol=0)
    for system in range(3):
        alone = model.select([system]).parameters_of(0)
        for a, b in zip(model.parameters_of(system), alone, strict=True):
            np.testing.assert_array_equal(a, b)


def test_pickle_and_state_round_trips(tmp_path):
    spec = spec_of("fixtures.modules.with_batch_norm", n_members=2)
    model = spec.initialise(2, gen(0)).replicate(2)
    X, y = rows(2)
    model.fit(X, y, TrainingSchedule(epochs=2, batch_size=4), gen(1))
    proba = model.proba(X[0])

    loaded = pickle.loads(pickle.dumps(model))
    assert "template" not in model.__getstate__()
    torch.testing.assert_close(loaded.proba(X[0]), proba, atol=0, rtol=0)
    assert loaded.vectorised == model.vectorised

    state = model.state()
    torch.save(state, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    restored = spec.restore(2, 2, saved)
    torch.testing.assert_close(restored.proba(X[0]), proba, atol=0, rtol=0)
    assert_same_params(restored, model)
    # Both keep training identically.
    schedule = TrainingSchedule(epochs=1, batch_size=4)
    restored.fit(X, y, schedule, gen(2))
    model.fit(X, y, schedule, gen(2))
    assert_same_params(restored, model)
    with pytest.raises(ConfigError, match=r"<model\.module="):
        spec_of("fixtures.modules.with_batch_norm", width=5, n_members=2).restore(2, 2, saved)


# --- bad factories and values ------------------------------------------------------------------


def test_bad_factories():
    with pytest.raises(ConfigError, match=r"<model\.module\._target_='no_such\.module\.make'"):
        TorchModule({"_target_": "no_such.module.make"})
    with pytest.raises(ConfigError, match=r"<model\.module\._target_=.*n_features"):
        TorchModule({"_target_": "fixtures.modules.no_features"})
    with pytest.raises(ConfigError, match=r"<model\.module\.depth="):
        TorchModule({"_target_": "fixtures.modules.norm_silu", "depth": 2})
    with pytest.raises(ConfigError, match=r"<model\.module\.n_features="):
        TorchModule({"_target_": "fixtures.modules.norm_silu", "n_features": 2})
    spec = spec_of("fixtures.modules.not_a_module")
    with pytest.raises(
        ConfigError, match=r"<model\.module='fixtures\.modules\.not_a_m.*got function"
    ):
        spec.initialise(2, gen(0))
    spec = spec_of("fixtures.modules.broken")
    with pytest.raises(
        ConfigError, match=r"<model\.module=.*raised RuntimeError\('out of widgets'"
    ):
        spec.initialise(2, gen(0))
    spec = spec_of("fixtures.modules.two_logits")
    with pytest.raises(ConfigError, match=r"<model\.module=.*\(n, 1\) logits; got shape \(3, 2\)"):
        spec.initialise(2, gen(0))


def test_bad_values():
    with pytest.raises(ConfigError, match=r"<model\.module\.activation='swish'>"):
        spec_of(activation="swish")
    with pytest.raises(ConfigError, match=r"<model\.module\.activation='swish'>"):
        mlp(2, activation="swish")
    with pytest.raises(ConfigError, match=r"<model\.module\.dropout=1\.0>"):
        spec_of(dropout=1.0)
    with pytest.raises(ConfigError, match=r"<model\.n_members=0>"):
        spec_of(n_members=0)
    with pytest.raises(ConfigError, match=r"<model\.vectorise='always'>"):
        spec_of(vectorise="always")
    with pytest.raises(ConfigError, match=r"<model\.pretrain\.epochs=-1>"):
        spec_of(pretrain={"epochs": -1})
    with pytest.raises(ConfigError, match=r"<model\.module="):
        TorchModule({"hidden_sizes": [3]})


def test_mlp_factory_layers():
    net = mlp(3, hidden_sizes=[5, 4], activation="tanh", dropout=0.2)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert net[-1].out_features == 1 and net[0].in_features == 3
    assert [type(layer).__name__ for layer in mlp(2, hidden_sizes=[])] == ["Linear"]


# --- configuration -----------------------------------------------------------------------------


def test_config_option_builds():
    (node,) = OmegaConf.load(CONFIG).values()
    spec = build(node, "model.torch_module")
    assert isinstance(spec, TorchModule)
    assert spec.factory.path == "recourse_sim.models.modules.mlp"
    assert spec.factory.arguments == {}  # the factory's own defaults: 32 ReLU units
    assert spec.pretrain == TrainingSchedule(epochs=100) and spec.retrain == TrainingSchedule()
    assert spec.initialise(2, gen(0)).params["0.weight"].shape == (1, 32, 2)
    node.module.activation = "swish"
    with pytest.raises(ConfigError, match=r"<model\.torch_module\.module\.activation='swish'>"):
        build(node, "model.torch_module")


def test_config_override_with_own_factory():
    overrides = [
        "model=torch_module",
        "model.torch_module.module._target_=fixtures.modules.norm_silu",
        "+model.torch_module.module.width=6",
    ]
    with initialize_config_dir(
        config_dir=str(ROOT / "recourse_sim" / "configs"), version_base=None
    ):
        cfg = compose("config", overrides=overrides)
    spec = build(cfg.model.torch_module, "model.torch_module")
    assert spec.factory.arguments == {"width": 6}
    assert spec.initialise(2, gen(0)).params["body.0.weight"].shape == (1, 6, 2)


def test_cli_with_own_factory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    args = [
        sys.executable,
        "-m",
        "recourse_sim",
        *SMOKE,
        "report=none",
        "processes=2",
        "model=torch_module",
        "model.torch_module.n_members=2",
        "model.torch_module.pretrain.epochs=5",
        "model.torch_module.module._target_=fixtures.modules.with_dropout",
        "+model.torch_module.module.width=4",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(io.StringIO((tmp_path / "metrics.csv").read_text()))
    assert set(metrics.model) == {"torch_module"}
    assert metrics.value.notna().all()

"""Stacked lockstep training equals training each network on its own with torch's Adam."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recourse_sim.errors import ConfigError
from recourse_sim.models import (
    MLP,
    Architecture,
    DeepEnsemble,
    LogisticRegression,
    StackedNetworks,
    TrainingSchedule,
    train_lockstep,
    train_stacks,
)
from recourse_sim.models.activations import ACTIVATIONS, FAST_ACTIVATIONS
from recourse_sim.models.training import (
    _adam_step_fused,
    _adam_step_reference,
    _train,
    _train_batched,
    _train_per_sample,
)
from recourse_sim.utils import WorkerPool


def _train_one_by_one(nets, X, y, schedule, activation):
    """Plain autograd + torch.optim.Adam, one network at a time, rows in order."""
    trained = []
    for i in range(nets.n_nets):
        params = [p.clone().requires_grad_() for p in nets.parameters_of(i)]
        optimiser = torch.optim.Adam(params, lr=schedule.learning_rate, eps=1e-8)
        n_layers = len(params) // 2
        for _ in range(schedule.epochs):
            for start in range(0, X.shape[1], schedule.batch_size):
                hidden = X[i, start : start + schedule.batch_size]
                for layer in range(n_layers):
                    hidden = hidden @ params[2 * layer] + params[2 * layer + 1]
                    if layer < n_layers - 1:
                        hidden = ACTIVATIONS[activation].function(hidden)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    hidden.squeeze(-1), y[i, start : start + schedule.batch_size]
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        trained.append([p.detach() for p in params])
    return trained


@pytest.mark.parametrize(
    ("hidden", "activation", "batch_size"),
    [
        ((), "relu", 1),
        ((6,), "relu", 1),
        ((5, 4), "tanh", 1),
        ((4,), "sigmoid", 1),
        ((5, 4), "tanh", 3),
        ((4,), "sigmoid", 7),
    ],
)
def test_lockstep_training_equals_separate_training(hidden, activation, batch_size):
    generator = torch.Generator().manual_seed(1)
    nets = StackedNetworks(Architecture(3, hidden, activation), 4).initialise(generator)
    X = torch.randn(4, 23, 3, generator=generator)
    y = (torch.rand(4, 23, generator=generator) > 0.5).float()
    schedule = TrainingSchedule(epochs=3, batch_size=batch_size, learning_rate=1e-2)
    expected = _train_one_by_one(nets, X, y, schedule, activation)
    train_lockstep(nets, X, y, schedule, generator)
    for i, params in enumerate(expected):
        for got, want in zip(nets.parameters_of(i), params, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fused_adam_matches_reference_form():
    generator = torch.Generator().manual_seed(0)
    param = torch.randn(50, generator=generator)
    state = [param.clone(), torch.zeros(50), torch.zeros(50), torch.zeros(())]
    other = [param.clone(), torch.zeros(50), torch.zeros(50), torch.zeros(())]
    for t in range(1, 21):
        grad = torch.randn(50, generator=generator)
        step = torch.tensor(float(t))
        _adam_step_fused(state[0], grad, state[1], state[2], step, 1e-3)
        _adam_step_reference(other[0], grad, other[1], other[2], step, 1e-3)
    torch.testing.assert_close(state[0], other[0])
    torch.testing.assert_close(state[1], other[1])


def test_ensemble_probability_is_mean_of_member_probabilities():
    spec = DeepEnsemble(n_members=3, hidden_sizes=(4,))
    model = spec.initialise(2, torch.Generator().manual_seed(0))
    X = torch.randn(1, 5, 2, generator=torch.Generator().manual_seed(1))
    members = torch.sigmoid(model.nets.logits(X.expand(3, -1, -1)))
    torch.testing.assert_close(model.proba(X)[0], members.mean(0))
    torch.testing.assert_close(model.logits(X)[0], model.nets.logits(X.expand(3, -1, -1)).mean(0))


def test_replicated_systems_train_independently(separable):
    spec = MLP(hidden_sizes=(8,), pretrain={"epochs": 2}, retrain={"epochs": 1})
    model = spec.initialise(2, torch.Generator().manual_seed(0)).replicate(2)
    X = torch.tensor(separable.X).unsqueeze(0).repeat(2, 1, 1)
    y = torch.tensor(separable.y).unsqueeze(0).repeat(2, 1)
    y[1] = 1 - y[1]  # the second system sees flipped labels
    model.fit(X, y, spec.retrain, torch.Generator().manual_seed(0))
    p = model.proba(separable.X).numpy()
    single = spec.initialise(2, torch.Generator().manual_seed(0))
    single.fit(X[:1], y[:1], spec.retrain, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(p[0], single.proba(separable.X)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(p[0], p[1])


def test_pretrained_logistic_regression_separates_blobs(separable):
    spec = LogisticRegression(pretrain={"epochs": 20})
    model = spec.initialise(2, torch.Generator().manual_seed(0))
    model.fit(
        torch.tensor(separable.X)[None],
        torch.tensor(separable.y)[None],
        spec.pretrain,
        torch.Generator(),
    )
    accuracy = ((model.proba(separable.X)[0].numpy() > 0.5) == separable.y).mean()
    assert accuracy == 1.0


def test_dropout_masks_scale_kept_units():
    nets = StackedNetworks(Architecture(2, (1000,), "relu", dropout=0.25), 1)
    (mask,) = nets.dropout_masks(50, [torch.Generator().manual_seed(0)])
    values = torch.unique(mask).tolist()
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75)
    assert abs((mask > 0).float().mean().item() - 0.75) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"activation": "swish"}, "model.activation"),
        ({"activation": "silu", "training_path": "fast"}, "model.training_path"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"hidden_sizes": [0]}, "model.hidden_sizes"),
        ({"retrain": {"epochs": -1}}, "model.retrain.epochs"),
        ({"pretrain": {"batch_size": 0}}, "model.pretrain.batch_size"),
        ({"retrain": {"epoch": 3}}, "model.retrain"),
    ],
)
def test_bad_model_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MLP(**kwargs)


@pytest.mark.parametrize(("n_nets", "dropout"), [(5, 0.0), (7, 0.2)])
def test_training_shared_between_processes_equals_one_process(n_nets, dropout):
    generator = torch.Generator().manual_seed(3)
    nets = StackedNetworks(Architecture(3, (6, 5), "relu", dropout), n_nets).initialise(generator)
    X = torch.randn(n_nets, 40, 3, generator=generator, dtype=torch.float64)
    y = (torch.rand(n_nets, 40, generator=generator) > 0.5).long()
    schedule = TrainingSchedule(epochs=2)
    alone, shared = nets.clone(), nets.clone()
    train_lockstep(alone, X, y, schedule, torch.Generator().manual_seed(9))
    with WorkerPool(processes=3) as pool:
        assert len(pool.shards(n_nets)) == 3
        train_lockstep(shared, X, y, schedule, torch.Generator().manual_seed(9), pool)
    torch.testing.assert_close(shared.flat, alone.flat, rtol=1e-5, atol=1e-6)
    assert not torch.equal(shared.flat, nets.flat)


@given(st.integers(1, 300), st.integers(1, 8))
def test_pool_shards_partition_the_networks_evenly(n_nets, processes):
    shards = WorkerPool(processes).shards(n_nets)
    assert shards[0][0] == 0 and shards[-1][1] == n_nets
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shards))
    sizes = [stop - start for start, stop in shards]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert len(shards) == (1 if n_nets < 2 else min(processes, n_nets))


def test_a_networks_dropout_masks_do_not_depend_on_its_neighbours():
    nets = StackedNetworks(Architecture(2, (8,), "relu", dropout=0.5), 2)
    (both,) = nets.dropout_masks(30, [torch.Generator().manual_seed(s) for s in (1, 2)])
    alone = StackedNetworks(Architecture(2, (8,), "relu", dropout=0.5), 1)
    (second,) = alone.dropout_masks(30, [torch.Generator().manual_seed(2)])
    assert torch.equal(both[1], second[0]) and not torch.equal(both[0], both[1])


@pytest.mark.parametrize("processes", [0, -2, 1.5, True])
def test_bad_process_count_names_its_key(processes):
    with pytest.raises(ConfigError, match="processes"):
        WorkerPool(processes)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_per_sample_path_equals_batched_path_with_dropout(activation):
    # Dropout masks cannot be replayed by autograd; compare the two hand-written loops instead.
    generator = torch.Generator().manual_seed(4)
    nets = StackedNetworks(Architecture(3, (6, 5), activation, 0.3), 3).initialise(generator)
    X = torch.randn(3, 30, 3, generator=generator)
    y = (torch.rand(3, 30, generator=generator) > 0.5).float()
    fast, general = nets.clone(), nets.clone()
    _train_per_sample(fast, X, y, TrainingSchedule(epochs=2), [5, 6, 7])
    _train_batched(general, X, y, TrainingSchedule(epochs=2), [5, 6, 7])
    torch.testing.assert_close(fast.flat, general.flat, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("activation", FAST_ACTIVATIONS)
def test_fast_path_equals_autograd_for_every_activation_it_covers(activation, dropout, batch_size):
    # The activation table is the one source of truth: every activation the hand-written
    # backward pass accepts must give autograd's parameters (dropout masks are drawn alike).
    generator = torch.Generator().manual_seed(6)
    fast = StackedNetworks(Architecture(3, (6, 5), activation, dropout), 3).initialise(generator)
    general = StackedNetworks(
        Architecture(3, (6, 5), activation, dropout, training_path="autograd"), 3, fast.flat.clone()
    )
    assert fast.architecture.trains_fast and not general.architecture.trains_fast
    X = torch.randn(3, 21, 3, generator=generator)
    y = (torch.rand(3, 21, generator=generator) > 0.5).float()
    for epochs in (3, 2):  # pre-training, then a warm-started retraining with a fresh Adam
        schedule = TrainingSchedule(epochs=epochs, batch_size=batch_size, learning_rate=1e-2)
        for nets in (fast, general):
            _train(nets, X, y, schedule, [5, 6, 7] if dropout else None)
        torch.testing.assert_close(fast.flat, general.flat, rtol=1e-5, atol=1e-6)


def test_activations_without_a_hand_written_derivative_train_by_autograd():
    generator = torch.Generator().manual_seed(2)
    uncovered = [name for name in ACTIVATIONS if name not in FAST_ACTIVATIONS]
    assert uncovered  # the table has activations only autograd trains
    for name in uncovered:
        nets = StackedNetworks(Architecture(3, (5,), name), 2).initialise(generator)
        assert not nets.architecture.trains_fast
        X = torch.randn(2, 17, 3, generator=generator)
        y = (torch.rand(2, 17, generator=generator) > 0.5).float()
        schedule = TrainingSchedule(epochs=2, batch_size=1, learning_rate=1e-2)
        expected = _train_one_by_one(nets, X, y, schedule, name)
        train_lockstep(nets, X, y, schedule, generator)
        for i, params in enumerate(expected):
            for got, want in zip(nets.parameters_of(i), params, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_several_stacks_shared_between_processes_equal_training_alone():
    generator = torch.Generator().manual_seed(7)
    jobs, expected = [], []
    for hidden, n_nets, dropout in [((), 4, 0.0), ((5,), 3, 0.3), ((4, 3), 6, 0.0)]:
        nets = StackedNetworks(Architecture(2, hidden, "relu", dropout), n_nets)
        nets.initialise(generator)
        X = torch.randn(n_nets, 25, 2, generator=generator)
        y = (torch.rand(n_nets, 25, generator=generator) > 0.5).float()
        alone = nets.clone()
        train_lockstep(alone, X, y, TrainingSchedule(epochs=2), torch.Generator().manual_seed(1))
        expected.append(alone)
        jobs.append((nets, X, y, TrainingSchedule(epochs=2), torch.Generator().manual_seed(1)))
    with WorkerPool(2) as pool:
        train_stacks(jobs, pool)
    for (nets, *_), alone in zip(jobs, expected, strict=True):
        torch.testing.assert_close(nets.flat, alone.flat, rtol=1e-5, atol=1e-6)


def test_pool_runs_unmovable_calls_here_and_balances_the_rest():
    pool = WorkerPool(3)
    # Longest first, each to the least loaded process: 5 -> here, 4 -> a worker, 3 -> the
    # other worker, 1 (unmovable) -> here.
    assert pool._assign([True, True, False, True], [5.0, 4.0, 1.0, 3.0]) == {0, 2}
    assert WorkerPool(1)._assign([True, True], None) == {0, 1}
    with WorkerPool(2) as pool:
        pids = pool.run_all([(os.getpid, ())] * 4, movable=[True, True, False, False])
    assert pids[0] == pids[2] == pids[3] == os.getpid() != pids[1]


# --- strict settings of every model (issue 9, hardening) ------------------------------------
# Each configs/model option is built directly with one bad value at a time; the error must be a
# ConfigError naming the key as the code writes it (``model.KEY``, ``model.pretrain.KEY``).


def _model_configs() -> list:
    from pathlib import Path

    return sorted((Path(__file__).parents[1] / "recourse_sim" / "configs" / "model").glob("*.yaml"))


_NAN, _INF = float("nan"), float("inf")
_BAD_MODEL_VALUES = {
    "hidden_sizes": [[0], [2.5], [True], ["abc"], [_NAN], [32, -1], "abc", 32, None],
    "activation": ["swish", "ReLU", 1, True, None],
    "dropout": [_NAN, _INF, "abc", True, 1, 1.0, -0.1],
    "dropout_in_search": ["maybe", "true", 2, 1, 0, None],
    "n_members": [0, 2.5, 2.0, True, "abc", _NAN],
    "epochs": [-1, 2.5, 10.0, True, "abc", _NAN, None],
    "batch_size": [0, 2.5, 1.0, True, "abc", None],
    "learning_rate": [0, -1e-3, _NAN, _INF, "abc", True, None],
    "training_path": ["slow", "AUTO", 1, True, None],
    "training": ["adversarial", "Counterfactual", 1, True, None],
    "outputs": [0, 3, 1.5, True, "abc", None],
    "counterfactual_training": [5, "abc", [1, 2], True],
    "continue_training": ["maybe", 2, None],
    "vectorise": ["sometimes", 1, True, None],
    "module": [5, "abc", {"_target_": "no_such_package.make_net"}, {"_target_": "os.getcwd"}],
    "estimator": [5, {"_target_": "no_such_package.Estimator"}, {"_target_": "builtins.dict"}],
}


def _model_options(path) -> tuple[type, dict]:
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    (node,) = OmegaConf.to_container(OmegaConf.load(path)).values()
    return get_class(node.pop("_target_")), node


def _model_cases():
    cases = []
    for path in _model_configs():
        _, options = _model_options(path)
        phases = [p for p in ("pretrain", "retrain") if p in options]
        keys = [k for k in options if k not in phases and not k.startswith("_")]
        keys += [f"{phase}.{k}" for phase in phases for k in options[phase]]
        for key in keys:
            cases += [
                pytest.param(path, key, bad, id=f"{path.stem}-{key}={bad!r}")
                for bad in _BAD_MODEL_VALUES[key.rpartition(".")[2]]
            ]
        cases += [
            pytest.param(path, phase, bad, id=f"{path.stem}-{phase}={bad!r}")
            for phase in phases
            for bad in (5, "abc", [1, 2])
        ]
    return cases


@pytest.mark.parametrize(("config", "key", "bad"), _model_cases())
def test_every_model_setting_is_strict_and_names_its_key(config, key, bad):
    cls, options = _model_options(config)
    phase, _, name = key.rpartition(".")
    if phase:
        options[phase] = {**options[phase], name: bad}
    else:
        options[key] = bad
    options.pop("_recursive_", None)
    # A callable's node may be refused at its import path (model.module._target_).
    pattern = "<" + f"model.{key}".replace(".", r"\.") + r"(\._target_)?="
    with pytest.raises(ConfigError, match=pattern) as error:
        cls(**options)
    assert error.value.allowed


def test_model_settings_are_stored_in_their_canonical_types():
    from omegaconf import ListConfig

    mlp = MLP(hidden_sizes=ListConfig([8, 4]), dropout=0, pretrain={"learning_rate": 1})
    assert mlp.hidden_sizes == (8, 4) and all(type(h) is int for h in mlp.hidden_sizes)
    assert MLP(hidden_sizes=(np.int64(3),)).hidden_sizes == (3,)
    assert mlp.dropout == 0.0 and type(mlp.dropout) is float
    # A partial schedule keeps the other values of its default (pre-training: 100 epochs).
    assert type(mlp.pretrain.learning_rate) is float and mlp.pretrain.epochs == 100
    assert MLP(retrain={"epochs": 0}).retrain.epochs == 0  # 0: the model stays fixed
    assert LogisticRegression().hidden_sizes == () and DeepEnsemble().n_members == 5
    assert MLP(dropout_in_search=False).dropout_in_search is False

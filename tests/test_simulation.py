"""Invariants of the round loop, on small in-memory runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import blobs

from recourse_sim.data.base import train_test_split
from recourse_sim.errors import ConfigError
from recourse_sim.generators import GenericGenerator, ReviseGenerator, WachterGenerator
from recourse_sim.metrics.base import MetricResult
from recourse_sim.models import MLP, LogisticRegression
from recourse_sim.simulation import Recorder, RecourseSimulation, SimulationConfig
from recourse_sim.utils import RandomStreams, WorkerPool
from recourse_sim.utils.device import to_device


class MeanShift:
    """A tiny metric: distance between the means of the initial and current training data."""

    name, scope = "mean_shift", "domain"

    def __call__(self, context):
        shift = context.train_X.mean(0) - context.reference_X[: len(context.train_X)].mean(0)
        return MetricResult(float(np.linalg.norm(shift)))


def make_simulation(recorder=None, seed=0, generators=None, workers=None, device="cpu", **config):
    data = blobs(n_per_class=50, std=0.4, seed=3)
    train, test = train_test_split(data, 0.2, np.random.default_rng(0))
    settings = {
        "n_rounds": 3,
        "n_repetitions": 2,
        "recourse_fraction": 0.3,
        "evaluate_every": 1,
        "n_permutations": 0,
    }
    settings.update(config)
    return RecourseSimulation(
        train,
        test,
        models={
            "logistic": LogisticRegression(pretrain={"epochs": 40}, retrain={"epochs": 1}),
            "mlp": MLP(hidden_sizes=(8,), pretrain={"epochs": 40}, retrain={"epochs": 1}),
        },
        generators=generators
        or {
            "generic": GenericGenerator(max_iter=30),
            "wachter": WachterGenerator(max_iter=30),
        },
        metrics={"mean_shift": MeanShift()},
        config=SimulationConfig(**settings),
        streams=RandomStreams(seed),
        recorder=recorder,
        progress=False,
        workers=workers,
        device=device,
    )


class Spy(Recorder):
    """Records the chosen individuals and the models' predictions before each round."""

    def __init__(self):
        super().__init__(None)


def test_population_conserved_and_exact_number_moved():
    sim = make_simulation()
    chosen_per_round = []
    original = sim._selection

    def spy(round_number):
        chosen, pools = original(round_number)
        # Shared selection: every system of a repetition advises the same people.
        name = next(iter(chosen))
        by_rep = {s.repetition: chosen[name][s.slot] for s in sim.systems[name]}
        sizes = {s.repetition: pools[name][s.slot] for s in sim.systems[name]}
        chosen_per_round.append(([by_rep[r] for r in range(2)], [sizes[r] for r in range(2)]))
        return chosen, pools

    sim._selection = spy
    sim.run()
    n = sim.train.n_samples
    for name in sim.models:
        assert sim.populations[name].shape == (4, n, 2)
        assert sim.labels[name].shape == (4, n)
    recourse = sim.recorder.recourse
    for round_number, (chosen, pools) in enumerate(chosen_per_round, start=1):
        for rep in range(2):
            assert len(chosen[rep]) == round(0.3 * pools[rep])
            rows = recourse[(recourse["round"] == round_number) & (recourse.repetition == rep)]
            assert (rows.n_chosen == len(chosen[rep])).all()
            assert (rows.n_candidates == pools[rep]).all()
    # Each system's recourse count adds up to the number chosen in its repetition.
    for name in sim.models:
        for system in sim.systems[name]:
            total = sum(len(c[system.repetition]) for c, _ in chosen_per_round)
            assert int(sim.recourse_count[name][system.slot].sum()) == total


def test_candidates_are_the_intersection_and_moved_rows_take_the_models_label():
    sim = make_simulation(n_rounds=1)
    sim._pretrain()
    before = {name: sim.populations[name].clone() for name in sim.models}
    predicted_negative = {
        name: (clf.proba(sim.populations[name]) <= 0.5) for name, clf in sim.classifiers.items()
    }
    models_before = {name: clf.clone() for name, clf in sim.classifiers.items()}
    sim._decision_phase(0)
    selected, pools = sim._selection(1)
    chosen = {s.repetition: selected["logistic"][s.slot] for s in sim.systems["logistic"]}
    for rep in range(2):
        for name, negative in predicted_negative.items():
            for system in sim.systems[name]:
                if system.repetition == rep:
                    assert np.array_equal(selected[name][system.slot], chosen[rep])
                    assert negative[system.slot, chosen[rep]].all()
    sim._advise(1, selected, pools)
    sim._implementation_phase(1)
    for name in sim.models:
        for system in sim.systems[name]:
            index = chosen[system.repetition]
            moved = sim.populations[name][system.slot, index]
            p = models_before[name].proba_of(system.slot, moved.numpy())
            np.testing.assert_array_equal(sim.labels[name][system.slot, index].numpy(), p > 0.5)
            untouched = np.setdiff1d(np.arange(sim.train.n_samples), index)
            assert torch.equal(
                sim.populations[name][system.slot, untouched], before[name][system.slot, untouched]
            )


def test_same_seed_same_results_and_different_seed_differs(tmp_path):
    runs = []
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_simulation(Recorder(tmp_path / folder), seed=seed).run()
        runs.append((tmp_path / folder / "metrics.csv").read_bytes())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_work_shared_with_worker_processes_gives_the_same_results(tmp_path):
    # Four (model, generator) searches, one of them latent (it keeps its VAEs, so it must stay
    # in this process), and two stacks to train, shared between two processes.
    def generators():
        return {
            "generic": GenericGenerator(max_iter=30),
            "wachter": WachterGenerator(max_iter=30),
            "revise": ReviseGenerator(max_iter=20, vae={"epochs": 5, "retrain_epochs": 2}),
        }

    make_simulation(Recorder(tmp_path / "alone"), generators=generators()).run()
    with WorkerPool(2) as workers:
        shared = make_simulation(
            Recorder(tmp_path / "shared"), generators=generators(), workers=workers
        )
        shared.run()
    assert shared.generators["revise"].state_dict()  # its VAEs were fitted here
    for name in ("metrics.csv", "recourse.csv", "final_population.csv"):
        alone = pd.read_csv(tmp_path / "alone" / name)
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "shared" / name), alone, check_exact=False, rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("latent", [False, True], ids=["feature-space", "latent-space"])
def test_outputs_written_as_the_run_goes_and_resume_matches(tmp_path, latent):
    def generators():
        if not latent:
            return None
        return {"revise": ReviseGenerator(max_iter=20, vae={"epochs": 5, "retrain_epochs": 2})}

    full = tmp_path / "full"
    make_simulation(Recorder(full), n_rounds=4, generators=generators()).run()
    partial = tmp_path / "partial"
    sim = make_simulation(Recorder(partial), n_rounds=4, generators=generators())
    original = sim._evaluation_phase

    def crash(round_number):
        if round_number == 3:  # round 3's recourse rows are on disk, its metrics are not
            raise KeyboardInterrupt("simulated crash")
        original(round_number)

    sim._evaluation_phase = crash
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    assert pd.read_csv(partial / "metrics.csv")["round"].max() == 2
    assert pd.read_csv(partial / "recourse.csv")["round"].max() == 3
    make_simulation(Recorder(partial), n_rounds=4, generators=generators()).run(resume=True)
    for name in ("metrics.csv", "recourse.csv", "final_population.csv"):
        assert (partial / name).read_bytes() == (full / name).read_bytes(), name


def test_final_population_records_who_received_recourse(tmp_path):
    sim = make_simulation(Recorder(tmp_path))
    sim.run()
    frame = pd.read_csv(tmp_path / "final_population.csv")
    assert len(frame) == 8 * sim.train.n_samples
    expected = {
        "repetition",
        "model",
        "generator",
        "individual",
        "x0",
        "x1",
        "label",
        "initial_label",
        "n_recourse",
        "first_recourse_round",
        "last_recourse_round",
    }
    assert expected <= set(frame.columns)
    moved = frame[frame.n_recourse > 0]
    assert len(moved) > 0 and (moved.first_recourse_round >= 1).all()
    assert (frame[frame.n_recourse == 0].first_recourse_round == -1).all()


def test_metrics_rows_long_format_with_all_systems(tmp_path):
    sim = make_simulation(Recorder(tmp_path))
    sim.run()
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == [
        "repetition",
        "round",
        "model",
        "generator",
        "metric",
        "scope",
        "value",
        "p_value",
    ]
    assert sorted(metrics["round"].unique()) == [0, 1, 2, 3]
    assert len(metrics) == 4 * 8
    assert (metrics[metrics["round"] == 0].value == 0).all()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("recourse_fraction", 0.0),
        ("recourse_fraction", 1.5),
        ("n_rounds", 0),
        ("n_repetitions", 0),
        ("evaluate_every", 0),
        ("candidates", "everyone"),
        ("n_counterfactuals", 0),
    ],
)
def test_bad_simulation_settings_name_their_key(key, value):
    with pytest.raises(ConfigError, match=rf"simulation\.{key}"):
        SimulationConfig(**{key: value})


def test_resume_refuses_a_different_configuration(tmp_path):
    make_simulation(Recorder(tmp_path, fingerprint="one"), n_rounds=1).run()
    with pytest.raises(ConfigError, match="resume"):
        make_simulation(Recorder(tmp_path, fingerprint="two"), n_rounds=1).run(resume=True)


def _tensors(value):
    """Every tensor inside nested dicts, lists and dataclasses (as in a checkpoint state)."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    elif dataclasses.is_dataclass(value):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


def test_simulation_places_every_tensor_it_makes_on_its_device():
    # With torch's default device set to "meta", a tensor created without device= lands there
    # and clashes with the simulation's CPU tensors: a CPU-only check of what runs on a GPU.
    generators = {
        "generic": GenericGenerator(max_iter=30),
        "revise": ReviseGenerator(max_iter=10, vae={"epochs": 3, "retrain_epochs": 1}),
    }
    plain = make_simulation(generators=generators, n_rounds=2, candidates="label").run()
    generators = {
        "generic": GenericGenerator(max_iter=30),
        "revise": ReviseGenerator(max_iter=10, vae={"epochs": 3, "retrain_epochs": 1}),
    }
    strict = make_simulation(generators=generators, n_rounds=2, candidates="label")
    with torch.device("meta"):
        strict.run()
    assert strict.recorder.recourse.n_chosen.sum() > 0
    pd.testing.assert_frame_equal(strict.recorder.recourse, plain.recorder.recourse)
    pd.testing.assert_frame_equal(strict.recorder.metrics, plain.recorder.metrics)
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}
    for name in plain.models:
        torch.testing.assert_close(strict.populations[name], plain.populations[name], **exact)
        flat = strict.classifiers[name].nets.flat
        torch.testing.assert_close(flat, plain.classifiers[name].nets.flat, **exact)


def test_checkpoint_state_is_on_the_cpu_and_moves_whole(tmp_path):
    generators = {"revise": ReviseGenerator(max_iter=5, vae={"epochs": 2, "retrain_epochs": 1})}
    sim = make_simulation(Recorder(tmp_path), n_rounds=1, generators=generators)
    sim.run()
    state = sim._state()
    assert state["generators"]["revise"]["systems"]  # the VAEs travel with the checkpoint
    tensors = _tensors(state)
    assert len(tensors) > 10 and all(t.device.type == "cpu" for t in tensors)
    # _restore moves the state like this; the VAEs inside generator states must come along.
    moved = _tensors(to_device(state, "meta"))
    assert len(moved) == len(tensors) and all(t.device.type == "meta" for t in moved)
    assert all(t.device.type == "cpu" for t in _tensors(state))  # the original is untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_agrees_with_cpu_run(tmp_path):
    generators = lambda: {  # noqa: E731
        "generic": GenericGenerator(max_iter=30),
        "revise": ReviseGenerator(max_iter=10, vae={"epochs": 3, "retrain_epochs": 1}),
    }
    cpu = make_simulation(Recorder(tmp_path / "cpu"), generators=generators()).run()
    gpu = make_simulation(Recorder(tmp_path / "gpu"), generators=generators(), device="cuda")
    gpu.run()
    for name in gpu.models:
        assert gpu.populations[name].is_cuda and gpu.classifiers[name].nets.flat.is_cuda
    # Float rounding differs between devices; the decisions and the metrics must not.
    pd.testing.assert_frame_equal(
        gpu.recorder.recourse, cpu.recorder.recourse, check_exact=False, rtol=1e-3, atol=1e-4
    )
    pd.testing.assert_frame_equal(
        gpu.recorder.metrics, cpu.recorder.metrics, check_exact=False, rtol=1e-3, atol=1e-4
    )
    # A GPU checkpoint holds CPU tensors and resumes on the CPU.
    assert all(t.device.type == "cpu" for t in _tensors(gpu._state()))
    resumed = make_simulation(Recorder(tmp_path / "gpu"), generators=generators())
    resumed.run(resume=True)
    assert resumed.round == gpu.round

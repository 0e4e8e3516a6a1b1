"""The time-based engine (issue 11) on tiny populations with hand-computed expectations.

Most simulations here use a classifier whose weights are set by hand (score ``sigmoid(4 x0)``:
favourable exactly when ``x0 > 0``, and never retrained unless a test says so) and a generator
that sends every advised agent to a fixed point, so that every decision, exit, move and metric of
every round can be worked out on paper. The property tests and the command-line tests at the end
run the real generators and presets.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMOKE, blobs
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

import recourse_sim.simulation.simulation as engine_module
from recourse_sim.__main__ import _CONFIG_DIR, execute
from recourse_sim.data.base import Dataset, train_test_split
from recourse_sim.dynamics import ArrivalBatch, DynamicsConfig
from recourse_sim.dynamics.config import Advice, Decision, Retraining
from recourse_sim.errors import ConfigError
from recourse_sim.generators import GenericGenerator
from recourse_sim.generators.base import Generator, SearchResult
from recourse_sim.generators.none import NoRecourseGenerator
from recourse_sim.metrics import Disagreement, DomainMMD, F1Change
from recourse_sim.models import LogisticRegression
from recourse_sim.simulation import Recorder, RecourseSimulation, SimulationConfig
from recourse_sim.utils import RandomStreams

#: agents.csv columns as issue 11 lists them.
AGENT_COLUMNS = [
    "repetition",
    "model",
    "generator",
    "agent",
    "group",
    "entered_round",
    "favourable_round",
    "n_advice",
    "n_adaptations",
    "n_failures",
    "effort",
    "initial_score",
    "final_score",
]
REFERENCE_FILES = [
    "metrics.csv",
    "recourse.csv",
    "final_population.csv",
    "initial_population.csv",
    "decision_grid.csv",
]
SIGMOID_4 = 1 / (1 + math.exp(-4))  # the score of x0 = 1 (x0 = -1 scores 1 - SIGMOID_4)


class ToGoal(Generator):
    """Advice to a fixed point; a ``None`` coordinate keeps the agent's own value there."""

    deterministic = True

    def __init__(self, goal):
        self.goal = goal

    def search(self, problem):
        factuals = problem.factuals.to(torch.float64)
        S, B, d = factuals.shape
        K = problem.n_counterfactuals
        points = factuals.clone()
        for j, value in enumerate(self.goal):
            if value is not None:
                points[..., j] = value
        counterfactuals = points.unsqueeze(2).expand(S, B, K, d).clone()
        probabilities = problem.model.proba(counterfactuals.reshape(S, B * K, d)).reshape(S, B, K)
        return SearchResult(
            counterfactuals,
            probabilities.to(torch.float64),
            torch.ones(S, B, dtype=torch.bool),
            torch.ones(S, B, dtype=torch.int64),
        )


class FixedLogistic(LogisticRegression):
    """A logistic regression whose weights are set by hand instead of pre-trained."""

    def __init__(self, weight=(4.0, 0.0), bias=0.0, retrain_epochs=0):
        super().__init__(pretrain={"epochs": 0}, retrain={"epochs": retrain_epochs})
        self.weight, self.bias = weight, bias

    def initialise(self, input_dim, generator, device=None):
        classifier = super().initialise(input_dim, generator, device)
        weight = torch.tensor(self.weight, dtype=torch.float32).view(1, -1, 1)
        classifier.nets.weights[0].copy_(weight)
        classifier.nets.biases[0].fill_(self.bias)
        return classifier


def dataset(X, y=None, **metadata) -> Dataset:
    X = np.asarray(X, dtype=np.float64)
    names = metadata.pop("names", tuple(f"x{i}" for i in range(X.shape[1])))
    y = np.zeros(len(X), dtype=np.int64) if y is None else np.asarray(y)
    return Dataset(X, y, names, **metadata)


def batch(X, rounds, y=None) -> ArrivalBatch:
    n = len(rounds)
    return ArrivalBatch(
        X=np.asarray(X, dtype=np.float64).reshape(n, -1),
        y=np.zeros(n, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64),
        rounds=np.asarray(rounds, dtype=np.int64),
        groups=np.full(n, -1),
    )


def engine(
    dynamics,
    train,
    *,
    model=None,
    generators=None,
    arrivals=None,
    n_rounds=4,
    n_repetitions=1,
    fraction=1.0,
    recorder=None,
):
    """A simulation of the hand-made agents ``train`` (also its test set; no shift metrics)."""
    return RecourseSimulation(
        train,
        train,
        models={"logistic": model or FixedLogistic()},
        generators=generators or {"goal": ToGoal([1.0, None])},
        metrics={},
        config=SimulationConfig(
            n_rounds=n_rounds,
            n_repetitions=n_repetitions,
            recourse_fraction=fraction,
            evaluate_every=1000,
            n_permutations=0,
            n_counterfactuals=1,
        ),
        streams=RandomStreams(0),
        recorder=recorder,
        progress=False,
        dynamics=dynamics,
        arrivals=arrivals,
    )


def series(sim, metric: str, repetition: int = 0, generator: str | None = None) -> list:
    """One system's values of a time-based metric, round by round."""
    m = sim.recorder.metrics
    rows = m[(m.metric == metric) & (m.repetition == repetition)]
    if generator is not None:
        rows = rows[rows.generator == generator]
    assert rows["round"].is_unique
    return rows.sort_values("round").value.tolist()


def spy(sim, phase: str, before=None, after=None) -> None:
    """Call ``before(t)`` and ``after(t)`` around one phase of every round."""
    original = getattr(sim, phase)

    def wrapped(t):
        if before is not None:
            before(t)
        original(t)
        if after is not None:
            after(t)

    setattr(sim, phase, wrapped)


# Four initial agents: A0 favourable (x0 = 1), A1..A3 rejected (x0 = -1); x1 names each agent.
INITIAL = [[1, 0.1], [-1, 0.2], [-1, 0.3], [-1, 0.4]]
# Repetition 0: N0 (rejected), N1 (favourable) enter in round 1; N2, N3 (rejected) and N4
# (favourable) in round 3. Repetition 1: one rejected newcomer in round 2.
ARRIVALS = [
    batch([[-1, 0.5], [1, 0.6], [-1, 0.7], [-1, 0.8], [1, 0.9]], [1, 1, 3, 3, 3]),
    batch([[-1, 0.55]], [2]),
]


# --- population: arrivals and exits ---------------------------------------------------------------


def test_arrivals_enter_in_their_round_and_favourable_agents_leave(tmp_path):
    sim = engine(
        DynamicsConfig(exits="favourable"),
        dataset(INITIAL),
        arrivals=ARRIVALS,
        n_repetitions=2,
        recorder=Recorder(tmp_path),
    )
    checks = []

    def at_decision(t):
        state = sim.state["logistic"]
        # Exactly the agents that entered by now and have not left are present ...
        expected = (state.entered <= t) & (state.left < 0)
        checks.append(bool(torch.equal(state.active, expected)))
        # ... and nobody is favourable before it enters, or after it left.
        checks.append(not bool((state.favourable & ~state.active).any()))

    spy(sim, "_decision_phase", after=at_decision)
    sim.run()
    assert all(checks) and len(checks) == 10
    # Repetition 0 by hand. Round 1: A0 leaves, A1..A3 move to x0 = 1, N0 and N1 enter; four
    # favourable. Round 2: those four leave, N0 moves. Round 3: N0 leaves, N2..N4 enter, N4 is
    # favourable. Round 4: N4 leaves, N2 and N3 move.
    assert series(sim, "n_arrivals", 0) == [4, 2, 0, 3, 0]
    assert series(sim, "n_exits", 0) == [0, 1, 4, 1, 1]
    assert series(sim, "n_active", 0) == [4, 5, 1, 3, 2]
    assert series(sim, "n_favourable", 0) == [1, 4, 1, 1, 2]
    assert series(sim, "n_advice", 0) == [0, 3, 1, 0, 2]
    # Repetition 1: A1..A3 leave in round 2, its newcomer enters then and is advised in round 3.
    assert series(sim, "n_arrivals", 1) == [4, 0, 1, 0, 0]
    assert series(sim, "n_exits", 1) == [0, 1, 3, 0, 1]
    assert series(sim, "n_active", 1) == [4, 3, 1, 1, 0]
    assert series(sim, "n_favourable", 1) == [1, 3, 0, 1, 0]
    for rep in (0, 1):
        active = series(sim, "n_active", rep)
        arrived = np.cumsum(series(sim, "n_arrivals", rep))
        left = np.cumsum(series(sim, "n_exits", rep))
        assert active == (arrived - left).tolist()

    agents = pd.read_csv(tmp_path / "agents.csv", keep_default_na=False, na_values=[""])
    assert list(agents.columns) == AGENT_COLUMNS
    # Padding rows of repetition 1 (it has four newcomers fewer) never appear.
    assert agents.groupby("repetition").agent.apply(list).to_dict() == {
        0: list(range(9)),
        1: list(range(5)),
    }
    first = agents[agents.repetition == 0].set_index("agent")
    assert first.entered_round.tolist() == [0, 0, 0, 0, 1, 1, 3, 3, 3]
    assert first.favourable_round.tolist() == [0, 1, 1, 1, 2, 1, 4, 4, 3]
    assert first.n_advice.tolist() == [0, 1, 1, 1, 1, 0, 1, 1, 0]
    assert (agents.favourable_round >= agents.entered_round).all()
    second = agents[agents.repetition == 1].set_index("agent")
    assert second.entered_round.tolist() == [0, 0, 0, 0, 2]
    assert second.favourable_round.tolist() == [0, 1, 1, 1, 3]
    # Effort: the z-score distance of the move to x0 = 1, x1 = 0 (scales: sample standard
    # deviations of the initial agents, 1 for x0 and sqrt(1/60) for x1).
    scale = np.array([1.0, math.sqrt(1 / 60)])
    for agent, (x0, x1) in zip(range(1, 4), INITIAL[1:], strict=True):
        distance = np.linalg.norm((np.array([1.0, x1]) - [x0, x1]) / scale)
        assert first.effort[agent] == pytest.approx(distance)
    assert first.initial_score[1] == pytest.approx(1 - SIGMOID_4, abs=1e-6)
    assert first.final_score[1] == pytest.approx(SIGMOID_4, abs=1e-6)
    # Time to recourse: A1..A3 waited one round (round 1), N0 one round (entered 1, round 2).
    assert series(sim, "time_to_recourse", 0)[1:3] == [1.0, 1.0]
    assert math.isnan(series(sim, "time_to_recourse", 0)[3])


def test_agents_who_stay_keep_the_population_growing():
    sim = engine(DynamicsConfig(record=True), dataset(INITIAL), arrivals=ARRIVALS[:1])
    sim.run()
    assert series(sim, "n_exits") == [0, 0, 0, 0, 0]
    assert series(sim, "n_active") == [4, 6, 6, 9, 9]
    # Everyone rejected moves to x0 = 1 the round after its first decision.
    assert series(sim, "n_favourable") == [1, 5, 6, 7, 9]


# --- delays, compliance, expiry, giving up --------------------------------------------------------


def test_fixed_delay_of_two_rounds():
    sim = engine(DynamicsConfig(delay=2), dataset(INITIAL), n_rounds=5)
    sim.run()
    state = sim.state["logistic"]
    assert state.advice_round.tolist() == [[-1, 1, 1, 1]]
    assert state.acted_round.tolist() == [[-1, 3, 3, 3]]
    assert (state.acted_round - state.advice_round)[0, 1:].tolist() == [2, 2, 2]
    # Pending advice: no new advice in round 2; rejected until they act in round 3.
    assert state.n_advice.tolist() == [[0, 1, 1, 1]]
    assert series(sim, "n_advice") == [0, 3, 0, 0, 0, 0]
    assert series(sim, "n_favourable") == [1, 1, 1, 4, 4, 4]
    assert state.favourable_round.tolist() == [[0, 3, 3, 3]]


def test_random_delays_are_the_same_for_an_agent_in_every_system_of_its_repetition():
    train = dataset([[-1, 0.01 * i] for i in range(40)])
    sim = engine(
        DynamicsConfig(delay=3, delay_distribution="geometric"),
        train,
        generators={"a": ToGoal([1.0, None]), "b": ToGoal([2.0, None])},
        n_repetitions=2,
        n_rounds=1,
    )
    sim.run()
    state = sim.state["logistic"]
    delays = (state.due - state.advice_round).tolist()  # systems: a/0, a/1, b/0, b/1
    assert delays[0] == delays[2] and delays[1] == delays[3]
    assert delays[0] != delays[1]  # another repetition, other draws
    assert min(delays[0]) == 0 and len(set(delays[0])) > 3
    # Those with delay 0 acted in round 1, the others not yet.
    acted = state.acted_round[0].tolist()
    assert acted == [1 if d == 0 else -1 for d in delays[0]]


# One-hot data: x0 decides, (c_a, c_b) is a one-hot group, x3 is free; advice changes all four.
ONE_HOT = dataset(
    [[-1, 1, 0, 0.1 * i] for i in range(12)],
    names=("x0", "c_a", "c_b", "x3"),
    categorical_groups=((1, 2),),
)
ONE_HOT_GOAL = [1.0, 0.0, 1.0, 2.0]


def implementation_log(sim) -> list:
    """Per round: the agents due, features before and after the implementation phase."""
    log = []
    seen = {}

    def before(t):
        state = sim.state["logistic"]
        seen["due"] = (state.pending & state.active & (state.due <= t)).clone()
        seen["X"] = state.X.clone()

    def after(t):
        log.append((t, seen["due"], seen["X"], sim.state["logistic"].X.clone()))

    spy(sim, "_implementation_phase", before, after)
    return log


def test_partial_compliance_carries_out_some_recommended_changes_each_round():
    sim = engine(
        DynamicsConfig(compliance=0.5),
        ONE_HOT,
        model=FixedLogistic((4.0, 0.0, 0.0, 0.0)),
        generators={"goal": ToGoal(ONE_HOT_GOAL)},
        n_rounds=6,
    )
    log = implementation_log(sim)
    judged = []

    def at_decision(t):
        state = sim.state["logistic"]
        # Agents are judged on their current features: favourable exactly when x0 > 0.
        judged.append(bool(torch.equal(state.favourable, state.X[..., 0] > 0)))

    spy(sim, "_decision_phase", after=at_decision)
    sim.run()
    assert all(judged)
    goal = torch.tensor(ONE_HOT_GOAL, dtype=torch.float64)
    partial = 0
    for _, due, before, after in log:
        changed = after != before
        # Only agents with due advice move, and a changed feature is at its advised value.
        assert not changed[~due].any()
        assert torch.equal(after[changed], goal.expand_as(after)[changed])
        # The one-hot group moves as one.
        assert torch.equal(changed[..., 1], changed[..., 2])
        remaining = (before != goal) & due.unsqueeze(-1)
        moved_some = changed.any(-1) & (changed != remaining).any(-1)
        partial += int(moved_some.sum())
    assert partial > 0  # some agents carried out only part of their advice in some round
    assert int(log[0][1].sum()) == 12 and int((log[0][3] != log[0][2]).sum()) < 12 * 4
    state = sim.state["logistic"]
    # No new advice while advice is unfinished; whoever completed it is at the goal.
    assert state.n_advice.tolist() == [[1] * 12]
    done = ~state.pending[0]
    assert torch.equal(state.X[0, done], goal.expand(int(done.sum()), 4))
    # A moved agent's label is the model's prediction at its new point.
    assert torch.equal(state.y, (state.X[..., 0] > 0).to(torch.int64))


@pytest.mark.parametrize(
    ("difficulty", "keep", "certain"),
    [
        ({"x3": 0.0}, [0.2, 0.2, 0.2, 1.0], [3]),
        ({"c": 0.0}, [0.2, 1.0, 1.0, 0.2], [1, 2]),  # a one-hot prefix names the whole group
    ],
)
def test_difficulty_overrides_compliance_for_its_feature(difficulty, keep, certain):
    sim = engine(
        DynamicsConfig(compliance=0.2, difficulty=difficulty),
        ONE_HOT,
        model=FixedLogistic((4.0, 0.0, 0.0, 0.0)),
        generators={"goal": ToGoal(ONE_HOT_GOAL)},
        n_rounds=1,
    )
    assert sim.keep_probability.tolist() == pytest.approx(keep)
    log = implementation_log(sim)
    sim.run()
    _, due, before, after = log[0]
    assert bool(due.all())
    # A feature nobody skips changes in the first round for every agent.
    for j in certain:
        assert after[0, :, j].tolist() == [ONE_HOT_GOAL[j]] * 12
    others = [j for j in range(4) if j not in certain]
    assert not bool((after[..., others] != before[..., others]).all())


def test_difficulty_of_an_unknown_feature_names_the_key():
    with pytest.raises(ConfigError, match=r"dynamics\.difficulty"):
        engine(DynamicsConfig(difficulty={"nope": 0.5}), ONE_HOT)


def test_a_difficulty_skips_its_feature_with_that_probability():
    train = dataset([[-1, 0.01 * i] for i in range(400)])
    sim = engine(DynamicsConfig(difficulty={"x1": 0.25}), train, n_rounds=1)
    sim.run()
    state = sim.state["logistic"]
    # x0 (compliance 1) always moves; x1 (goal: its own value, so nothing to do) never changes.
    assert state.X[0, :, 0].tolist() == [1.0] * 400
    sim = engine(
        DynamicsConfig(difficulty={"x1": 0.25}),
        train,
        generators={"goal": ToGoal([1.0, 5.0])},
        n_rounds=1,
    )
    sim.run()
    moved = (sim.state["logistic"].X[0, :, 1] == 5.0).double().mean().item()
    assert moved == pytest.approx(0.75, abs=0.07)


def test_advice_expires_and_is_renewed():
    # A delay of five rounds and advice that lapses after two: advice in rounds 1, 3 and 5,
    # none of it ever carried out.
    sim = engine(DynamicsConfig(delay=5, advice_expiry=2), dataset(INITIAL), n_rounds=6)
    sim.run()
    state = sim.state["logistic"]
    assert state.n_advice.tolist() == [[0, 3, 3, 3]]
    assert state.first_advice.tolist() == [[-1, 1, 1, 1]]
    assert state.last_advice.tolist() == [[-1, 5, 5, 5]]
    assert state.n_adaptations.tolist() == [[0, 0, 0, 0]]
    assert series(sim, "n_advice") == [0, 3, 0, 3, 0, 3, 0]


@pytest.mark.parametrize(("give_up_after", "n_advice"), [(0, [0, 1, 2, 3]), (1, [0, 1, 1, 1])])
def test_give_up_after_failures(give_up_after, n_advice):
    # Competition for one loan a round (top_k, k = 1), winners leave. Round 0: all four score
    # the same; A0 (lowest index) wins. Round 1: A1..A3 move to x0 = 1 and all cross the round-0
    # threshold; A1 wins, A2 and A3 fail. Reliability: 1 of 3.
    sim = engine(
        DynamicsConfig(
            exits="favourable",
            decision=Decision(policy="top_k", k=1),
            give_up_after=give_up_after,
        ),
        dataset([[-1, 0.1], [-1, 0.2], [-1, 0.3], [-1, 0.4]]),
        n_rounds=3,
    )
    sim.run()
    state = sim.state["logistic"]
    assert state.n_failures.tolist() == [[0, 0, 1, 1]]
    assert state.favourable_round.tolist() == [[0, 1, 2, 3]]
    assert state.n_advice.tolist() == [n_advice]
    assert series(sim, "n_failures") == [0, 2, 0, 0]
    reliability = series(sim, "reliability")
    assert reliability[1] == pytest.approx(1 / 3)
    assert math.isnan(reliability[0]) and math.isnan(reliability[2])
    threshold = series(sim, "threshold")
    assert threshold[0] == pytest.approx(1 - SIGMOID_4, abs=1e-6)
    assert threshold[1:] == pytest.approx([SIGMOID_4] * 3, abs=1e-6)


def test_binary_constant_acts_on_the_same_draws_in_every_system():
    train = dataset([[-1, 0.01 * i] for i in range(30)])
    sim = engine(
        DynamicsConfig(behaviour="binary_constant", adaptation=0.5),
        train,
        generators={"a": ToGoal([1.0, None]), "b": ToGoal([1.0, 1.0])},
        n_repetitions=2,
        n_rounds=3,
    )
    sim.run()
    state = sim.state["logistic"]
    acted = state.acted_round.tolist()  # systems: a/0, a/1, b/0, b/1
    assert acted[0] == acted[2] and acted[1] == acted[3]
    assert acted[0] != acted[1]
    # Each agent acts when its draw allows and then moves all the way; about half each round.
    first_round = sum(a == 1 for a in acted[0])
    assert 5 < first_round < 25
    assert torch.equal(state.X[..., 0] == 1.0, state.acted_round > 0)
    never = engine(DynamicsConfig(behaviour="binary_constant", adaptation=0.0), train)
    never.run()
    assert never.state["logistic"].n_adaptations.sum() == 0
    assert bool(never.state["logistic"].pending.all())


def test_continuous_constant_effort_is_drawn_once_per_agent():
    train = dataset([[-1, 0.01 * i] for i in range(30)])
    sim = engine(
        DynamicsConfig(behaviour="continuous_constant", adaptation=0.4),
        train,
        generators={"a": ToGoal([1.0, None]), "b": ToGoal([1.0, 1.0])},
        n_rounds=2,
    )
    sim.run()
    state = sim.state["logistic"]
    effort = state.constant_effort
    assert torch.equal(effort[0], effort[1])
    assert bool(((effort > 0) & (effort < 0.4 / 20)).all())
    # Two rounds of steps of that length along x0 (scale 1): x0 = -1 + 2 * effort.
    torch.testing.assert_close(state.X[0, :, 0], -1 + 2 * effort[0], rtol=0, atol=1e-12)


# --- retraining schedules, windows and augmentation -----------------------------------------------


def weights_by_round(sim) -> list[torch.Tensor]:
    weights = []

    def before(t):
        weights.append(next(iter(sim.classifiers.values())).nets.flat.clone())

    spy(sim, "_decision_phase", before=before)
    return weights


@pytest.mark.parametrize(
    ("retraining", "generator", "rounds"),
    [
        (Retraining(), "goal", [1, 2, 3, 4, 5, 6]),
        (Retraining(schedule="every_n", every=2), "goal", [2, 4, 6]),
        (Retraining(schedule="every_n", every=4), "goal", [4]),
        (Retraining(schedule="never"), "goal", []),
        # Nobody moves under the control, so one new label a round (the newcomer): retrain
        # whenever the count since the last retraining reaches n.
        (Retraining(schedule="labels", labels=3), "none", [3, 6]),
        (Retraining(schedule="labels", labels=2), "none", [2, 4, 6]),
    ],
)
def test_retraining_schedules(retraining, generator, rounds):
    generators = {"goal": ToGoal([1.0, None]), "none": NoRecourseGenerator()}
    sim = engine(
        DynamicsConfig(retraining=retraining),
        dataset(INITIAL, y=[1, 0, 0, 1]),
        model=FixedLogistic(retrain_epochs=1),
        generators={generator: generators[generator]},
        arrivals=[batch([[(-1) ** i, 0.1 * i] for i in range(6)], [1, 2, 3, 4, 5, 6])],
        n_rounds=6,
    )
    weights = weights_by_round(sim)
    sim.run()
    assert torch.equal(weights[0], torch.tensor([4.0, 0.0, 0.0]))  # the hand-set weights
    changed = [t for t in range(1, 7) if not torch.equal(weights[t], weights[t - 1])]
    assert changed == rounds
    final = next(iter(sim.classifiers.values())).nets.flat
    assert torch.equal(final, weights[-1])


class QuickLogistic(FixedLogistic):
    """Hand-set weights, retrained hard enough (3 epochs, learning rate 0.2) to move quickly."""

    def __init__(self, weight=(1.0, 0.5)):
        LogisticRegression.__init__(
            self, pretrain={"epochs": 0}, retrain={"epochs": 3, "learning_rate": 0.2}
        )
        self.weight, self.bias = weight, 0.0


def test_adding_the_control_leaves_the_other_systems_retraining_unchanged():
    # CONVENTIONS.md rule 7 and the module docstring: adding the no-recourse control never
    # changes another system's rows. Here the control's own classifier drifts, one of its agents
    # becomes favourable and leaves it in round 5, a round in which nothing changed for "goal";
    # "goal" must not retrain because of that.
    train = dataset(
        [[-0.6, -0.5], [0.3, 0.8], [0.5, -0.2], [-0.5, -0.1], [0.3, -0.7]], y=[0, 1, 0, 1, 0]
    )
    dynamics = DynamicsConfig(exits="favourable", delay=3, delay_distribution="geometric")
    runs = {}
    for generators in (("goal",), ("goal", "none")):
        pool = {"goal": ToGoal([1.0, None]), "none": NoRecourseGenerator()}
        sim = engine(
            dynamics,
            train,
            model=QuickLogistic(),
            generators={name: pool[name] for name in generators},
            n_rounds=8,
        )
        weights = weights_by_round(sim)
        sim.run()
        metrics = sim.recorder.metrics
        runs[generators] = (
            [t for t in range(1, 9) if not torch.equal(weights[t], weights[t - 1])],
            metrics[metrics.generator == "goal"].reset_index(drop=True),
            sim.classifiers["logistic"].nets.flat,
        )
    alone, with_control = runs[("goal",)], runs[("goal", "none")]
    assert alone[0] == [1, 3, 4, 7]  # the rounds in which a row of "goal" changed
    assert with_control[0] == alone[0]
    pd.testing.assert_frame_equal(with_control[1], alone[1])
    assert torch.equal(with_control[2], alone[2])


def training_rows(sim):
    """What each retraining job of a round trains on: ``(x1, y, x0)`` lists (x1 names agents).

    Returns the per-round record and the ``train_jobs`` stand-in that fills it.
    """
    seen: dict[int, list] = {}
    current = {}
    original = engine_module.train_jobs

    def recording(jobs, workers=None):
        if "round" in current:
            for _, X, y, _, _ in jobs:
                seen.setdefault(current["round"], []).append(
                    (X[0, :, 1].tolist(), y[0].tolist(), X[0, :, 0].tolist())
                )
        return original(jobs, workers)

    spy(
        sim,
        "_retraining_phase",
        before=lambda t: current.update(round=t),
        after=lambda t: current.pop("round"),
    )
    return seen, recording


def retrained_on(sim, monkeypatch) -> dict[int, tuple]:
    """Run ``sim`` and return, per retraining round, its one job's ``(x1, y, x0)`` rows."""
    seen, recording = training_rows(sim)
    monkeypatch.setattr(engine_module, "train_jobs", recording)
    sim.run()
    assert all(len(jobs) == 1 for jobs in seen.values())
    return {t: jobs[0] for t, jobs in seen.items()}


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        # The agents present at the retraining (after this round's exits, moves and arrivals).
        ("current", {1: [0.2, 0.3, 0.4, 0.5, 0.6], 2: [0.5], 3: [0.7, 0.8, 0.9], 4: [0.7, 0.8]}),
        # Everyone who ever entered, including those who left.
        (
            "all",
            {
                1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                2: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                3: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                4: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            },
        ),
    ],
)
def test_training_windows_with_exits(window, expected, monkeypatch):
    sim = engine(
        DynamicsConfig(exits="favourable", retraining=Retraining(window=window)),
        dataset(INITIAL),
        arrivals=ARRIVALS[:1],
    )
    rows = retrained_on(sim, monkeypatch)
    assert {t: x1 for t, (x1, _, _) in rows.items()} == expected


@pytest.mark.parametrize(
    ("window_rounds", "expected"),
    [
        # Rows changed (moved or entered) in this round only.
        (1, {1: [0.2, 0.3, 0.4], 2: [0.5], 3: [0.6], 4: [0.6]}),
        # ... or in the one before.
        # ... or in the one before (round 0 included: the initial agents entered then).
        (2, {1: [0.1, 0.2, 0.3, 0.4], 2: [0.2, 0.3, 0.4, 0.5], 3: [0.5, 0.6], 4: [0.6]}),
    ],
)
def test_recent_window(window_rounds, expected, monkeypatch):
    # Nobody leaves. Round 1: A1..A3 move. Round 2: N0 (favourable) enters. Round 3: N1
    # (rejected) enters. Round 4: N1 moves.
    sim = engine(
        DynamicsConfig(retraining=Retraining(window="recent", window_rounds=window_rounds)),
        dataset(INITIAL),
        arrivals=[batch([[1, 0.5], [-1, 0.6]], [2, 3])],
    )
    rows = retrained_on(sim, monkeypatch)
    assert {t: x1 for t, (x1, _, _) in rows.items()} == expected


def test_counterfactual_data_augmentation_adds_this_rounds_advice_as_positives(monkeypatch):
    sim = engine(
        DynamicsConfig(exits="favourable", retraining=Retraining(augmentation=True)),
        dataset(INITIAL),
        arrivals=ARRIVALS[:1],
    )
    rows = retrained_on(sim, monkeypatch)
    # The current window, then one favourable row per agent advised since the last retraining
    # (every round here): its counterfactual (x0 = 1, its own x1).
    current = {1: [0.2, 0.3, 0.4, 0.5, 0.6], 2: [0.5], 3: [0.7, 0.8, 0.9], 4: [0.7, 0.8]}
    advised = {1: [0.2, 0.3, 0.4], 2: [0.5], 3: [], 4: [0.7, 0.8]}
    for t, (x1, y, x0) in rows.items():
        n = len(current[t])
        assert x1 == current[t] + advised[t]
        assert y[n:] == [1] * len(advised[t])
        assert x0[n:] == [1.0] * len(advised[t])


def test_augmentation_collects_the_advice_of_every_round_since_the_last_retraining(monkeypatch):
    sim = engine(
        DynamicsConfig(
            retraining=Retraining(schedule="every_n", every=2, augmentation=True),
        ),
        dataset(INITIAL),
        arrivals=[batch([[-1, 0.5], [-1, 0.6]], [1, 2])],
    )
    rows = retrained_on(sim, monkeypatch)
    assert sorted(rows) == [2, 4]
    # Round 2: all six present, plus A1..A3 (advised in round 1) and N0 (advised in round 2).
    x1, y, _ = rows[2]
    assert x1 == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.3, 0.4, 0.5]
    assert y[6:] == [1, 1, 1, 1]
    # Round 4: N1 was advised in round 3; nobody else since round 2.
    x1, y, _ = rows[4]
    assert x1 == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.6]
    assert y[6:] == [1]


# --- who gets advice ------------------------------------------------------------------------------


def selections(sim) -> list:
    """Per round: each system's eligible agents, chosen agents and pool sizes."""
    log = []
    original = sim._selection

    def recording(t):
        eligible = {name: sim._eligible(state).clone() for name, state in sim.state.items()}
        chosen, pools = original(t)
        log.append((t, eligible["logistic"], chosen["logistic"], pools["logistic"]))
        return chosen, pools

    sim._selection = recording
    return log


def test_per_system_selection_draws_round_fraction_of_each_systems_eligible():
    train = dataset([[-1, 0.1 * i] for i in range(10)])
    sim = engine(
        DynamicsConfig(advice=Advice(selection="per_system"), exits="favourable"),
        train,
        # "a" makes its agents favourable (they leave); "b" moves them but leaves them rejected.
        generators={"a": ToGoal([1.0, None]), "b": ToGoal([-0.5, None])},
        n_repetitions=2,
        fraction=0.25,
        n_rounds=3,
    )
    log = selections(sim)
    sim.run()
    systems = sim.systems["logistic"]
    for _, eligible, chosen, pools in log:
        for system in systems:
            s = system.slot
            n_eligible = int(eligible[s].sum())
            assert pools[s] == n_eligible
            assert len(chosen[s]) == round(0.25 * n_eligible)  # 2.5 -> 2, 2 -> 2, 1.5 -> 2
            assert bool(eligible[s, torch.as_tensor(chosen[s])].all())
        for rep in (0, 1):
            a, b = (s.slot for s in systems if s.repetition == rep)
            if torch.equal(eligible[a], eligible[b]):
                assert chosen[a].tolist() == chosen[b].tolist()
            elif not bool((eligible[a] & ~eligible[b]).any()) and bool(
                eligible[a, torch.as_tensor(chosen[b])].all()
            ):
                # The same keyed draws: b's lowest draws are eligible in a, so a's lowest too.
                assert chosen[a].tolist() == chosen[b].tolist()
    first = log[0]
    assert [len(c) for c in first[2]] == [2, 2, 2, 2]
    assert [int(n) for n in first[1].sum(1)] == [10, 10, 10, 10]
    assert [int(n) for n in log[2][1].sum(1)] == [6, 6, 10, 10]  # 10 - 2 - 2 left under "a"
    assert first[2][0].tolist() != first[2][1].tolist()  # repetitions draw apart
    rows = sim.recorder.recourse
    assert rows.n_chosen.tolist() == [len(c) for _, _, chosen, _ in log for c in chosen]


def test_shared_selection_advises_the_same_agents_in_every_system():
    train = dataset([[-1, 0.1 * i] for i in range(10)])
    sim = engine(
        DynamicsConfig(record=True),
        train,
        generators={"a": ToGoal([-0.5, None]), "b": ToGoal([-0.6, None])},
        n_repetitions=2,
        fraction=0.25,
        n_rounds=3,
    )
    log = selections(sim)
    sim.run()
    for _, _, chosen, pools in log:
        assert pools == [10, 10, 10, 10]
        assert chosen[0].tolist() == chosen[2].tolist() and len(chosen[0]) == 2
        assert chosen[1].tolist() == chosen[3].tolist() and len(chosen[1]) == 2


def test_recipients_all_advises_every_eligible_agent():
    train = dataset([[-1, 0.1 * i] for i in range(10)] + [[1, 2.0]])
    sim = engine(DynamicsConfig(advice=Advice(recipients="all")), train, fraction=0.05)
    log = selections(sim)
    sim.run()
    assert log[0][2][0].tolist() == list(range(10))
    recourse = sim.recorder.recourse
    assert recourse.n_candidates.tolist() == [10, 0, 0, 0]
    assert recourse.n_chosen.tolist() == [10, 0, 0, 0]


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(st.sampled_from([-1.0, -0.2, 0.3, 1.0]), min_size=1, max_size=6),
    counts=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    exits=st.sampled_from(["stay", "favourable"]),
    policy=st.sampled_from(["threshold", "top_k", "quantile"]),
    delay=st.integers(0, 2),
    compliance=st.sampled_from([1.0, 0.5]),
)
def test_population_size_and_entry_properties(initial, counts, exits, policy, delay, compliance):
    train = dataset([[x0, 0.01 * i] for i, x0 in enumerate(initial)])
    rounds = np.repeat(np.arange(1, 5), counts)
    newcomers = [[(-1.0) ** i, 1 + 0.01 * i] for i in range(len(rounds))]
    sim = engine(
        DynamicsConfig(
            exits=exits,
            decision=Decision(policy=policy, k=2, share=0.5),
            delay=delay,
            compliance=compliance,
            record=True,
        ),
        train,
        arrivals=[batch(newcomers, rounds)] if len(rounds) else None,
    )
    early = []

    def at_decision(t):
        state = sim.state["logistic"]
        early.append(bool((state.favourable & (state.entered > t)).any()))
        early.append(bool((state.active & (state.entered > t)).any()))

    spy(sim, "_decision_phase", after=at_decision)
    sim.run()
    assert not any(early)
    favourable = series(sim, "n_favourable")
    exits_each = [0] + (favourable[:-1] if exits == "favourable" else [0] * 4)
    expected = len(initial) + np.cumsum([0, *counts]) - np.cumsum(exits_each)
    assert series(sim, "n_active") == expected.tolist()
    assert series(sim, "n_arrivals") == [len(initial), *counts]
    assert series(sim, "n_exits") == exits_each
    agents = sim.recorder.tables["agents.csv"]
    assert agents.entered_round.tolist() == [0] * len(initial) + rounds.tolist()
    reached = agents.favourable_round.dropna()
    assert (reached >= agents.entered_round[reached.index]).all()


def reference_run(directory: Path, dynamics, seed: int, fraction: float, n_rounds: int):
    data = blobs(n_per_class=20, std=0.4, seed=3)
    train, test = train_test_split(data, 0.2, np.random.default_rng(0))
    RecourseSimulation(
        train,
        test,
        models={"logistic": LogisticRegression(pretrain={"epochs": 20}, retrain={"epochs": 1})},
        generators={"generic": GenericGenerator(max_iter=20), "none": NoRecourseGenerator()},
        metrics={
            "mmd": DomainMMD(n_samples=50),
            "disagreement": Disagreement(),
            "f1": F1Change(),
        },
        config=SimulationConfig(
            n_rounds=n_rounds,
            n_repetitions=2,
            recourse_fraction=fraction,
            evaluate_every=1,
            n_permutations=0,
        ),
        streams=RandomStreams(seed),
        recorder=Recorder(directory),
        progress=False,
        dynamics=dynamics,
    ).run()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    fraction=st.sampled_from([0.1, 0.3, 1.0]),
    n_rounds=st.integers(1, 3),
)
def test_recording_the_reference_loop_leaves_its_outputs_unchanged(
    seed, fraction, n_rounds, tmp_path_factory
):
    base = tmp_path_factory.mktemp("reference")
    reference_run(base / "default", None, seed, fraction, n_rounds)
    # The reference values, written out, with agent tracking switched on.
    explicit = DynamicsConfig(compliance=1.0, delay=0, behaviour="full", record=True)
    reference_run(base / "recorded", explicit, seed, fraction, n_rounds)
    for name in REFERENCE_FILES[1:]:
        assert (base / "default" / name).read_bytes() == (base / "recorded" / name).read_bytes()
    default = (base / "default" / "metrics.csv").read_text().splitlines()
    recorded = (base / "recorded" / "metrics.csv").read_text().splitlines()
    assert [line for line in recorded if ",dynamics," not in line] == default
    assert len(recorded) > len(default)
    assert not (base / "default" / "agents.csv").exists()
    assert (base / "recorded" / "agents.csv").exists()


# --- the command line -----------------------------------------------------------------------------


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def status_of(overrides: list[str], run_dir: Path, capsys) -> tuple[int, str]:
    """The exit status and stderr the command line would give for these overrides."""
    try:
        cfg = compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return 2, str(error)  # the command line reports these with status 2
    status = execute(cfg, output_dir=run_dir)
    return status, capsys.readouterr().err


def test_recourse_over_time_preset_runs_and_writes_agents(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            "+experiment=recourse_over_time",
            "simulation.n_repetitions=2",
            "simulation.n_rounds=8",
            "report.figures=false",
            "progress=false",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    agents = pd.read_csv(run_dir / "agents.csv")
    assert list(agents.columns) == AGENT_COLUMNS
    assert set(agents.repetition) == {0, 1}
    # 10 newcomers a round for 8 rounds on top of the initial agents, per repetition.
    n_initial = int((agents[agents.repetition == 0].entered_round == 0).sum())
    assert (agents.groupby("repetition").size() == n_initial + 80).all()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    dynamics = metrics[metrics.scope == "dynamics"]
    reliability = dynamics[dynamics.metric == "reliability"]
    assert len(reliability) == 2 * 9  # one row per round and repetition
    assert reliability.value.notna().any()
    assert reliability.value.dropna().between(0, 1).all()

    def per_round(metric: str) -> pd.Series:
        return dynamics[dynamics.metric == metric].set_index(["repetition", "round"]).value

    # Ten loans a round, winners leave, ten newcomers a round: the population stays the same.
    assert (per_round("n_favourable") == 10).all()
    assert (per_round("n_active") == n_initial).all()
    later = per_round("n_exits").xs(1, level="round")
    assert (later == 10).all() and (per_round("n_arrivals").xs(3, level="round") == 10).all()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dynamics.decision.policy=best", "dynamics.decision.policy"),
        ("dynamics.compliance=1.5", "dynamics.compliance"),
        ("dynamics.compliance=0", "dynamics.compliance"),
        ("dynamics.arrivals.per_round=-1", "dynamics.arrivals.per_round"),
        ("dynamics.arrivals.kind=sometimes", "dynamics.arrivals.kind"),
        ("dynamics.behaviour=lazy", "dynamics.behaviour"),
        ("dynamics.delay=1.5", "dynamics.delay"),
        ("dynamics.delay_distribution=uniform", "dynamics.delay_distribution"),
        ("dynamics.retraining.schedule=sometimes", "dynamics.retraining.schedule"),
        ("dynamics.decision.k=0", "dynamics.decision.k"),
        ("dynamics.foo=1", "dynamics.foo"),
        ("+dynamics.foo=1", "dynamics.foo"),
        ("+dynamics.retraining.bar=1", "dynamics.retraining.bar"),
        # A linear-only generator is refused before pre-training, not after it.
        ("model=mlp generator=n_feature", "generator.n_feature"),
    ],
)
def test_bad_dynamics_values_exit_2_naming_the_key(override, key, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, message = status_of([*SMOKE, "processes=1", *override.split()], run_dir, capsys)
    assert status == 2, message
    assert key in message
    assert "Traceback" not in message
    assert not (run_dir / "metrics.csv").exists()


def test_bad_dynamics_value_on_the_real_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recourse_sim",
            *SMOKE,
            "dynamics.behaviour=lazy",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "dynamics.behaviour" in result.stderr and "continuous_flexible" in result.stderr
    assert "Traceback" not in result.stderr


POOL_TOO_SMALL = [
    "+experiment=credit",
    "data.n_samples=200",
    "dynamics.arrivals.per_round=1000",
    *SMOKE,
    "processes=1",
]


def test_a_table_too_small_for_the_arrivals_is_refused_before_any_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, message = status_of(POOL_TOO_SMALL, run_dir, capsys)
    assert status == 2, message
    assert "dynamics.arrivals.per_round" in message
    assert "Traceback" not in message
    for name in (*REFERENCE_FILES, "agents.csv", "checkpoint.pt"):
        assert not (run_dir / name).exists(), name


def test_the_pool_error_shows_the_value_the_user_typed(tmp_path, capsys):
    # The user typed per_round=1000 (2 smoke rounds need 2000 rows); the message must show the
    # key with the user's value, not the total number of rows.
    status, message = status_of(POOL_TOO_SMALL, tmp_path / "run", capsys)
    assert status == 2
    assert "dynamics.arrivals.per_round=1000" in message, message


# --- kill -9 and resume ---------------------------------------------------------------------------

KILLED = [
    *SMOKE,
    "dynamics.delay=1",
    "dynamics.compliance=0.5",
    "dynamics.arrivals.per_round=3",
    "dynamics.exits=favourable",
    "simulation.n_rounds=12",
    "processes=1",
]


def checkpoint_round(run_dir: Path) -> int:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return -1
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["round"])
    except Exception:  # replaced while we read it: try again
        return -1


def test_kill_and_resume_give_the_files_of_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    assert execute(compose_config(KILLED), output_dir=whole) == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "recourse_sim", *KILLED, f"hydra.run.dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    reached = -1
    while time.time() < deadline and process.poll() is None:
        reached = checkpoint_round(killed)
        if reached >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert 3 <= reached < 12
    assert not (killed / "agents.csv").exists()  # written at the end only

    assert execute(compose_config([*KILLED, "resume=true"]), output_dir=killed) == 0
    names = sorted(p.name for p in whole.glob("*.csv"))
    assert {"agents.csv", *REFERENCE_FILES} <= set(names)
    assert sorted(p.name for p in killed.glob("*.csv")) == names
    for name in names:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name

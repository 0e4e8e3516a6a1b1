"""The pure parts of the time-based dynamics (issue 11), checked against hand-computed values.

Decision policies (:func:`recourse_sim.dynamics.decision.decide`), the behaviour functions'
``propose`` on hand-made :class:`ActionContext` objects, implementation delays
(:func:`recourse_sim.dynamics.delays.draw_delays`) and arrival counts
(:func:`recourse_sim.dynamics.arrivals.arrival_counts`). The engine that uses them is tested in
``test_dynamics_engine.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recourse_sim.dynamics import BEHAVIOURS, ActionContext, arrival_counts, entry_rounds
from recourse_sim.dynamics.config import Arrivals, Decision
from recourse_sim.dynamics.decision import decide
from recourse_sim.dynamics.delays import draw_delays
from recourse_sim.utils import counter_rng

INF = math.inf


def scores(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def mask(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# --- decision policies --------------------------------------------------------------------------


def test_threshold_is_strictly_greater_and_skips_inactive_agents():
    favourable, threshold = decide(
        scores([0.5, 0.5000001, 0.2, 0.9, 0.99]),
        mask([1, 1, 1, 1, 0]),
        Decision(policy="threshold"),
    )
    # 0.5 itself is rejected (Julia's round-half-to-even); the inactive 0.99 is never favourable.
    assert favourable.tolist() == [[False, True, False, True, False]]
    assert threshold.tolist() == [0.5]


def test_threshold_policy_uses_its_configured_cut_off_per_system():
    favourable, threshold = decide(
        scores([0.3, 0.7, 0.71], [0.8, 0.1, 0.7]),
        mask([1, 1, 1], [1, 1, 1]),
        Decision(policy="threshold", threshold=0.7),
    )
    assert favourable.tolist() == [[False, False, True], [True, False, False]]
    assert threshold.tolist() == [0.7, 0.7]


def test_top_k_gives_the_k_highest_scores_and_ties_go_to_the_lower_index():
    favourable, threshold = decide(
        scores([0.3, 0.8, 0.8, 0.8, 0.1, 0.95]),
        mask([1, 1, 1, 1, 1, 0]),  # the inactive 0.95 takes no slot
        Decision(policy="top_k", k=2),
    )
    assert favourable.tolist() == [[False, True, True, False, False, False]]
    assert threshold.tolist() == [0.8]  # the lowest winning score


def test_top_k_threshold_is_the_lowest_winning_score():
    favourable, threshold = decide(
        scores([0.6, 0.2, 0.9, 0.4, 0.7]), mask([1, 1, 1, 1, 1]), Decision(policy="top_k", k=3)
    )
    assert favourable.tolist() == [[True, False, True, False, True]]
    assert threshold.tolist() == [0.6]


def test_top_k_with_fewer_agents_than_slots_makes_everyone_favourable():
    favourable, threshold = decide(
        scores([0.1, 0.05, 0.3, 0.9], [0.4, 0.2, 0.6, 0.8]),
        mask([1, 1, 1, 0], [0, 0, 0, 0]),
        Decision(policy="top_k", k=10),
    )
    assert favourable.tolist() == [[True, True, True, False], [False, False, False, False]]
    # The lowest score among the three active agents; nobody active: undefined.
    assert threshold[0].item() == 0.05
    assert math.isnan(threshold[1].item())


@pytest.mark.parametrize(
    ("share", "n_active", "k"),
    [
        (0.5, 5, 2),  # 2.5 -> 2 (half to even)
        (0.5, 7, 4),  # 3.5 -> 4 (half to even)
        (0.25, 10, 2),  # 2.5 -> 2
        (0.3, 10, 3),
        (0.1, 4, 0),  # 0.4 -> 0: nobody
        (1.0, 6, 6),
    ],
)
def test_quantile_gives_round_share_times_active_agents(share, n_active, k):
    C = 12
    values = torch.linspace(0.1, 1.2, C, dtype=torch.float64).flip(0).unsqueeze(0)  # descending
    active = torch.zeros(1, C, dtype=torch.bool)
    active[0, C - n_active :] = True  # the lowest scores are the active ones
    favourable, threshold = decide(values, active, Decision(policy="quantile", share=share))
    expected = torch.zeros(1, C, dtype=torch.bool)
    expected[0, C - n_active : C - n_active + k] = True
    assert favourable.tolist() == expected.tolist()
    if k:
        assert threshold.item() == values[0, C - n_active + k - 1].item()
    else:
        assert math.isnan(threshold.item())


def test_quantile_counts_each_systems_own_active_agents():
    values = scores([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    active = mask([1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1])
    favourable, threshold = decide(values, active, Decision(policy="quantile", share=0.5))
    # round(2.5) = 2 in the first system, round(3.5) = 4 in the second.
    assert favourable.sum(1).tolist() == [2, 4]
    assert threshold.tolist() == [0.8, 0.6]


def test_no_active_agent_means_no_favourable_decision_and_an_undefined_threshold():
    for policy in ("top_k", "quantile"):
        favourable, threshold = decide(scores([0.9, 0.8]), mask([0, 0]), Decision(policy=policy))
        assert not favourable.any()
        assert math.isnan(threshold.item())


# --- behaviours ----------------------------------------------------------------------------------


def context(
    X,
    target,
    due,
    *,
    score=None,
    threshold=0.5,
    effort=None,
    adaptation=1.0,
    scale=None,
    lower=None,
    upper=None,
    proba=None,
    uniform=None,
    normal=None,
) -> ActionContext:
    """One system (S = 1) of hand-made agents."""
    X = torch.tensor([X], dtype=torch.float64)
    target = torch.tensor([target], dtype=torch.float64)
    _, C, d = X.shape
    return ActionContext(
        X=X,
        target=target,
        due=torch.tensor([due], dtype=torch.bool),
        score=torch.tensor([score if score is not None else [0.2] * C], dtype=torch.float64),
        threshold=torch.tensor([[threshold]], dtype=torch.float64),
        effort=torch.tensor([effort if effort is not None else [0.0] * C], dtype=torch.float64),
        adaptation=adaptation,
        scale=torch.tensor(scale or [1.0] * d, dtype=torch.float64),
        lower=torch.tensor(lower or [-INF] * d, dtype=torch.float64),
        upper=torch.tensor(upper or [INF] * d, dtype=torch.float64),
        proba=proba or (lambda points: torch.full(points.shape[:-1], 0.2, dtype=torch.float64)),
        uniform=uniform or (lambda stream: torch.full((1, C), 0.5, dtype=torch.float64)),
        normal=normal or (lambda stream: torch.zeros(1, C, dtype=torch.float64)),
    )


def propose(name: str, ctx: ActionContext) -> list:
    return BEHAVIOURS[name]().propose(ctx)[0].tolist()


def test_every_behaviour_is_registered():
    assert {"full", "binary_constant", "continuous_constant", "continuous_flexible"} <= set(
        BEHAVIOURS
    )


def test_full_moves_due_agents_to_their_targets_and_leaves_the_others():
    ctx = context([[0, 0], [1, 1], [2, 2]], [[3, 4], [5, 5], [6, 6]], [True, False, True])
    assert propose("full", ctx) == [[3, 4], [1, 1], [6, 6]]


@pytest.mark.parametrize("draw", [1e-9, 0.5, 1 - 1e-9])
def test_binary_constant_with_adaptation_zero_never_moves(draw):
    ctx = context(
        [[0, 0], [1, 1]],
        [[3, 4], [5, 5]],
        [True, True],
        adaptation=0.0,
        uniform=lambda stream: torch.full((1, 2), draw, dtype=torch.float64),
    )
    assert propose("binary_constant", ctx) == [[0, 0], [1, 1]]


@pytest.mark.parametrize("draw", [1e-9, 0.5, 1 - 1e-9])
def test_binary_constant_with_adaptation_one_moves_all_the_way(draw):
    ctx = context(
        [[0, 0], [1, 1], [2, 2]],
        [[3, 4], [5, 5], [6, 6]],
        [True, True, False],
        adaptation=1.0,
        uniform=lambda stream: torch.full((1, 3), draw, dtype=torch.float64),
    )
    assert propose("binary_constant", ctx) == [[3, 4], [5, 5], [2, 2]]


def test_binary_constant_acts_where_the_uniform_draw_is_below_adaptation():
    draws = torch.tensor([[0.2, 0.6, 0.4, 0.1]], dtype=torch.float64)
    ctx = context(
        [[0, 0], [1, 1], [2, 2], [3, 3]],
        [[3, 4], [5, 5], [6, 6], [7, 7]],
        [True, True, True, False],
        adaptation=0.5,
        uniform=lambda stream: draws,
    )
    # 0.2 and 0.4 act, 0.6 waits, the last is not due (its 0.1 does not matter).
    assert propose("binary_constant", ctx) == [[3, 4], [1, 1], [6, 6], [3, 3]]


def test_continuous_constant_steps_in_z_score_units_and_never_past_the_target():
    ctx = context(
        [[0, 0], [0, 0], [0, 0], [0, 0], [1, 1]],
        [[3, 4], [3, 4], [6, 4], [3, 4], [4, 5]],
        [True, True, True, True, False],
        effort=[1.0, 10.0, 2.5, 0.0, 1.0],
        scale=[1.0, 1.0],
    )
    moved = propose("continuous_constant", ctx)
    assert moved[0] == pytest.approx([0.6, 0.8])  # one unit of a 3-4-5 offset
    assert moved[1] == [3, 4]  # ten units would overshoot: stops at the target
    assert moved[3] == [0, 0]  # no effort, no move
    assert moved[4] == [1, 1]  # not due


def test_continuous_constant_measures_distance_with_the_feature_scale():
    ctx = context([[0, 0]], [[6, 4]], [True], effort=[2.5], scale=[2.0, 1.0])
    # In z-scores the offset is (3, 4): five units, so 2.5 units is half way.
    assert propose("continuous_constant", ctx)[0] == pytest.approx([3.0, 2.0])


W = torch.tensor([1.0, 2.0], dtype=torch.float64)
B = -0.5


def logistic(points: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(points @ W + B)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def expected_flexible(x, target, threshold, adaptation, draw):
    """By hand: the point on the line to ``target`` where the logistic score is the target score."""
    x, target = np.asarray(x, float), np.asarray(target, float)
    score = 1 / (1 + math.exp(-(x @ W.numpy() + B)))
    sigma = adaptation / (10 * math.exp(5 * (threshold - score)))
    goal = min(score + abs(draw) * sigma, 0.999)
    direction = target - x
    step = (logit(goal) - (x @ W.numpy() + B)) / (direction @ W.numpy())
    return x + step * direction, score, goal


def test_continuous_flexible_reaches_the_drawn_target_score_along_the_advice():
    X = [[0.0, 0.0], [-1.0, 0.5], [0.2, -0.3], [-2.0, -1.0], [0.0, 0.0]]
    target = [[1.0, 1.0], [0.0, 1.0], [0.4, 0.0], [2.0, 2.0], [1.0, 1.0]]
    draws = [1.3, -0.7, 2.0, 1000.0, 1.0]
    due = [True, True, True, True, False]
    points = torch.tensor(X, dtype=torch.float64)
    threshold, adaptation = 0.6, 0.5
    ctx = context(
        X,
        target,
        due,
        score=logistic(points).tolist(),
        threshold=threshold,
        adaptation=adaptation,
        proba=logistic,
        normal=lambda stream: torch.tensor([draws], dtype=torch.float64),
    )
    moved = np.array(propose("continuous_flexible", ctx))
    for i in range(4):
        expected, score, goal = expected_flexible(X[i], target[i], threshold, adaptation, draws[i])
        np.testing.assert_allclose(moved[i], expected, rtol=0, atol=1e-9)
        # The new score is min(score + |draw| * sigma, 0.999), sigma = a / (10 exp(5 (t - s))).
        sigma = adaptation / (10 * math.exp(5 * (threshold - score)))
        assert goal == min(score + abs(draws[i]) * sigma, 0.999)
        assert float(logistic(torch.tensor(moved[i]))) == pytest.approx(goal, abs=1e-9)
    # A huge draw is capped at 0.999; the agent that is not due stays where it is.
    assert float(logistic(torch.tensor(moved[3]))) == pytest.approx(0.999, abs=1e-9)
    assert moved[4].tolist() == X[4]


def test_continuous_flexible_may_overshoot_the_counterfactual():
    # A counterfactual barely above the current score: the drawn gain goes past it, on the line.
    X, target = [[0.0, 0.0]], [[0.1, 0.0]]
    score = float(logistic(torch.tensor(X[0], dtype=torch.float64)))
    ctx = context(
        X,
        target,
        [True],
        score=[score],
        threshold=0.5,
        adaptation=1.0,
        proba=logistic,
        normal=lambda stream: torch.tensor([[3.0]], dtype=torch.float64),
    )
    moved = propose("continuous_flexible", ctx)[0]
    expected, _, _ = expected_flexible(X[0], target[0], 0.5, 1.0, 3.0)
    assert moved[0] > 0.1 and moved[1] == 0.0
    assert moved == pytest.approx(expected.tolist(), abs=1e-9)


def test_continuous_flexible_is_clipped_to_the_feature_bounds():
    X, target = [[0.0, 0.0]], [[1.0, 1.0]]
    score = float(logistic(torch.tensor(X[0], dtype=torch.float64)))
    ctx = context(
        X,
        target,
        [True],
        score=[score],
        threshold=0.6,
        adaptation=0.5,
        upper=[INF, 0.02],
        lower=[-INF, -INF],
        proba=logistic,
        normal=lambda stream: torch.tensor([[2.0]], dtype=torch.float64),
    )
    moved = propose("continuous_flexible", ctx)[0]
    expected, _, _ = expected_flexible(X[0], target[0], 0.6, 0.5, 2.0)
    assert expected[1] > 0.02  # the line search went past the bound ...
    assert moved == pytest.approx([expected[0], 0.02], abs=1e-9)  # ... and the point is clipped


def test_continuous_flexible_leaves_agents_with_nothing_to_gain():
    X = [[0.0, 0.0], [0.5, 0.5]]
    ctx = context(
        X,
        [[1.0, 1.0], [0.5, 0.5]],  # the second is at its counterfactual already
        [True, True],
        score=logistic(torch.tensor(X, dtype=torch.float64)).tolist(),
        proba=logistic,
        normal=lambda stream: torch.zeros(1, 2, dtype=torch.float64),  # no gain drawn
    )
    assert propose("continuous_flexible", ctx) == X


# --- delays ----------------------------------------------------------------------------------


def test_fixed_delays_are_the_mean():
    u = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
    assert draw_delays(u, 3, "fixed").tolist() == [3, 3, 3]
    for distribution in ("fixed", "geometric", "poisson"):
        assert draw_delays(u, 0, distribution).tolist() == [0, 0, 0]


def test_geometric_delays_by_hand():
    u = torch.tensor([0.5, 0.9, 0.1, 0.05], dtype=torch.float64)
    # Failures before a success of probability 1/3: floor(log u / log(2/3)).
    assert draw_delays(u, 2, "geometric").tolist() == [1, 0, 5, 7]
    assert draw_delays(u, 2, "geometric").dtype == torch.int64


def test_poisson_delays_invert_the_distribution_function():
    # F(0) = 0.1353, F(1) = 0.4060, F(2) = 0.6767, F(3) = 0.8571, F(4) = 0.9473, F(5) = 0.9834,
    # F(6) = 0.9955 for mean 2: the smallest n with F(n) >= u.
    u = torch.tensor([0.1, 0.4, 0.5, 0.95, 0.99, 0.1353], dtype=torch.float64)
    assert draw_delays(u, 2, "poisson").tolist() == [0, 1, 2, 5, 6, 0]


@pytest.mark.parametrize("distribution", ["geometric", "poisson"])
@pytest.mark.parametrize("mean", [1, 2, 5])
def test_random_delays_have_the_configured_mean(distribution, mean):
    u = counter_rng.uniform(0xDE1A, mean, torch.arange(200_000))
    delays = draw_delays(u, mean, distribution)
    assert (delays >= 0).all()
    assert delays.double().mean().item() == pytest.approx(mean, abs=0.05 * mean)
    # The share of immediate effects: P(0) = 1 / (1 + mean) or exp(-mean).
    zero = 1 / (1 + mean) if distribution == "geometric" else math.exp(-mean)
    assert (delays == 0).double().mean().item() == pytest.approx(zero, abs=0.01)


# --- arrivals --------------------------------------------------------------------------------


def test_fixed_arrivals():
    rng = np.random.default_rng(0)
    counts = arrival_counts(Arrivals(kind="fixed", per_round=3), 100, 4, rng)
    assert counts.tolist() == [3, 3, 3, 3]
    assert entry_rounds(counts).tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_relative_arrivals_by_hand_with_half_to_even_rounding():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    counts = arrival_counts(Arrivals(kind="relative", per_round=0.5), 5, 4, rng)
    # 0.5 * 5 = 2.5 -> 2; 0.5 * 7 = 3.5 -> 4; 0.5 * 11 = 5.5 -> 6; 0.5 * 17 = 8.5 -> 8.
    assert counts.tolist() == [2, 4, 6, 8]
    assert rng.bit_generator.state == before  # nothing random about it
    counts = arrival_counts(Arrivals(kind="relative", per_round=0.25), 10, 4, rng)
    # 2.5 -> 2; 0.25 * 12 = 3; 0.25 * 15 = 3.75 -> 4; 0.25 * 19 = 4.75 -> 5.
    assert counts.tolist() == [2, 3, 4, 5]


def test_poisson_arrivals_have_the_configured_mean():
    rng = np.random.default_rng(1)
    counts = np.stack(
        [arrival_counts(Arrivals(kind="poisson", per_round=2.5), 10, 50, rng) for _ in range(200)]
    )
    assert counts.shape == (200, 50)
    assert (counts >= 0).all()
    assert counts.mean() == pytest.approx(2.5, abs=0.05)
    assert counts.var() == pytest.approx(2.5, abs=0.2)


@pytest.mark.parametrize("kind", ["fixed", "relative", "poisson"])
def test_zero_arrivals(kind):
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    counts = arrival_counts(Arrivals(kind=kind, per_round=0), 50, 6, rng)
    assert counts.tolist() == [0] * 6
    assert rng.bit_generator.state == before
    assert entry_rounds(counts).tolist() == []


def test_entry_rounds_of_uneven_counts():
    assert entry_rounds(np.array([2, 0, 1])).tolist() == [1, 1, 3]

"""Shift metrics against hand-computed values, direct formulas and the reference's rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import direct_mmd2
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recourse_sim.errors import ConfigError
from recourse_sim.metrics import (
    Decisiveness,
    Disagreement,
    DomainMMD,
    EvaluationContext,
    F1Change,
    MetricResult,
    ModelMMD,
    ModelMMDGrid,
    Perturbation,
)
from recourse_sim.metrics import mmd as mmd_module
from recourse_sim.metrics.mmd import (
    gaussian_kernel,
    mmd2_linear,
    mmd2_unbiased,
    mmd_permutation_test,
    permutation_chunks,
    subsample,
)
from recourse_sim.metrics.performance import macro_f1

CONFIG_DIR = Path(__file__).parents[1] / "recourse_sim" / "configs"
METRIC_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "metrics").glob("*.yaml"))
e = math.exp


# --- MMD ------------------------------------------------------------------------------------


def test_kernel_is_exp_minus_two_d_squared_at_length_scale_half():
    assert gaussian_kernel([0.0], [1.0])[0, 0] == pytest.approx(e(-2))
    assert gaussian_kernel([[0.0, 0.0]], [[1.0, 1.0]])[0, 0] == pytest.approx(e(-4))
    assert gaussian_kernel([0.0], [1.0], length_scale=1.0)[0, 0] == pytest.approx(e(-0.5))


def test_mmd_two_by_two_points_by_hand():
    # x = {0, 1}, y = {0, 2}, k = exp(-2 d²): K_xx off-diagonal e^-2 (twice, / 2·1), K_yy e^-8,
    # K_xy = k(0,0) + k(0,2) + k(1,0) + k(1,2) = 1 + e^-8 + e^-2 + e^-2 (/ 2·2).
    expected = e(-2) + e(-8) - 2 * (1 + e(-8) + 2 * e(-2)) / 4
    assert mmd2_unbiased([0.0, 1.0], [0.0, 2.0]) == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx(e(-8) / 2 - 0.5)
    assert expected < 0  # unbiased and not clipped
    # x = {0, 1}, y = {3, 4}: K_xy = e^-18 + e^-32 + e^-8 + e^-18.
    expected = 2 * e(-2) - 2 * (2 * e(-18) + e(-32) + e(-8)) / 4
    assert mmd2_unbiased([0.0, 1.0], [3.0, 4.0]) == pytest.approx(expected, abs=1e-15)


def test_mmd_matches_double_loop_and_can_be_negative():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3))
    assert mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), abs=1e-12)
    assert mmd2_unbiased(x, y, 2.0) == pytest.approx(direct_mmd2(x, y, 2.0), abs=1e-12)
    # Two samples of one distribution: estimates scatter around zero, some below it.
    same = [mmd2_unbiased(rng.normal(size=(10, 2)), rng.normal(size=(10, 2))) for _ in range(20)]
    assert min(same) < 0
    shifted = mmd2_unbiased(rng.normal(size=(30, 2)), rng.normal(2.0, 1, size=(30, 2)))
    assert shifted > max(same)


def test_mmd_accepts_one_feature_as_1d_and_checks_shapes():
    v, w = np.array([0.1, 0.4, 0.9]), np.array([0.2, 0.8])
    assert mmd2_unbiased(v, w) == pytest.approx(mmd2_unbiased(v[:, None], w[:, None]))
    assert mmd2_unbiased(v, w) == pytest.approx(direct_mmd2(v, w), abs=1e-15)
    with pytest.raises(ValueError, match="features"):
        mmd2_unbiased(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased([0.0], [1.0, 2.0])


def test_mmd_is_exact_far_from_the_origin():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(5, 2))
    assert mmd2_unbiased(x + 1e4, y + 1e4) == pytest.approx(mmd2_unbiased(x, y), abs=1e-9)


def naive_null(x, y, perms):
    pooled, m = np.vstack([x, y]), len(x)
    return np.array([mmd2_unbiased(pooled[p[:m]], pooled[p[m:]]) for p in perms])


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 50])
def test_permutation_test_equals_naive_loop_over_the_same_permutations(chunk_size):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 2)), rng.normal(0.3, 1, size=(9, 2))
    value, p_value = mmd_permutation_test(x, y, 50, np.random.default_rng(7), chunk_size=chunk_size)
    # The permutations are one sequence of draws, whatever the chunking.
    perms = np.vstack(list(permutation_chunks(21, 50, np.random.default_rng(7), 13)))
    null = naive_null(x, y, perms)
    assert value == pytest.approx(direct_mmd2(x, y), abs=1e-12)
    assert p_value == np.mean(null >= value)
    assert 0 < p_value < 1


def test_permutation_test_in_kernel_blocks_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 1)), rng.normal(0.4, 1, size=(8, 1))
    whole_rng, blocked_rng = np.random.default_rng(3), np.random.default_rng(3)
    whole = mmd_permutation_test(x, y, 40, whole_rng)
    monkeypatch.setattr(mmd_module, "KERNEL_BYTES", 8 * 18 * 4)  # blocks of four columns
    blocked = mmd_permutation_test(x, y, 40, blocked_rng, chunk_size=6)
    assert blocked[0] == pytest.approx(whole[0], abs=1e-12)
    assert blocked[1] == whole[1]
    # Replaying the draws per block leaves the generator where one pass would.
    assert blocked_rng.random() == whole_rng.random()


def test_permutation_p_value_small_for_a_shift_and_not_without():
    rng = np.random.default_rng(2)
    _, same = mmd_permutation_test(rng.normal(size=(60, 2)), rng.normal(size=(60, 2)), 200, rng)
    _, shifted = mmd_permutation_test(rng.normal(size=(60, 2)), rng.normal(1, 1, (60, 2)), 200, rng)
    assert shifted == 0.0  # no +1 correction, as in the reference
    assert same > 0.05


def test_no_permutations_no_p_value():
    value, p_value = mmd_permutation_test([0.0, 1.0], [0.0, 2.0], 0, None)
    assert p_value is None
    assert value == pytest.approx(mmd2_unbiased([0.0, 1.0], [0.0, 2.0]))


def test_subsampling_rule():
    rng = np.random.default_rng(0)
    x, y = np.arange(10.0)[:, None], np.arange(100.0, 130.0)[:, None]
    sx, sy = subsample(x, y, 1000, rng)
    assert sx is x and len(sy) == 10  # n = min(|x|, n_samples): y is cut to |x| too
    assert len(np.unique(sy)) == 10 and set(sy[:, 0]) <= set(y[:, 0])
    sx, sy = subsample(x, y, 4, rng)
    assert len(sx) == 4 and len(sy) == 4
    assert len(np.unique(sx)) == 4 and set(sx[:, 0]) <= set(x[:, 0])  # without replacement
    sy, sx = subsample(y, x, 20, rng)
    assert len(sy) == 20 and sx is x  # a side no larger than n is kept whole
    assert subsample(x, y, None, rng) == (x, y)


def population_mmd2(shift):
    """MMD² of N(0, 1) and N(shift, 1) for k = exp(-2 d²): E exp(-2D²) = exp(-2δ²/9)/3."""
    return 2 / 3 - 2 / 3 * math.exp(-2 * shift**2 / 9)


def test_linear_and_quadratic_estimators_are_unbiased_on_average():
    rng = np.random.default_rng(3)
    linear = [mmd2_linear(rng.normal(size=2000), rng.normal(1.0, 1, size=2000)) for _ in range(100)]
    quadratic = [
        mmd2_unbiased(rng.normal(size=40), rng.normal(1.0, 1, size=40)) for _ in range(100)
    ]
    assert np.mean(linear) == pytest.approx(population_mmd2(1.0), abs=0.01)
    assert np.mean(quadratic) == pytest.approx(population_mmd2(1.0), abs=0.01)


def test_linear_estimator_by_hand():
    # Pairs (x1,x2)=(0,1), (y1,y2)=(0,2): h = k(0,1) + k(0,2) - k(0,2) - k(1,0) = 0.
    assert mmd2_linear([0.0, 1.0], [0.0, 2.0]) == pytest.approx(0.0)
    # (x1,x2)=(0,0), (y1,y2)=(1,1): h = 1 + 1 - e^-2 - e^-2; the odd last row of y is unused.
    assert mmd2_linear([0.0, 0.0], [1.0, 1.0, 5.0]) == pytest.approx(2 - 2 * e(-2))


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, (6, 2), elements=st.floats(-3, 3)),
    arrays(np.float64, (5, 2), elements=st.floats(-3, 3)),
)
def test_mmd_is_symmetric(x, y):
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_unbiased(y, x), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, 5, elements=st.floats(0, 1)),
    arrays(np.float64, 4, elements=st.floats(0, 1)),
    st.integers(0, 2**32 - 1),
)
def test_p_value_is_a_share(x, y, seed):
    _, p_value = mmd_permutation_test(x, y, 20, np.random.default_rng(seed))
    assert 0 <= p_value <= 1


# --- metric classes on constructed contexts -------------------------------------------------


def make_context(p0, pt, *, params=None, y=None, test_y=None, n_permutations=0, rng=0):
    """A context over points 0..N-1 (one feature) whose probabilities are looked up by index."""
    p0, pt = np.asarray(p0, float), np.asarray(pt, float)
    X = np.arange(len(p0), dtype=float)[:, None]
    y = np.zeros(len(p0), int) if y is None else np.asarray(y)
    params0, params_t = params or ([np.zeros(1)], [np.zeros(1)])
    return EvaluationContext(
        reference_X=X,
        reference_y=y,
        train_X=X,
        train_y=y,
        test_X=X,
        test_y=y if test_y is None else np.asarray(test_y),
        proba_initial=lambda Z: p0[Z[:, 0].astype(int)],
        proba_current=lambda Z: pt[Z[:, 0].astype(int)],
        params_initial=params0,
        params_current=params_t,
        rng=np.random.default_rng(rng),
        n_permutations=n_permutations,
    )


def test_disagreement_by_hand():
    # Labels 0,1,1,0,0 vs 0,0,1,1,0: two of five differ.
    ctx = make_context([0.2, 0.7, 0.9, 0.3, 0.1], [0.1, 0.4, 0.8, 0.6, 0.49])
    assert Disagreement()(ctx).value == pytest.approx(0.4)


def test_disagreement_puts_a_tie_with_the_positive_side_as_the_reference_code():
    # argmax([p, 1 - p]) labels p = 0.5 like p > 0.5: (0.5, 0.6) agree, (0.5, 0.4) do not.
    assert Disagreement()(make_context([0.5, 0.5], [0.6, 0.4])).value == pytest.approx(0.5)


def test_decisiveness_code_and_paper_forms_by_hand():
    p0, pt = [0.5, 0.5, 0.9, 0.1], [0.9, 0.1, 0.9, 0.1]
    ctx = make_context(p0, pt)
    # code: | ‖(0, 0, .4, -.4)‖ - ‖(.4, -.4, .4, -.4)‖ | = |0.4√2 - 0.8|, not divided by N.
    assert Decisiveness()(ctx).value == pytest.approx(0.8 - 0.4 * math.sqrt(2))
    # paper: mean((pt - ½)²) - mean((p0 - ½)²) = 0.16 - 0.08: the current model is more decisive.
    assert Decisiveness(form="paper")(ctx).value == pytest.approx(0.08)
    assert Decisiveness(form="paper")(make_context(pt, p0)).value == pytest.approx(-0.08)
    assert Decisiveness()(make_context(pt, p0)).value == pytest.approx(0.8 - 0.4 * math.sqrt(2))


def test_perturbation_code_and_paper_forms_by_hand():
    params0 = [np.zeros((2, 2)), np.zeros(2), np.ones(1)]
    params_t = [np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([0.0, 2.0]), np.ones(1)]
    ctx = make_context([0.5], [0.5], params=(params0, params_t))
    # code: mean(‖Δw‖/4, ‖Δb‖/2, 0/1) = mean(5/4, 2/2, 0)
    assert Perturbation()(ctx).value == pytest.approx((1.25 + 1.0 + 0.0) / 3)
    # paper: ‖Δθ‖² = 9 + 16 + 4
    assert Perturbation(form="paper")(ctx).value == pytest.approx(29.0)


def test_perturbation_rejects_mismatched_parameters():
    ctx = make_context([0.5], [0.5], params=([np.zeros(2)], [np.zeros(3)]))
    with pytest.raises(ValueError, match="shapes"):
        Perturbation()(ctx)
    ctx = make_context([0.5], [0.5], params=([np.zeros(2)], [np.zeros(2), np.zeros(1)]))
    with pytest.raises(ValueError, match="number of parameter tensors"):
        Perturbation()(ctx)


def test_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1])
    assert macro_f1(y, y) == 1.0
    # class 1: TP 2, FP 1, FN 0 -> 4/5; class 0: TP 1, FN 1 -> 2/3
    assert macro_f1(y, np.array([0, 1, 1, 1])) == pytest.approx((0.8 + 2 / 3) / 2)
    # A single predicted class: the other class has TP = 0 -> F1 0.
    assert macro_f1(y, np.ones(4, int)) == pytest.approx((0 + 2 / 3) / 2)
    # Class 0 neither present nor predicted: 0/0 counts as 0 (MLJBase's macro average).
    assert macro_f1(np.ones(3, int), np.ones(3, int)) == pytest.approx(0.5)


def test_f1_change_by_hand():
    y = [0, 0, 1, 1]
    # initial: perfect (1); current predicts class 1 everywhere: (0 + 2/3) / 2 = 1/3.
    ctx = make_context([0.1, 0.2, 0.8, 0.9], [0.6, 0.7, 0.8, 0.9], test_y=y)
    assert F1Change()(ctx).value == pytest.approx(1 / 3 - 1)
    # p = 0.5 is class 0 for the F-score: the current model is then perfect as well.
    ctx = make_context([0.1, 0.2, 0.8, 0.9], [0.5, 0.5, 0.8, 0.9], test_y=y)
    assert F1Change()(ctx).value == 0.0


def domain_context(n_permutations=0, rng=0):
    """Positives of the initial data at 0/1, two negatives moved onto 5 and relabelled."""
    reference_X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])
    reference_y = np.array([1, 1, 1, 0, 0, 0])
    train_X = np.array([[0.0], [1.0], [2.0], [5.0], [5.5], [11.0]])
    train_y = np.array([1, 1, 0, 1, 1, 0])  # row 2 lost its positive label, rows 3-4 gained it
    return EvaluationContext(
        reference_X=reference_X,
        reference_y=reference_y,
        train_X=train_X,
        train_y=train_y,
        test_X=reference_X,
        test_y=reference_y,
        proba_initial=lambda Z: np.full(len(Z), 0.5),
        proba_current=lambda Z: np.full(len(Z), 0.5),
        params_initial=[np.zeros(1)],
        params_current=[np.zeros(1)],
        rng=np.random.default_rng(rng),
        n_permutations=n_permutations,
    )


def test_domain_mmd_uses_initial_labels_then_current_labels():
    ctx = domain_context()
    result = DomainMMD(n_samples=None)(ctx)
    assert result == MetricResult(pytest.approx(direct_mmd2([0, 1, 2], [0, 1, 5, 5.5])), None)
    everything = DomainMMD(n_samples=None, target_only=False)(ctx).value
    assert everything == pytest.approx(direct_mmd2(ctx.reference_X, ctx.train_X))


def test_domain_mmd_subsamples_then_tests_the_subsamples():
    metric = DomainMMD(n_samples=2)
    result = metric(domain_context(n_permutations=30, rng=5))
    rng = np.random.default_rng(5)
    x, y = subsample(np.array([0.0, 1, 2]), np.array([0.0, 1, 5, 5.5]), 2, rng)
    assert len(x) == len(y) == 2
    assert result.value == pytest.approx(direct_mmd2(x, y), abs=1e-12)
    assert (result.value, result.p_value) == pytest.approx(mmd_permutation_test(x, y, 30, rng))


def test_domain_mmd_linear_estimator_and_degenerate_case():
    result = DomainMMD(n_samples=None, estimator="linear")(domain_context(n_permutations=10))
    assert np.isfinite(result.value) and result.p_value is None
    ctx = domain_context()
    ctx.train_y = np.array([1, 0, 0, 0, 0, 0])
    assert math.isnan(DomainMMD()(ctx).value)


def test_model_mmd_compares_the_probability_samples():
    p0, pt = np.array([0.1, 0.2, 0.9, 0.8, 0.3]), np.array([0.4, 0.6, 0.7, 0.9, 0.5])
    result = ModelMMD(n_samples=None)(make_context(p0, pt, n_permutations=25, rng=1))
    expected = mmd_permutation_test(p0, pt, 25, np.random.default_rng(1))
    assert (result.value, result.p_value) == pytest.approx(expected)
    assert result.value == pytest.approx(direct_mmd2(p0, pt), abs=1e-12)
    small = ModelMMD(n_samples=3)(make_context(p0, pt, rng=1)).value
    rng = np.random.default_rng(1)
    assert small == pytest.approx(mmd2_unbiased(*subsample(p0, pt, 3, rng)))


def test_model_mmd_grid_points_lie_on_the_lattice():
    X = np.array([[0.0, -1.0], [2.0, 1.0], [1.0, 0.0]])
    grid = ModelMMDGrid(n_points=400, grid_size=5).grid(X, np.random.default_rng(0))
    assert grid.shape == (400, 2)
    assert set(grid[:, 0]) == {0.0, 0.5, 1.0, 1.5, 2.0}  # all five values drawn, nothing else
    assert set(grid[:, 1]) == {-1.0, -0.5, 0.0, 0.5, 1.0}


def test_model_mmd_grid_compares_probabilities_on_the_grid():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 2))
    ctx = EvaluationContext(
        reference_X=X,
        reference_y=np.zeros(30, int),
        train_X=X,
        train_y=np.zeros(30, int),
        test_X=X,
        test_y=np.zeros(30, int),
        proba_initial=lambda Z: 1 / (1 + np.exp(-Z[:, 0])),
        proba_current=lambda Z: 1 / (1 + np.exp(-3 * Z[:, 0] - 1)),
        params_initial=[np.zeros(1)],
        params_current=[np.zeros(1)],
        rng=np.random.default_rng(9),
        n_permutations=20,
    )
    metric = ModelMMDGrid(n_points=50, grid_size=10)
    result = metric(ctx)
    replay = np.random.default_rng(9)
    points = metric.grid(X, replay)
    expected = mmd_permutation_test(
        ctx.proba_initial(points), ctx.proba_current(points), 20, replay
    )
    assert (result.value, result.p_value) == pytest.approx(expected)
    assert result.value > 0


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, 12, elements=st.floats(0, 1)),
    st.lists(st.floats(-5, 5), min_size=1, max_size=4),
)
def test_identical_models_show_no_model_shift(p, theta):
    params = [np.array(theta), np.array(theta[::-1])]
    ctx = make_context(p, p, params=(params, [a.copy() for a in params]))
    for metric in (Disagreement(), Decisiveness(), Decisiveness(form="paper")):
        assert metric(ctx).value == 0
    assert Perturbation()(ctx).value == 0
    assert Perturbation(form="paper")(ctx).value == 0


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, 10, elements=st.floats(0, 1)),
    arrays(np.float64, 10, elements=st.floats(0, 1)),
)
def test_disagreement_is_a_share(p0, pt):
    assert 0 <= Disagreement()(make_context(p0, pt)).value <= 1


# --- configuration --------------------------------------------------------------------------


def compose_metrics(option: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("config", overrides=[f"metrics={option}"]).metrics


def synthetic_context(n_permutations=20):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int)
    moved = X.copy()
    moved[y == 0] += 0.8
    return EvaluationContext(
        reference_X=X,
        reference_y=y,
        train_X=moved,
        train_y=(moved[:, 0] > 0).astype(int),
        test_X=X[:20],
        test_y=y[:20],
        proba_initial=lambda Z: 1 / (1 + np.exp(-Z[:, 0])),
        proba_current=lambda Z: 1 / (1 + np.exp(-2 * Z[:, 0] + 0.3)),
        params_initial=[np.zeros((2, 3)), np.zeros(3)],
        params_current=[np.ones((2, 3)), np.ones(3)],
        rng=rng,
        n_permutations=n_permutations,
        moved=y == 0,  # the rows shifted above (plausibility metrics)
        scale=np.array([2.0, 1.0]),
    )


@pytest.mark.parametrize("option", METRIC_CONFIGS)
def test_every_metric_config_builds_and_runs(option):
    nodes = compose_metrics(option)
    assert set(nodes) >= {"mmd_domain", "disagreement", "f1_change"}
    ctx = synthetic_context()
    for name, node in nodes.items():
        metric = instantiate(node, name=name)
        assert metric.name == name and metric.scope in ("domain", "model", "plausibility")
        result = metric(ctx)
        assert np.isfinite(result.value), name
        assert result.p_value is None or 0 <= result.p_value <= 1


def test_default_config_holds_every_metric_with_the_reference_settings():
    nodes = compose_metrics("default")
    assert list(nodes) == [
        "mmd_domain",
        "perturbation",
        "mmd_model",
        "mmd_model_grid",
        "disagreement",
        "decisiveness",
        "f1_change",
    ]
    metrics = {name: instantiate(node, name=name) for name, node in nodes.items()}
    assert metrics["mmd_domain"].n_samples == metrics["mmd_model"].n_samples == 1000
    assert metrics["mmd_model_grid"].n_points == 1000
    assert metrics["mmd_model_grid"].grid_size == 100
    assert metrics["decisiveness"].form == metrics["perturbation"].form == "code"
    assert {m.length_scale for m in metrics.values() if hasattr(m, "length_scale")} == {0.5}
    assert metrics["mmd_domain"].scope == "domain"
    assert {m.scope for n, m in metrics.items() if n != "mmd_domain"} == {"model"}


def test_paper_config_selects_the_paper_forms():
    nodes = compose_metrics("paper")
    assert set(nodes) == set(compose_metrics("default"))
    assert nodes.decisiveness.form == nodes.perturbation.form == "paper"
    assert nodes.mmd_domain.n_samples == 1000


def test_metrics_report_model_shift_without_permutations_as_none():
    ctx = synthetic_context(n_permutations=0)
    for metric in (DomainMMD(), ModelMMD(), ModelMMDGrid(n_points=30)):
        assert metric(ctx).p_value is None


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: DomainMMD(n_samples=1), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(n_samples=2.5), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(n_samples="all"), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(length_scale=0), "metrics.mmd_domain.length_scale"),
        (lambda: DomainMMD(length_scale=float("nan")), "metrics.mmd_domain.length_scale"),
        (lambda: DomainMMD(estimator="biased"), "metrics.mmd_domain.estimator"),
        (lambda: DomainMMD(target_only="yes"), "metrics.mmd_domain.target_only"),
        (lambda: DomainMMD(name="shift", n_samples=0), "metrics.shift.n_samples"),
        (lambda: ModelMMD(n_samples=0), "metrics.mmd_model.n_samples"),
        (lambda: ModelMMD(length_scale=-1), "metrics.mmd_model.length_scale"),
        (lambda: ModelMMDGrid(n_points=None), "metrics.mmd_model_grid.n_points"),
        (lambda: ModelMMDGrid(grid_size=1), "metrics.mmd_model_grid.grid_size"),
        (lambda: ModelMMDGrid(grid_size=True), "metrics.mmd_model_grid.grid_size"),
        (lambda: Decisiveness(form="other"), "metrics.decisiveness.form"),
        (lambda: Perturbation(form="Paper"), "metrics.perturbation.form"),
    ],
)
def test_bad_metric_settings_name_their_key(factory, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
        factory()


# --- p-value forms and missing values (issue 9) ----------------------------------------------


def extreme_split_count(perms: np.ndarray, m: int) -> int:
    """Permutations whose x side is exactly the observed x or the observed y.

    For two well-separated groups these are the only splits whose statistic reaches the observed
    one: every other split mixes the groups.
    """
    total = perms.shape[1]
    observed_x, observed_y = set(range(m)), set(range(m, total))
    return sum(set(p[:m]) in (observed_x, observed_y) for p in perms.tolist())


@pytest.mark.parametrize(("seed", "n_permutations"), [(0, 12), (3, 7)])
def test_corrected_p_value_is_b_plus_one_over_p_plus_one_by_hand(seed, n_permutations):
    # x = {0, 1}, y = {10, 11}: of the 6 splits of the pooled four points into two pairs, only
    # {0,1}|{10,11} and its mirror reach the observed MMD²; the others mix the groups.
    x, y = np.array([0.0, 1.0]), np.array([10.0, 11.0])
    perms = np.vstack(list(permutation_chunks(4, n_permutations, np.random.default_rng(seed), 5)))
    b = extreme_split_count(perms, 2)
    assert 0 < b < n_permutations  # the case tests both forms away from their edges
    value, reference = mmd_permutation_test(x, y, n_permutations, np.random.default_rng(seed))
    same, corrected = mmd_permutation_test(
        x, y, n_permutations, np.random.default_rng(seed), p_value_form="corrected"
    )
    assert same == value == pytest.approx(direct_mmd2(x, y))
    assert reference == b / n_permutations  # the reference form, unchanged
    assert corrected == (b + 1) / (n_permutations + 1)
    # The default is the reference form: the same draws as before give the same p-value.
    assert mmd_permutation_test(x, y, n_permutations, np.random.default_rng(seed))[1] == reference


def test_corrected_p_value_is_never_zero():
    # Two separated groups of five: the extreme split has probability 2/252 per permutation.
    x, y = np.arange(5.0), np.arange(5.0) + 20
    perms = np.vstack(list(permutation_chunks(10, 20, np.random.default_rng(1), 20)))
    assert extreme_split_count(perms, 5) == 0
    _, reference = mmd_permutation_test(x, y, 20, np.random.default_rng(1))
    _, corrected = mmd_permutation_test(
        x, y, 20, np.random.default_rng(1), p_value_form="corrected"
    )
    assert reference == 0.0 and corrected == 1 / 21
    with pytest.raises(ValueError, match="p_value_form"):
        mmd_permutation_test(x, y, 20, np.random.default_rng(1), p_value_form="plus_one")


def test_mmd_metrics_take_the_p_value_form_from_the_context():
    P = 30
    metrics = (DomainMMD(n_samples=None), ModelMMD(), ModelMMDGrid(n_points=40))
    for metric in metrics:
        reference = metric(synthetic_context(P))
        ctx = synthetic_context(P)
        ctx.p_value_form = "corrected"
        corrected = metric(ctx)
        assert corrected.value == reference.value, metric.name
        b = round(reference.p_value * P)
        assert reference.p_value == b / P
        assert corrected.p_value == (b + 1) / (P + 1), metric.name
    assert synthetic_context().p_value_form == "reference"  # the default


def test_permutation_test_on_non_finite_data_has_no_p_value():
    x = np.random.default_rng(0).normal(size=(10, 2))
    for bad in (np.nan, np.inf, -np.inf):
        y = x + 0.1
        y[3, 0] = bad
        # Before: (nan, 0.0), since NaN >= nothing in the null: a "maximally significant" shift.
        value, p_value = mmd_permutation_test(x, y, 20, np.random.default_rng(1))
        assert math.isnan(value) and p_value is None
        value, p_value = mmd_permutation_test(
            y, x, 20, np.random.default_rng(1), p_value_form="corrected"
        )
        assert math.isnan(value) and p_value is None


def assert_missing(result: MetricResult, *words: str) -> None:
    assert math.isnan(result.value) and result.p_value is None and result.is_missing
    assert result.reason and all(word in result.reason for word in words), result.reason


def test_metrics_on_non_finite_inputs_are_missing_with_a_reason():
    n = 40
    ctx = synthetic_context(20)
    ctx.train_X = ctx.train_X.copy()
    ctx.train_X[np.flatnonzero(ctx.train_y == 1)[0], 0] = np.nan
    assert_missing(DomainMMD()(ctx), "current training data", "1 non-finite value")
    assert_missing(DomainMMD(estimator="linear")(ctx), "current training data")

    p0 = np.linspace(0.05, 0.95, n)
    pt = p0.copy()
    pt[[2, 7]] = [np.nan, np.inf]
    ctx = make_context(p0, pt, n_permutations=20, test_y=(p0 > 0.5).astype(int))
    for metric in (ModelMMD(), Disagreement(), Decisiveness(), Decisiveness(form="paper")):
        assert_missing(metric(ctx), "current model probabilities", "2 non-finite values")
    assert_missing(F1Change()(ctx), "current model probabilities on the test set")
    assert_missing(ModelMMDGrid(n_points=20)(ctx), "current model probabilities")

    ctx = make_context(p0, p0, n_permutations=20)
    ctx.reference_X = ctx.reference_X.copy()
    ctx.reference_X[0, 0] = np.inf
    assert_missing(ModelMMDGrid(n_points=20)(ctx), "initial data", "no grid")

    params = ([np.zeros((2, 2)), np.zeros(2)], [np.ones((2, 2)), np.array([0.0, np.nan])])
    for form in ("code", "paper"):
        ctx = make_context([0.5], [0.5], params=params)
        assert_missing(Perturbation(form=form)(ctx), "current model parameters")


def test_metrics_on_empty_sets_are_missing_with_a_reason():
    ctx = domain_context()
    ctx.train_y = np.array([1, 0, 0, 0, 0, 0])  # one positive left
    assert_missing(DomainMMD()(ctx), "fewer than two rows of class 1", "current training data: 1")
    ctx = make_context([0.5], [0.5], params=([], []))  # a model without parameters
    assert_missing(Perturbation()(ctx), "no parameters")
    ctx = make_context([0.2, 0.7], [0.3, 0.6])
    ctx.test_X, ctx.test_y = ctx.test_X[:0], ctx.test_y[:0]
    assert_missing(F1Change()(ctx), "test set is empty")


def test_finite_inputs_give_finite_values_and_no_reason():
    ctx = synthetic_context(20)
    for metric in (
        DomainMMD(),
        ModelMMD(),
        ModelMMDGrid(n_points=30),
        Disagreement(),
        Decisiveness(),
        Perturbation(),
        F1Change(),
    ):
        result = metric(ctx)
        assert np.isfinite(result.value) and result.reason is None and not result.is_missing


class _Fixed:
    """A metric returning a fixed result (to feed the simulation's row code)."""

    scope = "model"

    def __init__(self, result):
        self.result = result

    def __call__(self, context):
        return self.result


def test_simulation_rows_write_missing_values_as_empty_cells_with_the_reason(tmp_path):
    from recourse_sim.simulation.evaluation import evaluate as _evaluate
    from recourse_sim.simulation.recorder import Recorder
    from recourse_sim.simulation.simulation import System

    metrics = {
        "fine": _Fixed(MetricResult(0.25, 0.0)),  # a real p-value of 0 stays
        "stale": _Fixed(MetricResult(math.nan, 0.0)),  # the old failure: NaN with p = 0.0
        "explained": _Fixed(MetricResult.missing("the test set is empty")),
        "no_test": _Fixed(MetricResult(0.5)),
    }
    streams = {name: np.random.default_rng(0) for name in metrics}
    system = System(model="mlp", generator="generic", repetition=1, slot=0)
    rows, missing, kernel = _evaluate(metrics, synthetic_context(0), streams, system, 10)
    assert kernel == []  # no MMD here, so no kernel check
    assert [row["metric"] for row in rows] == list(metrics)
    assert [(row["metric"], row["reason"]) for row in missing] == [
        ("stale", "the value is not finite"),
        ("explained", "the test set is empty"),
    ]
    assert missing[0] == {
        "repetition": 1,
        "round": 10,
        "model": "mlp",
        "generator": "generic",
        "metric": "stale",
        "reason": "the value is not finite",
    }
    recorder = Recorder(tmp_path)
    recorder.append_metrics(rows)
    recorder.note_missing(missing)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == [
        "repetition,round,model,generator,metric,scope,value,p_value",
        "1,10,mlp,generic,fine,model,0.25,0.0",
        "1,10,mlp,generic,stale,model,,",
        "1,10,mlp,generic,explained,model,,",
        "1,10,mlp,generic,no_test,model,0.5,",
    ]
    reasons = (tmp_path / "missing_values.csv").read_text().splitlines()
    assert reasons[0] == "repetition,round,model,generator,metric,reason"
    assert reasons[2] == "1,10,mlp,generic,explained,the test set is empty"


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: DomainMMD(n_samples=True), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(n_samples=2.0), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(length_scale=float("inf")), "metrics.mmd_domain.length_scale"),
        (lambda: DomainMMD(length_scale=True), "metrics.mmd_domain.length_scale"),
        (lambda: DomainMMD(target_only=1), "metrics.mmd_domain.target_only"),
        (lambda: ModelMMDGrid(n_points=1.5), "metrics.mmd_model_grid.n_points"),
        (lambda: ModelMMD(length_scale="0.5"), "metrics.mmd_model.length_scale"),
    ],
)
def test_metric_settings_use_the_shared_strict_checks(factory, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
        factory()

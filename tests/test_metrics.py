"""Metrics against hand-computed values and the direct formulas."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from omegaconf import OmegaConf

from recourse_sim.errors import ConfigError
from recourse_sim.metrics import (
    Decisiveness,
    Disagreement,
    DomainMMD,
    EvaluationContext,
    F1Change,
    ModelMMD,
    ModelMMDGrid,
    Perturbation,
)
from recourse_sim.metrics.mmd import (
    gaussian_kernel,
    mmd2_linear,
    mmd2_unbiased,
    mmd_permutation_test,
    permutations,
    subsample,
)
from recourse_sim.metrics.performance import macro_f1

CONFIGS = Path(__file__).parents[1] / "configs" / "metrics"


def direct_mmd2(x, y, length_scale=0.5):
    """The unbiased estimator written out with explicit loops."""
    x = np.atleast_2d(np.asarray(x, float).T).T if np.ndim(x) == 1 else np.asarray(x, float)
    y = np.atleast_2d(np.asarray(y, float).T).T if np.ndim(y) == 1 else np.asarray(y, float)

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * length_scale**2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_two_by_two_points_by_hand():
    # x = {0, 1}, y = {0, 2} in 1-D; k = exp(-2 d²).
    # xx: 2·e^{-2}/2 = e^{-2}; yy: e^{-8}; xy: (1 + e^{-8} + e^{-2} + e^{-2}) / 4
    expected = math.exp(-2) + math.exp(-8) - 2 * (1 + math.exp(-8) + 2 * math.exp(-2)) / 4
    assert mmd2_unbiased([0.0, 1.0], [0.0, 2.0]) == pytest.approx(expected, abs=1e-12)
    assert expected < 0  # the unbiased estimate can be negative


def test_mmd_matches_direct_formula_and_can_be_negative():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3))
    assert mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), abs=1e-12)
    values = [mmd2_unbiased(rng.normal(size=(10, 2)), rng.normal(size=(10, 2))) for _ in range(20)]
    assert min(values) < 0  # same distribution: estimates scatter around zero
    shifted = mmd2_unbiased(rng.normal(size=(30, 2)), rng.normal(2.0, 1, size=(30, 2)))
    assert shifted > max(values)


def test_kernel_uses_length_scale_half():
    assert gaussian_kernel([[0.0]], [[1.0]])[0, 0] == pytest.approx(math.exp(-2))
    assert gaussian_kernel([[0.0]], [[1.0]], length_scale=1.0)[0, 0] == pytest.approx(
        math.exp(-0.5)
    )


def test_permutation_test_equals_naive_loop():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 2)), rng.normal(0.5, 1, size=(9, 2))
    value, p_value = mmd_permutation_test(x, y, 50, np.random.default_rng(7))
    pooled = np.vstack([x, y])
    order = permutations(len(pooled), 50, np.random.default_rng(7))
    null = [mmd2_unbiased(pooled[o[:12]], pooled[o[12:]]) for o in order]
    assert value == pytest.approx(mmd2_unbiased(x, y), abs=1e-12)
    assert p_value == pytest.approx(np.mean(np.array(null) >= value))
    assert mmd_permutation_test(x, y, 0, rng)[1] is None


def test_permutation_p_value_small_for_shift_and_large_without():
    rng = np.random.default_rng(2)
    same = mmd_permutation_test(rng.normal(size=(60, 2)), rng.normal(size=(60, 2)), 200, rng)[1]
    shifted = mmd_permutation_test(rng.normal(size=(60, 2)), rng.normal(1, 1, (60, 2)), 200, rng)
    assert shifted[1] == 0.0
    assert same > 0.05


def test_subsampling_rule():
    rng = np.random.default_rng(0)
    x, y = np.arange(10.0)[:, None], np.arange(30.0)[:, None]
    sx, sy = subsample(x, y, 1000, rng)
    assert len(sx) == 10 and len(sy) == 10  # n = min(|x|, n_samples); y reduced to it
    sx, sy = subsample(x, y, 4, rng)
    assert len(sx) == 4 and len(sy) == 4 and len(np.unique(sy)) == 4
    assert subsample(x, y, None, rng) == (x, y)


def test_linear_estimator_is_unbiased_on_average():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4000, 1)), rng.normal(0.5, 1, size=(4000, 1))
    assert mmd2_linear(x, y) == pytest.approx(mmd2_unbiased(x[:800], y[:800]), abs=0.02)


def context(p0, pt, params0=None, paramst=None, X=None, y=None, test_y=None, train=None, rng=0):
    p0, pt = np.asarray(p0, float), np.asarray(pt, float)
    X = np.arange(len(p0), dtype=float)[:, None] if X is None else X
    y = np.zeros(len(p0), int) if y is None else y
    lookup0 = {float(v): p for v, p in zip(X[:, 0], p0, strict=True)}
    lookupt = {float(v): p for v, p in zip(X[:, 0], pt, strict=True)}
    train_X, train_y = (X, y) if train is None else train
    return EvaluationContext(
        reference_X=X,
        reference_y=y,
        train_X=train_X,
        train_y=train_y,
        test_X=X,
        test_y=y if test_y is None else test_y,
        proba_initial=lambda Z: np.array([lookup0.get(float(z), 0.5) for z in Z[:, 0]]),
        proba_current=lambda Z: np.array([lookupt.get(float(z), 0.5) for z in Z[:, 0]]),
        params_initial=params0 or [np.zeros(1)],
        params_current=paramst or [np.zeros(1)],
        rng=np.random.default_rng(rng),
    )


def test_disagreement_by_hand():
    # Labels 0,1,1,0 vs 0,0,1,1 (0.5 is class 0): two of four differ.
    ctx = context([0.2, 0.7, 0.9, 0.5], [0.1, 0.5, 0.8, 0.6])
    assert Disagreement()(ctx).value == pytest.approx(0.5)


def test_decisiveness_code_and_paper_forms_by_hand():
    p0, pt = [0.5, 0.5, 0.9, 0.1], [0.9, 0.1, 0.9, 0.1]
    # code: | ‖(0,0,.4,-.4)‖ − ‖(.4,-.4,.4,-.4)‖ | = |0.4√2 − 0.8|
    code = Decisiveness()(context(p0, pt)).value
    assert code == pytest.approx(abs(0.4 * math.sqrt(2) - 0.8))
    # paper: mean((pt−½)²) − mean((p0−½)²) = 0.16 − 0.08
    assert Decisiveness(form="paper")(context(p0, pt)).value == pytest.approx(0.08)


def test_perturbation_code_and_paper_forms_by_hand():
    params0 = [np.zeros((2, 2)), np.zeros(2)]
    paramst = [np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([0.0, 2.0])]
    ctx = context([0.5], [0.5], params0, paramst)
    # code: mean(‖Δw‖/4, ‖Δb‖/2) = mean(5/4, 2/2)
    assert Perturbation()(ctx).value == pytest.approx((1.25 + 1.0) / 2)
    assert Perturbation(form="paper")(ctx).value == pytest.approx(9 + 16 + 4)


def test_f1_change_by_hand():
    y = np.array([0, 0, 1, 1])
    # initial: perfect (F1 = 1); current predicts all positive: class 1 F1 = 2·2/(4+2) = 2/3,
    # class 0 neither predicted nor right: 0 -> macro 1/3.
    ctx = context([0.1, 0.2, 0.8, 0.9], [0.6, 0.7, 0.8, 0.9], y=y)
    assert F1Change()(ctx).value == pytest.approx(1 / 3 - 1)
    assert macro_f1(y, np.array([0, 1, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)


def test_domain_mmd_compares_initial_and_current_positives():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 2))
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    moved = X.copy()
    moved[:40] = rng.normal(1.5, 0.5, size=(40, 2))  # 40 negatives moved and relabelled
    moved_y = y.copy()
    moved_y[:40] = 1
    ctx = context(np.full(120, 0.5), np.full(120, 0.5), X=X, y=y, train=(moved, moved_y))
    ctx.n_permutations = 100
    result = DomainMMD(n_samples=None)(ctx)
    expected = mmd2_unbiased(X[y == 1], moved[moved_y == 1])
    assert result.value == pytest.approx(expected)
    assert result.p_value < 0.05
    same = context(np.full(120, 0.5), np.full(120, 0.5), X=X, y=y)
    assert DomainMMD(n_samples=None)(same).value == pytest.approx(mmd2_unbiased(X[60:], X[60:]))


def test_model_mmd_grid_points_lie_on_the_lattice():
    X = np.array([[0.0, -1.0], [2.0, 1.0]])
    grid = ModelMMDGrid(n_points=200, grid_size=5).grid(X, np.random.default_rng(0))
    assert grid.shape == (200, 2)
    assert set(np.round(grid[:, 0], 9)) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    assert grid[:, 1].min() >= -1 and grid[:, 1].max() <= 1


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, (6, 2), elements=st.floats(-3, 3)),
    arrays(np.float64, (5, 2), elements=st.floats(-3, 3)),
)
def test_mmd_is_symmetric(x, y):
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_unbiased(y, x), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, 12, elements=st.floats(0, 1)))
def test_identical_models_show_no_model_shift(p):
    ctx = context(p, p, [np.ones(3)], [np.ones(3)])
    assert Disagreement()(ctx).value == 0
    assert Decisiveness()(ctx).value == 0
    assert Perturbation()(ctx).value == 0


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, 10, elements=st.floats(0, 1)),
    arrays(np.float64, 10, elements=st.floats(0, 1)),
)
def test_disagreement_is_a_share(p0, pt):
    assert 0 <= Disagreement()(context(p0, pt)).value <= 1


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_metric_config_builds_and_runs(config):
    composed = OmegaConf.load(config)
    if "defaults" in composed:  # paper.yaml extends default.yaml
        base = OmegaConf.load(CONFIGS / "default.yaml")
        composed = OmegaConf.merge(base, {k: v for k, v in composed.items() if k != "defaults"})
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int)
    ctx = EvaluationContext(
        reference_X=X,
        reference_y=y,
        train_X=X + 0.1,
        train_y=y,
        test_X=X,
        test_y=y,
        proba_initial=lambda Z: 1 / (1 + np.exp(-Z[:, 0])),
        proba_current=lambda Z: 1 / (1 + np.exp(-2 * Z[:, 0])),
        params_initial=[np.zeros(2)],
        params_current=[np.ones(2)],
        rng=rng,
        n_permutations=20,
    )
    for name, node in composed.items():
        metric = instantiate(node, name=name)
        result = metric(ctx)
        assert np.isfinite(result.value)
        assert result.p_value is None or 0 <= result.p_value <= 1


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: DomainMMD(n_samples=1), "metrics.mmd_domain.n_samples"),
        (lambda: DomainMMD(length_scale=0), "metrics.mmd_domain.length_scale"),
        (lambda: DomainMMD(estimator="biased"), "metrics.mmd_domain.estimator"),
        (lambda: ModelMMD(n_samples=0), "metrics.mmd_model.n_samples"),
        (lambda: ModelMMDGrid(grid_size=1), "metrics.mmd_model_grid.grid_size"),
        (lambda: Decisiveness(form="other"), "metrics.decisiveness.form"),
        (lambda: Perturbation(form="other"), "metrics.perturbation.form"),
    ],
)
def test_bad_metric_settings_name_their_key(factory, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        factory()

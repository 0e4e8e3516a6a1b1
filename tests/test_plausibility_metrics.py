"""Plausibility of implemented recourse: IP and IP* (Altmeyer et al., Counterfactual Training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE, direct_mmd2
from test_cli import cli

from recourse_sim.errors import ConfigError
from recourse_sim.metrics import (
    EvaluationContext,
    ImplausibilityDistance,
    ImplausibilityMMD,
    plausibility,
)
from recourse_sim.metrics.mmd import mmd_permutation_test, subsample

# z-space with scale (2, 1): moved rows 0 and 5 are z (1, 0) and (4, 2); the unmoved rows of
# class 1 are z (0, 0), (2, 1), (3, 3); row 4 (class 0, unmoved) is never compared with.
X = np.array([[2.0, 0.0], [0.0, 0.0], [4.0, 1.0], [6.0, 3.0], [0.0, 5.0], [8.0, 2.0]])
Y = np.array([1, 1, 1, 1, 0, 0])
MOVED = np.array([True, False, False, False, False, True])
SCALE = np.array([2.0, 1.0])


def with_value(values, index, value):
    values = values.copy()
    values[index] = value
    return values


def context(X=X, y=Y, moved=MOVED, scale=SCALE, n_permutations=0, seed=0, p_value_form="reference"):
    return EvaluationContext(
        reference_X=X,
        reference_y=y,
        train_X=X,
        train_y=y,
        test_X=X,
        test_y=y,
        proba_initial=lambda Z: np.full(len(Z), 0.5),
        proba_current=lambda Z: np.full(len(Z), 0.5),
        params_initial=[],
        params_current=[],
        rng=np.random.default_rng(seed),
        n_permutations=n_permutations,
        p_value_form=p_value_form,
        moved=moved,
        scale=scale,
    )


# --- IP: mean distance to the nearest target-class samples ---------------------------------


def test_l1_distance_to_the_two_nearest_samples_by_hand():
    # (1,0): l1 distances 1, 2, 5 -> two nearest 1.5; (4,2): 6, 3, 2 -> 2.5; mean 2.
    result = ImplausibilityDistance(n_neighbours=2)(context())
    assert result.value == pytest.approx(2.0, abs=1e-15)
    assert result.p_value is None and result.reason is None


def test_l1_distance_averages_over_every_sample_when_fewer_than_n_neighbours():
    # All three samples: (1 + 2 + 5) / 3 and (6 + 3 + 2) / 3.
    result = ImplausibilityDistance()(context())
    assert result.value == pytest.approx((8 / 3 + 11 / 3) / 2, abs=1e-15)


def test_l2_distance_to_the_two_nearest_samples_by_hand():
    # (1,0): 1, √2, √13 -> (1 + √2)/2; (4,2): √40, √5, √2 -> (√2 + √5)/2.
    result = ImplausibilityDistance(n_neighbours=2, norm="l2")(context())
    expected = (1 + 2 * math.sqrt(2) + math.sqrt(5)) / 4
    assert result.value == pytest.approx(expected, abs=1e-15)


def test_no_scale_means_unit_scale():
    # Raw features: (2,0) -> nearest (0,0) at l1 2; (8,2) -> nearest (6,3) at l1 3.
    result = ImplausibilityDistance(n_neighbours=1)(context(scale=None))
    assert result.value == pytest.approx(2.5, abs=1e-15)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_chunks_do_not_change_the_distance(norm, monkeypatch):
    rng = np.random.default_rng(3)
    Xr = rng.normal(size=(70, 3))
    yr = rng.integers(0, 2, 70)
    moved = rng.random(70) < 0.4
    scale = np.array([0.5, 2.0, 1.0])
    z_moved, z_samples = Xr[moved] / scale, Xr[(yr == 1) & ~moved] / scale
    diff = z_moved[:, None, :] - z_samples[None, :, :]
    dist = np.abs(diff).sum(-1) if norm == "l1" else np.sqrt((diff**2).sum(-1))
    expected = np.sort(dist, axis=1)[:, :5].mean()
    monkeypatch.setattr(plausibility, "CHUNK_ROWS", 4)
    result = ImplausibilityDistance(n_neighbours=5, norm=norm)(context(Xr, yr, moved, scale))
    assert result.value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", [ImplausibilityDistance(), ImplausibilityMMD()])
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"moved": None}, "no previous evaluation to count moves from, e.g. at round 0"),
        ({"moved": np.zeros(6, bool)}, "nobody moved on advice since the previous evaluation"),
        ({"moved": Y == 1}, "no row of class 1 that did not move"),
        ({"X": with_value(X, (5, 1), np.nan)}, "the moved rows hold 1 non-finite value"),
        ({"X": with_value(X, (2, 0), np.inf)}, "the target class samples hold 1 non-finite"),
        ({"scale": np.array([np.nan, 1.0])}, "the feature scales hold 1 non-finite value"),
    ],
)
def test_missing_values_say_why(metric, changes, reason):
    result = metric(context(**changes))
    assert result.is_missing and result.p_value is None
    if isinstance(metric, ImplausibilityMMD) and reason.startswith("no row"):
        reason = "fewer than two rows to compare"  # the MMD needs two rows on each side
    assert reason in result.reason


def test_unmoved_rows_of_other_classes_and_non_finite_ones_are_not_compared():
    # A NaN in an unmoved row of class 0 is no sample of the target class: nothing is missing.
    bad = X.copy()
    bad[4] = np.nan
    assert ImplausibilityDistance(n_neighbours=2)(context(X=bad)).value == pytest.approx(2.0)


# --- IP*: squared MMD between the moved rows and the target-class samples ------------------


@pytest.mark.parametrize("length_scale", [5.0, 1.0])
def test_mmd_equals_the_unbiased_estimator_in_z_space(length_scale):
    moved = X[MOVED] / SCALE
    samples = X[(Y == 1) & ~MOVED] / SCALE
    result = ImplausibilityMMD(length_scale=length_scale)(context())
    assert result.value == pytest.approx(direct_mmd2(moved, samples, length_scale), abs=1e-12)
    assert result.p_value is None  # no permutations


def test_mmd_p_value_is_the_permutation_test_of_the_subsampled_sides():
    rng = np.random.default_rng(1)
    Xr = rng.normal(size=(40, 2))
    yr = np.r_[np.ones(30, int), np.zeros(10, int)]
    moved = np.zeros(40, bool)
    moved[[0, 1, 2, 35]] = True
    Xr[moved] += 3.0
    scale = np.array([1.5, 0.5])
    ctx = context(Xr, yr, moved, scale, n_permutations=50, seed=7, p_value_form="corrected")
    result = ImplausibilityMMD(n_samples=10)(ctx)
    # The samples come first: 26 are reduced to 10, the 4 moved rows are kept.
    again = np.random.default_rng(7)
    x, y = subsample(Xr[(yr == 1) & ~moved] / scale, Xr[moved] / scale, 10, again)
    assert (len(x), len(y)) == (10, 4)
    expected = mmd_permutation_test(x, y, 50, again, 5.0, p_value_form="corrected")
    assert (result.value, result.p_value) == expected
    assert 0 < result.p_value <= 1


def test_mmd_with_one_moved_row_names_both_counts():
    moved = np.array([True, False, False, False, False, False])
    result = ImplausibilityMMD()(context(moved=moved))
    assert result.reason == (
        "fewer than two rows to compare (moved since the previous evaluation: 1, unmoved rows "
        "of class 1: 3)"
    )


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "key", "allowed"),
    [
        (
            lambda: ImplausibilityDistance(norm="l3"),
            "metrics.implausibility_distance.norm",
            "'l1', 'l2'",
        ),
        (
            lambda: ImplausibilityDistance(n_neighbours=0),
            "metrics.implausibility_distance.n_neighbours",
            ">= 1",
        ),
        (
            lambda: ImplausibilityMMD(length_scale=0),
            "metrics.implausibility_mmd.length_scale",
            "> 0",
        ),
        (lambda: ImplausibilityMMD(n_samples=1), "metrics.implausibility_mmd.n_samples", ">= 2"),
    ],
)
def test_bad_arguments_name_the_key_and_the_allowed_values(build, key, allowed):
    with pytest.raises(ConfigError) as caught:
        build()
    assert key in str(caught.value) and allowed in str(caught.value)


def test_cli_writes_both_metrics_empty_at_round_0_and_finite_once_people_moved(tmp_path):
    cli(*SMOKE, "metrics=plausibility", "generator=[generic,none]", run_dir=tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv", keep_default_na=False)
    plausible = metrics[metrics.metric.isin(["implausibility_distance", "implausibility_mmd"])]
    assert set(plausible.metric) == {"implausibility_distance", "implausibility_mmd"}
    assert set(plausible.scope) == {"plausibility"}
    assert (plausible.loc[plausible["round"] == 0, ["value", "p_value"]] == "").all(axis=None)
    generic = plausible[(plausible.generator == "generic") & (plausible["round"] > 0)]
    assert np.isfinite(generic.value.replace("", np.nan).astype(float)).any()
    control = plausible[plausible.generator == "none"]
    assert (control.value == "").all()  # nobody moves without advice
    assert set(metrics.metric) >= {"mmd_domain", "f1_change"}  # the default metrics remain

"""The bandwidth switch of the Gaussian-kernel MMDs and the degenerate-kernel check."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE, blobs, direct_mmd2

from recourse_sim.data.base import train_test_split
from recourse_sim.errors import ConfigError
from recourse_sim.generators import GenericGenerator
from recourse_sim.metrics import (
    DomainMMD,
    EvaluationContext,
    ImplausibilityMMD,
    KernelCheck,
    MetricResult,
    ModelMMD,
    ModelMMDGrid,
)
from recourse_sim.metrics.mmd import (
    DEGENERATE_KERNEL,
    MEDIAN_ROWS,
    choose_bandwidth,
    median_heuristic,
    median_sq_distance,
    mmd2_unbiased,
    mmd_permutation_test,
    subsample,
)
from recourse_sim.models import LogisticRegression
from recourse_sim.simulation import RecourseSimulation, SimulationConfig
from recourse_sim.simulation.evaluation import evaluate
from recourse_sim.simulation.recorder import KERNEL_COLUMNS, Recorder
from recourse_sim.simulation.simulation import System
from recourse_sim.utils import RandomStreams

# ---------------------------------------------------------------------------------------------
# the median heuristic


def test_median_heuristic_by_hand():
    # The corners of a 3 x 4 rectangle: pairwise distances 3, 3, 4, 4, 5, 5.
    x = np.array([[0.0, 0.0], [3.0, 0.0]])
    y = np.array([[0.0, 4.0], [3.0, 4.0]])
    assert median_sq_distance(np.vstack([x, y])) == 16.0  # squared: 9, 9, 16, 16, 25, 25
    assert median_heuristic(x, y) == 4.0
    # An odd number of pairs: 1-D values 0, 1, 3 are 1, 2 and 3 apart.
    assert median_heuristic(np.array([0.0, 1.0]), np.array([3.0])) == 2.0


def test_zero_median_falls_back_to_non_zero_distances_then_to_one():
    # Four tied points and one 2 away: 6 of the 10 pairs are 0 apart.
    x, y = np.zeros((3, 1)), np.array([[0.0], [2.0]])
    assert median_sq_distance(np.vstack([x, y])) == 0.0
    assert median_heuristic(x, y) == 2.0
    # The median kernel value is that of the tied pairs: 1, never degenerate.
    chosen = choose_bandwidth(x, y, "fixed", 0.5)
    assert (chosen.median_kernel, chosen.median_length_scale) == (1.0, 2.0)
    assert not chosen.degenerate
    # Identical point masses: any ℓ gives MMD 0, and ℓ = 1.
    assert median_heuristic(np.full((3, 2), 7.0), np.full((4, 2), 7.0)) == 1.0
    assert mmd2_unbiased(np.full((3, 2), 7.0), np.full((4, 2), 7.0), 1.0) == pytest.approx(0.0)


def test_large_samples_use_evenly_spaced_rows_deterministically():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(MEDIAN_ROWS + 1234, 3))
    rows = z[np.linspace(0, len(z) - 1, MEDIAN_ROWS).astype(np.int64)]
    assert len(np.unique(rows, axis=0)) == MEDIAN_ROWS
    expected = np.median(((rows[:, None] - rows[None]) ** 2).sum(-1)[np.triu_indices(len(rows), 1)])
    global_state = np.random.get_state()
    first = median_sq_distance(z)
    assert first == pytest.approx(expected, rel=1e-12)
    assert median_sq_distance(z) == first
    assert median_heuristic(z[:1500], z[1500:]) == math.sqrt(first)
    assert np.array_equal(np.random.get_state()[1], global_state[1])


# ---------------------------------------------------------------------------------------------
# the metrics


def _context(X0: np.ndarray, X1: np.ndarray, n_permutations: int = 0, seed: int = 0):
    """Every row of the target class: the domain MMD compares ``X0`` with ``X1``."""
    ones0, ones1 = np.ones(len(X0), int), np.ones(len(X1), int)
    return EvaluationContext(
        reference_X=X0,
        reference_y=ones0,
        train_X=X1,
        train_y=ones1,
        test_X=X0,
        test_y=ones0,
        proba_initial=lambda Z: 1 / (1 + np.exp(-Z[:, 0])),
        proba_current=lambda Z: 1 / (1 + np.exp(-Z[:, 0] - 0.5)),
        params_initial=[np.zeros(1)],
        params_current=[np.zeros(1)],
        rng=np.random.default_rng(seed),
        n_permutations=n_permutations,
        moved=np.arange(len(X1)) % 3 == 0,
        scale=np.ones(X1.shape[1]),
    )


def _standardised(d: int, n: int = 150, shift: float = 0.0, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift


def test_the_check_fires_in_33_dimensions_and_draws_no_random_numbers():
    X0, X1 = _standardised(33, shift=0.3)
    ctx = _context(X0, X1, n_permutations=20, seed=7)
    result = DomainMMD(n_samples=100)(ctx)
    # The value and p-value are those of the reference code path, with the same draws.
    rng = np.random.default_rng(7)
    x, y = subsample(X0, X1, 100, rng)
    value, p_value = mmd_permutation_test(x, y, 20, rng, 0.5)
    assert (result.value, result.p_value) == (value, p_value)
    assert ctx.rng.bit_generator.state == rng.bit_generator.state
    check = result.kernel
    assert isinstance(check, KernelCheck)
    assert check.length_scale == 0.5
    assert check.median_kernel < DEGENERATE_KERNEL
    assert check.median_kernel == pytest.approx(
        math.exp(-median_sq_distance(np.vstack([x, y])) / 0.5)
    )
    assert check.median_length_scale == median_heuristic(x, y)
    assert 5 < check.median_length_scale < 10  # about √(2·33)
    assert math.isfinite(check.value_at_median)
    assert check.value_at_median == pytest.approx(direct_mmd2(x, y, check.median_length_scale))


def test_no_check_in_two_dimensions():
    X0, X1 = _standardised(2, shift=0.3)
    result = DomainMMD(n_samples=None)(_context(X0, X1))
    assert result.kernel is None
    assert result == MetricResult(result.value, None)


def test_median_bandwidth_differs_from_fixed_and_is_finite():
    X0, X1 = _standardised(33, shift=0.3)
    fixed = DomainMMD(n_samples=None)(_context(X0, X1))
    median = DomainMMD(n_samples=None, bandwidth="median")(_context(X0, X1))
    ell = median_heuristic(X0, X1)
    assert math.isfinite(median.value) and median.value != fixed.value
    assert median.value == pytest.approx(mmd2_unbiased(X0, X1, ell))
    assert median.kernel is None  # at the median ℓ the median kernel value is exp(-1/2)
    # The shift is visible at the median ℓ, not at ℓ = 0.5, where all kernel values are ~0.
    assert abs(fixed.value) < 1e-12 < 0.01 < median.value
    assert fixed.kernel.value_at_median == median.value
    # The linear estimator honours the switch too.
    linear = DomainMMD(n_samples=None, estimator="linear", bandwidth="median")
    linear_fixed = DomainMMD(n_samples=None, estimator="linear")
    a, b = linear(_context(X0, X1)), linear_fixed(_context(X0, X1))
    assert math.isfinite(a.value) and a.value != b.value and a.kernel is None


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda bandwidth: DomainMMD(bandwidth=bandwidth), "metrics.mmd_domain.bandwidth"),
        (lambda bandwidth: ModelMMD(bandwidth=bandwidth), "metrics.mmd_model.bandwidth"),
        (lambda bw: ModelMMDGrid(bandwidth=bw), "metrics.mmd_model_grid.bandwidth"),
        (lambda bw: ImplausibilityMMD(bandwidth=bw), "metrics.implausibility_mmd.bandwidth"),
    ],
)
def test_bad_bandwidth_names_its_key_and_the_choices(factory, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "=") as error:
        factory("silverman")
    assert "'fixed', 'median'" in str(error.value)


def test_every_kernel_metric_takes_the_median_bandwidth():
    X0, X1 = _standardised(3, shift=0.5)
    for metric in (
        ModelMMD(bandwidth="median"),
        ModelMMDGrid(n_points=200, bandwidth="median"),
        ImplausibilityMMD(bandwidth="median"),
    ):
        fixed = type(metric)(name=metric.name)
        a, b = metric(_context(X0, X1)), fixed(_context(X0, X1))
        assert math.isfinite(a.value) and a.value != b.value, metric.name


def test_evaluate_returns_kernel_rows_and_the_recorder_writes_them(tmp_path, caplog):
    X0, X1 = _standardised(33, n=60)
    metrics = {"mmd_domain": DomainMMD(), "mmd_model": ModelMMD()}
    streams = {name: np.random.default_rng(0) for name in metrics}
    system = System(model="logistic", generator="generic", repetition=1, slot=0)
    context = _context(X0, X1)
    rows, missing, kernel = evaluate(metrics, context, streams, system, 3)
    assert [row["metric"] for row in rows] == list(metrics) and not missing
    assert [row["metric"] for row in kernel] == ["mmd_domain"]
    assert list(kernel[0]) == KERNEL_COLUMNS
    assert kernel[0]["round"] == 3 and kernel[0]["length_scale"] == 0.5
    recorder = Recorder(tmp_path)
    recorder.note_kernel_checks([])
    assert not (tmp_path / Recorder.kernel_file).exists()
    with caplog.at_level("DEBUG", logger="recourse_sim.simulation.recorder"):
        recorder.note_kernel_checks(kernel)
        recorder.note_kernel_checks([{**kernel[0], "round": 4}])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("mmd_domain cannot see anything at length scale 0.5 (logistic/")
    assert (
        "(metrics.mmd_domain.bandwidth=median); every evaluation is in kernel_warnings"
        in (warnings[0])
    )
    written = pd.read_csv(tmp_path / "kernel_warnings.csv")
    assert list(written.columns) == KERNEL_COLUMNS and list(written["round"]) == [3, 4]
    assert recorder.kernel_rows[1]["round"] == 4


def _simulation(recorder: Recorder) -> RecourseSimulation:
    """Two features and ℓ = 0.01: the domain MMD is blind in every round."""
    train, test = train_test_split(
        blobs(n_per_class=40, std=0.4, seed=3), 0.2, np.random.default_rng(0)
    )
    return RecourseSimulation(
        train,
        test,
        models={"logistic": LogisticRegression(pretrain={"epochs": 20}, retrain={"epochs": 1})},
        generators={"generic": GenericGenerator(max_iter=20)},
        metrics={"mmd_domain": DomainMMD(length_scale=0.01)},
        config=SimulationConfig(
            n_rounds=3, n_repetitions=2, recourse_fraction=0.3, evaluate_every=1
        ),
        streams=RandomStreams(0),
        recorder=recorder,
        progress=False,
    )


def test_resumed_run_ends_with_the_same_kernel_warnings(tmp_path):
    full = tmp_path / "full"
    _simulation(Recorder(full)).run()
    assert len(pd.read_csv(full / "kernel_warnings.csv")) == 2 * 4  # repetitions x rounds 0-3
    partial = tmp_path / "partial"
    sim = _simulation(Recorder(partial))
    original = sim._evaluation_phase

    def crash(round_number):
        original(round_number)
        if round_number == 2:  # its rows are written, its checkpoint is not
            raise KeyboardInterrupt("simulated crash")

    sim._evaluation_phase = crash
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    assert pd.read_csv(partial / "kernel_warnings.csv")["round"].max() == 2
    _simulation(Recorder(partial)).run(resume=True)
    for name in ("metrics.csv", "kernel_warnings.csv"):
        assert (partial / name).read_bytes() == (full / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------
# end to end


def _cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "recourse_sim", *SMOKE, *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_credit_run_writes_kernel_warnings_and_lists_them(tmp_path):
    result = _cli(tmp_path, "+experiment=credit", "data.n_samples=200")
    assert result.returncode == 0, result.stderr
    warnings = pd.read_csv(tmp_path / "kernel_warnings.csv")
    assert list(warnings.columns) == KERNEL_COLUMNS
    assert set(warnings.metric) == {"mmd_domain"}
    assert len(warnings) == 2 * 3  # two generators, rounds 0-2
    assert (warnings.median_kernel < DEGENERATE_KERNEL).all()
    assert np.isfinite(warnings.value_at_median).all()
    assert "kernel_warnings.csv" in json.loads((tmp_path / "manifest.json").read_text())["files"]
    log = (tmp_path / "__main__.log").read_text()
    assert log.count("mmd_domain cannot see anything at length scale 0.5") == 1
    assert "metrics.mmd_domain.bandwidth=median" in log


def test_two_feature_run_writes_no_kernel_warnings(tmp_path):
    result = _cli(tmp_path, "data=overlapping")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "metrics.csv").exists()
    assert not (tmp_path / "kernel_warnings.csv").exists()
    assert "cannot see anything" not in (tmp_path / "__main__.log").read_text()
